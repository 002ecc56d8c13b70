"""Subscriptions kept while their client is away (kept.py), with fake owners and a fake clock:
a reader loses nothing to its own cut, and what it holds back ends with the grace."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from server_parts import World, decode, payload

from trio_stream._protocol import messages as M
from trio_stream._server.broker import Channel, Writer
from trio_stream._server.buffers import Policy
from trio_stream._server.kept import KeptReaders
from trio_stream._server.outbox import RESUME_HELD_WINDOWS, Outbox, Reader


def options(reader: Reader) -> tuple[Any, ...]:
    """What a resubscription asks for: the subscription as it was."""
    return (reader.policy, reader.buffer.size, reader.every, reader.max_rate, None, None)


def away(world: World, box: Outbox) -> KeptReaders:
    """The connection of ``box`` broke: its readers are kept for its client."""
    kept = KeptReaders(box, 99, "recorder", lambda: None)
    kept.keep_all(box)
    return kept


def publish(world: World, writer: Writer, values: range) -> None:
    for i in values:
        world.broker.publish(writer, 1.0, payload(i))


def sent(box: Outbox) -> tuple[list[int], list[M.ControlMessage]]:
    """The seqs of the DATA frames and the control messages of the outbox's next write."""
    batch = decode(box.next_batch())
    return [seq for _, _, seq, _ in batch.data], batch.control


def take_back(
    world: World,
    kept: KeptReaders,
    old: Reader,
    old_id: int | None,
    since_seq: int,
    window: int = 4,
    held: int = 0,
) -> tuple[Outbox, Reader]:
    _, box = world.connection()
    reader = kept.take(
        old_id, old.channel.name, old.channel.epoch, since_seq, options(old), window, held=held
    )
    assert reader is old
    box.adopt(reader)
    return box, reader


def four_of_eight_in_flight() -> tuple[World, Channel, Outbox, Reader]:
    """A block reader (window 4) that was sent 1..4 of the 8 frames published."""
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel)
    publish(world, writer, range(8))
    assert sent(box)[0] == [1, 2, 3, 4]
    return world, channel, box, reader


def block_reader(
    world: World, channel: Channel, size: int = 100, window: int = 4
) -> tuple[Outbox, Reader]:
    _, box = world.connection()
    return box, world.reader(box, channel, Policy.BLOCK, size, window=window)


def test_a_block_reader_away_loses_nothing_and_gets_again_what_was_in_flight() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    box, reader = block_reader(world, channel)
    old_id = reader.sub_id
    publish(world, writer, range(3))
    assert sent(box)[0] == [1, 2, 3]  # in flight; the client got only the first
    kept = away(world, box)
    assert channel.readers == 1  # its writers never see it go
    publish(world, writer, range(3, 8))
    assert sum(count for _, count in decode(writer_box.next_batch()).acks) == 8
    new_box, again = take_back(world, kept, reader, old_id, since_seq=1)
    got = sent(new_box)[0]
    new_box.credit(again.sub_id, 4)
    got += sent(new_box)[0]
    assert got == [2, 3, 4, 5, 6, 7, 8]
    assert len(kept) == 0 and channel.readers == 1


def test_a_full_kept_block_reader_holds_its_writer_until_the_grace_ends() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    box, _ = block_reader(world, channel, size=2)
    kept = away(world, box)
    publish(world, writer, range(5))
    assert sum(count for _, count in decode(writer_box.next_batch()).acks) == 2  # 3 parked
    kept.end(world.broker)  # nobody came back within resume_grace_s
    assert sum(count for _, count in decode(writer_box.next_batch()).acks) == 3
    assert channel.readers == 0


