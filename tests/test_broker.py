"""The broker (channels, writers, fan-out, parking) with fake connections and a fake clock."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_parts import FakeOwner, World, channel_with, decode, payload

from trio_stream import ProtocolError
from trio_stream._protocol import messages as M
from trio_stream._server.broker import HELD_BY_SHOWN, Writer
from trio_stream._server.buffers import Policy, drops_when_full
from trio_stream._server.outbox import HOLD_NOTICE_S, HOLD_WARNING_S, Outbox, Reader


def test_one_publish_reaches_every_reader_as_one_shared_frame() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    boxes = [world.connection()[1] for _ in range(4)]
    readers = [world.reader(box, channel) for box in boxes]
    world.broker.publish(writer, 1.0, payload(1))
    frames = [reader.buffer.peek() for reader in readers]
    assert frames[0] is not None and all(frame is frames[0] for frame in frames)
    for box, reader in zip(boxes, readers, strict=True):
        assert decode(box.next_batch()).data == [(reader.sub_id, 0, 1, payload(1))]


def test_every_n_keeps_the_first_frame_offered_then_every_nth() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    world.reader(box, channel, every=2)
    for i in range(6):
        world.broker.publish(writer, 1.0, payload(i))
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == [
        (1, 0),
        (3, 0),
        (5, 0),
    ]


def test_a_full_block_reader_parks_the_frame_and_holds_the_writers_ack() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    _, box = world.connection()
    world.reader(box, channel, Policy.BLOCK, 1, window=1)
    world.broker.publish(writer, 1.0, payload(1))  # buffered
    world.broker.publish(writer, 1.0, payload(2))  # parked: the buffer holds one
    assert decode(writer_box.next_batch()).acks == [(1, 1)]
    assert writer.parked_frames == 1 and writer_box.parked_bytes > 0
    assert world.broker.parked_bytes == writer_box.parked_bytes
    decode(box.next_batch())  # frame 1 goes out, frame 2 moves into the buffer
    assert writer.parked_frames == 0 and writer_box.parked_bytes == 0
    assert decode(writer_box.next_batch()).acks == [(1, 1)]


def test_a_writer_past_its_window_while_parked_is_refused() -> None:
    world = World(publish_window_frames=2)
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    world.reader(box, channel, Policy.BLOCK, 1, window=1)
    for i in range(3):  # one buffered, two parked: the window
        world.broker.publish(writer, 1.0, payload(i))
    with pytest.raises(ProtocolError, match="publish_window_frames"):
        world.broker.publish(writer, 1.0, payload(4))


def test_a_block_reader_is_shown_holding_then_ended_by_its_block_timeout() -> None:
    world = World()
    events: list[str] = []
    world.broker.on_event = lambda kind, channel: events.append(kind)
    channel = world.channel()
    _, writer = world.writer(channel)
    owner, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 1, window=1, block_timeout=5.0)
    world.broker.publish(writer, 1.0, payload(1))
    world.broker.publish(writer, 1.0, payload(2))  # parked now
    assert owner.hold_deadlines == [world.clock.now + HOLD_NOTICE_S]
    world.clock.now += HOLD_NOTICE_S
    assert box.check_holds(world.clock.now) == pytest.approx(world.clock.now - 1 + 5.0)
    assert "held" in events
    assert channel.held_by() == [{"client": owner.name, "sub": reader.sub_id, "held_s": 1.0}]
    world.clock.now += 4.0
    box.check_holds(world.clock.now)
    sent = decode(box.next_batch())
    (end,) = [m for m in sent.control if isinstance(m, M.SubEnd)]
    assert end.error == "LimitExceeded" and "block_timeout" in end.reason
    assert writer.parked_frames == 0 and channel.readers == 0 and "released" in events


def test_held_by_goes_over_the_held_readers_alone_kept_as_holds_start_and_end() -> None:
    # Every reader that came or went made a $channels event with held_by, which went over
    # all of the channel's readers: 20,000 let go at once after resume_grace_s held the
    # server 6.6 s. The held ones are kept aside as holds start and end.
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    idle_box = world.connection()[1]
    for _ in range(100):
        world.reader(idle_box, channel, Policy.DROP_OLDEST, 10)
    _, box = world.connection()
    first = world.reader(box, channel, Policy.BLOCK, 1, window=1)
    second = world.reader(box, channel, Policy.BLOCK, 1, window=1)
    world.broker.publish(writer, 1.0, payload(1))
    world.broker.publish(writer, 1.0, payload(2))  # parked for both
    world.clock.now += HOLD_NOTICE_S
    box.check_holds(world.clock.now)
    assert list(channel.held) == [first, second]
    assert [h["sub"] for h in channel.held_by()] == [first.sub_id, second.sub_id]
    world.broker.unsubscribe(first)  # gone while holding
    assert list(channel.held) == [second]
    box.credit(second.sub_id, 1)
    while box.next_batch().pieces:  # it takes its frame: the parked one moves in
        pass
    assert not second.parked and not channel.held and channel.held_by() == []
    assert [r for r in channel.subscriptions if r.held_reported] == []


def test_held_by_lists_the_first_ten_seen_to_hold() -> None:
    # Each hold that starts or ends makes a $channels event with held_by: 4,000 readers
    # that stopped reading made 4,000 events of up to 4,000 entries (the server stopped 7 s).
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    readers = [world.reader(box, channel, Policy.BLOCK, 1, window=1) for _ in range(15)]
    world.broker.publish(writer, 1.0, payload(1))
    world.broker.publish(writer, 1.0, payload(2))  # parked for all
    world.clock.now += HOLD_NOTICE_S
    box.check_holds(world.clock.now)
    assert len(channel.held) == 15
    assert [h["sub"] for h in channel.held_by()] == [r.sub_id for r in readers[:HELD_BY_SHOWN]]


def block_reader_of_size_1(
    block_timeout: float | None = None,
) -> tuple[World, Writer, FakeOwner, Outbox, Reader]:
    """A channel with a writer and one ``block`` reader (size 1, window 1) of another
    connection: a second frame published is in flight, a third parked."""
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    owner, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 1, window=1, block_timeout=block_timeout)
    return world, writer, owner, box, reader


def test_a_block_reader_holding_its_writers_for_long_is_warned_of_once_per_hold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A channel stalled by a reader that read nothing was silent in the log (operator persona).
    caplog.set_level(logging.WARNING, logger="trio_stream._server.outbox")
    world, writer, owner, box, reader = block_reader_of_size_1()
    channel = reader.channel
    world.broker.publish(writer, 1.0, payload(1))
    world.broker.publish(writer, 1.0, payload(2))  # parked now
    start = world.clock.now
    world.clock.now += HOLD_NOTICE_S
    assert box.check_holds(world.clock.now) == pytest.approx(start + HOLD_WARNING_S)
    assert not caplog.records
    world.clock.now = start + HOLD_WARNING_S
    assert box.check_holds(world.clock.now) == math.inf
    (warned,) = [r.getMessage() for r in caplog.records]
    assert warned.startswith(
        f"channel {channel.name!r}: the block reader of client {owner.name!r} (subscription "
        f"{reader.sub_id}) has held its writers back for 10 s"
    )
    box.check_holds(world.clock.now + 60.0)
    assert len(caplog.records) == 1  # once for this hold
    # Taken (credit back: the parked frame goes in), then held again: a new hold, warned again.
    reader.add_credit(1)
    box.next_batch()
    reader.add_credit(1)
    box.next_batch()
    assert not reader.parked
    world.broker.publish(writer, 1.0, payload(3))
    world.broker.publish(writer, 1.0, payload(4))
    assert reader.parked
    world.clock.now += HOLD_WARNING_S
    box.check_holds(world.clock.now)
    assert len(caplog.records) == 2


def test_a_reader_that_takes_a_frame_now_and_then_while_it_holds_is_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # With a block_timeout it stays timed: each newer oldest parked frame that had waited
    # 10 s was warned of again, within one hold (a review).
    caplog.set_level(logging.WARNING, logger="trio_stream._server.outbox")
    world, writer, _, box, reader = block_reader_of_size_1(block_timeout=60.0)
    for i in range(6):  # 1 in flight, 1 buffered, 4 parked
        world.broker.publish(writer, 1.0, payload(i))
        world.clock.now += 0.1
    for _ in range(4):
        world.clock.now += HOLD_WARNING_S + 1
        box.check_holds(world.clock.now)
        reader.add_credit(1)  # takes one: a parked frame goes in, the rest still wait
        box.next_batch()
        assert reader.parked
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]


def test_history_replays_the_newest_frames_that_fit_and_counts_the_rest_lost() -> None:
    world, channel, _, _ = channel_with(history=5, produced=8)
    _, box = world.connection()
    world.reader(box, channel, Policy.BLOCK, 3)
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == [
        (6, 2),
        (7, 0),
        (8, 0),
    ]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [(Policy.DROP_OLDEST, [(10, 9)]), (Policy.DROP_NEWEST, [(1, 0)]), (Policy.CLEAR, [(10, 9)])],
)
def test_history_replayed_to_a_lossy_reader_is_kept_as_its_policy_keeps_it(
    policy: Policy, kept: list[tuple[int, int]]
) -> None:
    # History comes from no writer's read: the policy applies to all of it, though the new
    # reader's credit could take more (a size=1 dashboard gets the newest frame only). Frames
    # published after it do count the frames its credit lets out.
    world, channel, _, _ = channel_with(history=10, produced=10)
    _, box = world.connection()
    reader = world.reader(box, channel, policy, 1, window=4)
    assert [(frame.seq, reader.lost) for frame in reader.buffer.items()] == [(kept[0][0], 9)]
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == kept


@pytest.mark.parametrize("policy", [Policy.BLOCK, Policy.DROP_OLDEST, Policy.UNBOUNDED])
def test_every_n_keeps_every_nth_history_frame_from_the_oldest_and_counts_on_into_live_ones(
    policy: Policy,
) -> None:
    # docs/protocol.md section 5: "every=N keeps the first frame it is offered after
    # subscribing (history included) and then every N-th one". History replayed at
    # subscribe used to go in whole, and the count started at the first live frame.
    world, channel, _, writer = channel_with(history=5, produced=10)
    _, box = world.connection()
    world.reader(box, channel, policy, 100, every=2)
    for i in range(10, 14):
        world.broker.publish(writer, 1.0, payload(i))
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == [
        (6, 0),  # seqs 1-5 are no longer in the history: neither offered nor lost
        (8, 0),
        (10, 0),
        (12, 0),
        (14, 0),
    ]


def test_max_rate_takes_only_the_newest_history_frame_and_the_next_an_interval_later() -> None:
    world, channel, _, writer = channel_with(history=5, produced=5)
    _, box = world.connection()
    reader = world.reader(box, channel, max_rate=10.0)
    world.broker.publish(writer, 1.0, payload(5))  # held: due 0.1 s after the subscribe
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == [(5, 0)]
    assert decode(box.next_batch()).data == []
    world.clock.now += 0.1
    assert [(seq, lost) for _, lost, seq, _ in decode(box.next_batch()).data] == [(6, 0)]
    assert reader.lost == 0


def test_deleting_a_channel_ends_its_writers_with_pub_end() -> None:
    world = World()
    channel = world.channel()
    owner, box = world.connection()
    writer = world.broker.open_publisher(channel, owner, box, 3)
    world.broker.delete_channel(channel, "gone")
    assert owner.ended_writers == [3]
    assert decode(box.next_batch()).control == [M.PubEnd(pub=3, reason="gone")]
    assert writer not in channel.publishers


# -- lossless: every reader takes every frame ------------------------------------------------
_reader_steps = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe", "retune"]),
        st.sampled_from(list(Policy)),
        st.integers(0, 7),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(_reader_steps)
def test_a_writer_is_told_whether_every_reader_is_lossless(
    steps: list[tuple[str, Policy, int]],
) -> None:
    # Readers come, go and change policy in any order: the channel's count of readers that
    # drop when full stays exact, and the writer's newest notice says whether it is lossless.
    world = World()
    channel = world.channel()
    writer_box, _ = world.writer(channel)
    _, box = world.connection()
    readers: list[Reader] = []
    for step, policy, pick in steps:
        size = None if policy is Policy.UNBOUNDED else 100
        if step == "subscribe" or not readers:
            readers.append(world.reader(box, channel, policy, size))
        elif step == "unsubscribe":
            world.broker.unsubscribe(readers.pop(pick % len(readers)))
        else:
            reader = readers[pick % len(readers)]
            dropped_when_full = drops_when_full(reader.policy)
            reader.retune(policy, size, 1, None, 100, None)
            world.broker.retuned(reader, dropped_when_full)
        lossy = sum(drops_when_full(r.policy) for r in channel.subscriptions)
        assert channel.lossy_readers == lossy
        assert channel.lossless is (lossy == 0)
        notices = [m for m in decode(writer_box.next_batch()).control if isinstance(m, M.Readers)]
        if notices:
            assert (notices[-1].readers, notices[-1].lossless) == (len(readers), lossy == 0)


def test_a_channels_first_rate_counts_from_its_creation() -> None:
    # It read 0 frames/s for its first interval however busy it was (the first call only
    # took a mark), so a dashboard showed a new, busy channel as idle (operators' audit).
    world = World()
    world.broker.update_rates()  # a tick before the channel exists
    world.clock.now += 0.5
    channel = world.channel()
    _, writer = world.writer(channel)
    for i in range(50):
        world.broker.publish(writer, 1.0, payload(i))
    world.clock.now += 0.5
    world.broker.update_rates()
    assert channel.rate_fps == pytest.approx(100.0)  # 50 frames in the half second it lived
    assert channel.rate_bps == pytest.approx(100.0 * len(payload(0)))


def test_a_channel_an_engine_makes_at_a_later_seq_does_not_count_the_earlier_frames() -> None:
    # Several nodes: a node's channel for one made elsewhere starts at that channel's seq.
    world = World()
    channel = world.channel(seq=1_000_000)
    _, writer = world.writer(channel)
    for i in range(10):
        world.broker.publish(writer, 1.0, payload(i))
    world.clock.now += 1.0
    world.broker.update_rates()
    assert channel.seq == 1_000_010
    assert channel.rate_fps == pytest.approx(10.0)


def test_a_reopen_counts_its_keys_other_writers_from_their_own_index() -> None:
    # A reopen asks for the frames of its writer key's other writers (a connection not yet
    # seen to be gone): they were found by a walk over every writer of the channel, and
    # 20,000 reopens after a restart cost the server 5.5 s.
    world = World()
    channel = world.channel()
    owner, old_box = world.connection()
    old = world.broker.open_publisher(channel, owner, old_box, 1, "k")
    other_key = world.broker.open_publisher(channel, owner, old_box, 2, "other")
    for i in range(3):
        world.broker.publish(old, 1.0, payload(i))
    world.broker.publish(other_key, 1.0, payload(9))
    _, new_box = world.connection()
    new = world.broker.open_publisher(channel, owner, new_box, 1, "k")
    assert world.broker.writer_published(channel, new) == 3
    world.broker.close_publisher(old)  # its count moves to the closed writers' record
    assert world.broker.writer_published(channel, new) == 3
    assert set(channel.keyed_writers) == {(new.sender, "k"), (new.sender, "other")}
    world.broker.close_publisher(new)
    world.broker.close_publisher(other_key)
    assert not channel.keyed_writers and not channel.writers_by_outbox
