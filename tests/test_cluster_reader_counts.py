"""Reader counts across nodes: a writer's ``readers`` follows the readers on other nodes.

A node learns another node's reader counts from its announcements (pub/sub) and, every
heartbeat, from a read of every node's counts in Redis (which repairs announcements lost
across a reconnect). The two must not undo each other: a count announced while the read is on
its way is newer than what the read found. Real nodes, a real redis-server; the node's
heartbeat read is answered late through a hook on its real pipeline (a busy node: the answer
waits in its socket while the announcement is handled).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from redis_server import RedisServer
from test_cluster import WAIT_S, node_config

import trio_stream as ts


class _LateReads:
    """Presence's Redis client, whose next non-transactional pipeline (the heartbeat's read of
    every node's reader counts) is answered, then held until ``release`` is set."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.read = trio.Event()  # the read has run in Redis; its answer is held
        self.release = trio.Event()
        self.applied = trio.Event()  # the held answer has been handed back

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pipeline(self, *, transaction: bool) -> Any:
        real = self._client.pipeline(transaction=transaction)
        if transaction or self.read.is_set():
            return real
        late = self

        class Held:
            async def __aenter__(self) -> Any:
                return await real.__aenter__()

            async def __aexit__(self, *exc: Any) -> Any:
                result = await real.__aexit__(*exc)
                late.read.set()
                await late.release.wait()
                late.applied.set()
                return result

        return Held()


async def test_a_count_announced_during_the_heartbeat_read_is_not_undone_by_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Node a's heartbeat read of the reader counts runs in Redis, then b's first reader of
    # "c" comes and is announced, and a hears it (the writer's wait_for_readers returns)
    # before a handles the read's answer. Before, that older answer replaced a's counts: the
    # writer was told "no readers" for a heartbeat (1 s), its sends returned False and put
    # nothing on the wire, though its reader was there all along.
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
        ts.open_client(str(b.tcp_url), name="rec") as rec,
    ):
        await daq.create_channel("c")
        presence: Any = a.state.engine.io.presence  # type: ignore[attr-defined]
        late = _LateReads(presence._client)
        async with daq.publisher("c") as pub:
            monkeypatch.setattr(presence, "_client", late)
            with trio.fail_after(WAIT_S):
                await late.read.wait()  # within a heartbeat interval
            async with rec.subscribe("c") as sub:
                with trio.fail_after(WAIT_S):
                    await pub.wait_for_readers()
                late.release.set()
                with trio.fail_after(WAIT_S):
                    await late.applied.wait()
                # The answer's counts reach the writer in a few ms, the next heartbeat in 1 s.
                await trio.sleep(0.3)
                assert pub.readers == 1
                assert await pub.send("seen")
                with trio.fail_after(WAIT_S):
                    assert (await sub.receive()).data == "seen"
