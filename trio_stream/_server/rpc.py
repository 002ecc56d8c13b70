"""RPC routing: calls from callers to providers and answers back, with no I/O of its own.

The router keeps one record per call in flight: the caller's session and request id on one
side, the provider's session and the server-chosen call id on the other. Everything it does is
synchronous bookkeeping plus ``send_control`` on the sessions involved, so a call costs the
server two small control frames and never blocks anything else.

The provider, not the server, is the authority on what it exposes: ``describe`` and ``call``
always go to the provider, which answers from its own table. A client's ``expose`` message and
another client's ``describe`` travel on different connections and may overtake each other;
asking the provider makes "expose, then call from elsewhere" work every time. The names the
server keeps (``Session.methods``) serve only the ``clients`` listing.

A forwarded message is not the message received: ``invoke`` carries the caller's name where
``call`` had the provider's, ``rpc_error`` has a longer op than ``fail``. A caller sending a
``call`` at exactly ``max_frame_bytes`` would otherwise make the server send the provider a
frame over the limit, and the *provider* would be disconnected. So every forwarded message
is encoded here, once (as sending it would anyway), and one over the limit is not sent: the
caller gets ``FrameTooLarge`` instead.

A streaming call stays open across many messages: each ``yield`` from the provider is
forwarded as ``item`` (size-checked like a result), ``end`` closes it with a null ``reply``.
The router counts the caller's credit per stream and refuses a ``yield`` beyond it as a
protocol error of the provider: the values queued for a caller that does not read are bounded
by its window, whatever the provider does.

What waits for a client that does not read counts toward its memory bound
(``max_buffered_bytes``, its subscriptions' buffers and control messages together; see
Session.over_memory_bound): only the count of calls in flight bounded it, and a caller
sending 400 calls of 1 MB to a provider that read nothing made the server hold 400 MB (an
operator). A call that would take its provider past the bound is refused with
``LimitExceeded`` (the provider is not reading); an answer that would take its caller past
it is dropped and the caller gets ``LimitExceeded`` in its place (the call ran); a stream's
value, the same, and the stream ends (its provider gets ``abort``). Small messages (errors,
aborts, demand) always go: the calls in flight bound them.
"""

from __future__ import annotations

import bisect
import difflib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .._exceptions import FrameTooLarge, InvalidArgument, LimitExceeded, ProtocolError, RpcError
from .._protocol.brief import brief
from .._protocol.frames import check_client_name
from .._protocol.framing import frame_prefix
from .._protocol.limits import MAX_FRAME_BYTES
from .._protocol.messages import ControlMessage, Error, Reply, encode_message
from .._protocol.rpc_messages import (
    MAX_METHOD_NAME,
    MAX_METHODS,
    MAX_STREAM_WINDOW,
    NO_METHODS_YET_END,
    PROVIDER_AWAY_MARK,
    PROVIDER_MISSING_START,
    Abort,
    Call,
    Cancel,
    Credit,
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
)

log = logging.getLogger(__name__)

#: Calls one client may have waiting for answers, and calls one provider may have running.
MAX_PENDING_CALLS: Final = 10_000
MAX_NAMED_PROVIDERS: Final = 8  # in the error for a call to nobody
# The providers a misspelt name is compared with, at most: ~23 us each (difflib), and 990
# of them made each call to a missing one cost 22 ms (an outside scale probe).
MAX_CLOSE_CANDIDATES: Final = 64

#: Why a call (or describe) was answered with an error, as /metrics counts them
#: (``trio_stream_rpc_errors_total{reason=...}``): the provider raised, the provider refused
#: it (no such method, no methods yet), no provider of that name, a limit (calls in flight,
#: a memory bound), a message over max_frame_bytes, the provider (or, with several nodes,
#: its node, or the messages between the nodes) gone mid-call, a request no provider could
#: take (a bad method or provider name, a bad window), or the cluster's Redis unreachable
#: (the call did not run).
ERROR_REASONS: Final = (
    "raised",
    "refused",
    "no_provider",
    "limit",
    "too_large",
    "disconnected",
    "invalid",
    "unavailable",
)


