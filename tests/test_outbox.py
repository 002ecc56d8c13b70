"""The outbox (one connection's send side) with a fake owner and a fake clock: no sockets."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from server_parts import Sent, World, decode, payload

from trio_stream import ProtocolError
from trio_stream._protocol import messages as M
from trio_stream._protocol.frames import SharedData, sender_field
from trio_stream._server.broker import Channel, Writer
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox, Reader

MIB = 2**20


def lone_reader(
    policy: Policy, size: int | None, *, window: int = 1024, window_bytes: int = 8 * MIB
) -> tuple[World, Channel, Outbox, Reader]:
    """One reader alone on its connection, with room to spare under the memory bound."""
    world = World(max_buffered_bytes=64 * MIB)
    channel = world.channel()
    _, box = world.connection()
    reader = world.reader(box, channel, policy, size, window=window, window_bytes=window_bytes)
    return world, channel, box, reader


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


def test_a_reader_that_comes_or_goes_tells_each_connection_once_not_each_writer() -> None:
    # 1,000 writers on one connection: a subscribe woke it 1,000 times and queued 1,000
    # entries there, and 1,000 connections of 1,000 (the default limits) made it a million
    # per subscribe. Now one entry per connection and channel; the batch tells each writer.
    world = World()
    channel = world.channel()
    owner, box = world.connection()
    writers = [
        world.broker.open_publisher(channel, owner, box, pub_id) for pub_id in range(1, 1001)
    ]
    other_owner, other_box = world.connection()
    other = world.broker.open_publisher(channel, other_owner, other_box, 7)
    _, reader_box = world.connection()
    for _ in range(3):  # readers come and go before the writers' senders run
        world.reader(reader_box, channel)
    world.broker.unsubscribe(world.reader(reader_box, channel))
    assert owner.wakes == 5 and list(box._readers_news) == [channel]
    world.broker.close_publisher(writers[0])  # closed meanwhile: not told
    box.forget_writer(writers[0].pub_id)
    told = decode(box.next_batch()).control
    assert told == [M.Readers(pub=pub_id, readers=3) for pub_id in range(2, 1001)]
    assert decode(other_box.next_batch()).control == [M.Readers(pub=other.pub_id, readers=3)]
    assert not box.next_batch().pieces  # told once, with the newest count
    # A deleted channel's writers end; a reader count is never told after its pub_end.
    world.reader(reader_box, channel)
    world.broker.delete_channel(channel, "deleted")
    after = decode(box.next_batch()).control
    assert not [m for m in after if isinstance(m, M.Readers)]
    assert len([m for m in after if isinstance(m, M.PubEnd)]) == 999


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
    # What the bound dropped is said (ten frames of ~1,000 bytes fill 10,000).
    # With the ten it lost before, as its `lost` notice counts them (below).
    assert "and the 10 frames waiting for it were dropped (20 lost with those" in end.reason
    assert "use a bounded policy" in end.reason and "max_buffered_bytes" in end.reason
    # ... and counted lost, where every other loss is (they counted nowhere: an audit), with
    # the ten published after it went over, before the sender ended it; and told.
    assert channel.lost == reader.lost == 20
    assert M.Lost(sub=reader.sub_id, lost=20, seq=20) in sent.control
    assert box.buffered_bytes == 0
    assert reader.sub_id not in box.readers and other.sub_id in box.readers
    assert channel.readers == 0


@pytest.mark.parametrize("unbounded_first", [True, False])
def test_the_reader_that_buffers_the_most_is_ended_not_the_one_that_crossed_the_bound(
    unbounded_first: bool,
) -> None:
    # With the unbounded reader subscribed first, the rings beside it took the frames that
    # crossed the bound and were ended for its bytes, while it lived on (a notebook user).
    world = World(max_buffered_bytes=10_000)
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    if unbounded_first:
        greedy = world.reader(box, channel, Policy.UNBOUNDED, None, window=1)
    ring = world.reader(box, channel, Policy.DROP_OLDEST, 2, window=1)
    if not unbounded_first:
        greedy = world.reader(box, channel, Policy.UNBOUNDED, None, window=1)
    for i in range(12):
        world.broker.publish(writer, 1.0, payload(i, 1000))
    sent = decode(box.next_batch())
    (end,) = [m for m in sent.control if isinstance(m, M.SubEnd)]
    assert (end.sub, end.error) == (greedy.sub_id, "LimitExceeded")
    assert greedy.sub_id not in box.readers and ring.sub_id in box.readers
    # The ring goes on, its losses counted on its frames as always.
    for _ in range(3):
        ring.add_credit(1)
        sent = decode(box.next_batch())
    world.broker.publish(writer, 1.0, payload(12, 1000))
    ring.add_credit(1)
    sent = decode(box.next_batch())
    assert [(sub, seq) for sub, _, seq, _ in sent.data] == [(ring.sub_id, 13)]
    assert ring.lost + 4 == 13  # 13 published: 4 delivered (1 at first, then 3), the rest lost
    assert box.buffered_bytes < box.max_buffered_bytes


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
    assert end == M.SubEnd(sub=reader.sub_id, reason="gone")  # the channel's end reason
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
    # Accounted up to seq 7, the newest dropped: a resume continues after it (protocol.md 8).
    assert sent.control == [M.Lost(sub=reader.sub_id, lost=3, seq=7)]
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


def test_a_batch_takes_control_up_to_its_bytes_and_nothing_overtakes_the_rest() -> None:
    # A batch took every queued control message, and they all counted against the client
    # until the whole batch was written: a stream's values that the caller had read long
    # since (and returned credit for) still counted, and a stream within its window was
    # ended for the memory bound (8 values of 4 MB against 32 MiB, an RPC user).
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel)
    big = "x" * (box.batch_bytes // 2)
    for i in range(5):
        box.send(M.Pong(data=[i, big]))
    world.broker.publish(writer, 1.0, payload(1))
    queued = box.control_bytes
    pongs: list[int] = []
    order: list[str] = []
    while (batch := box.next_batch()).pieces:
        assert batch.control_bytes <= box.batch_bytes or len(batch.pieces) == 1
        assert box.control_bytes == queued  # counted until written, and only that batch
        box.written(batch)
        queued -= batch.control_bytes
        sent = decode(batch)
        pongs += [m.data[0] for m in sent.control if isinstance(m, M.Pong)]
        order += sent.order
    assert pongs == [0, 1, 2, 3, 4]
    assert order.index("data") > 4  # the DATA waited for every control message before it
    assert box.control_bytes == 0
    assert reader.sent == 1


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


# -- lossy readers: ``size`` counts only the frames the sender does not write at once --------
FRAME_BYTES = SharedData(1, 1.0, sender_field("client-1"), payload(0, 100)).nbytes


def flood(world: World, channel: Channel, count: int, start: int = 0) -> Writer:
    """One read's worth of 100-byte frames from one writer, fanned out at once."""
    writers = channel.publishers
    writer = next(iter(writers)) if writers else world.writer(channel)[1]
    payloads = [payload(start + i, 100) for i in range(count)]
    world.broker.publish_batch(writer, [1.0] * count, payloads)
    return writer


