"""The server's watchdog: one task that closes silent connections and times held-back writers.

Every connection used to have a watchdog task of its own, asleep in a cancel scope until its
client's idle deadline. An idle connection spent ~2.5 KiB on it (the task, its context and
coroutine frames, the cancel scope and its status with two sets), a fifth of what it cost in
all; a watchdog in a session's reader was no better (a cancel scope per read was a measurable
part of the cost per frame). Here one task sleeps until the earliest deadline of a heap of
``(when, client id)`` entries: ~150 bytes per connection (a heap entry and one dict item), and
one look per connection per ``idle_timeout_s`` (60 s by default) while it stays connected,
never a walk over all of them. A reading does not touch the heap: it records its time on the
session (a float store, as before), and the watchdog reads it when the entry comes due. The
entries hold client ids, not sessions, so a closed session is never kept alive here; an entry
that is stale (superseded, or its session gone) is dropped when it comes due.

Silence is judged on what the server has read, not on the clock alone (what the per-session
watchdog did, kept as it was):
- a server that did not run (SIGSTOP, a CPU stall longer than idle_timeout_s) finds deadlines
  past when it resumes, while its clients' pings wait unread in the sockets. Its stall monitor
  (stall.py, which says so in the log) blames the server, not the clients: everyone's silence
  counts from the stop's end;
- at a deadline it first lets the readers take what has already arrived (``READ_GRACE_S``)
  before it closes anyone.

The same entries time the ``block`` readers that hold their writers back (``held_by``,
``block_timeout``): a session asks to be looked at then (``wake_at``), and its next look is
the earlier of its idle deadline and its next hold deadline (``Session.check_holds``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Final, Protocol

import trio

from .stall import StallMonitor

# At a client's idle deadline its reader first gets this long (s) to take what has arrived.
READ_GRACE_S: Final = 0.25
# Connections looked at between two checkpoints (all deadlines pass at once after a stall).
LOOKS_PER_CHECKPOINT: Final = 500


class Watched(Protocol):
    """What the watchdog needs from a connection (implemented by session.Session)."""

    def heard_at(self) -> float:
        """When the server last read anything from the client (trio clock)."""
        ...

    def check_holds(self, now: float) -> float:
        """Time the block readers holding writers back; when to look again (inf: never)."""
        ...

    def close_idle(self, idle_s: float) -> None: ...


class Watchdog:
    def __init__(self, idle_timeout_s: float, lookup: Callable[[int], Watched | None]) -> None:
        """``lookup(client_id)`` is the connected session, or None once it has gone."""
        self.idle_s = idle_timeout_s
        self._lookup = lookup
        self._heap: list[tuple[float, int]] = []
        self._due: dict[int, float] = {}  # client id -> when its valid heap entry is due
        self._wake = trio.Event()
        self._sleeps_until = math.inf
        self.stall = StallMonitor()  # a stop's end: nobody's silence counts before it

    def start(self, client_id: int) -> None:
        """Watch a client that just connected (heard from now)."""
        self._schedule(client_id, trio.current_time() + self.idle_s)

    def wake_at(self, client_id: int, when: float) -> None:
        """Look at this client's session no later than ``when``."""
        if when < self._due.get(client_id, math.inf):
            self._schedule(client_id, when)

    def _schedule(self, client_id: int, when: float) -> None:
        self._due[client_id] = when
        heapq.heappush(self._heap, (when, client_id))
        if when < self._sleeps_until:
            self._wake.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.stall.run, name="trio_stream stall monitor")
            await self._watch()

    async def _watch(self) -> None:
        heap = self._heap
        while True:
            self._wake = trio.Event()
            planned = heap[0][0] if heap else math.inf
            self._sleeps_until = planned
            with trio.move_on_at(planned):
                await self._wake.wait()
            self._sleeps_until = -math.inf  # no wake-ups needed while it looks
            now = trio.current_time()
            suspects: list[tuple[int, float]] = []
            looks = 0
            while heap and heap[0][0] <= now:
                when, client_id = heapq.heappop(heap)
                if self._due.get(client_id) != when:
                    continue  # superseded by an earlier or later look
                del self._due[client_id]
                session = self._lookup(client_id)
                if session is None:
                    continue  # gone
                heard = session.heard_at()
                next_look = self._next_look(session, now)
                if next_look is None:
                    suspects.append((client_id, heard))
                else:
                    self._schedule(client_id, next_look)
                looks += 1
                if looks % LOOKS_PER_CHECKPOINT == 0:
                    await trio.lowlevel.checkpoint()
                    now = trio.current_time()
            if suspects:
                grace_ends = trio.current_time() + READ_GRACE_S
                await trio.sleep_until(grace_ends)
                self._close_silent(suspects)

    def _next_look(self, session: Watched, now: float) -> float | None:
        """When to look at ``session`` again; None: it has been silent for idle_timeout_s."""
        holds = session.check_holds(now)
        deadline = max(session.heard_at(), self.stall.resumed_at) + self.idle_s
        if deadline <= now:
            return None
        return min(deadline, holds)

    def _close_silent(self, suspects: list[tuple[int, float]]) -> None:
        now = trio.current_time()
        for client_id, heard in suspects:
            session = self._lookup(client_id)
            if session is None:
                continue
            next_look = self._next_look(session, now)
            if next_look is None and session.heard_at() == heard:
                session.close_idle(self.idle_s)
            else:  # it spoke during the grace (or the server stalled)
                self._schedule(client_id, now + self.idle_s if next_look is None else next_look)
