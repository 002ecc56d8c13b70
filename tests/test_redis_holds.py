"""The wait stamps behind block_timeout across nodes (redis_holds), in a real private Redis.

The stamp's Lua runs on its own here (its inputs given as arguments, as the room check sets
them); HeldWriters reads what it wrote. Time is Redis's (and this process's monotonic clock
for the writer's side), so the figures are bounded, not exact.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import coredis
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import RedisServer

from trio_stream._engine.redis_holds import (
    HELD_FRESH_MS,
    HELD_RENEW_MS,
    STAMP_WAIT_LUA,
    HeldWriters,
)
from trio_stream._engine.redis_keys import KeySpace

KEYS = KeySpace("holds-test")
EPOCH = "e1"
RENEW_S = HELD_RENEW_MS / 1000


@asynccontextmanager
async def connected(server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    redis: coredis.Redis[bytes] = coredis.Redis.from_url(server.url)
    async with redis:
        yield redis


@pytest.fixture
async def client(shared_redis: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    async with connected(shared_redis) as redis:
        redis_client: coredis.Redis[bytes] = redis
        await redis_client.delete([KEYS.held(name, EPOCH) for name in "cxyz"])
        yield redis_client


class Writer:
    """A writer whose oldest frame arrived at ``arrived`` and waits for room: its room check
    stamps that (redis_streams._ROOM_LUA)."""

    def __init__(self, client: coredis.Redis[bytes], name: str, channel: str = "c") -> None:
        self.name = name
        self.key = KEYS.held(channel, EPOCH)
        self.arrived = time.monotonic()
        self._script = client.register_script(
            "local held_key = KEYS[1]\n"
            "local who = ARGV[1]\n"
            "local waited = tonumber(ARGV[2])\n" + STAMP_WAIT_LUA
        )

    async def still_waiting(self) -> None:
        waited_ms = round((time.monotonic() - self.arrived) * 1000)
        await self._script(keys=[self.key], args=[self.name, str(waited_ms)])


async def waited_s(held: HeldWriters, channel: str = "c") -> float:
    """How long ``channel``'s writers have waited (one of them waits)."""
    [seconds] = await held.held_s([(channel, EPOCH)])
    assert seconds is not None
    return seconds


async def wait_and_renew(writer: Writer, seconds: float) -> None:
    """The writer checks for room every 10 ms for ``seconds``, finding none."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await writer.still_waiting()
        await trio.sleep(0.01)


async def test_a_wait_counts_from_the_oldest_frame_however_often_the_writer_checks(
    client: coredis.Redis[bytes],
) -> None:
    held = HeldWriters(client, KEYS)
    assert await held.held_s([("c", EPOCH)]) == [None]  # no stamp: nobody waits
    writer = Writer(client, "w")
    await wait_and_renew(writer, 0.5)
    waited = await waited_s(held)
    # Up to the last renewal, at most HELD_RENEW_MS old.
    assert 0.5 - RENEW_S - 0.05 <= waited <= 0.5 + 0.5, waited


async def test_a_wait_that_began_before_the_first_check_counts_from_the_frame(
    client: coredis.Redis[bytes],
) -> None:
    # A slow reader lets a frame in now and then: the writer's room check finds room, its
    # oldest frame still waiting is older than this check. It counts from that frame.
    held = HeldWriters(client, KEYS)
    writer = Writer(client, "w")
    writer.arrived -= 2.0
    await writer.still_waiting()
    waited = await waited_s(held)
    assert 2.0 <= waited < 2.0 + 0.2, waited
    await trio.sleep(RENEW_S + 0.02)
    await writer.still_waiting()
    waited = await waited_s(held)
    assert 2.0 + RENEW_S <= waited < 2.0 + RENEW_S + 0.5, waited


async def test_a_wait_its_writer_stopped_renewing_does_not_grow_and_then_is_over(
    client: coredis.Redis[bytes],
) -> None:
    held = HeldWriters(client, KEYS)
    writer = Writer(client, "w")
    await wait_and_renew(writer, 0.3)
    [at_stop] = await held.held_s([("c", EPOCH)])
    await trio.sleep(HELD_FRESH_MS / 2000)  # the writer got room, or went away
    [later] = await held.held_s([("c", EPOCH)])
    assert later == at_stop  # up to its last renewal, not up to now
    await trio.sleep(HELD_FRESH_MS / 1000)
    assert await held.held_s([("c", EPOCH)]) == [None]
    writer.arrived = time.monotonic()  # a new wait: from its own oldest frame
    await writer.still_waiting()
    waited = await waited_s(held)
    assert waited < 0.2, waited


async def test_the_longest_wait_of_several_writers_counts_and_channels_answer_apart(
    client: coredis.Redis[bytes],
) -> None:
    held = HeldWriters(client, KEYS)
    old, new, elsewhere = Writer(client, "old"), Writer(client, "new"), Writer(client, "o", "x")
    old.arrived -= 1.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_and_renew, old, 0.3)
        nursery.start_soon(wait_and_renew, new, 0.3)
        nursery.start_soon(wait_and_renew, elsewhere, 0.3)
    c, x, y = await held.held_s([("c", EPOCH), ("x", EPOCH), ("y", EPOCH)])
    assert c is not None and 1.0 <= c < 1.0 + 0.3 + 0.5, c
    assert x is not None and 0.0 < x < 0.3 + 0.5, x
    assert y is None
    assert await held.held_s([("c", "another epoch")]) == [None]


async def test_a_waiting_writer_renews_its_stamp_a_few_times_a_second_only(
    client: coredis.Redis[bytes],
) -> None:
    writer = Writer(client, "w")
    stamps: set[bytes] = set()
    end = trio.current_time() + 0.5
    while trio.current_time() < end:  # 50 room checks
        await writer.still_waiting()
        stamp = await client.hget(writer.key, "w")
        assert stamp is not None
        stamps.add(stamp)
        await trio.sleep(0.01)
    assert len(stamps) <= 0.5 / RENEW_S + 2, stamps


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stamp=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
async def test_a_malformed_stamp_counts_as_no_wait_and_is_written_over(
    shared_redis: RedisServer, stamp: bytes
) -> None:
    # A stamp is "start last" (two decimal numbers); anything else counts as no wait, and the
    # writer's next room check writes a sound one over it.
    async with connected(shared_redis) as client:
        held = HeldWriters(client, KEYS)
        writer = Writer(client, "w", "m")
        await client.delete([writer.key])
        await client.hset(writer.key, {"w": stamp})
        [waited] = await held.held_s([("m", EPOCH)])
        parts = stamp.split(b" ")
        if not (len(parts) == 2 and all(p.isdigit() and p.isascii() for p in parts)):
            assert waited is None
        await writer.still_waiting()
        [waited] = await held.held_s([("m", EPOCH)])
        assert waited is not None and 0.0 <= waited < 0.2
        assert set(await client.hkeys(writer.key)) == {b"w"}  # the malformed stamp went


async def test_the_stamps_of_writers_that_stopped_waiting_go(
    client: coredis.Redis[bytes],
) -> None:
    # Writers come and go while one keeps waiting: the hash every node reads every 50 ms
    # holds the writers waiting now, not every writer that ever waited.
    steady = Writer(client, "steady")
    for i in range(5):
        gone = Writer(client, f"gone-{i}")
        await gone.still_waiting()
        await wait_and_renew(steady, HELD_FRESH_MS / 1000 + RENEW_S + 0.05)
    assert set(await client.hkeys(steady.key)) == {b"steady"}
