"""The HTTP port: the dashboard's files, /metrics, and WebSocket upgrades at /ws, on one port.

Each connection's request head is read with h11, under a size limit and the handshake
timeout, whatever it turns out to be. A WebSocket upgrade at /ws (from an allowed origin) is
then handed to trio-websocket: h11 has consumed the head from the socket, so the stream given
to trio-websocket replays it first (see ``ReplayStream``) and wsproto performs the handshake
as if it had read the socket itself. Anything else is answered here with h11, keep-alive
included.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket

from .._config import ServerConfig
from .._transport import sniff
from .._transport.origin import host_allowed, host_name, host_refusal, origin_allowed
from .._transport.replay import ReplayStream
from .._transport.tcp import peer_address, remote_of
from .._transport.web_files import find_web_file
from .._transport.websocket import (
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BUFFER_BYTES,
    WebSocketTransport,
    max_message_bytes,
)
from .log_throttle import LogThrottle
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import metrics_steps
from .metrics_budget import MetricsBudget, MetricsTurns
from .session import Session
from .wrong_tokens import host_of

if TYPE_CHECKING:
    from .serve import Server

log = logging.getLogger(__name__)

WS_PATH: Final = "/ws"
METRICS_PATH: Final = "/metrics"
MAX_REQUEST_HEAD_BYTES: Final = 16 * 1024
RECEIVE_BYTES: Final = 16 * 1024
ERROR_LINGER_S: Final = 1.0  # how long an error answer may take to leave, with the lingering
ERROR_LINGER_BYTES: Final = 256 * 1024  # what we read and drop after an error answer
FAILURES_SAID_EVERY_S: Final = 60.0  # a failed HTTP connection's traceback, at most
# The upgrade's headers wsproto reads as ASCII (its split_comma_header, the key and version
# as tokens): one byte above 0x7f was a UnicodeDecodeError in its handshake.
_ASCII_UPGRADE_HEADERS: Final = (
    b"connection",
    b"upgrade",
    b"sec-websocket-protocol",
    b"sec-websocket-extensions",
)
# Only the server's own files; no framing by other sites (clickjacking), no <base> or form
# targets elsewhere, no plugins. connect-src lists ws:/wss: as older browsers do not count a
# WebSocket to the page's own host as 'self'.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),  # frame-ancestors for browsers that predate it
    ("Referrer-Policy", "no-referrer"),
)
# The dashboard's files change with the package: browsers keep them but revalidate each time
# (a 304 against the ETag costs a round trip and no body).
CACHE_CONTROL: Final = "no-cache"
TEXT: Final = "text/plain; charset=utf-8"


async def start_http(server: Server, nursery: trio.Nursery) -> tuple[str, str]:
    """Listen on ``config.host:config.http_port`` and serve in ``nursery``.

    Returns:
        The dashboard's URL and the WebSocket URL, e.g. ("http://h:p/", "ws://h:p/ws").
    """
    config = server.config
    listeners = await trio.open_tcp_listeners(config.http_port or 0, host=config.host)
    port = listeners[0].socket.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    secure = config.ssl_context is not None
    site = HttpSite(server)
    nursery.start_soon(site.accept, listeners, nursery)
    http, ws = ("https", "wss") if secure else ("http", "ws")
    return f"{http}://{host}:{port}/", f"{ws}://{host}:{port}{WS_PATH}"


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


def text_response(status: int, text: str, *, close: bool = False) -> HttpResponse:
    return HttpResponse(status, text.encode() + b"\n", close=close)


class HttpSite:
    """What the HTTP port serves, for one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = server.config
        self.metrics_text = MetricsBudget(self._render_metrics)
        self.metrics_turns = MetricsTurns()
        self._failures = LogThrottle(FAILURES_SAID_EVERY_S)

    def _failed(self, remote: str) -> None:
        # A peer that finds such a bug can repeat it in a loop (see log_throttle): the first
        # is said at once, then one a minute with a count, as refused connections are.
        due = self._failures.happened(trio.current_time())
        if due is None:
            return
        more = due[0] - 1
        log.exception(
            "HTTP connection from %s failed%s",
            remote,
            f" ({more} more since the last such line)" if more else "",
        )

    async def accept(self, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
        # Connections run in the server's nursery: aclose() stops accepting, and WebSocket
        # sessions still say goodbye.
        with self.server.accept_scope():
            await trio.serve_listeners(self.handle, listeners, handler_nursery=nursery)

    async def handle(self, socket_stream: trio.SocketStream) -> None:
        stream: trio.abc.Stream = socket_stream
        if self.config.ssl_context is not None:
            stream = trio.SSLStream(socket_stream, self.config.ssl_context, server_side=True)
        admission = self.server.admission
        address = peer_address(socket_stream)
        refusal = admission.admit(address, "http")
        try:
            connection = HttpConnection(self, stream, remote_of(socket_stream))
            if refusal is not None:
                await connection.send_raw_error(503, refusal)
            else:
                await connection.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away (or the TLS handshake failed)
        except Exception:  # a bug must cost one connection, never the server
            self._failed(remote_of(socket_stream))
        finally:
            if refusal is None:
                admission.release(address, "http")
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def route(self, request: h11.Request, path: str, remote: str) -> HttpResponse:
        """The answer to a request (from ``remote``) that is not a WebSocket upgrade."""
        if request.method not in (b"GET", b"HEAD"):
            response = text_response(405, "only GET and HEAD are served here", close=True)
            response.headers.append(("Allow", "GET, HEAD"))
            return response
        if path == METRICS_PATH:
            return await self.metrics(request, remote)
        if path == WS_PATH:
            response = text_response(426, "this is the WebSocket endpoint: connect with ws://")
            response.headers.append(("Upgrade", "websocket"))
            return response
        web_file = find_web_file(path)
        if web_file is None:
            return text_response(404, "not found")
        headers = [("ETag", web_file.etag), ("Cache-Control", CACHE_CONTROL)]
        if {web_file.etag, "*"} & set(_header_list(request, b"if-none-match")):
            return HttpResponse(304, headers=headers, content_type="")
        return HttpResponse(200, web_file.body, web_file.content_type, headers)

    async def metrics(self, request: h11.Request, remote: str) -> HttpResponse:
        """The text, at the address's turn (metrics_budget.py); a request without the token
        is answered at once, so it takes no turn from the scraper that has it."""
        token = self.config.token
        if token is not None:
            # Without the token, /metrics would list the public channels to anyone who can
            # reach the port; Prometheus sends it with `authorization: {credentials: ...}`.
            # The scheme is case-insensitive (RFC 7235): "bearer" and "BEARER" count.
            scheme, _, given = (_header(request, b"authorization") or b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                given.strip(b" "), token.encode()
            ):
                if given.strip(b" "):  # (none given is a mistake, not a guess)
                    self.server.state.wrong_tokens.failed(host_of(remote), "metrics token")
                response = text_response(
                    401, "send the server's token: Authorization: Bearer <token>"
                )
                response.headers.append(("WWW-Authenticate", 'Bearer realm="trio_stream"'))
                return response
        if not await self.metrics_turns.wait_turn(host_of(remote)):
            response = text_response(
                429,
                "too many /metrics requests from this address at once: one is answered every 0.1 s",
                close=True,
            )
            response.headers.append(("Retry-After", "1"))
            return response
        body = await self.metrics_text.text()
        return HttpResponse(200, body, METRICS_CONTENT_TYPE, [("Cache-Control", "no-store")])

    def _render_metrics(self) -> Iterator[bytes]:
        admission = self.server.admission
        for part in metrics_steps(self.server.state, admission.refused_total, admission):
            yield part.encode()


class HttpConnection:
    """One HTTP/1.1 connection: requests until it closes, or one WebSocket upgrade."""

    def __init__(self, site: HttpSite, stream: trio.abc.Stream, remote: str) -> None:
        self.site = site
        self.stream = stream
        self.remote = remote
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)

    async def run(self) -> None:
        config = self.site.config
        # The first request, head and end, must come within the handshake timeout, each
        # later one within the keep-alive timeout: a slow-loris client holds a connection
        # for that long at most, and an idle keep-alive connection no longer.
        timeout = config.handshake_timeout_s
        for served in range(1, config.http_max_requests + 1):
            try:
                with trio.fail_after(timeout):
                    request = await self._receive_request()
            except trio.TooSlowError:
                if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
                    await self.send_raw_error(408, "the request took too long")
                return
            except h11.RemoteProtocolError as exc:
                await self.send_raw_error(exc.error_status_hint, str(exc))
                return
            if request is None:
                return
            host = _header(request, b"host")
            if not _host_allowed(host, config):
                # Throttled as refused connections are: anyone may send these.
                self.site.server.admission.refusals.refused(
                    self.remote, f"request for host {host!r:.200} refused"
                )
                await self._send_response(
                    request,
                    text_response(403, host_refusal(host, bound_to=config.host), close=True),
                )
                return
            path = request.target.decode("ascii", "replace").partition("?")[0]
            if _is_websocket_upgrade(request):
                await self._upgrade(request, path)
                return
            response = await self.site.route(request, path, self.remote)
            if served == config.http_max_requests:
                response.close = True  # the client opens a new connection for more
            if not await self._send_response(request, response):
                return
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()
            timeout = config.http_keepalive_timeout_s

    async def _receive_request(self) -> h11.Request | None:
        """The next request, read to its end (no bodies are accepted); None at EOF."""
        request: h11.Request | None = None
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                want = RECEIVE_BYTES
                if request is None:
                    # h11 checks its limit only against a head still incomplete, so a head
                    # arriving whole in one read could pass it: read no further than the limit.
                    room = MAX_REQUEST_HEAD_BYTES - len(self.conn.trailing_data[0])
                    if room <= 0:
                        raise h11.RemoteProtocolError("request head too large", 431)
                    want = min(want, room)
                data = await self.stream.receive_some(want)
                if (
                    request is None
                    and not self.conn.trailing_data[0]
                    and sniff.cannot_start_http_request(data)
                ):
                    # A trio_stream or TLS client on this port: say so now (see sniff).
                    server = self.site.server
                    urls = server.urls
                    address = urlsplit(urls.get("http", "")).netloc or "HOST:PORT"
                    tls = isinstance(self.stream, trio.SSLStream)
                    text = sniff.http_port_explanation(
                        bytes(data), address, urls.get("tcp"), tls=tls
                    )
                    raise h11.RemoteProtocolError(text, 400)
                self.conn.receive_data(bytes(data))  # b"" tells h11 about EOF
                continue
            if isinstance(event, h11.Request):
                request = event
                if self.conn.they_are_waiting_for_100_continue:
                    # Its body waits for our go-ahead, which never comes: no request here
                    # takes a body. Answered now (a POST waited out the handshake timeout
                    # for a 408); the connection then closes, the body unread.
                    return request
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                return request
            elif isinstance(event, h11.Data):
                raise h11.RemoteProtocolError("request bodies are not accepted here", 400)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send_response(self, request: h11.Request, response: HttpResponse) -> bool:
        """Send ``response``; False when the peer did not take it within the write timeout."""
        headers: list[tuple[str, str]] = [*SECURITY_HEADERS, *response.headers]
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        if response.status != 304:
            headers.append(("Content-Length", str(len(response.body))))
        if response.close:
            headers.append(("Connection", "close"))
        conn = self.conn
        head = h11.Response(
            status_code=response.status, headers=headers, reason=_reason(response.status)
        )
        out = [conn.send(head) or b""]
        if response.body and request.method != b"HEAD":
            out.append(conn.send(h11.Data(data=response.body)) or b"")
        out.append(conn.send(h11.EndOfMessage()) or b"")
        # A peer that sends requests and never reads the answers (1000 pipelined GETs) would
        # otherwise hold the connection, and its unsent answers, forever.
        with trio.move_on_after(self.site.config.http_write_timeout_s):
            await self.stream.send_all(b"".join(out))
            return True
        log.info(
            "%s: the response was not read within %g s (http_write_timeout_s): closing",
            self.remote,
            self.site.config.http_write_timeout_s,
        )
        return False

    async def send_raw_error(self, status: int, message: str) -> None:
        """Answer a request h11 could not parse (it will not send for a request it never saw)."""
        body = message.encode() + b"\n"
        head = [
            f"HTTP/1.1 {status} {_reason(status)}",
            *(f"{name}: {value}" for name, value in SECURITY_HEADERS),
            f"Content-Type: {TEXT}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        with trio.move_on_after(ERROR_LINGER_S):
            await self.stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            # Closing with unread bytes makes the kernel send a reset, which can destroy the
            # answer before the client reads it: stop sending, and read what is left a while.
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
                discarded = 0
                while discarded < ERROR_LINGER_BYTES:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        break
                    discarded += len(data)

    # -- WebSocket ---------------------------------------------------------------------------
    async def _upgrade(self, request: h11.Request, path: str) -> None:
        refusal = self._check_upgrade(request, path)
        if refusal is not None:
            refusal.close = True
            await self._send_response(request, refusal)
            return
        data, _closed = self.conn.trailing_data
        stream = ReplayStream(self.stream, _request_head(request) + data)
        server = self.site.server
        max_frame = server.state.limits.max_frame_bytes
        async with trio.open_nursery() as nursery:
            connection: trio_websocket.WebSocketConnection | None = None
            # The head is already here, so the handshake takes one write; the timeout only
            # guards against trio-websocket waiting for a request it refused to parse.
            with trio.move_on_after(self.site.config.handshake_timeout_s):
                ws_request = await trio_websocket.wrap_server_stream(
                    nursery,
                    stream,
                    message_queue_size=MESSAGE_QUEUE_SIZE,
                    max_message_size=max_message_bytes(max_frame),
                    receive_buffer_size=RECEIVE_BUFFER_BYTES,
                )
                connection = await ws_request.accept()
            try:
                if connection is None:
                    log.info("%s: the WebSocket handshake did not complete", self.remote)
                    return
                transport = WebSocketTransport(connection, max_frame, self.remote)
                # run_session returns once the session has closed the transport.
                await server.run_session(Session(server.state, transport))
            finally:
                nursery.cancel_scope.cancel()  # trio-websocket's reader task, if still there

    def _check_upgrade(self, request: h11.Request, path: str) -> HttpResponse | None:
        if path != WS_PATH:
            return text_response(404, f"WebSocket connections go to {WS_PATH}")
        if request.method != b"GET" or _header(request, b"sec-websocket-key") is None:
            return text_response(400, "not a valid WebSocket upgrade request")
        # RFC 6455 section 4.2.1: an HTTP/1.1 GET whose key is 16 bytes in base64. wsproto
        # checks neither, and a client that gets these wrong would be answered with a
        # handshake that a conforming client then refuses (or, for HTTP/1.0, a 101 that an
        # HTTP/1.0 peer cannot read), far from the mistake.
        if request.http_version != b"1.1":
            return text_response(400, "a WebSocket upgrade must be an HTTP/1.1 request")
        keys = [value for name, value in request.headers if name == b"sec-websocket-key"]
        if len(keys) != 1 or not _is_websocket_key(bytes(keys[0])):
            return text_response(
                400, "Sec-WebSocket-Key must be 16 random bytes in base64 (24 characters)"
            )
        if _header(request, b"sec-websocket-version") != b"13":
            response = text_response(426, "this server speaks WebSocket version 13")
            response.headers.append(("Sec-WebSocket-Version", "13"))
            return response
        for name, value in request.headers:
            if name in _ASCII_UPGRADE_HEADERS and not bytes(value).isascii():
                return text_response(400, f"the {name.decode()} header must be ASCII")
        origin = _header(request, b"origin")
        host = _header(request, b"host")
        try:
            # As the WebSocket handshake reads it (wsproto): a Host it cannot read failed
            # there, with a traceback in the log and no answer to the client.
            if host is not None:
                host.decode("idna")
        except UnicodeError:
            return text_response(400, "the Host header is not a host name (ASCII, IDNA)")
        if not origin_allowed(
            origin.decode("latin-1") if origin is not None else None,
            host.decode("latin-1") if host is not None else None,
            self.site.config.allowed_origins,
            secure=self.site.config.ssl_context is not None,
        ):
            # A browser shows its page nothing of a refused upgrade: this line is where the
            # page's author learns why, so it says how to let the page in.
            shown = origin.decode("latin-1")[:200] if origin is not None else "(none)"
            if shown == "null":
                # Every file:// page and sandboxed frame sends "null": letting it in would let
                # any of them in, so the advice is not to.
                advice = "serve the page from a web server (a file:// page or a sandboxed frame "
                advice += "sends origin null, which any such page shares: not one to allow)"
            else:
                advice = f"let it in with --allowed-origin {shown} or "
                advice += "ServerConfig(allowed_origins=(...))"
            # Throttled as refused connections are (6,000 bad origins were 6,000 lines: an
            # outside review): the first at once, then a count a minute with the latest.
            self.site.server.admission.refusals.refused(
                self.remote,
                f"WebSocket from origin {shown!r} refused (not a page of this server): {advice}",
            )
            return text_response(
                403, "this origin may not connect (see ServerConfig.allowed_origins)"
            )
        return None


def _is_websocket_key(key: bytes) -> bool:
    try:
        return len(key) == 24 and len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def _host_allowed(host: bytes | None, config: ServerConfig) -> bool:
    """Whether the HTTP port answers a request with this Host header (host_allowed), a name
    and its fully-qualified form alike: ``ctl.lab.example.`` (one trailing dot, DNS's root)
    is ``ctl.lab.example``, and was refused while that one was allowed (an operator)."""
    text = host.decode("latin-1") if host is not None else None
    if text is not None:
        name = host_name(text)
        if name is not None and _drop_root_dot(name) != name:
            text = _drop_root_dot(name)  # (without its port: the port is not compared)
    allowed = config.allowed_hosts
    if allowed is not None:
        allowed = tuple(_drop_root_dot(entry) for entry in allowed)
    return host_allowed(text, allowed, bound_to=config.host)


def _drop_root_dot(name: str) -> str:
    """``name`` without one trailing dot (not two: "a.." is no host name)."""
    return name[:-1] if name.endswith(".") and not name.endswith("..") else name


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def _header_list(request: h11.Request, name: bytes) -> list[str]:
    """The comma-separated values of every ``name`` header."""
    values: list[str] = []
    for key, value in request.headers:
        if key == name:
            values.extend(v.strip() for v in value.decode("latin-1").split(","))
    return values


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = [v.lower() for v in _header_list(request, b"upgrade")]
    connection = [v.lower() for v in _header_list(request, b"connection")]
    return "websocket" in upgrade and "upgrade" in connection


def _request_head(request: h11.Request) -> bytes:
    """The request head as bytes again, for wsproto to parse (h11 has consumed the original)."""
    lines = [request.method + b" " + request.target + b" HTTP/1.1"]
    lines.extend(name + b": " + value for name, value in request.headers.raw_items())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
