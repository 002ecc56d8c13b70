"""Races of a take-over by name across nodes, each forced into its bad interleaving.

A take-over (a crashed client's new process creating its channel again on another node)
races with the two things that end a gone owner's channel: the old node's resume grace, and
the survivors' reaper of a dead node's channels. Each test puts the other step exactly
between the take-over's two halves: with a TCP proxy between a node and Redis that the test
holds (the node hears nothing meanwhile), or with a hook on the real registry call that waits
for the real deleter. The same races on one node (a take-over there moves nothing in Redis)
are ordered on the node itself. One test pins the ordering that rules out a race for an
owner that leaves without a lease. Redis, the nodes and the clients are real, on loopback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from proxy import open_proxy
from redis_server import RedisServer
from test_cluster import WAIT_S, node_config
from test_reconnect import open_named

import trio_stream as ts


def node_via(redis_url: str, node: str, **options: Any) -> ts.ServerConfig:
    """A node reaching Redis at ``redis_url`` (a proxy's address)."""
    return ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=None, engine=redis_url, node_name=node, **options
    )


async def test_a_take_over_heard_after_the_old_nodes_grace_ended_keeps_its_readers_there(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The old node's grace ends after the new node moved the channel in Redis but before the
    # old node heard of it (ADOPTED held in the proxy): the channel lives on, so its readers
    # on the old node must too.
    grace_s = 1.0
    caplog.set_level(logging.INFO, logger="trio_stream._engine.redis_engine")
    async with (
        open_proxy(redis_server.url) as a_to_redis,
        ts.open_server(node_via(a_to_redis.url, "a", resume_grace_s=grace_s)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=grace_s)) as b,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        sub = await stack.enter_async_context(recorder.subscribe("c"))
        await daq.publish("c", 1)
        with trio.fail_after(WAIT_S):
            first = await sub.receive()
        assert (first.data, first.seq) == (1, 1)
        daq_to_a.refuse()
        daq_to_a.cut()  # the daq process is gone: node a keeps its channel for the grace
        cut_at = trio.current_time()
        daq_again = await open_named(str(b.tcp_url), "daq", stack)
        a_to_redis.hold()  # node a hears nothing from Redis from now on
        await daq_again.create_channel("c")  # taken over: node b keeps it now
        assert trio.current_time() - cut_at < grace_s, "the take-over came after the grace"
        await trio.sleep(cut_at + grace_s + 0.3 - trio.current_time())  # a's grace ends
        a_to_redis.release()  # now node a hears of the take-over
        await daq_again.publish("c", 2)
        with trio.fail_after(WAIT_S):
            second = await sub.receive()
        assert (second.data, second.seq, second.gap) == (2, 2, None)
        assert {c.name: c.owner for c in await recorder.channels()}.get("c") == "daq"
    # Not by luck: node a's grace did end first, and Redis told it the channel had moved.
    assert "channel 'c' lives on at node 'b'" in caplog.text


def move_after(registry: Any, step: Callable[[str], Awaitable[None]], moves: list[str]) -> Any:
    """``registry.move`` that first lets ``step(name)`` happen (it returns once done), then
    moves for real; each call is noted in ``moves``."""
    real_move: Callable[..., Awaitable[str | None]] = registry.move

    async def move(name: str, **options: Any) -> str | None:
        moves.append(name)
        await step(name)
        return await real_move(name, **options)

    return move


async def test_a_take_over_that_loses_the_race_to_the_old_nodes_grace_creates_it_afresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other order of the first test: node a's grace ends (and a deletes the channel in
    # Redis) between the take-over's look-up and its move. The name is free: the create
    # succeeds with a new channel, and a's readers of the old one see it end.
    grace_s = 1.0
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=grace_s)) as b,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        old = await stack.enter_async_context(recorder.subscribe("c"))
        daq_to_a.refuse()
        daq_to_a.cut()
        daq_again = await open_named(str(b.tcp_url), "daq", stack)
        registry = b.state.engine.io.registry  # type: ignore[attr-defined]
        moves: list[str] = []

        async def grace_ended(name: str) -> None:
            with trio.fail_after(grace_s + WAIT_S):
                while await registry.get(name) is not None:  # noqa: ASYNC110
                    await trio.sleep(0.05)

        monkeypatch.setattr(registry, "move", move_after(registry, grace_ended, moves))
        await daq_again.create_channel("c")
        assert moves == ["c"], "the take-over did not race the grace"
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await old.receive()
        (info,) = [c for c in await recorder.channels() if c.name == "c"]
        assert (info.owner, info.seq) == ("daq", 0)
        async with recorder.subscribe("c") as sub:
            await daq_again.publish("c", "fresh")
            with trio.fail_after(WAIT_S):
                message = await sub.receive()
        assert (message.data, message.seq) == ("fresh", 1)


