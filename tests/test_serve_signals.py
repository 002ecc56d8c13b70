"""`trio-stream serve` and its signals, as a service manager and a terminal send them: the
first SIGINT, SIGTERM or SIGHUP stops it gracefully; a SIGTERM or SIGHUP during the drain
does not cut it short; Ctrl-C then does (exit 130). Real child processes, bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import cbor2
import pytest
import trio

import trio_stream as ts

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CLI = [sys.executable, "-m", "trio_stream"]
# Not the checkout: "-m" puts the working directory first on sys.path, before $PYTHONPATH.
CWD = Path(__file__).resolve().anchor
ENV = {k: v for k, v in os.environ.items() if k not in ("TRIO_STREAM_TOKEN", "COLUMNS", "LINES")}
WAIT_S = 20.0  # any one wait
GRACE_S = 3.0  # the server's shutdown grace: how long a reader that reads nothing holds it
FRAME_BYTES = 256 * 1024
FRAMES = 48  # 12 MiB: more than the sockets' buffers hold, so the drain has to wait


class Serve:
    """A `trio-stream serve` child: its TCP URL, its stderr as it comes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.url = ""
        self.stderr = b""

    async def start(self) -> None:
        assert self.process.stdout is not None
        out = b""
        with trio.fail_after(WAIT_S):
            while b"Ctrl-C" not in out:
                chunk = await self.process.stdout.receive_some()
                assert chunk, out
                out += chunk
        self.url = next(w for w in out.decode().split() if w.startswith("tcp://"))

    async def stderr_until(self, marker: bytes) -> None:
        assert self.process.stderr is not None
        with trio.fail_after(WAIT_S):
            while marker not in self.stderr:
                chunk = await self.process.stderr.receive_some()
                assert chunk, self.stderr
                self.stderr += chunk

    async def finish(self) -> tuple[int, str]:
        """Its exit code and all it said on stderr."""
        assert self.process.stderr is not None
        with trio.fail_after(WAIT_S):
            while chunk := await self.process.stderr.receive_some():
                self.stderr += chunk
            code = await self.process.wait()
        return code, self.stderr.decode()


@asynccontextmanager
async def serving(*flags: str) -> AsyncIterator[Serve]:
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--tcp-port", "0", "--http-port", "off", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=CWD,
    )
    try:
        serve = Serve(process)
        await serve.start()
        yield serve
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(WAIT_S):
            await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


def _frame(message: dict[str, object]) -> bytes:
    body = b"\x01" + cbor2.dumps(message)
    return struct.pack(">I", len(body)) + body


async def hold_the_drain(url: str) -> socket.socket:
    """A reader that reads nothing, with more buffered for it than the sockets hold: the
    server's graceful stop waits for it until the grace is over."""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((host, int(port)))
    async with ts.open_client(url, name="writer", reconnect=False) as writer:
        await writer.create_channel("big", keep=True)
        stuck.sendall(
            _frame({"op": "hello", "v": 1, "name": "stuck"})
            + _frame(
                {"op": "subscribe", "id": 1, "channel": "big", "policy": "unbounded", "size": 1000}
            )
        )
        async with writer.publisher("big") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                for _ in range(FRAMES):
                    await pub.send(bytes(FRAME_BYTES))
                await pub.wait_acknowledged()
    return stuck


@pytest.mark.parametrize(
    ("first", "again"),
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGHUP, signal.SIGTERM)],
    ids=["SIGTERM-SIGTERM", "SIGHUP-SIGTERM"],
)
async def test_a_second_termination_during_the_drain_is_ignored(
    first: signal.Signals, again: signal.Signals
) -> None:
    # A service manager's second SIGTERM (or one after a closed terminal's SIGHUP) killed
    # the process mid-drain: status -15, no "stopped".
    async with serving("--shutdown-grace", str(GRACE_S)) as serve:
        stuck = await hold_the_drain(serve.url)
        with stuck:
            serve.process.send_signal(first)
            await serve.stderr_until(b"stopping: ")
            await trio.sleep(0.5)  # past the same stop's echo (SAME_STOP_S)
            serve.process.send_signal(again)
            await serve.stderr_until(b"ignored")
            assert serve.process.returncode is None  # still draining
            code, stderr = await serve.finish()
    assert code == 0, stderr
    lines = stderr.splitlines()
    assert f"{again.name} again during the shutdown: ignored" in stderr, stderr
    assert lines[-1] == "stopped", stderr
    assert "Traceback" not in stderr


async def test_sighup_stops_the_server_as_sigterm_does() -> None:
    # A closed terminal: the process exited 129 and its readers saw a reset, not a goodbye.
    async with serving() as serve:
        async with (
            ts.open_client(serve.url, name="reader", reconnect=False) as reader,
            ts.open_client(serve.url, name="writer", reconnect=False) as writer,
        ):
            await writer.create_channel("c")
            async with reader.subscribe("c") as sub:
                serve.process.send_signal(signal.SIGHUP)
                with pytest.raises(ts.ConnectionClosed) as closed, trio.fail_after(WAIT_S):
                    await sub.receive()
                assert closed.value.reason == "the server is shutting down"
        code, stderr = await serve.finish()
    assert code == 0, stderr
    assert stderr.splitlines()[-1] == "stopped", stderr


async def test_ctrl_c_during_the_drain_still_interrupts_it() -> None:
    # What the README promises: a later Ctrl-C interrupts a shutdown that hangs (exit 130).
    async with serving("--shutdown-grace", "60") as serve:
        stuck = await hold_the_drain(serve.url)
        with stuck:
            serve.process.send_signal(signal.SIGTERM)
            await serve.stderr_until(b"stopping: ")
            await trio.sleep(0.5)
            serve.process.send_signal(signal.SIGINT)
            code, stderr = await serve.finish()  # not the 60 s grace
    assert code == 130, stderr
    assert "stopped" not in stderr.splitlines()
