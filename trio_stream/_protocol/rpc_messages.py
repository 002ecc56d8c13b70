"""The CONTROL messages of RPC through the server (docs/protocol.md section 6).

Three parties: the *caller* asks, the server routes, the *provider* (the client that exposed
the methods) runs the method. Ids that a client chose are called ``id`` (the caller's request
id, answered with ``reply``, ``error`` or ``rpc_error``); ids that the server chose for one
routed call are called ``call``. Arguments and results are payloads (section 4) carried as
CBOR byte strings, so that the server never decodes them and the control decoder's small depth
limit never applies to user data.

These are not :class:`~.messages.Request` subclasses on purpose: a request is answered by the
session at once, while ``call`` and ``describe`` are answered later, when the provider has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .messages import Message, register

#: How many methods one client may expose, and how long a method name may be (characters).
MAX_METHODS: Final = 1000
MAX_METHOD_NAME: Final = 200


# --- caller -> server -------------------------------------------------------------------------
@dataclass(frozen=True)
class Describe(Message):
    """Ask for a provider's method descriptions; answered by ``reply`` or ``error``."""

    OP: ClassVar[str] = "describe"
    id: int
    provider: str


@dataclass(frozen=True)
class Call(Message):
    """Call a provider's method; answered by ``reply`` (result), ``error`` or ``rpc_error``.

    ``args`` is a payload holding ``[positional arguments, keyword arguments]``.
    """

    OP: ClassVar[str] = "call"
    id: int
    provider: str
    method: str
    args: bytes


@dataclass(frozen=True)
class Cancel(Message):
    """The caller stopped waiting for its ``call`` or ``describe`` ``id``; no answer follows."""

    OP: ClassVar[str] = "cancel"
    id: int


# --- provider -> server -----------------------------------------------------------------------
@dataclass(frozen=True)
class Expose(Message):
    """The full list of method names this client exposes now (it replaces the previous one)."""

    OP: ClassVar[str] = "expose"
    methods: list[str]


@dataclass(frozen=True)
class Methods(Message):
    """Answer to ``introspect``: the method descriptions (docs/protocol.md section 6)."""

    OP: ClassVar[str] = "methods"
    call: int
    methods: list[Any]


@dataclass(frozen=True)
class Result(Message):
    """The method returned; ``value`` is a payload."""

    OP: ClassVar[str] = "result"
    call: int
    value: bytes


@dataclass(frozen=True)
class Fail(Message):
    """The method raised: the exception's type name, message and formatted traceback."""

    OP: ClassVar[str] = "fail"
    call: int
    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Refuse(Message):
    """The call could not be made (no such method exposed, malformed arguments)."""

    OP: ClassVar[str] = "refuse"
    call: int
    message: str


# --- server -> provider -----------------------------------------------------------------------
@dataclass(frozen=True)
class Introspect(Message):
    """Send your method descriptions (answer with ``methods``)."""

    OP: ClassVar[str] = "introspect"
    call: int


@dataclass(frozen=True)
class Invoke(Message):
    """Run ``method`` with ``args`` (a payload ``[positional, keyword]``) for ``caller``."""

    OP: ClassVar[str] = "invoke"
    call: int
    method: str
    args: bytes
    caller: str


@dataclass(frozen=True)
class Abort(Message):
    """Nobody waits for ``call`` any more (the caller cancelled or left): stop running it."""

    OP: ClassVar[str] = "abort"
    call: int


# --- server -> caller -------------------------------------------------------------------------
@dataclass(frozen=True)
class RpcErrorReply(Message):
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
    Expose,
    Methods,
    Result,
    Fail,
    Refuse,
    Introspect,
    Invoke,
    Abort,
    RpcErrorReply,
):
    register(_cls)
