"""A DATA frame that does not decode never wedges a reader (issue 13, item 4, client side).

The server here is a raw TCP fake that speaks just enough protocol to hand a subscriber the
frames a test crafts, and that honours credit as a real server does: it sends no more than the
subscription's window until the client returns credit. A reader that did not return the
credit of a bad frame would receive nothing ever again.
"""

from __future__ import annotations

import math
import re
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
        self.limits = Limits().to_wire()  # the welcome's: a test may spoil one
        self.answers: dict[str, Any] = {}  # a request's result by its op (else null)

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
        self._decoder = FrameDecoder(2**20)  # (a new connection: a new client, after drop())
        with trio.CancelScope() as self._connection:
            while data := await stream.receive_some():
                self._decoder.receive_data(data)
                for frame in self._decoder.frames():
                    if await self._on_frame(frame):
                        return
        await stream.aclose()

    def drop(self) -> None:
        """Close the client's connection, as a cut does (the client reconnects)."""
        self._connection.cancel()

    async def _on_frame(self, frame: bytearray) -> bool:
        """Answer one frame from the client; True once it said goodbye."""
        if frame[0] == F.CREDIT:
            sub_id, count = F.parse_counter(frame)
            assert sub_id == SUB_ID
            self.credit += count
            self.credit_changed.set()
            return False
        message = M.decode_message(frame)
        if isinstance(message, M.Hello):
            limits = self.limits
            await self.send_control(
                M.Welcome(v=message.v, client_id=1, name="reader", server="fake", limits=limits)
            )
        elif isinstance(message, M.Subscribe):
            self.credit = WINDOW_FRAMES
            result = {"sub": SUB_ID, "window": WINDOW_FRAMES, "window_bytes": 2**20}
            await self.send_control(M.Reply(id=message.id, result=result))
            self.subscribed.set()
        elif isinstance(message, M.Request):
            await self.send_control(M.Reply(id=message.id, result=self.answers.get(message.OP)))
        elif isinstance(message, M.Goodbye):
            # Closed, as a real server does: a closing client waits for that (up to 1 s).
            assert self.stream is not None
            await self.stream.aclose()
            return True
        return False


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


def truncated_data_frame(body: bytes) -> bytes:
    return frame_prefix(len(body)) + body


@asynccontextmanager
async def reader_of_a_fake_server() -> AsyncIterator[tuple[FakeServer, ts.Client, ts.Subscription]]:
    """The fake server, a client of it that reconnects at once, and its subscription."""
    async with (
        fake_server() as (server, url),
        ts.open_client(url, reconnect=ts.Reconnect(initial=0.01, maximum=0.01)) as client,
        client.subscribe("ch", size=1) as sub,
    ):
        yield server, client, sub


# A DATA head cut short (12 of its 22 bytes), and a whole head whose sender name (10 bytes)
# runs past the frame's end.
CUT_HEAD = bytes([F.DATA]) + SUB_ID.to_bytes(4, "big") + bytes(7)
CUT_NAME = F.DATA_HEAD.pack(F.DATA, SUB_ID, 0, 1, 1.5, 10) + b"abc"


@pytest.mark.parametrize("body", [CUT_HEAD, CUT_NAME], ids=["head", "sender"])
async def test_a_truncated_data_frame_is_a_protocol_error_that_closes_the_connection(
    body: bytes,
) -> None:
    # docs/protocol.md section 1: a truncated fixed header is a protocol error, after which
    # the connection closes. Before, only that receive raised and the connection stayed up.
    async with reader_of_a_fake_server() as (server, client, sub):
        with trio.fail_after(WAIT_S):
            await server.send_data(truncated_data_frame(body))
            with pytest.raises(ts.ProtocolError, match="truncated DATA frame"):
                await sub.receive()
            assert await client.wait_state("closed", "reconnecting") == "closed"
            for call in (sub.receive, client.channels):
                with pytest.raises(ts.ConnectionClosed, match="protocol error from the server"):
                    await call()


@pytest.mark.parametrize("body", [CUT_HEAD, CUT_NAME], ids=["head", "sender"])
async def test_a_truncated_frame_of_a_lost_connection_leaves_the_new_one_open(
    body: bytes,
) -> None:
    # Read after a reconnect, a cut frame that the old connection brought closed the new,
    # healthy one for good (a review): that receive raises, the connection stays.
    async with reader_of_a_fake_server() as (server, client, sub):
        with trio.fail_after(WAIT_S):
            await server.send_data(truncated_data_frame(body))
            while not sub.statistics().buffered:  # noqa: ASYNC110 - here, not read yet
                await trio.sleep(0.01)
            server.drop()
            await client.wait_state("reconnecting")
            await client.wait_state("open")
            with pytest.raises(ts.ProtocolError, match="truncated DATA frame"):
                await sub.receive()
            server.answers["channels"] = []
            assert await client.channels() == []  # still answered
        assert client.state == "open"


