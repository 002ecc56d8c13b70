"""The client's reader task (Client._reader) hands a read's messages to the application before
it reads again: the next read usually finds nothing and re-arms epoll, two syscalls and a
task step (~15 us measured in S3) that would otherwise sit between a frame's arrival and the
application. trio runs a batch's tasks in either order, so this holds only if the reader task
yields until the application has run; over a real server, frame by frame."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import trio
from client_parts import tcp_transport

import trio_stream as ts
from trio_stream._transport import tcp

FRAMES = 50
WAIT_S = 10.0

Readv = Callable[[int, Sequence[memoryview]], int]


async def test_the_application_takes_a_message_before_the_reader_task_reads_again(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.tcp_url
    events: list[tuple[str, int]] = []  # ("read", bytes or -1) on the reader's socket, ("taken", n)
    watched_fd = -1
    read_now = tcp._read_now

    def watched_read_now(readv: Readv, fd: int, view: memoryview) -> int:
        received = read_now(readv, fd, view)
        if fd == watched_fd:
            events.append(("read", received))
        return received

    monkeypatch.setattr(tcp, "_read_now", watched_read_now)
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as writer,
            ts.open_client(server.tcp_url) as reader,
        ):
            watched_fd = tcp_transport(reader)[1].socket.fileno()
            await writer.create_channel("paced")
            async with (
                reader.subscribe("paced", policy="drop_oldest", size=10) as sub,
                writer.publisher("paced") as pub,
            ):
                await pub.wait_for_readers()
                for value in range(FRAMES):
                    assert await pub.send(value)
                    assert (await sub.receive()).data == value
                    events.append(("taken", value))
    taken = 0
    since_data = 0  # failed read attempts since the last read that brought bytes
    for kind, number in events:
        if kind == "read":
            since_data = 0 if number > 0 else since_data + 1
        else:
            assert since_data == 0, f"the reader task read again before message {number} was taken"
            taken += 1
    assert taken == FRAMES
