"""Every code block and command of README.md, and every example of the ``--help`` texts, run
against live servers, verbatim but for the substitutions below, and checked against what
they say they print.

What is not re-run here, and why:
- the README's first block (the install + demo command and ``bash scripts/test``): they are
  what installs the project and runs this test;
- the ``html``/``js`` blocks: tests/test_web_pages_browser.py runs them in Chromium, taking
  them from README.md by their first line (checked below).

Substitutions (the only changes made to the text before it runs):
- ports: the documented ``127.0.0.1:9870``/``:9871`` become the ports of the demo server this
  test starts (free ports picked at start, not the defaults, which a developer's own server
  may hold); ``daq.lab:9870`` is that demo server too, ``web.lab:9870`` a second server;
- ``--host 0.0.0.0`` becomes ``--host 127.0.0.1`` (tests stay on loopback), and ``serve`` or
  ``demo`` without port flags get ``--tcp-port 0 --http-port 0``;
- ``trio-stream`` runs from this interpreter's ``bin`` directory, put first on PATH as
  ``. .venv/bin/activate`` does (the README says to do that).

Commands that run until stopped (demo, serve, dump without a bound, bridge, sub without
--count, generate without --count) run for a few seconds and are stopped with SIGINT, their
Ctrl-C; they must then exit 0 (or 130) without a traceback. A command that needs a reader
(pub, replay, generate) gets one started first, as the README says to.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import trustme
from redis_server import running_redis_server

import trio_stream as ts
from trio_stream._server.wrong_tokens import short_token_warning
from trio_stream.cli import build_parser

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
ENV = {
    **{k: v for k, v in os.environ.items() if k != "TRIO_STREAM_TOKEN"},
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "COLUMNS": "80",
}
RUN_S = 20.0  # a command that ends by itself, start to end
LONG_RUNNING_S = 1.8  # how long a command that runs until Ctrl-C is left running
START_S = 15.0  # a server's start, up to its "Press Ctrl-C" line


# -- the README's blocks ---------------------------------------------------------------------------
@dataclass
class Block:
    lang: str
    text: str
    line: int  # where it starts in README.md, for messages

    @property
    def first(self) -> str:
        return self.text.splitlines()[0]


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```") and len(lines[i]) > 3:
            start, lang, body = i, lines[i][3:].strip(), []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(lang, "\n".join(body) + "\n", start + 1))
        elif lines[i].startswith("```"):
            raise AssertionError(f"README.md:{i + 1}: a code block without a language")
        i += 1
    return blocks


def without_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """A command's leading ``NAME=value`` words (its environment, as a shell reads them) and
    the rest."""
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        name, _, value = words[0].partition("=")
        env[name] = value
        words = words[1:]
    return env, words


def commands_of(text: str) -> list[tuple[str, str]]:
    """(command, its comment) for each line of a shell block or an epilog example."""
    out: list[tuple[str, str]] = []
    joined = re.sub(r"\\\n\s*", "", text)  # continuation lines
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        command, _, comment = line.partition("  #")
        out.append((command.strip(), comment.strip()))
    return out


# -- live servers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Servers:
    tcp: int
    http: int
    web_tcp: int  # the second server, "web.lab"
    cwd: Path
    demo_lines: list[str] = field(default_factory=list)  # what the demo printed first

    def substitute(self, text: str) -> str:
        text = text.replace("daq.lab:9870", f"127.0.0.1:{self.tcp}")
        text = text.replace("web.lab:9870", f"127.0.0.1:{self.web_tcp}")
        text = text.replace("127.0.0.1:9870", f"127.0.0.1:{self.tcp}")
        text = text.replace("127.0.0.1:9871", f"127.0.0.1:{self.http}")
        return text.replace("--host 0.0.0.0", "--host 127.0.0.1")


class Process:
    def __init__(self, command: str, cwd: Path, *, stdin: bytes | None = None) -> None:
        self.command = command
        # Only a pipeline needs a shell; anything else runs as itself, so that Ctrl-C (SIGINT
        # to the process group) reaches the command and its exit code is the command's own.
        pipeline = "|" in command
        self.popen = subprocess.Popen(
            command if pipeline else without_env(shlex.split(command))[1],
            shell=pipeline,
            cwd=cwd,
            env=ENV if pipeline else {**ENV, **without_env(shlex.split(command))[0]},
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # SIGINT to its group: the shell's pipeline too
        )

    def wait_for_line(self, marker: str, timeout: float = START_S) -> list[str]:
        assert self.popen.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline().decode()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if marker in line:
                return lines
        raise AssertionError(f"{self.command!r}: no {marker!r} in {lines}")

    def finish(self, timeout: float = RUN_S) -> tuple[int, str, str]:
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.popen.communicate()
            raise AssertionError(f"{self.command!r} did not end within {timeout} s") from None
        return self.popen.returncode, out.decode(), err.decode()

    def interrupt(self) -> tuple[int, str, str]:
        """Ctrl-C, as a user would press it; then what it printed."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
        return self.finish()

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)


