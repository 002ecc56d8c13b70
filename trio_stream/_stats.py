"""Per-subscription statistics: counts kept almost for free, rates computed when asked.

mflow handed statistics with every message; here ``sub.statistics()`` returns them on demand,
the way trio's channels and locks do. The reader's hot path pays nothing extra per message:
the Subscription counts consumed frames and bytes already (for its credit), and hands each
batch to the meter when it returns credit, once per quarter window. The meter then reads the
clock and may keep a mark (time, frames, bytes); ``statistics()`` turns the marks into rates.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import trio

#: The window of the "recent" rates (seconds).
RATE_WINDOW_S: Final = 1.0
#: At most this many marks per second are kept (so at most ~17 marks in memory).
_MARK_EVERY_S: Final = 1 / 16


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """What one subscription received, from ``sub.statistics()``.

    Attributes:
        frames: messages the application took (including ones that failed to decode).
        bytes: their size on the wire (DATA frames, headers included).
        lost: frames lost to overflow of the server-side buffer, in total (``sub.lost``).
        buffered: frames arrived at the client and not taken yet.
        rate_fps, rate_bps: frames and bytes per second over about the last second: from the
            last mark at least RATE_WINDOW_S old (marks are taken as credit is returned,
            every quarter window, and at each ``statistics()`` call, so the window is longer
            for a slow channel).
        mean_rate_fps, mean_rate_bps: frames and bytes per second since the subscription
            started.
        age_s: seconds since the subscription started.
    """

    frames: int
    bytes: int
    lost: int
    buffered: int
    rate_fps: float
    rate_bps: float
    mean_rate_fps: float
    mean_rate_bps: float
    age_s: float


@dataclass(frozen=True, slots=True)
class PatternStatistics(SubscriptionStatistics):
    """What a pattern subscription received, from ``matching.statistics()``: the totals of
    every channel it read, as one subscription's (so code written for
    ``SubscriptionStatistics`` reads it too), and each channel's own.

    Attributes:
        frames, bytes: taken from every channel, those that left included.
        lost: ``matching.lost``: lost to overflow, and of a channel that joined late, the
            frames before its first message (as its ``msg.lost`` said), those that left
            included.
        buffered: arrived at the client and not taken yet, over the channels subscribed now.
        rate_fps, rate_bps: the sum of the channels' recent rates (see SubscriptionStatistics).
        mean_rate_fps, mean_rate_bps, age_s: since the pattern subscription started.
        channels: for each name of ``matching.channels``: its subscription's statistics
            (``lost`` with the frames counted when it joined late); a new dict each call.
    """

    channels: Mapping[str, SubscriptionStatistics] = field(hash=False)


class RateMeter:
    """Totals and a few time marks of one subscription. Call in the trio thread only."""

    __slots__ = ("_bytes", "_frames", "_marks", "_start")

    def __init__(self) -> None:
        self._start = trio.current_time()
        self._frames = 0
        self._bytes = 0
        self._marks: deque[tuple[float, int, int]] = deque([(self._start, 0, 0)])

    def add(self, frames: int, nbytes: int) -> None:
        """Count a batch of consumed frames (once per credit return, not per frame)."""
        self._frames += frames
        self._bytes += nbytes
        self._mark(trio.current_time(), self._frames, self._bytes)

    def _mark(self, now: float, frames: int, nbytes: int) -> None:
        marks = self._marks
        if now - marks[-1][0] >= _MARK_EVERY_S:
            marks.append((now, frames, nbytes))
        # Keep the newest mark at least a window old (the base of the recent rate), no older.
        cutoff = now - RATE_WINDOW_S
        while len(marks) > 1 and marks[1][0] <= cutoff:
            marks.popleft()

    def statistics(
        self, pending_frames: int, pending_bytes: int, lost: int, buffered: int
    ) -> SubscriptionStatistics:
        """The statistics now; ``pending_*``: consumed since the last :meth:`add`."""
        now = trio.current_time()
        frames = self._frames + pending_frames
        nbytes = self._bytes + pending_bytes
        self._mark(now, frames, nbytes)
        base_time, base_frames, base_bytes = self._marks[0]
        span_s = now - base_time
        age_s = now - self._start
        return SubscriptionStatistics(
            frames=frames,
            bytes=nbytes,
            lost=lost,
            buffered=buffered,
            rate_fps=(frames - base_frames) / span_s if span_s > 0 else 0.0,
            rate_bps=(nbytes - base_bytes) / span_s if span_s > 0 else 0.0,
            mean_rate_fps=frames / age_s if age_s > 0 else 0.0,
            mean_rate_bps=nbytes / age_s if age_s > 0 else 0.0,
            age_s=age_s,
        )
