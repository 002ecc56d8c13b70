"""README promises of "Synchronous client" and "Surviving failures" that no other test pinned.

- SyncClient: a value published while a channel has no readers goes nowhere (``publish``
  returns False); the publish queue is bounded at 10 000 values: a writer that gets too far
  ahead waits, nothing is dropped.
- Everything comes back by itself: a subscription whose channel is missing after a
  reconnect waits for it to come back (and then reads on, after a ``reset`` gap).

Real sockets on port 0; faults through a TCP proxy (tests/proxy.py). The SyncClient runs in a
worker thread while the server and the trio clients run in the test's trio loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import trio
from proxy import open_proxy

import trio_stream as ts
from trio_stream.sync import QUEUE_FRAMES, SyncClient

T = TypeVar("T")

WAIT_S = 5.0
FAST = ts.Reconnect(initial=0.05, maximum=0.2)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a synchronous scenario in a worker thread while the server keeps serving."""
    with trio.fail_after(WAIT_S * 2):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def tcp_url(server: ts.Server) -> str:
    assert server.tcp_url is not None
    return server.tcp_url


async def channel_gone(client: ts.Client, name: str) -> None:
    """Until the server no longer lists the channel."""
    while True:
        if all(c.name != name for c in await client.channels()):
            return
        await trio.sleep(0.01)


# -- SyncClient ------------------------------------------------------------------------------
async def test_a_sync_publish_without_readers_returns_false_and_the_value_goes_nowhere(
    server: ts.Server,
) -> None:
    # README 418-419: "a value published while a channel has no readers goes nowhere (a
    # writer never sends blind; `publish` returns `False`)".
    url = tcp_url(server)

    def scenario() -> None:
        with SyncClient(url, name="script") as c, SyncClient(url, name="rec") as rec:
            c.create_channel("AI1")
            assert c.publish("AI1", "nobody") is False
            assert c.publish("AI1", "nor here") is False  # a type tried: not even encoded
            with pytest.raises(TypeError):  # (the first of its type is tried: README, Writers)
                c.publish("AI1", object())
            pub = c.publisher("AI1")
            assert pub.send("nobody either") is False
            c.flush(timeout=WAIT_S)
            with rec.subscribe("AI1", policy="unbounded") as sub:
                pub.wait_for_readers(timeout=WAIT_S)
                # The client's shared publisher (behind c.publish) hears of the reader on its
                # own: a False until then sends nothing, as asserted below.
                deadline = time.monotonic() + WAIT_S
                while not c.publish("AI1", "first read") and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert pub.send("second read") is True
                c.flush(timeout=WAIT_S)
                pub.close()
                got = [sub.get(timeout=WAIT_S) for _ in range(2)]
                assert sorted(m.data for m in got) == ["first read", "second read"]
                assert sorted(m.seq for m in got) == [1, 2]  # nothing before reached the server
                assert all(m.lost == 0 for m in got)
                with pytest.raises(TimeoutError):
                    sub.get(timeout=0.1)
            assert c.stats().frames_in == 2

    await in_thread(scenario)


async def test_the_sync_publish_queue_holds_10_000_values_then_waits_and_drops_nothing(
    server: ts.Server,
) -> None:
    # README 424-426: "The queue is bounded (10 000 values / 64 MiB): a writer that gets too far
    # ahead waits, nothing is dropped". A block reader that reads nothing holds the writer's
    # connection back (its window, 1024 frames, waits on the server); the queue fills behind it.
    assert QUEUE_FRAMES == 10_000
    url = tcp_url(server)
    count = 12_000
    returned = 0
    done = threading.Event()

    async with ts.open_client(url, name="recorder") as reader:
        await reader.create_channel("AI1")
        async with reader.subscribe("AI1", policy="block", size=100) as sub:
            c = await in_thread(lambda: SyncClient(url, name="daq"))
            try:

                def write() -> None:
                    nonlocal returned
                    for i in range(count):
                        c.publish("AI1", i)
                        returned += 1
                    done.set()

                def stalled() -> tuple[int, int]:
                    """Once the queue is full and publish() has stopped returning: how many
                    returned, how many queued. (Full first: a writer thread that the machine
                    merely paused for a moment is not a writer that waits.)"""
                    deadline = time.monotonic() + WAIT_S
                    while c._queued_frames() < QUEUE_FRAMES and time.monotonic() < deadline:
                        time.sleep(0.01)
                    last = -1
                    while returned != last and time.monotonic() < deadline:
                        last = returned
                        time.sleep(0.3)
                    return returned, c._queued_frames()

                thread = threading.Thread(target=write, daemon=True)
                thread.start()
                stuck_at, queued = await in_thread(stalled)
                assert not done.is_set(), "publish never waited"
                assert queued == QUEUE_FRAMES
                # What publish() took: the queue, and what the server holds for the reader
                # (the writer's window of 1024 frames, the reader's buffer and what is on its
                # way to it: at most 100 each).
                assert QUEUE_FRAMES <= stuck_at <= QUEUE_FRAMES + 1024 + 256
                got: list[ts.Message] = []
                with trio.fail_after(WAIT_S * 2):
                    while len(got) < count:
                        got.append(await sub.receive())
                await in_thread(lambda: thread.join(WAIT_S))
                assert done.is_set()
            finally:
                await in_thread(c.close)
    assert [m.data for m in got] == list(range(count))
    assert sum(m.lost for m in got) == 0 and sub.lost == 0


