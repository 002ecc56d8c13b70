"""sub.retune(...): a live subscription changed on the server, with no gap and no duplicate.

Unit tests drive the outbox with fakes (server_parts) and the injected clock; the rest go
through a real server over TCP and WebSocket, and the SyncClient.
"""

from __future__ import annotations

import pytest
import trio
from engine_marks import BOTH_ENGINES
from proxy import open_proxy
from server_parts import World, decode, payload

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox
from trio_stream.sync import SyncClient

pytestmark = BOTH_ENGINES


STEP_S = 10.0


def data(box: Outbox, sub_id: int | None = None) -> list[tuple[int, int]]:
    """(lost, seq) of every DATA frame the outbox writes until it has none, credit returned."""
    out: list[tuple[int, int]] = []
    while True:
        batch = box.next_batch()
        if not batch.pieces:
            return out
        sent = decode(batch).data
        out += [(lost, seq) for _, lost, seq, _ in sent]
        for sub, *_ in sent:
            box.credit(sub, 1)


def test_shrinking_drop_oldest_keeps_the_newest_and_counts_the_rest_lost() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, size=10, window=10)
    box.credit(reader.sub_id, 0)
    reader.credit = 0  # the client has taken nothing yet: all stays buffered
    for i in range(8):
        world.broker.publish(writer, 1.0, payload(i))
    reader.retune(Policy.DROP_OLDEST, 3, 1, None, 3, None)
    assert reader.lost == 5 and channel.lost == 5 and reader.window == 3
    assert box.buffered_bytes == sum(f.nbytes for f in reader.buffer.items())
    reader.add_credit(10)
    assert data(box) == [(5, 6), (0, 7), (0, 8)]


def test_shrinking_drop_newest_keeps_the_oldest() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.DROP_NEWEST, 10, window=10)
    reader.credit = 0
    for i in range(8):
        world.broker.publish(writer, 1.0, payload(i))
    reader.retune(Policy.DROP_NEWEST, 3, 1, None, 3, None)
    world.broker.publish(writer, 1.0, payload(9))  # full: skipped too
    reader.add_credit(10)
    sent = decode(box.next_batch())
    assert [(lost, seq) for _, lost, seq, _ in sent.data] == [(0, 1), (0, 2), (0, 3)]
    # Nothing buffered carries the loss: a notice right after the last frame says it.
    assert sent.control == [M.Lost(sub=reader.sub_id, lost=6, seq=9)]  # accounted up to 9
    assert reader.lost == 6


def test_leaving_block_admits_the_parked_frames_and_frees_the_writer() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 2, window=2)
    reader.credit = 0
    for i in range(5):
        world.broker.publish(writer, 1.0, payload(i))
    assert writer.parked_frames == 3
    reader.retune(Policy.DROP_OLDEST, 2, 1, None, 2, None)
    assert writer.parked_frames == 0 and box.block_bytes == 0
    assert decode(writer_box.next_batch()).acks == [(1, 5)]
    reader.add_credit(2)
    assert data(box) == [(3, 4), (0, 5)]  # frames 1-3 lost to the new policy, counted
    assert reader.lost == 3


def test_entering_block_parks_what_no_longer_fits_and_loses_nothing() -> None:
    world = World()
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, size=10, window=10)
    reader.credit = 0
    for i in range(4):
        world.broker.publish(writer, 1.0, payload(i))
    reader.retune(Policy.BLOCK, 2, 1, None, 2, 5.0)
    assert box.block_bytes == box.buffered_bytes > 0 and reader.lost == 0
    world.broker.publish(writer, 1.0, payload(5))  # the buffer is over its new size: parked
    assert writer.parked_frames == 1
    decode(writer_box.next_batch())
    reader.add_credit(10)
    assert [seq for _, seq in data(box)] == [1, 2, 3, 4, 5]
    assert writer.parked_frames == 0 and reader.lost == 0


