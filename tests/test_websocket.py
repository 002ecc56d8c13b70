"""The WebSocket transport: whole frames batched into binary messages, and its failure modes.

The client/server behaviour itself runs over WebSocket through the ``url`` fixture (see
conftest.py); this file pins down what is specific to WebSocket messages.
"""

from __future__ import annotations

import gc
import itertools
import ssl
import struct
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket
import trustme
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import decode_payload, encode_payload
from trio_stream._protocol.framing import frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._transport import websocket as websocket_transport
from trio_stream._transport.connect import connect
from trio_stream._transport.origin import host_name
from trio_stream._transport.urls import split_url
from trio_stream._transport.websocket import (
    MESSAGE_BATCH_BYTES,
    WebSocketTransport,
    batch_bounds,
    max_message_bytes,
    split_message,
    upgrade_host,
)
from trio_stream._transport.ws_fail import reason_that_fits

TIMEOUT_S = 10.0


def framed(body: bytes) -> bytes:
    return frame_prefix(len(body)) + body


def control(message: M.ControlMessage) -> bytes:
    return framed(M.encode_message(message))


class RawWebSocket:
    """A hand-driven client: frames in and out of WebSocket messages, nothing hidden."""

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self.connection = connection
        self.messages_received = 0
        self.pending: list[bytearray] = []

    async def send(self, *frames: bytes) -> None:
        await self.connection.send_message(b"".join(frames))

    async def receive(self) -> list[bytearray]:
        """Frames left over by control_until, else the frames of the next message."""
        if self.pending:
            frames, self.pending = self.pending, []
            return frames
        message = await self.connection.get_message()
        assert isinstance(message, bytes)
        self.messages_received += 1
        return split_message(message, 2**30)

    async def hello(self, name: str) -> M.Welcome:
        await self.send(control(M.Hello(v=PROTOCOL_VERSION, name=name)))
        (frame,) = await self.receive()
        welcome = M.decode_message(frame)
        assert isinstance(welcome, M.Welcome)
        return welcome

    async def control_until(self, cls: type[M.ControlMessage]) -> M.ControlMessage:
        """The next CONTROL message of type ``cls``; frames after it in its message wait."""
        while True:
            if not self.pending:
                self.pending = await self.receive()
            frame = self.pending.pop(0)
            if frame[0] == F.FrameType.CONTROL:
                message = M.decode_message(frame)
                if isinstance(message, cls):
                    return message

    async def close_reason(self) -> trio_websocket.CloseReason:
        """Read until the server closes the WebSocket; the reason it gave."""
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            while True:
                await self.connection.get_message()
        reason = info.value.reason
        assert reason is not None
        return reason


@asynccontextmanager
async def raw_websocket(url: str) -> AsyncIterator[RawWebSocket]:
    async with trio_websocket.open_websocket_url(url, max_message_size=2**24) as connection:
        yield RawWebSocket(connection)


@asynccontextmanager
async def small_frame_server(max_frame_bytes: int) -> AsyncIterator[ts.Server]:
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=0, max_frame_bytes=max_frame_bytes
    )
    async with ts.open_server(config) as server:
        yield server


# -- end to end ---------------------------------------------------------------------------------
ARRAYS = [
    np.arange(1000.0),
    np.arange(12, dtype=np.int16).reshape(3, 4),
    np.array(3.5, dtype=np.float32),
    np.array([True, False]),
    np.arange(6, dtype=np.complex128),
    np.zeros(0, dtype=np.uint8),
]


async def test_numpy_arrays_round_trip_over_websocket(server: ts.Server) -> None:
    assert server.ws_url
    with trio.fail_after(TIMEOUT_S):
        async with (
            ts.open_client(server.ws_url, name="daq") as daq,
            ts.open_client(server.ws_url, name="viewer") as viewer,
        ):
            await daq.create_channel("AnalogInput1")
            async with (
                viewer.subscribe("AnalogInput1", policy="block", size=100) as sub,
                daq.publisher("AnalogInput1") as pub,
            ):
                await pub.wait_for_readers()
                for array in ARRAYS:
                    assert await pub.send(array)
                for seq, array in enumerate(ARRAYS, start=1):
                    msg = await sub.receive()
                    assert (msg.seq, msg.sender, msg.lost) == (seq, "daq", 0)
                    assert msg.data.dtype == array.dtype
                    assert msg.data.shape == array.shape
                    np.testing.assert_array_equal(msg.data, array)
            transports = {c.name: c.transport for c in await viewer.clients()}
            assert transports == {"daq": "ws", "viewer": "ws"}


