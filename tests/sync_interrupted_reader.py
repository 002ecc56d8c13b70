"""Run by tests/test_sync.py in a subprocess: read numbered values through Ctrl-C after Ctrl-C.

Usage: python sync_interrupted_reader.py URL CHANNEL COUNT

Subscribes to CHANNEL (``block``: the server loses nothing), prints ``ready``, then reads
until it has COUNT values. Each KeyboardInterrupt (the test sends SIGINT again and again) is
caught and answered with a line ``interrupted`` (the test sends the next one only after it),
and reading goes on. At the end it prints ``ok N``
(N: interrupts caught) if it saw the values 0 .. COUNT-1 exactly once and in order, else
``wrong`` and what it saw around the first mismatch. Once done it ignores SIGINT.
"""

from __future__ import annotations

import signal
import sys

import trio_stream as ts

WINDOW = 4  # a few messages per crossing: a lost batch is several values
READ_TIMEOUT_S = 5.0  # nothing more for this long: some values were lost on the way


def main() -> int:
    url, channel, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen: list[ts.Message] = []
    interrupts = 0
    with (
        ts.SyncClient(url, name="interrupted-reader") as client,
        client.subscribe(channel, policy="block", size=1000, window=WINDOW) as sub,
    ):
        say: str | None = "ready"
        while True:
            try:
                if say:  # in here: the next interrupt may come as soon as it is out
                    print(say, flush=True)
                    say = None
                while len(seen) < count:
                    # The message goes straight into the list: no call between get()'s
                    # return and the append where a Ctrl-C of this script could land.
                    seen.append(sub.get(timeout=READ_TIMEOUT_S))
                # Done: an interrupt already on its way is not a reading's to survive.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                break
            except KeyboardInterrupt:
                interrupts += 1
                say = "interrupted"
            except TimeoutError:  # values were lost: the verdict says which
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                break
    values = [msg.data for msg in seen]
    if values == list(range(count)):
        print(f"ok {interrupts}", flush=True)
        return 0
    bad = next(i for i, v in enumerate([*values, None]) if v != i)
    print(f"wrong at {bad}: {values[max(0, bad - 3) : bad + 3]}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
