"""``client.subscribe_matching("sensors.*")``: every channel whose name matches, now and later.

Redis's PSUBSCRIBE and NATS's wildcards match on the server. Here it is built on the client,
from parts that carry the guarantees already: one ordinary subscription per matching channel
(its own server-side buffer, policy, ``lost`` counts and resume after a reconnect), the
``$channels`` system channel to hear of channels created later, and a round robin over a set of
subscriptions that grows and shrinks (the way ``ts.merge`` reads a fixed set).

No window at the start: ``$channels`` is followed *before* the channels are listed, so a
channel created meanwhile is either listed or announced (often both: the names dedupe). After
a reconnection the client resumes each subscription by itself, ``$channels`` included, but the
announcements made while it was away are gone: the channels are listed again once the client
is ``"open"`` (and whenever ``$channels`` itself reports a gap or a loss).

Why a channel of a name already subscribed may need a second subscription: a channel deleted
and created again is a new channel (a new epoch). The old subscription still delivers what
was published before the end (the server queues the end behind those frames, so it may come
long after the new channel's ``created``), then ends; the new one must be subscribed beside
it. ``$channels`` events carry no epoch, so a ``created`` for a name whose subscription has
not ended yet is checked by subscribing and comparing the epochs the server answers with:
the same epoch (the listing found the channel first) drops the extra one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import trio

from ._exceptions import (
    AuthError,
    ChannelNotFound,
    ConnectionClosed,
    InvalidArgument,
    LimitExceeded,
    TrioStreamError,
)
from ._records import Message
from ._subscription import YIELD_EVERY_MESSAGES  # the same bound as one subscription's
from ._subscription_end import SubscriptionEnded

if TYPE_CHECKING:
    from ._client import Client
    from ._subscription import Subscription

log = logging.getLogger(__name__)

#: What ``max_channels`` is unless given: a pattern subscription holds one subscription (a
#: server-side buffer, a window of frames in flight) per matching channel.
DEFAULT_MAX_CHANNELS: Final = 1000
#: Subscribe requests in flight at once when many channels match (the start, a re-listing):
#: 1000 channels one round trip after another took a second on a busy loopback; all at once
#: would put 1000 requests in the server's queue ahead of everybody else's.
SUBSCRIBES_IN_FLIGHT: Final = 32
GLOB_CHARACTERS: Final = frozenset("*?[")


def check_pattern(pattern: object) -> str:
    """``pattern`` if it is a glob ``subscribe_matching`` takes.

    Raises:
        InvalidArgument: not a str, or none of ``*``, ``?``, ``[`` in it.
    """
    if not isinstance(pattern, str):
        raise InvalidArgument(f"a pattern is a str, not {type(pattern).__name__}")
    if not GLOB_CHARACTERS.intersection(pattern):
        nats = ""
        if ">" in pattern:
            nats = " (NATS's '>' is '*' here: it matches dots too)"
        raise InvalidArgument(
            f"{pattern[:100]!r} has no glob character (*, ?, [...]): it names one channel, "
            f"so use subscribe(){nats}"
        )
    return pattern


def matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches the glob ``pattern`` (fnmatch.fnmatchcase: case-sensitive,
    ``*`` matches dots too). A system channel (``$...``) only matches a pattern that starts
    with ``$``: ``*`` means the application's channels, not the server's event feeds."""
    if channel.startswith("$") and not pattern.startswith("$"):
        return False
    return fnmatch.fnmatchcase(channel, pattern)


class PatternSubscription:
    """Every channel whose name matches a glob, now and created later, read as one.

    Made by ``client.subscribe_matching(pattern, ...)``: ``async for msg in matching`` or
    ``await matching.receive()``; ``msg.channel`` says which channel each came from, and
    ``msg.lost`` counts what that channel's own subscription lost. ``channels`` lists the
    names subscribed now. Channels are read round robin (a flooded one does not starve a
    quiet one), and as with ``ts.merge`` nothing is taken from a subscription before the
    application asks: the rest waits in each channel's server-side buffer under its policy.

    A matching channel that ends delivers what was published before its end, then leaves the
    set; one of that name created again joins it again. The pattern subscription itself ends
    only when closed; a connection lost for good raises ``ConnectionClosed``, and passing
    ``max_channels`` (or a server limit) raises ``LimitExceeded``, from ``receive``.
    """

    def __init__(
        self, client: Client, pattern: str, options: dict[str, Any], max_channels: int
    ) -> None:
        self._client = client
        self.pattern = pattern
        self.channel = pattern  # (what a SyncSubscription's messages name)
        self._options = options  # the keyword options of each channel's subscribe
        self.max_channels = max_channels
        self._subs: list[Subscription] = []  # read round robin, ended ones until read out
        self._active: dict[str, Subscription] = {}  # the newest subscription of each name
        self._locks: dict[str, trio.Lock] = {}  # one change per name at a time
        self._events: Subscription | None = None  # $channels
        self._next = 0  # the subscription asked first by the next receive
        self._taken = 0
        self._closed = False
        self._error: TrioStreamError | None = None  # raised by every receive once set
        self.end_reason: str | None = None  # as Subscription.end_reason: why it ended
        self._scope = trio.CancelScope()  # the follower task
        self._waiting: trio.Event | None = None  # what a receive waits on
        self._waiters = 0
        self._reconnects_at_start = 0  # client.reconnects when _start began
        self._refused: set[str] = set()  # channels whose key was refused: said once each
        # Totals of the subscriptions that left the set (the properties below add them).
        self._gone_lost = 0
        self._gone_credit_returns = 0

    # -- what the application reads ---------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        """The names of the matching channels subscribed now, sorted."""
        return sorted(name for name, sub in self._active.items() if not sub._ended)

    @property
    def lost(self) -> int:
        """Frames the channels' subscriptions lost to overflow, in total."""
        return self._gone_lost + sum(sub.lost for sub in self._subs)

    @property
    def window(self) -> int:
        """Frames a SyncPatternSubscription takes into its thread at once, at most."""
        return max((sub.window for sub in self._subs), default=1)

    @property
    def _credit_returns(self) -> int:
        """Credit returns of the subscriptions, in total (see Merge._credit_returns)."""
        return self._gone_credit_returns + sum(sub._credit_returns for sub in self._subs)

    @property
    def _stale(self) -> int:
        return sum(sub._stale for sub in self._subs)

    @property
    def _prefetch(self) -> bool:
        return bool(self._options.get("prefetch", True))

    @property
    def _has_queued(self) -> bool:
        return any(sub._has_queued for sub in self._subs)

    def receive_nowait(self) -> Message:
        """The next message if one of the channels has one already.

        Raises:
            trio.WouldBlock: none has one.
            SubscriptionEnded: closed ("this pattern subscription was closed").
            ConnectionClosed, LimitExceeded: as :meth:`receive`.
        """
        if self._closed:
            raise SubscriptionEnded(self.end_reason)
        if self._error is not None:
            raise self._error
        subs = self._subs
        i = self._next
        tried = 0
        while tried < len(subs):
            if i >= len(subs):
                i = 0
            sub = subs[i]
            try:
                message = sub.receive_nowait()
            except trio.WouldBlock:
                i += 1
                tried += 1
                continue
            except trio.EndOfChannel:
                self._drop(i)  # the one after it moves into slot i: asked next, fairly
                continue
            except BaseException as exc:
                if isinstance(exc, ConnectionClosed):  # the client's end: every receive's now
                    self._fail(exc)
                if sub._ended:  # its end's error (a server limit): said once, then it leaves
                    self._drop(i)
                    self._next = i
                else:  # a frame that did not decode: the stream goes on
                    self._next = i + 1
                raise
            self._next = i + 1
            return message
        raise trio.WouldBlock

    def _drop(self, index: int) -> None:
        sub = self._subs.pop(index)
        self._gone_lost += sub.lost
        self._gone_credit_returns += sub._credit_returns
        if self._active.get(sub.channel) is sub:
            del self._active[sub.channel]

    async def receive(self) -> Message:
        """The next message of any matching channel, waiting for one.

        Raises:
            trio.EndOfChannel: closed (``async for`` just stops).
            ConnectionClosed: the client is closed, or gave up reconnecting.
            LimitExceeded: more than ``max_channels`` channels match (or the server refused
                one more subscription, or ended one at a memory limit).
            ProtocolError: a frame that does not decode (the stream goes on).
        """
        # As Subscription.receive: cancellation only before a message is taken.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                message = self.receive_nowait()
            except trio.WouldBlock:
                pass  # wait outside the handler: an error in the wait must not chain to it
            else:
                break
            await self._wait_any()
        self._taken += 1
        if not self._taken % YIELD_EVERY_MESSAGES:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    async def _wait_any(self) -> None:
        # As Merge._wait_any: one event for every subscription; one that joins the set while
        # a receive waits is handed it too (_add), and the follower's error or a close sets it.
        event = self._waiting
        if event is not None and event.is_set():  # woken, its waiters not gone yet
            await trio.lowlevel.checkpoint()
            return
        if event is None:
            event = self._waiting = trio.Event()
        self._waiters += 1
        try:
            for sub in self._subs:
                self._hand(sub, event)
            await event.wait()
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._waiting = None
                for sub in self._subs:
                    sub._unwake(event)

    def _hand(self, sub: Subscription, event: trio.Event) -> None:
        if not sub._wake_with(event):
            raise trio.BusyResourceError(
                f"another task is receiving from subscription {sub.channel!r:.80} itself: "
                "read a pattern subscription's channels only through it"
            )

    def _wake(self) -> None:
        if self._waiting is not None:
            self._waiting.set()

    def __aiter__(self) -> PatternSubscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    # -- the set of subscriptions -----------------------------------------------------------
    def _open_count(self) -> int:
        return sum(not sub._ended for sub in self._subs)

    def _too_many(self, more: int) -> LimitExceeded:
        return LimitExceeded(
            f"pattern {self.pattern[:100]!r} matches more than max_channels="
            f"{self.max_channels} channels ({more} would be subscribed): each is a "
            "subscription with its own buffer on the server; narrow the pattern, or give "
            "subscribe_matching(..., max_channels=N) a larger N"
        )

    def _add(self, sub: Subscription) -> None:
        self._subs.append(sub)
        self._active[sub.channel] = sub
        if self._waiting is not None:  # a receive waits: this one's first frame wakes it too
            self._hand(sub, self._waiting)

    @contextlib.asynccontextmanager
    async def _name_lock(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = trio.Lock()
        async with lock:
            try:
                yield
            finally:
                if not lock.statistics().tasks_waiting:
                    self._locks.pop(name, None)  # (nothing awaits before the release)

    async def _ensure(self, name: str, announced: bool) -> None:
        """Have ``name`` subscribed; ``announced``: a ``created`` event named it (it may be
        a new channel of a name whose old subscription has not ended yet)."""
        async with self._name_lock(name):
            old = self._active.get(name)
            if old is not None and not old._ended and (not announced or not old._live):
                # Subscribed; or waiting to resume after a reconnect, which follows the
                # channel of that name by itself (with a "reset" gap if it is a new one).
                return
            if self._open_count() >= self.max_channels:
                raise self._too_many(self._open_count() + 1)
            sub = await self._subscribe(name)
            if sub is None:
                return
            if old is not None and not old._ended and old.position.epoch == sub.position.epoch:
                sub.close_nowait()  # the same channel, listed and announced: one is enough
                return
            self._add(sub)

    async def _subscribe(self, name: str) -> Subscription | None:
        """A subscription to ``name``; None if this client may not read it (gone meanwhile,
        another client's private channel, a key it lacks)."""
        try:
            return await self._client.open_subscription(name, **self._options)
        except ChannelNotFound:
            return None  # ended since it was listed or announced
        except AuthError as exc:
            if name not in self._refused:
                self._refused.add(name)
                log.warning("pattern %r: channel %r is not read: %s", self.pattern, name, exc)
            return None

    async def _list(self) -> list[str]:
        """The names of the channels visible to this client that match, sorted."""
        return sorted(
            info.name for info in await self._client.channels() if matches(self.pattern, info.name)
        )

    async def _subscribe_all(self, names: list[str]) -> None:
        limiter = trio.CapacityLimiter(SUBSCRIBES_IN_FLIGHT)
        errors: list[TrioStreamError] = []

        async def one(name: str) -> None:
            async with limiter:
                if errors:
                    return
                try:
                    await self._ensure(name, announced=False)
                except TrioStreamError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        if errors:
            raise errors[0]

    async def _resync(self) -> None:
        """List the channels again and subscribe to the matching ones not subscribed."""
        await self._subscribe_all(await self._list())

    # -- life ---------------------------------------------------------------------------------
    async def _start(self) -> None:
        """Follow ``$channels``, then list and subscribe (see the module's docstring)."""
        client = self._client
        self._reconnects_at_start = client.reconnects
        try:
            self._events = await client.open_subscription("$channels", policy="unbounded")
            names = [name for name in await self._list() if name not in self._active]
            if len(names) > self.max_channels:
                raise self._too_many(len(names))  # before opening any of them
            await self._subscribe_all(names)
        except BaseException:
            self.close_nowait()
            raise
        if not client._port().spawn(self._follow, name=f"subscribe_matching {self.pattern}"):
            self.close_nowait()
            client._check_open()
            raise ConnectionClosed("the client is closing")

    async def _follow(self) -> None:
        """The background task: new channels, and re-listing after reconnections."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._follow_events)
                nursery.start_soon(self._guarded, self._follow_reconnects)

    async def _guarded(self, follow: Callable[[], Awaitable[None]]) -> None:
        # Nothing may escape into the client's nursery: an error goes to the reader.
        try:
            await follow()
        except trio.EndOfChannel:
            if not self._closed:  # $channels ended without a close: the client's end
                self._fail(ConnectionClosed(str(self._client._closed or "the client closed")))
        except TrioStreamError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug: said, and raised by receive rather than lost
            log.exception("pattern %r stopped following new channels", self.pattern)
            self._fail(TrioStreamError(f"pattern subscription failed: {exc!r}"))

    async def _follow_events(self) -> None:
        events = self._events
        if events is None:  # closed before this task began
            return
        async for event in events:
            if event.lost or event.gap is not None:
                # Announcements were missed (the connection was lost): ask for the list.
                await self._resync()
            data = event.data
            if not isinstance(data, dict) or data.get("event") != "created":
                continue
            name = data.get("channel")
            if isinstance(name, str) and matches(self.pattern, name):
                await self._ensure(name, announced=True)

    async def _follow_reconnects(self) -> None:
        # The client says a reconnection is complete by going "open" again (its _restore
        # has resubscribed, $channels too, by then): what was created meanwhile is listed.
        # (Counted from before $channels was followed: a reconnection during the start is
        # one too.)
        client = self._client
        seen = self._reconnects_at_start
        while True:
            state = client.state
            if state == "closed":
                client._check_open()  # raises ConnectionClosed: the reader is told
                return
            if state == "open" and client.reconnects != seen:
                seen = client.reconnects
                await self._resync()
                continue  # (the state may have changed again meanwhile)
            await client.wait_state_change(state)

    def _fail(self, error: TrioStreamError) -> None:
        if self._error is None and not self._closed:
            self._error = error
            self.end_reason = str(error)
        self._scope.cancel()
        self._wake()

    def close_nowait(self) -> None:
        """Stop: unsubscribe from every channel without waiting for the server's answers."""
        self._close()
        for sub in self._all_subs():
            sub.close_nowait()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.end_reason = self.end_reason or "this pattern subscription was closed"
        self._scope.cancel()
        self._wake()

    def _all_subs(self) -> list[Subscription]:
        """Every subscription, taken out of the set (``lost`` keeps their totals)."""
        subs = list(self._subs)
        while self._subs:
            self._drop(0)
        if self._events is not None:
            subs.append(self._events)
            self._events = None
        return subs

    async def aclose(self) -> None:
        """Unsubscribe from every channel (messages not taken yet are dropped). Idempotent."""
        self._close()
        subs = self._all_subs()

        async def leave(sub: Subscription) -> None:
            with contextlib.suppress(TrioStreamError):  # (as a close that waits for nothing)
                await sub.aclose()

        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(leave, sub)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> PatternSubscription:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if t is None:
            await self.aclose()
        else:
            self.close_nowait()

    def __repr__(self) -> str:
        return f"<PatternSubscription {self.pattern!r:.100} {len(self.channels)} channels>"