async def test_tcp_and_websocket_clients_share_channels(server: ts.Server) -> None:
    assert server.ws_url and server.tcp_url
    with trio.fail_after(TIMEOUT_S):
        async with (
            ts.open_client(server.tcp_url, name="tcp") as tcp,
            ts.open_client(server.ws_url, name="ws") as ws,
        ):
            await tcp.create_channel("c")
            async with ws.subscribe("c", policy="block", size=10) as sub:
                await tcp.publish("c", {"t": 1.5})
                assert (await sub.receive()).data == {"t": 1.5}


async def test_many_frames_travel_in_few_messages_both_ways(server: ts.Server) -> None:
    """Requests pipelined in one message all get answers; a burst of 50 publishes in one
    message comes back to the subscriber as 50 DATA frames in one or two messages."""
    assert server.ws_url
    count = 50
    with trio.fail_after(TIMEOUT_S):
        async with raw_websocket(server.ws_url) as ws:
            await ws.hello("raw")
            await ws.send(
                control(M.CreateChannel(id=1, channel="burst")),
                control(M.OpenPublisher(id=2, channel="burst")),
                control(M.Subscribe(id=3, channel="burst", policy="block", size=count)),
            )
            replies: dict[int, Any] = {}
            while len(replies) < 3:
                reply = await ws.control_until(M.Reply)
                assert isinstance(reply, M.Reply)
                replies[reply.id] = reply.result
            pub_id, sub_id = replies[2]["pub"], replies[3]["sub"]
            assert replies[3]["window"] == count

            payloads = [b"".join(bytes(p) for p in encode_payload(i)) for i in range(count)]
            await ws.send(
                *(framed(F.publish_head(pub_id, time.time()) + body) for body in payloads)
            )
            before = ws.messages_received
            values: list[Any] = []
            while len(values) < count:
                for frame in await ws.receive():
                    if frame[0] == F.FrameType.DATA:
                        assert F.data_sub_id(frame) == sub_id
                        offset = F.DataParser().parse(frame)[-1]
                        values.append(decode_payload(frame[offset:]))
            assert values == list(range(count))
            assert ws.messages_received - before <= 2


async def test_text_message_closes_only_that_connection_with_a_reason(server: ts.Server) -> None:
    assert server.ws_url
    with trio.fail_after(TIMEOUT_S):
        async with ts.open_client(server.ws_url, name="bystander") as bystander:
            await bystander.create_channel("c")
            async with bystander.subscribe("c", policy="block", size=10) as sub:
                async with raw_websocket(server.ws_url) as ws:
                    await ws.hello("rude")
                    await ws.connection.send_message("hello in text")
                    goodbye = await ws.control_until(M.Goodbye)
                    assert isinstance(goodbye, M.Goodbye)
                    assert "ProtocolError" in goodbye.reason
                    assert "text WebSocket message" in goodbye.reason
                    reason = await ws.close_reason()
                    assert reason.code == 1003  # unsupported data
                    assert reason.reason and reason.reason.startswith("ProtocolError: a text")
                await bystander.publish("c", "still here")
                assert (await sub.receive()).data == "still here"


BAD_MESSAGES = {
    "frame cut at the message end": (control(M.Ping())[:-1], 1002),
    # Whole frames whose content breaks the protocol: the session, not the framing, sees it.
    "control frame of malformed CBOR": (framed(b"\x01\xa1\x63op"), 1002),
    "control frame with a bignum op": (
        framed(b"\x01\xa1bop\xc2\x59\x0f\x00" + b"\xff" * 3840),
        1002,
    ),
    "unknown frame type": (framed(b"\x09"), 1002),
    "empty message": (b"", 1002),
    "empty frame": (struct.pack(">I", 0), 1002),
    "declared length over the limit": (struct.pack(">I", 5000) + b"\x01" * 4999, 1009),
}


