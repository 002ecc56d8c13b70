"""Shared fixtures: a real server on loopback, port 0, and its URL for each transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from redis_server import RedisServer, running_redis_server

import trio_stream as ts

TRANSPORTS = ["tcp", "ws"]


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[ts.Server]:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0)
    server: ts.Server = await nursery.start(ts.serve, config)
    yield server
    await server.aclose()


@pytest.fixture(params=TRANSPORTS)
def url(request: pytest.FixtureRequest, server: ts.Server) -> str:
    """The server's URL for one transport; tests taking it run once per transport."""
    value = {"tcp": server.tcp_url, "ws": server.ws_url}[request.param]
    assert value is not None
    return value


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port (skips if redis-server is missing)."""
    with running_redis_server() as server:
        yield server
