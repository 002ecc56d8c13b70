"""WebSocket messages <-> frames, over a trio-websocket connection (client and server side).

A binary WebSocket message carries one or more whole frames, each length-prefixed exactly as
on TCP (docs/protocol.md section 1). Messages are what costs here: wsproto spends ~20 µs on
each, whatever its size, against well under a microsecond per frame for our framing. So
``send`` turns a whole batch of frames (the session's sender hands over everything ready) into
ONE message, and the receiving side takes a message apart into its frames.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Final, TypeVar, cast

import trio
import trio_websocket
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
CLOSE_TIMEOUT_S: Final = 2.0  # how long we wait for the peer's answer to our close frame
CONNECT_TIMEOUT_S: Final = 10.0

# WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED_DATA: Final = 1003
CLOSE_MESSAGE_TOO_BIG: Final = 1009
MAX_CLOSE_REASON_BYTES: Final = 123  # a close frame's payload is at most 125 bytes


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

    async def _binary_message(self) -> bytes:
        try:
            message = await self.connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(describe_close(exc.reason)) from None
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
        # One join is the one copy we pay: trio-websocket wants a single bytes object.
        data = b"".join(pieces)
        try:
            if len(data) <= MESSAGE_BATCH_BYTES:
                await self.connection.send_message(data)
                return
            for start, end in batch_bounds(data, MESSAGE_BATCH_BYTES):
                await self.connection.send_message(data[start:end])
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionClosed(describe_close(exc.reason)) from None
        except LocalProtocolError:
            # wsproto refuses a message once a close frame is under way (the message would
            # be in the exception, a whole batch of frames: not repeated here).
            raise ConnectionClosed("the WebSocket connection is closing") from None

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
        (1003, 1009, 1002 for broken framing) stays.
        """
        if self._close_code != CLOSE_NORMAL:
            return
        if isinstance(error, FrameTooLarge):
            code = CLOSE_MESSAGE_TOO_BIG
        elif isinstance(error, ProtocolError):
            code = CLOSE_PROTOCOL_ERROR
        else:
            code = CLOSE_NORMAL
        self._fail_with(code, _reason(error))

    def _fail_with(self, code: int, reason: str) -> None:
        """Remember why we are about to close, for the close frame."""
        self._close_code = code
        encoded = reason.encode()[:MAX_CLOSE_REASON_BYTES]
        self._close_reason = encoded.decode(errors="ignore")


def _reason(error: Exception) -> str:
    """A close frame's reason: the error as the goodbye names it (``ProtocolError: ...``)."""
    return f"{type(error).__name__}: {error}"


def split_message(message: bytes, max_frame_bytes: int) -> list[bytearray]:
    """The frames of one binary message, which must hold one or more whole frames.

    Raises:
        FrameTooLarge: a frame's declared length exceeds ``max_frame_bytes``.
        ProtocolError: an empty message, an empty frame, or a frame cut at the message's end.
    """
    decoder = FrameDecoder(max_frame_bytes)
    decoder.receive_data(message)
    frames = decoder.frames()
    _check_whole(decoder, len(frames))
    return frames


def split_message_runs(
    message: bytes, max_frame_bytes: int, take_runs: RunTaker[T]
) -> list[bytearray | T]:
    """:func:`split_message` with ``take_runs`` (FrameDecoder.frames_and_runs): a reader's."""
    decoder = FrameDecoder(max_frame_bytes)
    decoder.receive_data(message)
    items = decoder.frames_and_runs(take_runs)
    _check_whole(decoder, len(items))
    return items


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


def batch_bounds(data: bytes, limit: int) -> Iterator[tuple[int, int]]:
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
