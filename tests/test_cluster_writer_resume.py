"""A writer whose connection drops while its frames are on their way to Redis.

On a Redis node a writer's frames reach Redis after the session handed them over (one append
task per writer, see redis_engine). A reconnecting client is told how many frames its
publisher's previous connection took (the lease's ``taken``) and sends exactly the rest
again: frames still on their way when the connection dropped are published all the same, so
they must count as taken, and the reopened writer's frames must follow them. Real node, real
redis-server, a proxy that cuts the writer's connection; Redis hangs for real (SIGSTOP), or
one append is answered late through a hook on the node's real append call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import pytest
import trio
from proxy import TcpProxy, open_proxy
from redis_server import RedisServer, redis_stopped
from test_cluster import WAIT_S, node_config

import trio_stream as ts


def redis_fails_for(
    registry: Any, name: str, down: list[bool], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The node's registry.get of ``name`` fails (Redis down) while ``down[0]``; returns
    the list of the calls that failed."""
    failed: list[str] = []
    real_get = registry.get

    async def get(channel: str, **options: Any) -> Any:
        if channel == name and down[0]:
            failed.append(channel)
            raise coredis.exceptions.ConnectionError("Redis down (test)")
        return await real_get(channel, **options)

    monkeypatch.setattr(registry, "get", get)
    return failed


async def until(check: Any) -> None:
    with trio.fail_after(WAIT_S):
        while not check():  # noqa: ASYNC110 - the node's own state, no event to wait on
            await trio.sleep(0.005)


async def cut_writer(server: ts.Server, proxy: TcpProxy) -> None:
    """Cut the writer's connection and wait until the node has ended its session."""
    sessions = len(server.state.sessions)
    proxy.cut()
    await until(lambda: len(server.state.sessions) < sessions)


async def rest_of_the_stream(
    server: ts.Server, pub: ts.Publisher, sub: ts.Subscription
) -> list[Any]:
    """Once the node has no append left but the reopened writer's, send "end": what the
    reader gets up to it (anything the writer's last connection left on its way is in)."""
    engine: Any = server.state.engine
    await until(lambda: len(engine._appenders) == 1)
    assert await pub.send("end")
    return await read_until(sub, "end")


async def read_until(sub: ts.Subscription, last: Any) -> list[Any]:
    got: list[Any] = []
    with trio.fail_after(WAIT_S):
        while last not in got:
            got.append((await sub.receive()).data)
    return got


