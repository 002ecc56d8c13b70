"""``dump --append`` continues a recording after its last frame, and ``dump``/``sub
--wait-channel`` read a channel's new life from where the old one ended: real servers, the
commands as subprocesses (test_cli's helpers), every wait bounded."""

from __future__ import annotations

import argparse
import io
import signal
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from test_cli import WAIT_S, cli, json_lines, recorded, running, wait_for_channel

import trio_stream as ts
from trio_stream.cli import dumpfile
from trio_stream.cli._gaps import gap_line

VALUES = 4000  # numbered values a writer sends while its recorder is killed and continued


async def write_numbers(client: ts.Client, channel: str, count: int, sent: list[int]) -> None:
    """Values 0 .. count-1 to ``channel`` at up to 2 kHz (a recorder killed after its first
    writes is killed mid-stream); ``sent``: how many the writer has handed over so far."""
    async with client.publisher(channel) as pub:
        for value in range(count):
            assert await pub.send(value)
            sent[0] = value + 1
            if value % 10 == 9:
                await trio.sleep(0.005)
        await pub.wait_acknowledged()


async def frames_at_least(path: Path, count: int) -> list[dict[str, Any]]:
    """The frames of ``path`` once it holds ``count`` (another process writes it)."""
    with trio.fail_after(WAIT_S):
        while len(frames := recorded(path)) < count:  # noqa: ASYNC110 - another process's file
            await trio.sleep(0.05)
    return frames


async def test_a_dump_killed_and_continued_with_append_holds_every_value_once(
    url: str, tmp_path: Path
) -> None:
    # A `block` recorder killed (SIGKILL) mid-stream and started again with --append and the
    # same --name within resume_grace_s: it subscribes since= its file's last frame and takes
    # over what the server kept for it. Started as a new file it missed 2,263 frames and said
    # "lost 0"; continuing needs the frames it took and had not written before it returned
    # their credit (the server keeps only the last credit's frames for a kept reader).
    path = tmp_path / "rec.tsdump"
    sent = [0]
    async with ts.open_client(url, name="daq") as owner, trio.open_nursery() as nursery:
        await owner.create_channel("ai")  # no history: only the kept reader holds frames
        argv = ("dump", url, "ai", str(path), "--name", "rec", "--quiet")
        async with running(*argv) as first:
            await wait_for_channel(owner, "ai", readers=1)
            nursery.start_soon(write_numbers, owner, "ai", VALUES, sent)
            await frames_at_least(path, 300)
            # Between two of its timed writes (every 0.5 s): some 600 frames taken and not
            # written die with it, more than the last credit's (a quarter of its window).
            await trio.sleep(0.3)
            first.process.kill()
            await first.process.wait()
        killed_at = sent[0]
        async with running(*argv, "--append") as second:
            frames = await frames_at_least(path, VALUES)
            second.process.send_signal(signal.SIGINT)
            code, _, stderr = await second.finish()
    assert code == 0, stderr
    assert killed_at < VALUES, "the writer was done before the kill: nothing to take over"
    values = [frame["data"] for frame in frames]
    assert values == list(range(VALUES)), (len(values), killed_at)
    assert [frame["seq"] for frame in frames] == list(range(1, VALUES + 1))
    seams = [frame["gap"] for frame in frames if "gap" in frame]
    assert len(seams) == 1 and seams[0]["kind"] == "resumed" and seams[0]["lost"] == 0, seams
    # The frames came from the subscription the server kept, not from the history (it has
    # none): said so ("replayed from history", it said).
    assert (
        f"trio-stream dump: resumed: 0 frames lost, {seams[0]['recovered']} handed over by the "
        "subscription the server kept for 'rec'\n"
    ) in stderr
    assert sum(frame["lost"] for frame in frames) == 0
    with path.open("rb") as f:  # one header, whose epoch the continued frames kept
        assert "epoch" in dumpfile.DumpReader(f).header
    assert not any("epoch" in frame for frame in frames)


