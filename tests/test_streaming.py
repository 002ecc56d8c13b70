"""Publish/subscribe through a real server over real sockets: policies, fan-out, flow control."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio
from engine_marks import BOTH_ENGINES, VIRTUAL_TIME

import trio_stream as ts
from trio_stream._protocol.codec import EncodedPayload

pytestmark = BOTH_ENGINES


SETTLE_S = 10.0  # generous bound for things that take milliseconds on loopback


@asynccontextmanager
async def writer_and_reader(
    url: str, **subscribe: Any
) -> AsyncIterator[tuple[ts.Client, ts.Publisher, ts.Subscription]]:
    """Clients "w" and "r", channel "c", r subscribed with ``subscribe``, w's publisher open
    and told of the reader: (w, publisher, subscription)."""
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", **subscribe) as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            yield w, pub, sub


async def wait_until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll the server's own view (clients(), stats()): there is no event to wait on."""
    with trio.fail_after(SETTLE_S):
        while not await predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def sub_record(observer: ts.Client, reader: str, channel: str) -> ts.SubscriptionInfo:
    for client in await observer.clients():
        if client.name == reader:
            for sub in client.subscriptions:
                if sub.channel == channel:
                    return sub
    raise AssertionError(f"{reader} has no subscription to {channel}")


async def stalled_with(
    observer: ts.Client, reader: str, channel: str, sent: int, queued: int, lost: int | None = None
) -> None:
    """Wait until the server has sent ``sent`` frames and buffers ``queued`` for the reader
    (and has dropped ``lost`` for it)."""

    async def check() -> bool:
        record = await sub_record(observer, reader, channel)
        return (
            record.sent == sent
            and record.queued == queued
            and (lost is None or record.lost == lost)
        )

    await wait_until(check, f"{reader} sent={sent} queued={queued} lost={lost}")


async def read_all(sub: ts.Subscription, count: int) -> list[ts.Message]:
    with trio.fail_after(SETTLE_S):
        return [await sub.receive() for _ in range(count)]


async def test_numpy_frames_arrive_intact_with_metadata(url: str) -> None:
    async with ts.open_client(url, name="daq") as daq, ts.open_client(url, name="rec") as rec:
        await daq.create_channel("AnalogInput1")
        async with (
            rec.subscribe("AnalogInput1", policy="unbounded") as sub,
            daq.publisher("AnalogInput1") as pub,
        ):
            await pub.wait_for_readers()
            arrays = [np.random.default_rng(i).normal(size=(3, 100)) for i in range(5)]
            for array in arrays:
                assert await pub.send(array)
            got = await read_all(sub, 5)
        for i, (msg, array) in enumerate(zip(got, arrays, strict=True)):
            np.testing.assert_array_equal(msg.data, array)
            assert (msg.seq, msg.channel, msg.sender, msg.lost) == (i + 1, "AnalogInput1", "daq", 0)
            assert abs(msg.time - trio.current_time()) < math.inf


