"""A TCP proxy for fault injection in tests: forward, hold, cut, reset.

``async with open_proxy(server.tcp_url) as proxy:`` listens on a loopback port and forwards
every connection to the target. Faults are injected for real, on sockets:

- ``hold()``: stop forwarding, both ways (a frozen peer, a black hole: the connections stay
  open and nothing arrives); ``release()`` forwards again, losing nothing.
- ``hold_replies()``: stop forwarding from the target to the client only (the target gets
  everything and does its work; its answers wait here) until ``release()``.
- ``cut()``: close every connection both ways (FIN: an orderly end of stream).
- ``reset()``: abort every connection both ways (RST: "connection reset by peer").
- ``refuse()``: close new connections at once (a server that is down) until ``accept()``.
- ``stall()``: the connections open now stop forwarding for good, and stay open (a half-open
  path: neither end hears of it); new connections flow.
- ``reset_after_sending(marker)``: the next chunk from a client that holds ``marker`` is
  forwarded, then its connection forwards nothing more and is reset 50 ms later (a link that
  died with the target's answer on its way).

``accept_times`` holds the trio clock of every connection forwarded to the target.

New connections are accepted while held (and then held too), so a client that reconnects
finds the proxy where it left it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import trio

CHUNK_BYTES = 64 * 1024


class _Link:
    """One proxied connection: the client's stream, the target's, and the scope of both pumps."""

    def __init__(self, client: trio.SocketStream, target: trio.SocketStream) -> None:
        self.client = client
        self.target = target
        self.scope = trio.CancelScope()
        self.abort = False
        self.stalled = trio.Event()  # never set: a stalled link waits on it for good
        self.is_stalled = False


class TcpProxy:
    def __init__(self, target_url: str, port: int) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None and parts.port is not None
        self.target = (parts.hostname, parts.port)
        self.port = port
        self.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        self.links: set[_Link] = set()
        self.accepted = 0
        self._accepted_more = trio.Event()
        self.accept_times: list[float] = []
        self.refusing = False
        self._reset_marker: bytes | None = None
        self._flowing = trio.Event()
        self._flowing.set()
        self._replies_flowing = trio.Event()
        self._replies_flowing.set()

    @property
    def held(self) -> bool:
        return not self._flowing.is_set()

    def hold(self) -> None:
        """Stop forwarding in both directions (at most one read per direction stays here)."""
        if not self.held:
            self._flowing = trio.Event()

    def hold_replies(self) -> None:
        """Stop forwarding what the target sends; what the client sends still goes."""
        if self._replies_flowing.is_set():
            self._replies_flowing = trio.Event()

    def release(self) -> None:
        """Forward again, what was held first."""
        self._flowing.set()
        self._replies_flowing.set()

    def cut(self) -> None:
        """Close every connection, both ways, with an orderly FIN."""
        for link in self.links:
            link.scope.cancel()

    def refuse(self) -> None:
        """Close new connections at once, until accept()."""
        self.refusing = True

    def accept(self) -> None:
        self.refusing = False

    def stall(self) -> None:
        """The connections open now forward nothing more and stay open; new ones flow."""
        for link in self.links:
            link.is_stalled = True

    def reset_after_sending(self, marker: bytes) -> None:
        self._reset_marker = marker

    def reset(self) -> None:
        """Abort every connection, both ways, with an RST."""
        for link in self.links:
            link.abort = True
            link.scope.cancel()

    async def wait_accepted(self, count: int) -> None:
        """Until more than ``count`` connections came (``accepted`` counts them)."""
        while self.accepted <= count:
            await self._accepted_more.wait()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        self._accepted_more.set()
        self._accepted_more = trio.Event()
        if self.refusing:
            await trio.aclose_forcefully(client)
            return
        try:
            target = await trio.open_tcp_stream(*self.target)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        link = _Link(client, target)
        self.accept_times.append(trio.current_time())
        self.links.add(link)
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, link, client, target, nursery.cancel_scope)
                    nursery.start_soon(self._pump, link, target, client, nursery.cancel_scope, True)
        finally:
            self.links.discard(link)
            for stream in (client, target):
                if link.abort:
                    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await trio.aclose_forcefully(stream)

    async def _pump(
        self,
        link: _Link,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        both: trio.CancelScope,
        replies: bool = False,
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await source.receive_some(CHUNK_BYTES)
                if not data:
                    break
                await self._flowing.wait()  # held meanwhile: this chunk waits with the rest
                if replies:
                    await self._replies_flowing.wait()
                if link.is_stalled:
                    await link.stalled.wait()
                await sink.send_all(data)
                marker = self._reset_marker
                if not replies and marker is not None and marker in data:
                    self._reset_marker = None
                    link.is_stalled = True  # the answer stays here
                    await trio.sleep(0.05)
                    link.abort = True
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # One side ended: the connection ends both ways, as a real peer's close would.
        both.cancel()


@asynccontextmanager
async def open_proxy(target_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of ``target_url`` (tcp:// or ws://); ``proxy.url`` is the same URL
    with the proxy's address."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    proxy = TcpProxy(target_url, port)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, proxy._handle, listeners)
        try:
            yield proxy
        finally:
            proxy.release()
            nursery.cancel_scope.cancel()
