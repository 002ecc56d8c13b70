"""Operating a server: idle connections closed, system-channel events, running totals, and
SIGINT/SIGTERM on ``trio-stream serve`` while clients are connected (over both transports)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server.metrics import render_metrics
from trio_stream._transport.websocket import split_message

WAIT_S = 10.0
# A server process's start, up to its "Ctrl-C" line: its imports took over 10 s once, on a
# two-core machine running four test workers and a browser.
START_S = 30.0


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


# -- idle timeout ---------------------------------------------------------------------------------
async def silent_tcp_client(server: ts.Server) -> list[M.ControlMessage]:
    """Say hello, then nothing: the CONTROL messages the server sends until it closes."""
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name="silent")))
        decoder = FrameDecoder(max_frame_bytes=2**20)
        out: list[M.ControlMessage] = []
        while data := await stream.receive_some(65536):
            decoder.receive_data(data)
            out.extend(M.decode_message(f) for f in decoder.frames() if f[0] == 0x01)
        return out


async def silent_ws_client(server: ts.Server) -> list[M.ControlMessage]:
    out: list[M.ControlMessage] = []
    async with trio_websocket.open_websocket_url(server.ws_url or "") as ws:
        await ws.send_message(control(M.Hello(v=PROTOCOL_VERSION, name="silent-ws")))
        try:
            while True:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                frames = split_message(message, 2**20)
                out.extend(M.decode_message(f) for f in frames if f[0] == 0x01)
        except trio_websocket.ConnectionClosed:
            pass
    return out


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_a_silent_connection_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, transport: str
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, idle_timeout_s=5.0)
    server: ts.Server = await nursery.start(ts.serve, config)
    start = trio.current_time()
    with trio.fail_after(60):
        if transport == "tcp":
            messages = await silent_tcp_client(server)
        else:
            messages = await silent_ws_client(server)
    assert 5.0 <= trio.current_time() - start < 6.0
    assert isinstance(messages[0], M.Welcome)
    assert messages[0].limits["idle_timeout_s"] == 5.0  # announced, so clients ping in time
    goodbye = [m for m in messages if isinstance(m, M.Goodbye)]
    assert goodbye and goodbye[0].reason == (
        "idle for 5 s (idle_timeout_s): send ping to stay connected"
    )
    # ... while a real client (it pings every third of the timeout) stays.
    async with ts.open_client(server.tcp_url or "") as client:
        await trio.sleep(30)
        stats = await client.stats()
        assert stats.connections == stats.node_connections == stats.nodes == 1
        assert stats.node == "" and [c.node for c in await client.clients()] == [""]
    await server.aclose()


# -- system channels ------------------------------------------------------------------------------
async def drain(sub: ts.Subscription) -> list[Any]:
    """Whatever the subscription holds now, after giving the server a moment to send it."""
    await trio.sleep(0.3)
    out = []
    while True:
        try:
            out.append(sub.receive_nowait().data)
        except trio.WouldBlock:
            return out


async def test_channel_events_count_writers_and_never_show_private_channels(url: str) -> None:
    async with (
        ts.open_client(url, name="observer") as observer,
        ts.open_client(url, name="lab") as lab,
        observer.subscribe("$channels", policy="unbounded") as events,
    ):
        await lab.create_channel("secret", public=False, key="k")
        async with lab.publisher("secret"), lab.subscribe("secret"):
            pass
        await lab.delete_channel("secret")
        await lab.create_channel("open")
        async with lab.publisher("open"), observer.subscribe("open"):
            pass
        await lab.delete_channel("open")
        with trio.fail_after(WAIT_S):
            seen = await drain(events)
    assert all(e["channel"] == "open" for e in seen), seen
    assert [(e["event"], e["readers"], e["writers"]) for e in seen] == [
        ("created", 0, 0),
        ("writers", 0, 1),
        ("readers", 1, 1),
        ("readers", 0, 1),
        ("writers", 0, 0),
        ("deleted", 0, 0),
    ]


# -- running totals -------------------------------------------------------------------------------
async def test_frames_lost_is_a_running_total_that_survives_channel_deletion(
    server: ts.Server,
) -> None:
    """/metrics declares frames_lost_total a counter: it must never go down."""
    url = server.tcp_url or ""
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("lossy")
        async with (
            r.subscribe("lossy", policy="drop_newest", size=1, window=1) as sub,
            w.publisher("lossy") as pub,
        ):
            await pub.wait_for_readers()
            for i in range(10):
                await pub.send(i)
            await pub.wait_acknowledged()  # every frame met the full buffer by now
            lost_before = (await w.stats()).frames_lost
            assert lost_before > 0
            assert sub.lost == 0  # nothing read yet: the loss is on the server's side so far
        await w.delete_channel("lossy")
        assert (await w.stats()).frames_lost == lost_before
        lines = dict(
            line.rsplit(" ", 1)
            for line in render_metrics(server.state).splitlines()
            if line and not line.startswith("#")
        )
        assert int(lines["trio_stream_frames_lost_total"]) == lost_before
        assert float(lines["trio_stream_cpu_seconds_total"]) > 0
        assert int(lines["trio_stream_resident_memory_bytes"]) > 0


async def test_stats_requests_do_not_change_the_cpu_figure(nursery: trio.Nursery) -> None:
    """cpu_percent covers the last stats interval: asking for it neither measures a window of
    its own nor restarts the one $stats reports (a dashboard and `stats --watch` together)."""
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, stats_interval_s=3600)
    server: ts.Server = await nursery.start(ts.serve, config)
    async with ts.open_client(server.tcp_url or "") as client:
        figures = {(await client.stats()).cpu_percent for _ in range(5)}
    assert figures == {0.0}  # no interval has passed yet
    await server.aclose()


# -- SIGINT / SIGTERM with clients connected ------------------------------------------------------
ENV = {k: v for k, v in os.environ.items() if k != "TRIO_STREAM_TOKEN"}


async def read_urls(process: trio.Process) -> dict[str, str]:
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(START_S):
        while b"Ctrl-C" not in buffer:
            chunk = await process.stdout.receive_some()
            assert chunk, buffer
            buffer += chunk
    lines = [line.strip() for line in buffer.decode().splitlines()]
    return {line.split()[0].rstrip(":"): line.split()[-1] for line in lines if "://" in line}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_shuts_down_gracefully_on_a_signal_with_clients_connected(
    signum: int,
) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_stream", "serve", "--tcp-port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        urls = await read_urls(process)
        async with (
            ts.open_client(urls["TCP"], name="writer", reconnect=False) as writer,
            ts.open_client(urls["WebSocket"], name="reader", reconnect=False) as reader,
        ):
            await writer.create_channel("c", keep=True)  # outlives its owner's own goodbye
            async with (
                reader.subscribe("c", policy="unbounded", window=1) as sub,
                writer.publisher("c") as pub,
            ):
                await pub.wait_for_readers()
                for i in range(50):
                    await pub.send(np.full(1000, i))
                await pub.wait_acknowledged()
                process.send_signal(signum)
                got = []
                with pytest.raises(ts.ConnectionClosed) as closed, trio.fail_after(WAIT_S):
                    while True:
                        got.append(int((await sub.receive()).data[0]))
                assert got == list(range(50))  # what the server held was delivered first
                # The server said why (.reason is its goodbye; the message may instead be
                # the transport's, when the client's sender noticed the close first).
                assert closed.value.reason == "the server is shutting down"
            for client in (writer, reader):
                with pytest.raises(ts.ConnectionClosed) as closed:
                    await client.stats()
                assert closed.value.reason == "the server is shutting down"
        with trio.fail_after(WAIT_S):
            code = await process.wait()
        assert process.stderr is not None
        stderr = (await process.stderr.receive_some(2**20)).decode()
        assert code == 0, stderr
        assert "Traceback" not in stderr and "ExceptionGroup" not in stderr, stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()