async def test_append_without_the_killed_recorder_s_name_says_what_the_name_would_keep(
    url: str, tmp_path: Path
) -> None:
    # A recorder killed and continued without --name loses what the server held for it,
    # counted exactly, and said no more than "resumed: 345 frames lost, 0 replayed from
    # history": not that the same --name would have taken those frames over.
    path = tmp_path / "unnamed.tsdump"
    async with ts.open_client(url, name="daq") as owner:
        await owner.create_channel("nn")  # no history: only the kept reader holds frames
        async with running("dump", url, "nn", str(path), "--quiet") as first:
            await wait_for_channel(owner, "nn", readers=1)
            async with owner.publisher("nn") as pub:
                for value in range(100):
                    assert await pub.send(value)
                await frames_at_least(path, 100)
                first.process.kill()
                await first.process.wait()
                for value in range(100, 150):  # held for the killed one (its grace)
                    assert await pub.send(value)
                await pub.wait_acknowledged()
                argv = ("dump", url, "nn", str(path), "--append", "--count", "1")
                async with running(*argv) as second:
                    await wait_for_channel(owner, "nn", readers=2)  # it and the kept one
                    assert await pub.send(150)
                    code, _, stderr = await second.finish()
    assert code == 0, stderr
    frames = recorded(path)
    assert [frame["data"] for frame in frames] == [*range(100), 150]
    assert frames[-1]["gap"] == {"kind": "resumed", "lost": 50, "recovered": 0}
    assert (
        "trio-stream dump: resumed: 50 frames lost, 0 replayed from the channel's history; the "
        "frames the server holds for a killed recorder are taken over only by one of the same "
        "--name, within resume_grace_s (record with --name NAME, continue with --append --name "
        "NAME)\n"
    ) in stderr


async def test_a_gap_line_says_where_the_frames_it_got_back_came_from() -> None:
    class Lister:  # what gap_line asks of a client
        name = "rec"

        def __init__(self, history: int | None) -> None:
            self.history = history

        async def channels(self) -> list[ts.ChannelInfo]:
            if self.history is None:  # a private channel of another: not listed
                return []
            return [ts.ChannelInfo(name="ai", owner="daq", history=self.history)]

    async def line(
        gap: ts.Gap, history: int | None, *, name: str | None = "rec", continued: bool = True
    ) -> str:
        args = argparse.Namespace(name=name, channel="ai")
        client = cast(ts.Client, Lister(history))
        return await gap_line(client, args, gap, continued=continued)

    resumed = ts.Gap("resumed", lost=0, recovered=352)
    kept = "352 handed over by the subscription the server kept for 'rec'"
    assert await line(resumed, 0) == f"resumed: 0 frames lost, {kept}"
    assert await line(resumed, 100) == f"resumed: 0 frames lost, {kept}"  # more than it holds
    either = f"resumed: 0 frames lost, {kept} or replayed from the channel's history"
    assert await line(resumed, 1000) == either
    assert await line(resumed, None) == either
    assert await line(resumed, 0, name=None, continued=False) == f"resumed: 0 frames lost, {kept}"
    from_history = "resumed: 0 frames lost, 352 replayed from the channel's history"
    assert await line(resumed, 1000, name=None) == from_history  # nothing lost: no advice
    assert await line(ts.Gap("resumed", lost=3, recovered=0), 0) == (
        "resumed: 3 frames lost, none recovered"
    )
    assert await line(ts.Gap("reset", lost=None, recovered=7), 0) == (
        "the channel was reset (server restart or re-creation); 7 replayed"
    )


