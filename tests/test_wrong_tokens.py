"""Wrong tokens per address, said in the log (trio_stream/_server/wrong_tokens.py); over real
sockets for the server token, the admin token and /metrics."""

from __future__ import annotations

import logging

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from test_http import http_client

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._server import wrong_tokens
from trio_stream._server.wrong_tokens import (
    GUESSING_COUNT,
    WINDOW_S,
    WrongTokens,
    host_of,
    short_token_warning,
)

TOKEN = "a-long-enough-server-token"
ADMIN = "a-long-enough-admin-token"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.floats(0, WINDOW_S * 2), max_size=40))
def test_the_count_is_of_the_window_that_the_first_wrong_token_opened(gaps: list[float]) -> None:
    clock = Clock()
    tokens = WrongTokens(clock)
    start, count = None, 0
    for gap in gaps:
        clock.now += gap
        if start is None or clock.now - start >= WINDOW_S:
            start, count = clock.now, 0
        count += 1
        assert tokens.failed("10.0.0.1", "token") == count
    assert tokens.failed("10.0.0.2", "token") == 1  # another address has its own


def test_the_log_says_the_first_and_a_guess(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tokens = WrongTokens(clock)
    for _ in range(GUESSING_COUNT + 5):
        tokens.failed("10.0.0.1", "server token")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "a wrong server token from 10.0.0.1",
        "10 wrong tokens or keys from 10.0.0.1 within 60 s: someone may be guessing (use "
        "long random ones: tokens and channel keys are not rate-limited)",
    ]


def test_what_is_remembered_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrong_tokens, "MAX_ADDRESSES", 3)
    tokens = WrongTokens(Clock())
    for i in range(10):
        tokens.failed(f"10.0.0.{i}", "token")
    assert len(tokens._counts) == 3


def test_a_short_token_is_warned_about() -> None:
    said = short_token_warning("token", "abc")
    assert said is not None and said.startswith("the token has 3 characters: anyone")
    assert short_token_warning("token", "x" * 16) is None
    assert short_token_warning("admin token", None) is None


def test_host_of_keeps_an_ipv6_address_whole() -> None:
    assert host_of("127.0.0.1:5555") == "127.0.0.1"
    assert host_of("::1:5555") == "::1"
    assert host_of("?") == "?"


async def test_wrong_tokens_are_logged_and_never_lock_out_the_right_one(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # One address tried ~2,400 server tokens and ~14,000 admin tokens a second, and the log
    # said nothing (TLS audit). A lock-out per address would let anyone on a shared address
    # (a NAT, the host, a reverse proxy) lock the others out: the log says it instead.
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=0, token=TOKEN, admin_token=ADMIN
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None and server.ws_url is not None
    for i in range(GUESSING_COUNT):
        url = server.tcp_url if i % 2 else server.ws_url  # both ports count
        with pytest.raises(ts.AuthError, match="wrong or missing token"):
            async with ts.open_client(url, token=f"guess-{i}", reconnect=False):
                pass
    async with ts.open_client(server.tcp_url, token=TOKEN) as client:
        with pytest.raises(ts.AuthError, match="wrong admin token"):
            await client._request(M.Admin, token="guess", action="check")
        assert await client._request(M.Admin, token=ADMIN, action="check") == {"admin": True}
    async with http_client(server) as http:
        guessed = await http.request("/metrics", headers=(("Authorization", "Bearer guess"),))
        assert guessed.status == 401
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "a wrong server token from 127.0.0.1" in warned
    assert any(line.startswith("10 wrong tokens or keys from 127.0.0.1") for line in warned)
    await server.aclose()


async def test_a_missing_token_is_not_counted_as_a_guess(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, token=TOKEN)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    with pytest.raises(ts.AuthError, match="wrong or missing token"):
        async with ts.open_client(server.tcp_url, reconnect=False):
            pass
    assert "a wrong" not in caplog.text
    await server.aclose()


async def test_wrong_channel_keys_are_counted_as_wrong_tokens_are(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # An address trying keys of a private channel went unseen in the log (an outside audit).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="owner") as owner:
        await owner.create_channel("vault", public=False, key="k-" + "x" * 30)
        await owner.create_channel("guarded", key="g-" + "x" * 30)  # public, keyed writes
        async with ts.open_client(server.tcp_url) as guesser:
            # A key for a channel that does not exist, or none for a keyed one: no guess.
            with pytest.raises(ts.ChannelNotFound):
                await guesser.open_subscription("nowhere", key="some-key")
            with pytest.raises(ts.AuthError):
                await guesser.publisher("guarded").__aenter__()
            assert "a wrong" not in caplog.text
            for i in range(GUESSING_COUNT):
                with pytest.raises((ts.ChannelNotFound, ts.AuthError)):
                    if i % 2:
                        await guesser.open_subscription("vault", key=f"guess-{i}")
                    else:
                        await guesser.publisher("guarded", key=f"guess-{i}").__aenter__()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "a wrong channel key from 127.0.0.1" in warned
    assert any(line.startswith("10 wrong tokens or keys from 127.0.0.1") for line in warned)
    await server.aclose()