def test_removing_max_rate_releases_the_held_frame_at_once() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, max_rate=1.0)
    world.broker.publish(writer, 1.0, payload(1))  # due at once
    world.broker.publish(writer, 1.0, payload(2))  # held for 1 s
    assert data(box) == [(0, 1)]
    reader.retune(Policy.DROP_OLDEST, 100, 1, None, 100, None)
    assert data(box) == [(0, 2)]


def test_a_new_max_rate_counts_from_the_last_delivery() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, max_rate=1.0)
    world.broker.publish(writer, 1.0, payload(1))
    world.broker.publish(writer, 1.0, payload(2))  # held until +1 s
    reader.retune(Policy.DROP_OLDEST, 100, 1, 10.0, 100, None)
    assert data(box) == [(0, 1)]
    world.clock.now += 0.1  # the new interval since frame 1
    assert data(box) == [(0, 2)]


def test_a_new_every_counts_afresh_from_the_next_frame() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, every=5)
    world.broker.publish(writer, 1.0, payload(1))  # kept (the first)
    world.broker.publish(writer, 1.0, payload(2))
    reader.retune(Policy.DROP_OLDEST, 100, 2, None, 100, None)
    for i in range(3, 8):
        world.broker.publish(writer, 1.0, payload(i))
    assert [seq for _, seq in data(box)] == [1, 3, 5, 7]


async def read_until(sub: ts.Subscription, last: int) -> list[ts.Message]:
    messages = []
    async for msg in sub:
        messages.append(msg)
        if msg.data == last:
            break
    return messages


@pytest.mark.parametrize("final", ["drop_oldest", "block"])
async def test_a_stream_across_retunes_has_no_duplicate_and_no_uncounted_hole(
    url: str, final: str
) -> None:
    frames = 600
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with (
            r.subscribe("c", policy="drop_oldest", size=50) as sub,
            w.publisher("c") as pub,
        ):
            await pub.wait_for_readers()

            sent = 0
            # The last frame goes out only under the final policy, which keeps it: sent
            # under drop_newest to a full buffer it was dropped, and the read waited for it
            # for good (a slow run of CI).
            retuned = trio.Event()

            async def produce() -> None:
                nonlocal sent
                for i in range(frames):
                    if i == frames - 1:
                        await retuned.wait()
                    await pub.send(i)
                    sent += 1
                    if i % 50 == 0:
                        await trio.sleep(0.001)

            with trio.fail_after(STEP_S * 3):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(produce)
                    got = [await sub.receive() for _ in range(20)]
                    await sub.retune(size=5)  # shrink mid-stream
                    got += [await sub.receive() for _ in range(20)]
                    await sub.retune(policy="drop_newest", size=200)
                    got += [await sub.receive() for _ in range(20)]
                    await sub.retune(policy=final, size=20)
                    sent_before_block = sent  # every frame sent after this reply is kept
                    retuned.set()
                    got += await read_until(sub, frames - 1)
        seqs = [m.seq for m in got]
        assert seqs == sorted(set(seqs)), "a duplicate or a frame out of order"
        previous = 0
        for msg in got:
            assert msg.seq - previous - 1 == msg.lost, f"uncounted hole before {msg.seq}"
            previous = msg.seq
        assert len(got) + sub.lost == frames
        if final == "block":
            # Nothing lost from the switch on. Losses from before it may still be reported
            # after it (on frames the reader had not taken yet, or the next kept frame), so
            # what counts is which frames were lost: the seqs before each message's gap.
            lost_seqs = [m.seq - 1 for m in got if m.lost]
            assert max(lost_seqs, default=0) <= sent_before_block


