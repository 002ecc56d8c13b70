"""A lossy reader resuming into a new epoch of its channel is told what of it went by.

A channel created anew (after a Redis restart, its creator registers it again) starts a new
epoch; a reader that resubscribes ``since=`` its position in the old one gets a ``reset``
and the new epoch's history as a new subscription would. The frames of the new epoch that
it did not get are its loss, counted in the ``lost`` of its first message: those the
history no longer held too. A ``drop_oldest`` size 10 reader back after a Redis restart
began at seq 3618 of the new epoch with ``lost`` 0 (a cluster tester): through Redis its
node reads back only its ``size`` of the stream, and the frames before went uncounted (on
one server, those before the history's oldest did).

One server, and two nodes sharing a real Redis (writer on one, reader on the other), all on
loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from redis_server import RedisServer
from test_cluster import WAIT_S, two_nodes

import trio_stream as ts

HISTORY = 20
FRAMES = 60  # of the new epoch, while the reader is away: more than the history holds
QUIET_S = 1.0  # no frame for this long: the resumed reader has had all it will get


@asynccontextmanager
async def one_server() -> AsyncIterator[tuple[str, str]]:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None
        yield server.tcp_url, server.tcp_url


async def first_after_reset(url_w: str, url_r: str, **options: Any) -> list[ts.Message]:
    """A reader takes 3 frames of channel "c", which is then deleted and created again;
    FRAMES frames of its new epoch later, the reader resubscribes ``since=`` its old
    position with ``options``. Returns what that subscription got."""
    async with ts.open_client(url_w, name="w") as w, ts.open_client(url_r, name="r") as r:
        await w.create_channel("c", history=HISTORY)
        with trio.fail_after(WAIT_S):
            async with r.subscribe("c") as first, w.publisher("c") as pub:
                await pub.wait_for_readers()
                for i in range(3):
                    await pub.send(i)
                for _ in range(3):
                    await first.receive()
                position = first.position
            await w.delete_channel("c")
            await w.create_channel("c", history=HISTORY)  # a new epoch
            async with w.publisher("c") as pub:
                for i in range(FRAMES):
                    await pub.send(i)
                await pub.wait_acknowledged()
        assert position.epoch != ""
        got: list[ts.Message] = []
        async with r.subscribe("c", since=position, **options) as again:
            for _ in range(FRAMES + 1):  # bounded: no more than the epoch holds come
                with trio.move_on_after(QUIET_S):
                    got.append(await again.receive())
                    continue
                break
        return got


@pytest.mark.parametrize(
    ("options", "first_seq", "kept"),
    [
        # Its newest 10 of the new epoch: the 50 before them lost.
        ({"policy": "drop_oldest", "size": 10}, 51, 10),
        # every=2 from the oldest it is given (on one node the history's 41, through Redis
        # the 10 it reads back, 51 up), size 5 of those: 51, 53, ..., 59; lost the odd
        # seqs before, 25 of them.
        ({"policy": "drop_oldest", "size": 5, "every": 2}, 51, 5),
    ],
)
@pytest.mark.parametrize("where", ["one server", "two nodes"])
async def test_a_lossy_reader_resuming_into_a_new_epoch_counts_the_frames_it_missed(
    redis_server: RedisServer, where: str, options: dict[str, Any], first_seq: int, kept: int
) -> None:
    servers = one_server() if where == "one server" else two_nodes(redis_server)
    async with servers as (url_a, url_b):
        got = await first_after_reset(url_a, url_b, **options)
    every = options.get("every", 1)
    assert [m.seq for m in got] == list(range(first_seq, FRAMES + 1, every))[-kept:]
    first = got[0]
    assert first.gap is not None and first.gap.kind == "reset" and first.gap.lost is None
    assert first.gap.recovered == kept
    # Every frame of the new epoch it would have kept is either here or counted.
    assert first.lost == len(range(first_seq % every or every, first_seq, every))
    assert [m.lost for m in got[1:]] == [0] * (kept - 1)