@pytest.mark.parametrize("bad", list(BAD_MESSAGES), ids=list(BAD_MESSAGES))
async def test_bad_message_closes_that_connection_with_goodbye_and_close_code(bad: str) -> None:
    message, code = BAD_MESSAGES[bad]
    with trio.fail_after(TIMEOUT_S):
        async with (
            small_frame_server(max_frame_bytes=4096) as server,
            raw_websocket(server.ws_url or "") as ws,
        ):
            await ws.hello("bad")
            await ws.send(message)
            goodbye = await ws.control_until(M.Goodbye)
            assert isinstance(goodbye, M.Goodbye)
            assert goodbye.reason.startswith(("ProtocolError", "FrameTooLarge"))
            closed = await ws.close_reason()
            assert closed.code == code
            # docs/protocol.md section 1: the close reason names the error as the goodbye does
            assert closed.reason
            assert closed.reason.startswith(("ProtocolError: ", "FrameTooLarge: "))


# Frames that break RFC 6455 itself (wsproto refuses them), written by hand: a mask key of
# zeros where one is needed, so that only the broken part differs from a good frame.
BAD_WEBSOCKET_FRAMES = {
    "unmasked client frame": (b"\x82\x03abc", "unmasked"),
    "reserved opcode": (b"\x83\x83\x00\x00\x00\x00abc", "opcode"),
    "reserved bit": (b"\xc2\x83\x00\x00\x00\x00abc", "Reserved bit"),
}


@pytest.mark.parametrize("bad", list(BAD_WEBSOCKET_FRAMES), ids=list(BAD_WEBSOCKET_FRAMES))
async def test_a_frame_that_breaks_rfc_6455_gets_a_close_frame_1002_with_the_reason(
    server: ts.Server, bad: str
) -> None:
    # trio-websocket closed the TCP stream without a close frame (the peer saw only 1006,
    # and a client's author never learnt why): trio_stream/_transport/ws_fail.py.
    frame, said = BAD_WEBSOCKET_FRAMES[bad]
    assert server.ws_url
    _, host, port, path = split_url(server.ws_url)
    with trio.fail_after(TIMEOUT_S):
        async with ts.open_client(server.ws_url, name="bystander") as bystander:
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                received = b""
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some()
                head, _, received = received.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 ")
                await stream.send_all(frame)
                while chunk := await stream.receive_some():
                    received += chunk
            # one close frame (FIN, opcode 8, unmasked), code 1002, the reason wsproto gave
            assert received[0] == 0x88 and received[1] == len(received) - 2, received
            code, reason = struct.unpack(">H", received[2:4])[0], received[4:].decode()
            assert code == 1002 and said in reason, (code, reason)
            assert (await bystander.channels()) is not None  # the server goes on