def test_a_kept_block_reader_is_ended_by_its_block_timeout_and_its_client_learns_why() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 1, window=4, block_timeout=5.0)
    old_id = reader.sub_id
    kept = away(world, box)
    world.broker.publish(writer, 1.0, payload(0))
    world.broker.publish(writer, 1.0, payload(1))  # parked: the writer is held
    assert kept.check(world.clock.now) == world.clock.now + 1.0  # shown as holding at 1 s
    world.clock.now += 5.0
    kept.check(world.clock.now)
    assert channel.readers == 0  # its writer goes on
    assert sum(count for _, count in decode(writer_box.next_batch()).acks) == 2
    _, new_box = world.connection()
    taken = kept.take(old_id, "c", channel.epoch, 0, options(reader), 4)
    assert taken is reader
    new_box.adopt(taken)
    _, control = sent(new_box)
    # What it lost (the frame buffered, the one parked) is told first: they were counted
    # on the server and not to the reader.
    assert control[0] == M.Lost(sub=taken.sub_id, lost=2, seq=2)
    assert len(control) == 2 and isinstance(control[1], M.SubEnd)
    assert control[1].error == "LimitExceeded"
    assert channel.lost == 2


def test_a_reader_whose_channel_ended_while_kept_gets_its_frames_then_the_end() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel)
    old_id = reader.sub_id
    kept = away(world, box)
    publish(world, writer, range(3))
    world.broker.delete_channel(channel, "its owner left")
    new_box, _ = take_back(world, kept, reader, old_id, since_seq=0)
    batch = decode(new_box.next_batch())
    assert [seq for _, _, seq, _ in batch.data] == [1, 2, 3]
    assert batch.order == ["data", "data", "data", "control"]
    assert isinstance(batch.control[0], M.SubEnd) and batch.control[0].error is None


def test_a_lossy_kept_reader_keeps_its_newest_size_frames_and_counts_the_rest() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.DROP_OLDEST, 3, window=3)
    old_id = reader.sub_id
    kept = away(world, box)
    publish(world, writer, range(10))
    new_box, _ = take_back(world, kept, reader, old_id, since_seq=0, window=3)
    data = decode(new_box.next_batch()).data
    assert [(seq, lost) for _, lost, seq, _ in data] == [(8, 7), (9, 0), (10, 0)]


def test_a_client_is_not_given_a_reader_it_cannot_continue_without_a_gap() -> None:
    world, channel, box, reader = four_of_eight_in_flight()
    # The client had 1..4 and returned credit twice: the reader let 1..2 go for good, and
    # keeps 3..4 until the next credit (a process killed before saving them asks from 2).
    box.credit(reader.sub_id, 2)
    box.credit(reader.sub_id, 2)
    kept = away(world, box)
    epoch = channel.epoch
    # Unnamed (no resume_sub), asking from before what the reader let go, or past the
    # channel's newest, another epoch, other options: not this one (it waits on).
    assert kept.take(None, "c", epoch, 1, options(reader), 4) is None
    assert kept.take(None, "c", epoch, 9, options(reader), 4) is None
    assert kept.take(None, "c", "other", 4, options(reader), 4) is None
    other = (Policy.DROP_OLDEST, *options(reader)[1:])
    assert kept.take(None, "c", epoch, 4, other, 4) is None
    assert channel.readers == 1
    new_box, _ = take_back(world, kept, reader, None, since_seq=4)
    assert sent(new_box)[0] == [5, 6, 7, 8]


def test_a_reader_taken_from_inside_its_last_credit_sends_the_frames_after_that_position() -> None:
    # A recorder's client returns credit as the application takes messages: killed after
    # taking 4 (its credit sent) and before saving it, its new process asks from 3.
    world, _, box, reader = four_of_eight_in_flight()
    box.credit(reader.sub_id, 4)
    kept = away(world, box)
    assert reader.resumable_after(3) and not reader.resumable_after(-1)
    new_box, taken = take_back(world, kept, reader, None, since_seq=3)
    assert sent(new_box)[0] == [4, 5, 6, 7]
    # Its new position is what it asked from: nothing before it is held any more.
    assert not taken.resumable_after(2) and taken.resumable_after(3)


