"""Who is alive, who is connected where, and how many read each channel, cluster-wide.

Every node refreshes a heartbeat (a score in ``{ns}:nodes`` = Redis time + TTL, so node
clocks do not matter) and the TTL of its own keys: its client list, the client names it holds
and its reader counts. A node that stops (kill -9, network cut) stops refreshing, and all of
that expires within the TTL: no other node has to clean up after it. After a Redis restart
(empty), each heartbeat puts back what the node holds: its names, reader counts and client
list.

Reader counts must reach writers on other nodes within 200 ms: a change is written to the
node's hash and announced on the control bus in the same round trip, and every node keeps
the cluster's counts in memory from those announcements. Pub/sub may drop a message across a
reconnect, so each heartbeat also rereads the live nodes' hashes (small: one field per
channel with local readers), which also drops the counts of nodes that died.

A Redis outage longer than the TTL (or a restart without persistence) is not a departure: every
heartbeat has lapsed by the time Redis answers again, and the first node to beat is alone among
the live nodes. Its writers' channels read elsewhere had their count summed to 0 until the other
nodes' beats came (its sends returned False, nothing sent, its readers there all along). So:

- a heartbeat that finds its own node's entry lapsed (an outage, as this node saw it) holds the
  nodes that were live before it (or that announced counts since) for one more TTL, their
  counts as last known, until each beats again (then its hash is read) or that TTL runs out
  (then it has left, killed during the outage, and its counts go as a dead node's);
- a node whose entry had lapsed writes its reader counts back in the heartbeat script itself,
  and announces them there: no node sees it live with its counts missing, and the others
  have its counts at once rather than at their next heartbeat.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import cbor2
import coredis
import trio

from .._exceptions import InvalidSetting
from .redis_control import ControlBus
from .redis_keys import KeySpace
from .redis_scripts import Script
from .retry_log import RetryLog

logger = logging.getLogger(__name__)

HEARTBEAT_TTL_S = 3.0
READERS_KIND = "readers"

# KEYS[1] nodes zset, KEYS[2] clients hash, KEYS[3] readers hash, KEYS[4..] names held;
# ARGV[1] node, ARGV[2] ttl ms, ARGV[3] the control channel, ARGV[4] "1" if the node's reader
# counts follow: ARGV[5..] (channel, count, its announcement) for each channel read there.
# Returns the live nodes, the positions (from 1) among the names of those another node holds
# now (taken while this node's heartbeat could not come), and whether this node's entry was
# live before this beat (BEAT_WAS_LIVE), had lapsed (BEAT_LAPSED: its reader counts are
# written back, and announced, before it is listed live again), or had lapsed and the counts
# were not sent (BEAT_SEND_COUNTS: nothing was done; beat again with them).
_HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local state = 0
if not score or tonumber(score) < now then
  if ARGV[4] ~= '1' then return {{}, {}, 2} end
  state = 1
  redis.call('DEL', KEYS[3])
  for i = 5, #ARGV, 3 do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('PUBLISH', ARGV[3], ARGV[i + 2])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
local taken = {}
for i = 4, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ttl)
  elseif not holder then redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl)
  else table.insert(taken, i - 3) end
end
return {redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf'), taken, state}
"""
BEAT_WAS_LIVE: Final = 0
BEAT_LAPSED: Final = 1
BEAT_SEND_COUNTS: Final = 2

# KEYS[1] nodes zset. Returns the live nodes.
_LIVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""

# KEYS[1] the node's run key; ARGV[1] this process's run id, ARGV[2] TTL (ms). Renews the
# claim if it is ours (or takes it again after a Redis restart emptied it); returns its holder.
_RENEW_RUN_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return ARGV[1]
end
return holder
"""

NAME_CLAIM_POLL_S: Final = 0.25  # how often a start looks at a claim of its name

# KEYS[1] name key; ARGV[1] node. Deletes the name only if this node holds it.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _beat_state(answer: object) -> int:
    """The heartbeat script's third answer (BEAT_*)."""
    return int(answer[2]) if isinstance(answer, list) and len(answer) == 3 else BEAT_WAS_LIVE


def _node_set(reply: object) -> frozenset[str]:
    assert isinstance(reply, list), reply
    return frozenset(node.decode() for node in reply)