async def test_a_broken_frame_while_the_server_floods_its_reader_ends_quietly(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # The close frame may be made while the connection's sender is busy: the sender must get
    # ConnectionClosed. It got wsproto's LocalProtocolError, logged as an ERROR whose message
    # held the whole batch of frames (megabytes a connection, repeatable by any client).
    assert server.tcp_url and server.ws_url
    with trio.fail_after(TIMEOUT_S * 3):
        async with ts.open_client(server.tcp_url, name="w") as w:
            await w.create_channel("fast")
            async with w.publisher("fast") as pub, trio.open_nursery() as nursery:

                async def flood() -> None:
                    frame = np.zeros(256 * 1024, np.uint8)
                    while True:
                        await pub.send(frame)

                for attempt in range(8):
                    async with (
                        ts.open_client(server.ws_url, name=f"r{attempt}", reconnect=False) as r,
                        r.subscribe("fast", policy="drop_oldest", size=50) as sub,
                    ):
                        if attempt == 0:
                            await pub.wait_for_readers()
                            nursery.start_soon(flood)
                        await sub.receive()
                        transport = r._transport
                        assert isinstance(transport, WebSocketTransport)
                        await transport.connection._stream.send_all(b"\x82\x03abc")  # unmasked
                        with pytest.raises(ts.ConnectionClosed):
                            async for _ in sub:
                                pass
                nursery.cancel_scope.cancel()
    errors = [record.getMessage()[:300] for record in caplog.records if record.levelno >= 40]
    assert not errors, errors


@given(st.text(max_size=200))
def test_a_close_reason_is_cut_to_whole_characters_within_123_bytes(reason: str) -> None:
    cut = reason_that_fits(reason)
    assert cut is not None and len(cut.encode()) <= 123 and reason.startswith(cut)
    if len(reason.encode()) <= 123:
        assert cut == reason


async def test_malformed_hello_is_refused_with_an_error_and_close_code_1002(
    server: ts.Server,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with raw_websocket(server.ws_url or "") as ws:
            await ws.send(framed(b"\x01\xa2bop\xc2\x59\x10\x00" + b"\xff" * 4096 + b"av\x01"))
            error = await ws.control_until(M.Error)
            assert isinstance(error, M.Error)
            assert error.type == "ProtocolError"
            assert "tag 2 is not allowed" in error.message
            reason = await ws.close_reason()
            assert reason.code == 1002
            assert reason.reason and reason.reason.startswith("ProtocolError: ")


async def test_message_over_the_websocket_limit_is_refused() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            small_frame_server(max_frame_bytes=4096) as server,
            raw_websocket(server.ws_url or "") as ws,
        ):
            await ws.hello("huge")
            await ws.send(b"\x00" * (max_message_bytes(4096) + 1))
            assert (await ws.close_reason()).code == 1009  # message too big


async def test_oversize_value_is_refused_locally_over_websocket() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            small_frame_server(max_frame_bytes=10_000) as server,
            ts.open_client(server.ws_url or "") as writer,
            ts.open_client(server.ws_url or "") as reader,
        ):
            await writer.create_channel("c")
            async with reader.subscribe("c"), writer.publisher("c") as pub:
                await pub.wait_for_readers()
                with pytest.raises(ts.FrameTooLarge):
                    await pub.send(np.zeros(2000))
                assert await pub.send(np.zeros(100))


async def test_large_arrays_cross_in_messages_bigger_than_a_batch() -> None:
    array = np.random.default_rng(1).random(3 * MESSAGE_BATCH_BYTES // 8)
    with trio.fail_after(TIMEOUT_S):
        async with (
            ts.open_server(ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)) as server,
            ts.open_client(server.ws_url or "") as writer,
            ts.open_client(server.ws_url or "") as reader,
        ):
            await writer.create_channel("big")
            async with reader.subscribe("big", policy="block", size=4) as sub:
                for _ in range(3):
                    await writer.publish("big", array)
                for _ in range(3):
                    np.testing.assert_array_equal((await sub.receive()).data, array)


async def test_server_shutdown_says_goodbye_over_websocket(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)
    server: ts.Server = await nursery.start(ts.serve, config)
    async with ts.open_client(server.ws_url or "", reconnect=False) as client:
        await client.create_channel("c")
        async with client.subscribe("c") as sub:
            await server.aclose()
            with pytest.raises(ts.ConnectionClosed, match="shutting down"), trio.fail_after(10):
                await sub.receive()


async def test_wrong_path_is_a_clear_connection_error(server: ts.Server) -> None:
    assert server.http_url
    url = server.http_url.replace("http://", "ws://") + "elsewhere"
    with pytest.raises(ts.ConnectionClosed, match="HTTP 404"), trio.fail_after(TIMEOUT_S):
        async with ts.open_client(url):
            pass


