"""The command line, run as subprocesses (``python -m trio_stream``) against real servers.

The servers mostly run in the test's own trio loop (the ``server`` fixture); the CLI is a
separate process, so the test awaits it (trio.run_process) while the loop serves it. Every
subprocess has a timeout and every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.metadata
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, cast

import cbor2
import numpy as np
import pytest
import trio
import trustme
from redis_server import RedisServer
from test_cluster import two_nodes

import trio_stream as ts
from trio_stream._client import WAIT_CHANNEL_WARN_S
from trio_stream._server.metrics import render_metrics
from trio_stream.cli import bridge as bridge_cli
from trio_stream.cli import build_parser, dumpfile, parse_command_line, pubsub
from trio_stream.cli import inspect as inspect_cli
from trio_stream.cli import serve as serve_cli
from trio_stream.cli._channels import marked_new_life
from trio_stream.cli._options import SIZE_UNITS, byte_size, subscription_kwargs
from trio_stream.cli._output import jsonable
from trio_stream.cli._run import CliError, UsageError
from trio_stream.cli._server_options import server_config
from trio_stream.cli._table import wrap
from trio_stream.cli.pubsub import _value
from trio_stream.cli.serve import _print_urls

CLI = [sys.executable, "-m", "trio_stream"]
COMMANDS = [
    "serve",
    "demo",
    "channels",
    "clients",
    "stats",
    "pub",
    "sub",
    "dump",
    "replay",
    "generate",
    "bridge",
    "call",
]
RUN_TIMEOUT_S = 20.0  # one command, start to end
WAIT_S = 10.0  # any one wait inside a test
# The subprocess must not inherit a token from the developer's shell.
# Without COLUMNS and LINES too: the commands' tables are as wide as their names off a
# terminal, whatever width the caller's environment says (pytest-xdist's workers say 80).
ENV = {k: v for k, v in os.environ.items() if k not in ("TRIO_STREAM_TOKEN", "COLUMNS", "LINES")}


async def cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run one command to its end and return what it printed and its exit code."""
    with trio.fail_after(RUN_TIMEOUT_S):
        return await trio.run_process(
            [*CLI, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**ENV, **(env or {})},
        )


