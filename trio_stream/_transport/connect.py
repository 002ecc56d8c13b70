"""Client side: open a frame transport for a URL (tcp://, tcps://, ws://, wss://)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio

from .._exceptions import ConnectionClosed, InvalidArgument
from .base import FrameTransport
from .tcp import StreamTransport

SCHEMES = ("tcp", "tcps", "ws", "wss")


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a server URL, with a clear error for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None:
        raise InvalidArgument(
            f"cannot connect to {url!r}: use tcp://host:port or ws://host:port/ws "
            "(tcps:// and wss:// for TLS)"
        )
    return parts.scheme, parts.hostname, parts.port, parts.path or "/ws"


@asynccontextmanager
async def connect(
    url: str, *, max_frame_bytes: int, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[FrameTransport]:
    scheme, host, port, _path = split_url(url)
    if scheme in ("ws", "wss"):
        from .websocket import connect_websocket

        async with connect_websocket(
            url, max_frame_bytes=max_frame_bytes, ssl_context=ssl_context
        ) as transport:
            yield transport
        return
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ConnectionClosed(f"cannot connect to {url}: {exc.strerror or exc}") from exc
    if scheme == "tcps":
        context = ssl_context or ssl.create_default_context()
        stream = trio.SSLStream(stream, context, server_hostname=host)
    transport = StreamTransport(stream, max_frame_bytes)
    try:
        yield transport
    finally:
        with trio.CancelScope(shield=True):
            await transport.aclose()