def sent_of(box: Outbox) -> tuple[list[tuple[int, int]], list[int]]:
    """(seq, lost) of every DATA frame the outbox writes until it has nothing more, and the
    counts of its ``lost`` notices."""
    data: list[tuple[int, int]] = []
    notices: list[int] = []
    while (batch := box.next_batch()).pieces:
        sent = decode(batch)
        data += [(seq, lost) for _, lost, seq, _ in sent.data]
        notices += [m.lost for m in sent.control if isinstance(m, M.Lost)]
    return data, notices


def test_a_read_within_unused_credit_is_kept_whole_for_the_sender() -> None:
    # 600 frames at once at drop_oldest size=100 with 1024 frames of credit: a fan-out frame
    # by frame, its sender running between frames, would have written every one of them.
    world, channel, box, reader = lone_reader(Policy.DROP_OLDEST, 100, window=1024)
    flood(world, channel, 600)
    assert len(reader.buffer) == 600 and reader.going() == 600
    data, notices = sent_of(box)
    assert data == [(seq, 0) for seq in range(1, 601)] and notices == []
    assert (reader.lost, channel.lost, box.buffered_bytes) == (0, 0, 0)


def test_a_read_without_credit_keeps_the_newest_size_and_counts_the_rest_lost() -> None:
    world, channel, box, reader = lone_reader(Policy.DROP_OLDEST, 100, window=1024)
    flood(world, channel, 1024)
    assert len(sent_of(box)[0]) == 1024 and reader.credit == 0
    flood(world, channel, 600, start=1024)
    assert [frame.seq for frame in reader.buffer.items()] == list(range(1525, 1625))
    assert (reader.lost, channel.lost) == (500, 500)
    assert sent_of(box) == ([], [])
    box.credit(reader.sub_id, 1024)
    data, _ = sent_of(box)
    assert data == [(1525, 500)] + [(seq, 0) for seq in range(1526, 1625)]


