"""The CONTROL messages of RPC through the server (docs/protocol.md section 6).

Three parties: the *caller* asks, the server routes, the *provider* (the client that exposed
the methods) runs the method. Ids that a client chose are called ``id`` (the caller's request
id, answered with ``reply``, ``error`` or ``rpc_error``); ids that the server chose for one
routed call are called ``call``. Arguments and results are payloads (section 4) carried as
CBOR byte strings, so that the server never decodes them and the control decoder's small depth
limit never applies to user data.

A *streaming* call (the provider's method is a generator) is a ``call`` with a ``window``: the
provider sends ``yield`` for each value, at most as many as the caller's credit allows (the
window, then what ``credit`` adds as the caller consumes), and ``end`` when the generator is
done; the caller receives ``item`` for each value and finally the ``reply`` (null result) that
ends the call, or ``rpc_error``/``error``. ``cancel`` and ``abort`` stop it as they stop a call.

These are not :class:`~.messages.Request` subclasses on purpose: a request is answered by the
session at once, while ``call`` and ``describe`` are answered later, when the provider has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .messages import ControlMessage, register

#: How many methods one client may expose, and how long a method name may be (characters).
MAX_METHODS: Final = 1000
MAX_METHOD_NAME: Final = 200
#: The most values a streaming call may have in flight (its window, and its credit at any time).
MAX_STREAM_WINDOW: Final = 1024
#: How an ``error`` (type ``RpcError``) to a ``describe`` or ``call`` begins when no client of
#: that name is connected, and how it ends when the client is there but exposes nothing yet:
#: a caller that waits for its provider (``rpc(..., wait_provider=True)``) asks again on
#: these, and on no other error.
PROVIDER_MISSING_START: Final = "no client named "
NO_METHODS_YET_END: Final = " exposes no methods (yet)"
#: ...and what it says when that client lost its connection and the server keeps its session
#: for its return (resume_grace_s): a caller's client asks again, within the call's timeout.
PROVIDER_AWAY_MARK: Final = " (it lost its connection and may be back)"


def provider_away(message: str) -> bool:
    """Whether an RpcError's message says the provider is reconnecting."""
    return message.startswith(PROVIDER_MISSING_START) and PROVIDER_AWAY_MARK in message


def provider_not_there(message: str) -> bool:
    """Whether an RpcError's message says the provider is not there (yet)."""
    return message.startswith(PROVIDER_MISSING_START) or message.endswith(NO_METHODS_YET_END)


# --- caller -> server -------------------------------------------------------------------------
@dataclass(frozen=True)
class Describe(ControlMessage):
    """Ask for a provider's method descriptions; answered by ``reply`` or ``error``."""

    OP: ClassVar[str] = "describe"
    id: int
    provider: str


@dataclass(frozen=True)
class Call(ControlMessage):
    """Call a provider's method; answered by ``reply`` (result), ``error`` or ``rpc_error``.

    ``args`` is a payload holding ``[positional arguments, keyword arguments]``.
    """

    OP: ClassVar[str] = "call"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"window"})
    id: int
    provider: str
    method: str
    args: bytes
    window: int | None = None  # set: a streaming call, with this many values of credit


@dataclass(frozen=True)
class Credit(ControlMessage):
    """The caller of streaming call ``id`` consumed ``n`` more values: the provider may send
    ``n`` more."""

    OP: ClassVar[str] = "credit"
    id: int
    n: int


@dataclass(frozen=True)
class Cancel(ControlMessage):
    """The caller stopped waiting for its ``call`` or ``describe`` ``id``; no answer follows."""

    OP: ClassVar[str] = "cancel"
    id: int


# --- provider -> server -----------------------------------------------------------------------
@dataclass(frozen=True)
class Expose(ControlMessage):
    """The full list of method names this client exposes now (it replaces the previous one)."""

    OP: ClassVar[str] = "expose"
    methods: list[str]


@dataclass(frozen=True)
class Methods(ControlMessage):
    """Answer to ``introspect``: the method descriptions (docs/protocol.md section 6)."""

    OP: ClassVar[str] = "methods"
    call: int
    methods: list[Any]


@dataclass(frozen=True)
class Result(ControlMessage):
    """The method returned; ``value`` is a payload."""

    OP: ClassVar[str] = "result"
    call: int
    value: bytes


@dataclass(frozen=True)
class Fail(ControlMessage):
    """The method raised: the exception's type name, message and formatted traceback."""

    OP: ClassVar[str] = "fail"
    call: int
    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Refuse(ControlMessage):
    """The call could not be made (no such method exposed, malformed arguments)."""

    OP: ClassVar[str] = "refuse"
    call: int
    message: str


@dataclass(frozen=True)
class Yield(ControlMessage):
    """One value of streaming call ``call`` (a payload); each takes one unit of credit."""

    OP: ClassVar[str] = "yield"
    call: int
    value: bytes


@dataclass(frozen=True)
class End(ControlMessage):
    """The generator of streaming call ``call`` is done: no value follows."""

    OP: ClassVar[str] = "end"
    call: int


# --- server -> provider -----------------------------------------------------------------------
@dataclass(frozen=True)
class Introspect(ControlMessage):
    """Send your method descriptions (answer with ``methods``)."""

    OP: ClassVar[str] = "introspect"
    call: int


@dataclass(frozen=True)
class Invoke(ControlMessage):
    """Run ``method`` with ``args`` (a payload ``[positional, keyword]``) for ``caller``."""

    OP: ClassVar[str] = "invoke"
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"window"})
    call: int
    method: str
    args: bytes
    caller: str
    window: int | None = None  # set: stream the values, this many before any ``demand``


@dataclass(frozen=True)
class Demand(ControlMessage):
    """The caller of streaming call ``call`` wants ``n`` more values (its ``credit``)."""

    OP: ClassVar[str] = "demand"
    call: int
    n: int


@dataclass(frozen=True)
class Abort(ControlMessage):
    """Nobody waits for ``call`` any more (the caller cancelled or left): stop running it."""

    OP: ClassVar[str] = "abort"
    call: int


# --- server -> caller -------------------------------------------------------------------------
@dataclass(frozen=True)
class Item(ControlMessage):
    """One value of streaming call ``id`` (a payload), in the order the provider yielded."""

    OP: ClassVar[str] = "item"
    id: int
    value: bytes


@dataclass(frozen=True)
class RpcErrorReply(ControlMessage):
    """The remote method raised (the caller raises ``RemoteError``)."""

    OP: ClassVar[str] = "rpc_error"
    id: int
    type: str
    message: str
    traceback: str = ""


for _cls in (
    Describe,
    Call,
    Cancel,
    Credit,
    Expose,
    Methods,
    Result,
    Fail,
    Refuse,
    Yield,
    End,
    Introspect,
    Invoke,
    Demand,
    Abort,
    Item,
    RpcErrorReply,
):
    register(_cls)
