"""Per-reader buffers on the server: the five overflow policies over trio memory channels.

A buffer holds ``(frame, lost_before)`` items. ``lost_before`` counts the frames this reader
lost to its policy just before that frame, so that ``msg.lost`` lands on the first message
after the gap, in sequence order:

- ``drop_oldest`` drops the head; what it carried (plus one) moves to the next frame to go out;
- ``drop_newest`` skips the new frame; the count rides on the next frame that gets in;
- ``clear`` empties the buffer; everything it held rides on the new frame;
- ``unbounded`` and ``block`` never lose (``block`` refuses, and the broker parks the frame).

Everything here is synchronous and O(1) per offered frame: the fan-out path calls ``offer``
once per reader with ``send_nowait``, never a task, a future or a checkpoint per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Final, Generic, TypeVar

import trio

T = TypeVar("T")

# The two common outcomes of offer(), allocated once: offer() runs per frame per reader.
_ACCEPTED: Final[tuple[bool, int, tuple[()]]] = (True, 0, ())
_REFUSED: Final[tuple[bool, int, tuple[()]]] = (False, 0, ())


class Policy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    CLEAR = "clear"
    UNBOUNDED = "unbounded"
    BLOCK = "block"


POLICY_NAMES = tuple(p.value for p in Policy)


def parse_policy(name: str, size: int | None) -> tuple[Policy, int | None]:
    """Validate a subscription's policy and size as a client sent them."""
    try:
        policy = Policy(name)
    except ValueError:
        raise ValueError(f"unknown policy {name!r}; use one of {', '.join(POLICY_NAMES)}") from None
    if policy is Policy.UNBOUNDED:
        return policy, None
    if size is None or size < 1:
        raise ValueError(f"policy {name!r} needs size >= 1 (frames), got {size!r}")
    return policy, size


class PolicyBuffer(Generic[T]):
    """A bounded (or not) FIFO whose policy decides what happens when it is full."""

    __slots__ = ("_carry", "_count", "_receive", "_send", "_skipped", "policy", "size")

    def __init__(self, policy: Policy, size: int | None) -> None:
        if policy is Policy.UNBOUNDED:
            size = None
        elif size is None or size < 1:
            raise ValueError(f"policy {policy.value} needs a size of at least 1")
        self.policy = policy
        self.size = size
        capacity: float = math.inf if size is None else size
        self._send, self._receive = trio.open_memory_channel[tuple[T, int]](capacity)
        self._carry = 0  # lost frames owed to the item at the head (drop_oldest)
        self._skipped = 0  # lost frames owed to the next item admitted (drop_newest)
        # Our own count: the channel's statistics() builds an object per call, and the
        # scheduler asks for the length on every turn.
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def offer(self, item: T) -> tuple[bool, int, Sequence[T]]:
        """Put ``item`` in, applying the policy when full.

        Returns:
            (accepted, lost, dropped): ``accepted`` is False only for a full ``block`` buffer
            (nothing changed then); ``lost`` counts frames this call lost; ``dropped`` are the
            items evicted to make room (so the caller can release their accounting).
        """
        lost_before = self._skipped
        try:
            self._send.send_nowait((item, lost_before))
        except trio.WouldBlock:
            pass
        else:
            self._skipped = 0
            self._count += 1
            return _ACCEPTED
        policy = self.policy
        if policy is Policy.BLOCK:
            return _REFUSED
        if policy is Policy.DROP_NEWEST:
            self._skipped += 1
            return True, 1, [item]
        if policy is Policy.DROP_OLDEST:
            old, old_lost = self._receive.receive_nowait()
            self._carry += old_lost + 1
            self._send.send_nowait((item, lost_before))
            self._skipped = 0
            return True, 1, [old]
        # CLEAR: everything buffered (and what it carried) becomes the new frame's loss.
        dropped: list[T] = []
        owed = self._carry
        while True:
            try:
                old, old_lost = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            dropped.append(old)
            owed += old_lost + 1
        self._carry = 0
        self._send.send_nowait((item, lost_before + owed))
        self._skipped = 0
        self._count = 1
        return True, len(dropped), dropped

    def take(self) -> tuple[T, int] | None:
        """The oldest item and the frames lost just before it, or None when empty."""
        try:
            item, lost = self._receive.receive_nowait()
        except trio.WouldBlock:
            return None
        self._count -= 1
        if self._carry:
            lost += self._carry
            self._carry = 0
        return item, lost

    def clear(self) -> list[T]:
        """Empty the buffer (the subscription is going away); returns what was in it."""
        out: list[T] = []
        while (entry := self.take()) is not None:
            out.append(entry[0])
        return out