def test_the_byte_window_bounds_what_is_kept_beyond_size() -> None:
    # Ten frames fit the byte window: those ten go at once, and 100 stay behind them.
    world, channel, box, reader = lone_reader(
        Policy.DROP_OLDEST, 100, window_bytes=10 * FRAME_BYTES
    )
    flood(world, channel, 600)
    assert reader.going() == 10 and len(reader.buffer) == 110
    assert reader.lost == 490
    data, _ = sent_of(box)
    assert data == [(seq, 0) for seq in range(1, 11)]
    box.credit(reader.sub_id, 10)
    data, _ = sent_of(box)
    assert data == [(501, 490)] + [(seq, 0) for seq in range(502, 511)]


def test_a_frame_larger_than_the_byte_window_is_kept_for_the_sender_alone() -> None:
    world, channel, _, reader = lone_reader(Policy.DROP_OLDEST, 1, window_bytes=FRAME_BYTES // 2)
    flood(world, channel, 5)
    assert reader.going() == 1
    assert [frame.seq for frame in reader.buffer.items()] == [1, 5] and reader.lost == 3


@pytest.mark.parametrize(
    ("policy", "kept", "lost_on_first_after"),
    [
        # 50 go at once; of the other 550: the newest 100 (drop_oldest), the oldest 100
        # (drop_newest, whose loss rides on the next frame admitted), or the last part of
        # a clear every 101st frame (clear: 550 - 100 = 450 past the room, 50 left).
        (Policy.DROP_OLDEST, list(range(1, 51)) + list(range(501, 601)), 450),
        (Policy.DROP_NEWEST, list(range(1, 151)), 0),
        (Policy.CLEAR, list(range(1, 51)) + list(range(551, 601)), 500),
    ],
)
def test_each_lossy_policy_applies_behind_the_frames_its_credit_lets_out(
    policy: Policy, kept: list[int], lost_on_first_after: int
) -> None:
    world, channel, box, reader = lone_reader(policy, 100, window=50)
    flood(world, channel, 600)
    assert [frame.seq for frame in reader.buffer.items()] == kept
    assert reader.lost == channel.lost == 600 - len(kept)
    data, _ = sent_of(box)
    assert data == [(seq, 0) for seq in range(1, 51)]
    box.credit(reader.sub_id, 50)
    data, notices = sent_of(box)
    assert data[0] == (kept[50], lost_on_first_after)
    box.credit(reader.sub_id, 50)
    data, notices = sent_of(box)
    # Every frame lost is reported once: on a frame, or in a notice once nothing carries it.
    assert notices == ([450] if policy is Policy.DROP_NEWEST else [])


def test_a_retune_keeps_the_frames_going_and_shrinks_what_follows_them() -> None:
    world, channel, box, reader = lone_reader(Policy.DROP_OLDEST, 100, window=1024)
    flood(world, channel, 600)
    reader.retune(Policy.DROP_OLDEST, 10, 1, None, 1024, None)  # all 600 still go
    assert len(reader.buffer) == 600 and reader.lost == 0
    reader.retune(Policy.DROP_OLDEST, 10, 1, None, 20, None)  # 20 go now; 10 behind them
    assert [frame.seq for frame in reader.buffer.items()] == list(range(1, 21)) + list(
        range(591, 601)
    )
    assert reader.lost == channel.lost == 570
    assert box.buffered_bytes == 30 * FRAME_BYTES
    data, _ = sent_of(box)
    assert data == [(seq, 0) for seq in range(1, 21)]
    box.credit(reader.sub_id, 20)
    assert sent_of(box)[0][0] == (591, 570)


def test_frames_going_count_toward_the_memory_bound() -> None:
    # What the sender has not written yet is memory: past max_buffered_bytes, a lossy reader
    # is ended as before, and nothing over the bound stays buffered.
    world = World(max_buffered_bytes=50 * FRAME_BYTES)
    channel = world.channel()
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.DROP_OLDEST, 10, window=1024)
    flood(world, channel, 40)
    assert len(reader.buffer) == 40 and not reader.doomed
    flood(world, channel, 40, start=40)
    sent = decode(box.next_batch())
    (end,) = [m for m in sent.control if isinstance(m, M.SubEnd)]
    assert (end.sub, end.error) == (reader.sub_id, "LimitExceeded")
    assert box.buffered_bytes == 0 and channel.readers == 0
    # A ring reader is told to shrink its size, not to take the policy it has.
    assert "smaller size or window (size 10 of" in end.reason, end.reason
    assert "bounded policy" not in end.reason


