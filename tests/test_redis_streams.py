"""The Redis primitives of the several-nodes engine, against a real private redis-server.

Two "nodes" are two RedisEngineIO objects in this process, each with its own client and
tasks; faults are real (SIGKILL of our redis-server, CLIENT KILL). Time is real (Redis
keeps it), so every wait is bounded with fail_after.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Unpack, cast

import cbor2
import coredis.exceptions
import pytest
import trio
from coredis.response.types import StreamEntry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy import TcpProxy, open_proxy
from redis_server import RedisServer

from trio_stream._engine.redis_control import MAX_INLINE_BYTES, STORED_MESSAGE_TTL_MS, Handler
from trio_stream._engine.redis_engine import MAX_APPEND_BYTES, MAX_APPEND_FRAMES, _Appender
from trio_stream._engine.redis_io import RedisEngineIO, RedisEngineOptions
from trio_stream._engine.redis_registry import (
    STREAM_KEPT_AFTER_DELETE_MS,
    ChannelRecord,
    ChannelTaken,
)
from trio_stream._engine.redis_streams import (
    PACK_BYTES,
    REDIS_DOWN,
    AppendInterrupted,
    EpochChanged,
    EpochReset,
    Frame,
    FrameBatch,
    ReaderEvent,
    StaleClaim,
    WriterMoved,
    _arrival,
    _frames,
    pack_entries,
    read_range,
)

WAIT_S = 10.0


@asynccontextmanager
async def running_node(
    server: RedisServer | TcpProxy, name: str, **options: Unpack[RedisEngineOptions]
) -> AsyncIterator[tuple[RedisEngineIO, trio.CancelScope]]:
    """A started node (reaching Redis through ``server``, which may be a proxy in front of
    it); cancelling the scope stops its tasks (a node that went silent)."""
    async with (
        RedisEngineIO.open(server.url, name, **options) as io,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(io.run)
        yield io, nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def collect_frames(io: RedisEngineIO, channel: str, total: int) -> tuple[list[Frame], int]:
    """Frames of ``channel`` from the node's reader until ``total`` are in; also lost count."""
    frames: list[Frame] = []
    lost = 0
    while len(frames) + lost < total:
        event = await io.reader.events.receive()
        assert isinstance(event, FrameBatch), event
        if event.channel == channel:
            frames += [Frame(*frame) for frame in event.frames]
            lost += event.lost
    return frames, lost


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Poll ``check`` (state lives in Redis: there is no event to wait on) until true."""
    with trio.fail_after(timeout_s):
        while not await check():  # noqa: ASYNC110
            await trio.sleep(0.02)


def stored_entries(sender: bytes, first: int, args: list[bytes | str]) -> list[StreamEntry]:
    """What the append script stores for ``pack_entries``' arguments (as XREAD returns it)."""
    entries = []
    seq = first - 1
    for index in range(0, len(args), 4):
        count, times, sizes, payloads = args[index : index + 4]
        seq += int(count)
        fields = {b"s": sender, b"t": times, b"l": sizes, b"p": payloads}
        entries.append(StreamEntry(f"{seq}-0".encode(), fields))  # type: ignore[arg-type]
    return entries


@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 300), st.integers(40_000, 70_000), st.integers(0, 200_000)),
        min_size=1,
        max_size=60,
    ),
    first=st.integers(1, 2**40),
    skip=st.integers(0, 70),
)
def test_packed_entries_give_back_every_frame_with_its_seq_time_and_payload(
    sizes: list[int], first: int, skip: int
) -> None:
    payloads = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    times = [1.5e9 + i / 7 for i in range(len(payloads))]
    args = pack_entries(payloads, times)
    entries = stored_entries(b"w", first, args)
    # small frames share entries; a big one has its own (its payload is stored as it came)
    counts = [int(args[i]) for i in range(0, len(args), 4)]
    assert sum(counts) == len(payloads) and len(entries) <= len(payloads)
    bodies = iter(args[3::4])
    for count, start in zip(counts, itertools.accumulate([0, *counts]), strict=False):
        body = next(bodies)
        if any(size >= PACK_BYTES for size in sizes[start : start + count]):
            assert count == 1 and body is payloads[start]
    expected = [
        (first + i, times[i], b"w", payload) for i, payload in enumerate(payloads) if i >= skip
    ]
    # a read from the middle of an entry starts at the next frame: seqs say where it is
    assert _frames(entries, first - 1 + skip) == expected


BIG_PAYLOADS = {size: b"x" * size for size in (3 * 2**20, 9 * 2**20)}