def run(command: str, cwd: Path, *, timeout: float = RUN_S) -> tuple[int, str, str]:
    return Process(command, cwd).finish(timeout)


def run_bounded(command: str, cwd: Path) -> tuple[int, str, str]:
    """Run a command; if it is still running LONG_RUNNING_S after it opened a socket (each
    of these talks to the network), press Ctrl-C."""
    process = Process(command, cwd)
    wait_for_a_socket(process)
    # (What these print in that time fits a pipe's buffer.)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(LONG_RUNNING_S)
    return process.interrupt()


def wait_for_a_socket(process: Process) -> None:
    """Until the command has a socket open (or has ended): a time it is left running counts
    from there, not from its start. On a loaded machine the imports alone can take seconds,
    and a Ctrl-C in the middle of them is Python's traceback, not the command's."""
    deadline = time.monotonic() + START_S
    while not has_a_socket(process.popen.pid) and process.popen.poll() is None:
        assert time.monotonic() < deadline, f"{process.command!r}: no socket after {START_S} s"
        time.sleep(0.02)


def has_a_socket(pid: int) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith("socket:"):
                    return True
    return False


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    cwd = tmp_path_factory.mktemp("readme")
    found = Servers(free_port(), free_port(), free_port(), cwd)
    demo_command = next(
        command
        for block in readme_blocks()
        if block.lang == "bash"
        for command, _ in commands_of(block.text)
        if command == "trio-stream demo"
    )
    demo = Process(f"{demo_command} --tcp-port {found.tcp} --http-port {found.http}", cwd)
    web = Process(f"trio-stream serve --tcp-port {found.web_tcp} --http-port off", cwd)
    instrument: Process | None = None
    try:
        found.demo_lines = demo.wait_for_line("Ctrl-C")
        web.wait_for_line("Ctrl-C")
        instrument = Process(
            f"{sys.executable} {ROOT}/examples/rpc_service.py "
            f"tcp://127.0.0.1:{found.tcp} --role instrument",
            cwd,
        )
        instrument.wait_for_line("instrument: exposing")
        yield found
    finally:
        # Every process is stopped before any is judged: a failed check must not leave the
        # others running after the tests. One that ignores Ctrl-C is killed by finish(), which
        # then raises: that must not skip the ones after it either.
        errors: list[str] = []
        stuck: list[str] = []
        for process in (instrument, web, demo):
            if process is None:
                continue
            try:
                errors.append(process.interrupt()[2])
            except AssertionError as exc:
                stuck.append(str(exc))
        assert not stuck, stuck
        for err in errors:
            assert "Traceback" not in err, err


def assert_clean(command: str, code: int, err: str, ok: tuple[int, ...] = (0,)) -> None:
    assert code in ok, f"{command!r} exited {code}: {err}"
    assert "Traceback" not in err, f"{command!r}: {err}"


# -- the tests -------------------------------------------------------------------------------------
def test_the_demo_prints_what_the_readme_says(servers: Servers) -> None:
    lines = servers.demo_lines
    text = "\n".join(lines)
    # "... dashboard: http://127.0.0.1:9871/" (README, Dashboard section)
    assert f"dashboard: http://127.0.0.1:{servers.http}/" in text
    assert f"TCP:       tcp://127.0.0.1:{servers.tcp}" in text
    # The line it suggests works as typed.
    suggested = next(line for line in lines if line.startswith("try: "))[5:]
    code, out, err = run(suggested, servers.cwd)
    assert_clean(suggested, code, err)
    assert len(out.splitlines()) == 5


