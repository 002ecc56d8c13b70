"""Per-reader buffers on the server: the five overflow policies.

A buffer holds ``(frame, lost_before)`` items. ``lost_before`` counts the frames this reader
lost to its policy just before that frame, so that ``msg.lost`` lands on the first message
after the gap, in sequence order:

- ``drop_oldest`` drops the head; what it carried (plus one) moves to the next frame to go out;
- ``drop_newest`` skips the new frame; the count rides on the next frame that gets in;
- ``clear`` empties the buffer; everything it held rides on the new frame;
- ``unbounded`` and ``block`` never lose (``block`` refuses, and the broker parks the frame).

A lossy buffer's ``size`` counts only the frames its sender will not write at once: the
reader (outbox.Reader) passes ``ahead``, how many of the oldest buffered frames its unused
credit lets out with the next write, and those are never dropped nor counted in ``size``.
The policy acts on the frames behind them (``drop_oldest`` drops the oldest of those, and the
loss rides on the first frame after the ``ahead`` ones). So a read of 600 frames fanned out at
once keeps what a fan-out frame by frame, with the sender writing between frames, would have
sent, where it used to keep only the newest ``size``.

Everything here is synchronous and O(1) per offered frame (but for a frame offered one by one
to a full lossy buffer with ``ahead`` going frames: the deque is cut in the middle, which costs
in proportion to the shorter side): the fan-out path calls ``put`` once per reader, never a
task, a future or a checkpoint per frame. A batch of one read's
frames arriving at a full lossy buffer (a flooded ``drop_oldest`` reader: most frames are
lost before the reader could ever see them) is settled by :meth:`PolicyBuffer.overflow` in a
constant number of Python operations, not one ``offer`` per frame: in S4 (a flood at a reader
of ``size=100``) that per-frame drop was most of the server's work for frames nobody reads.

Why a deque and not a trio memory channel: nothing ever *awaits* these buffers. The fan-out
puts without waiting (a full ``block`` buffer parks the frame in the broker instead), and
the connection's sender is woken by its session's event and takes with a non-blocking call.
Used that way a memory channel is this same deque behind several checks per call (closed?
receivers waiting? peak statistics?), and those checks were a fifth of the server's whole
fan-out cost: 4.6 against 3.6 µs per frame published to four readers, measured with both.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from enum import StrEnum
from itertools import islice, repeat
from operator import itemgetter
from typing import Final, Generic, TypeVar

from .._protocol.brief import brief

T = TypeVar("T")

# The two common outcomes of offer(), allocated once: offer() runs per frame per reader.
_ACCEPTED: Final[tuple[bool, int, tuple[()]]] = (True, 0, ())
_REFUSED: Final[tuple[bool, int, tuple[()]]] = (False, 0, ())
_ITEM: Final = itemgetter(0)
_LOST: Final = itemgetter(1)


class Policy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    CLEAR = "clear"
    UNBOUNDED = "unbounded"
    BLOCK = "block"


POLICY_NAMES = tuple(p.value for p in Policy)


def drops_when_full(policy: Policy) -> bool:
    """A buffer of this policy loses frames when full (``block`` and ``unbounded`` do not)."""
    return policy is not Policy.BLOCK and policy is not Policy.UNBOUNDED


def parse_policy(name: str, size: int | None) -> tuple[Policy, int | None]:
    """Validate a subscription's policy and size as a client sent them."""
    try:
        policy = Policy(name)
    except ValueError:
        raise ValueError(
            f"unknown policy {brief(name)}; use one of {', '.join(POLICY_NAMES)}"
        ) from None
    if policy is Policy.UNBOUNDED:
        return policy, None
    if size is None:  # (a retune from unbounded, which has no size to keep)
        raise ValueError(f"policy {name!r} needs a size: 1 or more frames")
    if size < 1:
        raise ValueError(f"policy {name!r} needs size >= 1 (frames), got {size!r}")
    return policy, size


