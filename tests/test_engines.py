"""Channel behaviours on both engines: one memory node, and two Redis nodes (writer on one,
reader on the other): delivery, drop and block policies, history, every/max_rate/sender/view,
retune, private keys, reader counts, single_writer, owners, lifetime and keep. The same
test, the same expectations: several nodes change nothing a client can see. Redis tests
share tests/test_cluster.py's helpers and the session's private redis-server.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from engine_marks import BOTH_ENGINES, engine_options
from redis_server import RedisServer
from test_cluster import WAIT_S, two_nodes

import trio_stream as ts
from trio_stream._engine import redis_engine

pytestmark = BOTH_ENGINES


@pytest.fixture
async def engine(
    engine_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, str]]:
    """(writer's URL, reader's URL): the same memory node, or nodes a and b over Redis."""
    options: dict[str, Any] = {"resume_grace_s": 0.5}
    if engine_kind == "memory":
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, **options)
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None
            yield server.tcp_url, server.tcp_url
    else:
        redis: RedisServer = request.getfixturevalue("shared_redis")
        redis.flush()
        async with two_nodes(redis, **options) as urls:
            yield urls


async def test_drop_policies_count_every_frame_a_slow_reader_missed(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    total = 400
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("c")
        async with (
            r.subscribe("c", policy="drop_oldest", size=5) as oldest,
            r.subscribe("c", policy="drop_newest", size=5) as newest,
            w.publisher("c") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers(2)
                for i in range(total):
                    await pub.send(i)
                await pub.wait_acknowledged()
                # drop_newest keeps the oldest frames (those in flight to it and ``size``
                # behind them) and skips what follows: it has room for "end" only once read.
                # Every frame is then received or reported lost (a `lost` notice, which the
                # client counts in ``sub.lost`` and carries to the next message).
                early: list[ts.Message] = []
                while len(early) + newest.lost < total:
                    with trio.move_on_after(0.05):
                        early.append(await newest.receive())
                await pub.send("end")  # after the drops: both readers get it
                for sub in (oldest, newest):
                    got: list[ts.Message] = early if sub is newest else []
                    while not got or got[-1].data != "end":
                        got.append(await sub.receive())
                    seqs = [m.seq for m in got]
                    assert seqs == sorted(seqs) and seqs[-1] == total + 1
                    assert len(got) + sum(m.lost for m in got) == total + 1


async def test_a_private_channel_opens_only_with_its_key(engine: tuple[str, str]) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("p", public=False, key="k3y")
        assert "p" not in [c.name for c in await r.channels()]
        for wrong in (None, "nope"):
            with pytest.raises((ts.ChannelNotFound, ts.AuthError)):
                async with r.subscribe("p", key=wrong):
                    pass
        async with r.subscribe("p", key="k3y") as sub, w.publisher("p") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                await pub.send(1)
                assert (await sub.receive()).data == 1


async def test_reader_counts_reach_the_writer(engine: tuple[str, str]) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("c")
        async with w.publisher("c") as pub:
            with trio.fail_after(WAIT_S):
                async with r.subscribe("c"), r.subscribe("c"):
                    await pub.wait_for_readers(2)
                while pub.readers:  # noqa: ASYNC110
                    await trio.sleep(0.01)


async def test_single_writer_refuses_a_second_writer(engine: tuple[str, str]) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="o") as other:
        await w.create_channel("c", single_writer=True)
        async with w.publisher("c"):
            with pytest.raises(ts.LimitExceeded):
                async with other.publisher("c"):
                    pass


async def test_an_owners_channels_end_with_it_unless_keep_and_channels_events_say_so(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_r, name="watch") as watch:
        async with watch.subscribe("$channels", policy="unbounded") as events:
            async with ts.open_client(url_w, name="owner", reconnect=False) as owner:
                await owner.create_channel("gone")
                await owner.create_channel("kept", keep=True)
                await owner.create_channel("short", lifetime=0.3)
            seen: list[tuple[str, str]] = []
            with trio.fail_after(WAIT_S):
                while ("deleted", "gone") not in seen or ("deleted", "short") not in seen:
                    event = (await events.receive()).data
                    if event.get("channel") in ("gone", "kept", "short"):
                        seen.append((event["event"], event["channel"]))
        assert {("created", "gone"), ("created", "kept"), ("created", "short")} <= set(seen)
        assert ("deleted", "kept") not in seen
        names = {c.name for c in await watch.channels()}
        assert "kept" in names and "gone" not in names and "short" not in names


async def test_arrays_arrive_intact_with_seq_and_sender(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    arrays = [np.random.default_rng(i).normal(size=(3, 100)) for i in range(5)]
    async with ts.open_client(url_w, name="daq") as daq, ts.open_client(url_r, name="rec") as rec:
        await daq.create_channel("ai")
        async with rec.subscribe("ai", policy="unbounded") as sub, daq.publisher("ai") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                for array in arrays:
                    assert await pub.send(array)
                got = [await sub.receive() for _ in arrays]
    for i, (message, array) in enumerate(zip(got, arrays, strict=True)):
        np.testing.assert_array_equal(message.data, array)
        assert (message.seq, message.sender, message.lost) == (i + 1, "daq", 0)


async def test_a_late_reader_gets_the_history(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("h", history=3)
        async with w.publisher("h") as pub:
            for i in range(10):
                assert await pub.send(i)
            await pub.wait_acknowledged()
            async with r.subscribe("h") as sub:
                with trio.fail_after(WAIT_S):
                    got = [await sub.receive() for _ in range(3)]
    assert [(m.data, m.seq) for m in got] == [(7, 8), (8, 9), (9, 10)]


async def test_every_and_sender_filters(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    async with (
        ts.open_client(url_w, name="w1") as w1,
        ts.open_client(url_w, name="w2") as w2,
        ts.open_client(url_r, name="r") as r,
    ):
        await w1.create_channel("f")
        async with (
            r.subscribe("f", policy="unbounded", every=2) as halves,
            r.subscribe("f", policy="unbounded", sender="w2") as only_w2,
            w1.publisher("f") as p1,
            w2.publisher("f") as p2,
        ):
            with trio.fail_after(WAIT_S):
                await p1.wait_for_readers(2)
                await p2.wait_for_readers(2)
                for i in range(10):
                    await p1.send(("w1", i))
                    await p1.wait_acknowledged()
                    await p2.send(("w2", i))
                    await p2.wait_acknowledged()
                got_halves = [await halves.receive() for _ in range(10)]
                got_w2 = [await only_w2.receive() for _ in range(10)]
    assert [m.seq for m in got_halves] == list(range(1, 21, 2))
    assert [tuple(m.data) for m in got_w2] == [("w2", i) for i in range(10)]


async def test_max_rate_delivers_at_most_the_rate_and_the_newest_last(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    rate_hz, total = 10.0, 60
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", max_rate=rate_hz) as sub, w.publisher("c") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                started = trio.current_time()
                for i in range(total):  # about 0.6 s of frames at 100 Hz
                    await pub.send(i)
                    await trio.sleep(0.01)
                got: list[ts.Message] = []
                while not got or got[-1].data != total - 1:  # the newest arrives in the end
                    got.append(await sub.receive())
                elapsed = trio.current_time() - started
        # One at once, then one per 1/rate at most (real time: a margin of one frame).
        assert len(got) <= 1 + rate_hz * elapsed + 1
        assert 2 <= len(got) < total
        assert [m.seq for m in got] == sorted({m.seq for m in got})
        assert sum(m.lost for m in got) == 0  # decimation is not loss


async def test_a_view_cuts_each_array_for_its_reader(engine: tuple[str, str]) -> None:
    url_w, url_r = engine
    samples = np.arange(100 * 8, dtype=np.float32).reshape(100, 8)
    view = ts.View((slice(None), slice(3, 4)))
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("ai")
        async with (
            r.subscribe("ai", policy="unbounded", view=view) as cut,
            r.subscribe("ai", policy="unbounded") as whole,
            w.publisher("ai") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers(2)
                await pub.send(samples)
                await pub.send(samples * 2)
                got_cut = [(await cut.receive()).data for _ in range(2)]
                got_whole = (await whole.receive()).data
    np.testing.assert_array_equal(got_cut[0], samples[:, 3:4])
    np.testing.assert_array_equal(got_cut[1], samples[:, 3:4] * 2)
    np.testing.assert_array_equal(got_whole, samples)


async def test_retune_mid_stream_leaves_no_duplicate_and_no_uncounted_hole(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("c")
        async with (
            r.subscribe("c", policy="unbounded") as sub,
            w.publisher("c") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                for i in range(10):
                    await pub.send(i)
                got = [await sub.receive() for _ in range(10)]
                await sub.retune(every=3)
                for i in range(10, 40):
                    await pub.send(i)
                await pub.wait_acknowledged()
                await sub.retune(every=1, policy="block", size=50)
                await pub.send("end")
                while got[-1].data != "end":
                    got.append(await sub.receive())
        seqs = [m.seq for m in got]
        assert seqs == sorted(set(seqs)), "a duplicate or a frame out of order"
        assert seqs[:10] == list(range(1, 11)) and seqs[-1] == 41
        # every=3 counts afresh from the first frame after the retune: 11, 14, ..., 38
        assert seqs[10:-1] == list(range(11, 41, 3))
        assert sub.lost == 0


async def test_a_block_reader_that_pauses_loses_nothing(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    total = 2000
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("c")
        async with (
            r.subscribe("c", policy="block", size=10) as sub,
            w.publisher("c") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                got: list[int] = []
                async with trio.open_nursery() as nursery:

                    async def send() -> None:
                        for i in range(total):
                            await pub.send(i)

                    nursery.start_soon(send)
                    for _ in range(total):
                        message = await sub.receive()
                        got.append(message.data)
                        assert message.lost == 0
                        if len(got) % 500 == 0:
                            await trio.sleep(0.1)  # a slow reader: the writer waits
    assert got == list(range(total))
    assert sub.lost == 0


async def test_a_lifetime_ends_the_channel_while_its_owner_stays(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_w, name="owner") as owner, ts.open_client(url_r, name="r") as r:
        await owner.create_channel("short", lifetime=0.5)
        await owner.create_channel("long")
        started = trio.current_time()
        async with r.subscribe("short") as sub:
            with trio.fail_after(WAIT_S):
                async for _ in sub:
                    pass  # a clean end of iteration when the lifetime runs out
        assert trio.current_time() - started >= 0.4
        names = {c.name for c in await r.channels()}
        assert "short" not in names and "long" in names
        assert "short" not in {c.name for c in await owner.channels()}


async def test_a_keep_channel_outlives_its_owner_and_takes_new_writers(
    engine: tuple[str, str],
) -> None:
    url_w, url_r = engine
    async with ts.open_client(url_r, name="r") as r:
        async with ts.open_client(url_w, name="owner", reconnect=False) as owner:
            await owner.create_channel("kept", keep=True, history=2)
            async with owner.publisher("kept") as pub:
                await pub.send("before")
                await pub.wait_acknowledged()
        await trio.sleep(1.0)  # past the resume grace (0.5 s): an owned channel would be gone
        assert "kept" in {c.name for c in await r.channels()}
        async with (
            ts.open_client(url_w, name="next") as successor,
            r.subscribe("kept", policy="unbounded") as sub,
        ):
            with trio.fail_after(WAIT_S):
                assert (await sub.receive()).data == "before"  # its history too
                async with successor.publisher("kept") as pub:
                    await pub.wait_for_readers()
                    await pub.send("after")
                assert (await sub.receive()).data == "after"


def limited_config(
    engine_kind: str, request: pytest.FixtureRequest, **limits: Any
) -> ts.ServerConfig:
    """A server on a free TCP port, on the engine under test, with ``limits`` set."""
    options = engine_options(engine_kind, request)
    return ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, **limits, **options)


async def test_a_client_owns_at_most_max_channels_per_client_on_either_engine(
    engine_kind: str, request: pytest.FixtureRequest
) -> None:
    config = limited_config(engine_kind, request, max_channels_per_client=2)
    async with ts.open_server(config) as server, ts.open_client(str(server.tcp_url)) as client:
        await client.create_channel("a")
        await client.create_channel("b")
        with pytest.raises(ts.LimitExceeded, match="max_channels_per_client"):
            await client.create_channel("c")
        await client.delete_channel("a")
        await client.create_channel("c")  # room again


async def test_a_server_keeps_at_most_max_kept_channels_on_either_engine(
    engine_kind: str, request: pytest.FixtureRequest
) -> None:
    # A kept channel counted against its creator only while it was connected: a client that
    # created kept channels, left and came back could grow the server without bound.
    async with ts.open_server(limited_config(engine_kind, request, max_kept_channels=2)) as server:
        url = str(server.tcp_url)
        async with ts.open_client(url, name="setup") as setup:
            await setup.create_channel("k1", keep=True)
            await setup.create_channel("k2", keep=True)
            await setup.create_channel("plain")  # not kept: not counted
        async with ts.open_client(url, name="setup") as setup:  # back: the kept ones stayed
            with pytest.raises(ts.LimitExceeded, match="max_kept_channels") as refused:
                await setup.create_channel("k3", keep=True)
            assert "delete those no longer needed" in str(refused.value)
            await setup.create_channel("k1", keep=True)  # taken back: not a new one
            await setup.create_channel("plain2")
            await setup.delete_channel("k1")
            await setup.create_channel("k3", keep=True)  # room again
            assert {c.name for c in await setup.channels()} >= {"k2", "k3", "plain2"}


# -- start without Redis -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_node_without_its_redis_fails_at_once_in_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, engine=url)
    with trio.fail_after(WAIT_S), pytest.raises(ts.ClusterUnavailable) as refused:
        async with ts.open_server(config):
            pass
    assert str(refused.value).startswith(f"cannot reach Redis at {url}: ")
    assert str(refused.value).endswith("(start redis-server, or check the engine URL: --engine)")


async def test_a_redis_that_refuses_the_node_says_why_in_one_line(
    redis_server: RedisServer,
) -> None:
    # A password missing or wrong, a database out of range: serve ended in coredis's
    # traceback (69 lines) where the engine URL was to blame (operator persona).
    where = f"127.0.0.1:{redis_server.port}"
    assert redis_server.command("CONFIG", "SET", "requirepass", "sekrit") == b"+OK"
    refusals = [
        (f"redis://{where}/0", "asks for a password: put it in the engine URL"),
        (f"redis://:wrong@{where}/0", "invalid username-password pair"),
        (f"redis://:sekrit@{where}/99", "DB index is out of range"),
    ]
    for url, said in refusals:
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, engine=url)
        with trio.fail_after(WAIT_S), pytest.raises(ts.ClusterUnavailable) as refused:
            async with ts.open_server(config):
                pass
        message = str(refused.value)
        assert said in message and "\n" not in message, message
        assert f"Redis at redis://{where}/" in message  # the password is not shown
        assert refused.value.__cause__ is None and refused.value.__suppress_context__
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=None, engine=f"redis://:sekrit@{where}/0"
    )
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None  # the right URL is let in


async def test_a_redis_that_never_answers_is_named_after_the_start_bound(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(redis_engine, "STARTUP_TIMEOUT_S", 0.5)
    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, engine=url)
    with trio.fail_after(WAIT_S), pytest.raises(ts.ClusterUnavailable, match="did not answer"):
        async with ts.open_server(config):
            pass
    # The bound's cancellation is not an error of its own: coredis logged it as one, with
    # the exception group, ~130 lines above the one line that says what happened.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_tls_url_to_a_plain_redis_says_so(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said only "did not answer within 10 s (is it a Redis server? ...)" (operator persona).
    monkeypatch.setattr(redis_engine, "STARTUP_TIMEOUT_S", 0.5)
    url = f"rediss://127.0.0.1:{redis_server.port}/0"
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, engine=url)
    with trio.fail_after(WAIT_S), pytest.raises(ts.ClusterUnavailable) as refused:
        async with ts.open_server(config):
            pass
    assert "a plain Redis never answers a rediss:// URL: use redis://" in str(refused.value)


async def test_tls_files_the_engine_cannot_load_are_a_setting_named_at_start(
    tmp_path: Path,
) -> None:
    # A CA file that is not PEM passes the config's check (it exists) and failed as
    # coredis loaded it: an ssl.SSLError the CLI took for a port it could not listen on.
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    url = f"rediss://127.0.0.1:{free_port()}/0?ssl_ca_certs={not_pem}"
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, engine=url)
    with trio.fail_after(WAIT_S), pytest.raises(ts.InvalidSetting) as refused:
        async with ts.open_server(config):
            pass
    assert refused.value.setting == "engine"
    assert "its TLS files (ssl_certfile, ssl_keyfile, ssl_ca_certs) cannot be loaded" in str(
        refused.value
    )


async def silent(stream: trio.SocketStream) -> None:
    """A peer that takes the connection and never says a word."""
    async with stream:
        await trio.sleep_forever()
