"""The Redis engine: several nodes share channels, names, clients and frames through Redis.

How a frame travels: a writer's frames are queued by the session (no await on its read
path) and one task per writer appends them to the channel's Redis stream, a batch per round
trip (sequence numbers assigned there, see redis_streams). The writer's acknowledgements
(PUB_ACK) go out once Redis holds the frames. Every node that has readers of a channel,
the writer's own included, follows its stream with the node's one XREAD loop and hands each
batch to the broker (``deliver_remote``), which encodes each frame once and fans it out as a
local publish does. So every reader in the cluster sees one order, at the cost of one more
round trip to Redis for readers on the writer's node.

A node's local view of a channel is a broker :class:`Channel` (its "mirror") with the
epoch Redis gave it; the requests that need Redis (create, delete, open, subscribe, the
listings) are answered here, awaited in order by the session (see _server/engine.py).
The node where a channel was created keeps its lifetime and its owner's end (as on one
node: the broker's events), and deletes it in Redis; the other nodes hear of it on the
control bus.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import functools
import itertools
import logging
import math
import time
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, TypeVar

import coredis.exceptions
import trio

from .._exceptions import (
    AuthError,
    ChannelExists,
    ChannelNotFound,
    ClusterUnavailable,
    InvalidArgument,
    NameInUse,
)
from .._protocol.bytes_like import BytesLike
from .._protocol.frames import SharedData
from .._protocol.messages import (
    ControlMessage,
    CreateChannel,
    DeleteChannel,
    EncodedItems,
    GetStats,
    ListChannels,
    ListClients,
    OpenPublisher,
    Subscribe,
)
from .._server import requests
from .._server.broker import (
    Channel,
    Writer,
    channel_not_found,
    channel_taken,
    check_channel_key,
    check_channel_meta,
    check_channel_name,
    key_refused,
    nothing_to_delete,
    single_writer_taken,
)
from .._server.buffers import Policy
from .._server.engine import AsyncHandler, default_node_name
from .._server.engine import safe_url as _safe_url
from .._server.listing import channel_record, encode_stepwise
from .._server.outbox import HOLD_NOTICE_S, HOLD_WARNING_S, block_timeout_error
from .._server.resume import ADOPTED_OPTIONS, adoption_refused, same_option
from . import redis_orphans
from .cluster_rpc import ClusterRpc
from .redis_io import RedisEngineIO
from .redis_orphans import OrphanEnds
from .redis_registry import ChannelRecord, ChannelTaken, Moved
from .redis_streams import (
    REDIS_DOWN,
    REDIS_ERRORS,
    AppendInterrupted,
    EpochChanged,
    EpochReset,
    FrameBatch,
    NamedWriter,
    StaleClaim,
    WriterMoved,
    last_seq_in_stream,
    read_range,
)
from .retry_log import RetryLog, RetryLogGroup

if TYPE_CHECKING:
    from .._server.outbox import Reader
    from .._server.session import Session
    from .._server.state import ServerState

log = logging.getLogger(__name__)

MAX_APPEND_FRAMES: Final = 1000  # frames per append round trip
MAX_APPEND_BYTES: Final = 8 * 2**20  # bytes per append round trip (one Lua call's arguments)
APPEND_RETRY_S: Final = 0.2  # Redis down: the writer's frames wait (its window stops it)
# A writer's end removes its duplicate-batch mark from Redis; Redis down, the mark stays.
FORGET_TIMEOUT_S: Final = 0.5
# A client's delete first lets the frames its node took for the channel reach Redis and this
# node's readers, waiting at most this long, looking this often.
DELETE_FLUSH_S: Final = 2.0
FLUSH_POLL_S: Final = 0.005
# A node waits this long for Redis at start (a PING, then its subscriptions and first
# heartbeat) before it gives up with ClusterUnavailable.
STARTUP_TIMEOUT_S: Final = 10.0
GONE_REASON_TIMEOUT_S: Final = 2.0  # a writer's node asks Redis why a channel ended
REPLAY_MAX_FRAMES: Final = 1000  # a lossy reader's resume replays at most this many frames
REPLAY_PAGE_FRAMES: Final = 1000  # frames read from Redis per call while replaying
REPLAY_CATCH_UP_READS: Final = 50  # reads past the pages, while the position moves on
# While this node's block readers hold frames, their position is looked at this often (a
# writer on another node may wait for it; see _report_position).
BLOCK_REPORT_INTERVAL_S: Final = 0.002
# While a block reader here has no room left, this node asks Redis this often how long the
# channel's writers have waited for it (redis_holds): block_timeout ends it within this.
HELD_CHECK_INTERVAL_S: Final = 0.05
REREGISTER_INTERVAL_S: Final = 1.0  # how often a node checks its channels are still in Redis
# A channel registered again just as a delete here ended it is removed from Redis again,
# waiting at most this long (Redis down: the reaper ends it after the resume grace).
UNREGISTER_TIMEOUT_S: Final = 2.0
REAP_INTERVAL_S: Final = 1.0  # how often a node looks for channels of nodes that died
# A node taken for dead tells its clients to reconnect once for the ends of its channels
# that come within this long (the survivors end them one by one, a look each second).
FENCE_AGAIN_AFTER_S: Final = 10.0
# A create_channel looks again when the name changed hands under it (deleted, taken over
# meanwhile: see _adopt); each look is a few round trips.
CREATE_ATTEMPTS: Final = 3
# A client's request that needs Redis (create, delete, open, subscribe, the listings) gets an
# error within this long if Redis hangs (all its Redis calls together), as it does at once if
# Redis is down or refuses: the client's connection stays.
REQUEST_REDIS_TIMEOUT_S: Final = 10.0
# A connecting client's name claim in Redis is bounded too, below the handshake's own bound
# (handshake_timeout_s, 10 s by default), so that the client hears why rather than "no hello
# within the handshake timeout".
CLAIM_NAME_TIMEOUT_S: Final = 5.0
# A take-over's move in Redis is shielded from cancellation (see _move_here), this long at most.
TAKE_OVER_MOVE_TIMEOUT_S: Final = 2.0
DELETED: Final = "deleted"
CLIENT: Final = "client"
CHANNEL: Final = "channel"
NAME_TAKEN: Final = "name_taken"
NAME_MOVED: Final = "name_moved"
ADOPTED: Final = "adopted"
# A private channel made on a node ([name, owner]; a public one's is CHANNEL news): the other
# nodes drop a notice of its deletion kept for that owner (absent_owners.py).
MADE: Final = "made"
# Channels that a Redis restart lost, registered again within this long, are named in one line.
REGISTERED_AGAIN_GATHER_S: Final = 0.5
REGISTERED_AGAIN_NAMED: Final = 10

T = TypeVar("T")


class _Adoption(enum.Enum):
    """What :meth:`RedisEngine._adopt` made of a create_channel of a name that exists."""

    TAKEN = "taken"  # the session took the channel over by name
    REFUSED = "refused"  # not the session's to take: the create's ChannelExists stands
    CHANGED = "changed"  # the channel changed hands meanwhile: look again (the name may be free)


class _Kept(NamedTuple):
    """A channel this node keeps (its owner's end, its lifetime): under which epoch, with
    which holder token (redis_registry: rewritten by each take-over), created by which
    request."""

    epoch: str
    holder: str
    request: CreateChannel


class _KeptChannels(Mapping[str, _Kept]):
    """The channels a node keeps, by name, with how many of them were made with keep=True:
    each such create checks that count against max_kept_channels, and counting them by a
    walk took ~4 ms a create with 100,000 channels on the node."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Kept] = {}
        self.made_to_keep = 0

    def __getitem__(self, name: str) -> _Kept:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def set(self, name: str, kept: _Kept) -> None:
        self.discard(name)
        self._by_name[name] = kept
        self.made_to_keep += kept.request.keep

    def discard(self, name: str) -> None:
        kept = self._by_name.pop(name, None)
        if kept is not None:
            self.made_to_keep -= kept.request.keep


class _Mark(NamedTuple):
    """What an epoch's deletion mark in Redis says (RedisEngine._deletion_mark)."""

    deleted: bool | None  # None: Redis did not answer
    reason: str | None  # the mark's reason (None: none given, or not deleted)


_NO_ANSWER: Final = _Mark(None, None)


@dataclass(eq=False)
class _Appender:
    """One writer's frames on their way to Redis, as the session handed them over.

    Whole batches (one read of the writer's connection each) are queued and taken, with list
    slices where one must be cut: no Python-level step per frame on the writer's node.
    """

    writer: Writer
    # The appender of an earlier writer of the same client and channel that still has frames
    # on their way (a reconnect's reopened writer): this one appends after it is done.
    after: _Appender | None = None
    # (times, payloads, payload bytes, arrival) per publish_batch call, oldest first; the
    # arrival (time.monotonic) times a wait for a block reader's room (redis_holds)
    queued: deque[tuple[list[float], list[bytes], int, float]] = field(default_factory=deque)
    # Of the last take(): where each publish_batch call's frames start in it, and when they
    # arrived (its frames may come from several, and only the oldest waiting frame counts)
    taken_arrivals: list[tuple[int, float]] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)  # everything it held went its way
    appending: bool = False  # an append is on its way to Redis (taken, not yet answered)

    def put(self, times: Sequence[float], payloads: Sequence[BytesLike]) -> None:
        # bytes(): the session's payloads may be views of its receive buffer.
        copied = list(map(bytes, payloads))
        self.queued.append((list(times), copied, sum(map(len, copied)), time.monotonic()))
        self.wake.set()

    def take(self) -> tuple[list[float], list[bytes], int]:
        """The next append's frames: up to MAX_APPEND_FRAMES and MAX_APPEND_BYTES (at least
        one frame), oldest first, and their payload bytes."""
        times: list[float] = []
        payloads: list[bytes] = []
        size = 0
        queued = self.queued
        arrivals = self.taken_arrivals = []
        while queued:
            more_times, more, nbytes, arrived = queued[0]
            arrivals.append((len(payloads), arrived))
            room = MAX_APPEND_FRAMES - len(payloads)
            if len(more) <= room and size + nbytes <= MAX_APPEND_BYTES:
                queued.popleft()
                times += more_times
                payloads += more
                size += nbytes
                continue
            # Cut this batch: as many frames as the bounds let in (one at least, overall).
            ends = itertools.accumulate(map(len, more[:room]), initial=size)
            cut = max(bisect.bisect_right(list(ends), MAX_APPEND_BYTES) - 1, 0 if payloads else 1)
            if cut:
                taken = sum(map(len, more[:cut]))
                times += more_times[:cut]
                payloads += more[:cut]
                size += taken
                if cut == len(more):
                    queued.popleft()
                else:
                    queued[0] = (more_times[cut:], more[cut:], nbytes - taken, arrived)
            break
        return times, payloads, size


def _full(reader: Reader) -> bool:
    """A block reader with no room left (what a waiting writer may wait for)."""
    return reader.blocks_writers and reader.buffer.room() <= len(reader.parked)


def _refusal(url: str, error: Exception) -> str:
    """One line for a Redis that answers and refuses this node's connection at start (a
    password, a database number: the engine URL is wrong), instead of coredis's traceback."""
    if isinstance(error, coredis.exceptions.AuthenticationRequiredError):
        return (
            f"Redis at {url} asks for a password: put it in the engine URL "
            "(redis://:PASSWORD@host:port/0, or redis://USER:PASSWORD@host:port/0)"
        )
    if isinstance(error, coredis.exceptions.AuthenticationError):
        advice = "check the user and password in the engine URL, --engine"
    else:
        advice = "check the engine URL, --engine: its database number, or its user's rights"
    return f"Redis at {url} refused this node: {str(error)[:200]} ({advice})"


