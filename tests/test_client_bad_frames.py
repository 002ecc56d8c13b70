"""A DATA frame that does not decode never wedges a reader (issue 13, item 4, client side).

The server here is a raw TCP fake that speaks just enough protocol to hand a subscriber the
frames a test crafts, and that honours credit as a real server does: it sends no more than the
subscription's window until the client returns credit. A reader that did not return the
credit of a bad frame would receive nothing ever again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.codec import encode_payload
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import Limits

WAIT_S = 10.0
WINDOW_FRAMES = 1  # one frame in flight: the next one needs the credit of the previous
SUB_ID = 7
CUT_EURO = "€".encode()[:2]  # a name cut mid-character, as an older server did at 255 bytes


def data_frame(seq: int, sender: bytes, payload: bytes | None = None, value: Any = None) -> bytes:
    body = payload if payload is not None else b"".join(encode_payload(value))
    pieces: list[BytesLike] = []
    run: list[bytes] = []
    entries = deque([(F.SharedData(seq, 1.5, sender, body), 0)])
    F.write_data(
        entries,
        SUB_ID,
        1,
        1 << 62,
        1 << 62,
        deque(),
        pieces,
        run,
        alone=True,
    )
    return b"".join(bytes(p) for p in pieces) + b"".join(run)


class FakeServer:
    """Accepts one client, answers its handshake and subscribe, then sends what it is told."""

    def __init__(self) -> None:
        self.stream: trio.SocketStream | None = None
        self.credit = 0
        self.credit_changed = trio.Event()
        self.subscribed = trio.Event()
        self._decoder = FrameDecoder(2**20)
        self._sending = trio.Lock()  # replies and test-driven DATA may be sent at once

    async def send_control(self, message: M.ControlMessage) -> None:
        assert self.stream is not None
        body = M.encode_message(message)
        async with self._sending:
            await self.stream.send_all(frame_prefix(len(body)) + body)

    async def send_data(self, frame: bytes) -> None:
        """Send one DATA frame once the client has credit for it, as a real server does."""
        with trio.fail_after(WAIT_S):
            while self.credit < 1:
                self.credit_changed = trio.Event()
                await self.credit_changed.wait()
        self.credit -= 1
        assert self.stream is not None
        async with self._sending:
            await self.stream.send_all(frame)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        while data := await stream.receive_some():
            self._decoder.receive_data(data)
            for frame in self._decoder.frames():
                await self._on_frame(frame)

    async def _on_frame(self, frame: bytearray) -> None:
        if frame[0] == F.CREDIT:
            sub_id, count = F.parse_counter(frame)
            assert sub_id == SUB_ID
            self.credit += count
            self.credit_changed.set()
            return
        message = M.decode_message(frame)
        if isinstance(message, M.Hello):
            limits = Limits().to_wire()
            await self.send_control(
                M.Welcome(v=message.v, client_id=1, name="reader", server="fake", limits=limits)
            )
        elif isinstance(message, M.Subscribe):
            self.credit = WINDOW_FRAMES
            result = {"sub": SUB_ID, "window": WINDOW_FRAMES, "window_bytes": 2**20}
            await self.send_control(M.Reply(id=message.id, result=result))
            self.subscribed.set()
        elif isinstance(message, M.Request):
            await self.send_control(M.Reply(id=message.id, result=None))


@asynccontextmanager
async def fake_server() -> AsyncIterator[tuple[FakeServer, str]]:
    server = FakeServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), server.handle, 0)
        port = listeners[0].socket.getsockname()[1]
        yield server, f"tcp://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def test_a_sender_name_cut_mid_character_is_delivered_and_its_credit_returned() -> None:
    async with (
        fake_server() as (server, url),
        ts.open_client(url, name="reader") as client,
        client.subscribe("ch", size=1) as sub,
    ):
        with trio.fail_after(WAIT_S):
            for seq in range(1, 4):  # each frame needs the credit of the one before
                await server.send_data(data_frame(seq, b"writer-" + CUT_EURO, value=seq))
                message = await sub.receive()
                assert (message.seq, message.data) == (seq, seq)
                assert message.sender == "writer-\ufffd"
            await server.send_data(data_frame(4, "wr€ter".encode(), value="ok"))
            message = await sub.receive()
            assert (message.sender, message.data) == ("wr€ter", "ok")


async def test_a_payload_that_does_not_decode_raises_once_and_the_reader_goes_on() -> None:
    async with (
        fake_server() as (server, url),
        ts.open_client(url, name="reader") as client,
        client.subscribe("ch", size=1) as sub,
    ):
        with trio.fail_after(WAIT_S):
            await server.send_data(data_frame(1, b"w", payload=b"\xff\xfe"))  # not CBOR
            try:
                await sub.receive()
            except ts.ProtocolError:
                pass
            else:
                raise AssertionError("a payload that is not CBOR decoded")
            await server.send_data(data_frame(2, b"w", value="after"))
            message = await sub.receive()
            assert (message.seq, message.data) == (2, "after")


def read_all_from_a_sync_client(url: str) -> list[Any]:
    """In a thread: a SyncClient reader meets a bad payload among good ones."""
    got: list[Any] = []
    with ts.SyncClient(url, name="reader") as client, client.subscribe("ch", size=1) as sub:
        while len(got) < 3:
            try:
                got.append(sub.get(timeout=WAIT_S).data)
            except ts.ProtocolError as exc:
                got.append(type(exc).__name__)
    return got


async def test_a_sync_reader_gets_one_error_for_a_bad_frame_and_every_message_after_it() -> None:
    async with fake_server() as (server, url), trio.open_nursery() as nursery:
        result: list[list[Any]] = []

        async def read() -> None:
            result.append(await trio.to_thread.run_sync(read_all_from_a_sync_client, url))

        nursery.start_soon(read)
        with trio.fail_after(WAIT_S):
            await server.subscribed.wait()
            await server.send_data(data_frame(1, CUT_EURO, value="first"))
            await server.send_data(data_frame(2, b"w", payload=b"\xff"))
            await server.send_data(data_frame(3, b"w", value="third"))
    assert result == [["first", "ProtocolError", "third"]]


async def test_a_frame_the_client_refuses_mid_connection_closes_it_for_good() -> None:
    # The README: a protocol error is final. Reconnecting would meet the same server, and a
    # frame it would send again, in a loop (one ERROR line at each try).
    async with (
        fake_server() as (server, url),
        ts.open_client(url, reconnect=ts.Reconnect(initial=0.01, maximum=0.01)) as client,
    ):
        assert server.stream is not None
        await server.stream.send_all(frame_prefix(1) + b"\x7f")  # no such frame type
        with trio.fail_after(WAIT_S):
            assert await client.wait_state("closed", "reconnecting") == "closed"
        with pytest.raises(ts.ConnectionClosed, match="protocol error from the server"):
            await client.channels()