def test_every_block_has_a_runner() -> None:
    # A new block must be added to the runs below, not skipped silently.
    known = {"python", "bash", "html", "js"}
    assert {b.lang for b in readme_blocks()} <= known


def test_html_and_js_blocks_are_run_by_the_browser_test() -> None:
    browser_test = (ROOT / "tests" / "test_web_pages_browser.py").read_text()
    for block in readme_blocks():
        if block.lang in ("html", "js"):
            assert repr(block.first) in browser_test or block.first in browser_test, block.first


def python_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang == "python"]


def claimed_output(text: str) -> list[str]:
    """What ``print(...)  # claimed`` lines say they print."""
    return [
        line.partition("  # ")[2].strip()
        for line in text.splitlines()
        if line.strip().startswith("print(") and "  # " in line
    ]


# The blocks that are fragments of a program (they use names defined elsewhere) run inside
# this harness, statement by statement, with top-level await; the names they assume are made
# here. A statement whose comment is a literal must evaluate to it (ports aside); one whose
# comment starts with an exception name must raise it.
FRAGMENT_RUNNER = r"""
import ast, re, sys, trio, numpy as np, trio_stream as ts

SOURCE = sys.stdin.read()
URL = sys.argv[1]
FEED = sys.argv[2]
ENDLESS_S = 1.0  # a statement that loops over a live subscription runs this long

def claim(segment):
    comment = segment.partition("  # ")[2].strip()
    match = re.match(r'(\[.*?\]|"[^"]*"|[A-Z][A-Za-z]+Error)', comment)
    return match.group(1) if match else None

def ports(text):
    return re.sub(r":\d+", ":PORT", text)

async def main():
    lines = SOURCE.splitlines()
    async with (
        trio.open_nursery() as nursery,
        ts.open_client(URL, name="daq") as daq_client,
        ts.open_client(URL, name="other") as other,
    ):
        client = daq_client
        # The README's own writer for the fragments that read AnalogInput1 (feed_block()).
        feeding = {"np": np, "trio": trio, "ts": ts}
        exec(FEED, feeding)
        with trio.fail_after(10):
            await nursery.start(feeding["feed"], client)  # as the README says to
        namespace = {"ts": ts, "np": np, "trio": trio, "nursery": nursery,
                     "client": client, "daq_client": daq_client, "other": other}
        checked = 0
        for node in ast.parse(SOURCE).body:
            segment = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            claimed = claim(lines[node.end_lineno - 1])
            is_expression = isinstance(node, ast.Expr)
            code = compile(
                ast.Expression(node.value) if is_expression else ast.Module([node], []),
                "<README>", "eval" if is_expression else "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            try:
                with trio.move_on_after(ENDLESS_S) as scope:
                    value = eval(code, namespace)
                    if hasattr(value, "__await__"):
                        value = await value
                if scope.cancelled_caught:
                    assert isinstance(node, ast.AsyncWith), f"{segment!r} did not finish"
                    print("ran until stopped:", segment.splitlines()[0])
                    continue
            except Exception as exc:
                if claimed and type(exc).__name__ == claimed:
                    print("raised as claimed:", claimed)
                    checked += 1
                    continue
                raise
            if claimed and is_expression and not claimed.endswith("Error"):
                expected = ast.literal_eval(claimed)
                shown = value if not isinstance(value, str) else ports(value)
                assert shown == (ports(expected) if isinstance(expected, str) else expected), (
                    segment, value, expected)
                checked += 1
        print("checked", checked)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


def feed_block() -> Block:
    """The README's writer that the fragments reading AnalogInput1 need: the ``feed``
    function of the program the README gives to paste fragments into."""
    program = next(b for b in python_blocks() if "async def feed(client" in b.text)
    tree = ast.parse(program.text)
    feed = next(n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "feed")
    source = ast.get_source_segment(program.text, feed)
    assert source is not None
    return Block(program.lang, source, program.line)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_block(servers: Servers, index: int) -> None:
    block = python_blocks()[index]
    source = servers.substitute(block.text)
    complete = "trio.run(" in source or "with ts.SyncClient(" in source
    if complete:
        command = [sys.executable, "-c", source]
        stdin = None
    else:
        url = f"tcp://127.0.0.1:{servers.tcp}"
        command = [sys.executable, "-c", FRAGMENT_RUNNER, url, feed_block().text]
        stdin = source.encode()
    done = subprocess.run(
        command, input=stdin, capture_output=True, timeout=RUN_S, env=ENV, cwd=servers.cwd
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"README.md:{block.line}: {err}"
    if complete:
        for claimed in claimed_output(block.text):
            assert claimed in out, f"README.md:{block.line}: {claimed!r} not in {out!r}"
    elif any("  # " in line for line in source.splitlines()):
        assert "checked" in out, out


def cli_block() -> Block:
    return next(b for b in readme_blocks() if b.lang == "bash" and "trio-stream serve" in b.text)


def test_the_command_line_block(servers: Servers) -> None:
    cwd = servers.cwd
    done: list[str] = []
    reader: Process | None = None
    for raw, comment in commands_of(cli_block().text):
        command = servers.substitute(raw)
        words = without_env(shlex.split(command.partition("|")[2] or command))[1]
        verb = words[1] if words[0] == "trio-stream" else words[0]
        if verb == "demo":
            continue  # the demo this test started: test_the_demo_prints_what_the_readme_says
        if verb == "serve":
            command += " --tcp-port 0 --http-port 0"
            process = Process(command, cwd)
            process.wait_for_line("Ctrl-C")
            assert_clean(command, *process.interrupt()[::2])
        elif verb == "sub" and "--wait-channel" in words:
            reader = Process(command, cwd)  # "a reader, then:" the next line publishes
            time.sleep(1.0)
        elif verb == "pub" and reader is not None:
            code, _, err = run(command, cwd)
            assert_clean(command, code, err)
            rc, out, rerr = reader.finish()
            assert_clean("sub", rc, rerr)
            # "the reader prints {...}": that line, "..." standing for any text (it said "it
            # prints 21.5" of a reader that prints a JSON line).
            claimed = comment.partition("the reader prints ")[2]
            assert claimed, comment
            (line,) = out.splitlines()
            assert seen_pattern(claimed, {}).fullmatch(line), (claimed, line)
            reader = None
        elif verb in ("pub", "replay", "generate"):
            # "waits for a reader": give it one that takes everything.
            channel = words[4] if verb == "replay" else words[3]
            url = f"tcp://127.0.0.1:{servers.tcp}"
            taker = Process(f"trio-stream sub {url} {channel} --wait-channel", cwd)
            code, _, err = run(command, cwd)
            assert_clean(command, code, err)
            time.sleep(0.5)  # what the reader took is on its way to its stdout
            rc, out, _ = taker.interrupt()
            assert out.count('"seq"') >= (100 if verb == "pub" else 1), out[-300:]
        elif verb == "sub" or verb == "channels":
            code, out, err = run(command, cwd)
            assert_clean(command, code, err)
            assert out.strip()
            if verb == "channels":  # its last line, as the README's Introspection says it
                assert out.splitlines()[-1] == documented_system_line(), out
        elif verb == "dump":
            assert "until Ctrl-C" in comment
            dump = Process(command, cwd)
            wait_for_a_socket(dump)
            time.sleep(LONG_RUNNING_S)
            assert_clean(command, *dump.interrupt()[::2])
            assert (cwd / "run42.tsdump").stat().st_size > 100
        elif verb == "show":
            code, out, err = run(command, cwd)
            assert_clean(command, code, err)
            assert out.count('"seq"') == 3 and "channel 'demo/sine'" in err  # --count 3
        elif verb == "bridge":
            bridge = Process(command, cwd)
            copy = f"tcp://127.0.0.1:{servers.web_tcp}"
            code, out, err = run(f"trio-stream sub {copy} preview --wait-channel --count 2", cwd)
            assert_clean("sub preview", code, err)
            assert_clean(command, *bridge.interrupt()[::2], ok=(0, 130))  # README: 130
        elif verb == "python":
            continue  # the instrument: the fixture runs exactly this command
        elif verb == "call":
            code, out, err = run(command, cwd)
            assert_clean(command, code, err)
            assert 15.0 < float(out) < 30.0  # a temperature, as JSON
        else:
            raise AssertionError(f"no runner for README command {raw!r}")
        done.append(verb)
    assert reader is None
    assert {"serve", "sub", "pub", "dump", "replay", "generate", "bridge", "call"} <= set(done)


def documented_system_line() -> str:
    """The line under the `channels` table that README.md quotes (Introspection)."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = re.search(r"`(\(\+3 system channels: [^`]*\))`", text)
    assert found, "README.md quotes no `(+3 system channels: ...)` line"
    return found.group(1)


TOKEN_EXAMPLE = re.compile(r"(?:--(?:admin-|dst-)?token[= ]|TRIO_STREAM_(?:ADMIN_)?TOKEN=)(\S+)")


def test_token_examples_are_ones_the_server_takes_without_a_warning() -> None:
    # `serve --help` showed `--token s3cret`, which the server then warned about ("the token
    # has 6 characters ... use 16 or more random ones"): an example to copy must not be one.
    shells = "\n".join(b.text for b in readme_blocks() if b.lang == "bash")
    examples = "\n".join(command for command, _ in help_examples())
    tokens = TOKEN_EXAMPLE.findall(shells) + TOKEN_EXAMPLE.findall(examples)
    assert TOKEN_EXAMPLE.findall(examples), "no token example in the --help texts"
    for token in tokens:
        assert short_token_warning("token", token.strip("'\"")) is None, token


# -- the Troubleshooting tables: each mistake made, each line checked -----------------------------
@dataclass
class Row:
    seen: str  # the first code span of "you see": the line, "..." standing for any text
    note: str  # the rest of that cell: "(exit 3)", "(not an error)", ...


def troubleshooting_tables() -> list[list[Row]]:
    """The tables of README.md's Troubleshooting section: the command line's, then Python's."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Troubleshooting")
    section = text[start : text.index("\n## ", start + 1)]
    tables: list[list[Row]] = []
    for line in section.splitlines():
        if line.startswith("| you see"):
            tables.append([])
        elif line.startswith("| `"):
            match = re.match(r"`([^`]*)`(.*)", line[2:].split(" | ")[0])
            assert match, line
            tables[-1].append(Row(match.group(1), match.group(2)))
    return tables


