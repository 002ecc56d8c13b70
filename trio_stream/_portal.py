"""A blocking portal: synchronous threads call into a trio run in another thread.

Modelled on anyio's ``BlockingPortal``: the trio thread opens the portal with a nursery; a
call from any other thread crosses with the run's trio token, runs as a task in that nursery
and hands its outcome back through a ``threading.Event``. Ctrl-C (any BaseException) while a
thread waits cancels the call's task too, so the work does not go on behind the caller's back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ._exceptions import ConnectionClosed, TrioStreamError

T = TypeVar("T")


def refuse_trio_thread(what: str) -> None:
    """Raise RuntimeError when called from a thread that runs trio (it would block it)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what} blocks, and this thread runs trio (it would block its event loop, or deadlock "
        "in the SyncClient's own thread): use `async with trio_stream.open_client(...)` there, "
        "or call it from another thread (trio.to_thread.run_sync)"
    )


def for_the_caller(error: BaseException) -> BaseException:
    """``error`` as a blocking caller sees it: a TrioStreamError (its message says what
    happened and what to do) or Ctrl-C without the frames of the trio thread, or of
    ``threading``'s wait, that it crossed; those say nothing to a script's author and made a
    one-line error twenty lines long. Any other exception keeps its whole traceback."""
    if isinstance(error, TrioStreamError | KeyboardInterrupt):
        return error.with_traceback(None)
    return error


class _Call:
    """One blocking call on its way through the trio thread and back."""

    __slots__ = ("cancelled", "done", "error", "scope", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.scope: trio.CancelScope | None = None
        self.cancelled = False


class BlockingPortal:
    """Blocking calls into one trio run (opened and closed from inside that run)."""

    def __init__(self, closed_message: str = "the portal is closed") -> None:
        self._closed_message = closed_message
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._refusing = False

    def open(self, nursery: trio.Nursery) -> None:
        """From the trio thread: calls run as tasks of ``nursery`` from now on."""
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()

    def close(self) -> None:
        """Refuse calls from now on (from any thread); calls under way finish or are cancelled
        with their nursery."""
        self._refusing = True

    def detach(self) -> None:
        """From the trio thread, as its nursery ends: nothing can start any more."""
        self._nursery = None

    @property
    def is_open(self) -> bool:
        return self._token is not None and not self._refusing

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(self._closed_message)

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the trio thread and wait for its outcome.

        Raises:
            RuntimeError: called from a thread that runs trio.
            ConnectionClosed: the portal is closed.
        """
        refuse_trio_thread("this SyncClient method")
        token = self._token
        if self._refusing or token is None:
            raise self._closed()
        call = _Call()
        try:
            token.run_sync_soon(self._start_call, call, fn)
        except trio.RunFinishedError:
            raise self._closed() from None
        try:
            call.done.wait()
        except BaseException as exc:
            # Ctrl-C while waiting: stop the operation in the trio thread as well, so that it
            # does not go on behind the caller's back (say, take a message nobody will read).
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._cancel_call, call)
            if isinstance(exc, KeyboardInterrupt):
                raise for_the_caller(exc) from None
            raise
        if call.error is not None:
            error, call.error = call.error, None  # no reference cycle through the traceback
            raise for_the_caller(error)
        return call.value  # type: ignore[no-any-return]

    def run_sync(self, fn: Callable[[], T]) -> T:
        """Run the plain function ``fn()`` in the trio thread (where the client's state is)."""

        async def run() -> T:
            return fn()

        return self.call(run)

    def run_sync_soon(self, fn: Callable[[], object]) -> None:
        """Schedule ``fn()`` in the trio thread without waiting (nothing if the run is over)."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(fn)

    def _start_call(self, call: _Call, fn: Callable[[], Awaitable[Any]]) -> None:
        nursery = self._nursery
        if nursery is None:
            call.error = self._closed()
            call.done.set()
        else:
            nursery.start_soon(self._run_call, call, fn)

    @staticmethod
    def _cancel_call(call: _Call) -> None:
        call.cancelled = True
        if call.scope is not None:
            call.scope.cancel()

    @staticmethod
    async def _run_call(call: _Call, fn: Callable[[], Awaitable[Any]]) -> None:
        finished = False
        try:
            with trio.CancelScope() as call.scope:
                if call.cancelled:
                    call.scope.cancel()
                try:
                    call.value = await fn()
                except Exception as exc:
                    call.error = exc
                finished = True
        finally:
            if not finished:  # cancelled: by Ctrl-C in the caller, or the portal is closing
                call.error = ConnectionClosed("the call was cancelled: the SyncClient is closing")
            call.done.set()
