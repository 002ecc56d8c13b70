"""The broker: channels, publishers, subscriptions and the fan-out. No I/O in here.

The connection layer (session.py) owns sockets and tasks; the broker only moves references to
frames between data structures and tells sessions (through the small ``SessionPort`` protocol)
that a subscription has something to send or that a writer is owed an acknowledgement.

One publish builds one :class:`SharedFrame` and offers that same object to every subscription
of the channel: no per-reader copy, encode, task or checkpoint. A ``block`` reader whose buffer
is full makes the broker *park* the frame on the channel and withhold the writer's
acknowledgement (PUB_ACK) until that reader has room; writer credit then stops the writer, and
nobody else waits. The writer's own credit window (``publish_window_frames`` /
``publish_window_bytes``) bounds what it can have parked: a writer that sends past it is
refused with ProtocolError, and the parked bytes count against its connection (the session
stops reading a connection whose writers have parked more than ``max_buffered_bytes``).
"Room" is counted in frames (the reader's ``size``) and in bytes (the
connection's ``max_buffered_bytes``, of which its ``block`` subscriptions together take at
most half): a ``block`` reader is never ended for memory, it slows its writers instead.
``unbounded`` readers have no such brake, so the byte bound ends them.

A ``block`` reader holds back its writers and, through them, every other reader of its
channel. Readers that have done so for ``HOLD_NOTICE_S`` are marked (``held_reported``), so
that ``channels()`` and ``$channels`` show who holds a channel back; ``block_timeout`` ends
such a reader (the session's watchdog keeps the time).
"""

from __future__ import annotations

import hmac
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from .._exceptions import AuthError, ChannelExists, ChannelNotFound, LimitExceeded, ProtocolError
from .._protocol.brief import brief
from .._protocol.bytes_like import BytesLike
from .._protocol.codec import encode_control
from .._protocol.frames import (
    DATA,
    DATA_READER_BODY_BYTES,
    DATA_READER_HEAD,
    MAX_U32,
    PUBLISH_HEAD,
    data_shared_head,
    sender_field,
)
from .._protocol.limits import MAX_BUFFERED_BYTES, PUBLISH_WINDOW_BYTES, PUBLISH_WINDOW_FRAMES
from .buffers import Policy, PolicyBuffer

MAX_CHANNEL_NAME_CHARS = 200
SMALL_PAYLOAD_BYTES = 4096
MAX_HISTORY_FRAMES = 10_000
# A block reader that has held its channel's writers back this long (seconds) is shown as
# holding the channel (held_by in channel records and $channels events).
HOLD_NOTICE_S = 1.0
MAX_CHANNEL_META_BYTES = 4096  # a channel's meta (units, labels...), CBOR-encoded
_READER_HEAD_PACK = DATA_READER_HEAD.pack


class SharedFrame:
    """One published frame as every reader gets it: built once, referenced by all buffers."""

    __slots__ = ("body_bytes", "head", "nbytes", "payload", "seq", "shared_bytes")

    def __init__(self, seq: int, head: bytes, payload: BytesLike) -> None:
        self.seq = seq
        size = len(payload)
        self.shared_bytes = len(head) + size
        self.body_bytes = DATA_READER_BODY_BYTES + self.shared_bytes  # a reader's length prefix
        self.nbytes = self.shared_bytes + DATA_READER_HEAD.size  # as written to one reader
        if size < SMALL_PAYLOAD_BYTES:
            # Join once here rather than hand every reader's writer two pieces to copy.
            self.head = head + payload
            self.payload: BytesLike = b""
        else:
            self.head = head
            self.payload = payload  # the publisher's bytes, never copied


