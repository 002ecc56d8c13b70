"""The client's first connection: one try of each URL by default, and with ``wait_for_server``
tries again while no server answers (a script started together with its server), but not
after a server that answers and refuses."""

from __future__ import annotations

import logging
import math
import socket
from typing import Any

import pytest
import trio
import trio.testing
from proxy import open_proxy
from test_client_liveness import server_process

import trio_stream as ts
from trio_stream.sync import SyncClient

WAIT_S = 10.0


def free_port() -> int:
    """A loopback port nobody listens on (as far as a moment ago goes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_client_started_before_its_server_connects_once_it_is_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Started by one boot script, the instrument came up first and ended at once:
    # "cannot connect ... Connection refused" (control-room persona).
    caplog.set_level(logging.WARNING, logger="trio_stream")
    port = free_port()
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
    servers: list[ts.Server] = []
    async with trio.open_nursery() as nursery:

        async def start_later() -> None:
            await trio.sleep(0.8)
            servers.append(await nursery.start(ts.serve, config))

        nursery.start_soon(start_later)
        with trio.fail_after(WAIT_S):
            async with ts.open_client(
                f"tcp://127.0.0.1:{port}", name="daq", wait_for_server=WAIT_S
            ) as client:
                assert servers, "connected before its server was there?"
                assert [c.name for c in await client.clients()] == ["daq"]
        nursery.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if "no server answers yet" in r.getMessage()]
    assert len(said) == 1, said  # once, not at every try
    assert said[0].startswith("client 'daq': no server answers yet (cannot connect to ")
    assert said[0].endswith("trying again for up to 10 s"), said


async def test_a_sync_client_started_before_its_server_connects_once_it_is_there() -> None:
    port = free_port()
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)

    def script() -> list[str]:
        with SyncClient(f"tcp://127.0.0.1:{port}", name="rec", wait_for_server=WAIT_S) as c:
            return [info.name for info in c.clients()]

    async with trio.open_nursery() as nursery:
        waiting = trio.Event()
        names: list[str] = []

        async def run_script() -> None:
            waiting.set()
            names.extend(await trio.to_thread.run_sync(script, abandon_on_cancel=True))

        nursery.start_soon(run_script)
        await waiting.wait()
        await trio.sleep(0.5)  # the script's first tries find no server
        with trio.fail_after(WAIT_S):
            server = await nursery.start(ts.serve, config)
            while not names:  # noqa: ASYNC110 - a plain list the script's thread fills
                await trio.sleep(0.02)
        await server.aclose()
    assert names == ["rec"]


async def test_a_refused_first_connection_says_how_to_wait_for_the_server() -> None:
    # A trio program started together with its server met "Connection refused" and no word
    # of wait_for_server (the SyncClient's and the CLI's errors named theirs).
    with pytest.raises(ts.ConnectionClosed) as info:
        async with ts.open_client(f"tcp://127.0.0.1:{free_port()}"):
            pass
    said = str(info.value)
    assert "Connection refused (no server listens there" in said
    assert said.endswith("waits for it with open_client(..., wait_for_server=SECONDS)"), said


async def test_waiting_for_a_server_ends_with_the_wait() -> None:
    started = trio.current_time()
    with pytest.raises(ts.ConnectionClosed, match="cannot connect") as info:
        async with ts.open_client(f"tcp://127.0.0.1:{free_port()}", wait_for_server=0.5):
            pass
    assert 0.3 <= trio.current_time() - started < WAIT_S
    assert "wait_for_server" not in str(info.value)  # it did wait


async def test_a_server_that_answers_and_refuses_ends_the_wait_at_once() -> None:
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=None, token="t0k3n-4711-abcdefgh"
    )
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None
        started = trio.current_time()
        with pytest.raises(ts.AuthError):
            async with ts.open_client(server.tcp_url, wait_for_server=60):
                pass
        assert trio.current_time() - started < WAIT_S  # not the 60 s


@pytest.mark.parametrize("wait", [-1, "5", math.inf, math.nan])
async def test_a_wait_for_server_that_is_no_time_is_refused(wait: Any) -> None:
    with pytest.raises(ts.InvalidArgument, match="wait_for_server must be a number of seconds"):
        async with ts.open_client("tcp://127.0.0.1:1", wait_for_server=wait):
            pass


def _connect_under_a_mock_clock(url: str, autojump_threshold: float) -> str:
    """Open and close a client in a trio run of its own whose clock is a MockClock: "ok",
    or the error's text."""

    async def main() -> str:
        try:
            async with ts.open_client(url, reconnect=False):
                return "ok"
        except ts.ConnectionClosed as exc:
            return str(exc)

    clock = trio.testing.MockClock(autojump_threshold=autojump_threshold)
    return trio.run(main, clock=clock)


async def test_a_mock_clocks_autojump_past_the_welcome_is_named_in_the_error() -> None:
    # With autojump_threshold=0 the connect timeout passed at once, while the server (in
    # another process) answered, and the line blamed the port (a trio developer's tests).
    async with server_process() as (_process, url), open_proxy(url) as proxy:
        proxy.hold_replies()  # (the welcome comes after the jump, not only most times)
        said = await trio.to_thread.run_sync(_connect_under_a_mock_clock, proxy.url, 0)
        assert said.startswith(f"no welcome from {proxy.url} within 10.0 s"), said
        assert "this trio run's clock, a MockClock, jumped past the timeout" in said
        # As the line says: a threshold above the server's answer time connects.
        proxy.release()
        assert await trio.to_thread.run_sync(_connect_under_a_mock_clock, url, 2.0) == "ok"