async def test_another_web_servers_page_is_not_pasted_into_the_error(
    nursery: trio.Nursery,
) -> None:
    # A ws:// URL that reaches some other web server: its 404 page (10 lines of HTML) was
    # the error's text, cut mid-tag.
    page = b"<!DOCTYPE HTML>\n<html lang='en'>\n<head><title>Error</title></head>\n</html>\n"

    async def web_server(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n"
        await stream.send_all(head % len(page) + page)
        await stream.aclose()

    serve_web = partial(trio.serve_tcp, web_server, 0, host="127.0.0.1")
    (listener,) = await nursery.start(serve_web)
    port = listener.socket.getsockname()[1]
    with pytest.raises(ts.ConnectionClosed) as refused, trio.fail_after(TIMEOUT_S):
        async with ts.open_client(f"ws://127.0.0.1:{port}/ws"):
            pass
    assert str(refused.value) == (
        f"cannot connect to ws://127.0.0.1:{port}/ws: the server refused the WebSocket "
        "upgrade with HTTP 404: is this a trio_stream server's HTTP port (path /ws)?"
    )


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, trio.Event]]:
    """A TCP server that accepts and never answers the upgrade: (its port, an event set once
    the client's side of its connection has been closed)."""
    closed = trio.Event()

    async def sit(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):  # the upgrade request, then EOF
            pass
        closed.set()

    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, sit, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        yield listener.socket.getsockname()[1], closed
        nursery.cancel_scope.cancel()


@pytest.fixture
def no_garbage_collection() -> Iterator[None]:
    # The leak this guards against was a socket closed only by a full collection.
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_garbage_collection")
async def test_a_cancelled_connection_attempt_closes_its_socket_at_once() -> None:
    # trio-websocket's open_websocket left the socket of an unfinished handshake to be
    # closed by its finalizer (a ResourceWarning; a full collection when in a cycle): a
    # client retrying a server that never answers held one per attempt meanwhile.
    async with silent_server() as (port, closed):
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", ResourceWarning)
            with trio.move_on_after(0.5) as attempt:
                async with ts.open_client(f"ws://127.0.0.1:{port}/ws", reconnect=False):
                    pytest.fail("no server answered: the connection cannot open")
            assert attempt.cancelled_caught
            with trio.fail_after(TIMEOUT_S):
                await closed.wait()
        assert not [w for w in warned if issubclass(w.category, ResourceWarning)]


async def test_a_server_that_hangs_up_on_the_upgrade_is_told_at_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # trio-websocket's handshake waits for nothing it sets when the peer closes first: the
    # attempt sat out the whole handshake timeout, then blamed the time.
    monkeypatch.setattr(websocket_transport, "CONNECT_TIMEOUT_S", 60.0)

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    (listener,) = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listener.socket.getsockname()[1]}/ws"
    with pytest.raises(ts.ConnectionClosed) as refused, trio.fail_after(TIMEOUT_S):
        async with ts.open_client(url, reconnect=False):
            pass
    assert str(refused.value) == (
        f"cannot connect to {url}: the server closed the connection without answering the "
        "WebSocket upgrade (if that port uses TLS, use wss://)"
    )


async def test_an_answer_that_is_no_upgrade_is_one_line(nursery: trio.Nursery) -> None:
    async def not_http(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await trio.sleep(TIMEOUT_S)

    (listener,) = await nursery.start(partial(trio.serve_tcp, not_http, 0, host="127.0.0.1"))
    url = f"ws://127.0.0.1:{listener.socket.getsockname()[1]}/ws"
    with pytest.raises(ts.ConnectionClosed) as refused, trio.fail_after(TIMEOUT_S):
        async with ts.open_client(url, reconnect=False):
            pass
    assert str(refused.value).startswith(
        f"cannot connect to {url}: its answer is not a WebSocket upgrade ("
    )
    assert str(refused.value).endswith("is this a trio_stream server's HTTP port (path /ws)?")


@pytest.mark.usefixtures("no_garbage_collection")
async def test_a_handshake_that_times_out_says_so_and_closes_its_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket_transport, "CONNECT_TIMEOUT_S", 0.3)
    async with silent_server() as (port, closed):
        url = f"ws://127.0.0.1:{port}/ws"
        with pytest.raises(ts.ConnectionClosed) as refused, trio.fail_after(TIMEOUT_S):
            async with ts.open_client(url, reconnect=False):
                pass
        assert str(refused.value) == f"cannot connect to {url}: no WebSocket handshake within 0.3 s"
        with trio.fail_after(TIMEOUT_S):
            await closed.wait()


