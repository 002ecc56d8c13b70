"""Length-prefixed framing: bytes in, whole frames out (sans-io, h11 style).

A frame on the wire is a 4-byte big-endian length followed by that many bytes of body. The
length is checked against the limit as soon as its 4 bytes are in, *before* any of the body is
buffered, so a peer cannot make us allocate a huge frame.
"""

from __future__ import annotations

import struct
from typing import Final

from .._exceptions import FrameTooLarge, ProtocolError
from .bytes_like import BytesLike

LENGTH_PREFIX: Final = struct.Struct(">I")
PREFIX_BYTES: Final = LENGTH_PREFIX.size


def frame_prefix(body_bytes: int) -> bytes:
    """The length prefix for a frame body of ``body_bytes`` bytes."""
    return LENGTH_PREFIX.pack(body_bytes)


class FrameDecoder:
    """Accumulates received bytes and hands out complete frame bodies.

    Each body is its own ``bytearray`` (writable, so numpy arrays decoded from it are too);
    nothing handed out aliases the decoder's internal buffer.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._pending_length: int | None = None

    def receive_data(self, data: BytesLike) -> None:
        self._buffer += data

    def bytes_wanted(self) -> int:
        """How many more bytes would complete the frame being received (a read-size hint)."""
        if self._pending_length is None:
            return max(PREFIX_BYTES - len(self._buffer), 1)
        return max(PREFIX_BYTES + self._pending_length - len(self._buffer), 1)

    def frames(self) -> list[bytearray]:
        """Every complete frame received so far, in order.

        Raises:
            FrameTooLarge: a declared length exceeds ``max_frame_bytes``.
            ProtocolError: a declared length of zero (every body starts with a type byte).
        """
        buffer = self._buffer
        out: list[bytearray] = []
        pos = 0
        end = len(buffer)
        while end - pos >= PREFIX_BYTES:
            (length,) = LENGTH_PREFIX.unpack_from(buffer, pos)
            if length > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes} bytes;"
                    " split the value or raise max_frame_bytes on the server"
                )
            if length == 0:
                raise ProtocolError("empty frame: every frame body starts with a type byte")
            if end - pos - PREFIX_BYTES < length:
                self._pending_length = length
                break
            start = pos + PREFIX_BYTES
            out.append(buffer[start : start + length])
            pos = start + length
        else:
            self._pending_length = None
        if pos:
            del buffer[:pos]
        return out
