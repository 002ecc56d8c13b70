"""Frames between nodes through Redis Streams: batch append and a per-node reader task.

Why Redis Streams, and what the client (coredis) does under trio -- measured, not assumed.

Frames cross nodes through one Redis stream per channel (and epoch): one copy of each payload
in Redis, each node reading at its own pace from its own last id, so a slow or reconnecting
node loses nothing the stream still holds, and what was trimmed is counted exactly because
the entry ids *are* sequence numbers: one entry per writer batch, its id ``{seq}-0`` of its
last frame, its frame count giving the others'. Pub/sub would drop frames silently on any
reconnect or slow consumer; it carries only control messages (redis_control).

The client: coredis 6.9.0 (anyio 4.16, on trio 0.35; Redis 7.0.15, RESP3 only). Probed here:

- Connecting: ``coredis.Redis.from_url(url)`` must be used as ``async with client:`` (new in
  6.0): it opens an anyio task group, which under trio is a nursery, and each connection runs
  a task in it. Commands on one connection are multiplexed (several tasks may await commands
  at once); a blocking command (XREAD BLOCK) takes a connection of its own from the pool, so
  an XADD issued while another task blocks in XREAD went through in 7 ms.
- XADD with ``trim_strategy=PureToken.MAXLEN, trim_operator=PureToken.APPROXIMATELY``;
  ``xread({key: id, ...}, count=, block=ms)`` over several streams returns ``{key:
  (StreamEntry(identifier, field_values), ...)}`` or None on timeout; ``xrange(key, start,
  end, count=)``. Replies are bytes with ``decode_responses=False`` (the types say str|bytes:
  cast). Parsing builds one StreamEntry and one OrderedDict per entry: with an entry per
  frame it was most of the reader's CPU, hence an entry per batch (see the figures below).
  Approximate trimming (``~``) frees whole stream nodes of 100 entries: with an entry per
  batch that would keep up to 100 batches more than asked, so the append trims exactly, by
  id (MINID), which costs only the entries it removes.
- Lua: ``Script(client, src)`` (redis_scripts: ``client.register_script`` with an EVAL
  fallback) is a callable ``await script(keys=, args=)`` that uses EVALSHA and, on
  NOSCRIPT, EVAL, so a restarted (empty) Redis needs no re-registration.
  ``redis.error_reply`` comes back as ``ResponseError`` with its text.
- Pipelines: ``async with client.pipeline(transaction=False) as pipe:`` queue commands
  (each returns a request), the batch is sent on exit; await the requests after the block.
- Pub/sub: ``async with client.pubsub(channels=[...], ignore_subscribe_messages=True) as
  sub: async for message in sub``. Gotchas found: after ``CLIENT KILL TYPE pubsub`` coredis
  reconnects by itself, but with two channels its iteration then simply ends; and its cleanup
  on cancellation may raise ``anyio.ClosedResourceError``. ControlBus reopens the
  subscription whenever it ends and ignores that one error.
- Connection loss: every command is retried by coredis (ConstantRetryPolicy: 2 retries,
  10 ms) on ConnectionError/TimeoutError, on a fresh connection. After CLIENT KILL a blocked
  XREAD is thus re-issued with the same ids (lossless). A retried *write* may run twice when
  only its reply was lost: the append script therefore takes a batch token and answers the
  first seq it already assigned instead of appending again (tested with CLIENT KILL while
  streaming: nothing lost, nothing repeated). When Redis stays down the retries end in
  ``coredis.exceptions.ConnectionError`` ("Unable to establish a connection"); the reader
  then backs off (50 ms doubling to 1 s) and resumes from its ids.
- A Redis restart without persistence loses every key, so channel epochs vanish: the reader
  checks its channels' epochs after each reconnect and every second and reports
  :class:`EpochReset` (a ``reset`` gap); writers on the old epoch get :class:`EpochChanged`.

Figures (benchmarks/redis_engine.py, loopback, 2 shared cores with other jobs running, load
average 5-6: take them as orders of magnitude). Writer and reader in separate processes,
~100-byte frames in batches of 100, append+XREAD: 52k frames/s with an entry per frame,
208k with an entry per batch, against 170k-216k for redis-py PUBLISH (pipelined by 100) to
one subscriber, in the same sitting; 1 MiB frames: 86 and 476 MB/s against 810-846 MB/s.
The per-node figure is what matters: a node reads each frame once from Redis and fans it out
to its local readers itself. Across nodes (benchmarks/cluster.py, writer on node A, 4 readers
on node B, 13 runs) the server side then spends 1.4-2.2 us of CPU per frame a reader gets
(Redis 0.1-0.2, the writer's node 0.4-0.7, the readers' node 0.8-1.3), most of it the
fan-out to the readers that a single node does too (0.7-0.9 there, writer included), where
an entry per frame cost 3.7-5.2 us (Redis 0.6-0.7). What limits now: that fan-out on node B,
and for big frames the copies (client -> Lua argument -> stream entry -> reply) all on
Redis's one thread.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import secrets
import sys
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import coredis
import coredis.exceptions
import trio
from coredis.response.types import StreamEntry

from .redis_holds import STAMP_WAIT_LUA
from .redis_keys import KeySpace
from .redis_registry import ChannelRegistry
from .redis_scripts import Script
from .retry_log import RetryLog

logger = logging.getLogger(__name__)

DEFAULT_HISTORY_FRAMES = 10_000
# A channel's stream also stays within about this many bytes (payloads): 10,000 frames of
# 1 MiB would be 10 GB of Redis memory. The bound is in frames for XTRIM, from the batch's
# average payload, never below MIN_HISTORY_FRAMES.
DEFAULT_HISTORY_BYTES = 256 * 2**20
MIN_HISTORY_FRAMES = 64
READ_BLOCK_MS = 1_000
# Stream entries per XREAD: an entry holds up to ENTRY_BYTES (plus one frame) of a writer
# batch's small frames, or one big frame; 16 keep a reply to ~16k frames of ~100 bytes (16
# batches), ~16 MiB of small frames or 16 big ones.
READ_COUNT = 16
# One XREAD reads up to READ_COUNT entries of every followed stream: entries of big frames
# would make a reply of hundreds of MiB, and every other channel of the node would wait for
# it (a quiet channel beside a flooded one then lagged by seconds). So the count is cut to
# about this many bytes of the biggest entries of the last read (as much as a writer appends
# at once).
READ_BYTES = 8 * 2**20
RANGE_COUNT = 16  # stream entries per XRANGE while collecting a range of frames
# Frames of one batch smaller than PACK_BYTES share stream entries of up to ENTRY_BYTES of
# payloads (one entry for a batch of small frames); a frame of PACK_BYTES or more has an
# entry of its own, so its payload goes to Redis as it is, never joined.
PACK_BYTES = 64 * 2**10
ENTRY_BYTES = 2**20
EPOCH_CHECK_INTERVAL_S = 1.0
RECONNECT_DELAY_MIN_S = 0.05
RECONNECT_DELAY_MAX_S = 1.0
APPEND_RETRY_S = 5.0
WAKE_FIELD = b"w"
# A named writer's record (count and owner) lives this long after its last batch or claim:
# a client moves a writer within seconds of its node's death; a record gone after a longer
# pause costs nothing then (no frame of it is on its way).
WRITER_RECORD_TTL_S = 24 * 3600.0
CLAIM_TOKEN_BYTES = 8
# A writer waiting for a lagging node asks again after ROOM_POLL_MIN_S, doubling up to
# ROOM_POLL_MAX_S: a block reader that keeps up frees room within a few ms, a stalled one
# costs one cheap script call per ROOM_POLL_MAX_S.
ROOM_POLL_MIN_S = 0.001
ROOM_POLL_MAX_S = 0.01

# Errors after which the reader waits, reconnects and checks epochs (coredis already
# retried the command twice by then).
REDIS_DOWN = (coredis.exceptions.ConnectionError, TimeoutError, OSError)
# Down, or up and refusing (NOPERM from an ACL, READONLY after a fail-over, a script error).
REDIS_ERRORS = (*REDIS_DOWN, coredis.exceptions.RedisError)

# KEYS[1] channel hash, KEYS[2] stream key, KEYS[3] the nodes' positions in that stream
# (redis_positions), KEYS[4] the nodes' heartbeat expiries (redis_presence); ARGV[1] epoch,
# ARGV[2] history bound (frames), ARGV[3] sender, ARGV[4] batch token, ARGV[5] n (frames),
# ARGV[6] '1' for a writer its client named (KEYS[5] is then its record; '' for none),
# ARGV[7] the token of that writer's claim, ARGV[8] the record's lifetime (ms), ARGV[9] how
# many of the writer's frames came before this call's (the record starts there if it is
# gone: expired, or a new epoch), then per stream entry four values: its frame count, times,
# sizes and payloads (packed, see pack_entries).
# The sequence numbers come from one HINCRBY, so a batch is contiguous and numbers are per
# channel across every node. A stream entry carries several frames: its id is ``{seq}-0``
# of its *last* frame, and its count says where the first one is, so every frame's seq is
# known, a trimmed range is exact to count, and a resume is a plain XREAD from ``{seq}-0``
# (the entry holding the next frame is the first with a greater id; the frames before it in
# that entry are skipped by the reader). Trimming is by id (MINID, exact): at least the
# history bound in frames stays. A writer on a stale epoch is refused (the channel was
# deleted, recreated or Redis lost it). The batch token makes a retry idempotent: a command
# whose reply was lost with its connection ran (or not) as a whole, and running it again
# answers {first seq, frames} of what that token appended instead of appending it twice.
# The token names the writer's batch and the part's place in it, so the engine's own retry
# of a batch (after retry_s) is recognised too, and a retry with more frames than the part
# that went in (its room was smaller then) appends only the rest.
# A writer its client named (open_publisher's ``writer``) has a record of its own (KEYS[5],
# KeySpace.writer): ``n``, how many of its frames the stream got, from every node and
# connection, and ``o``, the token of the last claim of it (_CLAIM_LUA: a reopen). A batch
# whose token is not the record's is refused ('WRITER_MOVED'): one that an earlier
# connection's appender still held when the client reopened the writer, on another node or
# on this one. The reopen learnt, in the same atomic step that made its token the owner,
# exactly how many of the writer's frames the stream holds, and the client sends the rest
# through it: so a writer that moves (its node died, or its connection) neither loses nor
# repeats a frame. The record lives WRITER_RECORD_TTL_S after the writer's last batch or
# claim; a batch that finds it gone (expired, or a new epoch after Redis lost the channel)
# starts it again at the count the node knows (ARGV[9]), which is the client's too.
# Room: no live node that follows the channel may be left more than its room behind: the
# history bound (the trim would drop frames it has not read; a batch bigger than the bound
# goes once the node has read everything before it), or its ``block`` readers' room (it
# reports "seq room", see redis_positions). Without room nothing is appended and the answer
# is 0: the writer waits (ROOM_LUA) and tries again, its acknowledgements held meanwhile.
# With room for only k < n frames of a block reader the answer is -k: the writer appends its
# first k frames, then the rest as room comes (a block reader across nodes holds its writer
# at its size, as on one node). A node whose heartbeat expired does not count (it holds no
# writer). _ROOM computes ``fit``, how many of the n frames fit; each script answers with it.
_ROOM = """
local n = tonumber(ARGV[5])
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local history = tonumber(ARGV[2])
local fit = n
local positions = redis.call('HGETALL', KEYS[3])
if #positions > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 1, #positions, 2 do
    local seq, room = string.match(positions[i + 1], '^(%d+) ?(%d*)$')
    if seq then
      seq = tonumber(seq)
      room = tonumber(room)
      local can = n
      if room then
        can = seq + math.min(room, history) - last
      elseif last + n - seq > math.max(history, n) then
        can = 0
      end
      if can < fit then
        local expiry = redis.call('ZSCORE', KEYS[4], positions[i])
        if expiry and tonumber(expiry) > now then fit = math.max(can, 0) end
      end
    end
  end
