"""The closed set of CONTROL messages (docs/protocol.md section 3).

Each message is a frozen dataclass; ``OP`` is its wire name. :func:`encode_message` and
:func:`decode_message` turn them into CONTROL frame bodies and back, checking every field's
type against the class's annotations so that the rest of the code can trust what it gets.
Unknown keys are ignored (a newer peer may add optional fields); a missing key with no default,
a wrong type or an unknown ``op`` is a :class:`ProtocolError`.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Union

from .._exceptions import InvalidArgument, ProtocolError
from .brief import brief
from .bytes_like import BytesLike
from .codec import cbor_head, decode_control, encode_control, unencodable_text
from .frames import CONTROL_TYPE_BYTE


@dataclass(frozen=True)
class ControlMessage:
    """One CONTROL frame's message: a request, its reply or error, a notice (not the
    ``ts.Message`` a reader receives, which is a DATA frame's value)."""

    OP: ClassVar[str] = ""
    # Fields left out of the wire map when they are None (docs/protocol.md says "absent").
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()


# --- handshake ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(ControlMessage):
    OP: ClassVar[str] = "hello"
    v: int
    name: str | None = None
    token: str | None = None
    resume: bool = False  # the client reconnects: issue a resume token in the welcome
    resume_token: str | None = None  # the previous connection's, to take its place back


@dataclass(frozen=True)
class Welcome(ControlMessage):
    OP: ClassVar[str] = "welcome"
    v: int
    client_id: int
    name: str
    server: str
    limits: dict[str, Any]
    resume_token: str | None = None  # present it in the next hello (after hello resume=true)
    # The server process's run (random, new at each start; a node's own on a node of several):
    # a client that reconnects tells a restart, or another node, from the same server by it.
    # "" from a server older than the field.
    run: str = ""
    # After a resume: the channels this client owned that another client deleted while it was
    # away, each with its reason; its client does not create them again. Absent when there
    # are none (and from older servers).
    channels_deleted: dict[str, str] | None = None
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"resume_token", "channels_deleted"})


# --- requests (client -> server), each answered by Reply or Error with the same id ------------
@dataclass(frozen=True)
class Request(ControlMessage):
    id: int


@dataclass(frozen=True)
class CreateChannel(Request):
    OP: ClassVar[str] = "create_channel"
    channel: str
    public: bool = True
    key: str | None = None
    lifetime: float | None = None
    history: int = 0
    single_writer: bool = False
    keep: bool = False
    meta: dict[str, Any] | None = None  # units, labels, description: shown by readers


@dataclass(frozen=True)
class DeleteChannel(Request):
    OP: ClassVar[str] = "delete_channel"
    channel: str
    key: str | None = None


@dataclass(frozen=True)
class OpenPublisher(Request):
    OP: ClassVar[str] = "open_publisher"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"writer", "claim"})
    channel: str
    key: str | None = None
    resume_pub: int | None = None  # the previous connection's pub id: reply says "taken"
    # The client's own name for this publisher, the same on every connection (random, at
    # most WRITER_KEY_MAX_BYTES): a node of a cluster answers every reopen of it from Redis
    # ("published", instead of "taken"), wherever its last connection was.
    writer: str | None = None
    # With ``writer`` on a reopen: its number, 1 on the first reopen and one more on each.
    # A node of a cluster refuses a claim not above the last one Redis saw, so a reopen that
    # reaches Redis late (its client gave up on it and reopened elsewhere) takes nothing away.
    claim: int | None = None


@dataclass(frozen=True)
class ClosePublisher(Request):
    OP: ClassVar[str] = "close_publisher"
    pub: int


