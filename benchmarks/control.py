"""The worker's side of the pipe to the orchestrator: ready, wait for go, report.

Each worker owns one duplex pipe. The orchestrator sends the case's Timing once every
worker is connected and subscribed, so connection set-up never falls inside a measurement.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Literal

from benchmarks.jobs import Timing, WorkerResult

GO_TIMEOUT_S = 120.0  # a worker that never hears "go" gives up (the orchestrator died)

ToOrchestrator = tuple[Literal["ready"], None] | tuple[Literal["result"], WorkerResult]


class WorkerControl:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def ready(self) -> None:
        """Connected (and subscribed): the orchestrator may start the case."""
        message: ToOrchestrator = ("ready", None)
        self._conn.send(message)

    def wait_timing(self) -> Timing:
        """Block until the case's timing arrives (its go_ns is still ahead).

        Blocking on purpose: async adapters call it in a thread (trio.to_thread,
        asyncio.to_thread), so there is no busy-wait in an event loop. Readers start reading
        at once; publishers wait for go_ns (PublishPlan's first due time).
        """
        if not self._conn.poll(GO_TIMEOUT_S):
            raise TimeoutError("no timing from the orchestrator")
        timing = self._conn.recv()
        if not isinstance(timing, Timing):
            raise TypeError(f"expected Timing, got {type(timing).__name__}")
        return timing

    def report(self, result: WorkerResult) -> None:
        message: ToOrchestrator = ("result", result)
        self._conn.send(message)
