"""The five policies' exact semantics, and where lost frames are counted."""

from __future__ import annotations

import pytest

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
