"""Wrong tokens per address (trio_stream/_server/auth_throttle.py): a guesser gets a few
tries a minute; over real sockets for the server token and the admin token."""

from __future__ import annotations

import logging

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._server import auth_throttle
from trio_stream._server.auth_throttle import MAX_FAILURES, WINDOW_S, AuthThrottle, host_of

TOKEN = "right"
ADMIN = "admin-right"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.floats(0, WINDOW_S * 2), max_size=40))
def test_an_address_is_refused_exactly_while_it_has_too_many_recent_failures(
    gaps: list[float],
) -> None:
    clock = Clock()
    throttle = AuthThrottle(clock)
    times: list[float] = []
    for gap in gaps:
        clock.now += gap
        recent = [t for t in times if t > clock.now - WINDOW_S]
        refused = throttle.refusal("10.0.0.1")
        assert (refused is not None) == (len(recent) >= MAX_FAILURES)
        assert throttle.refusal("10.0.0.2") is None  # other addresses are not touched
        if refused is None:
            throttle.failed("10.0.0.1", "token")
            times.append(clock.now)


def test_the_refusal_says_how_long_and_ends_by_itself() -> None:
    clock = Clock()
    throttle = AuthThrottle(clock)
    for _ in range(MAX_FAILURES):
        throttle.failed("10.0.0.1", "token")
        clock.now += 1
    refusal = throttle.refusal("10.0.0.1")
    assert refusal == (
        f"{MAX_FAILURES} wrong tokens from 10.0.0.1 within 60 s: refused without a try "
        f"for {WINDOW_S - MAX_FAILURES:.0f} s more"
    )
    clock.now += WINDOW_S - MAX_FAILURES + 0.5  # the oldest is a window old
    assert throttle.refusal("10.0.0.1") is None


def test_what_is_remembered_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_throttle, "MAX_ADDRESSES", 3)
    throttle = AuthThrottle(Clock())
    for i in range(10):
        throttle.failed(f"10.0.0.{i}", "token")
    assert len(throttle._failures) == 3


def test_host_of_keeps_an_ipv6_address_whole() -> None:
    assert host_of("127.0.0.1:5555") == "127.0.0.1"
    assert host_of("::1:5555") == "::1"
    assert host_of("?") == "?"


async def test_wrong_server_tokens_from_one_address_lock_it_out_for_a_while(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # One address tried ~2,400 tokens a second, and the log said nothing (TLS audit).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, token=TOKEN)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None and server.ws_url is not None
    for i in range(MAX_FAILURES):
        url = server.tcp_url if i % 2 else server.ws_url  # both ports count
        with pytest.raises(ts.AuthError, match="wrong or missing token"):
            async with ts.open_client(url, token=f"guess-{i}", reconnect=False):
                pass
    with pytest.raises(ts.AuthError, match=r"10 wrong tokens from 127\.0\.0\.1 within 60 s"):
        async with ts.open_client(server.tcp_url, token=TOKEN, reconnect=False):
            pass  # the right one too, until the oldest guess is a minute old
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "a wrong server token from 127.0.0.1" in warned
    assert any("10 wrong tokens from 127.0.0.1" in line for line in warned)
    await server.aclose()


async def test_a_missing_token_is_not_counted_as_a_guess(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, token=TOKEN)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    for _ in range(MAX_FAILURES + 1):
        with pytest.raises(ts.AuthError, match="wrong or missing token"):
            async with ts.open_client(server.tcp_url, reconnect=False):
                pass
    async with ts.open_client(server.tcp_url, token=TOKEN) as client:
        assert client.state == "open"
    await server.aclose()


async def test_wrong_admin_tokens_on_one_connection_are_bounded_too(
    nursery: trio.Nursery,
) -> None:
    # ~14,000 admin tokens a second on one authenticated connection (TLS audit).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, admin_token=ADMIN)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url) as client:
        for i in range(MAX_FAILURES):
            with pytest.raises(ts.AuthError, match="wrong admin token"):
                await client._request(M.Admin, token=f"guess-{i}", action="check")
        with pytest.raises(ts.AuthError, match="refused without a try"):
            await client._request(M.Admin, token=ADMIN, action="check")
    await server.aclose()