class PolicyBuffer(Generic[T]):
    """A bounded (or not) FIFO whose policy decides what happens when it is full."""

    __slots__ = ("_carry", "_items", "_limit", "_skipped", "policy", "size")

    def __init__(self, policy: Policy, size: int | None) -> None:
        if policy is Policy.UNBOUNDED:
            size = None
        elif size is None or size < 1:
            raise ValueError(f"policy {policy.value} needs a size of at least 1")
        self.policy = policy
        self.size = size
        self._items: deque[tuple[T, int]] = deque()
        self._limit = sys.maxsize if size is None else size
        self._carry = 0  # lost frames owed to the item at the head (drop_oldest)
        self._skipped = 0  # lost frames owed to the next item admitted (drop_newest)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def skipped(self) -> int:
        """Frames lost since the last item admitted, owed to the next one (or a notice)."""
        return self._skipped

    def put(self, item: T) -> bool:
        """The fan-out's fast path: append ``item`` if there is room.

        Returns:
            False when full, with nothing changed: then :meth:`offer` applies the policy.
        """
        items = self._items
        if len(items) >= self._limit:
            return False
        if self._skipped:
            items.append((item, self._skipped))
            self._skipped = 0
        else:
            items.append((item, 0))
        return True

    def put_past_size(self, item: T) -> None:
        """Append ``item`` whatever ``size`` says: a ``block`` buffer taking history replayed
        at a resume. It stays over ``size`` until the reader drains it, as after a retune to
        a smaller size (new frames wait for room meanwhile)."""
        self._items.append((item, self._skipped))
        self._skipped = 0

    def room(self, ahead: int = 0) -> int:
        """How many items :meth:`put` would take before the policy applies (with ``ahead``
        of the buffered items exempt from ``size``, see :meth:`offer`)."""
        return self._limit + ahead - len(self._items)

    def put_many(self, items: list[T], count: int) -> None:
        """:meth:`put` the first ``count`` of ``items`` (a batch's fast path): the caller
        checked :meth:`room`."""
        if not count:
            return
        start = 0
        if self._skipped:
            # Not put(): the caller's room may count frames exempt from ``size``.
            self._items.append((items[0], self._skipped))
            self._skipped = 0
            start = 1
        self._items.extend(zip(islice(items, start, count), repeat(0)))

    def overflow(
        self, items: Sequence[T], start: int, before: int = 0, ahead: int = 0
    ) -> tuple[int, list[T], int]:
        """:meth:`offer` each of ``items[start:]``, in order, to this full lossy buffer.

        The outcome (items kept, the loss each carries, what :meth:`take` reports) is the
        one of offering them one by one, reached without a Python step per item: only the
        newest ``size`` of buffer and batch can stay, and every loss count is a sum.

        ``before`` more items arrived just ahead of ``items[start]`` that the caller never
        built, because they cannot stay: ``size`` or more of ``items[start:]`` follow them
        (``drop_oldest``, ``clear``), or the buffer is full and skips them (``drop_newest``).

        ``ahead``: the oldest ``ahead`` buffered items are exempt from ``size`` (the sender
        takes them with its next write, see :meth:`offer`): they stay, and "full" and "the
        newest ``size``" count the items behind them.

        Returns:
            (lost, evicted, kept_from): ``lost`` counts the frames lost (as the offers'
            counts summed), ``evicted`` are the items that were buffered before this call
            and are gone, ``items[kept_from:]`` are the new items now buffered (the others
            never stay).

        Raises:
            ValueError: the policy never drops (``block``, ``unbounded``), the buffer is not
                full (nothing ``before``: holds fewer than ``size`` past its ``ahead``
                items; ``drop_newest`` always), or ``before`` items could stay (fewer than
                ``size`` follow them): :meth:`offer` those one by one.
        """
        if not ahead:
            return self._overflow(self._items, items, start, before)
        buffered = self._items
        arriving = len(items) - start
        if (
            self.policy is Policy.DROP_OLDEST
            and not before
            and 0 < arriving < self._limit
            and len(buffered) - ahead == self._limit
        ):
            return self._push_out_behind(ahead, items, start, arriving)
        # The items behind the exempt ones, settled as a buffer of their own; a loss owed to
        # "the next item out" is owed to the first of them, not to the head (which carries
        # what it carried).
        rest = deque(islice(buffered, ahead, None))
        carry = self._carry
        self._carry = 0
        try:
            outcome = self._overflow(rest, items, start, before)
        finally:
            owed = self._carry
            self._carry = carry
        if owed:
            if rest:
                first, lost = rest[0]
                rest[0] = (first, lost + owed)
            else:
                self._skipped += owed
        head = list(islice(buffered, ahead))
        buffered.clear()
        buffered.extend(head)
        buffered.extend(rest)
        return outcome

    def _push_out_behind(
        self, ahead: int, items: Sequence[T], start: int, arriving: int
    ) -> tuple[int, list[T], int]:
        """:meth:`overflow` of a full ``drop_oldest`` buffer behind ``ahead`` exempt items
        by fewer than ``size`` new ones, in place: what the general way reaches by copying
        the whole buffer out and back, twice per frame. That is every frame of a lossy reader
        whose socket is full while it has credit left: a client that read nothing with 1,000
        such subscriptions of size 1000 took a core of the server (an outside review)."""
        buffered = self._items
        skipped = self._skipped
        self._skipped = 0
        buffered.rotate(-ahead)  # the exempt items to the back, for a moment (C, O(ahead))
        popleft = buffered.popleft
        evicted = [popleft() for _ in range(arriving)]
        # Each pushed out owes its loss plus itself to the next item out: the first left.
        first, lost = buffered[0]
        buffered[0] = (first, lost + sum(map(_LOST, evicted)) + arriving)
        buffered.rotate(ahead)
        buffered.append((items[start], skipped))
        buffered.extend(zip(islice(items, start + 1, len(items)), repeat(0)))
        return arriving, list(map(_ITEM, evicted)), start

    def _overflow(
        self, buffered: deque[tuple[T, int]], items: Sequence[T], start: int, before: int
    ) -> tuple[int, list[T], int]:
        """:meth:`overflow` for ``buffered`` with nothing exempt (``self._carry`` is owed
        to its head)."""
        held = len(buffered)
        limit = self._limit
        policy = self.policy
        end = len(items)
        fills_room = 0 if policy is Policy.DROP_NEWEST else before  # items not given
        if (
            policy is Policy.BLOCK
            or policy is Policy.UNBOUNDED
            or (not fills_room and held < limit)
            or (fills_room and end - start < limit)
        ):
            raise ValueError(
                f"overflow() needs a full lossy buffer and items that push out the ones it "
                f"was not given, not {policy.value} holding {held} with {before} ahead"
            )
        arriving = before + end - start
        if arriving <= 0:
            return 0, [], end
        skipped = self._skipped
        self._skipped = 0
        if policy is Policy.DROP_NEWEST:
            # Every one is skipped; the count rides on the next frame admitted.
            self._skipped = skipped + arriving
            return arriving, [], end
        # Frame by frame, the first (limit - held) arrivals fill the room; the first of them
        # carries ``skipped``. Either policy then loses all but the last ``limit`` entries
        # of buffer and arrivals (drop_oldest) or all but the last, partial group (clear).
        lost_frames = held + arriving - limit
        if policy is Policy.DROP_OLDEST:
            # Each arrival past the room pushes the head out; every entry pushed out owes
            # its loss plus itself to the next frame out.
            if arriving < limit:  # the buffer was full (held == limit), nothing given ahead
                popleft = buffered.popleft  # (not a copy of the rest: O(size) per frame)
                evicted_entries = [popleft() for _ in range(arriving)]
                self._carry += sum(map(_LOST, evicted_entries)) + arriving
                buffered.append((items[start], skipped))
                buffered.extend(zip(islice(items, start + 1, end), repeat(0)))
                return arriving, list(map(_ITEM, evicted_entries)), start
            kept_from = end - limit
            self._carry += sum(map(_LOST, buffered)) + lost_frames
            if arriving > limit:  # the arrival that carried ``skipped`` was pushed out too
                self._carry += skipped
                skipped = 0
            evicted = list(map(_ITEM, buffered))
            buffered.clear()
            buffered.append((items[kept_from], skipped))
            buffered.extend(zip(islice(items, kept_from + 1, end), repeat(0)))
            return lost_frames, evicted, kept_from
        # CLEAR: the first arrival past the room empties the buffer, and so does every
        # (size+1)th after it; each clear moves everything it held (and what that carried)
        # onto the new head.
        past_room = arriving - (limit - held)
        last_group = (past_room - 1) % limit + 1
        kept_from = end - last_group
        owed = self._carry + sum(map(_LOST, buffered)) + held + skipped + (arriving - last_group)
        evicted = list(map(_ITEM, buffered))
        buffered.clear()
        self._carry = 0
        buffered.append((items[kept_from], owed))
        buffered.extend(zip(islice(items, kept_from + 1, end), repeat(0)))
        return held + arriving - last_group, evicted, kept_from

    def put_entries(self, entries: list[tuple[T, int]], count: int) -> None:
        """:meth:`put_many` for items already paired with no loss, ``(item, 0)``: a batch's
        pairs, made once by the fan-out and shared by every reader's buffer (a tuple is
        immutable), where put_many makes one per item per reader."""
        if not count:
            return
        start = 0
        if self._skipped:
            self._items.append((entries[0][0], self._skipped))
            self._skipped = 0
            start = 1
        self._items.extend(islice(entries, start, count))

    def offer(self, item: T, ahead: int = 0) -> tuple[bool, int, Sequence[T]]:
        """Put ``item`` in, applying the policy when full.

        ``ahead``: how many of the oldest buffered items the reader's sender takes with its
        next write, whatever arrives (its unused credit and byte window let them out). A
        lossy policy holds ``size`` items *behind* those: they neither count as full nor are
        dropped, and a loss lands on the first item after them. ``block`` and ``unbounded``
        pass 0.

        Returns:
            (accepted, lost, dropped): ``accepted`` is False only for a full ``block`` buffer
            (nothing changed then); ``lost`` counts frames this call lost; ``dropped`` are the
            items evicted to make room (so the caller can release their accounting).
        """
        items = self._items
        if len(items) < self._limit + ahead:
            if self._skipped:
                items.append((item, self._skipped))
                self._skipped = 0
            else:
                items.append((item, 0))
            return _ACCEPTED
        lost_before = self._skipped
        policy = self.policy
        if policy is Policy.BLOCK:
            return _REFUSED
        if policy is Policy.DROP_NEWEST:
            self._skipped += 1
            return True, 1, [item]
        if policy is Policy.DROP_OLDEST:
            self._skipped = 0
            if not ahead:
                old, old_lost = items.popleft()
                self._carry += old_lost + 1
                items.append((item, lost_before))
                return True, 1, [old]
            # The oldest behind the exempt ones goes; its debt moves to the next one out.
            old, old_lost = items[ahead]
            del items[ahead]
            owed = old_lost + 1
            if ahead < len(items):
                after, after_lost = items[ahead]
                items[ahead] = (after, after_lost + owed)
                items.append((item, lost_before))
            else:
                items.append((item, lost_before + owed))
            return True, 1, [old]
        # CLEAR: everything buffered behind the exempt ones (and what it carried) becomes the
        # new frame's loss; what the head carries stays with the head.
        if ahead:
            cleared = list(islice(items, ahead, None))
            for _ in cleared:
                items.pop()
            owed = sum(map(_LOST, cleared)) + len(cleared)
        else:
            cleared = list(items)
            items.clear()
            owed = self._carry + sum(map(_LOST, cleared)) + len(cleared)
            self._carry = 0
        items.append((item, lost_before + owed))
        self._skipped = 0
        return True, len(cleared), list(map(_ITEM, cleared))

    def resize(self, policy: Policy, size: int | None, ahead: int = 0) -> list[T]:
        """Change the policy and size of a live buffer (a subscription retuned).

        What no longer fits goes as the new policy would have let it go had it been in force:
        ``drop_newest`` loses the newest frames, ``drop_oldest`` and ``clear`` the oldest (the
        newest ``size`` stay: a retune must not empty a buffer it merely shrinks). ``block``
        and ``unbounded`` never lose: a ``block`` buffer over its new size stays over it until
        the reader drains it (new frames wait for room meanwhile). Losses ride on the next
        frame out, as any other. ``ahead`` of the oldest items are exempt, as in :meth:`offer`
        (a lossy policy keeps them and ``size`` behind them).

        Returns:
            The frames dropped (each one lost frame).

        Raises:
            ValueError: a bounded policy without a size of at least 1.
        """
        if policy is Policy.UNBOUNDED:
            size = None
        elif size is None or size < 1:
            raise ValueError(f"policy {policy.value} needs size >= 1 (frames), got {size!r}")
        self.policy = policy
        self.size = size
        self._limit = sys.maxsize if size is None else size
        items = self._items
        dropped: list[T] = []
        if policy is Policy.BLOCK:
            return dropped
        excess = len(items) - self._limit - ahead
        if excess <= 0:
            return dropped
        if policy is Policy.DROP_NEWEST:
            for _ in range(excess):
                item, lost_before = items.pop()
                self._skipped += lost_before + 1  # owed to the next frame admitted
                dropped.append(item)
            return dropped
        # The oldest behind the exempt ones go; what they owe rides on the next one out.
        head = [items.popleft() for _ in range(ahead)]
        owed = 0
        for _ in range(excess):
            item, lost_before = items.popleft()
            owed += lost_before + 1
            dropped.append(item)
        if head:
            first, lost = items[0]  # one at least stays: size >= 1
            items[0] = (first, lost + owed)
            items.extendleft(reversed(head))
        else:
            self._carry += owed
        return dropped

    def skip(self, count: int) -> None:
        """Count ``count`` frames lost just before the next item admitted (e.g. old history)."""
        self._skipped += count

    def owe_before_head(self, count: int) -> None:
        """Count ``count`` frames lost just before the oldest item buffered now (or, when
        empty, the next admitted): a loss notice that never reached the reader (outbox.Reader.
        resume_after), whose frames came after everything in flight and before these."""
        items = self.entries()  # a loss owed to the head is settled into it first
        if items:
            item, lost = items[0]
            items[0] = (item, lost + count)
        else:
            self._skipped += count

    def take(self) -> tuple[T, int] | None:
        """The oldest item and the frames lost just before it, or None when empty."""
        if not self._items:
            return None
        entry = self._items.popleft()
        if self._carry:
            entry = (entry[0], entry[1] + self._carry)
            self._carry = 0
        return entry

    def entries(self) -> deque[tuple[T, int]]:
        """The items as (item, lost before it), oldest first, for a caller that takes many
        at once: it pops them from the left (and is done with them before the next put).
        What :meth:`take` would add to the head's loss is settled into it first."""
        items = self._items
        if self._carry and items:
            item, lost = items[0]
            items[0] = (item, lost + self._carry)
            self._carry = 0
        return items

    def items(self) -> list[T]:
        """The frames buffered, oldest first (a copy: for the rare bookkeeping that needs it)."""
        return [item for item, _ in self._items]

    def peek(self) -> T | None:
        """The oldest item, left in place (None when empty)."""
        return self._items[0][0] if self._items else None

    def untake(self, entry: tuple[T, int]) -> None:
        """Put back the entry :meth:`take` just returned (it did not fit the reader's window)."""
        self._items.appendleft(entry)

    def untake_all(self, entries: list[tuple[T, int]]) -> None:
        """Put ``entries``, taken earlier, back at the front in their order, ``size`` aside:
        a resumed reader's frames in flight that its client never got (outbox.Reader.
        resume_after) go out first, with the losses they carried."""
        self.entries()  # a loss owed to the head stays with the head
        self._items.extendleft(reversed(entries))

    def take_skipped(self) -> int:
        """Frames lost since the last item admitted, that no buffered item will report: they
        are reported now (a ``lost`` notice) and not again on the next item admitted."""
        skipped = self._skipped
        self._skipped = 0
        return skipped

    def owed(self) -> int:
        """Frames lost that nothing has reported to the reader yet: those its items would
        carry (the head's carry included) and those owed to the next item admitted. A caller
        that drops the items tells the reader these too (Reader.dropped_notice)."""
        return self._carry + sum(lost for _, lost in self._items) + self._skipped

    def clear(self) -> list[T]:
        """Empty the buffer (the subscription is going away); returns what was in it."""
        out = [item for item, _ in self._items]
        self._items.clear()
        self._carry = self._skipped = 0
        return out