end
"""

_APPEND_LUA = (
    """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then return redis.error_reply('EPOCH ' .. (epoch or '')) end
local mark = 'b:' .. string.match(ARGV[4], '^(.*)%.[%d_]+$')
local done = redis.call('HGET', KEYS[1], mark)
if done then
  local token, first, count = string.match(done, '^(.*) (%d+) (%d+)$')
  if token == ARGV[4] then return {tonumber(first), tonumber(count)} end
end
if ARGV[6] ~= '' then
  local owner = redis.call('HGET', KEYS[5], 'o')
  if owner and owner ~= ARGV[7] then return redis.error_reply('WRITER_MOVED') end
end
"""
    + _ROOM
    + """
if fit < n then return -fit end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', n)
local first = seq - n + 1
seq = first - 1
for i = 10, #ARGV, 4 do
  seq = seq + tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], string.format('%d-0', seq),
             's', ARGV[3], 't', ARGV[i + 1], 'l', ARGV[i + 2], 'p', ARGV[i + 3])
end
local keep = seq - tonumber(ARGV[2]) + 1
if keep > 1 then redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', keep)) end
redis.call('HSET', KEYS[1], mark, ARGV[4] .. ' ' .. string.format('%d %d', first, n))
if ARGV[6] ~= '' then
  if redis.call('HSETNX', KEYS[5], 'n', ARGV[9]) == 1 then
    redis.call('HSETNX', KEYS[5], 'o', ARGV[7])
  end
  redis.call('HINCRBY', KEYS[5], 'n', n)
  redis.call('PEXPIRE', KEYS[5], ARGV[8])
