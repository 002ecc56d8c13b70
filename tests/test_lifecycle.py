"""Channel lifecycle, system channels, limits, idle timeout and graceful shutdown."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import trio
from engine_marks import BOTH_ENGINES, VIRTUAL_TIME
from proxy import TcpProxy, open_proxy

import trio_stream as ts

pytestmark = BOTH_ENGINES


@VIRTUAL_TIME
async def test_temporary_channel_ends_by_itself(
    url: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("experiment", lifetime=30.0)
        async with r.subscribe("experiment") as sub, w.publisher("experiment") as pub:
            await pub.wait_for_readers()
            await pub.send("running")
            got = [msg.data async for msg in sub]  # ends cleanly after 30 s
            assert got == ["running"]
            assert trio.current_time() >= 30.0
            with pytest.raises(ts.ChannelNotFound, match="lifetime"):
                for _ in range(100):
                    await pub.send("late")
                    await trio.sleep(0.01)
        assert "experiment" not in {c.name for c in await r.channels()}


async def test_a_closed_client_s_name_and_keep_channels_are_free_when_aclose_returns(
    server: ts.Server,
) -> None:
    # A script run again at once under its name: aclose() waits for the server's end of
    # the connection, so the name is never still taken (NameInUse) and its keep channel is
    # taken over by name, not refused (ChannelExists). The first run's goodbye is held on
    # its way for a moment (a busy server, a slow network), as a proxy holds it here.
    async with open_proxy(str(server.tcp_url)) as proxy, trio.open_nursery() as nursery:
        async with ts.open_client(proxy.url, name="script") as client:
            await client.create_channel("kept", keep=True)
            proxy.hold()
            nursery.start_soon(release_later, proxy)
        for _ in range(3):
            async with ts.open_client(str(server.tcp_url), name="script") as client:
                await client.create_channel("kept", keep=True)  # taken over by name
        async with ts.open_client(str(server.tcp_url), name="script") as client:
            await client.create_channel("kept", keep=True)
            await client.delete_channel("kept")


async def release_later(proxy: TcpProxy) -> None:
    await trio.sleep(0.3)
    proxy.release()


async def test_single_writer_refuses_a_second_writer(url: str) -> None:
    async with ts.open_client(url, name="a") as a, ts.open_client(url, name="b") as b:
        await a.create_channel("solo", single_writer=True)
        async with a.publisher("solo"):
            # Says who holds it and when it frees (it said only "has a writer").
            with pytest.raises(ts.LimitExceeded, match="single_writer") as taken:
                async with b.publisher("solo"):
                    pass
            assert "client 'a'" in str(taken.value) and "closes" in str(taken.value)
        async with b.publisher("solo"):  # the first one left: now b may write
            pass


async def test_system_channels_report_clients_channels_and_load(url: str) -> None:
    async with ts.open_client(url, name="observer") as observer:
        async with (
            observer.subscribe("$clients", policy="unbounded") as clients,
            observer.subscribe("$channels", policy="unbounded") as channels,
            observer.subscribe("$stats", policy="drop_oldest", size=1) as stats,
        ):
            async with ts.open_client(url, name="visitor") as visitor:
                await visitor.create_channel("v")
                async with observer.subscribe("v"):
                    pass
            with trio.fail_after(10):
                connected = (await clients.receive()).data
                disconnected = (await clients.receive()).data
                events = [(await channels.receive()).data for _ in range(4)]
                load = (await stats.receive()).data
        assert connected["event"] == "connected" and connected["name"] == "visitor"
        assert {"address", "transport", "connected_at"} <= connected.keys()
        assert disconnected["event"] == "disconnected"
        assert [e["event"] for e in events] == ["created", "readers", "readers", "deleted"]
        assert [e["readers"] for e in events[1:3]] == [1, 0]
        # Nobody deleted it: it went with its owner, which the event says.
        assert events[3]["reason"] == "channel 'v' ended with its owner"
        assert all("reason" not in e for e in events[:3])
        for key in (
            "connections",
            "channels",
            "frames_in_per_s",
            "bytes_out_per_s",
            "frames_lost",
            "buffered_bytes",
            "cpu_percent",
            "memory_bytes",
        ):
            assert key in load
        assert load["memory_bytes"] > 0


async def test_the_first_stats_interval_has_its_rates() -> None:
    # The first interval only marked where counting starts: its $stats said frames_in 600,
    # frames_in_per_s 0 (an operators' audit).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, stats_interval_s=1.0)
    async with ts.open_server(config) as server, ts.open_client(server.tcp_url or "") as c:
        await c.create_channel("c")
        async with (
            c.subscribe("$stats", policy="drop_oldest", size=10) as stats,
            c.subscribe("c", policy="unbounded") as sub,
        ):
            for i in range(50):
                await c.publish("c", i)
            with trio.fail_after(10):
                for _ in range(50):
                    await sub.receive()
                load = (await stats.receive()).data  # the first: the server's first interval
        assert load["frames_in"] >= 50 and load["frames_in_per_s"] > 0, load


async def test_rates_and_uptime_follow_trios_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Taken with time.monotonic() over intervals timed by trio's clock: under a test's
    # MockClock, 10 frames/s over 5 s read 1,512 frames/s and 0.04 s up (a trio developer).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, stats_interval_s=1.0)
    async with ts.open_server(config) as server, ts.open_client(server.tcp_url) as c:
        await c.create_channel("c")
        async with c.subscribe("c", policy="unbounded") as sub:
            for i in range(50):
                await c.publish("c", i)
                await sub.receive()
                await trio.sleep(0.1)
        stats = await c.stats()
    assert 4.9 <= stats.uptime_s <= 6.0, stats
    assert 5 <= stats.frames_in_per_s <= 15, stats


async def test_introspection_records_describe_subscriptions(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", policy="clear", size=7, every=2, max_rate=5.0):
            (record,) = [c for c in await w.clients() if c.name == "r"]
            (sub,) = record.subscriptions
            assert (sub.channel, sub.policy, sub.size, sub.every, sub.max_rate) == (
                "c",
                "clear",
                7,
                2,
                5.0,
            )
            (channel,) = [c for c in await w.channels() if c.name == "c"]
            assert channel.owner == "w" and channel.readers == 1
            stats = await w.stats()
            assert stats.connections == 2 and stats.channels >= 4


async def test_memory_stays_bounded_when_readers_stop_reading(nursery: trio.Nursery) -> None:
    limit = 4 * 2**20
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_buffered_bytes=limit)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as w, ts.open_client(server.tcp_url) as r:
        await w.create_channel("flood")
        async with (
            r.subscribe("flood", policy="unbounded") as hog,
            r.subscribe("flood", policy="drop_oldest", size=2) as ring,
            w.publisher("flood") as pub,
        ):
            await pub.wait_for_readers(2)
            frame = np.zeros(2**17 // 8)  # 128 KiB
            with trio.fail_after(30):
                for _ in range(200):  # 25 MiB in all, nobody reads
                    await pub.send(frame)
                await pub.wait_acknowledged()
            stats = await w.stats()
            assert stats.buffered_bytes <= limit + 2**18
            # The unbounded reader was told why it ended; the ring simply kept the newest.
            with pytest.raises(ts.LimitExceeded, match="max_buffered_bytes"), trio.fail_after(10):
                while True:
                    await hog.receive()
            assert ring.window <= 2


async def test_idle_connections_are_closed_and_pinging_keeps_them(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, idle_timeout_s=5.0)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client:  # pings every idle_timeout/3
        await trio.sleep(60)
        assert (await client.stats()).connections == 1


async def test_graceful_shutdown_drains_buffered_frames(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with (
        ts.open_client(server.tcp_url) as w,
        ts.open_client(server.tcp_url, reconnect=False) as r,
    ):
        await w.create_channel("c", keep=True)  # outlives its owner's own goodbye
        async with r.subscribe("c", policy="unbounded", window=1) as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            for i in range(20):
                await pub.send(i)
            await pub.wait_acknowledged()
            async with trio.open_nursery() as tasks:
                tasks.start_soon(server.aclose)
                got = []
                with pytest.raises(ts.ConnectionClosed, match="shutting down"):
                    with trio.fail_after(10):
                        while True:
                            got.append((await sub.receive()).data)
            assert got == list(range(20))  # everything buffered was delivered first


@VIRTUAL_TIME
async def test_a_connection_that_never_said_hello_does_not_hold_the_graceful_stop(
    nursery: trio.Nursery,
) -> None:
    # A peer that connected and said nothing (a port scanner, a client stuck before its
    # hello) held the stop for shutdown_grace_s + 1 s with no client to drain for.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, shutdown_grace_s=2)
    server: ts.Server = await nursery.start(ts.serve, config)
    port = int(server.tcp_url.rsplit(":", 1)[1])
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    await trio.sleep(0.1)  # admitted: its handshake waits for a hello
    assert server.connections == 1
    started = trio.current_time()
    await server.aclose()
    assert trio.current_time() - started < 0.5
    with trio.fail_after(1):
        assert await silent.receive_some() == b""  # closed without a word, as at the stop
    await silent.aclose()


async def test_a_cancelled_graceful_close_still_stops_the_server(nursery: trio.Nursery) -> None:
    # A close cancelled in its grace (a trio resource's close then closes forcefully) left
    # the server running for good, and a second aclose() waited for it forever (a trio
    # developer embedding the server): a reader whose link carries nothing keeps the grace.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, shutdown_grace_s=30)
    server: ts.Server = await nursery.start(ts.serve, config)
    async with (
        open_proxy(server.tcp_url) as link,
        ts.open_client(server.tcp_url, name="w") as w,
        ts.open_client(link.url, name="r", reconnect=False) as r,
    ):
        await w.create_channel("c")
        async with r.subscribe("c", policy="unbounded"), w.publisher("c") as pub:
            await pub.wait_for_readers()
            link.hold()
            for _ in range(10):  # past the sockets' buffers: the close waits out its grace
                await pub.send(bytes(4 * 2**20))
            await pub.wait_acknowledged()
            with trio.move_on_after(0.2) as gave_up:
                await server.aclose()
            assert gave_up.cancelled_caught
            with trio.fail_after(5):
                await server.aclose()  # returns once stopped: it was not stopped before
            link.release()


async def test_a_server_s_urls_name_its_endpoints_and_an_endpoint_off_says_so(
    nursery: trio.Nursery,
) -> None:
    # The URLs are str, not "str | None": a typed program connects to server.tcp_url as the
    # README does without an assert (mypy --strict refused it); one switched off raises.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert list(server.urls) == ["tcp"] and server.urls["tcp"] == server.tcp_url
    assert server.tcp_url.startswith("tcp://127.0.0.1:")
    with pytest.raises(ts.InvalidSetting, match=r"no WebSocket endpoint: .*http_port=None") as off:
        server.ws_url  # noqa: B018
    assert off.value.setting == "http_port"
    with pytest.raises(ts.InvalidSetting, match="no HTTP endpoint"):
        server.http_url  # noqa: B018
    both = await nursery.start(ts.serve, ts.ServerConfig(host="127.0.0.1", tcp_port=None))
    assert sorted(both.urls) == ["http", "ws"] and both.ws_url.endswith("/ws")
    with pytest.raises(ts.InvalidSetting, match=r"no raw TCP endpoint: .*tcp_port=None"):
        both.tcp_url  # noqa: B018
    await both.aclose()
    await server.aclose()


async def test_per_client_limits_name_the_limit(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(
        host="127.0.0.1",
        tcp_port=0,
        http_port=None,
        max_channels_per_client=2,
        max_subscriptions_per_client=2,
        max_publishers_per_client=2,
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client:
        await client.create_channel("a")
        await client.create_channel("b")
        with pytest.raises(ts.LimitExceeded, match="max_channels_per_client"):
            await client.create_channel("c")
        async with client.subscribe("a"), client.subscribe("b"):
            with pytest.raises(ts.LimitExceeded, match="max_subscriptions_per_client"):
                async with client.subscribe("a"):
                    pass
        # Publishers too (an outside pass opened 200,000 on one channel from one connection:
        # 303 bytes each, and each reader that came stopped the server for a second).
        async with client.publisher("a"), client.publisher("a"):
            with pytest.raises(ts.LimitExceeded, match="max_publishers_per_client"):
                async with client.publisher("b"):
                    pass
            await client.delete_channel("a")  # its publishers end with it: room again
            async with client.publisher("b"), client.publisher("b"):
                pass
        await client.create_channel("c")  # room again


# -- how exceptions leave open_client and serve (_util.open_own_nursery) -----------------------
async def test_inside_open_client_an_applications_group_is_untouched(url: str) -> None:
    mine = ExceptionGroup("mine", [KeyError("a")])
    with pytest.raises(ExceptionGroup) as caught:
        async with ts.open_client(url):
            raise mine
    assert caught.value is mine
    with pytest.raises(KeyError):  # and a plain exception is itself, as before
        async with ts.open_client(url):
            raise KeyError("plain")


async def test_an_aclose_inside_open_client_ends_the_client_not_the_block(url: str) -> None:
    # What follows the aclose() runs (saving results), past checkpoints, and the block
    # leaves normally; the closed client says so if it is used again.
    steps = []
    async with ts.open_client(url, name="done-early") as client:
        await client.create_channel("results")
        await client.aclose()
        await trio.sleep(0.01)
        steps.append("saved")
        with pytest.raises(ts.ConnectionClosed, match="the client closed the connection"):
            await client.channels()
        steps.append("told")
    assert steps == ["saved", "told"]


async def test_a_port_in_use_is_a_bare_oserror_that_names_the_port(
    nursery: trio.Nursery,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
        # As trio.serve_tcp's: not an ExceptionGroup of one
        with pytest.raises(OSError) as caught:
            await nursery.start(ts.serve, config)
        assert caught.value.__notes__ == [
            f"trio_stream: cannot listen on 127.0.0.1 TCP port {port} (tcp_port): another "
            "process holds it (another server, the demo perhaps: stop it; or, if none listens "
            "there, connections whose local end it is, closed ones for up to a minute in "
            "TIME-WAIT); choose another tcp_port (0 takes any free port)"
        ]
        with pytest.raises(OSError):
            async with ts.open_server(config):
                pass
    finally:
        taken.close()


async def test_what_a_slow_reader_cannot_take_within_the_shutdown_grace_is_counted(
    nursery: trio.Nursery,
) -> None:
    # Frames buffered for a reader (acknowledged to their writer: taken) that the reader
    # does not take within shutdown_grace_s are dropped at the close. They were dropped
    # without a word: the reader missed them uncounted (a restarted server is a reset, whose
    # loss is unknown). Now a `lost` notice counts them, on the next message the reader gets.
    fast = ts.Reconnect(initial=0.05, maximum=0.2)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, shutdown_grace_s=0.5)
    first: ts.Server = await nursery.start(ts.serve, config)
    port = int(str(first.tcp_url).rsplit(":", 1)[1])
    again = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
    published = 300
    got: list[ts.Message] = []
    with trio.fail_after(30):
        async with (
            ts.open_client(str(first.tcp_url), name="w", reconnect=fast) as writer,
            ts.open_client(str(first.tcp_url), name="r", reconnect=fast) as reader,
        ):
            await writer.create_channel("c")
            async with (
                reader.subscribe("c", policy="block", size=1000, window=10) as sub,
                writer.publisher("c") as pub,
            ):
                await pub.wait_for_readers()
                for value in range(published):
                    await pub.send(value)
                await pub.wait_acknowledged()  # all in the reader's buffer on the server
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(first.aclose)
                    while (await writer.wait_state("reconnecting", "open")) == "open":
                        got.append(await sub.receive())
                        await trio.sleep(0.05)  # ~10 within the grace, of 300
                await nursery.start(ts.serve, again)
                await pub.wait_for_readers()  # the reader is back (the channel made again)
                await pub.send(published)
                while got[-1].data != published:
                    got.append(await sub.receive())
    values = [msg.data for msg in got]
    assert values == sorted(values)
    last = got[-1]
    assert last.gap is not None and last.gap.kind == "reset"
    dropped = published - (len(got) - 1)
    assert dropped > 100  # (else the test no longer tests it)
    assert last.lost == dropped, f"{dropped} dropped at the shutdown, {last.lost} counted"
    assert sub.lost == dropped


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "clear"])
async def test_a_lossy_reader_idle_through_a_graceful_restart_is_told_every_drop(
    nursery: trio.Nursery, policy: str
) -> None:
    # A ring reader that takes nothing (a notebook left open) while the server restarts:
    # the notice at the close counted the frames in its buffer, not those its policy had
    # dropped before (a guarantees audit: 180 of 200 missed, sub.lost 20).
    fast = ts.Reconnect(initial=0.05, maximum=0.2)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, shutdown_grace_s=0.3)
    first: ts.Server = await nursery.start(ts.serve, config)
    port = int(str(first.tcp_url).rsplit(":", 1)[1])
    again = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
    published = 200
    with trio.fail_after(30):
        async with (
            ts.open_client(str(first.tcp_url), name="w", reconnect=fast) as writer,
            ts.open_client(str(first.tcp_url), name="r", reconnect=fast) as reader,
        ):
            await writer.create_channel("c")
            async with (
                reader.subscribe("c", policy=policy, size=20, window=4) as sub,
                writer.publisher("c") as pub,
            ):
                await pub.wait_for_readers()
                for value in range(published):
                    await pub.send(value)
                await pub.wait_acknowledged()
                await first.aclose()  # the reader took nothing meanwhile
                await nursery.start(ts.serve, again)
                await pub.wait_for_readers()  # the reader is back (the channel made again)
                await pub.send(published)
                got = [await sub.receive()]
                while got[-1].data != published:
                    got.append(await sub.receive())
    last = got[-1]
    assert last.gap is not None and last.gap.kind == "reset"
    missed = published - (len(got) - 1)
    assert sum(msg.lost for msg in got) == missed
    assert sub.lost == missed


async def test_a_graceful_restart_delivers_a_block_readers_frames_once_to_every_reader(
    nursery: trio.Nursery,
) -> None:
    # A block reader slower than its writer: frames wait parked at the server, not yet
    # acknowledged, and the channel's other (fast) reader has them already. The server stops
    # gracefully and starts again on its port. Draining, the slow reader took parked frames
    # while the writer's connection had already closed without their acknowledgements: the
    # writer sent them again to the new server, and the slow reader got them twice (hundreds
    # per restart); left parked and unacknowledged instead (a fix tried for the slow
    # reader's loss), the fast reader got them twice (a window, 1,024 here). The writer's
    # connection drains until its parked frames are taken and acknowledged; what the slow
    # reader cannot take in the grace is counted (see the test above).
    published = 3000
    fast = ts.Reconnect(initial=0.05, maximum=0.2)
    # The slow reader must take the writer's parked window (~1,000 frames) within the grace:
    # 2 s (the default) ran out beside other test workers, and the frames left parked came
    # again to the fast reader (196 in a CI run). A bound, not a speed.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, shutdown_grace_s=20)
    first: ts.Server = await nursery.start(ts.serve, config)
    port = int(str(first.tcp_url).rsplit(":", 1)[1])
    again = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
    slow_got: list[int] = []
    fast_got: list[int] = []
    with trio.fail_after(60):
        async with (
            ts.open_client(str(first.tcp_url), name="w", reconnect=fast) as writer,
            ts.open_client(str(first.tcp_url), name="r", reconnect=fast) as reader,
            ts.open_client(str(first.tcp_url), name="f", reconnect=fast) as fast_reader,
        ):
            await writer.create_channel("c", keep=True)
            async with (
                reader.subscribe("c", policy="block", size=50) as slow_sub,
                fast_reader.subscribe("c", policy="block", size=100_000) as fast_sub,
                writer.publisher("c") as pub,
            ):
                await pub.wait_for_readers(2)

                async def write() -> None:
                    for value in range(published):
                        await pub.send(value)
                    await pub.wait_acknowledged()

                async def restart() -> None:
                    await first.aclose()
                    await nursery.start(ts.serve, again)

                async def read_fast() -> None:
                    while not fast_got or fast_got[-1] != published - 1:
                        fast_got.append((await fast_sub.receive()).data)

                async with trio.open_nursery() as tasks:
                    tasks.start_soon(write)
                    tasks.start_soon(read_fast)
                    while not slow_got or slow_got[-1] != published - 1:
                        slow_got.append((await slow_sub.receive()).data)
                        if len(slow_got) == 500:  # the writer's window is parked by now
                            tasks.start_soon(restart)
                        await trio.sleep(0.0005)
    assert len(slow_got) == len(set(slow_got)), f"{len(slow_got) - len(set(slow_got))} twice"
    assert slow_got == sorted(slow_got)
    twice = len(fast_got) - len(set(fast_got))
    assert twice == 0, f"the fast reader got {twice} values twice"


async def test_two_restarts_before_a_slow_reader_catches_up_each_start_a_reset_gap(
    nursery: trio.Nursery,
) -> None:
    # The second resubscription moved the first one's gap past the frames between them: the
    # first new epoch began (seq 1 again) with no gap at all (a loss-accounting audit).
    fast = ts.Reconnect(initial=0.05, maximum=0.2)

    def config(port: int) -> ts.ServerConfig:
        return ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)

    server: ts.Server = await nursery.start(ts.serve, config(0))
    port = int(str(server.tcp_url).rsplit(":", 1)[1])
    got: list[ts.Message] = []
    with trio.fail_after(30):
        async with (
            ts.open_client(str(server.tcp_url), name="owner", reconnect=fast) as owner,
            ts.open_client(str(server.tcp_url), name="r", reconnect=fast) as reader,
            ts.open_client(str(server.tcp_url), name="w", reconnect=fast) as writer,
        ):
            await owner.create_channel("c", history=50)
            async with (
                reader.subscribe("c", policy="unbounded") as sub,
                writer.publisher("c") as pub,
                trio.open_nursery() as reading,
            ):
                await pub.wait_for_readers()

                async def read_slowly() -> None:
                    async for msg in sub:
                        got.append(msg)
                        if msg.data == 599:  # the last value: everything came
                            return
                        await trio.sleep(0.003)

                reading.start_soon(read_slowly)
                for value in range(600):
                    if value == 200:
                        for _ in range(2):  # two graceful restarts, 0.2 s apart
                            await server.aclose()
                            server = await nursery.start(ts.serve, config(port))
                            await trio.sleep(0.2)
                    await pub.send(value)
                    if value % 20 == 0:
                        await trio.sleep(0.01)
                await pub.wait_acknowledged()  # (the reading ends the block)
    back = [(got[k - 1].seq, got[k]) for k in range(1, len(got)) if got[k].seq <= got[k - 1].seq]
    assert back, "no epoch change: the test no longer tests it"
    assert all(msg.gap is not None and msg.gap.kind == "reset" for _, msg in back), back
