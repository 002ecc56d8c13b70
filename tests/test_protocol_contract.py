"""docs/protocol.md and the server agree: raw frames over a real socket, as a client written
in another language from the page alone would see them."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
import trio

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol.codec import decode_control, encode_control, encode_payload
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION, SUBSCRIBE_WINDOW_BYTES

WAIT_S = 10.0
MIB = 2**20


class RawClient:
    """Frames in and out by hand; CONTROL bodies kept as the wire maps they are."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_frame_bytes=64 * MIB)
        self.pending: list[bytearray] = []
        self.next_id = 1

    @classmethod
    async def connect(cls, server: ts.Server) -> RawClient:
        assert server.tcp_url
        port = int(server.tcp_url.rsplit(":", 1)[1])
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send_control({"op": "hello", "v": PROTOCOL_VERSION})
        assert (await client.control())["op"] == "welcome"
        return client

    async def send_control(self, wire: dict[str, Any]) -> None:
        body = F.CONTROL_TYPE_BYTE + encode_control(wire)
        await self.stream.send_all(frame_prefix(len(body)) + body)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        ident = self.next_id
        self.next_id += 1
        await self.send_control({"op": op, "id": ident, **fields})
        while True:
            wire = await self.control()
            if wire.get("id") == ident:
                return wire

    async def frame(self) -> bytearray | None:
        """The next frame, or None once the server has closed the connection."""
        with trio.fail_after(WAIT_S):
            while not self.pending:
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    return None
                self.decoder.receive_data(data)
                self.pending += self.decoder.frames()
        return self.pending.pop(0)

    async def control(self) -> dict[str, Any]:
        while True:
            frame = await self.frame()
            assert frame is not None, "the server closed the connection"
            if frame[0] == F.CONTROL:
                wire = decode_control(memoryview(frame)[1:])
                assert isinstance(wire, dict)
                return wire

    async def frames_for(self, seconds: float) -> list[bytearray]:
        """Every frame that arrives within ``seconds``."""
        out: list[bytearray] = []
        with trio.move_on_after(seconds):
            while True:
                frame = await self.frame()
                if frame is None:
                    break
                out.append(frame)
        return out


async def data_while_publishing(
    server: ts.Server,
    raw: RawClient,
    channel: str,
    values: list[Any],
    *,
    name: str | None = None,
    seconds: float = 0.5,
) -> list[bytearray]:
    """The DATA frames ``raw`` (subscribed to ``channel``) gets within ``seconds`` while a
    client (named ``name``) publishes ``values`` there."""
    assert server.tcp_url
    async with (
        ts.open_client(server.tcp_url, name=name) as writer,
        writer.publisher(channel) as pub,
    ):
        await pub.wait_for_readers()
        for value in values:
            await pub.send(value)
        await pub.wait_acknowledged()
        return [f for f in await raw.frames_for(seconds) if f[0] == F.DATA]


async def test_sub_end_has_no_error_key_on_a_clean_end(server: ts.Server) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        await owner.create_channel("c")
        raw = await RawClient.connect(server)
        sub = (await raw.request("subscribe", channel="c"))["result"]["sub"]
        await owner.delete_channel("c")
        end = await raw.control()
        assert end["op"] == "sub_end" and end["sub"] == sub
        assert "error" not in end


async def test_window_bytes_is_never_exceeded_except_by_a_single_larger_frame(
    server: ts.Server,
) -> None:
    # 3 MiB frames against the 8 MiB window, no credit returned: two frames arrive (6 MiB,
    # 6 MiB + 2 * 37 bytes counting each whole frame with its length prefix), never a third.
    assert server.tcp_url
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="big")
    reply = await raw.request("subscribe", channel="big", policy="drop_oldest", size=10)
    assert reply["result"]["window_bytes"] == SUBSCRIBE_WINDOW_BYTES == 8 * MIB
    data = await data_while_publishing(server, raw, "big", [bytes(3 * MIB)] * 4, seconds=1.0)
    assert len(data) == 2
    assert sum(len(f) + 4 for f in data) <= SUBSCRIBE_WINDOW_BYTES


