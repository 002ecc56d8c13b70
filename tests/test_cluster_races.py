"""Races of a take-over by name across nodes, each forced into its bad interleaving.

A take-over (a crashed client's new process creating its channel again on another node)
races with the two things that end a gone owner's channel: the old node's end of it (its
owner left without a lease, or its resume grace ran out), and the survivors' reaper of a
dead node's channels. Each test puts the other step exactly between the take-over's two
halves: with a TCP proxy between a node and Redis that the test holds (the node hears
nothing meanwhile), or with a hook on the real registry call that waits for the real
deleter; a test moves on when the engine's own state shows the race is set (the end under
way, the take-over waiting for it), not after a fixed sleep. The same races on one node (a
take-over there moves nothing in Redis) are ordered on the node itself. Faults at the end
itself (Redis down, or refusing through an ACL) are retried, and bounded. Redis, the nodes
and the clients are real, on loopback.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import trio
from proxy import open_proxy
from redis_server import RedisServer, redis_stopped
from test_cluster import WAIT_S, Daq, node_config, writer_and_reader_nodes
from test_reconnect import open_named

import trio_stream as ts
from trio_stream._engine import redis_engine, redis_orphans
from trio_stream._engine.redis_io import RedisEngineIO
from trio_stream._engine.redis_streams import REDIS_ERRORS

# Every key the nodes write during a test, except the channel hashes ({ns}:ch:{name}, see
# redis_keys): with these as the only writable keys, Redis refuses (NOPERM) exactly the
# registry's conditional delete of a channel, and nothing else the nodes do meanwhile.
WRITABLE_BUT_CHANNELS = (
    "%R~*",
    "~ts:channels",
    "~ts:st:*",
    "~ts:wake:*",
    "~ts:nodes",
    "~ts:run:*",
    "~ts:clients:*",
    "~ts:name:*",
    "~ts:readers:*",
    "~ts:pos:*",
)


# The hooks of some tests hold a take-over's move in Redis (until a grace ends, a reaper
# acts: up to WAIT_S and more) longer than the engine's bound on one, which stands for a
# Redis that hangs (TAKE_OVER_MOVE_TIMEOUT_S, and the request's REQUEST_REDIS_TIMEOUT_S):
# those tests lift the bounds.
HELD_MOVE_S = 3 * WAIT_S


async def acl_keys(redis: RedisServer, *patterns: str) -> None:
    """Set the default user's key patterns of the test's own redis-server (redis-cli)."""
    argv = ["redis-cli", "-p", str(redis.port), "ACL", "SETUSER", "default", "resetkeys"]
    result = await trio.run_process([*argv, *patterns], capture_stdout=True)
    assert result.stdout.strip() == b"OK", result.stdout


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()``: a state of the engine, looked at every 10 ms."""
    with trio.fail_after(WAIT_S):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.01)


def ending(server: ts.Server, name: str) -> bool:
    """Whether ``server``'s node is ending channel ``name`` (its Redis step under way)."""
    return name in server.state.engine._ending  # type: ignore[attr-defined]


def waits_for_the_end(server: ts.Server, name: str) -> bool:
    """Whether a create_channel on ``server`` waits for its node's end of ``name``."""
    done = server.state.engine._ending.get(name)  # type: ignore[attr-defined]
    return done is not None and done.statistics().tasks_waiting > 0


async def kept_at(server: ts.Server, name: str) -> str | None:
    """The node that keeps channel ``name``, as Redis says (None: no such channel)."""
    record = await server.state.engine.io.registry.get(name)  # type: ignore[attr-defined]
    return None if record is None else str(record.node)


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
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
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
        await until(lambda: ending(a, "c"))  # a's grace ends, its delete held in the proxy
        a_to_redis.release()  # now node a hears of the take-over
        await daq_again.publish("c", 2)
        with trio.fail_after(WAIT_S):
            second = await sub.receive()
        assert (second.data, second.seq, second.gap) == (2, 2, None)
        assert {c.name: c.owner for c in await recorder.channels()}.get("c") == "daq"
    # Not by luck: Redis told node a the channel had moved.
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


class OwnerGone(NamedTuple):
    """Channel "c" kept on node ``a`` for its gone owner "daq" (for its grace), read there
    by ``recorder`` through ``sub``; ``daq_again``, a new process of "daq" on node ``b``,
    without a lease (no reconnect: its channels end with its connection); ``registry``,
    node b's (the real one), for the test's hooks."""

    a: ts.Server
    b: ts.Server
    recorder: ts.Client
    sub: ts.Subscription
    daq_again: ts.Client
    registry: Any


@asynccontextmanager
async def owner_gone(
    redis_server: RedisServer, grace_s: float, **b_options: Any
) -> AsyncIterator[OwnerGone]:
    """Nodes a and b with ``grace_s`` (``resume_grace_s``), node b with ``b_options``."""
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=grace_s, **b_options)) as b,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        sub = await stack.enter_async_context(recorder.subscribe("c"))
        daq_to_a.refuse()
        daq_to_a.cut()  # the first process is gone: node a keeps "c" for grace_s
        engine: Any = b.state.engine
        with trio.fail_after(WAIT_S):  # node a releases the name of the gone process
            while await engine.io.presence.name_node("daq") is not None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        daq_again = await stack.enter_async_context(
            ts.open_client(str(b.tcp_url), name="daq", reconnect=False)
        )
        yield OwnerGone(a, b, recorder, sub, daq_again, engine.io.registry)


