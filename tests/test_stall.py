"""The stall monitor (trio_stream/_server/stall.py): a process that did not run is noticed
with how long it did not, whether or not a deadline fell in the stop. The stop is a jump of
trio's mock clock with no checkpoint (every task resumes late at once, as after SIGSTOP);
real SIGSTOPs are in test_liveness_server.py (a server) and test_cluster_node_pause.py (a
node, whose log blames its stop rather than Redis)."""

from __future__ import annotations

import logging
import math
import re

import pytest
import trio
import trio.testing

import trio_stream as ts
from trio_stream._server.stall import STALL_S, TICK_S, StallMonitor


async def test_a_stop_is_measured_and_logged_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = StallMonitor()
    nursery.start_soon(monitor.run)
    await trio.sleep(1.0)
    assert monitor.stopped_for(0.0) == 0.0 and monitor.resumed_at == -math.inf
    before = trio.current_time()
    autojump_clock.jump(12.0)
    # Asked before the monitor's own tick has run (the tasks resume in any order): the stop
    # being caught up counts already.
    assert monitor.stopped_for(before) == pytest.approx(12.0, abs=TICK_S)
    assert monitor.resumed_at == trio.current_time()
    await trio.sleep(1.0)
    assert monitor.stopped_for(before) == pytest.approx(12.0, abs=TICK_S)
    assert monitor.stopped_for(trio.current_time()) == 0.0  # not since it ended
    assert monitor.resumed_at == pytest.approx(before + 12.0, abs=TICK_S)
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_stream._server.stall"]
    assert len(lines) == 1, lines
    said = re.search(r"this process did not run for ([0-9.]+) s", lines[0])
    assert said is not None and float(said.group(1)) == pytest.approx(12.0, abs=TICK_S)


async def test_lateness_under_the_bound_is_not_a_stop(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = StallMonitor()
    nursery.start_soon(monitor.run)
    await trio.sleep(1.0)
    autojump_clock.jump(STALL_S * 0.8)
    await trio.sleep(1.0)
    assert monitor.stopped_for(0.0) == 0.0 and monitor.resumed_at == -math.inf
    assert not [r for r in caplog.records if r.name == "trio_stream._server.stall"]


async def test_not_running_is_never_a_stop(autojump_clock: trio.testing.MockClock) -> None:
    monitor = StallMonitor()
    autojump_clock.jump(100.0)
    assert monitor.stopped_for(0.0) == 0.0 and monitor.resumed_at == -math.inf


async def test_a_server_stopped_says_for_how_long_and_keeps_its_clients(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The watchdog learned of a stop only by waking late for a client's deadline: by how far
    # the stop outlasted that deadline (3.7 s said for a 12 s SIGSTOP), and nothing at all
    # when no deadline fell within it (the default idle_timeout_s, 60 s).
    caplog.set_level(logging.WARNING)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, idle_timeout_s=60.0)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="kept") as client:
        await trio.sleep(1.0)
        autojump_clock.jump(40.0)  # client and server stopped together, under the idle bound
        await trio.sleep(2.0)
        assert (await client.stats()).connections == 1
        said = [r.getMessage() for r in caplog.records if "did not run for" in r.getMessage()]
        assert len(said) == 1, said
        stopped = re.search(r"did not run for ([0-9.]+) s", said[0])
        assert stopped is not None and float(stopped.group(1)) == pytest.approx(40.0, abs=1.0)