class Model:
    """A lossy reader as the rule says, frame by frame: each frame is offered to a buffer of
    ``size`` (the policy applies when full), then the sender writes what the credit and the
    byte window allow (a frame larger than the room left too, while no credit is due for
    what is in flight: less than a quarter of the window, in frames and in bytes as the
    client counts them)."""

    def __init__(self, policy: Policy, size: int, every: int, window: int, window_bytes: int):
        self.policy, self.size, self.every = policy, size, every
        self.window, self.window_bytes = window, window_bytes
        self.credit = window
        self.inflight: list[int] = []
        self.buffer: list[list[int]] = []  # [seq, nbytes, lost before it]
        self.skipped = 0  # drop_newest: lost, owed to the next frame admitted
        self.seen = 0
        self.sent: list[tuple[int, int]] = []
        self.notices: list[int] = []
        self.lost = 0

    def offer(self, seq: int, nbytes: int) -> None:
        self.seen += 1
        if (self.seen - 1) % self.every:
            return  # decimation, not loss
        if len(self.buffer) < self.size:
            self.buffer.append([seq, nbytes, self.skipped])
            self.skipped = 0
        elif self.policy is Policy.DROP_NEWEST:
            self.skipped += 1
            self.lost += 1
        elif self.policy is Policy.DROP_OLDEST:
            old = self.buffer.pop(0)
            self.lost += 1
            if self.buffer:
                self.buffer[0][2] += old[2] + 1
                self.buffer.append([seq, nbytes, self.skipped])
            else:
                self.buffer.append([seq, nbytes, self.skipped + old[2] + 1])
            self.skipped = 0
        else:  # clear
            owed = sum(entry[2] + 1 for entry in self.buffer)
            self.lost += len(self.buffer)
            self.buffer = [[seq, nbytes, self.skipped + owed]]
            self.skipped = 0
        self.send()

    def send(self) -> None:
        taken = 0
        while self.buffer and self.credit > 0:
            seq, nbytes, lost = self.buffer[0]
            if sum(self.inflight) + nbytes > self.window_bytes and self.credit_due():
                break
            self.buffer.pop(0)
            self.sent.append((seq, lost))
            self.inflight.append(nbytes)
            self.credit -= 1
            taken += 1
        if taken and not self.buffer and self.skipped:
            self.notices.append(self.skipped)
            self.skipped = 0

    def credit_due(self) -> bool:
        frames = len(self.inflight)
        client_bytes = sum(self.inflight) - 4 * frames  # without the length prefixes
        return frames >= math.ceil(self.window / 4) or client_bytes >= math.ceil(
            self.window_bytes / 4
        )

    def add_credit(self, frames: int) -> None:
        del self.inflight[:frames]
        self.credit = min(self.credit + frames, self.window)
        self.send()


LOSSY_READER = st.tuples(
    st.sampled_from([Policy.DROP_OLDEST, Policy.DROP_NEWEST, Policy.CLEAR]),
    st.integers(1, 8),  # size
    st.sampled_from([1, 1, 1, 2]),  # every
    st.integers(1, 12),  # window (frames)
    st.sampled_from([60, 150, 400, 8 * MIB]),  # window_bytes
    st.booleans(),  # selects by sender (the fan-out's per-frame path)
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.lists(st.integers(1, 120), min_size=1, max_size=40)),
        st.tuples(st.just("credit"), st.integers(1, 12)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LOSSY_READER, min_size=1, max_size=3), STEPS)
