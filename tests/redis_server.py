"""A private redis-server for the tests: its own process on a free loopback port.

Every test run starts its own ``redis-server`` (Debian's package; ``scripts/test`` installs it)
on a port the kernel hands out, in a temporary directory, without persistence, and stops it by
its own PID. It never talks to a Redis it did not start: port 6379 is never used, and the
helpers that kill or restart only ever touch this process. Tests that need Redis take the
``redis_server`` fixture (tests/conftest.py); without ``redis-server`` on the PATH they are
skipped with a message saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_START_TIMEOUT_S = 10.0
REDIS_DEFAULT_PORT = 6379  # somebody else's Redis may live there: never ours


def _free_loopback_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != REDIS_DEFAULT_PORT:
            return port


def _command(sock: socket.socket, *words: str) -> bytes:
    """Send one inline command and return the first reply line (enough for PING/CLIENT KILL)."""
    sock.sendall(" ".join(words).encode() + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        reply += chunk
    return reply.rstrip(b"\r\n")


class RedisServer:
    """One redis-server child process; restartable on the same port."""

    # "yes": an append-only file in its directory, so that a SIGKILL and a start on the same
    # port find every key as it was (PersistentRedisServer).
    appendonly = "no"

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = _free_loopback_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": ""}
        options["appendonly"] = self.appendonly
        options["daemonize"] = "no"  # we hold its PID and kill it ourselves
        argv = [self.executable]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.process = subprocess.Popen(
            argv,
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if _command(sock, "PING") == b"+PONG":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING in {REDIS_START_TIMEOUT_S} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL our process (no persistence: everything in it is lost)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Kill -9 and start again on the same port: what a crash and a supervisor do."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """Empty every database (``FLUSHALL``): a fresh cluster for the next test."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            reply = _command(sock, "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply[:80]!r}")

    def command(self, *words: str) -> bytes:
        """One inline command; its first reply line (``:1`` for an integer reply)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            return _command(sock, *words)

    def kill_clients(self) -> int:
        """Close every normal client connection (``CLIENT KILL TYPE normal``); returns how many."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            reply = _command(sock, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        return int(reply.lstrip(b":"))

    def kill_pubsub_clients(self) -> int:
        """Close every subscriber connection (``CLIENT KILL TYPE pubsub``); returns how many."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            reply = _command(sock, "CLIENT", "KILL", "TYPE", "pubsub")
        return int(reply.lstrip(b":"))


@contextmanager
def redis_stopped(redis: RedisServer) -> Iterator[None]:
    """SIGSTOP the test's own redis-server: it answers nothing and raises nothing (a Redis
    that hangs), until SIGCONT on the way out."""
    assert redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis_server(kind: type[RedisServer] = RedisServer) -> Iterator[RedisServer]:
    """A started redis-server, killed on exit (tests/conftest.py's ``redis_server`` fixture;
    ``kind``: a RedisServer of other options)."""
    executable = shutil.which("redis-server")
    if executable is None:
        message = "redis-server not installed: scripts/test installs it (apt-get redis-server)"
        # In CI the cluster tests must run: a missing server is a broken set-up, not a skip.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="ts-redis-") as directory:
        server = kind(executable, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()
