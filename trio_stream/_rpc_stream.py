"""Streaming RPC: a provider's generator feeding a caller's ``async for``, with credit.

The caller grants a *window* of values when it calls and returns credit as its application
consumes them; the provider advances the generator only while it holds credit. So a caller
that stops reading stops the generator (nothing piles up anywhere: at most one window of
values is on its way, in the server's queue or in the caller's), and a caller that reads fast
never waits a round trip per value. Credit goes back in batches of half a window, so a window
of 16 costs one ``credit`` message per 8 values.

Ending it, either way:
- the caller leaves the loop (``break``, an exception, a cancel scope) or closes the stream:
  ``cancel`` goes out, the server sends ``abort``, the provider's task is cancelled and its
  generator closed (``aclose()``: its ``finally`` blocks run);
- the generator raises: the caller's loop raises ``RemoteError`` (type, message, traceback);
- the provider disconnects: the caller's loop raises ``RpcError`` saying so; the caller's own
  connection drops: ``ConnectionClosed`` (at most once: the stream is not resumed).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from ._exceptions import ConnectionClosed, InvalidArgument, ProtocolError
from ._protocol.codec import decode_payload
from ._protocol.rpc_messages import MAX_STREAM_WINDOW, Call, Cancel, Credit
from ._util import fresh

if TYPE_CHECKING:
    from types import TracebackType

    from ._client_port import ClientPort, PendingRequest

#: Values a stream has in flight unless the caller chooses (``proxy.stream(..., window=)``).
DEFAULT_WINDOW: Final = 16


def is_stream(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a generator function (async or not): its values are streamed. Also
    an object whose ``__call__`` is one (not a class: calling it makes an instance). What a
    function wraps does not count: a wrapper may consume a generator (``list(f())``)."""
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        return True
    if isinstance(fn, type) or inspect.isroutine(fn):
        return False
    call = getattr(fn, "__call__", None)  # noqa: B004
    return inspect.isasyncgenfunction(call) or inspect.isgeneratorfunction(call)


def check_window(window: int) -> None:
    if type(window) is not int or not 0 < window <= MAX_STREAM_WINDOW:
        raise InvalidArgument(f"window must be 1-{MAX_STREAM_WINDOW} values, not {window!r}")


# -- provider side -------------------------------------------------------------------------------
class Outflow:
    """The credit of one streaming invocation on the provider."""

    __slots__ = ("_more", "credit")

    def __init__(self, window: int) -> None:
        self.credit = window
        self._more = trio.Event()

    def add(self, n: int) -> None:
        self.credit += n
        self._more.set()

    async def take(self) -> None:
        """Wait for one unit of credit and take it."""
        while self.credit <= 0:
            self._more = trio.Event()
            await self._more.wait()
        self.credit -= 1


_DONE: Final[Any] = object()
log = logging.getLogger(__name__)


class RaisedInWorker(Exception):
    """A ``KeyboardInterrupt`` an exposed method raised in its worker thread, carried to
    the trio thread as an ordinary error for its caller (see Turn.run); ``original``."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


class Turn:
    """An exposed object's turn: its sync methods run one at a time in worker threads.

    The limiter orders them in trio. The lock holds in the worker thread itself, so that a
    call given up on (abandoned when cancelled: it runs on, nothing can interrupt it) still
    keeps the next one out, and a generator closed later, in a thread of its own that nobody
    waits for, waits there for its turn.
    """

    __slots__ = ("limiter", "lock")

    def __init__(self) -> None:
        self.limiter = trio.CapacityLimiter(1)
        self.lock = threading.Lock()

    async def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in a worker thread in its turn; abandoned (not waited for) when cancelled."""

        def in_turn() -> Any:
            with self.lock:
                try:
                    return fn()
                except KeyboardInterrupt as exc:
                    # Raised by the method itself: a Ctrl-C never lands in a worker thread
                    # (Python delivers signals to the main thread). As it was, it ended the
                    # provider's client, with a hundred lines of its nursery (a script user).
                    raise RaisedInWorker(exc) from exc

        return await trio.to_thread.run_sync(in_turn, limiter=self.limiter, abandon_on_cancel=True)

    @property
    def taken(self) -> bool:
        return self.limiter.borrowed_tokens > 0 or self.lock.locked()


