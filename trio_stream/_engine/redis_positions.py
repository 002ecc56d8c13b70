"""Where each node is in each channel's stream: reported to Redis so writers can wait.

A node that follows a channel reports the last sequence number it has *taken*: read from
Redis and handed to its readers, with no frame of it still parked for a full local ``block``
reader (a held batch keeps the position where it was until its frames are taken). The
writer's append script (redis_streams) reads these positions and refuses to append past
what Redis retains: nothing is trimmed before every following node read it, so a lagging
node (a slow consumer, a full ``block`` reader) holds the writer back through its credit
instead of losing frames, as one node's credit does.

A node with ``block`` readers of the channel reports more: their own position (the last
seq they took out of their buffers, not just what the node handed them) and their room (the
smallest buffer size), as ``"seq room"``. The append script then keeps the writer within
that room of them, not of the history bound: a ``block`` reader on another node holds its
writer back at its buffer size, as on one node (there the writer's unacknowledged frames
wait in the reader's node; across nodes they wait in the writer's node, unacknowledged).

One hash per channel incarnation (``{ns}:pos:{name}:{epoch}``, field: the node), deleted
with the channel. The append script counts only nodes whose heartbeat is alive (it reads
the nodes' expiries itself), so a dead node holds no writer for longer than its heartbeat
TTL. Writes are batched: at most one pipeline per ``flush_interval_s`` (changed positions
only), right away for a position with a room (a writer may be waiting on it: still one
pipeline at a time, so at most one write per batch read), plus a rewrite of all of them
every ``refresh_s``, which also puts them back after a Redis restart.
"""

from __future__ import annotations

import logging

import coredis
import trio

from .redis_keys import KeySpace
from .retry_log import RetryLog

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
REFRESH_INTERVAL_S = 1.0
# A position hash nobody rewrites (every follower left, or the channel was deleted while a
# write was on its way) goes away by itself; followers rewrite theirs every second.
POSITIONS_TTL_MS = 10_000

REDIS_DOWN = (coredis.exceptions.ConnectionError, TimeoutError, OSError)


class Positions:
    """This node's taken positions, written to Redis in batches; run :meth:`run`."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        keys: KeySpace,
        node: str,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        refresh_s: float = REFRESH_INTERVAL_S,
    ) -> None:
        self._client = client
        self._keys = keys
        self._node = node
        self._flush_interval_s = flush_interval_s
        self._refresh_s = refresh_s
        self._current: dict[str, tuple[str, str]] = {}  # channel -> (epoch, "seq[ room]")
        self._changed: set[str] = set()  # channels
        self._hurry = trio.Event()  # a changed position has a room: write without waiting
        self._removed: set[str] = set()  # position keys to leave
        self._wake = trio.Event()

    async def forget_previous_run(self) -> None:
        """At start: drop the positions this node's name reported in an earlier run (a node
        restarted under its name, after a crash). Its heartbeat is alive again, so the append
        scripts would count them, and a ``block`` reader that moved to another node meanwhile
        would hold its writers at that stale position for good."""
        keys = [key async for key in self._client.scan_iter(match=self._keys.positions("*", "*"))]
        if keys:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hdel(key, [self._node])

    def update(self, channel: str, epoch: str, seq: int, room: int | None = None) -> None:
        """This node has taken ``channel`` up to ``seq`` (no I/O; written within a flush).

        ``room``: the writer may be at most this many frames past ``seq`` (this node's
        ``block`` readers' buffer size); None: the history bound.
        """
        value = str(seq) if room is None else f"{seq} {room}"
        old = self._current.get(channel)
        if old == (epoch, value):
            return
        if room is not None:
            self._hurry.set()
        if old is not None and old[0] != epoch:
            self._removed.add(self._keys.positions(channel, old[0]))
        self._current[channel] = (epoch, value)
        self._changed.add(channel)
        self._removed.discard(self._keys.positions(channel, epoch))
        self._wake.set()

    def drop(self, channel: str) -> None:
        """This node no longer follows ``channel``: it holds no writer back."""
        old = self._current.pop(channel, None)
        if old is None:
            return
        self._changed.discard(channel)
        self._removed.add(self._keys.positions(channel, old[0]))
        self._wake.set()

    async def run(self) -> None:
        """Write changes (batched) and rewrite everything every ``refresh_s``, until cancelled."""
        next_refresh = trio.current_time() + self._refresh_s
        retry_log = RetryLog(logger, "writing read positions to Redis")
        while True:
            with trio.move_on_at(next_refresh):
                await self._wake.wait()
            self._wake = trio.Event()
            refresh = trio.current_time() >= next_refresh
            changed = set(self._current) if refresh else self._changed
            removed = self._removed
            self._changed, self._removed = set(), set()
            try:
                await self._write(changed, removed)
                retry_log.succeeded()
                if refresh:
                    next_refresh = trio.current_time() + self._refresh_s
            except REDIS_DOWN as error:
                retry_log.failed(error)
                self._changed |= changed & set(self._current)
                self._removed |= removed
            with trio.move_on_after(self._flush_interval_s):
                await self._hurry.wait()
            self._hurry = trio.Event()

    async def _write(self, changed: set[str], removed: set[str]) -> None:
        if not changed and not removed:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for channel in changed:
                current = self._current.get(channel)
                if current is not None:
                    epoch, value = current
                    key = self._keys.positions(channel, epoch)
                    pipe.hset(key, {self._node: value})
                    pipe.pexpire(key, POSITIONS_TTL_MS)
            for key in removed:
                pipe.hdel(key, [self._node])
