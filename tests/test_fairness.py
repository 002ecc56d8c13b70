"""Deficit round robin with fake flows: shares by bytes, no wall clock."""

from __future__ import annotations

from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._server.fairness import QUANTUM_BYTES, DeficitRoundRobin


class FakeFlow:
    """Frames of one size, as many as it has."""

    def __init__(self, name: str, frame_bytes: int, frames: int) -> None:
        self.name = name
        self.frame_bytes = frame_bytes
        self.frames = frames
        self.sent_bytes = 0
        self.in_rotation = True

    def take_turn(
        self, pieces: list[BytesLike], run: list[bytes], quota: int
    ) -> tuple[int, int, bool]:
        # Frames until the quota is reached (the last one may overdraw it).
        frames = min(self.frames, max(0, -(-quota // self.frame_bytes)))
        self.frames -= frames
        taken = frames * self.frame_bytes
        run.append(self.name.encode() * frames)
        self.sent_bytes += taken
        return frames, taken, self.frames > 0

    def left_rotation(self) -> None:
        self.in_rotation = False


def test_flows_of_large_and_small_frames_share_by_bytes() -> None:
    scheduler = DeficitRoundRobin()
    big = FakeFlow("big", 1 << 20, 1000)
    small = FakeFlow("small", 100, 10**8)
    scheduler.add(big)
    scheduler.add(small)
    for _ in range(200):
        scheduler.fill([], 4 << 20)
    # Large frames overdraw a turn and pay it back later: equal bytes in the long run,
    # within one large frame.
    assert abs(big.sent_bytes - small.sent_bytes) <= (1 << 20) + QUANTUM_BYTES


def test_a_quiet_flow_waits_behind_at_most_about_one_quantum_of_a_busy_one() -> None:
    scheduler = DeficitRoundRobin()
    busy = FakeFlow("busy", 100, 10**6)
    scheduler.add(busy)
    scheduler.fill([], 1 << 20)
    quiet = FakeFlow("quiet", 100, 1)
    scheduler.add(quiet)
    pieces: list[BytesLike] = []
    scheduler.fill(pieces, 1 << 20)
    joined = b"".join(bytes(p) for p in pieces)
    assert joined.index(b"quiet") <= (QUANTUM_BYTES // 100 + 1) * len(b"busy")


def test_a_flow_with_nothing_left_leaves_the_rotation_until_added_again() -> None:
    scheduler = DeficitRoundRobin()
    flow = FakeFlow("f", 100, 3)
    scheduler.add(flow)
    assert scheduler.fill([], 1 << 20) == (3, 300)
    assert not flow.in_rotation and not scheduler
    flow.frames = 10**4
    flow.in_rotation = True
    scheduler.add(flow)
    frames, nbytes = scheduler.fill([], QUANTUM_BYTES)
    assert frames == -(-QUANTUM_BYTES // 100) and nbytes == frames * 100  # the last overdraws


class CountingFlow(FakeFlow):
    def __init__(self, name: str, frame_bytes: int, frames: int) -> None:
        super().__init__(name, frame_bytes, frames)
        self.quotas: list[int] = []

    def take_turn(
        self, pieces: list[BytesLike], run: list[bytes], quota: int
    ) -> tuple[int, int, bool]:
        self.quotas.append(quota)
        return super().take_turn(pieces, run, quota)


def test_a_flow_alone_in_the_rotation_takes_the_budget_in_one_turn() -> None:
    scheduler = DeficitRoundRobin()
    alone = CountingFlow("alone", 100, 10**6)
    scheduler.add(alone)
    budget = 20 * QUANTUM_BYTES
    frames = -(-budget // 100)  # the last one overdraws
    assert scheduler.fill([], budget) == (frames, frames * 100)
    assert alone.quotas == [budget]


def test_a_flow_that_was_alone_owes_nothing_when_another_joins() -> None:
    # Its solo turns spent the budget, not quanta it would have to pay back: the newcomer
    # still waits behind at most about one quantum of it.
    scheduler = DeficitRoundRobin()
    busy = CountingFlow("busy", 100, 10**6)
    scheduler.add(busy)
    scheduler.fill([], 1 << 20)
    scheduler.fill([], 1 << 20)
    other = CountingFlow("other", 100, 10**6)
    scheduler.add(other)
    scheduler.fill([], 8 * QUANTUM_BYTES)
    assert busy.quotas[2:] and all(q <= QUANTUM_BYTES for q in busy.quotas[2:])
    assert abs(busy.sent_bytes - 2 * (1 << 20) - other.sent_bytes) <= QUANTUM_BYTES + 100
