"""Length-prefixed framing and the binary frame layouts, cut at every split point."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream import FrameTooLarge, ProtocolError
from trio_stream._protocol import frames as F
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import PREFIX_BYTES, FrameDecoder, frame_prefix


def wire_of(bodies: list[bytes]) -> bytes:
    return b"".join(frame_prefix(len(b)) + b for b in bodies)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6))
def test_frames_cut_at_every_split_point_come_out_whole(bodies: list[bytes]) -> None:
    wire = wire_of(bodies)
    for cut in range(len(wire) + 1):
        decoder = FrameDecoder(max_frame_bytes=1000)
        decoder.receive_data(wire[:cut])
        got = decoder.frames()
        decoder.receive_data(wire[cut:])
        got += decoder.frames()
        assert [bytes(f) for f in got] == bodies


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5))
def test_frames_fed_byte_by_byte(bodies: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    got = []
    for byte in wire_of(bodies):
        decoder.receive_data(bytes([byte]))
        got += decoder.frames()
    assert [bytes(f) for f in got] == bodies


def test_oversize_length_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(frame_prefix(101))  # the prefix alone, no body at all
    with pytest.raises(FrameTooLarge, match="101 bytes exceeds the limit of 100"):
        decoder.frames()


def test_empty_frame_is_a_protocol_error() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(frame_prefix(0))
    with pytest.raises(ProtocolError):
        decoder.frames()


def test_bytes_wanted_hints_the_rest_of_a_large_frame() -> None:
    decoder = FrameDecoder(max_frame_bytes=10_000)
    decoder.receive_data(frame_prefix(5000) + b"x" * 1000)
    assert decoder.frames() == []
    assert decoder.bytes_wanted() == 4000


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 90, 100, 5000]), st.sampled_from([0, 0, 0, 1, 7])),
        max_size=40,
    ),
    st.integers(0, 50),
    st.integers(0, 8000),
    st.integers(-200, 8000),
    st.booleans(),
)
def test_data_written_in_runs_is_what_frame_by_frame_writes(
    shape: list[tuple[int, int]], max_frames: int, quota: int, room: int, in_flight: bool
) -> None:
    # write_data writes runs of lossless same-size frames with one join; what it writes,
    # leaves, and counts in flight must be what the frame-by-frame loop does with the same
    # limits (mixed sizes, losses, large payloads, the room and the quota cut anywhere);
    # every entry written moves, as it was, to the reader's frames in flight.
    def entries() -> deque[tuple[F.SharedData, int]]:
        return deque(
            (F.SharedData(seq, 1.5, b"w", bytes([seq % 256]) * size), lost)
            for seq, (size, lost) in enumerate(shape, 1)
        )

    outcomes = []
    for write in (F.write_data, F._write_each):
        left = entries()
        before = list(left)
        earlier = F.SharedData(0, 1.0, b"w", b"x")
        sent: deque[tuple[F.SharedData, int]] = deque([(earlier, 0)] if in_flight else [])
        pieces: list[BytesLike] = []
        run: list[bytes] = []
        frames, nbytes = write(
            left, 5, max_frames, quota, room, sent, pieces, run, alone=not in_flight
        )
        wire = b"".join(bytes(p) for p in pieces) + b"".join(run)
        assert list(sent) == ([(earlier, 0)] if in_flight else []) + before[:frames]
        assert nbytes == sum(frame.nbytes for frame, _ in before[:frames])
        seqs = [(f.seq, lost) for f, lost in sent]
        outcomes.append(((frames, nbytes), wire, seqs, [f.seq for f, _ in left]))
    assert outcomes[0] == outcomes[1]


@given(
    st.integers(0, 2**40),
    st.lists(
        st.tuples(st.floats(allow_nan=False), st.sampled_from([0, 1, 100, 4095, 4096, 5000])),
        max_size=8,
    ),
    st.text(max_size=30),
)
def test_a_batch_of_shared_frames_is_what_the_constructor_builds(
    seq: int, shape: list[tuple[float, int]], name: str
) -> None:
    sender = F.sender_field(name)
    times = [time for time, _ in shape]
    payloads = [bytes([i % 256]) * size for i, (_, size) in enumerate(shape)]
    batch = F.shared_frames(seq, times, sender, payloads)
    one_by_one = [
        F.SharedData(seq + i, time, sender, payload)
        for i, (time, payload) in enumerate(zip(times, payloads, strict=True), 1)
    ]

    def fields(frame: F.SharedData) -> tuple[object, ...]:
        return (frame.seq, frame.head, bytes(frame.payload), frame.nbytes, frame.body_bytes)

    assert [fields(f) for f in batch] == [fields(f) for f in one_by_one]


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(1, 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=50),
)
def test_data_frame_round_trip(
    sub_id: int, lost: int, seq: int, time: float, sender: str, payload: bytes
) -> None:
    # The server's fan-out writes the frame, the client's parser reads it: the hot path both
    # ways, not copies of it.
    name = F.sender_field(sender)
    pieces: list[BytesLike] = []
    run: list[bytes] = []
    entries = deque([(F.SharedData(seq, time, name, payload), lost)])
    F.write_data(
        entries,
        sub_id,
        1,
        1 << 62,
        1 << 62,
        deque(),
        pieces,
        run,
        alone=True,
    )
    wire = b"".join(bytes(p) for p in pieces) + b"".join(run)
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(wire)
    (frame,) = decoder.frames()
    assert F.data_sub_id(frame) == sub_id
    got_lost, got_seq, got_time, got_sender, offset = F.DataParser().parse(frame)
    assert (got_lost, got_seq, got_time) == (min(lost, F.MAX_U32), seq, time)
    assert got_sender == name.decode()
    assert bytes(frame[offset:]) == payload
    # The reader's hot path reads the same fields with its shorter unpack.
    assert F.DATA_FIELDS_AT(frame) == (min(lost, F.MAX_U32), seq, time, len(name))
    # And its pass over the read routes the frame, as one run of one frame.
    decoder.receive_data(wire)
    items = decoder.frames_and_runs(F.take_data_runs)
    assert items == [(sub_id, [frame])]


@given(st.integers(0, 2**32 - 1), st.floats(allow_nan=False), st.binary(max_size=50))
def test_publish_frame_round_trip(pub_id: int, time: float, payload: bytes) -> None:
    body = F.publish_head(pub_id, time) + payload
    assert F.parse_publish(body) == (pub_id, time)
    assert body[F.PUBLISH_HEAD.size :] == payload


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_counter_frames_round_trip(ident: int, count: int) -> None:
    for whole in (F.credit_frame(ident, count), F.pub_ack_frame(ident, count)):
        assert F.parse_counter(whole[4:]) == (ident, count)


def test_truncated_fixed_headers_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        F.parse_publish(b"\x02\x00")
    with pytest.raises(ProtocolError):
        F.DataParser().parse(b"\x03" + b"\x00" * 10)
    with pytest.raises(ProtocolError):
        F.parse_counter(b"\x04\x00\x00")


def take_odd_runs(
    buffer: bytearray, pos: int, end: int, max_frame_bytes: int
) -> tuple[list[list[bytes]], int]:
    """A ``take_runs`` for the tests: takes the whole frames whose body starts with an odd
    byte, as runs (lists of bodies), and stops where FrameDecoder.frames_and_runs says it must."""
    runs: list[list[bytes]] = []
    while end - pos >= PREFIX_BYTES:
        length = int.from_bytes(buffer[pos : pos + PREFIX_BYTES], "big")
        stop = pos + PREFIX_BYTES + length
        if not 0 < length <= max_frame_bytes or stop > end or not buffer[pos + PREFIX_BYTES] % 2:
            break
        runs.append([bytes(buffer[pos + PREFIX_BYTES : stop])])
        pos = stop
    return runs, pos


def flatten(items: list[bytearray | list[bytes]]) -> list[bytes]:
    """The frames of what frames_and_runs handed out (runs of take_odd_runs), in order."""
    out: list[bytes] = []
    for item in items:
        out += item if isinstance(item, list) else [bytes(item)]
    return out


def feed_like_a_transport(
    decoder: FrameDecoder, wire: bytes, cuts: list[int], *, with_runs: bool = False
) -> list[bytes]:
    """Deliver ``wire`` as a TCP transport does: into the large frame's own buffer while one
    is being received (at most the chunk that arrived), through receive_data otherwise; the
    frames taken by frames_and_runs(take_odd_runs) if ``with_runs``, else by frames()."""
    got: list[bytes] = []
    pos = 0
    bounds = sorted({c % (len(wire) + 1) for c in cuts} | {len(wire)})
    for bound in bounds:
        while pos < bound:
            body = decoder.body_buffer()
            if body is not None:
                with body:
                    n = min(len(body), bound - pos)
                    body[:n] = wire[pos : pos + n]
                decoder.body_received(n)
            else:
                n = bound - pos
                decoder.receive_data(wire[pos : pos + n])
            pos += n
            if with_runs:
                got += flatten(decoder.frames_and_runs(take_odd_runs))
            else:
                got += [bytes(f) for f in decoder.frames()]
    return got


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_large_frames_received_in_place_come_out_whole_and_in_order(
    bodies: list[bytes], cuts: list[int]
) -> None:
    decoder = FrameDecoder(max_frame_bytes=1000, direct_min_bytes=16)
    assert feed_like_a_transport(decoder, wire_of(bodies), cuts) == bodies


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.sampled_from([16, 64, 10_000]),
)
def test_frames_and_runs_hand_out_the_frames_of_frames_at_any_split_points(
    bodies: list[bytes], cuts: list[int], direct_min_bytes: int
) -> None:
    # The runs a reader's parser takes and the frames it leaves, fed the same chunks as
    # frames(): the same frames in the same order, large ones received in place included.
    wire = wire_of(bodies)
    outcomes = []
    for with_runs in (False, True):
        decoder = FrameDecoder(max_frame_bytes=1000, direct_min_bytes=direct_min_bytes)
        outcomes.append(feed_like_a_transport(decoder, wire, cuts, with_runs=with_runs))
        assert decoder.partial_bytes == 0  # everything came out
    assert outcomes[0] == outcomes[1] == bodies


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5))
def test_frames_and_runs_fed_byte_by_byte(bodies: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    got = []
    for byte in wire_of(bodies):
        decoder.receive_data(bytes([byte]))
        got += flatten(decoder.frames_and_runs(take_odd_runs))
    assert got == bodies


@pytest.mark.parametrize(
    ("length", "error", "match"),
    [(101, FrameTooLarge, "101 bytes exceeds the limit of 100"), (0, ProtocolError, "empty")],
)
def test_frames_and_runs_refuse_what_frames_refuses(
    length: int, error: type[Exception], match: str
) -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(wire_of([b"\x01ab", b"\x02cd"]) + frame_prefix(length))
    # The frames before the bad one first; the refusal with the next call, no more bytes.
    assert decoder.frames_and_runs(take_odd_runs) == [[b"\x01ab"], b"\x02cd"]
    assert decoder.refusal_next
    with pytest.raises(error, match=match):
        decoder.frames_and_runs(take_odd_runs)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=20), max_size=5),
    st.sampled_from([0, 101, 2**32 - 1]),
    st.binary(max_size=8),
    st.booleans(),
)
def test_the_frames_before_a_bad_length_come_out_then_the_refusal(
    bodies: list[bytes], bad_length: int, after: bytes, runs: bool
) -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(wire_of(bodies) + frame_prefix(bad_length) + after)

    def take() -> list[bytes]:
        if runs:
            return flatten(decoder.frames_and_runs(take_odd_runs))
        return [bytes(f) for f in decoder.frames()]

    if bodies:
        assert not decoder.refusal_next
        assert take() == bodies
    assert decoder.refusal_next
    with pytest.raises((FrameTooLarge, ProtocolError)):
        take()


def test_partial_bytes_counts_what_no_frame_handed_out_holds_yet() -> None:
    decoder = FrameDecoder(max_frame_bytes=10_000, direct_min_bytes=100)
    decoder.receive_data(wire_of([b"ab"]) + frame_prefix(5)[:3])
    assert [bytes(f) for f in decoder.frames()] == [b"ab"]
    assert decoder.partial_bytes == 3
    decoder.receive_data(frame_prefix(5)[3:] + b"xy")
    assert decoder.frames() == [] and decoder.partial_bytes == 6
    decoder.receive_data(b"z" * 3 + frame_prefix(500))  # a large frame's prefix alone
    assert [bytes(f) for f in decoder.frames()] == [b"xyzzz"]
    assert decoder.partial_bytes == PREFIX_BYTES
    decoder.receive_data(b"q" * 10)
    assert decoder.partial_bytes == PREFIX_BYTES + 10


def fill_body(decoder: FrameDecoder, byte: bytes) -> list[int]:
    """Receive the rest of the large frame in place, as the TCP transport does: the sizes
    of the buffers it was offered, one after another."""
    offered = []
    while (body := decoder.body_buffer()) is not None:
        offered.append(len(body))
        with body:
            body[:] = byte * len(body)
        decoder.body_received(offered[-1])
    return offered


def test_a_large_frame_is_received_into_its_own_buffer() -> None:
    decoder = FrameDecoder(max_frame_bytes=10_000, direct_min_bytes=100)
    decoder.receive_data(frame_prefix(500) + b"a" * 100)
    assert decoder.frames() == []
    assert decoder.bytes_wanted() == 400
    # The peer has sent less than the frame has: its buffer is twice what came of it, and
    # doubles as it fills, up to the frame.
    assert fill_body(decoder, b"b") == [100, 200, 100]
    (frame,) = decoder.frames()
    assert frame == b"a" * 100 + b"b" * 400
    with pytest.raises(ValueError, match="without room"):
        decoder.body_received(1)


def test_a_large_frame_gets_its_own_buffer_only_once_an_eighth_of_it_is_here() -> None:
    # A peer that announces 64 MiB in 4 bytes must not make the server hold 64 MiB: the frame's
    # buffer comes once an eighth of it has arrived, twice as large as that.
    decoder = FrameDecoder(max_frame_bytes=64 * 2**20)
    decoder.receive_data(frame_prefix(64 * 2**20) + b"a" * 1000)
    assert decoder.frames() == [] and decoder.body_buffer() is None
    assert decoder.partial_bytes == PREFIX_BYTES + 1000
    decoder.receive_data(b"a" * (8 * 2**20 - 1000))  # an eighth
    assert decoder.frames() == []
    body = decoder.body_buffer()
    assert body is not None and len(body) == 8 * 2**20  # (16 MiB made, 8 filled)
    body.release()
    decoder = FrameDecoder(max_frame_bytes=10_000, direct_min_bytes=100)
    decoder.receive_data(frame_prefix(800) + b"a" * 99)
    assert decoder.frames() == [] and decoder.body_buffer() is None
    decoder.receive_data(b"a")  # 100 of 800: an eighth
    assert decoder.frames() == []
    assert fill_body(decoder, b"b") == [100, 200, 400]
    assert [bytes(f) for f in decoder.frames()] == [b"a" * 100 + b"b" * 700]
    # The next frame as large: the connection brought that many bytes already, so its buffer
    # comes with its length (a writer of large frames pays the slower way once).
    decoder.receive_data(frame_prefix(800) + b"c")
    assert decoder.frames() == []
    assert fill_body(decoder, b"c") == [799]
    assert [bytes(f) for f in decoder.frames()] == [b"c" * 800]
    # Larger than all the connection brought: an eighth again.
    decoder = FrameDecoder(max_frame_bytes=10_000, direct_min_bytes=100)
    decoder.receive_data(frame_prefix(200) + b"d" * 200 + frame_prefix(8000) + b"e" * 500)
    assert [bytes(f) for f in decoder.frames()] == [b"d" * 200]
    assert decoder.body_buffer() is None


def test_a_growing_large_frame_takes_bytes_that_come_through_receive_data() -> None:
    # The WebSocket and TLS paths hand every byte to receive_data: a body that is still
    # short of its frame grows to take them, and what follows the frame stays apart.
    decoder = FrameDecoder(max_frame_bytes=10_000, direct_min_bytes=100)
    decoder.receive_data(frame_prefix(1000) + b"a" * 125)
    assert decoder.frames() == []
    decoder.receive_data(b"b" * 875 + frame_prefix(3) + b"xyz")
    assert [bytes(f) for f in decoder.frames()] == [b"a" * 125 + b"b" * 875, b"xyz"]


def test_bytes_after_a_large_frame_in_one_chunk_follow_it() -> None:
    decoder = FrameDecoder(max_frame_bytes=10_000, direct_min_bytes=100)
    decoder.receive_data(frame_prefix(200) + b"a" * 50)
    assert decoder.frames() == []
    decoder.receive_data(b"a" * 150 + frame_prefix(3) + b"xyz")
    assert [bytes(f) for f in decoder.frames()] == [b"a" * 200, b"xyz"]