def test_a_reader_cut_again_and_again_without_returning_credit_holds_four_windows_at_most() -> None:
    # Its client has the frames in flight at each cut, takes fewer than a credit's worth of
    # them before the next, and so never returns credit (it counts afresh from each resume):
    # the frames of every cut were held for a take-over, uncounted (a soak: 256 KiB more
    # per cut). RESUME_HELD_WINDOWS windows' worth are, the newest (the last credit's, which
    # may not be stored yet, and what was got since, a window per blip); a position before
    # them is no longer resumable (a take-over from there goes by the history, its gap
    # counted).
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel)
    old_id: int | None = None
    for cut in range(10):
        publish(world, writer, range(4))
        seqs = sent(box)[0]
        assert seqs == list(range(4 * cut + 1, 4 * cut + 5))
        kept = away(world, box)
        box, taken = take_back(world, kept, reader, old_id, since_seq=seqs[-1])
        assert taken is reader
        old_id = reader.sub_id
        assert len(reader._released) <= 4 * RESUME_HELD_WINDOWS
    assert reader.resumable_after(24) and not reader.resumable_after(23)
    assert [entry[0].seq for entry in reader._released] == list(range(25, 41))


def four_in_flight_then_cut() -> tuple[World, Reader, KeptReaders]:
    """As :func:`four_of_eight_in_flight`, none credited, then cut off."""
    world, _, box, reader = four_of_eight_in_flight()
    return world, reader, away(world, box)


def test_a_reader_resumed_with_the_frames_its_client_holds_counts_them_in_its_window() -> None:
    # The client got 1..4 and its application took none when the cut came: it says it
    # holds 4 (``held``). They stay in flight, as if never cut: nothing more goes out until
    # credit comes, which lets them go oldest first, as the application takes them.
    world, reader, kept = four_in_flight_then_cut()
    new_box, taken = take_back(world, kept, reader, reader.sub_id, since_seq=4, held=4)
    assert taken.frames_in_flight == 4 and taken.credit == 0
    assert sent(new_box)[0] == []
    new_box.credit(taken.sub_id, 1)
    assert sent(new_box)[0] == [5]
    # The credited frame is kept until the next credit (a killed process may ask from 0);
    # the other three are still in flight.
    assert taken.resumable_after(0) and [e[0].seq for e in taken._released] == [1]
    new_box.credit(taken.sub_id, 3)
    assert sent(new_box)[0] == [6, 7, 8]
    assert not taken.resumable_after(0) and taken.resumable_after(1)


def test_a_reader_resumed_with_fewer_frames_held_than_it_sent_counts_the_newest() -> None:
    # The client had taken 1..2 when the cut came, below a credit's worth: it holds 3..4. Its
    # whole window less those is free; 1..2 are kept until its next credit, for a process
    # killed before storing them.
    world, reader, kept = four_in_flight_then_cut()
    new_box, taken = take_back(world, kept, reader, reader.sub_id, since_seq=4, held=2)
    assert taken.frames_in_flight == 2 and sent(new_box)[0] == [5, 6]
    assert taken.resumable_after(0)
    new_box.credit(taken.sub_id, 2)  # 3..4 taken: 1..2 let go for good
    assert not taken.resumable_after(0) and taken.resumable_after(2)
    assert sent(new_box)[0] == [7, 8]
    # More held than it sent (a client's miscount): those it sent, no more.
    kept = away(world, new_box)
    _, again = take_back(world, kept, taken, taken.sub_id, since_seq=8, held=9)
    assert again.frames_in_flight == 4 and again.credit == 0


