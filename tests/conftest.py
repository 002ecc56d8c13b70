"""Shared fixtures: a real server on loopback, port 0, and its URL for each transport.

Channel behaviours run on both engines: a test module (or test) marked
``engines("memory", "redis")`` (tests/engine_marks.py: ``BOTH_ENGINES``) gets its ``server``
(and so ``url``) once on the in-memory engine and once as a node of a Redis cluster (one
private redis-server for the whole session, emptied before each test). Unmarked tests run on
the memory engine only. Transports and engines are independent layers, so the Redis runs
take TCP only.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from engine_marks import engine_options
from redis_server import RedisServer, running_redis_server

import trio_stream as ts

TRANSPORTS = ["tcp", "ws"]
ENGINES = ["memory", "redis"]


def pytest_configure(config: pytest.Config) -> None:
    # A shell starts a background job (`pytest &` in a script) with SIGINT ignored, and every
    # child inherits that: the tests that press Ctrl-C in a CLI or a script would wait for it
    # in vain. A handler, unlike SIG_IGN, is reset to the default by exec in each child.
    # (So a Ctrl-C at the terminal of a script that started `pytest &` reaches the tests too.)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers",
        "engines(*kinds): the engines the server fixture runs this test on (default: memory)",
    )
    config.addinivalue_line(
        "markers", "server_options(**options): ServerConfig options of the server fixture"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_kind" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("engines")
    engines = list(marker.args) if marker is not None else ["memory"]
    if "transport" in metafunc.fixturenames:
        pairs = [(t, e) for e in engines for t in TRANSPORTS if e == "memory" or t == "tcp"]
        ids = [t if e == "memory" else f"{t}-{e}" for t, e in pairs]
        metafunc.parametrize(("transport", "engine_kind"), pairs, ids=ids)
    elif engines != ["memory"]:
        metafunc.parametrize("engine_kind", engines)


@pytest.fixture
def engine_kind() -> str:
    """The engine of the ``server`` fixture (parametrized by pytest_generate_tests)."""
    return "memory"


@pytest.fixture
def transport() -> str:
    """The transport of the ``url`` fixture (parametrized by pytest_generate_tests)."""
    return "tcp"


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One private redis-server for every test that only needs a Redis to talk to."""
    with running_redis_server() as server:
        yield server


@pytest.fixture
async def server(
    nursery: trio.Nursery, engine_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[ts.Server]:
    options = engine_options(engine_kind, request)
    marker = request.node.get_closest_marker("server_options")
    if marker is not None:
        options.update(marker.kwargs)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, **options)
    server: ts.Server = await nursery.start(ts.serve, config)
    yield server
    await server.aclose()


@pytest.fixture
def url(transport: str, server: ts.Server) -> str:
    """The server's URL for one transport; tests taking it run once per transport."""
    value = {"tcp": server.tcp_url, "ws": server.ws_url}[transport]
    assert value is not None
    return value


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port (skips if redis-server is missing)."""
    with running_redis_server() as server:
        yield server
