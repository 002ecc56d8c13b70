"""The server's side of liveness and names: a stalled server keeps its healthy clients, silent
ones are still closed; a name is claimed by exactly one hello and always fits the wire."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from test_operations import ENV, read_urls
from test_robustness import control, read_messages

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import FrameDecoder
from trio_stream._protocol.limits import PROTOCOL_VERSION

WAIT_S = 30
IDLE_TIMEOUT_S = 2.0


class RawClient:
    """A hand-made client on its own socket that records every CONTROL message it gets."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.messages: list[M.ControlMessage] = []
        self.closed = trio.Event()
        self.received = trio.Event()  # set (and replaced) on every message

    async def read_all(self) -> None:
        decoder = FrameDecoder(max_frame_bytes=2**20)
        try:
            while data := await self.stream.receive_some(65536):
                decoder.receive_data(data)
                for frame in decoder.frames():
                    if frame[0] == F.CONTROL:
                        self.messages.append(M.decode_message(frame))
                        self.received.set()
                        self.received = trio.Event()
        except trio.BrokenResourceError:
            pass
        finally:
            self.closed.set()

    def goodbyes(self) -> list[M.Goodbye]:
        return [m for m in self.messages if isinstance(m, M.Goodbye)]

    async def request_stats(self, ident: int) -> M.ControlMessage:
        await self.stream.send_all(control(M.GetStats(id=ident)))
        with trio.fail_after(WAIT_S):
            while True:
                for m in self.messages:
                    if isinstance(m, M.Reply | M.Error) and m.id == ident:
                        return m
                if self.closed.is_set():
                    raise AssertionError(f"closed before answering: {self.messages!r:.300}")
                await self.received.wait()


async def hello(port: int, name: str | None) -> tuple[trio.SocketStream, M.ControlMessage]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=name)))
    first = await read_messages(stream, until=M.ControlMessage)
    return stream, first[0]


