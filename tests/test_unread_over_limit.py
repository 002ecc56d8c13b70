"""A subscription over its connection's memory bound ends while its client reads nothing.

The readers that take a connection past ``max_buffered_bytes`` were ended by the connection's
sender, on its next batch; a sender blocked writing a large frame to a client that reads
nothing never got there, so their frames stayed buffered for good, the channel counted the
reader, and every later frame was lost to it (an operator: 269 MB held for a reader of 1 MB
frames, for as long as its pings kept it connected).
"""

from __future__ import annotations

import socket

import pytest
import trio

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION

WAIT_S = 20
MAX_BUFFERED_BYTES = 16 * 2**20
# Larger than the kernel will ever take for a reader that reads nothing (tcp_wmem's largest
# send buffer is 4 MiB on Linux by default): the sender's write of the first one blocks.
FRAME_BYTES = 8 * 2**20


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


async def deaf_subscriber(port: int, channel: str) -> trio.SocketStream:
    """A raw client subscribed ``unbounded`` to ``channel``, whose socket takes next to
    nothing (a 4 KiB receive buffer, set before it connects): it never reads."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        control(M.Hello(v=PROTOCOL_VERSION, name="deaf"))
        + control(M.Subscribe(id=1, channel=channel, policy="unbounded", size=1))
    )
    return stream


async def readers_of(client: ts.Client, channel: str) -> int:
    (info,) = [c for c in await client.channels() if c.name == channel]
    return info.readers


@pytest.mark.server_options(max_buffered_bytes=MAX_BUFFERED_BYTES, handshake_timeout_s=60)
async def test_a_reader_that_reads_nothing_is_ended_when_over_the_bound(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    async with ts.open_client(server.tcp_url, name="writer") as writer:
        await writer.create_channel("big")
        deaf = await deaf_subscriber(port, "big")
        async with writer.publisher("big") as pub:
            await pub.wait_for_readers()
            # The first frame blocks the sender's write; the next ones take the connection
            # past its bound (the fourth crosses it).
            for i in range(6):
                await pub.send(bytes([i]) * FRAME_BYTES)
            with trio.fail_after(WAIT_S):
                # (The channel's count, and the writer's.)
                while await readers_of(writer, "big") or pub.readers:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            # Its buffered frames went with it: what stays is the frame being written.
            stats = await writer.stats()
            assert stats.buffered_bytes < MAX_BUFFERED_BYTES, stats
            state = server.state
            (session,) = [s for s in state.sessions.values() if s.name == "deaf"]
            assert not session.outbox.readers and session.outbox.buffered_bytes == 0
            # A frame published now is lost to nobody: the channel has no reader left.
            lost = (await writer.stats()).frames_lost
            await pub.send(b"after")
            assert (await writer.stats()).frames_lost == lost

        # Once it reads, it gets the frame that was on its way, then the end, which says why.
        decoder = FrameDecoder(max_frame_bytes=2**30)
        ends: list[M.SubEnd] = []
        with trio.fail_after(WAIT_S):
            while not ends:
                data = await deaf.receive_some(2**20)
                assert data, "the server closed the connection"
                decoder.receive_data(data)
                for frame in decoder.frames():
                    if frame[0] == F.CONTROL:
                        message = M.decode_message(frame)
                        if isinstance(message, M.SubEnd):
                            ends.append(message)
        (end,) = ends
        assert (end.sub, end.error) == (1, "LimitExceeded"), end
        assert "max_buffered_bytes" in end.reason
        await deaf.aclose()
