"""The clients notice a silent server, and leaving never waits unboundedly.

Faults are real: a server in a child process stopped with SIGSTOP, and a TCP proxy
(tests/proxy.py) that stops forwarding. Times are real too, with small settings (a 2 s silence
bound), because what is measured is how the client reacts to sockets going quiet.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import numpy as np
import pytest
import trio
from client_parts import wait_for_state
from conftest import TRANSPORTS
from proxy import open_proxy

import trio_stream as ts
from trio_stream._client import LEAVE_TIMEOUT_S, MIN_SILENCE_S
from trio_stream._transport.websocket import CLOSE_TIMEOUT_S

WAIT_S = 20.0  # nothing here should take near this long; a hang fails instead of blocking
SLACK_S = 1.5  # scheduling delays on a busy machine, on top of each bound


@pytest.fixture
async def quiet_server(nursery: trio.Nursery) -> AsyncIterator[ts.Server]:
    """A server with a long idle timeout: the client's own heartbeat setting decides."""
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, idle_timeout_s=30.0)
    server: ts.Server = await nursery.start(ts.serve, config)
    yield server
    await server.aclose()


def url_of(server: ts.Server, transport: str) -> str:
    url = {"tcp": server.tcp_url, "ws": server.ws_url}[transport]
    assert url is not None
    return url