async def test_drops_after_the_last_frame_arrive_as_a_lost_notice(server: ts.Server) -> None:
    assert server.tcp_url
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    reply = await raw.request("subscribe", channel="c", policy="drop_newest", size=1, window=1)
    sub = reply["result"]["sub"]
    async with ts.open_client(server.tcp_url) as writer, writer.publisher("c") as pub:
        await pub.wait_for_readers()
        for i in range(10):
            await pub.send(i)
        await pub.wait_acknowledged()
        # Then the writer stops. Return credit for each frame as a reader does.
        got: list[int] = []  # per DATA frame: its lost
        notices: list[int] = []
        parser = F.DataParser()
        while len(got) + sum(got) + sum(notices) < 10:
            frame = await raw.frame()
            assert frame is not None
            if frame[0] == F.DATA:
                got.append(parser.parse(frame)[0])
                await raw.stream.send_all(F.credit_frame(sub, 1))
            elif frame[0] == F.CONTROL:
                wire = decode_control(memoryview(frame)[1:])
                # seq: up to where the subscription is accounted for, the newest dropped.
                assert wire == {"op": "lost", "sub": sub, "lost": wire["lost"], "seq": 10}
                notices.append(wire["lost"])
    assert notices and notices[-1] > 0


async def test_the_python_reader_learns_of_trailing_drops(server: ts.Server) -> None:
    assert server.tcp_url
    async with (
        ts.open_client(server.tcp_url) as w,
        ts.open_client(server.tcp_url) as r,
    ):
        await w.create_channel("c")
        async with (
            r.subscribe("c", policy="drop_newest", size=1, window=1) as sub,
            w.publisher("c") as pub,
        ):
            await pub.wait_for_readers()
            for i in range(10):
                await pub.send(i)
            await pub.wait_acknowledged()
            received = 0
            with trio.fail_after(WAIT_S):  # no frame follows the drops: only the notice
                while received + sub.lost < 10:
                    await sub.receive()
                    received += 1
            assert received < 10 and received + sub.lost == 10


async def test_an_unknown_op_with_an_id_is_answered_and_the_connection_stays(
    server: ts.Server,
) -> None:
    raw = await RawClient.connect(server)
    answer = await raw.request("frobnicate", channel="c")
    assert answer["op"] == "error" and answer["type"] == "InvalidArgument"
    assert "frobnicate" in answer["message"]
    await raw.send_control({"op": "ping", "data": 7})
    assert await raw.control() == {"op": "pong", "data": 7}


