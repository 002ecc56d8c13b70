"""CPU time per frame of a flooding trio_stream publisher (``Publisher.send`` in a loop).

A server and one reader run in child processes: ``--policy drop_oldest`` (size 100, as S4's
flooded channel) or ``--policy block`` (size 1000, as S1's readers, which hold the writer
back by its window). This process publishes ``--frames`` small values (``[monotonic_ns, seq,
False, 82 zero bytes]``, cbor2-encoded by the client) as fast as it can and reports its own
CPU time (``time.process_time``) per frame and the rate. ``--src`` runs the publisher, server
and reader of another tree (repeatable; runs alternate between trees):

    python benchmarks/writer_cpu.py
    python benchmarks/writer_cpu.py --src /tmp/base --src . --repeat 3 --policy block   # A/B
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
CHANNEL = "bench.writer"
READER_SIZES = {"drop_oldest": 100, "block": 1000}
START_WAIT_S = 1.0
READER_EXTRA_S = 10.0  # the reader stops by itself this long after the publisher's budget

_SERVER = (
    "import trio, trio_stream as ts; trio.run(ts.serve, "
    "ts.ServerConfig(host='127.0.0.1', tcp_port={port}, http_port=0))"
)
_READER = """
import sys, trio, trio_stream as ts
async def main():
    async with ts.open_client(sys.argv[1]) as client:
        async with client.subscribe(
            sys.argv[2], policy=sys.argv[5], size=int(sys.argv[3]), wait_channel=True
        ) as sub:
            with trio.move_on_after(float(sys.argv[4])):
                async for _ in sub:
                    pass
trio.run(main)
"""
_WRITER = """
import sys, time, trio, trio_stream as ts
async def main():
    frames = int(sys.argv[3])
    async with ts.open_client(sys.argv[1]) as client:
        await client.create_channel(sys.argv[2])
        async with client.publisher(sys.argv[2]) as pub:
            await pub.wait_for_readers()
            cpu, wall = time.process_time(), time.monotonic()
            for seq in range(frames):
                await pub.send([time.monotonic_ns(), seq, False, bytes(82)])
            await pub.wait_acknowledged()
            print(time.process_time() - cpu, time.monotonic() - wall)
trio.run(main)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def run_once(src: Path, frames: int, policy: str) -> tuple[float, float]:
    """One flood from the tree at ``src``: (writer CPU us per frame, frames per second)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    port = free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    server = subprocess.Popen([sys.executable, "-c", _SERVER.format(port=port)], env=env)
    reader: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(START_WAIT_S)
        budget = str(frames / 100_000 + READER_EXTRA_S)
        size = str(READER_SIZES[policy])
        reader = subprocess.Popen(
            [sys.executable, "-c", _READER, url, CHANNEL, size, budget, policy],
            env=env,
        )
        out = subprocess.run(
            [sys.executable, "-c", _WRITER, url, CHANNEL, str(frames)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=frames / 10_000 + 60,
        ).stdout.split()
        cpu_s, wall_s = float(out[0]), float(out[1])
        return cpu_s / frames * 1e6, frames / wall_s
    finally:
        for proc in (reader, server):
            if proc is not None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", type=Path, help="tree to run (repeatable)")
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--policy", choices=sorted(READER_SIZES), default="drop_oldest")
    args = parser.parse_args()
    trees: list[Path] = [path.resolve() for path in args.src or [REPO_ROOT]]
    results: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
    for _ in range(args.repeat):
        for tree in trees:
            cpu_us, rate = run_once(tree, args.frames, args.policy)
            results[tree].append((cpu_us, rate))
            print(f"{tree.name:12s} writer {cpu_us:.2f} us/frame CPU, {rate / 1e3:.0f}k frames/s")
    print(f"\nmedian of {args.repeat}, {args.frames} frames, cbor2 values, {args.policy} reader:")
    for tree, runs in results.items():
        cpu_us = statistics.median(run[0] for run in runs)
        rate = statistics.median(run[1] for run in runs)
        print(f"  {tree.name:12s} writer {cpu_us:.2f} us/frame CPU, {rate / 1e3:.0f}k frames/s")


if __name__ == "__main__":
    main()