class SessionPort(Protocol):
    """What the broker needs from a connection (implemented by session.Session)."""

    client_id: int
    name: str
    buffered_bytes: int
    max_buffered_bytes: int
    block_bytes: int  # the part of buffered_bytes that block subscriptions hold
    max_block_bytes: int  # their share of max_buffered_bytes
    parked_bytes: int  # frames this connection's writers published that wait for a block reader

    def activate(self, sub: Subscription) -> None: ...
    def schedule_rate(self, sub: Subscription) -> None: ...
    def ack(self, pub: Publisher) -> None: ...
    def readers_changed(self, pub: Publisher, readers: int) -> None: ...
    def subscription_ended(self, sub: Subscription, error: Exception | None) -> None: ...
    def finish(self, sub: Subscription) -> bytes: ...
    def over_limit(self, sub: Subscription) -> None: ...
    def publisher_ended(self, pub: Publisher, error: Exception) -> None: ...
    def unparked(self) -> None: ...
    def holding(self, sub: Subscription) -> None: ...


@dataclass(eq=False)
class Publisher:
    pub_id: int
    channel: Channel
    session: SessionPort
    sender: bytes
    acks_due: int = 0
    frames: int = 0
    parked_frames: int = 0  # published, waiting for a block reader, so not acknowledged
    parked_bytes: int = 0  # of those, counted like the client counts its window


