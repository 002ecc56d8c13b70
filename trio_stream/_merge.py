"""``ts.merge``: several subscriptions read as one, round robin (mflow's Merge).

How it waits, and why not with a task per subscription: a task per subscription feeding a
memory channel would take a message out of each subscription as soon as one arrives, ahead of
the application, and every taken message returns credit to the server. The design rule is the
opposite: the client takes only what its application is ready for, and the rest waits in the
reader's server-side buffer where its policy (ring, drop, block) applies. So the merge owns no
task and no queue. Each ``receive`` tries the subscriptions with ``receive_nowait`` in turn,
starting after the one that gave the previous message (round robin: while several have
messages, each gives one in turn, and none is waited on while another has one); when none has
a message, it hands one trio.Event to all of them, and the first frame or end to arrive on any
of them wakes it. Nothing is taken before the application asks, and a merge costs what a
subscription costs per message plus one index step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, cast, overload

import trio

from ._exceptions import InvalidArgument
from ._records import Message
from ._subscription import YIELD_EVERY_MESSAGES  # the same bound as one subscription's
from ._subscription_end import SubscriptionEnded
from .sync import SyncSubscription

if TYPE_CHECKING:
    from ._client import Subscription


class Merge:
    """Messages of several subscriptions as one stream, round robin.

    ``async with ts.merge(sub_a, sub_b) as merged: async for msg in merged: ...``; ``msg.channel``
    says where each came from. It ends (``async for`` stops, ``receive`` raises
    trio.EndOfChannel) once every subscription has ended; an error of one subscription
    (``ConnectionClosed``, ``LimitExceeded``, a frame that does not decode) is raised as it
    comes. The subscriptions stay the caller's: leaving the merge does not close them.
    """

    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        if not subscriptions:
            raise InvalidArgument("merge() needs at least one subscription")
        if len({id(sub) for sub in subscriptions}) != len(subscriptions):
            raise InvalidArgument("merge() got the same subscription twice")
        self._subs: list[Subscription] = list(subscriptions)
        self._all = tuple(subscriptions)
        self.channel = ", ".join(sub.channel for sub in subscriptions)  # for messages
        # A SyncMerge takes at most this many messages into its thread at once.
        self.window = max(sub.window for sub in subscriptions)
        self._next = 0  # the subscription asked first by the next receive
        self._taken = 0
        self._closed = False
        self.end_reason: str | None = None  # as Subscription.end_reason: why it ended
        self._waiting: trio.Event | None = None  # what a receive waits on (close sets it)
        self._waiters = 0  # the tasks waiting on it

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions not ended yet."""
        return list(self._subs)

    @property
    def lost(self) -> int:
        """Frames the subscriptions lost to overflow, in total."""
        return sum(sub.lost for sub in self._all)

    @property
    def _credit_returns(self) -> int:
        """How many times the subscriptions' credit went back, in total: a SyncMerge ends a
        batch with the message that returned some (see Subscription._credit_returns)."""
        return sum(sub._credit_returns for sub in self._all)

    @property
    def _stale(self) -> int:
        """Frames a reconnect left queued, in total (see Subscription._stale)."""
        return sum(sub._stale for sub in self._all)

    @property
    def _prefetch(self) -> bool:
        """False if a subscription asks for frames only when asked (a SyncMerge's batch then
        ends with what is queued: see Subscription._prefetch)."""
        return all(sub._prefetch for sub in self._all)

    @property
    def _has_queued(self) -> bool:
        """Whether any subscription has a frame queued (the SyncMerge's batch test)."""
        return any(sub._has_queued for sub in self._all)

    def receive_nowait(self) -> Message:
        """The next message if one of the subscriptions has one already.

        Raises:
            trio.WouldBlock: none has one. trio.EndOfChannel: all have ended, or the merge
                was closed ("this merge was closed"), as a closed subscription ends.
        """
        if self._closed:
            raise SubscriptionEnded(self.end_reason)
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
                del subs[i]  # the one after it moves into slot i: asked next, fairly
                continue
            except BaseException:
                self._next = i + 1  # a bad frame of one subscription does not starve the rest
                raise
            self._next = i + 1
            return message
        if not subs:
            self.end_reason = self.end_reason or "every merged subscription has ended"
            raise SubscriptionEnded(self.end_reason)
        raise trio.WouldBlock

    async def receive(self) -> Message:
        """The next message of any of the subscriptions, waiting for one.

        Raises:
            trio.EndOfChannel: every subscription has ended, or the merge was closed
                (``async for`` just stops).
            ConnectionClosed, LimitExceeded, ProtocolError: as Subscription.receive.
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
        # Tasks that read one merge together wait on one event: the first hands it to the
        # subscriptions, the last to leave takes it back (a subscription takes several
        # readers too; a second reader of a merge was refused, with advice that did not
        # apply to it: an outside review).
        event = self._waiting
        if event is not None and event.is_set():  # woken, its waiters not gone yet
            await trio.lowlevel.checkpoint()  # (they run first: no spin)
            return
        if event is None:
            event = self._waiting = trio.Event()
        self._waiters += 1
        try:
            for sub in self._subs:
                if not sub._wake_with(event):
                    raise trio.BusyResourceError(
                        f"another task is receiving from subscription {sub.channel!r:.80} "
                        "itself: read a merged subscription only through its merge"
                    )
            await event.wait()
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._waiting = None
                for sub in self._subs:
                    sub._unwake(event)

    def __aiter__(self) -> Merge:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop reading through the merge (the subscriptions stay open). Idempotent."""
        self.close_nowait()
        await trio.lowlevel.checkpoint()

    def close_nowait(self) -> None:
        """Stop reading through the merge, at once (as Subscription.close_nowait)."""
        if not self._closed:
            self._closed = True
            # An end that came first keeps its reason, as a subscription's does.
            self.end_reason = self.end_reason or "this merge was closed"
            if self._waiting is not None:  # a receive waits: it ends now, not at a frame
                self._waiting.set()

    async def __aenter__(self) -> Merge:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncMerge:
    """Several SyncSubscriptions of one SyncClient as one, round robin: ``ts.merge(a, b)``.

    ``with ts.merge(sub_a, sub_b) as merged: for msg in merged: ...``, or
    ``merged.get(timeout=1.0)``; blocking counterpart of :class:`Merge` (it ends, raises and
    leaves the subscriptions open the same way). Read merged subscriptions only through the
    merge: messages that a subscription's own ``get`` took into this thread stay with it.
    """

    def __init__(self, subscriptions: Sequence[SyncSubscription]) -> None:
        if not subscriptions:
            raise InvalidArgument("merge() needs at least one subscription")
        client = subscriptions[0]._client
        if any(sub._client is not client for sub in subscriptions):
            raise InvalidArgument(
                "merge() of SyncSubscriptions needs them all from one SyncClient (each "
                "SyncClient runs its own trio thread)"
            )
        self._merge = Merge([sub._sub for sub in subscriptions])
        # SyncSubscription's batching get() works on anything with a Subscription's reading
        # methods: the merge has them (receive, receive_nowait, window, channel, lost, aclose).
        self._reader = SyncSubscription(client, cast("Subscription", self._merge))

    @property
    def lost(self) -> int:
        """Frames the subscriptions lost to overflow, in total."""
        return self._merge.lost

    @property
    def end_reason(self) -> str | None:
        """Why the merge ended ("this merge was closed", or every subscription ended), as
        ``Subscription.end_reason``; None until then."""
        return self._merge.end_reason

    def get(self, timeout: float | None = None) -> Message:
        """The next message of any of the subscriptions (as ``SyncSubscription.get``).

        Raises:
            TimeoutError: nothing within ``timeout``.
            trio.EndOfChannel: every subscription has ended (``for`` just stops).
        """
        return self._reader.get(timeout)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._reader)

    def close(self) -> None:
        """Stop reading through the merge (the subscriptions stay open). Idempotent."""
        self._reader.close(wait=False)

    def __enter__(self) -> SyncMerge:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@overload
