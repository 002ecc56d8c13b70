"""A log line that a peer can make come in a flood: the first is said at once, then at most
one line per period, with the count of those not said.

A client that retries a refused connection in a loop, or repeats a request that fails in
the server, would otherwise write a line (a traceback) per try: 2,700 failing HTTP requests
in 5 s wrote 6 MB of log (an outside pass). No I/O and no clock of its own: the caller
passes the time, and says the line.
"""

from __future__ import annotations


class LogThrottle:
    """When to say one kind of line: :meth:`happened` for each occurrence, :meth:`due` when
    the caller may say a count left over (its housekeeping, once the occurrences stop)."""

    __slots__ = ("_said_at", "_unsaid", "every_s")

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._said_at: float | None = None
        self._unsaid = 0  # occurrences since the last line

    def happened(self, now: float) -> tuple[int, float | None] | None:
        """One more occurrence: see :meth:`due`."""
        self._unsaid += 1
        return self.due(now)

    def due(self, now: float) -> tuple[int, float | None] | None:
        """A line is due now: how many occurrences it says (this one included) and the
        seconds since the last line (None for the first line); None if no line is due (what
        happened is counted for the next)."""
        if not self._unsaid:
            return None
        said_at = self._said_at
        if said_at is not None and now - said_at < self.every_s:
            return None
        count = self._unsaid
        self._said_at = now
        self._unsaid = 0
        return count, None if said_at is None else now - said_at
