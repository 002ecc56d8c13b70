"""SyncClient: the trio client for synchronous code (scripts, instrument loops, Jupyter).

One daemon thread runs ``trio.run`` with the real :class:`~trio_stream.Client` inside (there is
no second implementation); every blocking method hands an async operation to that thread with
the run's trio token and waits for its outcome, like anyio's blocking portal. Nothing relies on
the calling thread's signal handling or event loop, so it works the same under Jupyter's
asyncio loop, in worker threads and in plain scripts.

A crossing between threads costs ~100 µs, far more than sending a small frame, so ``publish``
does not cross per value: it encodes in the caller's thread (a snapshot: the caller may reuse
its buffer at once), appends to a bounded queue, and wakes the trio side only when that side is
idle. A trio task takes the queue in batches and feeds the real publishers. A writer that gets
too far ahead blocks until there is room; nothing is dropped silently (an error in the
background, such as a deleted channel, is raised by the next ``publish``, ``flush`` or
``close``). ``flush()`` returns once the server has taken everything queued so far.

Calling a blocking method from a thread that runs trio (including the client's own thread, as
an exposed method would) raises RuntimeError: it would block that event loop, or deadlock.
Ctrl-C (KeyboardInterrupt) during a blocking call cancels the operation in the trio thread and
propagates at once; ``close()`` is idempotent and the thread is a daemon, so an interrupted
script neither hangs nor leaves the thread behind.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import numbers
import operator
import os
import ssl
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, SupportsFloat, TypeVar, cast

import trio

from ._client import (
    HEARTBEAT_S,
    WAITING_ADVICE,
    Client,
    Publisher,
    Subscription,
    check_states,
    checked_urls,
    open_client,
)
from ._exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    ResourceClosed,
    TrioStreamError,
)
from ._files import DEFAULT_MAX_FILE_BYTES, FileEvent, FileService
from ._matching import DEFAULT_MAX_CHANNELS, PatternSubscription
from ._portal import (
    BlockingPortal,
    Done,
    caller_timeout,
    for_the_caller,
    refuse_trio_thread,
    told_without_frames,
)
from ._protocol.array_view import View
from ._protocol.codec import EncodedPayload, encode_payload
from ._protocol.compression import Compressor, compressor
from ._protocol.frames import PUBLISH_HEAD
from ._protocol.limits import DEFAULT_PAYLOAD_LIMITS, Limits, PayloadLimits
from ._reconnect import Reconnect, State
from ._records import ChannelInfo, ClientInfo, Message, Position, ServerStats
from ._rpc import _DEFAULT, RemoteMethod, RpcProxy
from ._rpc_stream import DEFAULT_WINDOW, RemoteStream
from ._seconds import check_time, check_timeout
from ._stats import PatternStatistics, SubscriptionStatistics
from ._subscription_end import SubscriptionEnded
from ._util import counted, fresh, open_own_nursery, were

__all__ = [
    "SyncClient",
    "SyncPatternSubscription",
    "SyncPublisher",
    "SyncRemoteStream",
    "SyncRpcProxy",
    "SyncSubscription",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The publish queue: values the caller may be ahead of the connection, and their bytes.
QUEUE_FRAMES: Final = 10_000
QUEUE_BYTES: Final = 64 * 2**20
#: The trio side hands finished values back (freeing queue room) in chunks of this many.
RELEASE_EVERY: Final = 256
# Values not sent under a steady flow of publish() calls are counted and said this often.
NOT_SENT_SAID_EVERY_S: Final = 1.0
CLIENT_CLOSED: Final = "the SyncClient was closed"  # a subscription's end with its client
# A call on a closed client (not a subscription's end: see CLIENT_CLOSED).
USED_AFTER_CLOSE: Final = "this SyncClient is closed: make a new one (ts.SyncClient(url)) to go on"
#: close(): how long the server may take nothing of what is queued before the close gives up
#: (a connection that does not come back, a block reader that reads nothing); a flush that
#: makes progress (a slow reader) is waited for to its end.
CLOSE_FLUSH_S: Final = 10.0
#: How often a closing flush looks for that progress.
CLOSE_PROGRESS_CHECK_S: Final = 0.1
CLOSE_JOIN_S: Final = 5.0


_refuse_trio_thread = refuse_trio_thread


def _refuse_pickle(what: str) -> NoReturn:
    raise TypeError(
        f"a {what} cannot be pickled: it stands for a connection and a trio thread of this "
        "process; send what it reads or the URL to connect with, and make a SyncClient there"
    )


def _say_unconfirmed(count: int) -> None:
    """Values written on a connection that looks up, not acknowledged when the close gave up
    its flush: lost on a stall the heartbeat has not found yet (they were dropped without a
    word: a network tester), on their way from a slow server. Said, not raised."""
    if count:
        log.warning(
            "%s written to the server %s not acknowledged when the SyncClient closed (the "
            "server took none for %g s: a stalled connection?); some may have reached readers",
            counted(count, "value"),
            were(count),
            CLOSE_FLUSH_S,
        )


def _say_not_sent(unread: dict[str, int], dropped: dict[str, int]) -> None:
    """Say, per channel, the queued values that were never sent (not silently)."""
    for channel, count in dropped.items():
        log.warning(
            "%s published to %r %s not sent: its publisher closed while %s in the queue",
            counted(count, "value"),
            channel,
            were(count),
            "it waited" if count == 1 else "they waited",
        )
    for channel, count in unread.items():
        # publish() returned True: the channel had readers then.
        log.warning(
            "%s published to %r %s not sent: its readers left while %s in the queue",
            counted(count, "value"),
            channel,
            were(count),
            "it waited" if count == 1 else "they waited",
        )


class SyncClient:
    """A blocking client: ``with SyncClient("tcp://host:9870", name="script") as c: ...``.

    It connects in the constructor and offers every operation of the trio client as a blocking
    method. Safe to use from several threads at once.

    Raises:
        RuntimeError: created in a thread that runs trio (use ``open_client`` there).
        ConnectionClosed, AuthError, NameInUse: as ``open_client``.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        name: str | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        queue_frames: int = QUEUE_FRAMES,
        queue_bytes: int = QUEUE_BYTES,
        heartbeat: float | None = HEARTBEAT_S,
        payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
        reconnect: bool | Reconnect = True,
        wait_for_server: float = 0.0,
    ) -> None:
        _refuse_trio_thread("SyncClient")
        for argument, limit in (("queue_frames", queue_frames), ("queue_bytes", queue_bytes)):
            # InvalidArgument (a ValueError too): `except ts.TrioStreamError` catches it. A
            # whole float (64e6 bytes) is taken, as it always was.
            as_given: object = limit  # (typed int; a float is what some callers pass)
            whole = isinstance(as_given, numbers.Integral) or (
                isinstance(as_given, float) and as_given.is_integer()
            )
            if isinstance(limit, bool) or not whole or limit < 1:
                raise InvalidArgument(f"{argument} must be a whole number >= 1, not {limit!r}")
        # Checked here, before a thread starts: SyncClient([]) raised IndexError.
        self._first_url = checked_urls(url)[0]
        self._connect = partial(
            open_client,
            url,
            name=name,
            token=token,
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            heartbeat=heartbeat,
            payload_limits=payload_limits,
            reconnect=reconnect,
            wait_for_server=wait_for_server,
        )
        self._client: Client | None = None
        self._portal = BlockingPortal(USED_AFTER_CLOSE)
        self._ready = Done()  # not threading.Event: Ctrl-C in its wait could break it
        self._startup_error: BaseException | None = None
        self._closed = False
        self._close_lock = threading.Lock()
        self._stop: trio.Event | None = None
        self._flush_on_stop = True
        # The trio run and the scope around all of it, set as soon as the thread runs trio:
        # Ctrl-C in the constructor cancels the connection attempt through them.
        self._run_token: trio.lowlevel.TrioToken | None = None
        self._main_scope: trio.CancelScope | None = None
        # The publish queue (guarded by _lock, waited on with _cond): values waiting for the
        # trio side. Taken with `with self._lock`, never `with self._cond`: Condition's
        # __exit__ is Python code, and a Ctrl-C raised as it was entered, before it released
        # the lock, left the lock held for good (a script that caught KeyboardInterrupt in
        # a publish loop froze its client, and its exit). A C lock's __exit__ cannot be
        # interrupted so.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # (publisher, payload, size, time_s): the time is taken at the call, so a value
        # queued through an outage still says when it was published, not when it went out.
        self._queue: list[tuple[Publisher, EncodedPayload, int, float]] = []
        # The batch the drain works through (taken out of the queue) and its iterator, whose
        # length hint is what is left of it: values not handed on yet are there too (a
        # publisher's close counts them). The iterator keeps the place at no cost per value.
        self._batch: list[tuple[Publisher, EncodedPayload, int, float]] = []
        self._batch_left: Iterator[tuple[Publisher, EncodedPayload, int, float]] = iter(())
        # Publishers whose close gave up and counted the values it dropped (they raised it).
        self._drops_told: weakref.WeakSet[Publisher] = weakref.WeakSet()
        # Values ever queued, and ever handed on (sent, or failed): their difference is what
        # is queued or taken by the trio side and not sent yet (_queued_frames), and a flush
        # waits for those queued before it, not for those other threads keep queueing.
        self._queued_total = 0
        self._released_total = 0
        # Each publisher's last value's place in that count: its close waits for the values
        # up to there and for its own acknowledgements, not for every other publisher's.
        self._last_queued: weakref.WeakKeyDictionary[Publisher, int] = weakref.WeakKeyDictionary()
        self._queued_bytes = 0
        self._max_frames = queue_frames
        self._max_bytes = queue_bytes
        self._drainer_idle = False  # True: the trio side sleeps and must be woken
        self._dead = False  # the trio thread has ended
        self._publish_error: BaseException | None = None
        self._undelivered = 0  # set as the thread closes: see close()
        # Queued values whose send failed because the connection was lost (close() counts
        # them with the rest; an error's note did not say how many).
        self._lost_in_queue = 0
        self._lost_channels: set[str] = set()  # ... and their channels, for close()'s line
        self._unsent_channels: set[str] = set()  # of a batch the thread's end cut short
        # publish()'s publishers, one per channel and key (another key opens its own)
        self._shared: dict[tuple[str, str | None], Publisher] = {}
        self._shared_lock = threading.Lock()
        self._wake = trio.Event()  # trio side: the queue has something
        self._released = trio.Event()  # trio side: values were handed on (see _release)
        self._used: set[Publisher] = set()  # trio side: publishers that flush() waits for
        self._thread = threading.Thread(
            target=self._thread_main, name=f"trio_stream SyncClient {name or self.url}", daemon=True
        )
        self._thread.start()
        try:
            self._ready.wait()
        except BaseException as exc:  # Ctrl-C while connecting: the thread must not linger
            self._abandon_startup()
            if isinstance(exc, KeyboardInterrupt):
                raise for_the_caller(exc) from None
            raise
        if self._startup_error is not None:
            self._thread.join(CLOSE_JOIN_S)
            error, self._startup_error = self._startup_error, None
            raise for_the_caller(error)
        _OPEN.add(self)

    # -- the trio thread ---------------------------------------------------------------------
    def _thread_main(self) -> None:
        ended = self._portal.closed_error()
        try:
            trio.run(self._main)
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
            else:  # a bug in this module: say so, and fail whatever still waits
                log.exception("the SyncClient's trio thread failed")
                ended = ConnectionClosed(
                    f"this SyncClient's trio thread failed ({type(exc).__name__}: {exc}; "
                    "logged above): make a new SyncClient"
                )
        finally:
            self._portal.end(ended)
            with self._lock:
                self._dead = True
                self._cond.notify_all()
            self._ready.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        with trio.CancelScope() as self._main_scope:
            self._run_token = trio.lowlevel.current_trio_token()
            if self._closed:  # Ctrl-C in the constructor before this thread got here
                self._main_scope.cancel()
            WAITING_ADVICE.set(  # (this thread's)
                "a script started together with its server waits for it with "
                "SyncClient(..., wait_for_server=SECONDS)"
            )
            try:
                async with self._connect() as client, trio.open_nursery() as nursery:
                    client.announce_reconnects = False  # said below, with what calls do meanwhile
                    self._client = client
                    self._portal.open(nursery)
                    nursery.start_soon(self._drain)
                    nursery.start_soon(self._say_connection_changes, client)
                    self._ready.set()
                    await self._stop.wait()
                    if self._flush_on_stop:
                        await self._flush_while_progressing(nursery)
                        # Taken by send() but waiting for a connection that did not come
                        # back: close() says so (the queue's count covers the rest).
                        self._undelivered = sum(pub.take_undelivered() for pub in self._used)
                        _say_unconfirmed(sum(pub.unconfirmed for pub in self._used))
                    self._portal.detach()
                    nursery.cancel_scope.cancel()
            except Exception as exc:
                if self._ready.is_set():
                    raise
                self._startup_error = exc

    async def _say_connection_changes(self, client: Client) -> None:
        """A lost connection and its return, one line each at WARNING (which Python prints
        to stderr with no logging set up): a script's calls wait while the client
        reconnects, and without these lines it would seem to hang for no reason."""
        while True:
            if await client.wait_state("reconnecting", "closed") == "closed":
                return
            lost_at = trio.current_time()
            log.warning(
                "SyncClient %r: the connection to %s is lost; reconnecting (calls wait "
                "meanwhile; Ctrl-C stops)",
                client.name,
                client.url,
            )
            if await client.wait_state("open", "closed") == "closed":
                return
            log.warning(
                "SyncClient %r: reconnected to %s after %.1f s%s",
                client.name,
                client.url,
                trio.current_time() - lost_at,
                client._reconnected_how,
            )

    def _abandon_startup(self) -> None:
        """Ctrl-C in the constructor: stop connecting (or the connection just made), join."""
        self._closed = True
        token = self._run_token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._cancel_main)
        # Else the thread has not reached trio yet; it sees _closed and cancels by itself.
        self._thread.join(CLOSE_JOIN_S)

    def _abandon_flush(self, interrupt: BaseException) -> None:
        """Stop a close's flush at once; ``interrupt`` (Ctrl-C, say) gets a note of what
        that drops: the exit handler, which says it for a script stopped elsewhere, no
        longer knows this client."""
        token = self._run_token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._count_undelivered_and_cancel)
        with self._lock:
            # Not Thread.join: interrupted in a join, Python 3.11 takes the thread for ended
            # (its bpo-45274 fix releases the thread's own lock), and joins return at once.
            self._cond.wait_for(lambda: self._dead, CLOSE_JOIN_S)
            unsent = self._queued_frames() + self._undelivered + self._lost_in_queue
            where = self._unsent_where() if unsent else ""
        if unsent:
            interrupt.add_note(
                f"{counted(unsent, 'published value')}{where} {were(unsent)} dropped: the "
                "close was interrupted before the server took them"
            )

    def _count_undelivered_and_cancel(self) -> None:
        # What send() took but the connection has not delivered: counted here, since the
        # flush that counts it at its end is cancelled (and the client's close then does
        # not log it again).
        self._undelivered = sum(pub.take_undelivered() for pub in self._used)
        self._cancel_main()

    def _cancel_main(self) -> None:
        if self._main_scope is not None:
            self._main_scope.cancel()

    def _request_stop(self, flush: bool = True) -> None:
        """Ask the trio thread to finish (from any thread; harmless once it has)."""
        self._flush_on_stop = flush
        self._portal.run_sync_soon(self._stop_in_trio)

    def _stop_in_trio(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # -- the portal (trio_stream/_portal.py) ----------------------------------------------------
    def _call(self, fn: Callable[[], Awaitable[T]], keep: Callable[[T], object] | None = None) -> T:
        """Run ``fn()`` in the trio thread and wait for its outcome (``keep``: see
        BlockingPortal.call)."""
        try:
            return self._portal.call(fn, keep)
        except BaseException as caught:
            if not told_without_frames(caught):
                raise
            error = caught
        # Raised again from here, not from the portal: a script's and a notebook's traceback
        # shows its own line, the method it called and this line.
        raise error.with_traceback(None)

    def _run_sync(self, fn: Callable[[], T]) -> T:
        """Run the plain function ``fn()`` in the trio thread (client state lives there)."""
        try:
            return self._portal.run_sync(fn)
        except BaseException as caught:
            if not told_without_frames(caught):
                raise
            error = caught
        raise error.with_traceback(None)  # (as _call)

    @property
    def _trio_client(self) -> Client:
        client = self._client
        if client is None:
            raise ConnectionClosed(USED_AFTER_CLOSE)
        return client

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """This client's name as the server knows it."""
        return self._trio_client.name

    @property
    def client_id(self) -> int:
        """The id the server gave this connection (``Client.client_id``)."""
        return self._trio_client.client_id

    @property
    def limits(self) -> Limits:
        """The server's limits from its welcome (max_frame_bytes, the windows...)."""
        return self._trio_client.limits

    @property
    def closed(self) -> bool:
        """Closed by ``close()``, by its thread's end, or its client gave up reconnecting."""
        return self._closed or self._dead or self._trio_client.closed

    @property
    def state(self) -> State:
        """``"connecting"``, ``"open"``, ``"reconnecting"`` or ``"closed"`` (see Client.state)."""
        if self._closed or self._dead or self._client is None:
            return "closed"
        return self._client.state

    @property
    def url(self) -> str:
        """The URL of the server this client is connected to (of a list given: the one it
        reached last, as ``Client.url``)."""
        client = self._client
        return self._first_url if client is None else client.url

    def wait_state(self, *states: State, timeout: float | None = None) -> State:
        """Block until the client is in one of ``states``; returns it.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
            InvalidArgument: no states, or a name that is not a state.
        """
        check_states(states)
        timeout = check_timeout(timeout)
        if "closed" in states and self.state == "closed":
            return "closed"  # as Client.wait_state, not ConnectionClosed
        client = self._trio_client
        try:
            return self._call(
                partial(
                    _with_timeout,
                    timeout,
                    partial(client.wait_state, *states),
                    client,
                    f"not {' or '.join(map(repr, states))}",
                )
            )
        except ConnectionClosed:
            # Closed by another thread while this one waited: what it waited for.
            if "closed" in states and self.state == "closed":
                return "closed"
            raise

    def close(self, *, flush: bool = True) -> None:
        """Send what is queued (with ``flush``), say goodbye, and end the thread. Idempotent.

        Raises:
            TrioStreamError: a background publish failed, or queued values could not be sent
                within 10 s; the connection is closed all the same.
        """
        if threading.current_thread() is not self._thread:
            # As every other blocking method: a close in a trio program's own thread blocked
            # its event loop for up to the flush's 10 s (a script user).
            _refuse_trio_thread("SyncClient.close()")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _OPEN.discard(self)
        if self._portal.forked:  # the thread and the connection are the parent's, not ours
            return
        lost_for_good = self._trio_client.state == "closed"  # the connection, before this close
        self._request_stop(flush)
        self._portal.close()
        if threading.current_thread() is not self._thread:
            try:
                self._join_thread(flush)
            except BaseException as interrupt:  # Ctrl-C while the close waits for its flush
                try:
                    self._abandon_flush(interrupt)
                except KeyboardInterrupt as again:  # Ctrl-C again, as the close stops
                    # One Ctrl-C to say, not two tracebacks of threading's waits.
                    raise again.with_traceback(None) from None
                if not told_without_frames(interrupt):
                    raise
                # Without threading's frames of the join, as every other blocking call
                # raises it (_call): the script's line and close() say it all.
                raise interrupt.with_traceback(None)  # noqa: B904 (its context is its own)
        with self._lock:
            error, self._publish_error = self._publish_error, None
            unsent = self._queued_frames() + self._undelivered + self._lost_in_queue
            where = self._unsent_where() if unsent else ""
        if unsent:
            how_many = f"{counted(unsent, 'published value')}{where} {were(unsent)}"
            if lost_for_good:
                message = (
                    f"{how_many} not delivered: the connection to "
                    f"{self.url} was lost for good before the server took them (reconnect "
                    "is off, or gave up); some may have reached readers, none is sent again"
                )
            elif flush:
                message = (
                    f"{how_many} not sent before the SyncClient "
                    f"closed: the server took none of them for {CLOSE_FLUSH_S:g} s, and the "
                    "close gave up (a server that does not come back, a block reader that reads "
                    "nothing); they are dropped. To wait longer for a server that is coming "
                    "back, call flush(timeout=...) before close()"
                )
            else:
                message = (
                    f"{how_many} dropped: the SyncClient closed without sending "
                    f"{'it' if unsent == 1 else 'them'} (close(flush=False), or Ctrl-C)"
                )
            if flush and error is None:
                error = ConnectionClosed(message)
            elif error is not None:  # raised below: the count goes with it, not to a log
                error.add_note(message)
            else:
                log.warning("%s", message)
        if error is not None:
            raise for_the_caller(error)

    def _join_thread(self, flush: bool) -> None:
        """Wait for the thread's end: with ``flush``, for as long as its flush makes
        progress (it gives up by itself after CLOSE_FLUSH_S without any)."""
        if not flush:
            self._thread.join(CLOSE_JOIN_S)
            return
        seen = None
        while self._thread.is_alive():
            progress = self._flush_progress()
            if progress == seen:
                return  # nothing for a whole wait, the thread's own bound included
            seen = progress
            self._thread.join(CLOSE_JOIN_S + CLOSE_FLUSH_S)

    def __enter__(self) -> SyncClient:
        # A closed client entered again would only fail at its first use, inside the block.
        if self._closed:
            raise ConnectionClosed(USED_AFTER_CLOSE)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving on an exception (Ctrl-C above all): close at once, do not wait to flush.
        self.close(flush=t is None)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle("SyncClient")

    def __repr__(self) -> str:
        return f"<SyncClient {self.url} {self.state}>"

    # -- channels and introspection ----------------------------------------------------------
    def create_channel(
        self,
        channel: str,
        *,
        public: bool = True,
        key: str | None = None,
        lifetime: float | None = None,
        history: int = 0,
        single_writer: bool = False,
        keep: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Create a channel owned by this client (see ``Client.create_channel``)."""
        self._call(
            partial(
                self._trio_client.create_channel,
                channel,
                public=public,
                key=key,
                lifetime=lifetime,
                history=history,
                single_writer=single_writer,
                keep=keep,
                meta=meta,
            )
        )

    def delete_channel(self, channel: str, *, key: str | None = None) -> None:
        """Delete a channel (see ``Client.delete_channel``)."""
        self._call(partial(self._trio_client.delete_channel, channel, key=key))

    def channels(self) -> list[ChannelInfo]:
        """The public channels and this client's own (see ``ChannelInfo``)."""
        return self._call(self._trio_client.channels)

    def clients(self) -> list[ClientInfo]:
        """The connected clients (see ``ClientInfo``)."""
        return self._call(self._trio_client.clients)

    def stats(self) -> ServerStats:
        """The server's figures (see ``ServerStats``)."""
        return self._call(self._trio_client.stats)

    # -- writing -----------------------------------------------------------------------------
    def publish(
        self,
        channel: str,
        value: Any,
        *,
        key: str | None = None,
        compress: str | None = None,
        time_s: SupportsFloat | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Queue one value for ``channel``; False (nothing queued) while it has no readers.

        Returns at once unless the queue is full (then it waits for room). The value is
        encoded here, so the caller may change or reuse it right away. The first publish to a
        channel opens its publisher and waits for the server (so that a missing channel raises
        ChannelNotFound here); later ones do not wait. ``msg.time`` is ``time_s``, or the
        wall clock at this call (as ``Publisher.send``). ``timeout`` bounds the wait (for
        room, and for the first publish's server): an instrument loop that must not stall
        through an outage gives one and counts what it could not queue.

        Raises:
            FrameTooLarge, TypeError: as ``Publisher.send`` (nothing queued).
            TimeoutError: no room (or no publisher) within ``timeout`` seconds (nothing
                queued).
            TrioStreamError: an earlier queued value could not be sent (raised once).
        """
        compress_fn = compressor(compress)
        deadline = _deadline(timeout)
        pub = self._shared.get((channel, key))
        if pub is None or not pub.is_open:
            with self._shared_lock:
                pub = self._shared.get((channel, key))
                if pub is None or not pub.is_open:
                    opening = partial(self._trio_client.open_publisher, channel, key=key)
                    if deadline is not None:
                        left = max(0.0, deadline - time.monotonic())
                        what = f"no publisher of {channel[:80]!r} opened"
                        client = self._trio_client
                        # The message says the caller's timeout, not what was left of it
                        # ("within 1.99999 s": a script user).
                        opening = partial(
                            _with_timeout, left, opening, client, what, given_s=timeout
                        )
                    pub = self._call(opening)
                    self._shared[channel, key] = pub
        return self._enqueue(pub, value, compress_fn, time_s, deadline)

    def _enqueue(
        self,
        pub: Publisher,
        value: Any,
        compress: Compressor | None = None,
        time_s: SupportsFloat | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Queue one encoded value; ``deadline`` (``time.monotonic()``) bounds the wait for
        room in a full queue."""
        stamp = time.time() if time_s is None else check_time(time_s)
        self._portal.check_process()  # a forked child's queue has nobody to send it
        if not pub.wanted:  # the trio publisher would drop it: spare the encoding
            pub.try_first_value(value)  # (but a first value's: see there)
            with self._lock:
                self._raise_publish_error()
            return False
        pieces = encode_payload(value, copy=False)  # (joined below)
        compress = compress or pub.compressor
        if compress is not None:  # here, in the caller's thread: zlib and zstd release the GIL
            pieces = compress(pieces)
        data = b"".join(pieces)
        size = len(data)
        limit = self._trio_client.limits.max_frame_bytes
        if size + PUBLISH_HEAD.size > limit:
            raise FrameTooLarge(  # (its frame's bytes, as the trio client says)
                f"this value encodes to {size + PUBLISH_HEAD.size} bytes, over the server's "
                f"limit of {limit} "
                "bytes; send it in parts or raise max_frame_bytes on the server "
                "(serve --max-frame-bytes)"
            )
        item = (pub, EncodedPayload(data), size, stamp)
        wake = False
        try:
            with self._lock:
                self._raise_publish_error()
                queued = self._queued_total - self._released_total  # (_queue_full, inline)
                if queued and (
                    queued >= self._max_frames or self._queued_bytes + size > self._max_bytes
                ):
                    _refuse_trio_thread("publish() with a full queue")
                    while not self._dead and self._queue_full(size):
                        left = None
                        if deadline is not None:
                            left = min(deadline - time.monotonic(), threading.TIMEOUT_MAX)
                            if left <= 0:
                                raise self._queue_full_timeout(pub.channel)
                        try:
                            self._cond.wait(left)
                        except KeyboardInterrupt as exc:  # without threading's frames
                            raise for_the_caller(exc) from None
                    self._raise_publish_error()
                if self._dead or self._closed:
                    raise ConnectionClosed(USED_AFTER_CLOSE)
                self._queue.append(item)
                self._queued_total += 1
                self._last_queued[pub] = self._queued_total
                self._queued_bytes += size
                wake = self._drainer_idle
                self._drainer_idle = False
            if wake:
                self._portal.run_sync_soon(self._wake_drainer)
        except BaseException:
            if wake:
                # Ctrl-C (or another signal's exception) came between taking the drain's
                # wake-up and sending it: the drain slept with values queued, for good, and
                # every flush and close with it. It is idle again: the next publish, or a
                # flush, wakes it (idle while it is awake costs one spare wake-up).
                self._drainer_idle = True
            raise
        return True

    def _queue_full_timeout(self, channel: str) -> TimeoutError:
        """A full queue's wait ran out (the caller holds _lock)."""
        return caller_timeout(
            f"no room in the publish queue for a value of {channel[:80]!r} within its timeout "
            f"({self._queued_frames()} values, {self._queued_bytes} bytes queued; this one "
            f"is not){_reconnecting_note(self._trio_client)}"
        )

    def _unsent_where(self) -> str:
        """ " to 'ch'" (or "to 'a', 'b' and 3 more channels"): where the values close() says
        were not sent were going (the caller holds _lock; the trio thread has ended). Said
        only by a publisher's own close before, it named none for publish() or a publisher
        the script never closed (an instrument loop stopped by Ctrl-C: a first hour)."""
        names = {queued[0].channel for queued in (*self._batch, *self._queue)}
        names.update(self._lost_channels, self._unsent_channels)
        names.update(pub.channel for pub in self._used if pub.undelivered)
        if not names:
            return ""
        shown = sorted(names)[:3]
        quoted = ", ".join(f"{name[:80]!r}" for name in shown)
        more = len(names) - len(shown)
        return f" to {quoted}" + (f" and {counted(more, 'more channel')}" if more else "")

    def _queued_frames(self) -> int:
        """Values queued or taken by the trio side and not sent yet (the caller holds _lock)."""
        return self._queued_total - self._released_total

    def _queue_full(self, size: int) -> bool:
        """No room for a value of ``size`` bytes (the caller holds _lock); one value always
        fits an empty queue."""
        queued = self._queued_total - self._released_total
        return bool(queued) and (
            queued >= self._max_frames or self._queued_bytes + size > self._max_bytes
        )

    def _raise_publish_error(self) -> None:
        """Raise (once) what went wrong in the background; the caller holds _cond."""
        error = self._publish_error
        if error is not None:
            self._publish_error = None
            raise for_the_caller(error)

    def _wake_drainer(self) -> None:
        self._wake.set()

    async def _drain(self) -> None:
        """The trio side of the publish queue: take it in batches, feed the publishers."""
        cond = self._cond
        # Values not sent, by channel, said when the queue is empty (or every
        # NOT_SENT_SAID_EVERY_S under a steady flow): a flush of several batches wrote a line
        # per batch for one departure of the readers (a notebook).
        unread: dict[str, int] = {}  # values that found no reader any more
        dropped: dict[str, int] = {}  # values whose publisher closed first
        counted_since = 0.0
        while True:
            # A new event before announcing idleness: a wake-up scheduled from now on sets it.
            self._wake = trio.Event()
            with self._lock:
                batch, self._queue = self._queue, []
            if unread or dropped:
                if not batch or trio.current_time() - counted_since >= NOT_SENT_SAID_EVERY_S:
                    _say_not_sent(unread, dropped)
                    unread, dropped = {}, {}
            elif batch:
                counted_since = trio.current_time()
            if not batch:
                with self._lock:
                    if self._queue:
                        continue  # queued while the line was said
                    self._drainer_idle = True
                    cond.notify_all()
                await self._wake.wait()
                continue
            frames = nbytes = 0
            self._batch = batch
            self._batch_left = batch_left = iter(batch)
            try:
                for pub, payload, size, stamp in batch_left:
                    failure = pub.failure
                    if isinstance(failure, ResourceClosed):
                        # Closed while this value waited (its `with` block ended on an
                        # exception, or its close gave up and counted it already).
                        if pub not in self._drops_told:
                            dropped[pub.channel] = dropped.get(pub.channel, 0) + 1
                    elif failure is not None:  # the channel was deleted, the client closed
                        self._publish_failed(failure, pub, queued=True)
                    else:
                        try:
                            if not await pub.send(payload, time_s=stamp):
                                unread[pub.channel] = unread.get(pub.channel, 0) + 1
                            self._used.add(pub)
                        except ResourceClosed:  # closed while this send waited for its window
                            if pub not in self._drops_told:
                                dropped[pub.channel] = dropped.get(pub.channel, 0) + 1
                        except TrioStreamError as exc:
                            self._publish_failed(exc, pub, queued=True)
                    frames += 1
                    nbytes += size
                    if frames == RELEASE_EVERY:
                        self._release(frames, nbytes)
                        frames = nbytes = 0
            except BaseException:
                # Cancelled mid-batch (the thread closing while a send waits): the values from
                # the one being sent on are not sent, and close() names their channels.
                at = len(batch) - operator.length_hint(batch_left) - 1
                self._unsent_channels.update(queued[0].channel for queued in batch[max(at, 0) :])
                raise
            finally:
                # Also when cancelled (the thread closing while a send waits for the
                # connection): what send() took is the publisher's to count (undelivered),
                # so the queue's count must not count it as well.
                self._release(frames, nbytes)
                self._batch = []

    def _release(self, frames: int, nbytes: int) -> None:
        with self._lock:
            self._queued_bytes -= nbytes
            self._released_total += frames
            self._cond.notify_all()
        self._released.set()

    def _publish_failed(
        self, error: TrioStreamError, pub: Publisher, *, queued: bool = False
    ) -> None:
        """``queued``: the failure is one queued value's, which never reached the publisher's
        window (a flush's failure is not a value: what it waited for is in the window, and
        close() counts it as the publisher's undelivered)."""
        with self._lock:
            if queued and isinstance(error, ConnectionClosed):
                self._lost_in_queue += 1
                self._lost_channels.add(pub.channel)
            if self._publish_error is None:
                # A fresh exception: the same one (a publisher's end) may be reported again.
                try:
                    fresh = type(error)(str(error))
                except TypeError:
                    fresh = TrioStreamError(str(error))
                fresh.add_note(f"(values queued by publish() for {pub.channel!r} were not sent)")
                self._publish_error = fresh

    async def _flush_while_progressing(
        self, nursery: trio.Nursery, only: Publisher | None = None
    ) -> bool:
        """:meth:`_flush`, given up once the server has taken nothing for CLOSE_FLUSH_S:
        True if it ended. A bounded wait would drop what a slow but live reader had not
        taken yet; an unbounded one would hang a close on a server that is gone. ``only``:
        flush as far as that publisher's values (see _flush)."""
        with trio.CancelScope(deadline=trio.current_time() + CLOSE_FLUSH_S) as flush_scope:

            async def extend_on_progress(watch_scope: trio.CancelScope) -> None:
                with watch_scope:
                    last = self._flush_progress()
                    while True:
                        await trio.sleep(CLOSE_PROGRESS_CHECK_S)
                        now = self._flush_progress()
                        if now != last:
                            last = now
                            flush_scope.deadline = trio.current_time() + CLOSE_FLUSH_S

            watch_scope = trio.CancelScope()
            nursery.start_soon(extend_on_progress, watch_scope)
            try:
                if only is None:
                    await self._flush()
                else:
                    with self._lock:
                        queued = self._last_queued.get(only, 0)
                    await self._flush(queued, only=only)
            finally:
                watch_scope.cancel()
        return not flush_scope.cancelled_caught

    def _flush_progress(self) -> tuple[int, int]:
        """What grows while a flush makes progress: values handed on, frames acknowledged."""
        with self._lock:
            released = self._released_total
        return released, sum(pub.acknowledged for pub in self._used)

    def _take_undelivered(self, pub: Publisher) -> int:
        """``pub``'s undelivered values, for its own close to say: not the client's close."""
        self._used.discard(pub)
        return pub.take_undelivered()

    async def _flush_and_close_publisher(self, pub: Publisher) -> tuple[int, int]:
        """A publisher's close: wait while the flush makes progress (as the client's close
        does), then close it. Returns the values still queued for ``pub`` when the flush gave
        up, which are dropped, and those it took that were not delivered (Publisher's count).
        """
        async with open_own_nursery() as nursery:
            await self._flush_while_progressing(nursery, only=pub)
        dropped = 0

        def count_dropped() -> None:
            # Counted as the close happens, not before it: a close that waits (for the end
            # of a hold for readers) leaves the drain sending meanwhile.
            nonlocal dropped
            with self._lock:
                batch = self._batch
                # Mid-batch the drain waits in the send of the value before the iterator's
                # place (no other await there): that send raises once the publisher is closed.
                at = len(batch) - operator.length_hint(self._batch_left) - 1
                waiting = [*batch[max(at, 0) :], *self._queue]
            dropped = sum(1 for queued in waiting if queued[0] is pub)
            if dropped:  # the close says so: the drain passes them by without a second word
                self._drops_told.add(pub)

        self._used.discard(pub)  # a closed publisher gets no more acknowledgements
        undelivered = 0
        with contextlib.suppress(ConnectionClosed):
            undelivered = await pub.close_delivering(deliver=False, before_close=count_dropped)
        return dropped, undelivered

    async def _flush(self, queued: int | None = None, only: Publisher | None = None) -> None:
        """Wait until the values queued before (the first ``queued`` ever; None: all so far)
        are handed on, then until the server has taken what the publishers sent (``only``:
        what that one sent; a publisher's close does not wait for the others' readers).

        Raises:
            ConnectionClosed: the connection is lost for good (to every flush, not once).
        """
        with self._lock:
            if queued is None:
                queued = self._queued_total
        while True:
            with self._lock:
                if self._released_total >= queued:
                    break
                if self._queue and self._drainer_idle:
                    # Values queued and the drain asleep: their publish was interrupted
                    # before it woke it (see _enqueue), and no publish came since.
                    self._drainer_idle = False
                    self._wake.set()
            # Shared by every flush waiting (several threads may flush at once): replaced
            # only once set, so that no waiter is left holding an event nobody will set.
            if self._released.is_set():
                self._released = trio.Event()
            await self._released.wait()
        lost: ConnectionClosed | None = None
        for pub in list(self._used) if only is None else [only]:
            if pub.is_open:
                try:
                    await pub.wait_acknowledged()  # what it sent so far: not what follows
                except ConnectionClosed:
                    pass  # its failure, below, is raised to every flush (not kept for close)
                except ResourceClosed:
                    pass  # closed meanwhile by its owner, whose close says what it dropped
                except TrioStreamError as exc:
                    self._publish_failed(exc, pub)
            failure = pub.failure
            if failure is not None and not isinstance(failure, ConnectionClosed):
                # Closed by its owner (whose close said what it did not deliver), or its
                # channel ended. One the connection's loss ended stays, so that close()
                # counts its undelivered values.
                self._used.discard(pub)
            elif failure is not None and not self._closed:
                lost = failure
        if lost is not None:
            # Raised to every flush, not once as a background publish's error: a second
            # thread's flush returned as if all had been delivered.
            raise ConnectionClosed(str(lost))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the server has taken every value published so far, or dropped it
        before sending: a value whose channel lost its readers while it waited in the queue
        (``publish`` then goes nowhere, as ``send`` returns False; one WARNING says how
        many). Done, a value the server took is safe from this process's end.

        Raises:
            TimeoutError: not within ``timeout`` seconds (the values stay queued).
            TrioStreamError: a queued value could not be sent (raised once).
            ConnectionClosed: the connection is lost for good (to every flush from then on).
            InvalidArgument: a ``timeout`` that is not None or seconds >= 0.
        """
        timeout = check_timeout(timeout)
        with self._lock:
            queued = self._queued_total  # published so far, by any thread
        self._call(
            partial(
                _with_timeout,
                timeout,
                partial(self._flush, queued),
                self._trio_client,
                "the values published were not all taken by the server",
            )
        )
        with self._lock:
            self._raise_publish_error()

    def publisher(
        self, channel: str, *, key: str | None = None, compress: str | None = None
    ) -> SyncPublisher:
        """``with c.publisher("ch") as pub: pub.send(value)``; flushes and closes at the end.

        ``compress``: "zlib" or "zstd" as ``Client.publisher`` (values are compressed in the
        sending thread).

        The publisher is open once this returns, so it also works without ``with`` (a
        notebook cell opens it, later cells send): ``pub.close()`` then flushes and closes.

        Raises:
            ChannelNotFound: no such channel (or a private one and the wrong key).
        """
        pub = self._call(
            partial(self._trio_client.open_publisher, channel, key=key, compress=compress),
            keep=self._close_on_interrupt,
        )
        return SyncPublisher(self, pub)

    open_publisher = publisher  # the trio client's name for the form without `with`

    def _close_on_interrupt(self, opened: Publisher | Subscription) -> None:
        """Ctrl-C came as the server's answer did: what it opened is nobody's (a block
        reader left open would hold its channel's writers back), so it closes."""
        self._portal.run_sync_soon(opened.close_nowait)

    async def _close_publisher(self, pub: Publisher, deliver: bool = True) -> int:
        """Close ``pub``; returns how many values it took were not delivered (see
        Publisher.close_delivering)."""
        self._used.discard(pub)  # a closed publisher gets no more acknowledgements
        return await pub.close_delivering(deliver=deliver)

    def _close_publisher_nowait(self, pub: Publisher) -> None:
        self._used.discard(pub)
        # What send() took and waits for the connection is dropped: said, not silently
        # (a close on Ctrl-C while the client reconnects).
        pub.say_dropped(pub.undelivered)
        pub.close_nowait()

    # -- reading -----------------------------------------------------------------------------
    def subscribe(
        self,
        channel: str,
        *,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        since: Position | None = None,
        wait_channel: bool = False,
        wait_timeout: float | None = None,
        prefetch: bool = True,
    ) -> SyncSubscription:
        """``with c.subscribe("ch", policy=..., size=...) as sub: for msg in sub: ...``.

        Arguments as ``Client.subscribe``, and ``wait_timeout``: with ``wait_channel``, how
        long to wait for the channel (a trio program puts ``trio.move_on_after`` around the
        wait; a script cannot, and a private channel without its right key looks missing
        for good). ``sub.get(timeout=...)`` takes one message. The subscription stands once
        this returns, so it also works without ``with`` (a notebook cell subscribes, later
        cells read): ``sub.close()`` then unsubscribes.

        Raises:
            TimeoutError: no such channel came within ``wait_timeout`` seconds.
        """
        if wait_timeout is not None and not wait_channel:
            raise InvalidArgument("wait_timeout bounds wait_channel=True: give both, or neither")
        if wait_timeout is not None and not wait_timeout >= 0:  # NaN fails this too
            raise InvalidArgument(f"wait_timeout must be >= 0 seconds, not {wait_timeout!r}")
        client = self._trio_client
        what = f"no channel named {str(channel)[:100]!r} came"  # a non-str: refused below
        advice = " (wait_timeout; a private channel also needs its key: key=...)"
        opening = partial(
            client.open_subscription,
            channel,
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            key=key,
            window=window,
            block_timeout=block_timeout,
            sender=sender,
            view=view,
            since=since,
            wait_channel=wait_channel,
            prefetch=prefetch,
        )
        # (One short statement: a notebook's traceback lists the whole statement that failed.)
        waited = partial(_with_timeout, wait_timeout, opening, client, what, advice)
        sub = self._call(waited, keep=self._close_on_interrupt)
        return SyncSubscription(self, sub)

    open_subscription = subscribe  # the trio client's name for the form without `with`

    def subscribe_matching(
        self,
        pattern: str,
        *,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        prefetch: bool = True,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        since: Position | None = None,
        wait_channel: bool = False,
    ) -> SyncPatternSubscription:
        """``with c.subscribe_matching("sensors.*") as matching: for msg in matching: ...``.

        Every channel whose name matches the glob, now and created later (arguments and
        behaviour as ``Client.subscribe_matching``); ``matching.get(timeout=...)`` takes one
        message, ``matching.channels`` lists the channels subscribed. It stands once this
        returns, so it also works without ``with``: ``matching.close()`` then ends it.
        """
        client = self._trio_client
        opening = partial(
            client._open_matching,
            pattern,
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            key=key,
            window=window,
            block_timeout=block_timeout,
            sender=sender,
            view=view,
            prefetch=prefetch,
            max_channels=max_channels,
            since=since,
            wait_channel=wait_channel,
        )
        matching = self._call(opening, keep=self._close_matching_on_interrupt)
        return SyncPatternSubscription(self, matching)

    def _close_matching_on_interrupt(self, opened: PatternSubscription) -> None:
        """As _close_on_interrupt, for a pattern subscription that Ctrl-C left nobody's."""
        self._portal.run_sync_soon(opened.close_nowait)

    # -- RPC ---------------------------------------------------------------------------------
    def expose(self, obj: object, name: str | None = None, *, thread: bool = True) -> list[str]:
        """Let other clients call ``obj``'s ``rpc_*`` methods (see ``Client.expose``).

        Sync methods run in a worker thread by default here (one call at a time for this
        object), because sync code tends to block; with ``thread=False`` they run in the
        client's trio thread and must be quick. Async methods run in the trio thread.
        """
        client = self._trio_client
        return self._run_sync(partial(client.expose, obj, name, thread=thread))

    def unexpose(self, target: object) -> list[str]:
        """Withdraw what ``expose`` exposed: the object itself, a method's full name, or the
        ``name=`` it was exposed under (see ``Client.unexpose``). New calls of those methods
        are refused; calls already running run on to their end. Returns the names withdrawn.
        On a closed SyncClient it only lets go (there is nobody to tell), as the trio
        Client's does.

        Raises:
            InvalidArgument: nothing exposed is ``target`` (the message lists what is), or
                a name that says nothing or says two things (see ``Client.unexpose``).
        """
        client = self._trio_client
        portal = self._portal
        portal.check_process()  # a forked child: the client (and its socket) is the parent's
        if portal.is_open:
            with contextlib.suppress(ConnectionClosed):  # (closed meanwhile: as closed)
                return self._run_sync(partial(client.unexpose, target))
        # Closed: a `finally: c.unexpose(driver)` raised ConnectionClosed where the trio
        # Client's lets go. Every edit below is made under the lock: two threads may let go
        # at once (two drivers' `finally`), and one iterating the state another edits failed
        # (dictionary changed size during iteration).
        if threading.current_thread() is self._thread:
            # In its own trio thread once close() began (an exposed thread=False method that
            # closes its client, then lets go of itself): the state is this thread's. (A
            # wait for this very thread's end froze its event loop, then raised.)
            with self._lock:
                return client.unexpose(target)
        with self._lock:
            if self._dead:  # its trio thread has ended: the state is no thread's now
                return client.unexpose(target)
        _refuse_trio_thread("SyncClient.unexpose() while the client closes")
        # close() has begun, its trio thread still runs (a close's flush may take
        # CLOSE_FLUSH_S and more), and still uses the RPC state as it closes (calls arrive
        # and end, a reconnect exposes again); telling the server and letting go of an
        # object's turn belong there too. So the edit is handed to it through its run's
        # token (the portal refuses calls once close() began), which runs it at its loop's
        # next turn, flush or not. (A wait for the thread's end, bounded by CLOSE_JOIN_S,
        # raised ConnectionClosed during a longer flush.)
        done: list[tuple[list[str], BaseException | None]] = []

        def edit() -> None:  # in the trio thread
            with self._lock:
                try:
                    done.append((client.unexpose(target), None))
                except BaseException as exc:  # InvalidArgument: the caller's, raised there
                    done.append(([], exc))
                finally:
                    self._cond.notify_all()

        token = self._run_token
        try:
            if token is None:  # (not reached: a client made has its run)
                raise trio.RunFinishedError
            token.run_sync_soon(edit)
        except (trio.RunFinishedError, OSError):  # (OSError: a run that died, see _portal)
            # The run is over (its tasks have ended): no edit but the callbacks it still
            # runs, which take the lock.
            with self._lock:
                return client.unexpose(target)
        with self._lock:
            # Trio runs every callback it took, as its run ends too; a run that died without
            # running it ended its thread (_dead), and nothing else edits the state then.
            # Bounded: a trio thread whose loop is blocked (an exposed thread=False method
            # that waits for the very thread that unexposes) never runs it; the wait was
            # bounded by CLOSE_JOIN_S before the hand-over, and a close takes at most about
            # both bounds while its loop turns.
            wait_s = CLOSE_JOIN_S + CLOSE_FLUSH_S
            if not self._cond.wait_for(lambda: bool(done) or self._dead, timeout=wait_s):
                raise ConnectionClosed(
                    f"this SyncClient is closing and its trio thread has not turned its "
                    f"event loop for {wait_s:g} s (an exposed method that blocks it?): the "
                    "unexpose is queued there, and takes effect if that loop turns again"
                )
            if not done:
                return client.unexpose(target)
        withdrawn, error = done[0]
        if error is not None:
            raise for_the_caller(error)
        return withdrawn

    def rpc(
        self,
        provider: str,
        *,
        timeout: float | None = 5.0,
        wait_provider: bool = False,
        wait_timeout: float | None = None,
        wait_reconnect: bool = True,
    ) -> SyncRpcProxy:
        """A proxy whose methods block: ``c.rpc("daq").read(10)``.

        ``wait_provider``: wait while no client of that name is connected (or it exposes
        nothing yet), for at most ``wait_timeout`` seconds (None: as long as it takes).
        ``wait_reconnect``: as ``Client.rpc``'s (False: a provider that is reconnecting
        raises RpcError at once).

        Raises:
            RpcError: no such client connected, or it exposes no methods.
            RpcTimeout: the provider did not answer in time.
            TimeoutError: no such provider within ``wait_timeout`` seconds.
        """
        if wait_timeout is not None and not wait_provider:
            raise InvalidArgument("wait_timeout bounds wait_provider=True: give both, or neither")
        wait_timeout = check_timeout(wait_timeout)
        looking = partial(
            self._trio_client.rpc,
            provider,
            timeout=timeout,
            wait_provider=wait_provider,
            wait_reconnect=wait_reconnect,
        )
        if wait_timeout is not None:
            what = f"no provider named {provider[:100]!r} with methods"
            looking = partial(_with_timeout, wait_timeout, looking, self._trio_client, what)
        return SyncRpcProxy(self, self._call(looking))

    # A per-call `timeout` is this method's public contract, as on Client.call.
    def call(
        self,
        provider: str,
        method: str,
        /,
        *args: Any,
        timeout: float | None = 5.0,
        wait_reconnect: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` of the client named ``provider`` once, without a proxy (see
        ``Client.call``): ``c.call("daq", "read", 10)``."""
        calling = partial(
            self._trio_client.call,
            provider,
            method,
            *args,
            timeout=timeout,
            wait_reconnect=wait_reconnect,
            **kwargs,
        )
        return self._call(calling)

    # -- files (see Client.accept_files, send_file, fetch_file) ------------------------------
    def accept_files(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        overwrite: bool = False,
        share: bool = False,
        on_event: Callable[[FileEvent], None] | None = None,
    ) -> FileService:
        """Receive files into ``directory`` (see ``Client.accept_files``); ``on_event`` is
        called in the client's trio thread and must be quick."""
        return self._run_sync(
            partial(
                self._trio_client.accept_files,
                directory,
                max_bytes=max_bytes,
                overwrite=overwrite,
                share=share,
                on_event=on_event,
            )
        )

    def send_file(
        self,
        target: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """Send a file to ``target`` and wait until it is stored (see ``Client.send_file``)."""
        return self._call(
            partial(self._trio_client.send_file, target, path, name=name, progress=progress)
        )

    def fetch_file(
        self,
        source: str,
        name: str,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Fetch ``name`` from ``source`` into ``dest`` (see ``Client.fetch_file``)."""
        return self._call(
            partial(
                self._trio_client.fetch_file,
                source,
                name,
                dest,
                overwrite=overwrite,
                progress=progress,
            )
        )


async def _with_timeout(
    timeout_s: float | None,
    fn: Callable[[], Awaitable[T]],
    client: Client,
    what: str,
    advice: str = "",
    *,
    given_s: float | None = None,
) -> T:
    """``fn()`` within the caller's ``timeout=``; the TimeoutError says ``what`` was not done
    within ``given_s`` (the caller's, when ``timeout_s`` is what was left of it), then
    ``advice``, and when ``client``'s connection is what kept it (a flush or a wait for
    readers during an outage)."""
    try:
        with trio.fail_after(math.inf if timeout_s is None else timeout_s):
            return await fn()
    except trio.TooSlowError:
        shown = timeout_s if given_s is None else given_s
        message = f"{what} within {shown:g} s{advice}" + _reconnecting_note(client)
        raise caller_timeout(message) from None


def _deadline(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` by which a call given ``timeout=`` gives up (None: never)."""
    if timeout is None:
        return None
    seconds = check_timeout(timeout)
    return None if seconds is None or math.isinf(seconds) else time.monotonic() + seconds


def _reconnecting_note(client: Client) -> str:
    """Said after a blocking call's timeout while the connection is lost: the wait was the
    outage's, not the channel's silence or the server's slowness."""
    if client.state == "reconnecting":
        return f" (the connection to {client.url} is lost; reconnecting)"
    return ""


class SyncPublisher:
    """A publisher with blocking methods, from :meth:`SyncClient.publisher`."""

    def __init__(self, client: SyncClient, pub: Publisher) -> None:
        self._client = client
        self._pub = pub
        self._closed = False
        self.channel = pub.channel

    @property
    def readers(self) -> int:
        """The channel's reader count, kept current by the server; 0 once this publisher is
        closed (it hears no more counts)."""
        return 0 if self.closed or not self._pub.is_open else self._pub.readers

    @property
    def wanted(self) -> bool:
        """Whether ``send`` takes values (as ``Publisher.wanted``: the channel has readers or
        keeps history); False once closed."""
        return not self.closed and self._pub.wanted

    def send(
        self, value: Any, *, time_s: SupportsFloat | None = None, timeout: float | None = None
    ) -> bool:
        """Queue one value (as :meth:`SyncClient.publish`, ``time_s`` and ``timeout`` too);
        False while there are no readers.

        Raises:
            TimeoutError: no room in the queue within ``timeout`` seconds (nothing queued).
            ResourceClosed: after the ``with`` block of this publisher ended.
        """
        if self.closed:  # its own close, or its client's
            raise self._closed_error()
        failure = self._pub.failure
        if failure is not None:
            raise fresh(failure)  # (as the trio client: a new one per raise)
        deadline = _deadline(timeout)
        return self._client._enqueue(self._pub, value, time_s=time_s, deadline=deadline)

    def wait_for_readers(self, count: int = 1, timeout: float | None = None) -> None:
        """Block until the channel has at least ``count`` readers.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
            InvalidArgument: a ``timeout`` that is not None or seconds >= 0.
            ResourceClosed: the publisher is closed. ChannelNotFound: the channel ended.
        """
        timeout = check_timeout(timeout)
        if self.closed:  # its own close, or its client's (whose portal says ConnectionClosed)
            raise self._closed_error()
        try:
            self._client._call(
                partial(
                    _with_timeout,
                    timeout,
                    partial(self._pub.wait_for_readers, count),
                    self._client._trio_client,
                    f"fewer than {count} reader{'s' if count != 1 else ''} of "
                    f"{self.channel[:80]!r}",
                )
            )
        except ConnectionClosed:
            if not self.closed:
                raise
            # Closed, here or by another thread, while it waited: as after the close.
            raise self._closed_error() from None

    @property
    def closed(self) -> bool:
        """Closed by ``close()``, or with its client."""
        return self._closed or self._client._closed

    def _closed_error(self) -> ResourceClosed:
        return ResourceClosed(f"the publisher of {self.channel[:80]!r} is closed")

    def close(self, *, flush: bool = True) -> None:
        """Wait until the server has what was queued (with ``flush``), then close. Idempotent.

        Without ``flush`` it does not wait for the server at all.

        Raises:
            TrioStreamError: a queued value could not be sent (see ``SyncClient.flush``).
        """
        if self._closed:
            return
        self._closed = True
        client = self._client
        undelivered = dropped = 0
        closed = False
        if flush and client.closed and not (client._closed or client._dead):
            # The connection is lost for good (reconnect off, or given up) and the client not
            # closed yet: what this publisher's send() took and the server never acknowledged
            # is said by its own close, as the trio Publisher's is (it returned quietly, and
            # only the client's close, if any came, said them).
            with contextlib.suppress(ConnectionClosed):
                undelivered = client._run_sync(partial(client._take_undelivered, self._pub))
            closed = True
        try:
            if flush and not client.closed:
                # Bounded by progress: with the connection down for good, or a reader that
                # takes nothing, it would wait forever; a slow reader is waited for.
                dropped, undelivered = client._call(
                    partial(client._flush_and_close_publisher, self._pub)
                )
                closed = True
        finally:
            if not closed and not client.closed:
                with contextlib.suppress(ConnectionClosed):
                    if flush:  # the flush was interrupted (Ctrl-C): it raises on, so say them
                        undelivered = client._call(
                            partial(client._close_publisher, self._pub, False)
                        )
                        # Else dropped without a word: the publisher is off the client's
                        # lists by now, and its close would not say them (a review).
                        self._pub.say_dropped(undelivered)
                    else:
                        client._run_sync(partial(client._close_publisher_nowait, self._pub))
        never_sent = (
            f"{counted(dropped, 'value')} published to {self.channel[:80]!r} {were(dropped)} "
            "not sent: the "
            f"server took nothing for {CLOSE_FLUSH_S:g} s while the publisher closed (a block "
            "reader that reads nothing holds its writers back); they are dropped"
        )
        if undelivered:
            message = self._pub.undelivered_message(undelivered)
            raise ConnectionClosed(f"{message}; and {never_sent}" if dropped else message)
        if dropped:
            raise TrioStreamError(never_sent)

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if t is None:
            self.close()
        else:  # leaving on an error (Ctrl-C above all): close at once, report nothing new
            with contextlib.suppress(TrioStreamError):
                self.close(flush=False)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle("SyncPublisher")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.readers} reader(s)"
        return f"<SyncPublisher {self.channel!r} {state}>"


class SyncSubscription:
    """Messages of one channel, with blocking reads: ``for msg in sub`` or ``sub.get()``."""

    def __init__(self, client: SyncClient, sub: Subscription) -> None:
        self._client = client
        self._sub = sub
        self.channel = sub.channel
        # Messages taken from the trio side in one crossing: at most one window's worth, so
        # the client still holds a bounded number of frames (docs/protocol.md section 5).
        # get() hands out _local[_next] and moves _next on: an index, not list.pop(), so
        # that no call comes between taking a message and returning it (see get()).
        self._local: list[Message] = []
        self._next = 0
        # An error met after the messages of a batch (a frame that did not decode): raised by
        # the get() that comes after them, so that it is neither lost nor raised too early.
        self._error: TrioStreamError | None = None
        # One get() at a time crosses to the trio side: the one that set _busy (see get()).
        self._turn_lock = threading.Lock()
        self._turn = threading.Condition(self._turn_lock)
        self._busy = False
        self._closed = False
        self._closed_with: str | None = None  # the end a get() met: its client closed
        self._last_seq: int | None = None

    @property
    def lost(self) -> int:
        """Frames this subscription lost to overflow, in total."""
        return self._sub.lost

    @property
    def end_reason(self) -> str | None:
        """Why the subscription ended (``"channel 'x' was deleted"``, ``"unsubscribed"``...),
        as ``Subscription.end_reason``: set when the end arrives (messages before it may
        still be returned), None until then. A recorder whose ``for msg in sub`` loop stopped
        reads it to tell a deleted channel from a Redis restart."""
        return self._closed_with or self._sub.end_reason

    def retune(self, **changes: Any) -> None:
        """Change this subscription on the server (arguments as ``Subscription.retune``)."""
        self._client._call(partial(self._sub.retune, **changes))

    @property
    def position(self) -> Position:
        """Epoch and seq of the last message ``get()`` returned (see Subscription.position)."""
        epoch, seq = self._sub.position
        return Position(epoch, self._last_seq if self._last_seq is not None else seq)

    def get(self, timeout: float | None = None) -> Message:
        """The next message, waiting up to ``timeout`` seconds (None: as long as it takes).

        ``timeout=0`` polls: a message that has arrived already is returned, else
        TimeoutError at once.

        Raises:
            TimeoutError: nothing within ``timeout``.
            trio.EndOfChannel: the channel ended, or this subscription was closed (its
                message says "unsubscribed"); ``for msg in sub`` just stops.
            ConnectionClosed: the connection is gone.
        """
        if timeout is not None and not (type(timeout) is float and timeout >= 0):
            timeout = check_timeout(timeout)  # the per-message path checks a float inline
        if self._closed:
            # Closed here: the messages of a batch already in this thread are dropped with
            # the rest, as close() says (they were handed out after it, 16 of them).
            raise SubscriptionEnded(self._sub.end_reason or "unsubscribed")
        deadline = None if timeout is None else time.monotonic() + timeout
        # Ctrl-C must not lose a message, nor leave this subscription stuck. Python raises
        # KeyboardInterrupt only at a call (or a loop's jump), never inside `with`'s entry:
        # - the turn is a flag set under a plain Lock taken by `with` (Condition's __enter__
        #   is Python code, Lock.acquire(timeout) a call), not a lock held across the
        #   crossing: an interrupt just after an acquire returned would leave it held for good;
        # - a batch the trio side took as the interrupt came is kept by the portal (keep=);
        # - from taking a message out of the batch to returning it, the only call is the
        #   turn's release: its interrupt puts the message back (before any other thread
        #   runs: the GIL changes hands at those same points, after pending signals).
        mine = False
        message: Message | None = None
        try:
            with self._turn_lock:
                # Another thread may be in get() on this subscription: wait for it no longer
                # than our own timeout.
                while self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise caller_timeout(
                            f"no message on {self.channel!r} within {timeout:g} s"
                            + _reconnecting_note(self._client._trio_client)
                        )
                    # threading's waits take no more than TIMEOUT_MAX (an inf timeout is
                    # no limit, and raised OverflowError here).
                    try:
                        self._turn.wait(None if left is None else min(left, threading.TIMEOUT_MAX))
                    except KeyboardInterrupt as exc:  # without threading's frames
                        raise for_the_caller(exc) from None
                self._busy = mine = True
            if self._closed:  # while this get() waited for another thread's
                raise SubscriptionEnded(self._sub.end_reason or "unsubscribed")
            if self._next == len(self._local):
                if self._error is not None:
                    error, self._error = self._error, None
                    raise for_the_caller(error)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    self._local = self._client._call(partial(self._take, left, timeout), self._keep)
                except ConnectionClosed:
                    if not self._client._closed:
                        raise
                    # The client was closed, here or by another thread (a notebook's reader
                    # thread, say): the end of this subscription too, as its own close().
                    # Said by end_reason at once: the trio side's own end comes later.
                    self._closed_with = CLIENT_CLOSED
                    raise SubscriptionEnded(CLIENT_CLOSED) from None
                except KeyboardInterrupt as exc:  # from here: not the portal's frames
                    raise exc.with_traceback(None) from None
                self._next = 0
            message = self._local[self._next]
            self._next += 1
        finally:
            if mine:
                try:
                    with self._turn_lock:
                        self._busy = False
                        self._turn.notify_all()  # all: an interrupted wait may hold a notify
                except BaseException:
                    if message is not None:
                        self._next -= 1  # the next get() returns it
                    raise
        self._last_seq = message.seq
        return message

    def _keep(self, batch: list[Message]) -> None:
        """A batch taken as Ctrl-C interrupted get(): the next get() starts with it."""
        self._local = batch
        self._next = 0

    def statistics(self) -> SubscriptionStatistics:
        """As ``Subscription.statistics``; messages of a batch taken into this thread count
        as received, before ``get`` hands them out."""
        return self._client._run_sync(self._sub.statistics)

    async def _take(self, timeout_s: float | None, asked_s: float | None = None) -> list[Message]:
        """A batch of messages, waiting up to ``timeout_s`` for the first; ``asked_s``: the
        caller's own timeout, which the error names (not the time left of it)."""
        sub = self._sub
        batch: list[Message] = []
        # The batch ends with the message whose taking returned credit: the server keeps the
        # frames of the last credit only (outbox.Reader._released), and a script killed
        # while storing this batch restarts from a position in it (take-over by name). So
        # does the last of the frames a reconnect left queued that the subscription on the
        # new connection does not count (Subscription._stale: they return no credit, the
        # server holds them until the first credit after them, and that must not come
        # before they are stored).
        credit_returns = sub._credit_returns
        stale = sub._stale
        # What has arrived already is taken even with no time left (a poll, timeout=0).
        with contextlib.suppress(trio.WouldBlock):
            batch.append(sub.receive_nowait())
        if not batch:
            with trio.move_on_after(math.inf if timeout_s is None else timeout_s):
                batch.append(await sub.receive())
            if not batch:
                asked_s = timeout_s if asked_s is None else asked_s
                message = f"no message on {sub.channel!r} within {asked_s:g} s"
                raise caller_timeout(message + _reconnecting_note(self._client._trio_client))
        while (
            len(batch) < sub.window
            and sub._credit_returns == credit_returns
            and (not stale or sub._stale)
            # Without prefetch, a receive that finds nothing returns the credit: only the
            # script's own next get() may ask for more (it was asked as the batch ran dry).
            and (sub._prefetch or sub._has_queued)
        ):
            try:
                batch.append(sub.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break  # an end shows on the next get()
            except TrioStreamError as exc:
                # This frame is gone (its credit returned): the error is its one report.
                self._error = exc
                break
        return batch

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.get()
            except trio.EndOfChannel:
                return
            except KeyboardInterrupt as exc:  # the script's loop and this line: not get()'s
                raise exc.with_traceback(None) from None

    @property
    def closed(self) -> bool:
        """Closed by ``close()``, or with its client."""
        return self._closed or self._client._closed

    def close(self, *, wait: bool = True) -> None:
        """Unsubscribe (messages not read yet are dropped). Idempotent.

        Waits for the server's answer at most about a second, or not at all without ``wait``.
        """
        if self._closed:
            return
        self._closed = True
        client = self._client
        if not client.closed:
            with contextlib.suppress(ConnectionClosed):
                if not wait:
                    client._run_sync(self._sub.close_nowait)
                    return
                try:
                    client._call(self._sub.aclose)
                except BaseException:
                    # Ctrl-C, perhaps before the call began in the trio thread: it is closed
                    # now, unwaited, or it stayed open for good, its block reader holding the
                    # channel's writers, while `closed` said True (a cancellation audit).
                    with contextlib.suppress(Exception):
                        client._run_sync(self._sub.close_nowait)
                    raise

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving on an exception (Ctrl-C above all): do not wait for the server's answer.
        self.close(wait=t is None)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle("SyncSubscription")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"lost {self.lost}"
        return f"<SyncSubscription {self.channel!r} {state}>"


class SyncPatternSubscription:
    """Every channel matching a glob, with blocking reads: ``for msg in matching`` or
    ``matching.get()``; made by ``SyncClient.subscribe_matching`` (see
    ``Client.subscribe_matching``). ``msg.channel`` says which channel each came from."""

    def __init__(self, client: SyncClient, matching: PatternSubscription) -> None:
        self._client = client
        self._matching = matching
        self.pattern = matching.pattern
        # SyncSubscription's batching get() works on anything with a Subscription's reading
        # methods, as SyncMerge's does: the pattern subscription has them.
        self._reader = SyncSubscription(client, cast("Subscription", matching))

    @property
    def channels(self) -> list[str]:
        """The names of the matching channels subscribed now, sorted."""
        if self._client.closed:
            return []
        return self._client._run_sync(lambda: self._matching.channels)

    @property
    def lost(self) -> int:
        """Frames the channels' subscriptions lost to overflow, in total."""
        client = self._client
        # Read in the trio thread, which changes them, while it runs: `closed` is True too
        # when the client gave up reconnecting, its thread still running (a review).
        if client._dead or client._closed:
            return self._matching.lost
        try:
            return client._run_sync(lambda: self._matching.lost)
        except ConnectionClosed:  # the thread ended meanwhile: nothing changes them now
            return self._matching.lost

    @property
    def end_reason(self) -> str | None:
        """Why it ended ("this pattern subscription was closed", an error), None until then."""
        return self._reader.end_reason

    def statistics(self) -> PatternStatistics:
        """As ``PatternSubscription.statistics``; messages of a batch taken into this thread
        count as received, before ``get`` hands them out."""
        return self._client._run_sync(self._matching.statistics)

    def retune(self, **changes: Any) -> None:
        """Change every channel's subscription on the server, and the options of those that
        join later (arguments as ``PatternSubscription.retune``)."""
        self._client._call(partial(self._matching.retune, **changes))

    def get(self, timeout: float | None = None) -> Message:
        """The next message of any matching channel (as ``SyncSubscription.get``).

        Raises:
            TimeoutError: nothing within ``timeout``.
            trio.EndOfChannel: closed (``for`` just stops).
            ConnectionClosed, LimitExceeded: as ``PatternSubscription.receive``.
        """
        return self._reader.get(timeout)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._reader)

    @property
    def closed(self) -> bool:
        """Closed by ``close()``, or with its client."""
        return self._reader.closed

    def close(self, *, wait: bool = True) -> None:
        """Unsubscribe from every channel (messages not read yet are dropped). Idempotent."""
        self._reader.close(wait=wait)

    def __enter__(self) -> SyncPatternSubscription:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(wait=t is None)

    def __reduce__(self) -> NoReturn:
        _refuse_pickle("SyncPatternSubscription")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"lost {self.lost}"
        return f"<SyncPatternSubscription {self.pattern!r:.100} {state}>"


class SyncRemoteMethod:
    """A remote method that blocks: ``proxy.read(10)``."""

    def __init__(self, client: SyncClient, method: RemoteMethod) -> None:
        self._client = client
        self._method = method
        self.__name__ = method.__name__
        self.__qualname__ = method.__qualname__
        self.__doc__ = method.__doc__
        self.__signature__ = method.__signature__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._method.check(args, kwargs)  # TypeError here, before any crossing
        if self._method.stream:
            return SyncRemoteStream(
                self._client, self._client._run_sync(partial(self._method, *args, **kwargs))
            )
        return self._client._call(partial(self._method, *args, **kwargs))

    def __repr__(self) -> str:
        return repr(self._method).replace("<remote", "<blocking remote", 1)


class SyncRpcProxy:
    """The methods a provider exposes, as blocking methods (see ``RpcProxy``)."""

    def __init__(self, client: SyncClient, proxy: RpcProxy) -> None:
        self._client = client
        self._proxy = proxy
        self.provider = proxy.provider
        self.methods = proxy.methods

    @property
    def timeout(self) -> float | None:
        """Seconds a call waits for its answer (None: no limit); may be changed."""
        return self._proxy.timeout

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        # The trio proxy's: a copy here was changed to no effect on the calls.
        self._proxy.timeout = timeout

    @property
    def wait_reconnect(self) -> bool:
        """Whether a call waits for a provider that is reconnecting (``Client.rpc``'s)."""
        return self._proxy.wait_reconnect

    @wait_reconnect.setter
    def wait_reconnect(self, wait: bool) -> None:
        self._proxy.wait_reconnect = wait

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        found = getattr(self._proxy, name)
        if isinstance(found, RpcProxy):
            return SyncRpcProxy(self._client, found)
        if isinstance(found, RemoteMethod):
            return SyncRemoteMethod(self._client, found)
        raise AttributeError(name)

    def __dir__(self) -> list[str]:
        return dir(self._proxy)

    # A per-call `timeout` is this method's public contract, as on RpcProxy.call.
    def call(
        self,
        method: str,
        /,
        *args: Any,
        timeout: float | None = _DEFAULT,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` by name with a per-call ``timeout`` (see ``RpcProxy.call``)."""
        return self._client._call(
            partial(self._proxy.call, method, *args, timeout=timeout, **kwargs)
        )

    def stream(
        self, method: str, /, *args: Any, window: int = DEFAULT_WINDOW, **kwargs: Any
    ) -> SyncRemoteStream:
        """Iterate streaming ``method`` with ``window`` values in flight (see
        ``RpcProxy.stream``): ``for v in proxy.stream("samples", 10, window=64)``."""
        stream = self._client._run_sync(
            partial(self._proxy.stream, method, *args, window=window, **kwargs)
        )
        return SyncRemoteStream(self._client, stream)

    def __repr__(self) -> str:
        return repr(self._proxy).replace("<rpc proxy", "<blocking rpc proxy", 1)


class SyncRemoteStream:
    """The values of a streaming call, with blocking iteration: ``for v in proxy.samples(10)``.

    Values that have arrived are taken in one crossing into this thread (at most one window).
    Leaving the loop early (``break``, an exception) of ``for v in proxy.samples(10)``, or
    ``close()``, stops the provider's generator, as in the trio client; a stream kept in a
    variable outlives a ``break`` out of ``for v in s`` (closed when collected: use ``with``).
    """

    def __init__(self, client: SyncClient, stream: RemoteStream) -> None:
        self._client = client
        self._stream = stream
        self._local: list[Any] = []
        self._uncredited = 0  # values of the last batch taken without credit
        self._ended = False

    async def _take(self) -> list[Any]:
        stream = self._stream
        # The last batch is all taken now: its credit goes back. Returned as it crossed, the
        # provider made a window more while the batch waited here (2W ahead, not W).
        stream.credit(self._uncredited)
        self._uncredited = 0
        try:
            batch = [await stream.__anext__()]
        except StopAsyncIteration:
            return []
        while len(batch) < stream.window:
            try:
                batch.append(stream.receive_nowait(credit=False))
            except trio.WouldBlock:
                break
        self._uncredited = len(batch) - 1
        return batch

    def __iter__(self) -> SyncRemoteStream:
        # The stream is its own iterator, not a generator's: a generator closed the stream
        # when it was collected, so `next(iter(s))` then `for v in s` lost the rest.
        return self

    def __next__(self) -> Any:
        if not self._local:
            if self._ended:
                raise StopIteration
            try:
                batch = self._client._call(self._take, self._keep)
            except TrioStreamError:
                self._ended = True  # failed (the provider raised, or left): it is over
                raise
            if not batch:
                self._ended = True
                raise StopIteration
            batch.reverse()
            self._local = batch
        return self._local.pop()

    def _keep(self, batch: list[Any]) -> None:
        """A batch taken as Ctrl-C interrupted the wait: the next value starts it (the
        stream goes on after an interrupt, so a batch dropped there was a silent hole)."""
        if batch:
            batch.reverse()
            self._local = batch
        else:
            self._ended = True

    def close(self) -> None:
        """Stop the stream (the provider's generator is closed). Idempotent."""
        self._local = []
        if not self._ended:
            self._ended = True
            with contextlib.suppress(ConnectionClosed):  # a closed client stopped it already
                try:
                    self._client._call(self._stream.aclose)
                except BaseException:  # Ctrl-C before the call began: stopped all the same
                    with contextlib.suppress(Exception):
                        self._client._run_sync(self._stream._abandon)
                    raise

    def __enter__(self) -> SyncRemoteStream:
        return self

    def __exit__(
        self,
        t: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._stream).replace("<remote", "<blocking remote", 1)


# Clients still open when the interpreter exits are closed (and flushed) first: atexit runs
# before daemon threads are stopped, and a script that ends without close() must not lose what
# it published last.
_OPEN: weakref.WeakSet[SyncClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A script stopped by Ctrl-C is not kept waiting for its queue to reach a server: the
    # count of what it drops is said instead (as for a close on leaving a with block).
    flush = not isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for client in list(_OPEN):
        try:
            client.close(flush=flush)
        except KeyboardInterrupt as interrupt:  # a second Ctrl-C: the rest close at once
            flush = False
            # Its note says what the flush it stopped dropped: swallowed here, the values
            # were lost without a word (a lab scientist; the close below does nothing more).
            for note in getattr(interrupt, "__notes__", ()):
                log.warning("closing %r at exit, interrupted: %s", client, note)
            with contextlib.suppress(Exception):
                client.close(flush=False)
        except Exception as exc:
            log.error("closing %r at exit: %s", client, exc)