async def test_a_take_over_that_loses_the_race_to_the_old_nodes_grace_creates_it_afresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other order of the first test: node a's grace ends (and a deletes the channel in
    # Redis) between the take-over's look-up and its move. The name is free: the create
    # succeeds with a new channel, and a's readers of the old one see it end.
    grace_s = 1.0
    async with owner_gone(redis_server, grace_s) as (_, _, recorder, old, daq_again, registry):
        moves: list[str] = []

        async def grace_ended(name: str) -> None:
            with trio.fail_after(grace_s + WAIT_S):
                while await registry.get(name) is not None:  # noqa: ASYNC110
                    await trio.sleep(0.05)

        monkeypatch.setattr(registry, "move", move_after(registry, grace_ended, moves))
        monkeypatch.setattr(redis_engine, "TAKE_OVER_MOVE_TIMEOUT_S", HELD_MOVE_S)
        monkeypatch.setattr(redis_engine, "REQUEST_REDIS_TIMEOUT_S", HELD_MOVE_S)
        await daq_again.create_channel("c")
        assert moves == ["c"], "the take-over did not race the grace"
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await old.receive()
        (info,) = [c for c in await recorder.channels() if c.name == "c"]
        assert (info.owner, info.seq) == ("daq", 0)
        async with recorder.subscribe("c") as sub, daq_again.publisher("c") as pub:
            with trio.fail_after(WAIT_S):
                # A reader on node a reaches node b's count a moment later (over Redis): a
                # send before that is dropped (nobody wants it, as b knows), by design.
                await pub.wait_for_readers()
                assert await pub.send("fresh")
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
        monkeypatch.setattr(redis_engine, "TAKE_OVER_MOVE_TIMEOUT_S", HELD_MOVE_S)
        monkeypatch.setattr(redis_engine, "REQUEST_REDIS_TIMEOUT_S", HELD_MOVE_S)
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


def held_delete(
    registry: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[trio.Event, trio.Event]:
    """Hold ``registry.delete`` of channel ``name``: returns (deleting, go); the first is set
    when a delete of it starts, which then waits for the second."""
    real_delete: Callable[..., Awaitable[str | None]] = registry.delete
    deleting, go = trio.Event(), trio.Event()

    async def delete(channel: str, **options: Any) -> str | None:
        if channel == name:
            deleting.set()
            await go.wait()
        return await real_delete(channel, **options)

    monkeypatch.setattr(registry, "delete", delete)
    return deleting, go


async def test_a_take_over_on_the_node_ending_the_channel_waits_and_creates_it_afresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On one node the take-over moves nothing in Redis: it is ordered after the node's own
    # end of the channel (its owner's grace), whose delete the test holds.
    grace_s = 0.5
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        old = await stack.enter_async_context(recorder.subscribe("c"))
        registry = a.state.engine.io.registry  # type: ignore[attr-defined]
        deleting, go = held_delete(registry, "c", monkeypatch)
        daq_to_a.refuse()
        daq_to_a.cut()
        daq_again = await open_named(str(a.tcp_url), "daq", stack)
        with trio.fail_after(grace_s + WAIT_S):
            await deleting.wait()  # the grace has ended: its delete waits for the test
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daq_again.create_channel, "c")
            await until(lambda: waits_for_the_end(a, "c"))  # the race is set
            go.set()
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
    # Pins the ordering that rules a race out for a new process (no resume token): without
    # a lease the old node's first try to end the owner's channels in Redis runs before its
    # release of the owner's name (the node's jobs run in order), and the new process needs
    # the name free before it can create: it always creates afresh. (A reconnect with a
    # resume token takes the name at once: that race is decided in Redis, see
    # test_an_owner_without_a_lease_back_on_another_node_first_keeps_its_channel.)
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
        deleting, go = held_delete(registry, "x", monkeypatch)
        async with ts.open_client(str(a.tcp_url), name="w") as w:
            with trio.fail_after(WAIT_S):
                await deleting.wait()  # the reaper ends the previous run's "x" now
            async with trio.open_nursery() as nursery:
                nursery.start_soon(w.create_channel, "x")
                await until(lambda: waits_for_the_end(a, "x"))  # adopted on 6146ceb
                go.set()
            (info,) = [c for c in await w.channels() if c.name == "x"]
            assert (info.owner, info.seq) == ("w", 0)  # created afresh
            async with w.subscribe("x") as sub:
                await w.publish("x", "new")
                with trio.fail_after(WAIT_S):
                    message = await sub.receive()
            assert (message.data, message.seq) == ("new", 1)


async def test_a_redis_error_at_the_grace_end_is_retried_and_the_channel_still_ends(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis up but refusing the grace end's delete (NOPERM through an ACL here; READONLY
    # after a fail-over, a script error alike): the node asks again until Redis agrees, then
    # ends the channel; its readers never wait for a gone owner for good.
    grace_s = 0.5
    # The tries after the first log at debug level (one warning per channel).
    caplog.set_level(logging.DEBUG, logger="trio_stream._engine")
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        old = await stack.enter_async_context(recorder.subscribe("c"))
        # No writer: a writer's end removes its mark from the channel's hash, and that
        # NOPERM would end the channel by another path (_append_loop).
        await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS)
        try:
            daq_to_a.refuse()
            daq_to_a.cut()  # the daq process is gone: its grace runs on node a
            with trio.fail_after(grace_s + WAIT_S):  # the grace ends; Redis refuses twice
                while caplog.text.count("not ended yet, Redis failed") < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert "no permissions to access" in caplog.text
            assert ending(a, "c"), "the channel ended without Redis's word"
        finally:
            await acl_keys(redis_server, "~*")  # Redis is healthy again from here on
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await old.receive()
        assert "c" not in [c.name for c in await recorder.channels()]


async def test_a_grace_end_redis_keeps_refusing_ends_the_channel_here_after_the_bound(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis refuses for longer than ORPHAN_END_GIVE_UP_S: the channel ends on its node
    # anyway (its readers see it end), and its copy in Redis goes with the reaper of the
    # channels this node no longer keeps, once Redis lets it.
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_GIVE_UP_S", 1.0)
    grace_s = 0.5
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        old = await stack.enter_async_context(recorder.subscribe("c"))
        await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS)
        try:
            daq_to_a.refuse()
            daq_to_a.cut()
            with trio.fail_after(grace_s + WAIT_S), pytest.raises(trio.EndOfChannel):
                await old.receive()
            assert "ended here without Redis's word" in caplog.text
            assert not ending(a, "c")
        finally:
            await acl_keys(redis_server, "~*")
        # Redis lets it now: the stale copy goes after the grace (the node's reaper).
        with trio.fail_after(WAIT_S):
            while "c" in [c.name for c in await recorder.channels()]:  # noqa: ASYNC110
                await trio.sleep(0.1)


