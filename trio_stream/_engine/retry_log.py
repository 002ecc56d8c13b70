"""One warning when a job starts failing for want of Redis, one line when it works again.

A node waits out a Redis outage by trying again, some jobs every 50 ms: a line per try
would bury the log under hundreds of the same line a second, and the line that says when
Redis came back would be lost among them.
"""

from __future__ import annotations

import logging
import time


class RetryLog:
    """The log of one job that retries while Redis is away (not thread-safe: one trio task)."""

    def __init__(self, logger: logging.Logger, job: str) -> None:
        self._logger = logger
        self._job = job
        self._since: float | None = None  # monotonic time of the first failure of this outage
        self._tries = 0

    def failed(self, error: BaseException) -> None:
        """A try failed: said once per outage (the first error), counted after that."""
        self._tries += 1
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning("%s failed (%s): retrying until Redis answers", self._job, error)

    def succeeded(self) -> None:
        """A try worked: if the ones before it failed, say that it works again."""
        if self._since is None:
            return
        self._logger.warning(
            "%s works again, after %.1f s and %d failed tries",
            self._job,
            time.monotonic() - self._since,
            self._tries,
        )
        self._since = None
        self._tries = 0

    def forget(self) -> None:
        """Nothing is left to try (the job's work went away meanwhile): the outage is not
        this job's any more; a later failure starts a new one, said again."""
        self._since = None
        self._tries = 0
