"""Client side: open a frame transport for a URL (tcp://, tcps://, ws://, wss://)."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

import trio

from .._exceptions import ConnectionClosed
from . import sniff
from .base import FrameTransport, WrongServer
from .tcp import StreamTransport
from .urls import SCHEMES as SCHEMES  # importable from here too
from .urls import split_url as split_url


def cannot_connect(url: str, exc: OSError) -> ConnectionClosed:
    """The one-line error for a connection that could not be made (raise it ``from None``:
    it says all the chained OSError and trio's exception group would, in one line instead
    of thirty; the OSError stays reachable as its ``__context__``).

    trio's ``open_tcp_stream`` raises ``OSError("all attempts to connect to H:P failed")``
    and keeps the real errors (one per address tried) in an exception group as its cause:
    the first of those says what happened ("Connection refused", "No route to host"), and a
    refusal gets the usual next step. A name that does not resolve is ``socket.gaierror``,
    raised by getaddrinfo before any attempt.
    """
    cause: BaseException | None = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    error = cause if isinstance(cause, OSError) else exc
    if isinstance(error, socket.gaierror):
        return ConnectionClosed(f"cannot connect to {url}: {unresolved(url, error)}")
    reason = os.strerror(error.errno) if error.errno else error.strerror or str(error)
    if isinstance(error, ConnectionRefusedError):
        reason += (
            " (no server listens there: start one with 'trio-stream serve' or "
            "'trio-stream demo', or check the host and port)"
        )
    return ConnectionClosed(f"cannot connect to {url}: {reason}")


def was_refused(error: BaseException) -> bool:
    """Whether connecting failed because nothing listens there (the OSError that said so
    stays in the chain of the ConnectionClosed that tells it)."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]  # trio's open_tcp_stream: one error per address tried
        else:
            seen = seen.__cause__ or seen.__context__
    return False


def unresolved(url: str, error: socket.gaierror) -> str:
    # getaddrinfo's errors are EAI_* codes, not errno values: os.strerror() turns them into
    # "Unknown error -2". EAI_AGAIN is the resolver not answering (often: no network), which
    # a correct name does not cure.
    host = urlsplit(url).hostname or url
    if error.errno == socket.EAI_AGAIN:
        return (
            f"cannot resolve host {host!r} now (no answer from the name server: check the network)"
        )
    return f"cannot resolve host {host!r} (check the name)"


async def tls_handshake(
    url: str, stream: trio.SocketStream, host: str, ssl_context: ssl.SSLContext | None
) -> trio.SSLStream[trio.SocketStream]:
    """TLS over ``stream``, handshake done: a plain server is named in one line here.

    Raises:
        ConnectionClosed: the handshake failed (closing ``stream``).
    """
    context = ssl_context or ssl.create_default_context()
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tls)
        reason = sniff.describe_tls_failure(url, exc) or untrusted_certificate(url, exc)
        if reason is not None:
            raise WrongServer(reason) from exc
        raise ConnectionClosed(f"cannot connect to {url}: {exc.__cause__ or exc}") from exc
    return tls


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the certificate
# is trusted but names another host.
_NAME_MISMATCHES: Final = frozenset({62, 64})


def untrusted_certificate(url: str, exc: BaseException) -> str | None:
    """One line for a server certificate that failed verification, with the next step; None
    for any other failure. OpenSSL's own words ("self-signed certificate") do not say that
    a private CA is given with --tls-ca or an ``ssl_context``."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    said = (cause.verify_message or str(cause)).rstrip(".")
    if cause.verify_code in _NAME_MISMATCHES:
        advice = "connect by a name or address that the server's certificate names"
    else:
        advice = (
            "if the server's certificate comes from a private CA, give that CA's certificate: "
            "--tls-ca FILE to trio-stream, ssl_context=ssl.create_default_context(cafile=FILE) "
            "in Python"
        )
    return f"cannot connect to {url}: the server's certificate was refused ({said}): {advice}"


async def check_tls(url: str, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
    """A TLS handshake and nothing else, before a ``wss://`` connection.

    trio-websocket meets a plain server's answer to its ClientHello in its background writer
    and then waits out its connect timeout (10 s) without a word; this costs one more
    handshake per wss:// connection (setup only) and turns that wait into one prompt line.

    Raises:
        ConnectionClosed: unreachable, or the handshake failed.
    """
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise cannot_connect(url, exc) from None
    tls = await tls_handshake(url, stream, host, ssl_context)
    await trio.aclose_forcefully(tls)


@asynccontextmanager
async def connect(
    url: str, *, max_frame_bytes: int, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[FrameTransport]:
    scheme, host, port, _path = split_url(url)
    if scheme in ("ws", "wss"):
        from .websocket import connect_websocket

        if scheme == "wss":
            await check_tls(url, host, port, ssl_context)

        async with connect_websocket(
            url, max_frame_bytes=max_frame_bytes, ssl_context=ssl_context
        ) as transport:
            yield transport
        return
    try:
        socket_stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise cannot_connect(url, exc) from None
    stream: trio.abc.Stream = socket_stream
    if scheme == "tcps":
        stream = await tls_handshake(url, socket_stream, host, ssl_context)
    transport = StreamTransport(stream, max_frame_bytes)
    try:
        yield transport
    finally:
        with trio.CancelScope(shield=True):
            await transport.aclose()
