"""client.subscribe_matching(pattern): a subscription per matching channel, now and later,
through a real server (trio_stream/_matching.py)."""

from __future__ import annotations

import fnmatch
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
import trio
from engine_marks import BOTH_ENGINES
from hypothesis import given
from proxy import TcpProxy, open_proxy

import trio_stream as ts
from trio_stream._matching import PatternSubscription, check_pattern, matches
from trio_stream.sync import SyncClient

T = TypeVar("T")

WAIT_S = 10.0  # generous bound for things that take milliseconds on loopback
FAST = ts.Reconnect(initial=0.05, maximum=0.2)
# The server keeps nothing of a client whose connection broke: the $channels announcements
# made while the reader was away are gone for good (what a server restart does too).
NOTHING_KEPT = pytest.mark.server_options(resume_grace_s=0)

pytestmark = BOTH_ENGINES


@asynccontextmanager
async def writer_and_reader(
    server: ts.Server, reader_url: str | None = None, **reader: Any
) -> AsyncIterator[tuple[ts.Client, ts.Client]]:
    """A writer "w" and a reader "r" (``reader``: open_client options), both on TCP."""
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="w") as w,
        ts.open_client(reader_url or server.tcp_url, name="r", **reader) as r,
    ):
        yield w, r


async def until(condition: Callable[[], bool]) -> None:
    """Wait, bounded, until ``condition()`` holds (client-side state with no event to wait on)."""
    with trio.fail_after(WAIT_S):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def take(matching: PatternSubscription, count: int) -> list[ts.Message]:
    with trio.fail_after(WAIT_S):
        return [await matching.receive() for _ in range(count)]


async def until_data(matching: PatternSubscription, wanted: Callable[[ts.Message], bool]) -> None:
    """Read (bounded) until a message for which ``wanted`` holds."""
    with trio.fail_after(WAIT_S):
        async for msg in matching:
            if wanted(msg):
                return


async def publish(w: ts.Client, channel: str, values: range | list[Any]) -> None:
    """Publish every value, once the channel has its reader, and wait for the server."""
    async with w.publisher(channel) as pub:
        with trio.fail_after(WAIT_S):
            await pub.wait_for_readers()
        for value in values:
            await pub.send(value)


# -- the rule -------------------------------------------------------------------------------------
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "._-$*?[]!>", max_size=12)


@given(pattern=NAMES, name=NAMES)
def test_a_name_matches_as_fnmatchcase_says_but_system_ones_need_a_dollar_pattern(
    pattern: str, name: str
) -> None:
    expected = fnmatch.fnmatchcase(name, pattern)
    if name.startswith("$") and not pattern.startswith("$"):
        expected = False
    assert matches(pattern, name) is expected


@given(name=st.text(alphabet=string.ascii_letters + "._-", min_size=1, max_size=12))
def test_star_matches_every_application_channel_dots_too_and_no_system_one(name: str) -> None:
    assert matches("*", name)
    assert not matches("*", "$" + name)
    assert matches("$*", "$" + name)
    assert matches(name[0] + "*", name)
    if name[0] != name[0].swapcase():  # case-sensitive (a '.' or '-' has no other case)
        assert not matches(name[0].swapcase() + "*", name)


@pytest.mark.parametrize("pattern", ["sensors.temp", "", "sensors.>", "a.b"])
def test_a_pattern_without_a_glob_character_is_refused(pattern: str) -> None:
    with pytest.raises(ts.InvalidArgument, match=r"use subscribe\(\)") as caught:
        check_pattern(pattern)
    if ">" in pattern:
        assert "NATS's '>' is '*' here" in str(caught.value)


# -- subscribing ----------------------------------------------------------------------------------
async def test_channels_that_match_now_and_later_are_read_as_one(server: ts.Server) -> None:
    async with writer_and_reader(server) as (w, r):
        for name in ["s.a", "s.b", "t.a", "S.c"]:
            await w.create_channel(name)
        async with r.subscribe_matching("s.*") as matching:
            assert matching.channels == ["s.a", "s.b"]  # at entry: case-sensitive
            await w.create_channel("s.later.deep")  # `*` matches dots too
            await w.create_channel("t.later")
            await until(lambda: "s.later.deep" in matching.channels)
            for name in ["s.a", "s.b", "s.later.deep", "t.a"]:
                await w.publish(name, name)
            got = await take(matching, 3)
            assert sorted((m.channel, m.data) for m in got) == [
                ("s.a", "s.a"),
                ("s.b", "s.b"),
                ("s.later.deep", "s.later.deep"),
            ]
            assert matching.channels == ["s.a", "s.b", "s.later.deep"]
        assert matching.channels == []  # left: unsubscribed everywhere
        infos = {info.name: info.readers for info in await w.channels()}
        assert infos["s.a"] == infos["s.later.deep"] == 0