@contextlib.asynccontextmanager
async def open_generator(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    turn: Turn | None,
) -> AsyncIterator[Callable[[], Any]]:
    """Start the generator; yield ``step``: an async function giving its next value, or
    ``_DONE``. The generator is closed on the way out, whatever happens (``aclose()`` for an
    async generator, ``close()`` for a sync one, in its worker thread if it has one)."""
    gen = fn(*args, **kwargs)
    if inspect.isasyncgen(gen):
        agen = gen

        async def step_async() -> Any:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return _DONE

        try:
            yield step_async
        finally:
            await agen.aclose()
        return
    if not inspect.isgenerator(gen):
        raise TypeError(f"{fn!r} did not return a generator")
    sync_gen = gen
    if turn is None:  # quick generators run in the trio thread, as quick sync methods do

        async def step_here() -> Any:
            await trio.lowlevel.checkpoint()
            return next(sync_gen, _DONE)

        try:
            yield step_here
        finally:
            sync_gen.close()
        return

    # A step given up on (its caller cancelled, the client closes) runs on in its thread,
    # which nothing can interrupt, as a sync method's call does. The close then waits for its
    # turn in a thread of its own, not in the trio thread: a closing provider waited seconds
    # for a blocked next(), or for an abandoned call of the same object.
    def step() -> Any:
        return next(sync_gen, _DONE)

    def close() -> None:
        with turn.lock:
            sync_gen.close()

    async def step_thread() -> Any:
        return await turn.run(step)

    try:
        yield step_thread
    finally:
        if turn.taken:
            trio.lowlevel.start_thread_soon(close, _log_close_failure)
        else:
            with trio.CancelScope(shield=True):  # close it in its thread even when cancelled
                await turn.run(sync_gen.close)


def _log_close_failure(outcome: Any) -> None:
    """Called in the closing thread: a generator that raised while closed is only logged."""
    error = getattr(outcome, "error", None)
    if error is not None:
        log.warning("a streamed generator raised when closed: %r", error)


def is_done(value: Any) -> bool:
    return value is _DONE


# -- caller side ---------------------------------------------------------------------------------
class Inbox:
    """The values of one stream that arrived and are not taken yet.

    The client's tables (its streams by id, the pending request's callback) hold this, never
    the :class:`RemoteStream`: a stream the application drops (``break`` out of ``async for``)
    must be collected, so that its ``__del__`` can stop the provider.
    """

    __slots__ = ("changed", "values")

    def __init__(self) -> None:
        self.values: deque[bytes] = deque()
        self.changed = trio.Event()

    def deliver(self, value: bytes) -> None:
        self.values.append(value)
        self.changed.set()

    def wake(self) -> None:
        self.changed.set()


