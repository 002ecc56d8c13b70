"""Channel behaviours on both engines: one memory node, and two Redis nodes (writer on one,
reader on the other). The same test, the same expectations: several nodes change nothing a
client can see. Redis tests share tests/test_cluster.py's helpers and private redis-server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from redis_server import RedisServer
from test_cluster import WAIT_S, two_nodes

import trio_stream as ts


@pytest.fixture(params=["memory", "redis"])
async def engine(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[tuple[str, str]]:
    """(writer's URL, reader's URL): the same memory node, or nodes a and b over Redis."""
    options: dict[str, Any] = {"resume_grace_s": 0.5}
    if request.param == "memory":
        config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, **options)
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None
            yield server.tcp_url, server.tcp_url
    else:
        async with two_nodes(redis_server, **options) as urls:
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
                await pub.send("end")  # after the drops: both readers get it
                for sub in (oldest, newest):
                    got: list[ts.Message] = []
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
