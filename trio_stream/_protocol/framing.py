"""Length-prefixed framing: bytes in, whole frames out (sans-io, h11 style).

A frame on the wire is a 4-byte big-endian length followed by that many bytes of body. The
length is checked against the limit as soon as its 4 bytes are in, *before* any of the body is
buffered, so a peer cannot make us allocate a frame over the limit.

Large bodies (numpy arrays of megabytes) are received in place: the decoder allocates a
large frame's own ``bytearray`` and offers the rest of it as :meth:`FrameDecoder.body_buffer`,
which a transport can ``recv_into`` directly. Without that, each byte of an array is copied
three times on its way in (the receive, the append to the decoder's buffer, the slice that
becomes the frame). It allocates once the peer has sent, on this connection, at least as many
bytes as the frame has (this frame's own included), or an eighth of the frame itself: a peer
that announces 64 MiB in 4 bytes and sends nothing more would otherwise make us hold 64 MiB,
on every connection it opens (even before its hello). A writer of large frames pays the
slower way for its first frame only (an eighth of it through the shared buffer); on plain TCP
a frame up to 2 MiB whose prefix starts a read never does, since that 256 KiB read brings an
eighth of it. When the connection has brought fewer bytes than the frame has, the buffer is
made twice as large as what is here of the frame, and doubled as it fills (up to the frame):
a buffer is zero-filled when made, and 30 connections that each announced 64 MiB and sent 9
had the server fill 1.9 GB at once, every client waiting 5 s (an outside review).

A reader can also parse frames while they are found (:meth:`FrameDecoder.frames_and_runs`):
a function that knows a frame type takes every well-formed frame of it in the same pass that
finds them, so a frame's length prefix and its head are unpacked by one C call, not two.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NoReturn, TypeAlias, TypeVar

from .._exceptions import FrameTooLarge, ProtocolError
from .bytes_like import BytesLike

LENGTH_PREFIX: Final = struct.Struct(">I")
PREFIX_BYTES: Final = LENGTH_PREFIX.size
_LENGTH_AT: Final = LENGTH_PREFIX.unpack_from
# Frames at least this large are received in place; smaller ones are cheaper to slice out of
# a shared buffer than to receive one syscall each.
DIRECT_BODY_MIN_BYTES: Final = 64 * 1024
# A large frame's own buffer is allocated once 1/this of it has arrived, or as many bytes as
# it has on the connection so far (see above).
DIRECT_BODY_AMPLIFICATION: Final = 8
# ... and, before the connection has brought as many bytes as the frame has, made this many
# times what is here of it, and grown by this factor as it fills (see above).
DIRECT_BODY_GROWTH: Final = 2


T = TypeVar("T")
# take_runs(buffer, pos, end, max_frame_bytes) -> (runs, where it stopped): see frames_and_runs.
RunTaker: TypeAlias = Callable[[bytearray, int, int, int], tuple[list[T], int]]


def frame_prefix(body_bytes: int) -> bytes:
    """The length prefix for a frame body of ``body_bytes`` bytes."""
    return LENGTH_PREFIX.pack(body_bytes)


class FrameDecoder:
    """Accumulates received bytes and hands out complete frame bodies.

    Each body is its own ``bytearray`` (writable, so numpy arrays decoded from it are too);
    nothing handed out aliases the decoder's internal buffer.

    Bytes come in through :meth:`receive_data`, or, while a large frame is being received,
    straight into :meth:`body_buffer` followed by :meth:`body_received`. Either way
    :meth:`frames` hands out the frames completed so far, in order.
    """

    def __init__(self, max_frame_bytes: int, direct_min_bytes: int = DIRECT_BODY_MIN_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._direct_min = direct_min_bytes
        self._buffer = bytearray()
        self._pending_length: int | None = None
        self._body: bytearray | None = None  # a large frame being received in place
        self._body_length = 0  # that frame's whole body (its buffer may be shorter yet)
        self._body_filled = 0
        self._complete: list[bytearray] = []  # large frames completed, not yet handed out
        self._received = 0  # bytes so far on this connection: what a large frame may count on

    def receive_data(self, data: BytesLike) -> None:
        body = self._body
        if body is not None:
            # The rest of a large frame first, then whatever follows it (a slice assigned
            # past the buffer's end grows it).
            take = min(self._body_length - self._body_filled, len(data))
            body[self._body_filled : self._body_filled + take] = memoryview(data)[:take]
            self.body_received(take)
            if take == len(data):
                return
            data = memoryview(data)[take:]
        self._received += len(data)  # (body_received counted the large frame's part)
        self._buffer += data

    def body_buffer(self) -> memoryview | None:
        """Where the rest of the large frame being received should go, if one is.

        The caller receives into it (``sock.recv_into``), releases the view, and reports the
        count with :meth:`body_received`.
        """
        body = self._body
        if body is None:
            return None
        if self._body_filled == len(body):  # its buffer is full, the frame is not
            # bytes(n) is calloc'd, its pages untouched: filling the new part is one pass
            body += bytes(min(len(body) * (DIRECT_BODY_GROWTH - 1), self._body_length - len(body)))
        return memoryview(body)[self._body_filled :]

    def body_received(self, nbytes: int) -> None:
        """``nbytes`` more bytes of the large frame arrived in :meth:`body_buffer`."""
        body = self._body
        if body is None or not 0 <= nbytes <= len(body) - self._body_filled:
            raise ValueError("body_received() without room for that many bytes")
        self._body_filled += nbytes
        self._received += nbytes
        if self._body_filled == self._body_length:
            self._complete.append(body)
            self._body = None

    @property
    def partial_bytes(self) -> int:
        """Bytes received of a frame not complete yet, its length prefix included (0 when
        only whole frames came)."""
        if self._body is not None:
            return PREFIX_BYTES + self._body_filled
        return len(self._buffer)

    def bytes_wanted(self) -> int:
        """How many more bytes would complete the frame being received (a read-size hint)."""
        if self._body is not None:
            return self._body_length - self._body_filled
        if self._pending_length is None:
            return max(PREFIX_BYTES - len(self._buffer), 1)
        return max(PREFIX_BYTES + self._pending_length - len(self._buffer), 1)

    def frames_and_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        """:meth:`frames`, with ``take_runs`` parsing the frames it knows as they are found.

        ``take_runs(buffer, pos, end, max_frame_bytes)`` takes whole frames from
        ``buffer[pos:end]`` on, as many as it can, and returns what it made of them (runs) and
        the position after them. It stops, at the latest, before the first frame that is not
        whole in ``buffer[:end]`` or whose length is beyond ``max_frame_bytes``; that frame and
        the frames it does not know come out as :meth:`frames` hands them out, in order
        between the runs, with the same checks and errors.
        """
        out: list[bytearray | T] = list(self._complete)
        self._complete = []
        if self._body is not None:
            return out  # nothing after a large frame's end has been received yet
        buffer = self._buffer
        end = len(buffer)
        max_frame = self.max_frame_bytes
        self._pending_length = None
        pos = 0
        while True:
            runs, pos = take_runs(buffer, pos, end, max_frame)
            out += runs
            if end - pos < PREFIX_BYTES:
                break
            # A frame that take_runs left: what frames() does with it.
            (length,) = _LENGTH_AT(buffer, pos)
            if not 0 < length <= max_frame:
                if out:
                    break  # the frames before it first (see refusal_next)
                self._refuse_length(length)
            start = pos + PREFIX_BYTES
            stop = start + length
            if stop > end:
                if self._wait_for(length, start, end):
                    pos = end
                break
            out.append(buffer[start:stop])
            pos = stop
        if pos:
            del buffer[:pos]
        return out

    @property
    def refusal_next(self) -> bool:
        """Whether the next call of :meth:`frames` raises without more bytes: the frames
        before a bad length prefix are handed out first (a hello pipelined with a bad frame
        is welcomed, then the connection refused for the frame), the error on the next call.
        """
        buffer = self._buffer
        if self._body is not None or len(buffer) < PREFIX_BYTES:
            return False
        (length,) = _LENGTH_AT(buffer, 0)
        return not 0 < length <= self.max_frame_bytes

    def frames(self) -> list[bytearray]:
        """Every complete frame received so far, in order.

        Raises:
            FrameTooLarge: a declared length exceeds ``max_frame_bytes``.
            ProtocolError: a declared length of zero (every body starts with a type byte).
        """
        out = self._complete
        self._complete = []
        if self._body is not None:
            return out  # nothing after a large frame's end has been received yet
        buffer = self._buffer
        pos = 0
        end = len(buffer)
        # Once per frame on every connection: locals only, one bounds check for both limits.
        length_at = _LENGTH_AT
        max_frame = self.max_frame_bytes
        append = out.append
        while end - pos >= PREFIX_BYTES:
            (length,) = length_at(buffer, pos)
            if not 0 < length <= max_frame:
                if out:
                    self._pending_length = None
                    break  # the frames before it first (see refusal_next)
                self._refuse_length(length)
            start = pos + PREFIX_BYTES
            stop = start + length
            if stop <= end:
                append(buffer[start:stop])
                pos = stop
                continue
            if self._wait_for(length, start, end):
                pos = end
            break
        else:
            self._pending_length = None
        if pos:
            del buffer[:pos]
        return out

    def _wait_for(self, length: int, start: int, end: int) -> bool:
        """A frame of ``length`` bytes starts at ``start``; the buffer ends at ``end``, before it.

        Returns:
            True if the frame is large and an eighth of it is here (or the connection has
            brought as many bytes as it has, its own included): it is received in place from
            now on, into its own buffer, which holds what there is of it already (the caller
            drops that part).
        """
        if length < self._direct_min or (
            (end - start) * DIRECT_BODY_AMPLIFICATION < length and self._received < length
        ):
            self._pending_length = length
            return False
        have = end - start
        size = length
        if self._received < length:  # a peer that has sent less: no more than it sent, twice
            size = min(length, max(have * DIRECT_BODY_GROWTH, self._direct_min))
        body = bytearray(size)
        body[:have] = memoryview(self._buffer)[start:end]
        self._body = body
        self._body_length = length
        self._body_filled = have
        self._pending_length = None
        return True

    def _refuse_length(self, length: int) -> NoReturn:
        if length == 0:
            raise ProtocolError("empty frame: every frame body starts with a type byte")
        raise FrameTooLarge(
            f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes} bytes;"
            " split the value or raise max_frame_bytes on the server (serve --max-frame-bytes)"
        )
