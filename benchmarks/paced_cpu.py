"""CPU per frame and latency of a paced flow: what each process spends on one frame at 1 kHz.

S3's latency rests on three processes waking up for every frame, and on a 2-core machine the
CPU each of them spends between frames is CPU the others wait for. Each case starts a fresh
trio_stream server, one ``drop_oldest`` reader (size 100, as S3's) and one writer that sends
``--frames`` ~100-byte cbor2 values at ``--rate`` with ``trio.sleep`` pacing (as the S3
harness's trio_stream writer), in three processes. The figures:

- server, writer, reader: CPU µs per frame (the server's from /proc/PID/stat over the
  writer's run; the clients' ``time.process_time`` over their loops);
- p50 / p99: publish-to-receive latency in µs (the first tenth of the frames left out).

Repeats alternate between ``--src`` trees (an A/B of two checkouts):

    python benchmarks/paced_cpu.py                                  # this checkout, 3 runs
    python benchmarks/paced_cpu.py --src /tmp/base --src . --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # As a script, sys.path[0] is benchmarks/. The repository goes last, so that the tree in
    # PYTHONPATH (each --src, in the children) still comes first for trio_stream.
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks.cpu_per_frame import (
    LOOPBACK,
    REPO_ROOT,
    _cpu_s,
    _expect_ready,
    _free_port,
    _server_command,
    _wait_listening,
)

CHANNEL = "bench.paced"
READER_SIZE = 100
WARMUP_SHARE = 0.1  # of the frames, left out of the latency figures
TIMEOUT_S = 120.0


def _reader(port: int, frames: int) -> dict[str, Any]:
    import numpy as np
    import trio

    import trio_stream as ts

    async def run() -> dict[str, Any]:
        url = f"tcp://{LOOPBACK}:{port}"
        async with (
            ts.open_client(url, name=f"paced-reader-{os.getpid()}") as client,
            client.subscribe(CHANNEL, policy="drop_oldest", size=READER_SIZE) as sub,
        ):
            print("ready", flush=True)
            latencies: list[int] = []
            start = time.process_time()
            with trio.move_on_after(TIMEOUT_S):
                async for msg in sub:
                    latencies.append(time.monotonic_ns() - msg.data[0])
                    if msg.data[2]:  # the writer's last frame
                        break
            cpu_s = time.process_time() - start
        kept = np.asarray(latencies[int(len(latencies) * WARMUP_SHARE) :], dtype=np.float64)
        return {
            "frames": len(latencies),
            "reader_us": cpu_s / max(len(latencies), 1) * 1e6,
            "p50_us": float(np.percentile(kept, 50)) / 1e3 if kept.size else float("nan"),
            "p99_us": float(np.percentile(kept, 99)) / 1e3 if kept.size else float("nan"),
        }

    return trio.run(run)


def _writer(port: int, frames: int, rate: float) -> dict[str, Any]:
    import trio

    import trio_stream as ts

    async def run() -> dict[str, Any]:
        async with ts.open_client(f"tcp://{LOOPBACK}:{port}", name="paced-writer") as client:
            await client.create_channel(CHANNEL, keep=True)
            print("ready", flush=True)  # the channel exists: the reader may subscribe
            async with client.publisher(CHANNEL) as pub:
                await pub.wait_for_readers(1)
                print("ready", flush=True)
                sys.stdin.readline()  # go
                interval_ns = int(1e9 / rate)
                start_ns = time.monotonic_ns()
                start = time.process_time()
                for seq in range(frames):
                    wait_ns = start_ns + seq * interval_ns - time.monotonic_ns()
                    if wait_ns > 0:
                        await trio.sleep(wait_ns / 1e9)
                    await pub.send([time.monotonic_ns(), seq, seq == frames - 1, bytes(82)])
                cpu_s = time.process_time() - start
                await pub.wait_acknowledged()
        return {"writer_us": cpu_s / frames * 1e6}

    return trio.run(run)


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--child", *args]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )


def run_case(src: str, frames: int, rate: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, str(REPO_ROOT), env.get("PYTHONPATH")]))
    port = _free_port()
    server = subprocess.Popen(
        _server_command("trio_stream", port, ""),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=src,  # `python -c` puts its working directory first on sys.path
    )
    children: list[subprocess.Popen[str]] = []
    try:
        _wait_listening(port, server)
        common = ("--port", str(port), "--frames", str(frames), "--rate", str(rate))
        writer = _spawn(env, "--role", "writer", *common)
        children.append(writer)
        _expect_ready(writer)  # the channel exists
        reader = _spawn(env, "--role", "reader", *common)
        children.append(reader)
        _expect_ready(reader)
        _expect_ready(writer)  # it has seen the reader
        before = _cpu_s(server.pid)
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        written, _ = writer.communicate(timeout=TIMEOUT_S + frames / rate)
        server_cpu = _cpu_s(server.pid) - before
        read, _ = reader.communicate(timeout=TIMEOUT_S)
    finally:
        processes: list[subprocess.Popen[Any]] = [*children, server]
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    row: dict[str, Any] = {"src": src, "server_us": server_cpu / frames * 1e6}
    row.update(json.loads(written.strip().splitlines()[-1]))
    row.update(json.loads(read.strip().splitlines()[-1]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", help="trio_stream source tree(s) to compare")
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="frames per second")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write every case's figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.role == "reader":
            print(json.dumps(_reader(args.port, args.frames)), flush=True)
        else:
            print(json.dumps(_writer(args.port, args.frames, args.rate)), flush=True)
        return
    sources = [str(Path(src).resolve()) for src in (args.src or [str(REPO_ROOT)])]
    rows: list[dict[str, Any]] = []
    figures = ("server_us", "writer_us", "reader_us", "p50_us", "p99_us")
    for repeat in range(args.repeat):
        for src in sources:
            row = run_case(src, args.frames, args.rate)
            row["repeat"] = repeat
            rows.append(row)
            print(
                f"{Path(src).name:12} frames {row['frames']}/{args.frames}  CPU us per frame: "
                f"server {row['server_us']:.0f}, writer {row['writer_us']:.0f}, reader "
                f"{row['reader_us']:.0f}  latency p50 {row['p50_us']:.0f}, p99 "
                f"{row['p99_us']:.0f} us",
                flush=True,
            )
    print(f"\nmedian of {args.repeat}, {args.frames} frames at {args.rate:g} frames/s:")
    for src in sources:
        mine = [r for r in rows if r["src"] == src]
        medians = {f: statistics.median(r[f] for r in mine) for f in figures}
        print(
            f"  {Path(src).name:12} server {medians['server_us']:.0f}, writer "
            f"{medians['writer_us']:.0f}, reader {medians['reader_us']:.0f} us per frame; "
            f"p50 {medians['p50_us']:.0f}, p99 {medians['p99_us']:.0f} us"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