@dataclass(frozen=True)
class Subscribe(Request):
    OP: ClassVar[str] = "subscribe"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"sender", "view", "resume_sub", "held", "repeat"}
    )
    channel: str
    key: str | None = None
    policy: str = "drop_oldest"
    size: int | None = 100
    every: int = 1
    max_rate: float | None = None
    window: int | None = None
    block_timeout: float | None = None  # s; block only; None: the server's block_timeout_s
    sender: str | None = None  # only the frames of the writer(s) of this client name
    view: list[Any] | None = None  # [[start, stop, step], ...] per dimension (array_view.py)
    since_epoch: str | None = None  # resume after (since_epoch, since_seq): reply has "resume"
    since_seq: int | None = None
    resume_sub: int | None = None  # with since_*: its id on the broken connection (kept.py)
    # With resume_sub: the frames it got and has not returned credit for (Reader.resume_after).
    held: int | None = None
    # True: the same subscribe again, its reply lost with the connection that carried it
    # (after a resume, it continues the subscription that one made: kept.take_unheard).
    repeat: bool | None = None


@dataclass(frozen=True)
class Retune(Request):
    """Change a live subscription; an absent (None) field stays as it is. ``max_rate`` 0
    removes the rate limit. Answered with the new ``window`` and ``window_bytes``."""

    OP: ClassVar[str] = "retune"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"policy", "size", "every", "max_rate", "block_timeout"}
    )
    sub: int
    policy: str | None = None
    size: int | None = None
    every: int | None = None
    max_rate: float | None = None
    block_timeout: float | None = None


@dataclass(frozen=True)
class Unsubscribe(Request):
    OP: ClassVar[str] = "unsubscribe"
    sub: int


@dataclass(frozen=True)
class Restored(Request):
    """After a resume: the client has asked for every subscription it wants back (each
    resubscription answered), so the ones the server kept for it and it did not take back
    end now rather than when the grace period does. An older server answers an unknown op."""

    OP: ClassVar[str] = "restored"


@dataclass(frozen=True)
class ListChannels(Request):
    OP: ClassVar[str] = "channels"


@dataclass(frozen=True)
class ListClients(Request):
    OP: ClassVar[str] = "clients"


@dataclass(frozen=True)
class GetStats(Request):
    OP: ClassVar[str] = "stats"


@dataclass(frozen=True)
class Admin(Request):
    """An operator's action, allowed only with the server's admin token (see _server/admin.py)."""

    OP: ClassVar[str] = "admin"
    action: str  # "check" | "publish" | "delete_channel" | "disconnect"
    token: str | None = None  # absent or null: refused with AuthError, as a wrong one
    channel: str | None = None
    client: int | None = None
    value: Any = None


# --- notifications ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Ping(ControlMessage):
    OP: ClassVar[str] = "ping"
    data: Any = None


@dataclass(frozen=True)
class Pong(ControlMessage):
    OP: ClassVar[str] = "pong"
    data: Any = None


@dataclass(frozen=True)
class Goodbye(ControlMessage):
    OP: ClassVar[str] = "goodbye"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"reconnect"})
    reason: str = ""
    # From the server only: False says "do not come back" (an admin's kick); absent (None)
    # lets a reconnecting client try again (a shutdown: a restart is expected).
    reconnect: bool | None = None


# --- server -> client -------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply(ControlMessage):
    OP: ClassVar[str] = "reply"
    id: int
    result: Any = None


@dataclass(frozen=True)
class Error(ControlMessage):
    OP: ClassVar[str] = "error"
    id: int | None
    type: str
    message: str


@dataclass(frozen=True)
class Readers(ControlMessage):
    OP: ClassVar[str] = "readers"
    pub: int
    readers: int
    # Every reader takes every frame (block, unbounded): the writer may send in larger
    # bursts, which lose nothing then and cost less (absent from an older server: false).
    lossless: bool = False


#: A ``sub_end``'s reason when the channel ended cleanly (deleted, expired, its owner gone).
CHANNEL_ENDED_REASON: Final = "the channel ended"


@dataclass(frozen=True)
class SubEnd(ControlMessage):
    OP: ClassVar[str] = "sub_end"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"error", "again"})
    sub: int
    reason: str = ""
    error: str | None = None  # an error type name when the end is a failure; else absent
    # True: the channel lives on (or will, registered again) at a new epoch, as after a
    # cluster's Redis restarted empty: subscribe again since the position to read on, with
    # a reset (docs/protocol.md section 8, "Reset ends"). Absent on every other end.
    again: bool | None = None


