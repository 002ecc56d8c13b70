"""The batched fan-out (Broker.publish_batch, Reader.offer_batch) decides exactly what the
frame-by-frame fan-out decides: same frames, losses, parking, acks and memory-bound ends."""

from __future__ import annotations

from unittest import mock

import cbor2
from hypothesis import example, given, settings
from hypothesis import strategies as st
from server_parts import World, decode, payload

from trio_stream import ProtocolError
from trio_stream._protocol.codec import decode_payload
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Reader

READER = st.tuples(
    st.sampled_from(list(Policy)),
    st.integers(1, 6),  # size
    st.sampled_from([1, 1, 1, 2]),  # every
)


def run(
    readers: list[tuple[Policy, int, int]],
    batches: list[list[int]],
    batched: bool,
    max_buffered_bytes: int = 600,
    **window: int,
) -> list[object]:
    world = World(max_buffered_bytes=max_buffered_bytes, **window)
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    boxes = []
    for policy, size, every in readers:
        _, box = world.connection()
        world.reader(box, channel, policy, size, every=every, window=4)
        boxes.append(box)
    seen: list[object] = []
    for batch in batches:
        payloads = [payload(i, size) for i, size in enumerate(batch)]
        try:
            if batched:
                world.broker.publish_batch(writer, [1.0] * len(batch), payloads)
            else:
                for item in payloads:
                    world.broker.publish(writer, 1.0, item)
        except ProtocolError as exc:
            seen.append(str(exc))  # the writer sent past its window: its connection closes
        seen.append(
            (writer.parked_frames, writer_box.parked_bytes, world.broker.parked_bytes, channel.seq)
        )
        for box in boxes:
            sent = decode(box.next_batch())
            seen.append((sent.data, [type(m).__name__ for m in sent.control], box.buffered_bytes))
            for reader in list(box.readers.values()):
                box.credit(reader.sub_id, 2)
        seen.append(decode(writer_box.next_batch()).acks)
    return seen


@settings(max_examples=150, deadline=None)
@given(
    st.lists(READER, min_size=1, max_size=4),
    st.lists(st.lists(st.integers(1, 200), min_size=1, max_size=8), min_size=1, max_size=6),
)
def test_a_batch_fans_out_exactly_as_its_frames_one_by_one(
    readers: list[tuple[Policy, int, int]], batches: list[list[int]]
) -> None:
    assert run(readers, batches, batched=True) == run(readers, batches, batched=False)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(READER, min_size=1, max_size=4),
    st.lists(st.lists(st.integers(1, 200), min_size=1, max_size=30), min_size=1, max_size=6),
    st.sampled_from([600, 3000, 1 << 20]),
)
# A buffer full of small frames, then large ones: one by one, the newest six large frames
# take the connection over its bound on the way, and the reader is ended.
@example([(Policy.DROP_OLDEST, 6, 1)], [[10] * 12, [10] * 4 + [150] * 20], 600)
@example([(Policy.CLEAR, 6, 1)], [[10] * 12, [10] * 4 + [150] * 20], 600)
# Lossy readers of several sizes and a long batch: the older frames, which none of them can
# keep, are counted but never built (Broker._publish_newest).
@example(
    [(Policy.DROP_OLDEST, 2, 1), (Policy.CLEAR, 5, 1), (Policy.DROP_NEWEST, 1, 1)],
    [[20] * 3, list(range(1, 31)), [7] * 6],
    1 << 20,
)
def test_a_batch_at_full_lossy_buffers_drops_exactly_as_its_frames_one_by_one(
    readers: list[tuple[Policy, int, int]], batches: list[list[int]], max_buffered_bytes: int
) -> None:
    # Batches longer than the buffers, under a bound they may or may not come near: the
    # full-buffer step (PolicyBuffer.overflow) is taken, or refused for the bound's sake.
    assert run(readers, batches, True, max_buffered_bytes) == run(
        readers, batches, False, max_buffered_bytes
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(READER, min_size=1, max_size=4),
    st.lists(st.lists(st.integers(1, 200), min_size=1, max_size=8), min_size=1, max_size=6),
    st.integers(1, 12),
    st.integers(100, 1500),
)
def test_a_writer_held_back_past_its_window_is_refused_at_the_same_frame_batched(
    readers: list[tuple[Policy, int, int]],
    batches: list[list[int]],
    window_frames: int,
    window_bytes: int,
) -> None:
    # A writer with frames parked for full block readers still publishes in batches; the
    # frame its window refuses (frames or bytes) is the one publish() would refuse.
    window = {"publish_window_frames": window_frames, "publish_window_bytes": window_bytes}
    assert run(readers, batches, batched=True, **window) == run(
        readers, batches, batched=False, **window
    )


@given(st.binary(max_size=70_000), st.binary(max_size=3))
def test_a_byte_string_payload_decodes_as_cbor2_decodes_it(raw: bytes, tail: bytes) -> None:
    # The codec slices one short byte string out without cbor2; anything else (trailing
    # bytes, longer strings) still goes through cbor2, so both agree on every input.
    encoded = cbor2.dumps(raw) + tail
    assert decode_payload(bytearray(b"xy" + encoded), 2) == cbor2.loads(encoded)


BLOCK_READER = st.tuples(
    st.just(Policy.BLOCK),
    st.integers(1, 6),  # size
    st.sampled_from([1, 1, 1, 2]),  # every
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(BLOCK_READER, READER), min_size=1, max_size=4),
    st.lists(st.lists(st.integers(1, 200), min_size=1, max_size=8), min_size=1, max_size=6),
)
def test_parked_frames_move_in_as_they_would_one_by_one(
    readers: list[tuple[Policy, int, int]], batches: list[list[int]]
) -> None:
    # A block reader that got room takes its parked frames with one extend
    # (Reader._unpark_block); without it, admit() takes them one by one. Same frames, same
    # parked bytes, same acks, same buffer bytes after every write.
    batched = run(readers, batches, batched=True)
    with mock.patch.object(Reader, "_unpark_block", lambda self: None):
        one_by_one = run(readers, batches, batched=True)
    assert batched == one_by_one
