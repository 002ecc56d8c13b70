"""The command line rides through failures: ``sub`` and ``dump`` reconnect and say so."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import trio
from proxy import open_proxy
from test_cli import cli, running, wait_for_channel
from test_client_liveness import acknowledged_then_stop, server_process

import trio_stream as ts
from trio_stream.cli import dumpfile

WAIT_S = 20.0


async def test_dump_rides_through_a_server_restart_and_records_the_gap(tmp_path: Path) -> None:
    path = tmp_path / "rec.tsdump"
    async with server_process() as (process, url):
        port = urlsplit(url).port
        assert port is not None
        async with (
            ts.open_client(url, name="daq") as daq,
            running("dump", url, "AI1", str(path), "--count", "6") as dump,
        ):
            await daq.create_channel("AI1", history=10)
            await wait_for_channel(daq, "AI1", readers=1)
            async with daq.publisher("AI1") as pub:
                for i in range(3):
                    assert await pub.send(i)
                await pub.wait_acknowledged()
                await trio.sleep(0.3)  # the recorder writes them
                process.kill()
                await process.wait()
                async with server_process(tcp_port=port) as (process2, _):
                    with trio.fail_after(WAIT_S):
                        await pub.wait_for_readers()  # channel re-created, recorder back
                    for i in range(3, 6):
                        assert await pub.send(i)
                    code, _, stderr = await dump.finish()
                    replayed = await cli("replay", str(path), url, "--fast", "--no-wait")
                    await acknowledged_then_stop(pub, process2)
    assert code == 0, stderr
    assert "reset" in stderr
    # "lost 0" alone read as nothing missed across the crash (lab persona).
    assert "; lost 0 and 1 reset (loss unknown)" in stderr.strip().splitlines()[-1], stderr
    with path.open("rb") as f:
        frames = list(dumpfile.DumpReader(f))
    assert [f["data"] for f in frames] == list(range(6))
    assert [f["seq"] for f in frames] == [1, 2, 3, 1, 2, 3]
    assert "gap" not in frames[0]
    gap = frames[3]["gap"]
    assert gap["kind"] == "reset" and gap["lost"] is None  # recovered: whatever history had
    assert replayed.returncode == 0, replayed.stderr
    assert "1 gap where its recorder reconnected" in replayed.stderr.decode()


async def test_sub_rides_through_a_cut_and_prints_the_gap(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(server.tcp_url, name="daq") as daq,
    ):
        await daq.create_channel("AI1", history=10)
        async with running("sub", proxy.url, "AI1", "--count", "4") as sub:
            await wait_for_channel(daq, "AI1", readers=1)
            async with daq.publisher("AI1") as pub:
                await pub.send(0)
                assert json.loads(await sub.readline())["data"] == 0
                proxy.cut()
                for i in range(1, 4):
                    await pub.send(i)
                lines = [json.loads(await sub.readline()) for _ in range(3)]
            code, _, stderr = await sub.finish()
    assert code == 0, stderr
    assert [line["data"] for line in lines] == [1, 2, 3]
    assert lines[0]["gap"] == {"kind": "resumed", "lost": 0, "recovered": 3}
    # Said as it happens, not only when the next value comes (a stopped server's reader).
    assert f"the connection to {proxy.url} is lost; reconnecting (Ctrl-C to stop)" in stderr
    assert f"reconnected to {proxy.url}" in stderr
    # In the command's words only, not again as its client's log lines.
    assert stderr.count("is lost") == 1 and stderr.count("reconnected") == 1, stderr
