"""Micro-benchmark: frames through the Redis engine's primitives vs. raw Redis pub/sub.

    python benchmarks/redis_engine.py [--frames 200000] [--big-frames 300] [--seconds 15]

One fresh redis-server (as benchmarks/run.py starts it), then, each with the writer and the
reader in two separate processes (as two nodes would be):

- ``streams``: FrameWriter.append batches (100 frames of ~100 bytes per call) on "node A",
  StreamReader (XREAD BLOCK) on "node B"; frames/s that reached B;
- ``streams 1 MiB``: the same with 1 MiB payloads (batches of 4), MB/s that reached B;
- ``pubsub``: redis-py PUBLISH pipelined by 100 (as benchmarks/systems/redis_pubsub.py) to
  one redis-py subscriber, same payloads, same figures.

Every case is bounded by a frame count and by ``--seconds``. The figure is what one *node*
receives from Redis; the issue's S1/S2 figures are summed over 4 readers that such a node
feeds from one copy (the in-node fan-out), so the Redis side needs a quarter of them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import trio

from benchmarks.servers import running_server
from benchmarks.systems.redis_pubsub import SYSTEM as REDIS
from trio_stream._engine.redis_io import RedisEngineIO
from trio_stream._engine.redis_streams import FrameBatch

SMALL_BYTES = 100
BIG_BYTES = 2**20
SMALL_BATCH = 100
BIG_BATCH = 4
BIG_HISTORY_FRAMES = 64  # bounds Redis memory to ~64 MiB: a slower reader loses, counted
READY_TIMEOUT_S = 30.0


@dataclass
class Case:
    name: str
    payload_bytes: int
    frames: int
    batch: int
    history: int
    seconds: float


@dataclass
class Outcome:
    received: int = 0
    lost: int = 0
    elapsed_s: float = 0.0


# -- Redis Streams through the engine primitives ---------------------------------------------


def streams_writer(url: str, case: Case, go: multiprocessing.synchronize.Event) -> None:
    async def main() -> None:
        async with RedisEngineIO.open(url, "a", history_frames=case.history) as io:
            record = await io.registry.get("bench")
            assert record is not None
            payload = b"x" * case.payload_bytes
            payloads, times = [payload] * case.batch, [0.0] * case.batch
            go.wait(READY_TIMEOUT_S)
            deadline = time.monotonic() + case.seconds
            for _ in range(case.frames // case.batch):
                await io.writer.append("bench", record.epoch, "w", payloads, times)
                if time.monotonic() > deadline:
                    break

    trio.run(main)


def streams_reader(
    url: str, case: Case, ready: multiprocessing.synchronize.Event, out: Any
) -> None:
    async def main() -> Outcome:
        outcome = Outcome()
        # fewer entries per XREAD for big frames: one reply stays ~16 MiB
        count = 16 if case.payload_bytes >= BIG_BYTES else 1000
        async with (
            RedisEngineIO.open(url, "b", read_count=count) as io,
            trio.open_nursery() as nursery,
        ):
            await io.registry.create("bench", owner="bench", node="b")
            await nursery.start(io.reader.run)
            await io.reader.follow("bench", after=0)
            ready.set()
            started = None
            with trio.move_on_after(case.seconds + 10):
                while outcome.received + outcome.lost < case.frames:
                    event = await io.reader.events.receive()
                    assert isinstance(event, FrameBatch)
                    started = started or time.monotonic()
                    outcome.received += len(event.frames)
                    outcome.lost += event.lost
                    outcome.elapsed_s = time.monotonic() - started
            nursery.cancel_scope.cancel()
        return outcome

    out.put(trio.run(main))


# -- raw redis-py pub/sub ---------------------------------------------------------------------


def pubsub_writer(url: str, case: Case, go: multiprocessing.synchronize.Event) -> None:
    client = redis.Redis.from_url(url, protocol=2)
    pipe = client.pipeline(transaction=False)
    payload = b"x" * case.payload_bytes
    go.wait(READY_TIMEOUT_S)
    deadline = time.monotonic() + case.seconds
    for _ in range(case.frames // case.batch):
        for _ in range(case.batch):
            pipe.publish("bench", payload)
        pipe.execute()
        if time.monotonic() > deadline:
            break
    client.publish("bench", b"")  # end marker
    client.close()


def pubsub_reader(url: str, case: Case, ready: multiprocessing.synchronize.Event, out: Any) -> None:
    client = redis.Redis.from_url(url, protocol=2)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
    pubsub.subscribe("bench")
    while (message := pubsub.get_message(timeout=1)) is None or message["type"] != "subscribe":
        pass
    ready.set()
    outcome = Outcome()
    started = None
    deadline = time.monotonic() + case.seconds + 10
    while outcome.received < case.frames and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is None or message["type"] != "message":
            continue
        if not message["data"]:
            break
        started = started or time.monotonic()
        outcome.received += 1
        outcome.elapsed_s = time.monotonic() - started
    pubsub.close()
    client.close()
    out.put(outcome)


def run_case(url: str, case: Case, writer: Any, reader: Any) -> Outcome:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    out = context.Queue()
    reader_process = context.Process(target=reader, args=(url, case, ready, out))
    reader_process.start()
    if not ready.wait(READY_TIMEOUT_S):
        raise RuntimeError(f"{case.name}: reader not ready in {READY_TIMEOUT_S} s")
    writer_process = context.Process(target=writer, args=(url, case, ready))
    writer_process.start()
    outcome: Outcome = out.get(timeout=case.seconds + 60)
    writer_process.join(30)
    reader_process.join(30)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--big-frames", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    small = Case("~100 B", SMALL_BYTES, args.frames, SMALL_BATCH, args.frames, args.seconds)
    big = Case("1 MiB", BIG_BYTES, args.big_frames, BIG_BATCH, BIG_HISTORY_FRAMES, args.seconds)
    rows = []
    with tempfile.TemporaryDirectory() as workdir, running_server(REDIS, Path(workdir)) as server:
        for label, writer, reader in [
            ("streams (engine)", streams_writer, streams_reader),
            ("pub/sub (redis-py)", pubsub_writer, pubsub_reader),
        ]:
            for case in (small, big):
                if label.startswith("streams"):
                    redis.Redis.from_url(server.url).flushall()
                print(f"running {label} {case.name} ...", file=sys.stderr)
                outcome = run_case(server.url, case, writer, reader)
                rate = outcome.received / outcome.elapsed_s if outcome.elapsed_s else 0.0
                mbps = rate * case.payload_bytes / 1e6
                rows.append((label, case.name, outcome, rate, mbps))
    print("| path | payload | received | lost | frames/s | MB/s |")
    print("|---|---|---|---|---|---|")
    for label, name, outcome, rate, mbps in rows:
        counts = f"{outcome.received} | {outcome.lost}"
        print(f"| {label} | {name} | {counts} | {rate:,.0f} | {mbps:,.1f} |")


if __name__ == "__main__":
    main()
