"""The outbox (one connection's send side) with a fake owner and a fake clock: no sockets."""

from __future__ import annotations

import pytest
from server_parts import World, decode, payload

from trio_stream import ProtocolError
from trio_stream._protocol import messages as M
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox

MIB = 2**20


def test_a_batch_holds_control_then_data_then_acks() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel)
    box.send(M.Pong(data=1))
    world.broker.publish(writer, 1.0, payload(1))
    sent = decode(box.next_batch())
    assert sent.order == ["control", "data"]
    assert sent.data == [(reader.sub_id, 0, 1, payload(1))]
    acks = decode(writer_box.next_batch())
    assert acks.control == [M.Readers(pub=1, readers=1)]
    assert acks.acks == [(1, 1)]


def test_frames_fit_the_byte_window_except_one_larger_than_it() -> None:
    # 3 MiB frames against an 8 MiB window: two are in flight, never a third (9 MiB).
    world = World(max_buffered_bytes=64 * MIB)
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, size=10, window_bytes=8 * MIB)
    for i in range(4):
        world.broker.publish(writer, 1.0, payload(i, 3 * MIB))
    assert drain(box) == [1, 2]
    box.credit(reader.sub_id, 1)
    assert drain(box) == [3]
    # A frame larger than the whole window still goes, alone.
    big = world.channel("big")
    _, big_writer = world.writer(big)
    big_reader = world.reader(box, big, size=10, window_bytes=1 * MIB)
    world.broker.publish(big_writer, 1.0, payload(9, 2 * MIB))
    world.broker.publish(big_writer, 1.0, payload(10, 2 * MIB))
    assert drain(box) == [1]
    box.credit(big_reader.sub_id, 1)
    assert drain(box) == [2]


def drain(box: Outbox) -> list[int]:
    """The seqs of every DATA frame the outbox writes until it has nothing more."""
    seqs: list[int] = []
    while True:
        batch = box.next_batch()
        if not batch.pieces:
            return seqs
        seqs += [seq for _, _, seq, _ in decode(batch).data]


def test_credit_for_a_subscription_never_opened_is_a_protocol_error() -> None:
    world = World()
    channel = world.channel()
    _, box = world.connection()
    reader = world.reader(box, channel)
    with pytest.raises(ProtocolError, match="never opened"):
        box.credit(reader.sub_id + 1, 1)
    world.broker.unsubscribe(reader)
    box.credit(reader.sub_id, 1)  # ended: the credit was in flight, ignored


def test_unbounded_reader_over_the_memory_bound_is_ended_with_limit_exceeded() -> None:
    world = World(max_buffered_bytes=10_000)
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    quiet = world.channel("quiet")
    reader = world.reader(box, channel, Policy.UNBOUNDED, None, window=1)
    other = world.reader(box, quiet)
    for i in range(20):
        world.broker.publish(writer, 1.0, payload(i, 1000))
    sent = decode(box.next_batch())
    (end,) = [m for m in sent.control if isinstance(m, M.SubEnd)]
    assert (end.sub, end.error) == (reader.sub_id, "LimitExceeded")
    assert box.buffered_bytes == 0
    assert reader.sub_id not in box.readers and other.sub_id in box.readers
    assert channel.readers == 0


def test_block_readers_take_at_most_half_of_the_bound_and_one_frame_each() -> None:
    world = World(max_buffered_bytes=10_000)
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 100, window=1)
    for i in range(10):
        world.broker.publish(writer, 1.0, payload(i, 1000))
    # One in flight, the rest up to half of 10 000 bytes buffered; the others are parked.
    decode(box.next_batch())
    assert box.block_bytes <= 5_000
    assert len(reader.parked) > 0
    assert writer.parked_frames == len(reader.parked)


def test_a_clean_end_sends_the_buffered_frames_then_sub_end_without_error() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, window=1)
    for i in range(3):
        world.broker.publish(writer, 1.0, payload(i))
    world.broker.delete_channel(channel, "gone")
    got = []
    for _ in range(3):
        sent = decode(box.next_batch())
        got += sent.data
        box.credit(reader.sub_id, 1)
    assert [seq for _, _, seq, _ in got] == [1, 2, 3]
    assert sent.order == ["data", "control"]
    (end,) = sent.control
    assert end == M.SubEnd(sub=reader.sub_id, reason="the channel ended")
    assert "error" not in M.to_wire(end)


def test_drops_after_the_last_frame_are_reported_in_a_lost_notice() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.DROP_NEWEST, 2, window=2)
    for i in range(2):
        world.broker.publish(writer, 1.0, payload(i))
    assert [seq for _, _, seq, _ in decode(box.next_batch()).data] == [1, 2]
    for i in range(2, 7):  # 2 in flight, 2 buffered, 3 dropped; then the writer stops
        world.broker.publish(writer, 1.0, payload(i))
    box.credit(reader.sub_id, 2)
    sent = decode(box.next_batch())
    assert [(seq, lost) for _, lost, seq, _ in sent.data] == [(3, 0), (4, 0)]
    assert sent.order == ["data", "data", "control"]
    assert sent.control == [M.Lost(sub=reader.sub_id, lost=3)]
    # Reported once: the next frame kept carries no old loss.
    world.broker.publish(writer, 1.0, payload(8))
    box.credit(reader.sub_id, 2)
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == [(8, 0)]


def test_max_rate_holds_the_newest_frame_until_its_interval_on_the_injected_clock() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    world.reader(box, channel, max_rate=10.0)
    for i in range(5):
        world.broker.publish(writer, 1.0, payload(i))
    first = box.next_batch()
    assert [seq for _, _, seq, _ in decode(first).data] == [1]
    later = box.next_batch()
    assert decode(later).data == [] and later.deadline == pytest.approx(world.clock.now + 0.1)
    world.clock.now += 0.1
    assert [seq for _, _, seq, _ in decode(box.next_batch()).data] == [5]


def test_control_bytes_count_until_written() -> None:
    world = World()
    _, box = world.connection()
    box.send(M.Pong(data="x" * 100))
    queued = box.control_bytes
    assert queued > 100
    batch = box.next_batch()
    assert box.control_bytes == queued  # being written
    box.written(batch)
    assert box.control_bytes == 0


def test_a_block_reader_shrunk_below_what_it_holds_takes_no_parked_frame() -> None:
    # A retune to a smaller size leaves the buffer over its size (room below zero): the
    # parked frames must stay parked, and their writer held back, until it is under again.
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 10, window=10)
    reader.credit = 0
    for i in range(15):
        world.broker.publish(writer, 1.0, payload(i))
    assert (len(reader.buffer), len(reader.parked), writer.parked_frames) == (10, 5, 5)
    reader.retune(Policy.BLOCK, 2, 1, None, 2, None)
    assert (len(reader.buffer), len(reader.parked), writer.parked_frames) == (10, 5, 5)
    world.broker.publish_batch(writer, [1.0] * 3, [payload(i) for i in range(15, 18)])
    assert (len(reader.buffer), len(reader.parked)) == (10, 8)
