"""Fakes for the server's I/O-free parts (broker, outbox, scheduler): an owner that records
what an outbox tells it, a clock the test moves, and a decoder for the pieces of a batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.array_view import View
from trio_stream._protocol.framing import FrameDecoder
from trio_stream._server.broker import Broker, Channel, Writer
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Batch, Outbox, Reader

MAX_BUFFERED_BYTES = 1 << 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeOwner:
    """A connection as the outbox sees it: records wake-ups and hold deadlines."""

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.name = f"client-{client_id}"
        self.wakes = 0
        self.parked_rooms = 0
        self.hold_deadlines: list[float] = []
        self.ended_writers: list[int] = []

    def wake_sender(self) -> None:
        self.wakes += 1

    def parked_room(self) -> None:
        self.parked_rooms += 1

    def hold_started(self, deadline: float) -> None:
        self.hold_deadlines.append(deadline)

    def writer_ended(self, pub_id: int) -> None:
        self.ended_writers.append(pub_id)


@dataclass
class Sent:
    """A batch decoded as a client would read it."""

    data: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # sub, lost, seq, pay
    control: list[M.ControlMessage] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "data", "control" or "ack" per frame


def decode(batch: Batch) -> Sent:
    decoder = FrameDecoder(max_frame_bytes=1 << 30)
    for piece in batch.pieces:
        decoder.receive_data(piece)
    sent = Sent()
    parser = F.DataParser()
    for frame in decoder.frames():
        if frame[0] == F.DATA:
            lost, seq, _time, _sender, offset = parser.parse(frame)
            sent.data.append((F.data_sub_id(frame), lost, seq, bytes(frame[offset:])))
            sent.order.append("data")
        elif frame[0] == F.CONTROL:
            sent.control.append(M.decode_message(frame))
            sent.order.append("control")
        else:
            assert frame[0] == F.PUB_ACK
            sent.acks.append(F.parse_counter(frame))
            sent.order.append("ack")
    return sent


class World:
    """A broker, a clock, and connections (outboxes) made on demand."""

    def __init__(self, max_buffered_bytes: int = MAX_BUFFERED_BYTES, **broker: Any) -> None:
        self.clock = FakeClock()
        self.broker = Broker(clock=self.clock, **broker)
        self.max_buffered_bytes = max_buffered_bytes
        self._next_id = 1

    def connection(self, max_parked_bytes: int | None = None) -> tuple[FakeOwner, Outbox]:
        owner = FakeOwner(self._next_id)
        self._next_id += 1
        outbox = Outbox(
            owner,
            max_buffered_bytes=self.max_buffered_bytes,
            max_parked_bytes=max_parked_bytes or self.max_buffered_bytes,
            clock=self.clock,
            detach=self.broker.unsubscribe,
        )
        return owner, outbox

    def channel(self, name: str = "c", **options: Any) -> Channel:
        return self.broker.create_channel(
            name, None if name.startswith("$") else FakeOwner(0), **options
        )

    def writer(self, channel: Channel, name: str | None = None) -> tuple[Outbox, Writer]:
        owner, outbox = self.connection()
        if name is not None:
            owner.name = name
        return outbox, self.broker.open_publisher(channel, owner, outbox, 1)

    def reader(
        self,
        outbox: Outbox,
        channel: Channel,
        policy: Policy = Policy.DROP_OLDEST,
        size: int | None = 100,
        *,
        every: int = 1,
        max_rate: float | None = None,
        window: int = 1024,
        window_bytes: int = 8 << 20,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
    ) -> Reader:
        reader = outbox.open_reader(
            channel,
            policy,
            size,
            every,
            max_rate,
            window,
            window_bytes,
            block_timeout,
            sender=None if sender is None else F.sender_field(sender),
            view=view,
            window_asked=window,
        )
        self.broker.subscribe(reader)
        return reader


def payload(i: int, size: int = 10) -> bytes:
    return i.to_bytes(4, "big") + bytes(max(size - 4, 0))


def channel_with(
    history: int, produced: int, frame_bytes: int = 10, **world: Any
) -> tuple[World, Channel, Outbox, Writer]:
    """A channel keeping ``history`` frames, ``produced`` frames (payloads 0, 1, ...)
    published on it by one writer: the world, the channel, the writer's outbox and writer."""
    world_ = World(**world)
    channel = world_.channel(history=history)
    writer_box, writer = world_.writer(channel)
    for i in range(produced):
        world_.broker.publish(writer, 1.0, payload(i, frame_bytes))
    return world_, channel, writer_box, writer