def appends_started(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Note each append the node starts (its real append call, unchanged)."""
    frame_writer = engine.io.writer
    real_append = frame_writer.append
    started: list[int] = []

    async def append(*args: Any, **options: Any) -> Any:
        started.append(1)
        return await real_append(*args, **options)

    monkeypatch.setattr(frame_writer, "append", append)
    return started


def hold_next_append(engine: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], trio.Event]:
    """Hold the node's next append (its real call, answered late) until the event is set;
    the list notes that it started."""
    frame_writer = engine.io.writer
    real_append = frame_writer.append
    held: list[int] = []
    release = trio.Event()

    async def append(*args: Any, **options: Any) -> Any:
        if not held:
            held.append(1)
            await release.wait()
        return await real_append(*args, **options)

    monkeypatch.setattr(frame_writer, "append", append)
    return held, release


async def frame_two_held(
    engine: Any, pub: ts.Publisher, monkeypatch: pytest.MonkeyPatch
) -> trio.Event:
    """Frame 2 sent and held on its way to Redis (not acknowledged yet); set the event
    returned to let it through."""
    held, release = hold_next_append(engine, monkeypatch)
    assert await pub.send(2)
    await until(lambda: held)
    return release


@asynccontextmanager
async def node_and_proxied_writer(
    redis: RedisServer,
) -> AsyncIterator[tuple[ts.Server, TcpProxy, ts.Client, ts.Client, ts.Client]]:
    """Node "a" on ``redis``, and three clients: the channels' owner and a reader straight
    to it, a writer ("w") through a proxy whose connection the test cuts."""
    async with (
        ts.open_server(node_config(redis, "a")) as a,
        open_proxy(str(a.tcp_url)) as proxy,
        ts.open_client(str(a.tcp_url), name="owner") as owner,
        ts.open_client(str(a.tcp_url), name="rec") as rec,
        ts.open_client(proxy.url, name="w") as w,
    ):
        yield a, proxy, owner, rec, w


async def first_frame_through(pub: ts.Publisher, sub: ts.Subscription) -> None:
    """Frame 1 published, acknowledged and read: the writer's state before the fault."""
    with trio.fail_after(WAIT_S):
        await pub.wait_for_readers()
        assert await pub.send(1)
        await pub.wait_acknowledged()
    assert await read_until(sub, 1) == [1]


async def test_a_frame_on_its_way_to_redis_when_the_writer_drops_is_not_sent_twice(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frame 2 is handed to the node's append task, Redis hangs, the writer's connection
    # drops, Redis answers again: frame 2 reaches Redis after the session ended. The
    # reconnecting writer must not send it again. Before, the session counted a frame as
    # taken only once Redis held it: the client was told 1, sent 2 again, and the reader got
    # it twice.
    async with node_and_proxied_writer(redis_server) as (a, proxy, owner, rec, w):
        await owner.create_channel("c")
        started = appends_started(a.state.engine, monkeypatch)
        async with rec.subscribe("c", policy="unbounded") as sub, w.publisher("c") as pub:
            await first_frame_through(pub, sub)
            with redis_stopped(redis_server):
                assert await pub.send(2)
                await until(lambda: len(started) == 2)  # frame 2's append waits for Redis
                await cut_writer(a, proxy)
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")
                assert await pub.send(3)
            assert await rest_of_the_stream(a, pub, sub) == [2, 3, "end"]


async def test_a_reopened_writers_frames_follow_those_its_last_connection_left_on_their_way(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frame 2's append is answered late (held by a hook on the node's real append call);
    # meanwhile the writer reconnects at once and sends frame 3 on its reopened publisher.
    # Frame 2 counts as taken (not sent again), so frame 3 must wait for it: the reader gets
    # them in the order they were sent.
    async with node_and_proxied_writer(redis_server) as (a, proxy, owner, rec, w):
        await owner.create_channel("c")
        engine: Any = a.state.engine
        async with rec.subscribe("c", policy="unbounded") as sub, w.publisher("c") as pub:
            await first_frame_through(pub, sub)
            release = await frame_two_held(engine, pub, monkeypatch)
            await cut_writer(a, proxy)
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")
                assert await pub.send(3)
            # Frame 3 is on the node, in the reopened writer's own append task.
            await until(lambda: len(engine._appenders) == 2)
            await trio.sleep(0.2)  # time to reach Redis first, were it not held back
            release.set()
            assert await rest_of_the_stream(a, pub, sub) == [2, 3, "end"]


async def test_a_reopen_cut_short_before_its_retry_is_still_told_what_the_node_took(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frame 2 is published but its acknowledgement is lost with the writer's connection. The
    # reconnected writer's reopen meets a Redis failure (ClusterUnavailable: retried later),
    # and its new connection drops too before the retry. The next connection must still
    # tell the reopen that frame 2 was taken. Before, the second connection's end noted only
    # its own publishers (none): the reopen was told nothing, the client sent its whole
    # window again and the reader got frame 2 twice.
    async with node_and_proxied_writer(redis_server) as (a, proxy, owner, rec, w):
        await owner.create_channel("c")
        engine: Any = a.state.engine
        async with rec.subscribe("c", policy="unbounded") as sub, w.publisher("c") as pub:
            await first_frame_through(pub, sub)
            release = await frame_two_held(engine, pub, monkeypatch)
            down = [True]
            failed = redis_fails_for(engine.io.registry, "c", down, monkeypatch)
            await cut_writer(a, proxy)
            release.set()
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")  # its reopen failed: retried after a backoff
            assert failed
            await cut_writer(a, proxy)
            down[0] = False  # Redis is well again
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")
                assert await pub.send(3)
            assert await rest_of_the_stream(a, pub, sub) == [2, 3, "end"]


async def test_a_publisher_reopened_first_never_takes_the_id_of_one_still_to_reopen(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two publishers, ids 1 (c1) and 2 (c2). After a cut, c2's reopen is answered and c1's
    # meets a Redis failure (retried later); the connection drops again before the retry.
    # c1's publisher still presents id 1: the counts the next connection gets must be c1's,
    # not those of the publisher the dropped connection numbered 1 (c2's reopen there).
    # Before pub ids went on across connections, c1 was told 0 and sent frame 2 again.
    async with node_and_proxied_writer(redis_server) as (a, proxy, owner, rec, w):
        await owner.create_channel("c1")
        await owner.create_channel("c2")
        engine: Any = a.state.engine
        async with (
            rec.subscribe("c1", policy="unbounded") as sub,
            w.publisher("c1") as pub,
            w.publisher("c2") as other,
        ):
            assert (pub.pub_id, other.pub_id) == (1, 2)
            await first_frame_through(pub, sub)
            release = await frame_two_held(engine, pub, monkeypatch)
            down = [True]
            failed = redis_fails_for(engine.io.registry, "c1", down, monkeypatch)
            await cut_writer(a, proxy)
            release.set()
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")  # c2's publisher reopened, c1's retried later
            assert failed and other.pub_id != 2
            await cut_writer(a, proxy)
            down[0] = False
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")
                assert await pub.send(3)
            assert await rest_of_the_stream(a, pub, sub) == [2, 3, "end"]
