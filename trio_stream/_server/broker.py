"""The broker: channels, publishers, subscriptions and the fan-out. No I/O in here.

The connection layer (session.py) owns sockets and tasks; the broker only moves references to
frames between data structures. It offers each frame to the channel's readers (each one part
of its connection's :class:`~.outbox.Outbox`) and learns yes or no, and it tells a writer's
outbox that an acknowledgement or a reader count is due. Its clock is injected.

One publish builds one :class:`~.._protocol.frames.SharedData` and offers that same object to
every reader of the channel: no per-reader copy, encode, task or checkpoint. A ``block``
reader whose buffer is full makes the broker *park* the frame on the channel and withhold the
writer's acknowledgement (PUB_ACK) until that reader has room; writer credit then stops the
writer, and nobody else waits. The writer's own credit window (``publish_window_frames`` /
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
such a reader (the outbox decides, the session's watchdog keeps the time).
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import math
import secrets
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final, Protocol, TypeVar, overload

from .._exceptions import (
    AuthError,
    ChannelExists,
    ChannelNotFound,
    InvalidArgument,
    LimitExceeded,
    ProtocolError,
)
from .._protocol.array_view import View, cut_array
from .._protocol.brief import brief
from .._protocol.bytes_like import BytesLike
from .._protocol.codec import encode_control
from .._protocol.frames import (
    PUBLISH_HEAD,
    SharedData,
    sender_field,
    shared_frames,
    shared_payload,
    shared_sender,
    with_payload,
)
from .._protocol.limits import MAX_BUFFERED_BYTES, PUBLISH_WINDOW_BYTES, PUBLISH_WINDOW_FRAMES
from .buffers import Policy, drops_when_full
from .outbox import Outbox, Reader
from .selective import Selective

_NBYTES_OF: Final = attrgetter("nbytes")

MAX_CHANNEL_NAME_CHARS = 200
MAX_HISTORY_FRAMES = 10_000
MAX_CHANNEL_META_BYTES = 4096  # a channel's meta (units, labels...), CBOR-encoded


class ClientIdentity(Protocol):
    """Who owns and opens channels (implemented by session.Session)."""

    client_id: int
    name: str


@dataclass(eq=False)
class Writer:
    """One publisher on the server: its channel, its outbox (acks, reader counts), its
    frames parked for full ``block`` readers."""

    pub_id: int
    channel: Channel
    outbox: Outbox
    sender: bytes  # the DATA sender field, encoded once
    frames: int = 0
    key: str | None = None  # the client's writer key (open_publisher's ``writer``), if given
    parked_frames: int = 0  # published, waiting for a block reader, so not acknowledged
    parked_bytes: int = 0  # of those, counted like the client counts its window

    def park(self, nbytes: int, frames: int = 1) -> None:
        self.parked_frames += frames
        self.parked_bytes += nbytes
        self.outbox.parked(nbytes)

    def unpark(self, nbytes: int, frames: int = 1) -> None:
        self.parked_frames -= frames
        self.parked_bytes -= nbytes
        self.outbox.unparked(self.pub_id, nbytes, frames)


class ParkedView:
    """A parked frame as one reader of a view takes it: its cut, and the shared :class:`Parked`
    that frees the writer once every block reader has taken its version."""

    __slots__ = ("frame", "parked", "since")

    def __init__(self, parked: Parked, frame: SharedData) -> None:
        self.parked = parked
        self.frame = frame
        self.since = parked.since

    def release(self) -> None:
        self.parked.release()


class Parked:
    """A frame that some full ``block`` readers still owe room to; its writer waits for it."""

    __slots__ = ("broker", "frame", "nbytes", "since", "waiting", "writer")

    def __init__(
        self, broker: Broker, frame: SharedData, writer: Writer, nbytes: int, since: float
    ) -> None:
        self.broker = broker
        self.frame = frame
        self.writer = writer
        self.nbytes = nbytes  # the PUBLISH body, as the writer counts its window
        self.since = since  # broker clock: when it parked (block_timeout counts from here)
        self.waiting = 0  # block readers that have not taken it yet

    def release(self) -> None:
        """One block reader took the frame (or went away); the last one frees the writer."""
        self.waiting -= 1
        if self.waiting == 0:
            self.broker.parked_bytes -= self.nbytes
            self.writer.unpark(self.nbytes)


class RemoteHold(Parked):
    """Frames from another node (several nodes) that full local ``block`` readers still owe
    room to: no local writer waits for them, the engine's reader of that channel does
    (``on_free`` once every one is taken), so Redis keeps what follows meanwhile."""

    __slots__ = ("on_free",)

    def __init__(self, since: float, on_free: Callable[[], None]) -> None:
        self.since = since
        self.waiting = 0
        self.on_free = on_free

    def release(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.on_free()


@dataclass(frozen=True, slots=True)
class EndedChannel:
    """What a channel that ended lately was (Broker.ended_lately): its access, epoch and
    last seq, without its frames."""

    name: str
    epoch: str
    seq: int
    reason: str
    public: bool
    owner_id: int | None
    key: str | None
    at: float  # broker clock


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
    # New at each creation (resume.py): a reader resuming with another epoch sees a reset.
    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    seq: int = 0
    remote_readers: int = 0  # readers on other nodes (several nodes: the engine sets it)
    lossy_readers: int = 0  # of ``subscriptions``, those whose policy drops when full
    bytes_in: int = 0
    # Several nodes: this node's writers' frames reach its channel only if it reads it
    # (they go to Redis, and come back from there): how many the engine wrote for them, and
    # their bytes, for the channel's rates and metrics here (counters: never lower).
    written_frames: int = 0
    written_bytes: int = 0
    lost: int = 0
    # Every reader, and of those the ones that take every frame whole (the fan-out's plain
    # loop), both dicts as ordered sets: readers let go together (a crowd whose clients went
    # away, at the end of resume_grace_s) each cost a list an O(readers) removal. The others
    # (a sender filter or a view: selective.py) are made when the first such reader comes.
    subscriptions: dict[Reader, None] = field(default_factory=dict)
    fanout: dict[Reader, None] = field(default_factory=dict)
    # The readers shown in held_by (Reader.held_reported), kept as they change: every
    # reader that came or went made a $channels event that went over all of them (20,000
    # let go at once after resume_grace_s stopped the server 6.6 s).
    held: dict[Reader, None] = field(default_factory=dict)
    selective: Selective | None = None
    # Open writers, in the order they opened (a dict as an ordered set: a connection's close
    # takes each out in O(1), where a list took O(writers) each), and the same by connection:
    # a reader that comes or goes tells each connection once (``tell_writers``), not each of
    # its writers, 1,000,000 of them within the default limits.
    publishers: dict[Writer, None] = field(default_factory=dict)
    writers_by_outbox: dict[Outbox, dict[Writer, None]] = field(default_factory=dict)
    # ... and those opened with a writer key, by (sender, key): a reopen asks for the frames
    # of its key's other writers (Broker.writer_published), and a walk over every writer
    # made 20,000 reopens after a restart cost the server 5.5 s (an outside scale probe).
    keyed_writers: dict[tuple[bytes, str], dict[Writer, None]] = field(default_factory=dict)
    recent: deque[SharedData] = field(default_factory=deque)  # history, oldest first
    recent_bytes: int = 0  # of ``recent``, as written to a reader (SharedData.nbytes)
    rate_fps: float = 0.0
    rate_bps: float = 0.0
    # Frames published by writers of a key that have closed, by (sender, writer key): what a
    # reopen answers once its client's lease is gone (Broker.writer_published).
    closed_writers: dict[tuple[bytes, str], int] | None = None
    end_reason: str = ""  # why it ended (deleted, expired, its owner gone): $channels says
    # Why its owner must not create it again (another client deleted it): told to the
    # owner at once, or in its welcome if it resumes (resume.py).
    owner_notice: str | None = None
    # When update_rates() last changed its rates, and its seq, written_frames, bytes_in and
    # written_bytes then (as they are: comparing them is its test for an idle channel).
    _rate_mark: tuple[float, int, int, int, int] = (0.0, 0, 0, 0, 0)
    _serial: int = 0  # its place in the registry's order (Broker.owned_by keeps that order)

    @property
    def readers(self) -> int:
        return len(self.subscriptions) + self.remote_readers

    def add_writer(self, pub: Writer) -> None:
        self.publishers[pub] = None
        _add_to(self.writers_by_outbox, pub.outbox, pub)
        if pub.key is not None:
            _add_to(self.keyed_writers, (pub.sender, pub.key), pub)

    def remove_writer(self, pub: Writer) -> None:
        del self.publishers[pub]
        _remove_from(self.writers_by_outbox, pub.outbox, pub)
        if pub.key is not None:
            _remove_from(self.keyed_writers, (pub.sender, pub.key), pub)

    @property
    def frames_here(self) -> int:
        """Frames of the channel through this node: its seq (what it delivers), or what its
        writers wrote if more (see ``written_frames``)."""
        return max(self.seq, self.written_frames)

    @property
    def bytes_here(self) -> int:
        """Payload bytes through this node: to its readers, or from its writers if more."""
        return max(self.bytes_in, self.written_bytes)

    @property
    def lossless(self) -> bool:
        """Every reader takes every frame (``block``, ``unbounded``), whatever the bursts its
        writers send: they may send larger ones (the ``readers`` notice says so). Readers on
        other nodes are of unknown policy."""
        return not self.remote_readers and not self.lossy_readers

    def count_lost(self, frames: int) -> None:
        self.lost += frames
        self.broker.frames_lost += frames

    def hold_event(self, kind: str) -> None:
        """A block reader started ("held") or stopped ("released") holding the writers back."""
        self.broker.event(kind, self)

    def held_by(self) -> list[dict[str, object]]:
        """The block readers that hold this channel's writers back (for HOLD_NOTICE_S or
        more), the first HELD_BY_SHOWN seen to hold: each one that starts or stops holding
        makes a $channels event with the list, and 4,000 readers that stopped reading made
        4,000 events of up to 4,000 entries (a dashboard open: the server stopped 7 s)."""
        now = self.broker.clock()
        shown: list[dict[str, object]] = []
        for sub in self.held:
            # Frames parked here, or a writer waiting on another node (Reader.holds_elsewhere).
            since = sub.parked[0].since if sub.parked else sub.waited_since
            if since is not None:
                held_s = round(now - since, 3)
                shown.append({"client": sub.outbox.owner.name, "sub": sub.sub_id, "held_s": held_s})
                if len(shown) == HELD_BY_SHOWN:
                    break
        return shown

    def visible_to(self, session: ClientIdentity | None) -> bool:
        """Listed for ``session``: public channels and its own."""
        return self.public or _owner_of(self, session)


class _Indexed:
    """``Channel.owner_id`` and ``Channel.expires_at``: the broker keeps an index of each
    (channels per owner, for the quota; the lifetimes' deadlines, for housekeeping), and these
    change outside it too (a resumed or taken-over channel: resume.py, the Redis engine).
    Setting one on a channel in the registry updates the index. Stored as ``_owner_id`` and
    ``_expires_at``, plain attributes: a channel's other attributes, the ones each publish
    reads and writes, stay as fast as they were (writing into ``__dict__`` here was not)."""

    __slots__ = ("name", "slot")

    def __init__(self, name: str) -> None:
        self.name = name
        self.slot = "_" + name

    @overload
    def __get__(self, channel: None, owner: type[Channel]) -> _Indexed: ...
    @overload
    def __get__(self, channel: Channel, owner: type[Channel]) -> Any: ...
    def __get__(self, channel: Channel | None, owner: type[Channel]) -> Any:
        return self if channel is None else getattr(channel, self.slot)

    def __set__(self, channel: Channel, value: Any) -> None:
        old = getattr(channel, self.slot, None)
        setattr(channel, self.slot, value)
        broker = channel.broker
        if old == value or broker.channels.get(channel.name) is not channel:
            return  # unchanged, or not listed (yet, or any more): create/delete index it
        if self.name == "owner_id":
            broker._disown(channel, old)
            broker._own(channel, value)
        else:
            broker._add_deadline(channel)


# Installed after @dataclass, which would take a class attribute for the field's default:
# its __init__ sets both through them (unlisted then: create_channel indexes the channel).
setattr(Channel, "owner_id", _Indexed("owner_id"))  # noqa: B010 (mypy keeps the annotation)
setattr(Channel, "expires_at", _Indexed("expires_at"))  # noqa: B010


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


def channel_taken(name: str) -> ChannelExists:
    """The answer to a create_channel of a name in use: the same whoever holds it, public or
    private (it must not tell a stranger more than that the name is taken: docs/protocol.md,
    Access), with what a newcomer needs (two scripts that both created "their" channel: the
    second's writes ended with the first's exit)."""
    return ChannelExists(
        f"the channel name {name!r} is taken (a channel by that name exists already): use "
        "that channel (it ends when the client that created it leaves, unless made with "
        "keep=True; a reader need not create the channel it reads: subscribe(..., "
        "wait_channel=True) waits for its writer's), or pick another name"
    )


def nothing_to_delete(name: str) -> ChannelNotFound:
    """delete_channel of a channel that is missing (or private to others): not the advice
    to create it that a subscribe or a publish gets."""
    return ChannelNotFound(
        f"no channel named {name[:80]!r} that you may delete: deleted already (it ends with "
        "its owner too, unless made with keep=True), never created, or private (pass its "
        "key=...)"
    )


# Writer keys a channel remembers the counts of (Channel.closed_writers): the newest.
CLOSED_WRITERS_MAX: Final = 4096

_K = TypeVar("_K", bound=Hashable)


def _add_to(groups: dict[_K, dict[Writer, None]], group: _K, pub: Writer) -> None:
    members = groups.get(group)
    if members is None:
        members = groups[group] = {}
    members[pub] = None


def _remove_from(groups: dict[_K, dict[Writer, None]], group: _K, pub: Writer) -> None:
    members = groups[group]
    del members[pub]
    if not members:
        del groups[group]


# The holding readers a channel record or $channels event lists at most (Channel.held_by):
# enough to find whom to fix, and a bound on each event's size.
HELD_BY_SHOWN: Final = 10
# Channels that ended that the broker remembers (Broker.ended_lately), and for how long: as
# long as Redis marks an ended epoch for several nodes; ~200 bytes each.
ENDED_CHANNELS_KEPT: Final = 10_000
ENDED_CHANNEL_KEPT_S: Final = 3600.0
# Channels whose rates one step of the server's once-a-second walk updates (Broker.rate_steps):
# 1-2 ms of work between two chances for everyone else to run.
RATE_STEP_CHANNELS: Final = 2000


def single_writer_taken(name: str, holder: str) -> LimitExceeded:
    """The answer to a second writer of a ``single_writer`` channel: who holds it (as far
    as the server knows: a client, or a node), and what to do."""
    return LimitExceeded(
        f"channel {name!r} was created with single_writer=True and has a writer ({holder}): "
        "it takes another once that publisher closes (or its client disconnects); for "
        "several writers create the channel without single_writer"
    )


def check_channel_key(key: str | None) -> None:
    """A channel's key is a non-empty string, or None for none."""
    # An empty key would be a real key that anyone guesses: in most languages it is what an
    # unset string field holds, so a client meaning "no key" would make the channel private
    # to everyone and deletable by anyone who sends "" as well.
    if key == "":
        raise ValueError("a channel key must not be empty: leave key out (None) for no key")


def key_refused(name: str, key: str | None) -> AuthError:
    """A keyed channel opened without its key, or with another (both engines say this)."""
    if key is None:
        return AuthError(f"channel {name!r} needs its key: pass key=...")
    return AuthError(f"wrong key for channel {name!r}: pass the key its creator gave (key=...)")


def channel_not_found(name: str) -> ChannelNotFound | InvalidArgument:
    """The answer to a channel that is missing, or private to others (the same answer); to
    a name no channel can have, the naming rule (telling nothing about any channel)."""
    if not _is_channel_name(name):
        return InvalidArgument(
            f"no channel can be named {brief(name)}: channel names are 1 to "
            f"{MAX_CHANNEL_NAME_CHARS} printable characters"
        )
    quoted = repr(name)
    if name.startswith("$"):  # the server's own: nobody can create it, nor wait for it
        return ChannelNotFound(
            f"no channel named {quoted}: names starting with '$' are the server's own "
            "channels, $channels, $clients and $stats (trio-stream channels URL --system "
            "lists them)"
        )
    return ChannelNotFound(
        f"no channel named {quoted} that you may use; create it with create_channel() "
        "first (a reader may instead wait for it: subscribe(..., wait_channel=True)); a "
        "private channel needs its key: pass key=... (a wrong key gets this same answer: the "
        "server does not tell who asks which private channels exist)"
    )


def _is_channel_name(name: str) -> bool:
    """The naming rule: 1 to MAX_CHANNEL_NAME_CHARS printable characters."""
    return 1 <= len(name) <= MAX_CHANNEL_NAME_CHARS and name.isprintable()


def check_channel_name(name: str) -> None:
    if not _is_channel_name(name):
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
        clock: Callable[[], float],
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
            clock: seconds, monotonic (the server passes ``trio.current_time``): channel
                lifetimes and how long frames stay parked.
        """
        self.on_event = on_event
        self.clock = clock
        self.max_history_bytes = max_history_bytes
        self.publish_window_frames = publish_window_frames
        self.publish_window_bytes = publish_window_bytes
        self.channels: dict[str, Channel] = {}
        self.public_channels = 0  # kept here so that stats() need not count
        # ... and those made with keep=True, which each such create checks against
        # max_kept_channels (a walk of 100,000 channels took ~4 ms a create).
        self.kept_channels = 0
        self.frames_in = 0
        # Frames readers here lost to their policies, deleted channels' too: stats() and
        # $stats each second read it (a sum over 100,000 channels took ~20 ms).
        self.frames_lost = 0
        self.bytes_in = 0
        self.parked_bytes = 0  # every publisher's parked_bytes together
        # Kept up to date by create_channel, delete_channel and _Indexed (an owner change),
        # so that neither a create's quota check nor housekeeping walks every channel (with
        # 12,000 channels a create took ~30 ms, and each one woke housekeeping for a walk).
        self._owned: dict[int, dict[Channel, None]] = {}  # client id -> its channels
        # (deadline, tiebreak, channel) for channels with a lifetime; stale entries (deleted,
        # or a changed deadline) are skipped when they come up, or dropped by a rebuild.
        self._deadlines: list[tuple[float, int, Channel]] = []
        self._serials = itertools.count(1)
        self._pushes = itertools.count()  # the deadlines' tiebreak (never the channels)
        # The latest update_rates(): the mark of the channels it left alone (idle ones).
        self._rates_at = -math.inf
        # Channels that ended lately, oldest first: a reader away longer than resume_grace_s
        # whose resubscription finds its channel gone is told of the end and of what it
        # missed (requests.ended_while_away), where it waited for good for a channel that
        # had ended (a lab tester's reader, its writer done meanwhile).
        self.ended_lately: OrderedDict[str, EndedChannel] = OrderedDict()

    # -- registry --------------------------------------------------------------------------
    def create_channel(
        self,
        name: str,
        owner: ClientIdentity | None,
        *,
        public: bool = True,
        key: str | None = None,
        lifetime: float | None = None,
        history: int = 0,
        single_writer: bool = False,
        keep: bool = False,
        meta: dict[str, Any] | None = None,
        epoch: str | None = None,
        seq: int = 0,
    ) -> Channel:
        """A new channel; ``epoch`` and ``seq`` (its last frame's) are given by an engine
        that keeps channels elsewhere."""
        check_channel_name(name)
        check_channel_meta(meta)
        check_channel_key(key)
        if name.startswith("$") and owner is not None:
            raise ValueError("channel names starting with '$' belong to the server")
        if name in self.channels:
            # One answer whoever holds the name, public or private: it must not tell a
            # stranger more than that the name is taken (see docs/protocol.md, Access).
            raise channel_taken(name)
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
            expires_at=None if lifetime is None else self.clock() + lifetime,
        )
        if epoch is not None:
            channel.epoch = epoch
        channel.seq = seq
        # Its first rate counts from now, not from the interval before it existed (a
        # channel's first second read 0 frames/s however busy it was).
        channel._rate_mark = (self.clock(), seq, 0, 0, 0)
        channel._serial = next(self._serials)
        self.channels[name] = channel
        self.public_channels += public
        self.kept_channels += keep
        self._own(channel, channel.owner_id)
        if channel.expires_at is not None:
            self._add_deadline(channel)
        self.event("created", channel)
        return channel

    def lookup(self, name: str, key: str | None, session: ClientIdentity | None) -> Channel:
        """The channel, if this caller may use it.

        A channel with a key needs that key from everyone but its owner (compared in
        constant time; keys are never logged nor echoed in errors). A private channel is
        its owner's and its key holders' only: one without a key is its owner's alone. To
        anyone else it does not exist: they get the very answer a missing channel gets, so
        that guessing names confirms nothing.
        """
        channel = self.channels.get(name)
        if channel is None:
            raise channel_not_found(name)
        check_access(channel, key, session)
        return channel

    def delete_channel(self, channel: Channel, reason: str, *, final: bool = True) -> None:
        """End ``channel`` for ``reason``. ``final``: nothing will bring it back by itself (a
        delete, its lifetime, an owner that left on purpose), so a reader away meanwhile is
        told it ended (ended_lately); not final: an owner whose grace ran out, whose client
        creates it again when it is back, its readers waiting for it."""
        if self.channels.get(channel.name) is not channel:
            return
        del self.channels[channel.name]
        self.public_channels -= channel.public
        self.kept_channels -= channel.keep
        self._disown(channel, channel.owner_id)  # (its deadline goes stale: expire() skips it)
        channel.end_reason = reason  # first: each reader's sub_end says it
        if final:
            self._remember_end(channel, reason)
        else:
            self.ended_lately.pop(channel.name, None)  # (an earlier life's end: not this one)
        for sub in list(channel.subscriptions):
            # Detach but keep its buffer: the reader still gets what was published before
            # the end, the frames parked for it too, then a clean end of its iteration (see
            # Outbox.end).
            sub.take_parked()
            self.detach(sub)
            sub.outbox.end(sub, None)
        for pub in list(channel.publishers):
            channel.remove_writer(pub)
            pub.outbox.writer_ended(pub, ChannelNotFound(reason))
        self.event("deleted", channel)

    def _remember_end(self, channel: Channel, reason: str) -> None:
        ended = self.ended_lately
        ended.pop(channel.name, None)  # (to the end: the newest)
        now = self.clock()
        ended[channel.name] = EndedChannel(
            channel.name,
            channel.epoch,
            channel.seq,
            reason,
            channel.public,
            channel.owner_id,
            channel.key,
            now,
        )
        while ended and (
            len(ended) > ENDED_CHANNELS_KEPT
            or next(iter(ended.values())).at < now - ENDED_CHANNEL_KEPT_S
        ):
            ended.popitem(last=False)

    def ended_lately_as(self, name: str, epoch: str) -> EndedChannel | None:
        """The channel ``name`` as it ended, if its epoch was ``epoch`` and it ended within
        ENDED_CHANNEL_KEPT_S (and no channel of that name exists now)."""
        ended = self.ended_lately.get(name)
        if ended is None or ended.epoch != epoch or name in self.channels:
            return None
        if ended.at < self.clock() - ENDED_CHANNEL_KEPT_S:
            return None
        return ended

    def event(self, kind: str, channel: Channel) -> None:
        if self.on_event is not None:
            self.on_event(kind, channel)

    # -- writers ---------------------------------------------------------------------------
    def open_publisher(
        self,
        channel: Channel,
        client: ClientIdentity,
        outbox: Outbox,
        pub_id: int,
        key: str | None = None,
    ) -> Writer:
        if channel.name.startswith("$"):
            raise AuthError(f"system channel {channel.name!r} is read-only")
        if channel.single_writer and channel.publishers:
            holder = next(iter(channel.publishers)).sender.decode("utf-8", "replace")
            raise single_writer_taken(channel.name, f"client {holder[:100]!r}")
        pub = Writer(pub_id, channel, outbox, sender_field(client.name), key=key)
        channel.add_writer(pub)
        self.event("writers", channel)
        return pub

    def close_publisher(self, pub: Writer) -> None:
        channel = pub.channel
        if pub in channel.publishers:
            channel.remove_writer(pub)
            if pub.key is not None:
                closed = channel.closed_writers
                if closed is None:
                    closed = channel.closed_writers = {}
                key = (pub.sender, pub.key)
                closed[key] = closed.pop(key, 0) + pub.frames  # (newest last)
                if len(closed) > CLOSED_WRITERS_MAX:
                    del closed[next(iter(closed))]
            self.event("writers", channel)

    def writer_published(self, channel: Channel, pub: Writer) -> int | None:
        """Frames that writers of ``pub``'s key (its client's publisher, on every connection
        before) published on ``channel``; None if none of them did. A reopen whose lease is
        gone (a client away longer than resume_grace_s) is answered with it, as a node of
        several answers with Redis's count: its client resent its whole window, which the
        readers had, and they got it twice (a loss-accounting audit)."""
        if pub.key is None:
            return None
        total = (
            None
            if channel.closed_writers is None
            else channel.closed_writers.get((pub.sender, pub.key))
        )
        for other in channel.keyed_writers.get((pub.sender, pub.key), ()):
            if other is not pub:  # a connection not yet seen to be gone
                total = (total or 0) + other.frames
        return total

    def publish(self, pub: Writer, time_s: float, payload: BytesLike) -> None:
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
        frame = SharedData(seq, time_s, pub.sender, payload)
        size = len(payload)
        channel.bytes_in += size
        self.frames_in += 1
        self.bytes_in += size
        pub.frames += 1
        if channel.history:
            self._remember(channel, frame)
        parked: Parked | None = None
        for sub in channel.fanout:
            if not sub.offer(frame):
                if parked is None:
                    parked = self._park(frame, pub, size)
                parked.waiting += 1
                sub.park(parked)
        if channel.selective is not None:  # the one check a channel without selective readers pays
            parked = self._offer_selective(channel.selective, frame, pub, size, parked)
        if parked is None:
            pub.outbox.ack(pub.pub_id)

    def publish_batch(
        self, pub: Writer, times: Sequence[float], payloads: Sequence[BytesLike]
    ) -> None:
        """:meth:`publish` for several frames of one writer in a row (one read's worth).

        Each reader takes the whole batch at once (Reader.offer_batch); only frames that a
        full ``block`` reader refuses are parked one by one, as :meth:`publish` parks them.
        Every reader gets the frames, and counts the losses, that publishing them in order
        gives, with one exception: when the batch takes a connection past its memory bound
        (``max_buffered_bytes``), the losses of that connection's readers until the sender
        ends the ones that buffer the most (Outbox._end_over_limit) may differ, as readers
        fill one after another rather than frame by frame (the bound holds either way, and
        an ended reader learns why).

        Raises:
            ProtocolError: as :meth:`publish`.
        """
        channel = pub.channel
        if channel.selective is not None:
            # Selective readers (a sender filter, a view) take their frames through
            # publish()'s grouping.
            for time_s, payload in zip(times, payloads, strict=True):
                self.publish(pub, time_s, payload)
            return
        count = len(payloads)
        size = sum(map(len, payloads))
        if (
            pub.parked_frames + count > self.publish_window_frames
            or pub.parked_bytes + count * PUBLISH_HEAD.size + size > self.publish_window_bytes
        ):
            # Parking in this batch could take the writer past its window, which publish()
            # checks before each frame: frame by frame then, to refuse exactly the frame it
            # refuses. A writer that keeps to its window never comes here, not even while
            # full block readers hold frames of it back (the steady state of a writer faster
            # than its slowest block reader): that one publishes in batches too.
            for time_s, payload in zip(times, payloads, strict=True):
                self.publish(pub, time_s, payload)
            return
        if (
            not channel.history
            and not pub.parked_frames  # held back: a block reader needs every frame
            and self._publish_newest(pub, times, payloads)
        ):
            return
        frames = shared_frames(channel.seq, times, pub.sender, payloads)
        channel.seq += count
        channel.bytes_in += size
        self.frames_in += count
        self.bytes_in += size
        pub.frames += count
        if channel.history:
            for frame in frames:
                self._remember(channel, frame)
        taken_by_all = count
        refused: list[tuple[Reader, int]] = []
        batch_bytes = sum(map(_NBYTES_OF, frames))  # once, not once per reader
        # The buffers' (frame, lost) pairs, made once and shared by every reader: a tuple
        # per frame, not one per frame per reader (each also tracked by the collector).
        entries = list(zip(frames, itertools.repeat(0)))
        for sub in channel.fanout:
            taken = sub.offer_batch(frames, batch_bytes, entries)
            if taken < count:
                refused.append((sub, taken))
                taken_by_all = min(taken_by_all, taken)
        if taken_by_all:
            pub.outbox.ack(pub.pub_id, taken_by_all)
        if taken_by_all < count:
            self._park_refused(pub, frames, payloads, taken_by_all, refused)

    def _park_refused(
        self,
        pub: Writer,
        frames: list[SharedData],
        payloads: Sequence[BytesLike],
        start: int,
        refused: list[tuple[Reader, int]],
    ) -> None:
        """publish_batch from ``frames[start]`` on, the first frame a reader refused: frame
        by frame, as publish() does, a reader that refused a frame parks it and then parks
        or decimates the rest in order (readers past a frame have it already).

        A plain reader (no every=N, no max_rate, not ending) parks every frame from the one
        it refused on, since its offer() refuses while frames are parked for it: its frames
        are parked with one extend, where offer() and park() took a call each per frame.
        """
        plain: list[tuple[Reader, int]] = []
        others: list[tuple[Reader, int]] = []
        for sub, taken in refused:
            if sub.doomed or sub.every > 1 or sub.interval:
                others.append((sub, taken))
            else:
                plain.append((sub, taken))
        plain_from = sorted(taken for _, taken in plain)
        now = self.clock()  # once: every frame of the batch parks at this read
        parks: list[Parked] = []
        parks_bytes = 0  # as the writer counts its window, like _park()
        head_bytes = PUBLISH_HEAD.size
        for index in range(start, len(frames)):
            frame = frames[index]
            nbytes = len(payloads[index])  # within the window: checked for the whole batch
            waiting = bisect_right(plain_from, index)  # plain readers that refused it
            parked: Parked | None = None
            if waiting:
                parked = Parked(self, frame, pub, head_bytes + nbytes, now)
                parked.waiting = waiting
                parks.append(parked)
                parks_bytes += parked.nbytes
            for sub, taken in others:
                if index < taken or (index > taken and sub.offer(frame)):
                    continue
                if parked is None:
                    parked = self._park(frame, pub, nbytes, now)
                parked.waiting += 1
                sub.park(parked)
            if parked is None:
                pub.outbox.ack(pub.pub_id)
        if parks:
            pub.park(parks_bytes, len(parks))  # what _park() does, once for all of them
            self.parked_bytes += parks_bytes
        # The plain readers' parked frames: each from its refusal on, in order. Nothing
        # releases a parked frame before this (only the senders do, later).
        first = plain_from[0] if plain_from else start
        for sub, taken in plain:
            sub.park_all(parks[taken - first :])

    def _publish_newest(
        self, pub: Writer, times: Sequence[float], payloads: Sequence[BytesLike]
    ) -> bool:
        """publish_batch when no reader can keep the middle of the batch: those frames are
        counted (seq, loss) but never built. False: some reader needs every frame (nothing
        done).

        A flooded ``drop_oldest`` reader of ``size`` 100 keeps the oldest frames its unused
        credit lets the sender write at once (Reader.going_in) and the newest 100 of a read
        of thousands of frames; building a SharedData for each of the others was the
        largest per-frame cost left on that path. Each reader says how many of the newest it
        could keep (Reader.newest_kept) and how many of the oldest go out at once; the
        outcome is the one of publishing every frame.
        """
        channel = pub.channel
        readers = channel.fanout
        count = len(payloads)
        if not readers or count < 2:
            return False
        newest_kept = 1
        for sub in readers:
            kept = sub.newest_kept()
            if kept is None:
                return False
            newest_kept = max(newest_kept, kept)
        if count <= newest_kept:
            return False
        newest = SharedData(channel.seq + count, times[-1], pub.sender, payloads[-1])
        overhead = newest.nbytes - len(payloads[-1])  # of every frame of this writer
        size = sum(map(len, payloads))
        batch_bytes = size + count * overhead
        going: list[int] = []
        built = 0  # the oldest frames built: what some reader's sender writes at once
        for sub in readers:
            counted = sub.going_in(count, batch_bytes, map(overhead.__add__, map(len, payloads)))
            if counted is None:
                return False
            frames_going = counted[0]
            going.append(frames_going)
            built = max(built, frames_going)
        gap = count - built - newest_kept
        if gap <= 0:
            return False
        largest = max(map(len, payloads)) + overhead
        if not all(sub.far_from_bound(largest, len(readers), built) for sub in readers):
            return False
        seq = channel.seq
        sender = pub.sender
        frames = [
            SharedData(seq + index, time_s, sender, payload)
            for index, (time_s, payload) in enumerate(
                zip(times[:built], payloads[:built], strict=True), 1
            )
        ]
        oldest_kept = count - newest_kept
        frames.extend(
            SharedData(seq + index, time_s, sender, payload)
            for index, (time_s, payload) in enumerate(
                zip(times[oldest_kept:-1], payloads[oldest_kept:-1], strict=True),
                oldest_kept + 1,
            )
        )
        frames.append(newest)
        channel.seq += count
        channel.bytes_in += size
        self.frames_in += count
        self.bytes_in += size
        pub.frames += count
        for sub, frames_going in zip(readers, going, strict=True):
            sub.take_ahead(frames, frames_going, built, gap)
        pub.outbox.ack(pub.pub_id, count)
        return True

    def deliver_remote(
        self,
        channel: Channel,
        frames: Sequence[tuple[int, float, bytes, BytesLike]],
        lost: int,
        on_free: Callable[[], None],
    ) -> bool:
        """Fan frames written on another node out to this node's readers (several nodes).

        ``frames`` are ``(seq, time, sender field, payload)`` in order, ``lost`` frames were
        gone (trimmed from the engine) just before them. As publish_batch: one SharedData per
        frame for every reader. Frames that full ``block`` readers refuse are parked in one
        :class:`RemoteHold`; returns True if so (``on_free`` is called once they are taken).
        """
        if lost:
            for sub in channel.subscriptions:
                sub.skip(lost)
        shared: list[SharedData] = []
        size = 0
        for seq, time_s, sender, payload in frames:
            shared.append(SharedData(seq, time_s, sender, payload))
            size += len(payload)
        channel.seq = frames[-1][0]
        channel.bytes_in += size
        if channel.history:
            for frame in shared:
                self._remember(channel, frame)
        hold = RemoteHold(self.clock(), on_free)
        for sub in channel.fanout:
            taken = sub.offer_batch(shared)
            for frame in shared[taken:]:
                if not sub.offer(frame):
                    hold.waiting += 1
                    sub.park(ParkedView(hold, frame))
        selective = channel.selective
        if selective is not None:
            for frame, (_, _, sender, _) in zip(shared, frames, strict=True):
                for sub, shown in selective.targets(frame, sender, self.cut):
                    if not sub.offer(shown):
                        hold.waiting += 1
                        sub.park(ParkedView(hold, shown))
        return hold.waiting > 0

    def _offer_selective(
        self,
        selective: Selective,
        frame: SharedData,
        pub: Writer,
        size: int,
        parked: Parked | None,
    ) -> Parked | None:
        """Offer ``frame`` to the readers of ``pub``'s frames that select (see publish)."""
        for sub, shown in selective.targets(frame, pub.sender, self.cut):
            if not sub.offer(shown):
                if parked is None:
                    parked = self._park(frame, pub, size)
                parked.waiting += 1
                sub.park(parked if shown is frame else ParkedView(parked, shown))
        return parked

    @staticmethod
    def cut(frame: SharedData, view: View) -> SharedData:
        """``frame`` as a reader of ``view`` gets it: the sub-array of an array payload, cut
        from its bytes (array_view.py); any other payload, ``frame`` itself."""
        payload = cut_array(shared_payload(frame), view)
        return frame if payload is None else with_payload(frame, payload)

    def _check_window(self, pub: Writer, size: int) -> None:
        # Both counts take this frame in (the frames count said the parked ones alone, one
        # fewer than the frames unacknowledged: a protocol implementer).
        nbytes = PUBLISH_HEAD.size + size
        if pub.parked_frames >= self.publish_window_frames:
            raise ProtocolError(
                f"publisher {pub.pub_id} sent past its credit window: this frame makes "
                f"{pub.parked_frames + 1} frames unacknowledged (publish_window_frames is "
                f"{self.publish_window_frames}); wait for PUB_ACK before sending more"
            )
        if pub.parked_bytes + nbytes > self.publish_window_bytes:
            raise ProtocolError(
                f"publisher {pub.pub_id} sent past its credit window: this frame makes "
                f"{pub.parked_bytes + nbytes} bytes unacknowledged (publish_window_bytes is "
                f"{self.publish_window_bytes}); wait for PUB_ACK before sending more"
            )

    def release_all(self, held: Iterable[Parked | ParkedView]) -> None:
        """:meth:`Parked.release` each of ``held``, in order (a block reader took them).

        The frames this frees are handed back to their writers per run of one writer, with
        one acknowledgement each, where each took four calls (release, the writer's unpark,
        its outbox's unparked and ack): a writer held back by block readers has every frame
        go through here once per reader."""
        writer: Writer | None = None
        frames = nbytes = 0
        for item in held:
            parked = item.parked if type(item) is ParkedView else item
            if type(parked) is not Parked:  # a RemoteHold: its engine waits, not a writer
                parked.release()
                continue
            parked.waiting -= 1
            if parked.waiting:
                continue
            if parked.writer is not writer:
                if writer is not None:
                    self.parked_bytes -= nbytes
                    writer.unpark(nbytes, frames)
                writer = parked.writer
                frames = nbytes = 0
            frames += 1
            nbytes += parked.nbytes
        if writer is not None:
            self.parked_bytes -= nbytes
            writer.unpark(nbytes, frames)

    def _park(self, frame: SharedData, pub: Writer, size: int, now: float = -1.0) -> Parked:
        """Hold ``frame`` for full block readers; it counts against its writer until taken
        (``now``: the broker's clock, if the caller has read it)."""
        nbytes = PUBLISH_HEAD.size + size
        pub.park(nbytes)
        self.parked_bytes += nbytes
        return Parked(self, frame, pub, nbytes, now if now >= 0 else self.clock())

    def _remember(self, channel: Channel, frame: SharedData) -> None:
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
        frame = SharedData(seq, time.time(), sender, payload)
        channel.bytes_in += len(payload)
        targets: Iterable[tuple[Reader, SharedData]] = ((sub, frame) for sub in channel.fanout)
        if channel.selective is not None:
            targets = itertools.chain(targets, channel.selective.targets(frame, sender, self.cut))
        for sub, shown in targets:
            if not sub.offer(shown) and sub.policy is Policy.BLOCK:
                # A stuck reader loses server events rather than stall the server, and hears
                # of it on its next message like any other loss.
                sub.skip(1)

    # -- readers ---------------------------------------------------------------------------
    def subscribe(
        self, sub: Reader, replay: Callable[[Reader, deque[SharedData]], None] | None = None
    ) -> None:
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
        channel.subscriptions[sub] = None
        if drops_when_full(sub.policy):
            channel.lossy_readers += 1
        if sub.sender is None and sub.view is None:
            channel.fanout[sub] = None
        else:
            if channel.selective is None:
                channel.selective = Selective()
            channel.selective.add(sub)
        with sub.replaying():
            if replay is not None:  # a resume (resume.py): from a position, not all history
                replay(sub, self._history_for(sub, channel.recent))
            elif channel.recent:
                replay_history(sub, decimated(sub, self._history_for(sub, channel.recent)))
            if sub.lost:
                # History left out for want of room, or a resume's frames gone by: said
                # whether a frame follows or not. A reader back after its server let its
                # subscription go (resume_grace_s), whose writer had stopped meanwhile, had
                # sub.lost 0 for 200 frames it never got until another frame came.
                sub.report_skipped()
        self._readers_changed(channel)

    def _history_for(self, sub: Reader, recent: deque[SharedData]) -> deque[SharedData]:
        """The channel's history as ``sub`` would have received it: its sender's, its view."""
        if sub.sender is None and sub.view is None:
            return recent
        frames: Iterable[SharedData] = recent
        if sub.sender is not None:
            sender = sub.sender
            frames = (frame for frame in frames if shared_sender(frame) == sender)
        if sub.view is not None:
            view = sub.view
            frames = (self.cut(frame, view) for frame in frames)
        return deque(frames)

    def unsubscribe(self, sub: Reader) -> None:
        """The reader is gone: detach it and free its buffer."""
        self.detach(sub)
        sub.outbox.discard(sub)

    def detach(self, sub: Reader) -> None:
        """No new frames for this reader; it holds no writer back any more."""
        channel = sub.channel
        sub.drop_parked()
        if sub in channel.subscriptions:
            del channel.subscriptions[sub]
            if drops_when_full(sub.policy):
                channel.lossy_readers -= 1
            if sub in channel.fanout:
                del channel.fanout[sub]
            elif channel.selective is not None:
                channel.selective.remove(sub)
                if not channel.selective:
                    channel.selective = None  # publish checks `is None` again, no __bool__
            self._readers_changed(channel)

    def _readers_changed(self, channel: Channel) -> None:
        self.tell_writers(channel)
        self.event("readers", channel)

    def retuned(self, sub: Reader, dropped_when_full: bool) -> None:
        """``sub``'s policy changed (a retune; ``dropped_when_full``: the old one's): its
        writers learn when the channel became lossless, or stopped being so."""
        channel = sub.channel
        drops = drops_when_full(sub.policy)
        if drops is dropped_when_full or sub not in channel.subscriptions:
            return
        channel.lossy_readers += 1 if drops else -1
        self.tell_writers(channel)

    def tell_writers(self, channel: Channel) -> None:
        """The channel's writers get its reader count and whether it is lossless (after a
        reader came or went, or changed its policy)."""
        for outbox in channel.writers_by_outbox:
            outbox.readers_changed(channel)

    def owned_by(self, client_id: int) -> Iterator[Channel]:
        """The channels ``client_id`` owns now, in the registry's order (a snapshot: the
        caller may delete them, or give them to another owner, as it goes)."""
        owned = self._owned.get(client_id)
        if not owned:
            return iter(())
        snapshot = sorted(owned, key=_SERIAL_OF)
        return (c for c in snapshot if c.owner_id == client_id)

    def owned_count(self, client_id: int) -> int:
        """How many channels ``client_id`` owns (no walk: the quota's check on each create)."""
        owned = self._owned.get(client_id)
        return 0 if owned is None else len(owned)

    def _own(self, channel: Channel, owner_id: int | None) -> None:
        if owner_id is not None:
            self._owned.setdefault(owner_id, {})[channel] = None

    def _disown(self, channel: Channel, owner_id: int | None) -> None:
        if owner_id is None:
            return
        owned = self._owned.get(owner_id)
        if owned is not None:
            owned.pop(channel, None)
            if not owned:
                del self._owned[owner_id]

    def _add_deadline(self, channel: Channel) -> None:
        """Index ``channel.expires_at`` (a listed channel's, new or changed)."""
        if channel.expires_at is None:
            return  # its former deadline is stale now
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self.channels) + 64:
            # Mostly stale (channels deleted before their lifetime ran out): rebuild, so that
            # it holds neither those channels nor more entries than the registry has
            # channels, twice over. Each rebuild follows as many pushes: O(1) each, amortized.
            deadlines[:] = [
                (c.expires_at, next(self._pushes), c)
                for c in self.channels.values()
                if c.expires_at is not None and c is not channel
            ]
            heapq.heapify(deadlines)
        heapq.heappush(deadlines, (channel.expires_at, next(self._pushes), channel))

    def next_deadline(self) -> float:
        """When the next temporary channel reaches its lifetime (trio clock; inf if none)."""
        deadlines = self._deadlines
        while deadlines:
            deadline, _, channel = deadlines[0]
            if channel.expires_at == deadline and self.channels.get(channel.name) is channel:
                return deadline
            heapq.heappop(deadlines)  # stale: deleted, or its deadline changed
        return math.inf

    def expire(self, now: float) -> float:
        """End the temporary channels whose lifetime is over at ``now``; the next deadline
        (inf if none). Visits only those, not every channel."""
        while (deadline := self.next_deadline()) <= now:
            channel = heapq.heappop(self._deadlines)[2]
            self.delete_channel(channel, f"temporary channel {channel.name!r} reached its lifetime")
        return deadline

    def update_rates(self) -> None:
        """Per-channel frames/s and bytes/s since the previous call, or since the channel was
        created (called about once a second), in one go: see :meth:`rate_steps`."""
        for _ in self.rate_steps():
            pass

    def rate_steps(self, step: int = RATE_STEP_CHANNELS) -> Iterator[None]:
        """:meth:`update_rates` ``step`` channels at a time, yielding between steps: the
        server's housekeeping lets other tasks run there (a walk over 100,000 channels took
        30-70 ms, each second, during which nobody else's frame moved).

        An idle channel (nothing through it since its mark, its rates 0 already) is left as
        it is: its mark then stands for this walk's (see ``_rates_at``), so that 12,000 idle
        channels cost a test each, not an update. Channels created during the walk wait
        for the next one; those deleted during it may be updated once more (harmless)."""
        previous, self._rates_at = self._rates_at, self.clock()
        channels = list(self.channels.values())
        for start in range(0, len(channels), step):
            if start:
                yield
            self._update_rates_of(channels[start : start + step], previous)

    def _update_rates_of(self, channels: list[Channel], previous: float) -> None:
        now = self.clock()
        for channel in channels:
            mark = channel._rate_mark
            seq, written, nbytes, written_bytes = (
                channel.seq,
                channel.written_frames,
                channel.bytes_in,
                channel.written_bytes,
            )
            if (
                seq == mark[1]
                and written == mark[2]
                and nbytes == mark[3]
                and written_bytes == mark[4]
                and not channel.rate_fps
                and not channel.rate_bps
            ):
                continue  # idle: its rates stay 0 (no call, no allocation per channel)
            # A mark older than the previous call: the channel was idle then (left alone),
            # with these counts, so the interval starts at that call.
            elapsed = max(now - max(mark[0], previous), 1e-9)
            # frames_here and bytes_here, now and at the mark. (Not below 0: a channel Redis
            # lost starts its seqs again.)
            frames = max(seq, written) - max(mark[1], mark[2])
            size = max(nbytes, written_bytes) - max(mark[3], mark[4])
            channel.rate_fps = max(frames, 0) / elapsed
            channel.rate_bps = max(size, 0) / elapsed
            channel._rate_mark = (now, seq, written, nbytes, written_bytes)


def replay_history(sub: Reader, recent: deque[SharedData]) -> None:
    """Admit the newest frames of ``recent`` that fit ``sub`` (see Broker.subscribe)."""
    outbox = sub.outbox
    room_bytes = outbox.max_buffered_bytes - outbox.buffered_bytes
    room_frames = None
    if sub.blocks_writers:
        room_bytes = min(room_bytes, outbox.max_block_bytes - outbox.block_bytes)
        room_frames = sub.buffer.size
    keep = nbytes = 0
    for frame in reversed(recent):
        if keep == room_frames or nbytes + frame.nbytes > room_bytes:
            break
        keep += 1
        nbytes += frame.nbytes
    left_out = len(recent) - keep
    if left_out:
        sub.skip(left_out)
    for frame in itertools.islice(recent, left_out, None):
        sub.admit(frame)


def decimated(sub: Reader, recent: deque[SharedData]) -> deque[SharedData]:
    """The history a fresh subscription's ``every`` and ``max_rate`` let through, as they
    would let live frames through (decimation, not loss): ``every=N`` keeps the oldest frame
    and every N-th after it, and counts on into the live ones; ``max_rate`` keeps only the
    newest of those, and the next frame is due an interval later. Also a resume into a new
    epoch (a reset), which starts afresh; a resume in the same epoch offers its history
    frame by frame instead (resume.subscribe_since)."""
    if sub.every > 1:
        sub.seen = len(recent)
        recent = deque(itertools.islice(recent, 0, None, sub.every))
    if sub.interval and recent:
        sub.next_due = sub.outbox.clock() + sub.interval
        recent = deque((recent[-1],))
    return recent


_SERIAL_OF: Final = attrgetter("_serial")


def check_access(
    channel: Channel | EndedChannel, key: str | None, session: ClientIdentity | None
) -> None:
    """Raise unless ``session`` may use ``channel`` with ``key`` (see Broker.lookup); also
    for a channel that has ended, as it was (a kept reader's, taken back by name)."""
    if not (channel.public or _owner_of(channel, session) or _key_matches(channel, key)):
        raise channel_not_found(channel.name)
    keyed = channel.key is not None and not _owner_of(channel, session)
    if keyed and (key is None or not _key_matches(channel, key)):
        raise key_refused(channel.name, key)


def wrong_key(broker: Broker, name: object, key: str) -> bool:
    """Whether ``key`` is not the key of the keyed channel ``name`` held here (a channel of
    another node only, in a cluster, is not known here: not counted)."""
    channel = broker.channels.get(name) if isinstance(name, str) else None
    return channel is not None and channel.key is not None and not _key_matches(channel, key)


def _owner_of(channel: Channel | EndedChannel, session: ClientIdentity | None) -> bool:
    return session is not None and channel.owner_id == session.client_id


def _key_matches(channel: Channel | EndedChannel, key: str | None) -> bool:
    """``key`` opens ``channel`` (constant-time compare; a channel without key opens to none)."""
    return (
        channel.key is not None
        and key is not None
        and hmac.compare_digest(key.encode(), channel.key.encode())
    )