@dataclass(frozen=True)
class Lost(ControlMessage):
    """Frames a subscription lost to its policy that no DATA frame will report: sent once its
    server-side buffer is empty (after its last DATA frame) while such a loss is owed."""

    OP: ClassVar[str] = "lost"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"seq"})
    sub: int
    lost: int
    # The channel's seq up to which this subscription is now accounted for (every frame up to
    # it was sent, counted lost, or passed over by every, max_rate or a sender filter): where
    # a resume continues (docs/protocol.md section 8). Absent from older servers.
    seq: int | None = None


@dataclass(frozen=True)
class PubEnd(ControlMessage):
    OP: ClassVar[str] = "pub_end"
    pub: int
    reason: str = ""


@dataclass(frozen=True)
class ChannelDeleted(ControlMessage):
    """To a channel's owner: another client (a holder of its key, an admin) deleted it, so
    the owner does not create it again when it reconnects."""

    OP: ClassVar[str] = "channel_deleted"
    channel: str
    reason: str = ""


MESSAGE_TYPES: Final[dict[str, type[ControlMessage]]] = {}


def register(cls: type[ControlMessage]) -> type[ControlMessage]:
    """Add a message class to the closed set (used here and by the RPC messages)."""
    if not cls.OP or cls.OP in MESSAGE_TYPES:
        raise ValueError(f"message op {cls.OP!r} is empty or taken")
    MESSAGE_TYPES[cls.OP] = cls
    _FIELD_TYPES[cls] = {
        f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)
    }
    return cls


_FIELD_TYPES: dict[type[ControlMessage], dict[str, Any]] = {}

for _cls in (
    Hello,
    Welcome,
    CreateChannel,
    DeleteChannel,
    OpenPublisher,
    ClosePublisher,
    Subscribe,
    Retune,
    Unsubscribe,
    Restored,
    ListChannels,
    ListClients,
    GetStats,
    Admin,
    Ping,
    Pong,
    Goodbye,
    Reply,
    Error,
    Readers,
    SubEnd,
    Lost,
    ChannelDeleted,
    PubEnd,
):
    register(_cls)


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (float, int)
    if hint is str:
        return type(value) is str
    if hint is bytes:  # payloads nested in control messages (RPC arguments and results)
        return type(value) is bytes
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is list or hint is list:
        return isinstance(value, list | tuple)
    raise TypeError(f"message field type {hint!r} has no wire check")


# What a peer's error says, in CBOR's words (docs/protocol.md is language-neutral): the kinds
# a field takes, and the kind of the value it got.
_WIRE_KINDS: Final[dict[Any, str]] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a text string",
    bytes: "a byte string",
    type(None): "null",
}
_VALUE_KINDS: Final[dict[type, str]] = {
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    str: "a text string",
    bytes: "a byte string",
    type(None): "null",
    list: "an array",
    tuple: "an array",
    dict: "a map",
}


def _wire_kind(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_wire_kind(arg) for arg in typing.get_args(hint))
    if hint is dict or typing.get_origin(hint) is dict:
        return "a map"
    if hint is list or typing.get_origin(hint) is list:
        return "an array"
    return _WIRE_KINDS.get(hint, "any value")


def _value_kind(value: Any) -> str:
    return _VALUE_KINDS.get(type(value), "a tagged or simple value")


# -- the sender's own check -------------------------------------------------------------------
# A field the receiver refuses (from_wire) closes the whole connection there: the receiver
# cannot tell a bad value from a broken peer. So the sender checks what it sends, and a
# mistyped argument is an InvalidArgument for the caller that passed it. It takes what the
# encoder writes as the field's type (numpy scalars, str subclasses such as a StrEnum, any
# mapping, a number the client converts with float()), which applications pass and which
# always went through. Checkers are built once per message class: every RPC call pays them.

Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is not bool and isinstance(value, numbers.Integral))


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is float or kind is int:
        return True
    if kind is bool or isinstance(value, str | bytes | bytearray):
        return False
    try:
        float(value)  # what the client does with it (Decimal, numpy floats)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _is_bool(value: Any) -> bool:
    # A numpy bool scalar too (shape ()), not an array of them.
    return type(value) is bool or (
        getattr(value, "shape", None) == () and getattr(value.dtype, "kind", "") == "b"
    )


