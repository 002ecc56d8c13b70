"""``trio-stream sub --match PATTERN``: every matching channel, as subprocesses against a real
server on loopback (port 0), as tests/test_cli.py runs the other commands."""

from __future__ import annotations

import signal

import pytest
import trio
from test_cli import WAIT_S, Running, cli, json_lines, running, wait_for_channel

import trio_stream as ts


async def stderr_until(process: trio.Process, marker: str, seen: bytearray) -> str:
    """What ``process`` wrote to stderr up to a line with ``marker`` (kept in ``seen``)."""
    assert process.stderr is not None
    with trio.fail_after(WAIT_S):
        while marker.encode() not in seen:
            chunk = await process.stderr.receive_some()
            if not chunk:
                raise EOFError(f"no {marker!r} on stderr; so far: {bytes(seen)!r}")
            seen += chunk
    return seen.decode()


async def send(client: ts.Client, channel: str, *values: object) -> None:
    """``values`` to ``channel`` once it has a reader, all of them taken by the server."""
    async with client.publisher(channel) as pub:
        with trio.fail_after(WAIT_S):
            await pub.wait_for_readers()
        for value in values:
            assert await pub.send(value)
        await pub.wait_acknowledged()


async def finish(sub: Running, seen: bytearray) -> tuple[int, str, str]:
    code, stdout, stderr = await sub.finish()
    return code, stdout, seen.decode() + stderr


async def test_match_reads_every_matching_channel_and_each_line_names_its_channel(
    url: str,
) -> None:
    async with ts.open_client(url, name="owner") as owner:
        for name in ("sensors.a", "sensors.b", "other"):
            await owner.create_channel(name)
        args = ("sub", url, "--match", "sensors.*", "--count", "4", "--policy", "block")
        async with running(*args) as sub:
            await wait_for_channel(owner, "sensors.a", readers=1)
            await wait_for_channel(owner, "sensors.b", readers=1)
            await owner.publish("other", "not matched")  # (no reader: not even sent)
            await send(owner, "sensors.a", 1, 2)
            await send(owner, "sensors.b", "b1", "b2")
            code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    messages = json_lines(stdout)
    assert sorted((m["channel"], m["data"]) for m in messages) == [
        ("sensors.a", 1),
        ("sensors.a", 2),
        ("sensors.b", "b1"),
        ("sensors.b", "b2"),
    ]
    # Each channel's own seqs, in order; the channel named first, then sub's fields.
    assert [m["seq"] for m in messages if m["channel"] == "sensors.a"] == [1, 2]
    assert all(list(m) == ["channel", "seq", "time", "sender", "lost", "data"] for m in messages)
    assert stderr.splitlines()[0] == (
        "trio-stream sub: reading 2 channels matching 'sensors.*': 'sensors.a', 'sensors.b' "
        "(and those created later)"
    )


async def test_match_waits_for_a_channel_created_later_and_says_which_join_and_end(
    url: str,
) -> None:
    async with (
        ts.open_client(url, name="owner") as owner,
        running("sub", url, "--match", "late.*") as sub,
    ):
        seen = bytearray()
        said = await stderr_until(sub.process, "(none yet", seen)
        assert said.splitlines()[0] == (
            "trio-stream sub: waiting for channels matching 'late.*' (none yet; Ctrl-C to "
            "stop; another client's private channel is never matched)"
        )
        await owner.create_channel("late.x")
        await owner.create_channel("not-late")
        await send(owner, "late.x", "first", "second")
        first, second = json_lines(await sub.readline() + "\n" + await sub.readline())
        assert (first["channel"], first["seq"], first["data"]) == ("late.x", 1, "first")
        assert "gap" not in first  # (nothing was published before it)
        del second["time"]
        assert second == {
            "channel": "late.x",
            "seq": 2,
            "sender": "owner",
            "lost": 0,
            "data": "second",
        }
        await owner.delete_channel("late.x")
        await stderr_until(sub.process, "ended", seen)
        sub.process.send_signal(signal.SIGINT)  # Ctrl-C ends it, as it ends sub
        code, stdout, stderr = await finish(sub, seen)
    assert code == 130, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[1:] == [
        "trio-stream sub: channel 'late.x' matches 'late.*': reading it",
        "trio-stream sub: channel 'late.x' ended; reading on (the others, and it again if "
        "it comes back)",
        "trio-stream sub: no channel matches 'late.*' now: waiting for one",
    ]