async def test_a_grace_end_whose_redis_call_hangs_is_bounded_and_the_channel_still_ends(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis that stops answering (stopped, a link that holds bytes) raises nothing: each
    # try at the end is bounded (ORPHAN_END_TRY_TIMEOUT_S), the tries go on in a task of
    # their own, and the channel ends here after ORPHAN_END_GIVE_UP_S. Without the bound the
    # first try held the node's job queue and the readers waited for a gone owner for good.
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_TRY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_GIVE_UP_S", 1.0)
    grace_s = 0.5
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        old = await stack.enter_async_context(recorder.subscribe("c"))
        registry = a.state.engine.io.registry  # type: ignore[attr-defined]
        deleting, _never = held_delete(registry, "c", monkeypatch)  # every try hangs
        daq_to_a.refuse()
        daq_to_a.cut()
        with trio.fail_after(grace_s + WAIT_S):
            await deleting.wait()
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await old.receive()
        assert "TooSlowError" in caplog.text
        assert "ended here without Redis's word" in caplog.text
        assert not ending(a, "c")


@pytest.mark.parametrize(
    "single_writer, crash",
    [
        pytest.param(False, True, id="crashed-owner-grace-end"),
        pytest.param(True, False, id="single-writer-owner-leaves"),
        pytest.param(False, False, id="owner-leaves"),
    ],
)
async def test_a_gone_owners_end_is_bounded_while_redis_hangs_whatever_jobs_wait_before_it(
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    single_writer: bool,
    crash: bool,
) -> None:
    # Redis hangs (SIGSTOP) as the owner goes. Its going queues jobs with no bound ahead of
    # the end (the disconnect's client event; a single_writer channel's writer entry): the
    # end must not wait behind them, or ORPHAN_END_TRY_TIMEOUT_S / ORPHAN_END_GIVE_UP_S
    # never apply and the readers wait for a gone owner as long as Redis hangs.
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_TRY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_GIVE_UP_S", 1.0)
    grace_s = 0.3
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=grace_s)) as a,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        async with ts.open_client(daq_to_a.url, name="daq") as daq:
            await daq.create_channel("c", single_writer=single_writer)
            sub = await stack.enter_async_context(recorder.subscribe("c"))
            await daq.publish("c", "x")
            with trio.fail_after(WAIT_S):
                assert (await sub.receive()).data == "x"
            stack.enter_context(redis_stopped(redis_server))
            if crash:  # the owner's process dies: its lease runs grace_s
                daq_to_a.refuse()
                daq_to_a.cut()
            # else: leaving the block says goodbye (no lease)
        # grace + the bounds (0.2 s tries, 1 s in all), with slack for a loaded machine
        with trio.fail_after(grace_s + WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await sub.receive()
        assert "ended here without Redis's word" in caplog.text
        assert not ending(a, "c")


async def test_many_gone_owners_ends_while_redis_refuses_warn_once_and_back_off_per_round(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that owned several channels leaves while Redis refuses their keys: one
    # warning per channel at most (then debug), and one try per channel per round, the rounds
    # further apart each time (ORPHAN_END_RETRY_S doubling): not a try per channel every
    # 0.5 s. (A refusal is the key's own: each end is tried; a Redis down or hanging makes a
    # round try one end only.) They all end after ORPHAN_END_GIVE_UP_S.
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_GIVE_UP_S", 2.0)
    names = [f"c{i}" for i in range(5)]
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        registry = a.state.engine.io.registry  # type: ignore[attr-defined]
        real_delete: Callable[..., Awaitable[str | None]] = registry.delete
        tries: list[str] = []

        async def delete(channel: str, **options: Any) -> str | None:
            tries.append(channel)
            return await real_delete(channel, **options)

        monkeypatch.setattr(registry, "delete", delete)
        async with ts.open_client(str(a.tcp_url), name="daq") as daq:
            for name in names:
                await daq.create_channel(name)
            subs = [await stack.enter_async_context(recorder.subscribe(n)) for n in names]
            await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS)
        try:  # daq left without a lease: its channels' ends start now, and Redis refuses
            with trio.fail_after(WAIT_S):
                for sub in subs:
                    with pytest.raises(trio.EndOfChannel, match="ended"):
                        await sub.receive()
        finally:
            await acl_keys(redis_server, "~*")
        warned = [r for r in caplog.records if "not ended yet" in r.getMessage()]
        assert all(r.levelno == logging.WARNING for r in warned)
        assert len(warned) == len({r.getMessage().split("'")[1] for r in warned}) <= len(names)
        # Rounds at 0, 0.5, 1.5 s (doubling), the give-up at 2 s: 3 tries per channel at most
        # (a try per channel per 0.5 s would be 5).
        assert set(tries) == set(names)
        assert max(Counter(tries).values()) <= 3, tries
        assert caplog.text.count("ended here without Redis's word") == len(names)
        assert not any(ending(a, n) for n in names)


async def test_an_end_redis_refuses_for_its_key_alone_holds_no_other_end_of_the_node(
    redis_server: RedisServer,
) -> None:
    # An owner with channels "x" and "c" leaves without a lease; Redis refuses x's key alone
    # (an ACL: NOPERM), and would end "c" at once. "c" must end now, not at x's give-up
    # (ORPHAN_END_GIVE_UP_S, 30 s): before, x's failed try skipped every other end of the
    # round, and each later round tried x (the oldest) first and skipped the rest again.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        async with ts.open_client(str(a.tcp_url), name="daq", reconnect=False) as daq:
            await daq.create_channel("x")
            await daq.create_channel("c")
            sub = await stack.enter_async_context(recorder.subscribe("c"))
            await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS, "~ts:ch:c")
        try:  # daq left without a lease: "x" and "c" end now
            with trio.fail_after(5.0), pytest.raises(trio.EndOfChannel, match="ended"):
                await sub.receive()
            assert "c" not in a.state.broker.channels
            assert ending(a, "x")  # still asking Redis (refused)
        finally:
            await acl_keys(redis_server, "~*")


