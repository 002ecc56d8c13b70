"""Reader counts across a Redis outage longer than the heartbeat TTL.

Redis (with persistence: the channel and its readers outlive the restart) is SIGKILLed for
longer than the heartbeat TTL and started again on the same port. Every node's heartbeat
had expired meanwhile, so the first node to beat again finds itself alone among the live
nodes. The others have not beaten yet, but their readers never left: the writer's node must
not take their reader counts for gone (before, its writer's ``send`` returned False, nothing
sent, for up to a heartbeat interval while a reader on another node was subscribed all along).
Which node beats first is made certain here: the reader's node's beats wait until the
writer's node has beaten since the restart. Real nodes in this process, a real redis-server
of the test's own; every wait is bounded. The tests after the first do the same with the
nodes' presence alone, each heartbeat made by the test (a node that announced its reader
but was not yet listed live; a node that dies during the outage still leaves a TTL later).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import coredis.exceptions
import pytest
import trio
from redis_server import RedisServer, running_redis_server
from test_cluster import WAIT_S, node_config

import trio_stream as ts
from trio_stream._engine.redis_io import RedisEngineIO
from trio_stream._engine.redis_presence import HEARTBEAT_TTL_S, READERS_KIND


class PersistentRedisServer(RedisServer):
    """The tests' redis-server with an append-only file in its own directory: a SIGKILL and a
    start on the same port find every channel (and its stream) as it was."""

    appendonly = "yes"


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    with running_redis_server(PersistentRedisServer) as server:
        yield server


async def test_a_redis_outage_longer_than_the_ttl_never_takes_a_live_readers_count_away(
    persistent_redis: PersistentRedisServer,
) -> None:
    outage_s = HEARTBEAT_TTL_S + 1.0  # every heartbeat expires meanwhile
    redis = persistent_redis
    async with (
        ts.open_server(node_config(redis, "a")) as a,
        ts.open_server(node_config(redis, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        presence_a: Any = a.state.engine.io.presence  # type: ignore[attr-defined]
        presence_b: Any = b.state.engine.io.presence  # type: ignore[attr-defined]
        real_beat_a, real_beat_b = presence_a.beat, presence_b.beat
        killed = False
        a_back = trio.Event()  # a's heartbeat has reached the restarted Redis

        async def beat_a() -> None:
            await real_beat_a()
            if killed:
                a_back.set()

        async def beat_b() -> None:
            # After the kill, b beats only once a has (a few tenths of a second later: well
            # within the TTL, and within the run loop's bound of a beat, half a TTL).
            if killed and not a_back.is_set():
                with trio.move_on_after(HEARTBEAT_TTL_S / 3):
                    await a_back.wait()
                if a_back.is_set():
                    await trio.sleep(0.3)
            await real_beat_b()

        presence_a.beat, presence_b.beat = beat_a, beat_b

        await daq.create_channel("c")
        async with daq.publisher("c") as pub, rec.subscribe("c", policy="unbounded") as sub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                assert await pub.send(-1)
                assert (await sub.receive()).data == -1
                # Nodes that have run a while: a's heartbeat lists b among the live ones.
                while "b" not in presence_a.live_nodes:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            refused: list[int] = []  # values whose send returned False (sent nowhere)
            fewest = pub.readers
            received: list[Any] = []

            async def read() -> None:
                async for message in sub:
                    received.append(message.data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                killed = True
                await trio.to_thread.run_sync(redis.stop)  # SIGKILL
                stopped = trio.current_time()
                value = 0
                sending = True

                async def restart_after_the_outage() -> None:
                    nonlocal sending
                    await trio.sleep_until(stopped + outage_s)
                    await trio.to_thread.run_sync(redis.start)  # the same port
                    with trio.fail_after(WAIT_S):
                        await a_back.wait()
                    # Past the TTL after both nodes are back: every resync has been made.
                    await trio.sleep(HEARTBEAT_TTL_S + 1.0)
                    sending = False

                nursery.start_soon(restart_after_the_outage)
                with trio.fail_after(outage_s + 2 * WAIT_S):
                    while sending and value < 10_000:  # 50 a second for ~10 s at most
                        fewest = min(fewest, pub.readers)
                        with trio.move_on_after(0.5):  # a full window waits for Redis
                            if not await pub.send(value):
                                refused.append(value)
                        value += 1
                        await trio.sleep(0.02)
                    assert a_back.is_set()
                    assert await pub.send("last")
                    while not received or received[-1] != "last":  # noqa: ASYNC110
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
            assert sub.end_reason is None  # subscribed throughout
            assert refused == [], f"sent to nobody with a reader subscribed: {refused}"
            assert fewest >= 1
            assert received[-1] == "last"


# The same at the level of the nodes' presence, each heartbeat made by the test (no heartbeat
# task): which node beats when after the outage is the test's to say, and the TTL is short.
TTL_S = 1.0


@asynccontextmanager
async def nodes_beating_by_hand(
    redis: RedisServer, *names: str
) -> AsyncIterator[list[RedisEngineIO]]:
    """Nodes of ``names``: their control buses run, their heartbeats are the caller's."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                RedisEngineIO.open(redis.url, name, heartbeat_ttl_s=TTL_S)
            )
            for name in names
        ]
        nursery = await stack.enter_async_context(trio.open_nursery())
        for node in nodes:
            await nursery.start(node.bus.run)
        yield nodes
        nursery.cancel_scope.cancel()