class Running:
    """A command running in the background, with its stdout readable line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    async def connected(self) -> None:
        """Until it has a socket open: its imports are done (a Ctrl-C in the middle of them,
        on a loaded machine that took seconds, is Python's traceback, not the command's)."""
        fds = f"/proc/{self.process.pid}/fd"

        def link(fd: str) -> str:
            try:
                return os.readlink(f"{fds}/{fd}")
            except OSError:  # closed since the listing
                return ""

        def has_a_socket() -> bool:  # (polled: /proc tells no one when a socket opens)
            return any(link(fd).startswith("socket:") for fd in os.listdir(fds))

        with trio.fail_after(WAIT_S):
            while not has_a_socket():  # noqa: ASYNC110
                await trio.sleep(0.02)

    async def readline(self) -> str:
        assert self.process.stdout is not None
        with trio.fail_after(WAIT_S):
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    raise EOFError(f"no more output; so far: {bytes(self._buffer)!r}")
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.decode()

    async def read_until(self, marker: str) -> list[str]:
        lines: list[str] = []
        with trio.fail_after(WAIT_S):
            while not lines or marker not in lines[-1]:
                lines.append(await self.readline())
        return lines

    async def finish(self) -> tuple[int, str, str]:
        """Wait for the exit: (exit code, rest of stdout, stderr)."""
        assert self.process.stdout is not None and self.process.stderr is not None
        out, err = bytearray(self._buffer), bytearray()

        async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
            while chunk := await stream.receive_some():
                into += chunk

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, self.process.stdout, out)
                nursery.start_soon(drain, self.process.stderr, err)
            code = await self.process.wait()
        return code, out.decode(), err.decode()


@asynccontextmanager
async def running(
    *args: str, env: dict[str, str] | None = None, stdin: int | None = None
) -> AsyncIterator[Running]:
    process = await trio.lowlevel.open_process(
        [*CLI, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**ENV, **(env or {})},
    )
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(WAIT_S):
            await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def wait_for_channel(client: ts.Client, channel: str, readers: int = 0) -> None:
    """Poll until ``channel`` exists with at least ``readers`` readers (a CLI does its part)."""
    with trio.fail_after(WAIT_S):
        while True:
            infos = {c.name: c for c in await client.channels()}
            if channel in infos and infos[channel].readers >= readers:
                return
            await trio.sleep(0.05)


async def wait_for_readers_gone(client: ts.Client, channel: str) -> None:
    """Poll until the server counts no reader of ``channel`` (one just left)."""
    with trio.fail_after(WAIT_S):
        while True:
            infos = {c.name: c for c in await client.channels()}
            if not infos[channel].readers:
                return
            await trio.sleep(0.05)


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- parsing, help and usage errors ------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: trio-stream {command}" in out
    assert "examples" in out and f"\n  trio-stream {command} " in out  # test_readme runs them
    assert "ServerConfig." not in out  # every server option says what it does


async def test_main_help_lists_every_command() -> None:
    result = await cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["sub", "tcp://127.0.0.1:1"],  # CHANNEL missing
        ["sub", "tcp://127.0.0.1:1", "ch", "--policy", "bogus"],
        ["sub", "tcp://127.0.0.1:1", "ch", "--every", "0"],
        ["serve", "--tcp-port", "seventy"],
        ["serve", "--max-frame-bytes", "12 parsecs"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2


async def test_a_bad_value_is_one_line_and_a_missing_argument_shows_the_usage() -> None:
    # A bad value came under the command's usage, 25 lines of it for serve (operator persona).
    result = await cli("sub", "tcp://127.0.0.1:1", "ch", "--size", "-3")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "trio-stream sub: error: argument --size: invalid positive integer value: '-3'"
    ]
    port = await cli("serve", "--tcp-port", "70000")
    assert (port.returncode, port.stderr.decode().splitlines()) == (
        2,
        [
            "trio-stream serve: error: argument --tcp-port: not a port: '70000': give 0-65535 "
            "(0: any free port) or off"
        ],
    )
    for form in (["sub", "tcp://127.0.0.1:1"], ["sub", "tcp://127.0.0.1:1", "c", "--count"]):
        wrong = await cli(*form)  # an argument missing, an option without its value
        assert wrong.returncode == 2
        stderr = wrong.stderr.decode()
        assert "usage: trio-stream sub" in stderr and "Traceback" not in stderr


def usage_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last line of what a command line that is a usage error prints (it exits 2)."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("shape", ["64x", "64xx64", "x64", ",64,", "8x-1", "1.5"])
def test_a_malformed_shape_is_a_usage_error_that_shows_the_form(
    shape: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An empty dimension was dropped: "64x" sent 64 values where 64x64 were meant.
    error = usage_error(["generate", "tcp://127.0.0.1:1", "c", f"--shape={shape}"], capsys)
    assert error.endswith(f"not a shape: {shape!r} (whole numbers joined by x, e.g. 1000 or 64x64)")


@pytest.mark.parametrize(
    ("shape", "dims"), [("1000", (1000,)), ("64x64", (64, 64)), ("2,3,4", (2, 3, 4))]
)
def test_a_shape_is_whole_numbers_joined_by_x(shape: str, dims: tuple[int, ...]) -> None:
    args = build_parser().parse_args(["generate", "tcp://127.0.0.1:1", "c", "--shape", shape])
    assert args.shape == dims


def test_a_channel_name_where_the_url_goes_is_named_as_such(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = usage_error(["sub", "demo/sine"], capsys)  # the URL left out
    assert "'demo/sine' is not a server URL: the URL comes first" in error


@pytest.mark.parametrize("url", ["tcp:/127.0.0.1:9870", "tcp:127.0.0.1:9870", "WS:/h:9871/ws"])
def test_a_scheme_without_its_slashes_is_named_a_malformed_url(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was told "the URL comes first", which it was (a new user's first hour).
    error = usage_error(["sub", url, "demo/counter"], capsys)
    assert error.endswith(
        f"argument URL: {url!r} is not a server URL: use tcp://host:port or ws://host:port/ws "
        "(tcps:// and wss:// for TLS)"
    )
    assert "comes first" not in error


@pytest.mark.parametrize("address", ["127.0.0.1:9870", "daq.lab:9870", "[::1]:9870"])
def test_an_address_without_its_scheme_is_told_the_scheme(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    error = usage_error(["sub", address, "demo/counter"], capsys)
    assert error.endswith(
        f"argument URL: {address!r} has no scheme: use tcp://{address} (or ws://host:port/ws "
        "on the server's HTTP port)"
    )


@pytest.mark.parametrize(
    ("address", "meant"),
    [
        ("http://127.0.0.1:9871/", ("ws://127.0.0.1:9871/ws", "tcp://")),
        ("https://daq.lab:443/", ("wss://daq.lab:443/ws", "tcps://")),
    ],
)
def test_the_dashboard_s_address_is_told_the_client_s(
    address: str, meant: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Not sure to be the dashboard's: the TCP port given as http:// was told its ws:// URL,
    # which then failed (trio persona).
    error = usage_error(["sub", address, "demo/counter"], capsys)
    ws, tcp = meant
    assert error.endswith(
        f"argument URL: {address!r} is a web address; a client connects to {ws} if that is "
        f"the server's HTTP port (the dashboard's), or to {tcp}host:port on its TCP port"
    )


@pytest.mark.parametrize("typo", ["--max-rte", "--max-rat", "--max-rate-hz"])
async def test_a_mistyped_option_is_the_command_s_usage_error_naming_the_option_meant(
    typo: str,
) -> None:
    # Not the main parser's error; and no abbreviations (`--max-rat` would break the day a
    # `--max-ratio` came along). One line: the command's 20 lines of usage above it hid the
    # option meant (an operator).
    result = await cli("sub", "tcp://127.0.0.1:1", "ch", typo, "2")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"trio-stream sub: error: unrecognized arguments: {typo} 2 (did you mean --max-rate?); "
        "see trio-stream sub --help"
    ]


async def test_an_unknown_option_with_nothing_close_shows_the_command_s_usage() -> None:
    result = await cli("sub", "tcp://127.0.0.1:1", "ch", "--bogus")
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "usage: trio-stream sub" in stderr and "usage: trio-stream [" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "trio-stream sub: error: unrecognized arguments: --bogus"
    )


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--engine", "bogus"], "--engine: engine 'bogus': give 'memory' or a Redis URL"),
        (["--idle-timeout", "-1"], "--idle-timeout: idle_timeout_s must be a positive number"),
        (["--tcp-port", "off", "--http-port", "off"], "both off: no client could connect"),
    ],
)
async def test_a_server_setting_it_cannot_run_with_is_one_line_before_it_starts(
    flags: list[str], error: str
) -> None:
    # Before, the engine came out as a 47-line exception group from the running server, and
    # a negative idle timeout started a server every client then refused to talk to.
    result = await cli("serve", "--tcp-port", "0", "--http-port", "0", *flags)
    assert result.returncode == 2
    (line,) = result.stderr.decode().strip().splitlines()
    assert line.startswith("trio-stream serve: error: ") and error in line, line


async def test_a_mistyped_option_before_the_command_names_the_option_meant() -> None:
    # argparse alone would take "debug" for the command: "invalid choice: 'debug'".
    result = await cli("--log", "debug", "channels", "tcp://127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1] == (
        "trio-stream: error: unrecognized arguments: --log (did you mean --log-level?)"
    )
    spelled_out = await cli("--log-level=info", "channels", "tcp://127.0.0.1:1")
    assert spelled_out.returncode == 1  # parsed: only the server is missing


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["sbu"], "sub"),
        (["chanels", "tcp://h:1"], "channels"),
        (["--log-level", "info", "stat"], "stats"),
        (["subscribe", "tcp://h:1", "AI"], "sub"),  # whole words: too far for difflib
        (["publish", "tcp://h:1", "AI", "1"], "pub"),
        (["list", "tcp://h:1"], "channels"),
    ],
)
def test_a_mistyped_command_names_the_command_meant(
    argv: list[str], meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(build_parser(), argv)
    assert exit_info.value.code == 2
    typo = next(word for word in argv if not word.startswith("-") and word != "info")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"trio-stream: error: argument COMMAND: invalid choice: {typo!r} (did you mean {meant}?)"
    )


def test_log_level_on_either_side_of_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["channels", "tcp://h:1"]).log_level == "warning"
    assert parser.parse_args(["--log-level", "info", "channels", "tcp://h:1"]).log_level == "info"
    assert parser.parse_args(["channels", "tcp://h:1", "--log-level", "DEBUG"]).log_level == "debug"


def test_options_may_come_between_positionals() -> None:
    args = build_parser().parse_args(["pub", "tcp://h:1", "ch", "--create", "--keep", "42"])
    assert (args.channel, args.value, args.create, args.keep) == ("ch", "42", True, True)


# -- errors ------------------------------------------------------------------------------------
async def test_unknown_channel_is_one_line_and_exit_1(server: ts.Server) -> None:
    assert server.tcp_url is not None
    result = await cli("sub", server.tcp_url, "no/such/channel")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "no/such/channel" in lines[0] and lines[0].startswith("trio-stream sub: error:")


async def test_unreachable_server_is_one_line_and_exit_1() -> None:
    result = await cli("channels", "tcp://127.0.0.1:1")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "tcp://127.0.0.1:1: Connection refused (no server listens there" in lines[0]
    # ...and how a command started together with its server waits for it (the library's
    # own advice, open_client(..., wait_for_server=), is not what a shell user types).
    assert lines[0].endswith("waits for it with --wait-server SECONDS"), lines[0]


async def test_a_host_that_does_not_resolve_is_one_line_and_exit_1() -> None:
    # .invalid never resolves (RFC 6761); offline the resolver may answer "try again" rather
    # than "no such name": both are the one line that names the host, within cli()'s bound.
    result = await cli("sub", "tcp://nosuchhost.invalid:9870", "demo/sine")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "trio-stream sub: error: cannot connect to tcp://nosuchhost.invalid:9870: "
        "cannot resolve host 'nosuchhost.invalid' "
    )


# -- serve and demo ----------------------------------------------------------------------------
async def test_serve_prints_urls_and_stops_on_sigint() -> None:
    async with running("serve", "--tcp-port", "0", "--http-port", "0", "--name", "cli-test") as p:
        lines = await p.read_until("Ctrl-C")
        urls = {line.split()[0].rstrip(":"): line.split()[-1] for line in lines[1:-1]}
        assert urls["TCP"].startswith("tcp://127.0.0.1:")
        assert urls["WebSocket"].startswith("ws://127.0.0.1:")
        assert urls["dashboard"].startswith("http://127.0.0.1:")
        async with ts.open_client(urls["TCP"]) as client:
            assert client.server  # it answers
        p.process.send_signal(signal.SIGINT)
        code, _, stderr = await p.finish()
    assert code == 0
    assert "Traceback" not in stderr and "Error" not in stderr


def test_a_wildcard_host_prints_urls_this_machine_can_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The URLs of a server bound to every interface (printed without starting one: tests
    # listen on loopback only).
    listening = SimpleNamespace(
        config=ts.ServerConfig(host="0.0.0.0"),
        urls={
            "tcp": "tcp://0.0.0.0:9870",
            "ws": "ws://0.0.0.0:9871/ws",
            "http": "http://0.0.0.0:9871/",
        },
    )
    _print_urls(cast(ts.Server, listening))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines[1:4]] == [
        "tcp://127.0.0.1:9870",
        "ws://127.0.0.1:9871/ws",
        "http://127.0.0.1:9871/",
    ]
    assert "from another machine, use this one's name" in lines[4]


def test_a_cluster_node_s_banner_names_the_engine_and_the_node(
    capsys: pytest.CaptureFixture[str],
) -> None:
    listening = SimpleNamespace(
        config=ts.ServerConfig(
            host="127.0.0.1", engine="redis://:s3cret@redis.lab:6379/0", node_name="node-a"
        ),
        urls={"tcp": "tcp://127.0.0.1:9870"},
    )
    _print_urls(cast(ts.Server, listening))
    out = capsys.readouterr().out
    assert out.splitlines()[2:] == [
        "  engine:    redis://redis.lab:6379/0",  # not its password
        "  node:      node-a",
    ]
    assert "s3cret" not in out
    _print_urls(
        cast(ts.Server, SimpleNamespace(**{**vars(listening), "config": ts.ServerConfig()}))
    )
    assert "engine" not in capsys.readouterr().out  # one node: as before


def test_clients_and_stats_name_the_node_only_with_several() -> None:
    import io

    from rich.console import Console

    from trio_stream.cli.inspect import clients_table, plain_lines, stats_text

    def shown(renderable: Any) -> str:
        console = Console(file=io.StringIO(), width=200)
        console.print(renderable)
        return cast(io.StringIO, console.file).getvalue()

    here, there = (
        ts.ClientInfo(id=1, name="cam", node="node-a"),
        ts.ClientInfo(id=1, name="ui", node="node-b"),
    )
    table = shown(clients_table([here, there]))
    assert table.splitlines()[1].split()[:3] == ["id", "name", "node"]
    assert "node-b" in table
    assert "node" not in shown(clients_table([ts.ClientInfo(id=1, name="cam")]))
    stats = ts.ServerStats(connections=5, nodes=2, node="node-a", node_connections=3)
    assert "node node-a (one of 2), holding 3 of the 5 connections" in shown(stats_text("s", stats))
    assert plain_lines("s", stats, [])[0].endswith(" node=node-a nodes=2")
    one = ts.ServerStats(connections=5)
    assert "node" not in shown(stats_text("s", one)) and "node" not in plain_lines("s", one, [])[0]


async def test_serve_on_a_port_in_use_names_it_in_one_line(server: ts.Server) -> None:
    assert server.tcp_url is not None
    port = server.tcp_url.rsplit(":", 1)[1]
    result = await cli("serve", "--tcp-port", port, "--http-port", "off")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1 (TCP port {port}): Address already in use" in lines[0]
    assert (
        f"runs there: it holds TCP port {port}; stop it, or pick another port with --tcp-port; "
        "0 takes any free one)" in lines[0]
    )


async def test_serve_on_a_port_held_by_connections_says_no_server_listens_there() -> None:
    # A port in the kernel's ephemeral range, the local end of other programs' connections
    # (open, or closed in TIME-WAIT): it said "another server, the demo perhaps, runs there:
    # it holds TCP port 47210", and the user looked for a server that was not there.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with (
            socket.create_connection(listener.getsockname()) as outgoing,
            listener.accept()[0],
        ):
            port = outgoing.getsockname()[1]  # an ephemeral port, nobody listening on it
            result = await cli("serve", "--tcp-port", str(port), "--http-port", "off")
    assert result.returncode == 1
    (line,) = result.stderr.decode().strip().splitlines()
    assert f"cannot listen on 127.0.0.1 (TCP port {port}): Address already in use (" in line
    assert "another server" not in line and "runs there" not in line, line
    said = (
        f"no server listens on TCP port {port}: it is the local end of other programs' "
        "connections (open ones, or closed ones in TIME-WAIT for up to a minute)"
    )
    assert said in line
    try:
        ephemeral = await trio.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    except OSError:  # not Linux: no range to name
        tail = "wait for them to close, or pick another port with --tcp-port; 0 takes any free one)"
        assert line.endswith(tail), line
        return
    low, high = map(int, ephemeral.split())
    assert low <= port <= high  # (the kernel picked it from there)
    assert line.endswith(
        f", in the range the system gives such ends ({low}-{high}, "
        "/proc/sys/net/ipv4/ip_local_port_range): pick another port outside it with "
        "--tcp-port; 0 takes any free one)"
    ), line


def test_a_port_in_use_outside_the_ephemeral_range_is_waited_for_or_left() -> None:
    text = serve_cli._held_by_connections([("HTTP", 9871)], (32768, 60999))
    assert text.endswith("; wait for them to close, or pick another port with --http-port")
    both = serve_cli._held_by_connections([("TCP", 40000), ("HTTP", 40001)], (32768, 60999))
    assert both.startswith("no server listens on TCP port 40000 and HTTP port 40001: they are")
    assert both.endswith("pick others outside it with --tcp-port/--http-port")


async def test_serve_with_only_its_http_port_in_use_says_that_one_is(server: ts.Server) -> None:
    # It named both ports ("TCP port 19872, HTTP port 19871") without saying which was busy.
    assert server.http_url is not None
    port = server.http_url.rsplit(":", 1)[1].rstrip("/")
    result = await cli("serve", "--tcp-port", "0", "--http-port", port)
    assert result.returncode == 1
    (line,) = result.stderr.decode().strip().splitlines()
    assert line.startswith("trio-stream serve: error: cannot listen on 127.0.0.1 (TCP port 0, ")
    assert line.endswith(
        f"): Address already in use (another server, the demo perhaps, runs there: it holds "
        f"HTTP port {port}; stop it, or pick another port with --http-port; 0 takes any free one)"
    )


async def test_a_redis_engine_without_the_redis_extra_is_one_line() -> None:
    # coredis made unimportable in the child (a None in sys.modules), as if not installed:
    # it was a 56-line traceback through the server's start, ending in this message.
    without_coredis = (
        "import sys; sys.modules['coredis'] = None; "
        "from trio_stream.cli import main; sys.exit(main())"
    )
    argv = ["serve", "--engine", "redis://127.0.0.1:1/0", "--tcp-port", "0", "--http-port", "0"]
    with trio.fail_after(RUN_TIMEOUT_S):
        result = await trio.run_process(
            [sys.executable, "-c", without_coredis, *argv],
            capture_stdout=True, capture_stderr=True, check=False, env=ENV,
        )  # fmt: skip
    assert result.returncode == 2  # as the other settings it cannot run with
    assert result.stderr.decode().strip().splitlines() == [
        "trio-stream serve: error: --engine: engine=redis:// needs the redis extra: pip install "
        "'trio_stream[redis]' (in a checkout: pip install -e '.[redis]')"
    ]


@pytest.mark.parametrize("command", ["serve", "demo"])
async def test_host_help_says_what_a_host_without_a_token_does(command: str) -> None:
    # It said "a non-loopback one needs --token"; the server runs without one, warning.
    result = await cli(command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.decode().split())
    assert "needs --token" not in text
    assert "a non-loopback one without --token warns loudly that whoever reaches it" in text


async def test_demo_writes_its_channels_and_stops_on_sigterm() -> None:
    async with running("demo", "--tcp-port", "0", "--http-port", "off") as demo:
        lines = await demo.read_until("Ctrl-C")
        tcp_url = next(line.split()[-1] for line in lines if line.strip().startswith("TCP:"))
        result = await cli("sub", tcp_url, "demo/sine", "--count", "2", "--wait-channel")
        assert result.returncode == 0, result.stderr
        messages = json_lines(result.stdout.decode())
        assert [m["data"]["shape"] for m in messages] == [[1000], [1000]]
        assert messages[0]["data"]["dtype"] == "float64"
        async with ts.open_client(tcp_url) as client:
            names = {c.name for c in await client.channels()}
            assert {"demo/sine", "demo/image", "demo/counter"} <= names
            async with client.subscribe("demo/image") as sub:
                with trio.fail_after(WAIT_S):
                    image = (await sub.receive()).data
            assert image.shape == (64, 64)
        demo.process.send_signal(signal.SIGTERM)
        code, _, stderr = await demo.finish()
    assert code == 0
    assert "Traceback" not in stderr
    # Says what the stop does, and that it is over (it said "stopping..." and no more).
    said = [line for line in stderr.splitlines() if "stop" in line]
    # Not counting its own writer (it said "telling 1 client" with nobody connected: a first
    # hour); the clients above have all left.
    assert said[-2].startswith("stopping: telling 0 clients, "), stderr
    assert said[-1] == "stopped", stderr


async def test_demo_suggests_a_command_that_works_as_typed(tmp_path: Path) -> None:
    # Right after the README's first command, trio-stream is .venv/bin/trio-stream and not on
    # PATH: the demo's "try:" line must be what the user can type.
    script = Path(sys.executable).parent / "trio-stream"
    env = {**ENV, "PATH": "/usr/bin:/bin"}
    process = await trio.lowlevel.open_process(
        [str(script), "demo", "--tcp-port", "0", "--http-port", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        lines = await Running(process).read_until("Ctrl-C")
        suggested = next(line for line in lines if line.startswith("try: "))[5:]
        assert suggested.startswith(f"{script} sub tcp://127.0.0.1:")
        with trio.fail_after(RUN_TIMEOUT_S):
            done = await trio.run_process(
                suggested.split(), capture_stdout=True, capture_stderr=True, env=env, check=False
            )
        assert done.returncode == 0, done.stderr
        assert len(json_lines(done.stdout.decode())) == 5
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(WAIT_S):
            await process.wait()
        if process.returncode is None:
            process.kill()


async def test_serve_with_tls_and_a_client_that_trusts_its_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_pem = tmp_path / "server.pem"  # key and certificate in one file
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    async with running("serve", "--tcp-port", "0", "--no-http", "--tls-cert", str(server_pem)) as p:
        lines = await p.read_until("Ctrl-C")
        url = next(line.split()[-1] for line in lines if line.strip().startswith("TCP:"))
        assert url.startswith("tcps://127.0.0.1:")
        trusted = await cli("channels", url, "--tls-ca", str(tmp_path / "ca.pem"))
        assert trusted.returncode == 0, trusted.stderr
        untrusted = await cli("channels", url)
        assert untrusted.returncode == 1
        said = untrusted.stderr.decode()  # the cause and the cure, not "lost"
        assert "the server's certificate was refused (unable to get local issuer" in said
        assert "--tls-ca FILE" in said
        assert len(untrusted.stderr.decode().strip().splitlines()) == 1
        p.process.send_signal(signal.SIGINT)
        code, _, stderr = await p.finish()
    assert code == 0, stderr


async def test_a_tls_certificate_without_its_key_points_at_tls_key(tmp_path: Path) -> None:
    # OpenSSL's "[SSL] PEM lib" alone did not say that the key was missing (TLS audit).
    cert = tmp_path / "cert.pem"
    trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(cert))
    result = await cli("serve", "--tcp-port", "0", "--no-http", "--tls-cert", str(cert))
    assert result.returncode == 2
    said = result.stderr.decode()
    assert f"cannot load the TLS certificate {cert}:" in said
    assert said.rstrip().endswith("(a key in a file of its own is given with --tls-key)")


@pytest.mark.parametrize(("ca", "said"), [("missing.pem", "No such file"), ("not.pem", "X509")])
async def test_a_tls_ca_file_that_cannot_serve_is_named_with_its_option(
    tmp_path: Path, ca: str, said: str
) -> None:
    # "error: [Errno 2] No such file or directory": which file, given where?
    (tmp_path / "not.pem").write_text("not a certificate\n")
    result = await cli("channels", "tcps://127.0.0.1:1", "--tls-ca", str(tmp_path / ca))
    assert result.returncode == 1
    error = result.stderr.decode().strip()
    assert error.startswith(f"trio-stream channels: error: --tls-ca {tmp_path / ca}: "), error
    assert said in error and len(error.splitlines()) == 1


async def test_token_from_the_environment(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, token="s3cret")
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    refused = await cli("channels", server.tcp_url)
    assert refused.returncode == 1 and "AuthError" in refused.stderr.decode()
    allowed = await cli("channels", server.tcp_url, env={"TRIO_STREAM_TOKEN": "s3cret"})
    assert allowed.returncode == 0, allowed.stderr
    await server.aclose()


async def test_wait_server_lets_a_command_start_before_its_server(nursery: trio.Nursery) -> None:
    # A command started with its server (one boot script) failed at once: connection refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    refused = await cli("channels", url)
    assert refused.returncode == 1 and "cannot connect" in refused.stderr.decode()
    async with running("channels", url, "--wait-server", "20") as early:
        assert early.process.stderr is not None
        said = b""
        with trio.fail_after(WAIT_S):
            while b"trying again for up to 20 s" not in said:  # it found no server
                chunk = await early.process.stderr.receive_some()
                assert chunk, f"it ended before it said it waits: {said!r}"
                said += chunk
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
        server: ts.Server = await nursery.start(ts.serve, config)
        code, stdout, stderr = await early.finish()
    assert code == 0, said + stderr.encode()
    assert "channels" in stdout
    assert b"no server answers yet" in said
    # Named as the command's own lines are, not "WARNING trio_stream._client: ..." (a raw
    # library logger's name among "trio-stream channels: ..." lines; operator persona).
    assert b" WARNING trio-stream channels: client " in said, said
    await server.aclose()


def test_server_config_from_toml_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text(
        'name = "lab"\ntcp_port = 0\nhttp-port = false\nmax_frame_bytes = "1MiB"\n'
        'idle-timeout = 30\nallowed_origins = ["https://lab.example"]\n'
    )
    args = build_parser().parse_args(
        [
            "serve",
            "--config",
            str(config_file),
            "--name",
            "flag-wins",
            "--max-buffered-bytes",
            "2M",
            "--no-tcp",
            "--http-port",
            "0",
        ]
    )
    config = server_config(args)
    assert config.name == "flag-wins"
    assert config.tcp_port is None and config.http_port == 0
    assert config.max_frame_bytes == 2**20 and config.max_buffered_bytes == 2 * 2**20
    assert config.idle_timeout_s == 30.0
    assert config.allowed_origins == ("https://lab.example",)


def test_a_config_file_takes_one_name_alone_as_server_config_does(tmp_path: Path) -> None:
    # ServerConfig(allowed_origins="https://lab.example") works; the file refused it.
    config_file = tmp_path / "server.toml"
    config_file.write_text('allowed_origins = "https://lab.example"\nallowed-hosts = []\n')
    config = server_config(build_parser().parse_args(["serve", "--config", str(config_file)]))
    assert config.allowed_origins == ("https://lab.example",) and config.allowed_hosts == ()
    config_file.write_text("allowed_origins = [1]\n")
    with pytest.raises(UsageError, match="takes a string or a list of strings"):
        server_config(build_parser().parse_args(["serve", "--config", str(config_file)]))


def test_every_server_config_field_is_a_flag_by_its_own_name_too() -> None:
    # "every ServerConfig setting is a flag": --idle-timeout-s was refused (the flag drops
    # the _s), so the field's own spelling is accepted beside the short one.
    args = build_parser().parse_args(
        [
            "serve",
            "--idle-timeout-s",
            "7",
            "--resume-grace-s",
            "3",
            "--allowed-origins",
            "https://lab.example",
        ]
    )
    config = server_config(args)
    assert config.idle_timeout_s == 7.0 and config.resume_grace_s == 3.0
    assert config.allowed_origins == ("https://lab.example",)
    short = server_config(build_parser().parse_args(["serve", "--idle-timeout", "8"]))
    assert short.idle_timeout_s == 8.0


def test_server_config_refuses_unknown_settings(tmp_path: Path) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text("tcp_prot = 1\n")
    args = build_parser().parse_args(["serve", "--config", str(config_file)])
    with pytest.raises(UsageError, match="tcp_prot"):
        server_config(args)


def test_a_bad_setting_from_the_config_file_is_named_there(tmp_path: Path) -> None:
    # It named the flag (--idle-timeout) the user never typed.
    config_file = tmp_path / "server.toml"
    config_file.write_text("idle-timeout = -1\n")
    args = build_parser().parse_args(["serve", "--config", str(config_file)])
    with pytest.raises(UsageError) as refused:
        server_config(args)
    assert str(refused.value).startswith(f"{config_file}: idle_timeout_s: idle_timeout_s must")
    flagged = build_parser().parse_args(
        ["serve", "--config", str(config_file), "--idle-timeout", "-2"]
    )
    with pytest.raises(UsageError, match=r"^--idle-timeout: "):
        server_config(flagged)


def test_a_config_file_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--config", str(tmp_path / "nope.toml")])
    with pytest.raises(UsageError, match=r"nope.toml: cannot read it: No such file"):
        server_config(args)


def test_a_config_file_that_is_not_utf_8_is_a_usage_error(tmp_path: Path) -> None:
    config_file = tmp_path / "latin1.toml"
    config_file.write_bytes('name = "Müller"\n'.encode("latin-1"))
    args = build_parser().parse_args(["serve", "--config", str(config_file)])
    with pytest.raises(UsageError, match=r"latin1.toml: not valid TOML"):
        server_config(args)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("http_prot = 1", "unknown setting 'http_prot' (did you mean 'http_port'?)"),
        ("idle-timout = 3", "unknown setting 'idle-timout' (did you mean 'idle-timeout'?)"),
        (
            'tcp_port = "x"',
            "setting 'tcp_port' takes a port number (0-65535; 0: any free port) or false "
            '(off), not "x"',
        ),
        ("idle_timeout = true", "setting 'idle_timeout' takes a number of seconds, not true"),
        (
            'max_connections = "many"',
            "setting 'max_connections' takes a whole number, not \"many\"",
        ),
    ],
)
def test_a_bad_config_setting_says_what_was_meant(tmp_path: Path, line: str, error: str) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text(line + "\n")
    args = build_parser().parse_args(["serve", "--config", str(config_file)])
    with pytest.raises(UsageError) as refused:
        server_config(args)
    assert str(refused.value) == f"{config_file}: {error}"


def test_byte_sizes() -> None:
    assert byte_size("1000") == 1000
    assert byte_size("64KiB") == byte_size("64k") == 64 * 1024
    assert byte_size("1.5MB") == 1_500_000
    with pytest.raises(ValueError):
        byte_size("0.5")


# -- pub and sub -------------------------------------------------------------------------------
async def test_pub_sub_round_trip(server: ts.Server, url: str) -> None:
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("roundtrip")
        async with running("sub", url, "roundtrip", "--count", "4", "--policy", "block") as sub:
            await wait_for_channel(owner, "roundtrip", readers=1)
            values = [1, "two", {"three": [3, 3.5]}]
            stdin = "".join(json.dumps(v) + "\n" for v in values).encode()
            result = await cli("pub", url, "roundtrip", "-", stdin=stdin)
            assert result.returncode == 0, result.stderr
            await owner.publish("roundtrip", np.arange(10.0))
            code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    messages = json_lines(stdout)
    assert [m["data"] for m in messages[:3]] == values
    assert messages[3]["data"] == {
        "dtype": "float64",
        "shape": [10],
        "min": 0.0,
        "max": 9.0,
        "mean": 4.5,
    }
    assert [m["seq"] for m in messages] == [1, 2, 3, 4]
    assert all(set(m) == {"seq", "time", "sender", "lost", "data"} for m in messages)
    assert messages[3]["sender"] == "owner" and messages[0]["sender"].startswith("trio-stream")


async def test_sub_says_in_one_line_that_its_channel_ended(url: str) -> None:
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("short-lived")
        async with running("sub", url, "short-lived") as sub:
            await wait_for_channel(owner, "short-lived", readers=1)
            await owner.delete_channel("short-lived")
            code, stdout, stderr = await sub.finish()
    assert code == 0 and stdout == ""
    # The server's reason, which names the channel (it said only "ended", whatever the cause)
    assert stderr.strip().splitlines() == [
        "trio-stream sub: channel 'short-lived' was deleted "
        "(--wait-channel reads on when it is back)"
    ]


WAITING_LINE: Final = "waiting for channel 'comes-back' (Ctrl-C to stop"


async def channel_with_two_lives(owner: ts.Client, channel: str) -> None:
    """Values 0..2, the channel deleted, created again, values 3..5 (each life once a reader
    is there)."""
    for life in range(2):
        if life:
            await owner.delete_channel(channel)
            await owner.create_channel(channel)
        await wait_for_channel(owner, channel, readers=1)
        async with owner.publisher(channel) as pub:
            await pub.wait_for_readers()
            for value in range(3 * life, 3 * life + 3):
                await pub.send(value)
            await pub.wait_acknowledged()


async def test_sub_with_wait_channel_reads_on_when_its_channel_is_back(url: str) -> None:
    # `sub --wait-channel` "until Ctrl-C" stopped for good (exit 0) when its channel ended:
    # a writer away longer than the grace, then back, was read no more.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("comes-back")
        async with running("sub", url, "comes-back", "--wait-channel", "--count", "6") as sub:
            await channel_with_two_lives(owner, "comes-back")
            code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    messages = json_lines(stdout)
    assert [m["data"] for m in messages] == list(range(6))
    # The second life's first message says its seqs start again, as dump's does (the stream
    # jumped from 3 to 1 without a word; operator persona).
    assert [m.get("gap") for m in messages] == [None] * 3 + [
        {"kind": "reset", "lost": None, "recovered": 0}
    ] + [None] * 2
    # (It says it waits if it asks before the channel is back.)
    said = [line for line in stderr.strip().splitlines() if WAITING_LINE not in line]
    assert said == [
        "trio-stream sub: channel 'comes-back' was deleted (reading on when it is back)"
    ], stderr


def test_the_advice_to_subscribe_again_is_left_out_of_an_end_sub_reads_on_after() -> None:
    # After a Redis restart `sub --wait-channel` said "...: subscribe again" and went on by
    # itself (operator persona).
    strip = pubsub._ADVICE_TO_SUBSCRIBE.sub
    assert strip("", "channel 'x' was created anew (on another node): subscribe again") == (
        "channel 'x' was created anew (on another node)"
    )
    assert strip("", "was registered again: frames may be missing; subscribe again") == (
        "was registered again: frames may be missing"
    )
    assert strip("", "is gone (a restart): create it again, or subscribe again") == (
        "is gone (a restart)"
    )
    assert strip("", "channel 'x' was deleted") == "channel 'x' was deleted"


async def one_value_then_the_end(owner: ts.Client, channel: str) -> None:
    """Once a reader is there: the value 1, then ``channel`` deleted."""
    await wait_for_channel(owner, channel, readers=1)
    async with owner.publisher(channel) as pub:
        await pub.wait_for_readers()
        await pub.send(1)
        await pub.wait_acknowledged()
    await owner.delete_channel(channel)


async def test_sub_count_not_reached_before_the_end_is_an_error(url: str) -> None:
    # "the next 3 values" from a script: a channel that ends after one of them exited 0, and
    # the script took the one for the three.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("short-lived")
        async with running("sub", url, "short-lived", "--count", "3") as sub:
            await one_value_then_the_end(owner, "short-lived")
            code, stdout, stderr = await sub.finish()
    assert code == 1
    assert [m["data"] for m in json_lines(stdout)] == [1]
    assert stderr.strip().splitlines() == [
        "trio-stream sub: channel 'short-lived' was deleted "
        "(--wait-channel reads on when it is back)",
        "trio-stream sub: 1 of the 3 messages asked for (--count) came before the end",
    ]


async def test_sub_duration_includes_waiting_for_the_channel(url: str) -> None:
    started = trio.current_time()
    result = await cli("sub", url, "never-created", "--wait-channel", "--duration", "1")
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    # Python's start-up and the connection on top of the second; it used to wait for good.
    assert trio.current_time() - started < RUN_TIMEOUT_S / 2


async def test_dump_signalled_twice_at_once_still_ends_cleanly(url: str, tmp_path: Path) -> None:
    # `timeout -s INT 10 trio-stream dump ...` signals the command, then its process group:
    # the second SIGINT, milliseconds later, cut the flush short (exit 130, no summary).
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("live")
        path = tmp_path / "rec.tsdump"
        async with running("dump", url, "live", str(path)) as dump:
            await wait_for_channel(owner, "live", readers=1)
            async with owner.publisher("live") as pub:
                await pub.wait_for_readers()
                for value in range(3):
                    await pub.send(value)
                await pub.wait_acknowledged()
            await trio.sleep(0.3)  # acknowledged is the server's: on their way to the dump
            dump.process.send_signal(signal.SIGINT)
            await trio.sleep(0.01)
            dump.process.send_signal(signal.SIGINT)
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    assert "dumped 3 frames" in stderr
    with path.open("rb") as f:
        assert [frame["data"] for frame in dumpfile.DumpReader(f)] == [0, 1, 2]


async def test_a_dump_killed_after_a_burst_and_quiet_holds_the_burst(
    url: str, tmp_path: Path
) -> None:
    # A triggered channel: a burst, then quiet. The frames waited in memory until the next
    # frame came, so a kill -9 (a power loss) seconds later lost all of them (files audit).
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("trigger")
        path = tmp_path / "shots.tsdump"
        async with running("dump", url, "trigger", str(path), "--quiet") as dump:
            await wait_for_channel(owner, "trigger", readers=1)
            await trio.sleep(1.0)  # the recorder idle past its flush interval
            async with owner.publisher("trigger") as pub:
                for shot in range(20):
                    await pub.send({"shot": shot})
                await pub.wait_acknowledged()
            await trio.sleep(1.5)  # quiet: no frame comes to make the recorder write
            dump.process.kill()
            await dump.process.wait()
    with path.open("rb") as f:
        assert [frame["data"]["shot"] for frame in dumpfile.DumpReader(f)] == list(range(20))


async def test_dump_duration_includes_waiting_for_the_channel(url: str, tmp_path: Path) -> None:
    started = trio.current_time()
    path = tmp_path / "rec.tsdump"
    result = await cli("dump", url, "never-created", str(path), "--wait-channel", "--duration", "1")
    assert result.returncode == 0, result.stderr
    assert b"did not come within --duration 1 s; nothing recorded" in result.stderr
    assert not path.exists()
    # Python's start-up and the connection on top of the second; it used to wait for good.
    assert trio.current_time() - started < RUN_TIMEOUT_S / 2


async def test_dump_says_in_one_line_that_its_channel_ended(url: str, tmp_path: Path) -> None:
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("short-lived")
        path = tmp_path / "rec.tsdump"
        async with running("dump", url, "short-lived", str(path), "--quiet") as dump:
            await wait_for_channel(owner, "short-lived", readers=1)
            await owner.delete_channel("short-lived")
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    assert stderr.strip().splitlines() == [
        "trio-stream dump: channel 'short-lived' was deleted "
        "(--wait-channel records on when it is back)"
    ]


async def test_dump_counts_in_its_summary_the_drops_after_its_last_frame(
    url: str, tmp_path: Path
) -> None:
    # Dropped after the last frame it got, the frames were told in a lost notice only: the
    # summary said "lost 0" (a tester, under a line saying 2,026 frames were not delivered).
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("burst")
        path = tmp_path / "rec.tsdump"
        async with (
            running(
                "dump", url, "burst", str(path), "--policy", "drop_newest", "--size", "1"
            ) as dump,
            owner.publisher("burst") as pub,
        ):
            await wait_for_channel(owner, "burst", readers=1)
            for i in range(100):
                await pub.send(i)
            await pub.wait_acknowledged()
            await trio.sleep(0.5)  # the dump took what it could
            await owner.delete_channel("burst")
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    with path.open("rb") as f:
        recorded = len(list(dumpfile.DumpReader(f)))
    summary = stderr.strip().splitlines()[-1]
    assert summary.endswith(f"lost {100 - recorded}"), (summary, recorded)
    assert recorded < 100


async def test_dump_with_wait_channel_records_on_when_its_channel_is_back(
    url: str, tmp_path: Path
) -> None:
    # A recorder "until Ctrl-C" stopped for good (exit 0, so no service manager restarted
    # it) when its channel ended with a writer away longer than the grace.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("comes-back")
        path = tmp_path / "rec.tsdump"
        async with running("dump", url, "comes-back", str(path), "--wait-channel") as dump:
            await channel_with_two_lives(owner, "comes-back")
            # Acknowledged is the server's: until the dump has written all six (it writes
            # at least every half second).
            with trio.fail_after(WAIT_S):
                while len(recorded(path)) < 6:  # noqa: ASYNC110 - a file another process writes
                    await trio.sleep(0.05)
            dump.process.send_signal(signal.SIGINT)
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    said = [line for line in stderr.strip().splitlines() if WAITING_LINE not in line]
    assert said[:2] == [
        "trio-stream dump: channel 'comes-back' was deleted",
        "trio-stream dump: the channel was reset (server restart or re-creation); 0 replayed",
    ], stderr
    assert said[2].startswith("dumped 6 frames") and len(said) == 3, stderr
    assert said[2].endswith("; lost 0 and 1 reset (loss unknown)"), stderr
    frames = recorded(path)
    assert [frame["data"] for frame in frames] == list(range(6))
    assert [frame["seq"] for frame in frames] == [1, 2, 3, 1, 2, 3]  # the channel's new life
    # The seam is marked as a server restart's is (dump-format.md), for a reader of the file.
    assert "gap" not in frames[0] and frames[3]["gap"]["kind"] == "reset", frames


def recorded(path: Path) -> list[dict[str, Any]]:
    """The frames a dump file holds so far (a last one cut short is not one)."""
    # A file just made has its header a few microseconds later (dump writes it at once).
    if not path.exists() or path.stat().st_size == 0:
        return []
    with path.open("rb") as f:
        return list(dumpfile.DumpReader(f))


async def test_dump_count_not_reached_before_the_end_is_an_error(url: str, tmp_path: Path) -> None:
    # As with sub --count: a recording of "the next 3 frames" that ended after one exited 0.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("short-lived")
        path = tmp_path / "rec.tsdump"
        async with running("dump", url, "short-lived", str(path), "--count", "3") as dump:
            await one_value_then_the_end(owner, "short-lived")
            code, _, stderr = await dump.finish()
    assert code == 1
    with path.open("rb") as f:
        assert [frame["data"] for frame in dumpfile.DumpReader(f)] == [1]
    assert stderr.strip().splitlines()[-1] == (
        "trio-stream dump: 1 of the 3 frames asked for (--count) came before the channel's end"
    )


async def test_pub_creates_and_waits_for_readers(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with (
        running(
            "pub", url, "made", "[1, 2, 3]", "--create", "--wait-readers", "--dtype", "int16"
        ) as pub,
        ts.open_client(url) as client,
    ):
        await wait_for_channel(client, "made")
        async with client.subscribe("made") as sub:
            with trio.fail_after(WAIT_S):
                msg = await sub.receive()
        code, _, stderr = await pub.finish()
    assert code == 0, stderr
    assert msg.data.dtype == np.int16 and msg.data.tolist() == [1, 2, 3]


def test_values_print_as_json() -> None:
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert jsonable(image, full=True) == [[0, 1, 2], [3, 4, 5]]
    assert jsonable(image)["shape"] == [2, 3]
    assert jsonable(b"\x01\xff", bytes_format="hex") == "01ff"
    assert jsonable(b"\x01\xff") == "Af8="
    assert jsonable([math.nan, -math.inf, np.float32(1.5)]) == [
        {"$float": "nan"},
        {"$float": "-inf"},
        1.5,
    ]
    assert jsonable(np.zeros(0))["min"] is None
    # Complex numbers have no order (no min or max), but a mean, as [real, imaginary] like
    # every complex value printed; it was null, which told nothing of the array.
    waves = jsonable(np.array([1 + 2j, 3 - 4j], dtype=np.complex64))
    assert waves == {"dtype": "complex64", "shape": [2], "min": None, "max": None, "mean": [2, -1]}


# -- dump and replay ---------------------------------------------------------------------------
RECORDED = [
    np.arange(8, dtype=np.float32) * i if i % 2 else {"i": i, "image": np.eye(3) * i}
    for i in range(8)
]
RECORD_INTERVAL_S = 0.05


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


async def test_dump_then_replay(server: ts.Server, tmp_path: Path) -> None:
    assert server.tcp_url is not None
    url, path = server.tcp_url, tmp_path / "rec.tsdump"
    async with ts.open_client(url, name="daq") as daq:
        await daq.create_channel("live")
        async with running("dump", url, "live", str(path), "--count", str(len(RECORDED))) as dump:
            await wait_for_channel(daq, "live", readers=1)
            async with daq.publisher("live") as pub:
                for value in RECORDED:
                    assert await pub.send(value)
                    await trio.sleep(RECORD_INTERVAL_S)
            code, _, stderr = await dump.finish()
        assert code == 0, stderr
        assert f"dumped {len(RECORDED)} frames" in stderr

        with path.open("rb") as f:
            reader = dumpfile.DumpReader(f)
            frames = list(reader)
        assert reader.header["channel"] == "live" and reader.header["version"] == 1
        assert [f["seq"] for f in frames] == list(range(1, len(RECORDED) + 1))
        assert all(f["sender"] == "daq" and f["lost"] == 0 for f in frames)
        for recorded, frame in zip(RECORDED, frames, strict=True):
            assert_same(recorded, frame["data"])

        await daq.create_channel("again")
        received: list[tuple[float, Any]] = []
        async with daq.subscribe("again", policy="block", size=100) as sub:

            async def collect() -> None:
                with trio.fail_after(WAIT_S):
                    while len(received) < len(RECORDED):
                        msg = await sub.receive()
                        received.append((msg.time, msg.data))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                result = await cli("replay", str(path), url, "again", "--speed", "2")
                assert result.returncode == 0, result.stderr
    for recorded, (_, replayed) in zip(RECORDED, received, strict=True):
        assert_same(recorded, replayed)
    recorded_span = frames[-1]["t"] - frames[0]["t"]
    assert recorded_span >= (len(RECORDED) - 1) * RECORD_INTERVAL_S * 0.9
    # Each replayed frame carries the time the replay sent it (the writer's clock), so the
    # schedule is measured without the delivery's jitter. The replay sleeps until each
    # frame's time before sending it: never early (bar clock granularity), maybe late.
    sent_at = [t - received[0][0] for t, _ in received]
    due_at = [(f["t"] - frames[0]["t"]) / 2 for f in frames]
    early = [(sent, due) for sent, due in zip(sent_at, due_at, strict=True) if sent < due - 0.005]
    assert not early, (sent_at, due_at)
    assert sent_at[-1] <= due_at[-1] + 1.0


async def test_replay_fast_repeat_and_sub_every(server: ts.Server, tmp_path: Path) -> None:
    assert server.tcp_url is not None
    url, path = server.tcp_url, tmp_path / "five.tsdump"
    path.write_bytes(_dump_bytes(list(range(5))))
    async with running(
        "sub", url, "copy", "--wait-channel", "--policy", "block", "--every", "3", "--count", "4"
    ) as sub:
        result = await cli(
            "replay", str(path), url, "copy", "--create", "--fast", "--repeat", "3",
            "--wait-readers",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "replayed 15 frames to 'copy'" in result.stderr.decode()
        code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    # Three rounds of 0..4 in order; the reader keeps every third of them.
    assert [m["data"] for m in json_lines(stdout)] == [0, 3, 1, 4]
    assert [m["seq"] for m in json_lines(stdout)] == [1, 4, 7, 10]


async def test_replay_reads_a_recording_from_stdin(server: ts.Server) -> None:
    # `dump URL CH -` writes to stdout and `show -` reads stdin; `replay -` looked for a file
    # named "-" (a pipe from zcat needed a file in between).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with running(
        "sub", url, "piped", "--wait-channel", "--policy", "block", "--count", "5"
    ) as sub:
        result = await cli(
            "replay", "-", url, "piped", "--create", "--fast", "--wait-readers",
            stdin=_dump_bytes(list(range(5))),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "replayed 5 frames to 'piped'" in result.stderr.decode()
        code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    assert [m["data"] for m in json_lines(stdout)] == [0, 1, 2, 3, 4]
    again = await cli("replay", "-", url, "piped", "--repeat", "2", stdin=_dump_bytes([1]))
    assert again.returncode == 2
    assert "a recording from stdin is played once" in again.stderr.decode()
    not_a_dump = await cli("replay", "-", url, "piped", stdin=b"hello")
    assert not_a_dump.returncode == 1
    assert "stdin: not a trio_stream dump" in not_a_dump.stderr.decode()


@pytest.mark.parametrize("written", [0, 3], ids=["before-the-header", "between-frames"])
async def test_replay_from_an_idle_pipe_stops_on_ctrl_c(server: ts.Server, written: int) -> None:
    # The header was read on the event loop's thread, and a record's read abandoned in its
    # worker thread held the stdin reader's lock that closing it waited for: Ctrl-C (twice
    # too) left `dump ... - | replay - ...` of a quiet channel running (a review).
    assert server.tcp_url is not None
    async with running(
        "replay",
        "-",
        server.tcp_url,
        "idle",
        "--create",
        "--no-wait",
        "--fast",
        stdin=subprocess.PIPE,
    ) as replay:
        assert replay.process.stdin is not None
        if written:
            await replay.process.stdin.send_all(_dump_bytes(list(range(written))))
        await replay.connected()
        await trio.sleep(0.5)  # the pipe stays open: the replay waits for what comes next
        replay.process.send_signal(signal.SIGINT)
        code, _, stderr = await replay.finish()  # within WAIT_S
    assert code in (0, 3, 130) and "Traceback" not in stderr, (code, stderr)


async def test_dump_replay_generate_show_progress_on_a_terminal(
    server: ts.Server, tmp_path: Path
) -> None:
    # FORCE_COLOR makes rich treat stderr as a terminal; piped, stderr gets the summary only.
    assert server.tcp_url is not None
    url, path = server.tcp_url, tmp_path / "progress.tsdump"
    terminal = {"FORCE_COLOR": "1"}
    async with ts.open_client(url, name="daq") as daq:
        await daq.create_channel("live")
        async with running("dump", url, "live", str(path), "--count", "3", env=terminal) as dump:
            await wait_for_channel(daq, "live", readers=1)
            for i in range(3):
                await daq.publish("live", i)
            code, _, stderr = await dump.finish()
        assert code == 0, stderr
        assert "recording" in stderr and "live" in stderr and "\x1b[" in stderr
        shown = await cli("replay", str(path), url, "live", "--no-wait", env=terminal)
        assert "replaying" in shown.stderr.decode()
        piped = await cli("replay", str(path), url, "live", "--no-wait")
        assert piped.returncode == 3 and "\x1b[" not in piped.stderr.decode()
        assert (
            piped.stderr.decode()
            .strip()
            .endswith(
                "replayed 3 frames to 'live': 0 sent, 3 not sent for want of readers (start a "
                "reader first; without --no-wait replay waits for one)"
            )
        )
        generate = ["generate", url, "load", "--create", "--count", "3", "--rate", "20"]
        live = await cli(*generate, "--no-wait", env=terminal)
        assert live.returncode == 3, live.stderr
        assert "load: 0 frames sent, 3 skipped (no readers)" in live.stderr.decode()
        assert "frames sent" not in (await cli(*generate, "--no-wait")).stderr.decode()


async def test_replay_refuses_a_file_that_is_not_a_dump(server: ts.Server, tmp_path: Path) -> None:
    assert server.tcp_url is not None
    path = tmp_path / "not-a-dump"
    path.write_bytes(cbor2.dumps({"hello": 1}))
    result = await cli("replay", str(path), server.tcp_url, "x")
    assert result.returncode == 1
    assert "not a trio_stream dump" in result.stderr.decode()


def _dump_bytes(values: Sequence[Any]) -> bytes:
    items = [dumpfile.header("ch")] + [
        {"t": float(i), "time": float(i), "seq": i + 1, "sender": "w", "lost": 0, "data": v}
        for i, v in enumerate(values)
    ]
    return b"".join(bytes(p) for item in items for p in dumpfile.encode_item(item))


async def test_replay_says_what_the_recording_lost_and_reads_odd_counts_as_none(
    server: ts.Server, tmp_path: Path
) -> None:
    # Its summary counted the gaps' losses only (frames' `lost` are the whole count), and a
    # gap whose "lost" was not a number, in a file written elsewhere, was a traceback after
    # the frames had been played (files audit).
    assert server.tcp_url is not None
    items: list[dict[str, Any]] = [dumpfile.header("ch")]
    for i, (lost, gap) in enumerate(
        [(0, None), (4, None), (2, {"kind": "resumed", "lost": "many"})]
    ):
        item = {"t": float(i), "time": float(i), "seq": i + 1, "sender": "w", "lost": lost}
        items.append({**item, "data": i} | ({"gap": gap} if gap else {}))
    path = tmp_path / "lossy.tsdump"
    path.write_bytes(b"".join(bytes(p) for item in items for p in dumpfile.encode_item(item)))
    result = await cli("replay", str(path), server.tcp_url, "x", "--create", "--fast", "--no-wait")
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr and result.returncode == 3, stderr  # 3: no readers
    assert "the recording notes 6 frames its recorder lost; 1 gap where" in stderr, stderr


def test_dump_file_reads_with_cbor2_alone_as_documented(tmp_path: Path) -> None:
    """The reader in dumpfile's docstring (and docs/dump-format.md) works as printed."""
    path = tmp_path / "recording.tsdump"
    path.write_bytes(_dump_bytes([np.arange(3.0), np.ones((2, 2), np.uint8), {"k": "v"}]))
    doc = dumpfile.__doc__ or ""
    snippet = textwrap.dedent(doc[doc.index("    import cbor2") :])
    snippet = snippet.replace('"recording.tsdump"', repr(str(path)))
    snippet = snippet.replace(
        'print(frame["t"], frame["seq"], frame["data"])', "frames.append(frame)"
    )
    namespace: dict[str, Any] = {"frames": []}
    exec(snippet, namespace)
    frames = namespace["frames"]
    assert namespace["header"]["format"] == "trio_stream-dump"
    assert frames[0]["data"].tolist() == [0.0, 1.0, 2.0]
    assert frames[1]["data"].shape == (2, 2) and frames[1]["data"].dtype == np.uint8
    assert frames[2]["data"] == {"k": "v"}


