"""Which engines a test of channel behaviour runs on (the ``server`` fixture, tests/conftest.py).

A module marked ``pytestmark = BOTH_ENGINES`` runs each test taking ``server`` (or ``url``,
or ``engine_kind``) on the memory engine and as a Redis node; a test that cannot run on
Redis says why with ``memory_only(reason)``.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis_server import RedisServer

BOTH_ENGINES = pytest.mark.engines("memory", "redis")


def memory_only(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.engines("memory", reason=reason)


#: autojump_clock moves time on whenever every task waits, also while a Redis reply is on
#: its way: timeouts would fire that real time never reaches (test_engines covers Redis).
VIRTUAL_TIME = memory_only("autojump_clock jumps while the Redis engine waits on real I/O")


def engine_options(engine_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """ServerConfig options for ``engine_kind``: a Redis node on the session's private Redis
    (the ``shared_redis`` fixture), emptied first (no test sees another's channels)."""
    if engine_kind == "memory":
        return {}
    redis: RedisServer = request.getfixturevalue("shared_redis")
    redis.flush()
    return {"engine": redis.url, "node_name": "node-a"}