class _Parked:
    """A frame that some full ``block`` readers still owe room to; its writer waits for it."""

    __slots__ = ("frame", "nbytes", "publisher", "since", "waiting")

    def __init__(self, frame: SharedFrame, publisher: Publisher, nbytes: int, since: float) -> None:
        self.frame = frame
        self.publisher = publisher
        self.nbytes = nbytes  # the PUBLISH body, as the writer counts its window
        self.since = since  # trio clock: when it parked (block_timeout counts from here)
        self.waiting = 0  # block readers that have not taken it yet

    def release(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            pub = self.publisher
            pub.parked_frames -= 1
            pub.parked_bytes -= self.nbytes
            pub.channel.broker.parked_bytes -= self.nbytes
            session = pub.session
            session.parked_bytes -= self.nbytes
            session.ack(pub)
            session.unparked()


class Subscription:
    """One reader's view of one channel: decimation, its buffer, and its send credit."""

    def __init__(
        self,
        sub_id: int,
        channel: Channel,
        session: SessionPort,
        policy: Policy,
        size: int | None,
        every: int,
        max_rate: float | None,
        window: int,
        window_bytes: int,
        block_timeout: float | None = None,
    ) -> None:
        self.sub_id = sub_id
        self.channel = channel
        self.session = session
        self.policy = policy
        # The one policy that refuses frames rather than lose or end: checked once per admit.
        self.blocks_writers = policy is Policy.BLOCK
        self.buffer: PolicyBuffer[SharedFrame] = PolicyBuffer(policy, size)
        self.every = every
        self.max_rate = max_rate
        self.interval = 1.0 / max_rate if max_rate else 0.0
        self.window = window
        self.window_bytes = window_bytes
        self.credit = window
        self.inflight_bytes = 0
        self._inflight: deque[int] = deque()
        self.active = False  # in its session's send rotation
        self.closed = False
        self.ending = False  # channel ended: send what is buffered, then the end
        self.doomed = False  # over the connection's memory limit: ends, takes nothing more
        self.parked: deque[_Parked] = deque()  # frames waiting for room here (block only)
        self.block_timeout = block_timeout  # s a frame may stay parked here; None: no limit
        self.held_reported = False  # shown in held_by (parked for HOLD_NOTICE_S or more)
        self.seen = 0  # frames of the channel offered since subscribing (for every=N)
        self.latest: SharedFrame | None = None  # newest frame held back by max_rate
        self.next_due = 0.0
        self.lost = 0
        self.sent = 0
        self.deficit = 0  # deficit round robin, see fairness.py

    # -- fan-out side ----------------------------------------------------------------------
    def offer(self, frame: SharedFrame) -> bool:
        """Called once per publish; False means "block reader full: park it for me"."""
        if self.doomed:
            return True
        if self.every > 1:
            self.seen += 1
            if (self.seen - 1) % self.every:
                return True  # decimation, not loss
        if self.interval:
            now = trio.current_time()
            if now < self.next_due or self.latest is not None:
                # Hold only the newest; replaced frames are decimation, not loss.
                self.latest = frame
                self.session.schedule_rate(self)
                return True
            self.next_due = now + self.interval
            if not self.admit(frame):
                self._hold_for_room(frame)
            return True
        if self.parked:
            return False  # earlier frames are parked for us; keep the order
        return self.admit(frame)

    def admit(self, frame: SharedFrame) -> bool:
        """Put ``frame`` in the buffer; False means "block reader without room: park it".

        A ``block`` reader refuses a frame that would take its connection over
        ``max_buffered_bytes``, or its connection's ``block`` subscriptions together over
        half of it (``max_block_bytes``), unless its buffer is empty: one frame always gets
        in, so the reader can make progress even when other subscriptions of its connection
        hold the memory. The half share keeps lagging ``block`` readers from starving the
        connection's other subscriptions (a dashboard's ring of 1 beside a recorder). Other
        policies take the frame and, over the bound, are ended by the sender.
        """
        buffer = self.buffer
        session = self.session
        if (
            self.blocks_writers
            and len(buffer)
            and (
                session.block_bytes + frame.nbytes > session.max_block_bytes
                or session.buffered_bytes + frame.nbytes > session.max_buffered_bytes
            )
        ):
            return False
        if not buffer.put(frame):
            accepted, lost, dropped = buffer.offer(frame)
            if not accepted:
                return False
            for old in dropped:
                session.buffered_bytes -= old.nbytes
                self.channel.broker.buffered_bytes -= old.nbytes
            self.lost += lost
            self.channel.lost += lost
        session.buffered_bytes += frame.nbytes
        self.channel.broker.buffered_bytes += frame.nbytes
        if self.blocks_writers:
            # Over its share only with an empty buffer: one frame each at most.
            session.block_bytes += frame.nbytes
        elif session.buffered_bytes > session.max_buffered_bytes:
            self.doomed = True  # ended by the session's sender (not here: mid fan-out)
            session.over_limit(self)
        if not self.active and self.credit > 0:
            session.activate(self)
        return True

    def release_rate(self, now: float) -> None:
        """max_rate: the interval has passed, so the newest held frame goes into the buffer."""
        frame = self.latest
        if frame is None:
            return
        self.latest = None
        self.next_due = now + self.interval
        if not self.admit(frame):
            self._hold_for_room(frame)

    def _hold_for_room(self, frame: SharedFrame) -> None:
        """max_rate with a full ``block`` buffer: keep the frame as the newest held one and
        try again an interval later (a newer frame replaces it meanwhile, as decimation)."""
        self.latest = frame
        self.session.schedule_rate(self)

    # -- sender side -----------------------------------------------------------------------
    def ready(self) -> bool:
        return (
            self.credit > 0
            and (self.inflight_bytes < self.window_bytes or not self._inflight)
            and len(self.buffer) > 0
        )

    def take_into(self, pieces: list[BytesLike], run: list[bytes], quota: int) -> tuple[int, int]:
        """Write out frames until ``quota`` bytes are taken or credit or the window runs out.

        This is the fan-out's other half, once per frame per reader, hence one loop over
        locals. Small pieces (heads, small payloads) collect in ``run`` for the caller to
        join into one piece; a large payload is never copied: ``run`` is joined into
        ``pieces`` and the payload follows as its own piece.

        Returns:
            (frames, bytes) taken; each frame spent one credit.
        """
        take = self.buffer.take
        pack = _READER_HEAD_PACK
        sub_id = self.sub_id
        inflight = self._inflight
        inflight_bytes = self.inflight_bytes
        window_bytes = self.window_bytes
        credit = self.credit
        frames = taken = 0
        while credit > 0 and taken < quota and (inflight_bytes < window_bytes or not inflight):
            entry = take()
            if entry is None:
                break
            frame, lost = entry
            run.append(pack(frame.body_bytes, DATA, sub_id, lost if lost < MAX_U32 else MAX_U32))
            run.append(frame.head)
            if frame.payload:
                pieces.append(b"".join(run))
                run.clear()
                pieces.append(frame.payload)
            nbytes = frame.nbytes
            inflight.append(nbytes)
            inflight_bytes += nbytes
            taken += nbytes
            credit -= 1
            frames += 1
        self.credit = credit
        self.inflight_bytes = inflight_bytes
        self.sent += frames
        self.session.buffered_bytes -= taken
        self.channel.broker.buffered_bytes -= taken
        if self.blocks_writers:
            self.session.block_bytes -= taken
        if self.parked:
            self._unpark()
        return frames, taken

    def _unpark(self) -> None:
        """Room was made: move parked frames in, in order, releasing their writers."""
        parked = self.parked
        while parked and self.admit(parked[0].frame):
            parked.popleft().release()
        if not parked and self.held_reported:
            self.channel.broker.hold_ended(self)

    def drop_parked(self) -> None:
        """This reader is going away: it no longer holds any writer back."""
        while self.parked:
            self.parked.popleft().release()
        if self.held_reported:
            self.channel.broker.hold_ended(self)

    def add_credit(self, frames: int) -> None:
        inflight = self._inflight
        for _ in range(min(frames, len(inflight))):
            self.inflight_bytes -= inflight.popleft()
        self.credit = min(self.credit + frames, self.window)
        if not self.active and self.ready():
            self.session.activate(self)


@dataclass(eq=False)
class Channel:
    name: str
    broker: Broker
    owner_id: int | None
    owner: str
    public: bool = True
    key: str | None = None
    lifetime: float | None = None
    history: int = 0
    single_writer: bool = False
    keep: bool = False
    meta: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    expires_at: float | None = None  # trio clock, from lifetime
    seq: int = 0
    bytes_in: int = 0
    lost: int = 0
    subscriptions: list[Subscription] = field(default_factory=list)
    publishers: list[Publisher] = field(default_factory=list)
    recent: deque[SharedFrame] = field(default_factory=deque)  # history, oldest first
    recent_bytes: int = 0  # of ``recent``, as written to a reader (SharedFrame.nbytes)
    rate_fps: float = 0.0
    rate_bps: float = 0.0
    _rate_mark: tuple[float, int, int] = (0.0, 0, 0)

    @property
    def readers(self) -> int:
        return len(self.subscriptions)

    def held_by(self) -> list[dict[str, object]]:
        """The block readers that hold this channel's writers back (for HOLD_NOTICE_S or more)."""
        now = trio.current_time()
        return [
            {
                "client": sub.session.name,
                "sub": sub.sub_id,
                "held_s": round(now - sub.parked[0].since, 3),
            }
            for sub in self.subscriptions
            if sub.held_reported and sub.parked
        ]

    def visible_to(self, session: SessionPort | None) -> bool:
        """Listed for ``session``: public channels and its own."""
        return self.public or _owner_of(self, session)


def check_channel_meta(meta: dict[str, Any] | None) -> None:
    """A channel's meta is a small map with text keys (its size bounds every listing)."""
    if meta is None:
        return
    if not all(isinstance(k, str) for k in meta):
        raise ValueError("channel meta keys must be text, e.g. {'units': 'V'}")
    size = len(encode_control(meta))
    if size > MAX_CHANNEL_META_BYTES:
        raise ValueError(
            f"channel meta takes {size} bytes encoded, more than {MAX_CHANNEL_META_BYTES} "
            "(MAX_CHANNEL_META_BYTES): keep units, labels and a short description there"
        )


def check_channel_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_CHANNEL_NAME_CHARS or not name.isprintable():
        raise ValueError(
            f"channel names are 1 to {MAX_CHANNEL_NAME_CHARS} printable characters, "
            f"not {brief(name)}"
        )


class Broker:
    """The channel registry and the fan-out."""

    def __init__(
        self,
        on_event: Callable[[str, Channel], None] | None = None,
        *,
        max_history_bytes: int = MAX_BUFFERED_BYTES,
        publish_window_frames: int = PUBLISH_WINDOW_FRAMES,
        publish_window_bytes: int = PUBLISH_WINDOW_BYTES,
    ) -> None:
        """The registry.

        Args:
            on_event: ``on_event(kind, channel)`` hears "created", "deleted" and "readers"
                changes.
            max_history_bytes: what one channel's history may hold, besides its ``history``
                frames. The default is the connection bound, ``max_buffered_bytes``: history
                is replayed into a new reader's buffer, which could never take more at once.
            publish_window_frames, publish_window_bytes: the writers' credit window (the
                welcome's limits); a writer with more than that parked is refused.
        """
        self.on_event = on_event
        self.max_history_bytes = max_history_bytes
        self.publish_window_frames = publish_window_frames
        self.publish_window_bytes = publish_window_bytes
        self.channels: dict[str, Channel] = {}
        self.public_channels = 0  # kept here so that stats() need not count
        self.frames_in = 0
        self.bytes_in = 0
        self.parked_bytes = 0  # every publisher's parked_bytes together
        self.buffered_bytes = 0  # every session's buffered_bytes together (kept for stats())

    # -- registry --------------------------------------------------------------------------
    def create_channel(
        self,
        name: str,
        owner: SessionPort | None,
        *,
        public: bool = True,
        key: str | None = None,
        lifetime: float | None = None,
        history: int = 0,
        single_writer: bool = False,
        keep: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Channel:
        check_channel_name(name)
        check_channel_meta(meta)
        if name.startswith("$") and owner is not None:
            raise ValueError("channel names starting with '$' belong to the server")
        if name in self.channels:
            # One answer whoever holds the name, public or private: it must not tell a
            # stranger more than that the name is taken (see docs/protocol.md, Access).
            raise ChannelExists(
                f"the channel name {name!r} is taken (a channel by that name exists already); "
                "use that channel, or pick another name"
            )
        if not 0 <= history <= MAX_HISTORY_FRAMES:
            raise ValueError(f"history must be between 0 and {MAX_HISTORY_FRAMES} frames")
        if lifetime is not None and not 0 < lifetime < math.inf:  # NaN fails both
            raise ValueError(
                f"lifetime must be a positive, finite number of seconds (or None), not {lifetime!r}"
            )
        channel = Channel(
            name=name,
            broker=self,
            owner_id=owner.client_id if owner else None,
            owner=owner.name if owner else "$server",
            public=public,
            key=key,
            lifetime=lifetime,
            history=history,
            single_writer=single_writer,
            keep=keep,
            meta=meta,
            expires_at=None if lifetime is None else trio.current_time() + lifetime,
        )
        self.channels[name] = channel
        self.public_channels += public
        self._event("created", channel)
        return channel

    def lookup(self, name: str, key: str | None, session: SessionPort | None) -> Channel:
        """The channel, if this caller may use it.

        A channel with a key needs that key from everyone but its owner (compared in
        constant time; keys are never logged nor echoed in errors). A private channel is
        its owner's and its key holders' only: one without a key is its owner's alone. To
        anyone else it does not exist: they get the very answer a missing channel gets, so
        that guessing names confirms nothing.
        """
        channel = self.channels.get(name)
        if channel is None or not (
            channel.public or _owner_of(channel, session) or _key_matches(channel, key)
        ):
            raise ChannelNotFound(
                f"no channel named {name!r} that you may use; create it with "
                "create_channel() first (a private channel needs its key: pass key=...)"
            )
        if channel.key is not None and not _owner_of(channel, session):
            if key is None:
                raise AuthError(f"channel {name!r} needs its key: pass key=...")
            if not _key_matches(channel, key):
                raise AuthError(f"wrong key for channel {name!r}")
        return channel

    def delete_channel(self, channel: Channel, reason: str) -> None:
        if self.channels.get(channel.name) is not channel:
            return
        del self.channels[channel.name]
        self.public_channels -= channel.public
        for sub in list(channel.subscriptions):
            # Detach but keep its buffer: the reader still gets what was published before
            # the end, then a clean end of its iteration (see Session.subscription_ended).
            self._detach(sub)
            sub.session.subscription_ended(sub, None)
        for pub in list(channel.publishers):
            channel.publishers.remove(pub)
            pub.session.publisher_ended(pub, ChannelNotFound(reason))
        self._event("deleted", channel)

    def _event(self, kind: str, channel: Channel) -> None:
        if self.on_event is not None:
            self.on_event(kind, channel)

    # -- writers ---------------------------------------------------------------------------
    def open_publisher(self, channel: Channel, session: SessionPort, pub_id: int) -> Publisher:
        if channel.name.startswith("$"):
            raise AuthError(f"system channel {channel.name!r} is read-only")
        if channel.single_writer and channel.publishers:
            raise LimitExceeded(
                f"channel {channel.name!r} was created with single_writer=True and has a writer"
            )
        pub = Publisher(pub_id, channel, session, sender_field(session.name))
        channel.publishers.append(pub)
        self._event("writers", channel)
        return pub

    def close_publisher(self, pub: Publisher) -> None:
        channel = pub.channel
        if pub in channel.publishers:
            channel.publishers.remove(pub)
            self._event("writers", channel)

    def publish(self, pub: Publisher, time_s: float, payload: BytesLike) -> None:
        """Fan one frame out to every reader of the publisher's channel.

        Raises:
            ProtocolError: the writer sent past its credit window (frames parked for a
                ``block`` reader count against it): its connection is closed.
        """
        if pub.parked_frames:  # the only extra check on the hot path; parking is rare
            self._check_window(pub, len(payload))
        channel = pub.channel
        seq = channel.seq + 1
        channel.seq = seq
        frame = SharedFrame(seq, data_shared_head(seq, time_s, pub.sender), payload)
        size = len(payload)
        channel.bytes_in += size
        self.frames_in += 1
        self.bytes_in += size
        pub.frames += 1
        if channel.history:
            self._remember(channel, frame)
        parked: _Parked | None = None
        for sub in channel.subscriptions:
            if not sub.offer(frame):
                if parked is None:
                    parked = self._park(frame, pub, size)
                parked.waiting += 1
                if not sub.parked:
                    sub.session.holding(sub)
                sub.parked.append(parked)
        if parked is None:
            pub.session.ack(pub)

    def _check_window(self, pub: Publisher, size: int) -> None:
        nbytes = PUBLISH_HEAD.size + size
        if pub.parked_frames >= self.publish_window_frames:
            raise ProtocolError(
                f"publisher {pub.pub_id} sent past its credit window: "
                f"{pub.parked_frames} frames unacknowledged (publish_window_frames is "
                f"{self.publish_window_frames}); wait for PUB_ACK before sending more"
            )
        if pub.parked_bytes + nbytes > self.publish_window_bytes:
            raise ProtocolError(
                f"publisher {pub.pub_id} sent past its credit window: "
                f"{pub.parked_bytes + nbytes} bytes unacknowledged (publish_window_bytes is "
                f"{self.publish_window_bytes}); wait for PUB_ACK before sending more"
            )

    def _park(self, frame: SharedFrame, pub: Publisher, size: int) -> _Parked:
        """Hold ``frame`` for full block readers; it counts against its writer until taken."""
        nbytes = PUBLISH_HEAD.size + size
        pub.parked_frames += 1
        pub.parked_bytes += nbytes
        pub.session.parked_bytes += nbytes
        self.parked_bytes += nbytes
        return _Parked(frame, pub, nbytes, trio.current_time())

    def hold_noticed(self, sub: Subscription) -> None:
        """``sub`` has held its writers back for HOLD_NOTICE_S: show it in held_by."""
        if not sub.held_reported:
            sub.held_reported = True
            self._event("held", sub.channel)

    def hold_ended(self, sub: Subscription) -> None:
        sub.held_reported = False
        self._event("released", sub.channel)

    def _remember(self, channel: Channel, frame: SharedFrame) -> None:
        """Keep ``frame`` in the channel's history, within its frames and the byte bound.

        A frame larger than ``max_history_bytes`` on its own is not kept at all: the bound
        is on memory, and history is a convenience for late readers, not a delivery promise.
        """
        recent = channel.recent
        recent.append(frame)
        channel.recent_bytes += frame.nbytes
        while len(recent) > channel.history or channel.recent_bytes > self.max_history_bytes:
            channel.recent_bytes -= recent.popleft().nbytes

    def publish_system(self, channel: Channel, payload: bytes, sender: bytes = b"$server") -> None:
        """Publish from the server itself ($ channels, admin); block readers never hold it up."""
        seq = channel.seq + 1
        channel.seq = seq
        frame = SharedFrame(seq, data_shared_head(seq, time.time(), sender), payload)
        channel.bytes_in += len(payload)
        for sub in channel.subscriptions:
            if not sub.offer(frame) and sub.policy is Policy.BLOCK:
                # A stuck reader loses server events rather than stall the server, and hears
                # of it on its next message like any other loss.
                sub.buffer.skip(1)
                sub.lost += 1
                channel.lost += 1

    # -- readers ---------------------------------------------------------------------------
    def subscribe(self, sub: Subscription) -> None:
        """Attach a new reader; it first gets the channel's history, the newest part that fits.

        History replays the newest frames that fit both the connection's remaining
        ``max_buffered_bytes`` and, for ``block``, the reader's ``size`` (a ``block`` buffer
        refuses what does not fit, and history has no writer to hold back). The older frames
        left out are counted lost on the first frame replayed (``msg.lost``, ``sub.lost``), so
        the reader sees a gap that ends at the channel's newest frame, never a silent one in
        the middle. Other policies then apply as to any frame (``drop_oldest`` with a small
        ``size`` keeps the newest and counts the rest lost, for instance).
        """
        channel = sub.channel
        channel.subscriptions.append(sub)
        if channel.recent:
            _replay_history(sub, channel.recent)
        self._readers_changed(channel)

    def unsubscribe(self, sub: Subscription) -> None:
        """The reader is gone: detach it and free its buffer."""
        if sub.closed:
            return
        sub.closed = True
        self._detach(sub)
        for old in sub.buffer.clear():
            sub.session.buffered_bytes -= old.nbytes
            self.buffered_bytes -= old.nbytes
            if sub.blocks_writers:
                sub.session.block_bytes -= old.nbytes

    def _detach(self, sub: Subscription) -> None:
        """No new frames for this reader; it holds no writer back any more."""
        channel = sub.channel
        sub.latest = None
        sub.drop_parked()
        if sub in channel.subscriptions:
            channel.subscriptions.remove(sub)
            self._readers_changed(channel)

    def _readers_changed(self, channel: Channel) -> None:
        for pub in channel.publishers:
            pub.session.readers_changed(pub, channel.readers)
        self._event("readers", channel)

    def owned_by(self, client_id: int) -> Iterator[Channel]:
        return (c for c in list(self.channels.values()) if c.owner_id == client_id)

    def update_rates(self, now: float) -> None:
        """Per-channel frames/s and bytes/s since the previous call (called about once a second)."""
        for channel in self.channels.values():
            then, seq, nbytes = channel._rate_mark
            if then:
                elapsed = max(now - then, 1e-9)
                channel.rate_fps = (channel.seq - seq) / elapsed
                channel.rate_bps = (channel.bytes_in - nbytes) / elapsed
            channel._rate_mark = (now, channel.seq, channel.bytes_in)


def _replay_history(sub: Subscription, recent: deque[SharedFrame]) -> None:
    """Admit the newest frames of ``recent`` that fit ``sub`` (see Broker.subscribe)."""
    session = sub.session
    room_bytes = session.max_buffered_bytes - session.buffered_bytes
    room_frames = None
    if sub.blocks_writers:
        room_bytes = min(room_bytes, session.max_block_bytes - session.block_bytes)
        room_frames = sub.buffer.size
    keep = nbytes = 0
    for frame in reversed(recent):
        if keep == room_frames or nbytes + frame.nbytes > room_bytes:
            break
        keep += 1
        nbytes += frame.nbytes
    left_out = len(recent) - keep
    if left_out:
        sub.buffer.skip(left_out)
        sub.lost += left_out
        sub.channel.lost += left_out
    for frame in itertools.islice(recent, left_out, None):
        sub.admit(frame)


def _owner_of(channel: Channel, session: SessionPort | None) -> bool:
    return session is not None and channel.owner_id == session.client_id


def _key_matches(channel: Channel, key: str | None) -> bool:
    """``key`` opens ``channel`` (constant-time compare; a channel without key opens to none)."""
    return (
        channel.key is not None
        and key is not None
        and hmac.compare_digest(key.encode(), channel.key.encode())
    )