@asynccontextmanager
async def server_process(*args: str) -> AsyncIterator[tuple[trio.Process, int]]:
    """``trio-stream serve`` in a child process (so that it can be stopped); its TCP port."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trio_stream",
            "serve",
            "--tcp-port",
            "0",
            "--http-port",
            "off",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        urls = await read_urls(process)
        yield process, int(urls["TCP"].rsplit(":", 1)[1])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        with trio.move_on_after(WAIT_S):
            await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def test_a_stopped_server_keeps_pinging_clients_and_still_closes_silent_ones() -> None:
    """SIGSTOP the server for twice its idle timeout while its clients keep pinging: their
    pings wait in the sockets, so when it resumes nobody is dropped as idle; a client that
    truly says nothing is still closed with the idle reason."""
    async with (
        server_process("--idle-timeout", str(IDLE_TIMEOUT_S)) as (process, port),
        trio.open_nursery() as nursery,
    ):
        pingers: list[RawClient] = []
        for i in range(4):
            stream, welcome = await hello(port, f"pinger-{i}")
            assert isinstance(welcome, M.Welcome)
            pingers.append(RawClient(stream))
        stream, welcome = await hello(port, "silent")
        assert isinstance(welcome, M.Welcome)
        silent = RawClient(stream)
        for client in [*pingers, silent]:
            nursery.start_soon(client.read_all)

        async def ping(client: RawClient) -> None:
            while not client.closed.is_set():  # bounded: the nursery is cancelled below
                await client.stream.send_all(control(M.Ping(data=None)))
                await trio.sleep(IDLE_TIMEOUT_S / 5)

        for client in pingers:
            nursery.start_soon(ping, client)
        await trio.sleep(0.5)
        process.send_signal(signal.SIGSTOP)
        await trio.sleep(2 * IDLE_TIMEOUT_S + 0.5)  # frozen for longer than idle_timeout_s
        process.send_signal(signal.SIGCONT)
        resumed = trio.current_time()

        # The silent one goes (at most one more idle period: the stall restarted its clock).
        with trio.fail_after(3 * IDLE_TIMEOUT_S + 5):
            await silent.closed.wait()
        (goodbye,) = silent.goodbyes()
        assert "idle_timeout_s" in goodbye.reason
        assert trio.current_time() - resumed > 0.1  # not the instant the server woke up
        # The pinging ones are still there and answer requests.
        for i, client in enumerate(pingers):
            assert not client.goodbyes() and not client.closed.is_set(), client.messages[-3:]
            assert isinstance(await client.request_stats(100 + i), M.Reply)
        # Its log says how long it did not run: the watchdog said only how late it woke for
        # a deadline inside the stop (3.7 s for a 12 s SIGSTOP).
        said = await stderr_until(process, b"did not run for")
        stopped = re.search(r"did not run for ([0-9.]+) s", said)
        assert stopped is not None, said
        assert 2 * IDLE_TIMEOUT_S + 0.2 <= float(stopped.group(1)) <= 2 * IDLE_TIMEOUT_S + 1.5
        nursery.cancel_scope.cancel()


async def stderr_until(process: trio.Process, marker: bytes) -> str:
    """What the process wrote to stderr up to the line with ``marker`` (within WAIT_S)."""
    assert process.stderr is not None
    said = b""
    with trio.fail_after(WAIT_S):
        while marker not in said or not said.endswith(b"\n"):
            said += await process.stderr.receive_some(65536)
    return said.decode(errors="replace")


async def test_of_simultaneous_hellos_with_one_name_exactly_one_is_welcomed(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    with trio.fail_after(WAIT_S):
        for attempt in range(10):
            streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(8)]
            hello_frame = control(M.Hello(v=PROTOCOL_VERSION, name=f"twin-{attempt}"))
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(stream.send_all, hello_frame)
            answers: list[list[M.ControlMessage]] = [[] for _ in streams]

            async def read(
                i: int, stream: trio.SocketStream, answers: list[list[M.ControlMessage]] = answers
            ) -> None:
                # Losers: their error, then the end of the stream; the winner: its welcome.
                answers[i] = await read_messages(stream, until=M.Welcome)

            async with trio.open_nursery() as nursery:
                for i, stream in enumerate(streams):
                    nursery.start_soon(read, i, stream)
            welcomed = [a for a in answers if isinstance(a[-1], M.Welcome)]
            refused = [a for a in answers if not isinstance(a[-1], M.Welcome)]
            assert len(welcomed) == 1
            for answer in refused:  # an error reply, then a clean close (EOF)
                (error,) = answer
                assert isinstance(error, M.Error) and error.type == "NameInUse"
                assert f"twin-{attempt}" in error.message
            for stream in streams:
                await stream.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_a_client_name_over_255_utf8_bytes_is_refused_at_hello(server: ts.Server) -> None:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    emoji = "\N{GRINNING FACE}" * 100  # 100 characters, 400 bytes of UTF-8
    stream, answer = await hello(port, emoji)
    await stream.aclose()
    assert isinstance(answer, M.Error) and answer.type == "InvalidArgument"
    assert "400 bytes" in answer.message and "255 bytes" in answer.message
    with pytest.raises(ts.InvalidArgument, match="255 bytes"):
        async with ts.open_client(server.tcp_url, name=emoji):
            pass


async def test_a_long_multibyte_name_reaches_readers_whole(server: ts.Server) -> None:
    url = server.tcp_url or ""
    name = "\N{GRINNING FACE}" * 63  # 252 bytes: the longest such name the wire carries
    async with ts.open_client(url, name=name) as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", policy="block", size=2) as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            got = []
            with trio.fail_after(WAIT_S):
                for i in range(10):  # beyond the window: the reader keeps returning credit
                    await pub.send(i)
                    got.append(await sub.receive())
    assert [m.data for m in got] == list(range(10))
    assert {m.sender for m in got} == {name}


def test_the_sender_field_is_never_cut_inside_a_character() -> None:
    for name in ("\N{GRINNING FACE}" * 100, "a" + "\N{GRINNING FACE}" * 100, "\u00e9" * 200):
        field = F.sender_field(name)
        assert len(field) <= F.MAX_SENDER_NAME_BYTES
        assert name.startswith(field.decode())  # decodes: no partial character at the end
    assert F.sender_field("plain") == b"plain"
