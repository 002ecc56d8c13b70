"""What a reader gets when its channel ends (Outbox.end, Reader.take_turn): every frame still
buffered for it, the count of what it lost after the last of them, then the end; over a real
server and real sockets."""

from __future__ import annotations

import time
import traceback
from contextlib import AsyncExitStack

import pytest
import trio
from proxy import open_proxy

import trio_stream as ts

WAIT_S = 10.0


async def test_drops_after_the_last_kept_frame_are_counted_before_the_end(url: str) -> None:
    # drop_newest, size 2 (window 2): 2 frames go, 2 wait in the buffer, the newest 6 are
    # dropped and owed to a next kept frame that never comes: the channel is deleted first.
    published = 10
    async with ts.open_client(url, name="w") as writer, ts.open_client(url, name="r") as reader:
        await writer.create_channel("c")
        async with reader.subscribe("c", policy="drop_newest", size=2) as sub:
            async with writer.publisher("c") as pub:
                await pub.wait_for_readers()
                for value in range(published):
                    await pub.send(value)
                await pub.wait_acknowledged()
            await writer.delete_channel("c")
            with trio.fail_after(WAIT_S):
                got = [(msg.data, msg.lost) async for msg in sub]
            assert got == [(0, 0), (1, 0), (2, 0), (3, 0)]
            assert sub.lost == published - len(got)  # the 6 newest, told before the end


async def test_a_max_rate_readers_held_newest_frame_is_delivered_before_the_end(
    url: str,
) -> None:
    # One frame per 100 s: the first goes at once, the newest of the rest is held for its
    # interval, which never comes before the channel ends. A dashboard must still show the
    # channel's last value.
    async with ts.open_client(url, name="w") as writer, ts.open_client(url, name="r") as reader:
        await writer.create_channel("c")
        async with reader.subscribe("c", max_rate=0.01) as sub:
            async with writer.publisher("c") as pub:
                await pub.wait_for_readers()
                for value in range(5):
                    await pub.send(value)
                await pub.wait_acknowledged()
            await writer.delete_channel("c")
            with trio.fail_after(WAIT_S):
                got = [(msg.data, msg.seq) async for msg in sub]
            assert got == [(0, 1), (4, 5)]
            assert sub.lost == 0  # the frames between were decimation, not loss


async def test_a_reader_hears_why_its_channel_ended(url: str) -> None:
    # Every reader heard "the channel ended", whatever the cause; the writer was told it.
    async with ts.open_client(url, name="r") as reader, AsyncExitStack() as stack:
        async with ts.open_client(url, name="w") as writer:
            await writer.create_channel("deleted")
            await writer.create_channel("short", lifetime=0.2)
            await writer.create_channel("owners")
            subs = {
                name: await stack.enter_async_context(reader.subscribe(name))
                for name in ("deleted", "short", "owners")
            }
            await writer.delete_channel("deleted")
            with trio.fail_after(WAIT_S):
                async for _ in subs["short"]:
                    pass
        # leaving the writer's block: it disconnected, and its channel went with it
        with trio.fail_after(WAIT_S):
            for sub in subs.values():
                async for _ in sub:
                    pass
        assert {name: sub.end_reason for name, sub in subs.items()} == {
            "deleted": "channel 'deleted' was deleted",
            "short": "temporary channel 'short' reached its lifetime",
            "owners": "channel 'owners' ended with its owner",
        }
        for sub in subs.values():
            # The end as an error too: what a script catches with the rest of trio_stream's,
            # and still trio's end of a channel (the README said every error was a
            # TrioStreamError; this one was trio.EndOfChannel alone).
            with pytest.raises(ts.TrioStreamError) as ended:
                await sub.receive()
            error: BaseException = ended.value
            assert type(error) is ts.SubscriptionEnded and isinstance(error, trio.EndOfChannel)
            assert str(error) == sub.end_reason
            await sub.aclose()
            assert "unsubscribed" not in (sub.end_reason or "")  # a close after the end keeps it


async def test_a_writer_hears_why_its_channel_ended_once(url: str) -> None:
    # "channel 'm2' is gone: channel 'm2' was deleted" said the name twice.
    async with ts.open_client(url, name="w") as writer, ts.open_client(url, name="r") as reader:
        await writer.create_channel("m2")
        async with writer.publisher("m2") as pub, reader.subscribe("m2"):
            await pub.wait_for_readers()
            await writer.delete_channel("m2")
            with trio.fail_after(WAIT_S):
                while pub.is_open:  # noqa: ASYNC110 - the end is on its way
                    await trio.sleep(0.01)
            with pytest.raises(ts.ChannelNotFound) as ended:
                await pub.send(1)
    assert str(ended.value) == "channel 'm2' was deleted; this publisher has ended"


