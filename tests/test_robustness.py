"""Bad input costs only the connection that sent it, with a reason; everyone else carries on."""

from __future__ import annotations

import gc
import socket
import struct
import weakref
from typing import Any

import cbor2
import pytest
import trio

import trio_stream as ts
from trio_stream._client import Client
from trio_stream._protocol import messages as M
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import FrameDecoder, RunTaker, T, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION

# What the server may queue for a client that does not read: its high-water mark plus the
# one answer that crossed it (an answer here is a clients() listing, well under 64 KiB).
SERVER_CONTROL_BOUND_BYTES = 2**20 + 2**16


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


async def raw_session(server: ts.Server) -> trio.SocketStream:
    """A hand-made client that has completed the handshake."""
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=None)))
    welcome = await read_messages(stream, until=M.Welcome)
    assert isinstance(welcome[-1], M.Welcome)
    return stream


async def read_messages(
    stream: trio.SocketStream, until: type[M.ControlMessage] | None = None
) -> list[M.ControlMessage]:
    """CONTROL messages until ``until`` arrives or the server closes the connection."""
    decoder = FrameDecoder(max_frame_bytes=2**20)
    out: list[M.ControlMessage] = []
    with trio.fail_after(60):  # longer than the server's handshake timeout
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return out
            decoder.receive_data(data)
            for frame in decoder.frames():
                if frame[0] == 0x01:
                    out.append(M.decode_message(frame))
                    if until is not None and isinstance(out[-1], until):
                        return out


def framed(body: bytes) -> bytes:
    return frame_prefix(len(body)) + body


BAD_FRAMES = {
    "unknown frame type": framed(b"\x09ab"),
    "DATA from a client": framed(b"\x03" + b"\x00" * 29),
    "garbage CBOR": framed(b"\x01\xff\xff\xff"),
    "CBOR with trailing bytes": framed(b"\x01" + cbor2.dumps({"op": "ping"}) + b"\x00"),
    "unknown op": framed(b"\x01" + cbor2.dumps({"op": "nuke"})),
    "truncated PUBLISH": framed(b"\x02\x00\x00"),
    "PUBLISH to a publisher never opened": framed(struct.pack(">BId", 2, 7, 0.0) + b"\xf6"),
    "oversize declared length": struct.pack(">I", 2**31),
}


@pytest.mark.parametrize("bad", list(BAD_FRAMES), ids=list(BAD_FRAMES))
async def test_bad_frame_closes_only_that_connection_with_a_reason(
    server: ts.Server, bad: str
) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="good") as good:
        await good.create_channel("c")
        async with good.subscribe("c") as sub, good.publisher("c") as pub:
            stream = await raw_session(server)
            await stream.send_all(BAD_FRAMES[bad])
            messages = await read_messages(stream)  # until the server closes it
            goodbye = [m for m in messages if isinstance(m, M.Goodbye)]
            assert goodbye, messages
            assert "Error" in goodbye[0].reason or "Large" in goodbye[0].reason
            await stream.aclose()
            # The other client never noticed.
            await pub.wait_for_readers()
            assert await pub.send("still here")
            with trio.fail_after(10):
                assert (await sub.receive()).data == "still here"


async def test_oversize_frame_is_refused_without_reading_its_body(server: ts.Server) -> None:
    stream = await raw_session(server)
    # Declare 1 GiB and send nothing more: the server must answer at once, not wait for it.
    await stream.send_all(struct.pack(">I", 2**30))
    messages = await read_messages(stream)
    assert any(isinstance(m, M.Goodbye) and "FrameTooLarge" in m.reason for m in messages)


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [(0, "ProtocolError: empty frame"), (2**31, "FrameTooLarge: frame of 2147483648 bytes")],
)
async def test_a_bad_frame_pipelined_behind_the_hello_comes_after_the_welcome(
    server: ts.Server, prefix: int, reason: str
) -> None:
    # The hello and a bad length prefix in one read: the hello was refused for the frame
    # after it (an `error` at the handshake), as if the hello itself were bad.
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    hello = control(M.Hello(v=PROTOCOL_VERSION, name="piped"))
    await stream.send_all(hello + struct.pack(">I", prefix))
    messages = await read_messages(stream)
    assert [type(m) for m in messages] == [M.Welcome, M.Goodbye], messages
    goodbye = messages[1]
    assert isinstance(goodbye, M.Goodbye) and goodbye.reason.startswith(reason)


