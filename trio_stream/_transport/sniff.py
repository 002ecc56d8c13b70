"""Recognising a peer that speaks another protocol, from its first bytes: a wrong port or scheme.

The two ports of a server are easy to mix up (``ws://`` on the TCP port, ``tcp://`` on the
dashboard's port), and so are the schemes (``tcps://`` or ``wss://`` against a plain server).
Each mistake shows in the first bytes the other side sends, so both sides look at them and
answer with one line that names the mistake, instead of a frame "of 1213486160 bytes" (the
bytes "HTTP") or a wait for a handshake that cannot come:

- the TCP port, seeing an HTTP request (``GET /ws HTTP/1.1``), answers with an HTTP 400 whose
  body says which port this is; a WebSocket client shows that body;
- the HTTP port, seeing bytes that cannot start an HTTP request (a trio_stream hello, a TLS
  ClientHello), answers 400 at once rather than waiting for a request head;
- a client, seeing ``HTTP`` where a welcome frame should be, says it reached an HTTP port;
- a TLS client whose handshake meets plain bytes says the server does not use TLS there.

The functions on bytes are pure; :func:`peek` and :func:`answer_http_on_tcp_port` are the
only I/O, and both run once per connection, never per frame.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

import trio

PEEK_BYTES: Final = 2048  # enough for an error answer's head and its one-line body
# An HTTP request starts with a method, a token of letters; these are the common ones.
_HTTP_METHODS: Final = (b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN")
_TLS_HANDSHAKE_RECORD: Final = 0x16
_TLS_MAJOR_VERSION: Final = 0x03
# What OpenSSL reports when the answer to its ClientHello is not TLS at all.
_PLAIN_ANSWER_REASONS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"}
)
# The first words of our own explanations: a client shows such a body as it is.
TCP_PORT_MARK: Final = "this is trio_stream's TCP port"
HTTP_PORT_MARK: Final = "this is trio_stream's HTTP port"
LINGER_S: Final = 1.0  # how long an answer to a wrong-protocol peer may take to leave
LINGER_BYTES: Final = 64 * 1024  # what we read and drop after it (so that no reset eats it)


# -- what the first bytes are ------------------------------------------------------------------
def is_http_request(first: bytes) -> bool:
    return first[:4] in _HTTP_METHODS


def is_http_response(first: bytes) -> bool:
    return first.startswith(b"HTTP/")


def is_tls_hello(first: bytes) -> bool:
    return len(first) >= 2 and first[0] == _TLS_HANDSHAKE_RECORD and first[1] == _TLS_MAJOR_VERSION


def cannot_start_http_request(first: bytes | bytearray) -> bool:
    """True if ``first`` (the first bytes of a connection) cannot begin an HTTP request.

    A request line starts with a method, a token of letters (RFC 9112 lets a server skip an
    empty line before it). A trio_stream hello starts with its length prefix (a zero byte) and
    a TLS ClientHello with 0x16: neither will ever be a request head.
    """
    return (
        bool(first)
        and not (chr(first[0]).isascii() and chr(first[0]).isalpha())
        and (first[0] not in b"\r\n")
    )


# -- what we say about them --------------------------------------------------------------------
def tcp_port_explanation(tcp_address: str, http_port: int | None, *, tls: bool = False) -> str:
    """What the TCP port answers to an HTTP request (``tcp_address``: the host:port reached;
    ``tls``: the server's ports use TLS)."""
    host = tcp_address.rpartition(":")[0] or "HOST"
    tcp, ws, http = ("tcps", "wss", "https") if tls else ("tcp", "ws", "http")
    if http_port is None:
        web = "this server has no HTTP port (no WebSocket, no dashboard)"
    elif http_port == 0:
        web = f"or the server's {ws}:// URL (its HTTP port, path /ws) for WebSocket"
    else:
        web = (
            f"or {ws}://{host}:{http_port}/ws for WebSocket "
            f"(dashboard: {http}://{host}:{http_port}/)"
        )
    return f"{TCP_PORT_MARK}, not HTTP: use {tcp}://{tcp_address}, {web}"


def http_port_explanation(
    first: bytes, http_address: str, tcp_url: str | None, *, tls: bool = False
) -> str:
    """What the HTTP port answers to bytes that are not HTTP (``http_address``: host:port;
    ``tls``: the port uses TLS, so the bytes were a client's after its TLS handshake)."""
    scheme, ws = ("tcps", "wss") if tls else ("tcp", "ws")
    tcp = (
        f"{scheme}:// on the TCP port ({tcp_url})"
        if tcp_url
        else f"{scheme}:// on the server's TCP port"
    )
    if is_tls_hello(first) and not tls:
        return (
            f"{HTTP_PORT_MARK} and it does not use TLS: use ws://{http_address}/ws "
            "(not wss://), or start the server with --tls-cert/--tls-key"
        )
    return f"{HTTP_PORT_MARK} (dashboard, WebSocket at /ws): use {ws}://{http_address}/ws, or {tcp}"


def http_answer(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 answer with a one-line plain-text body, closing the connection."""
    body = text.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def describe_http_reply(url: str, first: bytes) -> str | None:
    """One line for a client whose handshake got an HTTP answer; None if it is not one."""
    if not is_http_response(first):
        return None
    body = first.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
    if body.startswith(HTTP_PORT_MARK):
        return f"{url}: {body[:300]}"
    return (
        f"{url} answered in HTTP, not trio_stream: this looks like an HTTP port "
        "(use ws://HOST:PORT/ws there, or tcp:// with the server's TCP port)"
    )


def describe_tls_failure(url: str, exc: BaseException) -> str | None:
    """One line for a TLS handshake that met a plain server; None for any other failure."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is None or getattr(cause, "reason", None) not in _PLAIN_ANSWER_REASONS:
        return None
    plain = url.replace("tcps://", "tcp://", 1).replace("wss://", "ws://", 1)
    return (
        f"cannot connect to {url}: the server answered without TLS (a plain server, or the "
        f"wrong port): use {plain}, or check the port"
    )


# -- I/O, once per connection -------------------------------------------------------------------
async def peek(stream: object, max_bytes: int = PEEK_BYTES) -> bytes | None:
    """The first bytes waiting on a plain TCP stream, left in place; None on other streams.

    Waits until at least one byte (or the end) has arrived. TLS streams are not peeked: their
    bytes are records, not what the peer said.
    """
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        return await stream.socket.recv(max_bytes, socket.MSG_PEEK)
    except OSError:
        return None


async def answer_and_close(stream: trio.abc.Stream, answer: bytes) -> None:
    """Send ``answer``, then read and drop what the peer still sends for a moment.

    Closing with unread bytes in the socket makes the kernel send a reset, which can destroy
    the answer before the peer reads it.
    """
    with trio.move_on_after(LINGER_S):
        try:
            await stream.send_all(answer)
            if isinstance(stream, trio.abc.HalfCloseableStream):  # (TLS is not)
                await stream.send_eof()
            dropped = 0
            while dropped < LINGER_BYTES:
                data = await stream.receive_some(LINGER_BYTES)
                if not data:
                    break
                dropped += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def answer_http_on_tcp_port(
    stream: object, first: bytes | None, http_port: int | None
) -> bool:
    """On the TCP port: if the peer opened with an HTTP request (``first``: what
    :func:`peek` saw, or a TLS stream's first bytes), explain and return True."""
    if first is None or not is_http_request(first):
        return False
    assert isinstance(stream, trio.SocketStream | trio.SSLStream)
    tls = isinstance(stream, trio.SSLStream)
    plain = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    assert isinstance(plain, trio.SocketStream)
    host, port = plain.socket.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    text = tcp_port_explanation(f"{host}:{port}", http_port, tls=tls)
    await answer_and_close(stream, http_answer(400, "Bad Request", text))
    return True
