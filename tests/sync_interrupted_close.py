"""Run by tests/test_sync.py in a subprocess: Ctrl-C as a SyncSubscription's close() begins.

Usage: python sync_interrupted_close.py URL TRIES

Subscribes to channel "q" (``block``), then closes the subscription while a timer thread sends
SIGINT to the main thread (as a terminal's Ctrl-C) a random few hundred microseconds later, TRIES
times or until the server still lists a subscription of this client after its close (checked
by a second client). Prints ``ok N`` (N: closes that Ctrl-C interrupted) or ``orphan`` with
the try.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time

import trio_stream as ts


def interrupter(delay: float) -> threading.Thread:
    """A thread that, once started, sends SIGINT to the main thread after ``delay``."""
    main = threading.main_thread().ident
    assert main is not None

    def fire() -> None:
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGINT)

    return threading.Thread(target=fire)


def main() -> int:
    url, tries = sys.argv[1], int(sys.argv[2])
    rng = random.Random(3)
    interrupted = 0
    with ts.SyncClient(url, name="script") as client, ts.SyncClient(url, name="obs") as obs:
        obs.create_channel("q")
        for attempt in range(tries):
            sub = client.subscribe("q", policy="block", size=1)
            timer = interrupter(rng.uniform(0, 0.0003))
            try:
                timer.start()  # (a Ctrl-C may land in start() itself)
                sub.close()
                time.sleep(0.002)  # a late Ctrl-C lands here
            except KeyboardInterrupt:
                interrupted += 1
            while True:  # one landing in this loop itself is absorbed
                try:
                    timer.join()
                    time.sleep(0.001)
                    break
                except KeyboardInterrupt:
                    pass
            sub.close()  # idempotent
            deadline = time.monotonic() + 2.0
            while [c for c in obs.clients() if c.name == "script" and c.subscriptions]:
                if time.monotonic() > deadline:
                    print(f"orphan at try {attempt}: closed={sub.closed}", flush=True)
                    return 1
                time.sleep(0.01)
    print(f"ok {interrupted}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
