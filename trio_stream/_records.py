"""The typed records the client hands to applications: messages and introspection."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeVar

from ._exceptions import ProtocolError

R = TypeVar("R")

# What a Gap says happened: a type checker knows the two values (a plain str did not).
GapKind = Literal["resumed", "reset"]

#: A wrong value is shown in an error cut to this many characters: the error is one line.
SHOWN_CHARS: Final = 80


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 3]}..."


def _from_wire(cls: type[R], data: Any, wire: Any = None) -> R:
    """Build a record from a wire map, ignoring keys a newer server may add.

    ``wire``: the map as the server sent it, for an error to show (``data`` by default).

    Raises:
        ProtocolError: ``data`` is not a map, or lacks a key the record needs; the message
            says which, to follow "item 3 " (see :func:`list_from_answer`).
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(data, dict):
        raise ProtocolError(f"is {_shown(data)}, not a map")
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        # Only a missing key gets here (the keys passed are the record's own): name it,
        # rather than __init__'s "missing 1 required positional argument".
        missing = [
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in data
        ]
        if not missing:
            raise
        shown = _shown(data if wire is None else wire)
        raise ProtocolError(f"lacks {', '.join(map(repr, missing))} ({shown})") from None


# What building a record from a server's answer of the wrong shape raises: a ProtocolError
# from _from_wire, a TypeError or ValueError from iterating or converting a wrong value.
_WRONG_SHAPE: Final = (ProtocolError, TypeError, ValueError)


def _wrong(exc: Exception, value: Any) -> str:
    """What is wrong with ``value``, to follow "it " or "item 3 "."""
    return str(exc) if isinstance(exc, ProtocolError) else f"is {_shown(value)} ({exc})"


def answer_from_wire(make: Callable[[Any], R], data: Any, request: str, what: str) -> R:
    """The record ``make`` builds from the server's answer to ``request``.

    Raises:
        ProtocolError: the answer is not ``what``; the message says what was wrong.
    """
    try:
        return make(data)
    except _WRONG_SHAPE as exc:
        reason = _wrong(exc, data)
        raise ProtocolError(
            f"the server's answer to {request} is not {what}: it {reason}"
        ) from None


def list_from_answer(make: Callable[[Any], R], data: Any, request: str, what: str) -> list[R]:
    """The records ``make`` builds from the items of the server's answer to ``request``.

    Raises:
        ProtocolError: the answer is not ``what`` (a list of maps, each with the keys its
            record needs); the message names the first wrong item and what was wrong.
    """
    if isinstance(data, list):
        try:
            return [make(item) for item in data]
        except _WRONG_SHAPE:
            pass
        # Only on a wrong answer: the items again, to name the first that is wrong.
        reason = "has a wrong item"
        for index, item in enumerate(data):
            try:
                make(item)
            except _WRONG_SHAPE as exc:
                reason = f"item {index} {_wrong(exc, item)}"
                break
    else:
        reason = _shown(data)
    raise ProtocolError(f"the server's answer to {request} is not {what}: {reason}")


class Gap(NamedTuple):
    """A reconnection (or a reset) just before a message: what was missed, counted.

    ``kind`` "resumed": the same channel on the same server state; ``lost`` is exactly the
    frames missed just before this message (not replayed, or dropped by the reader's policy
    on the way; a lossy reader's drops after it come in later messages' ``lost``, as
    always), ``recovered`` the frames replayed from the channel's history, or handed on
    from the subscription the server kept through the reader's cut. "reset": the
    channel's sequence restarted (the server restarted, the channel was re-created);
    ``lost`` is None (unknowable).
    """

    kind: GapKind
    lost: int | None
    recovered: int


class Position(NamedTuple):
    """Where a reader stands in a channel: its epoch and the seq of the last message taken.

    ``subscribe(channel, since=position)`` continues after it (docs/protocol.md, Resume).
    """

    epoch: str
    seq: int


class Message(NamedTuple):
    """One frame as a reader receives it.

    A NamedTuple rather than a frozen dataclass: one is made per received frame, and a frozen
    dataclass's __init__ costs several times more.
    """

    data: Any
    seq: int  # the channel's sequence number, from 1
    channel: str
    sender: str  # name of the client that published it
    time: float  # the writer's clock when it sent the frame (Unix seconds)
    lost: int  # frames this subscription lost to overflow just before this one
    gap: Gap | None = None  # a reconnection (or reset) happened just before this message

    def __repr__(self) -> str:
        # A notebook shows a message by its repr: a 1,000-sample array in full was 170 lines
        # (a notebook user). ``msg.data`` has the value itself.
        return (
            f"Message(data={_brief(self.data)}, seq={self.seq}, channel={self.channel!r}, "
            f"sender={self.sender!r}, time={self.time!r}, lost={self.lost}, gap={self.gap!r})"
        )


#: A value's repr in a Message's is cut to this many characters.
BRIEF_REPR_CHARS: Final = 200


