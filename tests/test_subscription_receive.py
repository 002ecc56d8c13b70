"""Subscription.receive and ``async for``: what taking a message promises, over a real server.

The reader's hot path takes a waiting frame without a scheduling round trip; these pin what
that shortcut must keep: a cancelled receive takes nothing, a busy reader still lets other
tasks run every YIELD_EVERY_MESSAGES messages, and every message arrives whole and in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio

import trio_stream as ts
from trio_stream._subscription import YIELD_EVERY_MESSAGES

WAIT_S = 10.0


async def subscription_with_waiting_frames(
    client: ts.Client, writer: ts.Client, values: list[Any]
) -> ts.Subscription:
    """A subscription whose frames for ``values`` have all reached the client, none taken."""
    await writer.create_channel("c")
    sub = await client.open_subscription("c", policy="block", size=len(values) + 10)
    async with writer.publisher("c") as pub:
        await pub.wait_for_readers()
        for value in values:
            await pub.send(value)
        await pub.wait_acknowledged()
    with trio.fail_after(WAIT_S):
        while sub.statistics().buffered < len(values):  # noqa: ASYNC110 - frames in flight
            await trio.sleep(0.01)
    return sub


@pytest.mark.parametrize("take", ["receive", "anext"])
async def test_a_cancelled_take_raises_and_leaves_the_message_for_the_next(
    server: ts.Server, take: str
) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client, ts.open_client(server.tcp_url) as w:
        sub = await subscription_with_waiting_frames(client, w, [0, 1, 2])
        with trio.CancelScope() as scope:
            scope.cancel()
            if take == "receive":
                await sub.receive()
            else:
                await sub.__anext__()
        assert scope.cancelled_caught
        assert sub.statistics().buffered == 3  # nothing was taken
        assert sub.position.seq == 0
        got = [(await sub.receive()).data for _ in range(3)]
        assert got == [0, 1, 2]
        assert sub.position.seq == 3
        await sub.aclose()


async def test_a_reader_with_frames_waiting_lets_other_tasks_run(server: ts.Server) -> None:
    assert server.tcp_url
    count = 3 * YIELD_EVERY_MESSAGES
    async with ts.open_client(server.tcp_url) as client, ts.open_client(server.tcp_url) as w:
        sub = await subscription_with_waiting_frames(client, w, list(range(count)))
        ticks = 0
        taken_at_tick: list[int] = []
        taken = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                taken_at_tick.append(taken)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()  # the ticker starts
            async for msg in sub:
                assert msg.data == taken
                assert msg.seq == taken + 1
                taken += 1
                if taken == count:
                    break
            nursery.cancel_scope.cancel()
        # The ticker ran while the reader took messages: the reader yields after every
        # YIELD_EVERY_MESSAGES, and trio runs the two in either order within a round, so two
        # ticks see at most twice that many messages taken between them.
        gaps = [b - a for a, b in itertools.pairwise(taken_at_tick)]
        assert ticks >= count // (2 * YIELD_EVERY_MESSAGES)
        assert max(gaps) <= 2 * YIELD_EVERY_MESSAGES
        stats = sub.statistics()
        assert stats.frames == count
        assert stats.buffered == 0
        await sub.aclose()


async def test_each_message_names_its_writer_when_writers_of_one_name_length_alternate(
    server: ts.Server,
) -> None:
    # The reader compares each frame's sender field with the last one in place: names of the
    # same length, alternating, must never be taken for each other.
    assert server.tcp_url
    url = server.tcp_url
    async with (
        ts.open_client(url, name="reader") as client,
        ts.open_client(url, name="w-a") as a,
        ts.open_client(url, name="w-b") as b,
        ts.open_client(url, name="w-long") as c,
    ):
        await a.create_channel("c")
        sub = await client.open_subscription("c", policy="block", size=100)
        order = ["w-a", "w-b", "w-b", "w-a", "w-long", "w-a", "w-b"]
        writers = {"w-a": a, "w-b": b, "w-long": c}
        for index, name in enumerate(order):
            async with writers[name].publisher("c") as pub:
                await pub.wait_for_readers()
                await pub.send(index)
                await pub.wait_acknowledged()
        with trio.fail_after(WAIT_S):
            got = [await sub.receive() for _ in order]
        assert [(m.data, m.sender) for m in got] == list(enumerate(order))
        await sub.aclose()


def chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised while handling, innermost last."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        current = current.__context__
    return found


async def test_an_error_while_waiting_is_not_chained_to_an_empty_buffer(server: ts.Server) -> None:
    # A timeout, Ctrl-C or a lost connection while receive() waits printed "trio.WouldBlock
    # ... During handling of the above exception, another exception occurred" first.
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="r") as client:
        await client.create_channel("quiet")
        async with client.subscribe("quiet") as one, client.subscribe("quiet") as two:
            with pytest.raises(trio.TooSlowError) as waited, trio.fail_after(0.05):
                await one.receive()
            assert not any(isinstance(e, trio.WouldBlock) for e in chain(waited.value))
            merged = ts.merge(one, two)  # one's cancelled receive() left nothing behind
            with pytest.raises(trio.TooSlowError) as waited_merged, trio.fail_after(0.05):
                await merged.receive()
            assert not any(isinstance(e, trio.WouldBlock) for e in chain(waited_merged.value))


async def test_a_cancelled_receive_leaves_another_receiver_waiting(server: ts.Server) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="r") as client:
        await client.create_channel("c")
        async with client.subscribe("c", policy="block", size=10) as sub:
            got: list[Any] = []

            async def patient() -> None:
                got.append((await sub.receive()).data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(patient)
                await trio.sleep(0.01)  # it waits
                with trio.move_on_after(0.05):
                    await sub.receive()  # a second receiver, cancelled
                await client.publish("c", 1)
                with trio.fail_after(WAIT_S):
                    await wait_until(lambda: bool(got))
            assert got == [1]


async def wait_until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await trio.sleep(0.01)


@pytest.mark.parametrize("close", ["aclose", "close_nowait"])
async def test_a_closed_subscription_drops_the_frames_it_had_not_handed_out(
    server: ts.Server, close: str
) -> None:
    # "Unsubscribe (messages not taken yet are dropped)": a receive after the close handed
    # out every frame that had reached the client, then said "unsubscribed".
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client, ts.open_client(server.tcp_url) as w:
        sub = await subscription_with_waiting_frames(client, w, list(range(20)))
        assert (await sub.receive()).data == 0
        if close == "aclose":
            await sub.aclose()
        else:
            sub.close_nowait()
        with pytest.raises(trio.EndOfChannel, match="unsubscribed"):
            sub.receive_nowait()
        assert [msg async for msg in sub] == []


async def test_closed_says_whether_its_user_closed_it_and_end_reason_why_it_ended(
    server: ts.Server,
) -> None:
    # The README's "sub.closed only says whether you closed it" held for the SyncSubscription
    # only: the trio one had no `closed` at all (AttributeError).
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client:
        await client.create_channel("gone")
        await client.create_channel("kept")
        async with client.subscribe("gone") as gone, client.subscribe("kept") as kept:
            assert not gone.closed and gone.end_reason is None
            await client.delete_channel("gone")
            with pytest.raises(ts.SubscriptionEnded, match="was deleted"):
                await gone.receive()
            assert not gone.closed  # ended by the channel, not closed by its user
            assert gone.end_reason == "channel 'gone' was deleted"
        assert gone.closed and kept.closed
        assert kept.end_reason == "unsubscribed"
        with_client = await client.open_subscription("kept")
        assert not with_client.closed
    assert with_client.closed  # with its client


async def test_a_plain_for_over_a_trio_subscription_says_to_write_async_for(url: str) -> None:
    # Python's own "'Subscription' object is not iterable" named no fix (a first hour).
    async with ts.open_client(url, name="w") as client:
        await client.create_channel("c")
        async with client.subscribe("c") as sub:
            with pytest.raises(TypeError, match=r'"async for msg in sub:"'):
                for _ in sub:  # type: ignore[attr-defined]  # (the mistake itself)
                    pass


async def newest_after_a_pause(
    pub: ts.Publisher, take: Callable[[], Any], first: int
) -> tuple[int, int]:
    """Publish ``first`` .. ``first + 4`` once the reader's credit had all the time it needs
    to reach the server, and take one message: its value and its ``lost``."""
    await trio.sleep(0.2)  # credit returned as the last message was taken would be there now
    for value in range(first, first + 5):
        await pub.send(value)
    await pub.wait_acknowledged()  # in the reader's buffer on the server
    message = await take()
    return message.data, message.lost


@pytest.mark.parametrize("take", ["receive", "anext", "merge"])
async def test_a_reader_without_prefetch_gets_the_newest_frame_when_it_asks(
    server: ts.Server, take: str
) -> None:
    # A slow viewer of drop_oldest size=1 got the frame that came while it worked (one
    # processing period old: 6 frames behind at 30 Hz and 200 ms), not the newest (a user
    # coming from Redis and socketio). Without prefetch the next frame is asked for when the
    # application asks, so the server's buffer has kept only the newest by then.
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client, ts.open_client(server.tcp_url) as w:
        await w.create_channel("camera")
        sub = await client.open_subscription("camera", policy="drop_oldest", size=1, prefetch=False)
        async with w.publisher("camera") as pub:
            await pub.wait_for_readers()
            taker: Any = {
                "receive": sub.receive,
                "anext": sub.__anext__,
                "merge": ts.merge(sub).receive,
            }[take]
            with trio.fail_after(WAIT_S):
                await pub.send(0)
                assert (await taker()).data == 0
                assert await newest_after_a_pause(pub, taker, 1) == (5, 4)
                assert await newest_after_a_pause(pub, taker, 6) == (10, 4)
        assert sub.lost == 8
        await sub.aclose()


async def test_a_sync_reader_without_prefetch_gets_the_newest_frame_when_it_asks(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    url = server.tcp_url
    async with ts.open_client(url) as w:
        await w.create_channel("camera")
        async with w.publisher("camera") as pub:

            def read() -> list[tuple[int, int]]:  # a script's thread
                with ts.SyncClient(url) as client:
                    sub = client.subscribe("camera", policy="drop_oldest", size=1, prefetch=False)
                    trio.from_thread.run(pub.wait_for_readers)
                    trio.from_thread.run(pub.send, 0)
                    got = [(sub.get(WAIT_S).data, 0)]
                    for first in (1, 6):
                        got.append(
                            trio.from_thread.run(
                                newest_after_a_pause,
                                pub,
                                partial(trio.to_thread.run_sync, sub.get, WAIT_S),
                                first,
                            )
                        )
                    sub.close()
                    return got

            with trio.fail_after(WAIT_S):
                assert await trio.to_thread.run_sync(read) == [(0, 0), (5, 4), (10, 4)]


async def test_prefetch_must_be_a_bool(server: ts.Server) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client:
        with pytest.raises(ts.InvalidArgument, match="prefetch must be True or False, not 0"):
            await client.open_subscription("$stats", prefetch=0)  # type: ignore[arg-type]


async def test_a_sync_reader_without_prefetch_asks_for_more_only_when_its_batch_is_used_up(
    server: ts.Server,
) -> None:
    # The SyncClient takes a window's frames into the script's thread at once; the last
    # receive of that batch, finding nothing more, returned the credit: the server sent the
    # frames that came while the script worked through the batch (a review).
    assert server.tcp_url
    url = server.tcp_url
    async with ts.open_client(url) as w:
        await w.create_channel("camera")
        async with w.publisher("camera") as pub:

            def read() -> list[tuple[int, int]]:  # a script's thread
                with ts.SyncClient(url) as client:
                    sub = client.subscribe(
                        "camera", policy="drop_oldest", size=4, window=4, prefetch=False
                    )
                    trio.from_thread.run(pub.wait_for_readers)
                    for value in range(2):
                        trio.from_thread.run(pub.send, value)
                        trio.from_thread.run(pub.wait_acknowledged)
                    trio.from_thread.run(trio.sleep, 0.2)  # both are here
                    got = [(sub.get(WAIT_S).data, 0)]  # a batch of the two, the window 4
                    trio.from_thread.run(newest_after_a_pause, pub, _no_take, 2)
                    trio.from_thread.run(newest_after_a_pause, pub, _no_take, 7)
                    got += [(m.data, m.lost) for m in (sub.get(WAIT_S) for _ in range(4))]
                    sub.close()
                    return got

            with trio.fail_after(WAIT_S):
                got = await trio.to_thread.run_sync(read)
    # 1 from the batch, 2 and 3 on the window's credit left, then the newest four the
    # server held when the script asked (with the credit the batch's end returned: 2-5).
    assert got == [(0, 0), (1, 0), (2, 0), (3, 0), (8, 4)]


async def _no_take() -> Any:
    return _Untaken


class _Untaken:  # newest_after_a_pause's message when the test takes none there
    data = lost = -1


async def test_several_tasks_share_a_subscription_and_a_publisher_as_the_readme_says(
    server: ts.Server,
) -> None:
    # README, "Several tasks": each message to one reader task, each task's in order; each
    # sender's values in its order; a cancelled receive loses none (one reader's receives
    # are cut by a short deadline over and over).
    assert server.tcp_url
    per_sender = 400
    async with ts.open_client(server.tcp_url, name="w") as client:
        await client.create_channel("c")
        async with (
            client.subscribe("c", policy="block", size=50) as sub,
            client.publisher("c") as pub,
        ):
            got: dict[str, list[tuple[int, tuple[int, int]]]] = {"calm": [], "cut": []}

            async def read(who: str) -> None:
                while True:
                    if who == "cut":
                        with trio.move_on_after(0.0005):
                            msg = await sub.receive()
                            got[who].append((msg.seq, tuple(msg.data)))
                        await trio.lowlevel.checkpoint()
                    else:
                        msg = await sub.receive()
                        got[who].append((msg.seq, tuple(msg.data)))

            async def send(sender: int) -> None:
                for i in range(per_sender):
                    assert await pub.send([sender, i])

            with trio.fail_after(WAIT_S):
                async with trio.open_nursery() as readers:
                    readers.start_soon(read, "calm")
                    readers.start_soon(read, "cut")
                    async with trio.open_nursery() as senders:
                        senders.start_soon(send, 0)
                        senders.start_soon(send, 1)
                    await wait_until(lambda: sum(map(len, got.values())) >= 2 * per_sender)
                    readers.cancel_scope.cancel()
    for taken in got.values():
        seqs = [seq for seq, _ in taken]
        assert seqs == sorted(seqs)
    assert got["calm"] and got["cut"]
    every = sorted(got["calm"] + got["cut"])
    assert [seq for seq, _ in every] == list(range(1, 2 * per_sender + 1))  # none lost, none twice
    for sender in (0, 1):
        assert [i for _, (s, i) in every if s == sender] == list(range(per_sender))
    assert sub.lost == 0