class NodeLog:
    """Logs the other nodes joining and leaving the cluster, as this node's heartbeats see
    them: an operator saw a node killed only on the clients it had, not on the survivors.

    A node is said to have left once it is missing for a heartbeat TTL: a Redis restarted
    empty lists only the nodes that beat since, which is not a departure.
    """

    def __init__(self, node: str, ttl_s: float) -> None:
        self.node = node
        self.ttl_s = ttl_s
        self._known: set[str] | None = None  # None: before the first heartbeat's answer
        self._missing_since: dict[str, float] = {}
        self._gone: set[str] = set()  # said to have left

    def saw(self, live: frozenset[str], now: float) -> None:
        others = live - {self.node}
        if self._known is None:
            self._known = set(others)
            if others:
                logger.info("nodes in the cluster besides this one: %s", ", ".join(sorted(others)))
            return
        for node in sorted(others - self._known):
            logger.info("node %r joined the cluster", node)
        for node in sorted(others & self._gone):
            logger.info("node %r is back in the cluster", node)
        self._gone -= others
        for node in others:
            self._missing_since.pop(node, None)
        self._known |= others
        for node in sorted(self._known - others - self._gone):
            since = self._missing_since.setdefault(node, now)
            if now - since >= self.ttl_s:
                self._gone.add(node)
                # Missing from the live ones a TTL after its last heartbeat, and for a TTL
                # since: silent for at least both.
                logger.warning(
                    "node %r left the cluster: no heartbeat from it for over %.0f s (stopped, "
                    "killed, or cut off from Redis); clients given several URLs move to "
                    "another node",
                    node,
                    now - since + self.ttl_s,
                )