async def test_append_cuts_a_last_frame_cut_short_and_replays_it_from_the_history(
    url: str, tmp_path: Path
) -> None:
    # A recorder killed while writing leaves a frame cut short: --append cuts it off (and
    # says so), continues after the frame before, and the channel's history gives it back.
    path = tmp_path / "cut.tsdump"
    async with ts.open_client(url, name="daq") as owner:
        await owner.create_channel("h", history=100)
        async with running("dump", url, "h", str(path), "--count", "5", "--quiet") as dump:
            await wait_for_channel(owner, "h", readers=1)
            async with owner.publisher("h") as pub:
                for value in range(5):
                    await pub.send(value)
            code, _, stderr = await dump.finish()
        assert code == 0, stderr
        whole = path.read_bytes()
        path.write_bytes(whole[:-3])
        async with owner.publisher("h") as pub:  # kept in the history meanwhile
            for value in range(5, 10):
                assert await pub.send(value)
            await pub.wait_acknowledged()
        result = await cli("dump", url, "h", str(path), "--append", "--count", "6")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    lines = stderr.strip().splitlines()
    cut = len(whole) - 3 - frame_ends(whole)[-2]  # the fifth frame's bytes that were left
    assert lines[0] == (
        f"trio-stream dump: {path} ended inside a frame (its recorder stopped while "
        f"writing): cut off its last {cut} bytes, after its last whole frame (seq 4)"
    )
    assert lines[-1].startswith("dumped 6 frames") and "(appended after seq 4)" in lines[-1], lines
    frames = recorded(path)
    assert [frame["data"] for frame in frames] == list(range(10))
    assert frames[4]["gap"] == {"kind": "resumed", "lost": 0, "recovered": 6}


def frame_ends(dump: bytes) -> list[int]:
    """Where each frame of ``dump`` ends."""
    reader = dumpfile.DumpReader(io.BytesIO(dump))
    return [reader.position for _ in reader]


async def test_append_to_a_recording_without_frames_records_from_the_next_one(
    url: str, tmp_path: Path
) -> None:
    path = tmp_path / "empty.tsdump"
    path.write_bytes(b"".join(dumpfile.encode_item(dumpfile.header("e", epoch="old"))))
    async with ts.open_client(url, name="daq") as owner:
        await owner.create_channel("e")
        argv = ("dump", url, "e", str(path), "--append", "--count", "1")
        async with running(*argv) as dump:
            await wait_for_channel(owner, "e", readers=1)
            async with owner.publisher("e") as pub:
                await pub.send("first")
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    assert stderr.splitlines()[0] == (
        "trio-stream dump: the recording holds no frames yet: it goes on from the channel's "
        "next frame (nothing is replayed)"
    )
    (frame,) = recorded(path)
    # Another epoch than the header's: the frame names its own, for the next --append.
    assert frame["data"] == "first" and frame["epoch"] not in ("old", ""), frame


def older_dump(path: Path, channel: str) -> None:
    """A dump as dump wrote it before epochs were noted: no epoch anywhere."""
    frame = {"t": 1.0, "time": 1.0, "seq": 1, "sender": "w", "lost": 0, "data": 1}
    items = [dumpfile.header(channel), frame]
    path.write_bytes(b"".join(bytes(p) for item in items for p in dumpfile.encode_item(item)))


@pytest.mark.parametrize(
    ("file", "extra", "code", "said"),
    [
        ("-", (), 2, "--append continues a FILE: it cannot continue - (stdout)"),
        ("older", ("--force",), 2, "--append continues FILE, --force overwrites it: give one"),
        ("missing", (), 1, "{path} does not exist: --append continues a recording (leave it"),
        ("other", (), 1, "{path} is a recording of channel 'other', not 'ch': --append "),
        ("older", (), 1, "{path} does not say which life of the channel its frames are of"),
        ("junk", (), 1, "{path}: not a trio_stream dump (no trio_stream-dump header); --append"),
    ],
)
async def test_append_refuses_what_it_cannot_continue_in_one_line(
    tmp_path: Path, file: str, extra: tuple[str, ...], code: int, said: str
) -> None:
    # Refused before connecting (the URL is never tried).
    path = tmp_path / f"{file}.tsdump"
    if file == "older":
        older_dump(path, "ch")
    elif file == "other":
        older_dump(path, "other")
    elif file == "junk":
        path.write_bytes(b"not a dump")
    target = "-" if file == "-" else str(path)
    result = await cli("dump", "tcp://127.0.0.1:1", "ch", target, "--append", *extra)
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert said.format(path=path) in stderr, stderr


