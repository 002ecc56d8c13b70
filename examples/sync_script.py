"""A plain synchronous script: publish numpy arrays and read them back, no async in sight.

The kind of program an instrument loop or a Jupyter notebook is: ``SyncClient`` runs the trio
client in a background thread and every call simply blocks. ``publish`` does not wait for the
network (it queues; ``flush`` waits until the server has everything).

``python examples/sync_script.py [URL] [--frames 200]``; with no URL the script starts a
server in a background thread first.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import trio

import trio_stream as ts

CHANNEL = "Spectra"


def spectrum(i: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A made-up measurement: a noisy peak that drifts with i."""
    x = np.linspace(0.0, 1.0, 512)
    noise = np.random.default_rng(i).normal(0.0, 0.01, x.size)
    return np.exp(-(((x - 0.3 - i / 1000) / 0.02) ** 2)) + noise


def run(url: str, frames: int) -> dict[str, Any]:
    with ts.SyncClient(url, name="sync-script") as client:
        client.create_channel(CHANNEL)
        # `unbounded`: the server keeps every frame for us until we read it, so this script
        # can publish everything first and read it all back afterwards.
        with client.subscribe(CHANNEL, policy="unbounded") as sub:
            start = time.perf_counter()
            for i in range(frames):
                client.publish(CHANNEL, spectrum(i))
            client.flush()
            published = time.perf_counter() - start
            matches = 0
            for i, msg in zip(range(frames), sub, strict=False):
                matches += bool(np.array_equal(msg.data, spectrum(i)))
            read_back = time.perf_counter() - start - published
        stats = client.stats()
        channels = [c.name for c in client.channels()]
    print(f"published {frames} spectra in {published * 1000:.1f} ms, read them back in "
          f"{read_back * 1000:.1f} ms; {matches} of {frames} identical")  # fmt: skip
    print(f"server: {stats.connections} connection(s), channels {channels}")
    return {"frames": frames, "matches": matches, "channels": channels}


@contextlib.contextmanager
def background_server() -> Iterator[str]:
    """A server in a thread of its own, for when no URL is given."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
        async with ts.open_server(config) as server:
            box["url"], box["token"], box["stop"] = (
                server.tcp_url,
                trio.lowlevel.current_trio_token(),
                trio.Event(),
            )
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    started.wait()
    try:
        yield box["url"]
    finally:
        box["token"].run_sync_soon(box["stop"].set)
        thread.join()


def main(url: str | None, frames: int) -> dict[str, Any]:
    if url is not None:
        return run(url, frames)
    with background_server() as own_url:
        return run(own_url, frames)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="server URL (default: start a server here)")
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    try:
        main(args.url, args.frames)
    except ts.TrioStreamError as exc:  # e.g. no server at that URL: one line, not a traceback
        sys.exit(f"sync_script: {type(exc).__name__}: {exc}")
