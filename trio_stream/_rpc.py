"""RPC on the client: exposing methods (the provider side) and calling them (proxies).

A provider runs each invocation in its own task in the client's nursery, so many calls run at
once and a slow one never holds up streaming on the same connection. Async methods run in that
task. Sync methods run right there too, in the trio thread: they are expected to be quick (read
a cached value, set a parameter). A sync method that blocks (serial I/O, ``time.sleep``) must be
exposed with ``thread=True``: it then runs in a worker thread, one call at a time per exposed
object, the way one instrument handles one command at a time.

A caller builds a proxy from the provider's method descriptions (names, parameters, docstrings),
so arguments are checked against the real signature before anything is sent, and ``help()``
and tab completion show the remote methods. Cancelling a call (a cancel scope, a timeout) sends
``cancel``; the server aborts the provider's task.

A method that is a generator (``async def rpc_x(): yield``, or a plain ``def`` with ``yield``)
streams its values instead: ``async for v in proxy.x()``, with credit-based flow control
(trio_stream/_rpc_stream.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import math
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal

import trio

from ._exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    LimitExceeded,
    ProtocolError,
    RemoteError,
    RpcError,
    RpcTimeout,
    UnknownMethod,
)
from ._protocol.brief import brief
from ._protocol.codec import CONTROL_MAX_ITEMS, decode_payload, encode_payload
from ._protocol.frames import check_client_name
from ._protocol.limits import DEFAULT_PAYLOAD_LIMITS, PayloadLimits
from ._protocol.messages import ControlMessage, check_fields, encode_message
from ._protocol.rpc_messages import (
    MAX_METHOD_NAME,
    MAX_METHODS,
    Abort,
    Call,
    Cancel,
    Demand,
    Describe,
    End,
    Expose,
    Fail,
    Introspect,
    Invoke,
    Item,
    Methods,
    Refuse,
    Result,
    RpcErrorReply,
    Yield,
    provider_away,
    provider_not_there,
)
from ._rpc_stream import (
    DEFAULT_WINDOW,
    Inbox,
    Outflow,
    RaisedInWorker,
    RemoteStream,
    Turn,
    check_window,
    is_done,
    is_stream,
    open_generator,
)
from ._seconds import check_timeout
from ._util import exception_leaves, fresh

if TYPE_CHECKING:
    from ._client_port import ClientPort

log = logging.getLogger(__name__)

# rpc(..., wait_provider=True) asks again after this long, twice as long each time, up to the
# most: a provider that comes a second late is found within a second, and one that never
# comes costs the server a describe a second.
PROVIDER_POLL_FIRST_S: Final = 0.05
PROVIDER_POLL_MAX_S: Final = 1.0
# ...and says once that it still waits, after this long (a misspelt name waited silently).
PROVIDER_WAIT_WARN_S: Final = 5.0
# A call to a provider that is reconnecting (the server keeps its session) is made again after
# this long, twice as long each time up to the most, within the call's timeout.
PROVIDER_AWAY_RETRY_FIRST_S: Final = 0.05
PROVIDER_AWAY_RETRY_MAX_S: Final = 0.5

# A refused call names the provider's methods, at most this many (a provider may have 1,000).
MAX_LISTED_METHODS: Final = 50
PREFIX: Final = "rpc_"
# Room for the rest of a call message around its arguments (op, ids, names), in bytes.
CALL_OVERHEAD_BYTES: Final = 1024
# The name of the client whose call the current task runs (set in each invocation's own
# task, and seen by its worker thread): a file receiver names the sender in its events.
CALLER: Final = contextvars.ContextVar[str | None]("trio_stream_rpc_caller", default=None)


def current_caller() -> str | None:
    """The client name of the caller whose RPC call the running code serves: inside an
    exposed method (sync or async, in its worker thread too, and what it calls), else None.

    python-socketio hands each handler the caller's sid; here a method that needs to know
    who asks (to answer it on a channel of its own, to log it) reads this."""
    return CALLER.get()


# What a method's error sends its caller at most (its frame is bounded by max_frame_bytes too).
FAIL_MESSAGE_MAX_BYTES: Final = 16 * 1024
LOGGED_MESSAGE_MAX_BYTES: Final = 200  # of a method's exception, in the provider's INFO line
FAIL_TRACEBACK_MAX_BYTES: Final = 64 * 1024
TRACEBACK_PART_MAX_BYTES: Final = 2048  # a frame's lines, or the exception's own line
GROUP_LEAVES_SAID: Final = 3  # a method's exception group: its first few, named in the message

_KINDS: Final[dict[str, inspect._ParameterKind]] = {
    "positional_only": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword_only": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


def no_such_method(provider: str | None, method: str, names: Iterable[str]) -> str:
    """What a call of a method ``provider`` does not expose is told: the methods it has."""
    return f"{provider!r} exposes no method {method!r} (it has: {_listed(names)})"


def _listed(names: Iterable[str]) -> str:
    """``names`` sorted, at most MAX_LISTED_METHODS of them, for a message."""
    ordered = sorted(names)
    listed = ", ".join(ordered[:MAX_LISTED_METHODS]) or "none"
    if len(ordered) > MAX_LISTED_METHODS:
        listed += f" and {len(ordered) - MAX_LISTED_METHODS} more"
    return listed


# -- descriptions --------------------------------------------------------------------------------
class _Text:
    """Annotation or default text from a remote description: shown as it is, never evaluated."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):  # `from __future__ import annotations`
        return annotation
    return inspect.formatannotation(annotation)


