"""A plain subscription rides through a reset of its channel in the cluster's Redis.

When the Redis the nodes share restarts empty, the node that keeps a channel registers it again
under a new epoch, and every node ends its readers of the old epoch with a ``sub_end`` marked
``again`` (docs/protocol.md section 8, "Reset ends"): the channel lives on. A client's
subscription then does not end: it subscribes again since its position, as after a
reconnect, and its first message of the new life carries a ``reset`` gap. A channel that is
deleted still ends its readers at once (no mark); one that never comes back ends them after
RESET_BACK_S, with the server's reason.

Real Redis servers (killed with SIGKILL and started again empty), real nodes, loopback only;
every wait bounded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
import trio
from redis_server import RedisServer
from test_cluster import WAIT_S, node_config
from test_protocol_contract import RawClient

import trio_stream as ts
from trio_stream import _subscription as subscription_module
from trio_stream._engine import redis_engine as redis_engine_module

BEFORE = 10  # frames read before the restart
AFTER = 20  # frames sent (and read) after it


async def send_until_read(pub: ts.Publisher, sub: ts.Subscription) -> ts.Message:
    """Send "after" until ``sub`` reads a message (the channel comes back, then the reader
    rides through to it): that first message. Bounded by the caller."""
    while True:
        with contextlib.suppress(ts.ChannelNotFound, ts.ClusterUnavailable):
            await pub.send("after")
        with trio.move_on_after(0.1):
            return await sub.receive()


async def ride_through(redis: RedisServer, pub: ts.Publisher, sub: ts.Subscription) -> None:
    """BEFORE frames read, Redis killed and started empty, and ``sub`` reads on: a reset gap
    on its first message of the new life, then AFTER more in order, and no end."""
    with trio.fail_after(WAIT_S):
        await pub.wait_for_readers()
        for i in range(BEFORE):
            await pub.send(i)
        assert [(await sub.receive()).data for _ in range(BEFORE)] == list(range(BEFORE))
    old = sub.position
    await trio.to_thread.run_sync(redis.restart)  # SIGKILL, then empty on the same port
    with trio.fail_after(WAIT_S):
        first = await send_until_read(pub, sub)
    assert first.gap is not None and first.gap.kind == "reset" and first.gap.lost is None, first
    assert first.data == "after" and first.seq >= 1
    assert sub.position.epoch != old.epoch and sub.end_reason is None
    with trio.fail_after(WAIT_S):
        for i in range(AFTER):
            # (False: nothing sent, as the writer's node counted no reader a moment: its
            # count of the readers on the other node follows their resubscription.)
            while not await pub.send(i):  # noqa: ASYNC110
                await trio.sleep(0.01)
        got = [await sub.receive() for _ in range(AFTER)]
    # (The channel's seq goes on from the first frame read of its new life: "after"s sent
    # before the reader was back may come first: its new life's history.)
    while got and got[0].data == "after":
        got = [*got[1:], await sub.receive()]
    assert [m.data for m in got] == list(range(AFTER))
    assert [m.seq for m in got] == list(range(got[0].seq, got[0].seq + AFTER))
    assert all(m.gap is None and m.lost == 0 for m in got)
    assert sub.lost == 0 and sub.end_reason is None


async def test_a_reader_on_another_node_rides_through_a_redis_restart(
    redis_server: RedisServer,
) -> None:
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")  # kept on node a, where its writer is
        async with daq.publisher("c") as pub, rec.subscribe("c", policy="unbounded") as sub:
            await ride_through(redis_server, pub, sub)


async def test_a_reader_on_the_node_that_registers_the_channel_again_rides_through(
    redis_server: RedisServer,
) -> None:
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(a.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        async with daq.publisher("c") as pub, rec.subscribe("c", policy="block", size=50) as sub:
            await ride_through(redis_server, pub, sub)


async def test_a_sync_reader_rides_through_a_redis_restart(redis_server: RedisServer) -> None:
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
    ):
        await daq.create_channel("c")
        subscribed, restarted, stop = threading.Event(), threading.Event(), threading.Event()
        got: list[ts.Message] = []
        ended: list[str | None] = []

        def read() -> None:
            with (
                ts.SyncClient(str(b.tcp_url), name="rec") as client,
                client.subscribe("c", policy="unbounded") as sub,
            ):
                subscribed.set()
                deadline = time.monotonic() + 3 * WAIT_S
                while time.monotonic() < deadline and not stop.is_set():
                    try:
                        message = sub.get(timeout=0.1)
                    except TimeoutError:
                        continue
                    except trio.EndOfChannel:
                        break
                    got.append(message)
                    if message.gap is not None:
                        break
                ended.append(sub.end_reason)

        async with daq.publisher("c") as pub, trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, read)
            with trio.fail_after(WAIT_S):
                while not subscribed.is_set():  # noqa: ASYNC110 - a thread's event
                    await trio.sleep(0.01)
                await pub.wait_for_readers()
                await pub.send("before")
                while not got:  # noqa: ASYNC110 - read by the thread
                    await trio.sleep(0.01)
            await trio.to_thread.run_sync(redis_server.restart)
            restarted.set()
            with trio.fail_after(WAIT_S):
                while not ended:
                    with contextlib.suppress(ts.ChannelNotFound, ts.ClusterUnavailable):
                        await pub.send("after")
                    await trio.sleep(0.1)
            stop.set()
        assert ended == [None], ended  # no end: it read on
        assert got[0].data == "before" and got[-1].data == "after"
        gap = got[-1].gap
        assert gap is not None and gap.kind == "reset", got[-1]


async def test_the_reset_end_is_marked_again_on_the_wire_and_a_delete_is_not(
    redis_server: RedisServer,
) -> None:
    # An older client sees the end as before (the reason: "... subscribe again"); the mark
    # is an extra key that it ignores.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
    ):
        await daq.create_channel("c")
        raw = await RawClient.connect(b)
        sub = (await raw.request("subscribe", channel="c"))["result"]["sub"]
        await trio.to_thread.run_sync(redis_server.restart)
        with trio.fail_after(WAIT_S):
            end = await raw.control()
        assert end["op"] == "sub_end" and end["sub"] == sub, end
        assert end.get("again") is True and "error" not in end, end
        assert end["reason"].endswith("subscribe again"), end
        with trio.fail_after(WAIT_S):
            while True:  # the writer's node registers it again
                answer = await raw.request("subscribe", channel="c")
                if "result" in answer:
                    break
                assert answer["type"] == "ChannelNotFound", answer
                await trio.sleep(0.05)
        again = answer["result"]["sub"]
        await daq.delete_channel("c")
        with trio.fail_after(WAIT_S):
            end = await raw.control()
        assert end == {"op": "sub_end", "sub": again, "reason": "channel 'c' was deleted"}


async def test_a_deleted_channel_still_ends_its_readers_at_once_after_a_ride(
    redis_server: RedisServer,
) -> None:
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        async with rec.subscribe("c", policy="unbounded") as sub:
            async with daq.publisher("c") as pub:
                await ride_through(redis_server, pub, sub)
            await daq.delete_channel("c")
            started = trio.current_time()
            with trio.fail_after(WAIT_S):
                async for _ in sub:
                    pass
        # At once (not after RESET_BACK_S of waiting for it), and said as ever.
        assert trio.current_time() - started < subscription_module.RESET_BACK_S / 3
        assert sub.end_reason == "channel 'c' was deleted"


async def test_a_channel_that_never_comes_back_ends_its_reader_after_the_bound(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound_s = 1.5
    monkeypatch.setattr(subscription_module, "RESET_BACK_S", bound_s)
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        engine_a: Any = a.state.engine

        async def not_again(name: str) -> None:
            pass  # node a never registers it again (as if it had died with Redis)

        monkeypatch.setattr(engine_a, "_reregister", not_again)
        await daq.create_channel("c")
        async with rec.subscribe("c", policy="unbounded") as sub:
            async with daq.publisher("c") as pub:
                with trio.fail_after(WAIT_S):
                    await pub.wait_for_readers()
                    for i in range(5):
                        await pub.send(i)
                    await pub.wait_acknowledged()
                    while sub.statistics().buffered < 5:  # noqa: ASYNC110 - here, unread
                        await trio.sleep(0.01)
            await trio.to_thread.run_sync(redis_server.restart)
            with trio.fail_after(WAIT_S):
                while sub._reset_end is None:  # noqa: ASYNC110 - the marked end came
                    await trio.sleep(0.01)
            # From the deadline the client set when the end came (not when this loop saw it).
            reset_at = sub._reset_end[1] - bound_s
            with trio.fail_after(WAIT_S):
                got = [m.data async for m in sub]  # what was here, then the end
        waited = trio.current_time() - reset_at
        assert got == list(range(5))  # read after the end's wait: kept for the reader
        assert bound_s - 0.1 <= waited < bound_s + 3.0, waited
        assert sub.end_reason == (
            "channel 'c' is gone from Redis (deleted, created anew, or lost in a Redis "
            "restart): subscribe again"
        )
        assert "c" not in [c.name for c in await rec.channels()]


async def test_a_pattern_member_whose_channel_is_subscribed_anew_does_not_ride_into_it(
    redis_server: RedisServer,
) -> None:
    # The channel's new life is subscribed by the pattern (as its `created` announcement
    # does) while the old member is still live, or riding its reset end through: the old
    # member ends (after what it has), and only one member reads on, nothing twice.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        engine_a: Any = a.state.engine
        await daq.create_channel("s.a")
        async with (
            rec.subscribe_matching("s.*", policy="unbounded") as matching,
            daq.publisher("s.a") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                await pub.send("before")
                assert (await matching.receive()).data == "before"
            (old,) = list(matching._subs)
            await trio.to_thread.run_sync(redis_server.restart)
            with trio.fail_after(WAIT_S):
                while (await engine_a.io.registry.get("s.a")) is None:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # registered again by node a
                await matching._ensure("s.a", announced=True)  # as its `created` would
            with trio.fail_after(WAIT_S):
                while len(matching._subs) != 1 or not next(iter(matching._subs))._live:
                    with trio.move_on_after(0.05):  # (the old one's end, read out)
                        await matching.receive()
                for i in range(AFTER):
                    while not await pub.send(i):  # noqa: ASYNC110 - (as in ride_through)
                        await trio.sleep(0.01)
                got = [await matching.receive() for _ in range(AFTER)]
            with trio.move_on_after(0.5):
                got.append(await matching.receive())  # nothing twice
            assert [m.data for m in got] == list(range(AFTER)), [m.data for m in got]
            assert len(matching._subs) == 1 and matching.channels == ["s.a"]
            (member,) = list(matching._subs)
            assert member.position.epoch != old.position.epoch or member is old


# -- a delete whose news a node missed: never ``again`` --------------------------------------
# Node b misses the DELETED news of channel c (its pub/sub was reconnecting, say: simulated by
# dropping it). Its epoch's deletion mark in Redis says it was deleted, not lost: its readers
# on b end as the news would have ended them, with the delete's reason and no ``again``, even
# when a new, unrelated channel of that name exists by then (an epoch changes after a delete
# as after a loss by Redis: only the mark tells them apart).


def lose_deleted_news(monkeypatch: pytest.MonkeyPatch, engine: Any) -> None:
    monkeypatch.setattr(engine, "_channel_deleted", lambda *args, **kwargs: None)


def miss_resets(monkeypatch: pytest.MonkeyPatch, engine: Any) -> None:
    """``engine``'s stream reader's resets go unnoticed (not read yet): a request there (or a
    writer's append) meets the new epoch first."""
    monkeypatch.setattr(engine, "_on_reset", lambda event: None)


def reset_ends(monkeypatch: pytest.MonkeyPatch, sub: ts.Subscription) -> list[str]:
    """The reasons of the ``again`` ends that ``sub`` gets from now on (recorded as they come,
    before it rides through them)."""
    got: list[str] = []
    reset_by_server = sub._reset_by_server

    def recorded(reason: str) -> bool:
        got.append(reason)
        return reset_by_server(reason)

    monkeypatch.setattr(sub, "_reset_by_server", recorded)
    return got


async def read_one_of(daq: ts.Client, sub: ts.Subscription, name: str = "c") -> None:
    """Frames into ``name`` (from node a) until ``sub`` ends, bounded: it must read none."""
    async with daq.publisher(name) as pub:
        with trio.fail_after(WAIT_S):
            while True:
                with trio.move_on_after(0.1):
                    try:
                        message = await sub.receive()
                    except ts.SubscriptionEnded:
                        return
                    raise AssertionError(f"rode into the new channel: {message}")
                with contextlib.suppress(ts.ChannelNotFound):
                    await pub.send("new")


async def read_before(daq: ts.Client, sub: ts.Subscription) -> None:
    async with daq.publisher("c") as pub:
        with trio.fail_after(WAIT_S):
            await pub.wait_for_readers()
            await pub.send("old")
            assert (await sub.receive()).data == "old"


async def test_a_delete_whose_news_was_lost_ends_its_readers_with_its_reason(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        async with rec.subscribe("c", policy="unbounded") as sub:
            await read_before(daq, sub)
            resets = reset_ends(monkeypatch, sub)
            lose_deleted_news(monkeypatch, b.state.engine)
            await daq.delete_channel("c")
            started = trio.current_time()
            with trio.fail_after(WAIT_S):
                async for message in sub:
                    raise AssertionError(f"read after the delete: {message}")
        # The delete's own reason (its mark's), at once: not the reset's, nor after a ride.
        assert sub.end_reason == "channel 'c' was deleted", sub.end_reason
        assert resets == []  # not marked
        assert trio.current_time() - started < subscription_module.RESET_BACK_S / 3


async def test_a_delete_whose_news_was_lost_then_a_new_channel_is_not_ridden_into(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader's node sees the epoch change (its stream reader's reset, a new epoch).
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        async with rec.subscribe("c", policy="unbounded") as sub:
            await read_before(daq, sub)
            resets = reset_ends(monkeypatch, sub)
            lose_deleted_news(monkeypatch, b.state.engine)
            await daq.delete_channel("c")
            await daq.create_channel("c")  # a new, unrelated channel of that name
            await read_one_of(daq, sub)
        assert sub.end_reason == "channel 'c' was deleted", sub.end_reason
        assert resets == []  # not marked


async def test_a_stale_channel_met_by_a_subscribe_after_a_lost_delete_is_not_ridden_into(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A subscribe on the reader's node meets the new epoch before its stream reader's reset
    # (_mirror's stale channel): the old one ends as deleted.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
        ts.open_client(str(b.tcp_url), name="rec2") as rec2,
    ):
        await daq.create_channel("c")
        async with rec.subscribe("c", policy="unbounded") as sub:
            await read_before(daq, sub)
            resets = reset_ends(monkeypatch, sub)
            lose_deleted_news(monkeypatch, b.state.engine)
            miss_resets(monkeypatch, b.state.engine)
            await daq.delete_channel("c")
            await daq.create_channel("c")
            async with rec2.subscribe("c", policy="unbounded"):
                await read_one_of(daq, sub)
        assert sub.end_reason == "channel 'c' was deleted", sub.end_reason
        assert resets == []  # not marked


async def test_a_stale_channel_met_by_a_writer_after_a_lost_delete_is_not_ridden_into(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer on the reader's node finds a new epoch in Redis (its append refused,
    # _gone_reason): the old channel ends as deleted, with the delete's reason.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        async with (
            rec.subscribe("c", policy="unbounded") as sub,
            rec.publisher("c") as pub_b,
        ):
            await read_before(daq, sub)
            resets = reset_ends(monkeypatch, sub)
            lose_deleted_news(monkeypatch, b.state.engine)
            miss_resets(monkeypatch, b.state.engine)
            await daq.delete_channel("c")
            await daq.create_channel("c")
            with trio.fail_after(WAIT_S), contextlib.suppress(ts.ChannelNotFound):
                while True:  # into the old epoch: refused, and the channel ends on b
                    await pub_b.send("from b")
                    await trio.sleep(0.05)
            await read_one_of(daq, sub)  # its end (nothing of the new channel)
        assert sub.end_reason == "channel 'c' was deleted", sub.end_reason
        assert resets == []  # not marked


async def test_a_reset_end_is_not_marked_again_when_redis_does_not_say_why(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis restarted empty, but the reader's node gets no answer about the old epoch's
    # deletion mark: it cannot tell a loss from a delete, and does not promise the channel
    # lives on (as _gone_reason does): the reader ends, unmarked, with the reset's reason.
    monkeypatch.setattr(redis_engine_module, "GONE_REASON_TIMEOUT_S", 0.3)
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        async with rec.subscribe("c", policy="unbounded") as sub:
            await read_before(daq, sub)

            async def no_answer(name: str, epoch: str) -> bool:
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            engine_b: Any = b.state.engine
            monkeypatch.setattr(engine_b.io.registry, "was_deleted", no_answer)
            resets = reset_ends(monkeypatch, sub)
            await trio.to_thread.run_sync(redis_server.restart)
            with trio.fail_after(WAIT_S):
                while sub.end_reason is None and not resets:  # noqa: ASYNC110 - its end
                    await trio.sleep(0.01)
        assert resets == []  # not marked
        assert sub.end_reason == (
            "channel 'c' is gone from Redis (deleted, created anew, or lost in a Redis "
            "restart): subscribe again"
        ), sub.end_reason