async def test_a_map_without_a_string_op_counts_as_an_unknown_op(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    for ident, message in ((3, {"id": 3}), (4, {"op": 5, "id": 4})):
        await raw.send_control(message)
        answer = await raw.control()
        assert answer["op"] == "error" and answer["type"] == "InvalidArgument"
        assert answer["id"] == ident
    await raw.send_control({"op": "ping", "data": 7})
    assert await raw.control() == {"op": "pong", "data": 7}  # the connection stays


async def test_an_op_only_the_server_sends_is_a_protocol_error_not_an_unknown_op(
    server: ts.Server,
) -> None:
    # Known ops, so no "probe" answer: a client that sends them is broken.
    for op in ("welcome", "reply", "error", "pong", "item", "invoke"):
        raw = await RawClient.connect(server)
        await raw.send_control({"op": op, "id": 9})
        goodbye = await raw.control()
        assert goodbye["op"] == "goodbye" and goodbye["reason"].startswith("ProtocolError"), op
        assert await raw.frame() is None


async def test_credit_and_publish_for_ids_never_opened_are_protocol_errors(
    server: ts.Server,
) -> None:
    for frame in (F.credit_frame(99, 1), frame_prefix(13) + F.publish_head(99, 0.0)):
        raw = await RawClient.connect(server)
        await raw.stream.send_all(frame)
        goodbye = await raw.control()
        assert goodbye["op"] == "goodbye" and "never opened" in goodbye["reason"]


async def test_credit_and_publish_for_ended_ids_are_ignored(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    sub = (await raw.request("subscribe", channel="c"))["result"]["sub"]
    pub = (await raw.request("open_publisher", channel="c"))["result"]["pub"]
    await raw.request("unsubscribe", sub=sub)
    await raw.request("close_publisher", pub=pub)
    await raw.stream.send_all(
        F.credit_frame(sub, 1) + frame_prefix(14) + F.publish_head(pub, 0.0) + b"\xf6"
    )
    assert (await raw.request("stats"))["op"] == "reply"  # still connected


async def test_data_for_a_subscription_follows_its_reply(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="h", history=3)
    url = server.tcp_url or ""
    async with (  # a writer sends only while someone reads
        ts.open_client(url) as w,
        ts.open_client(url) as r,
        r.subscribe("h"),
        w.publisher("h") as pub,
    ):
        await pub.wait_for_readers()
        for i in range(3):
            await pub.send(i)
        await pub.wait_acknowledged()
    await raw.send_control({"op": "subscribe", "id": 50, "channel": "h"})
    kinds = [f[0] for f in await raw.frames_for(0.5)]
    assert kinds[0] == F.CONTROL and kinds[1:] == [F.DATA] * 3


async def test_open_publisher_takes_a_writer_key_of_1_to_64_bytes(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    for key in ("k", "é" * 32):
        answer = await raw.request("open_publisher", channel="c", writer=key)
        assert answer["op"] == "reply", answer
    for key in ("", "é" * 32 + "x"):
        answer = await raw.request("open_publisher", channel="c", writer=key)
        assert answer["op"] == "error" and answer["type"] == "InvalidArgument", answer
        assert "writer must be 1 to 64 bytes" in answer["message"]
    assert (await raw.request("stats"))["op"] == "reply"  # still connected


async def test_open_publisher_takes_a_claim_of_1_to_2_53_with_a_writer_key(
    server: ts.Server,
) -> None:
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    for claim in (1, 2**53):
        answer = await raw.request("open_publisher", channel="c", writer="k", claim=claim)
        assert answer["op"] == "reply", answer
    for claim in (0, -1, 2**53 + 1):
        answer = await raw.request("open_publisher", channel="c", writer="k", claim=claim)
        assert answer["op"] == "error" and answer["type"] == "InvalidArgument", answer
        assert f"claim must be 1 to {2**53}" in answer["message"]
    answer = await raw.request("open_publisher", channel="c", claim=1)
    assert answer["op"] == "error" and "send it with writer" in answer["message"], answer
    assert (await raw.request("stats"))["op"] == "reply"  # still connected


async def test_a_writer_is_told_whether_every_reader_is_lossless(server: ts.Server) -> None:
    # ``lossless``: every reader takes every frame (block, unbounded), so a writer may send
    # in larger bursts; told in open_publisher's reply and in each ``readers`` notice, also
    # when a retune changes a reader's policy (the count then stays the same).
    w = await RawClient.connect(server)
    r = await RawClient.connect(server)
    await w.request("create_channel", channel="c")
    opened = (await w.request("open_publisher", channel="c"))["result"]
    assert (opened["readers"], opened["lossless"]) == (0, True)

    async def notice() -> tuple[int, bool]:
        while True:
            wire = await w.control()
            if wire["op"] == "readers":
                assert wire["pub"] == opened["pub"]
                return wire["readers"], wire["lossless"]

    block = (await r.request("subscribe", channel="c", policy="block", size=10))["result"]
    assert await notice() == (1, True)
    lossy = (await r.request("subscribe", channel="c", policy="drop_oldest"))["result"]
    assert await notice() == (2, False)
    await r.request("retune", sub=lossy["sub"], policy="unbounded")
    assert await notice() == (2, True)
    await r.request("retune", sub=block["sub"], policy="drop_newest", size=10)
    assert await notice() == (2, False)
    await r.request("unsubscribe", sub=block["sub"])
    assert await notice() == (1, True)


async def test_a_resume_the_server_has_no_lease_of_numbers_publishers_apart(
    server: ts.Server,
) -> None:
    # The client's old publisher ids (which its reopens name) come from another node or an
    # earlier run: this connection's ids start high and at random, so none of them is
    # mistaken for one of its own by a later lease; below the start is "never opened".
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    ids: list[int] = []
    for unknown in ("unknown-1", "unknown-2"):  # (the one presented once leads to its lease)
        raw = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        await raw.send_control(
            {"op": "hello", "v": PROTOCOL_VERSION, "resume": True, "resume_token": unknown}
        )
        assert (await raw.control())["op"] == "welcome"
        await raw.request("create_channel", channel=f"c{len(ids)}")
        reply = await raw.request("open_publisher", channel=f"c{len(ids)}")
        ids.append(reply["result"]["pub"])
        await raw.stream.send_all(frame_prefix(13) + F.publish_head(1, 0.0))
        goodbye = await raw.control()
        assert goodbye["op"] == "goodbye" and "never opened" in goodbye["reason"]
    assert all(2**24 <= pub < 2**24 + 2**30 for pub in ids)
    assert ids[0] != ids[1]


async def test_a_resumed_connection_numbers_publishers_on_from_its_predecessors(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    token = "unknown"  # the first connection's predecessor was elsewhere: a random start
    ids: list[int] = []
    for _ in range(3):
        raw = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        hello = {"v": PROTOCOL_VERSION, "name": "w", "resume": True, "resume_token": token}
        await raw.send_control({"op": "hello", **hello})
        welcome = await raw.control()
        token = welcome["resume_token"]
        if not ids:
            await raw.request("create_channel", channel="c")
        ids.append((await raw.request("open_publisher", channel="c"))["result"]["pub"])
        await raw.request("close_publisher", pub=ids[-1])  # closed: its id is still used up
        await raw.stream.aclose()  # the connection drops; its lease waits for the token
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]


async def test_a_connection_replaced_by_its_resume_is_told_not_to_come_back(
    server: ts.Server,
) -> None:
    # docs/protocol.md section 8: a connection the server still believed alive when its
    # client resumed on another one is closed with reconnect: false. Without it (absent:
    # "try again"), a client still reading the old connection would resume in turn, and
    # the two would take the lease from each other for good.
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    old = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await old.send_control({"op": "hello", "v": PROTOCOL_VERSION, "name": "w", "resume": True})
    token = (await old.control())["resume_token"]
    new = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    hello = {"v": PROTOCOL_VERSION, "name": "w", "resume": True, "resume_token": token}
    await new.send_control({"op": "hello", **hello})
    assert (await new.control())["op"] == "welcome"
    goodbye = await old.control()
    assert goodbye["op"] == "goodbye" and goodbye["reason"].startswith("replaced")
    assert goodbye["reconnect"] is False
    assert await old.frame() is None  # then closed


async def test_a_welcome_has_a_resume_token_only_after_a_hello_with_resume(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    for hello, has_token in (({}, False), ({"resume": False}, False), ({"resume": True}, True)):
        raw = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        await raw.send_control({"op": "hello", "v": PROTOCOL_VERSION, **hello})
        welcome = await raw.control()
        assert ("resume_token" in welcome) is has_token, (hello, welcome)
        await raw.stream.aclose()


async def test_a_data_frame_is_30_bytes_with_its_prefix_plus_the_name_and_the_payload(
    server: ts.Server,
) -> None:
    # docs/protocol.md section 5 counts these bytes toward window_bytes.
    assert server.tcp_url
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    await raw.request("subscribe", channel="c")
    data = await data_while_publishing(server, raw, "c", [b"\x01\x02\x03"], name="nm")
    payload = b"".join(encode_payload(b"\x01\x02\x03"))
    assert len(data) == 1 and len(data[0]) + 4 == 30 + len("nm") + len(payload)


async def test_admin_without_a_token_is_an_auth_error_and_the_connection_stays(
    server: ts.Server,
) -> None:
    raw = await RawClient.connect(server)
    for fields in ({}, {"token": None}):
        reply = await raw.request("admin", action="check", **fields)
        assert reply["op"] == "error" and reply["type"] == "AuthError", reply
    assert (await raw.request("channels"))["op"] == "reply"


@pytest.mark.server_options(max_frame_bytes=4096)
async def test_a_reply_over_max_frame_bytes_is_a_frame_too_large_error(server: ts.Server) -> None:
    # Section 2: the server's frames keep to max_frame_bytes too (DATA aside). A listing of
    # 80 channels under 4 KiB was sent whole (14 KB), and a client holding to the page
    # closed the connection on it (a protocol implementer).
    raw = await RawClient.connect(server)
    for i in range(80):
        await raw.request("create_channel", channel=f"channel-with-a-long-name-{i:03}")
    answer = await raw.request("channels")
    assert answer["op"] == "error" and answer["type"] == "FrameTooLarge", answer
    assert "the answer to channels" in answer["message"], answer
    assert "raise max_frame_bytes on the server" in answer["message"], answer
    assert (await raw.request("stats"))["op"] == "reply"  # the connection stays
    async with ts.open_client(str(server.tcp_url)) as client:
        with pytest.raises(ts.FrameTooLarge, match="max_frame_bytes"):
            await client.channels()
        assert client.state == "open"


async def test_a_window_below_one_frame_is_refused(server: ts.Server) -> None:
    # Section 3: window is 1 or more, or null for the server's default.
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    for refused in (0, -3):
        answer = await raw.request("subscribe", channel="c", window=refused)
        assert answer["op"] == "error" and answer["type"] == "InvalidArgument", answer
        assert "window must be 1 or more" in answer["message"]
    asked: list[tuple[int | None, int]] = [(None, 100), (1, 1), (5000, 100)]
    for window, granted in asked:
        answer = await raw.request("subscribe", channel="c", window=window)
        assert answer["op"] == "reply" and answer["result"]["window"] == granted, answer


async def test_unsubscribe_of_a_sub_never_held_answers_null(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    answer = await raw.request("unsubscribe", sub=999)
    assert answer["op"] == "reply" and answer["result"] is None, answer
    assert (await raw.request("stats"))["op"] == "reply"  # still connected


async def test_a_request_before_hello_is_an_error_with_a_null_id_then_a_close(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    raw = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await raw.send_control({"op": "channels", "id": 1})
    answer = await raw.control()
    assert answer["op"] == "error" and answer["id"] is None, answer
    assert answer["type"] == "ProtocolError", answer
    assert await raw.frame() is None  # closed


async def test_a_second_hello_is_a_protocol_error(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    await raw.send_control({"op": "hello", "v": PROTOCOL_VERSION})
    answer = await raw.control()
    # The reason says what was wrong (it said "hello is not a message a client may send",
    # as if a hello were never allowed).
    assert answer["op"] == "goodbye" and "second hello" in answer["reason"], answer
    assert await raw.frame() is None


@pytest.mark.parametrize("op", ["welcome", "item", "sub_end", "reply", "pong"])
async def test_a_message_only_the_server_sends_is_named_so(server: ts.Server, op: str) -> None:
    # The reason named a missing field ("welcome lacks the field 'v'"), as if the message
    # would do with it; section 3 says such a message is known and a protocol error.
    raw = await RawClient.connect(server)
    await raw.send_control({"op": op, "id": 1})
    answer = await raw.control()
    assert answer == {
        "op": "goodbye",
        "reason": f"ProtocolError: {op} is not a message a client may send",
    }
    assert await raw.frame() is None


@pytest.mark.server_options(handshake_timeout_s=2, idle_timeout_s=3)
async def test_the_welcome_sends_the_timeouts_as_floats_even_when_configured_as_ints(
    server: ts.Server,
) -> None:
    # Section 2 says float; a server configured with integers sent CBOR integers.
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    raw = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await raw.send_control({"op": "hello", "v": PROTOCOL_VERSION})
    limits = (await raw.control())["limits"]
    assert limits["handshake_timeout_s"] == 2.0 and limits["idle_timeout_s"] == 3.0
    assert type(limits["handshake_timeout_s"]) is float, limits
    assert type(limits["idle_timeout_s"]) is float, limits


async def test_errors_quote_what_a_peer_sent_in_at_most_80_characters(server: ts.Server) -> None:
    raw = await RawClient.connect(server)
    await raw.request("create_channel", channel="c")
    sub = (await raw.request("subscribe", channel="c"))["result"]["sub"]
    for op, fields in [
        ("subscribe", {"channel": "c", "policy": "P" * 50_000}),
        ("retune", {"sub": sub, "policy": "P" * 50_000}),
    ]:
        answer = await raw.request(op, **fields)
        assert answer["type"] == "InvalidArgument", answer["message"][:200]
        assert "unknown policy 'PPP" in answer["message"]
        assert len(answer["message"]) < 200
    # A name is quoted whole up to the longest a channel may have (200), no further.
    longest = "n" * 200
    answer = await raw.request("subscribe", channel=longest)
    assert answer["type"] == "ChannelNotFound" and repr(longest) in answer["message"]
    # A longer one is no channel's name: the naming rule, quoted briefly (it was "no channel
    # named ...", which sent the user looking for a channel rather than at the name).
    for name in ("n" * 201, "n" * 5_000, "tab\there"):
        answer = await raw.request("subscribe", channel=name)
        assert answer["type"] == "InvalidArgument", answer
        assert "channel names are 1 to 200 printable characters" in answer["message"]
        assert len(answer["message"]) < 400


async def test_a_key_twice_in_a_control_map_is_a_protocol_error(server: ts.Server) -> None:
    # {"op": "channels", "id": 1, "id": 2} by hand: encoders never write a key twice.
    pairs = [("op", "channels"), ("id", 1), ("id", 2)]
    body = bytes([0xA0 + len(pairs)]) + b"".join(
        cbor2.dumps(key) + cbor2.dumps(value) for key, value in pairs
    )
    raw = await RawClient.connect(server)
    await raw.stream.send_all(frame_prefix(1 + len(body)) + F.CONTROL_TYPE_BYTE + body)
    goodbye = await raw.control()
    assert goodbye["op"] == "goodbye" and "a key twice" in goodbye["reason"]


async def burst_at_a_full_block_reader(
    server: ts.Server, channel: str, frames: int
) -> list[bytearray]:
    """A raw writer sends ``frames`` PUBLISH frames in one write to ``channel``, whose one
    reader is ``block, size=1, window=1`` and returns no credit: what the writer gets back."""
    reader = await RawClient.connect(server)
    writer = await RawClient.connect(server)
    try:
        await reader.request("create_channel", channel=channel)
        await reader.request("subscribe", channel=channel, policy="block", size=1, window=1)
        pub = (await writer.request("open_publisher", channel=channel))["result"]["pub"]
        burst = b"".join(
            framed(F.publish_head(pub, 0.0) + payload)
            for payload in (b"".join(encode_payload(i)) for i in range(frames))
        )
        await writer.stream.send_all(burst)
        return await writer.frames_for(0.5)
    finally:
        await reader.stream.aclose()
        await writer.stream.aclose()


def framed(body: bytes) -> bytes:
    return frame_prefix(len(body)) + body


def acknowledged(frames: list[bytearray]) -> int:
    return sum(F.parse_counter(f)[1] for f in frames if f[0] == F.PUB_ACK)


def goodbyes(frames: list[bytearray]) -> list[str]:
    wires = [decode_control(memoryview(f)[1:]) for f in frames if f[0] == F.CONTROL]
    return [w["reason"] for w in wires if w.get("op") == "goodbye"]


async def test_a_burst_at_a_full_block_reader_parks_all_but_the_going_frame(
    server: ts.Server,
) -> None:
    # docs/protocol.md, section 5: a block buffer's size counts its going frame until the
    # write after the read; frame 2 moves in after it, so frames 1 and 2 are acknowledged.
    back = await burst_at_a_full_block_reader(server, "c", 6)
    assert acknowledged(back) == 2
    assert goodbyes(back) == []


@pytest.mark.server_options(publish_window_frames=4)
async def test_a_burst_counts_the_frames_parked_until_the_write_against_the_window(
    server: ts.Server,
) -> None:
    # Frames 2-5 parked in the read: 4, the window, and the connection stays.
    back = await burst_at_a_full_block_reader(server, "five", 5)
    assert acknowledged(back) == 2 and goodbyes(back) == []
    # Frame 6 finds 4 parked (frame 2 among them, which the write would have made room
    # for): past the window.
    back = await burst_at_a_full_block_reader(server, "six", 6)
    assert acknowledged(back) == 2
    (reason,) = goodbyes(back)
    assert "sent past its credit window: this frame makes 5 frames unacknowledged" in reason


@pytest.mark.server_options(admin_token="admin-secret-for-tests")
@pytest.mark.parametrize("via_admin", [False, True])
async def test_reusing_the_id_of_a_call_in_flight_closes_the_connection(
    server: ts.Server, via_admin: bool
) -> None:
    # Section 3: ids are compared for calls in flight only. Sent through `admin`, the second
    # call was answered with an error of type ProtocolError and the connection stayed, while
    # the same call sent plainly closed it (a client written from the page).
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="slow") as provider:

        class Slow:
            async def rpc_wait(self) -> None:
                await trio.sleep_forever()

        provider.expose(Slow())
        raw = await RawClient.connect(server)
        call: dict[str, Any]
        if via_admin:
            value = {"provider": "slow", "method": "wait", "args": [], "kwargs": {}}
            call = {"op": "admin", "action": "call", "token": "admin-secret-for-tests"}
            call["value"] = value
        else:
            args = b"".join(encode_payload([[], {}]))
            call = {"op": "call", "provider": "slow", "method": "wait", "args": args}
        await raw.send_control({**call, "id": 5})
        await raw.send_control({**call, "id": 5})
        goodbye = await raw.control()
        assert goodbye["op"] == "goodbye", goodbye
        assert (
            goodbye["reason"] == "ProtocolError: request id 5 is in use by a call still in flight"
        )
        assert await raw.frame() is None


@pytest.mark.engines("memory")  # an ended channel's answer is one server's (README)
@pytest.mark.server_options(resume_grace_s=0.2)
async def test_a_resubscription_to_a_channel_that_ended_while_away_has_its_options_window(
    server: ts.Server,
) -> None:
    # Answered with a subscription that ends at once, its reply said window 1, where the
    # rule of section 3 gives min(1024, size) (a client written from the page alone).
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    reader = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await reader.send_control({"op": "hello", "v": PROTOCOL_VERSION, "name": "r", "resume": True})
    token = (await reader.control())["resume_token"]
    async with ts.open_client(server.tcp_url, name="w") as writer:
        await writer.create_channel("c")
        reply = (await reader.request("subscribe", channel="c", size=100))["result"]
        assert reply["window"] == 100
        await reader.stream.aclose()
        await writer.publish("c", 1)
    # The writer said goodbye (the channel ended for good), and the reader's grace ran out.
    with trio.fail_after(WAIT_S):
        while "c" in server.state.broker.channels or server.state.resume.kept_for_name("r"):  # noqa: ASYNC110
            await trio.sleep(0.05)
    again = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    hello = {"v": PROTOCOL_VERSION, "name": "r", "resume": True, "resume_token": token}
    await again.send_control({"op": "hello", **hello})
    assert (await again.control())["op"] == "welcome"
    resubscribed = await again.request(
        "subscribe",
        channel="c",
        size=100,
        since_epoch=reply["epoch"],
        since_seq=0,
        resume_sub=reply["sub"],
    )
    assert resubscribed["op"] == "reply", resubscribed
    assert resubscribed["result"]["window"] == 100
    assert resubscribed["result"]["resume"] == {"kind": "resumed", "recovered": 0}
    await again.stream.aclose()
