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


class RetryLogGroup:
    """The log of many jobs of one kind that fail together when Redis goes (a node's
    appends, one job per writer): one warning when the first fails, one line when the last
    of them works again (a job that keeps failing holds that line back: the outage is not
    over for its channel). A RetryLog per job wrote two lines per channel for one outage: 101
    lines for a node with 31 channels (an operator).
    """

    def __init__(self, logger: logging.Logger, kind: str, what: str) -> None:
        self._logger = logger
        self._kind = kind  # "appending to Redis"
        self._what = what  # the jobs, plural: "writers"
        self._failing: set[GroupedRetryLog] = set()
        self._since: float | None = None
        self._tries = 0
        self._failed: set[GroupedRetryLog] = set()  # every job that failed in this outage

    def job(self, name: str) -> GroupedRetryLog:
        """One job's log (its ``failed``/``succeeded``/``forget`` as RetryLog's)."""
        return GroupedRetryLog(self, name)

    def failed(self, job: GroupedRetryLog, error: BaseException) -> None:
        self._tries += 1
        if job in self._failing:
            return
        self._failing.add(job)
        self._failed.add(job)
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(
                "%s failed for %s (%s): retrying until Redis answers (the other %s that "
                "fail meanwhile are counted when it works again)",
                self._kind,
                job.name,
                error,
                self._what,
            )

    def succeeded(self, job: GroupedRetryLog) -> None:
        if job not in self._failing:
            return
        self._failing.discard(job)
        if self._failing or self._since is None:
            return
        self._logger.warning(
            "%s works again, after %.1f s (%d %s waited, %d failed tries)",
            self._kind,
            time.monotonic() - self._since,
            len(self._failed),
            self._what,
            self._tries,
        )
        self._end()

    def forget(self, job: GroupedRetryLog) -> None:
        """``job`` has nothing left to try; an outage left with no failing job ends unsaid."""
        self._failing.discard(job)
        if not self._failing:
            self._end()

    def _end(self) -> None:
        self._since = None
        self._tries = 0
        self._failed = set()


class GroupedRetryLog:
    """One job of a :class:`RetryLogGroup`, with RetryLog's interface."""

    def __init__(self, group: RetryLogGroup, name: str) -> None:
        self._group = group
        self.name = name

    def failed(self, error: BaseException) -> None:
        self._group.failed(self, error)

    def succeeded(self) -> None:
        self._group.succeeded(self)

    def forget(self) -> None:
        self._group.forget(self)
