"""Developer tasks: ``nox -s lint typecheck tests bench``.

Sessions run in the current environment (``scripts/test`` makes it: ``.venv`` with
``pip install -e '.[test,dev]'``), so nothing is installed twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "--strict")


@nox.session
def tests(session: nox.Session) -> None:
    # A worker per core: the tests mostly wait (on sockets, servers, Redis, a browser), so
    # on two cores one process took 25 minutes, three workers 10 and four 9; but with more
    # workers than cores, tests with time bounds failed under the load (a server's start
    # over 10 s, a flood through Redis), a different one in each run. A module stays in one
    # worker (its fixtures and its order).
    workers = str(min(8, max(2, os.cpu_count() or 1)))
    session.run("pytest", "-q", "-n", workers, "--dist", "loadfile", *session.posargs)
    if not shutil.which("node"):
        session.error("node is missing: the JS unit tests need it (apt-get install nodejs)")
    # The dashboard's CDP test takes $CHROMIUM first: Debian's chromium, as in the pytest
    # browser test (another Chromium-like binary on the PATH would otherwise win).
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium:
        session.error("chromium is missing: the dashboard tests need it (apt-get install chromium)")
    session.run(*node_test_command(), "tests/js/", env={"CHROMIUM": chromium})


def node_test_command() -> list[str]:
    """``node --test``, with ``--experimental-websocket`` where Node accepts that flag (20.10
    and later): the live client tests need a global WebSocket, which Node 20 has only behind it.
    """
    flag = "--experimental-websocket"
    probe = subprocess.run(["node", flag, "-e", "0"], capture_output=True, check=False)
    return ["node", flag, "--test"] if probe.returncode == 0 else ["node", "--test"]


@nox.session
def bench(session: nox.Session) -> None:
    session.run("python", "benchmarks/run.py", *session.posargs)
