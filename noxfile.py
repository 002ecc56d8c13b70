"""Developer tasks: ``nox -s lint typecheck tests bench``.

Sessions run in the current environment (``scripts/test`` makes it: ``.venv`` with
``pip install -e '.[test,dev]'``), so nothing is installed twice.
"""

from __future__ import annotations

import shutil

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
    session.run("pytest", "-q", *session.posargs)
    if shutil.which("node"):
        session.run("node", "--test", "tests/js/")
    else:
        session.error("node is missing: the JS unit tests need it (apt-get install nodejs)")


@nox.session
def bench(session: nox.Session) -> None:
    session.run("python", "benchmarks/run.py", *session.posargs)
