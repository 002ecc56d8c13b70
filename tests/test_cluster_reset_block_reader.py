"""A block reader back after a reset, on another node than its writer: it gets frames again.

A Redis that lost its keys (a restart without persistence; FLUSHALL here) is a reset: the
writer's node registers its channel again under a new epoch, and a reader's node, seeing
that epoch, follows the new stream from its first frame by itself and ends its readers
("subscribe again", marked `again`). Until its count of readers unfollows the stream (slow,
say, behind other channels' Redis writes after the restart), the node reads the new epoch
for no channel. A block reader subscribing again meanwhile (a client that ignores `again`
ends at the end and subscribes again later by hand; the client here is made to end as it
does, its bound for riding through over at once) found the stream followed already, and
its node reported, as where that reader is, the last seq it had taken of the *old* epoch:
the writer waited for that reader to make room, the reader waited for frames, for good.

The interleaving is forced with hooks on the real calls: node a's count of its readers is
held on another channel's write, and node a's epoch check answers once the writer's node
has registered the channel again (a check in between would see it gone, which is a plain
end). Redis, the nodes and the clients are real, on loopback.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from redis_server import RedisServer
from test_cluster import WAIT_S, node_config
from test_cluster_races import until

import trio_stream as ts
from trio_stream import _subscription as subscription_module

SIZE = 4  # the block reader's buffer: its room past its position, for the writer
BEFORE = 3  # frames it took of the old epoch
MEANWHILE = 10  # frames of the new epoch node a reads before it subscribes again (> BEFORE + SIZE)


async def test_a_block_reader_subscribing_again_after_a_reset_elsewhere_gets_frames(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(b.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="watcher") as watcher,
        ts.open_client(str(a.tcp_url), name="recorder") as recorder,
        AsyncExitStack() as stack,
    ):
        engine_a: Any = a.state.engine
        engine_b: Any = b.state.engine
        # The reset end ends the recorder's subscription, as a client that ignores `again`
        # sees it: its channel is not waited for (the bound is over at its first look).
        monkeypatch.setattr(subscription_module, "RESET_BACK_S", 0.0)
        await daq.create_channel("c")  # kept on node b, where its writer is
        await daq.create_channel("other")
        pub = await stack.enter_async_context(daq.publisher("c"))
        sub = await stack.enter_async_context(recorder.subscribe("c", policy="block", size=SIZE))
        with trio.fail_after(WAIT_S):
            await pub.wait_for_readers()
            for i in range(BEFORE):
                await pub.send(i)
            assert [(await sub.receive()).seq for _ in range(BEFORE)] == [1, 2, 3]

        # Node a's count of its readers, held on its write for "other".
        held, go = trio.Event(), trio.Event()
        real_set_readers = engine_a.io.presence.set_readers

        async def set_readers(name: str, count: int) -> None:
            if name == "other" and not go.is_set():
                held.set()
                await go.wait()
            await real_set_readers(name, count)

        monkeypatch.setattr(engine_a.io.presence, "set_readers", set_readers)
        await stack.enter_async_context(recorder.subscribe("other"))
        with trio.fail_after(WAIT_S):
            await held.wait()

        # Node a's epoch check sees "c" only once node b has registered it again.
        registered = trio.Event()
        real_create = engine_b.io.registry.create
        real_epochs = engine_a.io.registry.epochs

        async def create(name: str, **options: Any) -> Any:
            record = await real_create(name, **options)
            if name == "c":
                registered.set()
            return record

        async def epochs(names: list[str]) -> dict[str, str | None]:
            answer: dict[str, str | None] = await real_epochs(names)
            if "c" in answer and answer["c"] is None:
                with trio.move_on_after(WAIT_S):
                    await registered.wait()
                answer = await real_epochs(names)
            return answer

        monkeypatch.setattr(engine_b.io.registry, "create", create)
        monkeypatch.setattr(engine_a.io.registry, "epochs", epochs)
        await trio.to_thread.run_sync(redis_server.flush)
        with trio.fail_after(WAIT_S):
            async for _ in sub:  # the old epoch is gone: an end, "subscribe again"
                pass
        assert "is gone from Redis" in (sub.end_reason or ""), sub.end_reason
        record = await engine_b.io.registry.get("c")
        assert record is not None and record.epoch != sub.position.epoch
        epoch = record.epoch

        # The writer goes on (a reader on its node); node a reads those frames, for nobody.
        seen = await stack.enter_async_context(
            watcher.subscribe("c", policy="unbounded", wait_channel=True)
        )
        with trio.fail_after(WAIT_S):
            await pub.wait_for_readers()
            for i in range(MEANWHILE):
                await pub.send(i)
            for _ in range(MEANWHILE):
                await seen.receive()
        await until(lambda: engine_a.io.reader.position("c") == (epoch, MEANWHILE))
        assert "c" not in a.state.broker.channels

        again = await stack.enter_async_context(recorder.subscribe("c", policy="block", size=SIZE))
        go.set()
        # Node a counts in the writer's room again (its heartbeat came back), with its
        # reader's position and room.
        key = engine_a.io.keys.positions("c", epoch)
        with trio.fail_after(WAIT_S):  # what Redis holds, looked at every 10 ms
            while "a" not in await engine_b.io.presence.live():  # noqa: ASYNC110
                await trio.sleep(0.01)
            while b" " not in (await engine_b.io.client.hget(key, "a") or b""):  # noqa: ASYNC110
                await trio.sleep(0.01)
        reported = await engine_b.io.client.hget(key, "a")
        assert reported == f"{MEANWHILE} {SIZE}".encode(), reported

        with trio.fail_after(WAIT_S):
            await pub.send("after")
            message = await again.receive()
        assert (message.data, message.seq) == ("after", MEANWHILE + 1)