async def test_retune_max_rate_off_delivers_the_held_frame_now(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", max_rate=0.1) as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            with trio.fail_after(STEP_S):
                await pub.send(1)
                assert (await sub.receive()).data == 1
                await pub.send(2)  # held for 10 s by max_rate
                await pub.wait_acknowledged()
            with trio.fail_after(2.0):  # far less than the 10 s interval
                await sub.retune(max_rate=None)
                assert (await sub.receive()).data == 2


@pytest.mark.parametrize("first", ["drop_oldest", "block-then-drop_oldest", "retuned"])
async def test_a_block_timeout_asked_under_another_policy_holds_after_a_retune_to_block(
    url: str, first: str
) -> None:
    # The subscription's block_timeout waits, under a lossy policy, for a retune to block
    # (docs/protocol.md, subscribe). It was dropped: with no server default, the reader
    # then held its writers back for good.
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        if first == "retuned":
            opened = r.subscribe("c", policy="drop_oldest", size=1, window=1)
        elif first == "drop_oldest":
            opened = r.subscribe("c", policy="drop_oldest", size=1, window=1, block_timeout=0.5)
        else:
            opened = r.subscribe("c", policy="block", size=1, window=1, block_timeout=0.5)
        async with opened as sub, w.publisher("c") as pub:
            if first == "retuned":
                await sub.retune(block_timeout=0.5)
            elif first == "block-then-drop_oldest":
                await sub.retune(policy="drop_oldest")
            await sub.retune(policy="block")
            await pub.wait_for_readers()
            for i in range(5):
                await pub.send(i)
            await trio.sleep(1.5)  # past the 0.5 s; nothing read meanwhile
            with pytest.raises(ts.LimitExceeded, match=r"0\.5 s"), trio.fail_after(STEP_S):
                async for _ in sub:
                    pass


async def test_retune_errors_say_what_is_wrong(url: str) -> None:
    async with ts.open_client(url, name="r") as r:
        await r.create_channel("c")
        async with r.subscribe("c", policy="unbounded") as sub:
            # An unbounded subscription has no size to keep: said in words, not "got None".
            with pytest.raises(ts.InvalidArgument, match=r"needs a size: 1 or more frames$"):
                await sub.retune(policy="drop_oldest")
            with pytest.raises(ts.InvalidArgument, match="unknown policy"):
                await sub.retune(policy="lossy")
            with pytest.raises(ts.InvalidArgument, match="max_rate"):
                await sub.retune(max_rate=-1.0)
            await sub.retune(policy="drop_oldest", size=3)
        with pytest.raises(ts.InvalidArgument, match="ended"):
            await sub.retune(size=4)


async def test_sync_client_retunes(server: ts.Server) -> None:
    url = server.tcp_url
    assert url is not None

    def scenario() -> None:
        with SyncClient(url, name="w") as w, SyncClient(url, name="r") as r:
            w.create_channel("c")
            with r.subscribe("c", policy="unbounded") as sub:
                sub.retune(every=2)
                for i in range(6):
                    w.publish("c", i)
                assert [sub.get(timeout=STEP_S).data for _ in range(3)] == [0, 2, 4]

    with trio.fail_after(30):
        await trio.to_thread.run_sync(scenario)


async def test_a_retune_asked_while_reconnecting_changes_that_subscription(
    server: ts.Server,
) -> None:
    # The request took the subscription's id before it waited for the connection: the id on
    # the lost connection, another subscription's (or none) on the new one (a cancellation
    # audit: the other was retuned, and a block reader stalled for good).
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:
        policy = ts.Reconnect(initial=0.05, maximum=0.2)
        async with (
            ts.open_client(server.tcp_url, name="w") as w,
            ts.open_client(proxy.url, name="r", reconnect=policy) as r,
        ):
            for name in ("a", "b"):
                await w.create_channel(name)
            async with (
                r.subscribe("a", policy="block", size=5) as mine,
                r.subscribe("b", policy="drop_oldest", size=3),
            ):
                proxy.refuse()
                proxy.reset()
                with trio.fail_after(STEP_S):
                    await r.wait_state("reconnecting")
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(lambda: mine.retune(size=40))
                        await trio.sleep(0.3)  # the retune waits for the connection
                        proxy.accept()
                (me,) = [c for c in await w.clients() if c.name == "r"]
                sizes = {s.channel: (s.policy, s.size) for s in me.subscriptions}
                assert sizes == {"a": ("block", 40), "b": ("drop_oldest", 3)}, sizes
