"""A connection's writing (_server/sender.py): the sender task, and the direct writes that the
task dispatching a read makes itself (write_woken), over a real loopback TCP connection with a real
outbox; no wall-clock timing (the scheduler's own "everyone is blocked" is the only wait)."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing
from server_parts import FakeOwner

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import SEND_BATCH_BYTES, Outbox
from trio_stream._server.sender import Sender, write_woken
from trio_stream._server.state import ServerState
from trio_stream._transport.tcp import StreamTransport

SMALL_BUFFER_BYTES = 4096
BIG_BUFFER_BYTES = 4 << 20
FRAME_BYTES = 8_000  # a block reader's frame in the case that stalled
BIG_PING_BYTES = 30_000  # a piece under the transport's COALESCE_MAX_PIECE: written directly
MAX_BUFFERED_BYTES = 1 << 20
WAIT_S = 10  # a bound only: nothing here waits for the clock


class Connection(FakeOwner):
    """What the outbox sees of a connection; its wake-up is the sender's (set once the
    sender exists), as in Session."""

    def __init__(self) -> None:
        super().__init__(1)
        self.left: list[str] = []
        self.wake: Callable[[], None] = lambda: None

    def wake_sender(self) -> None:
        self.wake()


@dataclass
class Wire:
    state: ServerState
    outbox: Outbox
    sender: Sender
    connection: Connection
    peer: socket.socket  # the client's end: non-blocking, read without awaiting

    def read_now(self) -> bytes:
        """What the socket holds for the client right now (b"" when nothing)."""
        try:
            return self.peer.recv(1 << 20)
        except BlockingIOError:
            return b""

    async def read_some(self) -> bytes:
        """What the socket holds once it holds something."""
        await trio.lowlevel.wait_readable(self.peer)
        return self.read_now()

    async def read_all(self, nbytes: int) -> bytes:
        data = b""
        while len(data) < nbytes:
            await trio.testing.wait_all_tasks_blocked()
            got = self.read_now()
            if not got:
                await trio.lowlevel.wait_readable(self.peer)
            data += got
        return data


def messages(data: bytes) -> list[tuple[int, object]]:
    """The frames in ``data``: (type, decoded control message or (pub_id, frames))."""
    decoder = FrameDecoder(max_frame_bytes=1 << 24)
    decoder.receive_data(data)
    out: list[tuple[int, object]] = []
    for frame in decoder.frames():
        if frame[0] == F.CONTROL:
            out.append((F.CONTROL, M.decode_message(frame)))
        else:
            out.append((frame[0], F.parse_counter(frame)))
    return out


def data_frames(data: bytes) -> int:
    """How many whole DATA frames ``data`` holds."""
    decoder = FrameDecoder(max_frame_bytes=1 << 24)
    decoder.receive_data(data)
    return sum(frame[0] == F.DATA for frame in decoder.frames())


def ping_bytes(message: M.ControlMessage) -> int:
    return len(frame_prefix(0)) + len(M.encode_message(message))


def tcp_pair(buffer_bytes: int | None) -> tuple[socket.socket, socket.socket]:
    """A loopback TCP connection: (the server's end, the client's end, non-blocking)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        peer = socket.socket()
        if buffer_bytes is not None:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        peer.connect(listener.getsockname())
        ours, _ = listener.accept()
    if buffer_bytes is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
    peer.setblocking(False)
    return ours, peer


@asynccontextmanager
async def wire(
    send_buffer_bytes: int | None = None, state: ServerState | None = None
) -> AsyncIterator[Wire]:
    """A sender task running over one end of a TCP connection, idle once this yields;
    ``state``: the server's, shared with other wires (a new one by default)."""
    ours, peer = tcp_pair(send_buffer_bytes)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    if state is None:
        state = ServerState(ts.ServerConfig())
    connection = Connection()
    outbox = Outbox(
        connection,
        max_buffered_bytes=MAX_BUFFERED_BYTES,
        max_parked_bytes=MAX_BUFFERED_BYTES,
        clock=trio.current_time,
        detach=lambda reader: None,
    )
    sender = Sender(
        state,
        StreamTransport(stream, max_frame_bytes=1 << 24),
        outbox,
        lambda: connection.left.append("peer left"),
    )
    connection.wake = sender.wake
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            await trio.testing.wait_all_tasks_blocked()
            yield Wire(state, outbox, sender, connection, peer)
            nursery.cancel_scope.cancel()
    finally:
        peer.close()
        await stream.aclose()


