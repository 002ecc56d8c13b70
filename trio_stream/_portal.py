"""A blocking portal: synchronous threads call into a trio run in another thread.

Modelled on anyio's ``BlockingPortal``: the trio thread opens the portal with a nursery; a
call from any other thread crosses with the run's trio token, runs as a task in that nursery
and hands its outcome back through a ``threading.Event``. Ctrl-C (any BaseException) while a
thread waits cancels the call's task too, so the work does not go on behind the caller's back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import trio

from ._exceptions import ConnectionClosed, TrioStreamError

T = TypeVar("T")

#: Ctrl-C while a call waits: how long the caller then waits for the call's own outcome (s).
#: The call may just have finished (a batch of messages taken from a subscription): its value
#: goes to ``keep`` instead of being dropped. The trio thread answers a cancel in microseconds;
#: this bounds the wait only when it is stuck, so Ctrl-C still returns promptly.
INTERRUPTED_WAIT_S: Final = 0.5

#: A portal used in a process forked from the one that made it: its trio thread is not there.
FORKED_MESSAGE: Final = (
    "this SyncClient was made in another process: a SyncClient cannot cross a fork (the "
    "child of os.fork has no trio thread behind it); make a new SyncClient in the child"
)


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


#: The attribute that marks a TimeoutError as the caller's own bound (see caller_timeout).
#: An attribute, not a subclass: the caller's last line stays ``TimeoutError: ...``.
_CALLERS_BOUND: Final = "_trio_stream_callers_bound"


def caller_timeout(message: str) -> TimeoutError:
    """The TimeoutError for a blocking call's own ``timeout=`` (a ``get``, a ``flush``): its
    message says all there is, so ``for_the_caller`` drops the trio frames it crossed. A
    TimeoutError from anywhere else (an OS timeout, a function given to ``run_sync``) keeps
    its traceback: its frames are where it came from."""
    error = TimeoutError(message)
    setattr(error, _CALLERS_BOUND, True)
    return error


def for_the_caller(error: BaseException) -> BaseException:
    """``error`` as a blocking caller sees it: a TrioStreamError (its message says what
    happened and what to do), the end of a channel (``EndOfChannel``, its reason said),
    Ctrl-C, or the caller's own timeout (``caller_timeout``)
    without the frames of the trio thread, or of ``threading``'s wait, that it crossed;
    those say nothing to a script's author and made a one-line error twenty lines long. Any
    other exception keeps its whole traceback."""
    if told_without_frames(error):
        return error.with_traceback(None)
    return error


def told_without_frames(error: BaseException) -> bool:
    """Whether ``for_the_caller`` leaves ``error``'s frames out (see there)."""
    return isinstance(error, TrioStreamError | KeyboardInterrupt | trio.EndOfChannel) or getattr(
        error, _CALLERS_BOUND, False
    )


class Done:
    """A one-shot event for one waiting thread that Ctrl-C cannot break.

    Not a ``threading.Event``: its ``wait()`` is Python code around a Condition, and a
    KeyboardInterrupt raised inside it (just after its lock was taken) can leave that lock
    held, so that the trio thread's ``set()`` then blocks for good. This is a bare lock,
    released once by the setter; an interrupt leaves it in a state ``is_set()`` still reads.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """From the one thread that sets it; idempotent."""
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set, at most ``timeout`` seconds; True once set."""
        return self._set or self._lock.acquire(timeout=-1 if timeout is None else timeout)


class _Call:
    """One blocking call on its way through the trio thread and back."""

    __slots__ = ("cancelled", "done", "error", "scope", "started", "value")

    def __init__(self) -> None:
        self.done = Done()
        self.value: Any = None
        self.error: BaseException | None = None
        self.scope: trio.CancelScope | None = None
        self.started = False  # its start ran in the trio thread
        self.cancelled = False


