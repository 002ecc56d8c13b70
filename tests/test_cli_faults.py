"""The command line through a tester's faults: a bridge's target restarted, a channel gone
with its server, a recording's path or pipe that fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from test_cli import CLI, ENV, WAIT_S, _dump_bytes, cli, running, wait_for_channel
from test_client_liveness import server_process

import trio_stream as ts
from trio_stream.cli import _channels, build_parser, dumpfile, parse_command_line, pubsub, record

RESTART_WAIT_S = 20.0  # a killed server's clients back on the new one (backoff up to 5 s)


async def test_bridge_loses_nothing_silently_when_its_target_restarts(server: ts.Server) -> None:
    # After the target's restart the copy had no readers until theirs reconnected, and the
    # bridge (`pub.readers == 0`) dropped its source subscription: what the source sent
    # meanwhile reached nobody, and its stderr said only "reconnected".
    assert server.tcp_url is not None
    src_url = server.tcp_url
    got: list[int] = []
    sent: list[int] = []
    async with server_process() as (dst_process, dst_url):
        port = urlsplit(dst_url).port
        assert port is not None
        async with (
            ts.open_client(src_url, name="daq") as daq,
            ts.open_client(dst_url, name="viewer") as viewer,
        ):
            await daq.create_channel("src")
            async with running(
                "bridge", src_url, dst_url, "src", "--rename", "src=copy", "--policy", "block"
            ) as bridge:
                await wait_for_channel(viewer, "copy")
                async with (
                    viewer.subscribe("copy", policy="block", size=10_000) as sub,
                    trio.open_nursery() as nursery,
                ):
                    reading = trio.CancelScope()

                    async def read() -> None:
                        with reading:
                            async for msg in sub:
                                got.append(msg.data)

                    async def until(done: Any, wait_s: float = WAIT_S) -> None:
                        with trio.fail_after(wait_s):
                            while not done():  # noqa: ASYNC110 - another task's list
                                await trio.sleep(0.02)

                    nursery.start_soon(read)
                    await wait_for_channel(daq, "src", readers=1)
                    async with daq.publisher("src") as pub:

                        async def send(count: int) -> None:
                            for _ in range(count):
                                await pub.send(len(sent))  # (False: the bridge did not read)
                                sent.append(len(sent))
                                await trio.sleep(0.01)

                        await send(20)
                        # Nothing in flight at the kill: a frame the target took and died
                        # with is its loss, not the bridge's to see.
                        await until(lambda: got == sent)
                        dst_process.kill()  # SIGKILL: no goodbye to anyone
                        await dst_process.wait()
                        await send(50)  # while the target is down
                        async with server_process(tcp_port=port):
                            # Until the copy's reader has its frames again, and a while after.
                            while len(got) <= 20:
                                await send(10)
                                assert len(sent) < 5000, "the copy's reader never came back"
                            await send(100)
                            await pub.wait_acknowledged()
                            with trio.move_on_after(WAIT_S):
                                await until(lambda: bool(got) and got[-1] == sent[-1])
                            reading.cancel()
                            bridge.process.send_signal(signal.SIGINT)
                            code, _, stderr = await bridge.finish()
    assert code == 0, stderr
    missing = sorted(set(sent) - set(got))
    # Either every value came across, or the bridge said how many did not, exactly.
    if missing:
        assert f"({len(missing)} in all:" in stderr, (missing, stderr)
    assert "reconnected to" in stderr, stderr


def _args(*argv: str) -> Any:
    return parse_command_line(build_parser(), list(argv))


async def test_dump_and_sub_end_when_their_channel_is_not_back_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server and the channel's owner killed, the server restarted: dump and sub said
    # "reconnected" and then nothing, for ever, for a channel nobody would create again.
    monkeypatch.setattr(_channels, "CHANNEL_BACK_S", 1.0)
    path = tmp_path / "rec.tsdump"
    codes: dict[str, int] = {}
    async with server_process() as (process, url):
        port = urlsplit(url).port
        assert port is not None
        # Without reconnect: killed with the server, as its writer process was.
        async with ts.open_client(url, name="owner", reconnect=False) as owner:
            await owner.create_channel("gone")
            async with trio.open_nursery() as nursery:

                async def run(name: str, command: Any, *argv: str) -> None:
                    codes[name] = await command(_args(*argv))

                # (one process: each command needs its own client name)
                dump = ("dump", url, "gone", str(path), "--name", "rec")
                nursery.start_soon(run, "dump", record.run_dump, *dump)
                nursery.start_soon(run, "sub", pubsub.run_sub, "sub", url, "gone", "--name", "s1")
                waiting = ("sub", url, "gone", "--wait-channel", "--name", "s2")
                nursery.start_soon(run, "waiting", pubsub.run_sub, *waiting)
                await wait_for_channel(owner, "gone", readers=3)
                async with ts.open_client(url, name="daq") as daq, daq.publisher("gone") as pub:
                    await pub.send(1)
                    await pub.wait_acknowledged()
                await trio.sleep(0.6)  # the recorder writes it
                process.kill()
                await process.wait()
                async with server_process(tcp_port=port):
                    with trio.fail_after(RESTART_WAIT_S):
                        while len(codes) < 2:  # noqa: ASYNC110 - the other tasks' results
                            await trio.sleep(0.05)
                    # --wait-channel waits on, past the bound, and says when it is back
                    # (its last line said it waited while the data went on: a first hour).
                    await trio.sleep(1.5)
                    assert "waiting" not in codes
                    said = capsys.readouterr().err
                    async with ts.open_client(url, name="owner") as again:
                        await again.create_channel("gone")
                        with trio.fail_after(RESTART_WAIT_S):
                            while "is back" not in said:
                                await trio.sleep(0.1)
                                said += capsys.readouterr().err
                    nursery.cancel_scope.cancel()
    assert codes == {"dump": 0, "sub": 0}
    stderr = said + capsys.readouterr().err
    assert stderr.count("trio-stream sub: channel 'gone' is back: going on") == 1, stderr
    for command in ("dump", "sub"):
        assert (
            f"trio-stream {command}: channel 'gone' is not on the server after the reconnect: "
            "waiting for its owner to create it again (Ctrl-C to stop"
        ) in stderr, stderr
        assert (
            f"trio-stream {command}: channel 'gone' did not come back within 1 s after the "
            "reconnect: its end (--wait-channel waits for it)"
        ) in stderr, stderr
    assert "dumped 1 frame " in stderr, stderr
    assert stderr.count("is not on the server after the reconnect") == 3, stderr  # waiting too
    with path.open("rb") as f:
        assert [frame["data"] for frame in dumpfile.DumpReader(f)] == [1]


async def test_dump_wait_channel_refuses_a_path_it_cannot_write_at_once(
    url: str, tmp_path: Path
) -> None:
    # Checked only when the channel came (hours later, perhaps): an unattended recorder
    # lost the run it was there for.
    path = tmp_path / "missing_dir" / "run.tsdump"
    with trio.fail_after(WAIT_S):
        result = await cli("dump", url, "later", str(path), "--wait-channel")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"trio-stream dump: error: cannot write {path}: no such file or directory\n"
    )
    # The same line as the dump that does not wait.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("now")
        at_once = await cli("dump", url, "now", str(path))
    assert at_once.returncode == 1 and at_once.stderr == result.stderr


async def _dump_into_a_pipe_that_closes(url: str, *argv: str) -> tuple[int, str]:
    """``COMMAND URL live ARGV | head -c 100``: its exit code and stderr."""
    async with (
        ts.open_client(url, name="owner") as owner,
    ):
        await owner.create_channel("live")
        process = await trio.lowlevel.open_process(
            [*CLI, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            await wait_for_channel(owner, "live", readers=1)
            async with owner.publisher("live") as pub:
                taken = b""
                with trio.fail_after(WAIT_S):
                    while len(taken) < 100:
                        await pub.send(list(range(50)))
                        with trio.move_on_after(0.01):
                            taken += await process.stdout.receive_some(100 - len(taken))
                await process.stdout.aclose()  # head has its 100 bytes
                err = b""
                with trio.fail_after(WAIT_S):
                    while process.poll() is None:
                        await pub.send(list(range(50)))
                        await trio.sleep(0.01)
                    while chunk := await process.stderr.receive_some():
                        err += chunk
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.stderr.aclose()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_dump_to_a_pipe_that_closes_is_an_error_and_sub_s_is_not(url: str) -> None:
    # `dump - | head -c 100` exited 0 without a word: the recording was lost.
    code, stderr = await _dump_into_a_pipe_that_closes(url, "dump", url, "live", "-")
    assert code == 1, stderr
    assert stderr.startswith(
        "trio-stream dump: error: the output pipe closed: the recording stopped after "
    ), stderr
    # (Found at the first write: dump writes what it took before it asks for more.)
    assert len(stderr.splitlines()) == 1 and stderr.endswith((" frame\n", " frames\n")), stderr
    # A viewer that closes its pipe has seen what it wanted: that is a success.
    code, stderr = await _dump_into_a_pipe_that_closes(url, "sub", url, "live")
    assert code == 0 and stderr == "", stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
async def test_dump_to_a_full_disk_names_the_file(url: str) -> None:
    # "[Errno 28] No space left on device" named neither the file nor what failed.
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("ch")
        result = await cli("dump", url, "ch", "/dev/full", "--force", "--duration", "5")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == (
        "trio-stream dump: error: cannot write /dev/full: no space left on device"
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
async def test_a_listing_to_a_full_disk_names_stdout_and_what_to_do(url: str) -> None:
    # "[Errno 28] No space left on device" named neither stdout nor what to do (a lab pass;
    # dump said it already).
    with trio.fail_after(WAIT_S):
        result = await trio.run_process(
            ["sh", "-c", 'exec "$@" >/dev/full', "sh", *CLI, "channels", url],
            capture_stderr=True,
            check=False,
            env=ENV,
        )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "trio-stream channels: error: cannot write stdout: no space left on device (make room "
        "there, or redirect the output elsewhere)"
    ]


async def test_ctrl_c_while_dump_waits_for_its_channel_is_its_normal_end(
    server: ts.Server, tmp_path: Path
) -> None:
    # Ctrl-C is dump's normal end (README), but during a --wait-channel wait it exited 130
    # with an empty line.
    assert server.tcp_url is not None
    url = server.tcp_url
    path = tmp_path / "rec.tsdump"
    async with (
        ts.open_client(url, name="watcher") as watcher,
        running("dump", url, "later", str(path), "--wait-channel", "--name", "rec") as dump,
    ):
        with trio.fail_after(WAIT_S):
            while "rec" not in {c.name for c in await watcher.clients()}:  # noqa: ASYNC110
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # (from connected to its wait: a few requests)
        dump.process.send_signal(signal.SIGINT)
        code, _, stderr = await dump.finish()
    assert code == 0, stderr
    assert stderr.strip().splitlines()[-1] == (
        "trio-stream dump: stopped while waiting for channel 'later'; nothing recorded"
    ), stderr
    assert not path.exists()


async def test_replay_stopped_with_ctrl_c_says_what_it_sent(
    server: ts.Server, tmp_path: Path
) -> None:
    # generate says what it sent when stopped; replay said nothing.
    assert server.tcp_url is not None
    url = server.tcp_url
    path = tmp_path / "rec.tsdump"
    path.write_bytes(_dump_bytes(list(range(50))))  # a frame a second: 10 a second at --speed 10
    async with ts.open_client(url) as client:
        await client.create_channel("again")
        async with (
            client.subscribe("again", policy="block", size=100) as sub,
            running("replay", str(path), url, "again", "--speed", "10") as replay,
        ):
            with trio.fail_after(WAIT_S):
                for _ in range(3):
                    await sub.receive()
            replay.process.send_signal(signal.SIGINT)
            code, _, stderr = await replay.finish()
    assert code == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"replayed \d+ frames to 'again' \(stopped before the end\)", last), stderr