def test_dump_format_page_shows_the_tested_reader() -> None:
    doc = dumpfile.__doc__ or ""
    snippet = textwrap.dedent(doc[doc.index("    import cbor2") :]).strip()
    page = (Path(__file__).parent.parent / "docs" / "dump-format.md").read_text()
    assert snippet in page


def test_an_interrupted_dump_reads_up_to_its_last_whole_frame() -> None:
    data = _dump_bytes([np.arange(1000.0), 2, 3])
    cut = data[: len(data) - 3]

    class Chunks:  # hands out a few bytes at a time, like a slow file
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int) -> bytes:
            chunk = cut[self.pos : self.pos + 100]
            self.pos += len(chunk)
            return chunk

    reader = dumpfile.DumpReader(Chunks())  # type: ignore[arg-type]
    assert [f["seq"] for f in reader] == [1, 2]
    assert reader.truncated


# -- show --------------------------------------------------------------------------------------
async def test_show_prints_a_recording_as_sub_prints_a_channel(tmp_path: Path) -> None:
    # A recording could be read only by replaying it into a server, or by Python code.
    path = tmp_path / "run.tsdump"
    path.write_bytes(_dump_bytes([np.arange(3.0), "two", b"\x01\xff"]))
    result = await cli("show", str(path))
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout.decode()) == [
        {"seq": 1, "time": 0.0, "sender": "w", "lost": 0, "data": summary_of_arange_3},
        {"seq": 2, "time": 1.0, "sender": "w", "lost": 0, "data": "two"},
        {"seq": 3, "time": 2.0, "sender": "w", "lost": 0, "data": "Af8="},
    ]
    assert re.fullmatch(
        rf"{re.escape(str(path))}: channel 'ch' recorded at \S+ \S+ UTC\n", result.stderr.decode()
    )
    shown = await cli("show", str(path), "--count", "1", "--data-only", "--full")
    assert shown.returncode == 0 and shown.stdout.decode() == "[0.0,1.0,2.0]\n"


