"""Clients ride through failures: reconnect, restore, resume with an exact gap.

Faults are real: a TCP proxy (tests/proxy.py) that cuts, resets, refuses or stalls
connections, and a server in a child process killed with SIGKILL and started again on the
same port. Every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import trio
from client_parts import channels_once_back, kept_away
from engine_marks import BOTH_ENGINES, memory_only
from proxy import TcpProxy, open_proxy
from redis_server import RedisServer
from test_client_liveness import acknowledged_then_stop, server_process
from test_cluster import node_config, node_process, two_nodes

import trio_stream as ts
import trio_stream._publisher
import trio_stream._server.outbox as outbox_module
import trio_stream.sync
from trio_stream._client import RETRY_MAX_S
from trio_stream._reconnect import Backoff
from trio_stream.sync import SyncClient

pytestmark = BOTH_ENGINES

WAIT_S = 20.0  # nothing here should take near this long: a hang fails instead of blocking
# Reconnects within 0.2 s: a test that cuts or restarts waits for the faults, not backoff.
FAST = ts.Reconnect(initial=0.05, maximum=0.2)
PRODUCED = 400  # frames of the beyond-the-history tests: 100 read, 300 while away
# The server keeps nothing of a client whose connection broke (no resume grace): what a
# restarted server, or one whose grace ran out, has. A reader's subscription kept for it
# (kept.py) would count as a reader: a writer would have nobody to hold frames for, and a
# resume would not come from the history.
NOTHING_KEPT = pytest.mark.server_options(resume_grace_s=0)


def port_of(url: str) -> int:
    """The port of a server process's URL (to start another one where it listened)."""
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture
async def proxy(server: ts.Server) -> AsyncIterator[TcpProxy]:
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:
        yield proxy


async def read_until(sub: ts.Subscription, last_seq: int, into: list[ts.Message]) -> None:
    """Take messages until the one with ``last_seq`` (the channel's last frame)."""
    with trio.fail_after(WAIT_S):
        async for msg in sub:
            into.append(msg)
            if msg.seq >= last_seq:
                return


def assert_exact(messages: list[ts.Message], produced: int) -> None:
    """Seqs strictly increase, and every frame is delivered or counted lost, exactly."""
    seqs = [m.seq for m in messages]
    assert seqs == sorted(set(seqs)), "a frame came twice or out of order"
    assert len(messages) + sum(m.lost for m in messages) == produced


@asynccontextmanager
async def writer_and_proxied_reader(
    server: ts.Server,
    proxy: TcpProxy,
    *,
    history: int,
    reader_name: str = "recorder",
    reconnect: ts.Reconnect | None = None,
    **subscribe_options: Any,
) -> AsyncIterator[tuple[ts.Publisher, ts.Subscription, ts.Client]]:
    """The resume tests' set-up: a writer ("daq") straight to the server, a reader through the
    proxy (whose connection the test cuts), channel "AI1" with ``history``, the reader
    subscribed with ``subscribe_options`` and the writer told of it."""
    assert server.tcp_url is not None
    reader_options: dict[str, Any] = {} if reconnect is None else {"reconnect": reconnect}
    async with (
        ts.open_client(server.tcp_url, name="daq") as writer,
        ts.open_client(proxy.url, name=reader_name, **reader_options) as reader,
    ):
        await writer.create_channel("AI1", history=history)
        async with (
            writer.publisher("AI1") as pub,
            reader.subscribe("AI1", **subscribe_options) as sub,
        ):
            await pub.wait_for_readers()
            yield pub, sub, reader


async def until_server(condition: Callable[[], bool]) -> None:
    """Wait, bounded, until ``condition()`` about the server's own state holds."""
    with trio.fail_after(WAIT_S):
        while not condition():  # noqa: ASYNC110 - polling the server's own state
            await trio.sleep(0.005)


async def cut_until_kept(server: ts.Server, proxy: TcpProxy) -> float:
    """Cut the proxied reader off for good (the proxy refuses it back) and wait until the
    server keeps its subscription for it; when the cut was (trio clock)."""
    proxy.refuse()
    proxy.cut()
    cut_at = trio.current_time()
    with trio.fail_after(WAIT_S):
        while not server.state.stats()["kept_subscriptions"]:  # noqa: ASYNC110 - the server's own state
            await trio.sleep(0.01)  # the server notices the cut
    return cut_at


async def hundred_read_then_three_hundred_away(
    pub: ts.Publisher, sub: ts.Subscription, reader: ts.Client, proxy: TcpProxy, every: int = 1
) -> list[ts.Message]:
    """The beyond-the-history tests: 100 frames sent and read (those ``every`` keeps), the
    reader cut, 300 frames sent while it is away; every message it gets until the last."""
    got: list[ts.Message] = []
    async with trio.open_nursery() as nursery:
        last_kept = 1 + (PRODUCED - 1) // every * every  # every=N keeps seqs 1, 1 + N, ...
        nursery.start_soon(read_until, sub, last_kept, got)
        for i in range(100):
            await pub.send(i)
        await pub.wait_acknowledged()
        with trio.fail_after(WAIT_S):
            while len(got) < 100 // every:  # noqa: ASYNC110 - polling a plain list
                await trio.sleep(0.01)
        proxy.cut()
        await reader.wait_state("reconnecting")
        for i in range(100, PRODUCED):
            await pub.send(i)
    return got


# -- backoff ---------------------------------------------------------------------------------
def test_backoff_doubles_with_equal_jitter_never_zero_never_in_lock_step() -> None:
    policy = ts.Reconnect(initial=0.1, maximum=1.0)
    waits = [Backoff(policy, random.Random(seed)).next_wait() for seed in range(200)]
    assert all(0.05 <= w <= 0.1 for w in waits)
    assert len(set(waits)) == 200  # no two clients in step
    backoff = Backoff(policy, random.Random(1))
    series = [backoff.next_wait() for _ in range(8)]
    bounds = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(b / 2 <= w <= b for w, b in zip(series, bounds, strict=True))


def test_reconnect_settings_are_checked() -> None:
    with pytest.raises(ts.InvalidArgument):
        ts.Reconnect(initial=0.0)
    with pytest.raises(ts.InvalidArgument):
        ts.Reconnect(initial=2.0, maximum=1.0)
    with pytest.raises(ts.InvalidArgument):
        ts.Reconnect(give_up_after=-1.0)