async def test_handshake_must_come_first_and_in_time(
    server: ts.Server, autojump_clock: trio.testing.MockClock
) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    messages = await read_messages(silent)  # autojump: the handshake timeout passes
    assert any(isinstance(m, M.Error) and "handshake" in m.message for m in messages)

    rude = await trio.open_tcp_stream("127.0.0.1", port)
    await rude.send_all(control(M.Ping(data=1)))
    messages = await read_messages(rude)
    assert any(isinstance(m, M.Error) and "hello" in m.message for m in messages)


@pytest.mark.parametrize(
    "truncated",
    [struct.pack(">I", 100)[:3], struct.pack(">I", 100) + b"\x01\xa1"],
    ids=["in its length prefix", "in its body"],
)
@pytest.mark.parametrize("after_hello", [False, True], ids=["at the hello", "later"])
async def test_a_frame_cut_short_by_a_half_close_is_answered_with_a_reason(
    server: ts.Server, truncated: bytes, after_hello: bool
) -> None:
    # A peer that shuts down only its writing side (nc -N, a hand-made client) can still read
    # why its last frame did not count; the server had closed without a word.
    assert server.tcp_url
    if after_hello:
        stream = await raw_session(server)
    else:
        port = int(server.tcp_url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(truncated)
    await stream.send_eof()
    messages = await read_messages(stream)
    reasons = [m.reason for m in messages if isinstance(m, M.Goodbye)]
    reasons += [m.message for m in messages if isinstance(m, M.Error)]
    assert len(reasons) == 1, messages
    assert f"the middle of a frame (the first {len(truncated)} bytes of it came" in reasons[0]


async def test_wrong_protocol_version_is_refused_clearly(server: ts.Server) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(control(M.Hello(v=99)))
    messages = await read_messages(stream)
    assert any(isinstance(m, M.Error) and "upgrade" in m.message for m in messages)


async def test_client_names_are_unique(url: str) -> None:
    async with ts.open_client(url, name="daq"):
        with pytest.raises(ts.NameInUse, match="pick another name"):
            async with ts.open_client(url, name="daq"):
                pass


async def test_unreachable_server_is_a_clear_connection_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    for url in (f"tcp://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"):
        # The refusal itself and the next step, not trio's "all attempts to connect failed".
        with pytest.raises(ts.ConnectionClosed) as refused:
            async with ts.open_client(url):
                pass
        assert str(refused.value).startswith(f"cannot connect to {url}: Connection refused (")
        assert "start one with 'trio-stream serve'" in str(refused.value)
    with pytest.raises(ts.InvalidArgument, match="use tcp://host:port"):
        async with ts.open_client("http://example"):
            pass


class _FailingResolver(trio.abc.HostnameResolver):
    """getaddrinfo fails with one EAI_* code: no network or name server in the test."""

    def __init__(self, code: int) -> None:
        self.code = code

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(self.code, "from the test's resolver")

    async def getnameinfo(self, *args: Any) -> Any:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (socket.EAI_NONAME, "(check the name)"),
        (socket.EAI_AGAIN, "now (no answer from the name server: check the network)"),
    ],
)
async def test_a_host_that_does_not_resolve_is_named(code: int, advice: str) -> None:
    # getaddrinfo's codes are no errno values: this once read "Unknown error -2".
    previous = trio.socket.set_custom_hostname_resolver(_FailingResolver(code))
    try:
        for url in ("tcp://nosuchhost.invalid:9870", "ws://nosuchhost.invalid:9871/ws"):
            with pytest.raises(ts.ConnectionClosed) as failed, trio.fail_after(10):
                async with ts.open_client(url):
                    pass
            assert str(failed.value) == (
                f"cannot connect to {url}: cannot resolve host 'nosuchhost.invalid' {advice}"
            )
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def test_server_shutdown_tells_clients_why(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, reconnect=False) as client:
        await client.create_channel("c")
        async with client.subscribe("c") as sub:
            await server.aclose()
            with pytest.raises(ts.ConnectionClosed, match="shutting down"), trio.fail_after(10):
                await sub.receive()