@settings(deadline=None)
@given(
    batches=st.lists(
        st.lists(st.sampled_from([0, 10, 100, *BIG_PAYLOADS]), min_size=1, max_size=1500),
        min_size=1,
        max_size=4,
    )
)
def test_a_writers_queued_batches_are_taken_in_order_within_the_append_bounds(
    batches: list[list[int]],
) -> None:
    appender = _Appender(cast(Any, None))
    sent: list[tuple[float, bytes]] = []
    arrived: list[float] = []  # per frame sent: when its batch reached the node
    for sizes in batches:
        # small payloads as views (the session's, copied out), big ones shared bytes objects
        # (bytes() keeps them as they are): memory stays small whatever the batch
        payloads = [BIG_PAYLOADS.get(size) or b"x" * size for size in sizes]
        times = [float(len(sent) + i) for i in range(len(sizes))]
        sent += list(zip(times, payloads, strict=True))
        appender.put(times, [p if len(p) > 2**20 else memoryview(p) for p in payloads])
        arrived += [appender.queued[-1][3]] * len(sizes)
    taken: list[tuple[float, bytes]] = []
    while appender.queued:
        times, payloads, size = appender.take()
        assert payloads and len(times) == len(payloads) <= MAX_APPEND_FRAMES
        assert size == sum(map(len, payloads))
        assert size <= MAX_APPEND_BYTES or len(payloads) == 1
        assert all(type(p) is bytes for p in payloads)
        # Each frame is timed by its own batch's arrival (a block reader's wait, redis_holds)
        arrivals = appender.taken_arrivals
        assert [_arrival(arrivals, i) for i in range(len(payloads))] == arrived[
            len(taken) : len(taken) + len(payloads)
        ]
        taken += list(zip(times, payloads, strict=True))
    assert taken == sent


async def test_frames_from_two_writer_nodes_are_read_in_seq_order_on_a_third(
    redis_server: RedisServer,
) -> None:
    async with (
        running_node(redis_server, "a") as (a, _),
        running_node(redis_server, "b") as (b, _),
        running_node(redis_server, "c") as (c, _),
    ):
        record = await a.registry.create("AI1", owner="dev", node="a")
        assert await c.reader.follow("AI1") == (record.epoch, 0)
        firsts = []
        for i in range(10):
            writer, sender = (a, "pa") if i % 2 == 0 else (b, "pb")
            payloads = [f"{sender}-{i}-{j}".encode() for j in range(3 + i % 2)]
            firsts.append(
                await writer.writer.append(
                    "AI1", record.epoch, sender, payloads, [1000.0 + i] * len(payloads)
                )
            )
        with trio.fail_after(WAIT_S):
            frames, lost = await collect_frames(c, "AI1", 35)
    assert lost == 0
    assert [f.seq for f in frames] == list(range(1, 36))
    assert firsts == [1, 4, 8, 11, 15, 18, 22, 25, 29, 32]
    assert frames[3] == Frame(4, 1001.0, b"pb", b"pb-1-0")
    assert {f.sender for f in frames} == {b"pa", b"pb"}


async def test_concurrent_batches_get_disjoint_contiguous_seq_ranges(
    redis_server: RedisServer,
) -> None:
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        record = await a.registry.create("c", owner="dev", node="a")
        ranges: list[range] = []

        async def write(io: RedisEngineIO, size: int) -> None:
            for _ in range(20):
                first = await io.writer.append(
                    "c", record.epoch, io.node, [b"x"] * size, [0.0] * size
                )
                ranges.append(range(first, first + size))

        async with trio.open_nursery() as nursery:
            for io, size in [(a, 1), (a, 7), (b, 13), (b, 100)]:
                nursery.start_soon(write, io, size)
        stored = await read_range(a.client, a.keys, "c", record.epoch, 0, 10_000)
    assigned = sorted(seq for r in ranges for seq in r)
    assert assigned == list(range(1, 20 * (1 + 7 + 13 + 100) + 1))
    assert [f.seq for f in stored] == assigned