def test_a_reader_cut_again_and_again_whose_client_says_what_it_holds_holds_one_window() -> None:
    # As the soak below, with a client that says what it holds: its application takes one
    # frame between cuts, below a credit's worth (a quarter of 8), and returns credit for
    # two at a time, on whichever connection it has then. The frames it holds stay counted
    # in its window, so the server holds no more than that window in flight for it and one
    # credit's frames besides, cut after cut, and the client no more than the window.
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel, window=8)
    publish(world, writer, range(100))
    old_id: int | None = None
    uncredited: list[int] = []  # the seqs the client got and did not return credit for
    taken = 0  # of those, how many its application took
    for _ in range(30):
        uncredited += sent(box)[0]
        assert len(uncredited) <= 8
        taken += 1
        if taken == 2:
            box.credit(reader.sub_id, taken)
            credited, uncredited = uncredited[:taken], uncredited[taken:]
            assert [entry[0].seq for entry in reader._released] == credited
            taken = 0
        kept = away(world, box)
        box, _ = take_back(
            world, kept, reader, old_id, reader.sent_seq, window=8, held=len(uncredited)
        )
        old_id = reader.sub_id
        assert reader.frames_in_flight == len(uncredited) and len(reader._released) <= 2
    assert reader.sent_seq > 30  # it went on


def test_a_kept_reader_its_client_asks_for_by_id_but_cannot_continue_ends_at_once() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    box, reader = block_reader(world, channel, size=2)
    old_id = reader.sub_id
    publish(world, writer, range(4))
    assert sent(box)[0] == [1, 2, 3, 4]
    box.credit(reader.sub_id, 2)
    box.credit(reader.sub_id, 2)  # 1..2 let go for good, 3..4 until the next credit
    kept = away(world, box)
    publish(world, writer, range(4, 8))  # 2 buffered, 2 parked: the writer is held
    assert sum(count for _, count in decode(writer_box.next_batch()).acks) == 6
    # Its client asks from before what it let go: the new subscription replaces it.
    assert kept.take(old_id, "c", channel.epoch, 1, options(reader), 4) is None
    assert channel.readers == 0 and not kept.waiting
    assert sum(count for _, count in decode(writer_box.next_batch()).acks) == 2


