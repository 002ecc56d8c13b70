"""Connection limits: max_connections and max_connections_per_address on TCP, WebSocket and
HTTP; the HTTP port's keep-alive timeout, requests per connection and write timeout."""

from __future__ import annotations

import logging
import socket

import pytest
import trio
import trio.testing

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server.admission import REFUSALS_SAID_EVERY_S

TIMEOUT_S = 10.0


def config(**changes: object) -> ts.ServerConfig:
    return ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, **changes)  # type: ignore[arg-type]


def tcp_address(server: ts.Server) -> tuple[str, int]:
    assert server.tcp_url
    host, port = server.tcp_url.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def http_port(server: ts.Server) -> int:
    assert server.http_url
    return int(server.http_url.rstrip("/").rsplit(":", 1)[1])


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(TIMEOUT_S):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass  # a reset after the answer
    return received


async def hello(server: ts.Server) -> tuple[trio.SocketStream, M.ControlMessage]:
    """A raw TCP connection that says hello; its first answer."""
    stream = await trio.open_tcp_stream(*tcp_address(server))
    body = M.encode_message(M.Hello(v=PROTOCOL_VERSION))
    await stream.send_all(frame_prefix(len(body)) + body)
    decoder = FrameDecoder(2**20)
    with trio.fail_after(TIMEOUT_S):
        while not (frames := decoder.frames()):
            data = await stream.receive_some(65536)
            assert data, "closed without an answer"
            decoder.receive_data(data)
    return stream, M.decode_message(frames[0])


async def test_tcp_over_max_connections_gets_limit_exceeded_then_close() -> None:
    async with ts.open_server(config(max_connections=2)) as server:
        first, welcome = await hello(server)
        assert isinstance(welcome, M.Welcome)
        # A connection that never says hello counts too: it costs the server as well.
        silent = await trio.open_tcp_stream(*tcp_address(server))
        third, refusal = await hello(server)
        assert isinstance(refusal, M.Error) and refusal.type == "LimitExceeded"
        assert "max_connections" in refusal.message and "per address" not in refusal.message
        assert await read_until_closed(third) == b""
        # Room again once one closes.
        await silent.aclose()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(TIMEOUT_S):
            while True:
                fourth, answer = await hello(server)
                if isinstance(answer, M.Welcome):
                    break
                await fourth.aclose()
                await trio.sleep(0.01)  # the server has not seen the close yet
        assert server.admission.total == 2
        for stream in (first, third, fourth):
            await stream.aclose()


async def test_the_trio_client_reports_the_limit() -> None:
    async with ts.open_server(config(max_connections=1)) as server:
        assert server.tcp_url
        async with ts.open_client(server.tcp_url, name="first"):
            with pytest.raises(ts.LimitExceeded, match="max_connections"):
                async with ts.open_client(server.tcp_url, name="second"):
                    pass


async def test_refusals_are_warned_in_the_log_and_a_flood_of_them_counted(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # Clients were refused while the server's log said nothing (INFO only; operator persona).
    caplog.set_level(logging.WARNING, logger="trio_stream")
    async with ts.open_server(config(max_connections=1)) as server:
        first, _ = await hello(server)
        refused = []
        for _ in range(5):
            stream, answer = await hello(server)
            assert isinstance(answer, M.Error)
            refused.append(stream)
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1, said  # the first at once, the next ones counted
        assert said[0].startswith("connection from 127.0.0.1 refused: the server holds 1 ")
        # The count is said a minute after the first line, though no refusal came since
        # (it waited for the next refusal, days later perhaps; a review).
        await trio.sleep(REFUSALS_SAID_EVERY_S + 2)
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 2 and said[1].startswith(
            "4 connections refused in the 60 s since the last such line, the latest from "
            "127.0.0.1: the server holds 1 connections"
        ), said
        assert server.admission.refused_total == 5
        for stream in (first, *refused):
            await stream.aclose()


async def test_a_reconnecting_client_waits_out_a_full_server(nursery: trio.Nursery) -> None:
    # LimitExceeded at a reconnection escaped the client's task: the application's `async
    # with open_client(...)` ended with it (the limit is for now: others close).
    server: ts.Server = await nursery.start(ts.serve, config(max_connections=1))
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    policy = ts.Reconnect(initial=0.5, maximum=0.5)
    async with ts.open_client(server.tcp_url, name="kept", reconnect=policy) as kept:
        await server.aclose()
        full = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None, max_connections=1)
        again: ts.Server = await nursery.start(ts.serve, full)
        async with ts.open_client(server.tcp_url, name="first"):  # the one place there is
            await trio.sleep(1.5)  # tries of "kept" are refused meanwhile
            assert kept.state == "reconnecting"
        with trio.fail_after(TIMEOUT_S):
            await kept.wait_state("open")
        await again.aclose()


