"""Run by tests/test_sync.py in a subprocess: publish through Ctrl-C after Ctrl-C.

Usage: python sync_interrupted_publisher.py URL CHANNEL INTERRUPTS

Publishes rounds of 2,000 values to CHANNEL (which it creates, with a lossy reader of
its own) while a timer raises
KeyboardInterrupt every 3 ms, but only while the main thread is inside ``publish()``; each
one is caught and the loop goes on, as a script that handles Ctrl-C would, until INTERRUPTS
were caught (or MAX_ROUNDS rounds). After each round
the client must still answer: ``flush(timeout=2)``, from another thread, must return (or
raise TimeoutError) within FLUSH_WAIT_S. Prints ``ok N`` (N: interrupts caught), or
``frozen`` and exits 1 at once (a normal exit would hang in the client's close).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

import trio_stream as ts

VALUES_PER_ROUND = 2000
INTERRUPT_EVERY_S = 0.003
FLUSH_WAIT_S = 10.0
MAX_ROUNDS = 500


def answers(client: ts.SyncClient) -> bool:
    """Whether ``client.flush(timeout=2)`` comes back (either way) within FLUSH_WAIT_S."""
    done = threading.Event()

    def flush() -> None:
        with contextlib.suppress(BaseException):  # only whether it came back counts
            client.flush(timeout=2)
        done.set()

    threading.Thread(target=flush, daemon=True).start()
    return done.wait(FLUSH_WAIT_S)


def main() -> int:
    url, channel, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
    armed = False

    def interrupt(*_: Any) -> None:
        if armed:
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, interrupt)
    interrupts = 0
    client = ts.SyncClient(url, name="interrupted-publisher")
    client.create_channel(channel)
    # A reader that drops what it cannot take: the values are wanted (queued, not passed
    # by), and the queue never holds the loop back for long.
    reader = ts.SyncClient(url, name="lossy-reader")
    reader.subscribe(channel, policy="drop_oldest", size=10)
    for _ in range(MAX_ROUNDS):
        if interrupts >= wanted:
            break
        signal.setitimer(signal.ITIMER_REAL, INTERRUPT_EVERY_S, INTERRUPT_EVERY_S)
        for value in range(VALUES_PER_ROUND):
            try:
                armed = True
                client.publish(channel, value)
                armed = False
            except KeyboardInterrupt:
                armed = False
                interrupts += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        armed = False
        if not answers(client):
            print(f"frozen after {interrupts} interrupts", flush=True)
            os._exit(1)
    client.close()
    reader.close()
    print(f"ok {interrupts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