# -- a subscription's channel missing after a reconnect --------------------------------------
@pytest.mark.server_options(resume_grace_s=0)  # the owner's channel ends with its connection
async def test_a_subscription_whose_channel_is_missing_after_a_reconnect_waits_for_it(
    server: ts.Server,
) -> None:
    # README 792-793: "A subscription whose channel is missing after a reconnect waits for it
    # to come back"; 808: a re-created channel is a new epoch: `ts.Gap("reset", lost=None, ...)`.
    url = tcp_url(server)
    async with (
        open_proxy(url) as writer_proxy,
        open_proxy(url) as reader_proxy,
        ts.open_client(writer_proxy.url, name="daq", reconnect=FAST) as writer,
        ts.open_client(reader_proxy.url, name="recorder", reconnect=FAST) as reader,
        ts.open_client(url, name="observer") as observer,
    ):
        await writer.create_channel("AI1", history=5)
        async with (
            writer.publisher("AI1") as pub,
            reader.subscribe("AI1", policy="block", size=100) as sub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                assert await pub.send("old")
                assert (await sub.receive()).data == "old"
            epoch = sub.position.epoch
            # The reader is away first, then the channel's owner: the channel ends meanwhile.
            reader_proxy.refuse()
            reader_proxy.cut()
            writer_proxy.refuse()
            with trio.fail_after(WAIT_S):
                await reader.wait_state("reconnecting")
                writer_proxy.cut()
                await writer.wait_state("reconnecting")
                await channel_gone(observer, "AI1")
                reader_proxy.accept()  # the reader is back; its channel is not
                await reader.wait_state("open")
            with trio.move_on_after(0.5) as waited:
                msg = await sub.receive()
                pytest.fail(f"a subscription of a missing channel got {msg!r}")
            assert waited.cancelled_caught  # it waits: no end, no error
            assert reader.state == "open"
            writer_proxy.accept()  # the owner is back and creates its channel again
            with trio.fail_after(WAIT_S):
                await writer.wait_state("open")
                while [c.readers for c in await observer.channels() if c.name == "AI1"] != [1]:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # the waiting subscription found it
                await pub.wait_for_readers()
                for i in range(5):
                    assert await pub.send(i)
                got = [await sub.receive() for _ in range(5)]
            assert sub.position.epoch != epoch
    assert [m.data for m in got] == list(range(5))
    assert [m.seq for m in got] == [1, 2, 3, 4, 5]  # the new channel's own count
    assert got[0].gap is not None and got[0].gap.kind == "reset" and got[0].gap.lost is None
    assert all(m.gap is None and m.lost == 0 for m in got[1:])


# -- a server cancelled, not shut down -------------------------------------------------------
async def serve_in_own_nursery(
    config: ts.ServerConfig, *, task_status: trio.TaskStatus[tuple[ts.Server, trio.CancelScope]]
) -> None:
    """Run a server in a nursery of its own; started with it and its nursery's cancel scope."""
    async with trio.open_nursery() as servers:
        server: ts.Server = await servers.start(ts.serve, config)
        task_status.started((server, servers.cancel_scope))


async def test_a_cancelled_server_just_closes_its_connections_and_clients_reconnect(
    nursery: trio.Nursery,
) -> None:
    # README 1159-1162: "Cancelling a server run by `nursery.start(ts.serve, config)` (its
    # nursery's cancel scope) is not graceful: the connections just close, as in a crash
    # (clients see "the peer closed the connection" and reconnect if they may)".
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server, scope = await nursery.start(serve_in_own_nursery, config)
    url = tcp_url(server)
    async with (
        ts.open_client(url, name="once", reconnect=False) as once,
        ts.open_client(url, name="rider", reconnect=FAST) as rider,
    ):
        async with once.subscribe("$stats") as sub:
            scope.cancel()
            with trio.fail_after(WAIT_S), pytest.raises(ts.ConnectionClosed) as closed:
                async for _ in sub:
                    pass
        assert str(closed.value) == "the peer closed the connection"
        assert closed.value.reason is None  # no goodbye: aclose() would have said one
        assert once.state == "closed"
        with trio.fail_after(WAIT_S):
            assert await rider.wait_state("reconnecting", "closed") == "reconnecting"
        port = int(url.rsplit(":", 1)[1])
        again = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
        second, _ = await nursery.start(serve_in_own_nursery, again)
        with trio.fail_after(WAIT_S):
            assert await rider.wait_state("open", "closed") == "open"
        assert [c.name for c in await rider.clients()] == ["rider"]
    await second.aclose()