async def flooder(server: ts.Server, name: str) -> trio.SocketStream:
    """A hand-made client with a tiny receive buffer, so that what it does not read backs up
    on the server quickly instead of in its kernel."""
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=name)))
    welcome = await read_messages(stream, until=M.Welcome)
    assert isinstance(welcome[-1], M.Welcome)
    return stream


def queued_control_bytes(server: ts.Server, name: str) -> int:
    session = server.state.by_name[name]
    return sum(len(frame) for frame in session.outbox._control)


async def test_a_client_that_never_reads_its_answers_is_not_read_either(
    server: ts.Server,
) -> None:
    # Requests whose answers are far larger than they are, sent by a client that never reads:
    # the server stops reading that client once about 1 MiB of answers wait for it, and
    # everyone else carries on.
    requests = 60_000  # ~1.5 MiB of requests asking for ~25 MiB of answers
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="good") as good:
        await good.create_channel("c")
        stream = await flooder(server, "flood")
        await stream.send_all(control(M.OpenPublisher(id=1, channel="c")))
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, queued_control_bytes(server, "flood"))
                await trio.sleep(0.001)

        async with trio.open_nursery() as tasks:
            tasks.start_soon(watch)
            batch = b"".join(control(M.ListClients(id=i)) for i in range(2, 1002))
            with trio.move_on_after(2):  # the server stops reading us: then our sends stall
                for _ in range(requests // 1000):
                    await stream.send_all(batch)
            await trio.sleep(0.5)  # what the server would still read, it reads now
            assert peak <= SERVER_CONTROL_BOUND_BYTES, peak
            assert server.state.by_name["flood"].outbox.control_bytes <= SERVER_CONTROL_BOUND_BYTES
            # The flooded connection has a writer; readers come and go on its channel: only the
            # newest count waits for it, not one notice per change.
            queued = len(server.state.by_name["flood"].outbox._control)
            for _ in range(200):
                async with good.subscribe("c"):
                    pass
            assert len(server.state.by_name["flood"].outbox._control) <= queued + 1
            flood_box = server.state.by_name["flood"].outbox
            assert list(flood_box._readers_news) == [server.state.broker.channels["c"]]
            # Meanwhile another client is served as usual.
            with trio.fail_after(10):
                assert "flood" in {c.name for c in await good.clients()}
                async with good.subscribe("c") as sub, good.publisher("c") as pub:
                    await pub.wait_for_readers()
                    assert await pub.send("still here")
                    assert (await sub.receive()).data == "still here"
            tasks.cancel_scope.cancel()
        await stream.aclose()


class _GoneAfterGoodbye:
    """A transport whose peer said goodbye and then went: every write fails."""

    kind = "tcp"
    remote = "127.0.0.1:1"
    progress = 0

    async def receive_frames(self) -> list[bytearray]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def receive_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, pieces: list[BytesLike]) -> None:
        raise ts.ConnectionClosed("connection lost: [Errno 32] Broken pipe")

    async def aclose(self) -> None:
        pass

    async def abort(self) -> None:
        pass


