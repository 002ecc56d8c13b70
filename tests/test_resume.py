"""Subscription resume on the server (resume.subscribe_since) with fake connections: what a
resuming reader gets from the channel's history, and what it is told it lost.

The same behaviour over real sockets, through a proxy that cuts the reader's connection, is
in test_reconnect.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from server_parts import World, channel_with, decode, payload

from trio_stream._protocol import messages as M
from trio_stream._server.absent_owners import AbsentOwners
from trio_stream._server.broker import Channel
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox, Reader
from trio_stream._server.resume import RESUME_CHAIN_MAX, Lease, ResumeBook, subscribe_since


def resume(
    world: World,
    outbox: Outbox,
    channel: Channel,
    since_seq: int,
    policy: Policy,
    size: int,
    every: int = 1,
    max_rate: float | None = None,
) -> tuple[Reader, dict[str, Any]]:
    """Open a reader on ``outbox`` and attach it resuming after ``since_seq``."""
    reader = outbox.open_reader(
        channel, policy, size, every, max_rate, 1024, 8 << 20, None, window_asked=1024
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


@given(
    every=st.integers(2, 5),
    history=st.integers(1, 30),
    before=st.integers(1, 12),
    away=st.integers(0, 40),
    after=st.integers(0, 12),
)
def test_an_every_n_resume_keeps_the_step_and_counts_only_the_frames_it_would_have_kept(
    every: int, history: int, before: int, away: int, after: int
) -> None:
    # A reader of every=N resumes after the last frame it got (a kept one): it gets, and is
    # told it lost, exactly what it would have been sent had the connection never broken;
    # the frames between that it would have passed over are decimation, not loss. (It used
    # to count every frame gone from the history as lost, N times too many, and to restart
    # its step at the first frame replayed.)
    world, channel, _, writer = channel_with(history, 0)
    for i in range(before):
        world.broker.publish(writer, 1.0, payload(i))
    since = 1 + (before - 1) // every * every  # its last frame: seq 1, 1 + N, ...
    for i in range(before, before + away):
        world.broker.publish(writer, 1.0, payload(i))
    _, box = world.connection()
    reader, outcome = resume(world, box, channel, since, Policy.UNBOUNDED, 0, every=every)
    after += every  # a kept frame comes after the gap: the first one tells it (section 8)
    for i in range(before + away, before + away + after):
        world.broker.publish(writer, 1.0, payload(i))
    last = before + away + after
    wanted = list(range(since + every, last + 1, every))  # what the uncut reader gets next
    sent = decode(box.next_batch()).data
    got = [seq for _, _, seq, _ in sent]
    assert got == [seq for seq in wanted if seq > before + away - history]  # still held, or live
    assert reader.lost == sum(lost for _, lost, _, _ in sent) == len(wanted) - len(got)
    assert outcome["recovered"] == len([seq for seq in got if seq <= before + away])


def test_a_max_rate_resume_counts_every_frame_gone_from_the_history() -> None:
    # Which of them max_rate would have let through is unknowable once they are gone: all
    # of them count (never fewer than the reader missed).
    world, channel, _, _ = channel_with(5, 20)
    _, box = world.connection()
    reader, _ = resume(world, box, channel, 3, Policy.DROP_OLDEST, 100, max_rate=1000.0)
    assert reader.lost == 20 - 5 - 3


def test_an_every_n_reader_resuming_after_a_loss_notice_keeps_its_step() -> None:
    # every=2, drop_newest of 2, one frame in flight: of seqs 1-10 it keeps 1, 3, 5, drops
    # 7 and 9, and passes over the even ones. The loss notice accounts it up to 9, the last
    # frame its step chose (it said 10, and the resume, anchored there, kept 12, 14, ...).
    world, channel, _, writer = channel_with(20, 0)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.DROP_NEWEST, 2, every=2, window=1)
    for i in range(10):
        world.broker.publish(writer, 1.0, payload(i))
    seqs: list[int] = []
    notices: list[M.Lost] = []
    while (batch := box.next_batch()).pieces:
        sent = decode(batch)
        seqs += [seq for _, _, seq, _ in sent.data]
        notices += [m for m in sent.control if isinstance(m, M.Lost)]
        for _ in sent.data:
            box.credit(reader.sub_id, 1)
    assert seqs == [1, 3, 5]
    assert [(n.lost, n.seq) for n in notices] == [(2, 9)]
    for i in range(10, 20):
        world.broker.publish(writer, 1.0, payload(i))
    _, again = world.connection()
    resumed, _ = resume(world, again, channel, 9, Policy.UNBOUNDED, 0, every=2)
    replayed = decode(again.next_batch()).data
    assert [seq for _, _, seq, _ in replayed] == [11, 13, 15, 17, 19]
    assert resumed.lost == 0


def resume_elsewhere(
    world: World, channel: Channel, every: int = 1, max_rate: float | None = None
) -> tuple[Reader, dict[str, Any], list[int]]:
    """A reader resuming from another epoch of ``channel`` (the server restarted, or the
    channel was created again): its reply's resume and the seqs it is sent."""
    _, box = world.connection()
    reader = box.open_reader(
        channel, Policy.DROP_OLDEST, 50, every, max_rate, 1024, 8 << 20, None, window_asked=1024
    )
    outcome = subscribe_since(world.broker, reader, "an-older-epoch", 7)
    return reader, outcome, [seq for _, _, seq, _ in decode(box.next_batch()).data]


