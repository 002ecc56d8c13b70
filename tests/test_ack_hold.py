"""A paced writer's acknowledgements are held for ACK_HOLD_S (one PUB_ACK covers several
frames, off the moment its DATA goes out), go with any other write to its connection, and
never hold back a flood, a writer near its window or one waiting for them.

The clock is trio's MockClock, standing still unless a test moves it: "held" then means held
for good until the jump, so no assertion depends on how fast the machine is."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import pytest
import trio
import trio.testing
from test_robustness import control, raw_session

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import encode_payload
from trio_stream._protocol.framing import FrameDecoder
from trio_stream._server.session import ACK_HOLD_S, ACK_HOLD_WINDOW_SHARE, ACK_QUIET_MIN_S

CHANNEL = "paced"
Items = list[tuple[str, object]]
REAL_TIME_LIMIT_S = 30.0


@pytest.fixture(autouse=True)
def real_time_limit(nursery: trio.Nursery, mock_clock: trio.testing.MockClock) -> None:
    """Fail a test still waiting after REAL_TIME_LIMIT_S, rather than hang: the mock clock
    stands still, so trio.fail_after never fires (nor the clients' own timeouts on the way
    out: the clock runs again before the failure)."""

    async def expire() -> None:
        await trio.to_thread.run_sync(time.sleep, REAL_TIME_LIMIT_S, abandon_on_cancel=True)
        mock_clock.rate = 1.0
        raise AssertionError(f"still waiting after {REAL_TIME_LIMIT_S} s of real time")

    nursery.start_soon(expire)


class RawWriter:
    """A hand-made writer: one publisher on CHANNEL, every frame it reads kept in order as
    ("ack", frames) or ("control", message)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.pub_id = 0
        self._decoder = FrameDecoder(max_frame_bytes=2**20)
        self._next_id = 1
        self._pending: deque[tuple[str, object]] = deque()  # read, not yet returned

    async def request(self, message_type: type[M.Request], **fields: object) -> object:
        request_id = self._next_id
        self._next_id += 1
        await self.stream.send_all(control(message_type(id=request_id, **fields)))
        for _kind, value in await self.read_until(lambda items: is_answer(items[-1][1])):
            if isinstance(value, M.Error):
                raise AssertionError(f"request refused: {value}")
            if isinstance(value, M.Reply) and value.id == request_id:
                return value.result
        raise AssertionError("no reply")

    async def read_until(self, done: Callable[[Items], bool]) -> Items:
        """Frames read in order until ``done(frames read so far)`` holds."""
        out: Items = []
        while True:
            while self._pending:
                out.append(self._pending.popleft())
                if done(out):
                    return out
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            self._decoder.receive_data(data)
            for frame in self._decoder.frames():
                if frame[0] == F.PUB_ACK:
                    self._pending.append(("ack", F.parse_counter(frame)[1]))
                else:
                    assert frame[0] == F.CONTROL, f"unexpected frame type {frame[0]}"
                    self._pending.append(("control", M.decode_message(frame)))

    def publish_frame(self, value: object) -> bytes:
        payload = b"".join(bytes(piece) for piece in encode_payload(value))
        body_bytes = F.PUBLISH_HEAD.size + len(payload)
        return F.publish_wire_head(body_bytes, self.pub_id, 0.0) + payload

    async def publish(self, value: object) -> None:
        await self.stream.send_all(self.publish_frame(value))


async def open_writer(server: ts.Server) -> RawWriter:
    writer = RawWriter(await raw_session(server))
    await writer.request(M.CreateChannel, channel=CHANNEL)
    result = await writer.request(M.OpenPublisher, channel=CHANNEL)
    assert isinstance(result, dict)
    writer.pub_id = result["pub"]
    return writer


def tcp_url(server: ts.Server) -> str:
    assert server.tcp_url
    return server.tcp_url


def acks(items: Items) -> list[int]:
    """The frame counts of the PUB_ACKs among ``items``, in order."""
    return [value for kind, value in items if kind == "ack" and isinstance(value, int)]


def is_answer(value: object) -> bool:
    return isinstance(value, M.Reply | M.Error)


def readers_notice(items: Items) -> bool:
    return isinstance(items[-1][1], M.Readers)


def acked(frames: int) -> Callable[[Items], bool]:
    """Read until PUB_ACKs for ``frames`` frames in all have come."""
    return lambda items: sum(acks(items)) >= frames