def seen_pattern(seen: str, ports: dict[str, int]) -> re.Pattern[str]:
    """The documented line as a pattern: the demo's ports become the ones used, "..." any text."""
    seen = re.sub(r"\b987[01]\b", lambda m: str(ports[m.group()]), seen)
    seen = seen.replace("'setpoint'", f"'{TROUBLE_CHANNEL}'")
    return re.compile(".*".join(re.escape(part) for part in seen.split("...")))


@dataclass
class Mistake:
    """How to make the mistake a row describes: a command, {placeholders} filled in."""

    command: str
    dead_port: bool = False  # the documented 9870 stands for a port nobody listens on
    tls_port: bool = False  # the documented 9870 stands for a server with TLS
    stdin: bytes | None = None
    tty: bool = False  # stdin is a terminal, which then gets Ctrl-D
    bare_path: bool = False  # PATH without the venv: before `. .venv/bin/activate`
    exit: int | None = None  # when the row's "exit 1 unless said otherwise" is not the CLI's
    # It waits until Ctrl-C: pressed this long after its first line on stderr (a loaded
    # machine took 4 s to start the command: a fixed delay pressed it before the line).
    interrupt_after_s: float | None = None


TROUBLE_CHANNEL = "setpoint-nobody-made"
CLI_MISTAKES = {  # a piece of the row's line -> the mistake
    "command not found": Mistake("bash -c 'trio-stream --help'", bare_path=True, exit=127),
    "Address already in use": Mistake("trio-stream serve --tcp-port {tcp} --http-port {http}"),
    "is not a server URL": Mistake("trio-stream sub demo/sine"),
    "TCP port, not HTTP": Mistake("trio-stream channels ws://127.0.0.1:{tcp}"),
    "HTTP port (dashboard": Mistake("trio-stream channels tcp://127.0.0.1:{http}"),
    "'http://": Mistake("trio-stream channels http://127.0.0.1:{http}/"),
    "without TLS": Mistake("trio-stream channels tcps://127.0.0.1:{tcp}"),
    "certificate was refused": Mistake(
        "trio-stream channels tcps://127.0.0.1:{tcp}", tls_port=True
    ),
    "cannot connect to tcp://": Mistake(
        "trio-stream channels tcp://127.0.0.1:{tcp}", dead_port=True
    ),
    "--create creates it": Mistake("trio-stream pub {url} {channel} 21.5"),
    "--wait-channel waits": Mistake("trio-stream sub {url} {channel} --count 1"),
    "waiting for channel": Mistake(
        "trio-stream sub {url} {channel} --wait-channel", interrupt_after_s=0.5
    ),
    "waiting for a reader": Mistake("trio-stream pub {url} {channel} 1 --create --wait-timeout 1"),
    "had no readers then": Mistake("trio-stream pub {url} {channel} 1 --create --no-wait"),
    "(--wait-timeout)": Mistake("trio-stream pub {url} {channel} 1 --create --wait-timeout 1"),
    "reading values from stdin": Mistake(
        "trio-stream pub {url} {channel} --create --no-wait", tty=True
    ),
    "stdin line 3": Mistake(
        "trio-stream pub {url} {channel} - --create --dtype float32 --no-wait",
        stdin=b"1\n2\nabc\n4\n",
    ),
    "NameInUse": Mistake("trio-stream channels {url} --name thermo"),  # the fixture's instrument
    "AuthError": Mistake("trio-stream channels {token_url}"),
}
PYTHON_MISTAKES = {
    "is entered with": (
        "import trio, trio_stream as ts\n"
        "async def main():\n"
        "    client = ts.open_client({url!r})\n"
        "    await client.channels()\n"
        "trio.run(main)\n"
    ),
    "SyncClient blocks": (
        "import trio, trio_stream as ts\n"
        "async def main():\n"
        "    ts.SyncClient({url!r})\n"
        "trio.run(main)\n"
    ),
}


