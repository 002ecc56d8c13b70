"""The values every system moves, and the one cbor2 encoding the peers share.

Redis and NATS move bytes, so the harness encodes for them with cbor2 (and decodes on
receive); trio_stream is handed the Python value and its client encodes it. Both sides pay
one encode and one decode per frame. With ``raw=True`` (``--payload-only``) values are
already bytes and the peers move them untouched.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

import cbor2
import numpy as np
import numpy.typing as npt

from benchmarks.jobs import PayloadKind, PayloadSpec

SMALL_FRAME_BYTES = 100  # target size of a small frame on the wire (payload only)
ARRAY_BYTES = 2**20  # S2's array: 131072 float64 values
RFC8746_FLOAT64_LE = 86  # CBOR tag of a little-endian float64 typed array

# Raw small frames: sent_ns, seq, last, then padding up to SMALL_FRAME_BYTES.
_RAW_HEADER = struct.Struct("<qq?")
# CBOR small frames are [sent_ns, seq, last, pad]; 82 bytes of pad give ~100 bytes encoded
# (a 9-byte timestamp, a small seq, a bool, the byte-string header and the array header).
_CBOR_PAD = bytes(82)
_RAW_PAD = bytes(SMALL_FRAME_BYTES - _RAW_HEADER.size)


class Codec(Protocol):
    def encode(self, value: object) -> bytes: ...
    def decode(self, data: bytes) -> object: ...


class CborCodec:
    """cbor2 both ways; a float64 array travels as RFC 8746 tag 86 around its raw bytes."""

    def encode(self, value: object) -> bytes:
        if isinstance(value, np.ndarray):
            return cbor2.dumps(cbor2.CBORTag(RFC8746_FLOAT64_LE, value.tobytes()))
        return cbor2.dumps(value)

    def decode(self, data: bytes) -> object:
        value = cbor2.loads(data)
        if isinstance(value, cbor2.CBORTag) and value.tag == RFC8746_FLOAT64_LE:
            return np.frombuffer(value.value, dtype="<f8")
        return value


class RawCodec:
    """Identity: the value already is the bytes to send."""

    def encode(self, value: object) -> bytes:
        if not isinstance(value, bytes):
            raise TypeError(f"raw mode moves bytes, got {type(value).__name__}")
        return value

    def decode(self, data: bytes) -> object:
        return data


def codec_for(spec: PayloadSpec) -> Codec:
    return RawCodec() if spec.raw else CborCodec()


@dataclass(frozen=True)
class Header:
    sent_ns: int
    seq: int
    last: bool  # the publisher's last frame of the case: a latency reader may stop


class PayloadFactory:
    """Builds the value of each frame: small frames stamped at send time, or the array."""

    def __init__(self, spec: PayloadSpec) -> None:
        self._spec = spec
        # S2 sends the same array every time: building it is not what we measure, but
        # encoding it is (trio_stream's client and CborCodec each copy it once per frame).
        array: npt.NDArray[np.float64] = np.linspace(0.0, 1.0, ARRAY_BYTES // 8)
        self._array: object = array.tobytes() if spec.raw else array

    @property
    def nbytes(self) -> int:
        """Nominal payload size, for MB/s."""
        return ARRAY_BYTES if self._spec.kind is PayloadKind.ARRAY else SMALL_FRAME_BYTES

    def make(self, sent_ns: int, seq: int, last: bool) -> object:
        if self._spec.kind is PayloadKind.ARRAY:
            return self._array
        if self._spec.raw:
            return _RAW_HEADER.pack(sent_ns, seq, last) + _RAW_PAD
        return [sent_ns, seq, last, _CBOR_PAD]


def read_header(value: object) -> Header:
    """The header of a decoded small frame (bytes in raw mode, a CBOR array otherwise)."""
    if isinstance(value, bytes | bytearray | memoryview):
        sent_ns, seq, last = _RAW_HEADER.unpack_from(value)
        return Header(sent_ns, seq, last)
    if isinstance(value, list | tuple) and len(value) >= 3:
        return Header(int(value[0]), int(value[1]), bool(value[2]))
    raise TypeError(f"not a small frame: {type(value).__name__}")


def mismatch(spec: PayloadSpec, value: object) -> str | None:
    """Why a received value is not what the publisher sent (None: it is).

    Readers check the first frame of each subscription, so that a system (or an adapter)
    that hands back something else cannot produce a figure silently.
    """
    if spec.kind is PayloadKind.SMALL:
        try:
            read_header(value)
        except (TypeError, struct.error) as exc:
            return f"unexpected small frame: {exc}"
        return None
    if spec.raw:
        ok = isinstance(value, bytes | bytearray | memoryview) and len(value) == ARRAY_BYTES
    else:
        ok = (
            isinstance(value, np.ndarray)
            and value.dtype == np.float64
            and value.nbytes == ARRAY_BYTES
        )
    return None if ok else f"unexpected array frame: {type(value).__name__}"
