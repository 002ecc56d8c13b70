"""The engine interface: where channels live beyond this process (or not).

The broker stays I/O-free; an engine is what the server consults when channels, names and
frames are shared with other nodes. Two engines:

- :class:`MemoryEngine` (``ServerConfig(engine="memory")``, the default): one node, nothing
  shared. Every hook is a no-op and the publish path is the broker's own method, called
  directly by the session: single-node behaviour and speed are exactly those without engines.
- ``RedisEngine`` (``engine="redis://host:port/db"``, trio_stream/_engine/redis_engine.py):
  channels, epochs, sequence numbers, names, clients and reader counts in Redis, frames
  through Redis Streams.

The session calls :meth:`Engine.publish`/``publish_batch`` only when the engine is
``clustered``; requests listed in :meth:`Engine.request_handlers` are awaited by the session's
reader task in order (they need Redis round trips), every other request stays synchronous.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._config import MAX_NODE_NAME_CHARS, REDIS_EXTRA_MISSING, REDIS_SCHEMES
from .._protocol.bytes_like import BytesLike
from .._protocol.messages import ControlMessage

if TYPE_CHECKING:
    from .broker import Channel, Writer
    from .session import Session
    from .state import ServerState

AsyncHandler = Callable[["Session", Any], Awaitable[Any]]


def default_node_name() -> str:
    """``hostname-pid``: unique per process on a machine, readable in listings."""
    pid = f"-{os.getpid()}"
    # Within the node-name bound (node_name_problem): a long hostname keeps its start.
    host = socket.gethostname().replace(":", "-")[: MAX_NODE_NAME_CHARS - len(pid)]
    return host + pid


def safe_url(url: str) -> str:
    """An engine URL without its user and password (logs, the serve banner)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


class Engine(Protocol):
    clustered: bool
    node: str  # this node's name ("" for one node): the ``node`` of its own ``$clients`` news

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine's background tasks (connections, readers); started once ready."""
        ...

    def request_handlers(self) -> dict[type[ControlMessage], AsyncHandler]:
        """Requests the engine answers itself, awaited in order by the session."""
        ...

    def channel_event(self, kind: str, channel: Channel) -> bool:
        """The broker's "created"/"deleted"/"readers"/"writers" events (no I/O here);
        False: not this node's news for ``$channels``."""
        ...

    def client_event(self, kind: str, session: Session) -> None:
        """A client "connected" or "disconnected" on this node."""
        ...

    def end_orphan(self, channel: Channel, reason: str, final: bool = True) -> None:
        """End a channel whose owner is gone for good (it left without a lease, or its resume
        grace is over); no I/O here: with several nodes it may end later, or live on where a
        take-over by name moved it. ``final``: the owner left on purpose (not: its grace ran
        out, and its client, if it comes back, creates the channel again)."""
        ...

    def default_client_name(self, client_id: int) -> str:
        """The name of a client that chose none (unique in the cluster)."""
        ...

    def kept_channels(self) -> int:
        """Channels created with ``keep=True`` that this node holds (max_kept_channels)."""
        ...

    async def claim_name(self, name: str, *, resume_token: str | None) -> None:
        """Take client ``name`` cluster-wide (NameInUse if another node holds it; a resuming
        client, which presents ``resume_token``, takes it over)."""
        ...

    def release_name(self, name: str) -> None: ...

    async def drop_made_again(self, owner: str, deleted: dict[str, str]) -> list[str]:
        """Leave out of ``deleted`` (a welcome's channels deleted while client ``owner`` was
        away) those it has made again since: on another node, as this node may not know.
        Returns those left out."""
        ...

    def publish(self, writer: Writer, time_s: float, payload: BytesLike) -> None: ...

    def publish_batch(
        self, writer: Writer, times: Sequence[float], payloads: Sequence[BytesLike]
    ) -> None: ...

    def route_call(self, caller: Any, message: ControlMessage) -> bool:
        """An RPC for a provider not on this node: True if the engine forwards it."""
        ...

    def routed_calls(self) -> int:
        """Calls (and describes) this node's clients wait for on another node (/metrics)."""
        ...

    def stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """``local`` (this node's ``ServerState.stats()``) as ``$stats`` publishes it: with
        several nodes, the cluster's counts (no I/O here)."""
        ...

    def health(self) -> dict[str, float]:
        """The engine's gauges for /metrics, by name (see metrics.ENGINE_GAUGES; no I/O)."""
        ...


class MemoryEngine:
    """One node, nothing shared: every hook does nothing (see the module docstring)."""

    clustered = False
    node = ""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def request_handlers(self) -> dict[type[ControlMessage], AsyncHandler]:
        return {}

    def channel_event(self, kind: str, channel: Channel) -> bool:
        return True

    def client_event(self, kind: str, session: Session) -> None:
        pass

    def end_orphan(self, channel: Channel, reason: str, final: bool = True) -> None:
        self.state.broker.delete_channel(channel, reason, final=final)

    def default_client_name(self, client_id: int) -> str:
        return f"client-{client_id}"

    def kept_channels(self) -> int:
        return self.state.broker.kept_channels

    async def claim_name(self, name: str, *, resume_token: str | None) -> None:
        pass

    def release_name(self, name: str) -> None:
        pass

    async def drop_made_again(self, owner: str, deleted: dict[str, str]) -> list[str]:
        return []  # one server: a channel made again dropped its notice then (absent_owners.py)

    def publish(self, writer: Writer, time_s: float, payload: BytesLike) -> None:
        self.state.broker.publish(writer, time_s, payload)

    def publish_batch(
        self, writer: Writer, times: Sequence[float], payloads: Sequence[BytesLike]
    ) -> None:
        self.state.broker.publish_batch(writer, times, payloads)

    def route_call(self, caller: Any, message: ControlMessage) -> bool:
        return False

    def routed_calls(self) -> int:
        return 0

    def stats(self, local: dict[str, Any]) -> dict[str, Any]:
        return local

    def health(self) -> dict[str, float]:
        return {}


def make_engine(state: ServerState) -> Engine:
    """The engine ``state.config.engine`` names: "memory" or a Redis URL."""
    spec = state.config.engine
    if spec == "memory":
        return MemoryEngine(state)
    if spec.startswith(REDIS_SCHEMES):
        try:
            from .._engine.redis_engine import RedisEngine
        except ImportError as exc:  # coredis is an optional dependency
            raise ValueError(REDIS_EXTRA_MISSING) from exc
        return RedisEngine(state, spec)
    raise AssertionError(f"ServerConfig let engine {spec[:80]!r} through")
