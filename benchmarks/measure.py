"""The measuring logic that runs inside workers, the same for every system.

Adapters only move frames; what to send when, and what counts, is decided here so that
every system is measured the same way.
"""

from __future__ import annotations

import time

from benchmarks.jobs import (
    Measure,
    PublishJob,
    PublishResult,
    ReadJob,
    ReadResult,
    SubscriptionResult,
    Timing,
)
from benchmarks.payload import PayloadFactory, mismatch, read_header

# A flood publisher also stops after this many frames: a bound on every loop even if the
# clock misbehaves (2 GHz of small frames for a few seconds would not reach it).
MAX_FRAMES = 50_000_000


def seconds_until(deadline_ns: int) -> float:
    return max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9)


class PublishPlan:
    """When to publish and what: a flood from go to the window's end, or a paced series.

    Usage: ``while (due := plan.next_due_ns()) is not None``: sleep until ``due`` when it is
    not 0, then publish ``plan.make()``.
    """

    def __init__(self, job: PublishJob, timing: Timing) -> None:
        self._timing = timing
        self._factory = PayloadFactory(job.payload)
        # Paced frames go out on a fixed schedule from go (not "sleep one period after the
        # previous send", which drifts by the cost of each send).
        self._period_ns = round(1e9 / job.rate_hz) if job.rate_hz else 0
        self._seq = 0
        self._sent = 0
        self._sent_in_window = 0
        self._last_in_window = False
        self._due_ns = 0
        self._done = False
        self._notes: list[str] = []

    @property
    def paced(self) -> bool:
        return self._period_ns > 0

    def next_due_ns(self) -> int | None:
        """0: send now; > 0: send at that monotonic time; None: done."""
        if self._seq >= MAX_FRAMES or self._done:
            return None
        timing = self._timing
        if self.paced:
            # After the last slot of the window, one more frame exactly at its end: the
            # "last" marker, outside the window. A latency reader stops when it arrives,
            # so it never leaves while the window's flood is still being published.
            self._due_ns = min(timing.go_ns + self._seq * self._period_ns, timing.end_ns)
            return self._due_ns
        if self._seq == 0:
            return timing.go_ns
        return 0 if time.monotonic_ns() < timing.end_ns else None

    def make(self) -> object:
        now = time.monotonic_ns()
        last = self.paced and self._due_ns >= self._timing.end_ns
        self._done = last
        value = self._factory.make(now, self._seq, last)
        self._seq += 1
        self._sent += 1
        self._last_in_window = self._timing.start_ns <= now < self._timing.end_ns
        self._sent_in_window += self._last_in_window
        return value

    def unsent(self, why: str) -> None:
        """The system refused the frame made last: it must not count as sent."""
        self._sent -= 1
        self._sent_in_window -= self._last_in_window
        # Refusals after the window (readers leaving as the case ends) are expected.
        if self._last_in_window and why not in self._notes:
            self._notes.append(why)

    def note(self, text: str) -> None:
        self._notes.append(text)

    def result(self) -> PublishResult:
        return PublishResult(self._sent, self._sent_in_window, list(self._notes))


class ReaderSink:
    """Counts what one reader receives; tells the adapter when to stop reading.

    Throughput subscriptions count frames that *arrive* inside the window. Latency
    subscriptions record frames *sent* inside the window, however late they arrive, and
    the reader keeps going until each has seen its publisher's last frame (or drain_ns).
    """

    def __init__(self, job: ReadJob, timing: Timing) -> None:
        self._timing = timing
        self._payload = job.payload
        self._measures = [s.measure for s in job.subscriptions]
        self._checked = [False for _ in job.subscriptions]
        self._results = [SubscriptionResult() for _ in job.subscriptions]
        self._awaiting_last = self._measures.count(Measure.LATENCY)
        self._notes: list[str] = []
        self.deadline_ns = timing.drain_ns if self._awaiting_last else timing.end_ns

    def on_value(self, index: int, value: object) -> bool:
        """Record one decoded frame of subscription ``index``; True: stop reading now."""
        now = time.monotonic_ns()
        timing = self._timing
        result = self._results[index]
        if not self._checked[index]:
            self._checked[index] = True
            if problem := mismatch(self._payload, value):
                self.note(problem)
        if self._measures[index] is Measure.THROUGHPUT:
            if timing.start_ns <= now < timing.end_ns:
                result.in_window += 1
        else:
            header = read_header(value)
            if timing.start_ns <= header.sent_ns < timing.end_ns:
                result.received += 1
                result.latencies_ns.append(now - header.sent_ns)
            if header.last:
                self._awaiting_last -= 1
                if self._awaiting_last == 0:
                    return True
        return now >= self.deadline_ns

    def note(self, text: str) -> None:
        self._notes.append(text)

    def result(self) -> ReadResult:
        return ReadResult(self._results, list(self._notes))