async def paced_frames(writer: RawWriter, sub: ts.Subscription, count: int, size: int = 10) -> None:
    """``count`` frames, each read by the server alone: the next goes once the reader has
    the previous one."""
    for seq in range(count):
        await writer.publish(bytes(size))
        message = await sub.receive()
        assert len(message.data) == size, seq


async def test_a_paced_writers_acks_are_held_and_go_with_the_next_write(
    server: ts.Server, mock_clock: trio.testing.MockClock
) -> None:
    writer = await open_writer(server)
    async with ts.open_client(tcp_url(server)) as client, client.subscribe(CHANNEL) as sub:
        await writer.read_until(readers_notice)
        await paced_frames(writer, sub, 3)
        # Without the hold, three PUB_ACKs of one frame each would come before the pong.
        await writer.stream.send_all(control(M.Ping(data="now")))
        items = await writer.read_until(acked(3))
    assert acks(items) == [3]
    assert isinstance(items[0][1], M.Pong)  # they came with the answer to the ping


async def test_held_acks_go_with_the_first_frame_after_the_hold(
    server: ts.Server, mock_clock: trio.testing.MockClock
) -> None:
    writer = await open_writer(server)
    period_s = 0.001
    frames = round(ACK_HOLD_S / period_s) + 1
    async with ts.open_client(tcp_url(server)) as client, client.subscribe(CHANNEL) as sub:
        await writer.read_until(readers_notice)
        for _ in range(frames):  # a writer at 1 kHz: each frame comes before the quiet time
            mock_clock.jump(period_s)
            await paced_frames(writer, sub, 1)
        items = await writer.read_until(acked(frames))
    assert acks(items) == [frames]


async def test_held_acks_go_by_themselves_when_the_writer_pauses(
    server: ts.Server, mock_clock: trio.testing.MockClock
) -> None:
    writer = await open_writer(server)
    async with ts.open_client(tcp_url(server)) as client, client.subscribe(CHANNEL) as sub:
        await writer.read_until(readers_notice)
        await paced_frames(writer, sub, 2)
        mock_clock.jump(ACK_QUIET_MIN_S)
        items = await writer.read_until(acked(2))
    assert acks(items) == [2]


async def test_frames_read_together_are_acknowledged_at_once(
    server: ts.Server, mock_clock: trio.testing.MockClock
) -> None:
    writer = await open_writer(server)
    async with ts.open_client(tcp_url(server)) as client, client.subscribe(CHANNEL) as sub:
        await writer.read_until(readers_notice)
        # One write of five frames: read as one batch (a flood's shape), never held. The
        # clock stands still, so a held ack would never come.
        await writer.stream.send_all(b"".join(writer.publish_frame(b"x") for _ in range(5)))
        for _ in range(5):
            await sub.receive()
        items = await writer.read_until(acked(5))
    assert sum(acks(items)) == 5


async def test_acks_go_at_once_when_held_frames_reach_their_share_of_the_window(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    window_bytes = 64 * 1024
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=0, publish_window_bytes=window_bytes
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    # Two lone frames of just over half the share each: the second makes them reach it.
    size = window_bytes // ACK_HOLD_WINDOW_SHARE // 2 + 1
    writer = await open_writer(server)
    async with ts.open_client(tcp_url(server)) as client, client.subscribe(CHANNEL) as sub:
        await writer.read_until(readers_notice)
        await paced_frames(writer, sub, 2, size=size)
        items = await writer.read_until(acked(2))
    assert acks(items) == [2]
    await server.aclose()


async def test_wait_acknowledged_does_not_wait_for_held_acks(
    server: ts.Server, mock_clock: trio.testing.MockClock
) -> None:
    async with (
        ts.open_client(tcp_url(server)) as writer_client,
        ts.open_client(tcp_url(server)) as reader_client,
    ):
        await writer_client.create_channel(CHANNEL)
        async with (
            writer_client.publisher(CHANNEL) as pub,
            reader_client.subscribe(CHANNEL) as sub,
        ):
            await pub.wait_for_readers()
            for seq in range(3):
                assert await pub.send(seq)
                assert (await sub.receive()).data == seq
            # The clock stands still: held acks would never come by themselves.
            await pub.wait_acknowledged()
