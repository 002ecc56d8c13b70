"""Run by tests/test_sync.py in a subprocess: block in a SyncClient call until Ctrl-C (SIGINT).

Usage: python sync_child.py URL MODE [catch|raw]

MODE is where the main thread blocks: ``get`` (a subscription with nothing to read),
``iterate`` (``for msg in sub`` with nothing to read),
``contended`` (a ``get`` waiting for another thread's ``get`` on the same subscription),
``publish`` (a full publish queue behind a ``block`` reader that never reads), ``rpc`` (a call
that never returns), ``noclose`` (``get`` on a client that is never closed: atexit must end
it), ``noclose-publish`` (``publish`` into a full queue on a client never closed),
``busy-provider`` (an exposed sync method in its worker thread, called, runs a minute),
``close`` (``close()`` waiting to flush values a ``block`` reader holds back),
``exit-flush`` (the same values left to the exit handler's close, never closed) or
``connect`` (the constructor, connecting to a server that never answers; URL unused).
With ``catch`` the script catches KeyboardInterrupt after the ``with`` block and reports how
many SyncClient threads are still alive; with ``raw`` the interrupt ends the script.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time

import trio

import trio_stream as ts


class Waiter:
    async def rpc_wait(self) -> None:
        await trio.sleep_forever()


class Instrument:
    """A sync method that takes a minute (a measurement): run in a worker thread."""

    def __init__(self) -> None:
        self.measuring = threading.Event()

    def rpc_measure(self) -> None:
        self.measuring.set()
        threading.Event().wait(60)


def call_measure(url: str) -> None:
    with contextlib.suppress(ts.TrioStreamError), ts.SyncClient(url, name="child-caller") as c:
        c.rpc("child-busy-provider", timeout=None).measure()


def get_until_closed(sub: ts.SyncSubscription) -> None:
    with contextlib.suppress(trio.EndOfChannel):  # the client closed as the script ended
        sub.get(timeout=60)


def sync_threads() -> int:
    return sum(t.name.startswith("trio_stream SyncClient") for t in threading.enumerate())


def block(url: str, mode: str) -> None:
    if mode == "connect":
        with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says hello
            print("ready", flush=True)
            port = silent.getsockname()[1]
            ts.SyncClient(f"tcp://127.0.0.1:{port}", name="child-connect", connect_timeout=60)
        return
    if mode == "noclose-publish":  # a full queue behind a reader that never reads
        client = ts.SyncClient(url, name="child-noclose-publish", queue_frames=4)
        client.create_channel("child")
        client.subscribe("child", policy="block", size=1)
        # "ready" once publish() blocks (no progress for a second): the window is taken and
        # the queue full, which the Ctrl-C drops. ("ready" at once let a loaded machine's
        # interrupt come while the window still had room: the drain then wrote the queue
        # out, and nothing was dropped to be said.)
        published = [0]

        def say_ready_once_blocked() -> None:
            seen = -1
            while published[0] != seen:
                seen = published[0]
                time.sleep(1.0)
            print("ready", flush=True)

        threading.Thread(target=say_ready_once_blocked, daemon=True).start()
        while True:
            client.publish("child", b"x" * 100)
            published[0] += 1
    if mode in ("close", "exit-flush"):  # a close flushing what a block reader holds back
        client = ts.SyncClient(url, name=f"child-{mode}")
        client.create_channel("child")
        client.subscribe("child", policy="block", size=1)
        for value in range(3000):  # past the publisher's window (1024): the rest queued
            client.publish("child", value)
        print("ready", flush=True)
        if mode == "close":
            client.close()
        return  # (exit-flush: never closed, closed and flushed at exit)
    if mode == "noclose":
        client = ts.SyncClient(url, name="child-noclose")
        client.create_channel("child")
        with client.subscribe("child") as sub:
            print("ready", flush=True)
            sub.get()
        return
    with ts.SyncClient(url, name=f"child-{mode}", queue_frames=4) as client:
        client.create_channel("child")
        if mode == "get":
            with client.subscribe("child") as sub:
                print("ready", flush=True)
                sub.get()
        elif mode == "iterate":
            with client.subscribe("child") as sub:
                print("ready", flush=True)
                for _ in sub:
                    pass
        elif mode == "contended":
            with client.subscribe("child") as sub:
                first = threading.Thread(target=get_until_closed, args=(sub,), daemon=True)
                first.start()
                while not sub._busy:  # its get() has the turn: ours waits for it
                    threading.Event().wait(0.01)
                print("ready", flush=True)
                sub.get()
        elif mode == "publish":
            with client.subscribe("child", policy="block", size=1):
                print("ready", flush=True)
                while True:
                    client.publish("child", b"x" * 100)
        elif mode == "busy-provider":
            instrument = Instrument()
            client.expose(instrument)  # thread=True: the SyncClient's default
            threading.Thread(target=call_measure, args=(url,), daemon=True).start()
            instrument.measuring.wait(30)
            print("ready", flush=True)
            threading.Event().wait(60)
        elif mode == "rpc":
            client.expose(Waiter())
            proxy = client.rpc(client.name, timeout=None)
            print("ready", flush=True)
            proxy.wait()


def main() -> int:
    url, mode, how = sys.argv[1], sys.argv[2], sys.argv[3]
    if how == "raw":
        block(url, mode)
        return 1
    try:
        block(url, mode)
    except KeyboardInterrupt:
        print("interrupted; SyncClient threads alive:", sync_threads(), flush=True)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
