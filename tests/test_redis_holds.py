"""The wait stamp behind block_timeout across nodes (redis_holds), in a real private Redis.

The stamp's Lua runs on its own here (``last`` given as an argument, as the room check has
it); its reader, HeldWriters, reads what it wrote. Time is Redis's, so the figures are
bounded, not exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import coredis
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import RedisServer

from trio_stream._engine.redis_holds import HELD_FRESH_MS, STAMP_WAIT_LUA, HeldWriters
from trio_stream._engine.redis_keys import KeySpace

KEYS = KeySpace("holds-test")


@asynccontextmanager
async def connected(server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    redis: coredis.Redis[bytes] = coredis.Redis.from_url(server.url)
    async with redis:
        yield redis


@pytest.fixture
async def client(shared_redis: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    async with connected(shared_redis) as redis:
        yield redis


async def stamp_wait(client: coredis.Redis[bytes], channel: str, last: int) -> None:
    """What a writer's room check does when nothing fits, with the channel's seq at ``last``."""
    script = client.register_script("local last = tonumber(ARGV[1])\n" + STAMP_WAIT_LUA)
    await client.hset(KEYS.channel(channel), {"seq": str(last)})
    await script(keys=[KEYS.channel(channel)], args=[str(last)])


async def test_a_wait_renewed_by_the_writer_counts_from_its_start(
    client: coredis.Redis[bytes],
) -> None:
    held = HeldWriters(client, KEYS)
    await client.delete([KEYS.channel("c")])
    assert await held.held_s(["c"]) == [0.0]  # no stamp: nobody waits
    await stamp_wait(client, "c", 7)
    for _ in range(3):
        await trio.sleep(0.1)
        await stamp_wait(client, "c", 7)  # the writer checks again: still the same wait
    [waited] = await held.held_s(["c"])
    assert 0.3 <= waited < 0.3 + 2.0, waited


async def test_an_append_ends_the_wait_and_the_next_one_starts_afresh(
    client: coredis.Redis[bytes],
) -> None:
    held = HeldWriters(client, KEYS)
    await client.delete([KEYS.channel("c")])
    await stamp_wait(client, "c", 7)
    await trio.sleep(0.2)
    await client.hset(KEYS.channel("c"), {"seq": "8"})  # the writer appended: it got room
    assert await held.held_s(["c"]) == [0.0]
    await stamp_wait(client, "c", 8)  # and waits again, from now
    [waited] = await held.held_s(["c"])
    assert waited < 0.2, waited


async def test_a_wait_its_writer_stopped_renewing_is_over(client: coredis.Redis[bytes]) -> None:
    held = HeldWriters(client, KEYS)
    await client.delete([KEYS.channel("c")])
    await stamp_wait(client, "c", 3)
    await trio.sleep(HELD_FRESH_MS / 1000 + 0.1)  # the writer went away
    assert await held.held_s(["c"]) == [0.0]
    await stamp_wait(client, "c", 3)  # a new wait at the same seq starts again
    [waited] = await held.held_s(["c"])
    assert waited < 0.2, waited


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stamp=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
async def test_a_malformed_stamp_counts_as_no_wait(shared_redis: RedisServer, stamp: bytes) -> None:
    # A stamp is "start last seq" (three decimal numbers); anything else is no wait, and a
    # writer's next room check writes a sound one over it.
    async with connected(shared_redis) as client:
        held = HeldWriters(client, KEYS)
        key = KEYS.channel("m")
        await client.delete([key])
        await client.hset(key, {"seq": "5", "h": stamp})
        [waited] = await held.held_s(["m"])
        parts = stamp.split(b" ")
        if not (len(parts) == 3 and all(p.isdigit() and p.isascii() for p in parts)):
            assert waited == 0.0
        await stamp_wait(client, "m", 5)
        [waited] = await held.held_s(["m"])
        assert 0.0 <= waited < 0.2


async def test_each_channel_answers_for_itself(client: coredis.Redis[bytes]) -> None:
    held = HeldWriters(client, KEYS)
    await client.delete([KEYS.channel("x"), KEYS.channel("y"), KEYS.channel("z")])
    await stamp_wait(client, "x", 1)
    await client.hset(KEYS.channel("y"), {"seq": "1"})
    await trio.sleep(0.1)
    x, y, z = await held.held_s(["x", "y", "z"])
    assert x >= 0.1 and y == 0.0 and z == 0.0