class Presence:
    """One node's side of cluster presence; run :meth:`run` in a nursery."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        keys: KeySpace,
        bus: ControlBus,
        node: str,
        *,
        ttl_s: float = HEARTBEAT_TTL_S,
    ) -> None:
        self._client = client
        self._keys = keys
        self._bus = bus
        self.node = node
        self.ttl_s = ttl_s
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._interval_s = ttl_s / 3
        self._beaten_at = 0.0  # trio time of the last heartbeat Redis answered
        self._failing = False  # the last heartbeat failed (an error, which the log said)
        self._hung = False  # the last heartbeat had no answer within a TTL (said once)
        # The bus's link came back (Redis restarted, or a blip) and no heartbeat has run since:
        # this node's client names may be missing from Redis until it does (names_settling).
        self._rejoined = False
        # This process's run of the node: another under the same name (a restart) has
        # another id, so calls in flight with the old run are known to be lost.
        self.run_id = secrets.token_hex(8)
        self._name_clash_said = False
        # Called when a heartbeat has had no answer for a TTL: the node's connections to
        # Redis may be half-open (a link that hangs and never comes back), and coredis waits
        # on them for good (no read timeout; its shared connection is not dropped when a
        # request is cancelled). The engine closes them all then, so that new ones are
        # opened: every request waiting on them fails and is tried again.
        self.on_hung: Callable[[], None] = lambda: None
        self._names: set[str] = set()
        # The latest claim of each name held here (a serial number): a heartbeat's news that
        # another node holds a name is about the claim it sent, not one made here while its
        # answer was on its way.
        self._claims: dict[str, int] = {}
        self._claim_serial = 0
        # Told the client names another node took while this one's heartbeat could not come
        # (a link that hung): its clients of those names are stale.
        self.on_names_taken: Callable[[list[str]], None] = lambda names: None
        self._local_readers: dict[str, int] = {}
        # Held by every write of this node's reader counts (set_readers, and a heartbeat or a
        # resync that writes them back): one at a time, each with _local_readers as it is
        # then, so a write-back never puts an older count over a newer one (changes update
        # _local_readers first, inside it).
        self._writing_counts = trio.Lock()
        self._clients: dict[str, bytes] = {}  # client id -> its info (CBOR), as written
        self._counts: dict[str, dict[str, int]] = {}  # channel -> node -> readers
        # (channel, node) counts set while a resync's read is on its way (see _resync)
        self._set_meanwhile: set[tuple[str, str]] | None = None
        self.live_nodes: frozenset[str] = frozenset()
        # Nodes live before an outage this node's heartbeat saw, not yet beaten since: their
        # counts are kept (as last known) until they beat or the time here (trio's) passes.
        self._held_until: dict[str, float] = {}
        # Nodes whose count announcements came since our last heartbeat: after an outage
        # they are held too (one that joined just before it, not listed live yet).
        self._heard: set[str] = set()
        # A node that stops beating (stopped, frozen, or dead) keeps its reader counts this
        # long (the server's resume_grace_s, set by the engine): its readers' channels are
        # written to meanwhile, so that they find the frames in the stream when their node
        # comes back, or when their clients resume on another node. Dropped at once, a
        # node frozen 5 s made its channel's writers' sends return False: 467 values never
        # published, which no reader could count (an operator's block recorder).
        self.gone_hold_s = 0.0
        # Nodes gone since a beat, until when their counts are kept (gone_hold_s). Apart from
        # _held_until: names_settling reads that one (an outage's holds), and a node that
        # died must not make calls to missing names wait (a review).
        self._gone_until: dict[str, float] = {}
        self._node_log = NodeLog(node, ttl_s)
        # Named in the heartbeat's failure line (a refused connection's error may not say
        # which Redis: an operator with several had to guess); set by RedisEngineIO.open.
        self.redis_named = "Redis"
        # How long the longest stop of this process since a time lasted (its server's stall
        # monitor, set by the engine): a node that did not run (SIGSTOP, a paused VM) could
        # not beat, and must say so rather than blame Redis (an operator read "no answer"
        # from Redis in the log of the node they had frozen themselves).
        self.stopped_for: Callable[[float], float] = lambda since: 0.0
        self._heartbeat = Script(client, _HEARTBEAT_LUA)
        self._live = Script(client, _LIVE_LUA)
        self._release = Script(client, _RELEASE_LUA)
        self._renew_run = Script(client, _RENEW_RUN_LUA)
        self._send_counts, self.count_changes = trio.open_memory_channel[tuple[str, int]](1000)
        bus.on(READERS_KIND, self._on_readers)
        # Counts announced while the bus was away never came (a link that failed: ~0.2 s to
        # notice, the rest of the outage, then the resubscription): a heartbeat right away
        # reads them from Redis, instead of up to a beat interval later, while a writer
        # here whose channel has a reader elsewhere meanwhile sends nothing.
        self._beat_soon = trio.Event()
        bus.on_resubscribed(self._beat_now)

    # -- heartbeat --------------------------------------------------------------------------
    def reaches_redis(self) -> bool:
        """Redis answered a heartbeat within the last TTL (to the others, this node lives)."""
        return trio.current_time() - self._beaten_at <= self.ttl_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat and resynchronise until cancelled (started after the first beat)."""
        await self.beat()
        self._beaten_at = trio.current_time()
        task_status.started()
        retry_log = RetryLog(logger, "the Redis heartbeat", where=self.redis_named)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_silence)
            while True:
                with trio.move_on_after(self._interval_s):
                    await self._beat_soon.wait()
                self._beat_soon = trio.Event()
                try:
                    # Bounded by half a TTL, not a whole one: a beat that hung until its
                    # keys expired let this node's names lapse for a moment (every hang,
                    # however short: a call then found "no client named ..."). Replaced and
                    # beaten again at once, the keys are renewed before they expire.
                    beat_from = trio.current_time()
                    with trio.move_on_after(self.ttl_s / 2) as bounded:
                        await self.beat()
                except (coredis.exceptions.ConnectionError, TimeoutError, OSError) as error:
                    self._failing = True  # said by the retry log: the watch stays quiet
                    retry_log.failed(error)
                    continue
                if bounded.cancelled_caught and self.stopped_for(beat_from) > 0:
                    # The node stopped while its beat waited (the clock ran on): Redis may
                    # have answered at once; beaten again now, on the same connections.
                    self._beat_soon.set()
                    continue
                if bounded.cancelled_caught:
                    self._no_answer()
                    self._beat_soon.set()  # at once, on the new connections
                    continue
                self._beaten_at = trio.current_time()
                self._failing = self._hung = self._rejoined = False
                retry_log.succeeded()

    def _no_answer(self) -> None:
        """A heartbeat had no answer for half a TTL: the node's connections to Redis may be
        half-open for good (see on_hung). Said once until Redis answers again (the silence
        watch then says so); the connections are replaced after every such beat."""
        if not self._hung:
            self._hung = True
            logger.warning(
                "node %r's heartbeat had no answer from Redis for %.1f s: closing its "
                "connections to Redis and opening new ones (again after each such beat)",
                self.node,
                self.ttl_s / 2,
            )
        self.on_hung()

    def _beat_now(self) -> None:
        self._rejoined = True
        self._beat_soon.set()

    async def names_settling(self) -> bool:
        """Whether a client name missing from Redis now may be one that a node still holds:
        Redis restarted (or was away) moments ago, and the nodes write their names back with
        their next heartbeats. True until this node has beaten since (failing, hung, its bus
        link just back, or its own entry missing from Redis: a restart it has not noticed
        yet) and every node live before the outage has too (those held, for at most a
        heartbeat TTL: see _hold_nodes)."""
        if self._failing or self._hung or self._rejoined:
            return True
        now = trio.current_time()
        if any(until > now for until in self._held_until.values()):
            return True
        return self.node not in await self.live()

    async def _watch_silence(self) -> None:
        """Say so when no heartbeat has reached Redis for a TTL: a link that hangs (no
        answer, no error) was silent, while the other nodes took this one for dead."""
        silent = False
        while True:
            await trio.sleep(self._interval_s)
            for_s = trio.current_time() - self._beaten_at
            if for_s > self.ttl_s and not silent and not self._failing:
                silent = True
                stopped = self.stopped_for(self._beaten_at)
                if stopped > self.ttl_s / 2:  # its own stop, not Redis, kept it from beating
                    logger.warning(
                        "node %r did not run for %.1f s (its process was stopped or held), so "
                        "its heartbeat could not reach Redis: other nodes take it for dead "
                        "until it beats again (its names are free, and after resume_grace_s its "
                        "channels end)",
                        self.node,
                        stopped,
                    )
                    continue
                logger.warning(
                    "no heartbeat of node %r has reached Redis for %.1f s (no answer): other "
                    "nodes take it for dead (its names are free, and after resume_grace_s its "
                    "channels end); waiting for Redis to answer",
                    self.node,
                    for_s,
                )
            elif for_s <= self.ttl_s and silent:  # (a failure's return: the retry log's)
                silent = False
                logger.warning("node %r's heartbeat reaches Redis again", self.node)

    async def claim_node_name(self) -> None:
        """Take this node's name for this process, or refuse to start.

        Two live nodes of one name sum each other's reader counts away and, when one stops,
        end the other's channels as "its node left the cluster" (an outside audit). The
        claim is a key SET NX with the heartbeat's TTL, renewed by each heartbeat: two nodes
        started at once cannot both take it, and one restarted at once after a crash waits
        until its last run's claim expires (at most a TTL), as nobody renews it.

        Raises:
            InvalidSetting: another process runs as this node (its claim is renewed).
        """
        key = self._keys.run(self.node)
        last_ttl: int | None = None
        deadline = trio.current_time() + self.ttl_s + self._interval_s
        while not await self._client.set(
            key, self.run_id, condition=coredis.PureToken.NX, px=self._ttl_ms
        ):
            ttl = await self._client.pttl(key)
            if (last_ttl is not None and ttl > last_ttl) or trio.current_time() > deadline:
                raise InvalidSetting(
                    "node_name",
                    f"a running node of this cluster is named {self.node!r} already (its "
                    "heartbeat goes on): give each node a name of its own (--node-name, "
                    "node_name=)",
                )
            last_ttl = ttl
            await trio.sleep(NAME_CLAIM_POLL_S)

    async def release_node_name(self) -> None:
        """Give this node's name back (a stop), if this process still holds it."""
        await self._release(keys=[self._keys.run(self.node)], args=[self.run_id])

    async def forget_previous_run(self) -> None:
        """At start: this node's reader counts from an earlier run under its name (a crash)
        are not ours; the other nodes drop them from their sums at their next heartbeat."""
        await self._client.delete([self._keys.readers(self.node)])

    async def beat(self) -> None:
        """One heartbeat: refresh our TTLs, learn the live nodes, resync reader counts."""
        # Counts announced from here on are kept as announced by the resync (see there): one
        # that came while the heartbeat script listed the live nodes without its node (whose
        # own entry had lapsed, and which wrote its counts back in its own beat) was read
        # away for a beat.
        self._set_meanwhile = set()
        keys = [self._keys.nodes, self._keys.clients(self.node), self._keys.readers(self.node)]
        names = [(name, self._claims.get(name, 0)) for name in self._names]
        keys += [self._keys.name(name) for name, _ in names]
        # Our counts go along only when the script asks for them (our entry had lapsed: the
        # first beat, or one after an outage): one more round trip then, instead of every
        # channel read here sent each beat, and no beat waits for a write of a count.
        answer = await self._beat_script(keys, with_counts=False)
        if _beat_state(answer) == BEAT_SEND_COUNTS:
            answer = await self._beat_script(keys, with_counts=True)
        held: object = await self._renew_run(
            keys=[self._keys.run(self.node)], args=[self.run_id, str(self._ttl_ms)]
        )
        if held != self.run_id.encode() and not self._name_clash_said:
            self._name_clash_said = True  # once: it goes on until one of them stops
            logger.error(
                "another process runs as node %r: two nodes of one name sum each other's "
                "reader counts away and end each other's channels; stop one, and give each "
                "node a name of its own (--node-name)",
                self.node,
            )
        live, taken = answer[:2] if isinstance(answer, list) and len(answer) == 3 else ([], [])
        now = trio.current_time()
        self._hold_nodes(frozenset(n.decode() for n in live), _beat_state(answer), now)
        self._node_log.saw(self.live_nodes, now)
        lost = [
            name
            for name, claims in (names[int(i) - 1] for i in taken)
            if name in self._names and self._claims.get(name, 0) == claims
        ]
        if lost:
            self._names.difference_update(lost)
            for name in lost:
                del self._claims[name]
            self.on_names_taken(lost)
        await self._resync()

    async def _beat_script(self, keys: list[str], *, with_counts: bool) -> object:
        """The heartbeat script (see _HEARTBEAT_LUA), with this node's reader counts or not."""
        args: list[str | bytes] = [self.node, str(self._ttl_ms), self._keys.control]
        if not with_counts:
            return await self._heartbeat(keys=keys, args=[*args, "0"])
        async with self._writing_counts:
            args.append("1")
            for channel, local in self._local_readers.items():
                args += [channel, str(local), self._announcement(channel, local)]
            return await self._heartbeat(keys=keys, args=args)

    def _hold_nodes(self, live: frozenset[str], state: int, now: float) -> None:
        """Take the live nodes a heartbeat found (``state``: whether our own entry had
        lapsed). A node that is gone since the last beat keeps its counts ``gone_hold_s``. After
        an outage (our entry lapsed: Redis restarted or was out of reach for
        a TTL), the nodes live before it, or counted since, are held for a TTL: they may not
        have beaten since Redis came back, and dropping their counts told our writers their
        channels had no readers elsewhere (a send returned False, nothing sent). A node held
        that beats is live again (its hash, written back by that beat, is read); one that
        does not within the TTL has left (killed meanwhile): its counts go as a dead one's."""
        held = {node: until for node, until in self._held_until.items() if until > now}
        if state != BEAT_WAS_LIVE:
            # Those heard of since our last beat count too (a node that joined and announced
            # a reader just before the outage). A hold is never extended: with Redis
            # restarting again and again, a node that died held its counts for good (a
            # review), where the README says at most a TTL.
            for node in (self.live_nodes | self._heard) - {self.node}:
                held.setdefault(node, now + self.ttl_s)
        gone = {node: until for node, until in self._gone_until.items() if until > now}
        if state == BEAT_WAS_LIVE and self.gone_hold_s > 0:
            for node in self.live_nodes - live - {self.node}:  # gone since the last beat
                gone.setdefault(node, now + self.gone_hold_s)
        self._gone_until = {node: until for node, until in gone.items() if node not in live}
        self._heard = set()
        self._held_until = {node: until for node, until in held.items() if node not in live}
        self.live_nodes = live

    def _announcement(self, channel: str, count: int) -> bytes:
        return cbor2.dumps({"k": READERS_KIND, "f": self.node, "b": [channel, count]})

    async def _resync(self) -> None:
        # A count announced (or set here) while the resync is under way is at least as new
        # as what its read found: a node writes its count and announces it in one round
        # trip, and announcements arrive in order. The read's answer may be handled after
        # the announcement (two connections, two tasks); replacing the announced count with
        # it undid a reader's arrival for a heartbeat (a writer told "no readers" right after
        # its wait_for_readers returned: its sends put nothing on the wire). So those counts
        # stay as announced; the read repairs the others (announcements lost to a reconnect,
        # nodes that died).
        if self._set_meanwhile is None:  # (a beat starts it earlier)
            self._set_meanwhile = set()
        try:
            counts = await self._read_counts()
            # Nodes held after an outage (not beaten since): their counts as last known.
            for channel, per_node in self._counts.items():
                for node in per_node.keys() & (self._held_until.keys() | self._gone_until.keys()):
                    counts.setdefault(channel, {})[node] = per_node[node]
            for channel, node in self._set_meanwhile:
                count = self._counts.get(channel, {}).get(node, 0)
                per_node = counts.setdefault(channel, {})
                if count:
                    per_node[node] = count
                else:
                    per_node.pop(node, None)
                    if not per_node:
                        del counts[channel]
        finally:
            self._set_meanwhile = None
        changed = set(counts) | set(self._counts)
        before = {channel: self.readers(channel) for channel in changed}
        self._counts = counts
        for channel in changed:
            if self.readers(channel) != before[channel]:
                self._notify(channel)

    async def _read_counts(self) -> dict[str, dict[str, int]]:
        """Every live node's reader counts as Redis has them (channel -> node -> readers);
        this node's client list and counts written again if Redis lost them (a restart)."""
        nodes = sorted(self.live_nodes)
        clients_key = self._keys.clients(self.node)
        async with self._client.pipeline(transaction=False) as pipe:
            pending = [pipe.hgetall(self._keys.readers(node)) for node in nodes]
            listed = pipe.hlen(clients_key)
        if await listed != len(self._clients):
            # Our client list is missing or wrong (Redis restarted empty): write it again.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete([clients_key])
                if self._clients:
                    pipe.hset(clients_key, dict(self._clients))
                    pipe.pexpire(clients_key, self._ttl_ms)
        counts: dict[str, dict[str, int]] = {}
        for node, request in zip(nodes, pending, strict=True):
            for name, count in (await request).items():
                counts.setdefault(name.decode(), {})[node] = int(count)
        # Our own counts missing or wrong in Redis (a change whose write failed; the heartbeat
        # writes them all back after an outage): write them again, and announce them, so
        # other nodes have them now rather than at their next heartbeat. Under the lock, as
        # they are now: a change made since the read is written as it is, not undone.
        # A count of ours in Redis that we no longer have (a write of 0 that failed) is
        # removed the same way: other nodes counted a reader that was gone, for good.
        if self._counts_differ(counts):
            async with self._writing_counts:
                lost = {
                    channel: local
                    for channel, local in self._local_readers.items()
                    if local and counts.get(channel, {}).get(self.node) != local
                }
                gone = [
                    channel
                    for channel, per_node in counts.items()
                    if self.node in per_node and not self._local_readers.get(channel)
                ]
                if lost or gone:
                    key = self._keys.readers(self.node)
                    async with self._client.pipeline(transaction=False) as pipe:
                        if lost:
                            pipe.hset(key, {c: str(local) for c, local in lost.items()})
                        if gone:
                            pipe.hdel(key, gone)
                        pipe.pexpire(key, self._ttl_ms)
                        for channel, local in [*lost.items(), *((c, 0) for c in gone)]:
                            pipe.publish(self._keys.control, self._announcement(channel, local))
                for channel, local in lost.items():
                    counts.setdefault(channel, {})[self.node] = local
                for channel in gone:
                    per_node = counts[channel]
                    del per_node[self.node]
                    if not per_node:
                        del counts[channel]
        return counts

    def _counts_differ(self, counts: dict[str, dict[str, int]]) -> bool:
        """Whether Redis's counts of this node (``counts``, as read) differ from ours."""
        mine = {c: n for c, per_node in counts.items() if (n := per_node.get(self.node))}
        return mine != {c: n for c, n in self._local_readers.items() if n}

    async def live(self) -> frozenset[str]:
        """The nodes whose heartbeat has not expired, asked of Redis now."""
        return _node_set(await self._live(keys=[self._keys.nodes]))

    # -- clients and names ------------------------------------------------------------------

    async def add_client(self, client_id: str, info: Mapping[str, Any]) -> None:
        key = self._keys.clients(self.node)
        encoded = self._clients[client_id] = cbor2.dumps(dict(info))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, {client_id: encoded})
            pipe.pexpire(key, self._ttl_ms)

    async def remove_client(self, client_id: str) -> None:
        self._clients.pop(client_id, None)
        await self._client.hdel(self._keys.clients(self.node), [client_id])

    async def clients(self) -> dict[str, dict[str, Any]]:
        """Every live node's clients: ``{node: {client_id: info}}``."""
        nodes = sorted(await self.live())
        async with self._client.pipeline(transaction=False) as pipe:
            pending = [pipe.hgetall(self._keys.clients(node)) for node in nodes]
        return {
            node: {cid.decode(): cbor2.loads(info) for cid, info in (await request).items()}
            for node, request in zip(nodes, pending, strict=True)
        }

    async def claim_name(self, name: str) -> bool:
        """Take a client name for this node, cluster-wide; False if any node holds it."""
        taken = await self._client.set(
            self._keys.name(name), self.node, condition=coredis.PureToken.NX, px=self._ttl_ms
        )
        if taken:
            self._names.add(name)
            self._claimed(name)
        return bool(taken)

    def _claimed(self, name: str) -> None:
        self._claim_serial += 1
        self._claims[name] = self._claim_serial

    async def release_name(self, name: str) -> None:
        self._names.discard(name)
        self._claims.pop(name, None)
        await self._release(keys=[self._keys.name(name)], args=[self.node])

    async def runs_of(self, nodes: Iterable[str]) -> dict[str, str]:
        """The run id of each of ``nodes`` whose heartbeat wrote one (cluster_rpc)."""
        wanted = list(nodes)
        if not wanted:
            return {}
        found = await self._client.mget([self._keys.run(n) for n in wanted])
        return {n: run.decode() for n, run in zip(wanted, found, strict=True) if run is not None}

    async def name_node(self, name: str) -> str | None:
        """The node holding client ``name`` (where an RPC to it goes), or None."""
        node = await self._client.get(self._keys.name(name))
        return node.decode() if node is not None else None

    # -- reader counts ----------------------------------------------------------------------

    async def set_readers(self, channel: str, count: int) -> None:
        """Publish this node's reader count of ``channel`` (write + announce, one trip)."""
        key = self._keys.readers(self.node)
        message = self._announcement(channel, count)
        async with self._writing_counts:
            # Taken before the write: if it fails (Redis away), the heartbeat that finds our
            # entry lapsed, or the next resync, writes this count, not the one before it.
            if count:
                self._local_readers[channel] = count
            else:  # kept at 0, one entry per channel name ever read here, looped over each beat
                self._local_readers.pop(channel, None)
            async with self._client.pipeline(transaction=False) as pipe:
                if count:
                    pipe.hset(key, {channel: str(count)})
                else:
                    pipe.hdel(key, [channel])
                pipe.pexpire(key, self._ttl_ms)
                pipe.publish(self._keys.control, message)
        self._set_count(channel, self.node, count)

    def remote_readers(self, channel: str) -> int:
        """Readers of ``channel`` on the other nodes (no I/O)."""
        per_node = self._counts.get(channel, {})
        return sum(per_node.values()) - per_node.get(self.node, 0)

    async def take_name(self, name: str) -> str | None:
        """Take a client name over (a resuming client); returns the node that held it."""
        old = await self._client.set(self._keys.name(name), self.node, px=self._ttl_ms, get=True)
        self._names.add(name)
        self._claimed(name)
        return old.decode() if isinstance(old, bytes) else None

    def readers(self, channel: str) -> int:
        """The cluster's reader count of ``channel`` as this node knows it (no I/O)."""
        return sum(self._counts.get(channel, {}).values())

    def _on_readers(self, node: str, body: Any) -> None:
        channel, count = body
        self._heard.add(str(node))
        self._set_count(str(channel), str(node), int(count))

    def _set_count(self, channel: str, node: str, count: int) -> None:
        if self._set_meanwhile is not None:
            self._set_meanwhile.add((channel, node))
        per_node = self._counts.get(channel)
        if per_node is None:
            if not count:
                return  # nothing to remove (setdefault here left an empty entry behind)
            per_node = self._counts[channel] = {}
        if per_node.get(node, 0) == count:
            return
        if count:
            per_node[node] = count
        else:
            per_node.pop(node, None)
            if not per_node:
                del self._counts[channel]
        self._notify(channel)

    def _notify(self, channel: str) -> None:
        try:
            self._send_counts.send_nowait((channel, self.readers(channel)))
        except trio.WouldBlock:
            logger.warning("reader count changes not consumed: dropped one for %r", channel[:80])
