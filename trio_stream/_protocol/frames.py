"""The binary frame types of docs/protocol.md section 1: layouts, packing and parsing.

CONTROL frames carry a CBOR map (see messages.py); the other types have fixed binary headers so
that the hot path (publish, fan-out, credit) never touches CBOR on the server.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

from .._exceptions import ProtocolError
from .bytes_like import BytesLike


class FrameType(IntEnum):
    CONTROL = 0x01
    PUBLISH = 0x02
    DATA = 0x03
    CREDIT = 0x04
    PUB_ACK = 0x05


# Plain ints for the hot paths: comparing with an IntEnum member costs a method call.
CONTROL: Final = 0x01
PUBLISH: Final = 0x02
DATA: Final = 0x03
CREDIT: Final = 0x04
PUB_ACK: Final = 0x05


CONTROL_TYPE_BYTE: Final = bytes((FrameType.CONTROL,))

# PUBLISH: type, pub_id, time; the payload follows.
PUBLISH_HEAD: Final = struct.Struct(">BId")
# DATA, the part that differs per reader: length prefix, type, sub_id, lost.
DATA_READER_HEAD: Final = struct.Struct(">IBII")
# DATA, the part shared by every reader of one publish: seq, time, sender name length.
DATA_SHARED_HEAD: Final = struct.Struct(">QdB")
# CREDIT and PUB_ACK, with their length prefix: length, type, id, frames.
COUNTER_FRAME: Final = struct.Struct(">IBII")

DATA_READER_BODY_BYTES: Final = DATA_READER_HEAD.size - 4  # without the length prefix
MAX_SENDER_NAME_BYTES: Final = 255
MAX_U32: Final = 0xFFFFFFFF


def frame_type(frame: BytesLike) -> int:
    return frame[0]


def publish_head(pub_id: int, time: float) -> bytes:
    """The PUBLISH body up to the payload."""
    return PUBLISH_HEAD.pack(PUBLISH, pub_id, time)


# A whole PUBLISH frame up to the payload, length prefix included: one pack per send.
PUBLISH_WIRE_HEAD: Final = struct.Struct(">IBId")


def publish_wire_head(body_bytes: int, pub_id: int, time: float) -> bytes:
    """Length prefix and PUBLISH head for a frame body of ``body_bytes`` bytes."""
    return PUBLISH_WIRE_HEAD.pack(body_bytes, PUBLISH, pub_id, time)


def parse_publish(frame: BytesLike) -> tuple[int, float]:
    """(pub_id, time) of a PUBLISH frame body; its payload starts at ``PUBLISH_HEAD.size``.

    A plain tuple, not a record: this runs once per published frame on the server.
    """
    if len(frame) < PUBLISH_HEAD.size:
        raise ProtocolError("truncated PUBLISH frame")
    _, pub_id, time = _PUBLISH_HEAD_AT(frame)
    return pub_id, time


_PUBLISH_HEAD_AT: Final = PUBLISH_HEAD.unpack_from


def sender_field(name: str) -> bytes:
    """The sender name as DATA frames carry it (UTF-8, at most 255 bytes); once per publisher.

    The server refuses longer client names at hello; a longer name (a server-side one) is cut
    at a character boundary, never inside one: a reader must always be able to decode it.
    """
    encoded = name.encode()
    if len(encoded) <= MAX_SENDER_NAME_BYTES:
        return encoded
    return encoded[:MAX_SENDER_NAME_BYTES].decode("utf-8", "ignore").encode()


def data_shared_head(seq: int, time: float, sender: bytes) -> bytes:
    """The bytes of a DATA frame between the per-reader head and the payload."""
    return DATA_SHARED_HEAD.pack(seq, time, len(sender)) + sender


def data_reader_head(shared_bytes: int, sub_id: int, lost: int) -> bytes:
    """Length prefix and per-reader head of a DATA frame whose shared part has that size."""
    return DATA_READER_HEAD.pack(
        DATA_READER_BODY_BYTES + shared_bytes, DATA, sub_id, lost if lost < MAX_U32 else MAX_U32
    )


class Data(NamedTuple):
    sub_id: int
    lost: int
    seq: int
    time: float
    sender: str
    payload_offset: int


# A whole DATA body head in one unpack: type, sub_id, lost, seq, time, sender name length.
_DATA_HEAD: Final = struct.Struct(">BIIQdB")
_SUB_ID: Final = struct.Struct(">I")
# Readers see the same few sender names over and over; decoding each once saves a bytes
# copy and a UTF-8 decode per message.
_sender_names: dict[bytes, str] = {}
_SENDER_CACHE_MAX: Final = 4096


def data_sub_id(frame: BytesLike) -> int:
    """The subscription a DATA frame is for (enough to route it)."""
    if len(frame) < 5:
        raise ProtocolError("truncated DATA frame")
    return int(_SUB_ID.unpack_from(frame, 1)[0])


def parse_data(frame: BytesLike) -> Data:
    if len(frame) < _DATA_HEAD.size:
        raise ProtocolError("truncated DATA frame")
    _, sub_id, lost, seq, time, name_len = _DATA_HEAD.unpack_from(frame)
    end = _DATA_HEAD.size + name_len
    return Data(sub_id, lost, seq, time, sender_at(frame, end), end)


def sender_at(frame: BytesLike, end: int) -> str:
    """The sender name of a DATA frame whose name ends at ``end``."""
    if len(frame) < end:
        raise ProtocolError("truncated DATA frame")
    raw = bytes(frame[_DATA_HEAD.size : end])
    sender = _sender_names.get(raw)
    if sender is None:
        try:
            sender = raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("DATA frame sender is not UTF-8") from exc
        if len(_sender_names) >= _SENDER_CACHE_MAX:
            _sender_names.clear()
        _sender_names[raw] = sender
    return sender


DATA_HEAD: Final = _DATA_HEAD  # for the client's inlined fast path


def credit_frame(sub_id: int, frames: int) -> bytes:
    """A whole CREDIT frame, length prefix included."""
    return COUNTER_FRAME.pack(9, CREDIT, sub_id, frames)


def pub_ack_frame(pub_id: int, frames: int) -> bytes:
    """A whole PUB_ACK frame, length prefix included."""
    return COUNTER_FRAME.pack(9, PUB_ACK, pub_id, frames)


def parse_counter(frame: BytesLike) -> tuple[int, int]:
    """(id, frames) of a CREDIT or PUB_ACK frame body."""
    if len(frame) != 9:
        raise ProtocolError("a CREDIT or PUB_ACK frame is exactly 9 bytes")
    _, ident, frames = struct.unpack_from(">BII", frame)
    return ident, frames
