"""Review proofs for the take-over / grace-end race fixes (6146ceb..6f5bffd).

Each test states a behaviour the README and docs/protocol.md promise for a take-over by name
at the moment a gone owner's channel ends, and injects a real fault (a Redis that refuses
writes to one key through an ACL, a TCP proxy between a node and Redis) on a redis-server the
test started. On 6f5bffd each of them fails; see the comment in each test for the line.
On 6146ceb (before the change) the first passes (a regression); the second and fourth fail
there too (older gaps that the new README/protocol text and code comments say are closed);
the third uses the new ``_ending`` to time its hooks, and the same interleaving deleted the
taken-over channel on 6146ceb as well (the grace end's job ``_delete_everywhere(node=a)``).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from proxy import open_proxy
from redis_server import RedisServer
from test_cluster import WAIT_S, node_config
from test_cluster_races import node_via
from test_reconnect import open_named

import trio_stream as ts

# Every key the nodes write during the test, except the channel hashes ({ns}:ch:{name}, see
# redis_keys): with these as the only writable keys, Redis refuses (NOPERM) exactly the
# registry's conditional delete of a channel, and nothing else the nodes do meanwhile.
WRITABLE_BUT_CHANNELS = (
    "%R~*",
    "~ts:channels",
    "~ts:st:*",
    "~ts:wake:*",
    "~ts:nodes",
    "~ts:clients:*",
    "~ts:name:*",
    "~ts:readers:*",
    "~ts:pos:*",
)


async def acl_keys(redis: RedisServer, *patterns: str) -> None:
    """Set the default user's key patterns of the test's own redis-server (redis-cli)."""
    argv = ["redis-cli", "-p", str(redis.port), "ACL", "SETUSER", "default", "resetkeys"]
    result = await trio.run_process([*argv, *patterns], capture_stdout=True)
    assert result.stdout.strip() == b"OK", result.stdout


async def test_review_a_redis_error_at_the_grace_end_still_ends_the_orphaned_channel(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # RedisEngine._end_orphan (redis_engine.py:406-431) catches only REDIS_DOWN around the
    # conditional delete. Any other Redis error (NOPERM here; READONLY after a fail-over,
    # a script error...) escapes to _run_jobs, which logs it: the local delete never runs,
    # the lease is gone already, the channel stays in _created_here (so neither
    # _keep_registered nor the reaper touches it), and nothing ends it again. On 6146ceb
    # the local end did not depend on Redis (ResumeBook.expire -> broker.delete_channel).
    grace_s = 1.0
    caplog.set_level(logging.INFO, logger="trio_stream._engine.redis_engine")
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
        # NOPERM would end node a outright (_append_loop), which is not this test's point.
        await acl_keys(redis_server, *WRITABLE_BUT_CHANNELS)
        try:
            daq_to_a.refuse()
            daq_to_a.cut()  # the daq process is gone: its grace runs on node a
            await trio.sleep(grace_s + 1.0)  # the grace ends while Redis refuses the delete
        finally:
            await acl_keys(redis_server, "~*")  # Redis is healthy again from here on
        # The channel's owner is gone for good: it must end on node a (and its readers with
        # it), at the latest once Redis answers again.
        with trio.fail_after(WAIT_S), pytest.raises(trio.EndOfChannel):
            await old.receive()
    assert "no permissions to access" in caplog.text, "the fault hit no delete"


async def test_review_a_take_over_before_redis_drops_keeps_the_old_nodes_readers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # README ("if the take-over came first, the channel lives on and its readers on every
    # node keep reading, the old node's included") and docs/protocol.md say Redis orders a
    # take-over and the grace end. _end_orphan's REDIS_DOWN branch (redis_engine.py:414-418)
    # ends the channel on the old node on the premise "Nobody can take it over while Redis
    # is down"; but the take-over may have happened in Redis BEFORE the old node lost Redis
    # (its ADOPTED message lost with the connection, pub/sub being at most once). Then node
    # a's readers end while the channel lives on at node b with the same epoch.
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
        daq_to_a.cut()
        cut_at = trio.current_time()
        daq_again = await open_named(str(b.tcp_url), "daq", stack)
        a_to_redis.hold()  # node a hears nothing from Redis from now on (ADOPTED held)
        await daq_again.create_channel("c")  # taken over in Redis: node b keeps it now
        assert trio.current_time() - cut_at < grace_s, "the take-over came after the grace"
        await trio.sleep(max(0.0, cut_at + grace_s + 0.3 - trio.current_time()))
        # Node a's grace has ended; its conditional delete waits in the proxy. Now node a's
        # link to Redis drops (for half a second, well under the 3 s heartbeat TTL).
        a_to_redis.refuse()
        a_to_redis.cut()
        a_to_redis.release()
        await trio.sleep(0.5)
        a_to_redis.accept()
        await daq_again.publish("c", 2)
        with trio.fail_after(WAIT_S):
            second = await sub.receive()  # EndOfChannel on 6f5bffd
        assert (second.data, second.seq, second.gap) == (2, 2, None)


async def test_review_a_take_over_back_onto_the_old_node_survives_its_grace_end(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Node a keeps "c" for its gone owner (grace running). The owner's new process took it
    # over on node b, and node a never heard (ADOPTED is pub/sub: lost while a's link to
    # Redis was down). That process is gone too; a third one connects to node a and takes
    # the channel back there (_adopt's cross-node branch, redis_engine.py:337-343: a move
    # b -> a). Node a's grace for the FIRST owner ends while that move is under way:
    # end_orphan (redis_engine.py:386-402) queues _end_orphan, whose delete is conditional
    # on node == a only, and _adopt's cross-node branch never looks at _ending. Once the
    # move is done the node is a again, so the delete matches: it deletes the channel the
    # third process has just taken over (its create_channel said OK). The hooks below only
    # fix the order of the two real Redis calls (the move first, then the delete), as the
    # project's own race tests do (test_cluster_races.move_after).
    grace_a_s = 2.0
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
        sub = await stack.enter_async_context(recorder.subscribe("c"))
        daq_to_a.refuse()
        daq_to_a.cut()  # the first process is gone: node a keeps "c" for grace_a_s
        cut_at = trio.current_time()
        daq2 = await open_named(daq_to_b.url, "daq", stack)
        a_to_redis.refuse()
        a_to_redis.cut()  # node a's link to Redis drops: the ADOPTED below is lost
        await daq2.create_channel("c")  # taken over: node b keeps it in Redis
        await trio.sleep(0.3)
        a_to_redis.accept()
        daq_to_b.refuse()
        daq_to_b.cut()  # the second process is gone too (node b keeps "c" for 60 s)
        daq3 = await open_named(str(a.tcp_url), "daq", stack)
        assert trio.current_time() - cut_at < grace_a_s, "too slow: a's grace ended already"

        engine: Any = a.state.engine  # its _ending: the grace end under way
        registry = engine.io.registry
        real_move = registry.move
        real_delete = registry.delete
        moved = trio.Event()
        calls: list[str] = []

        async def move(name: str, **options: Any) -> str | None:
            with trio.fail_after(grace_a_s + WAIT_S):  # until node a's grace has ended
                while name not in engine._ending:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            calls.append("move")
            try:
                return await real_move(name, **options)  # type: ignore[no-any-return]
            finally:
                moved.set()

        async def delete(name: str, **options: Any) -> str | None:
            if name == "c":
                await moved.wait()
                calls.append("delete")
            return await real_delete(name, **options)  # type: ignore[no-any-return]

        monkeypatch.setattr(registry, "move", move)
        monkeypatch.setattr(registry, "delete", delete)
        await daq3.create_channel("c")  # the take-over back onto node a: OK
        with trio.fail_after(WAIT_S):
            await moved.wait()
        await trio.sleep(0.5)  # node a's grace end has been decided in Redis by now
        assert calls[0] == "move", calls
        await daq3.publish("c", "still here")
        with trio.fail_after(WAIT_S):
            message = await sub.receive()  # EndOfChannel on 6f5bffd
        assert message.data == "still here"
        assert {c.name: c.owner for c in await recorder.channels()}.get("c") == "daq"


async def test_review_an_owner_without_a_lease_back_on_another_node_gets_a_new_channel(
    redis_server: RedisServer,
) -> None:
    # The comment at redis_engine.py:794-797 (and the pinning test
    # test_a_new_process_never_finds_the_channel_of_an_owner_that_left_without_a_lease)
    # rules a take-over race out for an owner that leaves without a lease, because "the new
    # process needs the name first", and node a releases the name only after its delete.
    # But a hello with a resume token takes the name at once on any node
    # (handshake.py:80 -> RedisEngine.claim_name(resume=True) -> presence.take_name): a
    # client that reconnects to node b (its token unknown there) re-creates its channel
    # while node a's conditional delete is still on its way (held here). Node b's _adopt
    # then moves the channel a has already ended locally: it lives on with its old epoch
    # and frames, a's delete (node == a) no longer matches, and a's readers saw it end.
    async with (
        open_proxy(redis_server.url) as a_to_redis,
        ts.open_server(node_via(a_to_redis.url, "a", resume_grace_s=0)) as a,
        ts.open_server(node_config(redis_server, "b", resume_grace_s=0)) as b,
        open_proxy(str(a.tcp_url)) as daq_link,
        ts.open_client(str(b.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        daq = await stack.enter_async_context(ts.open_client(daq_link.url, name="daq"))
        await daq.create_channel("c")
        (before,) = [c for c in await recorder.channels() if c.name == "c"]
        a_to_redis.hold()  # node a's Redis calls wait (its delete of daq's channel too)
        port = urlsplit(str(b.tcp_url)).port
        assert port is not None
        daq_link.target = ("127.0.0.1", port)  # daq's next connection reaches node b
        daq_link.cut()  # no lease on node a (resume_grace_s=0): "c" ends there now
        with trio.fail_after(WAIT_S):
            await daq.wait_state("reconnecting")
            await daq.wait_state("open")  # back on node b, "c" re-created
        a_to_redis.release()
        await trio.sleep(0.5)  # node a's delete reaches Redis
        (info,) = [c for c in await recorder.channels() if c.name == "c"]
        assert info.owner == "daq"
        # Created afresh (a new creation time, a new epoch); on 6f5bffd the same as before.
        assert info.created != before.created, "the channel that ended on node a lives on"