def make_mistake(mistake: Mistake, fill: dict[str, object], cwd: Path) -> tuple[int, str]:
    """Run it as a user would type it; its exit code and stderr."""
    env = dict(ENV)
    if mistake.bare_path:
        path = ENV["PATH"].split(os.pathsep)
        env["PATH"] = os.pathsep.join(p for p in path if not (Path(p) / "trio-stream").exists())
    stdin: int | None = subprocess.DEVNULL if mistake.stdin is None else subprocess.PIPE
    terminal = None
    if mistake.tty:
        terminal, stdin = os.openpty()
    process = subprocess.Popen(
        shlex.split(mistake.command.format(**fill)),
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if terminal is not None:
            assert stdin is not None
            os.close(stdin)
            time.sleep(1.0)  # it starts up and reads the terminal; then the user types Ctrl-D
            os.write(terminal, b"\x04")
        first = b""
        if mistake.interrupt_after_s is not None:
            assert process.stderr is not None
            silent = threading.Timer(RUN_S, process.kill)  # one that never writes: bounded
            silent.start()
            try:
                first = process.stderr.readline()
            finally:
                silent.cancel()
            time.sleep(mistake.interrupt_after_s)
            process.send_signal(signal.SIGINT)
        _, err = process.communicate(mistake.stdin, timeout=RUN_S)
        err = first + err
    finally:
        if process.poll() is None:
            process.kill()
        if terminal is not None:
            os.close(terminal)
    return process.returncode, err.decode()


def test_each_troubleshooting_line_is_what_the_mistake_prints(servers: Servers) -> None:
    cli_rows, python_rows = troubleshooting_tables()
    cli_mistakes, python_mistakes = dict(CLI_MISTAKES), dict(PYTHON_MISTAKES)
    dead = free_port()
    token_tcp = free_port()
    token_server = Process(
        f"trio-stream serve --tcp-port {token_tcp} --http-port off --token s3cret", servers.cwd
    )
    tls_cwd = servers.cwd / "tls"
    tls_cwd.mkdir(exist_ok=True)
    make_files(tls_cwd)  # a certificate from a CA of its own, which nobody here trusts
    tls_tcp = free_port()
    tls_server = Process(
        f"trio-stream serve --tcp-port {tls_tcp} --http-port off --tls-cert cert.pem "
        "--tls-key key.pem",
        tls_cwd,
    )
    try:
        token_server.wait_for_line("Ctrl-C")
        tls_server.wait_for_line("Ctrl-C")
        for row in cli_rows:
            keys = [key for key in cli_mistakes if key in row.seen]
            assert len(keys) == 1, f"README Troubleshooting: no one way to make {row.seen!r}"
            mistake = cli_mistakes.pop(keys[0])
            tcp = dead if mistake.dead_port else tls_tcp if mistake.tls_port else servers.tcp
            ports = {"9870": tcp, "9871": servers.http}
            fill = {
                "tcp": ports["9870"],
                "http": ports["9871"],
                "url": f"tcp://127.0.0.1:{servers.tcp}",
                "token_url": f"tcp://127.0.0.1:{token_tcp}",
                "channel": TROUBLE_CHANNEL,
            }
            code, err = make_mistake(mistake, fill, servers.cwd)
            pattern = seen_pattern(row.seen, ports)
            assert any(pattern.search(line) for line in err.splitlines()), (row.seen, err)
            assert "Traceback" not in err, err
            if "(not an error)" not in row.note:
                said = re.search(r"\(exit (\d+)", row.note)
                expected = mistake.exit or (int(said.group(1)) if said else 1)
                assert code == expected, (row.seen, code, err)
    finally:
        assert_clean("serve --token", *token_server.interrupt()[::2])
        assert_clean("serve --tls-cert", *tls_server.interrupt()[::2])
    assert not cli_mistakes, f"rows gone from the README: {list(cli_mistakes)}"

    for row in python_rows:
        keys = [key for key in python_mistakes if key in row.seen]
        assert len(keys) == 1, f"README Troubleshooting: no one way to make {row.seen!r}"
        source = python_mistakes.pop(keys[0]).format(url=f"tcp://127.0.0.1:{servers.tcp}")
        done = subprocess.run(
            [sys.executable, "-c", source], capture_output=True, timeout=RUN_S, env=ENV
        )
        last = done.stderr.decode().strip().splitlines()[-1]
        assert done.returncode == 1 and seen_pattern(row.seen, {}).search(last), last
    assert not python_mistakes, f"rows gone from the README: {list(python_mistakes)}"


def test_the_several_nodes_block_starts_both_nodes_side_by_side(tmp_path: Path) -> None:
    # As typed, on one machine: each port the block names, or leaves at its default, is one
    # free port here, so two nodes on one default port clash here as they would there.
    # (Their channels flowing between the nodes: tests/test_cluster.py.)
    block = next(b for b in readme_blocks() if b.lang == "bash" and "--engine redis://" in b.text)
    serves = [c for c, _ in commands_of(block.text) if c.startswith("trio-stream serve")]
    assert len(serves) == 2, block.text
    ports: dict[str, int] = {}
    nodes: list[Process] = []
    with running_redis_server() as redis:
        try:
            for command in serves:
                words = shlex.split(command.replace("redis://127.0.0.1:6379/0", redis.url))
                for flag, default in (("--tcp-port", "9870"), ("--http-port", "9871")):
                    if flag not in words:
                        words += [flag, default]
                    at = words.index(flag) + 1
                    words[at] = str(ports.setdefault(words[at], free_port()))
                node = Process(shlex.join(words), tmp_path)
                nodes.append(node)
                try:
                    node.wait_for_line("Ctrl-C")
                except AssertionError:
                    raise AssertionError(f"{command!r}: {node.interrupt()[2]}") from None
        finally:
            for node in nodes:
                assert_clean(node.command, *node.interrupt()[::2])


def help_examples() -> list[tuple[str, str]]:
    parser = build_parser()
    texts = [parser.epilog or ""]
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(subparsers.choices, dict)
    texts += [sub.epilog or "" for sub in subparsers.choices.values()]
    examples: list[tuple[str, str]] = []
    for text in texts:
        block = re.sub(r"\\\n\s*", "", text)
        examples += [
            (line.strip(), text)
            for line in block.splitlines()
            if line.startswith("  ") and line.strip().split()[0] in ("trio-stream", "seq")
        ]
    return examples


def make_files(cwd: Path) -> None:
    """What the serve examples name: a server.toml and a certificate with its key."""
    (cwd / "server.toml").write_text('host = "127.0.0.1"\nhttp_port = false\n')
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(cwd / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cwd / "cert.pem"))
    assert ssl.PEM_cert_to_DER_cert((cwd / "cert.pem").read_text())


