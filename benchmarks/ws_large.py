"""Large frames over tcp:// and ws:// through one server: seconds per frame and MB/s of each.

    python benchmarks/ws_large.py                                   # 4, 16, 63 MiB, 5 each
    python benchmarks/ws_large.py --sizes 16 --count 8 --src /tmp/base --src . --repeat 3

Each run starts a fresh server in a child process (``--src``'s tree first on its path; the
clients run in a second child on the same path, since a WebSocket client masks what it sends
and that cost is the client's). The client opens a writer and a ``block`` reader on each
transport, then for each size sends ``--count`` float64 arrays, each published and received
before the next, alternating the transports frame by frame so that both meet the same load.
A frame's time runs from the publish to the reader's receive; the table gives the median
(and the range) in seconds per frame, and the MB/s of that median (MB = 10^6 bytes of array
data). Repeats alternate the order of the ``--src`` trees. Bounded: a transport stops sending
a size after ``--max-seconds``, and each frame has ``--frame-timeout``.
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
    # As a script, sys.path[0] is benchmarks/: the repository goes last, so that the tree in
    # PYTHONPATH (each --src, in the children) still comes first for trio_stream.
    sys.path.append(str(Path(__file__).resolve().parent.parent))

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
MIB = 2**20
KINDS = ("tcp", "ws")
START_TIMEOUT_S = 30.0

SERVER_CODE = """
import sys, trio, trio_stream as ts
async def main():
    config = ts.ServerConfig(host=%r, tcp_port=0, http_port=0)
    async with ts.open_server(config) as server:
        print(server.tcp_url, server.ws_url, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin
trio.run(main)
"""


def _measure(
    urls: dict[str, str],
    kinds: list[str],
    sizes: list[int],
    count: int,
    max_seconds: float,
    frame_timeout: float,
) -> dict[str, dict[str, list[float]]]:
    """{kind: {str(MiB): [seconds per frame, ...]}} for each transport and size."""
    import numpy as np
    import trio

    import trio_stream as ts

    results: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            ends: dict[str, Any] = {}
            for kind in kinds:
                ends[kind] = await nursery.start(_open_pair, urls[kind], kind)
            for mib in sizes:
                array = np.full(mib * MIB // 8, float(mib))
                started = {kind: time.perf_counter() for kind in kinds}
                for i in range(count):
                    for kind in kinds if i % 2 == 0 else kinds[::-1]:
                        times = results[kind].setdefault(str(mib), [])
                        if time.perf_counter() - started[kind] > max_seconds:
                            continue
                        pub, sub = ends[kind]
                        with trio.fail_after(frame_timeout):
                            start = time.perf_counter()
                            await pub.send(array)
                            message = await sub.receive()
                            times.append(time.perf_counter() - start)
                        if message.data.nbytes != array.nbytes:
                            raise RuntimeError(f"{kind}: {message.data.nbytes} bytes came")
            nursery.cancel_scope.cancel()

    async def _open_pair(url: str, kind: str, task_status: Any) -> None:
        async with ts.open_client(url) as writer, ts.open_client(url) as reader:
            channel = f"ws_large.{kind}"
            await writer.create_channel(channel)
            async with (
                reader.subscribe(channel, policy="block", size=2) as sub,
                writer.publisher(channel) as pub,
            ):
                await pub.wait_for_readers()
                task_status.started((pub, sub))
                await trio.sleep_forever()

    trio.run(run)
    return results


def run_case(src: str, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE % LOOPBACK],
        env=env,
        cwd=src,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        if len(line) != 2:
            raise RuntimeError("the server did not start")
        tcp_url, ws_url = line
        argv = [sys.executable, __file__, "--child", tcp_url, ws_url]
        argv += ["--kinds", ",".join(args.kinds)]
        argv += ["--sizes", ",".join(map(str, args.sizes)), "--count", str(args.count)]
        argv += ["--max-seconds", str(args.max_seconds), "--frame-timeout"]
        argv += [str(args.frame_timeout)]
        child = subprocess.run(argv, env=env, cwd=src, capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f"the client failed:\n{child.stderr}")
        result: dict[str, dict[str, list[float]]] = json.loads(child.stdout)
        return result
    finally:
        server.kill()
        server.wait()


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _kinds(text: str) -> list[str]:
    kinds = [part for part in text.split(",") if part]
    if not kinds or not set(kinds) <= set(KINDS):
        raise argparse.ArgumentTypeError(f"one or more of {', '.join(KINDS)}")
    return kinds


def _line(name: str, kind: str, mib: int, times: list[float]) -> str:
    if not times:
        return f"  {name:12} {kind:3} {mib:3} MiB: no frame"
    median = statistics.median(times)
    return (
        f"  {name:12} {kind:3} {mib:3} MiB: {median:7.3f} s/frame "
        f"({min(times):.3f}-{max(times):.3f}, {len(times)} frames) "
        f"{mib * MIB / median / 1e6:7.1f} MB/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--src", action="append", help="trio_stream source tree(s) to compare")
    parser.add_argument("--sizes", type=_sizes, default=[4, 16, 63], help="MiB, comma-separated")
    parser.add_argument("--count", type=int, default=5, help="frames per size and transport")
    parser.add_argument(
        "--kinds", type=_kinds, default=list(KINDS), help="transports: tcp,ws (default both)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree (fresh server)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per size and transport")
    parser.add_argument("--frame-timeout", type=float, default=120.0)
    parser.add_argument("--json", help="write every run's seconds per frame here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # the clients' process
    args = parser.parse_args()
    if args.child is not None:
        urls = dict(zip(KINDS, args.child, strict=True))
        results = _measure(
            urls, args.kinds, args.sizes, args.count, args.max_seconds, args.frame_timeout
        )
        print(json.dumps(results))
        return
    sources = [str(Path(src).resolve()) for src in args.src or [str(REPO_ROOT)]]
    names = {src: Path(src).name for src in sources}
    runs: dict[str, list[dict[str, dict[str, list[float]]]]] = {src: [] for src in sources}
    for repeat in range(args.repeat):
        for src in sources if repeat % 2 == 0 else sources[::-1]:
            result = run_case(src, args)
            runs[src].append(result)
            print(f"run {repeat + 1}, {names[src]}:", flush=True)
            for mib in args.sizes:
                for kind in args.kinds:
                    print(_line(names[src], kind, mib, result[kind][str(mib)]), flush=True)
    print(f"\nall runs ({args.repeat} per tree), median of every frame:")
    for mib in args.sizes:
        for kind in args.kinds:
            for src in sources:
                times = [t for run in runs[src] for t in run[kind][str(mib)]]
                print(_line(names[src], kind, mib, times))
    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": args.sizes, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