@example([(Policy.DROP_OLDEST, 3, 1, 5, 8 * MIB, False)], [("read", [10] * 30)])
@example([(Policy.CLEAR, 2, 1, 4, 150, False)], [("read", [10] * 20), ("credit", 2)])
# A frame that did not fit beside one in flight, with no credit due yet, was counted as
# not going: the policy dropped it (counted), where the sender would have sent it alone.
@example([(Policy.DROP_OLDEST, 1, 1, 5, 150, False)], [("read", [1, 74, 1])])
@example([(Policy.DROP_NEWEST, 1, 1, 5, 150, False)], [("read", [1, 74, 1])])
def test_batched_fan_out_keeps_what_the_frame_by_frame_model_keeps(
    readers: list[tuple[Policy, int, int, int, int, bool]],
    steps: list[tuple[str, object]],
) -> None:
    world = World(max_buffered_bytes=64 * MIB)
    channel = world.channel()
    _, writer = world.writer(channel)
    overhead = SharedData(1, 1.0, writer.sender, b"").nbytes
    boxes: list[tuple[Outbox, Reader, Model]] = []
    for policy, size, every, window, window_bytes, selects in readers:
        _, box = world.connection()
        reader = world.reader(
            box,
            channel,
            policy,
            size,
            every=every,
            window=window,
            window_bytes=window_bytes,
            sender="client-1" if selects else None,
        )
        boxes.append((box, reader, Model(policy, size, every, window, window_bytes)))
    offered = 0
    delivered = [0] * len(boxes)
    reported = [0] * len(boxes)
    for kind, arg in steps:
        if kind == "read":
            sizes = arg
            assert isinstance(sizes, list)
            seqs = range(channel.seq + 1, channel.seq + 1 + len(sizes))
            world.broker.publish_batch(writer, [1.0] * len(sizes), [bytes(n) for n in sizes])
            offered += len(sizes)
            for _, _, model in boxes:
                for seq, n in zip(seqs, sizes, strict=True):
                    model.offer(seq, overhead + n)
        for index, (box, reader, model) in enumerate(boxes):
            if kind == "credit":
                frames = min(int(str(arg)), len(model.inflight))
                box.credit(reader.sub_id, frames)
                model.add_credit(frames)
            data, notices = sent_of(box)
            delivered[index] += len(data)
            reported[index] += sum(lost for _, lost in data) + sum(notices)
            model_sent = model.sent
            model.sent = []
            assert data == model_sent
            assert notices == model.notices
            model.notices = []
            assert [frame.seq for frame in reader.buffer.items()] == [e[0] for e in model.buffer]
            assert reader.lost == model.lost
            # The outbox's byte counters follow every path (batch, overflow, turn).
            assert box.buffered_bytes == sum(frame.nbytes for frame in reader.buffer.items())
            assert box.totals.buffered_bytes == box.buffered_bytes and box.block_bytes == 0
    # Nothing is lost without being counted, nor counted twice: give every reader all the
    # credit it needs, and every frame offered was delivered, decimated or reported lost.
    for index, (box, reader, _) in enumerate(boxes):
        while True:
            box.credit(reader.sub_id, reader.window)
            data, notices = sent_of(box)
            if not data:
                break
            delivered[index] += len(data)
            reported[index] += sum(lost for _, lost in data) + sum(notices)
        decimated = offered - (offered + reader.every - 1) // reader.every
        assert reader.lost + delivered[index] + len(reader.buffer) + decimated == offered
        assert reported[index] == reader.lost
    assert channel.lost == sum(reader.lost for _, reader, _ in boxes)


def test_a_retune_into_and_out_of_block_moves_the_buffered_bytes_between_shares() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.DROP_OLDEST, 10, window=1)
    for i in range(6):
        world.broker.publish(writer, 1.0, payload(i, 100))
    held = sum(frame.nbytes for frame in reader.buffer.items())
    assert (box.buffered_bytes, box.block_bytes) == (held, 0)
    reader.retune(Policy.BLOCK, 10, 1, None, 1, None)
    assert (box.buffered_bytes, box.block_bytes) == (held, held)
    reader.retune(Policy.DROP_NEWEST, 2, 1, None, 1, None)  # keeps the oldest 2 (+1 going)
    held = sum(frame.nbytes for frame in reader.buffer.items())
    assert len(reader.buffer) == 3
    assert (box.buffered_bytes, box.block_bytes, box.totals.buffered_bytes) == (held, 0, held)


