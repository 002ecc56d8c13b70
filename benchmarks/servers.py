"""Start a system's server on a free loopback port, and always stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.systems.base import LOOPBACK, System
from benchmarks.worker import die_with_parent

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0  # a Python server imports numpy and trio first
STOP_TIMEOUT_S = 3.0
START_ATTEMPTS = 3  # the free port can be taken between probing it and the server's bind
LOG_TAIL_BYTES = 2000


class ServerError(RuntimeError):
    pass


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> str | None:
        """None while running, else what went wrong (with the end of its log)."""
        code = self.process.poll()
        if code is None:
            return None
        return f"server exited with code {code}: {log_tail(self.log_path)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path) -> str:
    """The end of a server's log; printed to stderr, and its last line returned for notes."""
    try:
        text = path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace").strip()
    except OSError:
        return "(no log)"
    if not text:
        return "(empty log)"
    print(f"  ! {path.name}:\n    " + text.replace("\n", "\n    "), file=sys.stderr)
    # The last error line says more than a traceback's closing "+----" of an exception group.
    lines = [line.strip(" |+-") for line in text.splitlines()]
    errors = [line for line in lines if "Error" in line or "Exception" in line or "error" in line]
    return (errors or [line for line in lines if line] or ["?"])[-1]


def _wait_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"server exited with code {process.returncode}: {log_tail(log_path)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"server not listening after {START_TIMEOUT_S} s: {log_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_server(system: System, workdir: Path) -> Iterator[RunningServer]:
    """A fresh server for one case; stopped (killed if need be) on the way out."""
    env = dict(os.environ)
    # The trio_stream server is `python -c`: make the repository's package importable.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{system.name}-server.log"
    error: ServerError | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                system.server_command(port, workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                # preexec_fn is only unsafe with threads; the orchestrator has none.
                preexec_fn=die_with_parent,
            )
        try:
            _wait_listening(port, process, log_path)
        except ServerError as exc:
            _stop(process)
            error = exc
            if "address already in use" in log_path.read_text(errors="replace").lower():
                continue  # lost the race for the port: try another one
            raise
        try:
            yield RunningServer(system.url(port), process, log_path)
        finally:
            _stop(process)
        return
    assert error is not None
    raise error