async def test_an_owners_name_is_released_only_once_each_of_its_channels_had_its_own_try(
    redis_server: RedisServer,
) -> None:
    # The rule of test_a_new_process_never_finds_the_channel_of_an_owner_that_left_without_a_
    # lease, with one of the owner's ends refused for its key: the other ("c") still gets
    # its try before the name goes. Before, x's failure marked c as tried (skipped), the
    # name was released, and a new process "daq" on node b took the living "c" over.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        async with ts.open_client(str(a.tcp_url), name="daq", reconnect=False) as daq:
            await daq.create_channel("x")
            await daq.create_channel("c")
            sub = await stack.enter_async_context(recorder.subscribe("c"))
            await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS, "~ts:ch:c")
        try:  # daq left without a lease
            engine: Any = b.state.engine
            with trio.fail_after(WAIT_S):
                while await engine.io.presence.name_node("daq") is not None:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            daq_again = await stack.enter_async_context(
                ts.open_client(str(b.tcp_url), name="daq", reconnect=False)
            )
            await daq_again.create_channel("c")
            (info,) = [c for c in await daq_again.channels() if c.name == "c"]
            assert info.seq == 0  # created afresh, not taken over
            with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
                await sub.receive()  # the old "c" ended
        finally:
            await acl_keys(redis_server, "~*")


async def test_a_new_process_creates_afresh_after_its_lease_less_owners_end_gave_up(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The owner "daq" leaves without a lease while Redis refuses the channels' keys: node a
    # gives up (ORPHAN_END_GIVE_UP_S, lowered) and ends "c" here; in Redis it is still a's.
    # Redis well again, a new process "daq" creating "c" on node a must get a new channel
    # (and node b's reader of the old one sees it end). Before, node a took the record for
    # its previous run's and handed the old channel (old epoch, frames) to the new process.
    monkeypatch.setattr(redis_orphans, "ORPHAN_END_GIVE_UP_S", 1.0)
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(b.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        async with ts.open_client(str(a.tcp_url), name="daq", reconnect=False) as daq:
            await daq.create_channel("c")
            sub = await stack.enter_async_context(recorder.subscribe("c"))
            old = await a.state.engine.io.registry.get("c")  # type: ignore[attr-defined]
            await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS)
        try:  # daq left without a lease: Redis refuses c's end until the give-up
            await until(lambda: "c" not in a.state.broker.channels)
        finally:
            await acl_keys(redis_server, "~*")
        daq_again = await open_named(str(a.tcp_url), "daq", stack)
        await daq_again.create_channel("c")
        new = await a.state.engine.io.registry.get("c")  # type: ignore[attr-defined]
        assert new.epoch != old.epoch, "the new process got the channel of the owner that left"
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await sub.receive()  # node b's reader of the old "c"


async def test_a_take_over_before_the_old_node_loses_redis_keeps_its_readers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The take-over is done in Redis, its ADOPTED lost to node a, and node a's link to Redis
    # drops (half a second, well under the heartbeat TTL) just as its grace ends: the end is
    # retried until Redis answers, which says the channel moved. Its readers on a go on.
    grace_s = 1.0
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
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
        daq_to_a.cut()
        cut_at = trio.current_time()
        daq_again = await open_named(str(b.tcp_url), "daq", stack)
        a_to_redis.hold()  # node a hears nothing from Redis from now on (ADOPTED held)
        await daq_again.create_channel("c")  # taken over in Redis: node b keeps it now
        assert trio.current_time() - cut_at < grace_s, "the take-over came after the grace"
        await until(lambda: ending(a, "c"))  # a's grace has ended; its delete is held
        a_to_redis.refuse()
        a_to_redis.cut()  # node a's link to Redis drops...
        a_to_redis.release()
        with trio.fail_after(WAIT_S):  # ...and its end of the channel fails for it
            while "not ended yet, Redis failed" not in caplog.text:  # noqa: ASYNC110
                await trio.sleep(0.01)
        a_to_redis.accept()  # ...for a moment
        await until(lambda: not ending(a, "c"))  # asked again: Redis says it moved
        await daq_again.publish("c", 2)
        with trio.fail_after(WAIT_S):
            second = await sub.receive()
        assert (second.data, second.seq, second.gap) == (2, 2, None)
    assert "channel 'c' lives on at node 'b'" in caplog.text


async def taken_over_unheard(
    a: ts.Server, a_to_redis: Any, url: str, stack: AsyncExitStack
) -> ts.Client:
    """A new process of "daq" takes channel "c" over at ``url`` while node ``a``'s link to
    Redis is down (its ADOPTED is lost: node a still thinks it keeps "c")."""
    client = await open_named(url, "daq", stack)
    a_to_redis.refuse()
    a_to_redis.cut()
    await client.create_channel("c")  # returns once ADOPTED is published (to nobody)
    a_to_redis.accept()
    assert "c" in a.state.engine._kept, "node a heard of the take-over"  # type: ignore[attr-defined]
    return client


class TakenBackPending(NamedTuple):
    """Channel "c" kept on node ``a`` for its grace; taken over on ``b`` unheard by a, and
    that process gone too; ``daq3``, a third process of "daq", is connected to node a."""

    a: ts.Server
    b: ts.Server
    recorder: ts.Client
    sub: ts.Subscription  # the recorder's, on node a since before the first take-over
    daq3: ts.Client
    registry: Any  # node a's (the real one), for the test's hooks
    created: float  # when "c" was created (a take-over keeps it)


@asynccontextmanager
async def taken_back_pending(
    redis_server: RedisServer, grace_a_s: float
) -> AsyncIterator[TakenBackPending]:
    """The set-up of a take-over back onto node a while a's grace for "c" runs: node a
    reaches Redis through a proxy (cut to lose the ADOPTED of the take-over on node b), the
    two gone processes of "daq" through proxies that it cuts."""
    async with (
        open_proxy(redis_server.url) as a_to_redis,
        ts.open_server(node_via(a_to_redis.url, "a", resume_grace_s=grace_a_s)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=60.0)) as b,
        open_proxy(str(a.tcp_url)) as daq_to_a,
        open_proxy(str(b.tcp_url)) as daq_to_b,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_to_a.url, name="daq"))
        await daq.create_channel("c")
        (info,) = [c for c in await recorder.channels() if c.name == "c"]
        sub = await stack.enter_async_context(recorder.subscribe("c"))
        daq_to_a.refuse()
        daq_to_a.cut()  # the first process is gone: node a keeps "c" for grace_a_s
        cut_at = trio.current_time()
        await taken_over_unheard(a, a_to_redis, daq_to_b.url, stack)
        daq_to_b.refuse()
        daq_to_b.cut()  # the second process is gone too (node b keeps "c" for 60 s)
        daq3 = await open_named(str(a.tcp_url), "daq", stack)
        assert trio.current_time() - cut_at < grace_a_s, "too slow: a's grace ended already"
        registry = a.state.engine.io.registry  # type: ignore[attr-defined]
        yield TakenBackPending(a, b, recorder, sub, daq3, registry, info.created)


