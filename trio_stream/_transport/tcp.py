"""TCP (and TLS over TCP) stream <-> frames."""

from __future__ import annotations

from typing import Final

import trio

from .._exceptions import ConnectionClosed
from .._protocol.bytes_like import BytesLike
from .._protocol.framing import FrameDecoder

RECEIVE_MIN_BYTES: Final = 256 * 1024
RECEIVE_MAX_BYTES: Final = 4 * 2**20
# Pieces smaller than this are copied into one write; larger ones (array bodies) are written
# as they are, so a 1 MiB array is never copied on its way out.
COALESCE_MAX_PIECE: Final = 64 * 1024


class StreamTransport:
    """Frames over any trio byte stream (SocketStream or SSLStream)."""

    def __init__(self, stream: trio.abc.Stream, max_frame_bytes: int, kind: str = "tcp") -> None:
        self.stream = stream
        self.kind = kind
        self.remote = _remote_of(stream)
        self._decoder = FrameDecoder(max_frame_bytes)

    @property
    def max_frame_bytes(self) -> int:
        return self._decoder.max_frame_bytes

    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None:
        self._decoder.max_frame_bytes = value

    async def receive_frames(self) -> list[bytearray]:
        decoder = self._decoder
        while True:
            want = min(max(decoder.bytes_wanted(), RECEIVE_MIN_BYTES), RECEIVE_MAX_BYTES)
            try:
                data = await self.stream.receive_some(want)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(f"connection lost: {exc}") from exc
            if not data:
                raise ConnectionClosed("the peer closed the connection")
            decoder.receive_data(data)
            frames = decoder.frames()
            if frames:
                return frames

    async def send(self, pieces: list[BytesLike]) -> None:
        stream = self.stream
        try:
            batch = bytearray()
            for piece in pieces:
                if len(piece) < COALESCE_MAX_PIECE:
                    batch += piece
                    continue
                if batch:
                    await stream.send_all(batch)
                    batch = bytearray()
                await stream.send_all(piece)
            if batch:
                await stream.send_all(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc

    async def aclose(self) -> None:
        await self.stream.aclose()


def _remote_of(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)  # SSLStream wraps a SocketStream
    socket = getattr(inner, "socket", None)
    if socket is None:
        return "?"
    try:
        host, port = socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