async def test_frames_woken_during_a_dispatch_are_written_by_the_dispatching_task() -> None:
    async with wire() as w:
        w.state.direct_writes = []  # a reader task dispatches a read
        w.outbox.send(M.Ping(data=1))
        w.outbox.send(M.Ping(data=2))
        assert w.state.direct_writes == [w.sender]  # queued once, however often woken
        assert w.read_now() == b""  # nothing written while the dispatch goes on
        write_woken(w.state)
        assert w.state.direct_writes is None
        # No checkpoint since: the dispatching task wrote them itself, not the sender task.
        assert messages(w.read_now()) == [
            (F.CONTROL, M.Ping(data=1)),
            (F.CONTROL, M.Ping(data=2)),
        ]


async def test_outside_a_dispatch_a_wake_leaves_the_writing_to_the_sender_task() -> None:
    async with wire() as w:
        w.outbox.send(M.Ping(data="task"))
        assert w.read_now() == b""
        await trio.testing.wait_all_tasks_blocked()
        assert messages(w.read_now()) == [(F.CONTROL, M.Ping(data="task"))]


async def test_acknowledgements_alone_are_written_directly_after_every_other_woken_write() -> None:
    # A writer's PUB_ACK, woken first, still goes out after the DATA its publish woke on a
    # reader's connection, and neither waits for a sender task's turn.
    state = ServerState(ts.ServerConfig())
    async with wire(state=state) as writer, wire(state=state) as reader:
        order: list[str] = []
        for name, w in (("writer", writer), ("reader", reader)):
            send_now = w.sender._send_now
            assert send_now is not None

            def recording(
                pieces: list[BytesLike],
                name: str = name,
                send_now: Callable[[list[BytesLike]], list[BytesLike]] = send_now,
            ) -> list[BytesLike]:
                order.append(name)
                return send_now(pieces)

            w.sender._send_now = recording
        state.direct_writes = []
        writer.outbox.ack(pub_id=3, frames=2)
        reader.outbox.send(M.Ping(data="data"))
        assert state.direct_writes == [writer.sender, reader.sender]
        write_woken(state)
        assert order == ["reader", "writer"]
        # No checkpoint since: written by the dispatching task itself.
        assert messages(reader.read_now()) == [(F.CONTROL, M.Ping(data="data"))]
        assert messages(writer.read_now()) == [(F.PUB_ACK, (3, 2))]


async def test_frames_past_one_batch_are_left_to_the_sender_task_after_a_direct_write() -> None:
    # One publish read wakes a reader with more DATA than one write takes (SEND_BATCH_BYTES):
    # the dispatching task writes a batch, the sender task the rest, with no further read
    # (a block reader's writer waited for them: 32 frames of 8 KB went out per client ping).
    frames = 3 * SEND_BATCH_BYTES // FRAME_BYTES
    async with wire(send_buffer_bytes=BIG_BUFFER_BYTES) as w:  # the batch fits at once
        broker = w.state.broker
        channel = broker.create_channel("c", FakeOwner(0))
        writer_box = Outbox(
            FakeOwner(2),
            max_buffered_bytes=MAX_BUFFERED_BYTES,
            max_parked_bytes=MAX_BUFFERED_BYTES,
            clock=trio.current_time,
            detach=broker.unsubscribe,
        )
        writer = broker.open_publisher(channel, FakeOwner(2), writer_box, 1)
        reader = w.outbox.open_reader(
            channel, Policy.BLOCK, frames, 1, None, frames, 8 << 20, None, window_asked=frames
        )
        broker.subscribe(reader)
        w.state.direct_writes = []
        broker.publish_batch(writer, [1.0] * frames, [bytes(FRAME_BYTES)] * frames)
        write_woken(w.state)
        data = w.read_now()
        assert 0 < len(data) < frames * FRAME_BYTES  # one batch, written directly
        with trio.fail_after(WAIT_S):  # a bound only: without the sender, nothing more comes
            while data_frames(data) < frames:
                data += await w.read_some()
    assert data_frames(data) == frames