end
return first
"""
)

# KEYS[1] channel hash, KEYS[2] the writer's record; ARGV[1] epoch, ARGV[2] the claim's
# token, ARGV[3] the record's lifetime (ms). Makes the token the owner (a batch with any other
# token is refused from now on) and answers how many of the writer's frames the stream got,
# in one atomic step.
# A claim may carry its number (ARGV[4], the client's count of its reopens; '' for none):
# one not above the record's last (``g``) is refused ('STALE_CLAIM'), so a reopen whose
# call reached Redis after a later reopen's (its node's connection to Redis was slow, its
# client gave up on it and went elsewhere) does not take the writer from the live one.
_CLAIM_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then return redis.error_reply('EPOCH ' .. (epoch or '')) end
local claim = tonumber(ARGV[4])
if claim then
  local last = tonumber(redis.call('HGET', KEYS[2], 'g') or '0')
  if claim <= last then return redis.error_reply(string.format('STALE_CLAIM %d', last)) end
  redis.call('HSET', KEYS[2], 'g', ARGV[4])
end
redis.call('HSET', KEYS[2], 'o', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
"""

# The room check of a waiting writer (KEYS[1..5] and ARGV[1..5] as _APPEND_LUA): 1 when
# every frame fits, -k when k fit, 0 when none does. Then it stamps its wait (KEYS[6] the
# channel's stamps, ARGV[6] the ms its oldest frame has waited), so that the node of the full
# block reader can time it (redis_holds: block_timeout, held_by).
_ROOM_LUA = (
    """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then return redis.error_reply('EPOCH ' .. (epoch or '')) end
"""
    + _ROOM
    + """
if fit == 0 then
  local held_key = KEYS[6]
  local who = string.match(ARGV[4], '^(.*)%.[%d_]+$') or ARGV[4]
  local waited = tonumber(ARGV[6])
"""
    + STAMP_WAIT_LUA
    + """
end
if fit < n then return -fit end
return 1
"""
)