class Endpoint(Protocol):
    """What the router needs from a session.

    A session also has ``over_memory_bound(nbytes) -> (held, bound) | None`` (see
    over_bound); a stand-in for another node's caller has not: its node bounds that.
    """

    name: str
    methods: list[str]

    def send_control(self, message: ControlMessage) -> None: ...
    def send_control_frame(self, frame: bytes) -> None: ...


def over_bound(endpoint: Endpoint, nbytes: int) -> tuple[int, int] | None:
    """What the server holds for ``endpoint`` and its bound, if a message of ``nbytes`` more
    would take it over its memory bound (Session.over_memory_bound); None if it fits."""
    check = getattr(endpoint, "over_memory_bound", None)
    if check is None:
        return None
    over: tuple[int, int] | None = check(nbytes)
    return over


def _not_read(held: int, bound: int) -> str:
    return f"{held} bytes wait on the server for it to read, with max_buffered_bytes {bound}"


def answer_dropped(what: str, nbytes: int, over: tuple[int, int]) -> LimitExceeded:
    """The error a caller gets for an answer over its memory bound (``over``: over_bound)."""
    return LimitExceeded(
        f"the call ran, but {what} ({nbytes} bytes) was dropped: this client does not keep "
        f"up with what the server sends it ({_not_read(*over)}); read faster, or make fewer "
        "calls at once (the answers of the calls in flight, together, must fit)"
    )


def stream_value_dropped(provider: str, nbytes: int, over: tuple[int, int]) -> LimitExceeded:
    """The error a caller gets for a stream's value over its memory bound: the stream ends."""
    return LimitExceeded(
        f"the stream from {provider[:100]!r} was ended and its value of {nbytes} bytes "
        f"dropped: this client does not keep up with what the server sends it "
        f"({_not_read(*over)}); read faster, or give the stream a smaller window"
    )


@dataclass(eq=False, slots=True)
class _Pending:
    call: int  # the server's id, as the provider sees it
    caller: Endpoint
    caller_id: int  # the caller's request id
    provider: Endpoint
    describe: bool  # a describe (answered by `methods`) rather than a call
    stream: bool = False  # a streaming call: `yield`s, then `end`
    credit: int = 0  # streaming: values the provider may still send