def test_readers_not_taken_back_by_a_connection_that_broke_again_wait_on_in_the_next() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel)
    old_id = reader.sub_id
    first = away(world, box)
    world.broker.publish(writer, 1.0, payload(0))
    second = KeptReaders(box, 99, "recorder", lambda: None)
    first.carry_to(second)  # the next connection broke before its resubscription
    world.broker.publish(writer, 1.0, payload(1))
    new_box, _ = take_back(world, second, reader, old_id, since_seq=0)
    assert sent(new_box)[0] == [1, 2]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["publish", "write", "credit", "cut"]),
            st.integers(1, 6),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_a_block_reader_cut_anywhere_gets_every_frame_once_in_order(
    steps: list[tuple[str, int]], says_held: bool
) -> None:
    # The client gets a prefix of each write; a cut loses the rest of what was on the wire,
    # and the resume names the newest frame it got (``says_held``: and how many it got and
    # did not credit, which it credits later). Whatever the order: each frame once, and
    # never more in flight than the window.
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel, size=5)
    got: list[int] = []
    uncredited = 0
    wire: list[int] = []  # written, not yet read by the client
    published = 0
    for action, n in steps:
        if action == "publish":
            publish(world, writer, range(published, published + n))
            published += n
        elif action == "write":
            wire += sent(box)[0]
            got += wire[:n]  # the client reads n of what is on the wire
            uncredited += len(wire[:n])
            del wire[:n]
        elif action == "credit" and uncredited:
            box.credit(reader.sub_id, uncredited)
            uncredited = 0
        elif action == "cut":
            wire = []  # lost with the connection
            old_id = reader.sub_id
            kept = away(world, box)
            held = uncredited if says_held else 0
            box, _ = take_back(world, kept, reader, old_id, got[-1] if got else 0, held=held)
            uncredited = held
        assert reader.frames_in_flight <= 4
    got += wire  # the client reads to the end, crediting all it got
    uncredited += len(wire)
    for _ in range(published + 1):
        if uncredited:
            box.credit(reader.sub_id, uncredited)
        written = sent(box)[0]
        got += written
        uncredited = len(written)
    assert got == list(range(1, published + 1))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["publish", "write", "store", "credit", "restart", "blip"]),
            st.integers(1, 6),
        ),
        max_size=60,
    ),
    st.booleans(),
)
# Found by hypothesis: frames credited before they were stored, more got, a blip of the same
# process (two blips, the second), then a restart from before them all (held one window,
# then two, it lost the first).
@example(
    [("publish", 5), ("write", 4), ("credit", 1), ("write", 1), ("blip", 1), ("restart", 1)], False
)
@example(
    [
        ("publish", 9),
        ("write", 4),
        ("credit", 1),
        ("write", 3),
        ("blip", 1),
        ("write", 2),
        ("blip", 1),
        ("restart", 1),
    ],
    False,
)
@example(
    [
        ("publish", 12),
        ("write", 4),
        ("store", 3),
        ("credit", 1),
        ("write", 4),
        ("blip", 1),
        ("write", 4),
        ("blip", 1),
        ("restart", 1),
    ],
    False,
)
def test_a_recorder_restarted_anywhere_stores_every_frame_once_in_order(
    steps: list[tuple[str, int]], says_held: bool
) -> None:
    # The recorder stores the messages it takes one by one, saving its position with each;
    # its client returns credit for what was taken, once the application has stored all that
    # the previous credit covered (the application asked for more). Killed anywhere (what
    # was on the wire and taken but not stored is gone with it), its new process takes the
    # kept reader over by name from its saved position: each frame stored once, in order. A
    # blip of the same process resumes after the newest frame its client got: those it got
    # and had not taken are taken (without credit, or ``says_held``: counted in flight and
    # credited as the others) before anything after them.
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    box, reader = block_reader(world, channel, size=5)
    stored: list[int] = []
    taken: list[int] = []  # by the client, not stored yet
    wire: list[int] = []
    uncredited = 0
    credited_to = 0  # the newest seq the last credit covered (or the position taken from)
    published = 0
    for action, n in steps:
        if action == "publish":
            publish(world, writer, range(published, published + n))
            published += n
        elif action == "write":
            wire += sent(box)[0]
            taken += wire[:n]
            uncredited += len(wire[:n])
            del wire[:n]
        elif action == "store":
            stored += taken[:n]
            del taken[:n]
        elif action == "credit" and uncredited and (stored[-1] if stored else 0) >= credited_to:
            box.credit(reader.sub_id, uncredited)
            credited_to = (taken or stored)[-1]
            uncredited = 0
        elif action == "blip":
            wire = []
            got = (taken or stored or [credited_to])[-1]
            old_id = reader.sub_id
            kept = away(world, box)
            _, box = world.connection()
            held = uncredited if says_held else 0
            again = kept.take(
                old_id, channel.name, channel.epoch, got, options(reader), 4, held=held
            )
            assert again is reader, (got, reader.credited_seq, reader.released_seq)
            box.adopt(reader)
            if not says_held:
                uncredited = 0  # what was taken before it is never credited (stale)
                credited_to = got
        elif action == "restart":
            wire, taken = [], []
            since = stored[-1] if stored else 0
            kept = away(world, box)
            _, box = world.connection()
            again = kept.take(
                None, channel.name, channel.epoch, since, options(reader), 4, by_name=True
            )
            assert again is reader, (since, reader.credited_seq, reader.released_seq)
            box.adopt(reader)
            uncredited = 0
            credited_to = since
    for _ in range(published + 1):  # the last process stores the rest, crediting as it goes
        stored += taken + wire
        uncredited += len(wire)
        taken, wire = [], []
        if uncredited:
            box.credit(reader.sub_id, uncredited)
            uncredited = 0
        wire = sent(box)[0]
    assert stored == list(range(1, published + 1))


def events(box: Outbox) -> list[tuple[str, int, int]]:
    """The outbox's next write as the client reads it, in order: ("data", seq, lost) and
    ("notice", seq accounted for, lost)."""
    batch = decode(box.next_batch())
    data, control = iter(batch.data), iter(batch.control)
    out: list[tuple[str, int, int]] = []
    for kind in batch.order:
        if kind == "data":
            _, lost, seq, _ = next(data)
            out.append(("data", seq, lost))
        elif kind == "control":
            message = next(control)
            assert isinstance(message, M.Lost) and message.seq is not None
            out.append(("notice", message.seq, message.lost))
    return out


