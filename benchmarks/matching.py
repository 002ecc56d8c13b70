"""Pattern subscriptions: messages/s through ``subscribe_matching`` with many channels
matched and one busy, against a plain subscription to that channel in the same run (what
the pattern's layer costs), trio client and SyncClient. The server runs in this process's
own thread; the writer is a second client.

    python benchmarks/matching.py                       # 1000 channels, 20,000 messages
    python benchmarks/matching.py --channels 1 --messages 50000

A message used to cost a walk over every matched channel (1000 channels: ~2,000 msg/s);
it costs the same with one channel as with a thousand now (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import trio

import trio_stream as ts


def serve_in_thread() -> tuple[str, Callable[[], None]]:
    """A server in a thread of its own; its URL and how to stop it."""
    found: dict[str, str] = {}
    ready, stop = threading.Event(), threading.Event()

    async def main() -> None:
        config = ts.ServerConfig(
            host="127.0.0.1", tcp_port=0, http_port=None, max_subscriptions_per_client=5000
        )
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None
            found["url"] = server.tcp_url
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 - a threading.Event, set by main()
                await trio.sleep(0.05)

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    ready.wait(30)

    def stopping() -> None:
        stop.set()
        thread.join(10)

    return found["url"], stopping


async def trio_rate(url: str, prefix: str, channels: int, messages: int, pattern: bool) -> float:
    async with ts.open_client(url, name=f"w-{prefix}") as w, ts.open_client(url) as r:
        for i in range(channels):
            await w.create_channel(f"{prefix}.{i:04d}")
        busy = f"{prefix}.0000"
        opened = (
            r.subscribe_matching(f"{prefix}.*", policy="unbounded", max_channels=channels)
            if pattern
            else r.subscribe(busy, policy="unbounded")
        )
        async with opened as sub, w.publisher(busy) as pub:
            await pub.wait_for_readers()

            async def write() -> None:
                for i in range(messages):
                    await pub.send(i)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                started = time.perf_counter()
                for _ in range(messages):
                    await sub.receive()
                took = time.perf_counter() - started
    return messages / took


def sync_rate(url: str, prefix: str, channels: int, messages: int, pattern: bool) -> float:
    with ts.SyncClient(url, name=f"w-{prefix}") as w, ts.SyncClient(url) as r:
        for i in range(channels):
            w.create_channel(f"{prefix}.{i:04d}")
        busy = f"{prefix}.0000"
        opened = (
            r.subscribe_matching(f"{prefix}.*", policy="unbounded", max_channels=channels)
            if pattern
            else r.subscribe(busy, policy="unbounded")
        )
        with opened as sub:
            w.publisher(busy).wait_for_readers(timeout=30)

            def write() -> None:
                for i in range(messages):
                    w.publish(busy, i)
                w.flush(timeout=60)

            writer = threading.Thread(target=write)
            started = time.perf_counter()
            writer.start()
            for _ in range(messages):
                sub.get(timeout=60)
            took = time.perf_counter() - started
            writer.join()
    return messages / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    url, stop = serve_in_thread()
    try:
        print(f"{args.channels} channels matched, one busy; {args.messages:,} messages")
        for client in ("trio", "sync"):
            for pattern in (False, True):
                prefix = f"{client[0]}{int(pattern)}"
                if client == "trio":
                    rate = trio.run(trio_rate, url, prefix, args.channels, args.messages, pattern)
                else:
                    rate = sync_rate(url, prefix, args.channels, args.messages, pattern)
                what = "subscribe_matching" if pattern else "subscribe (the busy one)"
                print(f"  {client:4}  {what:26} {rate:>10,.0f} msg/s")
    finally:
        stop()


if __name__ == "__main__":
    main()