async def test_dump_to_stdout_and_show_from_stdin_make_a_pipe(url: str) -> None:
    # FILE "-" made a file named "-": `dump URL CH - | gzip` and `zcat ... | show -` could
    # not be written.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("kept", history=5)
        async with owner.publisher("kept") as pub:
            for value in ("a", "b", "c"):
                await pub.send(value)
            await pub.wait_acknowledged()
        dumped = await cli("dump", url, "kept", "-", "--count", "3")
    assert dumped.returncode == 0, dumped.stderr
    assert "dumped 3 frames" in dumped.stderr.decode() and "to stdout" in dumped.stderr.decode()
    shown = await cli("show", "-", "--data-only", stdin=dumped.stdout)
    assert shown.returncode == 0 and shown.stdout == b'"a"\n"b"\n"c"\n', shown.stderr
    assert shown.stderr.decode().startswith("stdin: channel 'kept' of ")


async def test_show_count_stops_before_reading_on(tmp_path: Path) -> None:
    # It fetched frame N+1 before seeing that N were shown: a damaged one there failed the
    # command, and from a pipe that stays open (a live dump) it showed nothing at all.
    damaged = tmp_path / "damaged.tsdump"
    damaged.write_bytes(_dump_bytes([1, 2]) + b"\xff\xff\xff")
    result = await cli("show", str(damaged), "--count", "2", "--data-only")
    assert result.returncode == 0 and result.stdout == b"1\n2\n", result.stderr
    process = await trio.lowlevel.open_process(
        [*CLI, "show", "-", "--count", "1", "--data-only"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        await process.stdin.send_all(_dump_bytes(["first"]))  # and the pipe stays open
        with trio.fail_after(RUN_TIMEOUT_S):
            assert await process.stdout.receive_some() == b'"first"\n'
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdin.aclose()


summary_of_arange_3 = {"dtype": "float64", "shape": [3], "min": 0.0, "max": 2.0, "mean": 1.0}


async def test_show_of_a_cut_or_foreign_file_says_so_in_one_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.tsdump"
    whole = _dump_bytes([1, 2, 3])
    cut.write_bytes(whole[:-2])
    result = await cli("show", str(cut), "--data-only")
    assert result.returncode == 0 and result.stdout == b"1\n2\n"
    assert result.stderr.decode().splitlines()[-1] == (
        f"trio-stream show: {cut} ends inside a frame (an interrupted recording); the 2 "
        "frames before it are shown"
    )
    other = tmp_path / "notes.txt"
    other.write_text("not a recording\n")
    for path, said in ((other, "not a trio_stream dump"), (tmp_path / "gone", "no such file")):
        result = await cli("show", str(path))
        assert result.returncode == 1 and result.stdout == b""
        assert result.stderr.decode().count("\n") == 1 and said in result.stderr.decode()


# -- bridge ------------------------------------------------------------------------------------
async def bridge_src_to_copy(
    src_url: str,
    dst_url: str,
    *options: str,
    sends: int,
    takes: int,
    stop_signal: signal.Signals = signal.SIGINT,
) -> tuple[list[Any], set[str], str]:
    """Run ``bridge SRC DST src --rename src=copy OPTIONS``: publish ``sends`` values to
    ``src``, read ``takes`` from ``copy``, stop it with ``stop_signal`` (a clean exit, 0).
    Returns what the copy's reader got, the client names on DST while the bridge ran, and
    what the bridge said on stderr."""
    async with (
        ts.open_client(src_url, name="daq") as daq,
        ts.open_client(dst_url, name="viewer") as viewer,
    ):
        await daq.create_channel("src")
        async with running(
            "bridge", src_url, dst_url, "src", "--rename", "src=copy", *options
        ) as bridge:
            await wait_for_channel(viewer, "copy")
            names = {c.name for c in await viewer.clients()}
            async with viewer.subscribe("copy", policy="block", size=100) as sub:
                # The bridge reads the source only while the copy has readers.
                await wait_for_channel(daq, "src", readers=1)
                async with daq.publisher("src") as pub:
                    for i in range(sends):
                        assert await pub.send(i)
                with trio.fail_after(WAIT_S):
                    got = [(await sub.receive()).data for _ in range(takes)]
            bridge.process.send_signal(stop_signal)
            code, _, stderr = await bridge.finish()
    assert code == 0 and "Traceback" not in stderr  # its normal end, as serve's and dump's
    return got, names, stderr


async def test_bridge_between_two_servers(server: ts.Server, nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, name="second")
    second: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None and second.tcp_url is not None
    got, _, _ = await bridge_src_to_copy(
        server.tcp_url, second.tcp_url, "--every", "2", "--policy", "block", sends=10, takes=5
    )
    assert got in ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])