@settings(max_examples=300, deadline=None)
@example(  # the chaos review's case: a notice cut off after the frame before it was read
    Policy.DROP_NEWEST, 1, [("publish", 5), ("write", 6), ("credit", 1), ("write", 1), ("cut", 1)]
)
@given(
    st.sampled_from([Policy.DROP_NEWEST, Policy.DROP_OLDEST, Policy.CLEAR]),
    st.integers(1, 3),
    st.lists(
        st.tuples(
            st.sampled_from(["publish", "write", "credit", "cut"]),
            st.integers(1, 6),
        ),
        max_size=60,
    ),
)
def test_a_lossy_reader_cut_anywhere_accounts_for_every_frame_exactly(
    policy: Policy, size: int, steps: list[tuple[str, int]]
) -> None:
    # As the block test above, for the policies that drop: every frame arrives once or is
    # counted lost exactly where it was, the counts of loss notices cut off with the
    # connection included (a drop_newest reader's were counted nowhere).
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, policy, size, window=2)
    position = 0  # the newest seq the client accounts for (its resume's since_seq)
    uncredited = 0
    wire: list[tuple[str, int, int]] = []
    published = 0

    def read(items: list[tuple[str, int, int]]) -> int:
        nonlocal position
        for kind, seq, lost in items:
            if kind == "data":
                assert seq - position - 1 == lost, (position, seq, lost)
            else:
                assert seq - position == lost, (position, seq, lost)
            position = seq
        return sum(kind == "data" for kind, _, _ in items)

    for action, n in steps:
        if action == "publish":
            publish(world, writer, range(published, published + n))
            published += n
        elif action == "write":
            wire += events(box)
            uncredited += read(wire[:n])
            del wire[:n]
        elif action == "credit" and uncredited:
            box.credit(reader.sub_id, uncredited)
            uncredited = 0
        elif action == "cut":
            wire = []
            old_id = reader.sub_id
            kept = away(world, box)
            box, _ = take_back(world, kept, reader, old_id, position, window=2)
            uncredited = 0
    uncredited += read(wire)
    for _ in range(published + 1):
        if uncredited:
            box.credit(reader.sub_id, uncredited)
        uncredited = read(events(box))
    assert position == published


def test_a_resubscription_reply_lost_in_a_second_cut_still_finds_each_subscription() -> None:
    # Two subscriptions (ids 1, 2); the next connection (ids from 3 on) takes b back as 3 but
    # its reply is lost, and a's resubscription never arrived; that connection breaks too.
    # The client asks again by the ids it knows, 1 and 2: each gets its own.
    world = World()
    a_channel, b_channel = world.channel("a"), world.channel("b")
    _, a_writer = world.writer(a_channel)
    _, b_writer = world.writer(b_channel)
    box, a = block_reader(world, a_channel)
    b = world.reader(box, b_channel, Policy.BLOCK, 100, window=4)
    assert (a.sub_id, b.sub_id) == (1, 2)
    first = away(world, box)
    _, second_box = world.connection()
    second_box.number_from(box.next_sub_id)
    taken = first.take(2, "b", b_channel.epoch, 0, options(b), 4)
    assert taken is b
    second_box.adopt(b)
    assert b.sub_id == 3  # the id the lost reply carried
    second = away(world, second_box)
    first.carry_to(second)
    publish(world, a_writer, range(2))
    publish(world, b_writer, range(3))
    _, third_box = world.connection()
    for known_as, reader, channel, seqs in (
        (1, a, a_channel, [1, 2]),
        (2, b, b_channel, [1, 2, 3]),
    ):
        again = second.take(known_as, channel.name, channel.epoch, 0, options(reader), 4)
        assert again is reader
        third_box.adopt(again)
        assert sent(third_box)[0] == seqs
    # Had the reply reached the client, it would ask by 3: the same subscription.
    assert b.known_as == (2, 3)