async def test_a_take_over_back_onto_the_old_node_during_its_grace_end_survives_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "c" held on node a, its first process gone; the second takes it over on node b (a
    # never hears) and goes too; the third takes it back onto node a while a's grace for
    # the first ends. The move lands in Redis first (the hooks fix that order), then a's
    # delete: conditional on the holder a saw, which the move rewrote, it must not match.
    grace_a_s = 3.0
    async with taken_back_pending(redis_server, grace_a_s) as it:
        real_move = it.registry.move
        real_delete = it.registry.delete
        moved = trio.Event()
        calls: list[str] = []

        async def move(name: str, **options: Any) -> Any:
            with trio.fail_after(grace_a_s + WAIT_S):  # until node a's grace has ended
                while not ending(it.a, name):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            calls.append("move")
            try:
                return await real_move(name, **options)
            finally:
                moved.set()

        async def delete(name: str, **options: Any) -> str | None:
            if name == "c":
                await moved.wait()
                calls.append("delete")
            return await real_delete(name, **options)  # type: ignore[no-any-return]

        monkeypatch.setattr(it.registry, "move", move)
        monkeypatch.setattr(it.registry, "delete", delete)
        monkeypatch.setattr(redis_engine, "TAKE_OVER_MOVE_TIMEOUT_S", HELD_MOVE_S)
        monkeypatch.setattr(redis_engine, "REQUEST_REDIS_TIMEOUT_S", HELD_MOVE_S)
        await it.daq3.create_channel("c")  # the take-over back onto node a
        await until(lambda: not ending(it.a, "c"))  # node a's grace end is decided
        assert calls == ["move", "delete"]
        await it.daq3.publish("c", "still here")
        with trio.fail_after(WAIT_S):
            message = await it.sub.receive()
        assert (message.data, message.gap) == ("still here", None)
        (info,) = [c for c in await it.recorder.channels() if c.name == "c"]
        assert (info.owner, await kept_at(it.b, "c")) == ("daq", "a")


async def test_a_take_over_onto_the_node_ending_the_channel_it_lost_waits_then_moves_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, but node a's grace end starts between the take-over's create (the name is
    # taken) and its look at the channel (its delete then held): the take-over must wait
    # for that end (which finds the channel kept on node b: a mirror stays on a), then move
    # the channel back from b. On main before this fix it moved the channel at once, and
    # the grace end's delete (node == a again) deleted it.
    grace_a_s = 2.0
    async with taken_back_pending(redis_server, grace_a_s) as it:
        # Held from before a's grace ends (taken_back_pending checked it has not yet).
        deleting, go = held_delete(it.registry, "c", monkeypatch)
        real_create = it.registry.create
        creates: list[bool] = []  # per create of "c": did node a's grace end come first

        async def create(name: str, **options: Any) -> Any:
            if name == "c" and not creates:
                with trio.fail_after(grace_a_s + WAIT_S):
                    await deleting.wait()  # a's grace ends now
            creates.append(ending(it.a, name))
            return await real_create(name, **options)

        monkeypatch.setattr(it.registry, "create", create)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(it.daq3.create_channel, "c")
            await until(lambda: waits_for_the_end(it.a, "c"))  # the race is set
            go.set()
        assert creates[0], "the grace end did not come between the create and its look"
        await it.daq3.publish("c", "moved back")
        with trio.fail_after(WAIT_S):
            message = await it.sub.receive()
        assert (message.data, message.seq, message.gap) == ("moved back", 1, None)
        (info,) = [c for c in await it.recorder.channels() if c.name == "c"]
        assert (info.owner, info.created) == ("daq", it.created)
        assert await kept_at(it.b, "c") == "a"


async def test_an_owner_without_a_lease_back_on_another_node_first_keeps_its_channel(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # No lease (resume_grace_s=0): the owner's channel ends with it, once Redis agrees. A
    # reconnect with a resume token takes the name at once on any node, so its create there
    # may reach Redis before the old node's delete (held here): then the take-over came
    # first, the channel lives on (same epoch), and its readers on the old node go on.
    caplog.set_level(logging.INFO, logger="trio_stream._engine")
    async with (
        open_proxy(redis_server.url) as a_to_redis,
        ts.open_server(node_via(a_to_redis.url, "a", resume_grace_s=0)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=0)) as b,
        open_proxy(str(a.tcp_url)) as daq_link,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_link.url, name="daq"))
        await daq.create_channel("c")
        (before,) = [c for c in await recorder.channels() if c.name == "c"]
        sub = await stack.enter_async_context(recorder.subscribe("c"))
        a_to_redis.hold()  # node a's Redis calls wait (its delete of daq's channel too)
        port = urlsplit(str(b.tcp_url)).port
        assert port is not None
        daq_link.target = ("127.0.0.1", port)  # daq's next connection reaches node b
        daq_link.cut()  # no lease on node a: "c" ends there once Redis agrees
        await until(lambda: ending(a, "c"))
        with trio.fail_after(WAIT_S):
            await daq.wait_state("reconnecting")
            await daq.wait_state("open")  # back on node b, "c" created again there
        assert "took channel 'c' over by name (from node 'a')" in caplog.text
        a_to_redis.release()
        await until(lambda: not ending(a, "c"))  # node a's delete did not match
        await daq.publish("c", "on b")
        with trio.fail_after(WAIT_S):
            message = await sub.receive()
        assert (message.data, message.seq, message.gap) == ("on b", 1, None)
        (info,) = [c for c in await recorder.channels() if c.name == "c"]
        assert (info.owner, info.created) == ("daq", before.created)
        assert await kept_at(b, "c") == "b"
    assert "channel 'c' lives on at node 'b'" in caplog.text


async def test_a_delete_by_holder_misses_a_channel_moved_away_and_back_to_its_node(
    redis_server: RedisServer,
) -> None:
    # The registry's part of the races above: a take-over writes a new holder token, so a
    # delete conditional on the holder a node saw fails once the channel has moved, even
    # back onto that node (the node condition alone would match again).
    async with RedisEngineIO.open(redis_server.url, "a") as io:
        registry = io.registry
        record = await registry.create("c", owner="daq", node="a")
        assert record.holder and (await registry.get("c")) == record
        to_b = await registry.move("c", epoch=record.epoch, owner="daq", node="b")
        assert to_b is not None and (to_b.node, to_b.holder) == ("a", record.holder)
        back = await registry.move("c", epoch=record.epoch, owner="daq", node="a")
        assert back is not None and (back.node, back.holder) == ("b", to_b.new_holder)
        assert await registry.move("c", epoch=record.epoch, owner="other", node="a") is None
        assert await registry.delete("c", node="a", holder=record.holder) is None
        assert await registry.delete("c", node="a", holder=to_b.new_holder) is None
        now = await registry.get("c")
        assert now is not None and (now.node, now.holder) == ("a", back.new_holder)
        assert await registry.delete("c", node="a", holder=back.new_holder) == record.epoch
        assert await registry.get("c") is None


async def test_a_nodes_first_reader_gets_the_frames_though_a_reader_joins_elsewhere_meanwhile(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node's first reader of a channel is attached once the node follows the channel's
    # stream (an await on Redis). A reader coming on another node meanwhile makes the node
    # count its own readers again: none yet. That count must not stop the node reading the
    # stream the subscribe has just followed, or the reader waits for frames this node never
    # reads. (Any count of the channel's readers here meanwhile does it: the end of its
    # previous incarnation here, as in the grace race above, or a reader elsewhere, here.)
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(b.tcp_url), name="daq") as daq,
        ts.open_client(str(a.tcp_url), name="reader_a") as reader_a,
        ts.open_client(str(b.tcp_url), name="reader_b") as reader_b,
        AsyncExitStack() as stack,
    ):
        await daq.create_channel("c")
        engine: Any = a.state.engine
        real_follow = engine.io.reader.follow
        counted: list[int] = []  # node a's readers of "c" when it counted them meanwhile

        async def follow(name: str, **options: Any) -> Any:
            followed = await real_follow(name, **options)
            if name == "c" and not counted:
                mirror = a.state.broker.channels[name]
                await stack.enter_async_context(reader_b.subscribe("c"))
                await until(  # node a has heard of it and counted its readers again
                    lambda: mirror.remote_readers == 1 and name not in engine._dirty_readers
                )
                counted.append(len(mirror.subscriptions))
            return followed

        monkeypatch.setattr(engine.io.reader, "follow", follow)
        async with reader_a.subscribe("c") as sub:
            assert counted == [0], "the count did not come during the subscribe"
            assert await daq.publish("c", "seen")  # node b has a reader: reader_b's
            with trio.fail_after(WAIT_S):
                message = await sub.receive()
        assert message.data == "seen"


