"""The dump file format: what ``trio-stream dump`` writes and ``trio-stream replay`` reads.

A dump file is a CBOR sequence (RFC 8742): CBOR data items written one after the other, with
nothing between them. There is no index and no footer, so a recording that was killed is
still readable up to its last complete frame.

The first item is a header map::

    {"format": "trio_stream-dump", "version": 1, "channel": "AnalogInput1",
     "created": 1767225600.123}

``created`` is the Unix time (seconds) at which the recording started. Writers may add keys
(``trio-stream dump`` adds ``source``, the server URL, and ``policy``); readers ignore keys
they do not know. A reader refuses a file whose ``format`` differs or whose ``version`` is
newer than it knows.

Each following item is one frame, a map::

    {"t": 1767225600.512,  # when the recorder received the frame (Unix seconds, float)
     "time": 1767225600.511,  # the writer's clock when it sent the frame
     "seq": 42,  # the channel's sequence number (gaps: frames not delivered to the recorder)
     "sender": "daq",  # the name of the client that published the frame
     "lost": 0,  # frames the recorder's subscription lost just before this one
     "data": ...}  # the value, encoded exactly as on the wire (docs/protocol.md section 4)

Values are encoded as trio_stream payloads, so numpy arrays are RFC 8746 typed arrays
(little-endian; tag 40 around ``[shape, typed array]`` when not one-dimensional). ``replay``
schedules frames by the differences of their ``t``.

Reading a dump needs nothing but cbor2 (and numpy for the arrays)::

    import cbor2, numpy as np

    TYPED = {64: "u1", 72: "i1", 69: "<u2", 70: "<u4", 71: "<u8", 77: "<i2", 78: "<i4",
             79: "<i8", 84: "<f2", 85: "<f4", 86: "<f8"}

    def tag_hook(tag, immutable):  # cbor2 >= 6; cbor2 5 passes (decoder, tag)
        if tag.tag in TYPED:
            return np.frombuffer(tag.value, dtype=TYPED[tag.tag])
        if tag.tag == 40:  # [shape, flat array]
            return tag.value[1].reshape(tag.value[0])
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

import math
import time
from collections.abc import Iterator
from typing import IO, Any, Final

from .._exceptions import ProtocolError
from .._protocol.bytes_like import BytesLike
from .._protocol.codec import decode_payload, encode_payload
from .._records import Gap, Message

FORMAT: Final = "trio_stream-dump"
VERSION: Final = 1
READ_CHUNK_BYTES: Final = 1 * 2**20


class DumpFormatError(ValueError):
    """The file is not a trio_stream dump (or is from a newer version)."""


def header(channel: str, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "channel": channel,
        "created": time.time(),
        **extra,
    }


def frame_record(msg: Message, received: float) -> dict[str, Any]:
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
    return record


def gap_record(gap: Gap) -> dict[str, Any]:
    return {"kind": gap.kind, "lost": gap.lost, "recovered": gap.recovered}


def encode_item(item: Any) -> list[BytesLike]:
    """One sequence item as pieces to write one after the other (arrays are not copied)."""
    return encode_payload(item, copy=False)


# -- reading -----------------------------------------------------------------------------------
def item_end(data: bytes | bytearray, pos: int) -> int | None:
    """The offset just past the CBOR data item starting at ``pos``; None if ``data`` ends first.

    Only heads are parsed (byte and text strings are skipped by their length), so finding
    where an item ends is cheap even for a frame that holds a large array.

    Raises:
        DumpFormatError: the bytes are not CBOR.
    """
    end = len(data)
    # Items still to read at each open nesting level; -1 for an indefinite-length container,
    # which a 0xFF "break" closes.
    remaining = [1]
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        if pos >= end:
            return None
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
            try:
                value = decode_payload(item)
            except ProtocolError as exc:
                raise DumpFormatError(f"a damaged item at byte {self.position}: {exc}") from None
            self.position += end - self._start
            self._start = end
            yield value

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The frames, each checked to have a numeric ``t`` and a ``data``.

        Raises:
            DumpFormatError: an item is damaged or is not a frame map.
        """
        for item in self._items():
            if not (isinstance(item, dict) and "data" in item and _is_time(item.get("t"))):
                raise DumpFormatError("a frame must be a map with a numeric 't' and a 'data'")
            if not _is_time(item.get("time")):
                item["time"] = item["t"]  # optional for writers other than ours
            yield item


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