# The help examples run in these groups side by side (each in its order: a recording is
# made before it is replayed and shown); most of their time is spent waiting (a command left
# running LONG_RUNNING_S), which one after the other took a minute and a half of CI's 20
# (two groups: 40 s).
EXAMPLE_GROUPS: Final = (
    frozenset({"serve"}),
    frozenset({"demo"}),
    frozenset({"channels", "clients", "stats"}),
    frozenset({"pub", "sub"}),
    frozenset({"dump", "replay", "show"}),
    frozenset({"generate", "bridge"}),
    frozenset({"call", "send-file", "receive-files"}),
)


def test_help_examples(servers: Servers) -> None:
    cwd = servers.cwd / "help"
    cwd.mkdir(exist_ok=True)
    make_files(cwd)
    groups: list[list[str]] = [[] for _ in EXAMPLE_GROUPS]
    for raw, _ in help_examples():
        command = servers.substitute(raw.partition("  #")[0].strip())
        verb = shlex.split(command.partition("|")[2] or command)[1]
        groups[next(i for i, verbs in enumerate(EXAMPLE_GROUPS) if verb in verbs)].append(command)
    url = f"tcp://127.0.0.1:{servers.tcp}"
    with ThreadPoolExecutor(len(groups)) as pool:
        runs = [pool.submit(run_help_examples, group, url, cwd) for group in groups]
        for done in runs:
            done.result()


