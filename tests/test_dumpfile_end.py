"""Where a dump ends (dumpfile.recording_end, for ``dump --append``): found from the file's
last mark, it must be exactly what reading every item finds, whatever the frames hold
(payloads that carry frames' bytes, another recording's marks or an "epoch" key, epochs
named long before the end, a last frame cut short); and a long recording is not read item
by item."""

from __future__ import annotations

import io
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream._records import Gap, Message
from trio_stream.cli import dumpfile

MARK = bytes(range(16))
SMALL_TAIL = 4096  # tail windows this small make the tests' files span several of them


def frame_bytes(
    seq: int, data: Any, *, epoch: str | None = None, mark: list[Any] | None = None
) -> bytes:
    """One frame as dump writes it (frame_pieces, the payload as it came)."""
    msg = Message(
        data=None,
        seq=seq,
        channel="c",
        sender="daq",
        time=1_700_000_000.0 + seq,
        lost=seq % 3,
        gap=Gap("reset", None, 0) if epoch is not None else None,
    )
    payload = cbor2.dumps(data)
    pieces = dumpfile.frame_pieces(msg, 1.7e9 + seq, payload, epoch, mark)
    return b"".join(bytes(p) for p in pieces)


def dump_of(
    frames: list[bytes], header_epoch: str | None = "e0", mark: bytes | None = MARK
) -> bytes:
    header = dumpfile.header("c", epoch=header_epoch, mark=mark)
    return b"".join(bytes(p) for p in dumpfile.encode_item(header)) + b"".join(frames)


def read_in_full(dump: bytes) -> dumpfile.RecordingEnd:
    """The oracle: every item read (what recording_end did for every file)."""
    file = io.BytesIO(dump)
    reader = dumpfile.DumpReader(file)
    epoch = reader.header.get("epoch")
    return dumpfile._read_to_end(file, reader.header, reader.position, len(dump), epoch)


# Payloads a lab records, and ones made to look like the file's own bytes.
payloads = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    st.binary(max_size=3000),
    st.lists(st.floats(allow_nan=False), max_size=300),
    st.fixed_dictionaries({"epoch": st.integers(0, 100), "loss": st.floats(allow_nan=False)}),
    st.integers(1, 50).map(lambda seq: frame_bytes(seq, "inside", epoch="fake")),
    st.integers(1, 50).map(lambda seq: frame_bytes(seq, "in", mark=[bytes(16), "fake"])),
    st.integers(1, 50).map(lambda seq: dump_of([frame_bytes(seq, 1, mark=[bytes(16), "x"])])),
)


@st.composite
def recordings(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(0, 60))
    epochs = draw(st.sets(st.integers(0, max(count - 1, 0)), max_size=3)) if count else set()
    header_epoch = draw(st.sampled_from(["e0", None]))
    current = header_epoch
    frames = []
    for index in range(count):
        epoch = f"e{index + 1}" if index in epochs else None
        current = epoch or current
        marked = index == 0 or draw(st.integers(0, 9)) == 0  # a batch's first frame
        mark = [MARK, current] if marked else None
        frames.append(frame_bytes(index + 1, draw(payloads), epoch=epoch, mark=mark))
    header_mark: bytes | None = draw(st.sampled_from([MARK, None]))
    dump = dump_of(frames, header_epoch, mark=header_mark)
    cut_short = bool(frames) and draw(st.booleans())
    cut = draw(st.integers(0, len(frames[-1]) - 1)) if cut_short else 0
    return dump[: len(dump) - cut]


@settings(max_examples=300, deadline=None)
@given(dump=recordings())
def test_the_end_found_from_the_last_mark_is_the_end_read_in_full(dump: bytes) -> None:
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(dumpfile, "TAIL_FIRST_BYTES", SMALL_TAIL)
        found = dumpfile.recording_end(io.BytesIO(dump))
    assert found == read_in_full(dump)


def long_recording(marked: bool) -> bytes:
    """200,000 frames (an hour at 55 Hz) in batches of 500, a new epoch named early on."""
    frames = []
    epoch = "e0"
    for seq in range(1, 200_001):
        named = "e1" if seq == 11 else None
        epoch = named or epoch
        mark = [MARK, epoch] if marked and seq % 500 == 1 else None
        frames.append(frame_bytes(seq, [seq * 0.5] * 8, epoch=named, mark=mark))
    return dump_of(frames, mark=MARK if marked else None)


def test_a_long_recording_is_not_read_item_by_item(monkeypatch: pytest.MonkeyPatch) -> None:
    # Item by item (2 us each) 1 M frames took 2.3 s, and the kept subscription --append
    # takes over waits only resume_grace_s for it.
    dump = long_recording(marked=True)
    expected = read_in_full(dump)

    def read_in_full_instead(*args: object) -> None:
        raise AssertionError("read item by item")

    monkeypatch.setattr(dumpfile, "_read_to_end", read_in_full_instead)
    found = dumpfile.recording_end(io.BytesIO(dump))
    assert found == expected and found.seq == 200_000 and found.epoch == "e1"


def test_a_recording_without_marks_is_read_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # Written by an older dump (or another program): nothing to find from the end.
    dump = long_recording(marked=False)[:-5]  # its last frame cut short too
    calls: list[object] = []
    full = dumpfile._read_to_end

    def counted(*args: Any) -> dumpfile.RecordingEnd:
        calls.append(args)
        return full(*args)

    monkeypatch.setattr(dumpfile, "_read_to_end", counted)
    found = dumpfile.recording_end(io.BytesIO(dump))
    assert len(calls) == 1 and found.seq == 199_999 and found.epoch == "e1"
    assert found.whole_bytes < found.size == len(dump)


def test_a_cut_in_the_last_marked_frame_is_found_from_an_earlier_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Large frames (a camera): each one marked, and a recorder killed while writing cuts a
    # marked frame; the frames before it are found from the mark before, not by reading the
    # whole file item by item (a review).
    big = bytes(256 * 1024)
    frames = [frame_bytes(seq, big, mark=[MARK, "e0"]) for seq in range(1, 301)]
    dump = dump_of(frames)[:-1000]
    expected = read_in_full(dump)

    def read_in_full_instead(*args: object) -> None:
        raise AssertionError("read item by item")

    monkeypatch.setattr(dumpfile, "_read_to_end", read_in_full_instead)
    found = dumpfile.recording_end(io.BytesIO(dump))
    assert found == expected and found.seq == 299 and found.whole_bytes < found.size


def test_a_payload_holding_the_file_s_own_mark_is_read_as_a_payload() -> None:
    # A channel that carries the recording's own tail (a log of it): the earliest mark read
    # runs through the payload whole, where the last mark alone gave its inner frame's seq.
    inner = frame_bytes(999, "fake", mark=[MARK, "fake-epoch"])
    frames = [frame_bytes(i, i, mark=[MARK, "e0"] if i % 10 == 1 else None) for i in range(1, 51)]
    frames.append(frame_bytes(51, b"log tail: " + inner))
    dump = dump_of(frames)
    found = dumpfile.recording_end(io.BytesIO(dump))
    assert found == read_in_full(dump) and (found.seq, found.epoch) == (51, "e0")