async def test_a_write_that_fails_after_the_goodbye_reports_the_servers_reason() -> None:
    # Which task notices a closed connection first is a race; the error must not depend on it.
    # Here the sender does (a write fails before the reader sees the end of the stream).
    client = Client(["tcp://127.0.0.1:1"], reconnect=None)
    client._transport = _GoneAfterGoodbye()
    client._connected = True  # as after the handshake
    client._on_goodbye(M.Goodbye(reason="the server is shutting down"))
    client._send_control(M.Ping(data=None))
    with trio.fail_after(10):
        await client._sender()
    with pytest.raises(ts.ConnectionClosed) as info:
        client._check_open()
    assert str(info.value) == "the server closed the connection: the server is shutting down"
    assert info.value.reason == "the server is shutting down"


async def test_publish_runs_in_one_read_are_delivered_up_to_a_bad_frame_among_them(
    server: ts.Server,
) -> None:
    # One write: PUBLISH, PUBLISH, a ping, PUBLISH, PUBLISH, a truncated PUBLISH. The server
    # batches each run of PUBLISH frames; the ping between them is answered in its place,
    # every whole frame before the truncated one is delivered in order, and only then is
    # the writer's connection closed, with a reason.
    def publish(pub_id: int, value: str) -> bytes:
        return framed(struct.pack(">BId", 2, pub_id, 1.0) + cbor2.dumps(value))

    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="reader") as reader:
        writer = await raw_session(server)
        await writer.send_all(control(M.CreateChannel(id=1, channel="c")))
        await read_messages(writer, until=M.Reply)
        await writer.send_all(control(M.OpenPublisher(id=2, channel="c")))
        opened = (await read_messages(writer, until=M.Reply))[-1]
        assert isinstance(opened, M.Reply)
        pub_id = opened.result["pub"]
        async with reader.subscribe("c") as sub:
            await writer.send_all(
                publish(pub_id, "a")
                + publish(pub_id, "b")
                + control(M.Ping(data=7))
                + publish(pub_id, "c")
                + publish(pub_id, "d")
                + framed(b"\x02\x00\x00")
            )
            messages = await read_messages(writer)  # until the server closes it
            assert any(isinstance(m, M.Pong) and m.data == 7 for m in messages)
            goodbye = [m for m in messages if isinstance(m, M.Goodbye)]
            assert goodbye and "truncated PUBLISH" in goodbye[0].reason
            with trio.fail_after(10):
                assert [(await sub.receive()).data for _ in range(4)] == ["a", "b", "c", "d"]
    await writer.aclose()


async def test_a_resumed_session_is_freed_without_the_garbage_collector() -> None:
    # The lease a resumed connection took over named that connection (its `taker`) while
    # the connection named the lease (its resume_lease): a cycle, kept for good by the
    # server's frozen garbage (gc_policy.py), with all the session held (a review).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, resume_grace_s=5.0)
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None
        port = int(server.tcp_url.rsplit(":", 1)[1])
        first = await trio.open_tcp_stream("127.0.0.1", port)
        await first.send_all(control(M.Hello(v=PROTOCOL_VERSION, name="cyc", resume=True)))
        welcome = (await read_messages(first, until=M.Welcome))[-1]
        assert isinstance(welcome, M.Welcome) and welcome.resume_token is not None
        await first.send_all(control(M.Subscribe(id=1, channel="$stats")))
        await read_messages(first, until=M.Reply)
        first.socket.close()  # a cut: its subscription is kept
        with trio.fail_after(10):
            while server.state.stats()["kept_subscriptions"] == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        second = await trio.open_tcp_stream("127.0.0.1", port)
        hello = M.Hello(
            v=PROTOCOL_VERSION, name="cyc", resume=True, resume_token=welcome.resume_token
        )
        await second.send_all(control(hello))
        await read_messages(second, until=M.Welcome)
        session = weakref.ref(server.state.by_name["cyc"])
        await second.send_all(control(M.Restored(id=2)))
        await read_messages(second, until=M.Reply)
        await second.send_all(control(M.Goodbye(reason="bye")))
        await read_messages(second)
        gc.disable()
        try:
            with trio.fail_after(10):
                while session() is not None:  # noqa: ASYNC110 - its tasks ending
                    await trio.sleep(0.01)
        finally:
            gc.enable()
