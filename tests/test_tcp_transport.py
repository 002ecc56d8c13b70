"""The TCP transport: large frames received in place, small ones sliced, peers that vanish."""

from __future__ import annotations

import socket as socket_module
import struct
from collections.abc import Sequence

import pytest
import trio
import trio.testing

import trio_stream as ts
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import frame_prefix
from trio_stream._transport import tcp
from trio_stream._transport.tcp import (
    COALESCE_MAX_PIECE,
    RECEIVE_LOW_WATER_MAX_BYTES,
    StreamTransport,
)


async def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two ends of a real TCP connection on loopback (recv_into and SO_RCVLOWAT need one)."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    accepted, _ = await listener.accept()
    listener.close()
    return trio.SocketStream(client), trio.SocketStream(accepted)


async def test_large_and_small_frames_arrive_whole_and_in_order_across_slow_writes() -> None:
    writer, reader = await socket_pair()
    transport = StreamTransport(reader, max_frame_bytes=64 * 2**20)
    big = bytes(range(256)) * (3 * 2**20 // 256)  # 3 MiB: beyond the low-water cap
    bodies = [b"\x01small", b"\x03" + big, b"\x01after", b"\x03" + big[:100_000]]
    wire = b"".join(frame_prefix(len(b)) + b for b in bodies)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def write_in_dribbles() -> None:
            for start in range(0, len(wire), 700_001):
                await writer.send_all(wire[start : start + 700_001])
                await trio.sleep(0.01)

        nursery.start_soon(write_in_dribbles)
        while len(got) < len(bodies):
            got += [bytes(f) for f in await transport.receive_frames()]
    assert got == bodies
    # Back to waking on every byte once the large frames are complete.
    assert transport._low_water == 1
    assert len(big) > RECEIVE_LOW_WATER_MAX_BYTES
    await writer.aclose()
    await transport.aclose()


async def test_a_peer_that_closes_inside_a_large_frame_is_connection_closed() -> None:
    writer, reader = await socket_pair()
    transport = StreamTransport(reader, max_frame_bytes=64 * 2**20)

    async def write_part_then_close() -> None:
        await writer.send_all(frame_prefix(2**20) + b"\x03" + bytes(300_000))
        await writer.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_part_then_close)
            with pytest.raises(ts.ConnectionClosed, match="closed the connection"):
                while True:
                    await transport.receive_frames()
    await transport.aclose()


async def test_large_frames_arrive_where_the_low_water_mark_cannot_be_set() -> None:
    # Windows refuses SO_RCVLOWAT: the transport must carry on without it.
    writer, reader = await socket_pair()

    class RefusingSocket:
        def __init__(self, inner: trio.socket.SocketType) -> None:
            self.inner = inner

        def setsockopt(self, *args: object) -> None:
            raise OSError("SO_RCVLOWAT is not supported here")

        def fileno(self) -> int:
            return self.inner.fileno()

        async def recv_into(self, buffer: memoryview) -> int:
            return await self.inner.recv_into(buffer)

    transport = StreamTransport(reader, max_frame_bytes=64 * 2**20)
    transport._socket = RefusingSocket(reader.socket)  # type: ignore[assignment]
    body = b"\x03" + bytes(range(256)) * 4096  # 1 MiB and a byte
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.send_all, frame_prefix(len(body)) + body)
        with trio.fail_after(5):
            while not got:
                got += [bytes(f) for f in await transport.receive_frames()]
    assert got == [body]
    await writer.aclose()
    await transport.aclose()


async def test_connections_sharing_the_receive_buffer_each_get_their_own_bytes() -> None:
    # Every plain TCP connection of a thread reads into one shared buffer: interleaved reads
    # of partial frames on many connections must never mix their bytes.
    pairs = [await socket_pair() for _ in range(4)]
    transports = [StreamTransport(reader, max_frame_bytes=2**20) for _, reader in pairs]
    expected = {
        i: [bytes([1, i]) + bytes([i]) * size for size in (10, 3000, 70_000, 5)]
        for i in range(len(pairs))
    }
    got: dict[int, list[bytes]] = {i: [] for i in expected}

    async def write(i: int, writer: trio.SocketStream) -> None:
        wire = b"".join(frame_prefix(len(b)) + b for b in expected[i])
        for start in range(0, len(wire), 997):  # pieces that cut frames anywhere
            await writer.send_all(wire[start : start + 997])
            await trio.lowlevel.checkpoint()

    async def read(i: int) -> None:
        while len(got[i]) < len(expected[i]):
            got[i] += [bytes(f) for f in await transports[i].receive_frames()]

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i, (writer, _) in enumerate(pairs):
                nursery.start_soon(write, i, writer)
                nursery.start_soon(read, i)
    assert got == expected
    for (writer, _), transport in zip(pairs, transports, strict=True):
        await writer.aclose()
        await transport.aclose()


