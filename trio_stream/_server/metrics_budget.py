"""What /metrics may cost the server: a small share of its time, however often it is asked.

Rendering walks every public channel (0.7 ms and 80 kB for 300 channels on a 2-core
machine), and /metrics is served without a token on most servers: a scraper asking in a loop
(several hundred requests a second over keep-alive) would spend most of a core on it and
raise every reader's latency tenfold. So the text is kept and served again while it is
younger than ``1 / RENDER_SHARE`` times what it took to render: a scraper in a loop then
costs the server at most ``RENDER_SHARE`` of its time in rendering, and a scrape after a
quiet spell (Prometheus asks every few seconds) is always fresh. A small server's text is
stale by a few milliseconds at most, a large one's by ``MAX_AGE_S``.

Serving the text costs too (h11, and 80 kB written for 300 channels: a loop of requests
still took most of a core with the text kept), so each address gets one answer per
``INTERVAL_S``: a request that comes sooner waits for its turn (a scraper in a loop is
slowed, not refused), unless ``MAX_WAITING`` of its address's wait already (then a 429).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import trio

RENDER_SHARE: Final = 0.05
MAX_AGE_S: Final = 1.0
INTERVAL_S: Final = 0.1  # 10 answers a second for an address; Prometheus asks every few s
MAX_WAITING: Final = 10  # an address's requests waiting at once: 1 s of turns at most
TURNS_KEPT: Final = 1024  # addresses remembered before those whose turn has come are dropped


class MetricsBudget:
    """The last rendered text and how long it may be served again.

    ``render`` gives the text in parts, each made as it is asked for (metrics.metrics_steps):
    other tasks run between parts, and the render's cost is the time its parts took, not
    the others' between them. ``clock`` (seconds) measures that cost and the text's age:
    trio's by default (the monotonic clock, or a test's), injectable so tests can step it.
    """

    def __init__(
        self, render: Callable[[], Iterable[bytes]], clock: Callable[[], float] = trio.current_time
    ) -> None:
        self._render = render
        self._clock = clock
        self._text = b""
        self._rendered_at = 0.0
        self._fresh_for = -1.0  # nothing rendered yet
        self._rendering: trio.Event | None = None  # set when the render under way is done
        self._renders = 0

    async def text(self) -> bytes:
        """The text to serve now: the kept one while fresh, else a new render (or the one
        under way: a request that comes meanwhile gets its text too)."""
        while (rendering := self._rendering) is not None:
            renders = self._renders
            await rendering.wait()
            if self._renders != renders:  # (not if it was cancelled: then one renders here)
                return self._text
        started = self._clock()
        if started - self._rendered_at < self._fresh_for:
            return self._text
        self._rendering = done = trio.Event()
        try:
            parts: list[bytes] = []
            took = 0.0
            steps = iter(self._render())
            while True:
                step_started = self._clock()
                part = next(steps, None)
                took += self._clock() - step_started
                if part is None:
                    break
                parts.append(part)
                await trio.lowlevel.checkpoint()
            self._text = b"".join(parts)
            self._rendered_at = started
            self._fresh_for = min(took / RENDER_SHARE, MAX_AGE_S)
            self._renders += 1
        finally:
            self._rendering = None
            done.set()
        return self._text


class MetricsTurns:
    """One /metrics answer per address every ``interval_s`` (trio's clock: tests jump it),
    and at most ``max_waiting`` of an address's requests waiting for theirs.

    A waiting request's connection is not read, so the server cannot see its client give up
    (a scraper's timeout): each wait is bounded by the others', at most
    ``max_waiting * interval_s`` (1 s), and a request over that is answered at once with a
    429. Without the bound, abandoned requests booked turns ever further ahead and held their
    connections, which the per-address connection limit counts: a scraper with a short
    timeout locked the address's trio_stream clients out (a review).
    """

    def __init__(self, interval_s: float = INTERVAL_S, max_waiting: int = MAX_WAITING) -> None:
        self._interval_s = interval_s
        self._max_waiting = max_waiting
        self._next_turn: dict[str, float] = {}
        self._waiting: dict[str, int] = {}
        self._prune_at = TURNS_KEPT

    async def wait_turn(self, address: str) -> bool:
        """Return at ``address``'s next turn (at once if it has not asked lately); False,
        at once, when ``max_waiting`` of its requests wait already (answer it with a 429)."""
        waiting = self._waiting.get(address, 0)
        if waiting >= self._max_waiting:
            return False
        now = trio.current_time()
        turn = max(now, self._next_turn.get(address, now))
        self._next_turn[address] = turn + self._interval_s
        if len(self._next_turn) > self._prune_at:  # (amortized: the bound doubles with use)
            self._next_turn = {a: t for a, t in self._next_turn.items() if t > now}
            self._prune_at = max(TURNS_KEPT, 2 * len(self._next_turn))
        self._waiting[address] = waiting + 1
        try:
            await trio.sleep_until(turn)
        finally:
            if self._waiting[address] > 1:
                self._waiting[address] -= 1
            else:
                del self._waiting[address]
        return True
