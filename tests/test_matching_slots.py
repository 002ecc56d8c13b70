"""A channel skipped for ``max_channels`` takes the slot a member frees, at once.

It waited for the next listing (after a reconnect or a gap of ``$channels``: rare), however
long the slot stood free. Through a real server (both engines); no reconnect, no listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from engine_marks import BOTH_ENGINES, memory_only
from proxy import open_proxy
from test_matching import (
    FAST,
    WAIT_S,
    publish,
    restarted_while_leaving,
    take,
    until,
    until_data,
    writer_and_reader,
)

import trio_stream as ts
import trio_stream._matching as matching_module
from trio_stream._matching import PatternSubscription

pytestmark = BOTH_ENGINES


def record_calls(
    monkeypatch: pytest.MonkeyPatch, matching: PatternSubscription, method: str
) -> list[Any]:
    """The first argument of each call of ``matching``'s ``method`` from now on (``()`` for
    none), in order."""
    calls: list[Any] = []
    original: Callable[..., Awaitable[Any]] = getattr(matching, method)

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else ())
        return await original(*args, **kwargs)

    monkeypatch.setattr(matching, method, recorded)
    return calls


async def read_once_it_has_a_reader(
    w: ts.Client, matching: PatternSubscription, channel: str
) -> None:
    """Publish to ``channel`` once it has a reader, reading ``matching`` meanwhile (a member's
    end is taken by a receive) until that value comes."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish, w, channel, [f"to {channel}"])
        await until_data(matching, lambda m: (m.channel, m.data) == (channel, f"to {channel}"))