def describe(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """The wire description of one exposed method (docs/protocol.md section 6)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: accept anything
        signature = inspect.Signature(
            [
                inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
            ]
        )
    params = [
        {
            "name": p.name,
            "kind": p.kind.name.lower(),
            "default": None if p.default is p.empty else _short_repr(p.default),
            "annotation": _annotation_text(p.annotation),
        }
        for p in signature.parameters.values()
    ]
    return {
        "name": name,
        "params": params,
        "returns": _annotation_text(signature.return_annotation),
        "doc": inspect.getdoc(fn),
        "async": _is_async(fn) or inspect.isasyncgenfunction(fn),
        "stream": is_stream(fn),
    }


def check_fits(data: bytes, max_frame_bytes: int, what: str, advice: str) -> None:
    """Raise FrameTooLarge when ``data`` (``what`` encodes to it) leaves no room for its call's
    envelope in a frame: the limit named is the user's own setting, ``max_frame_bytes``, so
    that a figure it never set (4096 less the envelope) does not look like a wrong one."""
    limit = max_frame_bytes - CALL_OVERHEAD_BYTES
    if len(data) > limit:
        raise FrameTooLarge(
            f"{what} {len(data)} bytes, over the {limit} that fit a call (the server's "
            f"max_frame_bytes, {max_frame_bytes}, less {CALL_OVERHEAD_BYTES} for the call's "
            f"envelope); {advice}"
        )


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    )


def signature_of(description: dict[str, Any]) -> inspect.Signature:
    """Rebuild a signature from a description, for checking arguments and for ``help()``.

    Raises:
        ValueError: the description is malformed.
    """
    params = []
    for p in description.get("params", ()):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise ValueError("every parameter needs a name")
        if not p["name"].isidentifier():  # inspect would fail in odd ways (IndexError on "")
            raise ValueError(f"parameter name {p['name']!r} is not an identifier")
        kind = _KINDS.get(p.get("kind"))  # type: ignore[arg-type]
        if kind is None:
            raise ValueError(f"unknown parameter kind {p.get('kind')!r}")
        default, annotation = p.get("default"), p.get("annotation")
        params.append(
            inspect.Parameter(
                p["name"],
                kind,
                default=inspect.Parameter.empty if default is None else _Text(str(default)),
                annotation=inspect.Parameter.empty if annotation is None else _Text(annotation),
            )
        )
    returns = description.get("returns")
    return inspect.Signature(
        params,
        return_annotation=inspect.Signature.empty if returns is None else _Text(str(returns)),
    )


def _encode(value: Any) -> bytes:
    return b"".join(encode_payload(value, copy=False))


def encode_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    return _encode([list(args), kwargs])


def decode_args(
    data: bytes, limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS
) -> tuple[list[Any], dict[str, Any]]:
    value = decode_payload(data, limits=limits)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], list)
        or not isinstance(value[1], dict)
        or not all(isinstance(k, str) for k in value[1])
    ):
        raise ProtocolError("arguments must be [list, map with text keys]")
    return value[0], value[1]


# -- provider side -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Exposed:
    fn: Callable[..., Any]
    description: dict[str, Any]
    is_async: bool
    turn: Turn | None  # set: a sync method that runs in a worker thread, in its object's turn
    stream: bool = False  # a generator: its values are streamed (``invoke`` with a window)
    owner: object = None  # the object exposed (expose: another's method of the same name)

    async def run(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.is_async:
            value = self.fn(*args, **kwargs)
            # (a decorator may have made a sync function of an async one after all)
            return await value if inspect.isawaitable(value) else value
        if self.turn is not None:
            # Abandoned when cancelled (its caller gave up, the client closes, Ctrl-C): the
            # method runs on to its end in its thread, which nothing can interrupt, but
            # nobody waits for it (a closing provider waited, seconds after Ctrl-C). Its turn
            # stays taken until it ends: the object's next call still waits for it.
            value = await self.turn.run(partial(_boxed_awaitable, self.fn, args, kwargs))
            if type(value) is _Boxed:
                # A sync wrapper (a plain decorator) around an async method: the coroutine
                # it made runs here, in trio, out of the object's turn.
                return await value.awaitable
            return value
        value = self.fn(*args, **kwargs)
        if inspect.isawaitable(value):  # e.g. a partial or a decorator around an async method
            value = await value
        return value


@dataclass(frozen=True, slots=True)
class _Boxed:
    """An awaitable a method returned in a worker thread, which trio refuses to hand back
    as it is (it takes a coroutine returned there for a mistake)."""

    awaitable: Awaitable[Any]


def _boxed_awaitable(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    return _Boxed(value) if inspect.isawaitable(value) else value


def _nothing() -> None:
    """What a turn taken only to know that it is free runs (_release_when_free)."""


def _check_service_name(name: object) -> None:
    if not isinstance(name, str):
        # (expose("motor", obj), the arguments swapped, raised AttributeError: 'int'
        # object has no attribute 'split' from here, or TypeError for bytes: a lab pass)
        raise InvalidArgument(
            f"expose's name must be a str (or None), not {type(name).__name__} {name!r:.60}: "
            "expose(obj, name='motor')"
        )
    parts = name.split(".")
    if not name or len(name) > MAX_METHOD_NAME // 2 or not all(p.isidentifier() for p in parts):
        raise InvalidArgument(
            f"service name {name!r}: use identifiers joined by dots, e.g. 'motor' or 'stage.x'"
        )


def _check_method_name(method: str, attr: str, name: str | None) -> None:
    """Refuse, before anything is exposed, a method name the server refuses: it closes the
    connection over an expose it takes for malformed, and the client sent the same expose
    again on every reconnect, forever, its methods never reachable."""
    if len(method) > MAX_METHOD_NAME:
        shorter = " or expose it under a shorter name=" if name else ""
        raise InvalidArgument(
            f"method name {brief(method)} has {len(method)} characters, over the server's "
            f"limit of {MAX_METHOD_NAME}: rename {brief(attr)}{shorter}"
        )
    try:
        method.encode()
    except UnicodeEncodeError:  # a lone surrogate (setattr with any text): no wire form
        raise InvalidArgument(
            f"method name {brief(method)} is not valid text (a lone surrogate): rename it"
        ) from None


@dataclass(frozen=True, slots=True)
class _Invocation:
    """One call of an exposed method running here."""

    scope: trio.CancelScope  # cancelled when the caller cancels, or the connection is lost
    flow: Outflow | None  # a streaming call's credit; None for a call with one result
    owner: object = None  # the exposed object whose method runs (unexpose: its turn stays)


class RpcEndpoint:
    """The RPC half of a :class:`Client`: its exposed methods and the calls it makes."""

    def __init__(self, client: ClientPort) -> None:
        self._client = client
        self._methods: dict[str, _Exposed] = {}
        # The invocations of this connection, by the server's call id. A new table on every
        # connection (reexpose): a restarted server numbers its calls from 1 again, and an
        # invocation of the lost connection still finishing must not answer (or be aborted
        # by) the new connection's call of the same number.
        self._running: dict[int, _Invocation] = {}
        # Each exposed object's one-at-a-time turn (expose), by identity (equal objects
        # are distinct instruments; unhashable ones are objects all the same), with the
        # object itself, which its exposed methods hold anyway: its id stays its own. Per
        # client, as its limiter belongs to one trio run (a SyncClient's thread).
        self._turns: dict[int, tuple[object, Turn]] = {}
        # The objects (by id) none of whose methods is exposed any more, whose turn is let go
        # once nothing of theirs runs (unexpose): exposed again meanwhile, an object keeps
        # its turn, and a call still running in its thread keeps the new ones out.
        self._retiring: set[int] = set()
        # Of those, the ones whose turn a task waits for (_release_when_free).
        self._awaited: set[int] = set()
        self._streams: dict[int, Inbox] = {}  # streams this client reads, by request id
        client.handle(Invoke, self._on_invoke)
        client.handle(Abort, self._on_abort)
        client.handle(Demand, self._on_demand)
        client.handle(Item, self._on_item)
        client.handle(Introspect, self._on_introspect)
        client.handle(RpcErrorReply, self._on_rpc_error)

    @property
    def running(self) -> int:
        """Invocations of this client's methods that are running now."""
        return len(self._running)

    def expose(self, obj: object, name: str | None, *, thread: bool) -> list[str]:
        if self._client.closed:  # (a reconnecting client exposes on its next connection)
            raise ConnectionClosed("the client is closed: nothing can be exposed through it")
        if name is not None:
            _check_service_name(name)
        prefix = f"{name}." if name else ""
        found: dict[str, _Exposed] = {}
        for attr in dir(obj):
            if not attr.startswith(PREFIX) or len(attr) == len(PREFIX):
                continue
            fn = getattr(obj, attr)
            if not callable(fn):
                continue
            if isinstance(obj, type) and inspect.isfunction(inspect.getattr_static(obj, attr)):
                # A method of the class itself, not of an instance: every call of it would
                # fail on its missing `self`, long after this returned.
                raise InvalidArgument(
                    f"{obj.__name__} is a class: expose an instance of it, e.g. "
                    f"expose({obj.__name__}()) ({attr} needs one)"
                )
            method = prefix + attr[len(PREFIX) :]
            _check_method_name(method, attr, name)
            is_async = _is_async(fn) or inspect.isasyncgenfunction(fn)
            # Its turn (thread=True) is set once every check below has passed.
            found[method] = _Exposed(fn, describe(method, fn), is_async, None, is_stream(fn), obj)
        if not found:
            raise InvalidArgument(
                f"{type(obj).__name__} has no {PREFIX}* methods: only methods whose names start "
                f"with {PREFIX!r} are exposed"
            )
        for method in found.keys() & self._methods.keys():
            held = self._methods[method].owner
            if held is not obj:  # the same object again: its methods, as they are now
                # A second object's method of the same name silently took the first's calls.
                raise InvalidArgument(
                    f"a method {method!r} is exposed already, by a {type(held).__name__}: "
                    f"expose this {type(obj).__name__} under a name of its own (expose(obj, "
                    f"name='...') makes its methods 'name.{method}')"
                )
        names = sorted(self._methods.keys() | found.keys())
        if len(names) > MAX_METHODS:
            raise LimitExceeded(f"a client may expose at most {MAX_METHODS} methods")
        # The server closes a connection whose expose is over its frame limit, and the client
        # would send it again on each reconnect: refused here, before anything is exposed.
        size = len(encode_message(Expose(methods=names)))
        if size > self._client.limits.max_frame_bytes:
            raise LimitExceeded(
                f"the names of the {len(names)} methods exposed take {size} bytes, over the "
                f"server's max_frame_bytes of {self._client.limits.max_frame_bytes}: expose "
                "fewer methods, or shorter names"
            )
        for method in sorted(found):
            if method.rpartition(".")[2] in _PROXY_OWN:
                # A caller's proxy.stream(3) ran the proxy's own stream("3"...) and failed
                # with a TypeError about str and int (an RPC persona): said where it is made.
                how = "stream" if found[method].stream else "call"
                log.warning(
                    "exposed %r: a caller's proxy has an attribute of that name of its own, "
                    "so it calls this one as proxy.%s(%r, ...)",
                    method,
                    how,
                    method.rpartition(".")[2],
                )
        # One limiter for all of the object's methods: its sync methods share its state (a
        # serial port, a driver), so only one of them runs at a time, whichever it is; a
        # streaming method takes its turn for each value it makes. The same limiter whenever
        # the object is exposed (under a second name, say). Taken only now that nothing can
        # refuse the expose: a refused object's turn held it for the client's life, and
        # unexpose could not let go of what was never exposed.
        one_at_a_time = self._turn_of(obj)
        if thread:
            for method, exposed in found.items():
                if not exposed.is_async:
                    found[method] = replace(exposed, turn=one_at_a_time)
        self._methods.update(found)
        self._retiring.discard(id(obj))
        # Exposed while reconnecting: the reconnection exposes them all (reexpose).
        with contextlib.suppress(ConnectionClosed):
            self._client.send_control(Expose(methods=names))
        return sorted(found)

    def unexpose(self, target: object) -> list[str]:
        """Withdraw methods (see Client.unexpose); the names withdrawn, sorted."""
        if isinstance(target, str):
            gone = self._named(target)
            what = f"no method and no name= {brief(target)} is exposed"
        else:
            gone = sorted(m for m, e in self._methods.items() if e.owner is target)
            what = f"this {type(target).__name__} is not exposed"
        if not gone:
            raise InvalidArgument(
                f"{what}: unexpose takes an exposed object, a method's name or the name= it "
                f"was exposed under (exposed now: {_listed(self._methods)})"
            )
        owners = {id(self._methods[m].owner) for m in gone}
        # A call of them from now on is refused as one of a method never exposed (_on_invoke).
        for method in gone:
            del self._methods[method]
        self._retiring |= owners - {id(e.owner) for e in self._methods.values()}
        self._release_turns()
        # The full list replaces the server's (docs/protocol.md section 6); while reconnecting,
        # the reconnection sends what is left (reexpose).
        with contextlib.suppress(ConnectionClosed):
            self._client.send_control(Expose(methods=sorted(self._methods)))
        return gone

    def _named(self, target: str) -> list[str]:
        """The methods a name withdraws, as callers call them: a method's full name, or
        the name= of an expose (the methods right under it)."""
        if not target:
            # Every method exposed without a name= is "right under" "": one typo (an empty
            # variable) withdrew them all.
            raise InvalidArgument(
                "unexpose('') names nothing: pass the exposed object, a method's full name "
                f"('read', 'stage.move') or the name= it was exposed under ('stage') (exposed "
                f"now: {_listed(self._methods)})"
            )
        method = [target] if target in self._methods else []
        # (an object's methods have no dot in their own names: only a dotted name is under one)
        under = sorted(m for m in self._methods if "." in m and m.rpartition(".")[0] == target)
        if method and under:
            # "stage.x": Stage's rpc_x exposed under "stage", and an Inner exposed under
            # "stage.x": both went, where the one meant was one of them.
            owner = type(self._methods[target].owner).__name__
            owners = ", ".join(sorted({type(self._methods[m].owner).__name__ for m in under}))
            raise InvalidArgument(
                f"{brief(target)} names both a method (of {owner}) and the name= methods of "
                f"{owners} were exposed under ({_listed(under)}): pass the object to withdraw "
                "instead, unexpose(obj)"
            )
        return method or under

    def _release_turns(self) -> None:
        """Let go of the turns (and objects) of the unexposed objects nothing of runs any
        more: not a call in their worker thread (one given up on runs on, holding its turn),
        nor a stream between two values. A running invocation calls this again as it ends;
        a turn still taken with none running (a call given up on, its invocation over, runs
        on in its thread; or a generator closes in one) is waited for in a task of its own,
        which calls this again once it is free."""
        running = {id(i.owner) for i in self._running.values()}
        for key in list(self._retiring):
            if key in running:
                continue
            turn = self._turns[key][1]
            if not turn.taken:
                del self._turns[key]
                self._retiring.discard(key)
            # (spawn: False on a closed client, which has nothing to wait in, nor for)
            elif key not in self._awaited and self._client.spawn(
                self._release_when_free, key, turn, name="rpc unexposed object's last call"
            ):
                self._awaited.add(key)

    async def _release_when_free(self, key: int, turn: Turn) -> None:
        """Take ``turn`` once, doing nothing, then let go of what is free: it has its turn
        only once the threads that held it have ended (the limiter comes back to trio as a
        thread ends; a generator closing in a thread of its own holds only the lock)."""
        try:
            await turn.run(_nothing)
        finally:
            self._awaited.discard(key)
        self._release_turns()

    def _turn_of(self, obj: object) -> Turn:
        held = self._turns.get(id(obj))
        if held is None:
            held = self._turns[id(obj)] = (obj, Turn())
        return held[1]

    def connection_lost(self) -> None:
        """The connection is gone (the client reconnects): its invocations have nobody to
        answer. The server failed their calls for their callers (RPC is at most once), and
        streams wait for credit that will never come. They are cancelled at once, before
        the next connection can carry anything, and whatever they still return is dropped
        (a worker thread is not cancelled)."""
        lost, self._running = self._running, {}
        for invocation in lost.values():
            invocation.scope.cancel()

    def reexpose(self) -> None:
        """After a reconnect: expose every method again, under the same names."""
        if self._methods:
            self._client.send_control(Expose(methods=sorted(self._methods)))

    def _fail_room(self) -> int:
        return self._client.limits.max_frame_bytes - CALL_OVERHEAD_BYTES

    def _send(self, message: ControlMessage) -> None:
        # A closed connection has nobody to answer: the server failed the call for its caller.
        with contextlib.suppress(ConnectionClosed):
            self._client.send_control(message)

    def _on_introspect(self, msg: Introspect) -> None:
        descriptions = [e.description for e in self._methods.values()]
        room = self._client.limits.max_frame_bytes - DESCRIBE_OVERHEAD_BYTES
        self._send(_methods_within(msg.call, descriptions, room))

    def _on_invoke(self, msg: Invoke) -> None:
        exposed = self._methods.get(msg.method)
        scope = trio.CancelScope()
        if exposed is not None and exposed.stream != (msg.window is not None):
            self._send(
                Refuse(
                    call=msg.call,
                    message=(
                        f"{msg.method} streams its values: iterate it (async for) instead"
                        if exposed.stream
                        else f"{msg.method} returns one result: await it instead of iterating"
                    ),
                )
            )
            return
        if exposed is None:
            message = no_such_method(self._client.name, msg.method, self._methods)
            self._send(Refuse(call=msg.call, message=message))
            return
        # The credit is there before the task starts: the server sends the caller's first
        # ``demand`` right behind the ``invoke``, and it must not be lost meanwhile.
        flow = None if msg.window is None else Outflow(msg.window)
        invocation = _Invocation(scope, flow, exposed.owner)
        running = self._running
        if not self._client.spawn(
            self._invoke, msg, exposed, invocation, running, name=f"rpc {msg.method}"
        ):
            message = f"{self._client.name!r} is closing: {msg.method!r} was not run"
            self._send(Refuse(call=msg.call, message=message))
            return
        running[msg.call] = invocation

    def _on_abort(self, msg: Abort) -> None:
        invocation = self._running.get(msg.call)
        if invocation is not None:
            invocation.scope.cancel()

    def _on_demand(self, msg: Demand) -> None:
        invocation = self._running.get(msg.call)
        if invocation is not None and invocation.flow is not None:
            invocation.flow.add(msg.n)  # else ended while the credit was on its way

    async def _invoke(
        self,
        msg: Invoke,
        exposed: _Exposed,
        invocation: _Invocation,
        running: dict[int, _Invocation],
    ) -> None:
        answer: ControlMessage | None = None
        scope = invocation.scope
        CALLER.set(msg.caller)  # this task's own context: only its method sees it
        try:
            with scope:
                try:
                    args, kwargs = decode_args(msg.args, self._client.payload_limits)
                except ProtocolError as exc:
                    answer = Refuse(call=msg.call, message=f"malformed arguments: {exc}")
                else:
                    if invocation.flow is None:
                        answer = await self._run(msg, exposed, args, kwargs)
                    else:
                        answer = await self._stream(msg, exposed, args, kwargs, invocation.flow)
        finally:
            if running.get(msg.call) is invocation:
                del running[msg.call]
            if self._retiring:  # its object unexposed meanwhile: its turn may go now
                self._release_turns()
        # Only on the connection that made the call: a worker thread is not cancelled, and
        # its result would otherwise answer another call of that number after a reconnect.
        if answer is not None and not scope.cancel_called and running is self._running:
            self._send(answer)

    async def _run(
        self, msg: Invoke, exposed: _Exposed, args: list[Any], kwargs: dict[str, Any]
    ) -> ControlMessage:
        try:
            value = await exposed.run(args, kwargs)
            data = _encode(value)
            check_fits(
                data,
                self._client.limits.max_frame_bytes,
                f"the result of {msg.method} encodes to",
                "stream large data through a channel",
            )
        except RaisedInWorker as carried:
            return self._fail_exit(msg, carried.original)
        except Exception as exc:
            _log_raised("", msg, exc)
            return _fail(msg.call, exc, self._fail_room())
        except SystemExit as exc:
            # sys.exit() in a method: the caller's error, not the end of the provider's
            # client (it ended that client's thread, and the process went on without it).
            return self._fail_exit(msg, exc)
        return Result(call=msg.call, value=data)

    def _fail_exit(self, msg: Invoke, exc: BaseException) -> Fail:
        """A method's SystemExit, or the KeyboardInterrupt it raised in its worker thread:
        said here (the provider's script would not hear of it otherwise), sent to the
        caller as its error."""
        log.warning(
            "rpc %s raised %s: sent to the caller as an error", msg.method, type(exc).__name__
        )
        return _fail(msg.call, exc, self._fail_room())

    async def _stream(
        self,
        msg: Invoke,
        exposed: _Exposed,
        args: list[Any],
        kwargs: dict[str, Any],
        flow: Outflow,
    ) -> ControlMessage | None:
        """Run a generator for a caller: one ``yield`` per unit of credit, then ``end``."""
        max_frame_bytes = self._client.limits.max_frame_bytes
        try:
            async with open_generator(exposed.fn, args, kwargs, exposed.turn) as step:
                while True:
                    # Credit first: the generator does not run ahead of the caller.
                    await flow.take()
                    value = await step()
                    if is_done(value):
                        return End(call=msg.call)
                    data = _encode(value)
                    check_fits(
                        data,
                        max_frame_bytes,
                        f"a value of {msg.method} encodes to",
                        "yield smaller pieces",
                    )
                    self._client.send_control(Yield(call=msg.call, value=data))
        except ConnectionClosed:
            return None  # the server told the caller; the generator is closed already
        except RaisedInWorker as carried:  # as in _run
            return self._fail_exit(msg, carried.original)
        except Exception as exc:
            _log_raised("stream ", msg, exc)
            return _fail(msg.call, exc, self._fail_room())
        except SystemExit as exc:  # as in _run
            return self._fail_exit(msg, exc)

    # -- caller side -----------------------------------------------------------------------------
    def _on_item(self, msg: Item) -> None:
        stream = self._streams.get(msg.id)
        if stream is not None:  # else left early: the cancel crossed this value
            stream.deliver(msg.value)

    def _on_rpc_error(self, msg: RpcErrorReply) -> None:
        request = self._client.pending(msg.id)
        if request is not None:
            error = RemoteError(msg.type, msg.message, msg.traceback)
            if msg.traceback:
                error.add_note(f"remote traceback:\n{msg.traceback.rstrip()}")
            request.fail(error)

    async def ask(
        self,
        build: Callable[[int], ControlMessage],
        timeout_s: float | None,
        what: str,
        *,
        wait_reconnect: bool = True,
    ) -> Any:
        """Send a call or describe and wait for its answer; cancel it if we stop waiting.
        ``wait_reconnect``: ask again while the provider reconnects (see Client.rpc).

        Raises:
            RpcTimeout: no answer within ``timeout_s`` seconds (the call is cancelled).
        """
        client = self._client
        request = None
        delay = PROVIDER_AWAY_RETRY_FIRST_S
        # Waiting for a reconnect counts against the call's own timeout.
        with trio.move_on_after(math.inf if timeout_s is None else timeout_s) as in_time:
            while True:
                await client.wait_usable()
                request = client.start_request(build)
                try:
                    await request.done.wait()
                finally:
                    client.forget(request)
                    if not request.done.is_set() and not client.closed:
                        # Cancelled or timed out: the provider should stop working for nobody.
                        with contextlib.suppress(ConnectionClosed):
                            client.send_control(Cancel(id=request.id))
                error = request.error
                if type(error) is not RpcError or not provider_away(str(error)):
                    break
                if not wait_reconnect:
                    # Not waited for (a crashed worker among several: the caller tries
                    # another): raised now, saying what a failover needs to know.
                    request.error = RpcError(
                        f"{error}; {what} never reached it (calling again, or another "
                        "provider, is safe)"
                    )
                    break
                # The provider is reconnecting (its session is kept for it): the call never
                # reached it, so asking again is safe; out of time, its error is raised.
                await trio.sleep(delay)
                delay = min(delay * 2, PROVIDER_AWAY_RETRY_MAX_S)
        if request is None:
            unsent = RpcTimeout(
                f"{what} was not sent within {timeout_s:g} s: this client was reconnecting to "
                "the server all along; try again once it is back (client.wait_state('open'))"
            )
            unsent.sent = False
            raise unsent
        if not request.done.is_set():
            # Short, and no advice that fits one kind of provider only: the caller cannot
            # tell a slow method from a blocked client (README, "RPC between clients").
            raise RpcTimeout(
                f"no answer to {what} within {timeout_s:g} s: the provider is slow or stuck, "
                "or still runs an earlier call to the same object (a thread=True or SyncClient "
                "provider runs them one at a time); give a long call a longer timeout="
            )
        reply = request
        if reply.error is not None:
            away = type(reply.error) is RpcError and provider_away(str(reply.error))
            if in_time.cancelled_caught and away:
                # Out of time while the provider was away: no answer in time, as a timeout
                # (an `except TimeoutError` missed the plain RpcError: an RPC user); the
                # call never reached it.
                late = RpcTimeout(
                    f"no answer to {what} within {timeout_s:g} s: {reply.error}; the call never "
                    "reached it (calling again is safe)"
                )
                late.sent = False
                raise late from None
            raise fresh(reply.error)
        return reply.result

    async def call(
        self,
        provider: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float | None,
        wait_reconnect: bool = True,
    ) -> Any:
        data = encode_args(args, kwargs)
        check_fits(
            data,
            self._client.limits.max_frame_bytes,
            f"the arguments of {method} encode to",
            "stream large data through a channel",
        )
        result = await self.ask(
            lambda ident: Call(id=ident, provider=provider, method=method, args=data),
            timeout_s,
            f"{provider}.{method}()",
            wait_reconnect=wait_reconnect,
        )
        if type(result) is not bytes:
            raise ProtocolError(f"the result of {method} is not a payload")
        return decode_payload(result, limits=self._client.payload_limits)

    async def call_once(
        self,
        provider: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float | None,
        wait_reconnect: bool,
    ) -> Any:
        """Client.call: a call without a proxy, its names checked as rpc() checks them."""
        _checked_wait_reconnect(wait_reconnect)
        _check_provider_name(provider)
        if type(method) is not str:
            raise InvalidArgument(f"method must be a str, not {type(method).__name__}")
        return await self.call(provider, method, args, kwargs, timeout_s, wait_reconnect)

    def stream(
        self,
        provider: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        window: int,
    ) -> RemoteStream:
        check_window(window)
        data = encode_args(args, kwargs)
        check_fits(
            data,
            self._client.limits.max_frame_bytes,
            f"the arguments of {method} encode to",
            "stream large data through a channel",
        )
        return RemoteStream(
            self._client,
            self._streams,
            lambda ident: Call(
                id=ident, provider=provider, method=method, args=data, window=window
            ),
            window,
            f"{provider}.{method}()",
        )

    async def proxy(
        self,
        provider: str,
        timeout_s: float | None,
        wait_provider: bool = False,
        wait_reconnect: bool = True,
    ) -> RpcProxy:
        timeout_s = check_timeout(timeout_s)
        _checked_wait_reconnect(wait_reconnect)
        _check_provider_name(provider, wait_provider)
        # wait_provider: a caller started together with its provider (one boot script) asks
        # again while the provider is not connected, or has exposed nothing yet, as
        # subscribe(wait_channel=True) waits for a channel; any other error is final.
        delay = PROVIDER_POLL_FIRST_S
        warn_at: float | None = trio.current_time() + PROVIDER_WAIT_WARN_S
        while True:
            try:
                descriptions = await self.ask(
                    lambda ident: Describe(id=ident, provider=provider),
                    timeout_s,
                    f"rpc({provider!r})",
                    wait_reconnect=wait_reconnect,
                )
            except RpcError as exc:
                if not wait_provider or type(exc) is not RpcError:
                    raise
                if not provider_not_there(str(exc)):
                    raise
                if not wait_reconnect and provider_away(str(exc)):
                    raise  # away, and not waited for: wait_reconnect=False says so
                if warn_at is not None and trio.current_time() >= warn_at:
                    warn_at = None  # once
                    log.warning("rpc(%r) is still waiting for its provider: %s", provider, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, PROVIDER_POLL_MAX_S)
                continue
            proxy = RpcProxy._build(self, provider, descriptions, timeout_s)
            proxy.wait_reconnect = wait_reconnect
            return proxy


def _checked_wait_reconnect(wait: object) -> bool:
    """``wait_reconnect`` (rpc, call, a proxy's attribute), refused if not a bool."""
    if type(wait) is not bool:
        raise InvalidArgument(f"wait_reconnect must be True or False, not {wait!r:.80}")
    return wait


def _check_provider_name(provider: str, wait_provider: bool = False) -> None:
    """A name no client can have is refused here: rpc("") was told "no client named '' is
    connected", as if one might be, and wait_provider=True would wait for it for good."""
    check_fields(Describe, {"provider": provider})  # its type first (rpc(5))
    try:
        check_client_name(provider)
    except InvalidArgument as exc:
        waits = " (wait_provider=True would wait for good)" if wait_provider else ""
        raise InvalidArgument(
            f"no client can be named {brief(provider)}, so none can answer{waits}: {exc}"
        ) from None


def _log_raised(kind: str, msg: Invoke, exc: Exception) -> None:
    """A method's exception, which its caller gets, in the provider's log too: a line at
    INFO (at DEBUG only, a service's operator saw nothing of its failing calls: a
    python-socketio port, whose engine logs them), its traceback at DEBUG (any caller could
    fill the log at INFO with tracebacks by calling with bad arguments). Not WARNING:
    raising is how a method says no."""
    log.info(
        "rpc %s%s from %s raised %s: %s (sent to the caller)",
        kind,
        msg.method,
        msg.caller,
        type(exc).__name__,
        _clip(_safe_str(exc), LOGGED_MESSAGE_MAX_BYTES),
    )
    log.debug("rpc %s%s from %s: the traceback", kind, msg.method, msg.caller, exc_info=exc)


def _fail(call: int, exc: BaseException, room: int) -> Fail:
    """What the caller learns of ``exc``, within ``room`` bytes: a method that puts its
    argument in its error message (``raise ValueError(f"bad: {data!r}")``) made a frame over
    the server's limit, and the server disconnected the provider, failing every call it ran.
    The message's start and the traceback's end (where it was raised) say what went wrong."""
    kind = _clip(type(exc).__name__, 200)
    budget = max(room - len(kind) - 64, 0)  # 64: the map, its keys and the call id
    message = _clip(_message_of(exc), min(FAIL_MESSAGE_MAX_BYTES, budget // 2))
    left = budget - len(message.encode())
    # Each part clipped first: the last one repeats the message, which would fill the rest.
    formatted = "".join(_clip(part, TRACEBACK_PART_MAX_BYTES) for part in _formatted(exc))
    return Fail(
        call=call,
        type=kind,
        message=message,
        traceback=_clip(formatted, min(FAIL_TRACEBACK_MAX_BYTES, left), keep="end"),
    )


def _formatted(exc: BaseException) -> list[str]:
    """``exc``'s traceback from the method's own frame on: the frames above it (this module,
    the thread hand-off of ``thread=True``, trio and outcome: eight of them) say nothing to
    the caller. An error raised before the method ran (by the call's machinery) keeps all."""
    first = exc.__traceback__
    while first is not None and _is_machinery(first.tb_frame.f_code.co_filename):
        first = first.tb_next
    try:
        return list(
            traceback.TracebackException(type(exc), exc, first or exc.__traceback__).format()
        )
    except Exception as error:  # the user's exception, whatever it does
        # traceback copes with a failing __str__, but not with everything (__notes__ that
        # raise when read or iterated): the provider answers anyway, its client unharmed.
        return [
            f"<traceback could not be formatted: {type(error).__name__}>\n",
            f"{type(exc).__qualname__}: {_safe_str(exc)}\n",
        ]


def _message_of(exc: BaseException) -> str:
    """The message a caller reads: a group's names what it holds, or a method whose nursery
    raised came back as "Exceptions from Trio nursery (1 sub-exception)", the cause only in
    the traceback (an outside review)."""
    if not isinstance(exc, BaseExceptionGroup):
        return _safe_str(exc)
    leaves = exception_leaves(exc)
    said = "; ".join(
        f"{type(leaf).__name__}: {_safe_str(leaf)}" for leaf in leaves[:GROUP_LEAVES_SAID]
    )
    more = len(leaves) - GROUP_LEAVES_SAID
    return f"{_safe_str(exc)}: {said}" + (f"; and {more} more" if more > 0 else "")


def _safe_str(exc: BaseException) -> str:
    """``str(exc)``, or what traceback says when it fails: a method's exception whose
    ``__str__`` raised (an attribute it formats, never set) raised again where the provider
    answered its caller, and took down the provider's client."""
    try:
        text = str(exc)
        # A str subclass, with its own encode, stays the user's code: a plain str only.
        return text if type(text) is str else str.__str__(text)
    except Exception:  # the user's __str__, whatever it raises
        return "<exception str() failed>"


# The packages whose frames stand between a call's arrival and the exposed method.
_MACHINERY_DIRS: Final = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (sys.modules[__package__], trio, sys.modules.get("outcome"))  # trio's own
    if module is not None and module.__file__ is not None
)


def _is_machinery(filename: str) -> bool:
    return filename.startswith(_MACHINERY_DIRS)


def _clip(text: str, max_bytes: int, keep: Literal["start", "end"] = "start") -> str:
    """``text`` in at most ``max_bytes`` of UTF-8, cut where it says so (a character that a
    peer could not encode, a lone surrogate, becomes U+FFFD)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    note = f" [... {len(data) - max_bytes} bytes cut]"
    cut = max(max_bytes - len(note) - 1, 0)  # 1: the line end either way may add
    # "ignore": a character split at the cut goes whole.
    if keep == "start":  # (a traceback's part keeps its line end)
        return data[:cut].decode("utf-8", "ignore") + note + "\n" * text.endswith("\n")
    return note.lstrip() + "\n" + data[len(data) - cut :].decode("utf-8", "ignore")


# A description shortened to its name: any arguments, checked by the provider alone.
_ANY_ARGUMENTS: Final = [
    {"name": "args", "kind": "var_positional"},
    {"name": "kwargs", "kind": "var_keyword"},
]
# What the server's forwarded answer to a describe (a reply) adds to the provider's methods.
DESCRIBE_OVERHEAD_BYTES: Final = 64


# The CBOR items a `methods` answer may hold: the server refuses a client's message of more
# than CONTROL_MAX_ITEMS (and would close this provider's connection); 64 for the envelope.
_MAX_METHODS_ITEMS: Final = CONTROL_MAX_ITEMS - 64


def _items(value: Any) -> int:
    """The CBOR items ``value`` encodes to (a map's pairs count two each; what the server
    counts against CONTROL_MAX_ITEMS)."""
    if isinstance(value, dict):
        return 1 + sum(_items(k) + _items(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 1 + sum(_items(v) for v in value)
    return 1


def _methods_within(call: int, descriptions: list[dict[str, Any]], room: int) -> Methods:
    """The ``methods`` answer, shortened to fit ``room`` bytes (and the server's bound on a
    message's CBOR items, which would close the connection likewise): over ``max_frame_bytes`` the
    server would disconnect this provider, every call it runs failing with it (100 methods
    with long docstrings did). Docs go to their first lines, then away, then each method to
    its bare name; a list that still does not fit keeps the methods that do (the others can
    still be called by name, ``proxy.call(name, ...)``)."""
    stages: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
        lambda d: d,
        lambda d: {**d, "doc": _first_line(d["doc"])},
        lambda d: {**d, "doc": None},
        _bare,
    )
    shortened: list[dict[str, Any]] = []
    for shorten in stages:
        shortened = _within_items([shorten(d) for d in descriptions])
        answer = Methods(call=call, methods=shortened)
        if len(encode_message(answer)) <= room and _items(shortened) <= _MAX_METHODS_ITEMS:
            return answer
    empty = len(encode_message(Methods(call=call, methods=[])))
    size = empty + 8  # 8: the list's length grows by a few bytes with its count
    kept = []
    items = 0
    for description in shortened:
        size += len(encode_message(Methods(call=call, methods=[description]))) - empty
        items += _items(description)
        if size > room or items > _MAX_METHODS_ITEMS:
            break
        kept.append(description)
    log.warning(
        "describing %d exposed methods takes more than one message may hold (max_frame_bytes, "
        "or %d CBOR items): %d described",
        len(descriptions),
        CONTROL_MAX_ITEMS,
        len(kept),
    )
    return Methods(call=call, methods=kept)


def _bare(description: dict[str, Any]) -> dict[str, Any]:
    """A method's description by its name alone: any arguments, checked by the provider."""
    return {"name": description["name"], "params": _ANY_ARGUMENTS, "stream": description["stream"]}


def _within_items(descriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``descriptions`` within the server's item bound: in order, each whole while the
    bound leaves room for the rest by name alone, then by name alone. A bound met by
    stripping every method (a few hundred with many parameters) took every signature, and
    with it the local check of a call's arguments, for all of them (a review)."""
    room = _MAX_METHODS_ITEMS - 1 - sum(_items(_bare(d)) for d in descriptions)
    kept = []
    for description in descriptions:
        more = _items(description) - _items(_bare(description))
        if more <= room:
            kept.append(description)
            room -= more
        else:
            kept.append(_bare(description))
            room = -1  # the rest by name too: which ones keep theirs stays predictable
    return kept


def _first_line(doc: str | None) -> str | None:
    return None if doc is None else _clip(doc.partition("\n")[0], 200)


class _ProxysTimeout:
    """The default of ``call(timeout=...)``: the proxy's own timeout. A class, not a bare
    ``object()``, so that ``help()`` and signatures read ``timeout=<the proxy's timeout>``
    instead of an address."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the proxy's timeout>"


_DEFAULT: Final[Any] = _ProxysTimeout()


class RemoteMethod:
    """One method of a provider; calling it (and awaiting) makes the call.

    A streaming method (``stream`` is true: the provider's method is a generator) returns a
    :class:`RemoteStream` instead, to iterate: ``async for v in daq.samples(10)``; streams
    have no timeout of their own (use a cancel scope around the loop).

    Its ``__signature__`` and ``__doc__`` are the provider's, so ``help()`` and
    ``inspect.signature()`` show the remote method.
    """

    def __init__(self, proxy: RpcProxy, name: str, description: dict[str, Any]) -> None:
        self._proxy = proxy
        self.name = name
        self.__name__ = name.rsplit(".", 1)[-1]
        self.__qualname__ = name
        self.__doc__ = description.get("doc") if isinstance(description.get("doc"), str) else None
        self.__signature__ = signature_of(description)
        self.stream = description.get("stream") is True

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError, as a local call would, if the arguments do not fit."""
        problem = self.mismatch(args, kwargs)
        if problem is not None:
            where = f"{self._proxy.provider}.{self.name}()"
            raise TypeError(f"{where}: {problem}{self._as_described()}")

    def mismatch(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
        """Why the arguments do not fit the signature, as Python says it (None: they fit).
        Apart from ``check`` for a caller with advice of its own (the command line's)."""
        params = self.__signature__.parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            # A mistyped keyword first, as Python says it: bind() names the parameter it
            # then misses ("missing a required argument: 'hz'" for rate=3), not the typo.
            for key in kwargs:
                param = params.get(key)
                if param is None or param.kind is param.POSITIONAL_ONLY:
                    return f"got an unexpected keyword argument {key!r}"
        try:
            self.__signature__.bind(*args, **kwargs)
        except TypeError as exc:
            return str(exc)
        return None

    def _as_described(self) -> str:
        """Said with an argument mismatch: the proxy checks against the signature it was
        given when made, and a provider restarted since with another one (a redeploy) made
        a false "unexpected keyword argument" look like the caller's mistake."""
        provider = self._proxy.provider
        return (
            f" (its signature when this proxy was made: {self.__name__}{self.__signature__};"
            f" if {provider!r} changed it since, make a new proxy with rpc({provider!r}))"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The call, to await; for a streaming method, the :class:`RemoteStream` to iterate."""
        self.check(args, kwargs)
        proxy = self._proxy
        if self.stream:
            return proxy._endpoint.stream(proxy.provider, self.name, args, kwargs, DEFAULT_WINDOW)
        return proxy._endpoint.call(
            proxy.provider, self.name, args, kwargs, proxy.timeout, proxy.wait_reconnect
        )

    def __repr__(self) -> str:
        kind = "remote stream method" if self.stream else "remote method"
        return f"<{kind} {self._proxy.provider}.{self.name}{self.__signature__}>"


# The proxy's own attributes, which hide remote methods of those names (see RpcProxy).
_PROXY_OWN: Final = frozenset(
    {"call", "stream", "provider", "timeout", "methods", "wait_reconnect"}
)


class RpcProxy:
    """The methods a provider exposes, as awaitable methods: ``await daq.read(10)``.

    Sub-services (exposed with ``name=``) are attributes: ``await daq.motor.move(1.0)``.
    Attributes of the proxy itself (``call``, ``stream``, ``provider``, ``timeout``,
    ``methods``, ``wait_reconnect``) hide
    remote methods of the same name; call those through ``call("name", ...)``.
    """

    def __init__(
        self,
        endpoint: RpcEndpoint,
        provider: str,
        methods: dict[str, RemoteMethod],
        timeout: float | None,
        prefix: str = "",
    ) -> None:
        self._endpoint = endpoint
        self.provider = provider
        self.timeout = timeout
        self.methods = methods  # every method of the provider, by full name
        self._prefix = prefix
        self.wait_reconnect = True

    @property
    def wait_reconnect(self) -> bool:
        """Whether a call waits for a provider that is reconnecting (Client.rpc's); may be
        changed."""
        return self._wait_reconnect

    @wait_reconnect.setter
    def wait_reconnect(self, wait: bool) -> None:
        self._wait_reconnect = _checked_wait_reconnect(wait)

    @property
    def timeout(self) -> float | None:
        """Seconds a call waits for its answer (None: no limit); may be changed."""
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        # Checked here, not at each call: a bad one assigned later met no check at all.
        self._timeout = check_timeout(timeout)

    @classmethod
    def _build(
        cls, endpoint: RpcEndpoint, provider: str, descriptions: Any, timeout: float | None
    ) -> RpcProxy:
        if not isinstance(descriptions, list):
            raise ProtocolError(f"the description of {provider!r} is not a list")
        proxy = cls(endpoint, provider, {}, timeout)
        for description in descriptions:
            name = description.get("name") if isinstance(description, dict) else None
            if not isinstance(name, str):
                raise RpcError(f"{provider!r} described a method without a name")
            try:
                proxy.methods[name] = RemoteMethod(proxy, name, description)
            except (ValueError, TypeError) as exc:
                raise RpcError(
                    f"{provider!r} sent an invalid description of {name}: {exc}"
                ) from exc
        return proxy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends probe dunders: never remote
            raise AttributeError(name)
        full = self._prefix + name
        method = self.methods.get(full)
        if method is not None:
            return method
        if any(m.startswith(full + ".") for m in self.methods):
            below = RpcProxy(self._endpoint, self.provider, self.methods, self.timeout, full + ".")
            below.wait_reconnect = self.wait_reconnect
            return below
        # The methods as described when this proxy was made: a provider restarted since
        # with more (a redeploy) was said to expose "no method 'extra'", which was false.
        raise UnknownMethod(
            f"{no_such_method(self.provider, full, self.methods)}, as described when this "
            f"proxy was made; if it exposes it since, make a new proxy with "
            f"rpc({self.provider!r}), or send it unchecked with call({full!r}, ...)"
        )

    def __dir__(self) -> list[str]:
        level = {m[len(self._prefix) :].split(".", 1)[0] for m in self._names_below()}
        return sorted(level | _PROXY_OWN)

    def _names_below(self) -> list[str]:
        return [m for m in self.methods if m.startswith(self._prefix)]

    # A per-call `timeout` (not a cancel scope) is this method's public contract.
    async def call(
        self,
        method: str,
        /,
        *args: Any,
        timeout: float | None = _DEFAULT,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` (a full name, relative to this proxy) with a per-call ``timeout``.

        A method the description did not list is sent unchecked: the provider may have
        exposed it since, and it answers RpcError if not.

        Raises:
            TypeError: the arguments do not fit the method's signature (nothing sent).
            RemoteError: the method raised. RpcTimeout: no answer in time.
            RpcError: no such provider or method, or the provider left during the call.
        """
        if timeout is _DEFAULT:
            timeout = self.timeout
        timeout = check_timeout(timeout)
        full = self._prefix + method
        remote = self.methods.get(full)
        if remote is not None:
            remote.check(args, kwargs)
        if remote is not None and remote.stream:
            raise TypeError(f"{self.provider}.{full} streams its values: use stream({full!r})")
        return await self._endpoint.call(
            self.provider, full, args, kwargs, timeout, self.wait_reconnect
        )

    def stream(
        self, method: str, /, *args: Any, window: int = DEFAULT_WINDOW, **kwargs: Any
    ) -> RemoteStream:
        """Iterate streaming ``method`` (a full name, relative to this proxy) with ``window``
        values in flight: ``async for v in daq.stream("samples", 10, window=64)``.

        Raises:
            TypeError: the arguments do not fit, or the method returns one result.
            ValueError: a window outside 1-1024.
        """
        full = self._prefix + method
        remote = self.methods.get(full)
        if remote is not None:
            remote.check(args, kwargs)
            if not remote.stream:
                raise TypeError(f"{self.provider}.{full} returns one result: use call({full!r})")
        return self._endpoint.stream(self.provider, full, args, kwargs, window)

    def __repr__(self) -> str:
        where = f"{self.provider!r}" + (f" {self._prefix[:-1]}" if self._prefix else "")
        count = len(self._names_below())
        return f"<rpc proxy {where}: {count} method{'' if count == 1 else 's'}>"