async def test_send_returns_false_without_readers_and_readers_count_is_pushed(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with w.publisher("c") as pub:
            assert pub.readers == 0
            assert await pub.send(1) is False
            assert await w.publish("c", 1) is False
            async with r.subscribe("c") as s1, r.subscribe("c") as s2:
                with trio.fail_after(SETTLE_S):
                    await pub.wait_for_readers(2)
                assert pub.readers == 2
                assert await pub.send("hello")
                assert (await s1.receive()).data == (await s2.receive()).data == "hello"
            await wait_until(lambda: _at_least(lambda: -pub.readers, 0), "readers gone")
            stats = await w.stats()
            assert stats.frames_in == 1  # the unread sends never reached the server


async def test_drop_oldest_keeps_newest_and_counts_the_gap(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", policy="drop_oldest", size=3, window=1) as sub:
            async with w.publisher("c") as pub:
                await pub.wait_for_readers()
                await pub.send(1)
                await stalled_with(w, "r", "c", sent=1, queued=0)  # frame 1 is in flight
                for value in range(2, 11):
                    await pub.send(value)
                await pub.wait_acknowledged()
                await stalled_with(w, "r", "c", sent=1, queued=3)
            got = await read_all(sub, 4)
        assert [(m.data, m.lost) for m in got] == [(1, 0), (8, 6), (9, 0), (10, 0)]
        assert sub.lost == 6


async def test_drop_newest_keeps_oldest_and_reports_loss_on_next_frame(url: str) -> None:
    async with writer_and_reader(url, policy="drop_newest", size=3, window=1) as (w, pub, sub):
        await pub.send(1)
        await stalled_with(w, "r", "c", sent=1, queued=0)
        for value in range(2, 11):
            await pub.send(value)
        await pub.wait_acknowledged()
        # Every frame offered before any is read: with Redis, acknowledged means appended,
        # and the reader's node may offer 5-10 after frame 1's credit came back (5 kept).
        await stalled_with(w, "r", "c", sent=1, queued=3, lost=6)
        got = await read_all(sub, 4)
        await pub.send(11)
        got += await read_all(sub, 1)
    assert [(m.data, m.lost) for m in got] == [(1, 0), (2, 0), (3, 0), (4, 0), (11, 6)]


async def test_clear_empties_the_buffer_then_keeps_the_new_frame(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", policy="clear", size=3, window=1) as sub:
            async with w.publisher("c") as pub:
                await pub.wait_for_readers()
                await pub.send(1)
                await stalled_with(w, "r", "c", sent=1, queued=0)
                for value in range(2, 9):  # 2,3,4 fill; 5 clears; 6,7 fill; 8 clears
                    await pub.send(value)
                await pub.wait_acknowledged()
                await stalled_with(w, "r", "c", sent=1, queued=1)
            got = await read_all(sub, 2)
        assert [(m.data, m.lost) for m in got] == [(1, 0), (8, 6)]


async def test_block_holds_back_only_that_channels_writer(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, publish_window_frames=4)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    url = server.tcp_url
    async with (
        ts.open_client(url, name="w") as w,
        ts.open_client(url, name="other") as other,
        ts.open_client(url, name="r") as r,
    ):
        await w.create_channel("slow")
        await other.create_channel("fast")
        sent = 0

        async def blocked_writer() -> None:
            nonlocal sent
            async with w.publisher("slow") as pub:
                await pub.wait_for_readers()
                for value in range(50):
                    await pub.send(value)
                    sent += 1

        async with (
            r.subscribe("slow", policy="block", size=2, window=1) as slow,
            r.subscribe("fast", policy="unbounded") as fast,
            trio.open_nursery() as tasks,
        ):
            tasks.start_soon(blocked_writer)
            # The writer stops after: 1 in flight + 2 buffered + 4 unacknowledged (window).
            await wait_until(lambda: _at_least(lambda: sent, 7), "writer reaches its window")
            await trio.sleep(0.2)
            assert sent == 7
            # Meanwhile another channel, even read by the same client, flows freely.
            async with other.publisher("fast") as pub:
                await pub.wait_for_readers()
                for value in range(100):
                    await pub.send(value)
            assert [m.data for m in await read_all(fast, 100)] == list(range(100))
            # Reading the block subscription releases the writer; nothing is lost.
            got = await read_all(slow, 50)
            assert [m.data for m in got] == list(range(50))
            assert sum(m.lost for m in got) == 0


async def _at_least(value: Callable[[], int], n: int) -> bool:
    return value() >= n


async def test_fan_out_to_mixed_policies_lossless_readers_get_everything(url: str) -> None:
    frames = 2000
    async with (
        ts.open_client(url, name="daq") as daq,
        ts.open_client(url, name="recorder") as recorder,
        ts.open_client(url, name="analysis") as analysis,
        ts.open_client(url, name="display") as display,
    ):
        await daq.create_channel("AI")
        async with (
            recorder.subscribe("AI", policy="block", size=50) as rec_block,
            recorder.subscribe("AI", policy="unbounded") as rec_unbounded,
            analysis.subscribe("AI", policy="drop_oldest", size=100) as ring,
            display.subscribe("AI", policy="drop_oldest", size=1, every=10) as screen,
            trio.open_nursery() as tasks,
        ):
            results: dict[str, list[ts.Message]] = {}

            async def collect(name: str, sub: ts.Subscription, until_seq: int) -> None:
                got = results.setdefault(name, [])
                with trio.fail_after(30):
                    async for msg in sub:
                        got.append(msg)
                        if msg.seq >= until_seq:
                            return

            tasks.start_soon(collect, "block", rec_block, frames)
            tasks.start_soon(collect, "unbounded", rec_unbounded, frames)
            tasks.start_soon(collect, "ring", ring, frames)
            tasks.start_soon(collect, "screen", screen, frames - 9)
            async with daq.publisher("AI") as pub:
                await pub.wait_for_readers(4)
                for i in range(frames):
                    await pub.send(np.full(10, i, dtype=np.int32))
        for name in ("block", "unbounded"):
            assert [m.seq for m in results[name]] == list(range(1, frames + 1)), name
            assert all(m.lost == 0 and m.data[0] == m.seq - 1 for m in results[name])
        ring_seqs = [m.seq for m in results["ring"]]
        assert ring_seqs == sorted(set(ring_seqs)) and ring_seqs[-1] == frames
        assert len(ring_seqs) + ring.lost == frames  # every frame is delivered or counted lost
        screen_seqs = [m.seq for m in results["screen"]]
        assert all(seq % 10 == 1 for seq in screen_seqs)  # every 10th frame, never others
        assert len(screen_seqs) + screen.lost == frames // 10


async def test_stalled_subscription_does_not_stop_its_connections_other_subscription(
    url: str,
) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("stalled")
        await w.create_channel("flowing")
        async with (
            r.subscribe("stalled", policy="drop_oldest", size=5) as stalled,
            r.subscribe("flowing", policy="block", size=10) as flowing,
            w.publisher("stalled") as p1,
            w.publisher("flowing") as p2,
        ):
            await p1.wait_for_readers()
            await p2.wait_for_readers()
            for i in range(500):
                await p1.send(np.zeros(1000))  # nobody reads this one
                await p2.send(i)
            assert [m.data for m in await read_all(flowing, 500)] == list(range(500))
            record = await sub_record(w, "r", "stalled")
            assert record.queued == 5  # its own buffer filled up, on the server
            assert record.lost == 500 - 5 - record.sent
            # What it does get is in order, ends with the newest, and accounts for every frame.
            got = await read_all(stalled, record.sent + 5)
            seqs = [m.seq for m in got]
            assert seqs == sorted(set(seqs)) and seqs[-1] == 500
            assert len(got) + sum(m.lost for m in got) == 500


async def test_every_keeps_every_nth_frame_without_counting_loss(url: str) -> None:
    async with writer_and_reader(url, policy="unbounded", every=3) as (_, pub, sub):
        for i in range(1, 11):
            await pub.send(i)
        got = await read_all(sub, 4)
    assert [m.seq for m in got] == [1, 4, 7, 10]
    assert sub.lost == 0


@VIRTUAL_TIME
async def test_max_rate_delivers_the_newest_at_most_hz(
    url: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with (
            r.subscribe("c", policy="drop_oldest", size=1, max_rate=2.0) as sub,
            w.publisher("c") as pub,
            trio.open_nursery() as tasks,
        ):
            await pub.wait_for_readers()
            received: list[tuple[float, ts.Message]] = []

            async def read() -> None:
                async for msg in sub:
                    received.append((trio.current_time(), msg))

            tasks.start_soon(read)
            start = trio.current_time()
            for i in range(1, 501):  # 100 Hz for 5 s
                await pub.send(i)
                await trio.sleep(0.01)
            await trio.sleep(1.0)
            tasks.cancel_scope.cancel()
        times = [t - start for t, _ in received]
        assert len(received) <= 2.0 * 6 + 1
        assert len(received) >= 5
        gaps = np.diff(times)
        assert (gaps >= 0.5 - 1e-6).all()  # never faster than max_rate
        assert received[-1][1].data == 500  # the newest value always gets through
        assert all(m.lost == 0 for _, m in received)  # rate limiting is not loss


async def test_a_lagging_block_reader_leaves_room_for_its_connections_other_subscriptions(
    nursery: trio.Nursery,
) -> None:
    # A recorder (block) that stops reading and a dashboard (drop_oldest, size 1) on one
    # connection: the recorder's writer is held back, the dashboard keeps getting frames.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_buffered_bytes=2**20)
    server = await nursery.start(ts.serve, config)
    async with (
        ts.open_client(server.tcp_url, name="w") as w,
        ts.open_client(server.tcp_url, name="r") as r,
    ):
        await w.create_channel("recording")
        await w.create_channel("display")
        async with (
            r.subscribe("recording", policy="block", size=1000),  # never read
            r.subscribe("display", policy="drop_oldest", size=1) as display,
            w.publisher("recording") as recording,
            w.publisher("display") as shown,
        ):
            await recording.wait_for_readers()
            await shown.wait_for_readers()
            with trio.move_on_after(1.0):  # until the recorder's writer is held back
                for _ in range(400):
                    await recording.send(bytes(64 * 1024))
            assert recording.sent < 400
            with trio.fail_after(5):
                for i in range(5):
                    await shown.send(bytes(100_000) + bytes([i]))
                    msg = await display.receive()
                    assert msg.data[-1] == i


@VIRTUAL_TIME
async def test_max_rate_on_a_full_block_buffer_holds_the_newest_until_there_is_room(
    url: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with writer_and_reader(url, policy="block", size=1, max_rate=10.0) as (_, pub, sub):
        for i in range(1, 201):  # 100 Hz for 2 s while the reader reads nothing
            await pub.send(i)
            await trio.sleep(0.01)
        await trio.sleep(1.0)
        with trio.fail_after(5):
            got = [await sub.receive() for _ in range(2)]
            await trio.sleep(1.0)
            got.append(await sub.receive())
    # The reader's window and buffer hold the first frames; after that the newest frame
    # waits for room and is delivered once there is some: never dropped silently.
    assert got[-1].data == 200
    assert [m.seq for m in got] == sorted(m.seq for m in got)
    assert all(m.lost == 0 for m in got)


async def test_history_is_replayed_to_late_subscribers(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c", history=3)
        # A reader, so that the writer's sends go out at all.
        async with r.subscribe("c", policy="unbounded"), w.publisher("c") as pub:
            await pub.wait_for_readers()
            for i in range(1, 6):
                await pub.send(i)
            await pub.wait_acknowledged()
        async with r.subscribe("c", policy="unbounded") as late:
            assert [m.data for m in await read_all(late, 3)] == [3, 4, 5]


async def test_quiet_channel_stays_fast_while_another_channel_is_flooded(url: str) -> None:
    async with (
        ts.open_client(url, name="flood") as flood_w,
        ts.open_client(url, name="quiet") as quiet_w,
        ts.open_client(url, name="r") as r,
    ):
        await flood_w.create_channel("flood")
        await quiet_w.create_channel("quiet")
        latencies: list[float] = []
        async with (
            r.subscribe("flood", policy="drop_oldest", size=1000) as flood,
            r.subscribe("quiet", policy="unbounded") as quiet,
            trio.open_nursery() as tasks,
        ):

            async def flood_writer() -> None:
                async with flood_w.publisher("flood") as pub:
                    await pub.wait_for_readers()
                    payload = np.zeros(16384)  # 128 KiB frames
                    while True:
                        await pub.send(payload)

            async def flood_reader() -> None:
                async for _ in flood:
                    pass

            tasks.start_soon(flood_writer)
            tasks.start_soon(flood_reader)
            async with quiet_w.publisher("quiet") as pub:
                await pub.wait_for_readers()
                await trio.sleep(0.2)  # let the flood get going
                for i in range(20):
                    await pub.send({"i": i})
                    with trio.fail_after(SETTLE_S):
                        msg = await quiet.receive()
                    latencies.append(trio.current_time() - _sent_at(msg))
                    assert msg.data == {"i": i} and msg.lost == 0
                    await trio.sleep(0.02)
            tasks.cancel_scope.cancel()
        assert max(latencies) < 0.5, latencies


def _sent_at(msg: ts.Message) -> float:
    # msg.time is the writer's wall clock; compare on the same clock.
    import time

    return trio.current_time() - (time.time() - msg.time)


async def test_unknown_channel_and_duplicate_channel_raise_clear_errors(url: str) -> None:
    async with ts.open_client(url, name="c") as client:
        with pytest.raises(ts.ChannelNotFound, match="create it with create_channel"):
            async with client.subscribe("nope"):
                pass
        with pytest.raises(ts.ChannelNotFound):
            await client.publish("nope", 1)
        await client.create_channel("x")
        with pytest.raises(ts.ChannelExists, match="exists already"):
            await client.create_channel("x")
        with pytest.raises(ts.InvalidArgument, match="use one of"):
            async with client.subscribe("x", policy="sometimes"):
                pass
        assert {c.name for c in await client.channels()} >= {"x", "$stats"}


async def test_oversize_value_is_refused_locally(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_frame_bytes=10_000)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as w, ts.open_client(server.tcp_url) as r:
        await w.create_channel("c")
        async with r.subscribe("c"), w.publisher("c") as pub:
            await pub.wait_for_readers()
            with pytest.raises(ts.FrameTooLarge, match="over the server's limit of 10000"):
                await pub.send(np.zeros(2000))
            assert await pub.send(np.zeros(100))  # the connection is fine


async def test_deleting_a_channel_ends_readers_cleanly_and_fails_writers(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c") as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            await pub.send(1)
            await w.delete_channel("c")
            got = []
            with trio.fail_after(SETTLE_S):
                async for msg in sub:  # ends by itself
                    got.append(msg.data)
            assert got == [1]
            with trio.fail_after(SETTLE_S):
                while True:
                    try:
                        await pub.send(2)
                    except ts.ChannelNotFound:
                        break
                    await trio.sleep(0.005)


async def test_owner_disconnect_ends_its_channels_unless_kept(url: str) -> None:
    async with ts.open_client(url, name="r") as r:
        async with ts.open_client(url, name="w") as w:
            await w.create_channel("temp")
            await w.create_channel("kept", keep=True)
        names = {c.name for c in await r.channels()}
        assert "kept" in names and "temp" not in names


# -- block and history against the connection's memory bound ---------------------------------
async def test_block_reader_over_the_memory_bound_slows_its_writer_and_loses_nothing(
    nursery: trio.Nursery,
) -> None:
    # size x frame = 100 x 16 KiB, far over the connection's 256 KiB: block must hold the
    # writer back at the byte bound, not end the reader with LimitExceeded.
    config = ts.ServerConfig(
        host="127.0.0.1",
        tcp_port=0,
        http_port=None,
        max_buffered_bytes=2**18,
        publish_window_frames=4,
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    url = server.tcp_url
    frames = 300  # of 16 KiB each
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        sent = 0

        async def writer() -> None:
            nonlocal sent
            async with w.publisher("c") as pub:
                await pub.wait_for_readers()
                for i in range(frames):
                    await pub.send(np.full(2048, i))
                    sent += 1

        async with (
            r.subscribe("c", policy="block", size=100, window=4) as sub,
            trio.open_nursery() as tasks,
        ):
            tasks.start_soon(writer)
            await trio.sleep(0.5)  # the reader reads nothing yet
            # Held back: 16 frames fit in 256 KiB, plus the reader's window and the writer's.
            assert 0 < sent < 40
            got = []
            with trio.fail_after(60):
                for _ in range(frames):
                    got.append(await sub.receive())
                    await trio.sleep(0.001)  # a slow reader
        assert [int(m.data[0]) for m in got] == list(range(frames))
        assert [m.seq for m in got] == list(range(1, frames + 1))
        assert sub.lost == 0


async def test_history_fills_a_late_block_reader_with_the_newest_frames(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c", history=50)
        async with r.subscribe("c", policy="unbounded"), w.publisher("c") as pub:
            await pub.wait_for_readers()
            for i in range(1, 51):
                await pub.send(i)
            await pub.wait_acknowledged()
        async with r.subscribe("c", policy="block", size=10) as late:
            got = await read_all(late, 10)
        # The newest ten, in order; the forty older ones that did not fit are counted lost.
        assert [m.data for m in got] == list(range(41, 51))
        assert [m.lost for m in got] == [40] + [0] * 9
        assert late.lost == 40


async def test_history_is_bounded_in_bytes_and_replays_the_newest(nursery: trio.Nursery) -> None:
    limit = 2**18  # history defaults to the connection bound: 16 frames of 16 KiB
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_buffered_bytes=limit)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    url = server.tcp_url
    async with ts.open_client(url, name="w") as w:
        await w.create_channel("c", history=100)
        async with (
            ts.open_client(url, name="r") as r,
            r.subscribe("c", policy="drop_oldest", size=1),
            w.publisher("c") as pub,
        ):
            await pub.wait_for_readers()
            for i in range(50):
                await pub.send(np.full(2048, i))
            await pub.wait_acknowledged()
        channel = server.state.broker.channels["c"]
        assert channel.recent_bytes == sum(f.nbytes for f in channel.recent) <= limit
        assert 10 <= len(channel.recent) < 16
        # An unbounded reader takes the whole history on a fresh connection, within bounds.
        async with (
            ts.open_client(url, name="late") as late,
            late.subscribe("c", policy="unbounded") as sub,
        ):
            got = await read_all(sub, len(channel.recent))
        assert [int(m.data[0]) for m in got] == list(range(50 - len(got), 50))
        assert got[0].lost == 0 and sub.lost == 0


async def test_undecodable_payloads_raise_for_the_reader_and_never_stall_its_window(
    url: str,
) -> None:
    async with writer_and_reader(url, policy="block", size=4) as (_, pub, sub):
        for _ in range(8):  # a CBOR head with reserved additional info: not a value
            await pub.send(EncodedPayload(b"\x1c"))
        for i in range(8):
            await pub.send(i)
        errors = 0
        values: list[int] = []
        with trio.fail_after(5):
            while len(values) < 8:
                try:
                    values.append((await sub.receive()).data)
                except ts.ProtocolError:
                    errors += 1
    assert (errors, values) == (8, list(range(8)))