def run_help_examples(commands: list[str], url: str, cwd: Path) -> None:
    for command in commands:
        words = shlex.split(command.partition("|")[2] or command)
        verb = words[1]
        if verb in ("serve", "demo") and "--tcp-port" not in words:
            command += (
                " --tcp-port 0 --http-port 0" if "--http-port" not in words else (" --tcp-port 0")
            )
        elif verb in ("serve", "demo"):
            command += " --http-port 0" if "--http-port" not in words else ""
        if verb == "send-file":
            send_to_a_receiver(command, words, url, cwd)
            continue
        taker = None
        if verb in ("pub", "replay", "generate"):
            channel = words[4] if verb == "replay" else words[3]
            if "--create" in words:
                wait_until_gone(url, channel)
            taker = Process(f"trio-stream sub {url} {channel} --wait-channel", cwd)
        if taker is not None and (verb != "generate" or "--count" in words):
            # pub and replay end by themselves once a reader took their values: no Ctrl-C,
            # which on a loaded machine could come before the reader is even connected.
            code, _, err = run(command, cwd)
            assert_clean(command, code, err)
        else:
            code, _, err = run_bounded(command, cwd)
            assert_clean(command, code, err, ok=(0, 130))
            assert "or more random ones" not in err, (command, err)  # a token not to copy
        if taker is not None:
            time.sleep(0.5)
            _, out, _ = taker.interrupt()
            assert '"seq"' in out, (command, out)