class Router:
    """Pending calls between callers and providers, and the messages that move them along."""

    def __init__(
        self,
        lookup: Callable[[str], Endpoint | None],
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        remote: Callable[[Endpoint, ControlMessage], bool] | None = None,
        connected: Callable[[], Iterable[Endpoint]] = tuple,
        away: Callable[[str], float | None] = lambda name: None,
    ) -> None:
        self._lookup = lookup
        self._connected = connected  # for a caller's misspelt provider: the names there are
        # A provider whose connection was lost and whose session is kept for its return
        # (seconds of resume grace left, or None): a call meanwhile is told so, and the
        # caller's client asks again within its timeout (a worker's 1.5 s cut failed a
        # quarter of the calls at once with "no client named ...": a migrating team).
        self._away = away
        # Several nodes: a provider connected elsewhere is reached through the engine, which
        # answers the caller itself (see _engine/cluster_rpc.py).
        self._remote = remote
        self._max_frame_bytes = max_frame_bytes
        self._next_call = 1
        # For /metrics: calls and describes passed on to a provider connected here (a call
        # from another node's client too), and those answered with an error, by reason.
        self.calls_total = 0
        self.errors_total: dict[str, int] = dict.fromkeys(ERROR_REASONS, 0)
        self._calls: dict[int, _Pending] = {}
        self._by_caller: dict[Endpoint, dict[int, _Pending]] = {}
        self._by_provider: dict[Endpoint, dict[int, _Pending]] = {}

    def pending(self, session: Endpoint | None = None) -> int:
        """Calls in flight, in total or those that ``session`` made."""
        if session is None:
            return len(self._calls)
        return len(self._by_caller.get(session, ()))

    def handlers(self, session: Endpoint) -> dict[type[ControlMessage], Callable[[Any], None]]:
        """The session's handlers for the RPC messages a client may send."""
        return {
            Expose: lambda msg: self.expose(session, msg),
            Describe: lambda msg: self.describe(session, msg),
            Call: lambda msg: self.call(session, msg),
            Cancel: lambda msg: self.cancel(session, msg),
            Credit: lambda msg: self.credit(session, msg),
            Yield: lambda msg: self.yield_(session, msg),
            End: lambda msg: self.end(session, msg),
            Methods: lambda msg: self.methods(session, msg),
            Result: lambda msg: self.result(session, msg),
            Fail: lambda msg: self.fail(session, msg),
            Refuse: lambda msg: self.refuse(session, msg),
        }

    # -- caller side -------------------------------------------------------------------------
    def expose(self, session: Endpoint, msg: Expose) -> None:
        names = msg.methods
        if len(names) > MAX_METHODS or not all(
            type(n) is str and 0 < len(n) <= MAX_METHOD_NAME for n in names
        ):
            raise ProtocolError(
                f"expose: at most {MAX_METHODS} method names of 1-{MAX_METHOD_NAME} characters"
            )
        session.methods = sorted(set(names))

    def describe(self, caller: Endpoint, msg: Describe) -> None:
        if self._impossible_provider(caller, msg.id, msg.provider):
            return
        if (
            self._remote is not None
            and self._lookup(msg.provider) is None
            and self._remote(caller, msg)
        ):
            return
        pending = self._open(caller, msg.id, msg.provider, describe=True)
        if pending is not None:
            self.calls_total += 1
            pending.provider.send_control(Introspect(call=pending.call))

    def call(self, caller: Endpoint, msg: Call) -> None:
        if not 0 < len(msg.method) <= MAX_METHOD_NAME:
            self._error(
                caller,
                msg.id,
                RpcError(
                    f"invalid method name {brief(msg.method)} of {len(msg.method)} characters: "
                    f"method names are 1-{MAX_METHOD_NAME} characters; call one of the methods "
                    f"{brief(msg.provider)} exposes (clients() lists them)"
                ),
                "invalid",
            )
            return
        if self._impossible_provider(caller, msg.id, msg.provider):
            return
        if msg.window is not None and not 0 < msg.window <= MAX_STREAM_WINDOW:
            self._error(
                caller,
                msg.id,
                RpcError(f"a stream's window is 1-{MAX_STREAM_WINDOW} values, not {msg.window}"),
                "invalid",
            )
            return
        if (
            self._remote is not None
            and self._lookup(msg.provider) is None
            and self._remote(caller, msg)
        ):
            return
        pending = self._open(caller, msg.id, msg.provider, describe=False)
        if pending is None:
            return
        if msg.window is not None:
            pending.stream = True
            pending.credit = msg.window
        invoke = Invoke(
            call=pending.call,
            method=msg.method,
            args=msg.args,
            caller=caller.name,
            window=msg.window,
        )
        frame = self._encode(invoke)
        if frame is None:
            self._close(pending)
            self._too_large(caller, msg.id, f"the call's invoke to {msg.provider[:100]!r}")
            return
        over = over_bound(pending.provider, len(frame))
        if over is not None:
            self._close(pending)
            self._error(
                caller,
                msg.id,
                LimitExceeded(
                    f"{msg.provider!r} does not keep up with what the server sends it "
                    f"({_not_read(*over)}), so this call was not passed on: try again "
                    "later, or make fewer or smaller calls at once"
                ),
                "limit",
            )
            return
        self.calls_total += 1
        pending.provider.send_control_frame(frame)

    def cancel(self, caller: Endpoint, msg: Cancel) -> None:
        pending = self._by_caller.get(caller, {}).get(msg.id)
        if pending is not None:  # else answered already: the answer crossed the cancel
            self._close(pending)
            pending.provider.send_control(Abort(call=pending.call))
        elif self._remote is not None:  # or a call to another node: the engine forwards it
            self._remote(caller, msg)

    def credit(self, caller: Endpoint, msg: Credit) -> None:
        pending = self._by_caller.get(caller, {}).get(msg.id)
        if pending is None:  # the stream ended while the credit was on its way, or a stream
            if self._remote is not None:  # from another node: the engine forwards it
                self._remote(caller, msg)
            return
        if not pending.stream:
            raise ProtocolError(f"credit for request {msg.id}, which is not a streaming call")
        check_credit(msg, pending.credit)
        pending.credit += msg.n
        pending.provider.send_control(Demand(call=pending.call, n=msg.n))

    def not_connected(self, name: str) -> str:
        """The error for a call to nobody: the providers there are (clients() lists them to
        anyone already), a close name first (a typo: 'dqa' for 'daq'); or, for a provider
        whose session is kept for its return, that it may be back. ``name`` is a valid client
        name (_impossible_provider answered the others), quoted whole as protocol.md says:
        at most 100 characters."""
        left = self._away(name)
        if left is not None:
            return (
                f"{PROVIDER_MISSING_START}{name!r} is connected{PROVIDER_AWAY_MARK}; "
                f"its session is kept {left:.1f} s more for it to reconnect"
            )
        providers = sorted(e.name for e in self._connected() if e.methods)
        close = difflib.get_close_matches(name, _near(providers, name), n=1)
        shown = close + [p for p in providers if p not in close][: MAX_NAMED_PROVIDERS - len(close)]
        if not shown:
            return f"{PROVIDER_MISSING_START}{name!r} is connected (and none exposes methods)"
        more = ", ..." if len(providers) > len(shown) else ""
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return (
            f"{PROVIDER_MISSING_START}{name!r} is connected{guess} (clients with methods: "
            f"{', '.join(map(repr, shown))}{more})"
        )

    def _impossible_provider(self, caller: Endpoint, ident: int, name: str) -> bool:
        """Answer a call or describe of a name no client can have, saying why: "no client
        named '' is connected" read as if one might be (and a waiting caller waited on)."""
        try:
            check_client_name(name)
        except InvalidArgument as exc:
            self._error(
                caller,
                ident,
                RpcError(f"no client can be named {brief(name)}, so none can answer: {exc}"),
                "invalid",
            )
            return True
        return False

    def _open(self, caller: Endpoint, ident: int, name: str, *, describe: bool) -> _Pending | None:
        # Looked up, not made: an entry is made only with its first call (below), or a caller
        # refused here would stay in the table, and its session with it, for good.
        calls = self._by_caller.get(caller, {})
        if ident in calls:
            raise ProtocolError(f"request id {ident} is in use by a call still in flight")
        provider = self._lookup(name)
        if provider is None:
            self._error(caller, ident, RpcError(self.not_connected(name)), "no_provider")
            return None
        if len(calls) >= MAX_PENDING_CALLS:
            self._error(
                caller,
                ident,
                LimitExceeded(
                    f"this client has {len(calls)} calls in flight, the limit: wait for "
                    "answers (or bound your concurrent calls, e.g. with a trio.CapacityLimiter) "
                    "before making more"
                ),
                "limit",
            )
            return None
        running = self._by_provider.get(provider, {})
        if len(running) >= MAX_PENDING_CALLS:
            self._error(
                caller,
                ident,
                LimitExceeded(
                    f"{name!r} has {len(running)} calls in flight, the limit: its callers "
                    "together wait for answers before making more; try again later"
                ),
                "limit",
            )
            return None
        pending = _Pending(self._next_call, caller, ident, provider, describe)
        self._next_call += 1
        self._calls[pending.call] = pending
        self._by_caller.setdefault(caller, calls)[ident] = pending
        self._by_provider.setdefault(provider, running)[pending.call] = pending
        return pending

    def _close(self, pending: _Pending) -> None:
        del self._calls[pending.call]
        calls = self._by_caller[pending.caller]
        del calls[pending.caller_id]
        if not calls:
            del self._by_caller[pending.caller]
        running = self._by_provider[pending.provider]
        del running[pending.call]
        if not running:
            del self._by_provider[pending.provider]

    def count_error(self, reason: str) -> None:
        """One more call answered with an error, for ``reason`` (one of ERROR_REASONS)."""
        self.errors_total[reason] += 1

    def _error(self, caller: Endpoint, ident: int, error: Exception, reason: str) -> None:
        self.count_error(reason)
        caller.send_control(Error(id=ident, type=type(error).__name__, message=str(error)))

    def _encode(self, message: ControlMessage) -> bytes | None:
        """The whole frame for ``message``, or None if its body exceeds max_frame_bytes."""
        body = encode_message(message)
        if len(body) > self._max_frame_bytes:
            return None
        return frame_prefix(len(body)) + body

    def _too_large(self, caller: Endpoint, ident: int, what: str) -> None:
        self._error(
            caller,
            ident,
            FrameTooLarge(
                f"{what} would exceed max_frame_bytes ({self._max_frame_bytes} bytes; the "
                "server adds the caller's name and ids to what it forwards): send less "
                "per call, or raise max_frame_bytes on the server"
            ),
            "too_large",
        )

    def _forward(self, caller: Endpoint, ident: int, message: ControlMessage, what: str) -> bool:
        """Send an answer on to its caller (True), or FrameTooLarge if it grew over the
        limit, or LimitExceeded if the caller does not read what the server holds for it."""
        frame = self._encode(message)
        if frame is None:
            self._too_large(caller, ident, what)
            return False
        over = over_bound(caller, len(frame))
        if over is not None:
            self._error(caller, ident, answer_dropped(what, len(frame), over), "limit")
            return False
        caller.send_control_frame(frame)
        return True

    # -- provider side -----------------------------------------------------------------------
    def _answered(self, provider: Endpoint, call: int, op: str) -> _Pending | None:
        """The call a provider's answer (``op``) is for, now closed; None if nobody waits
        any more."""
        pending = self._calls.get(call)
        if pending is None:
            # Aborted (the caller cancelled or left) while the answer was on its way: expected.
            if 1 <= call < self._next_call:
                return None
            raise ProtocolError(f"answer for call {call}, which was never made")
        if pending.provider is not provider:
            raise ProtocolError(f"answer for call {call}, which is not this client's to answer")
        if pending.describe != (op == "methods"):
            # One's own call all the same: say which answer it takes (a refuse of an
            # introspect read as someone else's call).
            wanted = "methods" if pending.describe else "result, fail or refuse (or yield, end)"
            asked = "introspect" if pending.describe else "invoke"
            raise ProtocolError(f"{op} for call {call}, an {asked}: answer it with {wanted}")
        if op == "end" and not pending.stream:
            # Refused before the call is closed: the provider's connection closes for it, and
            # that fails the call for its caller (closed first, its caller would wait for good).
            raise ProtocolError(f"end for call {call}, which is not a streaming call")
        self._close(pending)
        return pending

    def yield_(self, provider: Endpoint, msg: Yield) -> None:
        pending = self._calls.get(msg.call)
        if pending is None:
            if 1 <= msg.call < self._next_call:
                return  # aborted while the value was on its way
            raise ProtocolError(f"yield for call {msg.call}, which was never made")
        if pending.provider is not provider or not pending.stream:
            raise ProtocolError(f"yield for call {msg.call}, which is not this client's stream")
        if pending.credit <= 0:
            raise ProtocolError(
                f"yield for call {msg.call} beyond the caller's credit: wait for demand"
            )
        pending.credit -= 1
        frame = self._encode(Item(id=pending.caller_id, value=msg.value))
        if frame is None:
            self._close(pending)
            provider.send_control(Abort(call=pending.call))
            self._too_large(
                pending.caller, pending.caller_id, f"a value from {provider.name[:100]!r}"
            )
            return
        over = over_bound(pending.caller, len(frame))
        if over is not None:
            self._close(pending)
            provider.send_control(Abort(call=pending.call))
            self._error(
                pending.caller,
                pending.caller_id,
                stream_value_dropped(provider.name, len(frame), over),
                "limit",
            )
            return
        pending.caller.send_control_frame(frame)

    def end(self, provider: Endpoint, msg: End) -> None:
        pending = self._answered(provider, msg.call, "end")
        if pending is None:
            return
        pending.caller.send_control(Reply(id=pending.caller_id, result=None))

    def methods(self, provider: Endpoint, msg: Methods) -> None:
        names = [
            m["name"] for m in msg.methods if isinstance(m, dict) and type(m.get("name")) is str
        ]
        if len(names) != len(msg.methods):
            raise ProtocolError("methods: every description must be a map with a text name")
        self.expose(provider, Expose(methods=names))  # fresher than the last expose
        pending = self._answered(provider, msg.call, "methods")
        if pending is None:
            return
        if not msg.methods:
            self._error(
                pending.caller,
                pending.caller_id,
                RpcError(f"{provider.name!r}{NO_METHODS_YET_END}"),
                "refused",
            )
            return
        self._forward(
            pending.caller,
            pending.caller_id,
            Reply(id=pending.caller_id, result=msg.methods),
            f"the description of {provider.name[:100]!r}",
        )

    def result(self, provider: Endpoint, msg: Result) -> None:
        pending = self._answered(provider, msg.call, "result")
        if pending is not None:
            self._forward(
                pending.caller,
                pending.caller_id,
                Reply(id=pending.caller_id, result=msg.value),
                f"the result from {provider.name[:100]!r}",
            )

    def fail(self, provider: Endpoint, msg: Fail) -> None:
        pending = self._answered(provider, msg.call, "fail")
        if pending is not None and self._forward(
            pending.caller,
            pending.caller_id,
            RpcErrorReply(
                id=pending.caller_id,
                type=msg.type,
                message=msg.message,
                traceback=msg.traceback,
            ),
            f"the error from {provider.name[:100]!r}",
        ):
            # Once: an error reply dropped for the caller's bound (or its size) was counted
            # for that, and that is all the caller saw.
            self.count_error("raised")

    def refuse(self, provider: Endpoint, msg: Refuse) -> None:
        pending = self._answered(provider, msg.call, "refuse")
        if pending is not None:
            self._error(pending.caller, pending.caller_id, RpcError(msg.message), "refused")

    # -- connections ending ------------------------------------------------------------------
    def session_closed(self, session: Endpoint) -> None:
        """Fail every call ``session`` was running, abort every call it was waiting for."""
        for pending in list(self._by_provider.get(session, {}).values()):
            self._close(pending)
            if pending.caller is not session:
                # A call it had taken may have run (a motor moved): the caller must check
                # before sending it again.
                what = (
                    "answering the describe"
                    if pending.describe
                    else "answering the call (it may have run: check before calling again)"
                )
                if pending.stream:
                    what = "the end of the stream"
                self._error(
                    pending.caller,
                    pending.caller_id,
                    RpcError(f"{session.name!r} disconnected before {what}"),
                    "disconnected",
                )
        for pending in list(self._by_caller.get(session, {}).values()):
            self._close(pending)
            pending.provider.send_control(Abort(call=pending.call))
        session.methods = []