async def test_a_take_over_whose_request_bound_passes_during_its_move_is_answered_done(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request's bound (REQUEST_REDIS_TIMEOUT_S, lowered to 1 s: a slow Redis that took
    # 8+ s before the move) passes during the take-over's shielded move (held 1.5 s, within
    # TAKE_OVER_MOVE_TIMEOUT_S). The move is done in Redis: the create must succeed. Before,
    # the next await (telling node a) was cancelled: "try again", and the retry got
    # ChannelExists for good (the channel was this very session's already).
    monkeypatch.setattr(redis_engine, "REQUEST_REDIS_TIMEOUT_S", 1.0)
    async with owner_gone(redis_server, 60.0) as it:
        real_move = it.registry.move

        async def move(name: str, **options: Any) -> Any:
            await trio.sleep(1.5)
            return await real_move(name, **options)

        monkeypatch.setattr(it.registry, "move", move)
        with trio.fail_after(WAIT_S):
            await it.daq_again.create_channel("c")
        assert await kept_at(it.a, "c") == "b"
        assert "c" in it.b.state.engine._kept  # type: ignore[attr-defined]


async def test_a_take_over_whose_move_is_answered_after_its_bound_is_finished_by_a_retry(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis does the move but answers after TAKE_OVER_MOVE_TIMEOUT_S (real value): the
    # create is told to create it again; the channel is node b's in Redis, not kept by b,
    # and b has a mirror of it (a reader there). The retry must take it over (and b then
    # ends it with its owner). Before, the mirror without owner made it ChannelExists.
    async with (
        owner_gone(redis_server, 60.0) as it,
        ts.open_client(str(it.b.tcp_url), name="watcher") as watcher,
        watcher.subscribe("c") as seen,  # node b has a mirror of "c"
    ):
        real_move = it.registry.move

        async def move(name: str, **options: Any) -> Any:
            moved = await real_move(name, **options)  # done in Redis ...
            await trio.sleep(redis_engine.TAKE_OVER_MOVE_TIMEOUT_S + 0.5)  # ... answered late
            return moved

        monkeypatch.setattr(it.registry, "move", move)
        with trio.fail_after(WAIT_S), pytest.raises(ts.ClusterUnavailable, match="again"):
            await it.daq_again.create_channel("c")
        assert await kept_at(it.a, "c") == "b"
        monkeypatch.setattr(it.registry, "move", real_move)
        with trio.fail_after(WAIT_S):
            await it.daq_again.create_channel("c")  # told to create it again
        assert "c" in it.b.state.engine._kept  # type: ignore[attr-defined]
        await it.daq_again.aclose()  # no lease: b ends "c" with its owner
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await seen.receive()


async def test_a_take_over_cancelled_right_after_its_move_in_redis_still_ends_with_its_owner(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The take-over's move is done in Redis, then its request is cancelled for real before
    # node b notes that it keeps the channel: node b closes the new process's connection as
    # its idle watchdog does (a connection can be closed while its request waits on Redis:
    # idle, replaced by its resume, the server stopping). Node b must note it all the same.
    # The new process had no lease: its channel ends with it, at once and on every node;
    # unnoted, it lived on with nobody to end it (its readers waiting until node b's
    # reaper's grace, 60 s here, for channels it does not know).
    async with owner_gone(redis_server, 60.0, idle_timeout_s=1.0) as it:
        real_move = it.registry.move
        moves: list[Any] = []

        async def move(name: str, **options: Any) -> Any:
            moved = await real_move(name, **options)
            moves.append(moved)
            session: Any = it.b.state.by_name["daq"]
            session.close_idle(1.0)  # the watchdog's own call: the request is cancelled
            return moved

        monkeypatch.setattr(it.registry, "move", move)
        with pytest.raises(ts.ConnectionClosed, match="idle"):
            await it.daq_again.create_channel("c")
        assert len(moves) == 1 and moves[0] is not None, "the move was not done in Redis"
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel, match="ended"):
            await it.sub.receive()
        assert await kept_at(it.a, "c") is None


async def test_a_take_over_whose_move_redis_never_answers_gives_up_after_its_bound(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The move is shielded from cancellation (the test above), so a Redis that never
    # answers it (a hook that never returns) must not hold the request, and the connection,
    # for good: TAKE_OVER_MOVE_TIMEOUT_S ends the wait, as Redis down would (an error reply:
    # the connection stays). Nothing moved: node a keeps the channel, its readers read on.
    monkeypatch.setattr(redis_engine, "TAKE_OVER_MOVE_TIMEOUT_S", 0.5)
    async with owner_gone(redis_server, 60.0) as it:

        async def move(name: str, **options: Any) -> Any:
            await trio.sleep_forever()

        monkeypatch.setattr(it.registry, "move", move)
        with trio.fail_after(WAIT_S), pytest.raises(ts.ClusterUnavailable) as failed:
            await it.daq_again.create_channel("c")
        assert not isinstance(failed.value, ts.ConnectionClosed), failed.value
        assert "TAKE_OVER_MOVE_TIMEOUT_S" in str(failed.value)
        assert "try again" in str(failed.value)
        assert await kept_at(it.a, "c") == "a"
        with trio.move_on_after(0.5):
            await it.sub.receive()
            raise AssertionError("the channel ended or moved")


async def test_a_delete_of_a_record_seen_without_a_holder_misses_it_once_it_moved_back(
    redis_server: RedisServer,
) -> None:
    # A record written before holder tokens (no holder field): a delete conditional on the
    # "" that its node saw matches only while it has none. A take-over away and back (each
    # move writes a token) must make it miss, as it does for a token (the test above); the
    # node condition alone would match again.
    async with RedisEngineIO.open(redis_server.url, "a") as io:
        registry = io.registry
        epochs: dict[str, str] = {}
        for name in ("moved", "still"):
            await registry.create(name, owner="daq", node="a")
            await io.client.hdel(io.keys.channel(name), ["holder"])  # as before tokens
            legacy = await registry.get(name)
            assert legacy is not None and legacy.holder == ""
            epochs[name] = legacy.epoch
        epoch = epochs["moved"]
        to_b = await registry.move("moved", epoch=epoch, owner="daq", node="b")
        assert to_b is not None and to_b.holder == ""
        back = await registry.move("moved", epoch=epoch, owner="daq", node="a")
        assert back is not None and back.holder == to_b.new_holder
        assert await registry.delete("moved", node="a", holder="") is None
        now = await registry.get("moved")
        assert now is not None and (now.node, now.holder) == ("a", back.new_holder)
        # Not moved since: the delete that saw it without a holder matches.
        assert await registry.delete("still", node="a", holder="") == epochs["still"]
        assert await registry.delete("moved", node="a") == epoch  # no holder condition


async def test_a_channel_being_created_is_not_reaped_by_its_own_node_with_grace_zero(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With resume_grace_s=0 the node's reaper ends its previous run's channels at first
    # sight. A create registered in Redis whose task has not resumed yet (one scheduling
    # turn in real life; held past a reaper pass here, by a hook on the real registration)
    # is this run's: the reaper must leave it, and the create's channel lives on.
    async with ts.open_server(node_config(redis_server, "a", resume_grace_s=0)) as a:
        engine: Any = a.state.engine
        real_register = engine._register

        async def resumes_after_a_reaper_pass(msg: Any, owner: str) -> Any:
            record = await real_register(msg, owner)
            await trio.sleep(redis_engine.REAP_INTERVAL_S * 1.6)
            return record

        monkeypatch.setattr(engine, "_register", resumes_after_a_reaper_pass)
        async with ts.open_client(str(a.tcp_url), name="daq") as daq:
            await daq.create_channel("c")
            assert await kept_at(a, "c") == "a"
            await trio.sleep(redis_engine.REAP_INTERVAL_S * 1.5)  # and a reaper pass after
            assert "c" in [c.name for c in await daq.channels()]
            assert await kept_at(a, "c") == "a"


@pytest.mark.parametrize("meets_it", ["a send", "a subscribe"])
async def test_a_channel_registered_again_after_redis_restarts_is_not_ended_by_its_own_node(
    redis_server: RedisServer, meets_it: str
) -> None:
    # Redis restarted empty: the node registers its channel again, a new epoch, and takes it
    # on a round trip later. Meanwhile its own writer's append (with the old epoch) or a
    # subscribe met the new epoch, took the channel for one created anew by another node and
    # ended it here; the re-registration then found it gone and deleted its new record: the
    # channel was listed nowhere, its owner still connected (4 runs of 5 in a stress test).
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(a.tcp_url), name="reader") as reader,
    ):
        engine: Any = a.state.engine
        registry = engine.io.registry
        real_create = registry.create
        registered = trio.Event()

        async def create_answered_late(*args: Any, **kwargs: Any) -> Any:
            record = await real_create(*args, **kwargs)
            if not registered.is_set():  # the window between the create and its taking on
                registered.set()
                await trio.sleep(0.5)
            return record

        await daq.create_channel("c")
        async with daq.publisher("c") as pub, reader.subscribe("c") as sub:
            await pub.wait_for_readers()
            await pub.send(0)
            with trio.fail_after(WAIT_S):
                assert (await sub.receive()).data == 0
            registry.create = create_answered_late
            redis_server.restart()  # SIGKILL, and empty on the same port
            with trio.fail_after(WAIT_S):
                await registered.wait()
            if meets_it == "a send":
                await pub.send(1)
            else:
                await reader.open_subscription("c")
            await trio.sleep(1.0)  # the re-registration is done
            assert [c.name for c in await daq.channels() if not c.name.startswith("$")] == ["c"]
            with trio.fail_after(WAIT_S):
                await pub.send(2)
                await pub.wait_acknowledged()


class LateBeat:
    """Makes a node's next heartbeat after :meth:`arm` a second late: well within the TTL
    (3 s), a live node whose beat has not reached a restarted Redis yet."""

    def __init__(self, server: ts.Server) -> None:
        engine: Any = server.state.engine
        presence = engine.io.presence
        self._real_beat = presence.beat
        self._armed = False
        presence.beat = self._beat

    def arm(self) -> None:
        self._armed = True

    async def _beat(self) -> None:
        if self._armed:
            self._armed = False
            await trio.sleep(1.0)
        await self._real_beat()


async def test_a_live_node_whose_heartbeat_is_late_after_a_redis_restart_keeps_its_channels(
    redis_server: RedisServer,
) -> None:
    # Redis restarted empty: node a registers its channel again (its writer's next append)
    # before its next heartbeat puts it back among the live nodes. Node b's reaper looked in
    # between, saw a channel of a node not alive, and with resume_grace_s=0 ended it at
    # once, cluster-wide, its owner and writer still connected. A node missing for less than
    # a heartbeat TTL may be one whose beat has not reached the new Redis yet.
    async with (
        ts.open_server(node_config(redis_server, "a", resume_grace_s=0)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=0)) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="viewer") as viewer,
    ):
        late_beat = LateBeat(a)
        await daq.create_channel("c")
        pub = await daq.open_publisher("c")
        async with viewer.subscribe("c", wait_channel=True) as sub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                await pub.send(0)
                assert (await sub.receive()).data == 0
            late_beat.arm()
            redis_server.restart()  # SIGKILL, and empty on the same port
            for value in range(1, 40):  # 4 s: the late beat, and two reaper passes after it
                with trio.move_on_after(0.5):
                    await pub.send(value)
                await trio.sleep(0.1)
            assert await kept_at(a, "c") == "a"
            assert "c" in [c.name for c in await viewer.channels()]
        # Its readers heard that Redis lost it (an end, by design); one subscribing again on
        # the other node reads the channel that its writer still writes.
        with trio.fail_after(WAIT_S):
            async with viewer.subscribe("c", wait_channel=True) as again:
                while not await pub.send(-1):  # noqa: ASYNC110
                    await trio.sleep(0.02)
                assert (await again.receive()).data == -1