def _arrival(arrivals: Sequence[tuple[int, float]], place: int) -> float:
    """When the frame at ``place`` in its batch reached this node (see FrameWriter.append)."""
    at = bisect.bisect_right(arrivals, place, key=lambda arrival: arrival[0])
    return arrivals[max(at - 1, 0)][1]


def _waited_ms(arrived: float) -> str:
    """How long, in ms, a frame that reached this node at ``arrived`` has waited."""
    return str(max(0, round((time.monotonic() - arrived) * 1000)))


class EpochChanged(Exception):
    """The channel's epoch in Redis is not the writer's: deleted, recreated or reset."""

    def __init__(self, channel: str, epoch: str | None) -> None:
        now = f"epoch {epoch}" if epoch else "no such channel"
        super().__init__(f"channel {channel[:80]!r} changed in Redis ({now}): reopen it")
        self.channel = channel
        self.epoch = epoch
        # Of a batch that went in parts: the first ``written`` frames went into the old
        # epoch (and on to its readers) before the change; set by FrameWriter.append.
        self.written = 0


class WriterMoved(Exception):
    """The writer's client reopened it (a claim with another token): this batch was refused."""

    def __init__(self, channel: str) -> None:
        super().__init__(
            f"a writer of {channel[:80]!r} was reopened (on another connection or node): "
            "its frames go there"
        )
        self.channel = channel


class StaleClaim(Exception):
    """A reopen of a writer whose client reopened it again since (a claim numbered no
    higher than the last): refused, the writer stays with the later one."""

    def __init__(self, channel: str, claim: int, last: int) -> None:
        super().__init__(
            f"a writer of {channel[:80]!r} was reopened again since this reopen (its claim "
            f"{claim}, the last {last}): it writes there; this reopen is left"
        )
        self.channel = channel
        self.claim = claim
        self.last = last


class AppendInterrupted(Exception):
    """Redis went away in the middle of a batch that went in parts (a block reader's
    room): the first ``written`` frames are in the stream; append only the rest again."""

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(f"{written} frames of the batch appended, then: {cause}")
        self.written = written


class Frame(NamedTuple):
    seq: int
    time: float
    sender: bytes  # as DATA frames carry it (the writer's sender field, UTF-8)
    payload: bytes