def test_a_reset_replays_the_history_through_every_as_a_new_subscription() -> None:
    # As a new subscriber's: the oldest frame the history holds and every third after it,
    # and the live frames go on in that step (an every=3 reader got 50 frames in a row).
    world, channel, _, writer = channel_with(100, 60)
    reader, outcome, seqs = resume_elsewhere(world, channel, every=3)
    assert outcome == {"kind": "reset", "recovered": 20}
    assert seqs == list(range(1, 61, 3))
    assert reader.lost == 0  # decimation is not loss
    for i in range(60, 66):
        world.broker.publish(writer, 1.0, payload(i))
    assert [seq for _, _, seq, _ in decode(reader.outbox.next_batch()).data] == [61, 64]


def test_a_block_reader_resuming_into_a_new_epoch_takes_all_its_history_past_its_size() -> None:
    # As a resume within an epoch does: a recorder got only its newest `size` (10 of 60
    # here), the rest counted, while the history still held them (a cluster operator).
    world, channel, _, writer = channel_with(100, 60)
    _, box = world.connection()
    reader = box.open_reader(
        channel, Policy.BLOCK, 10, 1, None, 1024, 8 << 20, None, window_asked=1024
    )
    outcome = subscribe_since(world.broker, reader, "an-older-epoch", 7)
    assert outcome == {"kind": "reset", "recovered": 60}
    assert drain_seqs(box) == list(range(1, 61))
    assert reader.lost == 0
    world.broker.publish(writer, 1.0, payload(60))
    assert drain_seqs(box) == [61]  # live frames follow (its credit, not its size, paces it)


@pytest.mark.parametrize(
    ("every", "max_rate", "history", "live"),
    [(3, None, list(range(1, 61, 3)), [61, 64]), (1, 2.0, [60], [])],
)
def test_a_block_reader_resuming_into_a_new_epoch_is_thinned_once(
    every: int, max_rate: float | None, history: list[int], live: list[int]
) -> None:
    # The history, thinned by every and max_rate already, was offered again: an every=3
    # recorder got every 9th frame and went on out of step, a max_rate one its newest frame
    # an interval late (a review).
    world, channel, _, writer = channel_with(100, 60)
    _, box = world.connection()
    reader = box.open_reader(
        channel, Policy.BLOCK, 10, every, max_rate, 1024, 8 << 20, None, window_asked=1024
    )
    subscribe_since(world.broker, reader, "an-older-epoch", 7)
    assert drain_seqs(box) == history
    for i in range(60, 66):
        world.broker.publish(writer, 1.0, payload(i))
    if max_rate is None:
        assert drain_seqs(box) == live


def drain_seqs(box: Outbox) -> list[int]:
    seqs: list[int] = []
    while (batch := box.next_batch()).pieces:
        seqs += [seq for _, _, seq, _ in decode(batch).data]
    return seqs


def test_a_reset_replays_only_the_newest_frame_to_a_max_rate_reader() -> None:
    world, channel, _, _ = channel_with(100, 60)
    reader, outcome, seqs = resume_elsewhere(world, channel, max_rate=2.0)
    assert outcome == {"kind": "reset", "recovered": 1}
    assert seqs == [60]
    assert reader.lost == 0


def reset_into(
    channel: Channel, policy: Policy, size: int, every: int = 1, world: World | None = None
) -> tuple[Reader, dict[str, Any], list[tuple[int, int]]]:
    """A reader resuming from another epoch of ``channel``: its reply's resume and the
    (seq, lost) of the frames it is sent."""
    world = world or World()
    _, box = world.connection()
    reader = box.open_reader(
        channel, policy, size, every, None, 1024, 8 << 20, None, window_asked=1024
    )
    outcome = subscribe_since(world.broker, reader, "an-older-epoch", 7)
    sent: list[tuple[int, int]] = []
    while (batch := box.next_batch()).pieces:
        sent += [(seq, lost) for _, lost, seq, _ in decode(batch).data]
    return reader, outcome, sent


@pytest.mark.parametrize(
    ("policy", "first", "seqs"),
    [
        # The history (20 of the new epoch's 60 frames) left out 10 more for its size.
        (Policy.DROP_OLDEST, (51, 50), range(51, 61)),
        # The oldest of the history, the 40 before it lost; the newer 10 are dropped later.
        (Policy.DROP_NEWEST, (41, 40), range(41, 51)),
        (Policy.BLOCK, (41, 40), range(41, 61)),  # all the history holds, past its size
    ],
)
def test_a_reset_counts_the_new_epoch_s_frames_gone_from_the_history_on_the_first_frame(
    policy: Policy, first: tuple[int, int], seqs: range
) -> None:
    # A drop_oldest size 10 reader back after a Redis restart began at seq 3618 of the new
    # epoch with lost 0: the frames of the new epoch before the oldest the history held went
    # by uncounted (a cluster tester). They are the reader's loss, as within an epoch.
    world, channel, _, _ = channel_with(20, 60)
    reader, outcome, sent = reset_into(channel, policy, 10, world=world)
    assert outcome == {"kind": "reset", "recovered": 10 if policy is not Policy.BLOCK else 20}
    assert sent[0] == first
    assert [seq for seq, _ in sent] == list(seqs)
    assert sum(lost for _, lost in sent[1:]) == 0
    if policy is Policy.DROP_NEWEST:  # its 10 newest dropped: told in a loss notice
        assert reader.lost == 50
    else:
        assert reader.lost == first[1]