async def test_a_call_just_after_a_redis_restart_waits_for_its_provider_s_name(
    redis_server: RedisServer,
) -> None:
    # Redis restarted empty: each node writes its clients' names back with its next heartbeat
    # (within a second). A call meanwhile failed with "no client named 'daq' is connected"
    # while daq never left (a migrating user: 12 calls in half a second, after every
    # restart); it is looked up again until the names are back, or fails ClusterUnavailable.
    async with writer_and_reader_nodes(redis_server, "daq", "ctl") as (a, _, daq, ctl):
        daq.expose(Daq())
        proxy = await ctl.rpc("daq", timeout=WAIT_S)
        assert await proxy.read(2) == 3.0
        LateBeat(a).arm()  # node a's names are back a second late
        redis_server.restart()  # SIGKILL, and empty on the same port
        outcomes: Counter[str] = Counter()
        with trio.fail_after(WAIT_S):
            for _ in range(30):  # 1.5 s of calls, and their waits
                try:
                    assert await proxy.read(2) == 3.0
                    outcomes["answered"] += 1
                except ts.ClusterUnavailable:
                    outcomes["unavailable"] += 1  # Redis not answering yet: documented
                await trio.sleep(0.05)
        assert outcomes["answered"] >= 10, outcomes


class Motor:
    """A provider whose moves must run once each, in order, and never late."""

    def __init__(self) -> None:
        self.made: list[Any] = []

    def rpc_move(self, step: Any) -> Any:
        self.made.append(step)
        return step


