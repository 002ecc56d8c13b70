"""A client's restore after a reconnect (Client._restore, Subscription._resubscribe,
Publisher._reopen) meeting a Redis failure on the node: the node answers ClusterUnavailable
("try again") and keeps the connection, so the client tries again later, as for a channel
not re-created yet, instead of failing the subscription or the publisher for good. Real
nodes, a real redis-server, a proxy that cuts the connection; Redis fails once through a hook
on the node's real registry call."""

from __future__ import annotations

from typing import Any

import coredis
import pytest
import trio
from proxy import open_proxy
from redis_server import RedisServer
from test_cluster import WAIT_S, node_config

import trio_stream as ts


def fail_once_for(registry: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the node's registry.get of ``name`` fail once (a Redis blip); returns the list
    that notes the failure."""
    real_get = registry.get
    failures: list[str] = []

    async def get(channel: str, **options: Any) -> Any:
        if channel == name and not failures:
            failures.append(channel)
            raise coredis.exceptions.ConnectionError("Redis blip (test)")
        return await real_get(channel, **options)

    monkeypatch.setattr(registry, "get", get)
    return failures


async def reconnected_past(client: ts.Client, failures: list[str]) -> None:
    with trio.fail_after(WAIT_S):
        while not failures:  # noqa: ASYNC110 - the blip happens in the node's request
            await trio.sleep(0.01)
        await client.wait_state("open")


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param("reader", id="resubscribe"),
        pytest.param("writer", id="publisher-reopen"),
    ],
)
async def test_a_restore_that_meets_a_redis_failure_is_tried_again(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    # A reader's subscription that the node kept for it (kept.py) comes back without a word
    # to Redis: nothing is kept here, so the resubscription asks Redis.
    kept = {"resume_grace_s": 0} if cut == "reader" else {}
    async with (
        ts.open_server(node_config(redis_server, "a", **kept)) as a,
        open_proxy(str(a.tcp_url)) as proxy,
        ts.open_client(str(a.tcp_url), name="owner") as owner,
        ts.open_client(proxy.url if cut == "reader" else str(a.tcp_url), name="rec") as rec,
        ts.open_client(proxy.url if cut == "writer" else str(a.tcp_url), name="w") as w,
    ):
        await owner.create_channel("c")
        async with rec.subscribe("c", policy="block") as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            await pub.send(1)
            await pub.wait_acknowledged()
            with trio.fail_after(WAIT_S):
                assert (await sub.receive()).data == 1
            registry = a.state.engine.io.registry  # type: ignore[attr-defined]
            failures = fail_once_for(registry, "c", monkeypatch)
            proxy.cut()  # the cut client reconnects (its resume token) and restores
            await reconnected_past(rec if cut == "reader" else w, failures)
            with trio.fail_after(WAIT_S):
                while not pub.readers:  # noqa: ASYNC110 - the retry comes after a backoff
                    await trio.sleep(0.01)
            await pub.send(2)  # a writer's send waits for its reopen (retried) first
            with trio.fail_after(WAIT_S):
                got = await sub.receive()
            assert (got.data, got.lost) == (2, 0)
