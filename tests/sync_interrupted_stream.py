"""Run by tests/test_rpc_stream.py in a subprocess: Ctrl-C as a stream's batch crosses over.

Usage: python sync_interrupted_stream.py URL

Reads 100 values of provider "daq"'s ``count`` stream with a SyncClient. A SIGINT is sent to
this process just as the second batch of values has been taken on the trio side (the moment
a user's Ctrl-C can land on as it crosses back); the loop catches the KeyboardInterrupt and
goes on with the same stream. Prints the values it got, as a JSON list.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import trio_stream as ts
from trio_stream import sync

_take = sync.SyncRemoteStream._take
batches = 0


async def take_then_interrupt(self: sync.SyncRemoteStream) -> list[Any]:
    global batches
    batch = await _take(self)
    batches += 1
    if batches == 2:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # noqa: ASYNC251 - held on purpose: the main thread sees it first
    return batch


def main() -> None:
    sync.SyncRemoteStream._take = take_then_interrupt  # type: ignore[method-assign]
    got: list[int] = []
    with ts.SyncClient(sys.argv[1], name="user") as client:
        stream = client.rpc("daq").stream("count", 100, window=8)
        try:
            for value in stream:
                got.append(value)
                time.sleep(0.01)  # a slow reader: values wait in the window
        except KeyboardInterrupt:
            pass
        got.extend(stream)
    print(json.dumps(got))


if __name__ == "__main__":
    main()