async def test_a_negative_lost_notice_is_a_protocol_error_and_never_reaches_a_message() -> None:
    async with reader_of_a_fake_server() as (server, client, sub):
        with trio.fail_after(WAIT_S):
            await server.send_control(M.Lost(sub=SUB_ID, lost=-5, seq=1))
            assert await client.wait_state("closed", "reconnecting") == "closed"
            with pytest.raises(ts.ConnectionClosed, match="negative count: -5"):
                await sub.receive()
        assert sub.lost == 0


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("max_frame_bytes", math.nan, "a positive integer"),
        ("max_frame_bytes", math.inf, "a positive integer"),
        ("max_frame_bytes", 100.5, "a positive integer"),
        ("publish_window_frames", math.nan, "a positive integer"),
        ("publish_window_bytes", 2.0, "a positive integer"),
        ("max_buffered_bytes", True, "a positive integer"),
        ("idle_timeout_s", math.nan, "a positive finite number"),
        ("handshake_timeout_s", math.inf, "a positive finite number"),
        ("idle_timeout_s", -5, "a positive finite number"),
    ],
)
async def test_a_welcome_limit_that_is_not_a_positive_number_of_its_kind_is_refused(
    key: str, value: Any, kind: str
) -> None:
    # NaN passed "value <= 0": a frame limit of nan refused every frame later, with a
    # misleading reason, and a window of nan or inf meant none.
    async with fake_server() as (server, url):
        server.limits = {**Limits().to_wire(), key: value}
        expected = f"the server's welcome has limits.{key} = {value!r}: not {kind}"
        with trio.fail_after(WAIT_S), pytest.raises(ts.ProtocolError, match=re.escape(expected)):
            async with ts.open_client(url, reconnect=False):
                pass


async def test_welcome_limits_in_seconds_may_be_integers() -> None:
    async with fake_server() as (server, url):
        server.limits = {**Limits().to_wire(), "idle_timeout_s": 30, "handshake_timeout_s": 2.5}
        with trio.fail_after(WAIT_S):
            async with ts.open_client(url, reconnect=False) as client:
                assert (client.limits.idle_timeout_s, client.limits.handshake_timeout_s) == (
                    30,
                    2.5,
                )


WRONG_ANSWERS = [
    ("channels", "notalist", "a list of channel records: 'notalist'"),
    ("channels", None, "a list of channel records: None"),
    ("channels", [7], "a list of channel records: item 0 is 7, not a map"),
    ("channels", [{"name": "a"}], "a list of channel records: item 0 lacks 'owner'"),
    ("clients", [{"id": 1}], "a list of client records: item 0 lacks 'name' ({'id': 1})"),
    (
        "clients",
        [{"id": 1, "name": "n", "subscriptions": [{"channel": "c"}]}],
        "a list of client records: item 0 has a subscription that lacks 'policy'",
    ),
    ("stats", [1, 2], "the server's figures: it is [1, 2], not a map"),
]


@pytest.mark.parametrize(("method", "answer", "expected"), WRONG_ANSWERS)
async def test_an_answer_of_the_wrong_shape_is_a_protocol_error_that_says_what_was_wrong(
    method: str, answer: Any, expected: str
) -> None:
    # Before: a bare TypeError ("expected a map for ChannelInfo", "'NoneType' object is not
    # iterable", "__init__() missing 1 required positional argument").
    async with fake_server() as (server, url), ts.open_client(url, reconnect=False) as client:
        server.answers[method] = answer
        with trio.fail_after(WAIT_S), pytest.raises(ts.ProtocolError) as caught:
            await getattr(client, method)()
        assert str(caught.value).startswith(f"the server's answer to {method}() is not {expected}")


def ask_a_sync_client(url: str, method: str) -> BaseException | None:
    """In a thread: what a SyncClient's ``method()`` raises (None if nothing)."""
    with ts.SyncClient(url, reconnect=False) as client:
        try:
            getattr(client, method)()
        except Exception as exc:
            return exc
    return None


@pytest.mark.parametrize(("method", "answer", "expected"), WRONG_ANSWERS[1::2])
async def test_a_sync_client_gets_the_same_protocol_error_for_an_answer_of_the_wrong_shape(
    method: str, answer: Any, expected: str
) -> None:
    async with fake_server() as (server, url):
        server.answers[method] = answer
        with trio.fail_after(WAIT_S):
            error = await trio.to_thread.run_sync(ask_a_sync_client, url, method)
    assert isinstance(error, ts.ProtocolError), repr(error)
    assert str(error).startswith(f"the server's answer to {method}() is not {expected}")
