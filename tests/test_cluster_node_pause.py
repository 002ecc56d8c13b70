"""A reader's node that stops for longer than the heartbeat TTL (SIGSTOP: a frozen VM, a
debugger, swapping) and comes back, with real nodes as child processes and a real Redis.

The other nodes take it for gone after the TTL (3 s); its reader counts stay counted for
resume_grace_s, so the channel's writer goes on publishing into the stream, and the block
reader on the frozen node gets every value once it runs again. Its counts used to go with
the TTL: the writer's sends returned False, and the values were never published, so no
reader could count them (a 5 s pause: 467 values missing, the recorder's lost 0).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import trio
from redis_server import RedisServer
from test_cluster import WAIT_S, _said, node_process

import trio_stream as ts

PAUSE_S = 5.0  # over the heartbeat TTL (3 s), under the default resume_grace_s (10 s)
RATE_HZ = 100


async def test_a_block_reader_on_a_node_frozen_past_the_ttl_gets_every_value(
    redis_server: RedisServer,
) -> None:
    async with (
        node_process(redis_server, "a") as (url_a, _),
        node_process(redis_server, "b") as (url_b, process_b),
        ts.open_client(url_a, name="w") as w,
        ts.open_client(url_b, name="r") as r,
    ):
        await w.create_channel("c")
        refused: list[int] = []
        got: list[int] = []
        async with r.subscribe("c", policy="block", size=10_000) as sub, w.publisher("c") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
            total = int(RATE_HZ * (PAUSE_S + 3))
            with trio.fail_after(WAIT_S + PAUSE_S * 2):
                async with trio.open_nursery() as nursery:

                    async def pause_b() -> None:
                        await trio.sleep(1.0)
                        os.kill(process_b.pid, signal.SIGSTOP)
                        try:
                            await trio.sleep(PAUSE_S)
                        finally:
                            os.kill(process_b.pid, signal.SIGCONT)

                    nursery.start_soon(pause_b)
                    for i in range(total):
                        if not await pub.send(i):
                            refused.append(i)
                        await trio.sleep(1 / RATE_HZ)
                while len(got) + len(refused) < total:
                    msg = await sub.receive()
                    assert msg.lost == 0 and msg.gap is None, msg
                    got.append(msg.data)
        assert refused == []
        assert got == list(range(total))
        # The frozen node's own log blames its stop, not Redis (it said Redis had not
        # answered its heartbeat: "no answer", and nothing of how long it did not run).
        said = frozen_node_said(process_b)
        assert "(no answer)" not in said, said
        stopped = re.search(r"node 'b' did not run for ([0-9.]+) s", said)
        assert stopped is not None, said
        assert PAUSE_S - 0.5 <= float(stopped.group(1)) <= PAUSE_S + 2, said
        assert "this process did not run for" in said, said


def frozen_node_said(process: subprocess.Popen[bytes]) -> str:
    """What a running node wrote to stderr so far (read without moving the offset it writes
    at, which the child shares)."""
    said = _said[process]
    return os.pread(said.fileno(), 1 << 20, 0).decode(errors="replace")


async def test_calls_to_a_missing_name_fail_at_once_after_a_node_died(
    redis_server: RedisServer,
) -> None:
    # The dead node's reader counts are kept for resume_grace_s; that hold once also made
    # every node take client names as still settling (as after a Redis restart), so a call
    # to a name nobody holds waited a heartbeat TTL (3 s) before "no client named" (a review).
    async with (
        node_process(redis_server, "a") as (url_a, _),
        node_process(redis_server, "b") as (_, process_b),
        ts.open_client(url_a, name="ctl") as ctl,
    ):
        os.kill(process_b.pid, signal.SIGKILL)
        await trio.sleep(4.0)  # past the TTL: a has seen b go
        started = trio.current_time()
        with pytest.raises(ts.RpcError, match="no client named 'nobody' is connected"):
            await ctl.rpc("nobody", timeout=WAIT_S)
        assert trio.current_time() - started < 1.5
