"""WebSocket messages <-> frames, over a trio-websocket connection (client and server side).

A binary WebSocket message carries one or more whole frames, each length-prefixed exactly as
on TCP (docs/protocol.md section 1). Messages are what costs here: wsproto spends ~20 µs on
each, whatever its size, against well under a microsecond per frame for our framing. So
``send`` turns a whole batch of frames (the session's sender hands over everything ready) into
ONE message, and the receiving side takes a message apart into its frames.

Large messages cost per byte instead. RFC 6455 has a client mask every byte it sends and the
server unmask them; wsproto does that with strided slices (~100 MB/s on a 16 MiB message),
and copies a message five to seven times on its way out: a 63 MiB array took ~6x as long
over ws:// as over tcp://. So numpy masks (:class:`NumpyXorMasker`, installed into wsproto
below); a message of DIRECT_MESSAGE_MIN_BYTES or more is framed here and its pieces written
as they are (a client's masked through one small buffer); and a received message of one
large frame becomes that frame with one copy, trio-websocket's (install_bytearray_messages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, cast

import numpy as np
import trio
import trio_websocket
import wsproto.frame_protocol
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage
from wsproto.utilities import LocalProtocolError

from .._exceptions import ConnectionClosed, FrameTooLarge, LimitExceeded, ProtocolError
from .._protocol.brief import cut
from .._protocol.bytes_like import BytesLike
from .._protocol.framing import LENGTH_PREFIX, PREFIX_BYTES, FrameDecoder, RunTaker, T
from .._util import exception_leaves, open_own_nursery, unwrap_single_exception
from . import sniff, ws_fail
from .base import FrameTransport, WrongServer
from .connect import cannot_connect
from .urls import split_url

log = logging.getLogger(__name__)
S = TypeVar("S")

ws_fail.install()  # a frame that breaks RFC 6455 gets a close frame saying so (ws_fail.py)

# A sender starts a new message once the current one holds this much (a single frame larger
# than this travels alone). It bounds what a receiver must accept beyond one frame.
MESSAGE_BATCH_BYTES: Final = 1 * 2**20
# Socket reads: big enough that a batch arrives in a few reads (trio-websocket reads 4 KiB
# by default, which costs one wsproto round per 4 KiB).
RECEIVE_BUFFER_BYTES: Final = 256 * 1024
# Messages trio-websocket's reader task may queue ahead of us: a little read-ahead overlaps
# parsing the next message with handling this one, without an unbounded queue.
MESSAGE_QUEUE_SIZE: Final = 4
# Messages of at least this many bytes are framed here and written to the stream as they are
# (WebSocketTransport._write_direct): wsproto copies a message it frames five times on a
# server, seven on a client (three of them into fresh buffers, page faults included), where
# tcp:// writes an array's bytes without copying them at all. A message received that holds
# one frame this large is copied once into its frame, not twice (single_frame).
DIRECT_MESSAGE_MIN_BYTES: Final = 64 * 1024
# A client masks a direct message into a buffer of this size, written each time it fills.
MASK_CHUNK_BYTES: Final = 256 * 1024
# A direct message's pieces smaller than this are joined to the frame header in one write.
COALESCE_MAX_PIECE: Final = 64 * 1024
# A large piece is written in parts of this size, each counted as progress (send_unmasked).
PROGRESS_PART_BYTES: Final = 4 * 1024 * 1024
CLOSE_TIMEOUT_S: Final = 2.0  # how long we wait for the peer's answer to our close frame
CONNECT_TIMEOUT_S: Final = 10.0

# WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_MESSAGE_TOO_BIG: Final = 1009
MAX_CLOSE_REASON_BYTES: Final = 123  # a close frame's payload is at most 125 bytes

# Below this many bytes wsproto's own masking is as fast (numpy's calls cost a few us).
NUMPY_MASK_MIN_BYTES: Final = 1024
_WORD: Final = np.dtype(np.uint32)


class NumpyXorMasker(wsproto.frame_protocol.XorMaskerSimple):
    """wsproto's masker (RFC 6455 section 5.3), with the XOR done by numpy: ~1.3 GB/s on a
    16 MiB message where wsproto's strided slices make ~100 MB/s, and ~12 GB/s on the
    256 KiB pieces a server unmasks as they arrive, against ~0.6 GB/s.

    The same contract as wsproto's: ``process`` returns the masked bytes as a new bytearray
    (the data given is left as it was) and the key turns on by the length, so that a frame's
    payload can be masked in pieces of any size.
    """

    def process(self, data: bytearray) -> bytearray:
        size = len(data)
        if size < NUMPY_MASK_MIN_BYTES:
            return super().process(data)
        key = bytes(self._masking_key)
        masked = bytearray(size)
        words = size // 4
        # The data read as native 32-bit words against the key read the same way: each byte
        # meets the key byte at its position, whatever the machine's byte order.
        np.bitwise_xor(
            np.frombuffer(data, _WORD, words),
            np.frombuffer(key, _WORD)[0],
            out=np.frombuffer(masked, _WORD, words),
        )
        for i in range(words * 4, size):  # the last 0-3 bytes
            masked[i] = data[i] ^ key[i % 4]
        turn = size % 4
        self._masking_key = key[turn:] + key[:turn]
        return masked


def install_numpy_masker() -> None:
    """Have wsproto mask and unmask with :class:`NumpyXorMasker` (both sides: wsproto looks
    the class up by its module's name each frame). Once; later calls do nothing."""
    module: Any = wsproto.frame_protocol
    if module.XorMaskerSimple is not NumpyXorMasker:
        module.XorMaskerSimple = NumpyXorMasker


# Bytes ahead of a message of one large frame in its buffer, cut off before it is handed on:
# with the 4-byte length prefix after them, the frame's body starts 16 bytes in.
_FRONT_PAD: Final = bytes(16 - PREFIX_BYTES)
# Set on the trio-websocket connections a WebSocketTransport uses: their messages of one large
# frame come as bytearrays (install_bytearray_messages). Other connections keep bytes.
_BYTEARRAY_MESSAGES: Final = "_trio_stream_bytearray_messages"
# The bytes of message parts a connection of ours has received (WebSocketTransport.progress).
_BYTES_IN: Final = "_trio_stream_bytes_in"


def install_bytearray_messages() -> None:
    """Have trio-websocket put a message of one large frame together as a bytearray on our
    connections, where it joins its parts into bytes (once; later calls do nothing).

    That message then becomes its frame without a second copy (the length prefix is cut off
    in place, see single_frame), as a large frame over TCP is received into its own buffer:
    a copy of 63 MiB costs ~0.1 s on a busy machine. Only the part that ends such a message
    is handled here, the way trio-websocket handles it; other messages (bytes, as before),
    a message over the size limit and every other event are left to trio-websocket. One
    without the method leaves things as they are (bytes, and one copy more).
    """
    connection_class: Any = trio_websocket.WebSocketConnection
    original: Callable[[Any, Any], Awaitable[None]] | None = getattr(
        connection_class, "_handle_message_event", None
    )
    if original is None or getattr(original, _BYTEARRAY_MESSAGES, False):
        return

    async def handle_message_event(self: Any, event: Any) -> None:
        counted = getattr(self, _BYTES_IN, None)
        if counted is not None:  # a part of a message came (WebSocketTransport.progress)
            setattr(self, _BYTES_IN, counted + len(event.data))
        if not (
            event.message_finished
            and isinstance(event, BytesMessage)
            and getattr(self, _BYTEARRAY_MESSAGES, False)
            and _one_large_frame(self._message_parts, event.data, self._max_message_size)
        ):
            await original(self, event)
            return
        parts = self._message_parts
        parts.append(event.data)
        # One copy, into a buffer of the exact size, but for a few bytes in front so that
        # the frame's body starts where a buffer of its own would (malloc's 16-byte
        # alignment): an array in it is aligned, or not, as over TCP (see single_frame).
        message = bytearray().join([_FRONT_PAD, *parts])
        del message[: len(_FRONT_PAD)]  # (a bytearray's front is cut in place)
        self._message_size = 0
        self._message_parts = []
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._send_channel.send(message)  # (as trio-websocket: closed by aclose)

    setattr(handle_message_event, _BYTEARRAY_MESSAGES, True)
    connection_class._handle_message_event = handle_message_event


def _one_large_frame(parts: list[BytesLike], last: BytesLike, max_message_bytes: int) -> bool:
    """Whether ``parts`` and ``last`` make a message that single_frame takes whole: one
    frame, DIRECT_MESSAGE_MIN_BYTES or more, within the limit. Other messages stay bytes:
    trio-websocket passes a message of one part on without copying it."""
    size = sum(map(len, parts)) + len(last)
    if not DIRECT_MESSAGE_MIN_BYTES <= size <= max_message_bytes:
        return False
    first = parts[0] if parts else last
    if len(first) < PREFIX_BYTES:
        return False  # (a read that ended within the prefix: rare, and only a copy more)
    (length,) = LENGTH_PREFIX.unpack_from(first)
    return bool(length == size - PREFIX_BYTES)


install_numpy_masker()
install_bytearray_messages()


# What _write_direct takes from a trio-websocket connection (0.12): its stream, the lock its
# writes take, its wsproto connection (for the state), why it closed, and how it gives up.
_DIRECT_NEEDS: Final = ("_stream", "_stream_lock", "_wsproto", "_close_reason", "_abort_web_socket")


# What install_bytearray_messages's handler takes from a connection: the parts of the message
# so far, their size, the limit, and the queue of messages for get_message.
_ASSEMBLY_NEEDS: Final = ("_message_parts", "_message_size", "_max_message_size", "_send_channel")


def max_message_bytes(max_frame_bytes: int) -> int:
    """The largest message a receiver accepts: one frame at the limit, or a batch."""
    return max_frame_bytes + PREFIX_BYTES + MESSAGE_BATCH_BYTES


class WebSocketTransport:
    """Frames over a trio-websocket connection (implements FrameTransport)."""

    kind = "ws"

    def __init__(
        self, connection: trio_websocket.WebSocketConnection, max_frame_bytes: int, remote: str
    ) -> None:
        self.connection = connection
        self.remote = remote
        self._max_frame_bytes = max_frame_bytes
        self._close_code = CLOSE_NORMAL
        self._close_reason: str | None = None
        # Large messages are written past wsproto (see _write_direct), which takes a few of
        # trio-websocket's private attributes; without them (a test's stand-in, another
        # version), every message goes through send_message.
        self._direct = isinstance(connection, trio_websocket.WebSocketConnection) and all(
            hasattr(connection, name) for name in _DIRECT_NEEDS
        )
        if isinstance(connection, trio_websocket.WebSocketConnection) and all(
            hasattr(connection, name) for name in _ASSEMBLY_NEEDS
        ):
            setattr(connection, _BYTEARRAY_MESSAGES, True)
            setattr(connection, _BYTES_IN, 0)
        self._bytes_out = 0
        self._messages_in = 0  # bytes of whole messages (when the parts are not counted)

    @property
    def progress(self) -> int:
        """Bytes read and written so far, parts of a message too where trio-websocket hands
        them over (see StreamTransport.progress: the heartbeat takes any movement as life)."""
        parts: int = getattr(self.connection, _BYTES_IN, 0)
        return parts + self._messages_in + self._bytes_out

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        # The client learns the server's limit at the handshake. trio-websocket has no public
        # setter for its message limit; its attribute is read once per incoming message.
        self._max_frame_bytes = value
        self.connection._max_message_size = max_message_bytes(value)

    async def receive_frames(self) -> list[bytearray]:
        message = await self._binary_message()
        return self._closing_on_bad_framing(lambda: split_message(message, self._max_frame_bytes))

    async def receive_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        message = await self._binary_message()
        max_frame = self._max_frame_bytes
        return self._closing_on_bad_framing(
            lambda: split_message_runs(message, max_frame, take_runs)
        )

    async def _binary_message(self) -> bytes | bytearray:
        try:
            message = await self.connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(describe_close(exc.reason)) from None
        self._messages_in += 1  # (a whole one: the parts, where counted, moved it already)
        if isinstance(message, str):
            error = ProtocolError(
                "a text WebSocket message: the protocol uses binary messages only"
            )
            self._fail_with(CLOSE_UNSUPPORTED_DATA, _reason(error))
            raise error
        return message

    def _closing_on_bad_framing(self, split: Callable[[], S]) -> S:
        """``split()``; a message that breaks the framing closes with the code that says how.

        A call, not a context manager: this runs once per message on every connection.
        """
        try:
            return split()
        except FrameTooLarge as exc:
            self._fail_with(CLOSE_MESSAGE_TOO_BIG, _reason(exc))
            raise
        except ProtocolError as exc:
            self._fail_with(CLOSE_PROTOCOL_ERROR, _reason(exc))
            raise

    async def send(self, pieces: list[BytesLike]) -> None:
        try:
            size = sum(map(len, pieces))
            if size <= MESSAGE_BATCH_BYTES:
                await self._send_message(pieces, size)
                return
            for message, message_size in message_pieces(pieces, MESSAGE_BATCH_BYTES):
                await self._send_message(message, message_size)
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(describe_close(exc.reason)) from None
        except LocalProtocolError:
            # wsproto refuses a message once a close frame is under way (the message would
            # be in the exception, a whole batch of frames: not repeated here).
            raise ConnectionClosed("the WebSocket connection is closing") from None

    async def _send_message(self, pieces: Sequence[BytesLike], size: int) -> None:
        """One binary message of ``pieces`` (whole frames, ``size`` bytes in all)."""
        if size >= DIRECT_MESSAGE_MIN_BYTES and self._direct:
            await self._write_direct(pieces, size)
        else:
            # One join is the one copy we pay: trio-websocket wants a single bytes object.
            await self.connection.send_message(b"".join(pieces))

    def _sent(self, nbytes: int) -> None:
        self._bytes_out += nbytes

    async def _write_direct(self, pieces: Sequence[BytesLike], size: int) -> None:
        """Write one binary message as trio-websocket's send_message does, but framed here:
        the pieces are written as they are (a client's masked through one small buffer).

        The same checks and the same lock as trio-websocket's ``_send``: a close frame or a
        pong never lands inside the message, and a message after our close frame raises.
        """
        connection: Any = self.connection
        if connection._close_reason:
            raise trio_websocket.ConnectionClosed(connection._close_reason)
        if connection._wsproto.state != ConnectionState.OPEN:
            raise LocalProtocolError("a message after the close frame")
        stream: trio.abc.Stream = connection._stream
        async with connection._stream_lock:
            try:
                if connection.is_client:
                    # RFC 6455 5.3: a fresh key from a strong source for each frame.
                    key = os.urandom(4)
                    header = frame_header(size, key)
                    await send_masked(stream, header, pieces, size, key, self._sent)
                else:
                    await send_unmasked(stream, frame_header(size, None), pieces, self._sent)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await connection._abort_web_socket()
                raise trio_websocket.ConnectionClosed(connection._close_reason) from None

    async def aclose(self) -> None:
        # trio-websocket waits for the peer's close frame without a time limit; a peer that
        # never answers must not keep us (callers close inside a shielded scope).
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self.connection.aclose(self._close_code, self._close_reason)

    async def abort(self) -> None:
        # trio-websocket has no public abort. Its aclose() closes the socket in a finally
        # when cancelled, and is done for good after that (a later aclose returns at once).
        with trio.CancelScope() as scope:
            scope.cancel()
            await self.connection.aclose(self._close_code, self._close_reason)

    def closing_for(self, error: Exception) -> None:
        """The session is about to close because of ``error``: the close frame says why.

        1002 for a protocol error, 1009 for a frame too large, 1000 otherwise (a refused
        handshake), with the error as the reason; a code that receive_frames chose already
        (1003, 1009, 1002 for broken framing) stays. Of the same code, the reason becomes
        ``error``'s: the session's own may say more than the framing's (a frame too large
        before the welcome is over the hello's limit, where the framing's reason said to
        raise max_frame_bytes: a protocol implementer).
        """
        if isinstance(error, FrameTooLarge):
            code = CLOSE_MESSAGE_TOO_BIG
        elif isinstance(error, ProtocolError):
            code = CLOSE_PROTOCOL_ERROR
        else:
            code = CLOSE_NORMAL
        if self._close_code not in (CLOSE_NORMAL, code):
            return
        self._fail_with(code, _reason(error))

    def _fail_with(self, code: int, reason: str) -> None:
        """Remember why we are about to close, for the close frame."""
        self._close_code = code
        encoded = reason.encode()[:MAX_CLOSE_REASON_BYTES]
        self._close_reason = encoded.decode(errors="ignore")


def _reason(error: Exception) -> str:
    """A close frame's reason: the error as the goodbye names it (``ProtocolError: ...``)."""
    return f"{type(error).__name__}: {error}"


def split_message(message: bytes | bytearray, max_frame_bytes: int) -> list[bytearray]:
    """The frames of one binary message, which must hold one or more whole frames.

    Raises:
        FrameTooLarge: a frame's declared length exceeds ``max_frame_bytes``.
        ProtocolError: an empty message, an empty frame, or a frame cut at the message's end.
    """
    single = single_frame(message, max_frame_bytes)
    if single is not None:
        return [single]
    decoder = FrameDecoder(max_frame_bytes)
    decoder.receive_data(message)
    frames = decoder.frames()
    _check_whole(decoder, len(frames))
    return frames


def split_message_runs(
    message: bytes | bytearray, max_frame_bytes: int, take_runs: RunTaker[T]
) -> list[bytearray | T]:
    """:func:`split_message` with ``take_runs`` (FrameDecoder.frames_and_runs): a reader's.

    A message of one large frame gives that frame alone, not in a run (as a large frame
    over TCP comes out of the decoder).
    """
    single = single_frame(message, max_frame_bytes)
    if single is not None:
        return [single]
    decoder = FrameDecoder(max_frame_bytes)
    decoder.receive_data(message)
    items = decoder.frames_and_runs(take_runs)
    _check_whole(decoder, len(items))
    return items


def single_frame(message: bytes | bytearray, max_frame_bytes: int) -> bytearray | None:
    """The frame of a message of DIRECT_MESSAGE_MIN_BYTES or more that is one whole frame
    within the limit; None for any other message (the decoder takes it apart, or says what
    is wrong with it). A bytearray message becomes the frame itself (its length prefix cut
    off in place, which costs no copy); a bytes one is copied once, where the decoder would
    buffer it and then slice the frame out."""
    if len(message) < DIRECT_MESSAGE_MIN_BYTES:
        return None
    (length,) = LENGTH_PREFIX.unpack_from(message)
    if length != len(message) - PREFIX_BYTES or length > max_frame_bytes:
        return None
    if isinstance(message, bytearray):
        del message[:PREFIX_BYTES]
        return message
    return bytearray(memoryview(message)[PREFIX_BYTES:])


def _check_whole(decoder: FrameDecoder, items: int) -> None:
    """Raise unless the message held ``items`` (at least one) whole frames or runs, no more."""
    if decoder.refusal_next:
        decoder.frames()  # raises: a message with a bad frame is refused whole
    if decoder.partial_bytes:
        raise ProtocolError(
            "a frame spans two WebSocket messages: each binary message must carry whole frames"
        )
    if not items:
        raise ProtocolError("an empty WebSocket message: each must carry at least one frame")


def batch_bounds(data: BytesLike, limit: int) -> Iterator[tuple[int, int]]:
    """(start, end) of messages of whole frames of ``data``, each of at most ``limit`` bytes
    unless a single frame is larger."""
    start = pos = 0
    end = len(data)
    while pos < end:
        (length,) = LENGTH_PREFIX.unpack_from(data, pos)
        frame_end = pos + PREFIX_BYTES + length
        if frame_end - start > limit and pos > start:
            yield start, pos
            start = pos
        pos = frame_end
    if start < end:
        yield start, end


def _bounds(length_at: Callable[[int], int], end: int, limit: int) -> Iterator[tuple[int, int]]:
    """:func:`batch_bounds` over ``end`` bytes whose frame prefixes ``length_at`` reads."""
    start = pos = 0
    while pos < end:
        frame_end = pos + PREFIX_BYTES + length_at(pos)
        if frame_end - start > limit and pos > start:
            yield start, pos
            start = pos
        pos = frame_end
    if start < end:
        yield start, end


def frame_header(size: int, key: bytes | None) -> bytes:
    """The header of one final binary WebSocket frame of ``size`` bytes (RFC 6455 5.2), as
    wsproto writes it: the shortest length field, and ``key`` behind it on a client's."""
    mask_bit = 0 if key is None else 0x80
    if size <= 125:
        header = _HEADER_SHORT.pack(_FIN_BINARY, mask_bit | size)
    elif size <= 0xFFFF:
        header = _HEADER_16.pack(_FIN_BINARY, mask_bit | 126, size)
    else:
        header = _HEADER_64.pack(_FIN_BINARY, mask_bit | 127, size)
    return header if key is None else header + key


_FIN_BINARY: Final = 0x82  # FIN, no RSV bits, opcode 2 (binary)
_HEADER_SHORT: Final = struct.Struct("!BB")
_HEADER_16: Final = struct.Struct("!BBH")
_HEADER_64: Final = struct.Struct("!BBQ")


async def send_unmasked(
    stream: trio.abc.Stream,
    header: bytes,
    pieces: Sequence[BytesLike],
    sent: Callable[[int], None] = lambda nbytes: None,
) -> None:
    """``header`` then ``pieces`` to ``stream``: small pieces joined to what precedes them,
    large ones (array bodies) written as they are, in parts of PROGRESS_PART_BYTES (views),
    each told to ``sent`` once written (small writes are not progress: the kernel takes
    them whether or not the peer reads)."""
    small: list[BytesLike] = [header]
    for piece in pieces:
        if len(piece) < COALESCE_MAX_PIECE:
            small.append(piece)
            continue
        if small:
            await stream.send_all(b"".join(small))
            small = []
        view = memoryview(piece)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        for start in range(0, len(view), PROGRESS_PART_BYTES):
            part = view[start : start + PROGRESS_PART_BYTES]
            await stream.send_all(part)
            sent(len(part))
    if small:
        await stream.send_all(b"".join(small))


async def send_masked(
    stream: trio.abc.Stream,
    header: bytes,
    pieces: Sequence[BytesLike],
    size: int,
    key: bytes,
    sent: Callable[[int], None] = lambda nbytes: None,
) -> None:
    """``header`` then ``pieces`` masked with ``key``, through one buffer of at most
    MASK_CHUNK_BYTES written each time it fills: the message is never copied whole."""
    chunk = bytearray(len(header) + min(size, MASK_CHUNK_BYTES))
    chunk[: len(header)] = header
    out = np.frombuffer(chunk, np.uint8)
    # The key over a whole chunk and 3 bytes more: from offset i, it is the key turned by i.
    keys = np.frombuffer(key * (len(chunk) // 4 + 2), np.uint8)
    filled = len(header)
    masked = 0  # payload bytes masked so far: where the key stands
    for piece in pieces:
        data = np.frombuffer(piece, np.uint8)
        pos = 0
        while pos < len(data):
            count = min(len(data) - pos, len(chunk) - filled)
            turn = masked % 4
            np.bitwise_xor(
                data[pos : pos + count],
                keys[turn : turn + count],
                out=out[filled : filled + count],
            )
            pos += count
            filled += count
            masked += count
            if filled == len(chunk):
                await stream.send_all(chunk)  # (the buffer is free again once this returns)
                sent(filled)
                filled = 0
    if filled:
        await stream.send_all(memoryview(chunk)[:filled])
        sent(filled)


def message_pieces(
    pieces: Sequence[BytesLike], limit: int
) -> Iterator[tuple[list[BytesLike], int]]:
    """The pieces of each message (and its size) that ``pieces`` make, cut as
    :func:`batch_bounds` cuts their concatenation, without making it: views of the pieces."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    if len(views) == 1:
        # The usual batch of small frames, joined by the sender: one C call per frame.
        (view,) = views
        for start, end in batch_bounds(view, limit):
            yield [view[start:end]], end - start
        return
    reader = _PieceReader(views)
    for start, end in _bounds(reader.length_at, reader.size, limit):
        yield reader.views_of(start, end), end - start


class _PieceReader:
    """Reads over the concatenation of ``views``: frame prefixes, then messages' views, each
    at offsets that only grow (two cursors: the prefixes are read ahead of the messages)."""

    def __init__(self, views: list[memoryview]) -> None:
        self._views = views
        self.size = sum(len(view) for view in views)
        self._at = [0, 0]  # for length_at: the view that holds the last offset, its offset
        self._cut = [0, 0]  # the same for views_of

    def _seek(self, cursor: list[int], offset: int) -> None:
        views = self._views
        while offset >= cursor[1] + len(views[cursor[0]]):
            cursor[1] += len(views[cursor[0]])
            cursor[0] += 1

    def length_at(self, offset: int) -> int:
        """The frame length prefix at ``offset`` (0 if the pieces end within it)."""
        cursor = self._at
        self._seek(cursor, offset)
        index, base = cursor
        view = self._views[index]
        local = offset - base
        if local + PREFIX_BYTES <= len(view):
            (length,) = LENGTH_PREFIX.unpack_from(view, local)
            return int(length)
        head = bytes(view[local:])  # a prefix across pieces
        for following in self._views[index + 1 :]:
            head += bytes(following[: PREFIX_BYTES - len(head)])
            if len(head) == PREFIX_BYTES:
                (length,) = LENGTH_PREFIX.unpack(head)
                return int(length)
        return 0

    def views_of(self, start: int, end: int) -> list[BytesLike]:
        """Views of the bytes ``start:end`` of the concatenation."""
        cursor = self._cut
        self._seek(cursor, start)
        index, base = cursor
        out: list[BytesLike] = []
        while start < end:
            view = self._views[index]
            local = start - base
            take = min(len(view) - local, end - start)
            out.append(view if take == len(view) else view[local : local + take])
            start += take
            if local + take == len(view):
                base += len(view)
                index += 1
        cursor[:] = [index, base]
        return out


def describe_close(reason: trio_websocket.CloseReason | None) -> str:
    if reason is None:
        return "the WebSocket connection is closed"
    text = f"the WebSocket connection closed ({reason.code} {reason.name}"
    return text + (f": {reason.reason})" if reason.reason else ")")


@asynccontextmanager
async def connect_websocket(
    url: str, *, max_frame_bytes: int, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[FrameTransport]:
    """Open a WebSocket to a server (``ws://host:port/ws`` or ``wss://...``).

    The TCP stream is opened here and handed to trio-websocket (``wrap_client_stream``)
    rather than opened by its ``open_websocket``: that one leaves the socket of a handshake
    it did not finish (cancelled, or timed out against a server that accepted and never
    answered) to the garbage collector, and a client retrying such a server would hold a
    descriptor per attempt until a full collection ran. Owned here, it is closed on every
    way out.

    Raises:
        ConnectionClosed: the server cannot be reached or refused the upgrade.
    """
    scheme, host, port, _path = split_url(url)
    deadline = trio.current_time() + CONNECT_TIMEOUT_S  # for the connection and the handshake
    with trio.move_on_at(deadline) as connecting:
        stream = await _open_stream(url, scheme, host, port, ssl_context)
    if connecting.cancelled_caught:
        raise _handshake_timeout(url)
    opened = False
    block_error: BaseException | None = None
    try:
        async with open_own_nursery() as nursery:
            connection = await _open_handshake(nursery, stream, url, max_frame_bytes, deadline)
            opened = True
            transport = WebSocketTransport(connection, max_frame_bytes, f"{host}:{port}")
            try:
                yield transport
            except BaseException as exc:
                block_error = exc
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await transport.aclose()
    except BaseExceptionGroup as group:
        if block_error is not None:
            raise  # the block's own group: open_own_nursery passed it on as it was
        if opened:
            # The connection's reader task failed while open: bare, as open_websocket said it.
            with unwrap_single_exception():
                raise
        # The reader task raised during the handshake: a refusal, or an answer that is no
        # HTTP at all; said as one line, as for tcp://.
        raise _handshake_failure(url, group) from None
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)  # a no-op once the connection closed it


def _handshake_failure(url: str, group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error for a handshake whose reader task failed (``group``: the nursery's)."""
    refusal = group.subgroup(trio_websocket.HandshakeError)
    if refusal is not None:
        leaf = _first_leaf(refusal)
        reason = describe_handshake_error(leaf)
        said = f"cannot connect to {url}: {reason}"
        if reason.startswith(sniff.TCP_PORT_MARK):  # ws:// on the TCP port
            return WrongServer(said)
        if _is_connection_limit(leaf):
            return LimitExceeded(said)  # as over TCP: the server's refusal, not a lost link
        return ConnectionClosed(said)
    leaves = exception_leaves(group)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        # h11 on an answer that is not HTTP, say: the peer is no trio_stream HTTP port.
        answer = f"{type(leaves[0]).__name__}: {leaves[0]}"
        return WrongServer(
            f"cannot connect to {url}: its answer is not a WebSocket upgrade ({cut(answer)}): "
            "is this a trio_stream server's HTTP port (path /ws)?"
        )
    return group


def _is_connection_limit(refusal: trio_websocket.HandshakeError) -> bool:
    """A 503 naming the server's connection limits (_server/admission.py's refusal)."""
    if not isinstance(refusal, trio_websocket.ConnectionRejected):
        return False
    return refusal.status_code == 503 and b"(max_connections" in (refusal.body or b"")


def _first_leaf(
    group: BaseExceptionGroup[trio_websocket.HandshakeError],
) -> trio_websocket.HandshakeError:
    leaf = exception_leaves(group)[0]
    assert isinstance(leaf, trio_websocket.HandshakeError)
    return leaf


async def _open_stream(
    url: str, scheme: str, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    try:
        if scheme == "wss":
            return await trio.open_ssl_over_tcp_stream(
                host,
                port,
                ssl_context=ssl_context or ssl.create_default_context(),
                https_compatible=True,
            )
        return await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise cannot_connect(url, exc) from None


async def _open_handshake(
    nursery: trio.Nursery,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    url: str,
    max_frame_bytes: int,
    deadline: float,
) -> trio_websocket.WebSocketConnection:
    """The opening handshake over ``stream``; the connection's reader task runs in
    ``nursery`` (a refusal is raised there, not here)."""
    _scheme, host, port, path = split_url(url)
    with trio.move_on_at(deadline) as waiting:
        watched = _ReaderWatch(nursery, waiting)
        return await trio_websocket.wrap_client_stream(
            cast(trio.Nursery, watched),
            stream,
            upgrade_host(host, port),
            path,
            message_queue_size=MESSAGE_QUEUE_SIZE,
            max_message_size=max_message_bytes(max_frame_bytes),
            receive_buffer_size=RECEIVE_BUFFER_BYTES,
        )
    if watched.ended:
        raise ConnectionClosed(
            f"cannot connect to {url}: the server closed the connection without answering "
            "the WebSocket upgrade"
            + (" (if that port uses TLS, use wss://)" if url.startswith("ws://") else "")
        )
    raise _handshake_timeout(url)


class _ReaderWatch:
    """The nursery handed to wrap_client_stream, which starts the connection's reader task
    in it: a reader task that ends without raising before the handshake is done (the peer
    closed the connection; trio-websocket then sets nothing the handshake waits for) stops
    the wait at once, where it sat out the whole timeout."""

    def __init__(self, nursery: trio.Nursery, waiting: trio.CancelScope) -> None:
        self._nursery = nursery
        self._waiting = waiting
        self.ended = False

    def start_soon(self, fn: Callable[[], Awaitable[object]], *, name: object = None) -> None:
        async def watched() -> None:
            await fn()
            self.ended = True
            self._waiting.cancel()  # a no-op once the handshake is done and its scope left

        self._nursery.start_soon(watched, name=name)


def upgrade_host(host: str, port: int) -> str:
    """The upgrade request's Host header: as trio-websocket writes it (no port for 80 and
    443), but an IPv6 address bracketed, as in URLs (without, "::1:8081" was refused)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port in (80, 443) else f"{shown}:{port}"


def _handshake_timeout(url: str) -> ConnectionClosed:
    reason = describe_handshake_error(trio_websocket.ConnectionTimeout())
    return ConnectionClosed(f"cannot connect to {url}: {reason}")


def describe_handshake_error(exc: trio_websocket.HandshakeError) -> str:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"").decode(errors="replace").strip()[:300]
        if body.startswith(sniff.TCP_PORT_MARK):
            return body  # ws:// on the TCP port: the server said which port this is
        refused = f"the server refused the WebSocket upgrade with HTTP {exc.status_code}"
        if body.startswith("<"):
            # A web page (another web server's 404): its markup would fill the message.
            return f"{refused}: is this a trio_stream server's HTTP port (path /ws)?"
        first_line = body.splitlines()[0][:200] if body else ""
        return f"{refused} ({first_line})" if first_line else refused
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return f"no WebSocket handshake within {CONNECT_TIMEOUT_S:g} s"
    cause = exc.__cause__
    return str(cause) if cause is not None else repr(exc)
