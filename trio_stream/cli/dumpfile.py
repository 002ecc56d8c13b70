"""The dump file format: what ``trio-stream dump`` writes and ``trio-stream replay`` reads.

A dump file is a CBOR sequence (RFC 8742): CBOR data items written one after the other, with
nothing between them. There is no index and no footer, so a recording that was killed is
still readable up to its last complete frame.

The first item is a header map::

    {"format": "trio_stream-dump", "version": 1, "channel": "AnalogInput1",
     "created": 1767225600.123}

``created`` is the Unix time (seconds) at which the recording started. Writers may add keys
(``trio-stream dump`` adds ``source``, the server URL, ``policy``, and ``epoch``, the
channel's epoch, which a frame of another epoch then names as its own ``epoch``: where
``dump --append`` continues from); readers ignore keys they do not know. A reader refuses
a file whose ``format`` differs or whose ``version`` is newer than it knows.

Each following item is one frame, a map::

    {"t": 1767225600.512,  # when the recorder received the frame (Unix seconds, float)
     "time": 1767225600.511,  # the writer's clock when it sent the frame
     "seq": 42,  # the channel's sequence number (gaps: frames not delivered to the recorder)
     "sender": "daq",  # the name of the client that published the frame
     "lost": 0,  # frames the recorder's subscription lost just before this one
     "data": ...}  # the payload, its bytes as the writer sent them (docs/protocol.md 4)

``trio-stream dump`` stores each frame's payload as it came, without decoding it: numpy
arrays are RFC 8746 typed arrays (little-endian; tag 40 around ``[shape, typed array]`` when
not one-dimensional), and a compressed payload stays compressed (protocol.md 4.1: tag
7631618, zlib, or 7631619, zstd, around the compressed CBOR of the value). A payload that is
not CBOR at all cannot be stored in a CBOR sequence: dump leaves that frame out (its seq is
missing) and says so. ``replay`` schedules frames by the differences of their ``t``.

Reading a dump needs nothing but cbor2 (and numpy for the arrays)::

    import cbor2, numpy as np, zlib

    TYPED = {64: "u1", 72: "i1", 69: "<u2", 70: "<u4", 71: "<u8", 77: "<i2", 78: "<i4",
             79: "<i8", 84: "<f2", 85: "<f4", 86: "<f8"}

    def tag_hook(tag, immutable):  # cbor2 >= 6; cbor2 5 passes (decoder, tag)
        if tag.tag in TYPED:
            return np.frombuffer(tag.value, dtype=TYPED[tag.tag])
        if tag.tag == 40:  # [shape, flat array]
            return tag.value[1].reshape(tag.value[0])
        if tag.tag == 7631618:  # a zlib-compressed payload: the CBOR of the value inside
            return cbor2.loads(zlib.decompress(tag.value), tag_hook=tag_hook)
        return tag

    with open("recording.tsdump", "rb") as f:
        decoder = cbor2.CBORDecoder(f, tag_hook=tag_hook)
        header = decoder.decode()
        while True:
            try:
                frame = decoder.decode()
            except cbor2.CBORDecodeEOF:  # the end (or a last frame cut short)
                break
            print(frame["t"], frame["seq"], frame["data"])
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import secrets
import sys
import time
from collections.abc import Iterator
from typing import IO, Any, Final

import cbor2

from .._exceptions import ProtocolError
from .._protocol.bytes_like import BytesLike
from .._protocol.codec import EncodedPayload, decode_payload, encode_payload
from .._records import Gap, Message

FORMAT: Final = "trio_stream-dump"
VERSION: Final = 1
READ_CHUNK_BYTES: Final = 1 * 2**20
MARK_BYTES: Final = 16  # a recording's mark: random, so no payload holds it by chance
# dump marks a frame after this many bytes of frames since the last marked one (and the first
# of each run): ~40 bytes a MiB, and recording_end's first look at the last 4 MiB finds one.
MARK_EVERY_BYTES: Final = 2**20


# A payload's structure is walked in Python (item_end) up to this many CBOR heads; one with
# more (a long list of numbers, as a non-Python writer sends an array) is measured by cbor2's
# C decoder instead: the walk took 0.6 s for 100,000 numbers, cbor2 a few ms.
PAYLOAD_WALK_MAX_HEADS: Final = 1024


class DumpFormatError(ValueError):
    """The file is not a trio_stream dump (or is from a newer version)."""


class UndecodedPayload:
    """A frame's ``data`` that this reader cannot decode: beyond its payload limits (an
    integer of more than 1024 bytes, ...), compressed with zstd where the zstandard package
    is missing, or bytes that are not the CBOR they claim to be. ``payload``: its bytes as
    recorded; ``reason``: why it does not decode. The file goes on after it.
    """

    __slots__ = ("payload", "reason")

    def __init__(self, payload: bytes, reason: str) -> None:
        self.payload = payload
        self.reason = reason

    def __repr__(self) -> str:
        return f"UndecodedPayload({len(self.payload)} bytes: {self.reason})"


def header(channel: str, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "channel": channel,
        "created": time.time(),
        **extra,
    }


def new_mark() -> bytes:
    """A recording's mark (its header's ``mark``), which :func:`recording_end` looks for."""
    return secrets.token_bytes(MARK_BYTES)


def frame_record(
    msg: Message, received: float, epoch: str | None = None, mark: list[Any] | None = None
) -> dict[str, Any]:
    """A frame item; ``epoch``: the channel's epoch, given on the first frame of one (the
    header names the first): where ``dump --append`` continues from (docs/dump-format.md);
    ``mark``: ``[the header's mark, the channel's epoch]``, on the first frame of each batch
    written (found from the file's end by :func:`recording_end`)."""
    record = {
        "t": received,
        "time": msg.time,
        "seq": msg.seq,
        "sender": msg.sender,
        "lost": msg.lost,
        "data": msg.data,
    }
    if msg.gap is not None:  # a reconnection just before this frame (docs/dump-format.md)
        record["gap"] = gap_record(msg.gap)
    if epoch is not None:
        record["epoch"] = epoch
    if mark is not None:
        record["mark"] = mark
    return record


def gap_record(gap: Gap) -> dict[str, Any]:
    return {"kind": gap.kind, "lost": gap.lost, "recovered": gap.recovered}


_DATA_KEY: Final = b"\x64data"  # the text "data" in CBOR


def frame_pieces(
    msg: Message,
    received: float,
    payload: BytesLike,
    epoch: str | None = None,
    mark: list[Any] | None = None,
) -> list[BytesLike]:
    """A frame item whose ``data`` is ``payload``, the CBOR of one value as it came (see
    :func:`payload_item`), written as it is rather than decoded and encoded again.

    ``msg``: the message's fields (its ``data`` is not looked at); ``epoch``, ``mark``: as
    :func:`frame_record`.
    """
    fields = frame_record(msg, received, epoch, mark)
    del fields["data"]
    encoded = b"".join(encode_payload(fields, copy=False))
    # A map of fewer than 24 pairs (5 to 7 here) has its count in its first byte: one more.
    assert 0xA0 <= encoded[0] < 0xA0 + 23, encoded[:1]
    return [bytes((encoded[0] + 1,)) + encoded[1:] + _DATA_KEY, payload]


def payload_item(payload: BytesLike) -> BytesLike:
    """The payload's first CBOR data item, which a reader decodes (bytes after it, which no
    writer should send, are not part of the value: docs/protocol.md section 4).

    Only its structure is checked (heads and lengths), not what the value means: one that
    is well-formed but beyond a reader's limits is a valid item of a dump, which a reader
    then reports for that frame.

    Raises:
        DumpFormatError: it is empty, cut short or not CBOR (it cannot be an item of a dump).
    """
    try:
        end = item_end(payload, 0, max_heads=PAYLOAD_WALK_MAX_HEADS)
    except _TooManyHeads:
        end = _cbor2_item_end(payload)
        if end is None:  # beyond what cbor2 decodes (deeper than 400, ...): walked in full
            end = item_end(payload, 0)
    if end is None:
        raise DumpFormatError("empty" if not len(payload) else "cut short (not one whole item)")
    return payload if end == len(payload) else memoryview(payload)[:end]


def _cbor2_item_end(payload: BytesLike) -> int | None:
    """Where the CBOR item at ``payload[0]`` ends, as cbor2's C decoder finds it (None if it
    cannot decode it, for whatever reason: then the walk decides)."""
    buffer = io.BytesIO(payload)
    decoder = cbor2.CBORDecoder(
        buffer,
        str_errors="replace",  # the structure is what is checked, not the text
        # Map keys other than text and bytes are left to the walk: a map of keys with one
        # hash costs a dict quadratic time (see _protocol/cbor_scan.py), the walk linear.
        strict_hashable_types=True,
        # Decoded only to be thrown away: nothing compiled, parsed or refused on the way.
        semantic_decoders=dict.fromkeys(_SEMANTIC_TAGS, _kept_as_is),
    )
    try:
        decoder.decode()
    except Exception:
        return None
    return buffer.tell()


def _kept_as_is(value: Any, immutable: bool) -> Any:
    return value


# The tags cbor2 gives a meaning (RFC 8949 and the IANA registry's it knows), which it would
# otherwise check or convert: datetimes, bignums, decimals, rationals, regexes, MIME, UUIDs,
# IP addresses, sets (whose items must hash).
_SEMANTIC_TAGS: Final = (0, 1, 2, 3, 4, 5, 30, 35, 36, 37, 52, 54, 258, 260, 261)


def encode_item(item: Any) -> list[BytesLike]:
    """One sequence item as pieces to write one after the other (arrays are not copied)."""
    return encode_payload(item, copy=False)


# -- reading -----------------------------------------------------------------------------------
class _TooManyHeads(Exception):
    """item_end met more than its ``max_heads``."""


def item_end(data: BytesLike, pos: int, *, max_heads: int | None = None) -> int | None:
    """The offset just past the CBOR data item starting at ``pos``; None if ``data`` ends first.

    Only heads are parsed (byte and text strings are skipped by their length), so finding
    where an item ends is cheap even for a frame that holds a large array.

    Raises:
        DumpFormatError: the bytes are not CBOR.
        _TooManyHeads: more than ``max_heads`` heads.
    """
    end = len(data)
    heads_left = sys.maxsize if max_heads is None else max_heads
    # Items still to read at each open nesting level; -1 for an indefinite-length container,
    # which a 0xFF "break" closes.
    remaining = [1]
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        if pos >= end:
            return None
        heads_left -= 1
        if heads_left < 0:
            raise _TooManyHeads
        initial = data[pos]
        pos += 1
        if initial == 0xFF:
            if remaining[-1] != -1:
                raise DumpFormatError("unexpected CBOR break")
            remaining.pop()
            continue
        if remaining[-1] > 0:
            remaining[-1] -= 1
        major, info = initial >> 5, initial & 0x1F
        argument: int | None
        if info < 24:
            argument = info
        elif info <= 27:
            width = 1 << (info - 24)
            if pos + width > end:
                return None
            argument = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif info == 31 and major in (2, 3, 4, 5):
            argument = None
        else:
            raise DumpFormatError(f"malformed CBOR (initial byte {initial:#04x})")
        if major in (2, 3):
            if argument is None:
                remaining.append(-1)  # chunks until a break
            else:
                pos += argument
                if pos > end:
                    return None
        elif major == 4:
            remaining.append(-1 if argument is None else argument)
        elif major == 5:
            remaining.append(-1 if argument is None else 2 * argument)
        elif major == 6:
            remaining.append(1)  # a tag wraps exactly one item
    return pos


class DumpReader:
    """Reads a dump: ``header`` at once, then the frames by iteration.

    ``position`` is how many bytes of the file have been consumed (for progress), and
    ``truncated`` turns True when the file ends inside a frame (an interrupted recording:
    the frames before it are all there).
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._buffer = bytearray()
        self._start = 0
        self.position = 0
        self._item_at = 0  # where the item being read starts (for errors)
        self.truncated = False
        # The header is small: if the first chunk does not hold a whole item, this is not a
        # dump, and reading on (perhaps gigabytes) to find out would help nobody.
        # read1 where there is one: a pipe's read(n) waits for all n bytes (or its end), so
        # `... | show - --count 1` showed nothing while the pipe stayed open.
        self._read = getattr(file, "read1", file.read)
        while len(self._buffer) < READ_CHUNK_BYTES and item_end(self._buffer, 0) is None:
            more = self._read(READ_CHUNK_BYTES - len(self._buffer))
            if not more:
                break
            self._buffer += more
        try:
            first = next(self._items(), None) if item_end(self._buffer, 0) is not None else None
        except DumpFormatError:
            first = None
        if not isinstance(first, dict) or first.get("format") != FORMAT:
            raise DumpFormatError("not a trio_stream dump (no trio_stream-dump header)")
        version = first.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise DumpFormatError(
                f"dump format version {version!r}; this trio_stream reads up to {VERSION}"
            )
        self.header: dict[str, Any] = first

    def item_ready(self) -> bool:
        """Whether the next item is read in already (taking it will not read the file)."""
        return self._start < len(self._buffer) and item_end(self._buffer, self._start) is not None

    def _items(self) -> Iterator[Any]:
        for item in self._item_bytes():
            yield self._decoded(item)

    def _decoded(self, item: bytes) -> Any:
        return _decoded_at(item, self._item_at)

    def _item_bytes(self) -> Iterator[bytes]:
        """Each item's bytes (``position`` past it, ``_item_at`` where it starts)."""
        while True:
            end = item_end(self._buffer, self._start) if self._start < len(self._buffer) else None
            if end is None:
                more = self._read(READ_CHUNK_BYTES)
                if not more:
                    self.truncated = self._start < len(self._buffer)
                    return
                del self._buffer[: self._start]
                self._start = 0
                self._buffer += more
                continue
            item = bytes(self._buffer[self._start : end])
            self._item_at = self.position
            self.position += end - self._start
            self._start = end
            yield item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The frames, each checked to have a numeric ``t`` and a ``data``.

        A frame whose ``data`` this reader cannot decode (beyond its payload limits, or not
        the CBOR it claims to be) has an :class:`UndecodedPayload` there instead: the frames
        after it are read on. A compressed payload is decompressed (as a client does).

        Raises:
            DumpFormatError: an item is damaged or is not a frame map.
        """
        return self.frames()

    def frames(self, *, keep_encoded: bool = False) -> Iterator[dict[str, Any]]:
        """As iterating over the reader; ``keep_encoded``: a ``data`` that is compressed, or
        that this reader cannot decode, is an ``EncodedPayload`` of its recorded bytes instead
        (what ``replay`` sends on as it is)."""
        for item in self._item_bytes():
            try:
                frame = decode_payload(item)
            except ProtocolError:
                # The data alone is compressed (which a whole frame may not hold: it is a
                # payload's outermost tag only) or does not decode: each field on its own.
                frame = self._fields(item, keep_encoded)
            if not (isinstance(frame, dict) and "data" in frame and _is_time(frame.get("t"))):
                raise DumpFormatError("a frame must be a map with a numeric 't' and a 'data'")
            if not _is_time(frame.get("time")):
                frame["time"] = frame["t"]  # optional for writers other than ours
            yield frame

    def _fields(self, item: bytes, keep_encoded: bool) -> dict[str, Any]:
        """A frame map decoded field by field, its ``data`` from its own bytes."""
        fields: dict[str, Any] = {}
        for key, value in _split_fields(item, self._item_at):
            if key == "data":
                fields[key] = _payload_value(value, keep_encoded)
            else:
                fields[key] = self._decoded(value)
        return fields


def _split_fields(item: bytes, item_at: int) -> Iterator[tuple[str, bytes]]:
    """Each (key, value's bytes) of a frame map whose end item_end found (``item_at``: where
    it starts in the file, for errors).

    Raises:
        DumpFormatError: it is not a map of text keys.
    """
    view = memoryview(item)
    initial = item[0]
    if initial >> 5 != 5:  # not a map: as damaged as the whole decode said
        _decoded_at(item, item_at)
        raise DumpFormatError("a frame must be a map with a numeric 't' and a 'data'")
    info = initial & 0x1F
    if info < 24:
        pairs: int | None = info
        pos = 1
    elif info <= 27:
        pos = 1 + (1 << (info - 24))
        pairs = int.from_bytes(item[1:pos], "big")
    else:  # 31: pairs until a break (item_end checked the rest)
        pairs, pos = None, 1
    taken = 0
    while item[pos] != 0xFF if pairs is None else taken < pairs:
        taken += 1
        key_end = item_end(view, pos)
        value_end = item_end(view, key_end) if key_end is not None else None
        if key_end is None or value_end is None:  # (item_end read it whole already)
            raise DumpFormatError(f"a damaged item at byte {item_at}")
        key = _decoded_at(item[pos:key_end], item_at)
        if not isinstance(key, str):
            raise DumpFormatError(f"a frame's keys must be text, not {type(key).__name__}")
        yield key, item[key_end:value_end]
        pos = value_end


def _decoded_at(item: bytes, item_at: int) -> Any:
    try:
        return decode_payload(item)
    except ProtocolError as exc:
        raise DumpFormatError(f"a damaged item at byte {item_at}: {exc}") from None


def _payload_value(payload: bytes, keep_encoded: bool) -> Any:
    """A frame's ``data`` on its own: decoded as a client decodes a payload, or kept."""
    if keep_encoded:
        return EncodedPayload(payload)
    try:
        return decode_payload(payload)
    except ProtocolError as exc:
        return UndecodedPayload(payload, undecodable_reason(exc))


def undecodable_reason(exc: ProtocolError) -> str:
    """Why a payload does not decode, without the library's advice on raising a limit: that
    is for its API (``payload_limits=...``), which neither this reader nor the commands take."""
    return str(exc).split("; raise it with payload_limits=")[0]


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- continuing a recording (dump --append) ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RecordingEnd:
    """Where a dump stands, for ``dump --append`` to continue it (:func:`recording_end`).

    Attributes:
        header: the file's header.
        seq: the last frame's ``seq`` (None: it holds no frames).
        epoch: the channel's epoch of its last frame (of the header, without frames); None:
            the file does not say (written before dump noted epochs).
        whole_bytes: the file's length up to the end of its last whole item.
        size: the file's length: more than ``whole_bytes`` if it ends inside an item (a
            recorder killed while writing).
    """

    header: dict[str, Any]
    seq: int | None
    epoch: str | None
    whole_bytes: int
    size: int


# Where a frame item starts: a map of 6 to 9 pairs whose first key is "t", a float64, then
# "time" (frame_pieces writes every frame so).
_FRAME_START: Final = re.compile(rb"[\xa6-\xa9]\x61t\xfb[\s\S]{8}\x64time")
# The keys a marked frame has before its "mark", in frame_record's order ("gap", "epoch"
# only on some frames).
_BEFORE_MARK: Final = ("t", "time", "seq", "sender", "lost", "gap", "epoch")
# A marked frame's fields before its mark fit in this (a sender's name: 255 bytes at most).
_FIELDS_BEFORE_MARK_BYTES: Final = 1024
# The last bytes read first for the last mark (then 4x more, up to TAIL_MAX_BYTES).
TAIL_FIRST_BYTES: Final = 4 * 2**20
TAIL_MAX_BYTES: Final = 256 * 2**20


def recording_end(file: IO[bytes]) -> RecordingEnd:
    """Where the dump ``file`` (seekable, at its start) stands, for ``--append``.

    ``--append`` learns this before it subscribes, and a kept subscription waits only
    ``resume_grace_s`` for it: read item by item, a file of 1 M frames took 2.3 s, an hour
    at 10 kHz longer than the grace. ``dump`` marks a frame every ``MARK_EVERY_BYTES`` with
    the header's random ``mark``, which no payload holds by chance: the marks are found in
    the file's last bytes, and the frames from there tell where the file ends
    (:func:`_end_after_mark`); only those last frames are checked then, where reading every
    item checks the whole file. A file without marks (written by an older ``dump``, or
    another program), or whose last bytes hold none, is read item by item.

    Raises:
        DumpFormatError: not a dump; read item by item: an item before the last damaged, or
            a frame that is not a map with an integer ``seq``.
    """
    reader = DumpReader(file)
    size = file.seek(0, io.SEEK_END)
    start = reader.position
    header_epoch = reader.header.get("epoch")
    header_epoch = header_epoch if isinstance(header_epoch, str) else None
    mark = reader.header.get("mark")
    if isinstance(mark, bytes) and len(mark) == MARK_BYTES:
        found = _end_after_mark(file, start, size, mark)
        if found is not None:
            last, epoch, whole_bytes = found
            epoch = header_epoch if epoch is None else epoch
            return RecordingEnd(reader.header, int(last["seq"]), epoch, whole_bytes, size)
    return _read_to_end(file, reader.header, start, size, header_epoch)


def _read_to_end(
    file: IO[bytes], header: dict[str, Any], start: int, size: int, epoch: str | None
) -> RecordingEnd:
    """recording_end by reading every item: each is decoded by cbor2's C decoder from chunks
    in memory, 2 us a 200-byte frame, where item_end's walk took 5-6 (48 for a list of 100
    numbers) and the decoder reading the file itself 4 (a seek per tell). An item cbor2 does
    not take (one beyond what it decodes, or cut short) is measured by the walk, which tells
    a cut item from a damaged one."""
    last: dict[str, Any] | None = None
    chunk = _Chunk(file, start, size)
    while (pos := chunk.position) < size:
        frame = chunk.next_item()
        if frame is None:  # cut short: the file's whole items end here
            break
        if not isinstance(frame, dict) or type(frame.get("seq")) is not int:
            raise DumpFormatError(f"the item at byte {pos} is not a frame with an integer 'seq'")
        new_epoch = _epoch_named(frame)
        if new_epoch is not None:
            epoch = new_epoch
        last = frame
    seq = None if last is None else int(last["seq"])
    return RecordingEnd(header, seq, epoch, chunk.position, size)


def _epoch_named(frame: dict[str, Any]) -> str | None:
    """The epoch a frame names: its ``epoch``, or its mark's (None: neither)."""
    epoch = frame.get("epoch")
    if isinstance(epoch, str):
        return epoch
    mark = frame.get("mark")
    if isinstance(mark, list) and len(mark) == 2 and isinstance(mark[1], str):
        return mark[1]
    return None


def _end_after_mark(
    file: IO[bytes], start: int, size: int, mark: bytes
) -> tuple[dict[str, Any], str | None, int] | None:
    """The last whole frame, its epoch and where the whole items end, read from a marked
    frame in the file's last bytes on; None if they hold none from which every item to the
    end is a frame (reading every item then tells what is wrong, as it does for a file
    without marks).

    The earliest marked frame in the bytes read is taken: its frames run through every
    later mark, so a payload that holds this file's own bytes (marks and all: a channel
    that carries the recording's tail) is read as the payload it is; and a recorder killed
    while writing a marked frame leaves the frames before it, from an earlier mark."""
    window = TAIL_FIRST_BYTES
    while True:
        low = max(start, size - window)
        file.seek(low)
        data = file.read(size - low)
        found = -1
        while (found := data.find(mark, found + 1)) >= 0:
            frame_at = _marked_frame_at(data, found, mark)
            if frame_at is None:
                continue
            ran = _frames_to_end(data, frame_at)
            if ran is not None:
                last, epoch, whole = ran
                return last, epoch, low + whole
        if low == start or window >= TAIL_MAX_BYTES:
            return None
        window *= 4


def _marked_frame_at(data: bytes, mark_at: int, mark: bytes) -> int | None:
    """Where the frame whose mark's bytes are at ``mark_at`` in ``data`` starts (None: none
    does). Its fields up to the mark are walked one by one (its payload comes after them,
    perhaps gigabytes on) and must be a frame's, in frame_record's order."""
    low = max(0, mark_at - _FIELDS_BEFORE_MARK_BYTES)
    for match in reversed(list(_FRAME_START.finditer(data, low, mark_at))):
        at = match.start()
        stream = io.BytesIO(data[at : mark_at + MARK_BYTES + 1])
        stream.seek(1)  # the map's head: its pairs are read one by one
        decoder = cbor2.CBORDecoder(stream, str_errors="replace", strict_hashable_types=True)
        keys: list[Any] = []
        try:
            while (key := decoder.decode()) != "mark":
                keys.append(key)
                decoder.decode()  # its value
            # The mark's value: a list of two whose first is these bytes (0x82, 0x50).
            if stream.read(2) != b"\x82\x50" or at + stream.tell() != mark_at:
                continue
        except Exception:
            continue
        if keys == [key for key in _BEFORE_MARK if key in keys]:
            return at
    return None


def _frames_to_end(data: bytes, at: int) -> tuple[dict[str, Any], str | None, int] | None:
    """The last frame of the items from ``at`` to the end of ``data``, the last epoch they
    name, and where the whole ones end (a last one may be cut short); None unless every
    whole one is a frame."""
    stream = io.BytesIO(data)
    stream.seek(at)
    decoder = cbor2.CBORDecoder(
        stream,
        str_errors="replace",
        strict_hashable_types=True,
        semantic_decoders=dict.fromkeys(_SEMANTIC_TAGS, _kept_as_is),
    )
    last: dict[str, Any] | None = None
    epoch: str | None = None
    whole = at
    while whole < len(data):
        try:
            item = decoder.decode()
        except Exception:
            # Cut short (a recorder killed while writing) only if no item follows: a walk
            # that finds the bytes end inside it. Anything else: not this way.
            try:
                if item_end(data, whole) is None:
                    break
            except DumpFormatError:
                pass
            return None
        if not isinstance(item, dict) or type(item.get("seq")) is not int:
            return None
        epoch = _epoch_named(item) or epoch
        last, whole = item, stream.tell()
    return None if last is None else (last, epoch, whole)


class _Chunk:
    """The items of a file from ``start``, decoded by cbor2 from chunks read into memory."""

    def __init__(self, file: IO[bytes], start: int, size: int) -> None:
        self._file = file
        self._size = size
        self._load(start, b"")

    def _load(self, start: int, kept: bytes) -> None:
        """Decode from file offset ``start`` on, ``kept`` (its bytes in hand) first."""
        self._file.seek(start + len(kept))
        data = kept + self._file.read(max(READ_CHUNK_BYTES, len(kept)))
        self._start = start
        self._stream = io.BytesIO(data)
        self._end = start + len(data)  # the file offset the chunk ends at
        self._decoder = cbor2.CBORDecoder(
            self._stream,
            str_errors="replace",  # what the file holds is read, not checked
            strict_hashable_types=True,
            semantic_decoders=dict.fromkeys(_SEMANTIC_TAGS, _kept_as_is),
        )

    @property
    def position(self) -> int:
        """The file offset of the next item."""
        return self._start + self._stream.tell()

    def next_item(self) -> Any:
        """The next item (a frame whose ``data`` cbor2 could not decode: without it); None
        if the file ends inside it.

        Raises:
            DumpFormatError: it is not CBOR (or a map of other keys than text).
        """
        while True:
            at = self._stream.tell()
            try:
                return self._decoder.decode()
            except Exception:
                if self._end < self._size:  # perhaps cut by the chunk's end: more of it
                    self._load(self._start + at, self._stream.getbuffer()[at:].tobytes())
                    continue
            pos = self._start + at
            walked = _walked_fields(self._file, pos)
            if walked is None:
                self._stream.seek(at)
                return None
            fields, end = walked
            self._load(end, b"")
            return fields


def _walked_fields(file: IO[bytes], pos: int) -> tuple[dict[str, Any], int] | None:
    """The fields but ``data`` of the frame at ``pos`` (and where it ends), measured by
    item_end; None if the file ends inside it.

    Raises:
        DumpFormatError: it is not CBOR, or not a map of text keys.
    """
    file.seek(pos)
    item = bytearray()
    try:
        while (end := item_end(item, 0) if item else None) is None:
            more = file.read(READ_CHUNK_BYTES)
            if not more:
                return None
            item += more
    except DumpFormatError as exc:
        raise DumpFormatError(f"a damaged item at byte {pos}: {exc}") from None
    fields = {
        key: _decoded_at(value, pos)
        for key, value in _split_fields(bytes(item[:end]), pos)
        if key != "data"
    }
    return fields, pos + end