class RedisEngine:
    clustered = True

    def __init__(self, state: ServerState, url: str) -> None:
        self.state = state
        self.url = url
        self.node = state.config.node_name or default_node_name()
        self._io: RedisEngineIO | None = None
        self._nursery: trio.Nursery | None = None
        # Channels deleted on another node that end here once their last frames are read.
        self._ending_after_the_rest: set[tuple[str, str]] = set()
        # Channels a Redis restart lost and this node registered again, and channels of
        # other nodes whose end ended readers here (with their count): each named in one
        # line per restart, not one per channel (31 lines for 31 channels: an operator).
        self._registered_again = _GatheredLine[str](self._say_registered_again)
        self._readers_sent_back = _GatheredLine[tuple[str, int]](self._say_readers_sent_back)
        self._appenders: dict[Writer, _Appender] = {}
        self._append_log = RetryLogGroup(log, "appending to Redis", "writers")
        # Writers their clients named (open_publisher's ``writer``), as their connection has
        # them, and how many of their frames the stream had at the open (the client's count
        # too): gone with the writer (weak), whether it published or not.
        self._named: weakref.WeakKeyDictionary[Writer, tuple[NamedWriter, int]] = (
            weakref.WeakKeyDictionary()
        )
        # The channels this node keeps (their owner's end, their lifetime): created here, or
        # taken over by name here from another node or from this node's previous run.
        self._kept = _KeptChannels()
        # Names a create_channel here is registering (in Redis before it is kept here): this
        # node's reaper must not take them for its previous run's (with resume_grace_s=0 it
        # would end them at first sight).
        self._creating: Counter[str] = Counter()
        # Channels this node is ending in Redis (a gone owner's, a dead run's): set when done.
        # A take-over by name on this node waits for the outcome (see _adopt).
        self._ending: dict[str, trio.Event] = {}
        # Channels a delete here is removing from Redis, until it has ended them here too:
        # meanwhile their missing record is that delete's doing, not a Redis that lost it, and
        # registering them again (_reregister) would bring a deleted channel back.
        self._deleting: Counter[str] = Counter()
        # Channels ending here because they are gone from Redis already (see _on_deleted).
        self._gone_from_redis: set[str] = set()
        self._fenced_at = -math.inf  # trio time this node last told its clients to reconnect
        self._fenced: list[Session] = []  # the sessions it told then
        # (channel, epoch) ending once those are gone (_delete_once_gone): one task each,
        # though the channel's end is heard again (a writer's appends found its mark ~50
        # times in one outage, each starting another).
        self._ending_once_gone: set[tuple[str, str]] = set()
        # Channels this node is registering again (_reregister), until done.
        self._reregistering: dict[str, trio.Event] = {}
        # Gone owners' channels this node is ending (end_orphan), and those it gave up on.
        self._orphans = OrphanEnds(self, self._ending)
        self._dirty_readers: set[str] = set()
        self._readers_wake = trio.Event()
        # channel -> subscribes under way here (following its stream, no reader attached yet)
        self._joining: Counter[str] = Counter()
        # channel -> the position before each batch parked for full local block readers
        self._holds: dict[str, deque[int]] = {}
        self._taken: dict[str, int] = {}  # channel -> last seq handed to the broker here
        self._block_watch: set[str] = set()  # channels whose block readers hold frames
        self._block_watch_wake = trio.Event()
        self._follow_lock = trio.Lock()
        self._send_job, self._jobs = trio.open_memory_channel[Callable[[], Awaitable[None]]](
            math.inf
        )
        self.rpc = ClusterRpc(self)
        # nodes, connections, channels cluster-wide, as last counted (see stats())
        self._cluster_counts: dict[str, int] | None = None

    @property
    def io(self) -> RedisEngineIO:
        if self._io is None:
            raise RuntimeError("the Redis engine is not running")
        return self._io

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with RedisEngineIO.open(self.url, self.node) as io:
            self._io = io
            bus = io.bus
            bus.on(DELETED, self._on_deleted)
            bus.on(CLIENT, self._on_remote_client)
            bus.on(CHANNEL, self._on_remote_channel)
            bus.on(NAME_TAKEN, self._on_name_taken)
            io.presence.on_names_taken = self._names_taken_elsewhere
            io.presence.gone_hold_s = self.state.config.resume_grace_s
            io.presence.stopped_for = self.state.watchdog.stall.stopped_for
            bus.on(NAME_MOVED, self._on_name_moved)
            bus.on(ADOPTED, self._on_adopted)
            bus.on(MADE, self._on_made)
            self.rpc.install(bus, io.presence.run_id)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._reach(io)
                try:
                    with trio.fail_after(STARTUP_TIMEOUT_S):
                        await nursery.start(io.run)
                except trio.TooSlowError:
                    raise ClusterUnavailable(self._no_answer()) from None
                nursery.start_soon(self._consume)
                nursery.start_soon(self._watch_block_readers)
                nursery.start_soon(self._time_held_writers)
                nursery.start_soon(self._report_readers)
                nursery.start_soon(self._count_changes)
                nursery.start_soon(self._run_jobs)
                nursery.start_soon(self._orphans.run)
                nursery.start_soon(self._keep_registered)
                nursery.start_soon(self._reap_dead_nodes)
                nursery.start_soon(self.rpc.watch)
                nursery.start_soon(self._count_for_stats)
                log.info("node %r joined the cluster at %s", self.node, _safe_url(self.url))
                task_status.started()

    async def _reach(self, io: RedisEngineIO) -> None:
        """Fail at start, in one line, when Redis is not there (a server started before its
        Redis, a wrong --engine URL): the engine's tasks would otherwise retry in silence
        until the start's bound, and the CLI showed a traceback ending in TooSlowError.

        Raises:
            ClusterUnavailable: Redis refused, could not be reached, or did not answer.
        """
        try:
            with trio.fail_after(STARTUP_TIMEOUT_S):
                await io.client.ping()
        except trio.TooSlowError:
            raise ClusterUnavailable(self._no_answer()) from None
        except REDIS_DOWN as error:
            raise ClusterUnavailable(
                f"cannot reach Redis at {_safe_url(self.url)}: {str(error)[:200]} (start "
                "redis-server, or check the engine URL: --engine)"
            ) from None
        except REDIS_ERRORS as error:
            raise ClusterUnavailable(_refusal(_safe_url(self.url), error)) from None

    def _no_answer(self) -> str:
        tls = (
            " with TLS? a plain Redis never answers a rediss:// URL: use redis://;"
            if self.url.startswith("rediss://")
            else "?"
        )
        return (
            f"Redis at {_safe_url(self.url)} did not answer within {STARTUP_TIMEOUT_S:g} s (is "
            f"it a Redis server{tls} is it loaded or paused?)"
        )

    def later(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` in the engine's job task, in order (for hooks that cannot await)."""
        self._send_job.send_nowait(job)

    def later_after(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` in the job task once ``seconds`` have passed (nothing once the engine
        has stopped)."""
        nursery = self._nursery
        if nursery is None:
            return

        async def wait_then_queue() -> None:
            await trio.sleep(seconds)
            self.later(job)

        nursery.start_soon(wait_then_queue)

    async def _run_jobs(self) -> None:
        skipped = 0  # updates skipped in this outage: said once at its start, counted at its end
        async for job in self._jobs:
            try:
                await job()
            except REDIS_DOWN as error:
                # Not a loss of frames: a client's arrival or departure, a name's release, an
                # announcement. The heartbeats repair the lists once Redis is back (the
                # clients written again, names expiring with their TTL).
                if not skipped:
                    log.warning(
                        "Redis unreachable (%s): cluster updates (a client listed, a name "
                        "released, an announcement) are skipped until it answers; the node's "
                        "heartbeats then set the lists right, but other nodes' $clients "
                        "readers may miss those events (no frames are lost by this)",
                        error,
                    )
                skipped += 1
                continue
            except Exception:
                log.exception("cluster update failed")
                continue
            if skipped:
                log.warning("cluster updates reach Redis again (%d skipped meanwhile)", skipped)
                skipped = 0

    # -- requests (awaited by the session) ---------------------------------------------------
    def request_handlers(self) -> dict[type[ControlMessage], AsyncHandler]:
        handlers: dict[type[ControlMessage], AsyncHandler] = {
            CreateChannel: self._create_channel,
            DeleteChannel: self._delete_channel,
            OpenPublisher: self._open_publisher,
            Subscribe: self._subscribe,
            ListChannels: self._list_channels,
            ListClients: self._list_clients,
            GetStats: self._stats,
        }
        return {kind: _redis_failures_answered(handler) for kind, handler in handlers.items()}

    async def _create_channel(self, session: Session, msg: CreateChannel) -> None:
        requests.check_channel_quota(session)
        check_channel_name(msg.channel)
        check_channel_meta(msg.meta)
        check_channel_key(msg.key)
        if msg.channel.startswith("$"):
            raise ValueError("channel names starting with '$' belong to the server")
        self._creating[msg.channel] += 1
        try:
            await self._create_registered(session, msg)
        finally:
            self._creating[msg.channel] -= 1
            if not self._creating[msg.channel]:
                del self._creating[msg.channel]

    async def _create_registered(self, session: Session, msg: CreateChannel) -> None:
        """create_channel's steps in Redis and here (marked in ``_creating`` meanwhile)."""
        for _ in range(CREATE_ATTEMPTS):
            ending = self._ending.get(msg.channel)
            if ending is not None:
                await ending.wait()  # ended, or taken over elsewhere: then create or adopt
            try:
                record = await self._register(msg, session.name)
                break
            except ChannelExists:
                adoption = await self._adopt(session, msg)
                if adoption is _Adoption.TAKEN:
                    return  # a crashed client's new process took its channel back
                if adoption is _Adoption.REFUSED:
                    raise
                # The channel changed hands meanwhile (the reaper or its old node ended it,
                # another take-over moved it): the name may be free now. Look again.
        else:
            raise ChannelExists(
                f"the channel {msg.channel[:80]!r} changed hands {CREATE_ATTEMPTS} times while "
                "you created it (ended or taken over meanwhile): create it again"
            )
        try:
            # A stale channel here (a delete whose news never came, or a loss by Redis):
            # ended as its deletion mark says, once the name was free in Redis.
            await self._check_stale(msg.channel, record.epoch)
            self._drop_stale(msg.channel, record.epoch)
            # Checked once the channel is new (a take-over above is not a new one).
            requests.check_kept_quota(session, msg)
            # Known as this node's before the broker's "created" event, which it announces.
            self._kept.set(msg.channel, _Kept(record.epoch, record.holder, msg))
            requests.create_requested_channel(session, msg, epoch=record.epoch)
        except BaseException as error:
            self._kept.discard(msg.channel)
            if isinstance(error, Exception):  # refused (a bad lifetime...): not in Redis either
                await self.io.registry.delete(msg.channel, epoch=record.epoch)
            raise

    async def _register(self, msg: CreateChannel, owner: str) -> ChannelRecord:
        options = {
            "public": msg.public,
            "lifetime": msg.lifetime,
            "history": msg.history,
            "single_writer": msg.single_writer,
            "keep": msg.keep,
            "meta": msg.meta,
        }
        try:
            return await self.io.registry.create(
                msg.channel, owner=owner, node=self.node, options=options, key=msg.key
            )
        except ChannelTaken:
            raise channel_taken(msg.channel) from None

    async def _adopt(self, session: Session, msg: CreateChannel) -> _Adoption:
        """``create_channel`` of a name that exists: TAKEN if ``session`` took it over by
        name; CHANGED if the channel changed meanwhile (look again: the name may be free);
        REFUSED if it is not the session's to take.

        resume.adopt_channel's rule (a client restarted as a new process takes back the
        channels its gone predecessor of the same name holds, if it asks for the same
        options), cluster-wide: the channel may be held on another node, alive (for its
        resume grace) or dead (until the reaper's grace is over). That node is told to let go
        (ADOPTED), and from now on this node keeps the channel (its owner's end, its
        lifetime); the epoch, sequence numbers and frames stay, so readers see no reset.

        Whatever ends a gone owner's channel meanwhile (the reaper of a dead node's channels,
        the old node at its owner's end) deletes it in Redis only if its holder token is
        still the one it saw, and the move (which writes a new holder) only if the channel is
        still there: atomic steps in Redis, so exactly one of them wins, even for a move back
        onto the node that is ending it. A take-over on the node that is ending the channel
        waits for that end (``_ending``) instead: the end was decided first.
        """
        record = await self.io.registry.get(msg.channel)
        if record is None:
            return _Adoption.CHANGED  # deleted since the create found it
        if record.owner != session.name:
            return _Adoption.REFUSED
        broker = self.state.broker
        # Registered under this node's name by its previous run (a node restarted under its
        # name): as gone as a dead node's channel. Or moved here by a take-over whose answer
        # came after TAKE_OVER_MOVE_TIMEOUT_S (its client was told to create it again): not
        # kept here, a mirror without owner at most (a reader here). Either way nothing here
        # would end it with an owner: this create finishes the take-over.
        predecessor = False
        if record.node == self.node:
            if self._orphans.given_up.get(record.name) == (record.epoch, record.holder):
                # Its owner's end gave up waiting for Redis: the end was decided, the name's
                # new process must not find the channel. End it in Redis now, look again.
                reason = f"channel {record.name!r} ended: its owner left"
                await self._delete_everywhere(
                    record.name, record.epoch, reason, node=self.node, holder=record.holder
                )
                return _Adoption.CHANGED
            held = broker.channels.get(record.name)
            if record.name not in self._kept and (
                held is None or (held.epoch == record.epoch and held.owner_id is None)
            ):
                predecessor = True
            elif (
                held is None
                or held.epoch != record.epoch
                or held.owner_id is None
                or held.owner_id in self.state.sessions  # its owner is still connected
            ):
                return _Adoption.REFUSED
        # Otherwise its owner was on another node and is gone: client names are unique in
        # the cluster and ``session`` holds this one.
        different = [
            o
            for o in ADOPTED_OPTIONS
            if o != "key" and not same_option(record.options.get(o), getattr(msg, o))
        ]
        if (msg.key is None) != (not record.has_key) or (
            msg.key is not None and not await record.key_matches(msg.key)
        ):
            different.append("key")
        if different:
            raise adoption_refused(msg.channel, different)
        await self._check_stale(record.name, record.epoch)  # (before the steps below)
        if record.name in self._ending:
            # This node is ending it (its owner's end, the reaper), kept here or not (its
            # owner may have been taken over elsewhere unheard): wait for the outcome.
            return _Adoption.CHANGED
        moved = None
        if record.node != self.node:
            moved = await self._move_here(record)
            if moved is None:
                return _Adoption.CHANGED  # deleted or created anew since the look-up
        # No await from the move (or the check) to here: in Redis the channel is this node's
        # now, and this node's reaper must find it kept here (not a previous run's). The
        # rest is shielded too (the ADOPTED notice, bounded): a cancellation that came during
        # the move (a closing connection, the request's bound) is not delivered before the
        # create is answered done.
        channel = self._mirror(record)
        channel.owner_id = session.client_id
        if moved is not None or predecessor:
            holder = record.holder if moved is None else moved.new_holder
            self._kept.set(record.name, _Kept(record.epoch, holder, msg))
            lifetime = record.options.get("lifetime")
            if lifetime is not None:  # counted from its creation, as on the node it left
                left_s = max(0.0, record.created + float(lifetime) - time.time())
                channel.expires_at = broker.clock() + left_s
                if self.state.on_channel_created is not None:
                    self.state.on_channel_created(channel)  # housekeeping: a new deadline
        log.info(
            "client %r took channel %r over by name (from node %r)",
            session.name[:80],
            record.name[:80],
            record.node,
        )
        if moved is not None:
            # Lets the old node's owner and lifetime go now; lost, it learns it from Redis
            # at its owner's end (end_orphan).
            body = [record.name, record.epoch, moved.holder]
            try:  # the take-over is done: a failure to tell must not fail the create
                # Shielded (bounded): the request's own bound (REQUEST_REDIS_TIMEOUT_S) may
                # have passed during the move; cancelled here, the create would answer "try
                # again" for a take-over that is done, and the retry, finding the channel
                # this session's, would get ChannelExists for good.
                with trio.CancelScope(shield=True), trio.fail_after(TAKE_OVER_MOVE_TIMEOUT_S):
                    await self.io.bus.publish(ADOPTED, body, to=moved.node)
            except (*REDIS_ERRORS, trio.TooSlowError) as error:
                log.warning(
                    "node %r not told of the take-over of %r: %s",
                    moved.node,
                    record.name[:80],
                    error,
                )
        return _Adoption.TAKEN

    async def _move_here(self, record: ChannelRecord) -> Moved | None:
        """The take-over's move in Redis (see :meth:`_adopt`), shielded from cancellation.

        Once Redis has moved the channel here, this node must note that it keeps it, with
        its new owner's session: a request cancelled between the two (its client's
        connection closed by the idle watchdog, a shutdown) would leave the channel kept
        here in Redis with nothing here to end it (neither its owner's end nor its
        lifetime), its readers on every node waiting for a gone owner until the reaper's
        grace for channels a node does not know it keeps. Noted, the owner's session's end
        decides it as any other's (its lease, or its end now). Bounded by
        TAKE_OVER_MOVE_TIMEOUT_S: a Redis that hangs raises nothing; the outcome is then
        unknown here (TimeoutError, as for a Redis that is down), and a move done meanwhile
        is left to that reaper.
        """
        with trio.CancelScope(shield=True):
            with trio.move_on_after(TAKE_OVER_MOVE_TIMEOUT_S) as bound:
                return await self.io.registry.move(
                    record.name, epoch=record.epoch, owner=record.owner, node=self.node
                )
        assert bound.cancelled_caught
        raise TimeoutError(
            f"Redis did not answer the take-over of {record.name[:80]!r} within "
            f"{TAKE_OVER_MOVE_TIMEOUT_S:g} s (TAKE_OVER_MOVE_TIMEOUT_S): create it again"
        )

    def _on_adopted(self, node: str, body: Any) -> None:
        """Another node took a channel kept here over (a new process of its owner's name)."""
        name, epoch, holder = body
        self.let_go(name, epoch, holder)

    def let_go(self, name: str, epoch: str, holder: str) -> None:
        """A take-over moved the channel this node kept as ``holder`` away: this node keeps
        only a mirror, which neither its owner's lease nor its lifetime ends. Not if this
        node has taken it back since (a newer holder: the news came late)."""
        here = self._kept.get(name)
        if here is None or here.epoch != epoch or here.holder != holder:
            return
        self._kept.discard(name)
        channel = self.state.broker.channels.get(name)
        if channel is not None and channel.epoch == epoch:
            channel.owner_id = None
            channel.expires_at = None

    def end_orphan(self, channel: Channel, reason: str, final: bool = True) -> None:
        """``channel``'s owner is gone for good: it left without a lease, or its resume grace
        is over (ResumeBook.expire).

        A channel this node keeps ends only once Redis agrees that this node still keeps it:
        the delete there is conditional on its holder token, atomic against a take-over by
        name (a move, which writes a new holder: on another node, or back onto this one).
        The take-over's ADOPTED message reaches this node a moment later, or never (pub/sub,
        a bus that was reconnecting): ending the channel here first ended its readers on this
        node while it lived on elsewhere. So the readers stay until Redis has answered; if
        the channel moved, this node keeps a mirror of it, as if ADOPTED had come in time.

        The tries run in a task of their own (redis_orphans.OrphanEnds), not in the job order:
        a job waits for Redis without a bound, and behind a Redis that hangs the end would
        never start. The one ordering the end needs, before its owner's name is released
        (a new process of that name, without a resume token, must find the channel ended),
        :meth:`_release_name` keeps by waiting for the first try.
        """
        name = channel.name
        here = self._kept.get(name)
        if self._io is None or here is None or here.epoch != channel.epoch or name in self._ending:
            self.state.broker.delete_channel(channel, reason)
            return
        self._orphans.start(channel, reason, here.holder)

    async def tell_deleted(
        self, name: str, epoch: str, reason: str, owner_notice: tuple[str, str] | None = None
    ) -> None:
        """Tell the other nodes that channel ``name`` (``epoch``), ended in Redis and here
        already, is gone. ``owner_notice``: (owner's name, what to tell it), for a channel
        another client deleted: the node its owner is connected to tells it (_on_deleted).
        Bounded (a Redis that hangs raises nothing); a failure is logged, not raised: the end
        is done whatever the announcement does (the readers elsewhere see its stream go, a
        reset)."""
        news: list[str] = [name, epoch, reason]
        if owner_notice is not None:
            news += owner_notice
        try:
            with trio.fail_after(redis_orphans.ORPHAN_END_TRY_TIMEOUT_S):
                await self.io.bus.publish(DELETED, news)
        except (*REDIS_ERRORS, trio.TooSlowError) as error:
            log.warning("end of channel %r not announced: %s", name[:80], repr(error)[:200])

    def end_here(self, channel: Channel, reason: str) -> None:
        if self.state.broker.channels.get(channel.name) is channel:
            self.state.broker.delete_channel(channel, reason)

    async def _record(self, name: str, key: str | None, session: Session) -> ChannelRecord:
        """The channel as Redis has it, if ``session`` may use it (as Broker.lookup decides)."""
        record = await self.io.registry.get(name)
        while (running := self._reregistering.get(name)) is not None:
            await running.wait()  # a new epoch this node has not taken on yet
            record = await self.io.registry.get(name)
        owner = record is not None and record.owner == session.name
        if record is None or not (
            record.options.get("public", True) or owner or await record.key_matches(key)
        ):
            raise channel_not_found(name)
        if record.has_key and not owner and (key is None or not await record.key_matches(key)):
            raise key_refused(name, key)
        return record

    async def _check_stale(self, name: str, epoch: str) -> None:
        """End here a local channel of ``name`` of another epoch than ``epoch``, the one
        Redis has now, as its old epoch's deletion mark says (_drop_stale): asked before a
        request takes ``epoch`` on (_mirror, a create), which then finds nothing stale. Called
        once Redis showed ``epoch``: a delete marks the old one before the name is free."""
        channel = self.state.broker.channels.get(name)
        if channel is None or channel.epoch == epoch:
            return
        old = channel.epoch
        mark = await self._deletion_mark(name, old)
        if self.state.broker.channels.get(name) is channel and channel.epoch == old != epoch:
            self._drop_stale(name, epoch, mark)

    def _drop_stale(self, name: str, epoch: str, mark: _Mark = _NO_ANSWER) -> None:
        """A local channel of another epoch is gone in Redis: end it here. It lives on at
        ``epoch`` (its readers are told to subscribe again) only if ``mark``, its old epoch's
        deletion mark as asked by _check_stale, says it was lost by Redis, not deleted (a
        delete whose news never came here, then a new channel of that name: its readers must
        not ride into that unrelated one). Not asked (a stale channel met with no await
        left, one that appeared after the check): not marked either."""
        channel = self.state.broker.channels.get(name)
        if channel is not None and channel.epoch != epoch:
            self._kept.discard(name)
            self._end_as_marked(
                channel,
                mark,
                f"channel {name!r} was deleted or created anew on another node: subscribe again",
            )

    def _mirror(self, record: ChannelRecord) -> Channel:
        """This node's channel for ``record`` (made on first use). A stale one (another
        epoch) ends here: its callers ask its deletion mark first (_check_stale)."""
        self._drop_stale(record.name, record.epoch)
        broker = self.state.broker
        channel = broker.channels.get(record.name)
        if channel is None:
            options = record.options
            channel = broker.create_channel(
                record.name,
                None,
                public=bool(options.get("public", True)),
                history=int(options.get("history", 0)),
                single_writer=bool(options.get("single_writer", False)),
                keep=bool(options.get("keep", False)),
                meta=options.get("meta"),
                epoch=record.epoch,
                seq=record.seq,
            )
            channel.owner = record.owner
            channel.created = record.created
            channel.lifetime = options.get("lifetime")
            channel.remote_readers = self.io.presence.remote_readers(record.name)
        return channel

    async def _delete_channel(self, session: Session, msg: DeleteChannel) -> None:
        # A client's publish then delete, in that order: the frames this node took before
        # the delete go to Redis first, and this node's readers get them before the end (on
        # one node they are in the readers' buffers already). Each wait is bounded.
        if msg.channel.startswith("$"):  # the server's own: every node has them
            requests.delete_channel(session, msg)
            return
        await self._appends_done(msg.channel)
        try:
            record = await self._record(msg.channel, msg.key, session)
        except ChannelNotFound:
            raise nothing_to_delete(msg.channel) from None
        # Its owner: the client that made (or took over) this node's channel. The name is
        # the identity once that client is gone, but for a channel with a key, as on one
        # node (requests.delete_channel): a take-over by name needs the key too.
        local = self.state.broker.channels.get(msg.channel)
        owner = local is not None and local.owner_id == session.client_id
        heir = record.owner == session.name and not record.has_key
        if not owner and not heir and (not record.has_key or msg.key is None):
            raise AuthError(
                f"only the owner of {msg.channel!r} ({record.owner}) or a holder of its key "
                "may delete it"
            )
        await self._read_here_up_to(msg.channel, record.epoch, record.seq)
        reason = f"channel {msg.channel!r} was deleted"
        told = f"{reason} by {session.name}"
        # Not its owner's own delete (from this node or, by its name, another): the owner is
        # told, here or by the node it is connected to (the news carries the notice).
        notice = None if owner or heir else (record.owner, told)
        await self._delete_everywhere(msg.channel, record.epoch, reason, owner_notice=notice)
        if local is not None and not owner:
            self.state.tell_owner_deleted(local, session, told)
        elif local is None and notice is not None and record.owner != session.name:
            # Kept by another node: its owner, if connected here (it moved), is told here;
            # if away, in its next welcome here (the news goes to the other nodes only).
            self.state.tell_owner_by_name(record.owner, msg.channel, told)

    async def _appends_done(self, name: str) -> None:
        """Wait (at most DELETE_FLUSH_S) until this node's writers of ``name`` have nothing
        on its way to Redis."""
        with trio.move_on_after(DELETE_FLUSH_S):
            while any(  # noqa: ASYNC110 - polled: an event per append would cost every frame
                appender.queued or appender.appending
                for writer, appender in self._appenders.items()
                if writer.channel.name == name
            ):
                await trio.sleep(FLUSH_POLL_S)

    async def _read_here_up_to(self, name: str, epoch: str, seq: int) -> None:
        """Wait (at most DELETE_FLUSH_S) until this node's stream reader has handed frame
        ``seq`` of ``name`` to its readers here (nothing to wait for without one)."""
        channel = self.state.broker.channels.get(name)
        position = self.io.reader.position(name)
        if channel is None or channel.epoch != epoch or position is None or position[0] != epoch:
            return
        with trio.move_on_after(DELETE_FLUSH_S):
            # Polled: the stream reader sets no event per channel and frame.
            while channel.seq < seq and self.state.broker.channels.get(name) is channel:  # noqa: ASYNC110
                await trio.sleep(FLUSH_POLL_S)

    async def _delete_everywhere(
        self,
        name: str,
        epoch: str,
        reason: str,
        *,
        node: str | None = None,
        holder: str | None = None,
        owner_notice: tuple[str, str] | None = None,
    ) -> None:
        """Delete the channel in Redis and on every node; with ``node`` (and ``holder``),
        only if that node keeps it (this node's end of it must not delete what a take-over
        by name has moved since). ``owner_notice``: see tell_deleted."""
        self._deleting[name] += 1
        try:
            deleted = await self.io.registry.delete(
                name, epoch=epoch, node=node, holder=holder, reason=reason
            )
            if deleted is None and node:
                return
            # Deleted in Redis: ended here first, whatever the announcement does. Left kept
            # here (an announcement failed, the request's bound passed), _keep_registered
            # would find it missing in Redis and register it again, and a delete told "try
            # again" would get ChannelNotFound.
            self._on_deleted(self.node, [name, epoch, reason])
        finally:
            self._deleting[name] -= 1
            if not self._deleting[name]:
                del self._deleting[name]
        # Shielded (bounded): the delete is done, the client is told so.
        with trio.CancelScope(shield=True):
            await self.tell_deleted(name, epoch, reason, owner_notice)

    async def _gone_reason(self, channel: Channel, error: EpochChanged) -> tuple[str, bool]:
        """Why a channel that this node's writer found gone from Redis ended, for its
        readers and writers here: the reason its end left in Redis (a delete, its lifetime,
        its owner gone), which the news of that end brings here a moment later; failing that,
        what Redis shows (it said "changed in Redis (no such channel): reopen it", and a
        reopen failed, or it holds a new epoch). And whether it lives on at a new epoch (its
        readers' ``again``): only when its epoch has no deletion mark (lost by Redis: its
        keeping node registers it again, or another created it anew); not when it ended (a
        new epoch after a delete is an unrelated channel), nor when Redis did not say."""
        name = channel.name
        mark = await self._deletion_mark(name, channel.epoch)
        if mark.deleted:
            return mark.reason or f"channel {name!r} was deleted", False
        if error.epoch is not None:
            reason = f"channel {name!r} was created anew (on another node): subscribe again"
        else:
            reason = (
                f"channel {name!r} is gone from Redis (ended on another node, or lost in a "
                "Redis restart): create it again, or subscribe again"
            )
        return reason, mark.deleted is False

    async def _deletion_mark(self, name: str, epoch: str) -> _Mark:
        """What Redis says of ``epoch`` of ``name``, gone from it: deleted (its deletion mark,
        with the mark's reason if it has one) or lost (no mark: a restart without persistence
        loses the mark with the record); ``deleted`` None if Redis did not answer within
        GONE_REASON_TIMEOUT_S.

        An epoch changes only after a delete (marked) or a loss by Redis (unmarked): a new
        epoch in Redis does not say which, the mark does. Only a lost one's readers are told
        to subscribe again (``again``); a deleted one ends for good, as its news would have
        ended it. With no answer, neither is known, and the end is not marked: ``again``
        promises that the channel lives on, and its reader would ride into whatever has
        that name now (a channel created anew after a delete, an unrelated one); unmarked,
        it ends as it did before reset ends were marked, its reason saying to subscribe
        again, and the application decides (docs/protocol.md section 8, "Reset ends").
        Redis just showed the epoch gone, so it seldom fails to answer this."""
        with trio.move_on_after(GONE_REASON_TIMEOUT_S), contextlib.suppress(*REDIS_ERRORS):
            reason = await self.io.registry.deleted_reason(name, epoch)
            if reason is not None:
                return _Mark(True, reason)
            return _Mark(await self.io.registry.was_deleted(name, epoch), None)
        return _NO_ANSWER

    def _end_as_marked(self, channel: Channel, mark: _Mark, lost: str) -> None:
        """End ``channel``, its epoch gone from Redis, as ``mark`` says (_deletion_mark):
        deleted, for the mark's reason, unmarked (as the delete's news would have ended it);
        lost, for ``lost``, its readers told to subscribe again; not known, for ``lost``
        too, unmarked."""
        if self.state.broker.channels.get(channel.name) is not channel:
            return
        if mark.deleted is False:
            self._end_for_a_new_life(channel, lost)
        elif mark.deleted:
            self._end_deleted(channel, mark.reason or f"channel {channel.name!r} was deleted")
        else:
            self.state.broker.delete_channel(channel, lost)

    def _end_for_a_new_life(self, channel: Channel, reason: str) -> None:
        """End ``channel`` here for ``reason``, its readers' ``sub_end`` marked ``again``: it
        lives on in Redis at a new epoch (created anew), or will once the node that keeps it
        registers it again (lost in a Redis restart). Their clients subscribe again since
        their positions and read on, with a reset (docs/protocol.md section 8)."""
        if self.state.broker.channels.get(channel.name) is not channel:
            return
        for reader in channel.subscriptions:
            reader.end_again = True
        self.state.broker.delete_channel(channel, reason)

    def _on_deleted(self, node: str, body: Any) -> None:
        name, epoch, reason = body[:3]
        if len(body) == 5 and node != self.node:
            # Another client deleted it, on that node: its owner, if connected here, is
            # told (else it created the channel again at its next reconnect).
            self._tell_owner(name, epoch, str(body[3]), str(body[4]))
        self._channel_deleted(name, epoch, str(reason), by_another_node=node != self.node)

    def _tell_owner(self, name: str, epoch: str, owner: str, notice: str) -> None:
        """Tell ``owner`` that another node's client deleted its channel ``name``: by the
        channel here if it owns it (also while away: its resume's welcome says it), else by
        its name: connected here, or in the welcome of its next reconnection here
        (absent_owners.py), when this node has no channel of that name (ended here already:
        a writer here found its epoch gone from Redis before the news came) or only reads
        it. Not when the channel here is another epoch: one the owner made anew."""
        channel = self.state.broker.channels.get(name)
        if channel is None or (channel.epoch == epoch and channel.owner_id is None):
            # (None: a mirror of it, read here, or one its owner here had let go)
            self.state.tell_owner_by_name(owner, name, notice)
        elif channel.epoch == epoch:
            self.state.tell_owner_deleted(channel, None, notice)

    def _channel_deleted(
        self, name: str, epoch: str, reason: str, *, by_another_node: bool
    ) -> None:
        """Channel ``name`` of ``epoch`` was deleted in Redis (the news, or its mark found by
        _reregister_once): it ends here too."""
        given_up = self._orphans.given_up
        if given_up.get(name, ("",))[0] == epoch:
            del given_up[name]  # ended in Redis too now
        channel = self.state.broker.channels.get(name)
        if channel is None or channel.epoch != epoch:
            return
        if (
            by_another_node
            and reason == _left_the_cluster(name, self.node)
            and self._nursery is not None
        ):
            # Ended as this node's by the others, which took it for dead: first its clients
            # go (see _taken_for_dead), then the channel. Ended now, its writer would be told
            # so after the goodbye, and stop for good.
            sessions = self._taken_for_dead()
            if (name, epoch) not in self._ending_once_gone:  # its news, or its mark, again
                self._ending_once_gone.add((name, epoch))
                self._nursery.start_soon(self._delete_once_gone, sessions, name, epoch, reason)
            return
        position = self.io.reader.position(name) if self._io is not None else None
        read_here = position is not None and position[0] == epoch
        if by_another_node and self._nursery is not None and read_here:
            # Read here from Redis: what its stream holds past this node's position was on
            # its way to the readers here when it ended (its stream stays a while for it).
            if (name, epoch) not in self._ending_after_the_rest:
                self._ending_after_the_rest.add((name, epoch))
                self._nursery.start_soon(self._end_after_the_rest, channel, reason)
            return
        self._end_deleted(channel, reason)

    async def _end_after_the_rest(self, channel: Channel, reason: str) -> None:
        """End ``channel``, deleted on another node, once this node has handed its readers
        the frames its stream got before the delete (at most DELETE_FLUSH_S). It ended at
        once when told: the frames still on their way here were lost without a count (a
        writer's last frames before its client closed, in a lab's cross-node audit)."""
        name, epoch, broker = channel.name, channel.epoch, self.state.broker
        last: int | None = None
        try:
            with trio.move_on_after(DELETE_FLUSH_S):
                last = await last_seq_in_stream(self.io.client, self.io.keys, name, epoch)
                # Polled: the stream reader sets no event per channel and frame.
                while last is not None and channel.seq < last:
                    if broker.channels.get(name) is not channel:
                        break
                    await trio.sleep(FLUSH_POLL_S)
        except REDIS_ERRORS as error:
            log.warning("channel %r: its last frames not looked for (%s)", name[:80], error)
        finally:
            self._ending_after_the_rest.discard((name, epoch))
        if broker.channels.get(name) is not channel:
            return  # ended meanwhile (the stream reader found it gone first, with the rest)
        if last is not None and channel.seq < last:
            # Its block readers here took none for DELETE_FLUSH_S (the reader is paused
            # for them), or Redis was slow: not silently.
            log.warning(
                "channel %r ended here %d frames before its last (%d): they were not read "
                "here within %.0f s of its end (full block readers here hold this node's "
                "reads of it, or Redis was slow)",
                name[:80],
                last - channel.seq,
                last,
                DELETE_FLUSH_S,
            )
        self._end_deleted(channel, reason)

    def _end_deleted(self, channel: Channel, reason: str) -> None:
        """End here a channel deleted in Redis already: its end (channel_event) must not
        delete it there again, and the node that kept it still announces it ($channels
        everywhere)."""
        name = channel.name
        self._gone_from_redis.add(name)
        try:
            self.state.broker.delete_channel(channel, reason)
        finally:
            self._gone_from_redis.discard(name)
        self._kept.discard(name)

    async def _delete_once_gone(
        self, sessions: list[Session], name: str, epoch: str, reason: str
    ) -> None:
        """The end of a channel announced by _on_deleted, once ``sessions`` have closed (at
        most a second later): what ends with it is then kept for their resume, not told."""
        try:
            with trio.move_on_after(1.0):
                # Polled: a session has no event for its end, and this runs once per outage.
                while any(self.state.sessions.get(s.client_id) is s for s in sessions):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            self._fenced = [s for s in self._fenced if self.state.sessions.get(s.client_id) is s]
            channel = self.state.broker.channels.get(name)
            if channel is not None and channel.epoch == epoch:
                self._end_deleted(channel, reason)
        finally:
            self._ending_once_gone.discard((name, epoch))

    def _taken_for_dead(self) -> list[Session]:
        """The other nodes took this one for dead (its link to Redis failed for longer than
        a heartbeat TTL and resume_grace_s) and ended its channels, though their owners are
        connected here. Its clients are told to reconnect, as if it had died: each comes back
        (here once Redis answers, or to another node) and restores what it had, an owner
        creating its channels again and a writer sending its window again; else a writer got
        ChannelNotFound for good. Once per outage: every channel's end says it again."""
        now = trio.current_time()
        if now - self._fenced_at < FENCE_AGAIN_AFTER_S:
            # Told already (the other channels' ends come one by one): wait for those told,
            # not for clients that came back since (their channels are theirs again).
            return [s for s in self._fenced if self.state.sessions.get(s.client_id) is s]
        self._fenced_at = now
        sessions = list(self.state.sessions.values())
        self._fenced = sessions
        log.warning(
            "node %r was taken for dead by the other nodes (its link to Redis failed for too "
            "long), which ended its channels: its %d clients are told to reconnect",
            self.node,
            len(self.state.sessions),
        )
        for session in sessions:
            session.close(
                f"node {self.node!r} lost its link to the cluster's Redis for too long and the "
                "other nodes ended its channels: reconnect (an owner creates its channels "
                "again)"
            )
        return sessions

    async def _open_publisher(self, session: Session, msg: OpenPublisher) -> dict[str, Any]:
        if msg.channel.startswith("$"):  # the server's own: every node refuses writers alike
            return requests.open_publisher(session, msg)
        record = await self._record(msg.channel, msg.key, session)
        await self._check_stale(record.name, record.epoch)
        channel = self._mirror(record)
        # Across nodes: another node's writer shows in Redis (see _writers_key).
        if record.options.get("single_writer") and not channel.publishers:
            nodes = await self._writer_nodes(channel)
            if nodes:
                holder = f"a client of node {sorted(nodes)[0].decode()!r}"
                raise single_writer_taken(channel.name, holder)
        result = requests.open_publisher_on(session, msg, channel)
        try:
            if record.options.get("single_writer"):
                await self.io.client.sadd(self._writers_key(channel), [self.node])
            if msg.writer is not None:
                writer = session.writers[result["pub"]]
                named = self.io.writer.named(channel.epoch, writer.sender.decode(), msg.writer)
                published = 0
                if msg.resume_pub is not None:
                    # A reopen, on this node or another: Redis's count of the writer's frames
                    # answers it, not this node's lease (which counts frames still on their
                    # way here, and knows nothing of another node's). Claimed in the same
                    # step: a batch an earlier connection still holds, on any node, is
                    # refused from now on, so the count stays exact (redis_streams).
                    result.pop("taken", None)
                    published = await self.io.writer.claim(
                        channel.name, channel.epoch, named, msg.claim
                    )
                    result["published"] = published
                self._named[writer] = (named, published)
        except EpochChanged as error:
            session.close_writer(result["pub"])
            raise ChannelNotFound(str(error)) from None
        except StaleClaim as error:  # its client went on without it: the error is not read
            session.close_writer(result["pub"])
            raise InvalidArgument(str(error)) from None
        except BaseException:  # the client is told it failed: no writer stays open
            session.close_writer(result["pub"])
            raise
        # The count as it is now: one that changed during the awaits above was told to the
        # writer before this answer, for a publisher its client did not know yet, and was
        # dropped there (a writer back on a node taken for dead waited for its readers for
        # good, 1 run in 25 of test_cluster_partition).
        result["readers"], result["lossless"] = channel.readers, channel.lossless
        return result

    async def _writer_nodes(self, channel: Channel) -> set[bytes]:
        """The live nodes with a writer of this single_writer channel: a node that died with
        its writer open (its entry never removed) holds nobody back, above all after its
        client took the channel over elsewhere with the same epoch."""
        members = await self.io.client.smembers(self._writers_key(channel))
        if not members:
            return set()
        live = await self.io.presence.live()
        return {m for m in members if m.decode() in live}

    def _writers_key(self, channel: Channel) -> str:
        return f"{self.io.keys.namespace}:sw:{channel.name}:{channel.epoch}"

    async def _subscribe(self, session: Session, msg: Subscribe) -> dict[str, Any]:
        if msg.channel.startswith("$"):  # the server's own: every node has them, fed locally
            return requests.subscribe(session, msg)
        taken = requests.take_back(session, msg)  # kept on this node while it was away
        if taken is not None:
            return taken
        record = await self._record(msg.channel, msg.key, session)  # the key, from Redis
        # Kept here for its gone process (a crash): one that restarts on another node reads
        # from the stream, and the kept one ends with the grace period.
        taken = requests.take_back_by_name(session, msg, lambda: record)
        if taken is not None:
            return taken
        await self._check_stale(record.name, record.epoch)
        channel = self._mirror(record)
        # The repeat of a subscribe whose reply a cut lost: the one kept on this node.
        taken = requests.take_back_unheard(session, msg, lambda: channel)
        if taken is not None:
            return taken
        with self._joining_reader(channel.name):
            await self._follow(channel, record.seq)
            if msg.since_epoch is None:
                return requests.subscribe_to(session, msg, lambda: channel)
            # A resume within the epoch: the frames after since_seq come from Redis, then live.
            since = msg.since_seq or 0
            if msg.since_epoch != channel.epoch:
                # A reset: the new epoch's history from its start, as one server replays its
                # history then (resume.subscribe_since). The mirror here holds none: a
                # recorder resuming after a Redis restart began at the live frame (seq 604)
                # and never heard of the new epoch's first 603 (a lab's audit). (A seq of
                # this epoch beyond this node's position, a client come from a node ahead of
                # this one, replays nothing, as before: it has those frames.)
                since = 0
            # A block reader takes every frame the stream holds, past its size (Reader.admit,
            # past_size), as far as its connection's block share of memory goes; the others
            # the newest that fit (up to REPLAY_MAX_FRAMES). ``reach``: how many of the
            # stream's frames to read back. A reader that keeps only some of them
            # (subscribe_to filters by every and sender) reads back far enough for its size
            # of them to pass, as a node's history would hold them, not the newest ``size``
            # raw frames (of which it would keep 1 in ``every``). What a max_rate or a
            # clear reader keeps depends on every frame offered (the first passes the rate,
            # a full clear buffer empties): those read back all they may, as one server
            # offers its whole history, or the frames left out would count as lost.
            reach: int | None
            if msg.policy == Policy.BLOCK.value or msg.size is None:
                reach = None
            elif msg.sender is not None or msg.max_rate or msg.policy == Policy.CLEAR.value:
                reach = REPLAY_MAX_FRAMES
            else:
                reach = msg.size * msg.every
            outbox = session.outbox
            room = outbox.max_buffered_bytes - outbox.buffered_bytes
            if reach is None:
                room = min(room, outbox.max_block_bytes - outbox.block_bytes)
            # A drop_newest buffer keeps the oldest it is offered (one server's replay runs
            # the policy over the history, oldest first): so the oldest after since_seq.
            oldest = msg.policy == Policy.DROP_NEWEST.value
            frames = await self._replay_frames(channel, since, reach, room, oldest=oldest)
            if self.state.broker.channels.get(channel.name) is not channel:
                raise ChannelNotFound(f"channel {channel.name!r} ended meanwhile: subscribe again")
            saved = channel.recent, channel.recent_bytes
            channel.recent = deque(f for f in frames if f.seq <= channel.seq)
            try:
                return requests.subscribe_to(session, msg, lambda: channel)
            finally:
                channel.recent, channel.recent_bytes = saved

    @contextlib.contextmanager
    def _joining_reader(self, name: str) -> Iterator[None]:
        """A subscribe to ``name`` under way here: from its first await (the follow) until
        its reader is attached, the channel has no reader on this node, and a pass of
        :meth:`_report_readers` meanwhile (a reader coming or going on another node, the
        end of the channel's previous incarnation here) must not unfollow its stream: the
        reader would then wait for frames this node never reads."""
        self._joining[name] += 1
        try:
            yield
        finally:
            self._joining[name] -= 1
            if not self._joining[name]:
                del self._joining[name]
            # Counted again (a subscribe that failed leaves a stream followed for nobody).
            self._dirty_readers.add(name)
            self._readers_wake.set()

    async def _replay_frames(
        self, channel: Channel, since: int, size: int | None, room_bytes: int, *, oldest: bool
    ) -> list[Any]:
        """The newest frames after ``since`` up to the channel's position here, from Redis
        (``oldest``: the oldest the stream still holds after ``since``): at most ``size``
        (``None``: a ``block`` reader, every frame the stream holds) and ``room_bytes`` of
        them (what the reader's buffer could take; the subscription counts the others lost,
        as those the stream no longer holds)."""
        limit = min(size, REPLAY_MAX_FRAMES) if size is not None else self.io.history_frames
        if oldest:
            return await self._replay_oldest(channel, since, limit, room_bytes)
        after = max(since, channel.seq - limit)
        frames: deque[SharedData] = deque()
        nbytes = 0
        # Page by page, so that memory holds the room and a page at most; the position may
        # move on while we read (a node catching up after a stall reads fast): catch up,
        # bounded (what this leaves is counted lost: resume.subscribe_since).
        for _ in range(limit // REPLAY_PAGE_FRAMES + REPLAY_CATCH_UP_READS):
            want = channel.seq - after
            if want <= 0:
                break
            got = await read_range(
                self.io.client,
                self.io.keys,
                channel.name,
                channel.epoch,
                after,
                min(want, REPLAY_PAGE_FRAMES),
            )
            if not got:
                break
            for f in got:
                frame = SharedData(*f)
                frames.append(frame)
                nbytes += frame.nbytes
            while len(frames) > limit or (nbytes > room_bytes and len(frames) > 1):
                nbytes -= frames.popleft().nbytes
            after = got[-1].seq
        return list(frames)

    async def _replay_oldest(
        self, channel: Channel, since: int, limit: int, room_bytes: int
    ) -> list[Any]:
        """The first ``limit`` frames after ``since`` that the stream holds, within
        ``room_bytes`` (one frame at least): what a drop_newest buffer keeps of a replay."""
        upto = channel.seq
        got = await read_range(
            self.io.client,
            self.io.keys,
            channel.name,
            channel.epoch,
            since,
            min(limit, max(0, upto - since)),
        )
        frames: list[SharedData] = []
        nbytes = 0
        for f in got:
            frame = SharedData(*f)
            nbytes += frame.nbytes
            if frame.seq > upto or (frames and nbytes > room_bytes):
                break
            frames.append(frame)
        return frames

    async def _follow(self, channel: Channel, seq: int) -> None:
        """Read ``channel``'s stream on this node from ``seq``, its last sequence number in
        Redis (first reader here; until then this node's position means nothing)."""
        reader = self.io.reader
        async with self._follow_lock:
            position = reader.position(channel.name)
            if position is not None:
                # Followed for this channel here already: unless nothing of that epoch was
                # taken here (``_taken``). The reader moves on to a new epoch by itself (a
                # reset: _on_reset) and reads it for no channel here until a subscribe makes
                # one; this one starts at ``seq``, and its position is what writers wait on.
                if position[0] == channel.epoch and channel.name in self._taken:
                    return
                # Still the stream of an incarnation gone from here (its unfollow not done
                # yet), or read for nobody here: this one's, from now on.
                self._unfollowed(channel.name)
                await reader.unfollow(channel.name)
            if seq > channel.seq:
                channel.seq = seq
                channel.recent.clear()
                channel.recent_bytes = 0
            if not channel.recent and channel.history and channel.seq:
                await self._read_history(channel)
            epoch, _ = await reader.follow(channel.name, epoch=channel.epoch, after=channel.seq)
            if epoch != channel.epoch:
                # Deleted and created anew (on another node) while we read: this channel's
                # end is on its way here; following the new one under the old epoch would
                # drop all it brings.
                await reader.unfollow(channel.name)
                raise ChannelNotFound(f"channel {channel.name!r} ended meanwhile: subscribe again")
            self._taken[channel.name] = channel.seq
            self.io.positions.update(channel.name, channel.epoch, channel.seq)

    async def _read_history(self, channel: Channel) -> None:
        """The channel's history from Redis, up to its position here, into ``recent``: before
        this node follows the stream, so that the history comes first (read while the stream
        was followed, live frames came in meanwhile and the history went in behind them: a
        late reader got them out of order and twice, and a full history, trimmed, dropped
        the newest uncounted)."""
        upto, epoch = channel.seq, channel.epoch
        got = await read_range(
            self.io.client,
            self.io.keys,
            channel.name,
            epoch,
            max(0, upto - channel.history),
            channel.history,
        )
        if channel.epoch != epoch:
            return  # registered again meanwhile (a reset): that history is not this one's
        # A batch that an earlier follow here had read may still have come in meanwhile
        # (_consume takes it): what it brought past ``upto`` goes after the history.
        came = [frame for frame in channel.recent if frame.seq > upto]
        channel.recent.clear()
        channel.recent_bytes = 0
        remember = self.state.broker._remember
        for f in got:
            if f.seq <= upto:
                remember(channel, SharedData(*f))
        for frame in came:
            remember(channel, frame)

    async def _list_channels(self, session: Session, msg: ListChannels) -> EncodedItems:
        local = self.state.broker.channels
        # The server's own (each node has them; a walk of this node's channels for each of
        # the three cost ~0.2 s a listing at 100,000).
        system = [channel_record(channel) for channel in self.state.system.values()]

        def record(entry: ChannelRecord) -> dict[str, Any] | None:
            options = entry.options
            if not (options.get("public", True) or entry.owner == session.name):
                return None
            here = local.get(entry.name)
            here = here if here is not None and here.epoch == entry.epoch else None
            return {
                "name": entry.name,
                "owner": entry.owner,
                "public": bool(options.get("public", True)),
                # This node's own readers from its broker, not from the announcement
                # of them (async): a client that just closed a subscription sees it gone.
                "readers": self.io.presence.remote_readers(entry.name)
                + (len(here.subscriptions) if here else 0),
                "writers": len(here.publishers) if here else 0,
                "seq": entry.seq,
                "rate_fps": here.rate_fps if here else 0.0,
                "rate_bps": here.rate_bps if here else 0.0,
                "lost": here.lost if here else 0,
                "created": entry.created,
                "lifetime": options.get("lifetime"),
                "history": options.get("history", 0),
                "single_writer": bool(options.get("single_writer", False)),
                "keep": bool(options.get("keep", False)),
                "held_by": here.held_by() if here else [],
                "meta": options.get("meta"),
                "node": entry.node,
            }

        listed = await encode_stepwise(await self.io.registry.list(), record)
        return EncodedItems.joined([EncodedItems.of(system), listed])

    async def _list_clients(self, session: Session, msg: ListClients) -> EncodedItems:
        sessions = self.state.sessions

        def mine(connected: Session) -> dict[str, Any] | None:
            if sessions.get(connected.client_id) is not connected:
                return None  # (gone since the listing began)
            return connected.record() | {"node": self.node}

        listed = await encode_stepwise(sessions.values(), mine)
        others = await self.io.presence.clients()
        theirs = [
            {"subscriptions": [], "publishers": [], "methods": []} | info | {"node": node}
            for node, clients in sorted(others.items())
            if node != self.node
            for info in clients.values()
        ]
        return EncodedItems.joined([listed, EncodedItems.of(theirs)])

    async def _stats(self, session: Session, msg: GetStats) -> dict[str, Any]:
        await self._count_cluster()
        return self.stats(self.state.stats())

    async def _count_cluster(self) -> None:
        records = await self.io.registry.list()
        clients = await self.io.presence.clients()
        self._cluster_counts = {
            "nodes": len(clients),
            "connections": sum(len(c) for c in clients.values()),
            "channels": len(self.state.system)
            + sum(1 for r in records if r.options.get("public", True)),
        }

    def stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """This node's stats with the cluster's counts (those of the last count: see
        :meth:`_count_for_stats`); the node's own connections as ``node_connections``."""
        local["node"] = self.node
        local["node_connections"] = local["connections"]
        if self._cluster_counts is None:  # not counted yet: this node is all it knows
            local["nodes"] = 1
        else:
            local |= self._cluster_counts
        return local

    def health(self) -> dict[str, float]:
        io = self._io
        if io is None:
            return {}
        return {
            "cluster_nodes": len(io.presence.live_nodes | {self.node}),
            "redis_up": 1.0 if io.presence.reaches_redis() else 0.0,
        }

    async def _count_for_stats(self) -> None:
        """Count the cluster once per stats interval while this node's ``$stats`` has
        readers (it reads every channel record: not worth it for nobody)."""
        interval = self.state.config.stats_interval_s
        stats_channel = self.state.system["$stats"]
        while True:
            if stats_channel.subscriptions:
                try:
                    await self._count_cluster()
                except REDIS_DOWN as error:
                    log.debug("cluster counts for $stats not refreshed: %s", error)
            await trio.sleep(interval)

    def kept_channels(self) -> int:
        # Those this node keeps, not the mirrors of other nodes' kept channels read here.
        return self._kept.made_to_keep

    # -- names and clients -------------------------------------------------------------------
    def default_client_name(self, client_id: int) -> str:
        # Client ids are counted per node: the node's name makes the default unique (two
        # nodes' first unnamed clients were both "client-1", and the second got NameInUse).
        return f"client-{client_id}@{self.node}"

    async def claim_name(self, name: str, *, resume_token: str | None) -> None:
        """Claim a connecting client's name on every node (the handshake's step in Redis).

        Raises:
            NameInUse: a client of that name is connected to another node.
            ClusterUnavailable: Redis is down, refuses, or did not answer within
                CLAIM_NAME_TIMEOUT_S: the client is refused at hello with "try again" (a
                reconnecting one tries again), as any request that needs Redis is answered.
        """
        try:
            with trio.fail_after(CLAIM_NAME_TIMEOUT_S):
                await self._claim_name(name, resume_token=resume_token)
        except (*REDIS_ERRORS, trio.TooSlowError) as error:
            raise _unavailable(error, CLAIM_NAME_TIMEOUT_S, "this connection") from None

    async def drop_made_again(self, owner: str, deleted: dict[str, str]) -> list[str]:
        """A deletion this node noted for a client away (its news, absent_owners.py) stands
        unless the client has the channel again, made on another node (whose news of it,
        MADE, this node may not have had yet; its client would forget a channel it has).
        Redis down or slow: the notices stand (the welcome is not held up for them)."""
        dropped: list[str] = []
        with trio.move_on_after(CLAIM_NAME_TIMEOUT_S):
            try:
                for channel, reason in list(deleted.items()):
                    record = await self.io.registry.get(channel)
                    # (Not a deletion told meanwhile, while this waited on Redis: a new one.)
                    again = record is not None and record.owner == owner
                    if again and deleted.get(channel) is reason:
                        del deleted[channel]
                        dropped.append(channel)
            except REDIS_ERRORS as error:
                log.debug("deletions for %r not checked in Redis: %r", owner[:80], error)
        return dropped

    async def _claim_name(self, name: str, *, resume_token: str | None) -> None:
        presence = self.io.presence
        if resume_token is not None:
            old = await presence.take_name(name)
            if old is not None and old != self.node:
                await self.io.bus.publish(NAME_TAKEN, name, to=old)
            if old != self.node:
                # To every node: the one this client's last connection broke on released
                # the name then (so it is not ``old``), and still keeps that connection's
                # readers for the resume grace; they end there now. The token names that
                # connection: a late message can end nothing else (ResumeBook.lease_moved).
                await self.io.bus.publish(NAME_MOVED, [name, resume_token])
            return
        for _ in range(2):
            if await presence.claim_name(name):
                return
            holder = await presence.name_node(name)
            if holder == self.node:
                # Still this node's: a client of that name left here a moment ago and its
                # release waits in the job queue (it sees the name in use here and skips).
                # This node's sessions hold their names uniquely already (state.claim_name).
                return
            if holder is not None:
                break
            # released between the two calls: claim it again
        raise NameInUse(
            f"a client named {name[:100]!r} is connected already (on another node); "
            "pick another name (or close the one that has it)"
        )

    def _on_name_taken(self, node: str, body: Any) -> None:
        session = self.state.by_name.get(str(body))
        if session is not None:
            self.state.resume.closing_moved(session.name)  # its readers end with it
            # Without reconnect: false (unlike one node's take-over, resume.py): this news
            # names the client, not its connection, and may come late, to the connection
            # the client has moved on to here; that one must come back.
            session.close("replaced: the same client connected again on another node (resume)")

    def _names_taken_elsewhere(self, names: list[str]) -> None:
        """Client names another node took while this one's heartbeat could not reach Redis
        (its link hung; to the others it was dead and the names free): the clients here of
        those names are the stale ones, and two clients of one name may not stay."""
        for name in names:
            session = self.state.by_name.get(name)
            if session is None:
                continue
            log.warning(
                "client name %r is held by another node now (taken while node %r could not "
                "reach Redis, or moved there): its client here is told so and not to come back",
                name[:80],
                self.node,
            )
            self.state.resume.closing_moved(session.name)  # its readers end with it
            session.close(
                f"replaced: the name {name[:80]!r} was taken by a client of another node while "
                "this node could not reach the cluster's Redis (names are unique in the "
                "cluster)",
                reconnect=False,
            )

    def _on_name_moved(self, node: str, body: Any) -> None:
        if node == self.node:
            return  # our own broadcast: the client is here now
        try:
            name, token = str(body[0]), str(body[1])
        except (TypeError, IndexError, KeyError):
            log.warning("ignored a malformed %s message: %r", NAME_MOVED, repr(body)[:80])
            return
        self.state.resume.lease_moved(name, token)

    def release_name(self, name: str) -> None:
        if self._io is not None:
            self.later(lambda: self._release_name(name))

    async def _release_name(self, name: str) -> None:
        # After the first try to end its channels (end_orphan, called before this job was
        # queued): a new process of that name, which needs the name free, finds them ended.
        for first_tried in self._orphans.first_tries_of(name):
            await first_tried.wait()
        if name in self.state.by_name:
            return  # claimed again on this node meanwhile (a quick reconnect): still ours
        await self.io.presence.release_name(name)

    def client_event(self, kind: str, session: Session) -> None:
        if self._io is None:
            return
        info = session.summary()
        cid = f"{session.client_id}"
        presence = self.io.presence

        async def job() -> None:
            if kind == "connected":
                await presence.add_client(cid, info)
            else:
                await presence.remove_client(cid)
            await self.io.bus.publish(CLIENT, [kind, info])

        self.later(job)

    def _on_remote_client(self, node: str, body: Any) -> None:
        if node == self.node:
            return
        kind, info = body
        self.state.publish_system("$clients", {"event": kind, **info, "node": node})

    # -- channel events ----------------------------------------------------------------------
    def channel_event(self, kind: str, channel: Channel) -> bool:
        name = channel.name
        if name.startswith("$") or self._io is None:
            if name == "$stats" and kind == "readers" and channel.readers == 1:
                self.later(self._count_cluster)  # its first reader: before the next $stats
            return True
        if kind == "readers":
            self._dirty_readers.add(name)
            self._readers_wake.set()
            if name in self._taken:  # a block reader came or went: its room goes to Redis now
                self._report_position(channel)
            return True
        if kind in ("writers", "deleted"):
            # A channel's end drops its publishers without a "writers" event: its idle
            # appenders must hear of it too, or each waited for good (with its channel and
            # its last batch: a soak's leak, one per deleted channel with a writer).
            for writer, appender in list(self._appenders.items()):
                if writer.channel is channel and writer not in channel.publishers:
                    appender.wake.set()  # sends what it holds, then ends
        if kind == "writers":
            if channel.single_writer and not channel.publishers:
                key = self._writers_key(channel)
                self.later(lambda: self._srem(key))
            return True
        here = self._kept.get(name)
        if kind == "deleted":
            self._dirty_readers.add(name)
            self._readers_wake.set()
            if here is not None and here.epoch == channel.epoch:
                self._kept.discard(name)
                # Not when decided in Redis already (end_orphan, a delete: _on_deleted).
                if name not in self._ending and name not in self._gone_from_redis:
                    # Ended here by its lifetime or an admin (its owner's end goes through
                    # end_orphan): in Redis too, unless a take-over moved it meanwhile. The
                    # other nodes' readers hear why, as those here did.
                    reason = channel.end_reason or f"channel {name!r} ended"
                    self.later(
                        functools.partial(
                            self._delete_everywhere,
                            name,
                            channel.epoch,
                            reason,
                            node=self.node,
                            holder=here.holder,
                        )
                    )
                self._announce(kind, channel)
                return True
            return False  # a mirror going away: the origin node announces the deletion
        if kind == "created" and here is not None and here.epoch == channel.epoch:
            if not channel.public:  # (not $channels news, but news for absent_owners.py)
                made = [name, channel.owner]
                self.later(lambda: self._publish_bus(MADE, made))
            self._announce(kind, channel)
            return True
        # "created": mirrors are made when a node first uses a channel, which is not news.
        return kind != "created"

    async def _srem(self, key: str) -> None:
        await self.io.client.srem(key, [self.node])

    def _announce(self, kind: str, channel: Channel) -> None:
        if not channel.public:
            return
        body = {"event": kind, "channel": channel.name, "owner": channel.owner}
        if kind == "deleted":
            body["reason"] = channel.end_reason
        self.later(lambda: self._publish_bus(CHANNEL, body))

    async def _publish_bus(self, kind: str, body: Any) -> None:
        await self.io.bus.publish(kind, body)

    def _on_remote_channel(self, node: str, body: Any) -> None:
        if node != self.node:
            if body.get("event") == "created":  # (a deletion noted here for its owner goes)
                self._on_made(node, [body.get("channel"), body.get("owner")])
            self.state.publish_system("$channels", {**body, "node": node})

    def _on_made(self, node: str, body: Any) -> None:
        """Another node made channel ``body[0]``, owned by client ``body[1]``."""
        if node != self.node:
            name, owner = body
            self.state.absent_owners.made_again(str(name), str(owner))

    async def _report_readers(self) -> None:
        """Local reader counts to Redis (and the stream followed or not), coalesced."""
        while True:
            await self._readers_wake.wait()
            self._readers_wake = trio.Event()
            dirty, self._dirty_readers = self._dirty_readers, set()
            for name in dirty:
                channel = self.state.broker.channels.get(name)
                count = len(channel.subscriptions) if channel is not None else 0
                try:
                    if not count and name not in self._joining:
                        self._unfollowed(name)
                        await self.io.reader.unfollow(name)
                    await self.io.presence.set_readers(name, count)
                except REDIS_DOWN as error:
                    log.warning("reader count of %r not published: %s", name[:80], error)

    async def _count_changes(self) -> None:
        """Reader counts of other nodes reach this node's writers."""
        presence = self.io.presence
        async for name, _ in presence.count_changes:
            channel = self.state.broker.channels.get(name)
            if channel is None:
                continue
            remote = presence.remote_readers(name)
            if remote != channel.remote_readers:
                channel.remote_readers = remote
                self.state.broker._readers_changed(channel)

    async def _keep_registered(self) -> None:
        """Channels this node keeps that Redis lost (a restart without persistence) are
        registered again, under a new epoch: their readers here end (a reset)."""
        retry_log = RetryLog(log, "checking this node's channels in Redis")
        while True:
            await trio.sleep(REREGISTER_INTERVAL_S)
            if not self._kept:
                retry_log.forget()
                continue
            try:
                epochs = await self.io.registry.epochs(list(self._kept))
                for name, epoch in epochs.items():
                    # Not one this node is ending in Redis (its owner's grace is over).
                    if epoch is None and name in self._kept and name not in self._ending:
                        await self._reregister(name)
            except REDIS_DOWN as error:
                retry_log.failed(error)
            else:
                retry_log.succeeded()

    async def _reap_dead_nodes(self) -> None:
        """End the channels of nodes that died (heartbeat expired), after the resume grace.

        As on one node when a client goes without coming back: its channels that are not
        ``keep`` end once ``resume_grace_s`` is over, unless a client of their owner's name
        took them over meanwhile (:meth:`_adopt`: a client that moves to another node
        creates its channels again, which does it), and then a live node keeps them. Every
        survivor looks; the registry's delete is atomic, so one of them ends each channel
        and announces it.
        """
        missing_since: dict[str, float] = {}
        # Channels registered under this node's name by its previous run (a restart under
        # the same name): their node is as gone as a dead one, by channel since when seen.
        stale_since: dict[str, float] = {}
        grace_s = self.state.config.resume_grace_s
        # A node missing from the live ones for less than a heartbeat TTL may be alive: after
        # a Redis restart (empty), its channels can be registered again before its next beat
        # (within a TTL) lists it. With a shorter grace (0: none), such a look ended a live
        # node's channels cluster-wide, its clients still connected.
        dead_after_s = max(grace_s, self.io.presence.ttl_s)
        retry_log = RetryLog(log, "checking dead nodes' channels")
        while True:
            await trio.sleep(REAP_INTERVAL_S)
            try:
                live = await self.io.presence.live()
                records = await self.io.registry.list()
                now = trio.current_time()
                orphaned = {r.node for r in records if r.node not in live}
                missing_since = {n: missing_since.get(n, now) for n in orphaned}
                stale = {
                    r.name
                    for r in records
                    if r.node == self.node
                    and r.name not in self._kept
                    and r.name not in self._creating
                }
                stale_since = {n: stale_since.get(n, now) for n in stale}
                for record in records:
                    if record.options.get("keep"):
                        continue
                    if record.name in stale_since:
                        if now - stale_since[record.name] >= grace_s:
                            await self._reap(record)
                        continue
                    if record.node in live or now - missing_since[record.node] < dead_after_s:
                        continue
                    await self._reap(record)
            except REDIS_DOWN as error:
                retry_log.failed(error)
                # Redis failed (maybe restarted empty): a node missing from it until its next
                # heartbeat is not a dead one; count afresh once Redis answers again.
                missing_since.clear()
                stale_since.clear()
            else:
                retry_log.succeeded()

    async def _reap(self, record: ChannelRecord) -> None:
        name = record.name
        reason = _left_the_cluster(record.name, record.node)
        if record.node != self.node:
            # Atomic against a take-over (a move): the delete needs the dead node there.
            deleted = await self.io.registry.delete(
                name, epoch=record.epoch, node=record.node, holder=record.holder, reason=reason
            )
        elif name in self._kept or name in self._ending or name in self._creating:
            return  # its owner took it back here since the look (_adopt), or creates it
        else:
            # This node's previous run's: a take-over here does not move it, so _adopt
            # waits for this delete's outcome (_ending) instead.
            done = self._ending[name] = trio.Event()
            try:
                deleted = await self.io.registry.delete(
                    name, epoch=record.epoch, node=self.node, holder=record.holder, reason=reason
                )
            finally:
                del self._ending[name]
                done.set()
        if deleted is None:
            return  # another survivor ended it, or a live node took it over meanwhile
        log.info("channel %r ended: its node %r left the cluster", record.name[:80], record.node)
        self._on_deleted(
            self.node, [record.name, record.epoch, reason]
        )  # first: see _delete_everywhere
        await self.tell_deleted(record.name, record.epoch, reason)
        if record.options.get("public", True):
            body = {
                "event": "deleted",
                "channel": record.name,
                "owner": record.owner,
                "reason": reason,
            }
            self.state.publish_system("$channels", {**body, "node": self.node})
            await self.io.bus.publish(CHANNEL, body)

    async def _reregister(self, name: str) -> None:
        running = self._reregistering.get(name)
        if running is not None:
            await running.wait()
            return
        done = self._reregistering[name] = trio.Event()
        try:
            await self._reregister_once(name)
        finally:
            del self._reregistering[name]
            done.set()

    async def _reregister_once(self, name: str) -> None:
        channel = self.state.broker.channels.get(name)
        kept = self._kept.get(name)
        if channel is None or kept is None or channel.epoch != kept.epoch or name in self._deleting:
            return
        if await self.io.registry.was_deleted(name, kept.epoch):
            # Deleted, on another node, whose news never came (this node's pub/sub was
            # reconnecting): not lost by Redis. It ends here as the news would have ended it,
            # with the mark's reason: the other nodes' end of a node taken for dead (a link
            # that failed) sends this node's clients back first, as the news would have.
            reason = await self.io.registry.deleted_reason(name, kept.epoch)
            if self.state.broker.channels.get(name) is channel and channel.epoch == kept.epoch:
                why = reason or f"channel {name!r} was deleted"
                self._channel_deleted(name, kept.epoch, why, by_another_node=True)
            return
        try:
            record = await self._register(kept.request, channel.owner)
        except ChannelExists:
            return  # someone else took the name meanwhile
        if self.state.broker.channels.get(name) is channel:
            # Still there? A delete (here or on another node) may have read the new epoch
            # and removed it before this task ran on; its end, of an epoch not yet known
            # here, then ended nothing here. Asked after the fact, with no await between the
            # answer and taking the epoch on: a delete after that ends it as any other.
            now = (await self.io.registry.epochs([name])).get(name)
            if now != record.epoch and self.state.broker.channels.get(name) is channel:
                self._kept.discard(name)
                self._gone_from_redis.add(name)
                try:
                    self.state.broker.delete_channel(channel, f"channel {name!r} was deleted")
                finally:
                    self._gone_from_redis.discard(name)
                return
        if self.state.broker.channels.get(name) is not channel:
            # Ended here meanwhile (its end announced by another node, say): nobody keeps
            # what was registered, so it goes too; else the ended channel would be back in
            # Redis. Only that record, and only while this node holds it.
            with trio.move_on_after(UNREGISTER_TIMEOUT_S), contextlib.suppress(*REDIS_DOWN):
                await self.io.registry.delete(
                    name, epoch=record.epoch, node=self.node, holder=record.holder
                )
            return
        self._registered_again.add(name, self._nursery)
        self._kept.set(name, _Kept(record.epoch, record.holder, kept.request))
        channel.epoch = record.epoch
        channel.seq = 0
        channel.recent.clear()
        channel.recent_bytes = 0
        lost = (
            f"channel {name!r} was lost in Redis (a restart without persistence) and is "
            "registered again: frames sent meanwhile may be missing; subscribe again"
        )
        for sub in list(channel.subscriptions):  # their position means nothing now
            self.state.broker.detach(sub)
            sub.outbox.end(sub, None, lost, again=True)  # (the channel lives on)
        self._unfollowed(name)
        await self.io.reader.unfollow(name)

    @staticmethod
    def _say_registered_again(names: list[str]) -> None:
        shown = ", ".join(repr(name[:80]) for name in names[:REGISTERED_AGAIN_NAMED])
        more = len(names) - REGISTERED_AGAIN_NAMED
        log.warning(
            "%d channel%s lost in Redis (a restart without persistence) and registered again, "
            "a reset: %s%s (their readers here were told to subscribe again)",
            len(names),
            "" if len(names) == 1 else "s",
            shown,
            f" and {more} more" if more > 0 else "",
        )

    @staticmethod
    def _say_readers_sent_back(ended: list[tuple[str, int]]) -> None:
        # The creating node says why; this node, whose readers all got SubscriptionEnded,
        # said nothing at all (an operator found only "Redis failed / works again" lines).
        shown = ", ".join(f"{name[:80]!r} ({n})" for name, n in ended[:REGISTERED_AGAIN_NAMED])
        more = len(ended) - REGISTERED_AGAIN_NAMED
        readers = sum(n for _, n in ended)
        log.warning(
            "%d channel%s gone from Redis (deleted, created anew, or lost in a Redis restart): "
            "%d subscription%s here ended, told to subscribe again: %s%s",
            len(ended),
            "" if len(ended) == 1 else "s",
            readers,
            "" if readers == 1 else "s",
            shown,
            f" and {more} more" if more > 0 else "",
        )

    def _unfollowed(self, name: str) -> None:
        """This node stops reading ``name``: it holds no writer back any more."""
        self._taken.pop(name, None)
        self._holds.pop(name, None)
        self._block_watch.discard(name)
        self.io.positions.drop(name)

    # -- frames ------------------------------------------------------------------------------
    def publish(self, writer: Writer, time_s: float, payload: BytesLike) -> None:
        self.publish_batch(writer, (time_s,), (payload,))

    def publish_batch(
        self, writer: Writer, times: Sequence[float], payloads: Sequence[BytesLike]
    ) -> None:
        appender = self._appenders.get(writer)
        if appender is None:
            appender = self._appenders[writer] = _Appender(writer, self._still_appending(writer))
            assert self._nursery is not None
            self._nursery.start_soon(self._append_loop, appender)
        appender.put(times, payloads)
        # Counted as the writer's published frames now, not once Redis holds them: they go
        # to Redis even if the writer's connection ends first (its appender sends what it
        # holds), and this count is what a reconnecting client is told its publisher's
        # previous connection took (Session.published_frames, the lease's ``taken``). Counted
        # at the append, a frame in flight when the connection dropped was published and
        # then sent again by the client: a duplicate. (A frame whose channel ends before it
        # reaches Redis counts as taken, as on one node.) A writer its client named is
        # answered from Redis's count instead (_open_publisher), which every node keeps.
        writer.frames += len(payloads)

    def _still_appending(self, writer: Writer) -> _Appender | None:
        """The appender of an ended writer of the same client and channel whose frames are
        still on their way to Redis: a reconnecting client's publisher reopened (the frames
        it does not send again are those), or one it closed and opened again. The new
        writer's frames go after them, in the order the client sent them."""
        for earlier in reversed(self._appenders.values()):
            other = earlier.writer
            if (
                other.channel is writer.channel
                and other.sender == writer.sender
                and other not in writer.channel.publishers
            ):
                return earlier
        return None

    async def _append_loop(self, appender: _Appender) -> None:
        writer = appender.writer
        channel = writer.channel
        sender = writer.sender.decode()
        broker = self.state.broker
        mark = f"{id(appender):x}"  # this writer's batches, told apart from its name-mates'
        # A named writer: its record, and its frames in the stream before the next batch.
        named, written = self._named.get(writer, (None, 0))
        batches = 0  # this appender's batches: an append tried again names the same one
        retry_log = self._append_log.job(f"channel {channel.name[:80]!r}")
        try:
            if appender.after is not None:
                await appender.after.done.wait()
                appender.after = None
            while True:
                if not appender.queued:
                    if writer not in channel.publishers:
                        appender.done.set()  # a reopened writer's frames may go now
                        # Its mark goes with it (else the channel's hash grows per writer);
                        # a node stopped or cut from Redis leaves its writers' marks behind.
                        with trio.move_on_after(FORGET_TIMEOUT_S), contextlib.suppress(*REDIS_DOWN):
                            await self.io.writer.forget(channel.name, mark)
                        return
                    await appender.wake.wait()
                    appender.wake = trio.Event()
                    continue
                times, payloads, size = appender.take()
                arrivals = appender.taken_arrivals
                count = len(payloads)
                appender.appending = True
                batches += 1
                offset = 0  # of the batch's frames, those in Redis already
                while True:
                    epoch = channel.epoch  # a re-registration may change it meanwhile
                    try:
                        await self.io.writer.append(
                            channel.name,
                            epoch,
                            sender,
                            payloads,
                            times,
                            writer=mark,
                            named=named,
                            before=written + offset,
                            batch=str(batches),
                            offset=offset,
                            arrivals=arrivals,
                        )
                        retry_log.succeeded()
                        break
                    except AppendInterrupted as interrupted:
                        # The first parts of a split batch are in Redis: only the rest again.
                        retry_log.failed(interrupted)
                        payloads = payloads[interrupted.written :]
                        times = times[interrupted.written :]
                        offset += interrupted.written
                        await trio.sleep(APPEND_RETRY_S)
                    except EpochChanged as error:
                        if channel.name in self._deleting:
                            return  # a delete here took it out of Redis; it ends it here too
                        if channel.name in self._kept:
                            if error.epoch is None:
                                # Redis lost it (a restart without persistence): this node
                                # registers it again under a new epoch and goes on there (a
                                # named writer's record too: the first batch starts it again).
                                await self._reregister(channel.name)
                            # Also when the epoch Redis has is the one this node registered
                            # while the append was on its way (_keep_registered came first).
                            if broker.channels.get(channel.name) is channel and (
                                error.epoch is None or error.epoch == channel.epoch != epoch
                            ):
                                if error.written:
                                    # The first parts of a split batch went into the old
                                    # epoch and on to its readers: the new one gets the rest
                                    # (all of it again came to them twice).
                                    payloads = payloads[error.written :]
                                    times = times[error.written :]
                                    offset += error.written
                                if named is not None:
                                    named = self.io.writer.named(
                                        channel.epoch, sender, named.key, named.token
                                    )
                                continue
                        running = self._reregistering.get(channel.name)
                        if running is not None:  # this node's own new epoch, being taken on
                            await running.wait()
                            if broker.channels.get(channel.name) is channel:
                                continue
                        if broker.channels.get(channel.name) is channel:
                            self._kept.discard(channel.name)
                            reason, again = await self._gone_reason(channel, error)
                            if broker.channels.get(channel.name) is channel:  # not meanwhile
                                if again:
                                    self._end_for_a_new_life(channel, reason)
                                else:
                                    broker.delete_channel(channel, reason)
                        return
                    except WriterMoved as moved:
                        # Its client reopened it (another connection, here or on another
                        # node), which sends these frames again: Redis told it how many of
                        # the writer's frames it has. Were this connection still open, the
                        # publisher ends on it.
                        log.info("%s", moved)
                        appender.queued.clear()
                        appender.done.set()  # the reopened writer's frames may go now
                        if writer in channel.publishers:
                            broker.close_publisher(writer)
                            writer.outbox.writer_ended(writer, moved)
                        with trio.move_on_after(FORGET_TIMEOUT_S), contextlib.suppress(*REDIS_DOWN):
                            await self.io.writer.forget(channel.name, mark)
                        return
                    except REDIS_DOWN as error:
                        retry_log.failed(error)
                        await trio.sleep(APPEND_RETRY_S)
                appender.appending = False
                written += count
                broker.frames_in += count
                broker.bytes_in += size
                channel.written_frames += count
                channel.written_bytes += size
                if writer in channel.publishers:
                    writer.outbox.ack(writer.pub_id, count)
        finally:
            retry_log.forget()  # (a no-op unless it ends in an outage)
            del self._appenders[writer]
            appender.done.set()

    async def _consume(self) -> None:
        """Frames read from Redis go to this node's readers, channel by channel."""
        broker = self.state.broker
        async for event in self.io.reader.events:
            if isinstance(event, EpochReset):
                self._on_reset(event)
                continue
            assert isinstance(event, FrameBatch)
            channel = broker.channels.get(event.channel)
            if channel is None or channel.epoch != event.epoch:
                continue
            frames = event.frames
            if frames[0][0] <= channel.seq:  # a replay or a history read got there first
                frames = [f for f in frames if f[0] > channel.seq]
            name = channel.name
            before = self._taken.get(name, event.frames[0][0] - 1)
            self._taken[name] = event.frames[-1][0]
            holds = self._holds.get(name)
            if frames and broker.deliver_remote(
                channel, frames, event.lost, functools.partial(self._hold_released, name)
            ):
                # Full block readers: read no more of this channel until they take these;
                # the position Redis sees stays before them (writers wait on it).
                if holds is None:
                    holds = self._holds[name] = deque()
                holds.append(before)
                self.io.reader.pause(name)
            self._report_position(channel)

    def _report_position(self, channel: Channel) -> None:
        """Where this node is in ``channel``'s stream, for writers on any node (no I/O).

        Without ``block`` readers: the last seq handed to the broker, or the position before
        the first batch parked for full block readers. With them: where the slowest of them
        is (what it has taken out of its buffer), and the room a writer gets past that, their
        smallest buffer: so a block reader here holds a writer on another node back at its
        buffer size (redis_positions). Once per batch read; while they hold frames, also
        every BLOCK_REPORT_INTERVAL_S (_watch_block_readers), as they take them.
        """
        name = channel.name
        taken = self._taken.get(name)
        if taken is None:
            self._block_watch.discard(name)
            return
        holds = self._holds.get(name)
        seq = holds[0] if holds else taken
        limit: int | None = None  # the last seq every block reader here has room for
        for sub in channel.subscriptions:
            if sub.blocks_writers:
                buffer = sub.buffer
                # Frames of a block reader are contiguous up to ``taken`` (one decimated or
                # selecting holds fewer: it then counts as further on, never as behind).
                at = taken - len(buffer) - len(sub.parked)
                seq = min(seq, at)
                # Each reader's own reach: its position plus its own size (the smallest
                # position and the smallest size may belong to two different readers).
                reach = at + len(buffer) + buffer.room()
                limit = reach if limit is None else min(limit, reach)
        room = None if limit is None else max(0, limit - seq)
        if room is not None and seq < taken:
            if not self._block_watch:
                self._block_watch_wake.set()
            self._block_watch.add(name)
        else:
            self._block_watch.discard(name)
        self.io.positions.update(name, channel.epoch, max(0, seq), room)

    async def _watch_block_readers(self) -> None:
        """Report the position of channels whose block readers hold frames as they take
        them: nothing else happens here meanwhile (their writer waits for this)."""
        broker = self.state.broker
        while True:
            if not self._block_watch:
                await self._block_watch_wake.wait()
                self._block_watch_wake = trio.Event()
            await trio.sleep(BLOCK_REPORT_INTERVAL_S)
            for name in list(self._block_watch):
                channel = broker.channels.get(name)
                if channel is None:
                    self._block_watch.discard(name)
                else:
                    self._report_position(channel)

    async def _time_held_writers(self) -> None:
        """``block_timeout`` and ``held_by`` through Redis (redis_holds). A block reader here
        that has no room left, while its channel's writers wait for room, is shown holding
        them after HOLD_NOTICE_S and ended after its block_timeout, as on one node
        (Outbox.check_holds): the writers go on.

        A reader holds from when it became full: one that fills up late is not charged with
        the wait of another. A slow reader that takes a frame now and then still holds: it
        has room for a moment, and the writer fills it again (on one node its oldest parked
        frame keeps ageing); one found with room twice in a row reads again, and no longer
        holds."""
        retry_log = RetryLog(log, "timing the writers that block readers hold back")
        holders: dict[Reader, float] = {}  # this node's block readers that hold: since when
        had_room: set[Reader] = set()  # of holders, those with room at the last look
        shown: set[Reader] = set()  # shown holding a writer (Reader.holds_elsewhere)
        broker = self.state.broker
        while True:
            if not self._block_watch and not holders:
                # No block reader here holds frames (_report_position wakes this): a node
                # without any sleeps, rather than waking 20 times a second for nothing.
                await self._block_watch_wake.wait()
            await trio.sleep(HELD_CHECK_INTERVAL_S)
            now = broker.clock()
            for reader in self._full_block_readers():
                holders.setdefault(reader, now)
            for reader in list(holders):
                if reader.closed or reader.ending or not reader.blocks_writers:
                    del holders[reader]
                elif _full(reader):
                    had_room.discard(reader)
                elif reader in had_room:
                    del holders[reader]
                else:
                    had_room.add(reader)
            had_room.intersection_update(holders)
            channels = list({(r.channel.name, r.channel.epoch): None for r in holders})
            held: list[float | None] = []
            if channels:
                try:
                    held = await self.io.held.held_s(channels)
                    retry_log.succeeded()
                except REDIS_ERRORS as error:
                    retry_log.failed(error)
                    continue
            held_in = dict(zip(channels, held, strict=True))
            now = broker.clock()
            holding: set[Reader] = set()
            for reader, since in list(holders.items()):
                # The await above let things happen: still attached?
                if reader.closed or reader.ending:
                    continue
                channel = reader.channel
                waited = held_in.get((channel.name, channel.epoch))
                if waited is None:  # its writers no longer wait
                    del holders[reader]
                    continue
                held_s = min(waited, now - since)
                timeout = reader.block_timeout
                if timeout is not None and held_s >= timeout:
                    reader.outbox.end(reader, block_timeout_error(reader, timeout))
                elif held_s >= HOLD_NOTICE_S or reader in shown:
                    # Once shown, shown while it holds (a writer with a small window waits
                    # afresh for each of its batches: on one node its frames stay parked).
                    holding.add(reader)
                    if reader.waited_since is None:
                        reader.holds_elsewhere(now - held_s)
                    if held_s >= HOLD_WARNING_S:
                        reader.warn_hold(held_s)  # once per hold, as on one node
            for reader in shown - holding:
                reader.holds_elsewhere(None)
            shown = holding

    def _full_block_readers(self) -> list[Reader]:
        """This node's block readers with no room left: a writer that waits for room waits
        for them (their room is what _report_position sends; only a channel in _block_watch
        can have one)."""
        full: list[Reader] = []
        channels = self.state.broker.channels
        for name in self._block_watch:
            channel = channels.get(name)
            if channel is not None:
                full += filter(_full, channel.subscriptions)
        return full

    def _hold_released(self, name: str) -> None:
        holds = self._holds.get(name)
        if holds:
            holds.popleft()
        channel = self.state.broker.channels.get(name)
        if channel is not None and name in self._taken:
            self._report_position(channel)
        if holds:
            return
        self._holds.pop(name, None)
        self.later(lambda: self.io.reader.resume(name))

    def _on_reset(self, event: EpochReset) -> None:
        channel = self.state.broker.channels.get(event.channel)
        position = self.io.reader.position(event.channel)
        if (position is None or position[0] == event.new_epoch) and (
            channel is None or channel.epoch != event.new_epoch
        ):
            # The reader goes on from the new epoch's first frame by itself (or stops), for
            # no channel here yet: what was taken here was the old epoch's. Left, its last
            # seq stood for the new epoch's position once a subscribe found the stream
            # followed (_follow): a block reader here then held its writer back behind
            # frames read meanwhile for nobody, and got none of them, for good.
            self._unfollowed(event.channel)
        if channel is None or channel.epoch != event.old_epoch:
            return
        if event.channel in self._kept:
            return  # this node registers it again (_keep_registered)
        if (event.channel, event.old_epoch) in self._ending_after_the_rest:
            return  # deleted elsewhere: it ends with its own reason, the rest read first
        reason = (
            f"channel {event.channel!r} is gone from Redis (deleted, created anew, or lost in "
            "a Redis restart): subscribe again"
        )
        if self._nursery is None:  # (stopped: nothing to ask with)
            self.state.broker.delete_channel(channel, reason)
        else:
            self._nursery.start_soon(self._end_gone, channel, reason)

    async def _end_gone(self, channel: Channel, reason: str) -> None:
        """End ``channel``, whose epoch is gone from Redis with no end announced here (gone,
        or a new epoch in its place): lost by Redis (a restart without persistence: the node
        that keeps it registers it again, or another created it anew), and its readers here
        are told to subscribe again, unless its deletion mark says a node deleted it and the
        news never came here (its readers end as for a delete, with its reason, even if a
        new channel of that name exists now: an unrelated one)."""
        epoch = channel.epoch
        mark = await self._deletion_mark(channel.name, epoch)
        if self.state.broker.channels.get(channel.name) is not channel or channel.epoch != epoch:
            return  # ended meanwhile (its news came after all, say)
        if mark.deleted is False and channel.subscriptions:
            self._readers_sent_back.add((channel.name, len(channel.subscriptions)), self._nursery)
        self._end_as_marked(channel, mark, reason)

    # -- RPC ---------------------------------------------------------------------------------
    def route_call(self, caller: Any, message: ControlMessage) -> bool:
        return self.rpc.route(caller, message)

    def routed_calls(self) -> int:
        return self.rpc.waiting()


class _GatheredLine(Generic[T]):
    """Items that come in a burst (a Redis restart's channels), said in one line once the
    burst is over (REGISTERED_AGAIN_GATHER_S after its first item)."""

    def __init__(self, say: Callable[[list[T]], None]) -> None:
        self._say = say
        self._items: list[T] = []

    def add(self, item: T, nursery: trio.Nursery | None) -> None:
        first = not self._items
        self._items.append(item)
        if first and nursery is not None:
            nursery.start_soon(self._say_soon)

    async def _say_soon(self) -> None:
        await trio.sleep(REGISTERED_AGAIN_GATHER_S)  # the rest of the pass, or of the appends
        items, self._items = self._items, []
        self._say(items)


def _redis_failures_answered(handler: AsyncHandler) -> AsyncHandler:
    """``handler`` with its Redis failures (down, refusing, or no answer within
    REQUEST_REDIS_TIMEOUT_S) as an error reply to that request: the session answers a
    ClusterUnavailable and the connection goes on (any other exception closes it as a bug)."""

    @functools.wraps(handler)
    async def answer(session: Session, msg: Any) -> Any:
        try:
            with trio.fail_after(REQUEST_REDIS_TIMEOUT_S):
                return await handler(session, msg)
        except (*REDIS_ERRORS, trio.TooSlowError) as error:
            raise _unavailable(error, REQUEST_REDIS_TIMEOUT_S, "this request") from error

    return answer


def _left_the_cluster(channel: str, node: str) -> str:
    """Why the survivors end a channel of a node taken for dead (see _reap)."""
    return (
        f"channel {channel!r} ended: its node {node!r} left the cluster and its owner did not "
        "come back within resume_grace_s"
    )


def _unavailable(error: BaseException, bound_s: float, what: str) -> ClusterUnavailable:
    """A Redis failure, or no answer within ``bound_s``, as what the client is told."""
    if isinstance(error, trio.TooSlowError):
        why = f"no answer within {bound_s:g} s"
    else:  # its words, not its repr: "Unable to establish a connection to HOST:PORT"
        why = (str(error) or type(error).__name__)[:160]
    return ClusterUnavailable(
        f"the cluster's Redis is unreachable or refused {what} ({why}): try again; if it "
        "goes on, check that the server's Redis (its --engine URL) is running"
    )
