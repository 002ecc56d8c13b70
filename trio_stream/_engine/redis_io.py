"""One node's connection to the cluster: the Redis primitives behind one object.

:class:`RedisEngineIO` owns one coredis client and the node's background tasks (frame
reader, control bus, heartbeat, positions). It knows nothing of the broker: the engine
interface calls its parts (``registry``, ``writer``, ``reader``, ``presence``, ``bus``,
``positions``, ``held``) and consumes
``reader.events`` and ``presence.count_changes``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Final, TypedDict, Unpack

import coredis
import trio

from .._config import node_name_problem
from .._exceptions import InvalidSetting
from .._server.engine import safe_url
from .._util import exception_leaves
from .redis_control import ControlBus
from .redis_holds import HeldWriters
from .redis_keys import KeySpace
from .redis_positions import Positions
from .redis_presence import HEARTBEAT_TTL_S, Presence
from .redis_registry import ChannelRegistry
from .redis_streams import (
    DEFAULT_HISTORY_FRAMES,
    EPOCH_CHECK_INTERVAL_S,
    READ_BLOCK_MS,
    READ_COUNT,
    FrameWriter,
    StreamReader,
)

CONNECT_TIMEOUT_S = 5.0
RELEASE_TIMEOUT_S = 1.0  # how long a stopping node tries to give its name back


class _NotCancellations(logging.Filter):
    """coredis logs a connection attempt that a cancellation cut short as an error, with the
    whole exception group (some 130 lines for a Redis that answers nothing, before the
    start's own one line saying so). A cancellation is ours (a start's bound, a shutdown,
    a hung link replaced), and whoever cancelled says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not all(
            isinstance(leaf, trio.Cancelled) for leaf in exception_leaves(error)
        )


_NOT_CANCELLATIONS: Final = _NotCancellations()


class _SlotKeepingPool(coredis.ConnectionPool[coredis.connection.BaseConnection]):
    """coredis's pool, which loses a slot for every connection that dies while taken.

    coredis 6.9's ``release()`` gives a slot back only with a connection that is still
    usable, and the connection's own task gives it back only for a connection idle in the
    pool: one killed while a command or a blocking read held it (``CLIENT KILL``, a Redis
    restart) took its slot with it. After ~30 of those (64 slots, one or two per kill) the
    node waited for a slot for good and spoke to Redis no more (a soak's finding). Here a
    dead connection's slot is given back as an empty one (a new connection when taken).
    """

    def release(self, connection: coredis.connection.BaseConnection) -> None:
        usable = connection.usable
        super().release(connection)
        if not usable:
            self._available_connections.put_nowait(None)


class RedisEngineOptions(TypedDict, total=False):
    namespace: str
    history_frames: int
    heartbeat_ttl_s: float
    read_block_ms: int
    read_count: int
    epoch_check_interval_s: float


class RedisEngineIO:
    def __init__(
        self,
        client: coredis.Redis[bytes],
        node: str,
        *,
        namespace: str = "ts",
        database: int = 0,
        history_frames: int = DEFAULT_HISTORY_FRAMES,
        heartbeat_ttl_s: float = HEARTBEAT_TTL_S,
        read_block_ms: int = READ_BLOCK_MS,
        read_count: int = READ_COUNT,
        epoch_check_interval_s: float = EPOCH_CHECK_INTERVAL_S,
    ) -> None:
        if problem := node_name_problem(node):
            raise ValueError(problem)
        self.node = node
        self.client = client
        self.history_frames = history_frames  # what each channel's stream keeps at most
        self.keys = KeySpace(namespace, database)
        self.registry = ChannelRegistry(client, self.keys)
        self.writer = FrameWriter(client, self.keys, history_frames=history_frames)
        self.reader = StreamReader(
            client,
            self.keys,
            self.registry,
            node,
            block_ms=read_block_ms,
            count=read_count,
            epoch_check_interval_s=epoch_check_interval_s,
        )
        self.bus = ControlBus(client, self.keys, node)
        self.presence = Presence(client, self.keys, self.bus, node, ttl_s=heartbeat_ttl_s)
        self.presence.on_hung = client.connection_pool.disconnect
        self.positions = Positions(client, self.keys, node)
        self.held = HeldWriters(client, self.keys)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        node: str,
        **options: Unpack[RedisEngineOptions],
    ) -> AsyncIterator[RedisEngineIO]:
        """Connect to the Redis at ``url`` (``redis://host:port/db``); closes on exit."""
        coredis_log = logging.getLogger("coredis")
        if _NOT_CANCELLATIONS not in coredis_log.filters:
            coredis_log.addFilter(_NOT_CANCELLATIONS)
        try:
            pool = _SlotKeepingPool.from_url(
                url, decode_responses=False, connect_timeout=CONNECT_TIMEOUT_S
            )
        except OSError as exc:
            # coredis loads a rediss:// URL's ssl_ files here: one that went away since the
            # config checked it, or that is not PEM (ssl.SSLError is an OSError), was taken
            # by the CLI for a port it could not listen on.
            raise InvalidSetting(
                "engine",
                f"engine {safe_url(url)!r:.100}: its TLS files (ssl_certfile, ssl_keyfile, "
                f"ssl_ca_certs) cannot be loaded: {exc}",
            ) from None
        client: coredis.Redis[bytes] = coredis.Redis(decode_responses=False, connection_pool=pool)
        async with client:
            database = int(pool.connection_kwargs.get("db") or 0)
            io = cls(client, node, database=database, **options)
            # The first lines of an outage name the Redis (its errors may not: "Connection
            # lost while receiving response"); the node's other jobs follow them.
            io.bus.redis_named = io.presence.redis_named = f"Redis at {safe_url(url)}"
            yield io

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node's tasks until cancelled; started once subscribed and beating."""
        # A node restarted under its name after a crash: what its previous run reported
        # must not count again once its heartbeat is back.
        await self.presence.claim_node_name()
        try:
            await self.presence.forget_previous_run()
            await self.positions.forget_previous_run()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.bus.run)
                await nursery.start(self.presence.run)
                await nursery.start(self.reader.run)
                nursery.start_soon(self.positions.run)
                task_status.started()
        finally:
            # A node that stops gives its name back, so that it starts again at once (a
            # crashed one's claim expires with its heartbeat's TTL).
            # Best effort: whatever stops it (Redis away, a connection closing under the
            # shutdown: anyio.ClosedResourceError), the claim expires all the same.
            with trio.move_on_after(RELEASE_TIMEOUT_S, shield=True), suppress(Exception):
                await self.presence.release_node_name()