async def test_bridge_says_what_the_source_lost_before_it_read_it(server: ts.Server) -> None:
    # The bridge forwarded msg.data alone: frames its --size 1 dropped on the source never
    # showed anywhere, the copy's readers got a sequence without a gap, and stderr said nothing.
    assert server.tcp_url is not None
    url = server.tcp_url
    _, _, stderr = await bridge_src_to_copy(
        url, url, "--policy", "drop_oldest", "--size", "1", sends=2000, takes=1
    )
    assert "frames of the source lost before the bridge read them" in stderr, stderr
    assert "the copy's readers cannot see this" in stderr


async def test_bridge_says_a_loss_within_a_second_even_if_no_loss_follows(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    # Losses are said at most once a second: one that came within a second of the last
    # report waited for the next loss (hours away, perhaps) until keep_saying said it.
    report = bridge_cli._LossReport("src", "copy")
    lost = SimpleNamespace(gap=None, lost=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report.keep_saying)
        report.note(cast(ts.Message, lost))  # the first: said at once
        assert capsys.readouterr().err.count("3 frames of the source lost") == 1
        await trio.sleep(0.2)
        report.note(cast(ts.Message, SimpleNamespace(gap=None, lost=2)))
        assert capsys.readouterr().err == ""  # within the second: held
        await trio.sleep(bridge_cli.LOSS_REPORT_S)
        said = capsys.readouterr().err
        assert "'src' -> 'copy': 2 frames of the source lost before the bridge read them" in said
        assert "(5 in all:" in said
        await trio.sleep(10 * bridge_cli.LOSS_REPORT_S)
        assert capsys.readouterr().err == ""  # nothing new: nothing said
        nursery.cancel_scope.cancel()


async def test_bridge_onto_a_copy_that_exists_writes_it_as_it_is(
    server: ts.Server, nursery: trio.Nursery
) -> None:
    # Its creation options are for the copies it creates: --create's refusal of a channel
    # that exists otherwise is not bridge's (it ended every route).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, name="second")
    second: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None and second.tcp_url is not None
    async with ts.open_client(second.tcp_url, name="someone") as someone:
        await someone.create_channel("copy")  # no history
        got, _, _ = await bridge_src_to_copy(
            server.tcp_url, second.tcp_url, "--history", "5", "--policy", "block", sends=3, takes=3
        )
    assert got == [0, 1, 2]


async def test_bridge_within_one_server(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    # Onto itself, or round a circle, it would send every frame round for ever: a usage
    # error, before connecting when the URLs are the same, after when they only name one
    # server (localhost; tcp:// and ws://).
    port = url.rsplit(":", 1)[1]
    async with ts.open_client(url, name="setup") as setup:
        await setup.create_channel("src")
        await setup.create_channel("b")
        for *urls, circle, renames in [
            (url, url, "'src' -> 'src'", []),
            (f"tcp://localhost:{port}", url, "'src' -> 'src'", []),
            (url, url, "'src' -> 'b' -> 'src'", ["b", "--rename", "src=b", "--rename", "b=src"]),
        ]:
            loop = await cli("bridge", *urls, "src", *renames)
            assert loop.returncode == 2, loop.stderr
            assert loop.stderr.decode().strip().splitlines() == [
                f"trio-stream bridge: error: {circle} would send every frame round for ever "
                "(SRC_URL and DST_URL are one server): --rename the copies to channels that "
                "are not bridged"
            ]
        await setup.delete_channel("src")
    # NAME-dst must be a valid name too.
    long = await cli("bridge", url, url, "src", "--rename", "src=copy", "--name", "n" * 97)
    assert long.returncode == 2
    assert "--name is too long for a bridge: its destination client is NAME-dst" in (
        long.stderr.decode()
    )
    # Renamed, it is a copy; its two clients need two names, --name or not.
    got, names, _ = await bridge_src_to_copy(
        url, url, "--name", "b", "--policy", "block", sends=5, takes=5, stop_signal=signal.SIGTERM
    )
    assert got == [0, 1, 2, 3, 4]
    assert {"b", "b-dst"} <= names


async def test_bridge_of_a_channel_that_is_not_there_fails_at_once(server: ts.Server) -> None:
    # It said "bridging" and waited; the error came only when someone read the copy, and
    # ended that reader's subscription too.
    assert server.tcp_url is not None
    url = server.tcp_url
    result = await cli("bridge", url, url, "demo/nope", "--rename", "demo/nope=copy")
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().strip().splitlines() == [
        "trio-stream bridge: error: no channel named 'demo/nope' that you may read "
        "(--wait-channel waits for it; a private channel needs its key: --key)"
    ]


# -- channels, clients, stats ------------------------------------------------------------------
async def test_channels_shows_a_block_reader_holding_the_writers(server: ts.Server) -> None:
    # A channel stalled by a block reader showed nothing in the table, its rate 0 as a quiet
    # channel's; only --json had held_by (operator persona).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="slow") as r:
        await w.create_channel("held")
        async with (
            r.subscribe("held", policy="block", size=1, window=1),
            w.publisher("held") as pub,
        ):
            await pub.wait_for_readers()
            for i in range(4):  # 1 in flight, 1 buffered, the rest parked: held
                await pub.send(i)
            with trio.fail_after(WAIT_S):
                while not [c for c in await w.channels() if c.name == "held" and c.held_by]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            listed = await cli("channels", url)
            assert "\ntrio_stream_held_channels 1\n" in render_metrics(server.state)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.decode().splitlines() if line.startswith("held ")]
    assert re.search(r"held by slow \d+\.\d s", row), row


async def test_channels_clients_and_stats(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="watcher") as client:
        await client.create_channel("visible/one")
        table = await cli("channels", url)
        assert table.returncode == 0 and "visible/one" in table.stdout.decode()
        channels = json.loads((await cli("channels", url, "--json")).stdout)
        assert [c["name"] for c in channels] == ["visible/one"]
        assert channels[0]["owner"] == "watcher"
        clients = json.loads((await cli("clients", url, "--json")).stdout)
        assert "watcher" in {c["name"] for c in clients}
        stats = json.loads((await cli("stats", url, "--json")).stdout)
        assert stats["stats"]["channels"] >= 1 and stats["channels"][0]["name"] == "visible/one"
        watch = await cli("stats", url, "--watch", "--count", "2", "--interval", "0.2", "--json")
        assert watch.returncode == 0
        assert len(json_lines(watch.stdout.decode())) == 2
        live = await cli("stats", url, "--watch", "--count", "1")
        assert live.returncode == 0 and "visible/one" in live.stdout.decode()
        no_watch = await cli("stats", url, "--count", "2")
        assert no_watch.returncode == 2 and "--watch" in no_watch.stderr.decode()


async def test_tables_in_a_pipe_have_no_trailing_spaces(server: ts.Server) -> None:
    # rich pads every line to the table's width (~120 columns with a long flag): in a file
    # that is trailing whitespace on every line.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="watcher") as client:
        await client.create_channel("padded", meta={"description": "a long one " * 4})
        for command in ("channels", "clients", "stats"):
            result = await cli(command, url)
            assert result.returncode == 0, result.stderr
            lines = result.stdout.decode().splitlines()
            assert any("padded" in line for line in lines) or command == "clients"
            assert [line for line in lines if line != line.rstrip()] == [], command


# -- generate ----------------------------------------------------------------------------------
async def test_generate_count(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url) as client:
        await client.create_channel("load")
        async with client.subscribe("load", policy="block", size=100) as sub:
            result = await cli(
                "generate", url, "load", "--count", "20", "--shape", "8", "--dtype", "float32"
            )
            assert result.returncode == 0, result.stderr
            with trio.fail_after(WAIT_S):
                frames = [(await sub.receive()).data for _ in range(20)]
    assert all(f.shape == (8,) and f.dtype == np.float32 for f in frames)
    assert "20 sent" in result.stderr.decode()


async def test_generate_stopped_with_ctrl_c_says_what_it_sent(server: ts.Server) -> None:
    # Without --count it runs until stopped: Ctrl-C still gets the summary line, then 130.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url) as client:
        await client.create_channel("load")
        async with (
            client.subscribe("load", policy="block", size=100) as sub,
            running("generate", url, "load", "--rate", "200", "--shape", "4") as p,
        ):
            with trio.fail_after(WAIT_S):
                for _ in range(5):
                    await sub.receive()
            p.process.send_signal(signal.SIGINT)
            code, _, stderr = await p.finish()
    assert code == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("generated ") and last.endswith("(stopped before the end)"), stderr


async def test_pub_reading_stdin_stops_at_ctrl_c_between_lines(server: ts.Server) -> None:
    # The line is read in a worker thread: Ctrl-C used to wait for the next Enter (the
    # thread could not be abandoned), however often it was pressed.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url) as client:
        await client.create_channel("typed")
        async with (
            client.subscribe("typed", policy="block", size=10) as sub,
            running("pub", url, "typed", stdin=subprocess.PIPE) as p,
        ):
            assert p.process.stdin is not None
            await p.process.stdin.send_all(b"21.5\n")  # and then nothing: the user stops
            with trio.fail_after(WAIT_S):
                assert (await sub.receive()).data == 21.5
            p.process.send_signal(signal.SIGINT)
            code, _, stderr = await p.finish()  # within WAIT_S, stdin still open
    assert code == 130 and "Traceback" not in stderr, stderr


async def test_pub_whose_reader_leaves_midway_says_so(server: ts.Server) -> None:
    # It said "start a reader first; without --no-wait pub waits for one": it had waited,
    # and the reader was there at the start.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url) as client:
        await client.create_channel("numbers")
        async with running("pub", url, "numbers", "-", stdin=subprocess.PIPE) as p:
            assert p.process.stdin is not None
            async with client.subscribe("numbers", policy="block", size=10) as sub:
                await p.process.stdin.send_all(b"1\n")
                with trio.fail_after(WAIT_S):
                    assert (await sub.receive()).data == 1
            await wait_for_readers_gone(client, "numbers")
            await p.process.stdin.send_all(b"2\n3\n")
            await p.process.stdin.aclose()
            code, _, stderr = await p.finish()
    assert code == 3, stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .endswith(
            "2 of 3 values not sent: channel 'numbers' had no readers then (its readers went away "
            "during the run (they left, or their subscriptions ended): keep a reader for the "
            "whole run)"
        )
    ), stderr


async def test_sub_stopped_with_ctrl_c_exits_130_without_a_traceback(server: ts.Server) -> None:
    # Ctrl-C cancels the command (it used to be a KeyboardInterrupt raised wherever trio was,
    # which now and then broke a nursery: a long traceback and exit 1).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url) as client:
        await client.create_channel("ticks")
        async with client.publisher("ticks") as pub:
            for delay in (0.0, 0.05, 0.3):
                async with running("sub", url, "ticks") as p:
                    await pub.wait_for_readers()
                    await pub.send(1)
                    await p.readline()  # it is reading
                    await trio.sleep(delay)
                    p.process.send_signal(signal.SIGINT)
                    code, _, stderr = await p.finish()
                assert code == 130 and stderr.strip() == "", (delay, stderr)


async def test_pub_and_generate_into_a_channel_with_history_do_not_wait_for_a_reader(
    server: ts.Server,
) -> None:
    # README: history fills without readers (the last value of a setpoint is there for a
    # late reader). pub used to wait for a reader all the same, and kept nothing.
    assert server.tcp_url is not None
    url = server.tcp_url
    result = await cli("pub", url, "setpoint", "21.5", "--create", "--history", "5", "--keep")
    assert result.returncode == 0, result.stderr
    assert b"waiting for a reader" not in result.stderr
    late = await cli("sub", url, "setpoint", "--count", "1", "--data-only")
    assert late.returncode == 0 and json_lines(late.stdout.decode()) == [21.5], late
    # generate as fast as it can into history: not a spin waiting for readers either.
    made = await cli(
        "generate", url, "recent", "--create", "--history", "3", "--keep", "--count", "20"
    )
    assert made.returncode == 0, made.stderr
    tail = await cli("sub", url, "recent", "--count", "3")
    assert [m["seq"] for m in json_lines(tail.stdout.decode())] == [18, 19, 20], tail
    # Without --keep the channel (and its history) ends with the command: it waits, as
    # without history (it used to exit 0 with the value gone).
    gone = await cli(
        "pub", url, "brief", "1.5", "--create", "--history", "5", "--wait-timeout", "0.3"
    )
    assert gone.returncode == 3 and b"waiting for a reader" in gone.stderr, gone
    # --min-readers still means readers, history or not.
    waited = await cli(
        "pub", url, "setpoint", "22.5", "--min-readers", "1", "--wait-timeout", "0.3"
    )
    assert waited.returncode == 3 and b"waiting for a reader" in waited.stderr, waited
    # Someone else's private channel (listed to its owner only) with history: the same (it
    # waited, as if it kept nothing: lab persona).
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("private-setpoint", public=False, key="k-1", history=5)
        private = await cli("pub", url, "private-setpoint", "3", "--key", "k-1")
        assert private.returncode == 0, private.stderr
        assert b"waiting for a reader" not in private.stderr
        late = await cli(
            "sub", url, "private-setpoint", "--key", "k-1", "--count", "1", "--data-only"
        )
        assert late.returncode == 0 and json_lines(late.stdout.decode()) == [3], late