def _brief(value: Any) -> str:
    """``value``'s repr for a Message's: an array as its dtype and shape, the rest cut."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:  # numpy, without importing it here
        return f"<array {dtype} {shape}>"
    text = repr(value)
    if len(text) > BRIEF_REPR_CHARS:
        return f"{text[: BRIEF_REPR_CHARS - 30]}... ({len(text)} characters)"
    return text


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel as ``Client.channels()`` lists it (the public ones and the caller's own).

    ``owner``: the creating client's name ("$server" for system channels); ``readers``,
    ``writers``: now; ``seq``: frames published so far; ``rate_fps``, ``rate_bps``: over the
    last stats interval; ``lost``: frames its readers lost; ``created``: Unix seconds;
    ``lifetime``: seconds or None; ``history``, ``single_writer``, ``keep``: as created;
    ``held_by``: the ``block`` readers holding its writers back for a second or more (maps of
    ``client``, ``sub``, ``held_s``); ``meta``: what the writer said about it (units...).
    """

    name: str
    owner: str
    public: bool = True
    readers: int = 0
    writers: int = 0
    seq: int = 0
    rate_fps: float = 0.0
    rate_bps: float = 0.0
    lost: int = 0
    created: float = 0.0
    lifetime: float | None = None
    history: int = 0
    single_writer: bool = False
    keep: bool = False
    # block readers holding the writers back: maps of client (name), sub (id), held_s
    held_by: list[dict[str, Any]] = dataclasses.field(default_factory=list, compare=False)
    meta: dict[str, Any] | None = None  # what the writer said about it: units, labels...
    node: str = ""  # several nodes: the node it was created on ("" on one node)

    @classmethod
    def from_wire(cls, data: Any) -> ChannelInfo:
        return _from_wire(cls, data)


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """One subscription of a client in ``Client.clients()``: its options, ``queued`` (frames
    in its buffer on the server now), ``lost`` and ``sent`` (frames so far)."""

    channel: str
    policy: str
    size: int | None = None
    every: int = 1
    max_rate: float | None = None
    queued: int = 0
    lost: int = 0
    sent: int = 0

    @classmethod
    def from_wire(cls, data: Any) -> SubscriptionInfo:
        return _from_wire(cls, data)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A connected client as ``Client.clients()`` lists it.

    ``address``: its peer address; ``transport``: "tcp" or "ws"; ``connected_at``: Unix
    seconds; ``subscriptions``, ``publishers`` (channel names) and ``methods`` (RPC names),
    without those on private channels.
    """

    id: int
    name: str
    address: str = ""
    transport: str = ""
    connected_at: float = 0.0
    subscriptions: tuple[SubscriptionInfo, ...] = ()
    publishers: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    node: str = ""  # several nodes: the node it is connected to ("" on one node)

    @classmethod
    def from_wire(cls, data: Any) -> ClientInfo:
        if not isinstance(data, dict):
            raise ProtocolError(f"is {_shown(data)}, not a map")
        record = dict(data)
        try:
            record["subscriptions"] = tuple(
                SubscriptionInfo.from_wire(s) for s in record.get("subscriptions", ())
            )
        except ProtocolError as exc:
            raise ProtocolError(f"has a subscription that {exc}") from None
        record["publishers"] = tuple(record.get("publishers", ()))
        record["methods"] = tuple(record.get("methods", ()))
        return _from_wire(cls, record, data)


@dataclass(frozen=True, slots=True)
class ServerStats:
    """The server's figures, from ``Client.stats()`` (and the ``$stats`` channel).

    ``frames_*``, ``bytes_*`` and ``frames_lost``: totals since the start; the ``*_per_s``
    rates and ``cpu_percent``: over the last stats interval; ``channels``: the public ones,
    system channels included; ``memory_bytes``: resident. Several nodes: ``connections`` and
    ``channels`` are the cluster's, the rest the answering node's.
    """

    connections: int = 0
    channels: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in_per_s: float = 0.0
    frames_out_per_s: float = 0.0
    bytes_in_per_s: float = 0.0
    bytes_out_per_s: float = 0.0
    frames_lost: int = 0
    buffered_bytes: int = 0  # parked_bytes included
    parked_bytes: int = 0  # published frames waiting for block readers' room
    kept_subscriptions: int = 0  # kept for clients whose connection broke, until they resume
    uptime_s: float = 0.0
    memory_bytes: int = 0
    cpu_percent: float = 0.0
    nodes: int = 1  # the cluster's live nodes (several nodes)
    node: str = ""  # several nodes: the node that answered ("" on one node)
    node_connections: int = 0  # its own share of ``connections`` (all of them on one node)

    @classmethod
    def from_wire(cls, data: Any) -> ServerStats:
        if isinstance(data, dict) and "node_connections" not in data:  # one node: all of them
            data = {**data, "node_connections": data.get("connections", 0)}
        return _from_wire(cls, data)
