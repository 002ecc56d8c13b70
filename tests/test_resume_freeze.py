"""A max_rate reader whose frames cannot go out: a frozen link, or its client away.

A dashboard panel subscribes with ``max_rate`` and a small ``drop_oldest`` buffer. The rate
is decimation (frames passed over between two intervals are no loss), and the frames it lets
through that the buffer cannot hold are dropped and counted. The server let the held frame
through on its sender's turns only: behind a frozen link, whose socket buffers a camera's
frames filled, the sender waited in a write, and with its client away (a kept subscription)
there is no sender at all. The held frame was then replaced by every new one until the link
came back, and a 40 s hole in a panel's plot read "gap −0, lost 0" (an operator, a frozen
link between a dashboard and its server). Faults are real: tests/proxy.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import numpy as np
import pytest
import trio
from proxy import TcpProxy, open_proxy

import trio_stream as ts

WAIT_S = 20.0  # a hang fails instead of blocking
FAST = ts.Reconnect(initial=0.05, maximum=0.2)
RATE_HZ = 10.0  # the panel's max_rate
WRITE_HZ = 1000  # the channel's rate: 100 frames per interval of the panel's
CAMERA_BYTES = 2 * 2**20  # a few frames in flight fill the link's socket buffers
AWAY_S = 4.0


def panel(
    page: ts.Client, channel: str, size: int = 5
) -> AbstractAsyncContextManager[ts.Subscription]:
    """A dashboard panel's subscription (panels.js: drop_oldest, half a second of its rate)."""
    return page.subscribe(channel, policy="drop_oldest", size=size, max_rate=RATE_HZ)


@pytest.fixture
async def proxy(server: ts.Server) -> AsyncIterator[TcpProxy]:
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:
        yield proxy


async def write_scalar(pub: ts.Publisher, sent: list[int]) -> None:
    """Value k as the channel's k-th frame (its seq) at about WRITE_HZ, until cancelled."""
    start = trio.current_time()
    k = 0
    while True:
        k += 1
        await pub.send(k)
        sent.append(k)
        await trio.sleep_until(start + k / WRITE_HZ)


async def write_camera(pub: ts.Publisher) -> None:
    k = 0
    while True:
        k += 1
        await pub.send(np.full(CAMERA_BYTES, k % 256, np.uint8))
        await trio.sleep(0.05)


async def collect(sub: ts.Subscription, into: list[ts.Message]) -> None:
    async for msg in sub:
        into.append(msg)


def admitted_across(messages: list[ts.Message], first: int, last: int) -> int:
    """Frames of seqs ``first``..``last`` the reader got or was told it lost: each message
    in that span, and the losses it carries (those before the first after the span too)."""
    count = 0
    for msg in messages:
        if msg.seq < first:
            continue
        count += msg.lost + (msg.seq <= last)
        if msg.seq > last:
            break
    return count


async def back_and_past(page: ts.Client, messages: list[ts.Message], seq: int) -> None:
    """Wait until ``page`` is connected again and its reader a second of frames past ``seq``."""
    with trio.fail_after(WAIT_S):
        await page.wait_state("open")
        while not messages or messages[-1].seq < seq + WRITE_HZ:  # noqa: ASYNC110
            await trio.sleep(0.05)


def assert_rate_kept_across(messages: list[ts.Message], first: int, last: int) -> None:
    """The span ``first``..``last`` (seqs at WRITE_HZ) cost the reader its rate's worth of
    frames, got or counted lost: not one held back and the rest passed off as decimation."""
    assert messages[-1].seq > last, "the reader did not get past the outage"
    span_s = (last - first) / WRITE_HZ
    admitted = admitted_across(messages, first, last)
    # At RATE_HZ, less a margin for a loaded machine's late timers (the rate releases a
    # frame an interval after the one before: a late release moves the next one later).
    assert admitted >= 0.6 * RATE_HZ * span_s, (
        f"{admitted} frames got or counted lost over {span_s:.1f} s at {RATE_HZ:g} Hz"
    )


async def test_a_max_rate_reader_behind_a_frozen_link_counts_what_it_lost(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # A panel of a 1 kHz channel at 10 Hz beside a camera, on one connection; the link
    # freezes both ways (nothing forwarded, nothing closed). The camera's frames in flight
    # fill the socket buffers, and the server's sender waits in its write. The client hears
    # nothing, gives the connection up and comes back once the link thaws (replacing the
    # half-open one: its subscriptions resume where they stood).
    assert server.tcp_url is not None
    scalar: list[ts.Message] = []
    sent: list[int] = []
    async with (
        ts.open_client(server.tcp_url, name="daq") as writer,
        ts.open_client(proxy.url, name="page", reconnect=FAST, heartbeat=0.5) as page,
    ):
        await writer.create_channel("scalar")
        await writer.create_channel("camera")
        async with (
            writer.publisher("scalar") as scalar_pub,
            writer.publisher("camera") as camera_pub,
            panel(page, "scalar") as scalar_sub,
            panel(page, "camera", size=2) as camera_sub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(write_scalar, scalar_pub, sent)
            nursery.start_soon(write_camera, camera_pub)
            nursery.start_soon(collect, scalar_sub, scalar)
            nursery.start_soon(collect, camera_sub, [])
            await trio.sleep(1.0)
            proxy.hold()
            frozen_from = sent[-1]
            with trio.fail_after(WAIT_S):
                await page.wait_state("reconnecting")
            await trio.sleep(AWAY_S)
            frozen_to = sent[-1]
            proxy.release()
            await back_and_past(page, scalar, frozen_to)
            nursery.cancel_scope.cancel()
    assert_rate_kept_across(scalar, frozen_from, frozen_to)


async def test_a_kept_max_rate_reader_counts_what_it_lost_while_its_client_was_away(
    server: ts.Server, proxy: TcpProxy
) -> None:
    # The reader's connection is cut and its client kept away: the server keeps its
    # subscription (kept.py), which has no sender to let its held frame through.
    assert server.tcp_url is not None
    scalar: list[ts.Message] = []
    sent: list[int] = []
    async with (
        ts.open_client(server.tcp_url, name="daq") as writer,
        ts.open_client(proxy.url, name="page", reconnect=FAST) as page,
    ):
        await writer.create_channel("scalar")
        async with (
            writer.publisher("scalar") as pub,
            panel(page, "scalar") as sub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(write_scalar, pub, sent)
            nursery.start_soon(collect, sub, scalar)
            await trio.sleep(1.0)
            proxy.refuse()
            proxy.cut()
            away_from = sent[-1]
            with trio.fail_after(WAIT_S):
                while not server.state.stats()["kept_subscriptions"]:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            await trio.sleep(AWAY_S)
            away_to = sent[-1]
            proxy.accept()
            await back_and_past(page, scalar, away_to)
            nursery.cancel_scope.cancel()
    (gap,) = [m.gap for m in scalar if m.gap is not None]
    assert gap.kind == "resumed"
    assert_rate_kept_across(scalar, away_from, away_to)