async def test_tcp_over_max_connections_per_address_names_that_setting() -> None:
    async with ts.open_server(config(max_connections_per_address=1)) as server:
        first, welcome = await hello(server)
        assert isinstance(welcome, M.Welcome)
        second, refusal = await hello(server)
        assert isinstance(refusal, M.Error) and refusal.type == "LimitExceeded"
        assert "max_connections_per_address" in refusal.message
        assert "127.0.0.1" in refusal.message
        await first.aclose()
        await second.aclose()


async def test_http_and_websocket_over_the_limit_get_503_with_a_body() -> None:
    async with ts.open_server(config(max_connections=1)) as server:
        tcp, welcome = await hello(server)  # TCP and HTTP share the count
        assert isinstance(welcome, M.Welcome)
        port = http_port(server)
        for head in (
            f"GET /metrics HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n",
            f"GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(head.encode())
            answer = await read_until_closed(stream)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
            assert b"max_connections" in answer
            await stream.aclose()
        await tcp.aclose()
        # A WebSocket, once in, holds one connection like a TCP client.
    async with ts.open_server(config(max_connections=1)) as server:
        assert server.ws_url and server.tcp_url
        async with ts.open_client(server.ws_url, name="ws"):
            _tcp, refusal = await hello(server)
            assert isinstance(refusal, M.Error) and "max_connections" in refusal.message
            await _tcp.aclose()
            # The WebSocket client says it as the TCP one does (it said ConnectionClosed).
            with pytest.raises(ts.LimitExceeded, match=r"503 \(the server holds 1 connections"):
                async with ts.open_client(server.ws_url, name="second", reconnect=False):
                    pass


async def test_an_idle_keep_alive_connection_is_closed(autojump_clock: trio.abc.Clock) -> None:
    async with ts.open_server(config(http_keepalive_timeout_s=5.0)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", http_port(server))
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        started = trio.current_time()
        answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert 5.0 <= trio.current_time() - started < 6.0
        await stream.aclose()


async def test_an_http_connection_serves_at_most_http_max_requests() -> None:
    async with ts.open_server(config(http_max_requests=3)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", http_port(server))
        request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
        await stream.send_all(request * 5)
        answer = await read_until_closed(stream)
        assert answer.count(b"HTTP/1.1 200 ") == 3
        assert answer.lower().count(b"connection: close") == 1
        await stream.aclose()


async def test_a_peer_that_does_not_read_its_replies_is_closed_after_the_write_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with ts.open_server(config(http_write_timeout_s=3.0, http_max_requests=10**6)) as server:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast
        await sock.connect(("127.0.0.1", http_port(server)))
        stream = trio.SocketStream(sock)
        request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
        with trio.move_on_after(1.0):
            await stream.send_all(request * 1000)  # the server stops reading at some point
        await trio.sleep(4.0)  # reads nothing meanwhile
        started = trio.current_time()
        answer = await read_until_closed(stream)
        assert trio.current_time() - started < 1.0  # closed already; what was sent remains
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.count(b"HTTP/1.1 200 ") < 1000
        await stream.aclose()