def test_a_reset_through_redis_counts_what_the_replay_did_not_read_back() -> None:
    # Through Redis the history a lossy reader is given is the newest `size` frames of the
    # stream (the engine reads back no more), and may end before the node's newest frame:
    # the frames before and after it are lost, counted, where the live frames go on.
    world, channel, _, writer = channel_with(200, 60)
    channel.recent = type(channel.recent)(f for f in channel.recent if 53 <= f.seq <= 57)
    _, box = world.connection()
    reader = box.open_reader(
        channel, Policy.DROP_OLDEST, 5, 1, None, 1024, 8 << 20, None, window_asked=1024
    )
    outcome = subscribe_since(world.broker, reader, "an-older-epoch", 7)
    assert outcome == {"kind": "reset", "recovered": 5}
    world.broker.publish(writer, 1.0, payload(60))
    sent = decode(box.next_batch()).data
    assert [(seq, lost) for _, lost, seq, _ in sent] == [
        (53, 52),
        (54, 0),
        (55, 0),
        (56, 0),
        (57, 0),
        (61, 3),
    ]
    assert reader.lost == 55


def test_an_every_n_reset_counts_only_the_gone_frames_in_step_with_its_history() -> None:
    # Every third frame from the oldest the history holds (41, 44, ...): of the 40 gone
    # before it, those in that step (2, 5, ..., 38) are lost; the live frames go on in step.
    world, channel, _, writer = channel_with(20, 60)
    reader, outcome, sent = reset_into(channel, Policy.DROP_OLDEST, 50, every=3, world=world)
    assert outcome == {"kind": "reset", "recovered": 7}
    assert sent == [(41, 13)] + [(seq, 0) for seq in range(44, 61, 3)]
    for i in range(60, 66):
        world.broker.publish(writer, 1.0, payload(i))
    assert [seq for _, _, seq, _ in decode(reader.outbox.next_batch()).data] == [62, 65]
    assert reader.lost == 13


def test_a_seq_beyond_the_channel_s_in_its_own_epoch_counts_nothing_gone() -> None:
    # A client come from a node ahead of this one: it had those frames, none is its loss.
    world, channel, _, _ = channel_with(20, 60)
    _, box = world.connection()
    reader = box.open_reader(
        channel, Policy.DROP_OLDEST, 10, 1, None, 1024, 8 << 20, None, window_asked=1024
    )
    subscribe_since(world.broker, reader, channel.epoch, 70)
    assert reader.lost == 10  # the history's own left out, as for a new subscription


def test_a_client_that_resumes_all_day_keeps_only_the_chain_that_can_be_followed() -> None:
    # Each resume linked the new token to the one it took over, for good while the client
    # stayed: a chain one link longer per resume (a soak's slow leak). Only the newest
    # RESUME_CHAIN_MAX links can be followed, and a token that many back still leads on.
    world = World()
    book = ResumeBook(
        world.broker, 10.0, lambda: None, lambda channel, reason, final: None, AbsentOwners()
    )
    session = SimpleNamespace(name="daq", client_id=1, resume_lease=None)
    tokens = []
    for _ in range(3 * RESUME_CHAIN_MAX):
        token = book.issue(session)
        tokens.append(token)
        session.resume_lease = book._leases.pop(token)  # taken over by the next connection
    book._leases[tokens[-1]] = session.resume_lease
    assert len(book._successor) <= RESUME_CHAIN_MAX
    assert len(book._predecessor) <= RESUME_CHAIN_MAX
    assert book._current(tokens[-RESUME_CHAIN_MAX]) == tokens[-1]


async def test_the_grace_left_of_a_name_is_its_latest_lease_s() -> None:
    # A provider killed twice leaves two leases of its name: a caller was told the older's
    # grace ("kept 4.7 s more") and then waited out the newer's (~10 s; an RPC user).
    book = ResumeBook(
        World().broker, 10.0, lambda: None, lambda channel, reason, final: None, AbsentOwners()
    )
    now = trio.current_time()
    book._leases["old"] = Lease("old", "prov", 1, None, ends_at=now + 2.0)
    book._leases["new"] = Lease("new", "prov", 2, None, ends_at=now + 9.0)
    book._leases["else"] = Lease("else", "other", 3, None, ends_at=now + 20.0)
    left = book.grace_left("prov")
    assert left is not None and 8.5 < left <= 9.0
    assert book.grace_left("nobody") is None
