"""TCP (and TLS over TCP) stream <-> frames."""

from __future__ import annotations

import contextlib
import os
import socket as _socket
import threading
from collections.abc import Callable, Sequence
from typing import Final

import trio

from .._exceptions import ConnectionClosed
from .._protocol.bytes_like import BytesLike
from .._protocol.framing import FrameDecoder, RunTaker, T
from .base import EndedMidFrame
from .sniff import PEEK_BYTES

# Plain TCP reads into one buffer of this size, kept for the thread's life and shared by every
# connection of the thread. A fresh receive buffer per read is costly at this size: malloc
# serves 128 KiB and more with mmap, and a recv(262144) cost 8.9 us against 0.9 us for
# recv(65536) here, for a 150-byte message. One buffer per *connection* was fast but cost
# 256 KiB for each, from accept on: 10,000 idle clients took 2.7 GiB. Sharing is safe because
# the bytes leave the buffer (FrameDecoder.receive_data copies what it keeps) before the
# reading task yields: the read is done here with a plain non-blocking syscall, not with
# trio's recv_into, which yields after reading. An idle connection holds no receive buffer
# at all, and a busy one loses nothing: the read size stays 256 KiB.
RECEIVE_BUFFER_BYTES: Final = 256 * 1024
# TLS reads allocate their result; below malloc's mmap threshold (128 KiB) that is cheap.
TLS_RECEIVE_BYTES: Final = 64 * 1024
# Pieces smaller than this are copied into one write; larger ones (array bodies) are written
# as they are, so a 1 MiB array is never copied on its way out.
COALESCE_MAX_PIECE: Final = 64 * 1024
# A piece larger than this is written in parts of this size (StreamTransport._send_all):
# each part is a send_all, two scheduler passes, so not smaller (256 KiB parts cost S2's
# 1 MiB arrays 10 % of their rate); a 4 MiB part takes 10 s at 400 kB/s, within the
# default 15 s silence bound.
PROGRESS_PART_BYTES: Final = 4 * 1024 * 1024
# While a large frame is received in place, the socket wakes us only once this much of it
# (or all that is left of it) has arrived: each wake-up costs a task switch and a syscall,
# and a 1 MiB array otherwise arrives in a dozen small reads. Measured with 1 MiB frames to
# four readers: 280 -> 320 frames/s per reader. The peer has declared the frame's length, so
# we never wait for bytes it has not committed to send.
RECEIVE_LOW_WATER_MAX_BYTES: Final = 2**20