@asynccontextmanager
async def server_process(
    idle_timeout_s: float = 30.0, tcp_port: int = 0
) -> AsyncIterator[tuple[trio.Process, str]]:
    """``trio-stream serve`` in a child process (so that it can be stopped or killed), and its
    TCP URL; ``tcp_port`` to start it again where a killed one listened."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trio_stream",
            "serve",
            "--host",
            "127.0.0.1",
            "--tcp-port",
            str(tcp_port),
            "--http-port",
            "0",
            "--idle-timeout",
            str(idle_timeout_s),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        output = b""
        with trio.fail_after(WAIT_S):
            while (found := re.search(rb"tcp://127\.0\.0\.1:\d+", output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, "the server process ended before it listened"
                output += chunk
        yield process, found.group().decode()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)  # a stopped process does not die of SIGKILL late
            process.kill()
        with trio.move_on_after(WAIT_S):
            await process.wait()
        await process.stdout.aclose()


async def acknowledged_then_stop(pub: ts.Publisher, process: trio.Process) -> None:
    """Stop a server process gracefully once ``pub`` knows it took every frame. A reader may
    have a frame before its writer has the acknowledgement, and the server_process context
    kills what still runs when it ends: without the wait the publisher's close would wait
    10 s for a connection to give them to, then raise ConnectionClosed."""
    with trio.fail_after(WAIT_S):
        await pub.wait_acknowledged()
    process.send_signal(signal.SIGTERM)


async def failure_of(
    fn: Callable[[], Awaitable[object]], record: dict[str, tuple[BaseException, float]], key: str
) -> None:
    """Run ``fn()`` until it raises; record the exception and when it came."""
    try:
        await fn()
    except BaseException as exc:
        record[key] = (exc, trio.current_time())
        if not isinstance(exc, ts.TrioStreamError):
            raise


async def test_a_frozen_server_process_fails_every_waiter_within_the_silence_bound() -> None:
    async with (
        server_process(idle_timeout_s=2.0) as (process, url),
        ts.open_client(url, name="watcher", reconnect=False) as client,
    ):
        interval, dead_after = client._heartbeat_times()
        assert dead_after is not None
        # Pings every third of the server's idle timeout; gone after three silent ones.
        assert interval == pytest.approx(2.0 / 3)
        assert dead_after == pytest.approx(2.0)
        await client.create_channel("frozen")
        # The frames written but never acknowledged are not known to be delivered: leaving
        # the publisher says how many (a reconnecting client says it the same way).
        with pytest.raises(ts.ConnectionClosed, match="values sent to 'frozen' were not delivered"):
            async with client.publisher("frozen") as pub, client.subscribe("frozen") as sub:
                await pub.wait_for_readers()
                await pub.send(1)
                assert (await sub.receive()).data == 1

                async def iterate() -> None:
                    async for _ in sub:
                        pass

                async def send_forever() -> None:
                    while True:
                        await pub.send(b"x" * 1000)
                        await trio.sleep(0.05)

                failures: dict[str, tuple[BaseException, float]] = {}
                process.send_signal(signal.SIGSTOP)
                stopped = trio.current_time()
                with trio.fail_after(WAIT_S):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(failure_of, client.stats, failures, "request")
                        nursery.start_soon(failure_of, iterate, failures, "iteration")
                        nursery.start_soon(failure_of, send_forever, failures, "send")
                assert failures.keys() == {"request", "iteration", "send"}
                for what, (error, when) in failures.items():
                    assert isinstance(error, ts.ConnectionClosed), (what, error)
                    assert "the server was silent for" in str(error), (what, error)
                    assert error.reason == "server silent"
                    # Not before the bound (less what was already quiet before the stop) and
                    # not long after it.
                    assert (
                        dead_after - interval <= when - stopped <= dead_after + interval + SLACK_S
                    )
                assert client.closed
                left = trio.current_time()
        # Leaving the subscription and publisher of a gone server is prompt as well.
        assert trio.current_time() - left < LEAVE_TIMEOUT_S + SLACK_S


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_proxy_that_stops_forwarding_is_noticed(
    quiet_server: ts.Server, transport: str
) -> None:
    async with (
        open_proxy(url_of(quiet_server, transport)) as proxy,
        ts.open_client(proxy.url, name="behind", heartbeat=0.5, reconnect=False) as client,
    ):
        interval, dead_after = client._heartbeat_times()
        assert dead_after is not None
        assert (interval, dead_after) == (0.5, MIN_SILENCE_S)  # 3 x 0.5 s is below the floor
        await client.create_channel("held")
        async with client.subscribe("held") as sub:
            proxy.hold()
            held = trio.current_time()
            with trio.fail_after(WAIT_S), pytest.raises(ts.ConnectionClosed) as caught:
                await sub.receive()
            assert trio.current_time() - held <= dead_after + interval + SLACK_S
            assert "the server was silent for" in str(caught.value)
            with pytest.raises(ts.ConnectionClosed, match="silent"):
                await client.channels()
            left = trio.current_time()
        assert trio.current_time() - left < LEAVE_TIMEOUT_S + SLACK_S


async def test_a_quiet_healthy_server_is_never_declared_gone(quiet_server: ts.Server) -> None:
    assert quiet_server.tcp_url is not None
    async with ts.open_client(quiet_server.tcp_url, name="patient", heartbeat=0.2) as client:
        _, dead_after = client._heartbeat_times()
        assert dead_after is not None
        await trio.sleep(dead_after * 1.5)  # nothing but pings and pongs meanwhile
        assert not client.closed
        assert [c.name for c in await client.clients()] == ["patient"]


async def test_a_stall_of_the_client_itself_is_not_the_servers_silence(
    quiet_server: ts.Server,
) -> None:
    assert quiet_server.tcp_url is not None
    async with ts.open_client(quiet_server.tcp_url, name="stalled", heartbeat=0.2) as client:
        _, dead_after = client._heartbeat_times()
        assert dead_after is not None
        # The application hogs the trio thread for longer than the silence bound: the
        # heartbeat wakes up late, and must not count that as the server's silence.
        time.sleep(dead_after * 1.5)  # noqa: ASYNC251 - the stall is the point
        await trio.sleep(0.5)  # a few heartbeats after the stall
        assert not client.closed
        await client.stats()


async def test_without_heartbeat_a_held_connection_waits_and_then_resumes(
    quiet_server: ts.Server,
) -> None:
    assert quiet_server.tcp_url is not None
    async with (
        open_proxy(quiet_server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="no-heartbeat", heartbeat=None) as client,
    ):
        assert client._heartbeat_times() == (10.0, None)  # idle_timeout_s / 3, no bound
        proxy.hold()
        with trio.move_on_after(MIN_SILENCE_S + 0.5):
            await client.stats()
            pytest.fail("an answer came through a held proxy")
        assert not client.closed
        proxy.release()
        with trio.fail_after(WAIT_S):
            await client.stats()


@pytest.mark.parametrize("heartbeat", [0, -1.0, math.nan, math.inf, 1e-6])  # 1e-6: a busy core
async def test_a_heartbeat_that_is_not_a_positive_time_is_refused(
    quiet_server: ts.Server, heartbeat: float
) -> None:
    assert quiet_server.tcp_url is not None
    with pytest.raises(ts.InvalidArgument, match="heartbeat"):
        async with ts.open_client(quiet_server.tcp_url, heartbeat=heartbeat):
            pass


# -- leaving never waits unboundedly -------------------------------------------------------------
async def readers_of(client: ts.Client, channel: str) -> int:
    return next(c.readers for c in await client.channels() if c.name == channel)


async def test_leaving_a_frozen_server_takes_the_leave_bound_once(
    quiet_server: ts.Server,
) -> None:
    # A leave waits for the server's answer at most LEAVE_TIMEOUT_S. The answers come in
    # order: once one leave ran out of time unanswered, the next ones do not wait (five
    # subscriptions and a publisher took 6 s, one after another); the server still gets
    # every request, and a leave after its answers came waits again.
    assert quiet_server.tcp_url is not None
    async with (
        open_proxy(quiet_server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="leaver") as client,
    ):
        names = [f"ch{i}" for i in range(5)]
        for name in names:
            await client.create_channel(name)
        async with contextlib.AsyncExitStack() as stack:
            for name in names:
                await stack.enter_async_context(client.subscribe(name))
            await stack.enter_async_context(client.publisher("ch0"))
            proxy.hold()
            start = trio.current_time()
        assert LEAVE_TIMEOUT_S <= trio.current_time() - start < LEAVE_TIMEOUT_S + SLACK_S
        proxy.release()
        with trio.fail_after(WAIT_S):
            infos = {c.name: c for c in await client.channels()}
        assert [infos[name].readers for name in names] == [0] * 5
        assert infos["ch0"].writers == 0
        async with client.subscribe("ch1"):
            assert await readers_of(client, "ch1") == 1
            proxy.hold()
            start = trio.current_time()
        # Answered since: it waits again, the bound and no more.
        assert LEAVE_TIMEOUT_S <= trio.current_time() - start < LEAVE_TIMEOUT_S + SLACK_S
        # The unsubscribe was not lost: it reached the server once the proxy let it.
        proxy.release()
        with trio.fail_after(WAIT_S):
            assert await readers_of(client, "ch1") == 0


async def test_a_cancel_leaves_a_subscription_or_publisher_at_once(
    quiet_server: ts.Server,
) -> None:
    assert quiet_server.tcp_url is not None
    async with (
        open_proxy(quiet_server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="canceller") as client,
    ):
        await client.create_channel("ch")
        start = trio.current_time()
        with trio.move_on_after(0.3) as scope:
            async with client.subscribe("ch") as sub, client.publisher("ch") as pub:
                await pub.wait_for_readers()
                proxy.hold()
                await sub.receive()  # nothing comes through a held proxy
        assert scope.cancelled_caught
        # Before: the shielded exit waited for the server's answers with no limit.
        assert trio.current_time() - start < 0.3 + SLACK_S
        proxy.release()
        with trio.fail_after(WAIT_S):
            assert await readers_of(client, "ch") == 0
            infos = {c.name: c for c in await client.channels()}
            assert infos["ch"].writers == 0


async def test_leaving_a_publisher_of_a_frozen_server_takes_at_most_the_leave_bound(
    quiet_server: ts.Server,
) -> None:
    assert quiet_server.tcp_url is not None
    async with (
        open_proxy(quiet_server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="writer") as client,
    ):
        await client.create_channel("ch")
        async with client.publisher("ch"):
            proxy.hold()
            start = trio.current_time()
        assert trio.current_time() - start < LEAVE_TIMEOUT_S + SLACK_S


async def test_closing_a_publisher_on_a_stall_not_found_yet_says_what_it_drops(
    quiet_server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # The link stops forwarding and the writer closes before its heartbeat finds out: the
    # close's answer never comes, and the values written but not acknowledged were dropped
    # without a word (a network tester: "Writers lose nothing silently").
    assert quiet_server.tcp_url is not None
    async with (
        open_proxy(quiet_server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="writer") as client,
        ts.open_client(quiet_server.tcp_url, name="reader") as reader,
    ):
        await client.create_channel("ch")
        async with reader.subscribe("ch", policy="block"), client.publisher("ch") as pub:
            await pub.wait_for_readers()
            for value in range(5):
                await pub.send(value)
            await pub.wait_acknowledged()
            proxy.hold()
            for value in range(5, 55):
                await pub.send(value)
            start = trio.current_time()
        assert trio.current_time() - start < LEAVE_TIMEOUT_S + SLACK_S
    assert "50 values sent to 'ch' were not acknowledged: the server did not answer" in caplog.text


@asynccontextmanager
async def slow_link(target_url: str, bytes_per_s: int) -> AsyncIterator[str]:
    """A relay to ``target_url`` whose server-to-client direction carries at most
    ``bytes_per_s`` (in pieces of a tenth of it, one every 0.1 s): a slow link, not a stall."""
    host, port = target_url.removeprefix("tcp://").rsplit(":", 1)
    piece = bytes_per_s // 10

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, slow: bool) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(piece if slow else 65536):
                await sink.send_all(data)
                if slow:
                    await trio.sleep(0.1)

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(host, int(port))
        async with client, server, trio.open_nursery() as pumps:
            pumps.start_soon(pump, client, server, False)
            pumps.start_soon(pump, server, client, True)

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        yield f"tcp://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def test_a_large_frame_on_a_slow_link_is_not_taken_for_silence(
    quiet_server: ts.Server,
) -> None:
    # A 10 MiB frame over a 400 kB/s link takes 26 s: the reader, hearing no whole frame
    # (its pongs wait behind it), said "the server was silent" after its bound, reconnected,
    # and the server sent the frame again, for good (a network tester). Bytes moving are
    # life now. Here: 4 MiB at 1 MB/s (4 s) against a 2 s silence bound (a large frame is
    # read as its bytes come, at least every MiB: RECEIVE_LOW_WATER_MAX_BYTES).
    assert quiet_server.tcp_url is not None
    value = np.arange(2**19, dtype=np.float64)  # 4 MiB
    async with (
        slow_link(quiet_server.tcp_url, 1_000_000) as url,
        ts.open_client(url, name="reader", heartbeat=0.3) as reader,
        ts.open_client(quiet_server.tcp_url, name="writer") as writer,
    ):
        await writer.create_channel("big")
        async with reader.subscribe("big", policy="block") as sub, writer.publisher("big") as pub:
            await pub.wait_for_readers()
            await pub.send(value)
            with trio.fail_after(WAIT_S):
                msg = await sub.receive()
        assert np.array_equal(msg.data, value)
        assert reader.reconnects == 0


@pytest.mark.parametrize("fault", ["cut", "reset"])
async def test_a_connection_cut_or_reset_under_the_client_fails_its_waiters_at_once(
    quiet_server: ts.Server, fault: str
) -> None:
    assert quiet_server.tcp_url is not None
    async with (
        open_proxy(quiet_server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="cut", reconnect=False) as client,
    ):
        await client.create_channel("ch")
        async with client.subscribe("ch") as sub:
            getattr(proxy, fault)()
            with trio.fail_after(SLACK_S), pytest.raises(ts.ConnectionClosed) as caught:
                await sub.receive()
            assert "silent" not in str(caught.value)  # the end of the stream, not a heartbeat
        assert client.closed
        assert proxy.accepted == 1


@pytest.mark.parametrize("scheme", ["tcp", "ws"])
async def test_a_peer_that_accepts_and_never_answers_fails_the_connect_within_connect_timeout(
    nursery: trio.Nursery, scheme: str
) -> None:
    # The whole way to the welcome is bounded: over ws:// the WebSocket upgrade too (a peer
    # that never answered it held the client, and a SyncClient's constructor, for good).
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    (listener,) = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), hold, 0)
    port = listener.socket.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}" if scheme == "tcp" else f"ws://127.0.0.1:{port}/ws"
    started = time.monotonic()
    with pytest.raises(ts.ConnectionClosed, match=r"no welcome from .* within 0\.5 s"):
        with trio.fail_after(WAIT_S):
            async with ts.open_client(url, connect_timeout=0.5):
                pass
    assert time.monotonic() - started < 0.5 + SLACK_S
    assert held  # the peer did accept


async def test_a_peer_that_closes_before_the_welcome_is_asked_about(nursery: trio.Nursery) -> None:
    # Another service on the port (it read the hello and hung up): "the peer closed the
    # connection" alone did not say where to look.
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.aclose()

    (listener,) = await nursery.start(
        functools.partial(trio.serve_tcp, host="127.0.0.1"), hang_up, 0
    )
    port = listener.socket.getsockname()[1]
    with pytest.raises(ts.ConnectionClosed) as failed, trio.fail_after(WAIT_S):
        async with ts.open_client(f"tcp://127.0.0.1:{port}"):
            pass
    assert f"is 127.0.0.1:{port} a trio_stream server's port?" in str(failed.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_next_connection_to_a_silent_server_is_tried_at_once(
    quiet_server: ts.Server, transport: str
) -> None:
    # The silent connection is dropped, not closed in order: a WebSocket's close handshake
    # (or TLS's close_notify) would wait its bound for a peer that answers nothing.
    async with (
        open_proxy(url_of(quiet_server, transport)) as proxy,
        ts.open_client(
            proxy.url,
            name="retrying",
            heartbeat=0.5,
            reconnect=ts.Reconnect(initial=0.05, maximum=0.05),
        ) as client,
    ):
        accepted = proxy.accepted
        proxy.hold()
        with trio.fail_after(WAIT_S):
            await wait_for_state(client, "reconnecting")
            declared = trio.current_time()
            await proxy.wait_accepted(accepted)
        assert trio.current_time() - declared < CLOSE_TIMEOUT_S - 0.5
        proxy.release()
        with trio.fail_after(WAIT_S):
            await wait_for_state(client, "open")
        assert [c.name for c in await client.clients()] == ["retrying"]
