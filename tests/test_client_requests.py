"""A request that makes something on the server (a subscription, a publisher), abandoned
before its answer (a cancel, a timeout, Ctrl-C in the SyncClient): the client still takes the
answer, and closes what it made. Before, the answer was ignored and the server's object
belonged to nobody for as long as the client stayed connected: a ``block`` orphan held every
writer of its channel back, an orphan publisher kept a ``single_writer`` channel's place."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from proxy import TcpProxy, open_proxy

import trio_stream as ts
from trio_stream._client_port import PendingRequest

WAIT_S = 10.0
ANSWER_HELD_S = 0.3  # the proxy holds the server's answers this long; the request gives up


async def give_up_before_the_answer(
    proxy: TcpProxy, request: Callable[..., Awaitable[object]], *args: object, **kwargs: object
) -> None:
    """Make ``request``; the server gets it and acts on it, but its answer is held at the
    proxy (until ``proxy.release()``) and the request gives up first."""
    proxy.hold_replies()
    with trio.move_on_after(ANSWER_HELD_S) as gave_up:
        await request(*args, **kwargs)
    assert gave_up.cancelled_caught


FAST_RECONNECT = ts.Reconnect(initial=0.05, maximum=0.2)


@asynccontextmanager
async def direct_and_proxied(
    server: ts.Server, direct: str, proxied: str
) -> AsyncIterator[tuple[TcpProxy, ts.Client, ts.Client]]:
    """A client named ``direct`` of ``server``, and one named ``proxied`` reaching it through
    a proxy (whose answers a test holds back), reconnecting fast; yields the proxy and both."""
    assert server.tcp_url
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(server.tcp_url, name=direct) as direct_client,
        ts.open_client(proxy.url, name=proxied, reconnect=FAST_RECONNECT) as proxied_client,
    ):
        yield proxy, direct_client, proxied_client


async def test_a_cancelled_subscribe_leaves_no_reader_behind(server: ts.Server) -> None:
    async with direct_and_proxied(server, "w", "r") as (proxy, writer, reader):
        await writer.create_channel("ch")
        await give_up_before_the_answer(
            proxy, reader.open_subscription, "ch", policy="block", size=1
        )
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
        await give_up_before_the_answer(proxy, writer.open_publisher, "solo")
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
        await give_up_before_the_answer(proxy, reader.open_subscription, "nowhere")
        proxy.release()
        with trio.fail_after(WAIT_S):
            while len(reader._replies) > pending_before:  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.01)


@pytest.mark.server_options(resume_grace_s=60.0)
async def test_a_subscribe_given_up_just_before_a_cut_ends_once_the_client_is_back(
    server: ts.Server,
) -> None:
    # The answer never came (the connection broke first), so the client could not undo the
    # subscription, and the server kept it for the client's return as it keeps every reader
    # of a cut connection. The client's resubscriptions do not ask for it: once they are
    # answered the client says so ("restored") and the server ends it. Before, it waited out
    # the grace period (60 s here), a block orphan holding the channel's writer.
    async with direct_and_proxied(server, "w", "r") as (proxy, writer, reader):
        await writer.create_channel("ch")
        async with reader.subscribe("ch", policy="block", size=5) as wanted:
            await give_up_before_the_answer(
                proxy, reader.open_subscription, "ch", policy="block", size=1
            )
            proxy.cut()
            proxy.release()
            async with writer.publisher("ch") as pub:
                with trio.fail_after(WAIT_S):
                    await reader.wait_state("reconnecting")
                    await reader.wait_state("open")
                    while pub.readers != 1 or server.state.stats()["kept_subscriptions"]:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    for value in range(50):  # the reader that came back still gets them
                        assert await pub.send(value)
                    got = [(await wanted.receive()).data for _ in range(50)]
        assert got == list(range(50))


async def test_a_cut_while_an_abandoned_request_waits_closes_the_client_cleanly(
    server: ts.Server,
) -> None:
    # The abandoned request's answer is still awaited, and forgotten when it fails: failing
    # the pending requests at the cut removed it from the table being iterated, and the
    # client's reader task died of a RuntimeError instead of reporting the lost connection.
    assert server.tcp_url
    async with open_proxy(server.tcp_url) as proxy, ts.open_client(server.tcp_url) as writer:
        await writer.create_channel("ch")
        async with ts.open_client(proxy.url, name="r", reconnect=False) as reader:
            await give_up_before_the_answer(proxy, reader.open_subscription, "ch")
            proxy.cut()
            with trio.fail_after(WAIT_S):
                await reader.wait_state("closed")
            with pytest.raises(ts.ConnectionClosed):
                await reader.channels()


class CancelAsTheReplyIsRead(trio.abc.Instrument):
    """Cancels ``scope`` just before the client's reader task steps while a request waits:
    the step that reads the answer. The caller then finds its request answered and itself
    cancelled at once (a deadline that expires in the same scheduler turn as the answer)."""

    def __init__(self, client: ts.Client, scope: trio.CancelScope) -> None:
        self.client = client
        self.scope = scope

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        reader = task.name.endswith("Client._reader")
        if reader and self.client._replies and not self.scope.cancel_called:
            self.scope.cancel()


@pytest.mark.parametrize("request_kind", ["subscribe", "open_publisher"])
async def test_a_request_cancelled_as_its_answer_is_read_leaves_nothing_behind(
    server: ts.Server, request_kind: str
) -> None:
    # The answer made the subscription (or publisher) in the reader task; the cancelled
    # caller found its request done and skipped the undo. The object stayed registered and
    # live on the server, resubscribed on every reconnect: a block one held its channel's
    # writers for good (1 round in 10 of an outside fault soak).
    assert server.tcp_url
    async with (
        ts.open_client(server.tcp_url, name="w") as writer,
        ts.open_client(server.tcp_url, name="r") as other,
    ):
        await writer.create_channel("ch", single_writer=True)
        await trio.sleep(0.1)  # a quiet connection: what the reader reads next is the answer
        scope = trio.CancelScope()
        instrument = CancelAsTheReplyIsRead(other, scope)
        trio.lowlevel.add_instrument(instrument)
        try:
            with scope:
                if request_kind == "subscribe":
                    await other.open_subscription("ch", policy="block", size=1)
                else:
                    await other.open_publisher("ch")
        finally:
            trio.lowlevel.remove_instrument(instrument)
        assert scope.cancelled_caught
        assert not other._subscriptions and not other._publishers
        channel = server.state.broker.channels["ch"]
        with trio.fail_after(WAIT_S):
            while channel.readers or channel.publishers:  # noqa: ASYNC110 - closes on their way
                await trio.sleep(0.01)
            async with writer.publisher("ch") as pub:  # the only writer's place is free
                for value in range(3000):  # past a window: an orphan block reader held it
                    assert not await pub.send(value)


# Requests whose change the client keeps a copy of: given up after they went out, their
# answer is still taken (an outside audit of the trio client found each one).


async def test_a_retune_given_up_before_its_answer_still_moves_the_credit(
    server: ts.Server,
) -> None:
    # The server took size=1 (a window of 1) while the client kept its window of 50: it
    # returned credit after 12 frames, the server waited for it after 1, and the block
    # reader (and its writer) stalled for good.
    async with direct_and_proxied(server, "w", "r") as (proxy, writer, reader):
        await writer.create_channel("ch")
        async with (
            reader.subscribe("ch", policy="block", size=50) as sub,
            writer.publisher("ch") as pub,
        ):
            await give_up_before_the_answer(proxy, sub.retune, size=1)
            proxy.release()
            got: list[int] = []
            with trio.fail_after(WAIT_S):
                async with trio.open_nursery() as nursery:

                    async def write() -> None:
                        for value in range(100):
                            await pub.send(value)

                    nursery.start_soon(write)
                    while len(got) < 100:
                        got.append((await sub.receive()).data)
            assert got == list(range(100)) and sub.window == 1


async def test_a_channel_deleted_by_a_request_given_up_does_not_come_back(
    server: ts.Server,
) -> None:
    # The client still counted it among its own, and created it again after the next
    # reconnection.
    async with direct_and_proxied(server, "w", "owner") as (proxy, watcher, owner):
        await owner.create_channel("gone")
        await give_up_before_the_answer(proxy, owner.delete_channel, "gone")
        proxy.release()
        with trio.fail_after(WAIT_S):
            while "gone" in owner._owned:  # noqa: ASYNC110 - the answer is on its way
                await trio.sleep(0.01)
            proxy.cut()
            await owner.wait_state("reconnecting")
            await owner.wait_state("open")
        assert "gone" not in [c.name for c in await watcher.channels()]


async def test_a_channel_created_by_a_request_given_up_is_the_clients_own(
    server: ts.Server,
) -> None:
    # Created on the server, it was not among the client's own: a retry said only that the
    # name was taken, and the channel did not come back after a server restart.
    assert server.tcp_url
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="owner") as owner,
    ):
        await give_up_before_the_answer(proxy, owner.create_channel, "mine", history=5)
        proxy.release()
        with trio.fail_after(WAIT_S):
            while "mine" not in owner._owned:  # noqa: ASYNC110 - the answer is on its way
                await trio.sleep(0.01)
        with pytest.raises(ts.ChannelExists) as again:
            await owner.create_channel("mine", history=5)
        assert str(again.value) == (
            "the channel 'mine' exists already: this client created it (a "
            "create_channel() given up after it was sent, by a timeout say, still creates it); "
            "use it as it is, or delete_channel() it first"
        )
        # Asked for with other options, it says which (a key by name only: a secret).
        with pytest.raises(ts.ChannelExists) as unlike:
            await owner.create_channel("mine", history=50, key="s3cret")
        assert str(unlike.value).startswith(
            "the channel 'mine' exists already: this client created it with another key, "
            "history=5 (not 50) (a create_channel() given up"
        )
        assert "s3cret" not in str(unlike.value)


def test_a_request_answered_just_before_its_connection_was_lost_keeps_its_answer() -> None:
    # The connection's loss failed every request still in the reply table, an answered one
    # too (its waiter had not run yet): an open then raised ConnectionClosed while its
    # publisher or subscription was made and restored on every reconnect, with no handle to
    # close it (a cancellation audit: a block reader held its writers for good).
    request = PendingRequest(1)
    request.resolve({"sub": 5})
    request.fail(ts.ConnectionClosed("the connection was lost during this request"))
    assert request.result == {"sub": 5} and request.error is None and request.done.is_set()


async def test_a_delete_whose_answer_the_connection_lost_is_not_undone_by_the_reconnect(
    server: ts.Server,
) -> None:
    # The server deleted the channel; the connection was lost before the answer came; the
    # reconnection created the channel again, so a caller who checked (as the error advises)
    # saw it and took the delete for one that did not happen (a cancellation audit).
    async with direct_and_proxied(server, "obs", "owner") as (proxy, obs, owner):
        await owner.create_channel("x")
        proxy.hold_replies()
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:

                async def delete() -> None:
                    with pytest.raises(ts.ConnectionClosed, match="may have been carried out"):
                        await owner.delete_channel("x")

                nursery.start_soon(delete)
                while any(c.name == "x" for c in await obs.channels()):  # noqa: ASYNC110 (did it)
                    await trio.sleep(0.02)
                proxy.reset()  # ... and its answer is lost with the connection
            proxy.release()
            await owner.wait_state("open")
        await trio.sleep(0.5)  # the restore is done (it would have created it by now)
        assert not [c for c in await obs.channels() if c.name == "x"]


@pytest.mark.parametrize("request_kind", ["subscribe", "channels"])
async def test_a_subscribe_or_a_listing_cut_on_its_way_is_made_again_once_reconnected(
    server: ts.Server, request_kind: str
) -> None:
    # A recorder's subscribe cut by a link that failed raised "it may have been carried
    # out: check before repeating it", which nobody can check (a lab's audit): a subscribe
    # or a listing is safe to make again, and the client does so once it is back.
    async with direct_and_proxied(server, "w", "r") as (proxy, writer, reader):
        await writer.create_channel("ch")
        proxy.hold_replies()
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def make_request() -> None:
                if request_kind == "channels":
                    got.append([c.name for c in await reader.channels() if c.name == "ch"])
                    return
                async with reader.subscribe("ch", policy="unbounded") as sub:
                    async with writer.publisher("ch") as pub:
                        await pub.wait_for_readers()
                        await pub.send("after the cut")
                    got.append((await sub.receive()).data)

            nursery.start_soon(make_request)
            await trio.sleep(0.2)  # on its way: its answer held back
            proxy.reset()  # ... and lost with the connection
            proxy.release()
            with trio.fail_after(WAIT_S):
                while not got:  # noqa: ASYNC110
                    await trio.sleep(0.02)
        assert got == [["ch"]] if request_kind == "channels" else ["after the cut"], got


@pytest.mark.parametrize("kind", ["subscription", "publisher"])
async def test_an_opened_object_left_on_a_cancel_does_not_wait_for_a_frozen_server(
    server: ts.Server, kind: str
) -> None:
    # `async with` on what open_subscription()/open_publisher() return waited up to a second
    # for the server's answer when left on a cancel (client.subscribe()'s did not; the
    # README says neither does: a cancellation audit).
    async with direct_and_proxied(server, "w", "r") as (proxy, writer, reader):
        await writer.create_channel("ch")
        opened: ts.Subscription | ts.Publisher = (
            await reader.open_subscription("ch")
            if kind == "subscription"
            else await reader.open_publisher("ch")
        )
        proxy.stall()  # the server answers nothing more, the connection stays up
        start = trio.current_time()
        with trio.move_on_after(0.3):
            async with opened:
                await trio.sleep(10)
        assert trio.current_time() - start < 0.8


async def test_a_request_in_a_scope_cancelled_already_is_not_sent(server: ts.Server) -> None:
    # Trio's rule: an operation cancelled at its first checkpoint did nothing. A
    # create_channel in a cancelled scope raised Cancelled and made the channel all the same,
    # and a delete_channel deleted it (a trio developer's audit).
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="app") as client:
        await client.create_channel("kept")
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.create_channel("made")
        with trio.move_on_after(0):
            await client.delete_channel("kept")
        assert scope.cancelled_caught
        assert [c.name for c in await client.channels() if not c.name.startswith("$")] == ["kept"]