class BlockingPortal:
    """Blocking calls into one trio run (opened and closed from inside that run)."""

    def __init__(self, closed_message: str = "the portal is closed") -> None:
        self._closed_message = closed_message
        self._pid = os.getpid()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._refusing = False
        # The calls whose callers wait, for end(): a set's add and discard are atomic under
        # the GIL, and end() reads a copy.
        self._waiting: set[_Call] = set()

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

    def end(self, error: ConnectionClosed) -> None:
        """From the trio thread once its run is over (however it ended): refuse calls from
        now on, and fail with ``error`` every call still waiting. A run that died (a bug)
        left its calls waiting for good, and the next calls met its closed wake-up socket
        (a bare OSError)."""
        self._closed_message = str(error)  # what later calls raise too
        self._refusing = True
        self._nursery = None
        for call in list(self._waiting):
            if not call.done.is_set():
                call.error = error
                call.done.set()

    @property
    def is_open(self) -> bool:
        return self._token is not None and not self._refusing and not self.forked

    @property
    def forked(self) -> bool:
        """True in a process forked from the one that made this portal."""
        return os.getpid() != self._pid

    def check_process(self) -> None:
        """Raise ConnectionClosed (FORKED_MESSAGE) in a forked child: a call would hang."""
        if self.forked:
            raise ConnectionClosed(FORKED_MESSAGE)

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(self._closed_message)

    def closed_error(self) -> ConnectionClosed:
        """What a call made once the portal is closed raises."""
        return self._closed()

    def call(self, fn: Callable[[], Awaitable[T]], keep: Callable[[T], object] | None = None) -> T:
        """Run ``fn()`` in the trio thread and wait for its outcome.

        ``keep``: called with the value when Ctrl-C (any BaseException) interrupted the wait
        but the call finished all the same, before the interrupt propagates. A call that
        takes something (messages from a subscription) passes it, so that nothing is lost.

        Raises:
            RuntimeError: called from a thread that runs trio.
            ConnectionClosed: the portal is closed, or this is a forked child.
        """
        refuse_trio_thread("this SyncClient method")
        self.check_process()
        token = self._token
        if self._refusing or token is None:
            raise self._closed()
        call = _Call()
        waiting = self._waiting
        waiting.add(call)
        if self._refusing:  # end() came after the check above, and missed this call
            waiting.discard(call)
            raise self._closed()
        try:
            token.run_sync_soon(self._start_call, call, fn)
            call.done.wait()
            # Inside the try: Python may run a Ctrl-C handler at this call, and the handler
            # below then keeps the value the call took (in a `finally`, it was dropped).
            waiting.discard(call)
        except (trio.RunFinishedError, OSError):
            # OSError: the run died without its token knowing (its wake-up socket is closed).
            waiting.discard(call)
            raise self._closed() from None
        except BaseException as exc:
            waiting.discard(call)
            # Ctrl-C while the call was handed over or waited for: stop the operation in the
            # trio thread as well, so that it does not go on behind the caller's back (say,
            # take a message nobody will read). The cancel runs after the start if that was
            # queued (the token keeps the order), and finishes the call itself if not.
            with contextlib.suppress(trio.RunFinishedError, OSError):
                token.run_sync_soon(self._cancel_call, call)
            # It may have finished already, or finish before the cancel arrives (the
            # interrupt came just as its value was on its way): then the value is the
            # caller's, not to be dropped. Waiting also keeps a cancelled call from running
            # on beside the caller's next one.
            if call.done.wait(INTERRUPTED_WAIT_S) and call.error is None and keep is not None:
                keep(call.value)
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
        if token is not None and not self.forked:  # (the parent's run: not ours to wake)
            with contextlib.suppress(trio.RunFinishedError, OSError):  # OSError: see call()
                token.run_sync_soon(fn)

    def _start_call(self, call: _Call, fn: Callable[[], Awaitable[Any]]) -> None:
        call.started = True
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
        elif not call.started:  # interrupted before its start was queued: none will come
            call.error = ConnectionClosed("the call was cancelled before it started")
            call.done.set()

    @staticmethod
    async def _run_call(call: _Call, fn: Callable[[], Awaitable[Any]]) -> None:
        finished = False
        try:
            with trio.CancelScope() as call.scope:
                # Cancelled before it ran: not begun at all (fn might take something before
                # its first checkpoint, for a caller that has gone).
                if not call.cancelled:
                    try:
                        call.value = await fn()
                    except Exception as exc:
                        call.error = exc
                    finished = True
        finally:
            if not finished:  # cancelled: by Ctrl-C in the caller, or the portal is closing
                call.error = ConnectionClosed("the call was cancelled: the SyncClient is closing")
            call.done.set()