async def test_a_take_over_that_loses_the_race_to_the_reaper_creates_the_channel_afresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reaper of node b ends dead node a's channel between the take-over's look-up of the
    # channel and its move: the name is free by then, so the create must succeed.
    async with (
        ts.open_server(node_config(redis_server, "b", resume_grace_s=1.0)) as b,
        AsyncExitStack() as stack,
    ):
        async with (
            ts.open_server(node_config(redis_server, "a", resume_grace_s=60.0)) as a,
            open_proxy(str(a.tcp_url)) as daq_to_a,
            ts.open_client(daq_to_a.url, name="daq") as daq,
        ):
            await daq.create_channel("c")
            for value in range(3):
                await daq.publish("c", value)
            daq_to_a.refuse()
            daq_to_a.cut()  # the daq process is gone; then node a stops, its channel left
        registry = b.state.engine.io.registry  # type: ignore[attr-defined]
        moves: list[str] = []

        async def reaped(name: str) -> None:
            with trio.fail_after(WAIT_S):  # node b's reaper ends it: a is dead, grace over
                while await registry.get(name) is not None:  # noqa: ASYNC110
                    await trio.sleep(0.05)

        monkeypatch.setattr(registry, "move", move_after(registry, reaped, moves))
        # The name comes free when node a's heartbeat expires (3 s): open_named waits.
        daq_again = await open_named(str(b.tcp_url), "daq", stack)
        await daq_again.create_channel("c")
        assert moves == ["c"], "the take-over did not race the reaper"
        (info,) = [c for c in await daq_again.channels() if c.name == "c"]
        assert (info.owner, info.seq) == ("daq", 0)  # created afresh, on node b
        async with daq_again.subscribe("c") as sub:
            await daq_again.publish("c", "fresh")
            with trio.fail_after(WAIT_S):
                message = await sub.receive()
        assert (message.data, message.seq) == ("fresh", 1)


async def test_a_take_over_on_the_node_ending_the_channel_waits_and_creates_it_afresh(
    redis_server: RedisServer,
) -> None:
    # On one node the take-over moves nothing in Redis: it is ordered after the node's own
    # end of the channel (its owner's grace), which waits on Redis here (held).
    grace_s = 0.5
    async with (
        open_proxy(redis_server.url) as a_to_redis,
        ts.open_server(node_via(a_to_redis.url, "a", resume_grace_s=grace_s)) as a,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        old = await stack.enter_async_context(recorder.subscribe("c"))
        daq_to_a.refuse()
        daq_to_a.cut()
        cut_at = trio.current_time()
        daq_again = await open_named(str(a.tcp_url), "daq", stack)
        a_to_redis.hold()
        await trio.sleep(cut_at + grace_s + 0.3 - trio.current_time())  # the grace ends
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daq_again.create_channel, "c")
            await trio.sleep(0.2)
            a_to_redis.release()
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await old.receive()
        (info,) = [c for c in await recorder.channels() if c.name == "c"]
        assert (info.owner, info.seq) == ("daq", 0)
        async with recorder.subscribe("c") as sub:
            await daq_again.publish("c", "fresh")
            with trio.fail_after(WAIT_S):
                message = await sub.receive()
        assert (message.data, message.seq, message.gap) == ("fresh", 1, None)


async def test_a_new_process_never_finds_the_channel_of_an_owner_that_left_without_a_lease(
    redis_server: RedisServer,
) -> None:
    # Pins the ordering that rules a race out: without a lease (no resume) the old node
    # deletes the owner's channels in Redis before it releases the owner's name, and the new
    # process needs the name before it can create: it always creates afresh.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        open_proxy(str(a.tcp_url)) as daq_to_a,
    ):
        for round_ in range(3):
            async with ts.open_client(daq_to_a.url, name=f"daq{round_}", reconnect=False) as daq:
                await daq.create_channel("c")
                await daq.publish("c", round_)
                daq_to_a.cut()  # gone without a goodbye, and without a lease
                with trio.fail_after(WAIT_S):
                    await daq.wait_state("closed")
            async with AsyncExitStack() as stack:
                daq_again = await open_named(str(b.tcp_url), f"daq{round_}", stack)
                await daq_again.create_channel("c")  # never ChannelExists
                (info,) = [c for c in await daq_again.channels() if c.name == "c"]
                assert (info.owner, info.seq) == (f"daq{round_}", 0)
                await daq_again.delete_channel("c")


async def test_a_take_over_racing_the_reaper_of_the_nodes_previous_run_creates_afresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node restarted under its name reaps its previous run's channels after the grace; a
    # take-over by name on that node moves nothing in Redis, so it must wait for the
    # reaper's delete under way (here held by the test) instead of adopting what goes.
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=60.0)) as a,
        ts.open_client(str(a.tcp_url), name="w") as w,
    ):
        await w.create_channel("x")
        await w.publish("x", "old")
    async with ts.open_server(node_config(redis_server, "a", resume_grace_s=0.5)) as a:
        registry = a.state.engine.io.registry  # type: ignore[attr-defined]
        real_delete: Callable[..., Awaitable[str | None]] = registry.delete
        deleting, go = trio.Event(), trio.Event()

        async def held_delete(name: str, **options: Any) -> str | None:
            if name == "x":
                deleting.set()
                await go.wait()
            return await real_delete(name, **options)

        monkeypatch.setattr(registry, "delete", held_delete)
        async with ts.open_client(str(a.tcp_url), name="w") as w:
            with trio.fail_after(WAIT_S):
                await deleting.wait()  # the reaper ends the previous run's "x" now
            async with trio.open_nursery() as nursery:
                nursery.start_soon(w.create_channel, "x")
                await trio.sleep(0.3)  # the create waits for the reaper, or adopts on 6146ceb
                go.set()
            (info,) = [c for c in await w.channels() if c.name == "x"]
            assert (info.owner, info.seq) == ("w", 0)  # created afresh
            async with w.subscribe("x") as sub:
                await w.publish("x", "new")
                with trio.fail_after(WAIT_S):
                    message = await sub.receive()
            assert (message.data, message.seq) == ("new", 1)