def _encodes(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (not if it holds a lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_SCALAR_CHECKS: Final[dict[Any, tuple[Check, str]]] = {
    int: (_is_int, "an int"),
    float: (_is_number, "a number"),
    bool: (_is_bool, "True or False"),
    str: (lambda value: isinstance(value, str) and _encodes(value), "a str"),
    bytes: (lambda value: type(value) is bytes, "bytes"),
    type(None): (lambda value: value is None, "None"),
}


def _checker(hint: Any) -> tuple[Check, str] | None:
    """(a check of a value to send as ``hint``, how an error says the type); None: any."""
    if hint is Any:
        return None
    if typing.get_origin(hint) in (Union, types.UnionType):
        parts = [_checker(arg) for arg in typing.get_args(hint)]
        if any(part is None for part in parts):
            return None
        checks = [part[0] for part in parts if part is not None]
        wanted = " or ".join(part[1] for part in parts if part is not None)
        if type(None) in typing.get_args(hint) and len(checks) == 2:  # "X | None": the usual
            other = next(arg for arg in typing.get_args(hint) if arg is not type(None))
            inner = _checker(other)
            assert inner is not None
            check = inner[0]
            return (lambda value: value is None or check(value)), wanted
        return (lambda value: any(check(value) for check in checks)), wanted
    if hint is dict or typing.get_origin(hint) is dict:
        return (lambda value: isinstance(value, Mapping)), "a dict"
    if hint is list or typing.get_origin(hint) is list:
        return (lambda value: isinstance(value, list | tuple)), "a list"
    return _SCALAR_CHECKS[hint]


_SENDER_CHECKS: dict[type[ControlMessage], dict[str, tuple[Check, str]]] = {}


def _checks(cls: type[ControlMessage]) -> dict[str, tuple[Check, str]]:
    checks = _SENDER_CHECKS.get(cls)
    if checks is None:
        built = {name: _checker(hint) for name, hint in _FIELD_TYPES[cls].items()}
        checks = {name: check for name, check in built.items() if check is not None}
        _SENDER_CHECKS[cls] = checks
    return checks


def check_fields(cls: type[ControlMessage], fields: Mapping[str, Any]) -> None:
    """The sender's check of a message's fields, before it goes out (see above).

    Raises:
        InvalidArgument: a field of the wrong type (``size=10.5``, ``channel=5``).
    """
    checks = _checks(cls)
    for name, value in fields.items():
        check = checks.get(name)
        if check is not None and not check[0](value):
            if isinstance(value, str):
                try:
                    value.encode()
                except UnicodeEncodeError as exc:
                    raise InvalidArgument(f"{name}: {unencodable_text(exc)}") from None
            shown = "None" if value is None else f"{type(value).__name__} {brief(value)}"
            raise InvalidArgument(f"{name} must be {check[1]}, not {shown}")


def check_message(message: ControlMessage) -> None:
    """:func:`check_fields` of a message built already."""
    for name, (check, _) in _checks(type(message)).items():
        if not check(getattr(message, name)):
            check_fields(type(message), {name: getattr(message, name)})  # raises


def to_wire(message: ControlMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"op": message.OP}
    omit = message.OMIT_NONE
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if value is None and field.name in omit:
            continue
        wire[field.name] = value
    return wire


class UnknownOp(ProtocolError):
    """A CONTROL message whose ``op`` this side does not know (a newer peer's, perhaps).

    ``id`` is the message's request id when it carried an integer one: the server answers
    that request with an ``error`` and keeps the connection.
    """

    def __init__(self, op: object, ident: int | None) -> None:
        # Said in the wire's terms, for a peer in any language ("op None" was Python's).
        if op is _NO_OP:
            text = 'a control message without an "op": every CONTROL map names its op'
        elif not isinstance(op, str):
            text = f'a control message whose "op" is {_value_kind(op)}, not text'
        else:
            text = f"unknown control message op {brief(op)}"
        super().__init__(text)
        self.op = op
        self.id = ident


_NO_OP: Final = object()  # (an op that is null on the wire is not a missing one)


def from_wire(wire: dict[str, Any]) -> ControlMessage:
    op = wire.get("op", _NO_OP)
    cls = MESSAGE_TYPES.get(op) if isinstance(op, str) else None
    if cls is None:
        ident = wire.get("id")
        raise UnknownOp(op, ident if type(ident) is int else None)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in wire:
            value = wire[field.name]
            hint = _FIELD_TYPES[cls][field.name]
            if not _matches(value, hint):
                raise ProtocolError(
                    f"{op}.{field.name} must be {_wire_kind(hint)}, not {_value_kind(value)} "
                    "(docs/protocol.md)"
                )
            if hint is float or hint == (float | None):
                value = float(value) if value is not None else None
            values[field.name] = value
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"{op} lacks the field {field.name!r}")
    return cls(**values)


def encode_message(message: ControlMessage) -> bytes:
    """A CONTROL frame body (type byte and CBOR map), without the length prefix."""
    return CONTROL_TYPE_BYTE + encode_control(to_wire(message))


def readers_bodies(pub_ids: Iterable[int], readers: int, lossless: bool) -> Iterator[bytes]:
    """The bodies of ``readers`` notices to writers of one channel, byte for byte what
    ``encode_message(Readers(pub, readers, lossless))`` gives for each, made from one
    encoding of the rest of the map: each of a connection's writers on a channel is told of
    every reader that comes or goes, and a whole encoding took 3.7 us a writer (20,000
    writers: 74 ms of the server's loop per reader)."""
    whole = encode_message(Readers(pub=0, readers=readers, lossless=lossless))
    cut = whole.index(_PUB_KEY) + len(_PUB_KEY)  # (the first: "op"'s value comes before)
    before, after = whole[:cut], whole[cut + 1 :]  # around the 0, one byte in CBOR
    for pub_id in pub_ids:
        yield before + cbor_head(0, pub_id) + after


_PUB_KEY: Final = encode_control({"pub": 0})[1:-1]  # the key as CBOR text (no map head, no 0)


@dataclass(frozen=True)
class EncodedItems:
    """The items of a list, each encoded already (CBOR, one after another): a long listing
    is encoded a part at a time (the server answers other clients between parts, see
    _server/listing.py), then spliced into its reply (:func:`list_reply_body`)."""

    count: int
    data: bytes

    @classmethod
    def of(cls, values: list[Any]) -> EncodedItems:
        whole = encode_control({"": values})  # (a map: what encode_control takes)
        head = 1 + 1 + len(cbor_head(4, len(values)))  # map head, "" key, array head
        return cls(len(values), whole[head:])

    @classmethod
    def joined(cls, parts: Iterable[EncodedItems]) -> EncodedItems:
        parts = list(parts)
        return cls(sum(part.count for part in parts), b"".join(part.data for part in parts))


def list_reply_body(request_id: int, items: EncodedItems) -> bytes:
    """``encode_message(Reply(id=request_id, result=[...items]))``, byte for byte, from the
    items' own encodings: ``result`` is the reply map's last value, so its empty list is
    the encoding's last byte, and the list's head and items take its place."""
    empty = encode_message(Reply(id=request_id, result=[]))
    return empty[:-1] + cbor_head(4, items.count) + items.data


def decode_message(body: BytesLike, max_items: int | None = None) -> ControlMessage:
    """Parse a CONTROL frame body (type byte included); ``max_items``: see decode_control
    (the server passes codec.CONTROL_MAX_ITEMS for what its clients send).

    Raises:
        ProtocolError: malformed CBOR, unknown op, or a field of the wrong type.
    """
    return from_wire(decode_control(memoryview(body)[1:], max_items))
