"""Subscription resume on the server (resume.subscribe_since) with fake connections: what a
resuming reader gets from the channel's history, and what it is told it lost.

The same behaviour over real sockets, through a proxy that cuts the reader's connection, is
in test_reconnect.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from server_parts import World, channel_with, decode, payload

from trio_stream._server.broker import Channel
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox, Reader
from trio_stream._server.resume import subscribe_since


def resume(
    world: World, outbox: Outbox, channel: Channel, since_seq: int, policy: Policy, size: int
) -> tuple[Reader, dict[str, Any]]:
    """Open a reader on ``outbox`` and attach it resuming after ``since_seq``."""
    reader = outbox.open_reader(
        channel, policy, size, 1, None, 1024, 8 << 20, None, window_asked=1024
    )
    return reader, subscribe_since(world.broker, reader, channel.epoch, since_seq)


def test_a_block_reader_takes_every_frame_the_history_holds_past_its_size() -> None:
    # A recorder (block, size 5) away while 28 frames were published: the history still holds
    # them and has no writer to hold back, so all 28 come back and none is counted lost.
    world, channel, _, _ = channel_with(100, 30)
    _, box = world.connection()
    reader, outcome = resume(world, box, channel, 2, Policy.BLOCK, 5)
    assert outcome == {"kind": "resumed", "recovered": 28}
    assert reader.lost == 0
    sent = decode(box.next_batch()).data
    assert [(seq, lost) for _, lost, seq, _ in sent] == [(seq, 0) for seq in range(3, 31)]


def test_frames_newer_than_the_history_given_are_counted_lost_not_skipped_silently() -> None:
    # Through Redis the history given to a resume is what a replay read, which may end
    # before the node's newest frame (it reads while the node catches up). Live frames
    # continue after the channel's seq: the frames in between are lost, and counted.
    world, channel, _, writer = channel_with(100, 10)
    channel.recent = type(channel.recent)(f for f in channel.recent if f.seq <= 7)
    _, box = world.connection()
    reader, outcome = resume(world, box, channel, 3, Policy.DROP_OLDEST, 100)
    assert outcome == {"kind": "resumed", "recovered": 4}
    world.broker.publish(writer, 1.0, payload(10))
    sent = decode(box.next_batch()).data
    assert [(seq, lost) for _, lost, seq, _ in sent] == [(4, 0), (5, 0), (6, 0), (7, 0), (11, 3)]
    assert reader.lost == 3


def test_a_block_reader_over_its_size_holds_the_writer_until_it_has_drained() -> None:
    world, channel, writer_box, writer = channel_with(100, 20)
    decode(writer_box.next_batch())
    _, box = world.connection()
    reader, _ = resume(world, box, channel, 0, Policy.BLOCK, 5)
    assert len(reader.buffer) == 20
    world.broker.publish(writer, 1.0, payload(20))
    assert writer.parked_frames == 1  # live frames wait for room below `size`
    assert decode(writer_box.next_batch()).acks == []
    sent = [seq for _, _, seq, _ in decode(box.next_batch()).data]
    sent += [seq for _, _, seq, _ in decode(box.next_batch()).data]
    assert sent == list(range(1, 22))  # the parked frame moved in once there was room
    assert writer.parked_frames == 0 and reader.lost == 0


def test_a_block_reader_s_replay_stays_within_the_connection_s_byte_bounds() -> None:
    # A block reader's share of its connection's memory is half of max_buffered_bytes: the
    # replay stops there and the rest is counted lost on the next frame, exactly.
    frame_bytes = 1000
    world, channel, _, _ = channel_with(100, 30, frame_bytes, max_buffered_bytes=20 * frame_bytes)
    _, box = world.connection()
    reader, outcome = resume(world, box, channel, 0, Policy.BLOCK, 2)
    kept = outcome["recovered"]
    assert 2 < kept < 10  # past its size, within half of 20 frames' bytes (heads included)
    assert reader.lost == 30 - kept
    assert box.block_bytes <= box.max_block_bytes
    assert [seq for _, _, seq, _ in decode(box.next_batch()).data] == list(range(1, kept + 1))


@given(
    history=st.integers(1, 40),
    produced=st.integers(0, 60),
    since=st.integers(0, 60),
    size=st.integers(1, 10),
)
def test_a_block_resume_accounts_for_every_frame_after_its_position_exactly(
    history: int, produced: int, since: int, size: int
) -> None:
    since = min(since, produced)
    world, channel, _, _ = channel_with(history, produced)
    _, box = world.connection()
    reader, outcome = resume(world, box, channel, since, Policy.BLOCK, size)
    held = min(history, produced)  # what the history holds: the newest
    assert outcome["recovered"] == min(held, produced - since)
    assert outcome["recovered"] + reader.lost == produced - since
    sent = decode(box.next_batch()).data
    assert [seq for _, _, seq, _ in sent] == list(
        range(produced - outcome["recovered"] + 1, produced + 1)
    )
    assert sum(lost for _, lost, _, _ in sent) == reader.lost
