"""The one interface the session and the client need from a transport: frames in, pieces out."""

from __future__ import annotations

from typing import Protocol

from .._exceptions import ConnectionClosed
from .._protocol.bytes_like import BytesLike
from .._protocol.framing import RunTaker, T


class WrongServer(ConnectionClosed):
    """What answered is not the server the client was told to trust, and waiting will not
    make it so: a certificate it does not trust, a plain server on a TLS URL (or the other
    way round), an HTTP port on a tcp:// URL. A reconnecting client says so at WARNING (a
    server restarted with a new certificate otherwise left it retrying without a word)."""


class EndedMidFrame(ConnectionClosed):
    """The peer closed its side in the middle of a frame: a truncated frame, which a peer
    that only shut down its writing side (``shutdown(SHUT_WR)``, ``nc -N``) can still be
    told about. For a client it is a lost connection like any other; the server answers it
    as a malformed frame, with a reason."""


class FrameTransport(Protocol):
    """A connection that carries length-prefixed frames (docs/protocol.md section 1)."""

    kind: str  # "tcp" or "ws"
    remote: str  # the peer's address, for listings and logs

    @property
    def progress(self) -> int:
        """Bytes read so far (within frames too), and those of large frames written: grows
        while the connection moves, which a heartbeat takes as life when no whole frame has
        come (small writes do not count: the kernel takes them from a frozen peer too)."""
        ...

    async def receive_frames(self) -> list[bytearray]:
        """At least one whole frame body.

        Raises:
            ConnectionClosed: the peer closed or the connection broke.
            FrameTooLarge, ProtocolError: the peer broke the framing.
        """
        ...

    async def receive_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        """:meth:`receive_frames`, with ``take_runs`` parsing the frames it knows in the same
        pass (FrameDecoder.frames_and_runs): what the client reads DATA frames with.

        Raises:
            As :meth:`receive_frames`.
        """
        ...

    async def send(self, pieces: list[BytesLike]) -> None:
        """Write whole frames given as pieces (length prefixes included), in order.

        Raises:
            ConnectionClosed: the connection is gone.
        """
        ...

    async def aclose(self) -> None:
        """Close in order: a WebSocket's close frame, TLS's close_notify (waits for the peer,
        at most a couple of seconds)."""
        ...

    async def abort(self) -> None:
        """Close at once, without a word to the peer: for a peer that is gone or frozen,
        which would only make an orderly close wait."""
        ...
