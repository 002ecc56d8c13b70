"""``sub`` and ``dump`` say on stderr when their subscription waits out a reset end.

A cluster's Redis that restarts empty ends the readers of every channel with a reset end
(docs/protocol.md section 8, "Reset ends"): the subscription subscribes again by itself, for
at most RESET_BACK_S, and the command's output stood still meanwhile without a word. Real
nodes in this process, a real redis-server SIGKILLed and started again empty; the commands
as subprocesses (the bound's end, which takes RESET_BACK_S, in this process with a short one).
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_server import RedisServer
from test_cli import WAIT_S, json_lines, running
from test_cli_match import finish, stderr_until
from test_cluster import node_config, two_nodes

import trio_stream as ts
from trio_stream import _subscription as subscription_module
from trio_stream.cli import build_parser, dumpfile, parse_command_line

WAITING = (
    "trio-stream {command}: channel 'c' was reset in the cluster (its Redis restarted empty, "
    "or it was created anew on another node): resubscribing since the last message, for at "
    "most 30 s (Ctrl-C to stop{complete})"
)
BACK = (
    "trio-stream {command}: channel 'c' is back after its reset: going on (its seqs start "
    "again; the first message of its new life has a reset gap)"
)


async def send_until(pub: ts.Publisher, got_one: trio.Event) -> None:
    """Send "after" every 0.1 s until ``got_one`` (the channel is back on both nodes by then,
    and the reader rides through to it); refused meanwhile: the channel is not back yet."""
    while not got_one.is_set():
        with contextlib.suppress(ts.ChannelNotFound, ts.ClusterUnavailable):
            await pub.send("after")
        with trio.move_on_after(0.1):
            await got_one.wait()


@pytest.mark.parametrize("command", ["sub", "dump"])
async def test_a_reader_says_its_reset_wait_and_reads_on(
    command: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "rec.tsdump"
    argv = ["sub", "--count", "4"] if command == "sub" else ["dump", "--count", "4"]
    async with (
        two_nodes(redis_server) as (url_a, url_b),
        ts.open_client(url_a, name="daq") as daq,
    ):
        await daq.create_channel("c")  # kept on node a; the reader is on node b
        where = [str(path)] if command == "dump" else []
        async with (
            daq.publisher("c") as pub,
            running(argv[0], url_b, "c", *where, *argv[1:]) as reader,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
            assert await pub.send("before")
            await pub.wait_acknowledged()
            await trio.sleep(0.3)  # read before the restart
            await trio.to_thread.run_sync(redis_server.restart)  # SIGKILL, then empty
            seen = bytearray()
            # Said while it waits, before anything of the new life is sent.
            complete = "; the recording so far is complete" if command == "dump" else ""
            waiting = WAITING.format(command=command, complete=complete)
            await stderr_until(reader.process, "resubscribing", seen)
            back = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_until, pub, back)
                await stderr_until(reader.process, "is back after its reset", seen)
                back.set()
            for i in range(3):  # it reads on: the rest of --count
                while not await pub.send(i):  # noqa: ASYNC110 (its node counts it again)
                    await trio.sleep(0.01)
            code, out, stderr = await finish(reader, seen)
    assert code == 0, stderr
    lines = stderr.splitlines()
    assert waiting in lines, stderr
    assert BACK.format(command=command) in lines, stderr
    assert lines.index(waiting) < lines.index(BACK.format(command=command))
    assert "did not come back" not in stderr and "ended" not in stderr, stderr
    if command == "sub":
        records = json_lines(out)
    else:
        with path.open("rb") as f:
            records = list(dumpfile.DumpReader(f))
    assert records[0]["data"] == "before" and "gap" not in records[0], records
    assert records[1]["gap"]["kind"] == "reset", records
    # Any "after" sent before the reader was back comes first (the new life's history).
    rest = [r["data"] for r in records[1:]]
    afters = rest.count("after")
    assert rest == ["after"] * afters + list(range(3 - afters)), records


class _BatchOrder(random.Random):
    """trio's scheduler randomness, pinned: each batch of woken tasks runs in one order (as
    woken, or the reverse), under Hypothesis's deterministic scheduling (a shuffle after a
    sort) and without it (a coin to reverse) alike. ``asked`` counts the batches it
    ordered: were trio to stop consulting ``_r``, the "reversed" case would test nothing."""

    def __init__(self, reverse: bool) -> None:
        self.asked = 0
        super().__init__(0)
        self._reverse = reverse

    def random(self) -> float:
        self.asked += 1
        return 0.0 if self._reverse else 0.99  # (below 0.5: the batch is reversed)

    def shuffle(self, x: Any, *args: Any) -> None:
        self.asked += 1
        if self._reverse:
            x.reverse()


@pytest.mark.parametrize("order", ["as woken", "reversed"])
@pytest.mark.parametrize("command", ["sub", "dump"])
async def test_a_reader_whose_channel_never_comes_back_says_it_gives_up(
    command: str,
    order: str,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # The command in this process, for a short bound (the real one is 30 s). The give-up
    # line and the end's own line are printed by two tasks woken by the same end: dump
    # printed them in either order (a review). Each order of that batch is run here.
    bound_s = 1.5
    monkeypatch.setattr(subscription_module, "RESET_BACK_S", bound_s)
    batch_order = _BatchOrder(order == "reversed")
    if not hasattr(trio._core._run, "_r"):  # a private name: a later trio may move it
        pytest.skip("this trio's run loop draws its batch order elsewhere: update the test")
    monkeypatch.setattr("trio._core._run._r", batch_order)
    path = tmp_path / "rec.tsdump"
    async with (
        ts.open_server(node_config(redis_server, "a")) as a,
        ts.open_server(node_config(redis_server, "b")) as b,
        ts.open_client(str(a.tcp_url), name="daq") as daq,
    ):
        engine_a: Any = a.state.engine

        async def not_again(name: str) -> None:
            pass  # node a never registers it again (as if it had died with Redis)

        monkeypatch.setattr(engine_a, "_reregister", not_again)
        await daq.create_channel("c")
        where = [str(path)] if command == "dump" else []
        args = parse_command_line(build_parser(), [command, str(b.tcp_url), "c", *where])
        async with daq.publisher("c") as pub, trio.open_nursery() as nursery:
            codes: list[int] = []

            async def run() -> None:
                codes.append(await args.run(args))

            nursery.start_soon(run)
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
            assert await pub.send("before")
            await pub.wait_acknowledged()
            await trio.to_thread.run_sync(redis_server.restart)
            with trio.fail_after(WAIT_S + bound_s):
                while not codes:  # noqa: ASYNC110 (it ends by itself)
                    await trio.sleep(0.05)
    captured = capsys.readouterr()
    assert batch_order.asked > 0  # trio ordered its batches with it
    assert codes == [0], captured.err
    if command == "sub":
        assert [json.loads(line)["data"] for line in captured.out.splitlines()] == ["before"]
    else:
        with path.open("rb") as f:
            assert [record["data"] for record in dumpfile.DumpReader(f)] == ["before"]
    lines = captured.err.splitlines()
    complete = "; the recording so far is complete" if command == "dump" else ""
    waiting = WAITING.format(command=command, complete=complete).replace("30 s", "1.5 s")
    given_up = (
        f"trio-stream {command}: channel 'c' did not come back within 1.5 s of its reset: giving up"
    )
    again = "reads on" if command == "sub" else "records on"
    gone = (
        f"trio-stream {command}: channel 'c' is gone from Redis (deleted, created anew, or lost "
        f"in a Redis restart): subscribe again (--wait-channel {again} when it is back)"
    )
    assert waiting in lines, captured.err
    at = lines.index(waiting)
    assert lines[at : at + 3] == [waiting, given_up, gone], captured.err