async def test_frames_trimmed_before_reading_are_counted_exactly(
    redis_server: RedisServer,
) -> None:
    total = 2_000
    async with running_node(redis_server, "a", history_frames=300) as (a, _):
        record = await a.registry.create("t", owner="dev", node="a")
        for _ in range(total // 100):
            await a.writer.append("t", record.epoch, "w", [b"p"] * 100, [0.0] * 100)
        held = len(await read_range(a.client, a.keys, "t", record.epoch, 0, total))
        # One entry per batch of 100, trimmed by id: the bound is kept, to the batch
        assert held == 300
        assert await a.client.xlen(a.keys.stream("t", record.epoch)) == 3
        await a.reader.follow("t", after=0)
        with trio.fail_after(WAIT_S):
            frames, lost = await collect_frames(a, "t", total)
        # a resume position from the middle of the trimmed range: XRANGE says the same
        resumed = await read_range(a.client, a.keys, "t", record.epoch, 10, 5)
    assert lost == total - held
    assert [f.seq for f in frames] == list(range(lost + 1, total + 1))
    assert resumed[0].seq == lost + 1


async def test_a_batch_goes_in_only_as_far_as_a_block_readers_room_then_the_rest(
    redis_server: RedisServer,
) -> None:
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        record = await a.registry.create("c", owner="dev", node="a")
        b.positions.update("c", record.epoch, 0, 5)  # block readers on b: room for 5

        async def stored() -> int:
            return len(await read_range(a.client, a.keys, "c", record.epoch, 0, 100))

        async def stored_is(count: int) -> bool:
            return await stored() == count

        await eventually(lambda: a.client.hexists(a.keys.positions("c", record.epoch), "b"))
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                done = trio.Event()

                async def write() -> None:
                    await a.writer.append(
                        "c", record.epoch, "w", [b"%d" % i for i in range(12)], [0.0] * 12
                    )
                    done.set()

                nursery.start_soon(write)
                await eventually(lambda: stored_is(5))
                await trio.sleep(0.2)
                assert await stored() == 5 and not done.is_set()  # the rest waits
                b.positions.update("c", record.epoch, 4, 5)  # they took 4: room up to 9
                await eventually(lambda: stored_is(9))
                b.positions.update("c", record.epoch, 9, 5)
                await done.wait()

        frames = await read_range(a.client, a.keys, "c", record.epoch, 0, 100)
    assert [(f.seq, f.payload) for f in frames] == [(i + 1, b"%d" % i) for i in range(12)]


async def test_redis_restart_without_persistence_is_an_epoch_reset_not_silence(
    redis_server: RedisServer,
) -> None:
    async with running_node(redis_server, "a", epoch_check_interval_s=0.2) as (a, _):
        record = await a.registry.create("r", owner="dev", node="a")
        await a.reader.follow("r")
        await a.writer.append("r", record.epoch, "w", [b"before"], [1.0])
        with trio.fail_after(WAIT_S):
            frames, _ = await collect_frames(a, "r", 1)
        assert frames[0].payload == b"before"

        await trio.to_thread.run_sync(redis_server.restart)
        with trio.fail_after(WAIT_S):
            event: ReaderEvent = await a.reader.events.receive()
        assert event == EpochReset("r", record.epoch, None)
        assert a.reader.position("r") is None
        with pytest.raises(EpochChanged, match="no such channel"):
            await a.writer.append("r", record.epoch, "w", [b"lost"], [2.0])

        # recreated: a new epoch, seq from 1 again, read from its first frame
        again = await a.registry.create("r", owner="dev", node="a")
        assert again.epoch != record.epoch
        assert await a.reader.follow("r", epoch=record.epoch, after=1) == (again.epoch, 0)
        await a.writer.append("r", again.epoch, "w", [b"after"], [3.0])
        with trio.fail_after(WAIT_S):
            frames, lost = await collect_frames(a, "r", 1)
        assert (frames[0].seq, frames[0].payload, lost) == (1, b"after", 0)


async def test_recreated_channel_is_an_epoch_reset_to_its_readers(
    redis_server: RedisServer,
) -> None:
    async with (
        running_node(redis_server, "a") as (a, _),
        running_node(redis_server, "b", epoch_check_interval_s=0.1) as (b, _),
    ):
        old = await a.registry.create("x", owner="dev", node="a")
        await b.reader.follow("x")
        assert await a.registry.delete("x", epoch="not-this-one") is None
        assert await a.registry.delete("x") == old.epoch
        new = await a.registry.create("x", owner="dev", node="a")
        await a.writer.append("x", new.epoch, "w", [b"1", b"2"], [0.0, 0.0])
        with trio.fail_after(WAIT_S):
            event = await b.reader.events.receive()
            assert event == EpochReset("x", old.epoch, new.epoch)
            frames, lost = await collect_frames(b, "x", 2)
    assert [f.payload for f in frames] == [b"1", b"2"]
    assert lost == 0


async def test_killed_redis_connections_while_streaming_lose_and_repeat_nothing(
    redis_server: RedisServer,
) -> None:
    batches, size = 100, 20
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        record = await a.registry.create("k", owner="dev", node="a")
        await b.reader.follow("k")
        killed = 0

        async def write() -> None:
            for i in range(batches):
                payloads = [f"{i}.{j}".encode() for j in range(size)]
                await a.writer.append("k", record.epoch, "w", payloads, [0.0] * size)
                await trio.sleep(0.002)

        async def kill() -> None:
            nonlocal killed
            for _ in range(5):
                await trio.sleep(0.05)
                killed += await trio.to_thread.run_sync(redis_server.kill_clients)

        with trio.fail_after(WAIT_S * 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                nursery.start_soon(kill)
                frames, lost = await collect_frames(b, "k", batches * size)
    assert killed >= 5
    assert lost == 0
    assert [f.seq for f in frames] == list(range(1, batches * size + 1))
    assert [f.payload for f in frames] == [
        f"{i}.{j}".encode() for i in range(batches) for j in range(size)
    ]


async def test_channel_creation_is_atomic_across_nodes_and_listed_everywhere(
    redis_server: RedisServer,
) -> None:
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        outcomes: list[str] = []

        async def create(io: RedisEngineIO) -> None:
            try:
                await io.registry.create("same", owner=io.node, node=io.node, options={"keep": 5})
                outcomes.append(io.node)
            except ChannelTaken:
                outcomes.append("taken")

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(create, a)
                nursery.start_soon(create, b)
        winners = [o for o in outcomes if o != "taken"]
        assert len(winners) == 1 and len(outcomes) == 10
        (listed,) = await b.registry.list()
        assert (listed.name, listed.owner, listed.node) == ("same", winners[0], winners[0])
        assert listed.options == {"keep": 5}
        record = await a.registry.get("same")
        assert record is not None
        await a.writer.append("same", record.epoch, "w", [b"x"], [0.0])
        assert await b.registry.delete("same") == record.epoch
        assert await a.registry.list() == []
        # Its stream stays a while (STREAM_KEPT_AFTER_DELETE_MS), for the frames still on
        # their way to other nodes' readers, then expires.
        ttl_ms = await a.client.pttl(a.keys.stream("same", record.epoch))
        assert 0 < ttl_ms <= STREAM_KEPT_AFTER_DELETE_MS


async def test_channel_key_is_never_stored_in_plain_text_and_checks_on_every_node(
    redis_server: RedisServer,
) -> None:
    secret = "correct horse battery staple"
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        await a.registry.create("priv", owner="dev", node="a", key=secret)
        record = await b.registry.get("priv")
        assert record is not None and record.has_key
        assert await record.key_matches(secret)
        assert not await record.key_matches(secret + " ")
        assert not await record.key_matches(None)
        # every byte Redis holds, key by key
        dump = b""
        async for key in a.client.scan_iter():
            dump += key + (await a.client.dump(key) or b"")
    assert secret.encode() not in dump
    assert b"priv" in dump  # the scan did see the channel


async def test_reader_counts_reach_another_node_within_200_ms(redis_server: RedisServer) -> None:
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        for count in [3, 5, 0]:
            started = trio.current_time()
            await a.presence.set_readers("AI1", count)
            with trio.fail_after(WAIT_S):
                while True:
                    channel, total = await b.presence.count_changes.receive()
                    if (channel, total) == ("AI1", count):
                        break
            assert trio.current_time() - started < 0.2
        await b.presence.set_readers("AI1", 2)
        await a.presence.set_readers("AI1", 4)
        await eventually(lambda: _async(b.presence.readers("AI1") == 6))


async def _async(value: bool) -> bool:
    return value


async def test_a_silent_node_vanishes_names_clients_and_readers_within_its_ttl(
    redis_server: RedisServer,
) -> None:
    ttl_s = 0.6
    async with (
        running_node(redis_server, "a", heartbeat_ttl_s=ttl_s) as (a, a_tasks),
        running_node(redis_server, "b", heartbeat_ttl_s=ttl_s) as (b, _),
    ):
        await a.presence.add_client("c1", {"name": "inst", "transport": "tcp"})
        assert await a.presence.claim_name("inst")
        assert not await b.presence.claim_name("inst")  # unique across the cluster
        assert await b.presence.name_node("inst") == "a"
        await a.presence.set_readers("AI1", 2)
        await eventually(lambda: _async(b.presence.readers("AI1") == 2))
        assert (await b.presence.clients())["a"] == {"c1": {"name": "inst", "transport": "tcp"}}
        await trio.sleep(ttl_s * 2)  # heartbeats keep it all alive past the TTL
        assert await b.presence.name_node("inst") == "a"
        assert b.presence.readers("AI1") == 2

        a_tasks.cancel()  # a stops beating: as if killed
        stopped = trio.current_time()
        await eventually(lambda: _async(b.presence.readers("AI1") == 0))
        await eventually(lambda: b.presence.claim_name("inst"))
        assert trio.current_time() - stopped < ttl_s * 2.5
        assert "a" not in await b.presence.clients()
        assert await b.presence.live() == frozenset({"b"})
        assert await b.presence.name_node("inst") == "b"
        await b.presence.release_name("inst")
        assert await b.presence.name_node("inst") is None


async def test_reader_counts_announced_while_a_nodes_bus_was_away_reach_it_once_back(
    redis_server: RedisServer,
) -> None:
    # Node a's link to Redis failed (reset, then refused for a while): b's announcement of a
    # reader never reached a's control bus, and a heard of it only at its next heartbeat's
    # resync, a third of the TTL later (10 s here; 1 s by default): a writer on a sent
    # nothing meanwhile, its channel read on b.
    ttl_s = 30.0
    async with (
        open_proxy(redis_server.url) as a_to_redis,
        running_node(a_to_redis, "a", heartbeat_ttl_s=ttl_s) as (a, _),
        running_node(redis_server, "b", heartbeat_ttl_s=ttl_s) as (b, _),
    ):
        a_to_redis.refuse()
        a_to_redis.reset()
        await b.presence.set_readers("AI1", 1)  # published while nobody listens for a
        await trio.sleep(0.5)
        assert a.presence.readers("AI1") == 0
        a_to_redis.accept()
        await eventually(lambda: _async(a.presence.readers("AI1") == 1), timeout_s=3.0)


async def test_the_control_bus_listens_again_soon_after_redis_comes_back(
    redis_server: RedisServer,
) -> None:
    # coredis's own reconnection of a subscription backs off up to 16 s: after an outage of a
    # few seconds a node's bus stayed deaf for 2-6 s after Redis was back, and every call
    # between nodes, reader count and deletion news sent to it meanwhile was lost.
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        got: list[object] = []
        a.bus.on("ping", lambda sender, body: got.append(body))
        await trio.to_thread.run_sync(redis_server.stop)
        await trio.sleep(6.0)
        await trio.to_thread.run_sync(redis_server.start)
        back = trio.current_time()
        with trio.fail_after(WAIT_S):
            while not got:
                with contextlib.suppress(*REDIS_DOWN):  # b's own link may still be down
                    await b.bus.publish("ping", 1, to="a")
                await trio.sleep(0.05)
        assert trio.current_time() - back < 1.5


async def test_control_messages_reach_nodes_and_survive_a_killed_subscription(
    redis_server: RedisServer,
) -> None:
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        got: list[tuple[str, object]] = []
        b.bus.on("ping", lambda sender, body: got.append((sender, body)))
        a.bus.on("ping", lambda sender, body: got.append(("a got", body)))
        assert await a.bus.publish("ping", 1, to="b") == 1  # addressed: only b
        await eventually(lambda: _async(got == [("a", 1)]))
        assert await trio.to_thread.run_sync(redis_server.kill_pubsub_clients) >= 2
        sent = 2

        async def delivered_after_reconnect() -> bool:
            nonlocal sent
            if ("a", sent) in got:
                return True
            sent += 1
            await a.bus.publish("ping", sent, to="b")
            await trio.sleep(0.05)
            return False

        await eventually(delivered_after_reconnect)


def recorded_in(got: list[tuple[str, str, object]], io: RedisEngineIO) -> Handler:
    """A control handler appending (receiving node, sender, body) to ``got``."""
    return lambda sender, body: got.append((io.node, sender, body))


async def stored_messages(io: RedisEngineIO) -> list[bytes]:
    """The keys of large control messages waiting in Redis."""
    return [key async for key in io.client.scan_iter(match=io.keys.control_message("*", "*"))]


async def test_a_large_control_message_travels_through_its_own_key_taken_by_its_one_reader(
    redis_server: RedisServer,
) -> None:
    # Redis closes a subscriber's connection whose output buffer passes 32 MiB: inline, this
    # message was lost and the receiving bus resubscribed.
    large = os.urandom(40 << 20)
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        got: list[tuple[str, str, object]] = []
        for io in (a, b):
            for kind in ("large", "ping"):
                io.bus.on(kind, recorded_in(got, io))
        assert await a.bus.publish("large", large, to="b") == 1
        assert await a.bus.publish("ping", 1, to="b") == 1  # after it: once it is in, so was
        await eventually(lambda: _async(("b", "a", 1) in got))
        assert got == [("b", "a", large), ("b", "a", 1)]  # once, in order, to b alone
        assert await stored_messages(a) == []  # taken by b
        # The bus still listens (an inline message did not arrive with the connection closed).
        assert await a.bus.publish("ping", 2, to="b") == 1
        await eventually(lambda: _async(("b", "a", 2) in got))
        # Nobody listening on that node: its message is not kept either.
        assert await a.bus.publish("large", large, to="c") == 0
        assert await stored_messages(a) == []


async def test_a_large_broadcast_reaches_every_node_and_its_key_expires(
    redis_server: RedisServer,
) -> None:
    large = os.urandom(2 * MAX_INLINE_BYTES)
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        got: list[tuple[str, str, object]] = []
        for io in (a, b):
            io.bus.on("large", recorded_in(got, io))
        assert await a.bus.publish("large", large) == 2
        await eventually(lambda: _async(len(got) == 2))
        assert sorted(got, key=lambda at_sender_body: at_sender_body[0]) == [
            ("a", "a", large),
            ("b", "a", large),
        ]
        # Each node only read it (none knows it is the last): Redis drops it within a minute.
        [key] = await stored_messages(a)
        assert 0 < await a.client.pttl(key) <= STORED_MESSAGE_TTL_MS


async def test_a_large_control_message_gone_from_redis_is_dropped_with_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        got: list[object] = []
        b.bus.on("large", lambda sender, body: got.append(body))
        b.bus.on("ping", lambda sender, body: got.append(body))
        # As a reference to a stored message arrives when that message expired unread:
        gone = a.keys.control_message("a", "gone")
        reference = cbor2.dumps({"k": "large", "f": "a", "r": gone})
        assert await a.client.publish(a.keys.control_for("b"), reference) == 1
        assert await a.bus.publish("ping", 1, to="b") == 1
        await eventually(lambda: _async(got == [1]))
    assert "control message 'large' from node 'a' dropped: it was gone" in caplog.text


async def test_a_repeated_call_is_recognised_per_writer_even_when_writers_share_a_name(
    redis_server: RedisServer,
) -> None:
    # coredis repeats a call whose connection broke; between the call and its repeat another
    # writer of the same sender name (a client's second publisher) appended. Its mark must
    # not replace the first writer's, or the repeat goes in twice.
    async with running_node(redis_server, "a") as (a, _):
        record = await a.registry.create("c", owner="dev", node="a")
        keys = [
            a.keys.channel("c"),
            a.keys.stream("c", record.epoch),
            a.keys.positions("c", record.epoch),
            a.keys.nodes,
        ]
        script = a.writer._append

        def call(token: str, payload: bytes) -> list[bytes | str]:
            head = [record.epoch, "10000", "alice", token, "1", "", "", "", ""]
            return [*head, *pack_entries([payload], [1.0])]

        assert await script(keys=keys, args=call("node:w1.1", b"x")) == 1
        assert await script(keys=keys, args=call("node:w2.2", b"y")) == 2
        assert await script(keys=keys, args=call("node:w1.1", b"x")) == [1, 1]  # the repeat
        frames = await read_range(a.client, a.keys, "c", record.epoch, 0, 10)
        assert [(f.seq, f.payload) for f in frames] == [(1, b"x"), (2, b"y")]
        # A writer that ends forgets its mark (the channel's hash does not grow per writer).
        await a.writer.append("c", record.epoch, "alice", [b"z"], [1.0], writer="w3")
        await a.writer.forget("c", "w3")
        marks = [k for k in await a.client.hkeys(a.keys.channel("c")) if k.startswith(b"b:")]
        assert len(marks) == 2  # w1's and w2's, written by hand above


@asynccontextmanager
async def split_after_two(
    redis_server: RedisServer, at_room_check: Callable[[RedisEngineIO], Awaitable[object]]
) -> AsyncIterator[tuple[RedisEngineIO, ChannelRecord]]:
    """Node a and its channel "k", where node b's block reader has room for 2 frames: a
    batch of more goes in parts, and the writer's check for more room runs ``at_room_check``
    (what happens to Redis between the parts) in its place."""
    async with running_node(redis_server, "a", history_frames=1000) as (a, _):
        record = await a.registry.create("k", owner="dev", node="a")
        positions = a.keys.positions("k", record.epoch)
        await a.client.hset(positions, {"b": "0 2"})  # node b's block reader: room for 2
        await a.client.zadd(a.keys.nodes, {"b": 2**62})  # ...and node b is alive
        room = a.writer._room

        async def instead(**kwargs: Any) -> object:
            return await at_room_check(a)

        a.writer._room = instead  # type: ignore[assignment]
        try:
            yield a, record
        finally:
            a.writer._room = room


async def test_a_split_batch_interrupted_by_redis_says_how_much_went_in(
    redis_server: RedisServer,
) -> None:
    # A block reader's room splits a batch; Redis goes away before the second part: the
    # writer must append only the rest again (the whole batch again doubled the first part).
    calls = 0

    async def redis_down(a: RedisEngineIO) -> object:
        nonlocal calls
        calls += 1
        raise coredis.exceptions.ConnectionError("Redis went away")

    async with split_after_two(redis_server, redis_down) as (a, record):
        a.writer._retry_s = 0.05
        with pytest.raises(AppendInterrupted) as interrupted:
            await a.writer.append("k", record.epoch, "w", [b"1", b"2", b"3", b"4"], [0.0] * 4)
        assert interrupted.value.written == 2 and calls >= 1
        frames = await read_range(a.client, a.keys, "k", record.epoch, 0, 10)
        assert [f.payload for f in frames] == [b"1", b"2"]


async def test_a_split_batch_whose_channel_redis_lost_says_how_much_went_in(
    redis_server: RedisServer,
) -> None:
    # Redis restarted (empty) between the parts of a split batch: the engine registers the
    # channel again and must append only the rest there; the whole batch again gave every
    # reader the first part twice (a soak saw 14-93 values so).
    async def redis_restarted_empty(a: RedisEngineIO) -> object:
        await a.client.flushdb()
        return True

    async with split_after_two(redis_server, redis_restarted_empty) as (a, record):
        with pytest.raises(EpochChanged) as changed:
            await a.writer.append("k", record.epoch, "w", [b"1", b"2", b"3", b"4"], [0.0] * 4)
        assert changed.value.written == 2 and changed.value.epoch is None


async def test_a_writer_reopened_elsewhere_is_refused_on_the_old_connection_and_counted_once(
    redis_server: RedisServer,
) -> None:
    # A client moves its publisher from node a to node b and back: each reopen claims the
    # writer with a token of its own and learns how many of its frames the stream has; a
    # batch still on its way from an earlier connection is then refused, on either node.
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        epoch = (await a.registry.create("c", owner="dev", node="a")).epoch
        first = a.writer.named(epoch, "w", "K")  # the publisher's first connection, on a
        assert await a.writer.append("c", epoch, "w", [b"0", b"1"], [0.0] * 2, named=first) == 1
        on_b = b.writer.named(epoch, "w", "K")
        assert await b.writer.claim("c", epoch, on_b) == 2
        with pytest.raises(WriterMoved):
            await a.writer.append("c", epoch, "w", [b"late"], [0.0], named=first)
        assert await b.writer.append("c", epoch, "w", [b"2", b"3"], [0.0] * 2, named=on_b) == 3
        # Other writers are not held: one without a name, one of another name or sender.
        assert await a.writer.append("c", epoch, "v", [b"x"], [0.0]) == 5
        other = a.writer.named(epoch, "w", "L")
        assert await a.writer.append("c", epoch, "w", [b"y"], [0.0], named=other) == 6
        assert await a.writer.claim("c", epoch, a.writer.named(epoch, "v", "K")) == 0
        # Back on a, a new connection: the first connection's batch is still refused there.
        back = a.writer.named(epoch, "w", "K")
        assert await a.writer.claim("c", epoch, back) == 4
        for stale in (first, on_b):
            with pytest.raises(WriterMoved):
                await a.writer.append("c", epoch, "w", [b"stale"], [0.0], named=stale)
        assert await a.writer.append("c", epoch, "w", [b"4"], [0.0], named=back) == 7
        frames = await read_range(a.client, a.keys, "c", epoch, 0, 10)
        assert [f.payload for f in frames] == [b"0", b"1", b"2", b"3", b"x", b"y", b"4"]
        with pytest.raises(EpochChanged):
            await b.writer.claim("c", "another-epoch", on_b)
        # The record lives a day after the last batch or claim; one that is gone (expired,
        # or a new epoch) starts again at the count the appending node gives.
        assert 23 * 3600_000 < await a.client.pttl(back.record) <= 24 * 3600_000
        await a.client.delete([back.record])
        await a.writer.append("c", epoch, "w", [b"5"], [0.0], named=back, before=5)
        assert await b.writer.claim("c", epoch, b.writer.named(epoch, "w", "K")) == 6


async def test_a_reopen_that_reaches_redis_after_a_later_one_takes_nothing_away(
    redis_server: RedisServer,
) -> None:
    # The client's reopen 1 went to node a, whose call to Redis was slow; it gave up on it,
    # reopened on b (claim 2) and writes there. Reopen 1 then reaches Redis: refused, and b
    # still appends. A claim without a number (another client) is not held back.
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        epoch = (await a.registry.create("c", owner="dev", node="a")).epoch
        on_b = b.writer.named(epoch, "w", "K")
        assert await b.writer.claim("c", epoch, on_b, 2) == 0
        assert await b.writer.append("c", epoch, "w", [b"0"], [0.0], named=on_b) == 1
        late = a.writer.named(epoch, "w", "K")
        for number in (1, 2):
            with pytest.raises(StaleClaim, match=f"claim {number}, the last 2"):
                await a.writer.claim("c", epoch, late, number)
        assert await b.writer.append("c", epoch, "w", [b"1"], [0.0], named=on_b) == 2
        with pytest.raises(WriterMoved):
            await a.writer.append("c", epoch, "w", [b"late"], [0.0], named=late)
        assert await a.writer.claim("c", epoch, late, 3) == 2  # a later reopen takes it
        with pytest.raises(WriterMoved):
            await b.writer.append("c", epoch, "w", [b"old"], [0.0], named=on_b)
        other = b.writer.named(epoch, "w", "K")
        assert await b.writer.claim("c", epoch, other) == 2  # no number: as before
        # The largest number the protocol allows is compared and reported exactly.
        assert await b.writer.claim("c", epoch, other, 2**53) == 2
        with pytest.raises(StaleClaim, match=f"claim {2**53}, the last {2**53}"):
            await a.writer.claim("c", epoch, late, 2**53)
        frames = await read_range(a.client, a.keys, "c", epoch, 0, 10)
        assert [f.payload for f in frames] == [b"0", b"1"]


async def test_an_append_tried_again_for_the_same_batch_goes_in_once(
    redis_server: RedisServer,
) -> None:
    # The engine tries a batch again after Redis was unreachable for retry_s (the reply of
    # the first try may have been lost after it went in), under the same batch name: what
    # went in is recognised, also when that try went in for fewer frames (a block reader's
    # room) than the batch has.
    async with running_node(redis_server, "a") as (a, _):
        epoch = (await a.registry.create("c", owner="dev", node="a")).epoch
        named = a.writer.named(epoch, "w", "K")

        async def append(payloads: list[bytes], offset: int = 0) -> int:
            times = [0.0] * len(payloads)
            return await a.writer.append(
                "c", epoch, "w", payloads, times, writer="m", named=named, batch="7", offset=offset
            )

        assert await append([b"0", b"1"]) == 1  # the first try went in for two frames
        assert await append([b"0", b"1"]) == 1  # the same try again
        assert await append([b"0", b"1", b"2", b"3"]) == 1  # the batch has four: the rest
        assert await append([b"4", b"5"], offset=4) == 5  # a later part (AppendInterrupted)
        assert await append([b"4", b"5"], offset=4) == 5  # ... and that part again
        frames = await read_range(a.client, a.keys, "c", epoch, 0, 10)
        assert [f.payload for f in frames] == [b"0", b"1", b"2", b"3", b"4", b"5"]
        assert await a.writer.claim("c", epoch, a.writer.named(epoch, "w", "K")) == 6


_claims = itertools.count()
_writer_steps = st.lists(
    st.tuples(st.sampled_from(["append", "reopen"]), st.sampled_from("ab"), st.integers(1, 4)),
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=_writer_steps)
async def test_a_named_writers_count_is_exactly_its_frames_and_only_its_last_claim_appends(
    redis_server: RedisServer, steps: list[tuple[str, str, int]]
) -> None:
    # The invariant a moving writer relies on, for any order of appends from the writer's
    # connections so far (one per reopen, on node a or b) and reopens: a reopen's claim
    # answers exactly how many of the writer's frames the stream holds, and from then on only
    # the newest connection's batches go in.
    channel = f"w{next(_claims)}"
    async with running_node(redis_server, "a") as (a, _), running_node(redis_server, "b") as (b, _):
        nodes = {"a": a, "b": b}
        epoch = (await a.registry.create(channel, owner="dev", node="a")).epoch
        connections = [(a, a.writer.named(epoch, "w", "K"))]  # the first one, never claimed
        count = 0
        for action, node, frames in steps:
            if action == "reopen":
                io = nodes[node]
                named = io.writer.named(epoch, "w", "K")
                assert await io.writer.claim(channel, epoch, named) == count
                connections.append((io, named))
                continue
            payloads, times = [b"x"] * frames, [0.0] * frames
            for io, named in connections[:-1]:  # every earlier connection is refused
                with pytest.raises(WriterMoved):
                    await io.writer.append(channel, epoch, "w", payloads, times, named=named)
            io, named = connections[-1]
            await io.writer.append(channel, epoch, "w", payloads, times, named=named)
            count += frames
        stored = await read_range(a.client, a.keys, channel, epoch, 0, 100)
        assert len(stored) == count
        assert await b.writer.claim(channel, epoch, b.writer.named(epoch, "w", "K")) == count
