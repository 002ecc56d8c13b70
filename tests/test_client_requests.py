"""A request that makes something on the server (a subscription, a publisher), abandoned
before its answer (a cancel, a timeout, Ctrl-C in the SyncClient): the client still takes the
answer, and closes what it made. Before, the answer was ignored and the server's object
belonged to nobody for as long as the client stayed connected: a ``block`` orphan held every
writer of its channel back, an orphan publisher kept a ``single_writer`` channel's place."""

from __future__ import annotations

import trio
from proxy import open_proxy

import trio_stream as ts

WAIT_S = 10.0
ANSWER_HELD_S = 0.3  # the proxy holds the server's answers this long; the request gives up


async def test_a_cancelled_subscribe_leaves_no_reader_behind(server: ts.Server) -> None:
    assert server.tcp_url
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(server.tcp_url, name="w") as writer,
        ts.open_client(proxy.url, name="r") as reader,
    ):
        await writer.create_channel("ch")
        proxy.hold_replies()  # the server gets the subscribe and acts on it; the answer waits
        with trio.move_on_after(ANSWER_HELD_S) as gave_up:
            await reader.open_subscription("ch", policy="block", size=1)
        assert gave_up.cancelled_caught
        proxy.release()
        async with writer.publisher("ch") as pub:
            with trio.fail_after(WAIT_S):
                while pub.readers:  # noqa: ASYNC110 - no event for "none left"
                    await trio.sleep(0.01)
                for value in range(3000):  # past a window: an orphan block reader held it
                    assert not await pub.send(value)  # nobody reads


async def test_a_cancelled_open_publisher_leaves_no_writer_behind(server: ts.Server) -> None:
    assert server.tcp_url
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="w") as writer,
    ):
        await writer.create_channel("solo", single_writer=True)
        proxy.hold_replies()
        with trio.move_on_after(ANSWER_HELD_S) as gave_up:
            await writer.open_publisher("solo")
        assert gave_up.cancelled_caught
        proxy.release()
        with trio.fail_after(WAIT_S):
            while True:  # the orphan's close is on its way; then the place is free
                try:
                    async with writer.publisher("solo"):
                        break
                except ts.LimitExceeded:
                    await trio.sleep(0.05)


async def test_an_abandoned_request_answered_with_an_error_is_forgotten(
    server: ts.Server,
) -> None:
    # The undo runs on a result only; an error answer (no such channel) left the request in
    # the client's table of pending replies until the next reconnect, one per cancel.
    assert server.tcp_url
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="r") as reader,
    ):
        pending_before = len(reader._replies)
        proxy.hold_replies()
        with trio.move_on_after(ANSWER_HELD_S) as gave_up:
            await reader.open_subscription("nowhere")
        assert gave_up.cancelled_caught
        proxy.release()
        with trio.fail_after(WAIT_S):
            while len(reader._replies) > pending_before:  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.01)