@pytest.mark.parametrize("when", ["before the listing", "after the listing"])
async def test_a_channel_created_during_the_start_is_not_missed(
    server: ts.Server, when: str
) -> None:
    # The channel is created for real between the steps of the start: after $channels is
    # followed and before the listing (listed and announced: subscribed once), or after the
    # listing was answered (only $channels says it: missed if the listing came first).
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.old")
        real_channels = r.channels

        async def channels_with_a_creation() -> list[ts.ChannelInfo]:
            if when == "before the listing":
                await w.create_channel("s.new")
                return await real_channels()
            listed = await real_channels()
            await w.create_channel("s.new")
            return listed

        r.channels = channels_with_a_creation  # type: ignore[method-assign]
        async with r.subscribe_matching("s.*") as matching:
            r.channels = real_channels  # type: ignore[method-assign]
            await until(lambda: matching.channels == ["s.new", "s.old"])
            await w.publish("s.new", "new")
            assert [(m.channel, m.data) for m in await take(matching, 1)] == [("s.new", "new")]
            # Once: a second subscription to it would deliver each frame twice.
            await w.publish("s.new", "again")
            await w.publish("s.old", "old")
            got = [(m.channel, m.data) for m in await take(matching, 2)]
            assert sorted(got) == [("s.new", "again"), ("s.old", "old")]
            with trio.move_on_after(0.2):
                extra = await matching.receive()
                raise AssertionError(f"delivered twice: {extra}")
            infos = {info.name: info.readers for info in await w.channels()}
            assert infos["s.new"] == 1


async def test_an_ended_channel_delivers_its_last_messages_leaves_and_rejoins_when_created_again(
    server: ts.Server,
) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        await w.create_channel("s.b")
        async with r.subscribe_matching("s.*", policy="unbounded") as matching:
            await publish(w, "s.a", range(5))
            await w.delete_channel("s.a")
            got = [m.data for m in await take(matching, 5)]
            assert got == list(range(5))  # everything before the end
            await until(lambda: matching.channels == ["s.b"])  # (the end read: it left)
            await w.create_channel("s.a")
            await until(lambda: matching.channels == ["s.a", "s.b"])
            await publish(w, "s.a", ["again"])
            assert [(m.channel, m.data) for m in await take(matching, 1)] == [("s.a", "again")]


async def test_a_channel_recreated_before_its_end_was_read_is_subscribed_again(
    server: ts.Server,
) -> None:
    # The old channel's end waits on the server behind its unread frames; the new channel's
    # `created` comes first. Both are read: the old one to its end, the new one beside it.
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*", policy="unbounded", window=2) as matching:
            [old] = matching._subs
            await publish(w, "s.a", range(20))
            await w.delete_channel("s.a")
            await w.create_channel("s.a")
            await until(lambda: len(matching._subs) == 2)  # the new one beside the old
            assert matching.channels == ["s.a"]
            await publish(w, "s.a", ["new"])
            got = [m.data for m in await take(matching, 21)]
            assert sorted(got, key=str) == sorted([*range(20), "new"], key=str)
            assert [x for x in got if x != "new"] == list(range(20))  # in order
            await until(lambda: old._ended)
            with pytest.raises(trio.WouldBlock):
                matching.receive_nowait()  # reads the old one's end: it leaves the set
            assert matching._subs == [matching._active["s.a"]] and old not in matching._subs


async def test_other_clients_private_channels_are_not_matched_own_ones_are(
    server: ts.Server,
) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.theirs", public=False)
        await r.create_channel("s.mine", public=False)
        async with r.subscribe_matching("s.*") as matching:
            assert matching.channels == ["s.mine"]
            await w.create_channel("s.theirs.later", public=False)
            await w.create_channel("s.marker")  # announced after it: its turn came first
            await until(lambda: "s.marker" in matching.channels)
            assert matching.channels == ["s.marker", "s.mine"]