async def test_generate_waits_for_a_reader_and_says_so_as_pub_does(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    for rate in ([], ["--rate", "50"]):
        # No reader: it says it waits (it used to skip every frame, or wait without a word).
        timed_out = await cli(
            "generate", url, "load", "--create", "--count", "5", *rate, "--wait-timeout", "0.3"
        )
        assert timed_out.returncode == 3, timed_out.stderr
        stderr = timed_out.stderr.decode()
        assert "waiting for a reader of 'load' (Ctrl-C to stop" in stderr
        assert "nothing was sent; start a reader first" in stderr.strip().splitlines()[-1]
        no_wait = await cli("generate", url, "load", "--create", "--count", "5", *rate, "--no-wait")
        assert no_wait.returncode == 3, no_wait.stderr
        assert (
            no_wait.stderr.decode()
            .strip()
            .splitlines()[-1]
            .endswith(
                "not sent: channel 'load' had no readers then (start a reader first; without "
                "--no-wait generate waits for one)"
            )
        )
    async with running("generate", url, "load", "--create", "--count", "5", "--rate", "50") as gen:
        sub = await cli("sub", url, "load", "--count", "5", "--wait-channel", "--policy", "block")
        assert len(json_lines(sub.stdout.decode())) == 5
        code, _, stderr = await gen.finish()
    assert code == 0, stderr
    assert "5 sent, 0 skipped" in stderr


# -- call --------------------------------------------------------------------------------------
class Daq:
    def rpc_my_echo(self, data: Any) -> list[Any]:
        return ["MY ECHO", data]

    async def rpc_read(self, n: int = 10) -> np.ndarray[Any, Any]:
        return np.arange(float(n))

    def rpc_fail(self) -> None:
        raise ValueError("the probe is unplugged")


async def test_call(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="daq") as daq:
        daq.expose(Daq())
        echo = await cli("call", url, "daq", "my_echo", "HALLO")
        assert echo.returncode == 0, echo.stderr
        assert json.loads(echo.stdout) == ["MY ECHO", "HALLO"]
        read = await cli("call", url, "daq", "read", "--kw", "n=3")
        assert json.loads(read.stdout) == [0.0, 1.0, 2.0]
        fail = await cli("call", url, "daq", "fail")
        assert fail.returncode == 1
        assert "ValueError: the probe is unplugged" in fail.stderr.decode()
        assert len(fail.stderr.decode().strip().splitlines()) == 1
        wrong = await cli("call", url, "daq", "my_echo", "1", "2")
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr.decode()


async def test_call_wait_provider_waits_for_a_provider_started_after_it(
    server: ts.Server,
) -> None:
    # A call started together with its provider failed at once ("no client named 'daq'");
    # then it waited, silent for 5 s, where sub --wait-channel says at once what it waits
    # for (a first hour).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with running("call", url, "daq", "my_echo", "HALLO", "--wait-provider") as call:
        assert call.process.stderr is not None
        said = b""
        with trio.fail_after(WAIT_S):
            while b"\n" not in said:
                chunk = await call.process.stderr.receive_some()
                assert chunk, said
                said += chunk
        assert b"call: waiting for a client named 'daq' to connect and expose methods" in said
        async with ts.open_client(url, name="daq") as daq:
            daq.expose(Daq())
            code, out, err = await call.finish()
    assert code == 0, err
    assert json.loads(out) == ["MY ECHO", "HALLO"]


async def test_call_wait_provider_gives_up_after_its_wait_timeout(server: ts.Server) -> None:
    # --timeout bounds the result only: a provider that never came held the command for good
    # (a new user's, ten minutes). Without --wait-provider, --wait-timeout is a usage error.
    assert server.tcp_url is not None
    url = server.tcp_url
    with trio.fail_after(WAIT_S):
        gave_up = await cli(
            "call", url, "thermo", "read", "--wait-provider", "--wait-timeout", "0.5"
        )
    assert gave_up.returncode == 1
    said = gave_up.stderr.decode()
    assert (
        "waiting for a client named 'thermo' to connect and expose methods (for up to 0.5 s)"
        in said
    )
    assert said.strip().endswith(
        "RpcError: no client named 'thermo' connected and exposed methods within 0.5 s "
        "(--wait-timeout)"
    ), said
    alone = await cli("call", url, "thermo", "read", "--wait-timeout", "0.5")
    assert alone.returncode == 2 and "give both" in alone.stderr.decode()


class Motor:
    async def rpc_scan(self, n: int = 5) -> AsyncIterator[float]:
        """Step through n positions."""
        for i in range(n):
            yield i / 2

    async def rpc_jams(self) -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("the motor is jammed")

    def rpc_where(self) -> float:
        return 1.5

    async def rpc_calibrate(self) -> None:
        await trio.sleep_forever()

    def rpc_move(self, position: float, timeout: float = 1.0) -> list[float]:
        """An instrument's own timeout: the motor's, not the call's."""
        return [position, timeout]

    async def rpc_steps(self, n: int, window: int = 1) -> AsyncIterator[int]:
        for i in range(n):
            yield i * window


async def test_call_prints_a_streaming_method_s_values_one_per_line(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="daq") as daq:
        daq.expose(Motor(), name="motor")
        listing = await cli("call", url, "daq")
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.decode().splitlines()
        assert (
            "motor.scan(n: int = 5) -> AsyncIterator[float]  [streams]  # Step through n "
            "positions." in lines
        )
        assert "motor.where() -> float" in lines  # one result: no mark
        # It used to say "use stream('scan')": Python advice in a shell.
        scan = await cli("call", url, "daq", "motor.scan", "3")
        assert scan.returncode == 0, scan.stderr
        assert scan.stdout.decode().splitlines() == ["0.0", "0.5", "1.0"]
        jams = await cli("call", url, "daq", "motor.jams")
        assert jams.returncode == 1 and jams.stdout.decode().splitlines() == ["1"]
        assert jams.stderr.decode().strip().splitlines() == [
            "trio-stream call: error: RemoteError: RuntimeError: the motor is jammed"
        ]
        wrong = await cli("call", url, "daq", "motor.scan", "1", "2")
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr.decode()


async def test_call_passes_a_methods_own_timeout_and_window_keywords(server: ts.Server) -> None:
    # `--kw timeout=30` collided with the proxy's per-call timeout: "got multiple values for
    # keyword argument 'timeout'" (exit 2), naming an internal class (lab persona).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="daq") as daq:
        daq.expose(Motor(), name="motor")
        move = await cli("call", url, "daq", "motor.move", "5", "--kw", "timeout=30")
        assert move.returncode == 0, move.stderr
        assert json.loads(move.stdout) == [5, 30]
        steps = await cli("call", url, "daq", "motor.steps", "3", "--kw", "window=10")
        assert steps.returncode == 0, steps.stderr
        assert steps.stdout.decode().splitlines() == ["0", "10", "20"]


async def test_call_without_an_answer_in_time_names_the_option(server: ts.Server) -> None:
    # It advised "a longer timeout=" (the Python keyword) and thread=True (a provider's).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="daq") as daq:
        daq.expose(Motor(), name="motor")
        slow = await cli("call", url, "daq", "motor.calibrate", "--timeout", "0.3")
    assert slow.returncode == 1
    assert slow.stderr.decode().strip().splitlines() == [
        "trio-stream call: error: no answer from daq.motor.calibrate within 0.3 s: the provider "
        "is slow or stuck (--timeout SECONDS for a long call)"
    ]


# -- the first hour: what a new user meets -------------------------------------------------------
async def test_pub_waits_for_a_reader_and_says_so(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with running("pub", url, "setpoint", "21.5", "--create") as pub:
        assert pub.process.stderr is not None
        with trio.fail_after(WAIT_S):
            said = (await pub.process.stderr.receive_some()).decode()
        assert "waiting for a reader of 'setpoint' (Ctrl-C to stop" in said
        sub = await cli("sub", url, "setpoint", "--count", "1")
        assert sub.returncode == 0, sub.stderr
        assert json_lines(sub.stdout.decode())[0]["data"] == 21.5
        code, _, _ = await pub.finish()
    assert code == 0


async def test_pub_without_readers_exits_3_in_one_line(server: ts.Server) -> None:
    assert server.tcp_url is not None
    for extra in (["--no-wait"], ["--wait-timeout", "0.2"]):
        result = await cli("pub", server.tcp_url, "empty", "1", "--create", *extra)
        assert result.returncode == 3, result.stderr
        lines = result.stderr.decode().strip().splitlines()
        assert "start a reader first" in lines[-1] and lines[-1].startswith("trio-stream pub: ")
    missing = await cli("pub", server.tcp_url, "no-such", "1")
    assert missing.returncode == 1
    assert (
        missing.stderr.decode()
        .strip()
        .endswith(
            "no channel named 'no-such' that you may write (--create creates it; a private "
            "channel needs its key: --key)"
        )
    )


async def test_a_private_channel_without_its_key_names_the_key(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("secret", public=False, key="k1")
        sub = await cli("sub", url, "secret", "--key", "wrong", "--count", "1")
        assert sub.returncode == 1
        assert "no channel named 'secret' that you may read" in sub.stderr.decode()
        assert "a private channel needs its key: --key" in sub.stderr.decode()
        pub = await cli("pub", url, "secret", "1", "--key", "wrong", "--create")
        assert pub.returncode == 1
        assert (
            pub.stderr.decode()
            .strip()
            .endswith(
                "channel 'secret' exists and is not yours to write: a private channel needs its "
                "key (--key); --create did not create it (the name is taken)"
            )
        )
        late = ["sub", url, "later", "--wait-channel", "--count", "1"]
        async with running(*late) as reader:
            assert reader.process.stderr is not None
            line = (await reader.process.stderr.receive_some()).decode()
            assert "waiting for channel 'later' (Ctrl-C to stop; a private channel also" in line
            await owner.create_channel("later")
            async with owner.publisher("later") as pub_:
                await pub_.wait_for_readers()
                await pub_.send(7)
            code, out, _ = await reader.finish()
        assert code == 0 and json_lines(out)[0]["data"] == 7


async def test_a_bad_stdin_line_is_named_by_its_number(server: ts.Server) -> None:
    assert server.tcp_url is not None
    result = await cli(
        "pub", server.tcp_url, "nums", "--create", "--no-wait", "--dtype", "float32",
        stdin=b"1\n2\nabc\n4\n",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "stdin line 3: cannot make an array of dtype float32 from 'abc'" in lines[0]
    assert "give each value as JSON, e.g. [1, 2, 3] for an array" in lines[0]


@pytest.mark.parametrize(
    ("value", "dtype", "says"),
    [
        ("[1, 2]", "object", "--dtype object cannot be sent: use a numeric, bool or complex"),
        ("[1, 2]", "U5", "--dtype <U5 cannot be sent"),
        ("[300]", "uint8", "out of bounds for uint8"),
        ("[1.5, 2]", "int8", "not every number fits int8 exactly"),
        ("[1e300]", "float32", "cannot make an array of dtype float32 from '[1e300]'"),
        ("[[1, 2], [3]]", "float32", "has an inhomogeneous shape after 1 dimensions."),
    ],
)
async def test_a_dtype_that_cannot_hold_the_value_is_one_line(
    server: ts.Server, value: str, dtype: str, says: str
) -> None:
    # A traceback for a dtype the codec refuses (object, text, structured) or a number out
    # of its range; 1.5 as int8 went out as 1 without a word.
    assert server.tcp_url is not None
    result = await cli("pub", server.tcp_url, "d", value, "--create", "--no-wait", "--dtype", dtype)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2, lines
    assert len(lines) == 1 and says in lines[0], lines


async def test_replay_waits_for_a_reader_by_default(server: ts.Server, tmp_path: Path) -> None:
    assert server.tcp_url is not None
    url, path = server.tcp_url, tmp_path / "r.tsdump"
    async with ts.open_client(url, name="daq") as daq:
        await daq.create_channel("src")
        async with running("dump", url, "src", str(path), "--count", "2") as dump:
            await wait_for_channel(daq, "src", readers=1)
            for i in range(2):
                await daq.publish("src", i)
            assert (await dump.finish())[0] == 0
    timed_out = await cli("replay", str(path), url, "dst", "--create", "--wait-timeout", "0.3")
    assert timed_out.returncode == 3
    assert "waiting for a reader of 'dst'" in timed_out.stderr.decode()
    async with running("replay", str(path), url, "dst", "--create", "--fast") as replay:
        sub = await cli("sub", url, "dst", "--count", "2", "--wait-channel")
        assert [m["data"] for m in json_lines(sub.stdout.decode())] == [0, 1]
        code, _, stderr = await replay.finish()
    assert code == 0, stderr
    # The reader it waited for leaves during the replay: exit 3, and the advice is not
    # "start a reader first" (one was there).
    async with ts.open_client(url, name="brief") as reader:
        await reader.create_channel("brief", public=True)
        async with running(
            "replay", str(path), url, "brief", "--fast", "--repeat", "20000"
        ) as replay:
            async with reader.subscribe("brief") as brief_sub:
                await brief_sub.receive()
            code, _, stderr = await replay.finish()
    assert code == 3
    assert "not sent for want of readers (its readers went away during the replay" in stderr


def test_tables_fit_80_columns_and_keep_the_ends_of_names() -> None:
    import io
    import time

    from rich.cells import cell_len
    from rich.console import Console

    from trio_stream.cli.inspect import channels_table, clients_table

    channel = ts.ChannelInfo(
        name="lab/detector-7/temperature-channel-0001", owner="acquisition-box-west-42",
        public=False, readers=3, writers=1, seq=123456789, rate_fps=12345.0,
        rate_bps=123456789.0, lost=987654, created=time.time(), lifetime=60.0, history=10,
        single_writer=True, keep=True,
    )  # fmt: skip
    client = ts.ClientInfo(
        id=4242, name="trio-stream-clients-with-a-long-name-xyz", address="127.0.0.1:48334",
        transport="tcp", connected_at=time.time(), subscriptions=(),
        publishers=("lab/detector-7/temperature-channel-0001",), methods=("read_temperature",),
    )  # fmt: skip
    for table, name, column, next_column in (
        (channels_table([channel], {channel.name: 1.5}), channel.name, "channel", "owner"),
        (channels_table([channel]), channel.owner, "owner", "/writers"),
        (clients_table([client]), client.name, "name", "address"),
    ):
        out = io.StringIO()
        Console(file=out, width=80, color_system=None).print(table)
        lines = out.getvalue().splitlines()
        assert max(cell_len(line) for line in lines) <= 80
        assert "…" not in out.getvalue()
        header = next(line for line in lines if f" {next_column}" in line)
        start, end = header.index(column), header.index(f" {next_column}")
        body = lines[lines.index(next(x for x in lines if x.startswith("─"))) + 1 :]
        # Wrapped, never cut: the column's lines put together are the whole name.
        assert "".join(line[start:end].strip() for line in body) == name


async def test_stats_watch_piped_prints_lines_at_once_and_a_last_line_on_sigterm(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    async with running("stats", server.tcp_url, "--watch", "--interval", "0.2") as watch:
        first = await watch.readline()  # not held back until the end
        assert " server " in first and "connections=" in first
        watch.process.send_signal(signal.SIGTERM)
        code, _, stderr = await watch.finish()
    assert code == 0
    # At least the update read above (the count used to be lost to the cancel: always 0).
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("trio-stream stats: stopped after")
    assert int(last.split("after ")[1].split()[0]) >= 1


async def test_rpc_example_with_its_name_taken_is_one_line(server: ts.Server) -> None:
    assert server.tcp_url is not None
    script = Path(__file__).parent.parent / "examples" / "rpc_service.py"
    async with ts.open_client(server.tcp_url, name="thermo"):
        with trio.fail_after(RUN_TIMEOUT_S):
            done = await trio.run_process(
                [sys.executable, str(script), server.tcp_url, "--role", "instrument"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert lines == [
        "rpc_service: NameInUse: a client named 'thermo' is connected already; pick another "
        "name (or close the one that has it: an earlier client of this program, say, made by "
        "a notebook cell run again)"
    ]


def test_ctrl_c_while_the_command_still_imports_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Importing the package takes most of a second; the installed command's entry point,
    # outside the package, catches a Ctrl-C pressed meanwhile. Here the import "is
    # interrupted" by a finder that raises as Python's SIGINT handler would.
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="trio-stream")
    assert script.value == "_trio_stream_entry:main"

    class CtrlC(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *_: object) -> None:
            if name == "trio_stream.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "trio_stream.cli")
    monkeypatch.setattr(sys, "meta_path", [CtrlC(), *sys.meta_path])
    assert script.load()() == 130
    assert capsys.readouterr().err == "\n"


# -- a new user's walkthrough ------------------------------------------------------------------
def write_one_value(command: str, url: str, channel: str, tmp_path: Path) -> list[str]:
    """The arguments of ``command`` (pub, generate or replay) writing one value."""
    path = tmp_path / "one.tsdump"
    path.write_bytes(_dump_bytes([1]))
    return {
        "pub": ["pub", url, channel, "1"],
        "generate": ["generate", url, channel, "--count", "1", "--shape", "1"],
        "replay": ["replay", str(path), url, channel, "--fast"],
    }[command]


@pytest.mark.parametrize("command", ["pub", "generate", "replay"])
async def test_create_with_key_gives_the_created_channel_that_key(
    command: str, server: ts.Server, tmp_path: Path
) -> None:
    # `--create --key K` created the channel without a key, silently: anyone could read it.
    assert server.tcp_url is not None
    url = server.tcp_url
    # --keep --history 1: the value waits in the channel for a reader, so no wait for one.
    created = ["--create", "--key", "mykey", "--keep", "--history", "1"]
    argv = write_one_value(command, url, "kt", tmp_path)
    result = await cli(*argv, *created)
    assert result.returncode == 0, result.stderr
    async with ts.open_client(url, name="reader") as reader:
        with pytest.raises(ts.AuthError):
            await reader.open_subscription("kt")
        async with reader.subscribe("kt", key="mykey"):
            pass


@pytest.mark.parametrize("command", ["pub", "generate", "replay"])
async def test_create_on_a_channel_that_exists_otherwise_is_refused(
    command: str, server: ts.Server, tmp_path: Path
) -> None:
    # `--create --private` on someone's public channel wrote to it, without a word.
    assert server.tcp_url is not None
    url = server.tcp_url
    argv = write_one_value(command, url, "shared", tmp_path)
    async with ts.open_client(url, name="someone") as someone:
        await someone.create_channel("shared", history=1)
        refused = await cli(*argv, "--create", "--private", "--history", "5", "--keep")
        assert refused.returncode == 1, refused.stderr
        line = refused.stderr.decode().strip()
        assert "channel 'shared' exists already, not as asked: --private (it is public); " in line
        assert "--history 5 (it keeps 1); --keep (it ends with its owner)." in line
        assert len(line.splitlines()) == 1, line
        # As it is: the options it has, or none, write to it.
        same = await cli(*argv, "--create", "--history", "1")
        assert same.returncode == 0, same.stderr


async def test_a_private_channel_created_with_key_is_read_with_that_key(server: ts.Server) -> None:
    # The reader was told the channel needs its key, and the writer waited for ever.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with running("pub", url, "priv1", "7", "--create", "--private", "--key", "s") as pub:
        assert pub.process.stderr is not None
        with trio.fail_after(WAIT_S):
            said = (await pub.process.stderr.receive_some()).decode()
        assert "waiting for a reader of 'priv1'" in said  # so the channel is there
        sub = await cli("sub", url, "priv1", "--key", "s", "--count", "1")
        assert sub.returncode == 0, sub.stderr
        assert json_lines(sub.stdout.decode())[0]["data"] == 7
        code, _, stderr = await pub.finish()
    assert code == 0, stderr


async def test_create_key_is_the_created_channel_s_key_when_both_are_given(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    both = ["--create", "--create-key", "made", "--key", "other", "--keep", "--history", "1"]
    result = await cli("pub", url, "two-keys", "1", *both)
    assert result.returncode == 0, result.stderr
    async with ts.open_client(url, name="reader") as reader:
        async with reader.subscribe("two-keys", key="made"):
            pass
        with pytest.raises(ts.AuthError):
            await reader.open_subscription("two-keys", key="other")


async def test_a_key_the_server_refuses_is_named_as_the_option(server: ts.Server) -> None:
    # It said "AuthError: channel 'keyed' needs its key: pass key=...": Python in a shell.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("keyed", key="k1")
        for argv, error in (
            (["sub", url, "keyed"], "channel 'keyed' needs its key: give it with --key"),
            (["sub", url, "keyed", "--key", "k2"], "wrong key for channel 'keyed': check --key"),
            (["pub", url, "keyed", "1"], "channel 'keyed' needs its key: give it with --key"),
            # No key opens the server's own channels: it sent users looking for one.
            (
                ["pub", url, "$stats", "1"],
                "channel '$stats' is the server's own: it is read-only (sub reads it)",
            ),
        ):
            result = await cli(*argv)
            assert result.returncode == 1
            assert result.stderr.decode().strip().splitlines() == [
                f"trio-stream {argv[0]}: error: {error}"
            ]


async def test_call_without_client_names_only_client_missing() -> None:
    # ARG is optional (call URL CLIENT [METHOD [ARG...]]), yet it was named as required too.
    result = await cli("call", "tcp://127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1] == (
        "trio-stream call: error: the following arguments are required: CLIENT"
    )


async def test_replay_of_a_file_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nonexist.tsdump"
    result = await cli("replay", str(path), "tcp://127.0.0.1:1", "ch")
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        f"trio-stream replay: error: cannot read {path}: no such file or directory"
    ]


async def test_dump_into_a_directory_that_is_not_there_is_one_line(
    server: ts.Server, tmp_path: Path
) -> None:
    assert server.tcp_url is not None
    path = tmp_path / "missing" / "x.tsdump"
    async with ts.open_client(server.tcp_url) as client:
        await client.create_channel("sine")
        result = await cli("dump", server.tcp_url, "sine", str(path))
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        f"trio-stream dump: error: cannot write {path}: no such file or directory"
    ]


async def test_a_bad_size_lists_the_sizes_it_takes() -> None:
    result = await cli("generate", "tcp://127.0.0.1:1", "ch", "--size", "10XB")
    assert result.returncode == 2
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last == f"trio-stream generate: error: argument --size: not a size: '10XB': {SIZE_UNITS}"


def test_the_sizes_the_size_error_lists_are_taken() -> None:
    examples = re.findall(r"\b\d[\w.]*", SIZE_UNITS.split("(")[0])
    assert examples == ["100", "64KiB", "16M", "1MB", "1.5GB"]
    assert [byte_size(e) for e in examples] == [100, 64 * 2**10, 16 * 2**20, 10**6, 15 * 10**8]
    for unit in ("K", "KiB", "M", "MiB", "G", "GiB", "kB", "MB", "GB", "B"):
        assert unit in re.split(r"[ /,;:()]+", SIZE_UNITS)
        assert byte_size(f"2{unit}") == byte_size(f"2{unit.lower()}") >= 2
    for text in ("nan", "inf", "10XB"):
        with pytest.raises(ValueError, match="not a size"):
            byte_size(text)


async def test_counts_of_one_are_singular(server: ts.Server, tmp_path: Path) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    pub = await cli("pub", url, "empty", "1", "--create", "--no-wait")
    assert pub.returncode == 3
    assert "error: 1 of 1 value not sent: channel 'empty'" in pub.stderr.decode()
    gen = await cli("generate", url, "empty", "--create", "--no-wait", "--count", "1")
    assert gen.returncode == 3
    assert "generated 1 frame of " in gen.stderr.decode()
    assert "error: 1 of 1 frame not sent: channel 'empty'" in gen.stderr.decode()
    path = tmp_path / "one.tsdump"
    path.write_bytes(_dump_bytes([1]))
    replay = await cli("replay", str(path), url, "kept", "--create", "--keep", "--history", "1")
    assert replay.returncode == 0, replay.stderr
    assert replay.stderr.decode().strip().splitlines()[-1] == "replayed 1 frame to 'kept'"


async def test_no_command_prints_the_commands() -> None:
    for argv in ([], ["--log-level", "info"]):
        result = await cli(*argv)
        assert result.returncode == 2
        stderr = result.stderr.decode()
        for command in COMMANDS:
            assert f"\n    {command} " in stderr
        assert "start here:" in stderr
        assert (
            stderr.strip().splitlines()[-1] == "trio-stream: error: give a COMMAND (listed above)"
        )
    assert (await cli("--version")).returncode == 0


@pytest.mark.parametrize("reader", [False, True])
async def test_a_bad_stdin_line_says_what_was_sent_before_it(
    server: ts.Server, reader: bool
) -> None:
    # Without readers the two lines before the bad one went nowhere too, and the error's
    # "nothing from this line on was sent" read as if they had been sent.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="reader") as client:
        await client.create_channel("lines")
        async with contextlib.AsyncExitStack() as stack:
            if reader:
                await stack.enter_async_context(client.subscribe("lines", policy="unbounded"))
            argv = ["pub", url, "lines", "-", "--dtype", "float32", "--no-wait"]
            result = await cli(*argv, stdin=b"1\n2\nabc\n4\n")
    assert result.returncode == 1
    error = result.stderr.decode().strip()
    assert "stdin line 3:" in error and "nothing from this line on was sent" in error
    before = "; and 2 of the 2 values before it were not sent: channel 'lines' had no readers then"
    assert error.endswith(before) != reader, error


@pytest.mark.server_options(max_frame_bytes=4096)
@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b"\x00\xff\xfe", "stdin line 2 is not UTF-8 text"),
        (b'"' + b"x" * 5000 + b'"', "stdin line 2: this value encodes to"),
    ],
)
async def test_a_stdin_line_the_client_refuses_is_named_by_its_number(
    server: ts.Server, line: bytes, said: str
) -> None:
    # Only a --dtype line was named: bytes that are not UTF-8, or a value over the frame
    # limit, were the client's bare error (the first with advice for the Python API).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="reader") as client:
        await client.create_channel("lines")
        async with client.subscribe("lines", policy="unbounded"):
            result = await cli("pub", url, "lines", stdin=b"1\n" + line + b"\n3\n")
    assert result.returncode == 1
    error = result.stderr.decode().strip()
    assert said in error and error.endswith("nothing from this line on was sent"), error
    assert "Traceback" not in error and "encode(" not in error


@pytest.mark.parametrize(
    "argv",
    [
        ("pub", "--no-wait", "--min-readers", "2", "c", "1"),
        ("generate", "--no-wait", "--min-readers", "2", "c"),
        ("replay", "--loop", "--repeat", "2", "f.tsdump"),
        ("replay", "--fast", "--speed", "3", "f.tsdump"),
    ],
)
async def test_options_that_contradict_each_other_are_a_usage_error(argv: tuple[str, ...]) -> None:
    # --no-wait --min-readers waited for the readers until the timeout; --loop ran for ever
    # whatever --repeat said; --fast took no notice of --speed: one option silently won.
    command, *options = argv
    url = "tcp://127.0.0.1:1"  # refused before any connection
    if command == "replay":
        result = await cli(command, options[-1], url, *options[:-1])
    else:
        result = await cli(command, url, *options)
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr.decode()


@pytest.mark.parametrize("prefix", ["$x", "", "a b"])
async def test_a_demo_prefix_that_cannot_name_its_channels_is_a_usage_error(prefix: str) -> None:
    # '$x' failed after "server is running", '' made channels named '/sine', and 'a b'
    # printed commands that do not work when copied.
    result = await cli("demo", "--prefix", prefix, "--tcp-port", "0", "--http-port", "off")
    assert result.returncode == 2
    assert "argument --prefix" in result.stderr.decode()
    assert b"running" not in result.stdout


async def test_stats_counts_the_channels_its_table_shows(server: ts.Server) -> None:
    # "channels 7" above a table of 4: the system channels were counted, not shown.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="watcher") as client:
        await client.create_channel("visible/one")
        await client.create_channel("visible/two")
        listed = await client.channels()
        system = sum(c.name.startswith("$") for c in listed)
        assert system > 0
        table = await cli("stats", url)
        assert table.returncode == 0, table.stderr
        first = table.stdout.decode().splitlines()[0]
        assert f"  channels 2 (+{system} system)" in first
        everything = await cli("stats", url, "--system")
        assert f"  channels {len(listed)}\n" in everything.stdout.decode()
        watch = await cli("stats", url, "--watch", "--count", "1")  # plain lines in a pipe
        lines = watch.stdout.decode().splitlines()
        assert f" channels=2 system={system} " in lines[0]
        assert len(lines) == 3


async def test_channels_says_the_system_channels_it_leaves_out(server: ts.Server) -> None:
    # The README said `channels` shows them apart as `(+3 system)`; it printed "no channels"
    # on a server that had three, and a table without a word of them.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="watcher") as client:
        system = sorted(c.name for c in await client.channels() if c.name.startswith("$"))
        assert system == ["$channels", "$clients", "$stats"]
        said = "+3 system channels: $channels, $clients, $stats; --system lists them"
        bare = await cli("channels", url)
        assert bare.returncode == 0, bare.stderr
        assert bare.stdout.decode().splitlines() == [f"no channels ({said})"]
        await client.create_channel("visible/one")
        table = await cli("channels", url)
        lines = table.stdout.decode().splitlines()
        assert "visible/one" in table.stdout.decode() and lines[-1] == f"({said})", lines
        everything = (await cli("channels", url, "--system")).stdout.decode()
        assert all(name in everything for name in system)
        assert "--system lists them" not in everything
        listed = json.loads((await cli("channels", url, "--json")).stdout)
        assert [c["name"] for c in listed] == ["visible/one"]  # scripts: the list alone


def test_stats_says_which_of_the_frames_lost_are_on_channels_its_table_leaves_out() -> None:
    # "lost 54" above a table whose lost column added up to 45: the other 9 were lost on
    # system channels, which only --system shows.
    stats = ts.ServerStats(frames_lost=54)
    text = inspect_cli.stats_text("s", stats, "3 (+3 system)", hidden_lost=9).plain
    assert "lost 54 (9 on system channels: --system)  buffered" in text
    assert "lost 54  buffered" in inspect_cli.stats_text("s", stats, "6").plain


async def test_sub_takes_sender_and_view(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with (
        ts.open_client(url, name="w1") as w1,
        ts.open_client(url, name="w2") as w2,
    ):
        await w1.create_channel("mixed")
        argv = ["sub", url, "mixed", "--sender", "w1", "--view", "::2", "--count", "2", "--full"]
        async with running(*argv) as sub, w1.publisher("mixed") as p1, w2.publisher("mixed") as p2:
            await wait_for_channel(w1, "mixed", readers=1)
            for i in range(2):
                await p2.send(np.arange(4) + 100)
                await p1.send(np.arange(5) + 10 * i)
            code, out, stderr = await sub.finish()
    assert code == 0, stderr
    messages = json_lines(out)
    assert [m["sender"] for m in messages] == ["w1", "w1"]
    assert [m["data"] for m in messages] == [[0, 2, 4], [10, 12, 14]]


async def test_sub_says_when_its_sender_writes_nothing_there(server: ts.Server) -> None:
    # A --sender typo printed nothing at all, for good.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="w1") as w1:
        await w1.create_channel("ch")
        argv = ["sub", server.tcp_url, "ch", "--sender", "wl", "--duration", "0.5"]
        async with w1.publisher("ch") as pub, running(*argv) as sub:
            await pub.send(1)
            code, out, stderr = await sub.finish()
    assert code == 0 and out == "", stderr
    assert "no client named 'wl' writes to 'ch' (its writers now: w1); waiting for" in stderr


async def test_sub_sender_of_another_node_is_not_said_to_write_nothing(
    redis_server: RedisServer,
) -> None:
    # Another node's clients are listed without what they write: their writer was said to
    # write nothing while its frames printed (the review of the change).
    async with (
        two_nodes(redis_server) as (url_a, url_b),
        ts.open_client(url_a, name="sensor") as sensor,
    ):
        await sensor.create_channel("ch")
        argv = ["sub", url_b, "ch", "--sender", "sensor", "--count", "1"]
        async with sensor.publisher("ch") as pub, running(*argv) as sub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
            await pub.send(1)
            code, out, stderr = await sub.finish()
    assert code == 0 and json_lines(out)[0]["sender"] == "sensor", stderr
    assert "no client named" not in stderr


def test_subscription_options_reach_the_subscription() -> None:
    args = parse_command_line(
        build_parser(),
        ["dump", "tcp://h:1", "ch", "f", "--sender", "cam", "--block-timeout", "0.5",
         "--view", "10:20,::-1,1::3"],
    )  # fmt: skip
    kwargs = subscription_kwargs(args)
    assert (kwargs["sender"], kwargs["block_timeout"]) == ("cam", 0.5)
    assert kwargs["view"] == ts.View(
        slices=(slice(10, 20), slice(None, None, -1), slice(1, None, 3))
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--block-timeout", "1"],
            "trio-stream sub: error: --block-timeout goes with --policy block",
        ),
        (["--view", "5"], "argument --view: not a view: '5': give slices"),
        (["--view", "::0"], "argument --view: not a view: '::0': slice step cannot be zero"),
    ],
)
async def test_sub_option_misuse_is_a_usage_error(
    argv: list[str], error: str, server: ts.Server
) -> None:
    assert server.tcp_url is not None
    result = await cli("sub", server.tcp_url, "ch", *argv)
    assert result.returncode == 2
    assert error in result.stderr.decode().strip().splitlines()[-1]


def test_tables_at_80_columns_break_no_word_that_fits() -> None:
    # rich broke words mid-way ("subscript/ions", "publishin/g", "demo/coun/ter") and
    # cropped the last column while other columns had room.
    import io
    import time

    from rich.console import Console

    from trio_stream.cli.inspect import clients_table

    def reading(channel: str) -> tuple[ts.SubscriptionInfo, ...]:
        return (ts.SubscriptionInfo(channel=channel, policy="drop_oldest", size=100),)

    now = time.time()
    clients = [
        ts.ClientInfo(
            id=1, name="demo-writer", address="127.0.0.1:52192", transport="tcp",
            connected_at=now - 300, publishers=("demo/counter", "demo/image", "demo/sine"),
        ),
        ts.ClientInfo(
            id=6, name="trio-stream-sub-13469", address="127.0.0.1:43060", transport="ws",
            connected_at=now - 2, subscriptions=reading("demo/counter"),
        ),
        ts.ClientInfo(
            id=9, name="trio-stream-clients-123456", address="127.0.0.1:43088",
            transport="tcp", connected_at=now,
        ),
    ]  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(clients_table(clients))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    words = {word for line in lines for word in line.split()}
    assert {"id", "name", "address", "via", "connected", "reading", "writing"} <= words
    assert {"demo/counter,", "demo/image,", "demo/sine", "(drop_oldest", "100)"} <= words
    assert {"127.0.0.1:52192", "demo-writer"} <= words
    # Names break only when every column is down to its longest word, and after a "-".
    assert {"trio-stream-", "sub-13469", "clients-123456"} <= words


def test_a_word_that_must_break_breaks_after_a_separator() -> None:
    assert wrap("lab/detector-7/temperature-channel-0001", 12).splitlines() == [
        "lab/", "detector-7/", "temperature-", "channel-0001",
    ]  # fmt: skip
    assert wrap("demo/counter (drop_oldest 100)", 12).splitlines() == [
        "demo/counter", "(drop_oldest", "100)",
    ]  # fmt: skip
    assert wrap("abcdefghij", 4).splitlines() == ["abcd", "efgh", "ij"]


async def test_a_piped_table_is_whole_unless_columns_says_how_wide(server: ts.Server) -> None:
    # Off a terminal a table is laid out 200 columns wide, so that a pipe or a file gets
    # names whole; COLUMNS, when set, is the width asked for (it was ignored).
    assert server.tcp_url is not None
    name = "lab/detector-7/a-channel-name-long-enough-to-wrap-at-60"
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        await owner.create_channel(name)
        unset = {k: v for k, v in ENV.items() if k != "COLUMNS"}
        with trio.fail_after(RUN_TIMEOUT_S):
            whole = await trio.run_process(
                [*CLI, "channels", server.tcp_url], capture_stdout=True, env=unset
            )
        narrow = await cli("channels", server.tcp_url, env={"COLUMNS": "60"})
    assert narrow.returncode == 0, narrow.stderr
    assert name in whole.stdout.decode()
    lines = narrow.stdout.decode().splitlines()
    assert max(len(line) for line in lines) <= 60
    assert name not in narrow.stdout.decode()  # wrapped to fit


def test_raw_text_takes_an_integer_dtype_as_numpy_parses_it() -> None:
    # --raw (or a JSON string) hands numpy text: the exactness check of numbers must not
    # refuse it ("5" is 5; "1.5" numpy refuses by itself).
    args = argparse.Namespace(raw=True, dtype=np.dtype("int32"))
    assert _value("5", args).tolist() == 5
    with pytest.raises(UsageError, match=r"cannot make an array of dtype int32 from '1\.5'"):
        _value("1.5", args)


@pytest.mark.parametrize(
    ("gap", "marked"),
    [
        (None, ts.Gap("reset", None, 0)),
        # The client reconnected before the new life's first frame: still a reset (the seqs
        # started again), with what was replayed kept. It stayed "resumed" (a review).
        (ts.Gap("resumed", 2, 5), ts.Gap("reset", None, 5)),
        (ts.Gap("reset", None, 3), ts.Gap("reset", None, 3)),
    ],
)
def test_the_first_message_of_a_channels_new_life_is_marked_a_reset(
    gap: ts.Gap | None, marked: ts.Gap
) -> None:
    msg = ts.Message(1.5, 1, "c", "w", 0.0, 0, gap)
    assert marked_new_life(msg) == msg._replace(gap=marked)


# -- closed streams, stdin in batches, typos and bad bytes (a script-writing user) -------------
async def cli_with_closed(stream: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run one command with ``stream`` (``stdin`` or ``stdout``) closed, as ``<&-``/``>&-``."""
    redirect = "<&-" if stream == "stdin" else ">&-"
    with trio.fail_after(RUN_TIMEOUT_S):
        return await trio.run_process(
            ["sh", "-c", f'exec "$@" {redirect}', "sh", *CLI, *args],
            capture_stdout=stream != "stdout",
            capture_stderr=True,
            check=False,
            env=ENV,
        )


@pytest.mark.parametrize(
    ("stream", "argv"),
    [
        ("stdin", ("pub", "{url}", "closed", "-")),
        ("stdout", ("sub", "{url}", "closed", "--count", "1")),
        ("stdout", ("channels", "{url}")),
        ("stdout", ("dump", "{url}", "closed", "-")),
        ("stdout", ("show", "{file}")),
    ],
)
async def test_a_closed_stdin_or_stdout_is_one_line(
    server: ts.Server, tmp_path: Path, stream: str, argv: tuple[str, ...]
) -> None:
    # Python makes a closed stream None: the commands crashed with a 20-line AttributeError
    # ('NoneType' object has no attribute 'isatty'/'flush'/'write'), and channels printed
    # nothing and exited 0.
    assert server.tcp_url is not None
    recording = tmp_path / "r.tsdump"
    recording.write_bytes(b"")
    args = [a.format(url=server.tcp_url, file=recording) for a in argv]
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        await owner.create_channel("closed")
        result = await cli_with_closed(stream, *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines() == [
        f"trio-stream {argv[0]}: error: {stream} is closed: "
        + (
            "give VALUE, or pipe values in"
            if stream == "stdin"
            else "the command prints its output there; redirect it instead (>/dev/null to drop it)"
        )
    ]


def stdin_of(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: bytes) -> None:
    """``data`` as sys.stdin (a file: readline and fileno as a pipe's)."""
    path = tmp_path / "stdin"
    path.write_bytes(data)
    file = open(path, encoding="utf-8", errors="surrogateescape", newline="\n")  # noqa: SIM115
    monkeypatch.setattr(sys, "stdin", file)


async def read_values(**options: Any) -> list[tuple[int | None, Any]]:
    args = SimpleNamespace(value="-", raw=False, dtype=None, **options)
    return [value async for value in pubsub._values(cast(argparse.Namespace, args))]


async def test_pub_reads_stdin_in_batches_not_a_thread_hop_per_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # One worker-thread hop per line: `seq 100000 | trio-stream pub ...` took 32 s, 15-25
    # times a SyncClient script's time.
    stdin_of(monkeypatch, tmp_path, b"".join(b"%d\n" % n for n in range(10_000)))
    hops = 0
    run_sync = trio.to_thread.run_sync

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    values = await read_values()
    assert values == [(n + 1, n) for n in range(10_000)]
    assert hops < 10, hops


async def test_pub_reads_stdin_lines_as_before_across_its_chunks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Read in chunks: a line longer than one, CRLF, blank lines (skipped but counted), a last
    # line without its end of line; a bad byte is named by its line and character.
    long = "x" * (pubsub.STDIN_CHUNK_BYTES * 2 + 7)
    stdin_of(monkeypatch, tmp_path, f'1\r\n\n  \n"{long}"\n[2, 3]\nend'.encode())
    assert await read_values() == [(1, 1), (4, long), (5, [2, 3]), (6, "end")]
    stdin_of(monkeypatch, tmp_path, b"1\n\xc3\xa9\xff\n3\n")  # (c3 a9: an e-acute)
    with pytest.raises(CliError, match=r"^stdin line 2 is not UTF-8 text .* at character 2\)"):
        await read_values()


def test_sub_json_says_that_sub_prints_json_already(capsys: pytest.CaptureFixture[str]) -> None:
    # It said "(did you mean --token?)".
    for argv in (["sub", "tcp://127.0.0.1:9870", "ch", "--json"], ["show", "r.tsdump", "--json"]):
        command = argv[0]
        with pytest.raises(SystemExit) as exit_info:
            parse_command_line(build_parser(), argv)
        assert exit_info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(
            f"trio-stream {command}: error: unrecognized arguments: --json ({command} prints "
            "JSON lines already, one "
        ), last
        assert "did you mean" not in last


@pytest.mark.parametrize(
    ("argv", "name", "at"),
    [
        (("pub", "tcp://127.0.0.1:9870", "ch", "\udcff"), "VALUE", 1),
        (("pub", "tcp://127.0.0.1:9870", "c\udcffh", "1"), "CHANNEL", 2),
        (("sub", "tcp://127.0.0.1:9870", "ch", "--key", "k\udcff"), "--key", 2),
    ],
)
def test_bytes_that_are_not_utf8_in_an_argument_are_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], name: str, at: int
) -> None:
    # `pub URL ch $'\xff'` got the codec's advice for Python code ("repair the text first,
    # e.g. text.encode('utf-8', 'backslashreplace')...").
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(build_parser(), argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"trio-stream {argv[0]}: error: argument {name}: not UTF-8 text (a byte that is not, "
        f"at character {at}): give it as UTF-8 (convert it first, e.g. with iconv -t utf-8)"
    )


def test_a_path_argument_may_hold_any_bytes() -> None:
    # A file name is the file system's business (show FILE, dump FILE, --tls-ca FILE).
    args = parse_command_line(build_parser(), ["show", "r\udcff.tsdump"])
    assert str(args.file) == "r\udcff.tsdump"


async def test_a_mistyped_channel_is_named_with_the_one_meant(server: ts.Server) -> None:
    # "did you mean 'demo/counter'?" came only in the warning logged 5 s into a
    # --wait-channel wait.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        await owner.create_channel("demo/counter")
        read = await cli("sub", server.tcp_url, "demo/countr")
        written = await cli("pub", server.tcp_url, "demo/countr", "1")
    assert read.returncode == written.returncode == 1
    assert read.stderr.decode().strip() == (
        "trio-stream sub: error: no channel named 'demo/countr' that you may read; did you "
        "mean 'demo/counter'? (else --wait-channel waits for it; a private channel needs its "
        "key: --key)"
    )
    assert "; did you mean 'demo/counter'? (else --create creates it;" in written.stderr.decode()


async def test_a_channel_named_like_a_pattern_is_said_to_be_a_name(server: ts.Server) -> None:
    # `sub URL 'lab/*'` (Redis's PSUBSCRIBE, NATS's wildcards) said only that no such channel
    # exists, where the library's error says names are exact (a new user).
    assert server.tcp_url is not None
    read = await cli("sub", server.tcp_url, "lab/*", "--count", "1")
    assert read.returncode == 1
    assert (
        read.stderr.decode()
        .strip()
        .endswith(
            "; channel names are exact, not patterns: `trio-stream sub URL --match 'lab/*'` "
            "reads every channel that matches"
        )
    ), read.stderr


async def test_sub_waiting_for_its_channel_to_come_back_says_so_in_its_own_words(
    url: str,
) -> None:
    # After an end it logged "<timestamp> WARNING trio-stream sub: still waiting for channel
    # 'x' to be created (nobody has created it yet ...)": another style, and untrue.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("goes")
        async with running("sub", url, "goes", "--wait-channel") as sub:
            await one_value_then_the_end(owner, "goes")
            await trio.sleep(WAIT_CHANNEL_WARN_S + 1.5)
            sub.process.send_signal(signal.SIGINT)
            code, stdout, stderr = await sub.finish()
    assert code == 130, stderr
    assert [m["data"] for m in json_lines(stdout)] == [1]
    assert stderr.strip().splitlines() == [
        "trio-stream sub: channel 'goes' was deleted (reading on when it is back)",
        "trio-stream sub: still waiting for channel 'goes' to come back (Ctrl-C to stop)",
    ], stderr


async def test_call_with_arguments_that_do_not_fit_says_what_to_type(server: ts.Server) -> None:
    # It advised "make a new proxy with rpc('daq')": Python, and meaningless here (the
    # command made its proxy a moment before).
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="daq") as daq:
        daq.expose(Daq())
        wrong = await cli("call", url, "daq", "my_echo", "1", "2")
    assert wrong.returncode == 2
    assert wrong.stderr.decode().strip().splitlines() == [
        "trio-stream call: error: daq.my_echo(data: Any) -> list[Any]: too many positional "
        f"arguments; `trio-stream call {url} daq` lists its methods and their arguments"
    ]


