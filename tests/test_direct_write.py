"""Frames written straight from the task that read them (Sender.write_direct) and frames
written by the connection's sender task reach the reader whole and in order, also when a
direct write fills the socket and the sender must finish it."""

from __future__ import annotations

import socket as socket_module

import trio
from client_parts import tcp_transport
from test_robustness import control, read_messages

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.frames import data_seq
from trio_stream._protocol.framing import FrameDecoder
from trio_stream._protocol.limits import PROTOCOL_VERSION

FRAMES = 120
FRAME_BYTES = 30_000  # under the transport's COALESCE_MAX_PIECE: eligible for direct writes
SMALL_RECEIVE_BUFFER_BYTES = 4096
WAIT_S = 30


async def slow_reader(port: int, name: str = "slow") -> trio.SocketStream:
    """A hand-made reader with a tiny receive buffer, subscribed (block) and not reading."""
    sock = trio.socket.socket()
    sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, SMALL_RECEIVE_BUFFER_BYTES)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=name)))
    await read_messages(stream, until=M.Welcome)
    await stream.send_all(control(M.Subscribe(id=1, channel="direct", policy="block", size=1000)))
    await read_messages(stream, until=M.Reply)
    return stream


async def test_a_direct_write_that_fills_the_socket_is_finished_by_the_sender_in_order(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    payloads = [bytes([i % 251]) * FRAME_BYTES for i in range(FRAMES)]
    with trio.fail_after(WAIT_S):
        async with ts.open_client(server.tcp_url) as client:
            await client.create_channel("direct")
            reader = await slow_reader(port)
            async with client.publisher("direct") as pub:
                await pub.wait_for_readers()
                # The reader reads nothing yet: its socket fills during the first writes
                # (the sender idle, so they are direct), and the sender takes the rest.
                for payload in payloads:
                    assert await pub.send(payload)
                await trio.sleep(0.2)
                decoder = FrameDecoder(max_frame_bytes=2**20)
                got: list[bytearray] = []
                while len(got) < FRAMES:
                    data = await reader.receive_some(65536)
                    assert data, "the server closed the connection"
                    decoder.receive_data(data)
                    got += [frame for frame in decoder.frames() if frame[0] != 0x01]
            await reader.aclose()
    assert [data_seq(frame) for frame in got] == list(range(1, FRAMES + 1))
    for frame, payload in zip(got, payloads, strict=True):
        assert bytes(frame).endswith(payload)


async def test_frames_at_low_rate_reach_every_reader_in_order_with_their_acks(
    server: ts.Server,
) -> None:
    # One frame at a time, with the senders idle in between: each goes out directly from the
    # publishing connection's reader task, DATA to both readers, then the writer's PUB_ACK.
    assert server.tcp_url
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as writer,
            ts.open_client(server.tcp_url) as reader,
        ):
            await writer.create_channel("slow")
            async with (
                reader.subscribe("slow", policy="drop_oldest", size=10) as lossy,
                reader.subscribe("slow", policy="block", size=10) as lossless,
                writer.publisher("slow") as pub,
            ):
                await pub.wait_for_readers(2)
                for value in range(50):
                    assert await pub.send(value)
                    assert (await lossy.receive()).data == value
                    assert (await lossless.receive()).data == value
                    await pub.wait_acknowledged()


async def test_a_paced_writer_writes_its_frames_itself_and_a_full_socket_loses_nothing(
    server: ts.Server,
) -> None:
    # Publisher.send writes a frame itself when the client's sender waits idle; with a tiny
    # send buffer the socket takes part of a 60 KB frame and the sender writes the rest.
    assert server.tcp_url
    payloads = [bytes([i]) * 60_000 for i in range(40)]
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as writer,
            ts.open_client(server.tcp_url) as reader,
        ):
            _, stream = tcp_transport(writer)
            stream.socket.setsockopt(
                socket_module.SOL_SOCKET, socket_module.SO_SNDBUF, SMALL_RECEIVE_BUFFER_BYTES
            )
            await writer.create_channel("paced")
            async with (
                reader.subscribe("paced", policy="block", size=100) as sub,
                writer.publisher("paced") as pub,
            ):
                await pub.wait_for_readers()
                for payload in payloads:
                    assert await pub.send(payload)
                    await trio.sleep(0.001)  # the sender idles between frames
                got = [(await sub.receive()).data for _ in payloads]
                await pub.wait_acknowledged()
    assert got == payloads


async def test_direct_writes_never_overtake_the_rest_of_an_earlier_one(server: ts.Server) -> None:
    # Two writers' reads are dispatched while three readers' sockets are full: a direct
    # write's rest waits for the sender, and nothing written directly may go out before it.
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    per_writer = 40
    got: list[list[bytearray]] = [[], [], []]

    async def sip(index: int, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(max_frame_bytes=2**20)
        while len(got[index]) < 2 * per_writer:
            data = await stream.receive_some(SMALL_RECEIVE_BUFFER_BYTES)
            assert data, "the server closed the connection"
            decoder.receive_data(data)
            got[index] += [frame for frame in decoder.frames() if frame[0] != 0x01]
            await trio.sleep(0.0005)

    async def write(client: ts.Client, tag: int) -> None:
        async with client.publisher("direct") as pub:
            await pub.wait_for_readers(3)
            for index in range(per_writer):
                assert await pub.send(bytes([tag, index]) * (FRAME_BYTES // 2))
                await trio.sleep(0.001)
            await pub.wait_acknowledged()

    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as first,
            ts.open_client(server.tcp_url) as second,
        ):
            await first.create_channel("direct")
            readers = [await slow_reader(port, f"slow-{index}") for index in range(3)]
            async with trio.open_nursery() as nursery:
                for index, stream in enumerate(readers):
                    nursery.start_soon(sip, index, stream)
                nursery.start_soon(write, first, 1)
                nursery.start_soon(write, second, 2)
            for stream in readers:
                await stream.aclose()
    for frames in got:
        assert [data_seq(frame) for frame in frames] == list(range(1, 2 * per_writer + 1))
        sent = {1: 0, 2: 0}
        for frame in frames:
            tag, index = frame[-2], frame[-1]
            assert bytes(frame).endswith(bytes([tag, index]) * (FRAME_BYTES // 2))
            assert index == sent[tag]
            sent[tag] += 1