async def test_a_skipped_channel_is_read_once_a_member_s_channel_is_deleted(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with writer_and_reader(server) as (w, r):
        for name in ("s.a", "s.b"):
            await w.create_channel(name)
        async with r.subscribe_matching("s.*", max_channels=2, policy="unbounded") as matching:
            listings = record_calls(monkeypatch, matching, "_list")
            await w.create_channel("s.c")
            await until(lambda: "s.c" in matching._refused)  # skipped: two are read
            reconnects = r.reconnects
            await w.delete_channel("s.a")
            with trio.fail_after(WAIT_S):
                await read_once_it_has_a_reader(w, matching, "s.c")
            assert matching.channels == ["s.b", "s.c"]
            await read_once_it_has_a_reader(w, matching, "s.b")  # the other is still read
            assert listings == [] and r.reconnects == reconnects  # neither was needed


async def test_skipped_channels_take_free_slots_in_name_order_and_a_deleted_one_none(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*", max_channels=1, policy="unbounded") as matching:
            for name in ("s.e", "s.b", "s.c", "s.d"):  # skipped in this order
                await w.create_channel(name)
            await until(lambda: len(matching._refused) == 4)
            await w.delete_channel("s.b")  # skipped, then deleted: forgotten
            await until(lambda: "s.b" not in matching._refused)
            subscribed = record_calls(monkeypatch, matching, "_subscribe")
            await w.delete_channel("s.a")
            await read_once_it_has_a_reader(w, matching, "s.c")  # the first by name
            assert matching.channels == ["s.c"]
            await w.delete_channel("s.c")
            await read_once_it_has_a_reader(w, matching, "s.d")
            assert matching.channels == ["s.d"]
            # The deleted one was not asked for (its subscribe would only find it gone), nor
            # the last by name, still waiting. (An ended member first asks for its own
            # channel again: s.a, s.c, which are gone.)
            assert "s.b" not in subscribed and "s.e" not in subscribed, subscribed
            assert subscribed.index("s.c") < subscribed.index("s.d"), subscribed
            assert set(matching._skipped) == {"s.e"}


async def test_past_the_names_kept_a_listing_finds_the_channels_not_remembered(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bounded memory: past SKIPPED_NAMES_KEPT a skipped name is not remembered; once the
    # remembered ones are used up, a free slot asks for a listing, which finds the rest.
    monkeypatch.setattr(matching_module, "SKIPPED_NAMES_KEPT", 1)
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*", max_channels=1, policy="unbounded") as matching:
            for name in ("s.b", "s.c"):
                await w.create_channel(name)
            await until(lambda: matching._skipped_forgotten)
            assert set(matching._skipped) == {"s.b"}  # s.c: not remembered
            assert set(matching._refused) == {"s.b"}  # (nor as said: the same bound)
            listings = record_calls(monkeypatch, matching, "_list")
            await w.delete_channel("s.a")
            await read_once_it_has_a_reader(w, matching, "s.b")  # remembered: no listing
            assert listings == []
            await w.delete_channel("s.b")
            await read_once_it_has_a_reader(w, matching, "s.c")  # found by a listing
            assert len(listings) == 1 and matching.channels == ["s.c"]


async def read_all(matching: PatternSubscription) -> None:
    """Read (and drop) everything: a member's end is taken by a receive."""
    async for _ in matching:
        pass


async def test_a_channel_skipped_while_a_listing_is_on_its_way_is_not_forgotten_by_it(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The listing's answer predates a channel created, announced and skipped (one channel
    # is read) while that answer was on its way: the listing forgot the name (it kept the
    # skipped names it listed), and once the member left, that channel was not read until
    # some later listing (a review).
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*", max_channels=1, policy="unbounded") as matching:
            listing: Callable[[], Awaitable[list[str]]] = matching._list
            resync: Callable[[], Awaitable[None]] = matching._resync
            listed = trio.Event()

            async def answered_before_the_channel_was_created() -> list[str]:
                names = await listing()  # s.a only
                await w.create_channel("s.z")
                await until(lambda: "s.z" in matching._skipped)  # announced, skipped
                return names

            async def resync_once() -> None:
                await resync()
                listed.set()

            monkeypatch.setattr(matching, "_list", answered_before_the_channel_was_created)
            monkeypatch.setattr(matching, "_resync", resync_once)
            matching._request_listing(force=True)  # (as a gap, a lost count, a reconnect ask)
            with trio.fail_after(WAIT_S):
                await listed.wait()
            assert "s.z" in matching._skipped and "s.z" in matching._refused
            monkeypatch.setattr(matching, "_list", listing)
            listings = record_calls(monkeypatch, matching, "_list")
            await w.delete_channel("s.a")  # its slot frees
            with trio.fail_after(WAIT_S):
                await read_once_it_has_a_reader(w, matching, "s.z")
            assert matching.channels == ["s.z"] and listings == []


async def test_a_channel_announced_while_a_free_slot_is_being_taken_waits_for_a_slot(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The subscribe that takes a free slot was not counted while on its way: a channel
    # announced meanwhile took the same slot, two members with max_channels=1 (a review).
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*", max_channels=1, policy="unbounded") as matching:
            await w.create_channel("s.b")
            await until(lambda: "s.b" in matching._skipped)
            on_its_way, go_on = trio.Event(), trio.Event()
            subscribe: Callable[..., Awaitable[ts.Subscription]] = r._open_subscription

            async def held_for_b(name: str, **options: Any) -> ts.Subscription:
                if name == "s.b":
                    on_its_way.set()
                    await go_on.wait()  # a slow round trip (a busy server, a cluster node)
                return await subscribe(name, **options)

            monkeypatch.setattr(r, "_open_subscription", held_for_b)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all, matching)
                await w.delete_channel("s.a")
                with trio.fail_after(WAIT_S):
                    await on_its_way.wait()  # s.a's slot is being taken by s.b
                await w.create_channel("s.c")  # announced meanwhile
                await until(lambda: "s.c" in matching._refused or "s.c" in matching.channels)
                go_on.set()
                await until(lambda: "s.b" in matching.channels)
                assert matching.channels == ["s.b"]
                assert set(matching._skipped) == {"s.c"} and matching._subscribing == 0
                nursery.cancel_scope.cancel()


async def test_names_not_read_are_said_once_and_remembered_within_the_bound(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # They only serve to say each name once: without a bound, every name ever skipped
    # stayed (a review). Past it, one line says the rest are not said one by one.
    monkeypatch.setattr(matching_module, "SKIPPED_NAMES_KEPT", 2)
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*", max_channels=1, policy="unbounded") as matching:
            handled = record_calls(monkeypatch, matching, "_ensure")
            for name in ("s.b", "s.c", "s.d", "s.e"):
                await w.create_channel(name)
            await until(lambda: len(handled) == 4 and not matching._locks)
            assert set(matching._refused) == set(matching._skipped) == {"s.b", "s.c"}
            said = [
                record.getMessage()
                for record in caplog.records
                if "is not read" in record.getMessage()
            ]
            assert [line.split("'")[3] for line in said] == ["s.b", "s.c", "s.d"], said
            assert "is not read: 1 channel is subscribed (max_channels)" in said[0], said
            assert "not said one by one" in said[-1], said
            await w.delete_channel("s.b")  # a name forgotten frees its place
            await until(lambda: set(matching._refused) == {"s.c"})


async def test_a_slot_a_failed_subscribe_gives_back_goes_to_a_channel_skipped_meanwhile(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A listing's subscribe held the only slot; a channel announced meanwhile was skipped for
    # it; then the listed channel was deleted before its subscribe landed (a short-lived
    # channel), and the slot came back with nothing to give it to the skipped channel: no
    # reader until some later listing or member's end, perhaps never (a review).
    async with (
        writer_and_reader(server) as (w, r),
        r.subscribe_matching("s.*", max_channels=1, policy="unbounded") as matching,
    ):
        on_event: Callable[[ts.Message], Awaitable[None]] = matching._on_event

        async def s_x_created_lost(event: ts.Message) -> None:
            data = event.data
            of_x = isinstance(data, dict) and data.get("channel") == "s.x"
            if of_x and data.get("event") == "created":
                return  # (as in a burst whose announcements were lost: a listing finds it)
            await on_event(event)

        monkeypatch.setattr(matching, "_on_event", s_x_created_lost)
        on_its_way, go_on = trio.Event(), trio.Event()
        subscribe: Callable[..., Awaitable[ts.Subscription]] = r._open_subscription

        async def held_for_x(name: str, **options: Any) -> ts.Subscription:
            if name == "s.x":
                on_its_way.set()
                await go_on.wait()  # a slow round trip
            return await subscribe(name, **options)

        monkeypatch.setattr(r, "_open_subscription", held_for_x)
        await w.create_channel("s.x")
        matching._request_listing(force=True)  # (as a `lost` count asks)
        with trio.fail_after(WAIT_S):
            await on_its_way.wait()  # the listing's subscribe of s.x holds the slot
        await w.create_channel("s.y")
        await until(lambda: "s.y" in matching._skipped)  # announced: no slot free
        await w.delete_channel("s.x")
        listings = record_calls(monkeypatch, matching, "_list")
        go_on.set()  # s.x's subscribe finds it gone: its slot comes back
        with trio.fail_after(WAIT_S):
            await read_once_it_has_a_reader(w, matching, "s.y")
        assert matching.channels == ["s.y"] and listings == []
        assert matching._subscribing == 0 and not matching._skipped


@memory_only("the restart is a new memory server behind the proxy")
async def test_a_member_replaced_by_a_new_life_of_its_channel_leaves_no_backoff(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A member waiting to resume after a server restart, unlisted, leaves; its channel is
    # created again meanwhile: it is ended (_end_leaving) and a new member reads the new
    # life. Read out, the old one was looked for again as a member the server ended, which
    # kept a backoff (_again) for the new member: its first end would have waited for it.
    monkeypatch.setattr(matching_module, "LEAVE_UNLISTED_S", 0.5)
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        writer_and_reader(server, proxy.url, reconnect=FAST) as (w, r),
    ):
        await w.create_channel("run.0")
        async with r.subscribe_matching("run.*", policy="unbounded") as matching:
            [old] = matching._subs
            await publish(w, "run.0", ["old"])
            await until(lambda: len(old._frames) == 1)  # not read yet
            async with (
                restarted_while_leaving(r, proxy, matching, old, monkeypatch) as url,
                ts.open_client(url, name="w2") as w2,
            ):
                await w2.create_channel("run.0")
                await until(lambda: old._ended and len(matching._subs) == 2)
                assert [m.data for m in await take(matching, 1)] == ["old"]
                with pytest.raises(trio.WouldBlock):
                    matching.receive_nowait()  # the old member is read out: it leaves
                assert old not in matching._subs and matching.channels == ["run.0"]
                assert matching._again == {} and matching._replaced == set()
                await publish(w2, "run.0", ["new"])
                (first,) = await take(matching, 1)
                assert (first.channel, first.data) == ("run.0", "new")
                assert matching._again == {}