async def test_a_close_after_an_error_end_reads_as_unsubscribed(server: ts.Server) -> None:
    # The connection lost for good (no reconnect): receive raises ConnectionClosed; once the
    # application closes the subscription, a receive says "unsubscribed" as after any close
    # (it kept raising the connection's error).
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="w") as writer,
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="r", reconnect=False) as reader,
        AsyncExitStack() as stack,
    ):
        await writer.create_channel("c")
        sub = await stack.enter_async_context(reader.subscribe("c"))
        proxy.cut()
        with trio.fail_after(WAIT_S), pytest.raises(ts.ConnectionClosed):
            await sub.receive()
        await sub.aclose()
        with pytest.raises(trio.EndOfChannel, match="unsubscribed"):
            sub.receive_nowait()


@pytest.mark.parametrize("end", ["owner leaves", "deleted"])
async def test_frames_parked_for_a_full_block_reader_reach_it_before_the_end(
    url: str, end: str
) -> None:
    # A block reader of size 4 that has not read yet: the writer's frames past its buffer
    # wait parked at the server (and are acknowledged as the reader takes them). The writer
    # ends the channel, leaving with it or deleting it: the parked frames were published
    # before the end, so the reader gets them all, then the end. They were dropped, and the
    # reader ended with lost == 0 (a lab's recorder lost its run's last frames unknowing).
    published = 40
    async with ts.open_client(url, name="r") as reader, AsyncExitStack() as stack:
        writer = await stack.enter_async_context(ts.open_client(url, name="w"))
        await writer.create_channel("c")
        async with reader.subscribe("c", policy="block", size=4) as sub:
            pub = await stack.enter_async_context(writer.publisher("c"))
            await pub.wait_for_readers()
            for value in range(published):
                with trio.fail_after(WAIT_S):
                    await pub.send(value)  # within the window (1024): never waits
            with trio.move_on_after(0.3):
                await pub.wait_acknowledged()  # some are parked: not all acknowledged
            if end == "deleted":
                await writer.delete_channel("c")
            await stack.aclose()  # the writer leaves
            with trio.fail_after(WAIT_S):
                got = [msg.data async for msg in sub]
            assert got == list(range(published))
            assert sub.lost == 0
            assert sub.end_reason in ("channel 'c' ended with its owner", "channel 'c' was deleted")


async def test_an_ended_subscription_and_publisher_raise_a_new_error_each_time(
    server: ts.Server,
) -> None:
    # Each receive after the end raised the one stored error: its traceback grew by every
    # raise (20,000 receives of a retry loop: 60,000 frames and their locals held), and a
    # reader's and a writer's raises of it printed each other's frames (a trio developer).
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="r", reconnect=False) as client,
        AsyncExitStack() as stack,
    ):
        await client.create_channel("c")
        sub = await stack.enter_async_context(client.subscribe("c"))
        pub = await stack.enter_async_context(client.publisher("c"))
        proxy.cut()
        raised: list[BaseException] = []
        with trio.fail_after(WAIT_S):
            for _ in range(50):
                with pytest.raises(ts.ConnectionClosed) as caught:
                    await sub.receive()
                raised.append(caught.value)
                with pytest.raises(ts.ConnectionClosed) as caught:
                    await pub.send(1)
                raised.append(caught.value)
    assert len({id(error) for error in raised}) == len(raised)
    depths = [len(traceback.extract_tb(error.__traceback__)) for error in raised]
    assert max(depths) <= 12, depths


async def test_a_sync_publisher_of_an_ended_channel_raises_a_new_error_each_time(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url

    def send_after_the_end() -> list[BaseException]:
        raised: list[BaseException] = []
        with ts.SyncClient(url, name="w") as client:
            client.create_channel("gone")
            pub = client.publisher("gone")
            client.delete_channel("gone")
            deadline = time.monotonic() + WAIT_S
            while len(raised) < 50 and time.monotonic() < deadline:
                try:
                    pub.send(1)
                except ts.ChannelNotFound as exc:
                    raised.append(exc)
                else:
                    time.sleep(0.01)  # (the end is on its way)
        return raised

    raised = await trio.to_thread.run_sync(send_after_the_end)
    assert len(raised) == 50
    assert len({id(error) for error in raised}) == len(raised)
    assert max(len(traceback.extract_tb(error.__traceback__)) for error in raised) <= 12