async def beat(node: RedisEngineIO) -> None:
    """One heartbeat of ``node``, tried again while its connections to a restarted Redis are
    replaced (bounded)."""
    with trio.fail_after(WAIT_S):
        while True:
            try:
                await node.presence.beat()
                return
            except (coredis.exceptions.ConnectionError, OSError):
                await trio.sleep(0.05)


async def outage(redis: RedisServer, nodes: list[RedisEngineIO]) -> None:
    """SIGKILL Redis for longer than the TTL, start it again (empty) on the same port, and
    wait until every node's control bus listens again."""
    await trio.to_thread.run_sync(redis.stop)
    await trio.sleep(TTL_S * 1.5)
    await trio.to_thread.run_sync(redis.start)
    with trio.fail_after(WAIT_S):
        for node in nodes:
            while not await nodes[0].bus.listening(node.node):  # noqa: ASYNC110
                await trio.sleep(0.02)


async def test_the_first_node_back_keeps_the_counts_of_one_known_only_from_its_announcement(
    redis_server: RedisServer,
) -> None:
    # b joined after a's last heartbeat before the outage: a knew b's reader only from its
    # announcement. After the outage a beats first and finds itself alone; b's count stays
    # until b beats, and b's beat writes its count back and announces it (a hears it at once,
    # not at its next heartbeat).
    async with nodes_beating_by_hand(redis_server, "a", "b") as (a, b):
        await beat(a)
        await beat(b)
        heard: list[tuple[str, Any]] = []
        a.bus.on(READERS_KIND, lambda node, body: heard.append((node, body)))
        await b.presence.set_readers("c", 1)
        with trio.fail_after(WAIT_S):
            while a.presence.readers("c") != 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert "b" not in a.presence.live_nodes
        await outage(redis_server, [a, b])
        heard.clear()
        await beat(a)
        assert a.presence.live_nodes == frozenset({"a"})
        assert a.presence.readers("c") == 1  # before: 0, its writer's sends went nowhere
        await beat(b)
        with trio.fail_after(WAIT_S):
            while ("b", ["c", 1]) not in heard:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert await a.client.hgetall(a.keys.readers("b")) == {b"c": b"1"}
        await beat(a)
        assert a.presence.live_nodes == frozenset({"a", "b"})
        assert a.presence.readers("c") == 1


async def test_a_node_that_never_beats_after_the_outage_loses_its_counts_a_ttl_later(
    redis_server: RedisServer,
) -> None:
    # b was live with a reader, and dies during the outage (it never beats again): a keeps
    # its count for one TTL after its own first heartbeat back, then drops it as a dead
    # node's, not for good.
    async with nodes_beating_by_hand(redis_server, "a", "b") as (a, b):
        await beat(a)
        await beat(b)
        await b.presence.set_readers("c", 2)
        await beat(a)
        assert a.presence.live_nodes == frozenset({"a", "b"})
        assert a.presence.readers("c") == 2
        await outage(redis_server, [a])
        await beat(a)
        back = trio.current_time()
        assert a.presence.readers("c") == 2
        await trio.sleep_until(back + TTL_S / 2)
        await beat(a)
        assert a.presence.readers("c") == 2
        await trio.sleep_until(back + TTL_S + 0.1)
        await beat(a)
        assert a.presence.live_nodes == frozenset({"a"})
        assert a.presence.readers("c") == 0
        assert a.presence.remote_readers("c") == 0


async def test_a_node_dead_through_outage_after_outage_is_held_only_once(
    redis_server: RedisServer,
) -> None:
    # Redis restarting again and again: each heartbeat of a that found its own entry lapsed
    # held b (dead since the first outage) for another TTL, its reader counted for good
    # where the README says at most a TTL (a review).
    async with nodes_beating_by_hand(redis_server, "a", "b") as (a, b):
        await beat(a)
        await beat(b)
        await b.presence.set_readers("c", 1)
        await beat(a)
        assert a.presence.readers("c") == 1
        await outage(redis_server, [a])
        await beat(a)
        back = trio.current_time()
        assert a.presence.readers("c") == 1  # held: b may not have beaten yet
        await outage(redis_server, [a])  # a's entry lapses again, b still silent
        await beat(a)
        assert trio.current_time() > back + TTL_S
        assert a.presence.readers("c") == 0  # its one TTL is over: not held again