def merge(*subscriptions: Subscription) -> Merge: ...
@overload
def merge(*subscriptions: SyncSubscription) -> SyncMerge: ...
def merge(*subscriptions: Subscription | SyncSubscription) -> Merge | SyncMerge:
    """One iterator over several subscriptions, round robin: ``ts.merge(a, b)``.

    Subscriptions of the trio client give an async :class:`Merge`; SyncSubscriptions (of one
    SyncClient) give a blocking :class:`SyncMerge`.

    Raises:
        InvalidArgument: no subscription, one given twice, a mix of both kinds, or a pattern
            subscription.
    """
    from ._matching import PatternSubscription  # (here: _matching imports this module)
    from .sync import SyncPatternSubscription

    if any(isinstance(sub, PatternSubscription | SyncPatternSubscription) for sub in subscriptions):
        # It failed inside (no _wake_with), or said "not both" of two sync ones (a new user).
        raise InvalidArgument(
            "merge() takes subscriptions of one channel each, not a pattern subscription "
            "(subscribe_matching reads its channels as one already): use a pattern that "
            "matches the other channels too, or read them in two tasks (or threads)"
        )
    sync = [isinstance(sub, SyncSubscription) for sub in subscriptions]
    if all(sync) and subscriptions:
        return SyncMerge(cast("list[SyncSubscription]", list(subscriptions)))
    if any(sync):
        raise InvalidArgument("merge() takes trio Subscriptions or SyncSubscriptions, not both")
    return Merge(cast("list[Subscription]", list(subscriptions)))