async def test_the_rest_of_a_direct_write_goes_out_before_anything_newer() -> None:
    async with wire(send_buffer_bytes=SMALL_BUFFER_BYTES) as w:
        pings = [M.Ping(data=bytes([i]) * BIG_PING_BYTES) for i in range(6)]
        total = sum(map(ping_bytes, pings)) + ping_bytes(M.Ping(data="last"))
        w.state.direct_writes = []
        for ping in pings:
            w.outbox.send(ping)
        write_woken(w.state)
        first = w.read_now()
        assert 0 < len(first) < total - ping_bytes(M.Ping(data="last"))  # the socket was full
        # A second dispatch while the rest waits for the sender: nothing is written around it.
        w.state.direct_writes = []
        w.outbox.send(M.Ping(data="last"))
        write_woken(w.state)
        data = first + await w.read_all(total - len(first))
    assert messages(data) == [(F.CONTROL, m) for m in [*pings, M.Ping(data="last")]]


async def test_a_direct_write_to_a_peer_that_left_closes_the_connection_without_raising() -> None:
    async with wire() as w:
        # Closed with a reset (linger 0): the server's next write fails at once.
        w.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.peer.close()
        w.state.direct_writes = []
        w.outbox.send(M.Ping(data=None))
        write_woken(w.state)  # the reading task is another client's: it must not raise
        assert w.connection.left == ["peer left"]


async def test_a_closing_sender_writes_nothing_directly_and_reports_drained_once_written() -> None:
    async with wire() as w:
        w.sender.finish(drain=False)
        w.state.direct_writes = []
        w.outbox.send(M.Goodbye(reason="bye"))
        write_woken(w.state)
        assert w.read_now() == b""  # the sender task writes it, then says drained
        with trio.testing.assert_checkpoints():
            await w.sender.wait_drained()
        assert messages(w.read_now()) == [(F.CONTROL, M.Goodbye(reason="bye"))]


async def test_a_wait_for_written_control_ends_when_a_control_batch_is_written() -> None:
    async with wire() as w:
        done: list[bool] = []

        async def wait() -> None:
            await w.sender.wait_control_written()
            done.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            w.outbox.ack(pub_id=1)  # not control: the waiter stays
            await trio.testing.wait_all_tasks_blocked()
            assert done == []
            w.outbox.send(M.Ping(data=None))
        assert done == [True]
        assert [kind for kind, _ in messages(w.read_now())] == [F.PUB_ACK, F.CONTROL]


async def test_control_past_one_batch_is_left_to_the_sender_task_after_a_direct_write() -> None:
    # A batch takes control messages up to SEND_BATCH_BYTES (their bytes count until it is
    # written); what a direct write leaves queued is the sender task's, woken for it, with
    # no further read (pongs of many pings read at once waited for the client's next frame).
    pings = [M.Ping(data=bytes([i % 256]) * 4000) for i in range(3 * SEND_BATCH_BYTES // 4000)]
    async with wire(send_buffer_bytes=BIG_BUFFER_BYTES) as w:  # the batch fits at once
        w.state.direct_writes = []
        for ping in pings:
            w.outbox.send(ping)
        write_woken(w.state)
        data = w.read_now()
        assert 0 < len(data) < sum(map(ping_bytes, pings))  # one batch, written directly
        with trio.fail_after(WAIT_S):  # a bound only: without the sender, nothing more comes
            while len(messages(data)) < len(pings):
                data += await w.read_some()
    assert [message for _, message in messages(data)] == pings
