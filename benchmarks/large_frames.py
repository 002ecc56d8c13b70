"""Throughput of large frames: one writer of N-MiB arrays, one ``block`` reader, a server in
a child process, over loopback. What a change to how large frames are received costs.

    python benchmarks/large_frames.py                               # 16 MiB, 60 frames
    python benchmarks/large_frames.py --mib 60 --frames 20 --src /tmp/base --src . --repeat 3

Each run starts a fresh server (``--src``'s tree first on its path, as the two processes of
the run), then sends ``--frames`` float64 arrays of ``--mib`` MiB from one client to a
``block`` reader of size 4 on another, and prints the MB/s from the first send to the last
receive. Repeats alternate between the ``--src`` trees.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # As a script, sys.path[0] is benchmarks/. The repository goes last, so that the tree in
    # PYTHONPATH (each --src, in the children) still comes first for trio_stream.
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks.cpu_per_frame import (
    LOOPBACK,
    REPO_ROOT,
    _free_port,
    _server_command,
    _wait_listening,
)


def _measure(port: int, mib: int, frames: int) -> float:
    """MB/s of ``frames`` arrays of ``mib`` MiB, writer to reader through the server."""
    import numpy as np
    import trio

    import trio_stream as ts

    async def run() -> float:
        url = f"tcp://{LOOPBACK}:{port}"
        array = np.zeros(mib * 2**20 // 8)
        async with ts.open_client(url) as writer, ts.open_client(url) as reader:
            await writer.create_channel("large")
            async with (
                reader.subscribe("large", policy="block", size=4) as sub,
                writer.publisher("large") as pub,
            ):
                await pub.wait_for_readers()

                async def send() -> None:
                    for _ in range(frames):
                        await pub.send(array)

                started = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    for _ in range(frames):
                        await sub.receive()
                return array.nbytes * frames / (time.perf_counter() - started) / 1e6

    return trio.run(run)


def run_case(src: str, mib: int, frames: int) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    port = _free_port()
    server = subprocess.Popen(_server_command("trio_stream", port, ""), env=env, cwd=src)
    try:
        _wait_listening(port, server)
        argv = [sys.executable, __file__, "--child", str(port), "--mib", str(mib)]
        child = subprocess.run(
            [*argv, "--frames", str(frames)],
            env=env,
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(child.stdout.strip())
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="trio_stream source tree(s) to compare")
    parser.add_argument("--mib", type=int, default=16, help="frame size in MiB")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # the client process
    args = parser.parse_args()
    if args.child is not None:
        print(_measure(args.child, args.mib, args.frames))
        return
    sources = args.src or [str(REPO_ROOT)]
    results: dict[str, list[float]] = {src: [] for src in sources}
    for _ in range(args.repeat):
        for src in sources:
            rate = run_case(str(Path(src).resolve()), args.mib, args.frames)
            results[src].append(rate)
            print(f"{Path(src).resolve().name:12} {args.mib} MiB frames: {rate:,.0f} MB/s")
    print(f"\nmedian of {args.repeat}, {args.frames} frames of {args.mib} MiB:")
    for src, rates in results.items():
        print(f"  {Path(src).resolve().name:12} {sorted(rates)[len(rates) // 2]:,.0f} MB/s")


if __name__ == "__main__":
    main()