def wait_until_gone(url: str, channel: str) -> None:
    """Until the channel an earlier example made is gone: one whose writer a loaded machine
    took long to stop (1 MiB frames) may outlive it by its resume grace (10 s), and the
    next example, writing into it, saw it end under it (a CI run). Unnamed: the groups run
    at once."""
    with ts.SyncClient(url) as waiter:
        deadline = time.monotonic() + 15.0
        while any(c.name == channel for c in waiter.channels()):
            assert time.monotonic() < deadline, f"channel {channel!r} is still there"
            time.sleep(0.05)


def send_to_a_receiver(command: str, words: list[str], url: str, cwd: Path) -> None:
    """A send-file example: its files made, a receiver named as it says, what it received."""
    incoming = cwd / "incoming"
    incoming.mkdir(exist_ok=True)
    for name in words[4:]:
        (cwd / name).write_bytes(os.urandom(1000))
    receiver = Process(f"trio-stream receive-files {url} {incoming} --name {words[3]}", cwd)
    try:
        with ts.SyncClient(url, name="readme-waiter") as waiter:
            deadline = time.monotonic() + START_S
            while not any(c.name == words[3] for c in waiter.clients()):
                assert time.monotonic() < deadline, "the receiver did not connect"
                time.sleep(0.05)
        code, _, err = run(command, cwd)
        assert_clean(command, code, err)
    finally:
        rc, out, rerr = receiver.interrupt()
    assert_clean("receive-files", rc, rerr)
    for name in words[4:]:
        assert (incoming / name).read_bytes() == (cwd / name).read_bytes()
        assert f"received {incoming / name}" in out


def test_help_texts_show_examples_that_this_test_runs() -> None:
    assert len(help_examples()) >= 20
    text = textwrap.dedent(build_parser().epilog or "")
    assert "trio-stream demo" in text
