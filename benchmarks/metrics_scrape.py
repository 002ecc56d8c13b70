"""A /metrics scraper in a loop, and what it costs a reader on the same server.

    python benchmarks/metrics_scrape.py                          # 300 channels, 4 connections
    python benchmarks/metrics_scrape.py --src /tmp/base --src .  # before / after, alternating

For each source tree a server runs in a child process (its ``PYTHONPATH`` the tree) with
``--channels`` public channels. A victim (one trio client here, writing to itself at
``--rate`` Hz through the server) measures publish-to-receive latency three times: alone,
while ``--connections`` threads of a scraper process ask ``GET /metrics`` in a loop over
keep-alive, and alone again. The figures: the victim's p50 / p99 in ms for each phase and
the scraper's requests per second. Everything is on loopback and bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

import trio_stream as ts

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0

_SERVER = (
    "import trio, trio_stream as ts; trio.run(ts.serve, ts.ServerConfig("
    "host='127.0.0.1', tcp_port={tcp}, http_port={http}))"
)
_SCRAPER = """
import http.client, sys, threading, time
port, connections, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
answered = [0]
def scrape():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        response.read()
        if response.getheader("Connection", "") == "close":
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        answered[0] += 1
threads = [threading.Thread(target=scrape) for _ in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
print(answered[0] / seconds)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


async def victim(url: str, seconds: float, rate: float) -> tuple[float, float]:
    """p50 and p99 publish-to-receive latency (ms) of a paced self-feed."""
    latencies: list[int] = []
    async with (
        ts.open_client(url, name="victim") as client,
        client.subscribe("victim") as sub,
        client.publisher("victim") as pub,
    ):

        async def read() -> None:
            async for message in sub:
                latencies.append(time.monotonic_ns() - message.data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                await pub.send(time.monotonic_ns())
                await trio.sleep(1 / rate)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    latencies.sort()
    return latencies[len(latencies) // 2] / 1e6, latencies[int(len(latencies) * 0.99)] / 1e6


async def scrape(port: int, connections: int, seconds: float, answers: list[float]) -> None:
    """Run the scraper process; its answers per second go into ``answers``."""
    argv = [sys.executable, "-c", _SCRAPER, str(port), str(connections), str(seconds)]
    done = await trio.run_process(argv, capture_stdout=True)
    answers.append(float(done.stdout))


async def connect(url: str) -> AbstractAsyncContextManager[ts.Client]:
    """A client context for the server just started (retried until it listens)."""
    with trio.fail_after(START_TIMEOUT_S):
        while True:
            try:
                async with ts.open_client(url):
                    return ts.open_client(url)
            except ts.TrioStreamError:
                await trio.sleep(0.1)


async def measure(tree: Path, args: argparse.Namespace) -> str:
    tcp, http = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = _SERVER.format(tcp=tcp, http=http)
    server = await trio.lowlevel.open_process([sys.executable, "-c", code], env=env, cwd=tree)
    try:
        url = f"tcp://{LOOPBACK}:{tcp}"
        async with await connect(url) as owner:  # the channels live while it is connected
            for i in range(args.channels):
                await owner.create_channel(f"scraped.{i:05d}")
            await owner.create_channel("victim")
            alone = await victim(url, args.seconds, args.rate)
            answers: list[float] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(scrape, http, args.connections, args.seconds + 1, answers)
                await trio.sleep(0.5)
                scraped = await victim(url, args.seconds, args.rate)
            after = await victim(url, args.seconds, args.rate)
    finally:
        server.kill()
        await server.wait()
    return (
        f"{tree!s:<20} alone {alone[0]:.2f} / {alone[1]:.2f} ms, "
        f"scraped {scraped[0]:.2f} / {scraped[1]:.2f} ms ({answers[0]:,.0f} answers/s), "
        f"alone again {after[0]:.2f} / {after[1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", type=Path, help="trio_stream tree(s)")
    parser.add_argument("--channels", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4, help="the scraper's")
    parser.add_argument("--seconds", type=float, default=4.0, help="each phase")
    parser.add_argument("--rate", type=float, default=500.0, help="the victim's frames/s")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.src or [REPO_ROOT])]
    print(f"victim p50 / p99 at {args.rate:.0f} Hz, {args.channels} public channels")
    for _ in range(args.repeat):
        for tree in trees:
            print(trio.run(measure, tree, args), flush=True)


if __name__ == "__main__":
    main()
