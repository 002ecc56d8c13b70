"""Before its welcome a connection sends only small frames (HELLO_MAX_FRAME_BYTES).

At the full max_frame_bytes, a peer that never said hello (no token needed) announced a frame
of 64 MiB and sent an eighth of it, and the server allocated the whole frame and held it until
the handshake timeout, on every connection it opened: 65 MiB each, 1,000 connections per
address (an operator). A first frame over the hello's limit is now refused at once, from its
length prefix, over TCP and over WebSocket (whose message before the hello is bounded too).
"""

from __future__ import annotations

import struct

import pytest
import trio
import trio_websocket

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol import rpc_messages as R
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server import handshake
from trio_stream._server.handshake import HELLO_MAX_FRAME_BYTES, HELLO_OVERHEAD_BYTES
from trio_stream._server.resume import RESUME_TOKEN_BYTES
from trio_stream._transport.websocket import CLOSE_MESSAGE_TOO_BIG, MAX_CLOSE_REASON_BYTES

WAIT_S = 10  # far less than the handshake timeout below: a refusal comes at once
HUGE = 64 * 2**20 - 1  # the default max_frame_bytes allows it
pytestmark = pytest.mark.server_options(handshake_timeout_s=60)


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


async def messages_until_closed(stream: trio.SocketStream) -> list[M.ControlMessage]:
    decoder = FrameDecoder(max_frame_bytes=2**30)
    out: list[M.ControlMessage] = []
    while data := await stream.receive_some(65536):
        decoder.receive_data(data)
        out += [M.decode_message(f) for f in decoder.frames() if f[0] == F.CONTROL]
    return out


async def tcp(server: ts.Server) -> trio.SocketStream:
    assert server.tcp_url
    return await trio.open_tcp_stream("127.0.0.1", int(server.tcp_url.rsplit(":", 1)[1]))


async def test_a_huge_first_frame_is_refused_at_once_over_tcp(server: ts.Server) -> None:
    # Many at once, each announcing 64 MiB and sending 64 KiB of it (an eighth would have
    # been 8 MiB): each is refused from its length prefix, none waits for the body.
    refusals: list[list[M.ControlMessage]] = []

    async def announce_huge() -> None:
        stream = await tcp(server)
        await stream.send_all(struct.pack(">I", HUGE) + b"\x01" + bytes(64 * 1024))
        refusals.append(await messages_until_closed(stream))
        await stream.aclose()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(announce_huge)
    assert len(refusals) == 20
    for messages in refusals:
        (error,) = messages
        assert isinstance(error, M.Error) and (error.id, error.type) == (None, "FrameTooLarge")
        assert error.message.startswith(
            f"frame of {HUGE} bytes exceeds the limit of {HELLO_MAX_FRAME_BYTES} bytes before "
            "the welcome: the first frame is a hello"
        ), error.message
    assert not server.connections


@pytest.mark.parametrize("hello_limit", [HELLO_MAX_FRAME_BYTES, 1024])
async def test_a_larger_frame_pipelined_behind_the_hello_is_taken_after_the_welcome(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch, hello_limit: int
) -> None:
    # Over TCP the hello's limit is the hello's: a frame behind it in the same read is judged
    # by max_frame_bytes once the welcome is out, not left waiting for another read (which
    # a client waiting for its answer never sends). With a limit of 1 KiB, the hello and a
    # frame of 4 KiB surely arrive in one read.
    monkeypatch.setattr(handshake, "HELLO_MAX_FRAME_BYTES", hello_limit)
    stream = await tcp(server)
    big_call = R.Call(id=5, provider="nobody", method="m", args=bytes(4 * hello_limit))
    await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name="piped")) + control(big_call))
    decoder = FrameDecoder(max_frame_bytes=2**30)
    messages: list[M.ControlMessage] = []
    with trio.fail_after(WAIT_S):
        while len(messages) < 2:
            data = await stream.receive_some(65536)
            assert data
            decoder.receive_data(data)
            messages += [M.decode_message(f) for f in decoder.frames() if f[0] == F.CONTROL]
    welcome, answer = messages
    assert isinstance(welcome, M.Welcome)
    assert isinstance(answer, M.Error) and (answer.id, answer.type) == (5, "RpcError"), answer
    await stream.aclose()


def test_the_largest_hello_is_far_under_the_limit() -> None:
    longest_name = "€" * 85  # 255 bytes of UTF-8, the most a name may have (100 characters)
    hello = M.Hello(
        v=PROTOCOL_VERSION,
        name=longest_name,
        token="t" * 300,
        resume=True,
        resume_token="f" * (2 * RESUME_TOKEN_BYTES),  # secrets.token_hex
    )
    assert len(control(hello)) < 1024 < HELLO_OVERHEAD_BYTES < HELLO_MAX_FRAME_BYTES


@pytest.mark.server_options(token="k" * 100_000)
async def test_a_server_token_longer_than_the_limit_still_fits_its_hello(
    server: ts.Server,
) -> None:
    assert server.tcp_url and server.ws_url
    for url in (server.tcp_url, server.ws_url):
        async with ts.open_client(url, name="long", token="k" * 100_000) as client:
            assert client.name == "long"


async def test_a_large_first_message_is_refused_at_once_over_websocket(server: ts.Server) -> None:
    assert server.ws_url
    # A frame over the hello's limit, whole in one message: FrameTooLarge, closed with 1009.
    frame = struct.pack(">I", 4 * HELLO_MAX_FRAME_BYTES) + bytes(4 * HELLO_MAX_FRAME_BYTES)
    with trio.fail_after(WAIT_S):
        async with trio_websocket.open_websocket_url(server.ws_url, max_message_size=2**24) as ws:
            await ws.send_message(frame)
            reply = await ws.get_message()
            assert isinstance(reply, bytes)
            (error,) = [M.decode_message(reply[4:])]
            assert isinstance(error, M.Error) and error.type == "FrameTooLarge", error
            assert "before the welcome" in error.message
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == CLOSE_MESSAGE_TOO_BIG
            # The close names the error as the error message does (it said "raise
            # max_frame_bytes on the server", which is not the limit before the welcome).
            expected = f"FrameTooLarge: {error.message}"
            assert closed.value.reason.reason == expected[:MAX_CLOSE_REASON_BYTES]
    # A message far over it is refused by the WebSocket layer as it comes, not read whole
    # (the message limit before the hello is the hello's frame and a batch, ~1 MiB).
    with trio.fail_after(WAIT_S):
        async with trio_websocket.open_websocket_url(server.ws_url, max_message_size=2**24) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.send_message(struct.pack(">I", HUGE) + bytes(8 * 2**20))
                await ws.get_message()
            reason = closed.value.reason
            assert reason is not None and reason.code == CLOSE_MESSAGE_TOO_BIG
            assert "Exceeded maximum message size" in (reason.reason or "")