def test_a_table_too_narrow_for_its_columns_shows_each_row_as_a_block() -> None:
    # At 40 columns `channels` broke its headers ("chan/nel", "owne/r") and numbers
    # ("0.0/" "s 0") into columns four characters wide.
    import io
    import time

    from rich.console import Console

    from trio_stream.cli.inspect import channels_table, clients_table

    channel = ts.ChannelInfo(
        name="sensors.temperature.room_a", owner="maker", public=True, readers=2, writers=1,
        seq=1234, rate_fps=1.5, rate_bps=13.0, lost=7, created=time.time(), history=1,
        keep=True, meta={"units": "degC", "description": "room A air temperature"},
    )  # fmt: skip
    client = ts.ClientInfo(
        id=8, name="trio-stream-clients-15837", address="127.0.0.1:47644", transport="tcp",
        connected_at=time.time(),
    )  # fmt: skip

    def shown(table: object, width: int) -> list[str]:
        out = io.StringIO()
        Console(file=out, width=width, color_system=None).print(table)
        return out.getvalue().splitlines()

    lines = shown(channels_table([channel, channel]), 40)
    assert max(len(line) for line in lines) <= 40
    assert lines[:7] == [
        "channels",
        "sensors.temperature.room_a",
        "  owner            maker",
        "  readers/writers  2/1",
        "  rate             1.5/s 13 B/s",
        "  seq              1234",
        "  lost             7",
    ]
    assert lines.count("sensors.temperature.room_a") == 2 and "" in lines  # a block a row
    assert shown(clients_table([client]), 40)[1:3] == [
        "id 8",
        "  name       trio-stream-clients-15837",
    ]
    # Wide enough for every column at its floor: the table, as before.
    wide = shown(channels_table([channel]), 80)
    assert any(line.split()[:2] == ["channel", "owner"] for line in wide)
    assert any(line.startswith("─") for line in wide)
