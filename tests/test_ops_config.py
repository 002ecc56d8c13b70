"""What an operator configures and reads: tokens from the environment, the banner, the
connection gauges of /metrics, Host names with a trailing dot, the config file and --help,
and the log's timestamps."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from test_host_check import get_head, raw_request

import trio_stream as ts
from trio_stream.cli import build_parser
from trio_stream.cli._run import UsageError
from trio_stream.cli._server_options import server_config
from trio_stream.cli.serve import _auth, _log_times_with_offset

CLI = [sys.executable, "-m", "trio_stream"]
# Not the checkout: "-m" puts the working directory first on sys.path, before $PYTHONPATH.
CWD = Path(__file__).resolve().anchor
RUN_TIMEOUT_S = 20.0
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("TRIO_STREAM_TOKEN", "TRIO_STREAM_ADMIN_TOKEN", "COLUMNS", "LINES")
}


# -- tokens from the environment -------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["TRIO_STREAM_TOKEN", "TRIO_STREAM_ADMIN_TOKEN"])
def test_a_token_variable_set_but_empty_is_refused_naming_it(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A secret that failed to render: the server started with no token, silently, while
    # --token "" is refused.
    monkeypatch.setenv(variable, "")
    with pytest.raises(UsageError, match=rf"^\${variable} is set but empty: give it a token"):
        server_config(build_parser().parse_args(["serve"]))
    # The flag wins over the variable: then it is not used, and not refused.
    flag = "--token" if variable == "TRIO_STREAM_TOKEN" else "--admin-token"
    config = server_config(build_parser().parse_args(["serve", flag, "x" * 20]))
    assert getattr(config, flag[2:].replace("-", "_")) == "x" * 20
    monkeypatch.setenv(variable, "y" * 20)
    config = server_config(build_parser().parse_args(["serve"]))
    assert getattr(config, flag[2:].replace("-", "_")) == "y" * 20
    monkeypatch.delenv(variable)
    assert (
        getattr(server_config(build_parser().parse_args(["serve"])), flag[2:].replace("-", "_"))
        is None
    )


async def test_serve_with_an_empty_token_variable_is_one_line_and_exit_2() -> None:
    with trio.fail_after(RUN_TIMEOUT_S):
        done = await trio.run_process(
            [*CLI, "serve", "--tcp-port", "0", "--http-port", "off"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**ENV, "TRIO_STREAM_TOKEN": ""},
            cwd=CWD,
        )
    assert done.returncode == 2, done
    assert done.stderr.decode().splitlines() == [
        "trio-stream serve: error: $TRIO_STREAM_TOKEN is set but empty: give it a token (16 or "
        "more random characters), or unset it for a server that asks none"
    ]
    assert done.stdout == b""  # never started


def test_the_banner_says_whether_a_token_is_required_never_the_token() -> None:
    assert _auth(ts.ServerConfig()) == "none (anyone who can connect can read and write)"
    secret, admin = "s3cret-" * 3, "adm1n-" * 3
    assert _auth(ts.ServerConfig(token=secret)) == "token required"
    both = _auth(ts.ServerConfig(token=secret, admin_token=admin))
    assert both == "token required; admin actions with the admin token"
    assert secret not in both and admin not in both


async def test_serve_prints_its_auth_in_the_banner() -> None:
    token = "t0ken-t0ken-t0ken"
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--tcp-port", "0", "--http-port", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**ENV, "TRIO_STREAM_TOKEN": token},
        cwd=CWD,
    )
    try:
        assert process.stdout is not None
        out = b""
        with trio.fail_after(RUN_TIMEOUT_S):
            while b"Ctrl-C" not in out:
                chunk = await process.stdout.receive_some()
                assert chunk, out
                out += chunk
        assert "\n  auth:      token required\n" in out.decode()
        assert token.encode() not in out
    finally:
        process.kill()
        with trio.move_on_after(RUN_TIMEOUT_S):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


# -- /metrics counts what the connection limits count ----------------------------------------------
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? -?[0-9.e+-]+$'
)


def check_exposition(text: str) -> dict[str, str]:
    """The text format, strictly (every family HELP and TYPE once, before its samples; no
    sample twice): the samples, by name and labels."""
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in declared and kind in ("gauge", "counter"), line
            declared[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match is not None, line
            assert match["name"] in declared and match["name"] in helped, line
            key, value = line.rsplit(" ", 1)
            assert key not in samples, line
            samples[key] = value
    return samples


async def metrics(server: ts.Server) -> dict[str, str]:
    answer = await raw_request(server, get_head("/metrics", "127.0.0.1"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return check_exposition(body.decode())


@pytest.fixture
def sockets() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


async def test_metrics_count_connections_as_the_limits_do(
    nursery: trio.Nursery, sockets: ExitStack
) -> None:
    # 150 TCP connections without a hello and 40 idle HTTP ones read as 2 connections, while
    # the next client was 8 from the per-address limit (an operator).
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=0, max_connections_per_address=50
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    tcp_port = int(server.tcp_url.rsplit(":", 1)[1])
    http_port = int(server.http_url.rstrip("/").rsplit(":", 1)[1])
    async with ts.open_client(server.tcp_url, name="one"):
        for port, count in ((tcp_port, 12), (http_port, 5)):
            for _ in range(count):
                sockets.enter_context(socket.create_connection(("127.0.0.1", port)))
        with trio.fail_after(RUN_TIMEOUT_S):
            while server.admission.total < 1 + 12 + 5:  # noqa: ASYNC110 (the accepts)
                await trio.sleep(0.01)
        samples = await metrics(server)
    assert samples["trio_stream_connections"] == "1"  # as before: clients past their hello
    assert samples['trio_stream_open_connections{transport="tcp"}'] == "13"
    assert samples['trio_stream_open_connections{transport="http"}'] == "6"  # this request's too
    assert samples["trio_stream_open_connections_largest_per_address"] == "19"
    assert samples["trio_stream_max_connections_per_address"] == "50"
    assert samples["trio_stream_max_connections"] == str(config.max_connections)
    sockets.close()
    with trio.fail_after(RUN_TIMEOUT_S):
        while server.admission.total:  # noqa: ASYNC110 (the closes)
            await trio.sleep(0.01)
    assert server.admission.by_transport == {"tcp": 0, "http": 0}
    await server.aclose()


# -- a Host name with its trailing dot -------------------------------------------------------------
async def test_a_host_name_with_its_root_dot_is_the_same_host(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(
        host="127.0.0.1",
        tcp_port=None,
        http_port=0,
        allowed_hosts=("ctl.lab.example", "dotted.lab.example."),
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    port = server.http_url.rstrip("/").rsplit(":", 1)[1]
    for host, status in [
        ("ctl.lab.example", 200),
        ("ctl.lab.example.", 200),  # was 403
        (f"ctl.lab.example.:{port}", 200),
        ("CTL.lab.example.", 200),
        ("dotted.lab.example", 200),  # allowed with its dot: the same name
        ("dotted.lab.example.", 200),
        ("ctl.lab.example..", 403),  # no host name
        ("other.lab.example.", 403),
        ("localhost.", 200),
    ]:
        answer = await raw_request(server, get_head("/metrics", host))
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (host, answer[:80])
    await server.aclose()


# -- the config file and --help --------------------------------------------------------------------
def test_log_level_in_the_config_file_says_where_it_goes(tmp_path: Path) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text('log_level = "info"\n')
    args = build_parser().parse_args(["serve", "--config", str(config_file)])
    with pytest.raises(UsageError) as refused:
        server_config(args)
    assert "unknown setting" not in str(refused.value)
    assert "give --log-level on the command line" in str(refused.value)


def test_serve_help_says_what_the_config_file_and_the_admin_token_take() -> None:
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(out.getvalue().split())
    assert "the same settings as the flags, named" not in text
    assert 'the same settings as the flags of the "server" group above' in text
    assert "Not --log-level" in text
    # What admin.py allows (ACTIONS): the README said "call" too, --help did not.
    assert (
        "allows the admin actions to whoever gives it: publish to any channel, delete any "
        "channel, disconnect any client, call any exposed method"
    ) in text
    assert "SIGHUP" in text


# -- the log's timestamps --------------------------------------------------------------------------
def test_server_log_lines_carry_their_utc_offset() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    other = logging.StreamHandler(io.StringIO())  # another's, with its own format: left alone
    theirs = logging.Formatter("%(levelname)s %(message)s")
    other.setFormatter(theirs)
    root.addHandler(handler)
    root.addHandler(other)
    try:
        _log_times_with_offset()
        assert other.formatter is theirs
        logging.getLogger("trio_stream.test").warning("hello")
    finally:
        root.removeHandler(handler)
        root.removeHandler(other)
    line = stream.getvalue().strip()
    match = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})([+-]\d{4}) WARNING ", line)
    assert match is not None, line
    assert match[3] == time.strftime("%z", time.localtime())