# A frame as the reader hands it on: Frame's fields in a plain tuple, which is what
# Broker.deliver_remote takes (a NamedTuple costs a Python-level __new__ per frame).
RawFrame = tuple[int, float, bytes, bytes]


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Frames of one channel in order; ``lost`` were trimmed from Redis just before them."""

    channel: str
    epoch: str
    frames: list[RawFrame]
    lost: int = 0


@dataclass(frozen=True, slots=True)
class EpochReset:
    """The channel's epoch changed (``new_epoch``) or it is gone from Redis (None).

    With a new epoch the reader goes on from its first frame; with None it stops following.
    """

    channel: str
    old_epoch: str
    new_epoch: str | None


ReaderEvent = FrameBatch | EpochReset


@dataclass(frozen=True, slots=True)
class NamedWriter:
    """A writer its client named (open_publisher's ``writer``), as one connection has it:
    its record's Redis key (KeySpace.writer) and the token this connection claims it with."""

    record: str
    token: str
    key: str  # the client's name for it


class FrameWriter:
    """Appends batches of payloads to channel streams, one round trip per batch."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        keys: KeySpace,
        *,
        history_frames: int = DEFAULT_HISTORY_FRAMES,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        retry_s: float = APPEND_RETRY_S,
    ) -> None:
        self._keys = keys
        self._retry_s = retry_s
        self._history_frames = history_frames
        self._history_bytes = history_bytes
        self._client = client
        self._append = Script(client, _APPEND_LUA)
        self._room = Script(client, _ROOM_LUA)
        self._claim = Script(client, _CLAIM_LUA)
        self._instance = secrets.token_hex(6)
        self._batches = 0

    async def append(
        self,
        channel: str,
        epoch: str,
        sender: str,
        payloads: Sequence[bytes],
        times: Sequence[float],
        *,
        writer: str = "",
        named: NamedWriter | None = None,
        before: int = 0,
        batch: str | None = None,
        offset: int = 0,
        arrivals: Sequence[tuple[int, float]] = (),
    ) -> int:
        """Append ``payloads`` (with their ``times``); return the first one's sequence number.

        ``writer`` tells this writer's batches from those of other writers appending through
        this FrameWriter at the same time (a repeated call is recognised per writer, see
        _APPEND_LUA); :meth:`forget` removes its mark when the writer ends. ``named``, a
        writer its client named: its record counts its frames (``before`` of them came
        before these), and refuses the batch once the writer was claimed with another token
        (:meth:`claim`). ``batch`` names the caller's batch and ``offset`` the place of
        ``payloads[0]`` in it: a caller that calls again for the same batch (or its rest,
        after AppendInterrupted) gives the same, so that what went in already is recognised.
        ``arrivals``: ``(place in the batch, time.monotonic)`` where each group of its frames
        starts and when it reached this node, oldest first: a block reader is timed by the
        wait of the oldest frame not yet in (redis_holds); none: they arrived now.

        Waits while a live node that follows the channel is more than the history bound
        behind (see redis_positions): so nothing is trimmed before every node read it; and
        while a node's ``block`` readers have no room, appending what they have room for
        (so the batch may go in parts, each with contiguous sequence numbers). A broken
        connection is retried (same batch token, so never appended twice) for up to
        ``retry_s``.

        Raises:
            EpochChanged: the channel is not at ``epoch`` in Redis any more (its ``written``:
                the frames of a split batch that went in before).
            WriterMoved: the writer was claimed with another token (nothing of this part went in;
                the parts before it of a split batch did).
            AppendInterrupted: Redis unreachable for ``retry_s`` after part of a split batch
                went in (say how much).
            coredis.exceptions.ConnectionError: Redis unreachable for ``retry_s``.
        """
        count = len(payloads)
        if count != len(times):
            raise ValueError(f"{count} payloads but {len(times)} times: give one time per payload")
        if count == 0:
            raise ValueError("append needs at least one payload")
        average = max(1, sum(len(p) for p in payloads) // count)
        history = min(
            self._history_frames,
            max(MIN_HISTORY_FRAMES, self._history_bytes // average),
        )
        keys = [
            self._keys.channel(channel),
            self._keys.stream(channel, epoch),
            self._keys.positions(channel, epoch),
            self._keys.nodes,
            named.record if named is not None else self._keys.channel(channel),  # unused then
            self._keys.held(channel, epoch),  # the room check's only
        ]
        if not arrivals:
            arrivals = [(0, time.monotonic())]
        if batch is None:
            self._batches += 1
            batch = str(self._batches)
        first = 0
        start = 0
        end = count
        head: list[bytes | str] = [epoch, str(history), sender]
        while start < count:
            # The token's part before its last dot names the writer (the script keeps one
            # mark per writer: two writers of one name must not overwrite each other's).
            token = f"{self._instance}:{writer}.{batch}_{offset + start}"
            extra = ["", "", "", ""]
            if named is not None:
                ttl = str(round(WRITER_RECORD_TTL_S * 1000))
                extra = ["1", named.token, ttl, str(before + start)]
            try:
                part = await self._append_part(
                    channel,
                    keys,
                    [*head, token],
                    extra,
                    payloads[start:end],
                    times[start:end],
                    _arrival(arrivals, offset + start),
                )
            except REDIS_DOWN as error:
                if start:
                    raise AppendInterrupted(start, error) from error
                raise
            except EpochChanged as error:
                error.written = start  # Redis came back without it, say: the rest is new
                raise
            if isinstance(part, tuple):  # this token went in before: (first seq, frames)
                first = first or part[0]
                start, end = min(start + part[1], count), count
                continue
            if part < 0:  # room for -part frames only (a block reader's)
                end = start - part
                continue
            first = first or part
            start, end = end, count
        return first

    async def _append_part(
        self,
        channel: str,
        keys: list[str],
        head: list[bytes | str],
        extra: list[str],
        payloads: Sequence[bytes],
        times: Sequence[float],
        arrived: float,
    ) -> int | tuple[int, int]:
        """One append script call for these frames (retried, waiting for room): the first
        seq; -k when only k of them fit now; (first seq, frames) when this part's token went
        in before (its reply was lost, or the caller tries the batch again). ``arrived``:
        when the oldest frame waiting reached this node (see append)."""
        # coredis retries a command whose connection broke (twice, same arguments): the
        # token lets the script recognise the repeat.
        head = [*head, str(len(payloads))]
        args = [*head, *extra, *pack_entries(payloads, times)]
        delay = RECONNECT_DELAY_MIN_S
        failing_since: float | None = None  # Redis unreachable since (retry_s from there)
        while True:
            try:
                first: object = await self._append(keys=keys[:5], args=args)
                failing_since = None
                if first == 0:  # a node lags: wait for room, cheaply, then append
                    poll_s = ROOM_POLL_MIN_S
                    while not await self._room(keys=keys, args=[*head, _waited_ms(arrived)]):
                        await trio.sleep(poll_s)
                        poll_s = min(poll_s * 2, ROOM_POLL_MAX_S)
                    continue
                if isinstance(first, list):
                    return int(first[0]), int(first[1])
                assert isinstance(first, int)
                return first
            except coredis.exceptions.ResponseError as error:
                text = str(error)
                if text.startswith("WRITER_MOVED"):
                    raise WriterMoved(channel) from None
                if not text.startswith("EPOCH"):
                    raise
                raise EpochChanged(channel, text[len("EPOCH") :].strip() or None) from None
            except REDIS_DOWN:
                now = trio.current_time()
                if failing_since is None:
                    failing_since = now
                if now + delay > failing_since + self._retry_s:
                    raise
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_MAX_S)

    async def forget(self, channel: str, writer: str) -> None:
        """Remove ``writer``'s duplicate-batch mark (it appends no more)."""
        await self._client.hdel(self._keys.channel(channel), [f"b:{self._instance}:{writer}"])

    def named(
        self, epoch: str, sender: str, writer_key: str, token: str | None = None
    ) -> NamedWriter:
        """A named writer as a connection has it: its record under ``epoch``, and ``token``
        (a fresh one for a new connection)."""
        return NamedWriter(
            self._keys.writer(epoch, sender, writer_key),
            token if token is not None else secrets.token_hex(CLAIM_TOKEN_BYTES),
            writer_key,
        )

    async def claim(
        self, channel: str, epoch: str, named: NamedWriter, number: int | None = None
    ) -> int:
        """Make ``named``'s token the owner of its writer (a batch with any other token, of
        an earlier connection on any node, is refused from now on); how many of its frames
        the stream got, from every node, in the same atomic step. ``number``: the claim's
        (the client's count of its reopens), refused unless above the last one.

        Raises:
            EpochChanged: the channel is not at ``epoch`` in Redis any more.
            StaleClaim: a claim numbered ``number`` or more was made already.
        """
        ttl = round(WRITER_RECORD_TTL_S * 1000)
        try:
            count: object = await self._claim(
                keys=[self._keys.channel(channel), named.record],
                args=[epoch, named.token, ttl, "" if number is None else number],
            )
        except coredis.exceptions.ResponseError as error:
            text = str(error)
            if text.startswith("STALE_CLAIM") and number is not None:
                raise StaleClaim(channel, number, int(text.split()[-1])) from None
            if not text.startswith("EPOCH"):
                raise
            raise EpochChanged(channel, text[len("EPOCH") :].strip() or None) from None
        assert isinstance(count, int)
        return count


async def read_range(
    client: coredis.Redis[bytes], keys: KeySpace, channel: str, epoch: str, after: int, count: int
) -> list[Frame]:
    """Up to ``count`` frames with seq > ``after`` that the stream still holds (XRANGE).

    For a resume within the same epoch: the first frame's seq minus ``after + 1`` is exactly
    how many were trimmed before it.
    """
    key = keys.stream(channel, epoch)
    frames: list[Frame] = []
    while len(frames) < count:
        # The entry holding frame after + 1 is the first whose id (its last seq) is past it;
        # every entry holds a frame at least, so this many entries hold what is missing.
        want = min(RANGE_COUNT, count - len(frames))
        entries = await client.xrange(key, f"{after + 1}-0", "+", count=want)
        frames += [Frame(*frame) for frame in _frames(entries, after)]
        if len(entries) < want:
            break
        after = _entry_seq(entries[-1])
    return frames[:count]


async def last_seq_in_stream(
    client: coredis.Redis[bytes], keys: KeySpace, channel: str, epoch: str
) -> int | None:
    """The seq of the last frame ``channel``'s stream of ``epoch`` holds (None: none, or no
    such stream)."""
    entries = await client.xrevrange(keys.stream(channel, epoch), "+", "-", count=1)
    return _entry_seq(entries[0]) if entries else None


@dataclass(slots=True)
class _Follow:
    epoch: str
    last_seq: int


# Entry fields: sender (s), then per frame its time (t, float64) and payload size (l,
# uint32), both arrays little-endian, and the payloads one after the other (p). Two array
# conversions per entry instead of two Redis arguments (and a repr/float) per frame: the
# writer's node, Redis and the reader's node (coredis builds objects per entry) all do per
# batch what they did per frame.
_TIMES_TYPE = "d"
_SIZES_TYPE = "I"
assert array(_TIMES_TYPE).itemsize == 8 and array(_SIZES_TYPE).itemsize == 4
_SWAP = sys.byteorder != "little"


def _array_bytes(kind: str, values: Sequence[float] | Sequence[int]) -> bytes:
    packed = array(kind, values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _array_values(kind: str, data: bytes) -> array[Any]:
    values: array[Any] = array(kind)
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values


def pack_entries(payloads: Sequence[bytes], times: Sequence[float]) -> list[bytes | str]:
    """The append script's per-entry arguments (count, times, sizes, payloads) for a batch.

    Frames smaller than :data:`PACK_BYTES` share entries of up to :data:`ENTRY_BYTES` of
    payloads; a bigger frame gets an entry of its own (its payload is not copied into a
    joined one). The common batch of small frames is one entry, built without a Python-level
    step per frame.
    """
    sizes = list(map(len, payloads))
    if max(sizes) < PACK_BYTES and sum(sizes) <= ENTRY_BYTES:
        return _entry(payloads, times, sizes)
    args: list[bytes | str] = []
    start = 0
    size = 0
    for index, nbytes in enumerate(sizes):
        if nbytes >= PACK_BYTES:
            if index > start:
                args += _entry(payloads[start:index], times[start:index], sizes[start:index])
            args += _entry(payloads[index : index + 1], times[index : index + 1], [nbytes])
            start, size = index + 1, 0
            continue
        size += nbytes
        if size >= ENTRY_BYTES:
            end = index + 1
            args += _entry(payloads[start:end], times[start:end], sizes[start:end])
            start, size = end, 0
    if start < len(payloads):
        args += _entry(payloads[start:], times[start:], sizes[start:])
    return args


def _entry(
    payloads: Sequence[bytes], times: Sequence[float], sizes: list[int]
) -> list[bytes | str]:
    body = payloads[0] if len(payloads) == 1 else b"".join(payloads)
    count = str(len(payloads))
    return [count, _array_bytes(_TIMES_TYPE, times), _array_bytes(_SIZES_TYPE, sizes), body]


def _entry_seq(entry: StreamEntry) -> int:
    """The seq of an entry's last frame (its id); bytes: decode_responses=False."""
    return int(cast(bytes, entry.identifier).partition(b"-")[0])


def _entry_bytes(entry: StreamEntry) -> int:
    """The payload bytes an entry holds."""
    return len(cast("Mapping[bytes, bytes]", entry.field_values)[b"p"])


def _frames(entries: Sequence[StreamEntry], after: int) -> list[RawFrame]:
    """The frames with seq > ``after`` in ``entries`` (from a read issued before a re-follow
    moved the position, or the head of the entry that holds ``after + 1``)."""
    frames: list[RawFrame] = []
    append = frames.append
    for entry in entries:
        last = _entry_seq(entry)
        if last <= after:
            continue
        values = cast("Mapping[bytes, bytes]", entry.field_values)
        sender = values[b"s"]
        times = _array_values(_TIMES_TYPE, values[b"t"])
        sizes = _array_values(_SIZES_TYPE, values[b"l"])
        body = values[b"p"]
        seq = last - len(sizes)
        if len(sizes) == 1:
            append((last, times[0], sender, body))
            continue
        offset = 0
        for time_s, size in zip(times, sizes, strict=True):
            seq += 1
            end = offset + size
            if seq > after:
                append((seq, time_s, sender, body[offset:end]))
            offset = end
    return frames


class StreamReader:
    """One node's reader of many channel streams: XREAD BLOCK from the last id of each.

    Each node reads at its own pace: a slow consumer of :attr:`events` stops the reading (the
    memory channel holds a few batches) and Redis keeps the frames meanwhile, up to the
    history bound; anything trimmed before it was read comes out as ``FrameBatch.lost``, and
    a deleted, recreated or lost channel as :class:`EpochReset`. A broken connection is
    retried with backoff from the same ids, so nothing the stream still holds is lost; after
    each reconnect (and every ``epoch_check_interval_s``) the epochs are checked.
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        keys: KeySpace,
        registry: ChannelRegistry,
        node: str,
        *,
        block_ms: int = READ_BLOCK_MS,
        count: int = READ_COUNT,
        epoch_check_interval_s: float = EPOCH_CHECK_INTERVAL_S,
        buffer_batches: int = 16,
    ) -> None:
        self._client = client
        self._keys = keys
        self._registry = registry
        self._wake_key = keys.wake(node)
        self._block_ms = block_ms
        self._count = count
        self._entry_bytes = 1  # the biggest entry of the last read (sets the next count)
        self._epoch_check_interval_s = epoch_check_interval_s
        self._follows: dict[str, _Follow] = {}
        self._paused: set[str] = set()  # followed, but not read until resumed
        self._stream_channel: dict[bytes, str] = {}
        self._changed = trio.Event()
        self._wake_last = b"0-0"
        self._send, self.events = trio.open_memory_channel[ReaderEvent](buffer_batches)

    def position(self, channel: str) -> tuple[str, int] | None:
        """``(epoch, last seq read)`` of a followed channel."""
        state = self._follows.get(channel)
        return (state.epoch, state.last_seq) if state else None

    async def follow(
        self, channel: str, *, epoch: str | None = None, after: int | None = None
    ) -> tuple[str, int]:
        """Start reading ``channel`` after seq ``after`` (None: from now on).

        With ``epoch`` given but no longer current, reading starts at the new epoch's first
        frame (the caller sees the returned epoch differ: a reset). Returns ``(epoch, after)``.

        Raises:
            LookupError: the channel is not registered in Redis.
        """
        record = await self._registry.get(channel)
        if record is None:
            raise LookupError(f"channel {channel[:80]!r} is not in Redis: create it first")
        if after is None:
            after = record.seq
        elif epoch is not None and epoch != record.epoch:
            after = 0
        self._follows[channel] = _Follow(record.epoch, after)
        self._stream_channel[self._keys.stream(channel, record.epoch).encode()] = channel
        await self._wake()
        return record.epoch, after

    def pause(self, channel: str) -> None:
        """Read no more of ``channel`` (its consumer is full); Redis keeps the frames."""
        self._paused.add(channel)

    async def resume(self, channel: str) -> None:
        """Read ``channel`` again from where it stopped."""
        if channel in self._paused:
            self._paused.discard(channel)
            await self._wake()

    async def unfollow(self, channel: str) -> None:
        if self._drop(channel):
            await self._wake()

    def _drop(self, channel: str) -> bool:
        state = self._follows.pop(channel, None)
        self._paused.discard(channel)
        if state is None:
            return False
        self._stream_channel.pop(self._keys.stream(channel, state.epoch).encode(), None)
        return True

    async def _wake(self) -> None:
        # The loop may sit in XREAD BLOCK with the old set of streams: an entry on the
        # node's wake stream (which every XREAD includes) ends that read at once.
        self._changed.set()
        # If Redis is down the reader is reconnecting and rebuilds its read from _follows.
        with contextlib.suppress(*REDIS_DOWN):
            await self._client.xadd(
                self._wake_key,
                {WAKE_FIELD: b""},
                trim_strategy=coredis.PureToken.MAXLEN,
                threshold=1,
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read until cancelled; events go to :attr:`events`."""
        task_status.started()
        delay = RECONNECT_DELAY_MIN_S
        next_check = trio.current_time() + self._epoch_check_interval_s
        retry_log = RetryLog(logger, "reading the channels' streams from Redis")
        async with self._send:
            while True:
                if not self._follows:
                    await self._changed.wait()
                self._changed = trio.Event()
                try:
                    if trio.current_time() >= next_check:
                        await self._check_epochs()
                        next_check = trio.current_time() + self._epoch_check_interval_s
                    # wake up in time for the next epoch check, which runs between reads
                    left_ms = math.ceil((next_check - trio.current_time()) * 1000)
                    await self._read_once(max(1, min(self._block_ms, left_ms)))
                    delay = RECONNECT_DELAY_MIN_S
                    retry_log.succeeded()
                except REDIS_DOWN as error:
                    retry_log.failed(error)
                    await trio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_DELAY_MAX_S)
                    next_check = -math.inf  # Redis may have restarted: epochs first

    async def _read_rest(self, channel: str, state: _Follow) -> None:
        """Hand on what ``channel``'s stream still holds past ``state`` (a deleted one's)."""
        key = self._keys.stream(channel, state.epoch)
        while True:
            entries = await self._client.xrange(
                key, f"{state.last_seq + 1}-0", "+", count=RANGE_COUNT
            )
            frames = _frames(entries, state.last_seq)
            if frames:
                lost = frames[0][0] - state.last_seq - 1
                state.last_seq = frames[-1][0]
                await self._send.send(FrameBatch(channel, state.epoch, frames, lost))
            if len(entries) < RANGE_COUNT:
                return

    async def _read_once(self, block_ms: int) -> None:
        streams: dict[bytes | str, bytes | str] = {self._wake_key: self._wake_last}
        for channel, state in self._follows.items():
            if channel in self._paused:
                continue
            streams[self._keys.stream(channel, state.epoch)] = f"{state.last_seq}-0"
        count = max(1, min(self._count, READ_BYTES // self._entry_bytes))
        reply = await self._client.xread(streams, count=count, block=block_ms)
        if not reply:
            return
        biggest = 0
        for key, entries in reply.items():
            if key == self._wake_key.encode():
                self._wake_last = cast(bytes, entries[-1].identifier)
                continue
            name = self._stream_channel.get(key)
            follow = self._follows.get(name) if name is not None else None
            if follow is None or name is None:
                continue  # unfollowed while the read was in flight
            frames = _frames(entries, follow.last_seq)
            if not frames:
                continue
            # first and last: a stream's entries are alike in size, and this is per read
            biggest = max(biggest, _entry_bytes(entries[0]), _entry_bytes(entries[-1]))
            lost = frames[0][0] - follow.last_seq - 1
            follow.last_seq = frames[-1][0]
            await self._send.send(FrameBatch(name, follow.epoch, frames, lost))
        if biggest:  # not a read of the wake stream alone
            self._entry_bytes = biggest

    async def _check_epochs(self) -> None:
        current = await self._registry.epochs(list(self._follows))
        for channel, epoch in current.items():
            state = self._follows.get(channel)
            if state is None or state.epoch == epoch:
                continue
            old = state.epoch
            if channel not in self._paused:
                # Deleted (or lost, or deleted and created anew): a deleted channel's stream
                # stays a while (STREAM_KEPT_AFTER_DELETE_MS), and what it holds past this
                # node's position was on its way to the readers here: they get it before the
                # end. (A paused channel's block readers are full: they end with the rest
                # unread, as ever. A Redis restarted empty has no stream: nothing to read.)
                await self._read_rest(channel, state)
                if self._follows.get(channel) is not state:
                    # Followed anew while the rest was read (a subscribe to the new epoch):
                    # that follow is its own; the old epoch's end is told all the same.
                    await self._send.send(EpochReset(channel, old, epoch))
                    continue
            self._drop(channel)
            if epoch is not None:
                self._follows[channel] = _Follow(epoch, 0)
                self._stream_channel[self._keys.stream(channel, epoch).encode()] = channel
            await self._send.send(EpochReset(channel, old, epoch))