async def test_after_a_read_that_empties_the_socket_the_next_waits_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A low-rate flow: one frame per read. Every read must find data; a read tried at once
    # after each frame would find nothing (a failed syscall per frame).
    reads: list[int] = []
    readv = tcp._READV
    assert readv is not None

    def counting_readv(fd: int, buffers: Sequence[memoryview]) -> int:
        try:
            received = readv(fd, buffers)
        except BlockingIOError:
            reads.append(-1)
            raise
        reads.append(received)
        return received

    monkeypatch.setattr(tcp, "_READV", counting_readv)
    writer, reader = await socket_pair()
    transport = StreamTransport(reader, max_frame_bytes=2**20)
    bodies = [b"\x01" + bytes([i]) * 50 for i in range(20)]

    async def write_slowly() -> None:
        for body in bodies:
            await writer.send_all(frame_prefix(len(body)) + body)
            await trio.testing.wait_all_tasks_blocked()  # the reader took it and waits again

    got: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_slowly)
            while len(got) < len(bodies):
                got += [bytes(f) for f in await transport.receive_frames()]
    assert got == bodies
    assert reads and -1 not in reads
    assert sum(reads) == sum(len(frame_prefix(len(b)) + b) for b in bodies)
    await writer.aclose()
    await transport.aclose()


async def test_a_read_that_fills_the_buffer_is_followed_by_one_at_once() -> None:
    # A burst larger than the shared buffer: the socket was not emptied, so the next read
    # is tried after a plain yield and finds the rest, whether or not more ever comes.
    writer, reader = await socket_pair()
    transport = StreamTransport(reader, max_frame_bytes=2**20)
    body = b"\x01" + bytes(1000)
    count = 3 * tcp.RECEIVE_BUFFER_BYTES // len(body)
    wire = (frame_prefix(len(body)) + body) * count
    got = 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send_all, wire)
            while got < count:
                got += len(await transport.receive_frames())
    assert got == count
    await writer.aclose()
    await transport.aclose()


async def test_send_now_writes_what_the_socket_takes_and_returns_the_rest_in_order() -> None:
    writer, reader = await socket_pair()
    writer.socket.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_SNDBUF, 4096)
    transport = StreamTransport(writer, max_frame_bytes=2**20)
    pieces: list[BytesLike] = [bytes([i]) * 1000 for i in range(256)]
    wire = b"".join(pieces)
    rest = transport.send_now(list(pieces))
    assert rest, "a 256 KB write cannot fit a 4 KB send buffer and a reader that waits"
    assert b"".join(rest) == wire[len(wire) - sum(len(p) for p in rest) :]
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def read_all() -> None:
            while len(got) < len(wire):
                got.extend(await reader.receive_some(65536))

        nursery.start_soon(read_all)
        await transport.send(rest)
    assert got == wire
    await transport.aclose()
    await reader.aclose()


async def test_send_now_leaves_large_pieces_to_send() -> None:
    writer, reader = await socket_pair()
    transport = StreamTransport(writer, max_frame_bytes=2**20)
    large: list[BytesLike] = [b"head", bytes(COALESCE_MAX_PIECE)]
    assert transport.send_now(large) == large
    assert transport.send_now([b"small"]) == []
    assert await reader.receive_some(100) == b"small"
    await transport.aclose()
    await reader.aclose()


async def test_direct_writes_are_offered_on_plain_tcp_only() -> None:
    writer, reader = await socket_pair()
    assert StreamTransport(writer, max_frame_bytes=2**20).direct_writer() is not None
    # Any stream other than a plain socket (TLS wraps one) writes through send() alone.
    wrapped = trio.StapledStream(writer, reader)
    assert StreamTransport(wrapped, max_frame_bytes=2**20).direct_writer() is None
    await writer.aclose()
    await reader.aclose()


async def test_send_now_to_a_vanished_peer_is_connection_closed() -> None:
    writer, reader = await socket_pair()
    reader.socket.setsockopt(
        socket_module.SOL_SOCKET, socket_module.SO_LINGER, struct.pack("ii", 1, 0)
    )
    await reader.aclose()  # RST, not FIN: the next write fails at once
    transport = StreamTransport(writer, max_frame_bytes=2**20)
    await trio.sleep(0.05)
    with pytest.raises(ts.ConnectionClosed):
        for _ in range(3):
            transport.send_now([b"x" * 100])
            await trio.sleep(0.01)
    await transport.aclose()