async def test_system_channels_match_only_a_pattern_that_starts_with_a_dollar(
    server: ts.Server,
) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("channels-copy")
        async with r.subscribe_matching("*") as everything:
            assert everything.channels == ["channels-copy"]
        async with r.subscribe_matching("$c*") as system:
            assert system.channels == ["$channels", "$clients"]
            await w.create_channel("x")  # announced on $channels
            msg = await take(system, 1)
            assert msg[0].channel == "$channels"


async def test_lost_counts_stay_per_channel_under_drop_oldest(server: ts.Server) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.busy")
        await w.create_channel("s.calm")
        async with r.subscribe_matching("s.*", policy="drop_oldest", size=4, window=1) as matching:
            await publish(w, "s.busy", range(1, 101))
            await publish(w, "s.calm", range(1, 4))
            got: dict[str, list[ts.Message]] = {"s.busy": [], "s.calm": []}
            with trio.fail_after(WAIT_S):
                async for msg in matching:
                    got[msg.channel].append(msg)
                    if [m.seq for m in got["s.busy"][-1:] + got["s.calm"][-1:]] == [100, 3]:
                        break
        busy, calm = got["s.busy"], got["s.calm"]
        assert len(busy) + sum(m.lost for m in busy) == 100  # each frame delivered or counted
        assert sum(m.lost for m in busy) > 0
        assert [m.data for m in calm] == [1, 2, 3] and not any(m.lost for m in calm)
        assert matching.lost == sum(m.lost for m in busy)


async def test_a_flooded_channel_does_not_starve_a_quiet_one(server: ts.Server) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.flood")
        async with r.subscribe_matching("s.*", policy="unbounded") as matching:
            await w.create_channel("s.quiet")  # joins after the flood: asked second
            await until(lambda: matching.channels == ["s.flood", "s.quiet"])
            await publish(w, "s.flood", range(300))
            await publish(w, "s.quiet", range(5))
            flood, quiet = matching._active["s.flood"], matching._active["s.quiet"]
            await until(lambda: len(quiet._frames) == 5 and len(flood._frames) >= 10)
            got = [m.channel for m in await take(matching, 10)]
            assert Counter(got) == {"s.flood": 5, "s.quiet": 5}
            assert got[:4] in (["s.flood", "s.quiet"] * 2, ["s.quiet", "s.flood"] * 2)


async def test_more_matching_channels_than_max_channels_is_an_error_that_says_what_to_do(
    server: ts.Server,
) -> None:
    async with writer_and_reader(server) as (w, r):
        for name in ["s.a", "s.b", "s.c"]:
            await w.create_channel(name)
        with pytest.raises(ts.LimitExceeded, match=r"max_channels=2 .*narrow the pattern"):
            async with r.subscribe_matching("s.*", max_channels=2):
                raise AssertionError("entered")
        infos = {info.name: info.readers for info in await w.channels()}
        assert infos["s.a"] == infos["s.b"] == 0  # none left open
        async with r.subscribe_matching("s.*", max_channels=3) as matching:
            await w.create_channel("s.d")
            with trio.fail_after(WAIT_S), pytest.raises(ts.LimitExceeded, match="max_channels=3"):
                await matching.receive()
            with pytest.raises(ts.LimitExceeded):  # for good: the set is no longer complete
                matching.receive_nowait()


async def test_bad_options_are_refused_before_anything_is_subscribed(server: ts.Server) -> None:
    async with writer_and_reader(server) as (w, r):
        await w.create_channel("s.a")
        refused: list[tuple[dict[str, Any], str]] = [
            ({"since": ts.Position("e", 3)}, "position in one channel"),
            ({"wait_channel": True}, "waits for matching channels already"),
            ({"policy": "newest"}, "unknown policy"),
            ({"size": 0}, "size >= 1"),
            ({"max_channels": 0}, "max_channels must be"),
        ]
        for options, said in refused:
            with pytest.raises(ts.InvalidArgument, match=said):
                async with r.subscribe_matching("s.*", **options):
                    raise AssertionError(options)
        with pytest.raises(ts.InvalidArgument, match=r"use subscribe\(\)"):
            async with r.subscribe_matching("s.a"):
                raise AssertionError("entered")
        infos = {info.name: info.readers for info in await w.channels()}
        assert infos["s.a"] == 0 and infos["$channels"] == 0


