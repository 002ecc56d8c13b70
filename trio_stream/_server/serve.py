"""The server: listeners, connections and their lifecycle, housekeeping, graceful shutdown."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
from collections.abc import AsyncIterator

import trio

from .._async_context import AsyncContext as AsyncContext  # (the managers' run-time annotations)
from .._async_context import async_context
from .._config import ServerConfig
from .._exceptions import InvalidSetting, LimitExceeded
from .._protocol.messages import Error
from .._transport.tcp import StreamTransport, peer_address
from .._util import open_own_nursery, unwrap_single_exception
from .admission import ConnectionCounter
from .broker import Channel
from .gc_policy import FreezePolicy, freeze_startup_objects
from .handshake import REFUSAL_FLUSH_S
from .outbox import control_frame
from .session import Session
from .state import ServerState
from .wrong_tokens import short_token_warning

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Server:
    """A running server, as ``await nursery.start(serve, config)`` returns it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state = ServerState(config)
        # The endpoints listening, by kind ("tcp", "ws", "http"): see ``urls``.
        self._urls: dict[str, str] = {}
        self._cancel_scope = trio.CancelScope()
        self._accept_scopes: list[trio.CancelScope] = []
        self._sessions: set[Session] = set()
        self._no_sessions = trio.Event()
        self._no_sessions.set()
        self._housekeeping_wake = trio.Event()
        # When housekeeping wakes next (-inf: it has not yet computed that).
        self._housekeeping_deadline = -math.inf
        self.state.on_channel_created = self._deadline_added
        self.state.wake_housekeeping = self._wake_housekeeping
        self._stopped = trio.Event()
        self._closing = False
        self.admission = ConnectionCounter(
            config.max_connections, config.max_connections_per_address
        )
        self.freezer = FreezePolicy()

    def accept_scope(self) -> trio.CancelScope:
        """A cancel scope for one accept loop (TCP, HTTP): aclose() cancels it."""
        scope = trio.CancelScope()
        if self._closing:
            scope.cancel()
        self._accept_scopes.append(scope)
        return scope

    @property
    def urls(self) -> dict[str, str]:
        """The URL of each endpoint listening, by kind: ``"tcp"``, ``"ws"``, ``"http"`` (an
        endpoint switched off, ``tcp_port=None`` or ``http_port=None``, has none)."""
        return dict(self._urls)

    @property
    def tcp_url(self) -> str:
        """Where clients connect over raw TCP: ``tcp://127.0.0.1:41234`` (``tcps://``
        with TLS)."""
        return self._url("tcp", "tcp_port", "raw TCP")

    @property
    def ws_url(self) -> str:
        """Where clients connect over WebSocket: ``ws://127.0.0.1:41235/ws``."""
        return self._url("ws", "http_port", "WebSocket")

    @property
    def http_url(self) -> str:
        """The dashboard: ``http://127.0.0.1:41235/``."""
        return self._url("http", "http_port", "HTTP")

    def _url(self, kind: str, port_setting: str, what: str) -> str:
        # A str, not "str | None": a typed program connects to server.tcp_url as the
        # README does without an assert first (a trio developer); an endpoint switched off
        # says so where a None would fail further on.
        url = self._urls.get(kind)
        if url is None:
            raise InvalidSetting(
                port_setting,
                f"this server has no {what} endpoint: ServerConfig({port_setting}=None) "
                "switched it off (server.urls lists those it has)",
            )
        return url

    @property
    def connections(self) -> int:
        return len(self._sessions)

    async def _run(self, task_status: trio.TaskStatus[Server]) -> None:
        try:
            with self._cancel_scope:
                # Its own: a failure to start (a port in use) leaves nursery.start(serve)
                # as itself, as from trio.serve_tcp, not in a group of one.
                async with open_own_nursery() as nursery:
                    # The engine's start fails inside its own nurseries (and coredis's): its
                    # error is one, not the groups of one those wrapped it in.
                    with unwrap_single_exception():
                        await nursery.start(self.state.engine.run)
                    await self._start_listeners(nursery)
                    # Once listening: a host it cannot listen on (a typo) got this warning
                    # first, as if it listened there, and then the error that it could not.
                    self._warn_if_open_to_all()
                    nursery.start_soon(self._housekeeping)
                    nursery.start_soon(self.state.watchdog.run, name="trio_stream watchdog")
                    freeze_startup_objects()
                    task_status.started(self)
        finally:
            self._stopped.set()

    def _warn_if_open_to_all(self) -> None:
        config = self.config
        if config.host not in LOOPBACK_HOSTS and config.token is None:
            log.warning(
                "!!! trio_stream is listening on %s WITHOUT a token: anyone who can reach this "
                "address can read and write every public channel. Set a token (--token, "
                "$TRIO_STREAM_TOKEN or ServerConfig(token=...)). !!!",
                config.host,
            )
        for name, token in (("token", config.token), ("admin token", config.admin_token)):
            if (short := short_token_warning(name, token)) is not None:
                log.warning("%s", short)

    async def _start_listeners(self, nursery: trio.Nursery) -> None:
        config = self.config
        if config.tcp_port is not None:
            try:
                listeners = await trio.open_tcp_listeners(config.tcp_port, host=config.host)
            except OSError as exc:  # "Address already in use": say which one
                exc.add_note(_cannot_listen(exc, config.host, "TCP", config.tcp_port))
                raise
            port = listeners[0].socket.getsockname()[1]
            scheme = "tcps" if config.ssl_context else "tcp"
            self._urls["tcp"] = f"{scheme}://{_url_host(config.host)}:{port}"
            nursery.start_soon(self._accept, listeners, nursery)
            log.info("listening on %s", self._urls["tcp"])
        if config.http_port is not None:
            from .http import start_http

            try:
                self._urls["http"], self._urls["ws"] = await start_http(self, nursery)
            except OSError as exc:
                exc.add_note(_cannot_listen(exc, config.host, "HTTP", config.http_port))
                raise
            log.info("dashboard on %s, WebSocket on %s", self._urls["http"], self._urls["ws"])

    async def _accept(self, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
        # Connections run in the server's nursery, not under the accept scope: aclose()
        # cancels accepting, and the open connections must outlive that to say goodbye.
        with self.accept_scope():
            await trio.serve_listeners(self._handle_tcp, listeners, handler_nursery=nursery)

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        transport_stream: trio.abc.Stream = stream
        if self.config.ssl_context is not None:
            transport_stream = trio.SSLStream(stream, self.config.ssl_context, server_side=True)
        address = peer_address(stream)
        refusal = self.admission.admit(address, "tcp")
        if refusal is not None:
            await _refuse_connection(transport_stream, refusal)
            return
        try:
            transport = StreamTransport(transport_stream, self.state.limits.max_frame_bytes)
            await self.run_session(Session(self.state, transport))
        finally:
            self.admission.release(address, "tcp")

    async def run_session(self, session: Session) -> None:
        """Run one connection to its end (used by every transport)."""
        if self._closing:
            await session.transport.aclose()
            return
        self._sessions.add(session)
        self._no_sessions = trio.Event()
        self.freezer.connection_opened(len(self._sessions))
        try:
            await session.run()
        except Exception:  # a bug must cost one connection, never the server
            log.exception("connection of %r failed", session.name)
        finally:
            self._sessions.discard(session)
            if not self._sessions:
                self._no_sessions.set()

    def _wake_housekeeping(self) -> None:
        self._housekeeping_wake.set()

    def _deadline_added(self, channel: Channel) -> None:
        """A channel was created, or given a lifetime: housekeeping wakes only if that
        lifetime ends before its next wake (not for every create: with 12,000 channels that
        was a walk over all of them per create)."""
        expires_at = channel.expires_at
        if expires_at is not None and expires_at < self._housekeeping_deadline:
            self._housekeeping_wake.set()

    async def _housekeeping(self) -> None:
        """Rates and $stats once per interval; temporary channels end on time."""
        state = self.state
        interval = self.config.stats_interval_s
        next_stats = trio.current_time() + interval
        while True:
            now = trio.current_time()
            if now >= next_stats:
                state.update_rates()
                for _ in state.broker.rate_steps():  # each channel's, a step at a time
                    await trio.lowlevel.checkpoint()
                state.publish_stats()
                self.admission.refusals.flush(now)  # a count left from the last minute
                next_stats = now + interval
            # The temporary channels whose lifetime is over (the broker keeps their deadlines
            # in order: no walk over every channel).
            deadline = min(next_stats, state.resume.expire(now), state.broker.expire(now))
            self._housekeeping_wake = trio.Event()
            self._housekeeping_deadline = deadline
            with trio.move_on_at(deadline):
                await self._housekeeping_wake.wait()

    async def aclose(self) -> None:
        """Graceful shutdown: stop accepting, tell every client, let buffers drain, close."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
        self.state.closing = True
        for scope in self._accept_scopes:
            scope.cancel()
        for session in list(self._sessions):
            session.close("the server is shutting down", drain=True)
        try:
            with trio.move_on_after(self.config.shutdown_grace_s + 1.0):
                await self._no_sessions.wait()
        finally:
            # Also when this close is cancelled in the grace (a trio resource's close then
            # closes forcefully): it stopped nothing, and a second aclose() waited for good.
            self._cancel_scope.cancel()
        await self._stopped.wait()


async def _refuse_connection(stream: trio.abc.Stream, reason: str) -> None:
    """Tell a connection over a limit why (an ``error`` frame, as a refused hello gets), close."""
    # (Said in the log by the admission's RefusalLog.)
    error = Error(id=None, type=LimitExceeded.__name__, message=reason)
    with trio.move_on_after(REFUSAL_FLUSH_S):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(control_frame(error))
    await trio.aclose_forcefully(stream)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(
    config: ServerConfig | None = None,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a server until cancelled or ``server.aclose()``.

    Use as ``server = await nursery.start(serve, ServerConfig(...))``, like trio.serve_tcp.
    ``await server.aclose()`` shuts it down gracefully (a goodbye to every client, readers
    given ``shutdown_grace_s`` to take what is buffered); a cancel just closes every
    connection, as a crash would.
    """
    server = Server(config or ServerConfig())
    await server._run(task_status)


@async_context(
    'open_server() is entered with "async with ts.open_server(config) as server:" (or, in '
    "a nursery of your own: server = await nursery.start(ts.serve, config))"
)
async def open_server(config: ServerConfig | None = None) -> AsyncIterator[Server]:
    """``async with open_server(config) as server:`` runs a server for the block's duration."""
    async with open_own_nursery() as nursery:
        server: Server = await nursery.start(serve, config)
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await server.aclose()


def _cannot_listen(exc: OSError, host: str, kind: str, port: int) -> str:
    """The note on a failed bind: the OS error names neither the address nor the way out."""
    option = f"{kind.lower()}_port"
    text = f"trio_stream: cannot listen on {host} {kind} port {port} ({option})"
    if exc.errno == errno.EADDRINUSE:
        # Not only a server: a port nobody listens on may be the local end of outgoing
        # connections (TIME-WAIT ones too), which the CLI tells apart (cli/serve.py).
        text += (
            ": another process holds it (another server, the demo perhaps: stop it; or, if "
            "none listens there, connections whose local end it is, closed ones for up to a "
            f"minute in TIME-WAIT); choose another {option} (0 takes any free port)"
        )
    return text
