"""The interface every system adapter implements (one module per system)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from benchmarks.control import WorkerControl
from benchmarks.jobs import PublishJob, PublishResult, ReadJob, ReadResult

LOOPBACK = "127.0.0.1"


class System(Protocol):
    """A pub/sub system under test.

    ``server_command`` and ``url`` run in the orchestrator; ``publish`` and ``read`` each run
    in a worker process of their own, where they connect, call ``ctl.ready()``, call
    ``ctl.wait_timing()`` and then follow the shared measuring logic (benchmarks.measure).
    """

    name: str

    def server_command(self, port: int, workdir: Path) -> list[str]:
        """argv that starts a server listening on LOOPBACK:port (workdir: scratch space)."""
        ...

    def url(self, port: int) -> str:
        """The URL clients connect to."""
        ...

    def publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        """Publish as the job and measure.PublishPlan say; return the plan's result."""
        ...

    def read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        """Subscribe to every subscription of the job; feed a measure.ReaderSink."""
        ...
