"""The send side of one connection: what waits to be written to it, and in which order.

An :class:`Outbox` owns everything a connection has to send and the bounds on it: its
subscriptions' buffers (one :class:`Reader` each: decimation, policy buffer, credit window),
the bytes buffered and the connection's memory bound, the deficit-round-robin turns between
readers (fairness.py), the frames its writers have parked for full ``block`` readers and the
acknowledgements they owe, control messages, reader counts, and the coalescing of all of it
into one batch of pieces per write. A :class:`Reader` is the outbox's per-subscription part:
the two share this module and its bookkeeping, and nothing outside it writes their fields.

The broker offers a frame to a reader and learns yes or no (no: a full ``block`` reader, park
it); the connection's sender task asks :meth:`Outbox.next_batch` for the pieces of its next
write. No I/O, no event loop: the clock is injected and the connection hears what it must
act on through the small :class:`OutboxOwner` port, so all of this is tested with a fake
owner and a fake clock.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate, islice, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Final, Protocol

from .._exceptions import LimitExceeded, ProtocolError
from .._protocol.array_view import View
from .._protocol.bytes_like import BytesLike
from .._protocol.frames import SharedData, pub_ack_frame, write_data
from .._protocol.framing import frame_prefix
from .._protocol.messages import (
    CHANNEL_ENDED_REASON,
    ControlMessage,
    Lost,
    PubEnd,
    SubEnd,
    encode_message,
    readers_bodies,
)
from .buffers import Policy, PolicyBuffer, drops_when_full
from .fairness import DeficitRoundRobin

if TYPE_CHECKING:
    from .broker import Channel, Parked, ParkedView, Writer

log = logging.getLogger(__name__)

SEND_BATCH_BYTES: Final = 256 * 1024  # one write's worth of coalesced frames
# A reader resumed by its client holds at most this many credit windows of frames its client
# got and did not credit (Reader.resume_after).
RESUME_HELD_WINDOWS: Final = 4
# A block reader that has held its channel's writers back this long (seconds) is shown as
# holding the channel (held_by in channel records and $channels events).
HOLD_NOTICE_S: Final = 1.0
# ... and is warned of in the log after this long (once per hold): a channel stalled by a
# reader that reads nothing (a stopped process) was silent in the log (an operator).
HOLD_WARNING_S: Final = 10.0
# Bytes per frame in flight that a client leaves out of its count toward a quarter of
# window_bytes (credit_due): the length prefix, which it never sees as part of the frame.
CREDIT_BYTES_MARGIN: Final = 4
_NBYTES: Final = attrgetter("nbytes")
_FRAME: Final = attrgetter("frame")
_POPLEFT: Final = deque.popleft


def control_frame(message: ControlMessage) -> bytes:
    """A whole CONTROL frame, length prefix included."""
    body = encode_message(message)
    return frame_prefix(len(body)) + body


class BufferTotals:
    """Bytes buffered by every outbox of a server together: kept as they change, so that
    stats() never walks the connections (with 10,000 connected, a sum took ~0.3 ms). The
    readers' buffers and the control messages queued, not written yet (answers, notices, a
    provider's forwarded calls, a caller's answers): a provider that reads nothing held
    400 MB of calls while this said 0 (an operator)."""

    __slots__ = ("buffered_bytes",)

    def __init__(self) -> None:
        self.buffered_bytes = 0


class OutboxOwner(Protocol):
    """What an outbox tells its connection (implemented by session.Session, whose wake_sender
    is its sender's own wake)."""

    client_id: int
    name: str

    def wake_sender(self) -> None:
        """Something is ready to write (or a deadline changed)."""

    def parked_room(self) -> None:
        """The connection's writers have no more than ``max_parked_bytes`` parked now."""

    def hold_started(self, deadline: float) -> None:
        """A block reader started holding writers back: look at it again by ``deadline``."""

    def writer_ended(self, pub_id: int) -> None:
        """The broker ended this writer (its channel went away): forget its id."""


class _GoneOwner:
    """The owner of a closed outbox: a late call (a writer's ack) goes nowhere."""

    client_id = 0
    name = ""

    def wake_sender(self) -> None:
        pass

    def parked_room(self) -> None:
        pass

    def hold_started(self, deadline: float) -> None:
        pass

    def writer_ended(self, pub_id: int) -> None:
        pass


_GONE: Final = _GoneOwner()


@dataclass(slots=True)
class Batch:
    """The pieces of one write, and what they hold."""

    pieces: list[BytesLike] = field(default_factory=list)
    frames: int = 0  # DATA frames
    data_bytes: int = 0  # of DATA frames, as written
    control_bytes: int = 0  # of queued control messages (the reader's high-water mark)
    deadline: float = math.inf  # when a max_rate reader next has a frame due


class Reader:
    """One subscription's send side: decimation, its buffer, and its send credit."""

    __slots__ = (
        "__weakref__",
        "_going",
        "_going_bytes",
        "_inflight",
        "_notices",
        "_released",
        "_replaying",
        "active",
        "block_timeout",
        "block_timeout_asked",
        "blocks_writers",
        "buffer",
        "channel",
        "closed",
        "credit",
        "credited_seq",
        "doomed",
        "end_again",
        "end_error",
        "end_reason",
        "ending",
        "every",
        "held_reported",
        "hold_warned",
        "inflight_bytes",
        "interval",
        "known_as",
        "latest",
        "lost",
        "max_rate",
        "next_due",
        "outbox",
        "parked",
        "policy",
        "released_seq",
        "seen",
        "sender",
        "sent",
        "sub_id",
        "view",
        "waited_since",
        "window",
        "window_asked",
        "window_bytes",
    )

    def __init__(
        self,
        sub_id: int,
        channel: Channel,
        outbox: Outbox,
        policy: Policy,
        size: int | None,
        every: int,
        max_rate: float | None,
        window: int,
        window_bytes: int,
        block_timeout: float | None = None,
        *,
        sender: bytes | None = None,
        view: View | None = None,
        window_asked: int | None = None,
        block_timeout_asked: float | None = None,
    ) -> None:
        self.sub_id = sub_id
        self.channel = channel
        self.outbox = outbox
        self.policy = policy
        # The one policy that refuses frames rather than lose or end: checked once per admit.
        self.blocks_writers = policy is Policy.BLOCK
        self.buffer: PolicyBuffer[SharedData] = PolicyBuffer(policy, size)
        self.every = every
        self.max_rate = max_rate
        self.interval = 1.0 / max_rate if max_rate else 0.0
        self.window = window
        self.window_bytes = window_bytes
        self.credit = window
        self.inflight_bytes = 0
        # The entries sent, not yet credited: kept (references to shared frames, no copies)
        # so that a reader whose connection breaks gets back those its client never had.
        self._inflight: deque[tuple[SharedData, int]] = deque()
        self.credited_seq = 0  # the seq of the newest frame the client's credit let go
        # The entries the client's last credit let go, kept until its next credit, and the
        # seq before them: a client's credit goes back as the application *takes* messages,
        # so a recorder killed after taking one (its credit sent) and before saving it has a
        # position older than credited_seq. Kept, the frames from there can still be handed
        # to its new process (kept.KeptReaders.take, by name); at most a quarter of the
        # window more (the clients return credit a quarter at a time), shared, not copied.
        self._released: deque[tuple[SharedData, int]] = deque()
        self.released_seq = 0
        # The loss notices sent after the frames in flight, as (seq accounted for, count):
        # like those frames, given back to a resume whose client never had them.
        self._notices: list[tuple[int, int]] = []
        # How many of the buffer's oldest frames (and their bytes) the sender writes at once,
        # as last counted (see going()): never more than that, often fewer (counted lazily).
        self._going = 0
        self._going_bytes = 0
        self._replaying = False  # history replayed at subscribe: nothing is going (replaying())
        self.active = False  # in its outbox's send rotation
        self.closed = False
        self.ending = False  # channel ended: send what is buffered, then the end
        self.end_error: Exception | None = None  # why it ended while kept (kept.py)
        self.end_reason = ""  # why its channel ended, for its sub_end (a clean end)
        # Its channel lives on at a new epoch (a cluster's Redis restarted empty, a channel
        # created anew on another node): its sub_end says `again`, and a client subscribes
        # again since its position, with a reset (docs/protocol.md section 8).
        self.end_again = False
        # Earlier ids of this subscription that its client may still know it by: a reply to
        # its resubscription lost with the connection (kept.py). Unique along the client's
        # connections: a resumed connection numbers on from its predecessor's.
        self.known_as: tuple[int, ...] = ()
        self.doomed = False  # over the connection's memory limit: ends, takes nothing more
        self.parked: deque[Parked | ParkedView] = (
            deque()
        )  # frames waiting for room here (block only)
        self.block_timeout = block_timeout  # s a frame may stay parked here; None: no limit
        # What the client asked for (None: the server's block_timeout_s), kept under every
        # policy: a retune to block later uses it.
        self.block_timeout_asked = block_timeout_asked
        self.held_reported = False  # shown in held_by (parked for HOLD_NOTICE_S or more)
        self.hold_warned = False  # this hold was warned of in the log (reset with held_reported)
        # Since when a writer waits for it before the stream on another node (redis_holds):
        # through Redis nothing is parked here. None: none waits, or not for that long.
        self.waited_since: float | None = None
        self.seen = 0  # frames of the channel offered since subscribing (for every=N)
        self.latest: SharedData | None = None  # newest frame held back by max_rate
        self.next_due = 0.0
        self.lost = 0
        self.sent = 0
        # Selection (fixed for the subscription's life): only this writer name's frames (the
        # DATA sender field), and only this view of array frames. The broker keeps readers
        # that have either apart from the others (see selective.py), so offer() never looks.
        self.sender = sender
        self.view = view
        self.window_asked = window_asked  # what the client asked for (a retune re-derives)

    # -- fan-out side ----------------------------------------------------------------------
    def offer(self, frame: SharedData) -> bool:
        """Called once per publish; False means "block reader full: park it for me"."""
        if self.doomed:
            self._offered_when_doomed(frame)
            return True
        if self.every > 1:
            self.seen += 1
            if (self.seen - 1) % self.every:
                return True  # decimation, not loss: keeps the 1st offered, the (N+1)th, ...
        if self.interval:
            now = self.outbox.clock()
            if self.latest is not None and now >= self.next_due:
                # The held frame's interval is over and nobody released it: the sender
                # releases on its turns (next_batch), and has none while a write waits on a
                # frozen link whose socket buffers are full, nor is there a sender for a
                # kept reader (kept.py). Replaced by every new frame, it passed the whole
                # outage off as decimation: a panel's plot had a 40 s hole with "lost 0"
                # (an operator). Released here, the rate goes on with the clock, and the
                # policy drops and counts what a reader that stopped taking frames loses.
                self.release_rate(now)
            if now < self.next_due or self.latest is not None:
                # Hold only the newest; replaced frames are decimation, not loss.
                self.latest = frame
                self.outbox.schedule_rate(self)
                return True
            self.next_due = now + self.interval
            if not self.admit(frame):
                self._hold_for_room(frame)
            return True
        if self.parked:
            return False  # earlier frames are parked for us; keep the order
        return self.admit(frame)

    def _offered_when_doomed(self, frame: SharedData) -> None:
        """A reader over the memory bound takes nothing more until it is ended (right after
        the fan-out, Outbox.end_over_limit, or on the sender's next turn): a frame its
        policy would have kept is lost to it, counted, and told with the rest
        (dropped_notice); one that ``every`` passes over is not, and ``max_rate`` keeps the
        newest as it always does (counted at the end, as undelivered)."""
        if self.every > 1:
            self.seen += 1
            if (self.seen - 1) % self.every:
                return
        if self.interval:
            self.latest = frame
            return
        self.buffer.skip(1)
        self.lost += 1
        self.channel.count_lost(1)

    def offer_batch(
        self,
        frames: list[SharedData],
        batch_bytes: int = -1,
        entries: list[tuple[SharedData, int]] | None = None,
    ) -> int:
        """:meth:`offer` each of ``frames`` in order; returns how many it took before the
        first "park it" (``len(frames)``: all of them). ``batch_bytes``, if known, is the
        frames' ``nbytes`` together: a batch that fits whole skips the loop over sizes;
        ``entries``, if given, are the frames paired with no loss, shared by every reader.

        A batch of one writer's frames (one read's worth) goes into the buffer with one
        extend and one update of the byte counts, where frame by frame each took a call to
        offer, admit and put. What a frame-by-frame fan-out would decide differently at the
        batch's edge (the buffer's room, the byte bounds) is found first with a loop over
        sizes alone; past it, the frames go through :meth:`offer` one by one as before.
        """
        count = len(frames)
        if self.doomed or self.every > 1 or self.interval or self.parked:
            for index, frame in enumerate(frames):
                if not self.offer(frame):
                    return index
            return count
        buffer = self.buffer
        outbox = self.outbox
        # Below zero when a retune shrank the buffer under what it holds: nothing fits then.
        room = max(buffer.room(), 0)
        going = going_bytes = 0
        if count > room and not self.blocks_writers:
            # A lossy reader holds ``size`` frames beyond those its sender writes at once:
            # the buffered ones, and then the batch's oldest that the credit left takes.
            counted = self.going_in(count, batch_bytes, map(_NBYTES, frames))
            if counted is None:
                for index, frame in enumerate(frames):
                    if not self.offer(frame):
                        return index
                return count
            going, going_bytes = counted
            room = max(buffer.room(self.going()), 0) + going
        fits = 0
        nbytes = 0
        if self.blocks_writers:
            # admit()'s test, with the bytes of this batch's earlier frames counted in.
            room_bytes = min(
                outbox.max_block_bytes - outbox.block_bytes,
                outbox.max_buffered_bytes - outbox.buffered_bytes,
            )
        else:
            room_bytes = outbox.max_buffered_bytes - outbox.buffered_bytes
        if 0 <= batch_bytes <= room_bytes and count <= room:
            fits = count  # the usual batch: all of it fits, whatever the order of sizes
            nbytes = batch_bytes
        elif self.blocks_writers:
            empty = not len(buffer)
            for frame in frames:
                if fits == room:
                    break
                size = frame.nbytes
                if nbytes + size > room_bytes and (fits or not empty):
                    break
                nbytes += size
                fits += 1
        else:
            for frame in frames:
                if fits == room:
                    break
                nbytes += frame.nbytes
                fits += 1
                if nbytes > room_bytes:
                    break  # this frame takes the connection over its bound: the last one
        if fits:
            if entries is not None:
                buffer.put_entries(entries, fits)
            else:
                buffer.put_many(frames, fits)
            if going and fits >= going:  # counted already (else: counted when needed)
                self._going += going
                self._going_bytes += going_bytes
            blocks = self.blocks_writers
            if outbox.buffered(nbytes, blocks) and not blocks:
                self.doomed = True  # ended right after the fan-out (end_over_limit), not mid-way
                outbox.over_limit(self)
            if not self.active and self.credit > 0:
                outbox.activate(self)
        if fits < count and not self.blocks_writers and self._overflow(frames, fits):
            return count
        for index in range(fits, count):
            if not self.offer(frames[index]):
                return index
        return count

    def _overflow(self, frames: list[SharedData], start: int) -> bool:
        """The rest of a batch, ``frames[start:]``, at this full lossy reader in one step
        (PolicyBuffer.overflow); False: go frame by frame (the memory bound may apply).

        Frame by frame, each frame dropped or admitted would check the connection's bound
        (and end an ``unbounded``-like overshoot). The step is taken only when no order of
        those frames could cross it: what is buffered now, plus ``size`` frames each as
        large as the batch's largest. Then every check on the way would have passed too.
        """
        buffer = self.buffer
        outbox = self.outbox
        size = buffer.size
        if self.doomed or size is None:
            return False
        ahead = self.going()
        if len(buffer) - ahead < size or not self._going_fixed():
            return False
        largest = max(map(_NBYTES, islice(frames, start, None)))
        if outbox.buffered_bytes + size * largest > outbox.max_buffered_bytes:
            return False
        self._settle(frames, start, 0, ahead)
        return True

    def newest_kept(self) -> int | None:
        """How many of a batch's newest frames this reader could keep, if the older ones
        (but the oldest :meth:`going_in` counts) are settled without being built
        (:meth:`take_ahead`); None: it needs every frame (a policy that keeps the oldest or
        all, decimation, a rate)."""
        buffer = self.buffer
        size = buffer.size
        if self.doomed or self.every > 1 or self.interval or size is None:
            return None
        # (Where the byte window stops the frames going short of the buffer's end, going_in
        # says None: the broker asks it before settling anything.)
        policy = self.policy
        if policy is Policy.DROP_NEWEST:
            # Full (behind the frames going out): it skips every one.
            return 0 if len(buffer) - self.going() >= size else None
        if policy is Policy.DROP_OLDEST or policy is Policy.CLEAR:
            return size
        return None

    def far_from_bound(self, largest_bytes: int, readers: int, going: int = 0) -> bool:
        """Frames not built may be settled here (:meth:`take_ahead`): ``readers`` readers
        each taking ``going`` frames for the sender and filling their ``size`` with frames
        of ``largest_bytes`` would not take the connection over its memory bound (frame by
        frame, some of the frames not built would be buffered on the way, and each check
        would pass)."""
        outbox = self.outbox
        size = self.buffer.size or 0
        return (
            outbox.buffered_bytes + readers * (size + going) * largest_bytes
            <= outbox.max_buffered_bytes
        )

    def take_ahead(self, frames: list[SharedData], going: int, built: int, gap: int) -> None:
        """Offer a batch of which only ``frames`` were built, in one step: its oldest
        ``built`` (``frames[:built]``), then ``gap`` frames never built, then the newest
        (``frames[built:]``). The broker found that this reader keeps none of the ``gap``:
        it keeps the oldest ``going`` (:meth:`going_in`: the sender writes them at once) and
        at most :meth:`newest_kept` of the newest."""
        if going:
            nbytes = sum(map(_NBYTES, islice(frames, going)))
            self.buffer.put_many(frames, going)
            self._going += going  # every frame buffered before them is going too
            self._going_bytes += nbytes
            self.outbox.buffered(nbytes)
        self._settle(frames, built, built - going + gap, self.going())

    def _settle(self, frames: list[SharedData], start: int, before: int, ahead: int) -> None:
        outbox = self.outbox
        lost, evicted, kept_from = self.buffer.overflow(frames, start, before, ahead)
        delta = sum(map(_NBYTES, islice(frames, kept_from, None))) - sum(map(_NBYTES, evicted))
        outbox.buffered(delta)
        self.lost += lost
        self.channel.count_lost(lost)
        if not self.active and self.credit > 0:
            outbox.activate(self)

    def admit(self, frame: SharedData, past_size: bool = False) -> bool:
        """Put ``frame`` in the buffer; False means "block reader without room: park it".

        ``past_size`` (a ``block`` reader's resume, resume.py): a frame of the channel's
        history goes in even when the buffer holds ``size`` frames. Live frames that find a
        ``block`` buffer full wait for room, holding their writer back; replayed ones have
        no writer to hold, and counting them lost would make a recorder that resumes after a
        blip lose what the server still holds. The buffer then stays over ``size`` until the
        reader drains it (as after a retune to a smaller size); the byte bounds below hold.

        A ``block`` reader refuses a frame that would take its connection over
        ``max_buffered_bytes``, or its connection's ``block`` subscriptions together over
        half of it (``max_block_bytes``), unless its buffer is empty: one frame always gets
        in, so the reader can make progress even when other subscriptions of its connection
        hold the memory. The half share keeps lagging ``block`` readers from starving the
        connection's other subscriptions (a dashboard's ring of 1 beside a recorder). Other
        policies take the frame and, over the bound, are ended after the fan-out.
        """
        buffer = self.buffer
        outbox = self.outbox
        if (
            self.blocks_writers
            and len(buffer)
            and (
                outbox.block_bytes + frame.nbytes > outbox.max_block_bytes
                or outbox.buffered_bytes + frame.nbytes > outbox.max_buffered_bytes
            )
        ):
            return False
        nbytes = frame.nbytes
        if past_size and self.blocks_writers:
            buffer.put_past_size(frame)
        elif not buffer.put(frame):
            # Full for ``size``: the frames the sender writes at once do not count (a lossy
            # policy keeps them and ``size`` behind them); block refuses as before.
            ahead = 0 if self.blocks_writers else self.going()
            accepted, lost, dropped = buffer.offer(frame, ahead)
            if not accepted:
                return False
            nbytes -= sum(map(_NBYTES, dropped))
            self.lost += lost
            self.channel.count_lost(lost)
        # block: over its share only with an empty buffer, one frame each at most.
        blocks = self.blocks_writers
        if outbox.buffered(nbytes, blocks) and not blocks:
            self.doomed = True  # ended right after the fan-out (end_over_limit), not mid-way
            outbox.over_limit(self)
        if not self.active and self.credit > 0:
            outbox.activate(self)
        return True

    def undelivered(self) -> int:
        """Frames of the channel waiting for this reader: buffered, parked for it (block), or
        held back by its max_rate."""
        return len(self.buffer) + len(self.parked) + (self.latest is not None)

    def skip(self, count: int) -> None:
        """``count`` frames of the channel are lost to this reader (history left out, a server
        event a full block buffer could not take): reported with the next frame, or notice."""
        self.buffer.skip(count)
        self.lost += count
        self.channel.count_lost(count)

    def report_skipped(self) -> None:
        """Losses no buffered frame will carry get a turn of their own, a loss notice (after
        the subscribe reply, which is queued first): a fresh subscription whose history was
        all left out, a resume whose frames went by with none left to replay (the client
        carries the notice's count onto the first message after the gap, whose gap says
        it), or a kept one that resumes owing losses its cut kept from the client
        (Outbox.adopt)."""
        if not len(self.buffer) and not self.active and self.credit > 0:
            self.outbox.activate(self)

    def release_rate(self, now: float) -> None:
        """max_rate: the interval has passed, so the newest held frame goes into the buffer."""
        frame = self.latest
        if frame is None:
            return
        self.latest = None
        self.next_due = now + self.interval
        if not self.admit(frame):
            self._hold_for_room(frame)

    def _hold_for_room(self, frame: SharedData) -> None:
        """max_rate with a full ``block`` buffer: keep the frame as the newest held one and
        try again an interval later (a newer frame replaces it meanwhile, as decimation)."""
        self.latest = frame
        self.outbox.schedule_rate(self)

    def park(self, parked: Parked | ParkedView) -> None:
        """The broker holds ``parked`` until this (block) reader has room for it."""
        if not self.parked:
            self.outbox.holding(self)
        self.parked.append(parked)

    def park_all(self, parked: Sequence[Parked]) -> None:
        """:meth:`park` each of ``parked``, in order (a batch's frames past a refusal)."""
        if parked:
            if not self.parked:
                self.outbox.holding(self)
            self.parked.extend(parked)

    # -- sender side -----------------------------------------------------------------------
    def ready(self) -> bool:
        """Something to send, and credit and window room to send it."""
        if self.credit <= 0:
            return False
        head = self.buffer.peek()
        return head is not None and (
            self.inflight_bytes + head.nbytes <= self.window_bytes or not self.credit_due()
        )

    def credit_due(self) -> bool:
        """Whether the client must return credit once it has consumed the frames in flight
        (protocol.md section 5: at the latest at a quarter of ``window`` frames or of
        ``window_bytes`` bytes). Until then the next frame goes even past ``window_bytes``:
        a small frame in flight, not credited yet, held back a large one that did not fit
        beside it, and both ends waited for good. Bytes are judged as a client counts them:
        each frame after its length prefix."""
        return self._credit_due_with(0, 0)

    def _credit_due_with(self, frames: int, nbytes: int) -> bool:
        """:meth:`credit_due` once ``frames`` more frames of ``nbytes`` are in flight too."""
        frames += len(self._inflight)
        return frames >= -(-self.window // 4) or (
            self.inflight_bytes + nbytes - CREDIT_BYTES_MARGIN * frames
            >= -(-self.window_bytes // 4)
        )

    def going(self) -> int:
        """How many of the buffered frames, oldest first, the sender writes next whatever
        else arrives: within the credit left, and each beside the bytes in flight within
        ``window_bytes`` (the first one goes even if it does not fit, while no credit is due),
        as take_turn takes them. A lossy policy holds ``size`` frames behind these
        (PolicyBuffer.offer's ``ahead``): with credit unused, a read of many frames fanned
        out at once keeps what the sender would have written had it run between them.

        Counted on from the last count, not afresh: frames counted stay going (only the
        sender takes them, and take_turn takes them off the count), and credit only adds
        (a retune, which may take it away, counts afresh). So a flooded reader pays for
        each frame once, when it is counted, not per offer.
        """
        if self._replaying:
            return 0
        count = self._going
        entries = self.buffer.entries()
        end = min(self.credit, len(entries))
        if count >= end:
            return count
        room = self.window_bytes - self.inflight_bytes - self._going_bytes
        total = self._going_bytes
        while count < end:
            nbytes = entries[count][0].nbytes
            # One that does not fit goes all the same while no credit is due for those
            # before it (the sender's next turn sends it alone): counted as not going, a
            # lossy reader's policy dropped it where the sender would have sent it.
            if nbytes > room and self._credit_due_with(count, total):
                break
            room -= nbytes
            total += nbytes
            count += 1
        self._going = count
        self._going_bytes = total
        return count

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Frames admitted meanwhile are history replayed at subscribe (or resume): the
        policy applies to them all, none counts as going. They come from no writer's read
        but from what the channel kept, and the subscriber asked for the part its policy
        keeps (the newest that fit; a ``drop_oldest, size=1`` reader resumes with the
        newest frame only), not for the oldest its credit could take."""
        self._replaying = True
        try:
            yield
        finally:
            self._replaying = False

    def going_in(
        self, count: int, batch_bytes: int, sizes: Iterable[int]
    ) -> tuple[int, int] | None:
        """How many of a batch's oldest frames, and their bytes, would be :meth:`going`
        were the batch buffered now: none while some buffered frame is not going, else
        those the credit and byte window left take. ``sizes`` are the frames' ``nbytes``
        in order (read no further than the credit left), ``batch_bytes`` their sum if known
        (else -1).

        None: the byte window, not the credit, stops the frames going, with room left in
        it. Frame by frame, a frame the policy drops there could let a smaller one behind
        it go, so the batch must be offered frame by frame (large frames: few per read).
        """
        going = self.going()
        credit = self.credit - going
        if count <= 0 or credit <= 0:
            return 0, 0
        room = self.window_bytes - self.inflight_bytes - self._going_bytes
        if going < len(self.buffer):
            return None if room > 0 else (0, 0)
        if count <= credit and 0 <= batch_bytes <= room:
            return count, batch_bytes
        sums = list(accumulate(islice(sizes, min(count, credit))))
        taken = bisect_right(sums, room)
        if taken == len(sums):  # the credit (or the batch) ends first
            return taken, sums[-1]
        before = sums[taken - 1] if taken else 0
        ahead = going + taken
        if not self._credit_due_with(ahead, self._going_bytes + before):
            # Larger than the room left: it goes alone (as in going()), and, as credit is
            # due once it is in flight past the window, nothing after it; should credit
            # still not be due, frame by frame says what follows.
            if self._credit_due_with(ahead + 1, self._going_bytes + sums[taken]):
                return taken + 1, sums[taken]
            return None
        room_left = room - before
        if room_left > 0:
            return None
        return taken, sums[taken - 1] if taken else 0

    def _going_fixed(self) -> bool:
        """No frame the policy drops can let another one go: the frames going end at the
        buffer's end or the credit's, or the byte window is full (see :meth:`going_in`)."""
        going = self.going()
        return (
            going >= len(self.buffer)
            or going >= self.credit
            or self.window_bytes - self.inflight_bytes - self._going_bytes <= 0
        )

    def take_turn(
        self, pieces: list[BytesLike], run: list[bytes], quota: int
    ) -> tuple[int, int, bool]:
        """Write out frames until ``quota`` bytes are taken or credit or the window runs out.

        The fan-out's other half: the frames of one turn are taken and their reader heads
        packed in one loop (frames.write_data). A frame is sent only if it fits the byte
        window beside the frames in flight, or no credit is due for those (credit_due: a
        large frame after a small one, or one larger than the window).

        Returns:
            (frames, bytes) taken, and whether the reader is still ready for another turn.
        """
        if self.closed:
            return 0, 0, False
        buffer = self.buffer
        frames, taken = write_data(
            buffer.entries(),
            self.sub_id,
            self.credit,
            quota,
            self.window_bytes - self.inflight_bytes,
            self._inflight,
            pieces,
            run,
            alone=not self.credit_due(),
        )
        if frames:
            self.credit -= frames
            self.inflight_bytes += taken
            self.sent += frames
            # The oldest frames went: those of them that were counted as going (see going();
            # never counted for block readers).
            going = self._going
            if going:
                if frames < going:
                    self._going = going - frames
                    self._going_bytes -= taken
                else:
                    self._going = self._going_bytes = 0
            self.outbox.buffered(-taken, self.blocks_writers)
            if self.parked:
                self._unpark()
        if not len(buffer):
            notice = self.skipped_notice()
            if notice is not None:
                # Nothing buffered will carry this loss: say it now, after the last frame.
                run.append(notice)
            if self.ending:
                # After its last frame (and loss), in the same write: the end of the subscription.
                run.append(self.outbox.finish(self, self.end_error))
                return frames, taken, False
        return frames, taken, self.ready()

    def skipped_notice(self) -> bytes | None:
        """The ``lost`` notice for drops that no buffered frame will carry (a ``drop_newest``
        buffer that was full when its writer stopped), or None: due when the buffer runs
        empty, and before ``sub_end``, or the reader would never learn of them."""
        skipped = self.buffer.take_skipped()
        if not skipped:
            return None
        seq = self._accounted_seq()
        self._notices.append((seq, skipped))
        return control_frame(Lost(sub=self.sub_id, lost=skipped, seq=seq))

    def take_dropped(self, parked_too: bool = True) -> int:
        """What a reader whose waiting frames are all dropped loses (see dropped_notice): its
        frames buffered, parked (if ``parked_too``) and held back by max_rate (dropped here),
        and the losses they carried (the skipped ones taken: not said twice)."""
        lost = self.undelivered() + self.buffer.owed()
        if not parked_too:
            lost -= len(self.parked)
        self.latest = None
        self.buffer.take_skipped()
        return lost

    def dropped_notice(self, parked_too: bool = True) -> bytes | None:
        """The ``lost`` notice for a reader whose waiting frames are all dropped (the server
        ends it, or a graceful shutdown's grace ran out): those frames (buffered, parked for
        it unless not ``parked_too``, the newest that max_rate holds back, which this drops)
        and the losses they carried, counted on the server already but owed to the reader (a
        ring's earlier drops went uncounted by its client: only the buffered frames were
        told). None if nothing is owed. Before the buffer is emptied."""
        lost = self.take_dropped(parked_too)
        if not lost:
            return None
        seq = self._accounted_seq()
        self._notices.append((seq, lost))
        return control_frame(Lost(sub=self.sub_id, lost=lost, seq=seq))

    def _accounted_seq(self) -> int:
        """The seq up to which this reader is accounted for, at a loss notice (its buffer
        empty): the fan-out offers every frame to every reader as it takes its seq, so every
        frame up to the channel's newest was sent, lost or passed over, but for one that
        max_rate holds back (sent later: the frames between the loss and it were replaced
        in ``latest``, decimation). A resume continues after it: what the notice counted
        must not be replayed and counted again.

        An ``every=N`` reader (of every writer, without max_rate) is accounted up to the
        last frame its step chose instead: the ones after it were passed over, and a resume
        anchors its step on this seq (resume._EveryPhase), which must be one the step kept
        or the reader would come back on the other phase.
        """
        latest = self.latest
        if latest is not None:
            return latest.seq - 1
        seq = self.channel.seq
        if self.every > 1 and self.seen and not self.interval and self.sender is None:
            seq -= (self.seen - 1) % self.every  # frames since the step's last choice
        return seq

    def left_rotation(self) -> None:
        self.active = False

    def _unpark(self) -> None:
        """Room was made: move parked frames in, in order, releasing their writers."""
        parked = self.parked
        if self.blocks_writers and len(parked) > 1:
            self._unpark_block()
        while parked and self.admit(parked[0].frame):
            parked.popleft().release()
        if not parked and self.held_reported and self.waited_since is None:
            self._hold_over()

    def _unpark_block(self) -> None:
        """:meth:`_unpark` for a ``block`` reader: the parked frames that fit go into the
        buffer with one extend and one update of the byte counts (admit()'s test, with the
        earlier ones' bytes counted in), where each took an admit() call. A writer faster
        than its slowest block reader has frames parked all along: this runs once per write
        to that reader, for every frame the write made room for."""
        parked = self.parked
        buffer = self.buffer
        outbox = self.outbox
        # Below zero when a retune shrank the buffer under what it holds: nothing fits then.
        room = max(buffer.room(), 0)
        room_bytes = min(
            outbox.max_block_bytes - outbox.block_bytes,
            outbox.max_buffered_bytes - outbox.buffered_bytes,
        )
        # The usual case, all the frames the room takes fit its bytes too, is found with
        # C-level passes (map) rather than a Python step per frame: with a writer held back,
        # every frame comes through here once per block reader.
        fits = min(room, len(parked))
        frames = list(map(_FRAME, islice(parked, fits)))
        nbytes = sum(map(_NBYTES, frames))
        if nbytes > room_bytes:
            empty = not len(buffer)  # then the first one goes in whatever its size
            fits = nbytes = 0
            for frame in frames:
                size = frame.nbytes
                if nbytes + size > room_bytes and (fits or not empty):
                    break
                nbytes += size
                fits += 1
            del frames[fits:]
        if not fits:
            return
        taken = list(map(_POPLEFT, repeat(parked, fits)))
        buffer.put_many(frames, fits)
        outbox.buffered(nbytes, True)
        if not self.active and self.credit > 0:
            outbox.activate(self)
        self.channel.broker.release_all(taken)

    def warn_hold(self, held_s: float) -> None:
        """Held its writers back for HOLD_WARNING_S: said in the log, once per hold."""
        if not self.hold_warned:
            self.hold_warned = True
            _warn_hold(self, held_s)

    def notice_hold(self) -> None:
        """Held its writers back for HOLD_NOTICE_S: show it in held_by."""
        if not self.held_reported:
            self.held_reported = True
            self.channel.held[self] = None
            self.channel.hold_event("held")

    def _hold_over(self) -> None:
        """A hold shown in held_by (notice_hold) is over."""
        self.held_reported = False
        self.hold_warned = False
        self.channel.held.pop(self, None)
        self.channel.hold_event("released")

    def holds_elsewhere(self, since: float | None) -> None:
        """Through Redis: a writer has waited for this reader's room since ``since`` (broker
        clock), for HOLD_NOTICE_S or more, shown in held_by as parked frames are; None: no
        writer waits for it any more (redis_engine, redis_holds)."""
        self.waited_since = since
        if since is not None:
            self.notice_hold()
        elif self.held_reported and not self.parked:
            self._hold_over()

    def take_parked(self) -> None:
        """The channel ends cleanly: the frames parked for this ``block`` reader were
        published before the end, and its writers were told they were taken, so they join
        its buffer now, past its ``size`` and byte bounds (they are in the server's memory
        already; the writers' windows bound them), and reach it before its ``sub_end``.
        Dropped here, they were lost without a count."""
        parked = self.parked
        if not parked:
            return
        frames = list(map(_FRAME, parked))
        buffer = self.buffer
        for frame in frames:
            buffer.put_past_size(frame)
        self.outbox.buffered(sum(map(_NBYTES, frames)), True)
        taken = list(parked)
        parked.clear()
        self.channel.broker.release_all(taken)
        if self.held_reported:
            self._hold_over()
        if not self.active and self.credit > 0:
            self.outbox.activate(self)

    def drop_parked(self) -> None:
        """This reader is going away: it no longer holds any writer back. (A frame held by
        max_rate stays: a clean end delivers it; Outbox.discard frees it.)"""
        while self.parked:
            self.parked.popleft().release()
        if self.held_reported:
            self._hold_over()

    # -- retune ------------------------------------------------------------------------------
    def retune(
        self,
        policy: Policy,
        size: int | None,
        every: int,
        max_rate: float | None,
        window: int,
        block_timeout: float | None,
    ) -> None:
        """Change this live subscription at once, between two frames: no gap, no duplicate.

        The buffer keeps its frames (what a smaller size no longer holds is lost the way the
        new policy loses, see PolicyBuffer.resize); frames parked for a reader that leaves
        ``block`` go into its buffer now, under the new policy, and their writers go on. The
        newest frame held back by ``max_rate`` stays held until the new interval from the
        last delivery has passed (at once when the rate limit goes). ``every`` counts afresh:
        the next frame is kept. The credit window follows: frames in flight keep counting
        against the new ``window``.
        """
        outbox = self.outbox
        # The credit follows the window first: what a lossy buffer keeps beyond ``size`` is
        # what the sender writes at once with the new credit, counted afresh.
        in_flight = self.window - self.credit
        self.window = window
        self.credit = window - in_flight
        self._going = self._going_bytes = 0
        # The block share is recomputed from what is buffered after the change.
        share = sum(map(_NBYTES, self.buffer.items())) if self.blocks_writers else 0
        dropped = self.buffer.resize(policy, size, self.going() if drops_when_full(policy) else 0)
        self.policy = policy
        self.blocks_writers = policy is Policy.BLOCK
        self.block_timeout = block_timeout if self.blocks_writers else None
        if dropped:
            # Only a lossy policy drops: none of these counts in the block share.
            outbox.buffered(-sum(map(_NBYTES, dropped)))
            self.lost += len(dropped)
            self.channel.count_lost(len(dropped))
        if self.blocks_writers:
            share -= sum(map(_NBYTES, self.buffer.items()))
        if share:
            outbox.block_share(-share)
        if every != self.every:
            self.every = every
            self.seen = 0
        if max_rate != self.max_rate:
            old_interval = self.interval
            self.max_rate = max_rate
            self.interval = 1.0 / max_rate if max_rate else 0.0
            # Due one new interval after the last delivery (at once without a limit before).
            self.next_due = self.next_due - old_interval + self.interval if old_interval else 0.0
            if self.latest is not None:
                if self.interval:
                    outbox.owner.wake_sender()  # a new deadline for the held frame
                else:
                    self.release_rate(outbox.clock())
        if self.parked:
            # Leaving block: a lossy policy admits them all; staying: a larger size may fit.
            self._unpark()
        if not self.active and self.ready():
            outbox.activate(self)

    def add_credit(self, frames: int) -> None:
        inflight = self._inflight
        if frames >= len(inflight):
            # The usual case: all of them (inflight_bytes is always the sum of inflight).
            if inflight:
                self.released_seq = self.credited_seq
                self.credited_seq = inflight[-1][0].seq
                self._released = inflight
                self._inflight = deque()
            self.inflight_bytes = 0
        elif frames > 0:
            # A plain loop: measured faster here than C-level map passes over the entries.
            pop = inflight.popleft
            released: deque[tuple[SharedData, int]] = deque()
            keep = released.append
            freed = 0
            for _ in range(frames):
                entry = pop()
                keep(entry)
                freed += entry[0].nbytes
            self.released_seq = self.credited_seq
            self.credited_seq = entry[0].seq
            self._released = released
            self.inflight_bytes -= freed
        self.credit = min(self.credit + frames, self.window)
        if self._notices:  # rare: only after drops at an empty buffer
            self._notices = [n for n in self._notices if n[0] > self.released_seq]
        if not self.active and self.ready():
            self.outbox.activate(self)

    # -- taken back by a reconnected client (kept.py) ----------------------------------------
    def unheard_since(self) -> int | None:
        """For a reader its client may never have heard of (no credit ever came back: the
        reply of its subscribe may have been lost with the connection), the seq before the
        first frame it holds, in flight or buffered: a repeated subscribe continues from
        there (kept.KeptReaders.take_unheard). None: its client took frames of it."""
        if self.credited_seq or self.released_seq:
            return None
        if self._inflight:
            return self._inflight[0][0].seq - 1
        first = self.buffer.peek()
        return self.channel.seq if first is None else first.seq - 1

    def resumable_after(self, since_seq: int, *, sent_only: bool = False) -> bool:
        """Whether a client that has every frame up to ``since_seq`` can take this reader
        back without a gap: it has every frame the reader let go for good (those before the
        last credit's), and none past the channel's newest. ``sent_only``: none past what
        this reader sent either (a position that may come from another subscription, as with
        a take by name: past it, the frames buffered up to it would come again)."""
        newest = self.sent_seq if sent_only else self.channel.seq
        return self.released_seq <= since_seq <= newest

    @property
    def frames_in_flight(self) -> int:
        """Frames sent and not credited yet (after a resume: those its client said it holds)."""
        return len(self._inflight)

    @property
    def sent_seq(self) -> int:
        """The seq of the newest frame this reader handed to its connection."""
        return self._inflight[-1][0].seq if self._inflight else self.credited_seq

    def pause(self) -> None:
        """Its connection is gone (kept.py): nothing goes out, nothing counts as going (a
        lossy policy keeps ``size`` frames), until a new connection takes it back."""
        self.credit = 0
        self._going = self._going_bytes = 0

    def resume_after(self, since_seq: int, window: int, held: int = 0) -> int:
        """Continue after ``since_seq`` on a new connection: the frames in flight that the
        client never got go back to the buffer's front, in order, ahead of what waited
        meanwhile (a ``block`` buffer may hold more than ``size`` until the client drains
        it, as after a history replay). ``window`` is the new connection's credit window for
        it. ``held``: how many of the frames it got (up to ``since_seq``) its client has not
        returned credit for yet and will as its application takes them (the subscribe's
        ``held``): the newest that many stay in flight, counted against ``window``. Call
        :meth:`resumable_after` first.

        Returns:
            How many frames stay in flight (``held``, at most those the reader sent).
        """
        inflight = self._inflight
        again = [entry for entry in inflight if entry[0].seq > since_seq]
        still: deque[tuple[SharedData, int]] = deque()
        if since_seq < self.credited_seq:  # a new process's position, within the last credit's
            again[:0] = [entry for entry in self._released if entry[0].seq > since_seq]
            self._released.clear()
            self.released_seq = since_seq
        else:
            got = [entry for entry in inflight if entry[0].seq <= since_seq]
            if held > 0:
                # Still in flight, as if never cut: its client returns credit for them as
                # its application takes them, and a CREDIT lets the oldest in flight go, so
                # they are let go as they are taken. Not counted, they came on top of a
                # fresh window: the client held both, and this reader what it had got of
                # every cut until a credit came (RESUME_HELD_WINDOWS).
                still.extend(got[-held:])
                del got[-held:]
            # The same client, with frames up to ``since_seq`` that its application has not
            # taken yet (they return no credit): held with the last credit's frames until
            # its next credit, which comes once they are taken, or a process killed while
            # taking them could not be taken over from its saved position.
            released = self._released
            released.extend(got)
            # ... within RESUME_HELD_WINDOWS windows: a client that does not say what it
            # holds (``held``) and took fewer than a credit's worth between cuts never
            # returned credit (it counts afresh from each resume), and the frames of every
            # cut stayed here, uncounted (a soak: 256 KiB more per cut, 100 MB after 400).
            # Not one: the last credit's frames, which its application may not have stored
            # yet, and what its client got since, a window per blip while its application
            # is slow (one window let a recorder's frames go that it had got, not stored,
            # before a blip and then a restart; two, before two blips). A position before
            # those let go is taken over with a counted loss.
            held_bytes = sum(entry[0].nbytes for entry in released)
            most, most_bytes = RESUME_HELD_WINDOWS * window, RESUME_HELD_WINDOWS * self.window_bytes
            while released and (len(released) > most or held_bytes > most_bytes):
                frame = released.popleft()[0]
                held_bytes -= frame.nbytes
                self.released_seq = frame.seq
        self._inflight = still
        self.inflight_bytes = sum(entry[0].nbytes for entry in still)
        # The client has every frame up to ``since_seq``: as if credited, but for those
        # still in flight (sent_seq, which a take-over by name checks a position against,
        # is then the newest of them).
        self.credited_seq = still[0][0].seq - 1 if still else since_seq
        self.window = window
        self.credit = max(window - len(still), 0)
        self._going = self._going_bytes = 0
        # A client that had a notice resumes after the seq it accounted for, so one past
        # ``since_seq`` was lost with the connection: its count goes to the first frame
        # after it (a drop_newest reader's drops would otherwise be counted nowhere).
        missed = [notice for notice in self._notices if notice[0] > since_seq]
        self._notices = []
        if missed:
            again = _with_notices(again, missed, self.buffer)
        if again:
            self.buffer.untake_all(again)
            self.outbox.buffered(sum(entry[0].nbytes for entry in again), self.blocks_writers)
        return len(still)


def _with_notices(
    again: list[tuple[SharedData, int]],
    notices: list[tuple[int, int]],
    buffer: PolicyBuffer[SharedData],
) -> list[tuple[SharedData, int]]:
    """``again`` (frames in flight, oldest first, with the loss each carries) with each of
    ``notices`` (seq accounted for, count; oldest first) added to the first frame after it;
    what no frame in flight follows goes to what is buffered (PolicyBuffer.owe_before_head)."""
    merged: list[tuple[SharedData, int]] = []
    pending = iter(notices)
    notice = next(pending, None)
    for frame, lost in again:
        while notice is not None and notice[0] < frame.seq:
            lost += notice[1]
            notice = next(pending, None)
        merged.append((frame, lost))
    rest = 0 if notice is None else notice[1] + sum(count for _, count in pending)
    if rest:
        buffer.owe_before_head(rest)
    return merged


def _warn_hold(reader: Reader, held_s: float) -> None:
    # A reader kept for a client that is away was said to read "nothing, or too slowly"
    # (an operator took a recorder on a cut link for a slow one).
    why = (
        "its client is away (the subscription is kept for its return, resume_grace_s)"
        if reader.outbox.keeps_ended
        else "it reads nothing, or too slowly"
    )
    log.warning(
        "channel %r: the block reader of client %r (subscription %d) has held its writers "
        "back for %.0f s: %s (a block_timeout ends such a reader)",
        reader.channel.name[:80],
        reader.outbox.owner.name,
        reader.sub_id,
        held_s,
        why,
    )


def block_timeout_error(reader: Reader, timeout: float) -> LimitExceeded:
    """Why ``reader`` (block) ends: it held its writers back for its ``block_timeout``."""
    return LimitExceeded(
        f"this block subscription to {reader.channel.name[:80]!r} held the channel's "
        f"writers (and so its other readers) back for {timeout:g} s (block_timeout), so it "
        f"was ended and the {reader.undelivered()} frames waiting for it were dropped: read "
        "faster, or subscribe with a larger block_timeout (server default: block_timeout_s)"
    )


@dataclass(frozen=True, slots=True)
class EndedReader:
    """A subscription the server ended (its ``sub_end`` sent, perhaps never received)."""

    channel: str
    epoch: str
    end: SubEnd


# The subscriptions ended most recently that an outbox remembers (see Outbox.finish).
ENDED_KEPT_MAX: Final = 64


class _EndNotice:
    """A fair-scheduler flow that writes a ``sub_end`` (a ``lost`` notice before it, if
    any) and leaves (Outbox.end_after_reply)."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def take_turn(
        self, pieces: list[BytesLike], run: list[bytes], quota: int
    ) -> tuple[int, int, bool]:
        run.extend(self.frames)
        return 0, 0, False

    def left_rotation(self) -> None:
        pass


class Outbox:
    """Everything one connection has to send, the bounds on it, and the order of writing."""

    __slots__ = (
        "__weakref__",
        "_acks",
        "_control",
        "_detach",
        "_end_soon",
        "_holding",
        "_next_sub",
        "_over_limit",
        "_rate_limited",
        "_readers_news",
        "_scheduler",
        "batch_bytes",
        "block_bytes",
        "buffered_bytes",
        "clock",
        "control_bytes",
        "ended",
        "keeps_ended",
        "max_block_bytes",
        "max_buffered_bytes",
        "max_parked_bytes",
        "owner",
        "parked_bytes",
        "readers",
        "totals",
    )

    def __init__(
        self,
        owner: OutboxOwner,
        *,
        max_buffered_bytes: int,
        max_parked_bytes: int,
        clock: Callable[[], float],
        detach: Callable[[Reader], None],
        totals: BufferTotals | None = None,
        batch_bytes: int = SEND_BATCH_BYTES,
        end_soon: Callable[[], None] | None = None,
    ) -> None:
        """Args:
        owner: the connection, told what it must act on.
        max_buffered_bytes: bound on the readers' buffers together (``block`` ones: half).
        max_parked_bytes: what this connection's writers may have parked before its
            reading stops (the session waits on :meth:`parked_room`).
        clock: seconds, monotonic (the server passes ``trio.current_time``).
        detach: ends a reader in the broker (no new frames; releases what it holds back).
        totals: the server's running total of buffered bytes, kept up to date here.
        batch_bytes: about how much DATA one write takes.
        end_soon: called when a reader takes the connection over ``max_buffered_bytes``
            (mid fan-out, once until they are ended): the connection then calls
            :meth:`end_over_limit` as soon as the fan-out is over. Without it, the sender
            ends them on its next batch, which a sender blocked writing to a client that
            reads nothing never takes.
        """
        self.owner = owner
        self.clock = clock
        self._detach = detach
        self.totals = totals if totals is not None else BufferTotals()
        self.batch_bytes = batch_bytes
        self.buffered_bytes = 0
        self.max_buffered_bytes = max_buffered_bytes
        self.block_bytes = 0  # the part of buffered_bytes that block readers hold
        self.max_block_bytes = max_buffered_bytes // 2  # their share, see Reader.admit
        self.parked_bytes = 0  # frames our writers sent that wait for block readers
        self.max_parked_bytes = max_parked_bytes
        self.readers: dict[int, Reader] = {}
        self._next_sub = 1
        self._scheduler = DeficitRoundRobin()
        self._control: list[bytes] = []
        self.control_bytes = 0  # queued or being written
        self._acks: dict[int, int] = {}  # pub_id -> frames to acknowledge
        # Channels whose reader count (or losslessness) changed since the last batch: each
        # of our writers on them hears the newest values then (an ordered set: one entry per
        # channel however fast readers come and go, and however slowly this client reads).
        self._readers_news: dict[Channel, None] = {}
        # Made on first use, like the scheduler's deque: an idle connection should hold
        # nothing it may never need (an empty set is ~0.2 KiB).
        self._rate_limited: set[Reader] | None = None
        self._over_limit: list[Reader] = []
        self._end_soon = end_soon
        # Block readers with frames parked for them, in the order they started holding (a
        # dict as an ordered set: held_by shows them in that order, not a set's).
        self._holding: dict[Reader, None] | None = None
        # Readers kept for a client that is away (kept.py): an end waits for its return.
        self.keeps_ended = False
        # The subscriptions this outbox ended last, by sub id (see finish): made on first use.
        self.ended: dict[int, EndedReader] | None = None

    # -- readers -----------------------------------------------------------------------------
    def open_reader(
        self,
        channel: Channel,
        policy: Policy,
        size: int | None,
        every: int,
        max_rate: float | None,
        window: int,
        window_bytes: int,
        block_timeout: float | None,
        *,
        sender: bytes | None = None,
        view: View | None = None,
        window_asked: int | None = None,
        block_timeout_asked: float | None = None,
    ) -> Reader:
        reader = Reader(
            self.new_sub_id(),
            channel,
            self,
            policy,
            size,
            every,
            max_rate,
            window,
            window_bytes,
            block_timeout,
            sender=sender,
            view=view,
            window_asked=window_asked,
            block_timeout_asked=block_timeout_asked,
        )
        self.readers[reader.sub_id] = reader
        return reader

    def spare(self, owner: OutboxOwner) -> Outbox:
        """An empty outbox with this one's bounds and clock, for ``owner``: where a gone
        connection's readers wait for their client to take them back (kept.py)."""
        return Outbox(
            owner,
            max_buffered_bytes=self.max_buffered_bytes,
            max_parked_bytes=self.max_parked_bytes,
            clock=self.clock,
            detach=self._detach,
            totals=self.totals,
            batch_bytes=self.batch_bytes,
        )

    def adopt(self, reader: Reader) -> None:
        """Move ``reader`` here from the outbox it is in, under a new sub id, with all it
        holds: its buffer, the frames in flight (until :meth:`Reader.resume_after`), the
        frames parked for it and the newest held back by ``max_rate``. It stays attached to
        its channel throughout: no reader count changes, no frame is offered twice or
        missed. A doomed reader (over the memory bound) is ended here, and one that ended
        meanwhile ends here (a clean end after its buffered frames)."""
        reader.outbox._let_go(reader)
        reader.outbox = self
        reader.sub_id = self.new_sub_id()
        self.readers[reader.sub_id] = reader
        self.buffered(sum(map(_NBYTES, reader.buffer.items())), reader.blocks_writers)
        if reader.parked:
            self.holding(reader)
        if reader.ending and not self.keeps_ended:  # it ended while its client was away
            # Its end goes out on its turn (after its frames, unless an error ended it), so
            # after the reply that gives its client the new id (control comes first).
            # (One an error ended has nothing buffered: what it lost is told on its turn,
            # before the end; see end().)
            self.activate(reader)
        elif reader.doomed:
            self.over_limit(reader)
        else:
            if reader.latest is not None:
                self.schedule_rate(reader)
            if reader.ready():
                self.activate(reader)
            elif reader.buffer.skipped:
                # A loss owed with nothing buffered to carry it (a notice the last connection
                # lost, Reader.resume_after): a turn says it.
                reader.report_skipped()

    def _let_go(self, reader: Reader) -> None:
        """Forget ``reader`` without ending it: it moves to another outbox (:meth:`adopt`)."""
        if self.readers.get(reader.sub_id) is reader:
            del self.readers[reader.sub_id]
        if reader.active:
            self._scheduler.remove(reader)
            reader.active = False
        if self._rate_limited:
            self._rate_limited.discard(reader)
        if self._holding:
            self._holding.pop(reader, None)
        if reader in self._over_limit:
            self._over_limit.remove(reader)
        self.buffered(-sum(map(_NBYTES, reader.buffer.items())), reader.blocks_writers)

    def new_sub_id(self) -> int:
        """The next sub id of this connection: a new reader's, an adopted one's, or one for a
        subscription that is over as soon as it is answered (kept.py)."""
        sub_id = self._next_sub
        self._next_sub += 1
        return sub_id

    @property
    def next_sub_id(self) -> int:
        """The id the next subscription of this connection gets."""
        return self._next_sub

    def number_from(self, first: int) -> None:
        """Number this connection's subscriptions from ``first`` on (before any): a resumed
        connection goes on from its predecessor's ids, so an id names one subscription along
        the client's connections (kept.py)."""
        self._next_sub = max(self._next_sub, first)

    def drop(self, reader: Reader) -> None:
        """End ``reader`` without a word (kept.py: its client has replaced it)."""
        self._detach(reader)

    def credit(self, sub_id: int, frames: int) -> None:
        """CREDIT from the client.

        Raises:
            ProtocolError: ``sub_id`` was never a subscription of this connection (one that
                ended is fine: the credit was in flight).
        """
        reader = self.readers.get(sub_id)
        if reader is not None:
            reader.add_credit(frames)
        elif not 0 < sub_id < self._next_sub:
            raise ProtocolError(f"CREDIT for subscription {sub_id}, which was never opened")

    def discard(self, reader: Reader) -> None:
        """Forget ``reader`` and free its buffer (the broker has detached it)."""
        if reader.closed:
            return
        reader.closed = True
        if self.readers.get(reader.sub_id) is reader:
            del self.readers[reader.sub_id]
        if self._rate_limited:
            self._rate_limited.discard(reader)
        if self._holding:
            self._holding.pop(reader, None)
        reader.latest = None
        self._empty_buffer(reader)

    def _empty_buffer(self, reader: Reader) -> list[SharedData]:
        """Take every frame out of ``reader``'s buffer, and their bytes out of the bound."""
        frames = reader.buffer.clear()
        reader._going = reader._going_bytes = 0
        self.buffered(-sum(map(_NBYTES, frames)), reader.blocks_writers)
        return frames

    def end(
        self, reader: Reader, error: Exception | None, reason: str = "", *, again: bool = False
    ) -> None:
        """The channel ended (``error`` None) or the server ends the reader (``error``).

        A clean end sends what is buffered first, then ``sub_end`` with ``reason`` (by
        default the channel's end reason: deleted, its lifetime, its owner gone); an error
        ends at once. ``again``: the channel lives on at a new epoch (see Reader.end_again).
        """
        if reader.closed:
            return
        if again:
            reader.end_again = True
        if error is not None and (dropped := reader.undelivered()):
            # Ended by the server: what waited for it is lost to it, and counted where every
            # other loss is (the channel's and the server's lost, the reader's in listings);
            # a recorder ended by block_timeout read 0 everywhere (an operators' audit).
            reader.lost += dropped
            reader.channel.count_lost(dropped)
        reader.end_reason = reason or reader.channel.end_reason
        if self._rate_limited:
            self._rate_limited.discard(reader)
        if error is None and reader.latest is not None:
            # max_rate's newest frame, held back for its interval: its time comes now, or a
            # dashboard would never show a channel's last value. (A full block buffer that
            # refuses it: like a newer frame replacing it, decimation.)
            frame, reader.latest = reader.latest, None
            reader.admit(frame)
        if self.keeps_ended:
            # Its client is away: it learns of the end (after the frames buffered before
            # it, if clean) once it takes the reader back (adopt). No new frames meanwhile.
            if error is not None:
                # What it loses now (parked frames too: detach gives them to their writers)
                # and the drops those carried, told on its turn before the end (a skipped
                # count is what a turn with nothing buffered says).
                lost = reader.take_dropped()
                self._empty_buffer(reader)
                reader.buffer.skip(lost)
            reader.channel.broker.detach(reader)
            reader.ending = True
            reader.end_error = error
            return
        if error is None and len(reader.buffer):
            reader.ending = True  # take_turn sends the end right after the last frame
            if not reader.active and reader.ready():
                self.activate(reader)
            return
        # Ended by the server: the reader learns what it loses, the drops its buffered
        # frames carried too (its client counted only those the message names).
        notice = reader.skipped_notice() if error is None else reader.dropped_notice()
        self._detach(reader)
        if notice is not None:
            self.queue_control(notice)
        self.queue_control(self.finish(reader, error))

    def finish(self, reader: Reader, error: Exception | None) -> bytes:
        """Forget ``reader`` and return its ``sub_end`` frame."""
        self.discard(reader)
        if error is None:
            end = SubEnd(
                sub=reader.sub_id,
                reason=reader.end_reason or CHANNEL_ENDED_REASON,
                again=True if reader.end_again else None,
            )
        else:
            end = SubEnd(sub=reader.sub_id, reason=str(error), error=type(error).__name__)
        # Its client may never get it (its connection breaks first): kept.py tells it again.
        if self.ended is None:
            self.ended = {}
        ended = self.ended
        ended[reader.sub_id] = EndedReader(reader.channel.name, reader.channel.epoch, end)
        if len(ended) > ENDED_KEPT_MAX:
            del ended[next(iter(ended))]
        return control_frame(end)

    def end_after_reply(self, end: SubEnd, lost: Lost | None = None) -> None:
        """Send ``end`` (for a sub id just given in a reply; ``lost`` before it) after that
        reply: on the sender's next turn through the readers, which comes after the control
        messages queued now."""
        frames = [control_frame(end)] if lost is None else [control_frame(lost), control_frame(end)]
        self._scheduler.add(_EndNotice(frames))
        self.owner.wake_sender()

    def activate(self, reader: Reader) -> None:
        reader.active = True
        self._scheduler.add(reader)
        self.owner.wake_sender()

    def schedule_rate(self, reader: Reader) -> None:
        if self._rate_limited is None:
            self._rate_limited = set()
        if reader not in self._rate_limited:
            self._rate_limited.add(reader)
            self.owner.wake_sender()

    def over_limit(self, reader: Reader) -> None:
        """``reader`` took the connection over ``max_buffered_bytes`` (mid fan-out: it takes
        nothing more until :meth:`end_over_limit` ends the readers that hold the most). Only
        at the crossing, never per frame: a doomed reader's offers do not come here."""
        if not self._over_limit and self._end_soon is not None:
            self._end_soon()
        self._over_limit.append(reader)
        self.owner.wake_sender()

    def buffered(self, nbytes: int, block: bool = False) -> bool:
        """A reader of this connection buffers ``nbytes`` more (fewer, if negative);
        ``block``: a ``block`` reader, whose bytes also count toward ``max_block_bytes``.

        The only writer of the byte counters (and of the server's total): readers call it
        once per batch fanned out and once per sender turn, not once per frame (but admit(),
        which takes one frame).

        Returns:
            Whether the connection is over ``max_buffered_bytes`` now.
        """
        self.buffered_bytes = total = self.buffered_bytes + nbytes
        self.totals.buffered_bytes += nbytes
        if block:
            self.block_bytes += nbytes
        return total > self.max_buffered_bytes

    def block_share(self, nbytes: int) -> None:
        """``nbytes`` already buffered move into the ``block`` readers' share (out of it, if
        negative): a retune into or out of ``block``."""
        self.block_bytes += nbytes

    def has_buffered(self) -> bool:
        return any(len(reader.buffer) for reader in self.readers.values())

    def drop_buffered_at_shutdown(self) -> int:
        """A graceful shutdown's grace ended with frames still buffered for these readers
        (slower than the grace allowed): drop them, each reader told how many by a ``lost``
        notice, written before the close, that accounts up to the last one dropped. The
        writers took them for delivered: without the notice they were missed uncounted.
        Only on a server whose frames live nowhere else (the memory engine): through Redis a
        resume after the last frame received replays them. Returns the frames dropped."""
        dropped = 0
        for reader in self.readers.values():
            # (Frames parked for a block reader are not dropped: their writers, never
            # acknowledged, send them again to the next server.)
            waiting = len(reader.buffer) or reader.latest is not None
            notice = reader.dropped_notice(parked_too=False) if waiting else None
            frames = self._empty_buffer(reader)
            dropped += len(frames)
            if notice is not None:
                self.queue_control(notice)
        return dropped

    def drains_more(self) -> bool:
        """A draining connection (graceful shutdown) has more to wait for: frames buffered
        for its readers, or its writers' frames parked for full ``block`` readers, whose
        acknowledgements it must still write. Closed before those, its writers would send
        again to the next server frames that the readers got here as they drained, and that
        the channel's other readers had before: twice. (Not left parked for the next server
        for that reason: what a slow reader cannot take in the grace is counted instead,
        see drop_buffered_at_shutdown.)"""
        return self.parked_bytes > 0 or self.has_buffered()

    # -- writers -----------------------------------------------------------------------------
    def ack(self, pub_id: int, frames: int = 1) -> None:
        """``frames`` more frames of writer ``pub_id`` are in every reader's buffer."""
        self._acks[pub_id] = self._acks.get(pub_id, 0) + frames
        self.owner.wake_sender()

    def parked(self, nbytes: int) -> None:
        """One of our writers' frames waits for a block reader (``nbytes`` as PUBLISH body)."""
        self.parked_bytes += nbytes

    def unparked(self, pub_id: int, nbytes: int, frames: int = 1) -> None:
        """Those frames (``nbytes`` together) are in every reader's buffer now: acknowledge
        them."""
        self.parked_bytes -= nbytes
        self.ack(pub_id, frames)
        if self.parked_bytes <= self.max_parked_bytes:
            self.owner.parked_room()

    def readers_changed(self, channel: Channel) -> None:
        """``channel``'s reader count changed, or whether it is lossless: our writers on it
        are told when the next batch is made (a writer needs only the newest values)."""
        self._readers_news[channel] = None
        self.owner.wake_sender()

    def writer_ended(self, writer: Writer, error: Exception) -> None:
        self.forget_writer(writer.pub_id)
        self.owner.writer_ended(writer.pub_id)
        self.queue_control(control_frame(PubEnd(pub=writer.pub_id, reason=str(error))))

    def forget_writer(self, pub_id: int) -> None:
        """Nothing more goes to a writer that has ended: no acks (nor reader counts: it is
        out of its channel's writers, which _tell_readers goes by)."""
        self._acks.pop(pub_id, None)

    def _tell_readers(self, pieces: list[BytesLike]) -> None:
        """A ``readers`` notice to each of our writers on the channels whose readers
        changed, with the newest values."""
        for channel in self._readers_news:
            writers = channel.writers_by_outbox.get(self)
            if writers:  # (none: they closed since, or the channel was deleted)
                pieces.extend(
                    frame_prefix(len(body)) + body
                    for body in readers_bodies(
                        (pub.pub_id for pub in writers), channel.readers, channel.lossless
                    )
                )
        self._readers_news = {}

    # -- control -----------------------------------------------------------------------------
    def send(self, message: ControlMessage) -> None:
        self.queue_control(control_frame(message))

    def queue_control(self, frame: bytes) -> None:
        """Queue a CONTROL frame encoded already (length prefix included): counted in the
        server's buffered bytes until it is written (a late one, after close, is dropped)."""
        owner = self.owner
        if owner is _GONE:
            return
        self._control.append(frame)
        nbytes = len(frame)
        self.control_bytes += nbytes
        self.totals.buffered_bytes += nbytes
        owner.wake_sender()

    # -- block readers holding writers back -------------------------------------------------
    def holding(self, reader: Reader) -> None:
        """``reader`` (block) just started holding its writers back: time it."""
        if self._holding is None:
            self._holding = {}
        self._holding[reader] = None
        limit = HOLD_NOTICE_S
        if reader.block_timeout is not None:
            limit = min(limit, reader.block_timeout)
        self.owner.hold_started(self.clock() + limit)

    def check_holds(self, now: float) -> float:
        """Show and end block readers by how long they have held writers; next deadline."""
        deadline = math.inf
        if not self._holding:
            return deadline
        for reader in list(self._holding):
            if reader.closed or not reader.parked:
                self._holding.pop(reader, None)
                continue
            since = reader.parked[0].since
            timeout = reader.block_timeout
            if timeout is not None and now - since >= timeout:
                self._holding.pop(reader, None)
                self.end(reader, block_timeout_error(reader, timeout))
                continue
            due = math.inf if timeout is None else since + timeout
            if not reader.held_reported:
                if now - since >= HOLD_NOTICE_S:
                    reader.notice_hold()
                else:
                    due = min(due, since + HOLD_NOTICE_S)
            if not reader.hold_warned:
                # (Timed from the oldest frame parked now: a reader that takes one now and
                # then while it holds is warned of later, once.)
                if now - since >= HOLD_WARNING_S:
                    reader.warn_hold(now - since)
                else:
                    due = min(due, since + HOLD_WARNING_S)
            if due == math.inf:
                self._holding.pop(reader, None)  # shown; parking again re-adds it
            deadline = min(deadline, due)
        return deadline

    @property
    def holds(self) -> bool:
        return bool(self._holding)

    def close(self) -> None:
        """The connection is gone: drop what refers back to it (see Session._break_cycles)."""
        self.owner = _GONE
        self.readers = {}
        self._acks = {}
        self._readers_news = {}
        self._rate_limited = None
        self._over_limit = []
        self._end_soon = None
        # Control messages never written (the connection broke): out of the server's total.
        self.totals.buffered_bytes -= self.control_bytes
        self.control_bytes = 0
        self._control = []
        self._holding = None
        self._scheduler = DeficitRoundRobin()

    # -- the sender's side -------------------------------------------------------------------
    def only_acks(self) -> bool:
        """Nothing but writer acknowledgements to send (they may wait a turn)."""
        return bool(self._acks) and not self._control and not self._scheduler

    def data_ready(self) -> bool:
        """Whether a reader has DATA (or its end) that its credit lets out now."""
        return bool(self._scheduler)

    def control_ready(self) -> bool:
        """Whether control messages are queued (a batch takes batch_bytes of them)."""
        return bool(self._control)

    def next_batch(self) -> Batch:
        """The pieces of the next write, in this order: control messages, reader counts,
        DATA through the fair scheduler (each reader's end or loss notice right after its
        last frame), then writer acknowledgements."""
        if self._over_limit:
            self._end_over_limit()
        batch = Batch()
        pieces = batch.pieces
        if self._control and self._take_control(batch):
            return batch  # more control waits: nothing may overtake it
        if self._readers_news:
            self._tell_readers(pieces)
        if self._rate_limited:
            batch.deadline = self._release_rates()
        if self._scheduler:
            batch.frames, batch.data_bytes = self._scheduler.fill(pieces, self.batch_bytes)
        if self._acks:
            pieces.extend(pub_ack_frame(pub_id, count) for pub_id, count in self._acks.items())
            self._acks = {}
        return batch

    def _take_control(self, batch: Batch) -> bool:
        """Queued control messages into ``batch``, up to ``batch_bytes`` (at least one);
        whether some are left for the next batch.

        A batch's control bytes count against the connection until the whole batch is
        written, so an unbounded one counted values its reader had taken long since: a
        streaming call with 8 values of 4 MB in flight against a 32 MiB bound was ended for
        ~2x its window, while the caller read on (an RPC user)."""
        control = self._control
        if self.control_bytes <= self.batch_bytes:  # the usual case: all of it (none written)
            batch.pieces.extend(control)
            batch.control_bytes = self.control_bytes
            self._control = []
            return False
        taken = count = 0
        for frame in control:
            if count and taken + len(frame) > self.batch_bytes:
                break
            taken += len(frame)
            count += 1
        batch.pieces.extend(control[:count])
        del control[:count]
        batch.control_bytes = taken
        return bool(control)

    def written(self, batch: Batch) -> None:
        """``batch`` went out: its control messages no longer count against the client."""
        self.control_bytes -= batch.control_bytes
        self.totals.buffered_bytes -= batch.control_bytes

    def end_over_limit(self) -> None:
        """End the readers over the memory bound now (see ``end_soon``): their buffers are
        freed at once and their ``sub_end`` queued, whether or not the sender is writing."""
        if self._over_limit:
            self._end_over_limit()

    def _end_over_limit(self) -> None:
        """The connection went over ``max_buffered_bytes``: end the readers that buffer the
        most, largest first, until it is back under the bound. Not the readers whose frames
        crossed it (``_over_limit``): a steady ring beside a growing ``unbounded`` reader, or
        beside subscriptions a notebook forgot, was ended for the others' bytes, while they
        lived on (a notebook user). Those spared take frames again; what they lost while
        marked is counted and told on their next frame, as any loss."""
        marked, self._over_limit = self._over_limit, []
        candidates = [
            r for r in self.readers.values() if not (r.blocks_writers or r.closed or r.ending)
        ]
        held = {reader: sum(map(_NBYTES, reader.buffer.items())) for reader in candidates}
        for reader in sorted(candidates, key=held.__getitem__, reverse=True):
            if self.buffered_bytes <= self.max_buffered_bytes:
                break
            self._end_for_memory(reader)
        for reader in marked:
            if not reader.closed and reader.doomed:
                reader.doomed = False
                if not reader.active and reader.ready():
                    self.activate(reader)

    def _end_for_memory(self, reader: Reader) -> None:
        """End ``reader`` for the connection's memory bound, with an error, at once: the
        frames buffered for it go with it (they are the memory over the bound), and the
        reader learns how many."""
        if reader.buffer.policy is Policy.UNBOUNDED:
            remedy = "read faster, use a bounded policy (drop_oldest, block)"
        else:  # a ring whose size of these frames does not fit beside the others
            remedy = (
                f"subscribe with a smaller size or window (size {reader.buffer.size} of "
                "these frames and those in flight, with the connection's other "
                "subscriptions, must fit)"
            )
        # What the `lost` notice before the end counts: the frames waiting and the losses
        # they carried (the reason said the buffered ones alone, 8 where the notice said 14:
        # a protocol implementer).
        waiting = reader.undelivered()
        lost = waiting + reader.buffer.owed()
        dropped = f"the {waiting} frames waiting for it were dropped"
        if lost != waiting:
            dropped += f" ({lost} lost with those dropped before them)"
        self.end(
            reader,
            LimitExceeded(
                f"the server buffers more than max_buffered_bytes "
                f"({self.max_buffered_bytes} bytes) for this connection, so the "
                f"subscription to {reader.channel.name[:80]!r} was ended and {dropped}: "
                f"{remedy}, or raise max_buffered_bytes"
            ),
        )

    def _release_rates(self) -> float:
        """Move max_rate frames whose time has come into their buffers; next deadline."""
        now = self.clock()
        deadline = math.inf
        if self._rate_limited is None:
            return deadline
        for reader in list(self._rate_limited):
            if reader.closed:
                self._rate_limited.discard(reader)
            elif reader.next_due <= now:
                self._rate_limited.discard(reader)
                reader.release_rate(now)  # may schedule itself again (a full block buffer)
            else:
                deadline = min(deadline, reader.next_due)
        return deadline
