"""Reconnecting with several URLs, over real sockets through proxies (tests/proxy.py).

An outside fault-injection run lost 1,020 acknowledged frames to this: a writer with two URLs
was cut from a healthy server and tried the other URL first, a node that accepted and never
answered; at the default connect_timeout (10 s, the default resume_grace_s) that one attempt
used the lease up, the channel ended with its owner, and the reader's recording with it. The
server just lost is now tried first, and with several URLs an attempt waits at most half of
what is left of the lease. The hung node, when it woke, also took the client's place from the
healthy node with the hello of the attempt the client had given up: a hello whose connection
has ended takes nothing back now.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio.testing
from proxy import TcpProxy, open_proxy
from redis_server import RedisServer
from test_cluster import two_nodes

import trio_stream as ts
from trio_stream._client import MIN_RECONNECT_ATTEMPT_S
from trio_stream._protocol.framing import frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION, RESUME_GRACE_S
from trio_stream._protocol.messages import Hello, encode_message

WAIT_S = 10.0


@asynccontextmanager
async def server_behind_proxies(count: int) -> AsyncIterator[tuple[str, list[TcpProxy]]]:
    """A server in this trio run and ``count`` proxies to it: its own URL, and them."""
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    async with ts.open_server(config) as server, AsyncExitStack() as stack:
        url = server.tcp_url or ""
        yield url, [await stack.enter_async_context(open_proxy(url)) for _ in range(count)]


async def send_across(
    server_url: str, urls: list[str], fault: Callable[[], Awaitable[None]]
) -> tuple[float, str | None, int]:
    """A writer on ``urls`` sends 1, ``fault()`` happens, it sends 2: how long from the fault
    to 2's acknowledgement, the URL the writer is on then, and its reconnects. Its ``block``
    reader, on the server directly, gets both (the channel outlived the cut)."""
    async with (
        ts.open_client(urls, name="daq") as daq,
        ts.open_client(server_url, name="rec") as rec,
    ):
        await daq.create_channel("ai")
        async with rec.subscribe("ai", policy="block") as sub, daq.publisher("ai") as pub:
            await pub.wait_for_readers()
            assert await pub.send(1)
            started = trio.current_time()
            await fault()
            assert await pub.send(2)
            await pub.wait_acknowledged()
            took = trio.current_time() - started
            with trio.fail_after(WAIT_S):
                assert [(await sub.receive()).data for _ in range(2)] == [1, 2]
            return took, daq.url, daq.reconnects


async def test_a_cut_from_a_healthy_server_reconnects_there_before_a_hung_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server_behind_proxies(2) as (url, (healthy, hung)):
        hung.hold()  # accepts, and nothing goes through: a stopped node, a frozen link

        async def cut() -> None:
            healthy.cut()

        took, on, reconnects = await send_across(url, [healthy.url, hung.url], cut)
        assert took < MIN_RECONNECT_ATTEMPT_S
        assert on == healthy.url and reconnects == 1


async def test_a_hung_server_just_lost_leaves_the_other_urls_time_within_the_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server just lost, and the next URL, both accept and never answer: each attempt
    # waits half of what is left of the lease (not connect_timeout, 10 s, the whole lease),
    # so the third URL is reached while the server still keeps the writer's place.
    async with server_behind_proxies(3) as (url, (lost, hung, alive)):

        async def hang_both() -> None:
            lost.hold()
            hung.hold()
            lost.cut()

        urls = [lost.url, hung.url, alive.url]
        took, on, _ = await send_across(url, urls, hang_both)
        assert took < RESUME_GRACE_S
        assert on == alive.url


async def test_a_server_gone_silent_is_not_the_first_tried_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Silence (a stopped node, a partition) says the server does not answer: reconnecting
    # there first cost half the lease, 5 s, before the next URL (a review).
    async with (
        server_behind_proxies(2) as (_, (silent, other)),
        ts.open_client([silent.url, other.url], name="daq", heartbeat=0.5) as daq,
    ):
        silent.hold()  # the connection stays open, and nothing comes back
        with trio.fail_after(WAIT_S):
            await daq.wait_state("reconnecting")
        lost_at = trio.current_time()
        with trio.fail_after(WAIT_S):
            await daq.wait_state("open")
        assert trio.current_time() - lost_at < MIN_RECONNECT_ATTEMPT_S
        assert daq.url == other.url


async def test_one_url_rides_through_a_server_held_longer_than_half_the_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server_behind_proxies(1) as (url, (slow,)):

        async def slow_answers() -> None:
            slow.hold()
            slow.cut()
            await trio.sleep(7)
            slow.release()

        took, _, reconnects = await send_across(url, [slow.url], slow_answers)
        assert reconnects == 1 and took < RESUME_GRACE_S


async def test_only_several_distinct_urls_cut_an_attempt_short(server: ts.Server) -> None:
    # One URL (or one given twice) gains nothing from cutting its attempts short: a server
    # slower than half the lease would be cut off at every try.
    url = server.tcp_url or ""
    other = url.replace("127.0.0.1", "localhost")
    async with ts.open_client([url]) as one, ts.open_client([url, url]) as twice:
        assert one._attempt_bound(8.0) == math.inf
        assert twice._attempt_bound(8.0) == math.inf
    async with ts.open_client([url, other]) as two:
        assert two._attempt_bound(8.0) == 4.0
        assert two._attempt_bound(1.0) == MIN_RECONNECT_ATTEMPT_S
        assert two._attempt_bound(0.0) == math.inf  # the lease is gone: connect_timeout


def _hello_frame(name: str, resume_token: str) -> bytes:
    body = encode_message(
        Hello(v=PROTOCOL_VERSION, name=name, resume_token=resume_token, resume=True)
    )
    return frame_prefix(len(body)) + body


async def test_a_hello_its_client_gave_up_on_takes_nothing_back(
    redis_server: RedisServer,
) -> None:
    # The client is on node b; node a reads, late, the hello of an attempt the client gave
    # up (its FIN is there behind it). Taking the client's place back from b would end its
    # connection there.
    async with (
        two_nodes(redis_server) as (url_a, url_b),
        ts.open_client(url_b, name="daq") as daq,
    ):
        token = daq._resume_token  # (what the client's next hello would carry)
        assert token is not None
        host, port = url_a.removeprefix("tcp://").rsplit(":", 1)
        # Connected, hello sent and FIN (a client that gave the attempt up) with no
        # checkpoint between, so node a (in this trio run) reads the hello with its FIN.
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(_hello_frame("daq", token))
            raw.shutdown(socket.SHUT_WR)
            stale = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
            with trio.fail_after(WAIT_S):
                while await stale.receive_some(65536):  # until the server closes it
                    pass
        await trio.sleep(1.0)  # what a taken place would cost daq: its connection on b
        assert daq.reconnects == 0
        assert (await daq.stats()) is not None