async def test_a_call_given_up_while_redis_hangs_never_runs(redis_server: RedisServer) -> None:
    # Calls made while Redis hung (SIGSTOP) timed out at their callers, whose node then
    # looked their provider up and sent them when Redis woke up, their cancels behind them:
    # a quick method ran 0.2-3.4 s after its caller's RpcTimeout (a migrating user's motor).
    moves = Motor()
    async with writer_and_reader_nodes(redis_server, "motor", "ctl") as (_, _, motor, ctl):
        motor.expose(moves)
        proxy = await ctl.rpc("motor", timeout=1.0)
        assert await proxy.move(0) == 0
        with redis_stopped(redis_server):
            for i in range(1, 4):
                with pytest.raises(ts.RpcTimeout):
                    await proxy.move(i)
        with trio.fail_after(WAIT_S):
            while await proxy.move(-1) != -1:  # Redis answers again, calls go through
                pass
        await trio.sleep(1.0)  # what was sent late would have run by now
    assert [i for i in moves.made if i > 0] == [], moves.made


async def test_calls_waiting_for_their_provider_s_name_keep_their_order(
    redis_server: RedisServer,
) -> None:
    # A call that waited for its provider's name after a Redis restart was overtaken by the
    # next one, made once the name was back and sent at once (a review): a provider runs its
    # calls in the order they were made (a motor's moves).
    moves = Motor()
    async with writer_and_reader_nodes(redis_server, "motor", "ctl") as (a, b, motor, ctl):
        motor.expose(moves)
        proxy = await ctl.rpc("motor", timeout=WAIT_S)
        assert await proxy.move("before") == "before"
        LateBeat(a).arm()  # node a's names are back a second late
        redis_server.restart()  # SIGKILL, and empty on the same port
        engine: Any = b.state.engine
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WAIT_S):
                while True:  # a first call that waits for the name (not one refused)
                    try:
                        if await engine.io.presence.name_node("motor") is None:
                            break
                    except REDIS_ERRORS:
                        pass  # (its connections reconnecting)
                    await trio.sleep(0.02)
                nursery.start_soon(proxy.move, "first")
                await trio.sleep(0.05)
                while await engine.io.presence.name_node("motor") is None:  # noqa: ASYNC110
                    await trio.sleep(0.005)
                assert await proxy.move("second") == "second"
    assert moves.made == ["before", "first", "second"], moves.made
