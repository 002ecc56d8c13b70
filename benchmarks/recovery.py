"""Time to recover after a server restart: p50/p99 over N restarts (SIGKILL, start again).

    python benchmarks/recovery.py --rounds 50

A server runs in a child process; a writer (it owns the channel) publishes a counter every
WRITE_INTERVAL_S and a reader reads it, both with the default reconnection. Each round kills
the server with SIGKILL, starts a new one on the same port at once, and measures, for the
first message the reader gets after the restart (it carries a ``reset`` gap):

- ``from_kill``: from the SIGKILL to that message (server start-up included);
- ``from_listen``: from the moment the new server listens (its URL printed) to that message:
  what the clients themselves take (backoff, handshake, re-creating the channel, reopening the
  publisher, resubscribing, the next write).

Prints one JSON line per round to stderr and a summary table (median, p99, max) to stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
from urllib.parse import urlsplit

import trio

import trio_stream as ts

WRITE_INTERVAL_S = 0.005
START_TIMEOUT_S = 30.0
ROUND_TIMEOUT_S = 30.0


async def start_server(port: int) -> tuple[trio.Process, str, float]:
    """``trio-stream serve`` on ``port`` (0: any); the process, its TCP URL, when it listened."""
    command = [sys.executable, "-m", "trio_stream", "serve", "--host", "127.0.0.1"]
    process = await trio.lowlevel.open_process(
        [*command, "--tcp-port", str(port), "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(START_TIMEOUT_S):
        while (found := re.search(rb"tcp://127\.0\.0\.1:\d+", output)) is None:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise RuntimeError("the server process ended before it listened")
            output += chunk
    return process, found.group().decode(), trio.current_time()


async def stop(process: trio.Process, sig: int = signal.SIGKILL) -> None:
    if process.returncode is None:
        process.send_signal(sig)
    with trio.move_on_after(START_TIMEOUT_S):
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(rounds: int) -> dict[str, list[float]]:
    process, url, _ = await start_server(0)
    port = urlsplit(url).port
    assert port is not None
    results: dict[str, list[float]] = {"from_kill": [], "from_listen": []}
    try:
        async with (
            ts.open_client(url, name="writer") as writer,
            ts.open_client(url, name="reader") as reader,
        ):
            await writer.create_channel("recovery")
            async with (
                writer.publisher("recovery") as pub,
                reader.subscribe("recovery", policy="drop_oldest", size=10) as sub,
                trio.open_nursery() as nursery,
            ):

                async def write() -> None:
                    i = 0
                    while True:
                        await pub.send(i)
                        i += 1
                        await trio.sleep(WRITE_INTERVAL_S)

                nursery.start_soon(write)
                await sub.receive()
                for n in range(rounds):
                    killed = trio.current_time()
                    await stop(process)
                    process, _, listening = await start_server(port)
                    with trio.fail_after(ROUND_TIMEOUT_S):
                        while True:
                            msg = await sub.receive()
                            if msg.gap is not None:
                                break
                    now = trio.current_time()
                    results["from_kill"].append(now - killed)
                    results["from_listen"].append(now - listening)
                    print(
                        json.dumps(
                            {
                                "round": n,
                                "from_kill_s": round(now - killed, 4),
                                "from_listen_s": round(now - listening, 4),
                                "gap": msg.gap._asdict(),
                            }
                        ),
                        file=sys.stderr,
                    )
                nursery.cancel_scope.cancel()
    finally:
        await stop(process, signal.SIGTERM)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="restarts (default 50)")
    args = parser.parse_args()
    found = trio.run(main, args.rounds)
    print("| measured | rounds | p50 (s) | p99 (s) | max (s) |")
    print("|---|---|---|---|---|")
    for name, values in found.items():
        print(
            f"| {name} | {len(values)} | {statistics.median(values):.3f} | "
            f"{percentile(values, 0.99):.3f} | {max(values):.3f} |"
        )
