"""Several nodes: a writer on node A, 4 readers on node B, beside Redis pub/sub (redis-py).

    python benchmarks/cluster.py [--frames 200000] [--big-frames 400] [--seconds 15]

One fresh redis-server (as benchmarks/run.py starts it), then each case in fresh processes:

- ``cluster``: two ``trio-stream serve --engine redis://...`` nodes; the writer (a client of
  node A) sends as fast as its credit allows, 4 reader processes (clients of node B,
  ``unbounded``) count what they get. S1: ~100-byte frames, frames/s summed over the 4
  readers; S2: 1 MiB payloads, MB/s summed.
- ``single node``: the same clients, all on one ``engine="memory"`` node (what one node
  costs without Redis; compare with the same script on main for "unchanged").
- ``redis pub/sub``: redis-py PUBLISH pipelined by 100 (1 MiB ones one by one), 4 redis-py
  subscriber processes.

Every case is bounded by a frame count and by ``--seconds``; a reader's figure runs from its
first frame to its last. "lost": frames the trio_stream readers were told they missed
(``msg.lost``; pub/sub drops silently, so its column says nothing); "ended": readers whose
subscription the server ended (an ``unbounded`` reader more than ``max_buffered_bytes``
behind; a pub/sub subscriber Redis dropped, over its output buffer limit). Payloads are
bytes in every case (no encoding differences). "server CPU": CPU time of the server side
(Redis, node A and node B; the one node; Redis) over the case, per frame a reader received
(from Linux /proc): what a frame costs, which holds still when other jobs on the machine
make the rates jump; "reader CPU": the reader processes' own from their first frame to their
last, per frame they received.

``--tree DIR`` runs the trio_stream of another checkout (servers and clients) with this
script, for A/B runs in one sitting.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Run as a script: make the repository importable (not ahead of --tree in a spawned child).
if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import trio

import trio_stream as ts
from benchmarks.servers import REPO_ROOT, free_port, running_server
from benchmarks.systems.redis_pubsub import SYSTEM as REDIS

READERS = 4
SMALL_BYTES = 100
BIG_BYTES = 2**20
PIPELINE = 100
READY_TIMEOUT_S = 30.0
CHANNEL = "bench"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (0.0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def node(engine: str, name: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    # -P: the package from PYTHONPATH (this tree or --tree), not from the working directory
    argv = [sys.executable, "-P", "-m", "trio_stream", "serve", "--engine", engine]
    argv += ["--node-name", name, "--tcp-port", str(port), "--no-http"]
    env = dict(os.environ)  # PYTHONPATH: set by main()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"node {name} did not start") from None
                time.sleep(0.05)
        yield f"tcp://127.0.0.1:{port}", process.pid
    finally:
        process.kill()
        process.wait(10)


def ts_reader(url: str, index: int, frames: int, seconds: float, out: Any) -> None:
    async def run() -> tuple[int, float, int, int, float]:
        async with ts.open_client(url, name=f"reader{index}") as client:
            with trio.fail_after(READY_TIMEOUT_S):
                while CHANNEL not in [c.name for c in await client.channels()]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            async with client.subscribe(CHANNEL, policy="unbounded") as sub:
                received = lost = ended = 0
                first = last = cpu_first = 0.0
                with trio.move_on_after(seconds + 20):
                    try:
                        async for message in sub:
                            if message.data == b"":
                                break
                            now = time.monotonic()
                            if not first:
                                first, cpu_first = now, time.process_time()
                            last = now
                            received += 1
                            lost += message.lost
                            if received + lost >= frames:
                                break
                    except ts.TrioStreamError:  # ended by the server (too far behind)
                        ended = 1
                cpu = time.process_time() - cpu_first if first else 0.0
                return received, last - first, lost, ended, cpu

    out.put(trio.run(run))


def ts_writer(url: str, payload_bytes: int, frames: int, seconds: float) -> None:
    async def run() -> None:
        async with ts.open_client(url, name="writer") as client:
            await client.create_channel(CHANNEL)
            async with client.publisher(CHANNEL) as pub:
                with trio.fail_after(READY_TIMEOUT_S):
                    await pub.wait_for_readers(READERS)
                payload = b"x" * payload_bytes
                deadline = time.monotonic() + seconds
                for _ in range(frames):
                    await pub.send(payload)
                    if time.monotonic() > deadline:
                        break
                await pub.send(b"")  # end marker
                await pub.wait_acknowledged()
                await trio.sleep(2)

    trio.run(run)


def pubsub_reader(url: str, index: int, frames: int, seconds: float, out: Any) -> None:
    client = redis.Redis.from_url(url, protocol=2)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
    pubsub.subscribe(CHANNEL)
    received = ended = 0
    first = last = cpu_first = 0.0
    deadline = time.monotonic() + seconds + 20
    while received < frames and time.monotonic() < deadline:
        try:
            message = pubsub.get_message(timeout=0.1)
        except redis.exceptions.ConnectionError:
            # Redis dropped a subscriber too far behind (client-output-buffer-limit pubsub)
            ended = 1
            break
        if message is None or message["type"] != "message":
            continue
        if not message["data"]:
            break
        now = time.monotonic()
        if not first:
            first, cpu_first = now, time.process_time()
        last = now
        received += 1
    cpu = time.process_time() - cpu_first if first else 0.0
    out.put((received, last - first, 0, ended, cpu))


def pubsub_writer(url: str, payload_bytes: int, frames: int, seconds: float) -> None:
    client = redis.Redis.from_url(url, protocol=2)
    while client.pubsub_numsub(CHANNEL)[0][1] < READERS:  # type: ignore[index,unused-ignore]
        time.sleep(0.05)
    payload = b"x" * payload_bytes
    batch = PIPELINE if payload_bytes < 2**20 else 1
    pipe = client.pipeline(transaction=False)
    deadline = time.monotonic() + seconds
    for start in range(0, frames, batch):
        for _ in range(min(batch, frames - start)):
            pipe.publish(CHANNEL, payload)
        pipe.execute()
        if time.monotonic() > deadline:
            break
    client.publish(CHANNEL, b"")


def run_case(
    write_url: str,
    read_url: str,
    writer: Any,
    reader: Any,
    size: int,
    frames: int,
    seconds: float,
    servers: list[int],
) -> tuple[float, float, int, int, str, float]:
    cpu_before = [cpu_seconds(pid) for pid in servers]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    readers = [
        context.Process(target=reader, args=(read_url, i, frames, seconds, out))
        for i in range(READERS)
    ]
    for process in readers:
        process.start()
    writer_process = context.Process(target=writer, args=(write_url, size, frames, seconds))
    writer_process.start()
    results = [out.get(timeout=seconds + 90) for _ in readers]
    cpu = [cpu_seconds(pid) - before for pid, before in zip(servers, cpu_before, strict=True)]
    writer_process.join(30)
    for process in [*readers, writer_process]:
        process.join(10)
        if process.is_alive():
            process.kill()
    rate = sum(received / elapsed for received, elapsed, *_ in results if elapsed)
    lost = sum(lost for _, _, lost, _, _ in results)
    ended = sum(ended for _, _, _, ended, _ in results)
    received = sum(received for received, *_ in results)
    reader_cpu = sum(cpu for *_, cpu in results)
    per_frame = [seconds * 1e6 / max(1, received) for seconds in cpu]
    parts = "+".join(f"{us:.2f}" for us in per_frame) if len(per_frame) > 1 else ""
    server = f"{sum(per_frame):.2f}" + (parts and f" ({parts})")
    readers_us = reader_cpu * 1e6 / max(1, received)
    return rate, rate * size / 1e6, lost, ended, server, readers_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--big-frames", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--tree", type=Path, help="the checkout whose trio_stream to run")
    args = parser.parse_args()
    trees = [str(REPO_ROOT)]
    if args.tree is not None:  # the readers and writers (spawned) and the nodes import it
        trees.insert(0, str(args.tree.resolve()))
        sys.path.insert(0, trees[0])
    os.environ["PYTHONPATH"] = os.pathsep.join(trees)
    cases = [("S1 ~100 B", SMALL_BYTES, args.frames), ("S2 1 MiB", BIG_BYTES, args.big_frames)]
    rows = []
    with tempfile.TemporaryDirectory() as workdir, running_server(REDIS, Path(workdir)) as redis_:
        for name, size, frames in cases:
            print(f"{name}: cluster ...", file=sys.stderr)
            redis.Redis.from_url(redis_.url).flushall()
            redis_pid = redis_.process.pid
            with node(redis_.url, "a") as (url_a, pid_a), node(redis_.url, "b") as (url_b, pid_b):
                servers = [redis_pid, pid_a, pid_b]
                result = run_case(
                    url_a, url_b, ts_writer, ts_reader, size, frames, args.seconds, servers
                )
            rows.append(("cluster: writer on A, readers on B", name, *result))
            print(f"{name}: single node ...", file=sys.stderr)
            with node("memory", "single") as (url, pid):
                result = run_case(url, url, ts_writer, ts_reader, size, frames, args.seconds, [pid])
            rows.append(("single node (memory engine)", name, *result))
            print(f"{name}: redis pub/sub ...", file=sys.stderr)
            result = run_case(
                redis_.url,
                redis_.url,
                pubsub_writer,
                pubsub_reader,
                size,
                frames,
                args.seconds,
                [redis_pid],
            )
            rows.append(("redis pub/sub (redis-py)", name, *result))
    print(
        f"| path | case | frames/s (sum of {READERS} readers) | MB/s | lost | ended "
        "| server CPU µs/frame received (Redis+A+B) | reader CPU µs/frame |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, name, rate, mbps, lost, ended, cpu_us, reader_us in rows:
        figures = f"{rate:,.0f} | {mbps:,.1f} | {lost} | {ended} | {cpu_us} | {reader_us:.2f}"
        print(f"| {label} | {name} | {figures} |")


if __name__ == "__main__":
    main()