# -- surviving failures ---------------------------------------------------------------------------
@pytest.fixture
async def proxy(server: ts.Server) -> AsyncIterator[TcpProxy]:
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:
        yield proxy


@NOTHING_KEPT
async def test_channels_created_while_the_client_was_away_are_picked_up(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with writer_and_reader(server, proxy.url, reconnect=FAST) as (w, r):
        await w.create_channel("s.a", history=10)
        async with r.subscribe_matching("s.*", policy="unbounded") as matching:
            await publish(w, "s.a", ["before"])
            assert [m.data for m in await take(matching, 1)] == ["before"]
            proxy.refuse()
            proxy.cut()
            with trio.fail_after(WAIT_S):
                await r.wait_state("reconnecting")
            await w.create_channel("s.away")  # announced to nobody: the reader is away
            await w.publish("s.a", "while away")  # (no reader now: kept in its history)
            proxy.accept()
            with trio.fail_after(WAIT_S):
                await r.wait_state("open")
            await until(lambda: matching.channels == ["s.a", "s.away"])
            await publish(w, "s.away", ["new"])
            got = {(m.channel, m.data) for m in await take(matching, 2)}
            # s.a resumed by itself, from its history; s.away subscribed after the reconnect
            assert got == {("s.a", "while away"), ("s.away", "new")}


@NOTHING_KEPT
async def test_a_reconnection_is_followed_by_a_listing_even_with_no_news_after_it(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Nothing matched before the cut, so no reader-count news follows the resubscriptions:
    # only the listing made once the client is "open" again finds the channel.
    async with (
        writer_and_reader(server, proxy.url, reconnect=FAST) as (w, r),
        r.subscribe_matching("s.*") as matching,
    ):
        assert matching.channels == []
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await r.wait_state("reconnecting")
        await w.create_channel("s.away")
        proxy.accept()
        await until(lambda: matching.channels == ["s.away"])
        await publish(w, "s.away", ["new"])
        assert [(m.channel, m.data) for m in await take(matching, 1)] == [("s.away", "new")]


async def test_a_connection_lost_for_good_is_raised(server: ts.Server, proxy: TcpProxy) -> None:
    async with writer_and_reader(server, proxy.url, reconnect=False) as (w, r):
        await w.create_channel("s.a")
        async with r.subscribe_matching("s.*") as matching:
            proxy.cut()
            with trio.fail_after(WAIT_S), pytest.raises(ts.ConnectionClosed):
                await matching.receive()
            with pytest.raises(ts.ConnectionClosed):
                matching.receive_nowait()


# -- the synchronous client -----------------------------------------------------------------------
async def in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(WAIT_S * 2):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


async def test_the_sync_client_reads_matching_channels_with_blocking_calls(
    server: ts.Server,
) -> None:
    url = server.tcp_url
    assert url is not None

    def scenario() -> None:
        with SyncClient(url, name="w") as w, SyncClient(url, name="r") as r:
            w.create_channel("s.a")
            w.create_channel("t.a")
            with pytest.raises(ts.InvalidArgument, match="position in one channel"):
                r.subscribe_matching("s.*", since=ts.Position("e", 1))
            with r.subscribe_matching("s.*", policy="unbounded") as matching:
                assert matching.channels == ["s.a"]
                w.create_channel("s.b")
                until_s = time.monotonic() + WAIT_S
                while matching.channels != ["s.a", "s.b"]:
                    assert time.monotonic() < until_s, matching.channels
                    time.sleep(0.005)
                w.publish("s.b", "b")
                w.publish("t.a", "not matched")
                w.publish("s.a", "a")
                w.flush(timeout=WAIT_S)
                got = {(m.channel, m.data) for m in [matching.get(timeout=WAIT_S) for _ in "ab"]}
                assert got == {("s.a", "a"), ("s.b", "b")}
                with pytest.raises(TimeoutError):
                    matching.get(timeout=0.05)
            assert matching.closed
            assert list(matching) == []
            infos = {info.name: info.readers for info in w.channels()}
            assert infos["s.a"] == infos["s.b"] == 0

    await in_thread(scenario)
