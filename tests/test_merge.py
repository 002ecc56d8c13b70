"""ts.merge over real subscriptions through a real server, and sub.statistics()."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from engine_marks import BOTH_ENGINES

import trio_stream as ts
from trio_stream._stats import RateMeter

pytestmark = BOTH_ENGINES


SETTLE_S = 10.0  # generous bound for things that take milliseconds on loopback


@asynccontextmanager
async def two_channels(
    url: str, **reader: Any
) -> AsyncIterator[tuple[ts.Client, ts.Publisher, ts.Publisher, ts.Subscription, ts.Subscription]]:
    """Writer "w" with publishers on "a" and "b"; reader "r" (``reader``: open_client
    options) subscribed to both."""
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r", **reader) as r:
        await w.create_channel("a")
        await w.create_channel("b")
        async with (
            r.subscribe("a") as sub_a,
            r.subscribe("b") as sub_b,
            w.publisher("a") as pub_a,
            w.publisher("b") as pub_b,
        ):
            await pub_a.wait_for_readers()
            await pub_b.wait_for_readers()
            yield w, pub_a, pub_b, sub_a, sub_b


async def arrived(sub: ts.Subscription, count: int) -> None:
    """Wait until ``count`` frames wait in the client for ``sub`` (none taken)."""
    with trio.fail_after(SETTLE_S):
        while sub.statistics().buffered < count:  # noqa: ASYNC110  (no event to wait on)
            await trio.sleep(0.005)


async def test_merge_takes_one_message_of_each_subscription_in_turn(url: str) -> None:
    async with two_channels(url) as (_, pub_a, pub_b, sub_a, sub_b):
        for i in range(4):
            await pub_a.send(i)
            await pub_b.send(10 + i)
        await arrived(sub_a, 4)
        await arrived(sub_b, 4)
        async with ts.merge(sub_a, sub_b) as merged:
            got = [(m.channel, m.data) for m in [await merged.receive() for _ in range(8)]]
        assert got == [(ch, i + (10 if ch == "b" else 0)) for i in range(4) for ch in "ab"]


async def test_merge_does_not_wait_on_an_idle_subscription_while_another_has_messages(
    url: str,
) -> None:
    async with two_channels(url) as (_, _pub_a, pub_b, sub_a, sub_b):
        for i in range(3):
            await pub_b.send(i)
        async with ts.merge(sub_a, sub_b) as merged:
            with trio.fail_after(SETTLE_S):
                assert [(await merged.receive()).data for _ in range(3)] == [0, 1, 2]


async def test_merge_takes_nothing_before_the_application_asks(url: str) -> None:
    async with two_channels(url) as (_, pub_a, pub_b, sub_a, sub_b):
        for i in range(3):
            await pub_a.send(i)
            await pub_b.send(i)
        await arrived(sub_a, 3)
        await arrived(sub_b, 3)
        merged = ts.merge(sub_a, sub_b)
        await merged.receive()
        await merged.receive()
        # one message each taken (and credited); the rest still waits in each subscription
        assert (sub_a.statistics().frames, sub_a.statistics().buffered) == (1, 2)
        assert (sub_b.statistics().frames, sub_b.statistics().buffered) == (1, 2)


async def test_merge_wakes_for_the_first_message_on_any_subscription(url: str) -> None:
    async with two_channels(url) as (_, pub_a, pub_b, sub_a, sub_b):
        merged = ts.merge(sub_a, sub_b)
        got: list[ts.Message] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                got.append(await merged.receive())

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                merged.receive_nowait()
            with trio.fail_after(SETTLE_S):
                await pub_b.send("late")
        assert [(m.channel, m.data) for m in got] == [("b", "late")]
        # the merge's wake-up hook is gone: a direct receive waits normally again
        await pub_a.send("direct")
        with trio.fail_after(SETTLE_S):
            assert (await sub_a.receive()).data == "direct"


async def test_merge_goes_on_after_one_subscription_ends_and_stops_after_all(url: str) -> None:
    async with two_channels(url) as (w, _pub_a, pub_b, sub_a, sub_b):
        await w.delete_channel("a")
        await pub_b.send("still here")
        got = []
        with trio.fail_after(SETTLE_S):
            async with ts.merge(sub_a, sub_b) as merged:
                got.append((await merged.receive()).data)
                assert [s.channel for s in merged.subscriptions] == ["b"]
                await w.delete_channel("b")
                got.extend([m.data async for m in merged])  # ends by itself
        assert got == ["still here"]


async def test_merge_raises_a_subscription_error(server: ts.Server) -> None:
    assert server.tcp_url is not None
    limits = ts.PayloadLimits(max_decompressed_bytes=1000)
    async with two_channels(server.tcp_url, payload_limits=limits) as (w, _, pub_b, sub_a, sub_b):
        await pub_b.send(b"\0" * 200_000)  # not compressed: fine
        # Two publishers of one channel: across Redis only each one's own order holds
        # (README, "Several nodes"), so each waits until its frame is in the channel.
        await pub_b.wait_acknowledged()
        async with w.publisher("b", compress="zlib") as zipped:
            await zipped.send(b"\0" * 200_000)  # beyond the reader's bound
            await zipped.wait_acknowledged()
        await pub_b.send("after")
        merged = ts.merge(sub_a, sub_b)
        with trio.fail_after(SETTLE_S):
            assert (await merged.receive()).data == b"\0" * 200_000
            with pytest.raises(ts.PayloadRefused, match=r"max_decompressed_bytes \(1000;"):
                await merged.receive()
            assert (await merged.receive()).data == "after"  # only that message is lost


async def test_merge_refuses_a_subscription_another_task_is_reading(url: str) -> None:
    async with (
        two_channels(url) as (_, _pub_a, _pub_b, sub_a, sub_b),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(sub_a.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError, match="only through its merge"):
            await ts.merge(sub_a, sub_b).receive()
        nursery.cancel_scope.cancel()


async def test_several_tasks_read_one_merge_and_share_its_messages(url: str) -> None:
    # As several tasks may read one subscription: each message to one of them, none twice,
    # a cancelled reader leaving the others waiting (it was refused: "read a merged
    # subscription only through its merge", which they did).
    async with two_channels(url) as (_, pub_a, pub_b, sub_a, sub_b):
        merged = ts.merge(sub_a, sub_b)
        got: list[list[tuple[str, int]]] = [[], [], []]

        async def read(into: list[tuple[str, int]]) -> None:
            async for msg in merged:
                into.append((msg.channel, msg.data))

        with trio.fail_after(SETTLE_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, got[0])
                nursery.start_soon(read, got[1])
                cancelled = trio.CancelScope()

                async def read_then_leave() -> None:
                    with cancelled:
                        await read(got[2])

                nursery.start_soon(read_then_leave)
                await trio.testing.wait_all_tasks_blocked()
                cancelled.cancel()  # one reader leaves: the two others still wake
                for i in range(50):
                    await pub_a.send(i)
                    await pub_b.send(100 + i)
                    if i % 10 == 0:
                        await trio.sleep(0.01)
                while len(got[0]) + len(got[1]) < 100:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                merged.close_nowait()
        both = sorted(got[0] + got[1])
        assert both == sorted([("a", i) for i in range(50)] + [("b", 100 + i) for i in range(50)])
        assert got[2] == []


async def test_merge_refuses_bad_arguments(url: str) -> None:
    async with two_channels(url) as (_, _pub_a, _pub_b, sub_a, _sub_b):
        with pytest.raises(ts.InvalidArgument, match="at least one"):
            ts.merge()
        with pytest.raises(ts.InvalidArgument, match="twice"):
            ts.merge(sub_a, sub_a)
        merged = ts.merge(sub_a)
        await merged.aclose()
        # Ends as a closed subscription does (it raised trio.ClosedResourceError, and a
        # SyncMerge's get() after its close() an AttributeError).
        with pytest.raises(trio.EndOfChannel, match="this merge was closed"):
            await merged.receive()
        assert [msg async for msg in merged] == []
        assert merged.end_reason == "this merge was closed"
        assert not sub_a._ended  # leaving the merge leaves the subscription open


async def test_closing_a_merge_ends_a_receive_waiting_on_it(url: str) -> None:
    # close_nowait only set a flag: a task waiting in receive() went on waiting for a frame
    # (for ever on quiet channels), where a closed subscription ends its reader at once.
    async with two_channels(url) as (_, _pub_a, _pub_b, sub_a, sub_b):
        merged = ts.merge(sub_a, sub_b)
        ended: list[str] = []

        async def wait() -> None:
            with pytest.raises(trio.EndOfChannel, match="this merge was closed"):
                await merged.receive()
            ended.append("yes")

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                await trio.sleep(0.2)
                merged.close_nowait()
        assert ended == ["yes"]


async def test_sync_merge_iterates_and_times_out(url: str) -> None:
    with trio.fail_after(60):
        await trio.to_thread.run_sync(sync_merge_scenario, url, abandon_on_cancel=True)


def sync_merge_scenario(url: str) -> None:
    with ts.SyncClient(url, name="s") as c:
        c.create_channel("a")
        c.create_channel("b")
        with c.subscribe("a") as sub_a, c.subscribe("b") as sub_b, ts.merge(sub_a, sub_b) as m:
            assert isinstance(m, ts.SyncMerge)
            with pytest.raises(TimeoutError):
                m.get(timeout=0.05)
            for i in range(3):
                c.publish("a", i)
                c.publish("b", 10 + i)
            c.flush()
            got = sorted((msg.channel, msg.data) for msg in [m.get(timeout=5) for _ in range(6)])
            assert got == sorted([("a", i) for i in range(3)] + [("b", 10 + i) for i in range(3)])
            c.publish("a", 99)
            c.flush()
            m.close()
            with pytest.raises(trio.EndOfChannel, match="this merge was closed"):
                m.get(timeout=0)
            assert list(m) == []
            m = ts.merge(sub_a, sub_b)
            assert m.get(timeout=5).data == 99  # left for the next merge by the closed one
            c.delete_channel("a")
            c.delete_channel("b")
            assert list(m) == []  # both ended: the iteration stops
            assert m.lost == 0
            stats = sub_a.statistics()
            assert (stats.frames, stats.lost) == (4, 0)


async def test_sync_merge_needs_one_sync_client(server: ts.Server) -> None:
    def scenario(url: str | None) -> None:
        assert url is not None
        with ts.SyncClient(url) as c1, ts.SyncClient(url) as c2:
            c1.create_channel("a")
            with (
                c1.subscribe("a") as s1,
                c2.subscribe("a") as s2,
                pytest.raises(ts.InvalidArgument, match="one SyncClient"),
            ):
                ts.merge(s1, s2)

    with trio.fail_after(60):
        await trio.to_thread.run_sync(scenario, server.tcp_url, abandon_on_cancel=True)


# -- statistics ---------------------------------------------------------------------------------


async def test_statistics_count_frames_bytes_and_rates_over_a_real_connection(url: str) -> None:
    async with two_channels(url) as (_, pub_a, _pub_b, sub_a, _sub_b):
        assert sub_a.statistics().frames == 0
        for i in range(50):
            await pub_a.send(i)
        with trio.fail_after(SETTLE_S):
            values = [(await sub_a.receive()).data for _ in range(50)]
        assert values == list(range(50))
        stats = sub_a.statistics()
        assert isinstance(stats, ts.SubscriptionStatistics)
        assert (stats.frames, stats.lost, stats.buffered) == (50, 0, 0)
        assert stats.bytes > 50 * 10  # DATA headers and payloads: tens of bytes each
        assert stats.rate_fps > 0 and stats.rate_bps > 0
        assert stats.mean_rate_fps == pytest.approx(50 / stats.age_s)
        assert stats.mean_rate_bps == pytest.approx(stats.bytes / stats.age_s)
        with pytest.raises(AttributeError):
            stats.frames = 0  # type: ignore[misc]  # frozen


async def test_rate_meter_rates_cover_the_last_second(mock_clock: trio.testing.MockClock) -> None:
    meter = RateMeter()
    mock_clock.jump(0.5)
    meter.add(100, 10_000)
    mock_clock.jump(1.0)  # t = 1.5
    meter.add(100, 10_000)
    mock_clock.jump(0.5)  # t = 2.0: the base is the mark at 0.5 (the last one >= 1 s old)
    stats = meter.statistics(pending_frames=50, pending_bytes=5_000, lost=3, buffered=7)
    assert (stats.frames, stats.bytes, stats.lost, stats.buffered) == (250, 25_000, 3, 7)
    assert stats.rate_fps == pytest.approx(150 / 1.5)
    assert stats.rate_bps == pytest.approx(15_000 / 1.5)
    assert stats.mean_rate_fps == pytest.approx(250 / 2.0)
    mock_clock.jump(10.0)  # silence: the recent rate falls to nothing
    stats = meter.statistics(pending_frames=50, pending_bytes=5_000, lost=3, buffered=0)
    assert stats.rate_fps == 0.0
    assert stats.mean_rate_fps == pytest.approx(250 / 12.0)


async def test_rate_meter_keeps_a_bounded_number_of_marks(
    mock_clock: trio.testing.MockClock,
) -> None:
    meter = RateMeter()
    for _ in range(10_000):
        mock_clock.jump(0.001)
        meter.add(1, 100)
    assert len(meter._marks) <= 20
    assert meter.statistics(0, 0, 0, 0).rate_fps == pytest.approx(1000, rel=0.1)
