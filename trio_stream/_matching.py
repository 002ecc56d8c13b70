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
is ``"open"``, or when ``$channels`` reports a gap, whichever comes first (once per connection:
see ``_request_listing``). The listing also finds the channels that did not come back (a
server restart): their subscriptions, waiting to resume, are closed.

Why a channel of a name already subscribed may need a second subscription: a channel deleted
and created again is a new channel (a new epoch). The old subscription still delivers what
was published before the end (the server queues the end behind those frames, so it may come
long after the new channel's ``created``), then ends; the new one must be subscribed beside
it. ``$channels`` events carry no epoch, so a ``created`` for a name whose subscription has
not ended yet is checked by subscribing and comparing the epochs the server answers with:
the same epoch (the listing found the channel first) drops the extra one. A member whose
end the server marks ``again`` (its channel lives on at a new epoch: a cluster's Redis
restarted empty) does not end: it resubscribes by itself, as after a reconnect; once a newer
member of its name joins, it ends at such an end instead (``_end_at_reset``), so that no
channel is read by two members.

Failures are gaps, never the end (DESIGN section 4): a listing that fails (the cluster's Redis
away, a connection lost during it) is tried again with a backoff; ``$channels`` ended with an
error (a memory limit) is followed again and the channels listed; a channel refused (another
client's private one, past ``max_channels``, a server limit) is skipped with one warning (one
past ``max_channels`` is remembered, and takes the slot a member that leaves frees; a
subscribe on its way holds its slot); a channel whose subscription the server ended
(LimitExceeded: a block reader past its ``block_timeout``) raises that error once from
``receive`` and is subscribed again. Only the client's own end (closed, or it gave up
reconnecting) ends the pattern subscription, after the messages already here are read.

What a message costs does not grow with the number of channels: each subscription has a
``_Mark`` that its next frame (or its end) sets, which puts it in the ``_ready`` queue; the
round robin reads that queue only, and the totals a SyncClient's batch reads (``window``,
``_credit_returns``) are kept as messages are taken. With 1000 channels of which one is busy,
walking every subscription per message cut the rate to about 1/70 of one channel's (the
measurements are in ``_ready``'s comment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, cast

import trio

from ._exceptions import (
    AuthError,
    ChannelNotFound,
    ClusterUnavailable,
    ConnectionClosed,
    InvalidArgument,
    LimitExceeded,
    TrioStreamError,
)
from ._records import Gap, Message
from ._stats import PatternStatistics, SubscriptionStatistics
from ._subscription import (
    YIELD_EVERY_MESSAGES,  # the same bound as one subscription's
    _Keep,
    retune_changes,
)
from ._subscription_end import SubscriptionEnded
from ._util import fresh

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
#: A failed listing, or ``$channels`` that could not be followed again, is tried again after
#: this (seconds), doubling up to RETRY_MAX_S; at once when the client's state changes.
RETRY_INITIAL_S: Final = 0.1
RETRY_MAX_S: Final = 5.0
#: A channel whose subscription the server ended (LimitExceeded) is subscribed again at once
#: the first time; ended again within AGAIN_QUIET_S of the last time, after a delay that
#: doubles from AGAIN_INITIAL_S up to AGAIN_MAX_S (seconds): a channel ended over and over
#: (a memory limit hit as soon as it is subscribed) does not loop hot.
AGAIN_INITIAL_S: Final = 0.25
AGAIN_MAX_S: Final = 30.0
AGAIN_QUIET_S: Final = 60.0
# A member waiting to resume whose channel a listing does not show leaves once listings have
# not shown it for this long (s), not at the first: a cluster's Redis restarted empty lists no
# channel until the nodes register theirs again, and all of them left for good (their frames
# lost uncounted: a migrating team); a server restart's channels come back within its
# clients' resume_grace_s (10 s by default) or not at all.
LEAVE_UNLISTED_S: Final = 10.0
KNOWN_NAMES_KEPT: Final = 10_000  # names read before, for a reset gap when one comes back
# Channels skipped for max_channels, remembered (names only) to take a slot that frees, at
# most this many: ~2.5 MB at worst (channel names are 200 characters at most), less than the
# buffers of the subscriptions that max_channels bounds. Past it a name is not remembered,
# and a listing finds the rest once the remembered ones are used up (_fill_free_slots).
SKIPPED_NAMES_KEPT: Final = 10_000
#: The options ``retune`` changes (its keywords), and those a later subscribe checks
#: together with them.
RETUNED: Final = ("policy", "size", "every", "max_rate", "block_timeout")
RETUNE_CHECKED: Final = (*RETUNED, "window", "view", "prefetch")


def _retune_arguments(changed: dict[str, Any]) -> dict[str, Any]:
    """``Subscription.retune``'s arguments for ``changed`` (``retune_changes``'s form): a
    ``max_rate`` of None there removes the limit, as a left-out one keeps it."""
    return {"max_rate": _Keep.KEEP, **changed}


def check_pattern(pattern: object) -> str:
    """``pattern`` if it is a glob ``subscribe_matching`` takes: a name without glob
    characters is one too, and follows that one channel across its lives (created, ended,
    created again: read on with a reset gap), which ``subscribe`` does not (a
    python-socketio port whose service restarted found no way to, but by a glob).

    Raises:
        InvalidArgument: not a str, empty, or NATS's ``>`` without a glob character (it
            would wait for a channel of that very name, which a NATS user never means).
    """
    if not isinstance(pattern, str):
        raise InvalidArgument(f"a pattern is a str, not {type(pattern).__name__}")
    if not pattern:
        raise InvalidArgument("a pattern is not empty: '*' matches every channel")
    if ">" in pattern and not GLOB_CHARACTERS.intersection(pattern):
        raise InvalidArgument(
            f"{pattern[:100]!r} has no glob character (*, ?, [...]): NATS's '>' is '*' here "
            "(it matches dots too); a channel named with '>' itself is read with subscribe()"
        )
    return pattern


def matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches the glob ``pattern`` (fnmatch.fnmatchcase: case-sensitive,
    ``*`` matches dots too). A system channel (``$...``) only matches a pattern that starts
    with ``$``: ``*`` means the application's channels, not the server's event feeds."""
    if channel.startswith("$") and not pattern.startswith("$"):
        return False
    return fnmatch.fnmatchcase(channel, pattern)


class _Mark:
    """What a member subscription's next frame or end sets (``Subscription._wake_with`` hands
    it the Event-like thing its ``_wake`` sets, once): it puts the member in the ready queue."""

    __slots__ = ("_matching", "_sub", "window")

    def __init__(self, matching: PatternSubscription, sub: Subscription) -> None:
        self._matching = matching
        self._sub = sub
        self.window = sub.window  # as counted in the pattern's windows (see _recount)

    def set(self) -> None:
        self._matching._mark_ready(self._sub)

    def is_set(self) -> bool:
        return False  # armed (a set one is dropped by _wake at once)


class PatternSubscription:
    """Every channel whose name matches a glob, now and created later, read as one.

    Made by ``client.subscribe_matching(pattern, ...)``: ``async for msg in matching`` or
    ``await matching.receive()``; ``msg.channel`` says which channel each came from, and
    ``msg.lost`` counts what that channel's own subscription lost. ``channels`` lists the
    names subscribed now. Channels are read round robin (a flooded one does not starve a
    quiet one), and as with ``ts.merge`` nothing is taken from a subscription before the
    application asks: the rest waits in each channel's server-side buffer under its policy.

    A matching channel that ends delivers what was published before its end, then leaves the
    set (and ``channels``); one of that name created again joins it again. A channel created
    later past ``max_channels`` is not subscribed (a warning in the log, once) until a member
    leaves (its channel ended): the channels skipped so take the free slots in name order,
    those deleted meanwhile passed over. A channel whose subscription the server ends
    (``LimitExceeded``) raises it once from ``receive`` and is subscribed again. The pattern
    subscription itself ends only when closed, or with its client (``ConnectionClosed`` from
    ``receive`` once the messages here are read).

    ``statistics()`` counts in total and per channel; ``retune(...)`` changes every
    channel's subscription, and those of the channels that join later.
    """

    def __init__(
        self, client: Client, pattern: str, options: dict[str, Any], max_channels: int
    ) -> None:
        self._client = client
        self.pattern = pattern
        self.channel = pattern  # (what a SyncSubscription's messages name)
        self._options = options  # the keyword options of each channel's subscribe
        self.max_channels = max_channels
        # Every member, ended ones until their end is read (the marks: see _Mark).
        self._subs: dict[Subscription, _Mark] = {}
        # The members that may have something to read, in round robin order; every other
        # member has its mark armed. A member stays here after a message and goes to the
        # back: the next visit finds its next frame, or arms its mark (one receive_nowait
        # that finds nothing per run of frames: how a no-prefetch member asks for more).
        # (Walking every member per message instead, and handing each the wake-up event
        # per wait: 1000 channels, one busy, a reader that keeps up read ~2,000 messages/s
        # in trio and ~1,700 in a SyncClient; this way ~140,000 and ~59,000, as with one
        # channel: ~160,000 and ~74,000. A loaded 2-core machine, in-process server.)
        self._ready: deque[Subscription] = deque()
        self._queued: set[Subscription] = set()  # the members in _ready
        self._active: dict[str, Subscription] = {}  # the newest subscription of each name
        self._leaving: set[Subscription] = set()  # gone (a restart): closed once read out
        # Members waiting to resume that a listing did not show: since when (LEAVE_UNLISTED_S),
        # and when to list again to see whether they are still gone.
        self._unlisted: dict[Subscription, float] = {}
        self._relist_at = math.inf
        # The first message of a member that joined after the entry (the frames of its
        # channel before it were published for this pattern too: counted as lost), or that
        # took the place of one whose channel ended or went (its new life: a reset gap).
        self._first: dict[Subscription, str] = {}
        self._entered = False  # the entry's listing is subscribed
        # Names a member was added for, the newest KNOWN_NAMES_KEPT (a dashboard open for
        # days over channels named per run must not grow without bound): an older one
        # forgotten comes back as a channel joined late, not as a reset.
        self._known: dict[str, None] = {}
        self._joined_lost = 0  # frames counted lost by _first_message
        self._locks: dict[str, trio.Lock] = {}  # one change per name at a time
        self._events: Subscription | None = None  # $channels
        self._taken = 0
        self._closed = False
        self._error: TrioStreamError | None = None  # the end (the client's): after the rest
        self.end_reason: str | None = None  # as Subscription.end_reason: why it ended
        self._scope = trio.CancelScope()  # the follower tasks
        self._waiting: trio.Event | None = None  # what a receive waits on
        self._reconnects_at_start = 0  # client.reconnects when _start began
        # Names not read (refused, past max_channels), said once: each with the number of the
        # listing that last saw it refused (see _resync). It only serves to say a name once,
        # so it is bounded as _skipped is (SKIPPED_NAMES_KEPT): past that, a name refused is
        # said but not remembered (a listing may say it again), and said once in all
        # (_refused_past_bound) while the names remembered fill the bound.
        self._refused: dict[str, int] = {}
        self._refused_past_bound = False
        # A listing is wanted (set) / what the last one covered (see _request_listing).
        self._listing_wanted = trio.Event()
        self._listed_key: tuple[int, int] | None = None
        self._announced: set[str] = set()  # announced since the last listing began, not live
        # Listings begun: what a name skipped or refused is stamped with. A listing forgets
        # the names it does not show only if they were stamped before it began: its answer
        # may predate a channel skipped or refused while it was on its way (a review).
        self._listings = 0
        # Members the server ended with an error, to subscribe again: [delay, ended at] each.
        # Kept only while a member of that name is subscribed (its next end backs off): a
        # member's end is read after its channel's "deleted" (an end is queued behind its
        # frames), so kept longer it grew by one per channel ever read (_again_after).
        self._again: dict[str, list[float]] = {}
        # Steps for _follow_ends, which starts each (a channel subscribed again, a free slot
        # taken): a channel, not its nursery, so that an end read before that task first
        # runs waits for it (it was skipped, and the channel never read again), and one
        # read after the pattern's end goes nowhere (the closed nursery raised RuntimeError
        # from receive: a review).
        self._again_send, self._again_receive = trio.open_memory_channel[
            Callable[[], Awaitable[None]]
        ](math.inf)
        # Matching channels skipped for max_channels, subscribed in name order as members
        # leave (_fill_free_slots), not at the next listing only (after a reconnect or a
        # gap: rare); and whether one was skipped but not remembered (SKIPPED_NAMES_KEPT).
        # Each with the listing number it was skipped under (see _listings).
        self._skipped: dict[str, int] = {}
        self._skipped_forgotten = False
        # Subscribes on their way (_ensure): each holds a slot of max_channels until it lands
        # or fails, or a channel announced meanwhile took that slot too (a review: two
        # members with max_channels=1).
        self._subscribing = 0
        # _fill_free_slots running now, and one queued by _slot_back and not begun yet.
        self._filling = 0
        self._fill_queued = False
        # Members ended by _end_leaving (a new member took their channel), until read out.
        self._replaced: set[Subscription] = set()
        # Totals kept as members come and go and messages are taken: a message costs the
        # same with 1000 channels as with one (SyncSubscription._take reads them per message).
        self._windows: Counter[int] = Counter()
        self._window = 1
        self._returns = 0
        self._gone_lost = 0
        # For statistics(): what members that left took, and the frames each member that
        # joined late was counted lost before its first message (in _joined_lost too).
        self._started_at = trio.current_time()
        self._gone_frames = 0
        self._gone_bytes = 0
        self._joined_lost_of: dict[Subscription, int] = {}
        # retune(): one at a time; a member subscribed with options older than these is
        # retuned before it joins (_ensure compares the generation it subscribed under).
        self._retune_lock = trio.Lock()
        self._options_generation = 0

    # -- what the application reads ---------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        """The names of the matching channels subscribed now, sorted: a channel that ended
        stays until its last message is read."""
        return sorted(
            name
            for name, sub in self._active.items()
            if (not sub._ended or sub._has_queued) and sub not in self._leaving
        )

    @property
    def lost(self) -> int:
        """Frames the channels' subscriptions lost (to overflow, and of a channel joined
        late: those before its first message), in total."""
        return self._gone_lost + self._joined_lost + sum(sub.lost for sub in self._subs)

    def statistics(self) -> PatternStatistics:
        """Frames, bytes and losses so far and the rates, in total and per channel (see
        PatternStatistics)."""
        frames = self._gone_frames
        nbytes = self._gone_bytes
        buffered = 0
        rate_fps = rate_bps = 0.0
        channels: dict[str, SubscriptionStatistics] = {}
        named = set(self.channels)
        for sub in self._subs:
            stats = sub.statistics()
            frames += stats.frames
            nbytes += stats.bytes
            buffered += stats.buffered
            rate_fps += stats.rate_fps
            rate_bps += stats.rate_bps
            if sub.channel in named and self._active.get(sub.channel) is sub:
                joined_lost = self._joined_lost_of.get(sub, 0)
                if joined_lost:
                    stats = dataclasses.replace(stats, lost=stats.lost + joined_lost)
                channels[sub.channel] = stats
        age_s = trio.current_time() - self._started_at
        return PatternStatistics(
            frames=frames,
            bytes=nbytes,
            lost=self.lost,
            buffered=buffered,
            rate_fps=rate_fps,
            rate_bps=rate_bps,
            mean_rate_fps=frames / age_s if age_s > 0 else 0.0,
            mean_rate_bps=nbytes / age_s if age_s > 0 else 0.0,
            age_s=age_s,
            channels=dict(sorted(channels.items())),  # (a proxy did not pickle: a review)
        )

    async def retune(
        self,
        *,
        policy: str | None = None,
        size: int | None = None,
        every: int | None = None,
        max_rate: float | _Keep | None = _Keep.KEEP,
        block_timeout: float | None = None,
    ) -> None:
        """Change every channel's subscription on the server, as ``Subscription.retune``
        changes one (between two frames: no gap, no duplicate), and the options of the
        channels that join later.

        Arguments left out stay as they are; ``max_rate=None`` removes the rate limit. It
        returns once every channel subscribed now has been retuned. A channel that ended
        meanwhile is passed over (it leaves, and one of that name created again joins with
        the new options); one waiting to come back after a reconnection (its channel
        missing, or the connection lost as the retune went out) comes back with them. A
        ``policy`` given without ``size`` takes the size the channels were subscribed with.
        While the client reconnects it waits for the connection, as ``Subscription.retune``
        does (bound it with ``trio.move_on_after``: the channels not reached keep their
        options, later ones join with the new). One retune at a time: a second waits for
        the first. Cancelled part-way, the
        channels not reached yet keep their options (later ones join with the new): call
        it again.

        Raises:
            InvalidArgument: a bad value (nothing is changed then), or the pattern
                subscription is closed.
            ConnectionClosed: the client is closed.
        """
        from ._client import check_subscribe_options  # (_client imports this module)

        changed = retune_changes(
            policy=policy, size=size, every=every, max_rate=max_rate, block_timeout=block_timeout
        )
        async with self._retune_lock:
            if self._closed or self._error is not None:
                raise InvalidArgument(f"this pattern subscription has ended ({self.end_reason})")
            # As a later channel will be subscribed with them (a size the new policy needs).
            options = {**self._options, **changed}
            check_subscribe_options(**{name: options[name] for name in RETUNE_CHECKED})
            if "policy" in changed and options["size"] is not None:
                # The size a later channel is subscribed with: a channel leaving "unbounded"
                # has none on the server to keep ("needs a size").
                changed["size"] = options["size"]
            # From here a channel subscribed joins with the new options (see _ensure).
            self._options = options
            self._options_generation += 1
            members = [sub for sub in self._subs if not sub._ended]
            limiter = trio.CapacityLimiter(SUBSCRIBES_IN_FLIGHT)
            errors: list[TrioStreamError] = []

            async def one(sub: Subscription) -> None:
                async with limiter:
                    try:
                        await self._retune_member(sub, changed)
                    except TrioStreamError as exc:
                        errors.append(exc)

            async with trio.open_nursery() as nursery:
                for sub in members:
                    nursery.start_soon(one, sub)
            if errors:
                raise errors[0]

    async def _retune_member(self, sub: Subscription, changed: dict[str, Any]) -> None:
        """Retune one member (see retune): passed over if it ended; told to resume with
        ``changed`` if it waits to resume.

        Raises:
            ConnectionClosed: the client is closed.
            TrioStreamError: another error of the server's (a memory limit).
        """
        try:
            await sub.retune(**_retune_arguments(changed))
            mark = self._subs.get(sub)
            if mark is not None and mark.window != sub.window:
                self._recount(sub, mark)
        except TrioStreamError as exc:
            if sub._ended:
                return  # ended, closed (the client's InvalidArgument "has ended")
            if not sub._live and not self._client.closed:
                # Its channel is missing after a reconnection (ChannelNotFound "not back"),
                # or the connection was lost as the request went out: it resumes with them.
                sub._respec(changed)
                return
            if isinstance(exc, InvalidArgument):
                # The values were checked as the server checks them (retune_changes, and
                # check_subscribe_options with the pattern's own): what is left is the
                # server's "no subscription": it ended there, its end still on its way
                # behind the frames it delivers first.
                log.info(
                    "pattern %r: channel %r not retuned (%s): it ended",
                    self.pattern,
                    sub.channel,
                    exc,
                )
                return
            raise

    @property
    def window(self) -> int:
        """Frames a SyncPatternSubscription takes into its thread at once, at most."""
        return self._window

    @property
    def _credit_returns(self) -> int:
        """Counts a credit return of any member as a message was taken, and the taking of
        the last frame a reconnection left queued in a member: SyncSubscription._take ends
        its batch with either message (see there; a member's ``_stale`` frames are held by
        the server until that member's next credit, which this one's ``_stale`` of 0 leaves
        to this count)."""
        return self._returns

    @property
    def _stale(self) -> int:
        return 0  # (counted in _credit_returns, per member)

    @property
    def _prefetch(self) -> bool:
        return bool(self._options.get("prefetch", True))

    @property
    def _has_queued(self) -> bool:
        return any(sub._has_queued for sub in self._ready)  # (the others have nothing)

    def receive_nowait(self) -> Message:
        """The next message if one of the channels has one already.

        Raises:
            trio.WouldBlock: none has one.
            SubscriptionEnded: closed ("this pattern subscription was closed").
            ConnectionClosed: as :meth:`receive`, once every message here was read.
            LimitExceeded: as :meth:`receive`.
        """
        if self._closed:
            raise SubscriptionEnded(self.end_reason)
        ready = self._ready
        while ready:
            sub = ready[0]
            returns = sub._credit_returns
            stale = sub._stale
            try:
                message = sub.receive_nowait()
            except trio.WouldBlock:
                self._count_returns(sub, returns, stale)
                self._unready()
                if sub in self._leaving:
                    self._leave_now(sub)
                else:
                    self._arm(sub)
                continue
            except trio.EndOfChannel:
                self._unready()
                replaced = sub in self._replaced  # (_drop forgets it)
                self._drop(sub)
                if replaced:
                    # Ended by _end_leaving: a new member reads its channel's new life. Not
                    # looked for again: that kept a backoff (_again) for the new member, whose
                    # first end then waited for it.
                    continue
                # Looked for again: a channel the server ended for its readers but kept
                # is read on, from its new life; one that is gone is not found. (A reset
                # end marked `again`, a cluster's Redis restarted empty, the member rides
                # through by itself; this is an older server's, or one not back within
                # RESET_BACK_S, or one whose channel a newer member reads: _ensure.)
                # (It left for good: no channel of that name is announced as created, and
                # 534 frames of 5 channels were lost uncounted, a migrating team.)
                self._subscribe_again(sub.channel)
                continue
            except BaseException as exc:
                self._count_returns(sub, returns, stale)
                if not sub._ended:  # a frame that did not decode: the stream goes on
                    ready.rotate(-1)
                    raise
                # Its end's error: said once, then it leaves (and is subscribed again).
                self._unready()
                self._drop(sub)
                if isinstance(exc, ConnectionClosed) and self._client.closed:
                    self._fail(exc)  # the client's end: raised once the rest is read
                    continue
                if isinstance(exc, TrioStreamError):
                    self._subscribe_again(sub.channel)
                raise
            if sub._credit_returns != returns or (stale and not sub._stale):
                self._returns += 1
            ready.rotate(-1)  # round robin: asked again after the others
            if self._first and sub in self._first:
                return self._first_message(sub, message)
            return message
        if self._error is not None:
            raise fresh(self._error)
        raise trio.WouldBlock

    def _first_message(self, sub: Subscription, message: Message) -> Message:
        """``message``, the first of a member that joined late or took an ended member's
        place, with what the reader could not know otherwise: a channel created after the
        entry (while the reader was away, or before its announcement was acted on) had
        ``seq - 1`` frames before this one, published for this pattern too, which came
        uncounted (a migrating team: 198 of 350 frames missing, ``lost 0``); one of a name
        read before is its channel's new life, a ``reset`` gap (lost: not known), as a
        resumed subscription shows it (some channels of a restarted server came back
        with a reset and others without one, a new user)."""
        kind = self._first.pop(sub)
        if message.gap is not None:
            return message  # the member's own account (a resume) says it already
        before = max(message.seq - 1 - message.lost, 0)  # (msg.lost: history left out)
        every = self._options.get("every", 1)
        if isinstance(every, int) and every > 1:
            before //= every  # of every=N, those it would have kept (as a resume counts)
        if kind == "rejoined":
            return message._replace(gap=Gap("reset", None, 0))
        if not before:
            return message
        self._joined_lost += before
        self._joined_lost_of[sub] = before
        lost = message.lost + before
        return message._replace(lost=lost, gap=Gap("resumed", lost, 0))

    def _count_returns(self, sub: Subscription, returns: int, stale: int) -> None:
        if sub._credit_returns != returns or (stale and not sub._stale):
            self._returns += 1

    def _unready(self) -> None:
        self._queued.discard(self._ready.popleft())

    def _mark_ready(self, sub: Subscription) -> None:
        """``sub`` has a frame or its end (its mark was set)."""
        mark = self._subs.get(sub)
        if mark is not None:
            if mark.window != sub.window:  # (resumed with a retuned size)
                self._recount(sub, mark)
            if sub not in self._queued:
                self._queued.add(sub)
                self._ready.append(sub)
        self._wake()

    def _arm(self, sub: Subscription) -> None:
        # (A _Mark is what _wake_with keeps and _wake sets: the part of an Event it uses.)
        if not sub._wake_with(cast("trio.Event", self._subs[sub])):
            raise trio.BusyResourceError(
                f"another task is receiving from subscription {sub.channel!r:.80} itself: "
                "read a pattern subscription's channels only through it"
            )

    async def receive(self) -> Message:
        """The next message of any matching channel, waiting for one.

        Raises:
            trio.EndOfChannel: closed (``async for`` just stops).
            ConnectionClosed: the client is closed, or gave up reconnecting (raised once the
                messages already here are read).
            LimitExceeded: the server ended one channel's subscription (a block reader past
                its ``block_timeout``, a memory limit): said once, and that channel is
                subscribed again.
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
            # Every member is armed now (none is ready): its next frame or end sets this.
            event = self._waiting
            if event is None:
                event = self._waiting = trio.Event()
            await event.wait()
        self._taken += 1
        if not self._taken % YIELD_EVERY_MESSAGES:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _wake(self) -> None:
        if self._waiting is not None:
            self._waiting.set()
            self._waiting = None

    def __aiter__(self) -> PatternSubscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    # -- the set of subscriptions -----------------------------------------------------------
    def _counted_at_least(self, limit: int) -> bool:
        """Whether ``limit`` members count against max_channels: those subscribed now, not
        ended, and live (one waiting to resume after a reconnect may never come back), and
        the subscribes on their way (``_subscribing``)."""
        pending = self._subscribing
        if len(self._active) + pending < limit:  # (the common case, without walking them)
            return False
        return sum(sub._live and not sub._ended for sub in self._subs) + pending >= limit

    def _too_many(self, more: int) -> LimitExceeded:
        return LimitExceeded(
            f"pattern {self.pattern[:100]!r} matches more than max_channels="
            f"{self.max_channels} channels ({more} would be subscribed): each is a "
            "subscription with its own buffer on the server; narrow the pattern, or give "
            "subscribe_matching(..., max_channels=N) a larger N"
        )

    def _add(self, sub: Subscription) -> None:
        if sub.channel in self._known:
            self._first[sub] = "rejoined"
        elif self._entered:
            self._first[sub] = "late"
        known = self._known
        known.pop(sub.channel, None)
        known[sub.channel] = None  # (the newest last)
        if len(known) > KNOWN_NAMES_KEPT:
            del known[next(iter(known))]
        self._skipped.pop(sub.channel, None)  # (subscribed by a listing, say)
        mark = self._subs[sub] = _Mark(self, sub)
        self._active[sub.channel] = sub
        self._count_window(mark.window, 1)
        self._mark_ready(sub)  # what came before this (its first frames) is read: asked once

    def _count_window(self, window: int, count: int) -> None:
        windows = self._windows
        windows[window] += count
        if windows[window] <= 0:
            del windows[window]
        self._window = max(windows, default=1)

    def _recount(self, sub: Subscription, mark: _Mark) -> None:
        """``sub``'s window changed (a retune, or a resume with the retuned size): counted
        anew. Counted once, a retuned window was taken off as another: the counts went
        negative and ``window`` kept the old one (a review)."""
        self._count_window(mark.window, -1)
        mark.window = sub.window
        self._count_window(mark.window, 1)

    def _drop(self, sub: Subscription) -> None:
        """``sub`` leaves the set (left in ``_ready``, it is passed over: its mark is void)."""
        self._replaced.discard(sub)
        mark = self._subs.pop(sub, None)
        if mark is None:
            return
        self._leaving.discard(sub)
        self._unlisted.pop(sub, None)
        self._first.pop(sub, None)
        self._joined_lost_of.pop(sub, None)
        self._gone_lost += sub.lost
        stats = sub.statistics()
        self._gone_frames += stats.frames
        self._gone_bytes += stats.bytes
        self._count_window(mark.window, -1)
        if self._active.get(sub.channel) is sub:
            del self._active[sub.channel]

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

    async def _ensure(self, name: str, announced: bool, at_entry: bool = False) -> None:
        """Have ``name`` subscribed; ``announced``: a ``created`` event named it (it may be
        a new channel of a name whose old subscription has not ended yet).

        A channel this client may not read, or one past ``max_channels`` after the entry, is
        skipped (said once: _refuse).

        Raises:
            ClusterUnavailable, ConnectionClosed: for the caller to try again (a listing).
            LimitExceeded, another TrioStreamError: only ``at_entry``.
        """
        async with self._name_lock(name):
            if self._closed:
                return
            old = self._active.get(name)
            if announced and old is not None and old in self._leaving and not old._live:
                self._end_leaving(old)
            if old is not None and not old._ended and (not announced or not old._live):
                # Subscribed; or waiting to resume after a reconnect, which follows the
                # channel of that name by itself (with a "reset" gap if it is a new one).
                if announced:
                    self._announced.add(name)  # (the listing must not close it: _resync)
                return
            if self._counted_at_least(self.max_channels):
                if at_entry:
                    raise self._too_many(len(self._active) + 1)
                self._skip(name)
                subscribed = (
                    "1 channel is"
                    if self.max_channels == 1
                    else f"{self.max_channels} channels are"
                )
                self._refuse(
                    name,
                    f"{subscribed} subscribed (max_channels): it is read once one of them "
                    "ends; give subscribe_matching(..., max_channels=N) a larger N to read "
                    "more at once",
                )
                return
            self._subscribing += 1  # its slot, until it lands or fails (_counted_at_least)
            try:
                await self._join(name, old, at_entry)
            finally:
                self._subscribing -= 1
                if self._active.get(name) is old:  # (nothing landed: failed, or not needed)
                    self._slot_back()

    def _slot_back(self) -> None:
        """A subscribe gave its slot back without a member (its channel deleted meanwhile,
        refused): a name skipped while it held the slot (a listing's others, an announced
        one) takes it. Nothing else would give it one until some member's end or listing,
        perhaps never. A fill running now looks again after its step; otherwise one is
        queued (and one queued is enough: each looks again)."""
        if (
            self._closed
            or self._filling
            or self._fill_queued
            or not (self._skipped or self._skipped_forgotten)
            or self._counted_at_least(self.max_channels)
        ):
            return
        self._fill_queued = True
        self._again_send.send_nowait(self._fill_free_slots)

    def _end_leaving(self, old: Subscription) -> None:
        """A channel of ``old``'s name is announced while ``old`` leaves (found gone by a
        listing, kept only until its messages are read): that is a new channel, subscribed
        beside it. Left waiting to resume, ``old`` either followed the name into that life
        too (two members reading one channel), or was closed before it found it, and
        nothing read the new channel until some later listing (a review). It ends now
        instead, after what it has: read out, it leaves as an ended member does."""
        if old._ended:
            return
        self._replaced.add(old)
        old._end_waiting(f"channel {old.channel!r} is gone (not listed)")

    async def _join(self, name: str, old: Subscription | None, at_entry: bool) -> None:
        """_ensure's subscribe, under its name's lock and with a slot held (see there)."""
        generation = self._options_generation
        sub = await self._subscribe(name, at_entry)
        if sub is None:
            return
        if self._closed:  # closed while the subscribe was on its way: not left open
            sub.close_nowait()
            return
        if old is not None and not old._ended and old.position.epoch == sub.position.epoch:
            sub.close_nowait()  # the same channel, listed and announced: one is enough
            return
        while generation != self._options_generation and not self._closed:
            # Subscribed with the options from before a retune() that did not see it.
            generation = self._options_generation
            try:
                await self._retune_member(sub, self._retunable())
            except TrioStreamError as exc:
                sub.close_nowait()
                if isinstance(exc, (ClusterUnavailable, ConnectionClosed)) or at_entry:
                    raise
                self._refuse(name, str(exc))
                return
        if self._closed:
            sub.close_nowait()
            return
        if old is not None and not old._ended:
            if old.position.epoch == sub.position.epoch:
                sub.close_nowait()  # it rode its reset end into this life meanwhile
                return
            # The new subscription reads the channel's new life: the old one delivers
            # what it has and ends, and must not ride a reset end (a cluster's Redis
            # restarted empty) into that life too, which two members would then read.
            old._end_at_reset()
        self._add(sub)

    def _retunable(self) -> dict[str, Any]:
        """The options a retune sets, as they are now (``retune_changes``'s form)."""
        return retune_changes(**{name: self._options[name] for name in RETUNED})

    def _skip(self, name: str) -> None:
        """``name`` is not read for max_channels: remembered for a slot that frees."""
        if name in self._skipped or len(self._skipped) < SKIPPED_NAMES_KEPT:
            self._skipped[name] = self._listings
        else:
            self._skipped_forgotten = True

    async def _fill_free_slots(self) -> None:
        """A member left: the channels skipped for max_channels take the free slots, in
        name order (as a listing would subscribe them), passing over those gone meanwhile;
        the ones not remembered (SKIPPED_NAMES_KEPT) are found by a listing."""
        self._fill_queued = False  # (this one looks: see _slot_back)
        self._filling += 1
        try:
            while not self._closed and not self._counted_at_least(self.max_channels):
                if not self._skipped:
                    if self._skipped_forgotten:
                        self._skipped_forgotten = False  # (a listing remembers them again)
                        self._request_listing(force=True)
                    return
                name = min(self._skipped)
                listing = self._skipped.pop(name)
                try:
                    await self._ensure(name, announced=False)  # skipped again if none is free
                except (ClusterUnavailable, ConnectionClosed) as exc:
                    self._skipped.setdefault(name, listing)  # (the listing asked covers it)
                    self._transient(exc)
                    return
        finally:
            self._filling -= 1

    def _refuse(self, name: str, why: str) -> None:
        """Say once that ``name`` is not read (see ``_refused``)."""
        refused = self._refused
        if name in refused:
            refused[name] = self._listings  # (refused again: a listing keeps it)
            return
        if len(refused) < SKIPPED_NAMES_KEPT:
            refused[name] = self._listings
        elif self._refused_past_bound:
            return  # (said once past the bound: not name by name)
        else:
            self._refused_past_bound = True
            why += (
                f" (and more: past {SKIPPED_NAMES_KEPT} channels not read, they are not "
                "said one by one)"
            )
        log.warning("pattern %r: channel %r is not read: %s", self.pattern, name, why)

    async def _subscribe(self, name: str, at_entry: bool) -> Subscription | None:
        """A subscription to ``name``; None if this client may not read it (gone meanwhile,
        another client's private channel, a key it lacks, a server limit after the entry)."""
        try:
            # (hint=False: a channel gone meanwhile is no typo; the "did you mean" of
            # open_subscription's ChannelNotFound costs a listing of every channel.)
            return await self._client._open_subscription(name, hint=False, **self._options)
        except ChannelNotFound:
            return None  # ended since it was listed or announced
        except (ClusterUnavailable, ConnectionClosed):
            raise  # for the caller's next listing
        except TrioStreamError as exc:
            if at_entry and not isinstance(exc, AuthError):
                raise
            self._refuse(name, str(exc))
            return None

    async def _list(self) -> list[str]:
        """The names of the channels visible to this client that match, sorted."""
        return sorted(
            info.name for info in await self._client.channels() if matches(self.pattern, info.name)
        )

    async def _subscribe_all(self, names: list[str], at_entry: bool = False) -> None:
        limiter = trio.CapacityLimiter(SUBSCRIBES_IN_FLIGHT)
        errors: list[TrioStreamError] = []

        async def one(name: str) -> None:
            async with limiter:
                if errors:
                    return
                try:
                    await self._ensure(name, announced=False, at_entry=at_entry)
                except TrioStreamError as exc:
                    errors.append(exc)

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        if errors:
            raise errors[0]

    def _listing_key(self) -> tuple[int, int] | None:
        """What a listing begun now covers: this connection, after ``$channels`` was followed
        on it (None while it is not: a listing then misses what it announces later)."""
        events = self._events
        if events is None or not events._live:
            return None
        return (self._client.reconnects, events.sub_id)

    def _request_listing(self, *, force: bool = False) -> None:
        """Have the channels listed again (by _follow_listings, once the client is open).

        Both a reconnection and the gap ``$channels`` shows after it ask: once is enough,
        so a listing begun on this connection after ``$channels`` was followed on it covers
        both (a ``lost`` count, or a failed step, asks with ``force``).
        """
        if not force and self._listed_key is not None and self._listed_key == self._listing_key():
            return
        if force:
            self._listed_key = None
        self._listing_wanted.set()

    async def _resync(self) -> None:
        """List the channels again and subscribe to the matching ones not subscribed; close
        the members waiting to resume whose channel is not listed (gone with a restart)."""
        self._listed_key = self._listing_key()
        self._announced = set()
        # A name skipped or refused from here on (a channel created, announced and skipped
        # while the answer is on its way) is stamped with this listing's number: the answer
        # may not show it, and it is not forgotten for that (see _listings).
        self._listings += 1
        listing = self._listings
        began = trio.current_time()
        forgotten, self._skipped_forgotten = self._skipped_forgotten, False
        try:
            names = await self._list()
        except BaseException:
            self._skipped_forgotten |= forgotten  # (not found by this listing after all)
            raise
        if self._closed:
            return
        listed = set(names)
        # Skipped again if no slot is free (the listed names not remembered, whose skip was
        # forgotten, among them): the ones remembered are those still there.
        self._forget_unlisted(self._skipped, listed, listing)
        await self._subscribe_all(names)
        now = trio.current_time()
        self._relist_at = math.inf
        for sub in list(self._subs):
            name = sub.channel
            if sub._live or sub._ended or name in listed or name in self._announced:
                self._unlisted.pop(sub, None)
                continue
            since = self._unlisted.setdefault(sub, now)
            if now - since < LEAVE_UNLISTED_S:
                # Listed again then (_follow_listings): gone for good, or back by then.
                self._relist_at = min(self._relist_at, since + LEAVE_UNLISTED_S)
                continue
            log.info("pattern %r: channel %r is gone (not listed): left", self.pattern, name)
            if sub._has_queued:  # its messages first (then receive_nowait closes it)
                self._leaving.add(sub)
            else:
                self._leave_now(sub)
        # Said once per name, for the names that still exist: the rest are forgotten.
        self._forget_unlisted(self._refused, listed, listing)
        if len(self._refused) < SKIPPED_NAMES_KEPT:
            self._refused_past_bound = False
        for name in [
            name
            for name, (_, ended_at) in self._again.items()
            if name not in listed and ended_at < began
        ]:
            del self._again[name]

    @staticmethod
    def _forget_unlisted(names: dict[str, int], listed: set[str], listing: int) -> None:
        """Drop from ``names`` those ``listing`` did not show, stamped before it began."""
        for name in [name for name, seen in names.items() if seen < listing and name not in listed]:
            del names[name]

    def _leave_now(self, sub: Subscription) -> None:
        """A member whose channel is gone, read out: closed (no more resubscribe attempts)
        and out of the set, unless it came back meanwhile."""
        self._leaving.discard(sub)
        if sub._live:
            self._arm(sub)
            return
        self._drop(sub)
        sub.close_nowait()
        if sub.channel not in self._active:
            self._again.pop(sub.channel, None)  # (no member of that name to back off)
        self._again_send.send_nowait(self._fill_free_slots)

    def _subscribe_again(self, name: str) -> None:
        """The server ended ``name``'s subscription with an error, now read: subscribe again
        (with a backoff if it ended a moment ago too)."""
        if self._closed or self._error is not None or self._scope.cancel_called:
            return
        now = trio.current_time()
        delay, ended_at = self._again.get(name, (0.0, -math.inf))
        if now - ended_at > AGAIN_QUIET_S:
            delay = 0.0
        self._again[name] = [min(max(delay * 2, AGAIN_INITIAL_S), AGAIN_MAX_S), now]
        self._again_send.send_nowait(functools.partial(self._again_after, name, delay))

    async def _again_after(self, name: str, delay: float) -> None:
        await trio.sleep(delay)
        try:
            await self._ensure(name, announced=False)
        except (ClusterUnavailable, ConnectionClosed) as exc:
            self._transient(exc)
            return
        if name not in self._active:
            # No member of that name (its channel gone, the usual end; refused; skipped for
            # max_channels): no next end to back off from. Kept, the entry stayed for the
            # client's life, one per channel that ever ended (see _again).
            self._again.pop(name, None)
        # Its slot first (the channel lives on); if it is gone, a skipped channel's.
        await self._fill_free_slots()

    # -- life ---------------------------------------------------------------------------------
    async def _start(self) -> None:
        """Follow ``$channels``, then list and subscribe (see the module's docstring)."""
        client = self._client
        self._reconnects_at_start = client.reconnects
        try:
            self._events = await client.open_subscription("$channels", policy="unbounded")
            if self._closed:  # (closed meanwhile: _all_subs found nothing to close then)
                self.close_nowait()
                return
            self._listed_key = self._listing_key()
            names = [name for name in await self._list() if name not in self._active]
            if len(names) > self.max_channels:
                raise self._too_many(len(names))  # before opening any of them
            await self._subscribe_all(names, at_entry=True)
            self._entered = True  # (a channel joined from now on joined late: _first_message)
        except BaseException:
            self.close_nowait()
            raise
        if self._closed:
            self.close_nowait()
            return
        if not client._port().spawn(self._follow, name=f"subscribe_matching {self.pattern}"):
            self.close_nowait()
            client._check_open()
            raise ConnectionClosed("the client is closing")

    async def _follow(self) -> None:
        """The background tasks: new channels, listings, resubscriptions."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                for follow in (
                    self._follow_events,
                    self._follow_reconnects,
                    self._follow_listings,
                    self._follow_ends,
                ):
                    nursery.start_soon(self._guarded, follow)

    async def _guarded(self, follow: Callable[[], Awaitable[None]]) -> None:
        # Nothing may escape into the client's nursery: the client's end goes to the reader
        # (each task handles what is transient itself).
        try:
            await follow()
        except ConnectionClosed as exc:
            if not self._client.closed:
                log.exception("pattern %r stopped following new channels", self.pattern)
            self._fail(exc)
        except Exception as exc:  # a bug: said, and raised by receive rather than lost
            log.exception("pattern %r stopped following new channels", self.pattern)
            self._fail(TrioStreamError(f"pattern subscription failed: {exc!r}"))

    def _transient(self, exc: ClusterUnavailable | ConnectionClosed) -> None:
        """A step failed for now (the cluster's Redis, the connection): the next listing
        covers it; the client's own end is raised (to _guarded)."""
        if isinstance(exc, ConnectionClosed) and self._client.closed:
            raise exc
        log.info("pattern %r: %s; the channels are listed again", self.pattern, exc)
        self._request_listing(force=True)

    async def _wait_open(self) -> None:
        """Until the client is open.

        Raises:
            ConnectionClosed: the client is closed.
        """
        client = self._client
        while (state := client.state) != "open":
            if state == "closed":
                client._check_open()
                raise ConnectionClosed("the client is closed")
            await client.wait_state_change(state)

    async def _pause(self, delay_s: float) -> None:
        """Before trying again: ``delay_s``, or less if the client's state changes; then
        until it is open."""
        client = self._client
        with trio.move_on_after(delay_s):
            await client.wait_state_change(client.state)
        await self._wait_open()

    async def _follow_events(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            events = self._events
            if events is None:
                try:
                    events = await self._client.open_subscription("$channels", policy="unbounded")
                except (ClusterUnavailable, ConnectionClosed, LimitExceeded) as exc:
                    if isinstance(exc, ConnectionClosed) and self._client.closed:
                        raise
                    log.info("pattern %r: $channels not followed yet: %s", self.pattern, exc)
                    await self._pause(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                if self._closed:
                    events.close_nowait()
                    return
                self._events = events
                self._request_listing(force=True)  # what it announced meanwhile is gone
            try:
                async for event in events:
                    delay = RETRY_INITIAL_S
                    await self._on_event(event)
            except TrioStreamError as exc:
                if isinstance(exc, ConnectionClosed) and self._client.closed:
                    raise
                log.warning(
                    "pattern %r: the $channels subscription ended (%s): followed again, "
                    "and the channels listed",
                    self.pattern,
                    exc,
                )
            if self._closed:
                return
            self._events = None
            events.close_nowait()
            await self._pause(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _on_event(self, event: Message) -> None:
        if event.lost:
            self._request_listing(force=True)  # announcements were missed
        elif event.gap is not None:
            self._request_listing()  # (after a reconnection: the listing it asked covers it)
        data = event.data
        if not isinstance(data, dict):
            return
        name = data.get("channel")
        if not isinstance(name, str) or not matches(self.pattern, name):
            return
        kind = data.get("event")
        if kind == "deleted":
            self._refused.pop(name, None)
            self._skipped.pop(name, None)
            self._again.pop(name, None)
        elif kind == "created":
            try:
                await self._ensure(name, announced=True)
            except (ClusterUnavailable, ConnectionClosed) as exc:
                self._transient(exc)

    async def _follow_reconnects(self) -> None:
        # The client says a reconnection is complete by going "open" again (its _restore
        # has resubscribed, $channels too, by then): what was created meanwhile is listed.
        # (Counted from before $channels was followed: a reconnection during the start is
        # one too.) Its end (closed, gave up) is the pattern subscription's.
        client = self._client
        seen = self._reconnects_at_start
        while True:
            state = client.state
            if state == "closed":
                client._check_open()  # raises ConnectionClosed: the reader is told
                raise ConnectionClosed("the client is closed")
            if state == "open" and client.reconnects != seen:
                seen = client.reconnects
                self._request_listing()
                continue  # (the state may have changed again meanwhile)
            await client.wait_state_change(state)

    async def _follow_listings(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            with trio.move_on_at(self._relist_at):  # (members unlisted for a while: _resync)
                await self._listing_wanted.wait()
            await self._wait_open()
            self._listing_wanted = trio.Event()  # (asked again from here: listed again)
            try:
                await self._resync()
            except (ClusterUnavailable, ConnectionClosed) as exc:
                if isinstance(exc, ConnectionClosed) and self._client.closed:
                    raise
                log.info("pattern %r: listing the channels failed (%s): again", self.pattern, exc)
                self._request_listing(force=True)
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_INITIAL_S

    async def _follow_ends(self) -> None:
        async with trio.open_nursery() as nursery:
            async for step in self._again_receive:
                nursery.start_soon(step)

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
        self._ready.clear()
        self._queued.clear()
        for sub in subs:
            self._drop(sub)
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