# -- a channel's new life, read from where the old one ended --------------------------------
async def new_life_written_while_away(
    owner: ts.Client, process: trio.Process, channel: str
) -> None:
    """Values 0..2 read in the channel's first life; then, with the reader stopped (SIGSTOP),
    the channel deleted, created again with history and 3..9 written into it, before the
    reader can subscribe to the new life; then the reader goes on (SIGCONT). More than the
    reader's size (2): a new subscription is given the newest 2 of the history, one that
    continues a position all of the new life the history holds."""
    async with owner.publisher(channel) as pub:
        await pub.wait_for_readers()
        for value in range(3):
            await pub.send(value)
        await pub.wait_acknowledged()
    await trio.sleep(0.3)  # (acknowledged is the server's: on their way to the reader)
    process.send_signal(signal.SIGSTOP)
    try:
        await owner.delete_channel(channel)
        await owner.create_channel(channel, history=100)
        async with owner.publisher(channel) as pub:
            for value in range(3, 10):
                assert await pub.send(value)  # kept in the history: no reader yet
            await pub.wait_acknowledged()
    finally:
        process.send_signal(signal.SIGCONT)


async def test_dump_wait_channel_records_what_the_new_life_held_before_it_was_back(
    url: str, tmp_path: Path
) -> None:
    # Subscribed afresh to the new life, the recorder missed what it held (a cluster's Redis
    # restart: 920-1610 frames a reader `since=` its position had; the file said recovered=0).
    path = tmp_path / "lives.tsdump"
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("lives", history=100)
        argv = ("dump", url, "lives", str(path), "--wait-channel", "--size", "2")
        async with running(*argv) as dump:
            await wait_for_channel(owner, "lives", readers=1)
            await new_life_written_while_away(owner, dump.process, "lives")
            frames = await frames_at_least(path, 10)
            dump.process.send_signal(signal.SIGINT)
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    assert [frame["data"] for frame in frames] == list(range(10))
    assert frames[3]["gap"] == {"kind": "reset", "lost": None, "recovered": 7}, frames[3]
    # The new life's epoch on its first frame: where --append would continue from.
    with path.open("rb") as f:
        first_epoch = dumpfile.DumpReader(f).header["epoch"]
    assert frames[3]["epoch"] != first_epoch
    assert "the channel was reset (server restart or re-creation); 7 replayed" in stderr


async def test_sub_wait_channel_prints_what_the_new_life_held_before_it_was_back(
    url: str,
) -> None:
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("lives", history=100)
        block = ("--policy", "block", "--size", "2")
        async with running("sub", url, "lives", "--wait-channel", "--count", "10", *block) as sub:
            await wait_for_channel(owner, "lives", readers=1)
            await new_life_written_while_away(owner, sub.process, "lives")
            code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    messages = json_lines(stdout)
    assert [m["data"] for m in messages] == list(range(10))
    assert messages[3]["gap"] == {"kind": "reset", "lost": None, "recovered": 7}


async def test_a_slow_channel_s_recording_is_marked_once_a_mib(url: str, tmp_path: Path) -> None:
    # Marked on the first frame of each batch written, a slow channel (a flush whenever the
    # subscription ran dry) had every frame marked: 60-byte frames grew to 100 (a review).
    path = tmp_path / "slow.tsdump"
    async with ts.open_client(url, name="daq") as owner:
        await owner.create_channel("slow")
        async with running("dump", url, "slow", str(path), "--count", "20") as dump:
            await wait_for_channel(owner, "slow", readers=1)
            async with owner.publisher("slow") as pub:
                for value in range(20):
                    await pub.send(value * 0.5)
                    await trio.sleep(0.02)
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    frames = recorded(path)
    assert [frame["data"] for frame in frames] == [value * 0.5 for value in range(20)]
    with path.open("rb") as f:
        mark = dumpfile.DumpReader(f).header["mark"]
    assert [i for i, frame in enumerate(frames) if "mark" in frame] == [0]
    assert frames[0]["mark"][0] == mark