class RemoteStream:
    """The values of one streaming call: ``async for v in proxy.samples(10)``.

    The call goes out on the first iteration. Leaving the loop early stops the provider's
    generator; so does ``aclose()`` or leaving ``async with``. Each value is decoded as it is
    taken, in the consumer's task.

    Raises (from the loop):
        RemoteError: the provider's generator raised.
        RpcError: no such provider or method, or the provider disconnected mid-stream.
        ConnectionClosed: this client's connection was lost (the stream is not resumed).
    """

    def __init__(
        self,
        port: ClientPort,
        streams: dict[int, Inbox],
        build: Callable[[int], Call],
        window: int,
        what: str,
    ) -> None:
        self._port = port
        self._streams = streams  # the endpoint's table of streams by request id
        self._build = build
        self.window = window
        self._what = what
        self._request: PendingRequest | None = None
        self._inbox = Inbox()
        self._values = self._inbox.values
        self._consumed = 0  # values taken since credit was last returned
        self._closed = False
        self._token: trio.lowlevel.TrioToken | None = None

    async def _start(self) -> PendingRequest:
        await self._port.wait_usable()
        if self._closed:  # closed while waiting for the connection: never call
            raise StopAsyncIteration
        request = self._port.start_request(self._build)
        request.on_done = self._inbox.wake
        self._streams[request.id] = self._inbox
        self._token = trio.lowlevel.current_trio_token()
        return request

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        # Cancellation is honoured only before a value is taken (as Subscription.receive):
        # a value taken and then lost to a cancel would leave a silent hole in the stream.
        await trio.lowlevel.checkpoint_if_cancelled()
        request = self._request
        try:
            if request is None:
                request = self._request = await self._start()
            while not self._values:
                if self._closed:  # closed by another task while this one waited
                    raise StopAsyncIteration
                if request.done.is_set():
                    self._finish()
                    if request.error is not None:
                        raise fresh(request.error)
                    if request.result is not None:
                        raise ProtocolError(
                            f"{self._what} answered with one result, not a stream of values"
                        )
                    raise StopAsyncIteration
                self._inbox.changed = trio.Event()
                await self._inbox.changed.wait()
            value = self._take(request)
        except BaseException as exc:
            # Failed: the provider stops too. A cancelled wait leaves the stream as it was
            # (as a cancelled Subscription.receive): closing it here ended a loop that went
            # on after a timeout as if the provider had finished. A stream left with the
            # cancel is closed by its `async with`, or when it is collected (__del__).
            if not isinstance(exc, StopAsyncIteration | trio.Cancelled):
                self._abandon()
            raise
        await trio.lowlevel.cancel_shielded_checkpoint()  # taken: not lost to a cancel
        return decode_payload(value, limits=self._port.payload_limits)

    def receive_nowait(self, *, credit: bool = True) -> Any:
        """A value that has arrived already (the SyncClient takes them in batches).

        ``credit=False``: the value is not counted as taken until :meth:`credit` says so
        (the SyncClient's batch waits in its thread: the provider must not make a window
        more meanwhile).

        Raises:
            trio.WouldBlock: none has (or the stream ended: the next ``__anext__`` says how).
        """
        request = self._request
        if not self._values or request is None:
            raise trio.WouldBlock
        return decode_payload(self._take(request, credit), limits=self._port.payload_limits)

    def credit(self, taken: int) -> None:
        """``taken`` values got with ``receive_nowait(credit=False)`` are the application's."""
        if self._request is not None and taken:
            self._count(self._request, taken)

    def _take(self, request: PendingRequest, credit: bool = True) -> bytes:
        """The next value's payload; credit goes back once half a window was taken."""
        value = self._values.popleft()
        if credit:
            self._count(request, 1)
        return value

    def _count(self, request: PendingRequest, taken: int) -> None:
        self._consumed += taken
        if self._consumed * 2 >= self.window and not request.done.is_set():
            n, self._consumed = self._consumed, 0
            with contextlib.suppress(ConnectionClosed):  # the loss fails the request
                self._port.send_control(Credit(id=request.id, n=n))

    def _finish(self) -> None:
        self._closed = True
        request = self._request
        if request is not None:
            self._streams.pop(request.id, None)
            self._port.forget(request)

    def _abandon(self) -> None:
        """Stop the stream now: the provider is told to close its generator."""
        if self._closed:
            return
        request = self._request
        self._finish()
        self._values.clear()
        self._inbox.wake()  # an __anext__ waiting in another task (or thread) ends now
        if request is not None and not request.done.is_set() and not self._port.closed:
            with contextlib.suppress(ConnectionClosed):
                self._port.send_control(Cancel(id=request.id))

    async def aclose(self) -> None:
        """Stop the stream (the provider's generator is closed). Idempotent."""
        self._abandon()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> RemoteStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # `async for v in proxy.samples(): break` drops the stream without closing it: tell
        # the provider from the trio thread (this may run in any thread, from the collector).
        if self._closed or self._token is None:
            return
        with contextlib.suppress(Exception):
            self._token.run_sync_soon(self._abandon)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._values)} values waiting"
        return f"<remote stream {self._what}: {state}>"
