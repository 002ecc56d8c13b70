"""The server's side of the handshake (docs/protocol.md section 2): hello in, welcome out."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple

import trio

from .._exceptions import (
    AuthError,
    ConnectionClosed,
    FrameTooLarge,
    ProtocolError,
    TrioStreamError,
)
from .._protocol.codec import CONTROL_MAX_ITEMS
from .._protocol.frames import CONTROL, check_client_name
from .._protocol.limits import PROTOCOL_VERSION
from .._protocol.messages import Error, Hello, UnknownOp, Welcome, decode_message
from .._transport import sniff
from .._transport.base import FrameTransport
from .._transport.tcp import StreamTransport
from .._transport.websocket import WebSocketTransport
from .._version import __version__
from .outbox import control_frame
from .state import ServerState
from .wrong_tokens import host_of

REFUSAL_FLUSH_S: Final = 1.0  # how long a refused handshake may take to deliver its error
# Before its welcome a connection sends frames of at most this many bytes: a hello is far
# smaller (under 1 KiB with the longest name, a resume token and a token of 300 bytes;
# tests/test_preauth_memory.py), and a larger first frame is refused at once. At the full
# max_frame_bytes, a peer that never said hello announced 64 MiB and sent an eighth of it,
# and the server allocated the frame on every connection it opened, until the handshake
# timeout (65 MiB each: an operator). Over WebSocket the message that carries the hello is
# bounded the same way (websocket.max_message_bytes of this, the hello and a batch).
HELLO_MAX_FRAME_BYTES: Final = 64 * 1024
# A hello's bytes besides its token, with room to spare: the cap grows with a server token
# longer than HELLO_MAX_FRAME_BYTES (the configuration does not bound it).
HELLO_OVERHEAD_BYTES: Final = 4096
_HTTP_ON_TCP_PORT: Final = "an HTTP request on the TCP port (answered with a 400)"


class Claimed(NamedTuple):
    """What ``claim`` gives a hello (see :func:`handshake`)."""

    name: str
    resume_token: str | None  # None unless the hello asked for one
    # A reconnection: the channels it owned that another client deleted while it was away,
    # with each one's reason (Session.welcome_deleted), for the welcome.
    channels_deleted: dict[str, str]
    # Those its connection was told of, to name again should it be lost (Session.deletions_told).
    told: dict[str, str]


async def handshake(
    state: ServerState,
    transport: FrameTransport,
    client_id: int,
    claim: Callable[[Hello], Awaitable[Claimed]],
    admit: Callable[[], None],
) -> list[bytearray]:
    """Read the hello, check it, and send the welcome.

    ``claim(hello)`` takes the client's name (``hello.name``; None: it sent none) and returns
    the name it now has and its resume token (None unless the hello asked for one; a resume
    token in the hello takes the previous connection's place back first, see resume.py),
    with the channels the welcome names as deleted meanwhile (:class:`Claimed`). It
    checks and claims with no await between, so of two hellos with one name exactly one
    claims it (the other's ``claim`` raises NameInUse); before that it may wait, within a
    bound, for a holder whose connection has ended to go (Session._claim_name). ``admit()``
    makes the client one of the server's just before its welcome goes out: a client that
    has its welcome is listed, and can be named in requests, by every other connection.

    Returns:
        The frames the client pipelined behind its hello, for the reader task.

    Raises:
        TrioStreamError: the hello is refused (the caller sends the error, see refuse()).
        ConnectionClosed: the client left.
    """
    # Small frames only until the welcome: a peer that has not said who it is must not make
    # the server allocate for a large frame (see HELLO_MAX_FRAME_BYTES).
    full_limit = _limit_frames(transport, hello_max_frame_bytes(state))
    # A WebSocket client or a browser on the TCP port learns which port this is (sniff).
    stream = getattr(transport, "stream", None)
    first = await sniff.peek(stream)
    if await sniff.answer_http_on_tcp_port(stream, first, state.config.http_port):
        raise ConnectionClosed(_HTTP_ON_TCP_PORT)
    if first is not None and sniff.is_tls_hello(first):
        # The peer cannot read our answer (it expects TLS), but the log says what happened,
        # rather than "a frame of 369295616 bytes". What it sent is taken first: closing
        # with unread bytes would reset the connection before the answer is read.
        assert isinstance(stream, trio.SocketStream)
        await stream.receive_some(len(first))
        raise ProtocolError(
            "a TLS ClientHello on a plain TCP port: this server has no TLS here (connect "
            "with tcp://, or give the server a certificate for tcps://)"
        )
    try:
        frames = await transport.receive_frames()
    except (FrameTooLarge, ProtocolError) as exc:
        # TLS: the stream could not be peeked; its first bytes tell an HTTP request
        # (https:// or wss:// on the TCP port) from a frame "of 1195725856 bytes".
        first_bytes = getattr(transport, "first_bytes", None)
        if await sniff.answer_http_on_tcp_port(stream, first_bytes, state.config.http_port):
            raise ConnectionClosed(_HTTP_ON_TCP_PORT) from None
        if isinstance(exc, FrameTooLarge) and full_limit is not None:
            # Not "raise max_frame_bytes": the hello's own limit (the frame's size first).
            raise FrameTooLarge(
                f"{str(exc).partition(';')[0]} before the welcome: the first frame is a "
                "hello, far smaller (is this a trio_stream client?)"
            ) from None
        raise
    if isinstance(transport, StreamTransport):
        transport.first_bytes = None  # (they hold the hello's token)
    if frames[0][0] != CONTROL:
        raise ProtocolError("the first frame must be a CONTROL hello")
    try:
        hello = decode_message(frames[0], CONTROL_MAX_ITEMS)
    except UnknownOp as exc:  # the wire names public error types only
        raise ProtocolError(str(exc)) from None
    if not isinstance(hello, Hello):
        raise ProtocolError(f"expected hello, got {hello.OP}")
    if hello.v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {hello.v} is not supported (this server speaks "
            f"{PROTOCOL_VERSION}); upgrade the client"
        )
    token = state.config.token
    if token is not None and (
        hello.token is None or not hmac.compare_digest(hello.token.encode(), token.encode())
    ):
        if hello.token is not None:  # (a missing one is a mistake, not a guess)
            state.wrong_tokens.failed(host_of(transport.remote), "server token")
        raise AuthError(
            "wrong or missing token: give the server's token (open_client(url, token=...), "
            "SyncClient(url, token=...); on the command line --token or $TRIO_STREAM_TOKEN)"
        )
    if hello.name is not None:
        check_client_name(hello.name)
    name, resume_token, channels_deleted, told = await claim(hello)
    # Several nodes: the name must be free on every node too (a round trip to the engine).
    await state.engine.claim_name(name, resume_token=hello.resume_token)
    if channels_deleted:  # (rare: a round trip to Redis for each, with several nodes)
        for made_again in await state.engine.drop_made_again(name, channels_deleted):
            told.pop(made_again, None)
    welcome = Welcome(
        v=PROTOCOL_VERSION,
        client_id=client_id,
        name=name,
        server=f"{state.config.name} trio_stream/{__version__}",
        limits=state.limits.to_wire(),
        resume_token=resume_token,
        run=state.run_id,
        channels_deleted=channels_deleted or None,
    )
    admit()
    await transport.send([control_frame(welcome)])
    early = frames[1:]
    if full_limit is not None:
        _limit_frames(transport, full_limit)
        if isinstance(transport, StreamTransport):
            early += transport.frames_held()  # (over the hello's limit, in the same read)
    return early


def hello_max_frame_bytes(state: ServerState) -> int:
    """The largest frame the server takes before its welcome (HELLO_MAX_FRAME_BYTES, or
    room for a longer server token), never above max_frame_bytes."""
    token = state.config.token
    cap = HELLO_MAX_FRAME_BYTES
    if token is not None:
        cap = max(cap, len(token.encode()) + HELLO_OVERHEAD_BYTES)
    return min(cap, state.limits.max_frame_bytes)


def _limit_frames(transport: FrameTransport, nbytes: int) -> int | None:
    """Set the largest frame (and WebSocket message) ``transport`` takes; its limit before,
    or None if it has none to set (or had that one already)."""
    if not isinstance(transport, StreamTransport | WebSocketTransport):
        return None
    before = transport.max_frame_bytes
    if before == nbytes:
        return None
    transport.max_frame_bytes = nbytes
    return before


async def refuse(transport: FrameTransport, error: TrioStreamError) -> None:
    """Tell a client why its handshake failed (within REFUSAL_FLUSH_S) and close."""
    closing_for(transport, error)
    with trio.move_on_after(REFUSAL_FLUSH_S):
        with contextlib.suppress(ConnectionClosed):
            await transport.send(
                [control_frame(Error(id=None, type=type(error).__name__, message=str(error)))]
            )
    with trio.CancelScope(shield=True):
        await transport.aclose()


def closing_for(transport: FrameTransport, error: TrioStreamError) -> None:
    """Let the transport close for ``error``: only a WebSocket has a close code and reason
    to set (1002 for a protocol error)."""
    set_reason = getattr(transport, "closing_for", None)
    if set_reason is not None:
        set_reason(error)