class _SharedReceiveBuffer(threading.local):
    """One receive buffer per thread, allocated on the thread's first plain TCP read."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(RECEIVE_BUFFER_BYTES))


_shared = _SharedReceiveBuffer()
# os.readv reads a socket like recv with no flags; it exists wherever sockets are file
# descriptors (not on Windows, which takes the plain recv path).
_READV: Final[Callable[[int, Sequence[memoryview]], int] | None] = getattr(os, "readv", None)


def _read_now(readv: Callable[[int, Sequence[memoryview]], int], fd: int, view: memoryview) -> int:
    """What has arrived, read into ``view``; -1 when nothing has.

    The BlockingIOError is caught here, in a plain function, rather than in the coroutine:
    an exception materialises the frame objects it passes through, and the reading
    coroutine of an idle connection would keep its frame object (~0.5 KiB) while it waits.
    """
    try:
        return readv(fd, (view,))
    except BlockingIOError:
        return -1


class StreamTransport:
    """Frames over any trio byte stream (SocketStream or SSLStream)."""

    def __init__(self, stream: trio.abc.Stream, max_frame_bytes: int, kind: str = "tcp") -> None:
        self.stream = stream
        self.kind = kind
        self.remote = remote_of(stream)
        # Bytes read and written so far, also within a frame: a large frame on a slow link
        # takes longer than the heartbeat's silence bound, and a client that heard nothing
        # whole in that time gave up on a link that was moving (and sent it all again, for
        # good: a network tester). The heartbeat takes any movement as life.
        self.progress = 0
        self._decoder = FrameDecoder(max_frame_bytes)
        # A plain TCP stream lets large frames be received in place (recv_into); TLS
        # decrypts into its own buffers anyway, so it takes the ordinary path.
        self._socket: trio.socket.SocketType | None = (
            stream.socket if isinstance(stream, trio.SocketStream) else None
        )
        # TLS only: the first bytes the peer said (a plain stream is peeked instead, see
        # sniff.peek), for the handshake to tell an HTTP peer from a huge frame.
        self.first_bytes: bytes | None = None
        self._first_kept = False  # (once: let go, they are not taken again)
        self._low_water = 1  # the socket's SO_RCVLOWAT
        self._drained = True  # the last read emptied the socket: wait before the next one
        self._low_water_works = True

    @property
    def max_frame_bytes(self) -> int:
        return self._decoder.max_frame_bytes

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        self._decoder.max_frame_bytes = value

    async def receive_frames(self) -> list[bytearray]:
        decoder = self._decoder
        if decoder.refusal_next:
            decoder.frames()  # raises (the frames before the bad one were handed out)
        while True:
            await self._receive()
            frames = decoder.frames()
            if frames:
                return frames

    def frames_held(self) -> list[bytearray]:
        """The whole frames received already that a lower ``max_frame_bytes`` held back: the
        server takes only small frames before its welcome, then raises the limit, and a
        larger frame pipelined behind the hello in the same read would otherwise wait for
        the next read (which a client waiting for an answer never sends). A bad frame stays
        for :meth:`receive_frames` to refuse."""
        decoder = self._decoder
        return [] if decoder.refusal_next else decoder.frames()

    async def receive_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        decoder = self._decoder
        if decoder.refusal_next:
            decoder.frames()  # raises (the frames before the bad one were handed out)
        while True:
            await self._receive()
            frames = decoder.frames_and_runs(take_runs)
            if frames:
                return frames

    async def _receive(self) -> None:
        """One read into the decoder."""
        decoder = self._decoder
        try:
            body = decoder.body_buffer() if self._socket is not None else None
            if body is not None:
                # A large frame: straight into its own buffer, no intermediate copies.
                with body:
                    received = await self._recv_into(body)
                decoder.body_received(received)
            elif self._socket is not None and _READV is not None:
                received = await self._receive_shared(self._socket)
            else:
                # TLS, or no readv (Windows): a fresh buffer per read, below malloc's
                # mmap threshold.
                data = await self.stream.receive_some(TLS_RECEIVE_BYTES)
                received = len(data)
                if not self._first_kept:
                    self._first_kept = True
                    self.first_bytes = bytes(data[:PEEK_BYTES])
                decoder.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc
        self.progress += received
        if not received:
            partial = decoder.partial_bytes
            if partial:
                raise EndedMidFrame(
                    f"the peer closed the connection in the middle of a frame (the first "
                    f"{partial} bytes of it came, its length prefix included)"
                )
            raise ConnectionClosed("the peer closed the connection")

    async def _receive_shared(self, socket: trio.socket.SocketType) -> int:
        """Read what has arrived into the thread's shared buffer; the decoder copies it out.

        Each read comes after a checkpoint, not before one, which does two jobs: the tasks
        that the last read woke (the application's readers, the senders a publish woke) get
        their turn no later than the next read, and a peer that always has data ready
        cannot monopolise the run loop. When the last read emptied the socket (it came back
        short of the buffer), the checkpoint is a wait for more data: a read at once would
        almost always find nothing at a low rate (a failed syscall on the path of every
        frame), and the tasks woken then all run before the read. Else it is a plain yield
        (trio then runs them and the read in the same pass, in either order). Measured
        at 1,000 frames/s (benchmarks/paced_cpu.py), against a read at once and a yield
        after it, with a writer's acknowledgements also written by the reading task
        (write_woken): server CPU 263 -> 183 us per frame, the reading client's 168 -> 143.
        The decoder takes the bytes before the next checkpoint, while no other task can
        read into the buffer.
        """
        view = _shared.view
        readv = _READV
        assert readv is not None
        if self._drained:
            await trio.lowlevel.wait_readable(socket)
        else:
            await trio.lowlevel.checkpoint()
        received = _read_now(readv, socket.fileno(), view)
        while received < 0:  # nothing after all (the checkpoint only yielded), or spurious
            await trio.lowlevel.wait_readable(socket)
            received = _read_now(readv, socket.fileno(), view)
        self._drained = received < len(view)
        self._decoder.receive_data(view[:received])
        return received

    async def _recv_into(self, buffer: memoryview) -> int:
        """Receive into ``buffer``, the rest of a large frame (plain TCP only)."""
        socket = self._socket
        assert socket is not None
        low_water = min(len(buffer), RECEIVE_LOW_WATER_MAX_BYTES)
        if low_water != self._low_water:
            self._set_low_water(socket, low_water)
        received = await socket.recv_into(buffer)
        if received == len(buffer):
            self._set_low_water(socket, 1)  # the frame is complete: back to every byte
        return received

    def _set_low_water(self, socket: trio.socket.SocketType, nbytes: int) -> None:
        if nbytes == self._low_water or not self._low_water_works:
            return
        try:
            socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVLOWAT, nbytes)
        except OSError:
            # Not every platform lets us (Windows refuses SO_RCVLOWAT): then every byte
            # wakes us, as without it, and the frame is still received in place.
            self._low_water_works = False
            return
        self._low_water = nbytes

    async def send(self, pieces: list[BytesLike]) -> None:
        stream = self.stream
        try:
            if len(pieces) == 1:
                # The usual write: the outbox joined its frames into one piece already.
                await self._send_all(pieces[0])
                return
            small: list[BytesLike] = []
            for piece in pieces:
                if len(piece) < COALESCE_MAX_PIECE:
                    small.append(piece)
                    continue
                if small:
                    await stream.send_all(b"".join(small))
                    small = []
                await self._send_all(piece)
            if small:
                await stream.send_all(b"".join(small))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc

    async def _send_all(self, data: BytesLike) -> None:
        """``stream.send_all(data)``, a large piece in parts so that :attr:`progress` moves
        while a slow link takes it (the parts are views: nothing is copied). Small writes
        are not progress: the kernel takes a ping whether or not the peer reads."""
        if len(data) <= PROGRESS_PART_BYTES:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        for start in range(0, len(view), PROGRESS_PART_BYTES):
            part = view[start : start + PROGRESS_PART_BYTES]
            await self.stream.send_all(part)
            self.progress += len(part)

    def direct_writer(self) -> Callable[[list[BytesLike]], list[BytesLike]] | None:
        """:meth:`send_now` on plain TCP; None on TLS, where it could never write."""
        return self.send_now if self._socket is not None else None

    def send_now(self, pieces: list[BytesLike]) -> list[BytesLike]:
        """Write ``pieces`` without waiting, as far as the socket takes them at once.

        For a connection whose sender task waits idle: the task that queued the frames
        writes them itself (Sender.write_direct), one task switch and one scheduler turn
        fewer on the way to the reader. Plain TCP only, and small writes only (large pieces
        go out uncopied through :meth:`send`). Never call it while :meth:`send` runs.

        Returns:
            What is left for :meth:`send`, in order: nothing when all went out; all of
            ``pieces`` on TLS, with a large piece, or when the socket is full.

        Raises:
            ConnectionClosed: the connection is gone.
        """
        socket = self._socket
        if socket is None or max(map(len, pieces)) >= COALESCE_MAX_PIECE:
            return pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        try:
            # write() on a socket is send() without flags; the socket is non-blocking.
            sent = os.write(socket.fileno(), data)
        except BlockingIOError:
            return pieces
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc
        if sent == len(data):
            return []
        return [bytes(memoryview(data)[sent:])]  # a copy: the piece may be a reused buffer

    async def aclose(self) -> None:
        # TLS says close_notify on the way out: on a socket the peer closed already (the
        # server after our goodbye) that write fails, and closing a closed stream is done.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.aclose()

    async def abort(self) -> None:
        # TLS's close_notify would wait on a full send buffer for a peer that reads nothing.
        await trio.aclose_forcefully(self.stream)


def peer_address(stream: trio.SocketStream) -> str:
    """The peer's IP address, without the port ("?" once the peer has gone)."""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"


def remote_of(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)  # SSLStream wraps a SocketStream
    socket = getattr(inner, "socket", None)
    if socket is None:
        return "?"
    try:
        host, port = socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
