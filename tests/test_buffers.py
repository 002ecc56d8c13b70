"""The five policies' exact semantics, and where lost frames are counted."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_stream._server.buffers import Policy, PolicyBuffer, parse_policy


def drain(buffer: PolicyBuffer[int]) -> list[tuple[int, int]]:
    out = []
    while (entry := buffer.take()) is not None:
        out.append(entry)
    return out


def fill(policy: Policy, size: int | None, items: range) -> PolicyBuffer[int]:
    buffer: PolicyBuffer[int] = PolicyBuffer(policy, size)
    for item in items:
        buffer.offer(item)
    return buffer


def test_drop_oldest_keeps_the_newest_and_the_gap_lands_on_the_first_kept() -> None:
    buffer = fill(Policy.DROP_OLDEST, 3, range(1, 11))
    assert drain(buffer) == [(8, 7), (9, 0), (10, 0)]


def test_drop_newest_keeps_the_oldest_and_the_gap_lands_on_the_next_admitted() -> None:
    buffer = fill(Policy.DROP_NEWEST, 3, range(1, 11))
    assert drain(buffer) == [(1, 0), (2, 0), (3, 0)]
    buffer.offer(11)
    assert drain(buffer) == [(11, 7)]


def test_clear_empties_then_keeps_the_new_frame() -> None:
    buffer = fill(Policy.CLEAR, 3, range(1, 5))  # 1,2,3 then 4 clears them
    assert drain(buffer) == [(4, 3)]
    buffer = fill(Policy.CLEAR, 3, range(1, 9))  # 4 clears 1-3; 7 clears 4-6 and 4's debt
    assert drain(buffer) == [(7, 6), (8, 0)]


def test_unbounded_keeps_everything() -> None:
    buffer = fill(Policy.UNBOUNDED, None, range(10_000))
    assert [item for item, _ in drain(buffer)] == list(range(10_000))


def test_block_refuses_when_full_and_changes_nothing() -> None:
    buffer: PolicyBuffer[int] = PolicyBuffer(Policy.BLOCK, 2)
    assert buffer.offer(1)[0] and buffer.offer(2)[0]
    accepted, lost, dropped = buffer.offer(3)
    assert (accepted, lost, list(dropped)) == (False, 0, [])
    assert drain(buffer) == [(1, 0), (2, 0)]


@pytest.mark.parametrize("policy", list(Policy))
def test_skipped_frames_land_on_the_next_admitted(policy: Policy) -> None:
    # History that did not fit a late reader: counted on the first frame it does get.
    buffer: PolicyBuffer[int] = PolicyBuffer(policy, 3)
    buffer.skip(40)
    buffer.offer(41)
    buffer.offer(42)
    assert drain(buffer) == [(41, 40), (42, 0)]


def test_losses_sum_exactly_over_a_long_run() -> None:
    for policy in (Policy.DROP_OLDEST, Policy.DROP_NEWEST, Policy.CLEAR):
        buffer: PolicyBuffer[int] = PolicyBuffer(policy, 4)
        delivered = lost = 0
        for item in range(1, 1001):
            buffer.offer(item)
            if item % 7 == 0:  # a reader that takes one frame now and then
                entry = buffer.take()
                if entry:
                    delivered += 1
                    lost += entry[1]
        for _, gap in drain(buffer):
            delivered += 1
            lost += gap
        if policy is not Policy.DROP_NEWEST:  # drop_newest's tail loss has no frame after it
            assert delivered + lost == 1000, policy


def test_policy_validation_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="use one of drop_oldest"):
        parse_policy("drop_random", 3)
    with pytest.raises(ValueError, match="needs size"):
        parse_policy("block", 0)
    assert parse_policy("unbounded", None) == (Policy.UNBOUNDED, None)


LOSSY = [Policy.DROP_OLDEST, Policy.DROP_NEWEST, Policy.CLEAR]
# How a buffer gets its state before the batch: offers, skips (history left out), takes.
STEP = st.one_of(
    st.tuples(st.just("offer"), st.integers(0, 3)),
    st.tuples(st.just("skip"), st.integers(1, 3)),
    st.tuples(st.just("take"), st.integers(1, 3)),
)


def prepared(
    policy: Policy, size: int, steps: list[tuple[str, int]], full: bool = True
) -> PolicyBuffer[int]:
    buffer: PolicyBuffer[int] = PolicyBuffer(policy, size)
    item = 0
    for kind, count in steps:
        for _ in range(count):
            if kind == "offer":
                item -= 1  # before the batch: negative, so the batch's own are told apart
                buffer.offer(item)
            elif kind == "skip":
                buffer.skip(1)
            else:
                buffer.take()
    while full and buffer.room():
        item -= 1
        buffer.offer(item)
    return buffer


@settings(max_examples=800, deadline=None)
@given(
    st.sampled_from(LOSSY),
    st.integers(1, 6),
    st.lists(STEP, max_size=8),
    st.integers(0, 20),
    st.integers(0, 3),
    st.integers(0, 12),
    st.booleans(),
    st.integers(0, 8),
)
# Frames lost to history (skip) ride on the first arrival, pushed out just past the size.
@example(Policy.DROP_OLDEST, 2, [("offer", 2), ("skip", 1)], 3, 0, 0, True, 0)
@example(Policy.DROP_OLDEST, 2, [("offer", 2), ("skip", 1)], 2, 0, 1, True, 0)
@example(Policy.CLEAR, 2, [("offer", 1), ("skip", 2)], 2, 1, 3, False, 0)
# Frames not given that do not fill the room: the size given after them pushes them out.
@example(Policy.DROP_OLDEST, 3, [], 3, 0, 1, False, 0)
@example(Policy.CLEAR, 3, [("offer", 1)], 4, 0, 1, False, 0)
# Exempt frames ahead: the policy acts behind them, the loss lands on the first after them.
@example(Policy.DROP_OLDEST, 2, [("offer", 3), ("skip", 1)], 3, 0, 0, True, 2)
@example(Policy.CLEAR, 2, [("offer", 4)], 5, 0, 2, True, 3)
def test_overflow_decides_what_offering_the_frames_one_by_one_decides(
    policy: Policy,
    size: int,
    steps: list[tuple[str, int]],
    arriving: int,
    start: int,
    before: int,
    full: bool,
    exempt: int,
) -> None:
    # ``before`` frames arrive ahead of the batch without being given (the broker does not
    # build frames that no reader keeps): offered one by one they are 1001, 1002, ...
    # The buffer's oldest ``ahead`` frames are exempt (the sender takes them at once): one by
    # one, the reference takes them out first and offers the rest to what stays.
    batch = list(range(1, start + arriving + 1))
    not_given = list(range(1001, 1001 + before))
    at_once = prepared(policy, size, steps, full)
    ahead = min(exempt, len(at_once))
    reference = prepared(policy, size, steps, full)
    head = [entry for _ in range(ahead) if (entry := reference.take()) is not None]
    one_by_one = prepared(policy, size, steps, full)
    fills_room = 0 if policy is Policy.DROP_NEWEST else before
    if (not fills_room and len(reference) < size) or (fills_room and arriving < size):
        with pytest.raises(ValueError, match="full lossy buffer"):
            at_once.overflow(batch, start, before, ahead)
        return
    before_items = set(reference.items())
    lost = 0
    dropped: list[int] = []
    for item in not_given + batch[start:]:
        accepted, count, gone = reference.offer(item)
        assert accepted
        lost += count
        dropped += gone
        assert one_by_one.offer(item, ahead) == (accepted, count, gone)
    assert not set(not_given) & set(reference.items()), "a frame not given must not stay"
    got_lost, evicted, kept_from = at_once.overflow(batch, start, before, ahead)
    assert got_lost == lost
    assert evicted == [item for item in dropped if item in before_items]
    assert [item for item in reference.items() if 0 < item < 1001] == batch[kept_from:]
    expected = head + drain(reference)
    assert drain(at_once) == expected
    assert drain(one_by_one) == expected
    assert at_once.take_skipped() == one_by_one.take_skipped() == reference.take_skipped()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(LOSSY),
    st.integers(1, 6),
    st.lists(STEP, max_size=8),
    st.integers(0, 8),
    st.sampled_from(LOSSY),
    st.integers(1, 6),
)
def test_resize_keeps_the_exempt_frames_and_shrinks_what_follows_them(
    policy: Policy,
    size: int,
    steps: list[tuple[str, int]],
    exempt: int,
    new_policy: Policy,
    new_size: int,
) -> None:
    resized = prepared(policy, size, steps)
    ahead = min(exempt, len(resized))
    reference = prepared(policy, size, steps)
    head = [entry for _ in range(ahead) if (entry := reference.take()) is not None]
    assert resized.resize(new_policy, new_size, ahead) == reference.resize(new_policy, new_size)
    assert drain(resized) == head + drain(reference)
    assert resized.take_skipped() == reference.take_skipped()


@pytest.mark.parametrize("policy", [Policy.BLOCK, Policy.UNBOUNDED, Policy.DROP_OLDEST])
def test_overflow_refuses_a_buffer_that_is_not_full_or_never_drops(policy: Policy) -> None:
    buffer = fill(policy, 3, range(2))
    with pytest.raises(ValueError, match="full lossy buffer"):
        buffer.overflow([1, 2], 0)
    with pytest.raises(ValueError, match="full lossy buffer"):
        buffer.overflow([1, 2], 0, before=5)  # two given: the ones not given could stay


@pytest.mark.parametrize("policy", [Policy.DROP_NEWEST, Policy.CLEAR])
def test_shared_entries_take_the_loss_owed_like_frames_put_one_by_one(policy: Policy) -> None:
    # put_entries stores a batch's (frame, 0) pairs as they are (shared between readers);
    # a loss owed to the next frame admitted still lands on the first of them.
    def after_a_loss(put: str) -> list[tuple[int, int]]:
        buffer = fill(policy, 2, range(3))  # one frame lost (drop_newest) or cleared away
        drain(buffer)
        entries = [(item, 0) for item in (10, 11, 12)]
        if put == "entries":
            buffer.put_entries(entries, 2)
        else:
            for item in (10, 11):
                buffer.put(item)
        return drain(buffer)

    assert after_a_loss("entries") == after_a_loss("one by one")
