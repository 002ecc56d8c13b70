"""ServerConfig: every knob of the server, with safe defaults (loopback only)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from ._protocol.limits import (
    HANDSHAKE_TIMEOUT_S,
    HTTP_KEEPALIVE_TIMEOUT_S,
    HTTP_MAX_REQUESTS,
    HTTP_WRITE_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_BUFFERED_BYTES,
    MAX_CHANNELS_PER_CLIENT,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_FRAME_BYTES,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    PUBLISH_WINDOW_BYTES,
    PUBLISH_WINDOW_FRAMES,
    Limits,
)

DEFAULT_TCP_PORT = 9870
DEFAULT_HTTP_PORT = 9871


@dataclass(frozen=True)
class ServerConfig:
    """How to run a server.

    Ports of 0 pick a free port (see ``server.tcp_url``); ``None`` switches that endpoint off.
    """

    host: str = "127.0.0.1"
    tcp_port: int | None = DEFAULT_TCP_PORT
    http_port: int | None = DEFAULT_HTTP_PORT
    name: str = "trio_stream"
    token: str | None = field(default=None, repr=False)  # never in logs or reprs
    # admin actions (publish, delete any channel, disconnect a client): see _server/admin.py
    admin_token: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    allowed_origins: tuple[str, ...] | None = None
    # Host names the HTTP port answers to (None: loopback names on a loopback server, any
    # name otherwise; "*": any name). See _transport/origin.py, host_allowed.
    allowed_hosts: tuple[str, ...] | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_channels_per_client: int = MAX_CHANNELS_PER_CLIENT
    max_subscriptions_per_client: int = MAX_SUBSCRIPTIONS_PER_CLIENT
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    publish_window_frames: int = PUBLISH_WINDOW_FRAMES
    publish_window_bytes: int = PUBLISH_WINDOW_BYTES
    # A block reader that holds its channel's writers back longer than this (s) is ended
    # with LimitExceeded; None: never. A subscription may choose its own (block_timeout=).
    block_timeout_s: float | None = None
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    http_keepalive_timeout_s: float = HTTP_KEEPALIVE_TIMEOUT_S
    http_max_requests: int = HTTP_MAX_REQUESTS
    http_write_timeout_s: float = HTTP_WRITE_TIMEOUT_S
    shutdown_grace_s: float = 2.0
    # The channels and subscriptions of a client that reconnects (resume) outlive a blip of
    # its connection for this long (s): channels still readable, same epoch and history, its
    # subscriptions still taking frames (kept.py), its own again when it is back.
    resume_grace_s: float = 10.0
    stats_interval_s: float = 1.0
    # Where channels live: "memory" (this process only) or a Redis URL shared by several
    # nodes (redis://host:port/db, see README "Several nodes").
    engine: str = "memory"
    # This node's name in the cluster (None: hostname-pid); unique among the nodes.
    node_name: str | None = None

    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_channels_per_client=self.max_channels_per_client,
            max_subscriptions_per_client=self.max_subscriptions_per_client,
            max_buffered_bytes=self.max_buffered_bytes,
            handshake_timeout_s=self.handshake_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            publish_window_frames=self.publish_window_frames,
            publish_window_bytes=self.publish_window_bytes,
        )