def check_credit(msg: Credit, outstanding: int) -> None:
    """Refuse a caller's ``credit`` that is not a positive count, or that would let more than
    MAX_STREAM_WINDOW values of its stream be in flight (``outstanding`` are already)."""
    if msg.n < 1:
        raise ProtocolError(f"credit for stream {msg.id} must be n >= 1 values, not {msg.n}")
    if msg.n > MAX_STREAM_WINDOW - outstanding:
        raise ProtocolError(
            f"credit {msg.n} for stream {msg.id} would exceed the window limit of "
            f"{MAX_STREAM_WINDOW} values in flight"
        )


def _near(names: list[str], name: str) -> list[str]:
    """Of ``names`` (sorted), those a misspelling of ``name`` is compared with: all of them
    up to MAX_CLOSE_CANDIDATES, else the ones of its first character nearest it in order (a
    typo after the first character: 'dqa' for 'daq')."""
    if len(names) <= MAX_CLOSE_CANDIDATES:
        return names
    first = name[:1]
    start = bisect.bisect_left(names, first)
    end = bisect.bisect_left(names, first + "\U0010ffff", start)
    middle = bisect.bisect_left(names, name, start, end)
    half = MAX_CLOSE_CANDIDATES // 2
    low = max(start, min(middle - half, end - MAX_CLOSE_CANDIDATES))
    return names[low : min(end, low + MAX_CLOSE_CANDIDATES)]
