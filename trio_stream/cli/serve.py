"""``serve`` and ``demo``: run a server (and demo writers) until SIGINT, SIGTERM or SIGHUP."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Final

import trio

import trio_stream as ts

from .._server.engine import default_node_name, safe_url
from .._util import unwrap_single_exception
from ._demo import DEMO_CHANNELS, demo_channel_names, demo_writer_name, run_demo_writers
from ._options import HelpFormatter, Subparsers, add_log_level
from ._run import SAME_STOP_S, CliError, UsageError, typed_command
from ._server_options import add_server_options, server_config

SERVE_EPILOG = """\
examples:
  trio-stream serve                                  # loopback, TCP 9870, dashboard 9871
  trio-stream serve --host 0.0.0.0 --token q7Hx2mVt9RcL4wNz8KpB  # reachable from the network
  trio-stream serve --config server.toml --tcp-port 0
  trio-stream serve --http-port off --tls-cert cert.pem --tls-key key.pem

A TOML file takes the same settings as the flags of the "server" group above, named like
them (or like ServerConfig's fields): host = "0.0.0.0", tcp_port = 9870, http_port = false,
max_frame_bytes = "64MiB", allowed_origins = ["https://lab.example"], tls_cert = "cert.pem"
(relative to the file). Not --log-level: give that one on the command line.

Ctrl-C, SIGTERM or SIGHUP (its terminal closed) stop it gracefully: clients are told, and
readers get up to --shutdown-grace seconds to take what is buffered. SIGTERM or SIGHUP again
during that drain is ignored (said on stderr); Ctrl-C again interrupts it (exit 130).
"""


DEMO_EPILOG = """\
examples:
  trio-stream demo                                 # TCP 9870, dashboard and WebSocket 9871
  trio-stream demo --prefix lab                    # channels lab/sine, lab/image, lab/counter
  trio-stream demo --tcp-port 0 --http-port 0      # free ports, beside another server
"""


def register(subparsers: Subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run a server",
        description="Run a trio_stream server until Ctrl-C, "
        "SIGTERM or SIGHUP, then shut down gracefully (clients are told, buffers drain).",
        epilog=SERVE_EPILOG,
        formatter_class=HelpFormatter,
    )
    add_log_level(serve, default=None)
    add_server_options(serve)
    serve.set_defaults(run=run_serve)

    demo = subparsers.add_parser(
        "demo",
        help="run a server with demo channels",
        description="Run a server with demo writers in the same process: "
        + ", ".join(f"PREFIX/{name} ({rate:g} Hz)" for name, rate, _ in DEMO_CHANNELS)
        + ". The writers only work while a channel has readers. Open the dashboard URL it "
        "prints, or tap a channel with `trio-stream sub URL demo/counter`.",
        epilog=DEMO_EPILOG,
        formatter_class=HelpFormatter,
    )
    add_log_level(demo, default=None)
    demo.add_argument(
        "--prefix", type=demo_prefix, default="demo", help="channel name prefix (default: demo)"
    )
    add_server_options(demo)
    demo.set_defaults(run=run_demo)


def demo_prefix(text: str) -> str:
    """--prefix: the start of the demo's channel names and of its writer's client name.

    Checked before the server starts: '$x' failed after "server is running" ('$' names are
    the server's), '' made channels named '/sine', and 'a b' printed commands that do not
    work when copied."""
    if not text or text.startswith("$") or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a name without spaces that does not start with '$' (e.g. lab1)"
        )
    return text


# Hosts that mean "every interface": no client can use them in a URL from another machine.
WILDCARD_HOSTS: Final = ("0.0.0.0", "::", "")


def _print_urls(server: ts.Server) -> None:
    print(f'trio_stream {ts.__version__}: server "{server.config.name}" is running')
    wildcard = server.config.host in WILDCARD_HOSTS
    urls = server.urls
    for label, url in (
        ("TCP", urls.get("tcp")),
        ("WebSocket", urls.get("ws")),
        ("dashboard", urls.get("http")),
    ):
        if url is not None:
            if wildcard:  # a URL this machine's browser and clients can use as printed
                url = url.replace(f"//{server.config.host}:", "//127.0.0.1:", 1)
                url = url.replace("//[::]:", "//127.0.0.1:", 1)
            print(f"  {label + ':':<11}{url}")
    if server.config.engine != "memory":
        # Which cluster and which node this is: two nodes' terminals look alike otherwise.
        # (The node name defaults as the engine's does: hostname-pid of this process.)
        print(f"  {'engine:':<11}{safe_url(server.config.engine)}")
        print(f"  {'node:':<11}{server.config.node_name or default_node_name()}")
    if wildcard:
        print(
            f"  (listening on every interface: from another machine, use this one's name, "
            f"{socket.gethostname()}, or its address instead of 127.0.0.1)"
        )


def _auth(config: ts.ServerConfig) -> str:
    """The banner's auth line: whether clients need a token, and admin actions."""
    text = (
        "token required"
        if config.token is not None
        else "none (anyone who can connect can read and write)"
    )
    if config.admin_token is not None:
        text += "; admin actions with the admin token"
    return text


def _endpoints(config: ts.ServerConfig) -> str:
    return f"{config.host} ({', '.join(f'{label} port {port}' for label, port in _ports(config))})"


def _ports(config: ts.ServerConfig) -> list[tuple[str, int]]:
    """The endpoints' (label, port), switched-off ones left out."""
    return [
        (label, port)
        for label, port in (("TCP", config.tcp_port), ("HTTP", config.http_port))
        if port is not None
    ]


def _in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` now fails with "address in use", as the server's own
    bind did (SO_REUSEADDR as trio's listeners set it: a port in TIME_WAIT is free)."""
    if port == 0:
        return False  # any free port: never the busy one
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _address_in_use(config: ts.ServerConfig) -> str:
    """The reason for "address in use": which port is taken, found by trying each again
    (the OS error does not say), by what, and what to do about it."""
    busy = [(label, port) for label, port in _ports(config) if _in_use(config.host, port)]
    # A port nobody listens on is held by connections' local ends (the system hands its
    # ephemeral ports to outgoing connections, and a closed one's stays in TIME-WAIT for up
    # to a minute): "another server runs there" sent a user looking for a server that was
    # not there.
    ends = [(label, port) for label, port in busy if _listened(config.host, port) is False]
    served = [held for held in busy if held not in ends]
    parts = []
    if served or not busy:
        if served:
            held = " and ".join(f"{label} port {port}" for label, port in served)
            advice = f"it holds {held}; stop it, or pick {_pick(served)}"
        else:  # freed since, or not ours to probe: only what is known
            advice = "stop it, or pick other ports with --tcp-port/--http-port"
        parts.append(f"another server, the demo perhaps, runs there: {advice}")
    if ends:
        parts.append(_held_by_connections(ends, _ephemeral_ports()))
    return f"Address already in use ({'; '.join(parts)}; 0 takes any free one)"


def _pick(ports: list[tuple[str, int]], where: str = "") -> str:
    """``another port with --tcp-port`` (``where``: said after "port")."""
    flags = "/".join(f"--{label.lower()}-port" for label, _ in ports)
    return f"another port{where} with {flags}" if len(ports) == 1 else f"others{where} with {flags}"


def _held_by_connections(ends: list[tuple[str, int]], ephemeral: tuple[int, int] | None) -> str:
    """What to say of ports in use that no server listens on (``ephemeral``: the range the
    system gives outgoing connections, if known)."""
    held = " and ".join(f"{label} port {port}" for label, port in ends)
    it = "it is" if len(ends) == 1 else "they are"
    text = (
        f"no server listens on {held}: {it} the local end of other programs' connections "
        "(open ones, or closed ones in TIME-WAIT for up to a minute)"
    )
    low, high = ephemeral or (0, -1)
    if any(low <= port <= high for _, port in ends):
        return (
            f"{text}, in the range the system gives such ends ({low}-{high}, "
            f"{EPHEMERAL_RANGE_FILE}): pick {_pick(ends, ' outside it')}"
        )
    return f"{text}; wait for them to close, or pick {_pick(ends)}"


# Where Linux says which local ports it gives outgoing connections ("32768\t60999").
EPHEMERAL_RANGE_FILE: Final = "/proc/sys/net/ipv4/ip_local_port_range"
LISTEN_PROBE_TIMEOUT_S: Final = 1.0  # a connect to our own host: refused or taken at once


# Linux's lists of the TCP sockets of this network namespace, every process's.
SOCKET_LISTS: Final = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_LISTEN_STATE: Final = "0A"  # the "st" column of a listening socket there


def _listed_as_listening(port: int) -> bool:
    """Whether the system's socket lists (Linux) show a socket listening on ``port`` on any
    address (one on another address than the probe's holds the port too); False if they
    show none or cannot be read."""
    suffix = f":{port:04X}"
    for path in SOCKET_LISTS:
        try:
            with open(path, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except (OSError, ValueError):
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[1].endswith(suffix) and fields[3] == TCP_LISTEN_STATE:
                return True
    return False


def _ephemeral_ports() -> tuple[int, int] | None:
    """The system's range of local ports for outgoing connections (None: not known)."""
    try:
        with open(EPHEMERAL_RANGE_FILE, encoding="ascii") as f:
            low, high = (int(word) for word in f.read().split())
    except (OSError, ValueError):
        return None
    return low, high


def _listened(host: str, port: int) -> bool | None:
    """Whether a server listens on ``host:port`` (on loopback for a wildcard host): a
    connect that is refused says no one does, unless the system's list of sockets shows
    one on another of its addresses. None: not known (it timed out, or failed otherwise)."""
    if _listed_as_listening(port):
        return True
    if host in ("", "0.0.0.0"):
        hosts = ["127.0.0.1"]
    elif host == "::":
        hosts = ["::1", "127.0.0.1"]  # a dual-stack wildcard: either family's listener
    else:
        hosts = [host]
    known: bool | None = False
    for address in hosts:
        try:
            infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        except OSError:
            return None
        for family, kind, proto, _, target in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.settimeout(LISTEN_PROBE_TIMEOUT_S)
                try:
                    probe.connect(target)
                except ConnectionRefusedError:
                    continue
                except OSError:
                    known = None
                    continue
                return True
    return known


async def _start_server(nursery: trio.Nursery, config: ts.ServerConfig) -> ts.Server:
    """Start the server; a port in use or an address not ours is one line that names them.

    Raises:
        CliError: the server could not bind its endpoints.
        UsageError: its settings need a package that is not installed (the redis extra).
    """
    try:
        with unwrap_single_exception():
            server: ts.Server = await nursery.start(ts.serve, config)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            # In a thread: the probe resolves the host and binds, both blocking calls.
            reason = await trio.to_thread.run_sync(_address_in_use, config)
        else:
            reason = exc.strerror or str(exc)
        raise CliError(f"cannot listen on {_endpoints(config)}: {reason}") from None
    except ValueError as exc:
        if not isinstance(exc.__cause__, ImportError):
            raise
        # An optional package its settings need (coredis for a Redis engine): the server's
        # message says what to install, and a traceback through the server's start would
        # only hide it.
        raise UsageError(str(exc)) from None
    return server


async def _run_server(config: ts.ServerConfig, prefix: str | None) -> None:
    async with trio.open_nursery() as nursery:
        server = await _start_server(nursery, config)
        client_url = server.urls.get("tcp") or server.urls.get("ws")
        running = trio.CancelScope()
        # Around the shutdown too: a SIGTERM during the drain killed the process (status
        # -15, the drain cut short, no "stopped").
        async with _stop_on_signals(running, config.shutdown_grace_s):
            with running:
                # Printed once the signal handlers are in place: whoever waits for these lines
                # (a person, a script, a test) may press Ctrl-C right after them.
                _print_urls(server)
                # Whether it asks for a token (never the token): a server started without one
                # by mistake (an empty $TRIO_STREAM_TOKEN was taken as none) did not say so.
                print(f"  {'auth:':<11}{_auth(config)}")
                if prefix is not None and client_url is not None:
                    print(f"  channels:  {', '.join(demo_channel_names(prefix))}")
                    print(f"try: {typed_command()} sub {client_url} {prefix}/counter --count 5")
                print("Press Ctrl-C to stop.", flush=True)
                if prefix is not None and client_url is not None:
                    tls = config.ssl_context is not None
                    await run_demo_writers(client_url, prefix, token=config.token, tls=tls)
                await trio.sleep_forever()
            clients = len(server.state.sessions)
            if prefix is not None and demo_writer_name(prefix) in server.state.by_name:
                clients -= 1  # the demo's own writer, this process's (it said "1 client")
            _say(
                f"stopping: telling {clients} client{'s' * (clients != 1)}, and letting "
                f"buffers drain for up to {config.shutdown_grace_s:g} s..."
            )
            await server.aclose()
            _say("stopped")


def _say(text: str) -> None:
    """A line on stderr about the stop, which goes on if stderr cannot take it: after a
    SIGHUP, its terminal may be gone (a write then fails with EIO)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # (ValueError: closed)
        print(text, file=sys.stderr, flush=True)


# What ends a server command: besides Ctrl-C, SIGTERM (a service manager, kill) and SIGHUP
# (its terminal closed: it exited 129, its readers saw a reset instead of a goodbye).
_TERMINATIONS: Final = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Stop:
    """The first SIGINT, SIGTERM or SIGHUP cancels ``running``: the graceful shutdown
    follows it, all of which the signals' tasks watch over (``_stop_on_signals``)."""

    def __init__(self, running: trio.CancelScope, grace_s: float) -> None:
        self.running = running
        self.grace_s = grace_s
        self.at: float | None = None  # when the stop began (trio's clock)
        self.began = trio.Event()

    def stop(self) -> None:
        if self.at is None:
            self.at = trio.current_time()
            self.running.cancel()
            self.began.set()

    def echo(self) -> bool:
        """A signal within SAME_STOP_S of the stop's: the same stop (`timeout -s INT`
        signals the command and then its process group)."""
        return self.at is not None and trio.current_time() - self.at < SAME_STOP_S


@contextlib.asynccontextmanager
async def _stop_on_signals(running: trio.CancelScope, grace_s: float) -> AsyncIterator[None]:
    """For the block (the run and its shutdown): the first SIGINT, SIGTERM or SIGHUP cancels
    ``running``; a later SIGTERM or SIGHUP is ignored, with a line, until the block ends (the
    drain ends by itself, within its grace); a later Ctrl-C interrupts it (exit 130: the
    handler given back to ``_run``'s).

    Each signal has one receiver (SIGINT's own ends early), so receivers never close out of
    the order they opened in: closing one gives back the handler it replaced.
    """
    stop = _Stop(running, grace_s)
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(_on_terminations, stop)
            await nursery.start(_on_interrupts, stop)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


async def _on_terminations(stop: _Stop, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(*_TERMINATIONS) as signals:
        task_status.started()
        async for signum in signals:
            if stop.at is None:
                stop.stop()
            elif not stop.echo():
                _say(
                    f"{signal.Signals(signum).name} again during the shutdown: ignored (the "
                    f"drain ends within its {stop.grace_s:g} s grace; Ctrl-C interrupts it)"
                )


async def _on_interrupts(stop: _Stop, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async with trio.open_nursery() as nursery:
            # The stop may begin with another signal: this one's watch ends then too.
            async def end_with_the_stop() -> None:
                await stop.began.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(end_with_the_stop)
            async for _ in signals:
                stop.stop()
                break
            nursery.cancel_scope.cancel()
        assert stop.at is not None
        with trio.move_on_at(stop.at + SAME_STOP_S):
            async for _ in signals:  # the same stop's echo
                pass
    # Leaving the receiver gives SIGINT back to _run's handler: a Ctrl-C now interrupts a
    # shutdown that hangs (exit 130) instead of being swallowed.


class _OffsetTimes(logging.Formatter):
    """Log times with their UTC offset (``2026-12-06 11:14:45,123+0100``): a server's log
    read next to another machine's, or across a change of daylight saving, said no zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        local = self.converter(record.created)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", local)
        return f"{stamp},{int(record.msecs):03d}{time.strftime('%z', local)}"


def _log_times_with_offset() -> None:
    """The CLI's log lines (``configure_logging``: the root logger's handlers, their format
    starting with the time) get their UTC offset; handlers of another's making stay."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if type(formatter) is logging.Formatter and formatter.datefmt is None:
            fmt = formatter._fmt
            if fmt is not None and fmt.startswith("%(asctime)s"):
                handler.setFormatter(_OffsetTimes(fmt))


async def run_serve(args: argparse.Namespace) -> int:
    config = server_config(args)
    _log_times_with_offset()
    await _run_server(config, None)
    return 0


async def run_demo(args: argparse.Namespace) -> int:
    config = server_config(args)
    _log_times_with_offset()
    if config.tcp_port is None and config.http_port is None:
        raise UsageError("the demo needs an endpoint for its writers: do not switch both off")
    await _run_server(config, args.prefix)
    return 0
