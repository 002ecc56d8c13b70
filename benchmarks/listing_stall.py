"""How late a server's loop runs while another process lists it whole (``channels()``, or
``GET /metrics``): what every other client's frames wait for meanwhile.

    PYTHONPATH=. python benchmarks/listing_stall.py                        # 100,000 channels
    python benchmarks/listing_stall.py --channels 20000 --src /tmp/base --src .

For each source tree (``--src``, default this one) a child process (its ``PYTHONPATH`` the
tree) runs a server with ``--channels`` public channels, made in its broker directly (a
client would need a hundred connections at the per-client limit), and a task that sleeps
1 ms in a loop and records how late each sleep returns. Another process lists the server
``--times`` times, a second apart (``/metrics`` keeps its text for up to a second): the
figures are the lists' own times, the loop's worst lateness and how many sleeps returned
over 20 ms late. Everything is on loopback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import trio

REPO_ROOT = Path(__file__).resolve().parent.parent

_LISTER = """
import sys, time, urllib.request
from trio_stream.sync import SyncClient
what, url, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
def listing():
    if what == "metrics":
        return len(urllib.request.urlopen(url + "metrics").read())
    with SyncClient(url, name="lister") as client:
        return len(client.channels())
for _ in range(times):
    started = time.perf_counter()
    size = listing()
    print(f"  {what}: {1e3 * (time.perf_counter() - started):.0f} ms ({size})", flush=True)
    time.sleep(1.2)
"""


async def measure(channels: int, what: str, times: int) -> None:
    import trio_stream as ts  # (from the tree this child runs)

    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0)
    async with ts.open_server(config) as server:
        for i in range(channels):
            server.state.broker.create_channel(f"ch{i:06d}", None).owner = "bench"
        lateness: list[float] = []
        done = trio.Event()

        async def watch() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await trio.sleep(0.001)
                lateness.append(time.perf_counter() - started - 0.001)

        url = server.http_url if what == "metrics" else server.tcp_url
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.run_process([sys.executable, "-c", _LISTER, what, url, str(times)])
            done.set()
        worst = max(lateness)
        over = sum(late > 0.02 for late in lateness)
        print(f"  loop late at most {worst * 1e3:.1f} ms, over 20 ms {over} times", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--what", choices=["channels", "metrics", "both"], default="both")
    parser.add_argument("--times", type=int, default=3)
    parser.add_argument("--src", action="append", help="a source tree (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        trio.run(measure, args.channels, args.child, args.times)
        return
    kinds = ["channels", "metrics"] if args.what == "both" else [args.what]
    for src in args.src or [str(REPO_ROOT)]:
        tree = str(Path(src).resolve())
        for kind in kinds:
            print(f"{tree}: {kind} of {args.channels:,} channels", flush=True)
            env = {**os.environ, "PYTHONPATH": tree}
            command = [sys.executable, __file__, "--child", kind]
            command += ["--channels", str(args.channels), "--times", str(args.times)]
            subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