# -- said where it shows -----------------------------------------------------------------------
async def test_a_lost_connection_and_its_return_are_warned_once_each(
    proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # A new user's trio writer stayed silent through a server restart (its send() went on
    # returning True), while the SyncClient and the CLI beside it said both at once.
    caplog.set_level(logging.WARNING, logger="trio_stream")
    async with ts.open_client(proxy.url, name="quiet", reconnect=FAST) as client:
        proxy.refuse()
        proxy.cut()
        await client.wait_state("reconnecting")
        await trio.sleep(0.6)  # attempts refused meanwhile: nothing more to say
        proxy.accept()
        await client.wait_state("open")
    said = [r.getMessage() for r in caplog.records if r.name == "trio_stream._client"]
    assert said[0] == f"client 'quiet': the connection to {proxy.url} is lost; reconnecting"
    back = re.fullmatch(
        rf"client 'quiet': reconnected to {re.escape(proxy.url)} after ([0-9.]+) s "
        r"\(the same server, still running\)",
        said[1],
    )
    assert back is not None and float(back[1]) >= 0.6, said
    assert len(said) == 2, said


async def test_the_reconnect_line_says_when_the_server_is_a_new_run(
    proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator reading "reconnected after 14.5 s" could not tell a network blip, after
    # which the server still held everything, from a restart that lost what it held.
    caplog.set_level(logging.WARNING, logger="trio_stream")
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    async with (
        ts.open_server(config) as restarted,
        ts.open_client(proxy.url, name="quiet", reconnect=FAST) as client,
    ):
        assert restarted.tcp_url is not None
        proxy.refuse()
        proxy.cut()
        await client.wait_state("reconnecting")
        proxy.target = ("127.0.0.1", int(restarted.tcp_url.rsplit(":", 1)[1]))
        proxy.accept()
        with trio.fail_after(WAIT_S):
            await client.wait_state("open")
    said = [r.getMessage() for r in caplog.records if r.name == "trio_stream._client"]
    assert said[1].endswith(" s (a new server run: it restarted, or another node took over)")


async def test_a_client_told_to_keep_quiet_says_nothing_of_a_reconnect(
    proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_stream")
    async with ts.open_client(proxy.url, name="quiet", reconnect=FAST) as client:
        client.announce_reconnects = False  # its owner says it in its own words
        proxy.cut()
        await client.wait_state("reconnecting")
        # Turned on during the outage: no "reconnected after" line with no loss said before
        # it (it would have no start to count from).
        client.announce_reconnects = True
        await client.wait_state("open")
    assert not caplog.records, caplog.text


# -- a reader's process restarted ------------------------------------------------------------
async def gone_while_sent(
    server: ts.Server, proxy: TcpProxy, pub: ts.Publisher, values: range
) -> None:
    """The proxied recorder's process is gone for good (its subscription kept); ``values``
    are sent meanwhile, held for it, and acknowledged."""
    await cut_until_kept(server, proxy)
    for i in values:
        assert await pub.send(i)  # held for the gone reader: it was not dropped
    await pub.wait_acknowledged()


@asynccontextmanager
async def restarted_recorder(
    server: ts.Server, since: ts.Position, **options: Any
) -> AsyncIterator[ts.Subscription]:
    """The recorder's new process (no resume token), subscribed ``since`` its saved position."""
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="recorder") as restarted,
        restarted.subscribe("AI1", since=since, **options) as again,
    ):
        yield again


@pytest.mark.parametrize("case", ["same options", "other options", "position not sent"])
async def test_a_restarted_recorder_process_takes_over_what_the_server_held_for_it(
    server: ts.Server, proxy: TcpProxy, case: str
) -> None:
    # A block recorder killed with SIGKILL and started again `since=` its saved position lost
    # the frames written meanwhile (counted exactly) on a channel without history, though the
    # server held them for it: the new process (no resume token) could not take them over.
    # With other options than its predecessor's it is a new subscription (from the history,
    # as before): the kept reader is left to end with the grace period. From a position the
    # kept reader never sent (another subscription's), taking it would send the frames up to
    # that position again: a new subscription too, and the kept one, replaced, ends at once.
    async with writer_and_proxied_reader(server, proxy, history=0, policy="block", size=1000) as (
        pub,
        sub,
        recorder,
    ):
        for i in range(100):
            await pub.send(i)
        got = [await sub.receive() for _ in range(50)]
        saved = sub.position  # what a recorder writes to disk with each frame it stores
        same_options = case != "other options"
        if case == "position not sent":
            saved = ts.Position(saved.epoch, 150)
        await gone_while_sent(server, proxy, pub, range(100, 200))
        size = 1000 if same_options else 999
        async with restarted_recorder(server, saved, policy="block", size=size) as again:
            kept_then = server.state.resume.kept_subscriptions()
            got_again: list[ts.Message] = []
            if case == "same options":
                with trio.fail_after(WAIT_S):
                    while len(got_again) < 150:
                        got_again.append(await again.receive())
            elif case == "position not sent":
                await pub.send(200)  # (without history, nothing before it may come)
                with trio.fail_after(WAIT_S):
                    got_again.append(await again.receive())
        del recorder
    assert [m.seq for m in got] == list(range(1, 51))
    assert kept_then == (1 if case == "other options" else 0)
    if case == "position not sent":
        assert got_again[0].seq > 150, got_again[0]  # none of the frames up to it again
    if case == "same options":
        assert [m.seq for m in got_again] == list(range(51, 201))
        assert got_again[0].gap == ts.Gap(kind="resumed", lost=0, recovered=150)


async def test_a_recorder_killed_between_taking_a_message_and_saving_it_takes_over_its_reader(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Its client returned the credit for the message it had just taken (a quarter of the
    # window had been taken), so the server let go of that frame: the new process's position,
    # one before it, was older than what the server still held, and it got a new
    # subscription (no history: the held frames lost, counted) instead of the kept one.
    async with writer_and_proxied_reader(server, proxy, history=0, policy="block", size=1000) as (
        pub,
        sub,
        recorder,
    ):
        for i in range(300):
            await pub.send(i)
        quarter = sub.window // 4  # the message whose taking returns the credit
        got = [await sub.receive() for _ in range(quarter - 1)]
        saved = sub.position  # stored and saved
        got.append(await sub.receive())  # taken, killed before it was saved
        await recorder.channels()  # a round trip: the server has the credit now
        await gone_while_sent(server, proxy, pub, range(300, 400))
        async with restarted_recorder(server, saved, policy="block", size=1000) as again:
            with trio.fail_after(WAIT_S):
                got_again = [await again.receive() for _ in range(400 - saved.seq)]
    assert saved.seq == quarter - 1
    assert [m.seq for m in got_again] == list(range(quarter, 401))
    assert got_again[0].gap == ts.Gap(kind="resumed", lost=0, recovered=401 - quarter)


async def test_a_slow_reader_cut_again_and_again_holds_one_window_and_loses_nothing(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Its application takes one message between cuts. Resumed with a whole fresh window on
    # top of what it held, the client held a window more after each cut (and the server the
    # frames of every cut for a take-over): the frames it holds count in its window now.
    window = 8
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=1000, window=window
    ) as (pub, sub, reader):
        for i in range(200):
            await pub.send(i)
        await pub.wait_acknowledged()
        got = []
        for _ in range(5):
            with trio.fail_after(WAIT_S):
                # (Less than the window while what it took waits for a quarter's credit.)
                while sub.statistics().buffered < window - window // 4:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            proxy.cut()
            await reader.wait_state("reconnecting")
            got.append(await sub.receive())  # taken while the client is away
            with trio.fail_after(WAIT_S):
                await reader.wait_state("open")
            await reader.channels()  # a round trip: the resubscription's answer came
            await trio.sleep(0.1)  # what the server sends with the new window has arrived
            assert sub.statistics().buffered <= window
        await read_until(sub, 200, got)
    assert [m.data for m in got] == list(range(200))
    assert server.state.stats()["kept_subscriptions"] == 0


@pytest.mark.parametrize("blip", [False, True], ids=["batch", "batch after a blip"])
async def test_a_sync_recorder_killed_inside_a_batch_takes_over_its_reader(
    server: ts.Server, proxy: TcpProxy, blip: bool
) -> None:
    # A SyncSubscription takes what has arrived into the script's thread as one batch: the
    # credit for all of it went back as it was taken, so a script killed while storing the
    # batch's 100th message had a position far older than what the server still held.
    # After a blip: 600 frames left queued in the client, not taken yet (they returned no
    # credit then), then 300 more; one batch took both, and the later ones' credit went back while
    # the script stored the first.
    assert server.tcp_url is not None
    direct = server.tcp_url
    last = 900 if blip else 700

    def scenario() -> tuple[ts.Position, list[ts.Message]]:
        with (
            SyncClient(direct, name="daq") as daq,
            SyncClient(proxy.url, name="recorder") as first,
        ):
            daq.create_channel("AI1", history=0)
            with (
                first.subscribe("AI1", policy="block", size=1000) as old,
                daq.publisher("AI1") as pub,
            ):
                pub.wait_for_readers(timeout=WAIT_S)

                def send(values: range, buffered: int = 0) -> None:
                    """``values``, then until the recorder's client has ``buffered``."""
                    for i in values:
                        pub.send(i)
                    daq.flush(timeout=WAIT_S)
                    deadline = time.monotonic() + WAIT_S
                    while old.statistics().buffered < buffered:  # there: one batch takes all
                        assert time.monotonic() < deadline, old.statistics()
                        time.sleep(0.01)

                send(range(600), 600)
                if blip:
                    trio.from_thread.run_sync(proxy.cut)  # the client resumes
                    assert first.wait_state("reconnecting", timeout=WAIT_S) == "reconnecting"
                    assert first.wait_state("open", timeout=WAIT_S) == "open"
                    send(range(600, 900), 900)
                for _ in range(100):
                    old.get(timeout=WAIT_S)
                saved = old.position
                first.channels()  # a round trip: the server has every credit sent so far
                trio.from_thread.run(cut_until_kept, server, proxy)
                send(range(900 if blip else 600, last))
                with (
                    SyncClient(direct, name="recorder") as restarted,
                    restarted.subscribe("AI1", policy="block", size=1000, since=saved) as again,
                ):
                    return saved, [again.get(timeout=WAIT_S) for _ in range(last - 100)]

    with trio.fail_after(WAIT_S * 3):
        saved, got = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert saved.seq == 100
    assert [m.data for m in got] == list(range(100, last))
    assert got[0].gap == ts.Gap(kind="resumed", lost=0, recovered=last - 100)


async def test_readers_taken_over_in_another_order_each_resume_their_own_after_a_blip(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The new process numbers its subscriptions from 1 again: taken over in the other order,
    # B (old id 2) became 1 and A (old id 1) 2, and both kept their old ids too. At the new
    # process's next cut both ids named A: B's resubscription missed, and B started afresh.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="daq") as daq,
        ts.open_client(proxy.url, name="recorder") as first,
    ):
        await daq.create_channel("A", history=0)
        await daq.create_channel("B", history=0)
        async with daq.publisher("A") as pub_a, daq.publisher("B") as pub_b:
            old_a = await first.open_subscription("A", policy="block", size=100)
            old_b = await first.open_subscription("B", policy="block", size=100)
            await pub_a.wait_for_readers()
            await pub_b.wait_for_readers()
            await pub_a.send("a0")
            await pub_b.send("b0")
            assert (await old_a.receive()).data == "a0"
            assert (await old_b.receive()).data == "b0"
            await cut_until_kept(server, proxy)
            async with (
                open_proxy(server.tcp_url) as second_proxy,
                ts.open_client(second_proxy.url, name="recorder", reconnect=FAST) as again,
            ):
                new_b = await again.open_subscription(
                    "B", policy="block", size=100, since=old_b.position
                )
                new_a = await again.open_subscription(
                    "A", policy="block", size=100, since=old_a.position
                )
                assert server.state.resume.kept_subscriptions() == 0  # both taken
                second_proxy.cut()  # the new process's own blip: it resumes, as always
                await again.wait_state("reconnecting")
                for i in range(1, 4):
                    await pub_a.send(f"a{i}")
                    await pub_b.send(f"b{i}")
                with trio.fail_after(WAIT_S):
                    got_a = [await new_a.receive() for _ in range(3)]
                    got_b = [await new_b.receive() for _ in range(3)]
    assert [m.data for m in got_a] == ["a1", "a2", "a3"]
    assert [m.data for m in got_b] == ["b1", "b2", "b3"]
    assert got_b[0].gap == ts.Gap(kind="resumed", lost=0, recovered=3), got_b[0].gap


async def test_a_restarted_recorder_takes_over_a_keyed_channels_reader_only_with_the_key(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Its name alone does not open a channel its key guards: the key is checked as for any
    # subscribe (on several nodes against Redis's record, which a node's copy lacks).
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="daq") as daq,
        ts.open_client(proxy.url, name="recorder") as first,
    ):
        await daq.create_channel("AI1", key="k")
        async with daq.publisher("AI1") as pub:
            sub = await first.open_subscription("AI1", key="k", policy="block", size=100)
            await pub.wait_for_readers()
            for i in range(10):
                await pub.send(i)
            got = [await sub.receive() for _ in range(5)]
            await cut_until_kept(server, proxy)
            async with ts.open_client(server.tcp_url, name="recorder") as again:
                with pytest.raises(ts.AuthError):
                    await again.open_subscription(
                        "AI1", key="wrong", policy="block", size=100, since=sub.position
                    )
                assert server.state.resume.kept_subscriptions() == 1  # still kept
                async with again.subscribe(
                    "AI1", key="k", policy="block", size=100, since=sub.position
                ) as taken:
                    with trio.fail_after(WAIT_S):
                        rest = [await taken.receive() for _ in range(5)]
    assert [m.data for m in got + rest] == list(range(10))
    assert rest[0].gap == ts.Gap(kind="resumed", lost=0, recovered=5)


@memory_only("a node of several looks the channel up in Redis first: an ended one is not found")
async def test_a_restarted_recorder_takes_over_its_reader_of_a_channel_that_ended_meanwhile(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The writer finished its run while the recorder's process was dead: its channel ended
    # with it, and the restarted recorder (within the grace) got ChannelNotFound, the frames
    # held for it lost without a count (a lab scientist). It takes them over, then the end,
    # and the key is still checked, against the channel as it was.
    assert server.tcp_url is not None
    async with ts.open_client(proxy.url, name="recorder") as first:
        async with ts.open_client(server.tcp_url, name="daq") as daq:
            await daq.create_channel("AI1", key="k")
            async with daq.publisher("AI1") as pub:
                sub = await first.open_subscription("AI1", key="k", policy="block", size=100)
                await pub.wait_for_readers()
                for i in range(10):
                    await pub.send(i)
                got = [await sub.receive() for _ in range(5)]
                await gone_while_sent(server, proxy, pub, range(10, 20))
        # the writer's client is gone, and its channel with it
        async with ts.open_client(server.tcp_url, name="recorder") as again:
            with pytest.raises(ts.AuthError):
                await again.open_subscription(
                    "AI1", key="wrong", policy="block", size=100, since=sub.position
                )
            async with again.subscribe(
                "AI1", key="k", policy="block", size=100, since=sub.position
            ) as taken:
                with trio.fail_after(WAIT_S):
                    rest = [msg async for msg in taken]
            assert taken.end_reason == "channel 'AI1' ended with its owner"
    assert [m.data for m in got + rest] == list(range(20))
    assert rest[0].gap == ts.Gap(kind="resumed", lost=0, recovered=15)


# -- resume through a blip -------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["cut", "reset"])
async def test_a_blip_within_history_delivers_every_frame_once_in_order(
    server: ts.Server, proxy: TcpProxy, fault: str
) -> None:
    produced = 300
    async with writer_and_proxied_reader(server, proxy, history=1000, size=1000) as (
        pub,
        sub,
        reader,
    ):
        got: list[ts.Message] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until, sub, produced, got)
            for i in range(produced):
                await pub.send(i)
                if i == produced // 2:
                    getattr(proxy, fault)()
                if i % 20 == 0:
                    await trio.sleep(0.01)
        assert [m.data for m in got] == list(range(produced))
        gaps = [m.gap for m in got if m.gap is not None]
        assert len(gaps) == 1 and gaps[0].kind == "resumed"
        assert gaps[0].lost == 0
        assert reader.reconnects == 1 and reader.state == "open"
        assert sub.position == ts.Position(sub.position.epoch, produced)
        # Every message taken counts, those taken before the cut too (the frames not yet
        # credited then went missing from the count).
        assert sub.statistics().frames == produced


async def test_a_blip_beyond_the_buffer_counts_every_missed_frame_exactly(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The server keeps the reader's subscription while it is away (kept.py): its buffer of
    # 100 keeps the newest of the 300 frames sent meanwhile (after those already in flight
    # to the broken connection, up to its window of 100, which it keeps too); the rest are
    # counted where its policy dropped them.
    async with writer_and_proxied_reader(
        server, proxy, history=20, reconnect=ts.Reconnect(initial=0.5), size=100
    ) as (pub, sub, reader):
        got = await hundred_read_then_three_hundred_away(pub, sub, reader, proxy)
        assert_exact(got, PRODUCED)
        gap = next(m.gap for m in got if m.gap is not None)
        assert gap.kind == "resumed"
        assert 100 <= gap.recovered <= 200
        assert sum(m.lost for m in got) == 300 - (len(got) - 100) >= 100
        assert [m.data for m in got[-100:]] == list(range(300, PRODUCED))


@pytest.mark.server_options(resume_grace_s=0.2)
async def test_a_blip_beyond_the_grace_and_history_counts_every_missed_frame_exactly(
    server: ts.Server, proxy: TcpProxy, engine_kind: str
) -> None:
    # Away longer than resume_grace_s: the subscription kept for it has ended, and the
    # resume replays what the history holds.
    async with writer_and_proxied_reader(
        server, proxy, history=20, reconnect=ts.Reconnect(initial=1.0, maximum=1.0), size=1000
    ) as (pub, sub, reader):
        got = await hundred_read_then_three_hundred_away(pub, sub, reader, proxy)
        assert_exact(got, PRODUCED)
        gap = next(m.gap for m in got if m.gap is not None)
        assert gap.kind == "resumed"
        # What the history held; through Redis, what the channel's stream holds (README,
        # "Several nodes": a resume replays from the stream, up to the reader's size).
        recovered = 20 if engine_kind == "memory" else PRODUCED - 100
        assert gap.recovered == recovered
        assert gap.lost == PRODUCED - 100 - recovered


@asynccontextmanager
async def owner_and_operator(
    server: ts.Server, proxy: TcpProxy, **owner_options: Any
) -> AsyncIterator[tuple[ts.Client, ts.Client]]:
    """A channel owner behind the proxy, quick to reconnect, and an operator (a holder of
    the channels' keys) connected straight to the server."""
    assert server.tcp_url is not None
    async with (
        ts.open_client(
            proxy.url, name="owner", reconnect=ts.Reconnect(initial=0.1), **owner_options
        ) as owner,
        ts.open_client(server.tcp_url, name="operator") as operator,
    ):
        yield owner, operator


async def made_then_deleted(owner: ts.Client, operator: ts.Client, name: str) -> None:
    """``owner`` makes channel ``name`` (key "k"), ``operator`` deletes it, and the owner has
    the notice (it came before the answer to the owner's next request)."""
    await owner.create_channel(name, key="k")
    await operator.delete_channel(name, key="k")
    await owner.channels()
    assert name not in owner._owned


async def make_gone_and_staying(owner: ts.Client, *more_kept: str) -> None:
    """The owner's channels of the deletion tests: "gone" and "gone-kept" (``keep``), which
    the operator deletes with their key "k", "stays", and ``more_kept`` (``keep``)."""
    await owner.create_channel("gone", key="k")
    await owner.create_channel("gone-kept", key="k", keep=True)
    await owner.create_channel("stays")
    for name in more_kept:
        await owner.create_channel(name, keep=True)


@pytest.mark.parametrize("owner_away", [False, True], ids=["owner-connected", "owner-away"])
async def test_a_channel_another_client_deleted_is_not_created_again_by_its_owner(
    server: ts.Server, proxy: TcpProxy, owner_away: bool
) -> None:
    # The owner was not told, and created it again at its next reconnect, a plain resume
    # too (a soak: 500 channels deleted by a key holder, all back after one cut). Told by a
    # notice when connected; when away (nobody to tell then), by its resume's welcome. A
    # kept channel too; the owner's other channels come back as ever.
    async with owner_and_operator(server, proxy) as (owner, operator):
        await make_gone_and_staying(owner)
        if owner_away:
            await kept_away(proxy, "owner", operator, WAIT_S)
        await operator.delete_channel("gone", key="k")
        await operator.delete_channel("gone-kept", key="k")
        if owner_away:
            proxy.accept()
        else:
            await owner.channels()  # the notices came before this answer
            proxy.cut()
        names = await channels_once_back(owner, WAIT_S)
        assert "stays" in names and not names & {"gone", "gone-kept"}
        assert {c.owner for c in await operator.channels() if c.name == "stays"} == {"owner"}
        await owner.create_channel("gone")  # its own again, if it asks


@pytest.mark.server_options(resume_grace_s=1.5)  # (the first delete falls within it)
@pytest.mark.parametrize("told", [False, True], ids=["away", "notice-cut"])
async def test_a_channel_deleted_while_its_owner_was_away_past_its_grace_is_not_made_again(
    server: ts.Server, proxy: TcpProxy, told: bool
) -> None:
    # Back after resume_grace_s, its lease gone, the owner's client created every channel
    # again, those another client had deleted meanwhile too (a kept one deleted after the
    # grace, one deleted within it, one whose notice was cut with its connection). Its
    # next welcome names them now; the channels that ended with the grace come back.
    async with owner_and_operator(server, proxy) as (owner, operator):
        await make_gone_and_staying(owner, "stays-kept")
        if told:
            proxy.hold_replies()
            await operator.delete_channel("gone", key="k")
            await trio.sleep(0.1)  # (the notice on its way, into the proxy)
            proxy.refuse()
            proxy.cut()
            proxy.release()
            await kept_away(proxy, "owner", operator, WAIT_S)
        else:
            await kept_away(proxy, "owner", operator, WAIT_S)
            await operator.delete_channel("gone", key="k")  # within its grace
        with trio.fail_after(WAIT_S):
            while "stays" in {c.name for c in await operator.channels()}:  # noqa: ASYNC110
                await trio.sleep(0.05)  # ended with the grace
        await operator.delete_channel("gone-kept", key="k")  # after it
        proxy.accept()
        names = await channels_once_back(owner, WAIT_S)
        assert {"stays", "stays-kept"} <= names and not names & {"gone", "gone-kept"}
        assert not server.state.absent_owners  # (given)
        await owner.create_channel("gone")  # its own again, if it asks


@pytest.mark.server_options(resume_grace_s=0.5)
async def test_a_welcome_naming_deletions_past_the_grace_is_said_again_if_lost(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Back after its grace, its lease gone: the welcome named the deletion, and was cut
    # before the client read it. The client came back with its old token, which led to no
    # lease (the welcome's token was lost with it), and was not told again: it created the
    # channel again (the review of the change). The old token leads to that welcome's now.
    async with owner_and_operator(server, proxy, heartbeat=0.5) as (owner, operator):
        await owner.create_channel("gone", key="k")
        await owner.create_channel("stays")
        await kept_away(proxy, "owner", operator, WAIT_S)
        await operator.delete_channel("gone", key="k")
        with trio.fail_after(WAIT_S):
            while "stays" in {c.name for c in await operator.channels()}:  # noqa: ASYNC110
                await trio.sleep(0.05)  # ended with the grace
        # The lost welcome's connection keeps its lease for longer than the client takes to
        # come back: only the old token's link to that lease tells the client again then
        # (with the lease ended, its untold notice is noted for the next welcome anyway).
        server.state.resume.grace_s = 60.0
        proxy.hold_replies()  # the hello goes, its welcome stays here
        proxy.accept()
        with trio.fail_after(WAIT_S):
            while "owner" not in {c.name for c in await operator.clients()}:  # noqa: ASYNC110
                await trio.sleep(0.01)
        proxy.cut()  # the welcome with it
        proxy.release()
        with trio.fail_after(WAIT_S):
            await owner.wait_state("open")
        names = {c.name for c in await owner.channels()}
        assert "stays" in names and "gone" not in names


@pytest.mark.server_options(resume_grace_s=0.5)
async def test_a_new_process_that_made_the_channel_again_is_not_told_it_was_deleted(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The owner was told of the deletion, and its process died; a new process of its name
    # made the channel again while the old connection's lease waited. The lease's end took
    # the old notice for one still to be told (the channel was another client's, by id) and
    # the new process's next reconnection forgot its own channel (the review of the change).
    async with owner_and_operator(server, proxy) as (old, operator):
        await made_then_deleted(old, operator, "gone")
        await kept_away(proxy, "owner", operator, WAIT_S)  # its lease waits
        async with (
            open_proxy(str(server.tcp_url)) as to_new,
            ts.open_client(to_new.url, name="owner", reconnect=ts.Reconnect(initial=0.1)) as new,
        ):
            await new.create_channel("gone", key="k")
            leases = server.state.resume._leases.values()
            with trio.fail_after(WAIT_S):
                while any(lease.session is None for lease in leases):  # noqa: ASYNC110
                    await trio.sleep(0.05)  # the old lease ended
            to_new.cut()
            assert "gone" in await channels_once_back(new, WAIT_S)
            assert "gone" in new._owned  # what its client makes again after a restart


@pytest.mark.parametrize("lost", ["notice-cut", "notice-half-open", "welcome-cut"])
async def test_a_deletion_whose_notice_or_welcome_was_lost_is_told_again(
    server: ts.Server, proxy: TcpProxy, lost: str
) -> None:
    # Told once and lost: a notice cut with its connection, or written to a half-open link
    # that the client then left; a welcome naming it, cut before the client read it (it
    # comes back with its old token). The owner created the channel again at its next
    # reconnect: the next welcome names it again now.
    async with owner_and_operator(server, proxy, heartbeat=0.5) as (owner, operator):
        await owner.create_channel("gone", key="k")
        await owner.create_channel("stays")

        async def owner_connections() -> int:
            return sum(c.name == "owner" for c in await operator.clients())

        if lost == "welcome-cut":
            proxy.refuse()
            proxy.cut()
            with trio.fail_after(WAIT_S):
                while await owner_connections():  # noqa: ASYNC110
                    await trio.sleep(0.01)
            await operator.delete_channel("gone", key="k")
            proxy.hold_replies()  # the hello goes, its welcome stays here
            proxy.accept()
            with trio.fail_after(WAIT_S):
                while not await owner_connections():  # noqa: ASYNC110 - the take-over
                    await trio.sleep(0.01)
            proxy.cut()  # the welcome with it
            proxy.release()
        else:
            if lost == "notice-cut":
                proxy.hold_replies()
            else:
                proxy.stall()  # the client leaves it; the server still has it
            await operator.delete_channel("gone", key="k")
            if lost == "notice-cut":
                await trio.sleep(0.1)  # (the notice on its way, into the proxy)
                proxy.cut()
                proxy.release()
        names = await channels_once_back(owner, WAIT_S)
        assert "stays" in names and "gone" not in names


async def test_a_deletion_while_the_owners_resume_waits_for_its_welcome_is_in_it(
    server: ts.Server, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several nodes claim the name in Redis between the take-over and the welcome: a delete
    # then found no owner connected and no lease to note it on (the review of the change).
    engine: Any = server.state.engine
    claim_name = engine.claim_name
    resuming, go_on = trio.Event(), trio.Event()

    async def claim_slowly(name: str, *, resume_token: str | None) -> None:
        if resume_token is not None:
            resuming.set()
            await go_on.wait()
        await claim_name(name, resume_token=resume_token)

    async with owner_and_operator(server, proxy) as (owner, operator):
        await owner.create_channel("gone", key="k")
        monkeypatch.setattr(engine, "claim_name", claim_slowly)
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await resuming.wait()
        await operator.delete_channel("gone", key="k")
        go_on.set()
        with trio.fail_after(WAIT_S):
            await owner.wait_state("open")
        assert "gone" not in {c.name for c in await owner.channels()}


async def test_a_channel_made_again_after_its_deletion_was_told_stays_its_owners(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The deletion is named again in the next welcome (it may have been lost), but not once
    # the owner has a channel of that name again: its client would forget it (and not
    # create it again after a restart of the server).
    async with owner_and_operator(server, proxy) as (owner, operator):
        await made_then_deleted(owner, operator, "again")
        await owner.create_channel("again")
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await owner.wait_state("reconnecting")
            await owner.wait_state("open")
        assert "again" in owner._owned  # what its client creates again after a restart
        assert {c.owner for c in await operator.channels() if c.name == "again"} == {"owner"}


@memory_only("a node of several replays those frames from the channel's stream (recovered)")
@pytest.mark.server_options(resume_grace_s=0.2)
async def test_a_reader_back_after_the_grace_whose_writer_stopped_learns_what_it_missed(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Nothing left to replay and nothing more coming: the frames that went by while it was
    # away are said in a `lost` notice, not only on a next frame that may never come (a lab
    # pass: a recorder whose link was down past the grace at the end of a run showed 0 lost
    # for 200 frames it never got).
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=ts.Reconnect(initial=1.0, maximum=1.0)
    ) as (pub, sub, reader):
        for i in range(100):
            await pub.send(i)
        with trio.fail_after(WAIT_S):
            got = [await anext(aiter(sub)) for _ in range(100)]
        proxy.cut()
        await reader.wait_state("reconnecting")
        for i in range(100, 300):
            await pub.send(i)
        await pub.wait_acknowledged()  # the writer's run is over
        with trio.fail_after(WAIT_S):
            await reader.wait_state("open")
            while sub.lost < 200:  # noqa: ASYNC110 - polling the client's own count
                await trio.sleep(0.01)
        assert sub.lost == 200 and sub.statistics().lost == 200
        await pub.send(300)  # ... and the next frame does not count them again
        with trio.fail_after(WAIT_S):
            after = await anext(aiter(sub))
        assert after.data == 300 and after.lost == 200 and sub.lost == 200
        assert after.gap == ts.Gap("resumed", 200, 0)
        assert [m.data for m in got] == list(range(100))


@pytest.mark.server_options(resume_grace_s=0.2)
async def test_an_every_2_reader_back_after_the_grace_keeps_its_step_and_counts_only_its_frames(
    server: ts.Server, proxy: TcpProxy, engine_kind: str
) -> None:
    # every=2 keeps seqs 1, 3, 5, ... whether or not its connection broke, and of the frames
    # gone from the history only those it would have kept count as lost (it used to count
    # all of them, twice too many, and to restart its step at the first frame replayed).
    async with writer_and_proxied_reader(
        server,
        proxy,
        history=20,
        reconnect=ts.Reconnect(initial=1.0, maximum=1.0),
        size=1000,
        every=2,
    ) as (pub, sub, reader):
        got = await hundred_read_then_three_hundred_away(pub, sub, reader, proxy, every=2)
        assert [m.data for m in got] == [m.seq - 1 for m in got]
        assert all(m.seq % 2 for m in got), [m.seq for m in got]
        assert len(got) + sum(m.lost for m in got) == PRODUCED // 2
        gap = next(m.gap for m in got if m.gap is not None)
        assert gap.kind == "resumed" and gap.lost == sum(m.lost for m in got)
        # Through Redis the channel's stream still holds every frame: nothing is lost.
        assert (gap.lost > 0) == (engine_kind == "memory")


async def test_a_block_reader_cut_without_history_loses_nothing_and_its_writer_never_knows(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # No history: the server keeps the reader's subscription while it is away (kept.py), with
    # what was in flight to it. Its writer never sees it go: every send is taken.
    produced = 600
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=1000
    ) as (pub, sub, reader):
        got: list[ts.Message] = []
        taken: list[bool] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until, sub, produced, got)
            for i in range(produced):
                taken.append(await pub.send(i))
                if i in (150, 300, 450):
                    with trio.fail_after(WAIT_S):
                        await reader.wait_state("open")  # back from the cut before
                    proxy.cut() if i != 300 else proxy.reset()
                    await reader.wait_state("reconnecting")  # the next sends while away
                if i % 20 == 0:
                    await trio.sleep(0.005)
        assert all(taken)
        assert [m.data for m in got] == list(range(produced))
        assert sum(m.lost for m in got) == 0
        gaps = [m.gap for m in got if m.gap is not None]
        assert len(gaps) == reader.reconnects == 3
        assert all(gap.kind == "resumed" and gap.lost == 0 for gap in gaps)


@asynccontextmanager
async def writer_and_watchful_reader(
    server: ts.Server, proxy: TcpProxy
) -> AsyncIterator[tuple[ts.Client, ts.Client]]:
    """A writer ("daq") straight to the server, channel "AI1" created, and a reader through
    the proxy that notices a silent link within ~2 s (heartbeat 0.5 s): the half-open tests."""
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="daq") as writer,
        ts.open_client(proxy.url, name="recorder", reconnect=FAST, heartbeat=0.5) as reader,
    ):
        await writer.create_channel("AI1")
        yield writer, reader


async def test_a_half_open_connection_hands_its_subscription_to_the_client_s_new_one(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The reader's link stalls: the client hears nothing and reconnects, while the server
    # still believes the old connection alive (its idle timeout is far off). The new hello
    # replaces the old connection, whose subscription, with what it had in flight to the
    # stalled link, the resubscription takes over.
    async with (
        writer_and_watchful_reader(server, proxy) as (writer, reader),
        writer.publisher("AI1") as pub,
        reader.subscribe("AI1", policy="block", size=1000) as sub,
    ):
        await pub.wait_for_readers()
        got: list[ts.Message] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until, sub, 300, got)
            taken = [await pub.send(i) for i in range(100)]
            proxy.stall()
            taken += [await pub.send(i) for i in range(100, 200)]
            with trio.fail_after(WAIT_S):
                await reader.wait_state("reconnecting")
                await reader.wait_state("open")
            taken += [await pub.send(i) for i in range(200, 300)]
        assert all(taken)
        assert [m.data for m in got] == list(range(300))
        assert sum(m.lost for m in got) == 0
        (gap,) = [m.gap for m in got if m.gap is not None]
        assert gap.kind == "resumed" and gap.lost == 0


async def test_a_welcome_lost_in_a_second_cut_still_resumes_with_nothing_lost(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The reader's first reconnect reaches the server (its lease and kept subscription move to
    # the new connection), but the welcome with the new resume token never reaches the client:
    # the link is cut first. The client comes back with the old token: it leads to the lease
    # of the connection it never heard from, and nothing is lost.
    sessions = server.state.by_name  # the server's connections by client name

    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=1000
    ) as (pub, sub, reader):
        got: list[ts.Message] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until, sub, 300, got)
            taken = [await pub.send(i) for i in range(100)]
            first = sessions["recorder"]
            proxy.hold_replies()  # what the server says next never arrives: the welcome
            proxy.cut()
            await until_server(lambda: sessions.get("recorder") not in (None, first))
            taken += [await pub.send(i) for i in range(100, 200)]
            proxy.cut()
            proxy.release()
            with trio.fail_after(WAIT_S):
                await reader.wait_state("open")
            taken += [await pub.send(i) for i in range(200, 300)]
        assert all(taken)
        assert [m.data for m in got] == list(range(300))
        assert sum(m.lost for m in got) == 0


@pytest.mark.server_options(resume_grace_s=1.0)
async def test_a_welcome_lost_for_longer_than_the_grace_still_resumes_with_nothing_lost(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # A one-way outage: the reader's hello reaches the server, which hands its kept block
    # subscription to the new connection, but the welcome never comes back; the client
    # gives up on that connection only after its connect timeout. The kept subscription's
    # grace ran from the hello and ended first (a network tester: 621 frames lost with an
    # 8 s grace and a 10 s connect timeout). It now runs from when the new connection is
    # heard from, or passes to the next lease when it breaks first.
    sessions = server.state.by_name

    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=1000
    ) as (pub, sub, reader):
        got: list[ts.Message] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_until, sub, 300, got)
            taken = [await pub.send(i) for i in range(100)]
            first = sessions["recorder"]
            proxy.hold_replies()
            proxy.cut()
            await until_server(lambda: sessions.get("recorder") not in (None, first))
            taken += [await pub.send(i) for i in range(100, 200)]
            await trio.sleep(1.5)  # longer than the grace, the new connection still silent
            assert server.state.stats()["kept_subscriptions"] == 1
            proxy.cut()
            proxy.release()
            with trio.fail_after(WAIT_S):
                await reader.wait_state("open")
            taken += [await pub.send(i) for i in range(200, 300)]
        assert all(taken)
        assert [m.data for m in got] == list(range(300))
        assert sum(m.lost for m in got) == 0


async def test_a_subscribe_whose_reply_a_cut_lost_loses_nothing_when_repeated(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The subscribe reaches the server, its reply is lost with the connection: the client
    # repeats it on the next one as a new subscription, and the frames the server had kept
    # for the first (300 of them, its writer told of a reader) were dropped uncounted when
    # the client said `restored` (a network tester). The repeat continues that one now.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="daq") as writer,
        ts.open_client(proxy.url, name="recorder", reconnect=FAST) as reader,
    ):
        await writer.create_channel("AI1")
        async with writer.publisher("AI1") as pub, trio.open_nursery() as nursery:
            subs: list[ts.Subscription] = []

            async def subscribe() -> None:
                subs.append(await reader.open_subscription("AI1", policy="block", size=1000))

            proxy.hold_replies()
            nursery.start_soon(subscribe)
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()  # the server has it; its reply is held
            taken = [await pub.send(i) for i in range(300)]
            proxy.cut()
            proxy.release()
            with trio.fail_after(WAIT_S):
                while not subs:  # noqa: ASYNC110 - the repeated subscribe's answer
                    await trio.sleep(0.01)
            (sub,) = subs
            with trio.fail_after(WAIT_S):
                got = [await sub.receive() for _ in range(300)]
            await sub.aclose()
        assert all(taken)
        assert [m.data for m in got] == list(range(300))
        assert sum(m.lost for m in got) == 0 and sub.lost == 0


async def test_a_welcome_lost_on_the_way_back_is_not_blamed_on_the_port(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # A one-way outage after a welcome from this very URL: the timeout's message asked "is
    # it a trio_stream server's port?" (a network tester).
    async with ts.open_client(proxy.url, name="rec", reconnect=FAST, connect_timeout=0.5) as client:
        proxy.hold_replies()
        proxy.cut()
        with caplog.at_level("INFO", logger="trio_stream"):
            with trio.fail_after(WAIT_S):
                while "does not answer" not in caplog.text:  # noqa: ASYNC110 - the log
                    await trio.sleep(0.05)
        proxy.release()
        with trio.fail_after(WAIT_S):
            await client.wait_state("open")
    assert "the server, or the way back from it, does not answer" in caplog.text
    assert "is it a trio_stream server's port" not in caplog.text


@pytest.mark.server_options(resume_grace_s=60.0)
async def test_readers_kept_for_a_cut_connection_end_when_its_token_moves_elsewhere(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Several nodes: another node's NAME_MOVED says the client resumed there with the token
    # of the connection that broke here (ResumeBook.lease_moved). Only that token's lease
    # ends: a late message naming an older or another connection ends nothing.
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=5
    ) as (_, _, reader):
        token = reader._resume_token
        assert token is not None
        await cut_until_kept(server, proxy)
        resume = server.state.resume
        resume.lease_moved("recorder", "0" * len(token))  # no such connection
        resume.lease_moved("someone-else", token)  # the token is not that name's
        assert server.state.stats()["kept_subscriptions"] == 1
        resume.lease_moved("recorder", token)
        assert server.state.stats()["kept_subscriptions"] == 0


@pytest.mark.server_options(resume_grace_s=0.5)
async def test_a_block_reader_that_never_comes_back_holds_its_writer_only_for_the_grace(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=5
    ) as (pub, _, _):
        cut_at = await cut_until_kept(server, proxy)
        with trio.fail_after(WAIT_S):
            # The kept subscription takes 5, then holds the writer (its window fills).
            while await pub.send(0):
                pass
        assert server.state.stats()["kept_subscriptions"] == 0
        # Real time: a real server and proxy (autojump would jump while they are busy).
        assert trio.current_time() - cut_at >= 0.5 - 0.05
        assert pub.readers == 0


@pytest.mark.engines("memory", "redis")
@pytest.mark.server_options(resume_grace_s=5.0)
async def test_a_kept_subscription_ended_by_its_block_timeout_tells_its_client_why(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=2, block_timeout=0.3
    ) as (pub, sub, reader):
        proxy.refuse()
        proxy.cut()
        await reader.wait_state("reconnecting")
        sent = 0
        with trio.fail_after(WAIT_S):
            while await pub.send(sent):  # held by the kept subscription, then let go
                sent += 1
        proxy.accept()
        got: list[int] = []
        with trio.fail_after(WAIT_S):
            await reader.wait_state("open")
            with pytest.raises(ts.LimitExceeded, match="block_timeout"):
                while True:
                    got.append((await sub.receive()).data)
        # What was on its way to it when the link broke comes first (the kept subscription
        # sends it again), then the end, and what it loses is told by a notice before the
        # end (the frames its buffer held were dropped uncounted). Not all of ``sent``: a
        # writer's sends after the end, before it heard of it, went to no reader.
        assert got == list(range(len(got)))
        assert 0 < len(got) + sub.lost <= sent


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_a_channel_ended_as_its_reader_s_link_broke_still_ends_its_subscription(
    server: ts.Server, proxy: TcpProxy, fault: str
) -> None:
    # The server ends the subscription (its channel is deleted) while it still believes the
    # reader's connection alive, so the sub_end goes into a connection that is gone. The
    # resubscription hears it again: the reader's iteration ends, it does not wait for ever.
    async with (
        writer_and_watchful_reader(server, proxy) as (writer, reader),
        reader.subscribe("AI1", policy="block") as sub,
    ):
        if fault == "cut":
            proxy.refuse()
            proxy.cut()
        else:
            proxy.stall()
        await writer.delete_channel("AI1")
        proxy.accept()
        with trio.fail_after(WAIT_S):
            async for _ in sub:
                pytest.fail("nothing was published")
        assert reader.reconnects == 1 and sub.end_reason is not None


async def test_a_size_one_reader_resumes_with_only_the_newest_frame(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with writer_and_proxied_reader(
        server,
        proxy,
        history=50,
        reader_name="dashboard",
        reconnect=ts.Reconnect(initial=0.5),
        policy="drop_oldest",
        size=1,
    ) as (pub, sub, reader):
        await pub.send(0)
        assert (await sub.receive()).seq == 1
        proxy.cut()
        await reader.wait_state("reconnecting")
        for i in range(1, 31):
            await pub.send(i)
        with trio.fail_after(WAIT_S):
            msg = await sub.receive()
        assert msg.data == 30 and msg.seq == 31  # only the newest, through size=1
        assert msg.gap == ts.Gap("resumed", lost=29, recovered=1)
        assert msg.lost == 29


# -- a resume after losses a `lost` notice reported --------------------------------------------
def assert_lost_is_the_gap(messages: list[ts.Message], produced: int, sub: ts.Subscription) -> None:
    """Every message's ``lost`` is the seq gap before it (no decimation here), and what was
    received and what ``sub.lost`` counts make up every frame produced, each once."""
    assert_exact(messages, produced)
    previous = 0
    wrong = []
    for m in messages:
        if m.lost != m.seq - previous - 1:
            wrong.append((previous, m.seq, m.lost, m.gap))
        previous = m.seq
    assert not wrong, f"msg.lost is not the seq gap (previous, seq, lost, gap): {wrong[:4]}"
    assert len(messages) + sub.lost == produced


async def cut_and_resume(proxy: TcpProxy, reader: ts.Client, pub: ts.Publisher) -> None:
    """Cut the reader's connection, wait until the server has dropped its subscription, and
    let it resume: back when the channel has its reader again."""
    proxy.refuse()
    proxy.cut()
    await reader.wait_state("reconnecting")
    with trio.fail_after(WAIT_S):
        while pub.readers:  # noqa: ASYNC110 - the server's count, sent to the writer
            await trio.sleep(0.01)
    proxy.accept()
    with trio.fail_after(WAIT_S):
        await pub.wait_for_readers()


@NOTHING_KEPT
async def test_a_block_reader_resumes_with_every_frame_the_history_holds_past_its_size(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # A recorder (block, size 5) is away while 28 frames are published. The history holds
    # them (through Redis, the channel's stream) and has no writer to hold back: all 28 come
    # back, past its size, none counted lost (it used to get 5 and count 23 lost). Frames
    # published while it drains wait for room, holding the writer back, as for any block
    # reader; a second resume asks for exactly what follows.
    async with writer_and_proxied_reader(
        server, proxy, history=1000, reconnect=ts.Reconnect(initial=0.05), policy="block", size=5
    ) as (pub, sub, reader):
        got: list[ts.Message] = []
        for i in range(2):
            await pub.send(i)
        await read_until(sub, 2, got)
        proxy.refuse()
        proxy.cut()
        await reader.wait_state("reconnecting")
        for i in range(2, 30):  # while the reader is away: the history holds them
            await pub.send(i)
        await pub.wait_acknowledged()
        proxy.accept()
        await read_until(sub, 30, got)
        assert got[2].gap == ts.Gap("resumed", lost=0, recovered=28)
        for i in range(30, 60):  # sent at once: held back until the buffer is below size
            await pub.send(i)
        await read_until(sub, 60, got)
        assert [m.data for m in got] == list(range(60))
        assert sub.lost == 0

        await cut_and_resume(proxy, reader, pub)
        for i in range(60, 65):
            await pub.send(i)
        await read_until(sub, 65, got)
        assert [m.data for m in got] == list(range(65))
        assert_lost_is_the_gap(got, 65, sub)
        assert sub.lost == 0


@NOTHING_KEPT
async def test_a_block_reader_away_for_thousands_of_frames_gets_every_one_the_history_holds(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # A recorder away for 2,000 frames (a node's fail-over takes ~3 s: 3,000 frames at
    # 1 kHz). Through Redis a resume replayed the newest 1,000 and counted the rest lost,
    # though the stream held them all.
    away = 2000
    async with writer_and_proxied_reader(
        server, proxy, history=3000, reconnect=ts.Reconnect(initial=0.05), policy="block", size=50
    ) as (pub, sub, reader):
        await pub.send(0)
        got = [await sub.receive()]
        proxy.refuse()
        proxy.cut()
        await reader.wait_state("reconnecting")
        for i in range(1, away + 1):
            await pub.send(i)
        await pub.wait_acknowledged()
        proxy.accept()
        await read_until(sub, away + 1, got)
        assert [m.data for m in got] == list(range(away + 1))
        assert got[1].gap == ts.Gap("resumed", lost=0, recovered=away)
        assert sub.lost == 0


@NOTHING_KEPT
async def test_a_resume_after_a_drop_newest_loss_notice_neither_replays_nor_recounts(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # drop_newest keeps the oldest frames: the newest ones of a burst are lost with nothing
    # after them, and a `lost` notice reports them. A resume used to ask for the frames after
    # the last one received: the history replayed the ones counted lost, and the first of
    # them carried the notice's count although it directly followed the one before it.
    produced = 60
    async with writer_and_proxied_reader(
        server,
        proxy,
        history=1000,
        reader_name="dashboard",
        reconnect=ts.Reconnect(initial=0.05),
        policy="drop_newest",
        size=5,
    ) as (pub, sub, reader):
        for i in range(produced // 2):  # a burst the reader does not read meanwhile
            await pub.send(i)
        await pub.wait_acknowledged()
        got: list[ts.Message] = []
        with trio.fail_after(WAIT_S):
            while not sub.lost:  # counted once every message before the notice is read
                got.append(await sub.receive())
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()  # the loss came in a notice, after the last frame
        assert got[-1].seq < produced // 2
        assert len(got) + sub.lost == produced // 2

        await cut_and_resume(proxy, reader, pub)
        for i in range(produced // 2, produced):
            await pub.send(i)
            if i % 5 == 0:  # the reader keeps up now: nothing more is lost
                await read_until(sub, i + 1, got)
        await read_until(sub, produced, got)
        assert_lost_is_the_gap(got, produced, sub)
        after_resume = next(m for m in got if m.seq > produced // 2)
        assert after_resume.seq == produced // 2 + 1
        assert after_resume.gap == ts.Gap("resumed", lost=after_resume.lost, recovered=0)


async def test_a_resume_after_a_loss_notice_still_gets_the_frame_max_rate_held_back(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # A `lost` notice accounts the reader up to the frame max_rate holds back, not past it:
    # that frame comes later (when its interval is over), so a resume must still ask for it.
    interval_s = 0.5
    async with writer_and_proxied_reader(
        server,
        proxy,
        history=100,
        reader_name="dashboard",
        reconnect=ts.Reconnect(initial=0.05),
        policy="drop_newest",
        size=1,
        max_rate=1 / interval_s,
    ) as (pub, sub, reader):
        # Not read yet: 1 goes out (window 1), 2 waits in the buffer (size 1), 3 is lost,
        # 4 is held back for the next interval.
        for i in range(3):
            if i:
                await trio.sleep(interval_s * 1.2)  # each one due
            await pub.send(i)
            await pub.wait_acknowledged()
        await pub.send(3)
        await pub.wait_acknowledged()
        got = [await sub.receive(), await sub.receive()]  # 1, 2, then the notice
        with trio.fail_after(interval_s / 2):  # before 4 is released
            while not sub.lost:  # noqa: ASYNC110 - counted when the notice comes
                await trio.sleep(0.005)
        proxy.cut()
        await reader.wait_state("reconnecting")
        with trio.fail_after(WAIT_S):
            got.append(await sub.receive())
        assert [(m.seq, m.lost) for m in got] == [(1, 0), (2, 0), (4, 1)]
        assert got[-1].gap == ts.Gap("resumed", lost=1, recovered=1)


async def test_a_restarted_recorder_continues_from_its_saved_position(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="daq") as writer:
        await writer.create_channel("AI1", history=100)
        async with writer.publisher("AI1") as pub:
            async with (
                ts.open_client(server.tcp_url, name="recorder") as reader,
                reader.subscribe("AI1", policy="block", size=100) as sub,
            ):
                await pub.wait_for_readers()
                for i in range(10):
                    await pub.send(i)
                got = [await sub.receive() for _ in range(10)]
                saved = sub.position
            assert saved.seq == 10 and got[-1].seq == 10
            for i in range(10, 25):  # while the recorder is down
                assert await pub.send(i)  # history wants them
            async with (
                ts.open_client(server.tcp_url, name="recorder") as reader,
                reader.subscribe("AI1", policy="block", size=100, since=saved) as sub,
            ):
                first = await sub.receive()
                rest = [await sub.receive() for _ in range(14)]
            assert first.seq == 11 and first.gap == ts.Gap("resumed", lost=0, recovered=15)
            assert [m.data for m in [first, *rest]] == list(range(10, 25))


async def test_a_position_of_another_epoch_is_a_reset(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="daq") as client:
        await client.create_channel("AI1", history=5)
        async with client.publisher("AI1") as pub:
            for i in range(3):
                await pub.send(i)
            # Published means acknowledged: across Redis, frames are in the stream only then.
            await pub.wait_acknowledged()
        stale = ts.Position("0123456789abcdef", 2)
        async with client.subscribe("AI1", since=stale) as sub:
            msg = await sub.receive()
        assert msg.seq == 1 and msg.gap == ts.Gap("reset", lost=None, recovered=3)


async def test_a_channel_with_history_wants_frames_without_readers(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="daq") as client:
        await client.create_channel("setpoint", history=1)
        await client.create_channel("plain")
        async with client.publisher("setpoint") as pub, client.publisher("plain") as plain:
            assert pub.readers == 0 and pub.wanted and not plain.wanted
            assert await pub.send(1.5) and await pub.send(2.5)
            assert not await plain.send(1.0)
            await pub.wait_acknowledged()
        async with client.subscribe("setpoint") as sub:
            assert (await sub.receive()).data == 2.5


# -- writers, owners, RPC --------------------------------------------------------------------
async def test_frames_sent_while_disconnected_go_out_on_reconnect_once(
    server: ts.Server, proxy: TcpProxy
) -> None:
    assert server.tcp_url is not None
    produced = 200
    async with (
        ts.open_client(proxy.url, name="daq") as writer,
        ts.open_client(server.tcp_url, name="recorder") as reader,
    ):
        await writer.create_channel("AI1", history=10)
        async with (
            reader.subscribe("AI1", policy="block", size=1000) as sub,
            writer.publisher("AI1") as pub,
        ):
            await pub.wait_for_readers()
            got: list[ts.Message] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_until, sub, produced, got)
                for i in range(produced):
                    if i == 50:
                        proxy.cut()
                    await pub.send(i)  # waits once the window is full, never raises
                await pub.wait_acknowledged()
        # The owner's channel outlived the blip (grace period): the reader never noticed.
        assert [m.data for m in got] == list(range(produced))
        assert all(m.gap is None and m.lost == 0 for m in got)
        assert writer.reconnects == 1


async def test_a_writer_whose_client_gives_up_reconnecting_is_told_what_was_dropped(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # send() took five values while the client reconnected; it gave up, and leaving the
    # publisher's block on the error dropped them without a word.
    async with ts.open_client(
        proxy.url, name="daq", reconnect=ts.Reconnect(initial=0.05, give_up_after=0.3)
    ) as writer:
        await writer.create_channel("AI1", history=10)  # it wants frames with no reader
        with pytest.raises(ts.ConnectionClosed):
            async with writer.publisher("AI1") as pub:
                proxy.refuse()
                proxy.cut()
                with trio.fail_after(WAIT_S):
                    await writer.wait_state("reconnecting")
                    for i in range(5):
                        await pub.send(i)
                    await writer.wait_state("closed")
                await pub.send(5)  # the client is closed for good: ConnectionClosed
    said = [r.getMessage() for r in caplog.records if "were not delivered" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("5 values sent to 'AI1' were not delivered")


async def test_a_client_closed_while_reconnecting_says_its_open_publishers_drops(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # client.publish()'s own publisher is open when the client's block ends: the client's
    # close waits for no connection, and said "a close waits 10 s for it" after 0.2 s.
    async with ts.open_client(proxy.url, name="daq") as writer:
        await writer.create_channel("AI1", history=10)
        await writer.publish("AI1", 0)
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await writer.wait_state("reconnecting")
        for i in range(3):
            await writer.publish("AI1", i)
        start = trio.current_time()
    assert trio.current_time() - start < 1.0
    said = [r.getMessage() for r in caplog.records if "were not delivered" in r.getMessage()]
    assert len(said) == 1, said
    # (3, or 4 with the first one if its acknowledgement had not come before the cut)
    assert re.match(
        r"[34] values sent to 'AI1' were not delivered: .* the client closed "
        r"while it reconnected",
        said[0],
    ), said


class Abandon(Exception):
    pass


@pytest.mark.parametrize("leaving", ["on an error", "by aclose"])
async def test_values_a_connection_lost_for_good_dropped_are_said_once(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture, leaving: str
) -> None:
    # Written and not acknowledged (a block reader holds them back) when the connection went
    # for good: the publisher's close said them, and the client's close again (an operator
    # adding the warnings up counted twice the loss). Said by aclose(), they are not raised
    # again as the block ends (a lab tester's code after the block never ran).
    assert server.tcp_url is not None
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(proxy.url, name="daq", reconnect=False) as writer,
            ts.open_client(server.tcp_url, name="rec") as reader,
        ):
            await writer.create_channel("AI1")
            async with reader.subscribe("AI1", policy="block", size=1, window=1):
                with contextlib.suppress(Abandon):
                    async with writer.publisher("AI1") as pub:
                        await pub.wait_for_readers()
                        for i in range(8):
                            await pub.send(i)
                        while pub.unconfirmed < 6:  # noqa: ASYNC110 - the server's acks
                            await trio.sleep(0.01)
                        proxy.cut()
                        await writer.wait_state("closed")
                        if leaving == "on an error":
                            raise Abandon
                        with pytest.raises(ts.ConnectionClosed, match="were not delivered"):
                            await pub.aclose()
    said = [r.getMessage() for r in caplog.records if "were not delivered" in r.getMessage()]
    assert len(said) == (1 if leaving == "on an error" else 0), said


async def test_calls_made_while_reconnecting_wait_for_the_connection(
    server: ts.Server, proxy: TcpProxy
) -> None:
    assert server.tcp_url is not None

    class Daq:
        def rpc_echo(self, value: object) -> object:
            return value

    async with (
        ts.open_client(server.tcp_url, name="daq") as provider,
        ts.open_client(proxy.url, name="caller") as caller,
    ):
        provider.expose(Daq())
        daq = await caller.rpc("daq")
        assert await daq.echo(1) == 1
        proxy.refuse()
        proxy.cut()
        await caller.wait_state("reconnecting")
        async with trio.open_nursery() as nursery:
            results: list[object] = []

            async def call_meanwhile() -> None:
                results.append(await daq.call("echo", 2, timeout=WAIT_S))

            nursery.start_soon(call_meanwhile)
            await trio.sleep(0.3)
            assert not results  # it waits for the connection, within its own timeout
            proxy.accept()
        assert results == [2]
        assert caller.reconnects == 1


async def test_a_half_open_connection_is_replaced_without_a_name_race(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with ts.open_client(proxy.url, name="daq", heartbeat=0.5) as client:
        await client.create_channel("AI1")
        proxy.stall()  # the server still believes the old connection alive
        with trio.fail_after(WAIT_S):
            await client.wait_state("reconnecting")
            await client.wait_state("open")
        assert client.name == "daq"
        # The stale session was replaced, its channel is ours again (same epoch).
        channels = {c.name: c for c in await client.channels()}
        assert channels["AI1"].owner == "daq"
        names = [c.name for c in await client.clients()]
        assert names.count("daq") == 1


async def test_a_replaced_connection_leaves_the_list_of_clients_before_its_successor_joins(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The replaced session left the server's list only once its tasks had ended (2-124 ms
    # with a channel and a publisher): `clients` listed the name twice meanwhile, an admin
    # disconnect of the old id answered as if it had disconnected someone, and $clients said
    # the new connection came before the old one left (an outside protocol implementer).
    assert server.tcp_url
    async with (
        ts.open_client(server.tcp_url, name="watch") as watch,
        watch.subscribe("$clients", policy="unbounded") as events,
        ts.open_client(proxy.url, name="daq", reconnect=FAST, heartbeat=0.5) as client,
    ):
        await client.create_channel("AI1")
        async with client.publisher("AI1") as pub:
            for round_ in range(5):
                await pub.send(round_)
                proxy.stall()  # the server still believes this connection alive
                with trio.fail_after(WAIT_S):
                    await client.wait_state("reconnecting")
                    await client.wait_state("open")
                assert [c.name for c in await watch.clients()].count("daq") == 1
        seen: list[tuple[str, int]] = []
        with trio.move_on_after(0.5):
            async for msg in events:
                if msg.data["name"] == "daq":
                    seen.append((msg.data["event"], msg.data["id"]))
    assert [kind for kind, _ in seen] == ["connected"] + ["disconnected", "connected"] * 5, seen
    for old, new in zip(seen[::2], seen[1::2], strict=False):
        assert old[1] == new[1]  # each one left before the next came


async def test_half_open_connections_replaced_in_turn_leave_no_chain_of_old_sessions(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Each take-over of a half-open connection moved its lease to the new session, and the
    # lease still named the old session: new -> lease -> old -> its lease -> older ..., a
    # chain that grew by a whole Session (its outbox, its buffers) per take-over for as long
    # as the client stayed connected (a laptop on a flaky link).
    import gc
    import weakref

    old_sessions: list[weakref.ref[Any]] = []
    async with (
        ts.open_client(proxy.url, name="daq", reconnect=FAST, heartbeat=0.5) as client,
        ts.open_client(server.tcp_url or "", name="w") as writer,
    ):
        await writer.create_channel("AI1")
        async with (
            writer.publisher("AI1") as pub,
            client.subscribe("AI1", policy="block", size=100) as sub,
        ):
            for value in range(3):
                await pub.wait_for_readers()
                await pub.send(value)
                assert (await sub.receive()).data == value
                old_sessions.append(weakref.ref(server.state.by_name["daq"]))
                proxy.stall()  # the server still believes this connection alive
                with trio.fail_after(WAIT_S):
                    await client.wait_state("reconnecting")
                    await client.wait_state("open")
            await pub.send(3)
            with trio.fail_after(WAIT_S):
                assert (await sub.receive()).data == 3
            gc.collect()
            alive = [ref() for ref in old_sessions if ref() is not None]
            assert not alive, f"{len(alive)} replaced sessions still held"


async def test_an_unnamed_client_gets_its_name_back_from_the_same_server(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with ts.open_client(proxy.url, heartbeat=0.5) as client:
        given = client.name
        assert given.startswith("client-")
        await client.create_channel("AI1")
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await client.wait_state("reconnecting")
            await client.wait_state("open")
        assert client.name == given  # the resume token carried it, not the hello
        channels = {c.name: c for c in await client.channels()}
        assert channels["AI1"].owner == given
        assert [c.name for c in await client.clients()] == [given]


async def test_an_unnamed_client_takes_a_new_name_from_a_restarted_server() -> None:
    """A restarted server counts its unnamed clients from 1 again, so the old client's
    client-N may be a newcomer's by the time the old client is back: it comes back under a
    name of the new server's, and neither gets NameInUse."""
    async with server_process() as (process, url):
        port = port_of(url)
        async with (
            open_proxy(url) as proxy,
            ts.open_client(proxy.url, reconnect=FAST) as old,
        ):
            old_name = old.name
            proxy.refuse()  # the newcomer reaches the restarted server first
            process.kill()
            await process.wait()
            async with (
                server_process(tcp_port=port) as (process2, _),
                ts.open_client(url) as newcomer,
            ):
                assert newcomer.name == old_name  # the collision this is about
                proxy.accept()
                with trio.fail_after(WAIT_S):
                    assert await old.wait_state("open", "closed") == "open"
                assert old.name != old_name and old.name.startswith("client-")
                names = sorted(c.name for c in await newcomer.clients())
                assert names == sorted([old_name, old.name])
                process2.send_signal(signal.SIGTERM)


async def test_calls_in_flight_fail_with_a_clear_error_when_the_connection_drops(
    server: ts.Server, proxy: TcpProxy
) -> None:
    class Slow:
        async def rpc_wait(self) -> None:
            await trio.sleep_forever()

    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="slow") as provider,
        ts.open_client(proxy.url, name="caller") as caller,
    ):
        provider.expose(Slow())
        slow = await caller.rpc("slow", timeout=None)
        async with trio.open_nursery() as nursery:
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await slow.wait()
                except ts.ConnectionClosed as exc:
                    errors.append(exc)

            nursery.start_soon(call)
            await trio.sleep(0.2)
            proxy.cut()
        assert len(errors) == 1 and "at most once" in str(errors[0])
        await caller.wait_state("open")


async def test_reconnect_false_keeps_fail_fast(server: ts.Server, proxy: TcpProxy) -> None:
    async with ts.open_client(proxy.url, name="once", reconnect=False) as client:
        await client.create_channel("AI1")
        async with client.subscribe("AI1") as sub:
            proxy.cut()
            with pytest.raises(ts.ConnectionClosed), trio.fail_after(WAIT_S):
                await sub.receive()
        assert client.state == "closed" and client.reconnects == 0


async def test_a_client_gives_up_after_give_up_after(server: ts.Server, proxy: TcpProxy) -> None:
    policy = ts.Reconnect(initial=0.05, maximum=0.1, give_up_after=0.5)
    async with ts.open_client(proxy.url, name="brief", reconnect=policy) as client:
        async with client.subscribe("$stats") as sub:
            proxy.refuse()
            proxy.cut()
            # It said only how the connection ended, not that the client stopped trying.
            gave_up = r"; the client gave up reconnecting after 0\.5 s \(Reconnect\.give_up_after\)"
            with pytest.raises(ts.ConnectionClosed, match=gave_up), trio.fail_after(WAIT_S):
                async for _ in sub:
                    pass
        assert client.state == "closed"
        with pytest.raises(ts.ConnectionClosed, match=gave_up):
            await client.channels()


async def test_a_list_of_urls_is_tried_in_turn(server: ts.Server, proxy: TcpProxy) -> None:
    assert server.tcp_url is not None
    dead = "tcp://127.0.0.1:1"
    async with ts.open_client([dead, proxy.url], name="listed") as client:
        assert client.url == proxy.url
        proxy.cut()
        await client.wait_state("reconnecting")
        with trio.fail_after(WAIT_S):
            await client.wait_state("open")
        assert client.url == proxy.url and client.reconnects == 1


async def test_an_auth_error_on_reconnect_is_final(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, token="secret")
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, token="secret") as client,
    ):
        client._token = "wrong"  # as if the server's token changed meanwhile
        proxy.cut()
        with trio.fail_after(WAIT_S):
            assert await client.wait_state("closed") == "closed"
    await server.aclose()


# -- restarts and many clients ---------------------------------------------------------------
async def test_a_server_restart_is_a_reset_and_everything_comes_back_within_2_s() -> None:
    class Daq:
        def rpc_ping(self) -> str:
            return "pong"

    async with server_process() as (process, url):
        port = port_of(url)
        async with (
            ts.open_client(url, name="daq") as writer,
            ts.open_client(url, name="recorder") as reader,
        ):
            await writer.create_channel("AI1", history=10)
            writer.expose(Daq())
            async with writer.publisher("AI1") as pub, reader.subscribe("AI1", size=100) as sub:
                await pub.wait_for_readers()
                await pub.send("before")
                assert (await sub.receive()).data == "before"
                # Acknowledged: never sent again. (An unacknowledged frame would be: the new
                # server knows nothing of it, and its readers see a reset anyway.)
                await pub.wait_acknowledged()
                process.kill()  # SIGKILL: no goodbye, nothing saved
                await process.wait()
                await reader.wait_state("reconnecting")
                async with server_process(tcp_port=port) as (process2, _):
                    restarted = trio.current_time()
                    with trio.fail_after(2.0):
                        await writer.wait_state("open")
                        await reader.wait_state("open")
                        await pub.wait_for_readers()
                        daq = await reader.rpc("daq")
                        assert await daq.ping() == "pong"
                    assert await pub.send("after")
                    with trio.fail_after(2.0):
                        msg = await sub.receive()
                    assert trio.current_time() - restarted < 2.0 + 1.0
                    assert msg.data == "after" and msg.seq == 1
                    assert msg.gap is not None and msg.gap.kind == "reset"
                    assert msg.gap.lost is None
                    await acknowledged_then_stop(pub, process2)


async def test_a_writer_back_before_its_readers_after_a_restart_holds_its_frames_for_them() -> None:
    """The writer's client comes back first and re-creates its channel, its block reader's
    client only a second later: what the writer sent while the server was down, and what it
    sends before the reader is back, reach the reader (after the reset), none lost."""
    async with server_process() as (process, url):
        port = port_of(url)
        async with (
            open_proxy(url) as proxy,
            ts.open_client(url, name="daq", reconnect=FAST) as writer,
            ts.open_client(proxy.url, name="recorder", reconnect=FAST) as reader,
        ):
            await writer.create_channel("AI1")
            async with (
                writer.publisher("AI1") as pub,
                reader.subscribe("AI1", policy="block", size=1000) as sub,
            ):
                await pub.wait_for_readers()
                assert await pub.send(-1)
                assert (await sub.receive()).data == -1
                await pub.wait_acknowledged()
                proxy.refuse()  # the reader's way back opens a second after the server's
                process.kill()
                await process.wait()
                with trio.fail_after(WAIT_S):
                    await writer.wait_state("reconnecting")
                sent_while_down = [await pub.send(i) for i in range(100)]
                async with server_process(tcp_port=port) as (process2, _):
                    with trio.fail_after(WAIT_S):
                        await writer.wait_state("open")
                    assert pub.readers == 0  # the channel is back, its reader not yet
                    sent_before_reader = [await pub.send(i) for i in range(100, 200)]
                    await trio.sleep(1.0)
                    proxy.accept()
                    got: list[ts.Message] = []
                    with trio.fail_after(WAIT_S):
                        while len(got) < 200:
                            got.append(await sub.receive())
                    await acknowledged_then_stop(pub, process2)
    assert all(sent_while_down) and all(sent_before_reader)
    assert [m.data for m in got] == list(range(200))
    assert got[0].gap is not None and got[0].gap.kind == "reset"
    assert sum(m.lost for m in got) == 0


@asynccontextmanager
async def a_hold(
    server: ts.Server, proxy: TcpProxy, maximum: float
) -> AsyncIterator[tuple[ts.Client, ts.Publisher, TcpProxy, ts.Subscription]]:
    """The hold tests' set-up: a writer (through ``proxy``) and a block reader (through a
    proxy of its own) on "AI1"; both cut, the reader's way back refused: the writer is back,
    its publisher holding its window. Yields the writer, its publisher (closed by the test),
    the reader's proxy (``accept()`` lets the reader back) and the subscription."""
    assert server.tcp_url is not None
    backoff = ts.Reconnect(initial=0.05, maximum=maximum)
    async with (
        open_proxy(server.tcp_url) as reader_proxy,
        ts.open_client(proxy.url, name="daq", reconnect=backoff) as writer,
        ts.open_client(reader_proxy.url, name="recorder", reconnect=backoff) as reader,
    ):
        await writer.create_channel("AI1")
        pub = await writer.open_publisher("AI1")
        async with reader.subscribe("AI1", policy="block") as sub:
            await pub.wait_for_readers()
            reader_proxy.refuse()
            reader_proxy.cut()
            proxy.cut()
            with trio.fail_after(WAIT_S):
                await writer.wait_state("reconnecting")
                await writer.wait_state("open")
            assert pub.readers == 0  # the reader's subscription went with its connection
            yield writer, pub, reader_proxy, sub


@NOTHING_KEPT
async def test_a_writer_holds_its_frames_for_missing_readers_only_for_the_grace(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Its reader never comes back: the writer's window goes out (to nobody) once the grace
    (the reconnect's longest wait and a second) has passed; ``send`` never waits longer.
    That is said in a warning, with how many values it loses (it was an info line)."""
    async with a_hold(server, proxy, maximum=0.2) as (_, pub, _, _):
        reopened = trio.current_time()
        assert all([await pub.send(i) for i in range(50)])  # held, not dropped
        with trio.move_on_after(0.5) as grace_lasts:
            await pub.wait_acknowledged()
        assert grace_lasts.cancelled_caught, "nothing goes out while the grace lasts"
        with trio.fail_after(WAIT_S):
            await pub.wait_acknowledged()
        # On trio's real clock: the hold runs over real sockets and a proxy (autojump would
        # jump while they are busy). Not before the grace (the property), and not stuck
        # after it (1 s of slack for a loaded machine).
        held = trio.current_time() - reopened
        grace = 0.2 + RETRY_MAX_S
        assert grace - 0.05 < held < grace + 1.0, held
        assert not await pub.send(50)  # no reader: not wanted, as before the cut
        await pub.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "publisher of 'AI1': none of its 1 readers came back within 1.2 s: the 50 values "
        "held for them go to a channel without readers, and are lost"
    ) in warnings, warnings


@NOTHING_KEPT
async def test_a_hold_outlives_a_second_cut_and_a_close_waits_for_the_readers(
    server: ts.Server, proxy: TcpProxy
) -> None:
    """Cut again while holding: what ``send`` takes meanwhile still waits for the reader
    (not refused for lack of readers); ``aclose`` during the hold waits for the reader too,
    so a writer that ends right after a restart does not send its last frames to nobody."""
    # maximum 2 s: a grace of 3 s, the reader back well within it
    async with a_hold(server, proxy, maximum=2.0) as (writer, pub, reader_proxy, sub):
        with trio.fail_after(WAIT_S):
            for value in range(20):
                if value == 10:  # cut the writer again, during the hold
                    proxy.cut()
                    await writer.wait_state("reconnecting")
                assert await pub.send(value), value
            await writer.wait_state("open")
        got: list[int] = []
        closed = trio.Event()

        async def close() -> None:
            await pub.aclose()
            closed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            await trio.sleep(0.3)
            assert not closed.is_set(), "aclose() waits for the hold's end"
            reader_proxy.accept()
            with trio.fail_after(WAIT_S):
                while len(got) < 20:
                    got.append((await sub.receive()).data)
    assert got == list(range(20))


@NOTHING_KEPT
async def test_a_close_cancelled_while_it_waits_for_a_hold_still_closes(
    server: ts.Server, proxy: TcpProxy
) -> None:
    async with a_hold(server, proxy, maximum=2.0) as (writer, pub, _, _):
        assert await pub.send(1)  # held
        with trio.move_on_after(0.2) as waited:
            await pub.aclose()
        assert waited.cancelled_caught  # it waited for the reader...
        assert not pub.is_open  # ...and closed all the same
        # The close went out and was answered (shielded) before aclose() returned.
        assert [c.writers for c in await writer.channels() if c.name == "AI1"] == [0]


async def test_a_sync_client_publisher_holds_its_values_for_a_late_reader(
    server: ts.Server, proxy: TcpProxy
) -> None:
    assert server.tcp_url is not None
    backoff = ts.Reconnect(initial=0.05, maximum=2.0)
    async with (
        open_proxy(server.tcp_url) as reader_proxy,
        ts.open_client(reader_proxy.url, name="recorder", reconnect=backoff) as reader,
    ):

        def write() -> list[bool]:
            with SyncClient(proxy.url, name="script", reconnect=backoff) as c:
                c.create_channel("AI1")
                trio.from_thread.run(sub_ready.wait)
                with c.publisher("AI1") as pub:
                    pub.wait_for_readers(timeout=WAIT_S)
                    trio.from_thread.run_sync(reader_proxy.refuse)
                    trio.from_thread.run_sync(reader_proxy.cut)
                    trio.from_thread.run_sync(proxy.cut)
                    c.wait_state("reconnecting", timeout=WAIT_S)
                    c.wait_state("open", timeout=WAIT_S)
                    sent = [pub.send(i) for i in range(30)]  # the reader is not back yet
                    trio.from_thread.run_sync(reader_proxy.accept)
                    c.flush(timeout=WAIT_S)
                    return sent

        sub_ready = trio.Event()
        got: list[int] = []

        async def read() -> None:
            async with reader.subscribe("AI1", policy="block", wait_channel=True) as sub:
                sub_ready.set()
                with trio.fail_after(WAIT_S):
                    while len(got) < 30:
                        got.append((await sub.receive()).data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with trio.fail_after(WAIT_S * 2):
                sent = await trio.to_thread.run_sync(write, abandon_on_cancel=True)
    assert all(sent) and got == list(range(30))


async def test_a_publisher_closed_while_reconnecting_delivers_first(
    server: ts.Server, proxy: TcpProxy
) -> None:
    """What send() took while the connection was down goes out when it is back, before the
    close: the close waits for the connection (within CLOSE_DELIVER_S)."""
    assert server.tcp_url is not None
    async with (
        ts.open_client(proxy.url, name="daq", reconnect=FAST) as writer,
        ts.open_client(server.tcp_url, name="recorder") as reader,
    ):
        await writer.create_channel("AI1")
        async with reader.subscribe("AI1", policy="block") as sub:
            pub = await writer.open_publisher("AI1")
            await pub.wait_for_readers()
            proxy.refuse()
            proxy.cut()
            with trio.fail_after(WAIT_S):
                await writer.wait_state("reconnecting")
            assert all([await pub.send(i) for i in range(10)])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pub.aclose)
                await trio.sleep(0.5)  # the close waits
                proxy.accept()
            with trio.fail_after(WAIT_S):
                got = [(await sub.receive()).data for _ in range(10)]
    assert got == list(range(10))


async def test_a_publisher_closed_while_the_connection_stays_down_says_what_it_drops(
    server: ts.Server, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trio_stream._publisher, "CLOSE_DELIVER_S", 0.5)
    assert server.tcp_url is not None
    async with (
        ts.open_client(proxy.url, name="daq", reconnect=FAST) as writer,
        ts.open_client(server.tcp_url, name="recorder") as reader,
    ):
        await writer.create_channel("AI1")
        pub = await writer.open_publisher("AI1")
        await reader.open_subscription("AI1", policy="block")
        await pub.wait_for_readers()
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await writer.wait_state("reconnecting")
        for i in range(7):
            assert await pub.send(i)  # they wait in the window for the connection
        started = trio.current_time()
        with pytest.raises(
            ts.ConnectionClosed, match=r"^7 values sent to 'AI1' were not delivered"
        ):
            await pub.aclose()
        assert 0.5 <= trio.current_time() - started < 0.5 + 2.0
        assert not pub.is_open


async def test_a_sync_publisher_and_client_closed_while_the_server_is_gone_say_what_they_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leaving a SyncClient publisher, or the SyncClient, while its server is gone for good:
    each waits its bound, then raises ConnectionClosed with what was not delivered."""
    monkeypatch.setattr(trio_stream._publisher, "CLOSE_DELIVER_S", 0.5)
    monkeypatch.setattr(trio_stream.sync, "CLOSE_FLUSH_S", 0.5)

    async with server_process() as (process, url):

        async def kill() -> None:
            process.kill()
            await process.wait()

        def write() -> tuple[float, str, str]:
            c = SyncClient(url, name="script", reconnect=FAST)
            c.create_channel("AI1")
            pub = c.publisher("AI1")
            other = c.publisher("AI1")  # left open: the SyncClient's close counts its values
            with SyncClient(url, name="recorder") as reader:
                reader.subscribe("AI1", policy="block")
                pub.wait_for_readers(timeout=WAIT_S)
                trio.from_thread.run(kill)
            c.wait_state("reconnecting", timeout=WAIT_S)
            for i in range(5):
                pub.send(i)
            started = time.monotonic()
            with pytest.raises(ts.ConnectionClosed) as closing_pub:
                pub.close()
            took = time.monotonic() - started
            for i in range(3):
                other.send(i)
            with pytest.raises(ts.ConnectionClosed) as closing_client:
                c.close()
            return took, str(closing_pub.value), str(closing_client.value)

        with trio.fail_after(WAIT_S):
            took, pub_error, client_error = await trio.to_thread.run_sync(write)
    assert took < 0.5 * 2 + 2.0, took  # the flush's bound, then the close's
    assert pub_error.startswith("5 values sent to 'AI1' were not delivered"), pub_error
    assert client_error.startswith("3 published values to 'AI1' were not sent"), client_error


async def test_two_hundred_clients_do_not_come_back_in_the_same_200_ms(
    server: ts.Server, proxy: TcpProxy
) -> None:
    count = 200
    async with trio.open_nursery() as nursery:
        opened = trio.Semaphore(0)
        done = trio.Event()
        clients: list[ts.Client] = []

        async def one(i: int) -> None:
            async with ts.open_client(proxy.url, name=f"c{i}", heartbeat=None) as client:
                clients.append(client)
                opened.release()
                await done.wait()

        for i in range(count):
            nursery.start_soon(one, i)
        with trio.fail_after(WAIT_S):
            for _ in range(count):
                await opened.acquire()
        before = len(proxy.accept_times)
        proxy.refuse()  # the server restarts: down for a second
        proxy.reset()
        await trio.sleep(1.0)
        proxy.accept()
        with trio.fail_after(WAIT_S):
            for client in clients:
                await client.wait_state("open")
        times = sorted(proxy.accept_times[before:])
        assert len(times) == count
        busiest = max(
            sum(1 for t in times if start <= t < start + 0.2) for start in times
        )  # the most connections any 200 ms window saw
        assert busiest < count * 0.75, (busiest, times[-1] - times[0])
        done.set()


# -- the property: random cuts, nothing duplicated, everything delivered or counted ----------
@pytest.mark.parametrize("seed", range(4))
async def test_random_cuts_keep_the_invariants(
    server: ts.Server, proxy: TcpProxy, seed: int
) -> None:
    rng = random.Random(seed)
    produced = 300
    history = rng.choice([0, 10, 1000])
    policy, size = rng.choice([("block", 1000), ("drop_oldest", 5), ("drop_oldest", 1000)])
    async with (
        ts.open_client(proxy.url, name="w", reconnect=ts.Reconnect(initial=0.02)) as writer,
        ts.open_client(proxy.url, name="r", reconnect=ts.Reconnect(initial=0.02)) as reader,
    ):
        await writer.create_channel("AI1", history=history)
        async with (
            writer.publisher("AI1") as pub,
            reader.subscribe("AI1", policy=policy, size=size) as sub,
        ):
            await pub.wait_for_readers()
            got: list[ts.Message] = []
            cuts = sorted(rng.sample(range(1, produced), 4))
            sent = 0  # frames that went out (send() True): the channel's seqs

            async def read_all() -> None:
                async for msg in sub:
                    got.append(msg)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for i in range(produced):
                    if cuts and i == cuts[0]:
                        cuts.pop(0)
                        rng.choice([proxy.cut, proxy.reset])()
                    sent += await pub.send(i)  # False: nobody wanted it, no frame was made
                    if rng.random() < 0.1:
                        await trio.sleep(rng.random() * 0.02)
                # A lost frame is counted on the next one delivered: end with a frame that
                # arrives (bounded: each try waits for the connection first).
                with trio.fail_after(WAIT_S):
                    while not got or got[-1].seq < sent:
                        await reader.wait_state("open")
                        sent += await pub.send(-1)
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            # No writer frame is published twice: the channel's seq equals frames sent.
            assert_exact(got, sent)
            values = [m.data for m in got if m.data != -1]
            assert values == sorted(set(values))
            if policy == "block" and history == 1000:
                assert values == list(range(produced))


async def test_a_frozen_server_is_noticed_within_the_silence_bound_and_left() -> None:
    async with (
        server_process(idle_timeout_s=2.0) as (process, url),
        ts.open_client(url, name="watcher", reconnect=ts.Reconnect(initial=0.2)) as client,
    ):
        _, dead_after = client._heartbeat_times()
        assert dead_after is not None
        async with client.subscribe("$stats") as sub:
            process.send_signal(signal.SIGSTOP)
            stopped = trio.current_time()
            with trio.fail_after(WAIT_S):
                await client.wait_state("reconnecting")
            assert trio.current_time() - stopped <= dead_after + 2.0
            process.send_signal(signal.SIGCONT)
            with trio.fail_after(WAIT_S):
                await client.wait_state("open")
                await sub.receive()  # the subscription came back by itself


async def test_a_sync_client_rides_through_a_blip(server: ts.Server, proxy: TcpProxy) -> None:
    direct = server.tcp_url
    assert direct is not None
    produced = 200

    def scenario() -> list[ts.Message]:
        with (
            SyncClient(proxy.url, name="script") as c,
            SyncClient(direct, name="rec") as rec,
        ):
            c.create_channel("AI1", history=10)
            with (
                rec.subscribe("AI1", policy="block", size=1000) as sub,
                c.publisher("AI1") as pub,
            ):
                pub.wait_for_readers(timeout=WAIT_S)
                for i in range(produced):
                    if i == 100:
                        trio.from_thread.run_sync(proxy.cut)
                        assert c.wait_state("reconnecting", timeout=WAIT_S) == "reconnecting"
                    assert pub.send(i)  # never raises while reconnecting
                c.flush(timeout=WAIT_S)
                # Not `c.state == "open"` at once: the frames sent again are acknowledged as
                # the reopened publisher sends them, which may be a moment before the rest of
                # the restore ends and the state says "open" (CI saw "reconnecting").
                assert c.wait_state("open", timeout=WAIT_S) == "open"
                return [sub.get(timeout=WAIT_S) for _ in range(produced)]

    with trio.fail_after(WAIT_S * 2):
        got = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert [m.data for m in got] == list(range(produced))


# -- a crashed client restarted as a new process (no resume token) ----------------------------
# The first life of "daq": two channels with history, frames acknowledged, then it waits to be
# killed (SIGKILL: no goodbye, no token left behind for the next process).
CRASHING_DAQ = """
import sys, trio, trio_stream as ts
async def main():
    async with ts.open_client(sys.argv[1], name="daq") as client:
        await client.create_channel("AI1", history=10)
        await client.create_channel("AI2", history=5)
        async with client.publisher("AI1") as pub:
            for i in range(5):
                await pub.send(i)
            await pub.wait_acknowledged()
            print("ready", flush=True)
            await trio.sleep_forever()
trio.run(main)
"""


async def wait_until_gone(client: ts.Client, name: str) -> None:
    """Until the server no longer lists a client of that name (it read the end of its socket)."""
    with trio.fail_after(WAIT_S):
        while True:
            if all(c.name != name for c in await client.clients()):
                return
            await trio.sleep(0.02)


@asynccontextmanager
async def crash_servers(
    kind: str, request: pytest.FixtureRequest, grace_s: float
) -> AsyncIterator[tuple[str, str]]:
    """(URL of the crashed process's server, URL its new process uses): one memory server,
    one Redis node for both, or Redis nodes "a" then "b" (the take-over crosses nodes)."""
    if kind == "memory":
        config = ts.ServerConfig(
            host="127.0.0.1", tcp_port=0, http_port=None, resume_grace_s=grace_s
        )
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None
            yield server.tcp_url, server.tcp_url
        return
    redis: RedisServer = request.getfixturevalue("shared_redis")
    redis.flush()
    if kind == "redis":
        async with ts.open_server(node_config(redis, "a", resume_grace_s=grace_s)) as node:
            assert node.tcp_url is not None
            yield node.tcp_url, node.tcp_url
        return
    async with two_nodes(redis, resume_grace_s=grace_s) as urls:
        yield urls


async def open_named(url: str, name: str, stack: AsyncExitStack) -> ts.Client:
    """A client of that name, once the server has let the gone one's name go (with several
    nodes the name is released in Redis just after the client leaves the listing)."""
    for _ in range(200):  # bounded by count: the client must not open inside a fail_after
        try:
            return await stack.enter_async_context(ts.open_client(url, name=name))
        except ts.NameInUse:
            await trio.sleep(0.05)
    raise AssertionError(f"the name {name!r} was not released within 10 s")


@pytest.mark.parametrize("kind", ["memory", "redis", "redis-other-node"])
async def test_a_crashed_client_restarted_as_a_new_process_takes_its_channels_back_at_once(
    kind: str, request: pytest.FixtureRequest
) -> None:
    grace_s = 4.0
    async with (
        crash_servers(kind, request, grace_s) as (url, url_next),
        AsyncExitStack() as stack,
    ):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CRASHING_DAQ, url], stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        try:
            output = b""
            with trio.fail_after(WAIT_S):
                while b"ready" not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "the first daq process ended before it was ready"
                    output += chunk
            reader = await stack.enter_async_context(ts.open_client(url, name="recorder"))
            sub = await stack.enter_async_context(reader.subscribe("AI1"))
            with trio.fail_after(WAIT_S):
                assert [(await sub.receive()).data for _ in range(5)] == list(range(5))
            epoch = sub.position.epoch
            process.kill()
            await process.wait()
            await wait_until_gone(reader, "daq")
            # Another name cannot take what the gone client holds.
            async with ts.open_client(url_next, name="intruder") as intruder:
                with pytest.raises(ts.ChannelExists, match="is taken"):
                    await intruder.create_channel("AI1", history=10)
            # The new process: the name is free at once, and the same create adopts AI1.
            daq = await open_named(url_next, "daq", stack)
            adopted_at = trio.current_time()
            await daq.create_channel("AI1", history=10)
            with pytest.raises(ts.ChannelExists, match=r"previous owner of your name.*history"):
                await daq.create_channel("AI2", history=6)  # not as it was created
            with pytest.raises(ts.ChannelExists, match="exists already: this client created"):
                await daq.create_channel("AI1", history=10)  # its own now: a second create
            assert trio.current_time() - adopted_at < grace_s
            async with daq.publisher("AI1") as pub:
                assert await pub.send(5)
                with trio.fail_after(WAIT_S):
                    msg = await sub.receive()
            # The same stream goes on: the next seq of the same epoch, no reset.
            assert (msg.data, msg.seq, msg.gap) == (5, 6, None)
            assert sub.position == ts.Position(epoch, 6)
            # When the grace period ends, what the new process did not take ends; AI1 is
            # its own now and stays.
            with trio.fail_after(grace_s + WAIT_S):
                while True:
                    if "AI2" not in {c.name for c in await reader.channels()}:
                        break
                    await trio.sleep(0.1)
            await trio.sleep(0.5)  # the grace is over everywhere: AI1 outlived it
            owners = {c.name: c.owner for c in await reader.channels()}
            assert owners.get("AI1") == "daq"
            async with daq.publisher("AI1") as pub:
                assert await pub.send(6)
                with trio.fail_after(WAIT_S):
                    assert (await sub.receive()).seq == 7  # the reader was never ended
            await daq.delete_channel("AI1")  # an owner's right
            assert "AI1" not in {c.name for c in await reader.channels()}
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(WAIT_S):
                await process.wait()
            await process.stdout.aclose()


@pytest.mark.server_options(resume_grace_s=3.0)
async def test_a_channel_held_for_a_gone_owner_says_it_is_freed_when_the_grace_runs_out(
    server: ts.Server, proxy: TcpProxy, engine_kind: str
) -> None:
    # A crashed writer restarted with changed options was told only "create it with the
    # options it was created with to take it over, or pick another name": not that the
    # channel ends with its previous owner's resume grace, and when (a new user). A keep
    # channel does not end so: its refusal says to delete it.
    assert server.tcp_url is not None
    async with AsyncExitStack() as stack:
        gone = await stack.enter_async_context(ts.open_client(proxy.url, name="tk", reconnect=FAST))
        await gone.create_channel("tk/x", history=0)
        await gone.create_channel("tk/kept", keep=True)
        watcher = await stack.enter_async_context(ts.open_client(server.tcp_url, name="w"))
        proxy.refuse()
        proxy.cut()
        await wait_until_gone(watcher, "tk")
        again = await open_named(server.tcp_url, "tk", stack)
        asked_at = trio.current_time()
        with pytest.raises(ts.ChannelExists) as held:
            await again.create_channel("tk/x", history=5)
        with pytest.raises(ts.ChannelExists) as kept:
            await again.create_channel("tk/kept", history=5)
        if engine_kind == "memory":
            said = re.search(
                r"to take it over, wait (\d+\.\d) s for its previous owner's resume grace "
                r"\(resume_grace_s\) to run out, which ends it, or pick another name$",
                str(held.value),
            )
            assert said is not None, str(held.value)
            left_s = float(said.group(1))
            assert 0.0 < left_s <= 3.0
            assert str(kept.value).endswith(
                "to take it over, delete it (created with keep, it outlives its owner) to "
                "create it anew, or pick another name"
            )
            await again.delete_channel("tk/kept")  # as it says: then created anew
            await again.create_channel("tk/kept", history=5)
        else:  # a cluster's: the owner's node knows its grace, not this one
            for refused in (held, kept):
                assert str(refused.value).endswith(
                    "wait for its previous owner's resume grace (resume_grace_s) to run out, "
                    "which ends it unless it was created with keep, or pick another name"
                )
            left_s = 3.0
        # As it says: once the grace is over, the name is free for the new options.
        with trio.fail_after(left_s + WAIT_S):
            while "tk/x" in {c.name for c in await watcher.channels()}:  # noqa: ASYNC110
                await trio.sleep(0.05)  # (the server's listing: nothing to wait on)
        assert trio.current_time() - asked_at >= left_s - 0.2
        await again.create_channel("tk/x", history=5)


# The first life of "recorder": a block reader of AI1 that stores 50 frames, saving its
# position with each, then waits to be killed (the frames after it are in flight to it).
CRASHING_RECORDER = """
import sys, trio, trio_stream as ts
async def main():
    async with ts.open_client(sys.argv[1], name="recorder") as client:
        async with client.subscribe("AI1", policy="block", size=1000) as sub:
            print("subscribed", flush=True)
            for _ in range(50):
                msg = await sub.receive()
            print("saved", sub.position.epoch, sub.position.seq, flush=True)
            await trio.sleep_forever()
trio.run(main)
"""


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_recorder_killed_and_started_again_gets_every_frame_held_for_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    # A channel without history: what the server held for the killed process's subscription
    # was all there was of the frames written while it was down.
    async with (
        crash_servers(kind, request, grace_s=10.0) as (url, _),
        ts.open_client(url, name="daq") as daq,
        AsyncExitStack() as stack,
    ):
        await daq.create_channel("AI1")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CRASHING_RECORDER, url], stdout=subprocess.PIPE
        )
        stdout = process.stdout
        assert stdout is not None
        try:
            output = b""

            async def read_until(word: bytes) -> None:
                """Until a whole line that starts with ``word`` came (a read may end mid-line)."""
                nonlocal output
                with trio.fail_after(WAIT_S):
                    while word not in output or b"\n" not in output.split(word, 1)[1]:
                        chunk = await stdout.receive_some()
                        assert chunk, f"the recorder ended before it said {word!r}"
                        output += chunk

            await read_until(b"subscribed")
            async with daq.publisher("AI1") as pub:
                await pub.wait_for_readers()
                for i in range(100):
                    await pub.send(i)
                await read_until(b"saved")
                epoch, seq = output.split(b"saved ")[1].split()[:2]
                saved = ts.Position(epoch.decode(), int(seq))
                process.kill()  # SIGKILL: no goodbye, no token for the next process
                await process.wait()
                await wait_until_gone(daq, "recorder")
                for i in range(100, 200):
                    assert await pub.send(i)  # held for the gone reader
                await pub.wait_acknowledged()
                recorder = await open_named(url, "recorder", stack)
                sub = await stack.enter_async_context(
                    recorder.subscribe("AI1", policy="block", size=1000, since=saved)
                )
                with trio.fail_after(WAIT_S):
                    got = [await sub.receive() for _ in range(150)]
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(WAIT_S):
                await process.wait()
            await stdout.aclose()
    assert saved.seq == 50
    assert [m.data for m in got] == list(range(50, 200))
    assert got[0].gap == ts.Gap(kind="resumed", lost=0, recovered=150)


async def test_a_restarted_recorder_takes_over_its_reader_of_a_private_channel_of_another_node(
    request: pytest.FixtureRequest,
) -> None:
    # Node a's copy of a channel created on node b has neither its key nor its owner: the
    # take-over checked the key there, and refused the right one (ChannelNotFound).
    async with (
        crash_servers("redis-other-node", request, grace_s=10.0) as (url_a, url_b),
        open_proxy(url_a) as proxy,
        ts.open_client(url_b, name="daq") as daq,
        ts.open_client(proxy.url, name="recorder") as first,
    ):
        await daq.create_channel("AI1", public=False, key="k")
        async with daq.publisher("AI1") as pub:
            sub = await first.open_subscription("AI1", key="k", policy="block", size=100)
            await pub.wait_for_readers()
            for i in range(10):
                await pub.send(i)
            with trio.fail_after(WAIT_S):
                got = [await sub.receive() for _ in range(5)]
            proxy.refuse()
            proxy.cut()
            await wait_until_gone(daq, "recorder")
            async with ts.open_client(url_a, name="recorder") as again:
                with pytest.raises(ts.ChannelNotFound):  # (a private channel: not named)
                    await again.open_subscription(
                        "AI1", key="wrong", policy="block", size=100, since=sub.position
                    )
                async with again.subscribe(
                    "AI1", key="k", policy="block", size=100, since=sub.position
                ) as taken:
                    with trio.fail_after(WAIT_S):
                        rest = [await taken.receive() for _ in range(5)]
    assert [m.data for m in got + rest] == list(range(10))
    assert rest[0].gap == ts.Gap(kind="resumed", lost=0, recovered=5)


async def test_a_crashed_client_takes_its_channels_over_on_another_node_when_its_node_died_too(
    shared_redis: RedisServer,
) -> None:
    shared_redis.flush()
    grace_s = 2.0
    config_b = node_config(shared_redis, "b", resume_grace_s=grace_s)
    async with (
        node_process(shared_redis, "a") as (url_a, node_a),
        ts.open_server(config_b) as node_b,
        AsyncExitStack() as stack,
    ):
        url_b = str(node_b.tcp_url)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", CRASHING_DAQ, url_a], stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        try:
            with trio.fail_after(WAIT_S):
                assert b"ready" in await process.stdout.receive_some()
            reader = await stack.enter_async_context(ts.open_client(url_b, name="recorder"))
            sub = await stack.enter_async_context(reader.subscribe("AI1"))
            with trio.fail_after(WAIT_S):
                assert [(await sub.receive()).data for _ in range(5)] == list(range(5))
            epoch = sub.position.epoch
            process.kill()  # the client, then its node: nobody is left to hand anything over
            node_a.send_signal(signal.SIGKILL)
            await process.wait()
            # Its name comes free when node a's heartbeat expires (3 s): open_named waits.
            daq = await open_named(url_b, "daq", stack)
            await daq.create_channel("AI1", history=10)
            async with daq.publisher("AI1") as pub:
                assert await pub.send(5)
                with trio.fail_after(WAIT_S):
                    msg = await sub.receive()
            assert (msg.data, msg.seq, msg.gap) == (5, 6, None)
            assert sub.position == ts.Position(epoch, 6)
            # Node a's channels end after the grace, cluster-wide: AI2, not AI1 (node b's).
            with trio.fail_after(WAIT_S):
                while "AI2" in {c.name for c in await reader.channels()}:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await trio.sleep(1.5)  # another round of the survivors' reaper
            (info,) = [c for c in await reader.channels() if c.name == "AI1"]
            assert info.owner == "daq"  # node b keeps it now: the reaper left it
        finally:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(WAIT_S):
                await process.wait()
            await process.stdout.aclose()


async def test_a_resume_token_does_not_take_back_what_a_new_process_of_the_name_holds(
    server: ts.Server, proxy: TcpProxy
) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(proxy.url, name="daq") as old:
        await old.create_channel("AI1", history=10)
        proxy.refuse()
        proxy.cut()  # the old connection is gone; its lease and token remain
        with trio.fail_after(WAIT_S):
            await old.wait_state("reconnecting")
        async with ts.open_client(server.tcp_url, name="ops") as ops:
            await wait_until_gone(ops, "daq")
            async with ts.open_client(server.tcp_url, name="daq") as new:
                await new.create_channel("AI1", history=10)  # adopted
                proxy.accept()
                # The old one's attempts with its token meet NameInUse and change nothing.
                with trio.fail_after(WAIT_S):
                    while True:
                        if proxy.accepted >= 3:
                            break
                        await trio.sleep(0.05)
                assert old.state == "reconnecting"
                (info,) = [c for c in await ops.channels() if c.name == "AI1"]
                assert info.owner == "daq"
                await new.delete_channel("AI1")  # still the new one's
            with trio.fail_after(WAIT_S):  # the name is free again: the old one comes back
                await old.wait_state("open")


# -- a resubscription asks for the subscription as it is now -----------------------------------
@pytest.mark.server_options(resume_grace_s=60.0)
async def test_a_retune_whose_answer_a_cut_lost_costs_a_block_reader_nothing(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The server retuned (size 10 -> 20), the answer was lost with the connection, and the
    # client, not knowing, resubscribed with its old size. The kept subscription did not
    # match those options: it was dropped and its buffered frames with it, counted lost
    # (20 of a block reader's, to its own cut). Named by its id, it now continues and takes
    # the asked options as a retune would.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="daq") as daq,
        ts.open_client(proxy.url, name="rec", reconnect=FAST) as rec,
    ):
        await daq.create_channel("ch")
        async with (
            rec.subscribe("ch", policy="block", size=10) as sub,
            daq.publisher("ch") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                for value in range(30):
                    await pub.send(value)
                got = [(await sub.receive()).data for _ in range(5)]
                proxy.hold_replies()
                outcome: list[BaseException] = []

                async def retune() -> None:
                    try:
                        await sub.retune(size=20)
                    except ts.ConnectionClosed as exc:
                        outcome.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(retune)
                    readers = server.state.by_name["rec"].outbox.readers
                    while readers[sub.sub_id].buffer.size != 20:  # noqa: ASYNC110
                        await trio.sleep(0.01)  # the server's own state: applied
                    proxy.cut()
                    proxy.release()
                assert "may have been carried out" in str(outcome[0])
                await rec.wait_state("reconnecting")
                await rec.wait_state("open")
                for value in range(30, 60):
                    await pub.send(value)
                while len(got) < 60:
                    message = await sub.receive()
                    assert message.lost == 0, (message.seq, message.lost)
                    got.append(message.data)
            assert got == list(range(60))
            assert sub.lost == 0


async def test_a_resubscription_after_a_cut_keeps_the_retuned_policy_and_the_filters(
    server: ts.Server, proxy: TcpProxy
) -> None:
    assert server.tcp_url is not None
    view = ts.View(slices=(slice(None, None, 2),))
    async with (
        ts.open_client(server.tcp_url, name="daq") as daq,
        ts.open_client(server.tcp_url, name="other") as other,
        ts.open_client(server.tcp_url, name="ops") as ops,
        ts.open_client(proxy.url, name="dash") as dash,
    ):
        await daq.create_channel("img")
        async with dash.subscribe("img", size=50, sender="daq", view=view) as sub:
            await sub.retune(policy="drop_newest", size=7, every=2, max_rate=1000.0)
            proxy.cut()
            with trio.fail_after(WAIT_S):
                await dash.wait_state("reconnecting")
                await dash.wait_state("open")
                while True:  # the resubscription is restored right after "open"
                    (info,) = [c for c in await ops.clients() if c.name == "dash"]
                    if info.subscriptions:
                        break
                    await trio.sleep(0.02)
            assert dash.reconnects == 1
            (record,) = info.subscriptions
            assert (record.policy, record.size, record.every, record.max_rate) == (
                "drop_newest",
                7,
                2,
                1000.0,
            )
            async with daq.publisher("img") as ours, other.publisher("img") as theirs:
                await ours.wait_for_readers()
                await theirs.wait_for_readers()
                frame = np.arange(8)
                for _ in range(4):  # every=2 of daq's own frames: exactly 2 of these 4
                    assert await theirs.send(frame + 100)  # filtered out by sender=
                    assert await ours.send(frame)
                    await trio.sleep(0.01)  # slower than max_rate: nothing held back
                with trio.fail_after(WAIT_S):
                    got = [await sub.receive() for _ in range(2)]
            assert [m.sender for m in got] == ["daq", "daq"]
            for msg in got:
                assert np.array_equal(msg.data, frame[::2])  # the view, cut by the server


# -- a shutdown's goodbye: a restart is expected ----------------------------------------------
async def test_a_server_shutdown_lets_clients_reconnect_to_the_restarted_server() -> None:
    async with server_process() as (process, url):
        port = port_of(url)
        async with ts.open_client(url, name="daq") as client:
            process.send_signal(signal.SIGTERM)  # a graceful shutdown: goodbye to every client
            with trio.fail_after(WAIT_S):
                await client.wait_state("reconnecting")
                await process.wait()
            async with server_process(tcp_port=port) as (process2, _):
                with trio.fail_after(WAIT_S):
                    assert await client.wait_state("open", "closed") == "open"
                await client.create_channel("back")
                process2.send_signal(signal.SIGTERM)


async def test_a_graceful_restart_loses_nothing_uncounted_behind_a_slow_block_reader() -> None:
    # The writer is ahead of its block reader: frames wait parked for room in the reader's
    # buffer. At a SIGTERM the server lets them move into that buffer as the reader makes
    # room (acknowledging them to the writer: the channel's other readers have them
    # already), then closes the reader's connection at the end of shutdown_grace_s. What
    # was still buffered for it then was lost without a word (the writer held it for taken,
    # a new server is a reset): now a `lost` notice counts it, on the next message.
    values = 1000
    async with server_process() as (process, url):
        port = port_of(url)
        async with (
            ts.open_client(url, name="w", reconnect=FAST) as writer,
            ts.open_client(url, name="r", reconnect=FAST) as reader,
        ):
            await writer.create_channel("K")
            got: list[int] = []
            counted = [0]

            async def read() -> None:
                async with reader.subscribe(
                    "K", policy="block", size=100, wait_channel=True
                ) as sub:
                    while len(got) + counted[0] < values:
                        msg = await sub.receive()
                        got.append(msg.data)
                        counted[0] += msg.lost
                        await trio.sleep(0.008)  # ~125 Hz: a quarter of the writer's rate

            async def write() -> None:
                async with writer.publisher("K") as pub:
                    await pub.wait_for_readers()
                    for value in range(values):
                        await pub.send(value)
                        await trio.sleep(0.002)
                    await pub.wait_acknowledged()  # through the restart (as a SyncClient's close)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                nursery.start_soon(write)
                await trio.sleep(1.5)  # the writer is well ahead now
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(WAIT_S):
                    await process.wait()
                async with server_process(tcp_port=port):
                    with trio.fail_after(WAIT_S):
                        await writer.wait_state("open")  # it creates its channel again
                    while len(got) + counted[0] < values:  # until all are accounted for
                        before = len(got)
                        await trio.sleep(3)
                        if len(got) == before:
                            break
                    nursery.cancel_scope.cancel()
            assert got == sorted(set(got)), "out of order, or twice"
            missing = values - len(got)
            assert missing == counted[0], f"{missing} missing, {counted[0]} counted lost"


@pytest.mark.server_options(resume_grace_s=0.2)
async def test_a_writer_away_longer_than_the_grace_does_not_send_what_was_taken_again(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # Frames the server took (a block reader has them) whose acknowledgements the cut lost:
    # with the writer's lease gone (away longer than resume_grace_s), its reopen learnt
    # nothing and it sent its whole window again, so the reader got 200 values twice (a
    # loss-accounting audit). Through Redis the count comes from Redis, as before.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="owner") as owner,
        ts.open_client(server.tcp_url, name="rec") as rec,
        ts.open_client(proxy.url, name="w", reconnect=ts.Reconnect(initial=0.5, maximum=0.5)) as w,
    ):
        await owner.create_channel("c")
        async with (
            rec.subscribe("c", policy="block", size=1000) as sub,
            w.publisher("c") as pub,
        ):
            await pub.wait_for_readers()
            proxy.hold_replies()  # the server takes them; their acknowledgements stay here
            for value in range(200):
                await pub.send(value)
            with trio.fail_after(WAIT_S):
                while await published(owner, "c") < 200:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # (polled: nothing says when the server took them)
            proxy.cut()  # away for the client's 0.5 s before it tries again: past the grace
            proxy.release()
            for value in range(200, 220):
                await pub.send(value)
            with trio.fail_after(WAIT_S):
                await pub.wait_acknowledged()
                got = [(await sub.receive()).data for _ in range(220)]
            with trio.move_on_after(0.5):
                extra = await sub.receive()
                pytest.fail(f"a value twice: {extra.data}")
    assert got == list(range(220))


async def published(client: ts.Client, channel: str) -> int:
    """The channel's seq: how many frames the server took."""
    return next(info.seq for info in await client.channels() if info.name == channel)


@pytest.mark.server_options(resume_grace_s=0.5)
async def test_the_server_log_says_how_a_client_left_and_when_its_kept_session_ends(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # A crash, a closed tab and a goodbye all read "client 'x' disconnected", and the end of
    # a kept session said nothing (an operator reading the log after a night).
    caplog.set_level(logging.INFO, logger="trio_stream._server")
    assert server.tcp_url is not None
    with trio.fail_after(WAIT_S):
        async with ts.open_client(server.tcp_url, name="polite"):
            pass
        async with (
            ts.open_client(proxy.url, name="cut", reconnect=FAST) as cut,
            ts.open_client(proxy.url, name="bare", reconnect=FAST),
        ):
            await cut.create_channel("cut's")
            async with cut.subscribe("cut's"):
                proxy.refuse()  # they never get back
                proxy.cut()
                await cut.wait_state("reconnecting")
        while not any("did not come back" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
            await trio.sleep(0.05)  # the grace runs out
        leases = server.state.resume._leases
        while any(lease.name == "bare" for lease in leases.values()):  # noqa: ASYNC110
            await trio.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("trio_stream._server")]
    # Nothing was kept for "bare" (as for a process whose successor took its subscriptions
    # over by name): no line saying it did not come back, which read as a failed restart.
    assert not [line for line in said if "'bare' did not come back" in line], said
    assert "client 'polite' disconnected (it said goodbye)" in said, said
    assert (
        "client 'cut' disconnected (the connection was lost); its session is kept 0.5 s for "
        "it to resume (resume_grace_s)"
    ) in said, said
    assert (
        "client 'cut' did not come back within resume_grace_s (0.5 s): its 1 kept "
        "subscriptions and 1 channels end"
    ) in said, said


@pytest.mark.engines("memory")  # several nodes: README, "Several nodes"
@pytest.mark.server_options(resume_grace_s=0.2)
@pytest.mark.parametrize(("policy", "every"), [("block", 1), ("drop_oldest", 1), ("block", 3)])
async def test_a_reader_back_after_the_grace_learns_its_channel_ended_and_what_it_missed(
    server: ts.Server, proxy: TcpProxy, policy: str, every: int
) -> None:
    # Its writer finished (the channel ended with it) while the reader was away longer than
    # resume_grace_s: the reader waited for good for a channel that ended, its 300 missed
    # frames told nowhere (a lab tester). Now its iteration ends, the loss counted.
    assert server.tcp_url is not None
    async with ts.open_client(proxy.url, name="recorder", reconnect=FAST) as reader:
        async with ts.open_client(server.tcp_url, name="daq") as writer:
            await writer.create_channel("AI1")
            sub = await reader.open_subscription("AI1", policy=policy, size=1000, every=every)
            async with writer.publisher("AI1") as pub:
                await pub.wait_for_readers()
                for i in range(99):
                    await pub.send(i)
                got = [msg.data async for msg in _first(sub, 99 // every)]
                assert got == list(range(0, 99, every))
                await cut_until_kept(server, proxy)
                for i in range(99, 399):
                    await pub.send(i)
                await pub.wait_acknowledged()
        # The writer is gone, and the channel with it; then the grace of the reader's kept
        # subscription ends too.
        await until_server(lambda: "AI1" not in server.state.broker.channels)
        await until_server(lambda: not server.state.resume.kept_for_name("recorder"))
        proxy.accept()
        with trio.fail_after(WAIT_S):
            with pytest.raises(ts.SubscriptionEnded) as ended:
                while True:
                    await sub.receive()
        missed = 300 // every  # of every=3, those it would have kept
        assert sub.lost == missed
        assert "while this client was away" in str(ended.value)
        assert f"{missed} frames after the last one it had were not delivered" in str(ended.value)
        with trio.fail_after(WAIT_S):
            await reader.wait_state("open")


async def _first(sub: ts.Subscription, count: int) -> AsyncIterator[ts.Message]:
    with trio.fail_after(WAIT_S):
        for _ in range(count):
            yield await sub.receive()


@pytest.mark.server_options(resume_grace_s=0.3)
async def test_a_reader_back_before_its_writer_after_both_were_away_waits_for_the_channel(
    server: ts.Server,
) -> None:
    # Both cut past the grace (a switch rebooted): the writer's channel ended with its
    # grace, not for good (its client creates it again when back). The reader, back first,
    # was told the channel had ended, and its iteration stopped for good (a review).
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as to_writer,
        open_proxy(server.tcp_url) as to_reader,
        ts.open_client(to_writer.url, name="w", reconnect=FAST) as w,
        ts.open_client(to_reader.url, name="r", reconnect=FAST) as r,
    ):
        await w.create_channel("AI1")
        sub = await r.open_subscription("AI1", policy="drop_oldest", size=100)
        async with w.publisher("AI1") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                for i in range(5):
                    await pub.send(i)
                await pub.wait_acknowledged()  # (else sent again into the channel's new life)
                assert [(await sub.receive()).data for _ in range(5)] == list(range(5))
                for link in (to_writer, to_reader):
                    link.refuse()
                    link.cut()
            await until_server(lambda: "AI1" not in server.state.broker.channels)
            to_reader.accept()
            with trio.fail_after(WAIT_S):
                await r.wait_state("open")
            await trio.sleep(0.3)  # its resubscription asked, and was told to wait
            to_writer.accept()
            with trio.fail_after(WAIT_S):
                await w.wait_state("open")
                while not await pub.send("after"):  # noqa: ASYNC110 - until r is back too
                    await trio.sleep(0.02)
                msg = await sub.receive()
        assert msg.gap is not None and msg.gap.kind == "reset"
        assert msg.data == "after"


@pytest.mark.engines("memory")  # several nodes time a hold elsewhere (redis_holds)
async def test_a_kept_block_reader_that_holds_its_writers_back_is_said_to_be_away(
    server: ts.Server,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its client cut off, the kept block reader was said to "read nothing, or too slowly"
    # (an operator took a recorder on a cut link for a slow one).
    monkeypatch.setattr(outbox_module, "HOLD_WARNING_S", 0.3)
    caplog.set_level(logging.WARNING, logger="trio_stream._server")
    async with writer_and_proxied_reader(
        server, proxy, history=0, reconnect=FAST, policy="block", size=2, window=1
    ) as (pub, _sub, _reader):
        await cut_until_kept(server, proxy)
        with trio.fail_after(WAIT_S):
            for i in range(20):  # more than its buffer and window: the writer is held
                with trio.move_on_after(0.1):
                    await pub.send(i)
            while "has held its writers back" not in caplog.text:  # noqa: ASYNC110
                await trio.sleep(0.05)
    (line,) = [r.getMessage() for r in caplog.records if "held its writers back" in r.getMessage()]
    assert "its client is away (the subscription is kept for its return" in line, line


async def test_a_publisher_close_cancelled_while_it_waits_for_the_connection_says_its_drops(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # An application's shutdown deadline landed in the close's wait for the connection:
    # the values it dropped went unsaid (a trio developer's audit).
    async with ts.open_client(proxy.url, name="daq", reconnect=FAST) as writer:
        await writer.create_channel("AI1", history=10)
        pub = await writer.open_publisher("AI1")
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(WAIT_S):
            await writer.wait_state("reconnecting")
        for i in range(4):
            assert await pub.send(i)
        with trio.move_on_after(0.3) as waited:
            await pub.aclose()
        assert waited.cancelled_caught and not pub.is_open
    said = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("4 values sent to 'AI1' were not delivered: the connection was")
    assert "closed without waiting for it to come back" in said[0]


async def test_values_taken_while_reconnecting_are_not_said_to_have_maybe_reached_readers(
    server: ts.Server, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # The client's block cancelled while it reconnected: its own tasks may close it (the
    # publisher then ended "for good") before the publisher's block says the drops. The
    # line said those values "may have reached readers"; they never left the process.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        for run in range(5):  # (which of the two goes first varies: both orders, likely)
            channel = f"AI{run}"
            await owner.create_channel(channel, history=10)
            caplog.clear()
            with trio.CancelScope() as leaving, trio.fail_after(WAIT_S):
                async with (
                    ts.open_client(proxy.url, name="daq", reconnect=FAST) as writer,
                    writer.publisher(channel) as pub,
                ):
                    proxy.refuse()
                    proxy.cut()
                    await writer.wait_state("reconnecting")
                    assert await pub.send("queued")
                    leaving.cancel()  # (the client's block and its tasks, at once)
                    await trio.sleep_forever()
            proxy.accept()
            said = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
            assert len(said) == 1, said
            assert said[0].startswith(f"1 value sent to '{channel}' was not delivered"), said
            assert "may have reached readers" not in said[0], said


async def test_a_close_cancelled_while_the_window_is_held_for_readers_says_it_went_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Held for its block reader to come back after a server restart, the window goes out as
    # a close that waits for nothing releases it: it was said to be "not delivered ...
    # dropped" (a review).
    async with server_process() as (process, url):
        port = port_of(url)
        async with (
            open_proxy(url) as readers_way,
            ts.open_client(url, name="daq", reconnect=FAST) as writer,
            ts.open_client(readers_way.url, name="rec", reconnect=FAST) as reader,
        ):
            await writer.create_channel("AI1")
            pub = await writer.open_publisher("AI1")
            await reader.open_subscription("AI1", policy="block")
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
            readers_way.refuse()  # the writer comes back first: its reader is still away
            process.kill()
            await process.wait()
            with trio.fail_after(WAIT_S):
                await writer.wait_state("reconnecting")
            for i in range(3):
                assert await pub.send(i)
            async with server_process(tcp_port=port) as (process2, _):
                with trio.fail_after(WAIT_S):
                    await writer.wait_state("open")
                    while not pub._holding:  # noqa: ASYNC110 (the reopen's answer starts the hold)
                        await trio.sleep(0.01)
                with trio.move_on_after(0.1) as waited:
                    await pub.aclose()  # waits for the hold's end: cancelled
                assert waited.cancelled_caught
                readers_way.accept()
                process2.send_signal(signal.SIGTERM)
    said = [r.getMessage() for r in caplog.records if "sent to 'AI1'" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(
        "3 values sent to 'AI1' were held for its readers to come back after the reconnection "
        "(0 of 1 back) and went out as the publisher closed without waiting for them"
    ), said
