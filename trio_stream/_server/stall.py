"""Notices when this process did not run: stopped (SIGSTOP, a debugger, a VM paused) or its
event loop held by one task for seconds.

A server that did not run finds its deadlines past when it resumes: its clients seem silent
and the other nodes of a cluster took it for dead. What it then says must blame the stop, and
say how long it was, not the clients or Redis. The idle watchdog learned of a stop only by
waking late, by as much as the stop outlasted its planned sleep (3.7 s said for a 12 s
SIGSTOP, nothing at all for one that ended before its next deadline), and a frozen node's log
said that Redis had not answered its heartbeat. Here one task wakes every ``TICK_S``: waking
later than that by more than ``STALL_S``, the process did not run for that long.

A task that resumes with the others after a stop may run before this one has noticed it:
:meth:`StallMonitor.stopped_for` counts a stop still being caught up (no tick since) too.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Final

import trio

log = logging.getLogger(__name__)

# How often the monitor looks (s): the precision of the durations it reports. A wake-up five
# times a second costs nothing measurable (a sleeping task and one heap entry).
TICK_S: Final = 0.2
# Not run for longer than this (s) is a stop: not a busy loop's ordinary lateness, which
# stays in milliseconds (a 64 MiB frame's encoding, the largest, takes ~50 ms).
STALL_S: Final = 1.0
STOPS_KEPT: Final = 16  # the latest stops (start, end), for stopped_for


class StallMonitor:
    """Run :meth:`run` in a nursery; ask :meth:`stopped_for` or :attr:`resumed_at`."""

    def __init__(self) -> None:
        self._ticked_at = math.inf  # the last tick (trio clock); inf: not running
        self._stops: collections.deque[tuple[float, float]] = collections.deque(maxlen=STOPS_KEPT)

    @property
    def resumed_at(self) -> float:
        """When the latest stop ended (-inf: none yet); one being caught up ends now."""
        now = trio.current_time()
        if self._pending(now) > 0:
            return now
        return self._stops[-1][1] if self._stops else -math.inf

    def stopped_for(self, since: float) -> float:
        """How long the longest stop after ``since`` (trio clock) lasted; 0.0: none."""
        now = trio.current_time()
        longest = self._pending(now)
        for start, end in self._stops:
            if end > since:
                longest = max(longest, end - max(start, since))
        return longest

    def _pending(self, now: float) -> float:
        """A stop not noticed yet by a tick (the tasks resumed with it run in any order)."""
        late = now - self._ticked_at - TICK_S
        return late if late > STALL_S else 0.0

    async def run(self) -> None:
        self._ticked_at = trio.current_time()
        try:
            while True:
                await trio.sleep(TICK_S)
                now = trio.current_time()
                stopped = self._pending(now)
                if stopped:
                    self._stops.append((now - stopped, now))
                    log.warning(
                        "this process did not run for %.1f s (stopped: SIGSTOP, a debugger, "
                        "a paused VM; or a task held its event loop that long): its clients' "
                        "silence counts from now",
                        stopped,
                    )
                self._ticked_at = now
        finally:
            self._ticked_at = math.inf