def test_history_left_out_for_want_of_room_is_reported_though_nothing_follows() -> None:
    # The connection is over its bound when a second reader subscribes: its history cannot
    # be replayed and is counted lost; with no later frame to carry the count, a loss
    # notice must still reach the client (it used to wait for a frame that never came).
    world = World(max_buffered_bytes=3000)
    channel = world.channel(history=5)
    _, writer = world.writer(channel)
    _, box = world.connection()
    world.reader(box, channel, Policy.UNBOUNDED, None, window=1)
    world.broker.publish_batch(writer, [1.0] * 30, [bytes(120)] * 30)
    late = world.reader(box, channel, Policy.DROP_OLDEST, 1, window=1)
    assert late.lost > 0
    reported = 0
    for _ in range(10):
        batch = box.next_batch()
        if not batch.pieces:
            break
        sent = decode(batch)
        reported += sum(lost for sub, lost, _, _ in sent.data if sub == late.sub_id)
        reported += sum(
            m.lost for m in sent.control if isinstance(m, M.Lost) and m.sub == late.sub_id
        )
    assert reported == late.lost


def told(sent: list[Sent], sub_id: int) -> tuple[int, int]:
    """Frames a client got for ``sub_id`` and the losses it was told: DATA ``lost`` plus
    ``lost`` notices."""
    frames = lost = 0
    for batch in sent:
        for sub, frame_lost, _, _ in batch.data:
            if sub == sub_id:
                frames += 1
                lost += frame_lost
        lost += sum(m.lost for m in batch.control if isinstance(m, M.Lost) and m.sub == sub_id)
    return frames, lost


# (drop_newest keeps the small frames: never over the bound)
@pytest.mark.parametrize("policy", [Policy.DROP_OLDEST, Policy.CLEAR])
def test_a_ring_reader_ended_by_the_bound_is_told_every_frame_it_lost(policy: Policy) -> None:
    # Its client was told the frames buffered at the end, not the drops they carried: a
    # drop_oldest reader of 203 frames got 30 and sub.lost 0 (a guarantees audit).
    world = World(max_buffered_bytes=10_000)
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, policy, 5, window=1)
    published = 0
    for i in range(20):  # small frames: one in flight, a full ring, the rest dropped
        world.broker.publish(writer, 1.0, payload(i, 100))
        published += 1
    sent = [decode(box.next_batch())]
    for i in range(5):  # then large ones, until the ring no longer fits the bound
        world.broker.publish(writer, 1.0, payload(i, 3000))
        published += 1
    sent.append(decode(box.next_batch()))
    ends = [m for m in sent[-1].control if isinstance(m, M.SubEnd)]
    assert [end.error for end in ends] == ["LimitExceeded"]
    assert sent[-1].order[-2:] == ["control", "control"]  # the notice, then the end
    assert isinstance(sent[-1].control[-2], M.Lost)
    frames, lost = told(sent, reader.sub_id)
    assert frames + lost == published
    assert lost == channel.lost == reader.lost


@pytest.mark.parametrize("policy", [Policy.DROP_OLDEST, Policy.DROP_NEWEST, Policy.CLEAR])
def test_frames_dropped_at_shutdown_are_told_with_the_drops_they_carried(policy: Policy) -> None:
    # A reader too slow for the shutdown's grace was told how many frames its buffer held,
    # not the drops they carried: 180 of 200 missed, sub.lost 20 (a guarantees audit).
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, policy, 20, window=1)
    for i in range(200):
        world.broker.publish(writer, 1.0, payload(i))
    sent = [decode(box.next_batch())]
    assert box.drop_buffered_at_shutdown() > 0
    sent.append(decode(box.next_batch()))
    assert sent[-1].control[-1] == M.Lost(sub=reader.sub_id, lost=199, seq=200)
    assert told(sent, reader.sub_id) == (1, 199)


def test_at_shutdown_max_rates_held_frame_is_told_and_frames_parked_for_block_are_not() -> None:
    # The frame max_rate held back is dropped with the buffer; those parked for a full
    # block reader are not (their writers, never acknowledged, send them again).
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    rated = world.reader(box, channel, Policy.DROP_OLDEST, 10, max_rate=1.0, window=1)
    block = world.reader(box, channel, Policy.BLOCK, 2, window=1)
    for i in range(6):
        world.broker.publish(writer, 1.0, payload(i))
    sent = [decode(box.next_batch())]
    assert rated.latest is not None and len(block.parked) == 3
    box.drop_buffered_at_shutdown()
    sent.append(decode(box.next_batch()))
    notices = {m.sub: m.lost for m in sent[-1].control if isinstance(m, M.Lost)}
    # rated: seq 1 sent, 2-5 replaced by the newer one held back (decimation), 6 held: lost.
    # block: seq 1 sent, 2 and 3 buffered (dropped), 4-6 parked (sent again).
    assert notices == {rated.sub_id: 1, block.sub_id: 2}
