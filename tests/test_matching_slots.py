"""A channel skipped for ``max_channels`` takes the slot a member frees, at once.

It waited for the next listing (after a reconnect or a gap of ``$channels``: rare), however
long the slot stood free. Through a real server (both engines); no reconnect, no listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from engine_marks import BOTH_ENGINES
from test_matching import WAIT_S, publish, until, until_data, writer_and_reader

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
            assert matching._skipped == {"s.e"}


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
            await until(lambda: len(matching._refused) == 2)
            assert matching._skipped == {"s.b"}  # s.c: not remembered
            listings = record_calls(monkeypatch, matching, "_list")
            await w.delete_channel("s.a")
            await read_once_it_has_a_reader(w, matching, "s.b")  # remembered: no listing
            assert listings == []
            await w.delete_channel("s.b")
            await read_once_it_has_a_reader(w, matching, "s.c")  # found by a listing
            assert len(listings) == 1 and matching.channels == ["s.c"]