async def test_the_blocks_own_exception_group_leaves_as_it_was(server: ts.Server) -> None:
    # The connection's reader task shares a nursery with the block: the block's group (the
    # client's own I/O nursery raises such) must leave as the very object, neither wrapped
    # nor taken apart.
    assert server.ws_url
    raised = ExceptionGroup("the block's", [ValueError("mine")])
    with pytest.raises(ExceptionGroup) as caught, trio.fail_after(TIMEOUT_S):
        async with connect(server.ws_url, max_frame_bytes=2**20):
            raise raised
    assert caught.value is raised


@pytest.mark.parametrize(
    ("host", "port", "header"),
    [
        ("127.0.0.1", 9871, "127.0.0.1:9871"),
        ("example.org", 443, "example.org"),
        ("::1", 9871, "[::1]:9871"),  # was "::1:9871", which the server refused (403)
        ("fe80::1", 80, "[fe80::1]"),
    ],
)
def test_the_upgrade_names_the_host_as_a_url_does(host: str, port: int, header: str) -> None:
    assert upgrade_host(host, port) == header
    assert host_name(header) == host  # as the server reads it


async def test_wss_with_tls(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=None, http_port=0, ssl_context=server_context
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.ws_url and server.ws_url.startswith("wss://")
    assert server.http_url and server.http_url.startswith("https://")
    with trio.fail_after(TIMEOUT_S):
        async with ts.open_client(server.ws_url, ssl_context=client_context) as client:
            await client.create_channel("secure")
            async with client.subscribe("secure", policy="block", size=2) as sub:
                await client.publish("secure", np.arange(3))
                np.testing.assert_array_equal((await sub.receive()).data, np.arange(3))
    await server.aclose()


# -- the message <-> frames layer, without sockets ----------------------------------------------
bodies = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=30)


@given(bodies)
def test_split_message_gives_back_every_frame(frames: list[bytes]) -> None:
    message = b"".join(framed(body) for body in frames)
    assert split_message(message, 300) == frames


@given(bodies, st.integers(min_value=1, max_value=2000))
def test_batch_bounds_cut_only_between_frames_and_respect_the_limit(
    frames: list[bytes], limit: int
) -> None:
    data = b"".join(framed(body) for body in frames)
    bounds = list(batch_bounds(data, limit))
    assert bounds[0][0] == 0 and bounds[-1][1] == len(data)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(bounds))
    regrouped = []
    for start, end in bounds:
        batch = split_message(data[start:end], 300)
        assert end - start <= limit or len(batch) == 1
        regrouped.extend(batch)
    assert regrouped == frames


class FakeConnection:
    """Records what a WebSocketTransport sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_message(self, message: bytes) -> None:
        self.sent.append(message)


def pieces_of(count: int, size: int) -> Iterator[bytes]:
    for i in range(count):
        body = bytes([i % 256]) * size
        yield frame_prefix(len(body))
        yield body


async def test_send_turns_a_batch_of_frames_into_one_message() -> None:
    connection = FakeConnection()
    transport = WebSocketTransport(connection, 2**20, "test")  # type: ignore[arg-type]
    await transport.send(list(pieces_of(100, 100)))
    assert len(connection.sent) == 1
    assert len(split_message(connection.sent[0], 2**20)) == 100


async def test_send_splits_batches_over_the_message_budget_between_frames() -> None:
    connection = FakeConnection()
    transport = WebSocketTransport(connection, 2**20, "test")  # type: ignore[arg-type]
    await transport.send(list(pieces_of(40, 100_000)))  # ~4 MB
    assert len(connection.sent) == 4
    assert all(len(message) <= MESSAGE_BATCH_BYTES for message in connection.sent)
    assert sum(len(split_message(m, 2**20)) for m in connection.sent) == 40
