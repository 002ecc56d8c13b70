"""Run by tests/test_sync.py in a subprocess: a SyncClient used across os.fork().

Usage: python sync_fork_child.py URL

Makes a SyncClient, forks, and in the forked child calls it (a blocking call, publish, flush
and close), printing one line per call: ``<call> <ExceptionType>: <message>`` or ``<call>
returned``. The child ends with os._exit; the parent waits for it at most CHILD_WAIT_S, then
prints ``child exit <code>`` (``child hung`` if it had to kill it) and ``parent ok`` once its
own client still works.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

import trio_stream as ts

CHILD_WAIT_S = 10.0


def in_child(client: ts.SyncClient) -> None:
    calls: dict[str, Callable[[], object]] = {
        "channels": client.channels,
        "publish": lambda: client.publish("forked", 1),
        "flush": client.flush,
        "close": client.close,
    }
    for name, call in calls.items():
        try:
            call()
            print(f"{name} returned", flush=True)
        except Exception as exc:
            print(f"{name} {type(exc).__name__}: {exc}", flush=True)


def main() -> int:
    with ts.SyncClient(sys.argv[1], name="forking") as client:
        client.create_channel("forked")
        with client.subscribe("forked"):  # a reader: publish() queues the value
            pid = os.fork()
            if pid == 0:
                try:
                    in_child(client)
                finally:
                    os._exit(0)
            deadline = time.monotonic() + CHILD_WAIT_S
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    print(f"child exit {os.waitstatus_to_exitcode(status)}", flush=True)
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                print("child hung", flush=True)
            client.channels()
            print("parent ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
