"""One warning when a job starts failing for want of Redis, one line when it works again.

A node waits out a Redis outage by trying again, some jobs every 50 ms: a line per try
would bury the log under hundreds of the same line a second, and the line that says when
Redis came back would be lost among them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RetryLog:
    """The log of one job that retries while Redis is away (not thread-safe: one trio task)."""

    def __init__(self, logger: logging.Logger, job: str, *, where: str = "Redis") -> None:
        self._logger = logger
        self._job = job
        self._where = where  # "Redis at redis://host:port/0" where the error may not say
        self._since: float | None = None  # monotonic time of the first failure of this outage
        self._tries = 0

    def failed(self, error: BaseException) -> None:
        """A try failed: said once per outage (the first error), counted after that."""
        self._tries += 1
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(
                "%s failed (%s): retrying until %s answers", self._job, error, self._where
            )

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


# A job still failing this long after Redis answered the others fails for a reason of its
# own (its key, its frame): it is said on its own. Within it, a job's try that was already
# under way when Redis came back may still fail once, and says nothing.
STUCK_AFTER_S = 1.0


class _Stuck:
    """A job that kept failing after the others of its group worked again."""

    __slots__ = ("since", "tries")

    def __init__(self, since: float) -> None:
        self.since = since
        self.tries = 1


class RetryLogGroup:
    """The log of many jobs of one kind that fail together when Redis goes (a node's
    appends, one job per writer): one warning when the first fails, one line when the first
    of them works again, which ends the outage for all. A RetryLog per job wrote two lines per
    channel for one outage: 101 lines for a node with 31 channels (an operator).

    A job that still fails :data:`STUCK_AFTER_S` after the outage ended fails for a reason of
    its own: it is warned of by name, once, and said again when it works. (Ending the outage
    only when the last job worked held the "works again" line back for every writer while one
    channel's append kept failing.)
    """

    def __init__(
        self,
        logger: logging.Logger,
        kind: str,
        what: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._kind = kind  # "appending to Redis"
        self._what = what  # the jobs, plural: "writers"
        self._clock = clock
        self._failing: set[GroupedRetryLog] = set()  # failed in this outage, not worked since
        self._since: float | None = None
        self._tries = 0
        self._failed: set[GroupedRetryLog] = set()  # every job that failed in this outage
        # Jobs still failing when the last outage ended, with the time it ended.
        self._lagging: dict[GroupedRetryLog, float] = {}
        self._stuck: dict[GroupedRetryLog, _Stuck] = {}

    def job(self, name: str) -> GroupedRetryLog:
        """One job's log (its ``failed``/``succeeded``/``forget`` as RetryLog's)."""
        return GroupedRetryLog(self, name)

    def failed(self, job: GroupedRetryLog, error: BaseException) -> None:
        stuck = self._stuck.get(job)
        if stuck is not None:
            stuck.tries += 1
            return
        outage_ended = self._lagging.get(job)
        if outage_ended is not None and self._since is not None:
            # Redis went again meanwhile: this failure is the new outage's, not its own.
            del self._lagging[job]
        elif outage_ended is not None:
            if self._clock() - outage_ended < STUCK_AFTER_S:
                return
            del self._lagging[job]
            self._stuck[job] = _Stuck(outage_ended)
            self._logger.warning(
                "%s still fails for %s (%s), %.1f s after it worked again for the other %s: "
                "retrying",
                self._kind,
                job.name,
                error,
                self._clock() - outage_ended,
                self._what,
            )
            return
        self._tries += 1
        if job in self._failing:
            return
        self._failing.add(job)
        self._failed.add(job)
        if self._since is None:
            self._since = self._clock()
            self._logger.warning(
                "%s failed for %s (%s): retrying until Redis answers (the other %s that "
                "fail meanwhile are counted when it works again)",
                self._kind,
                job.name,
                error,
                self._what,
            )

    def succeeded(self, job: GroupedRetryLog) -> None:
        self._lagging.pop(job, None)
        stuck = self._stuck.pop(job, None)
        if stuck is not None:
            self._logger.warning(
                "%s works again for %s, after %.1f s and %d failed tries",
                self._kind,
                job.name,
                self._clock() - stuck.since,
                stuck.tries,
            )
            return
        if job not in self._failing or self._since is None:
            return
        self._failing.discard(job)
        now = self._clock()
        self._logger.warning(
            "%s works again, after %.1f s (%d %s waited, %d failed tries)",
            self._kind,
            now - self._since,
            len(self._failed),
            self._what,
            self._tries,
        )
        self._lagging.update(dict.fromkeys(self._failing, now))
        self._end()

    def forget(self, job: GroupedRetryLog) -> None:
        """``job`` has nothing left to try; an outage left with no failing job ends unsaid."""
        self._lagging.pop(job, None)
        self._stuck.pop(job, None)
        self._failing.discard(job)
        if not self._failing:
            self._end()

    def _end(self) -> None:
        self._failing = set()
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