async def test_match_count_stops_while_messages_still_come(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("busy/1")
        async with running("sub", url, "--match", "busy/*", "--count", "3") as sub:
            async with owner.publisher("busy/1") as pub:
                with trio.fail_after(WAIT_S):
                    await pub.wait_for_readers()
                    value = 0
                    while pub.readers:  # until sub has its 3 and leaves (bounded above)
                        await pub.send(value)
                        value += 1
                        await trio.sleep(0.01)
            code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    assert [m["data"] for m in json_lines(stdout)] == [0, 1, 2]


async def test_match_over_max_channels_is_one_line_that_names_the_option(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        for n in range(3):
            await owner.create_channel(f"many/{n}")
        result = await cli("sub", server.tcp_url, "--match", "many/*", "--max-channels", "2")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "trio-stream sub: error: pattern 'many/*' matches 3 channels, more than --max-channels "
        "2 (each is a subscription with its own buffer on the server): narrow the pattern, or "
        "give --max-channels 3 or more"
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--match", "s.*", "--wait-channel"],
            "--wait-channel does not go with --match: a pattern waits for its channels "
            "already (one created later, or again, is read as it comes)",
        ),
        (
            ["--match", "s.*", "--data-only"],
            "--data-only does not go with --match: each line must say which channel it came "
            "from; take the data from the lines instead (e.g. | jq -c .data)",
        ),
        (
            ["s.a", "--match", "s.*"],
            "give CHANNEL or --match PATTERN, not both ('s.a' and 's.*')",
        ),
        (["s.a", "--max-channels", "5"], "--max-channels goes with --match PATTERN"),
    ],
)
async def test_options_that_do_not_go_with_match_are_refused_in_one_line(
    args: list[str], error: str
) -> None:
    result = await cli("sub", "tcp://127.0.0.1:1", *args)  # (refused before connecting)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"trio-stream sub: error: {error}; see trio-stream sub --help"
    ]


async def test_a_match_without_a_glob_character_is_told_to_be_a_channel() -> None:
    result = await cli("sub", "tcp://127.0.0.1:1", "--match", "sensors.>")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "trio-stream sub: error: argument --match: 'sensors.>' has no glob character (*, ?, "
        "[...]): it names one channel, so give it as CHANNEL (with --wait-channel to follow "
        "it across its lives) (NATS's '>' is '*' here: it matches dots too)"
    ]


async def test_sub_without_channel_or_match_shows_the_usage() -> None:
    result = await cli("sub", "tcp://127.0.0.1:1")
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "usage: trio-stream sub" in stderr
    assert stderr.splitlines()[-1] == (
        "trio-stream sub: error: the following arguments are required: CHANNEL (or --match PATTERN)"
    )


@pytest.mark.parametrize(
    ("channel", "hint"),
    [
        ("lab/*", "`trio-stream sub URL --match 'lab/*'` reads every channel that matches"),
        (
            "lab.>",
            "`trio-stream sub URL --match 'lab.*'` reads every channel that matches (NATS's "
            "'>' is '*' there)",
        ),
    ],
)
async def test_a_channel_named_like_a_pattern_points_at_match(
    server: ts.Server, channel: str, hint: str
) -> None:
    assert server.tcp_url is not None
    read = await cli("sub", server.tcp_url, channel, "--count", "1")
    assert read.returncode == 1
    assert (
        read.stderr.decode().strip().endswith(f"; channel names are exact, not patterns: {hint}")
    ), read.stderr
    # Run as it says, it reads.
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        await owner.create_channel("lab.1" if "." in channel else "lab/1")
        name = "lab.1" if "." in channel else "lab/1"
        pattern = hint.split("'")[1]
        async with running("sub", server.tcp_url, "--match", pattern, "--count", "1") as sub:
            await send(owner, name, 7)
            code, stdout, stderr = await sub.finish()
    assert code == 0, stderr
    assert json_lines(stdout)[0]["channel"] == name


async def test_a_write_to_a_channel_named_like_a_pattern_is_not_pointed_at_sub(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    written = await cli("pub", server.tcp_url, "lab/*", "1")
    assert written.returncode == 1
    assert written.stderr.decode().strip().endswith("; channel names are exact, not patterns"), (
        written.stderr
    )
