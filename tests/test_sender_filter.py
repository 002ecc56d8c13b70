"""subscribe(sender=...): the server passes one writer's frames only, filtered before buffering.

Unit tests drive the broker and outboxes with fakes (server_parts); the rest go through a real
server over TCP and WebSocket, and the SyncClient.
"""

from __future__ import annotations

import pytest
import trio
from engine_marks import BOTH_ENGINES
from server_parts import World, decode, payload

import trio_stream as ts
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox
from trio_stream.sync import SyncClient

pytestmark = BOTH_ENGINES


STEP_S = 10.0
POLICIES = ["drop_oldest", "drop_newest", "clear", "unbounded", "block"]


def data(box: Outbox) -> list[tuple[int, int, int, bytes]]:
    """(sub, lost, seq, payload) of every DATA frame the outbox writes until it has none."""
    out: list[tuple[int, int, int, bytes]] = []
    while True:
        batch = box.next_batch()
        if not batch.pieces:
            return out
        out += decode(batch).data


def test_a_filtered_reader_gets_its_senders_frames_and_loses_nothing_else() -> None:
    world = World()
    channel = world.channel()
    _, seven = world.writer(channel, "sensor-7")
    _, eight = world.writer(channel, "sensor-8")
    _, box = world.connection()
    only7 = world.reader(box, channel, sender="sensor-7")
    everyone = world.reader(box, channel)
    for i in range(6):
        world.broker.publish(seven if i % 2 else eight, 1.0, payload(i))
    sent = data(box)
    assert [(lost, seq) for sub, lost, seq, _ in sent if sub == only7.sub_id] == [
        (0, 2),
        (0, 4),
        (0, 6),
    ]
    assert [seq for sub, _, seq, _ in sent if sub == everyone.sub_id] == [1, 2, 3, 4, 5, 6]
    assert only7.lost == 0 and channel.lost == 0
    # The unfiltered reader stays in the plain fan-out loop; the filtered one does not.
    assert list(channel.fanout) == [everyone] and channel.selective


def test_every_n_counts_the_senders_frames_only() -> None:
    world = World()
    channel = world.channel()
    _, seven = world.writer(channel, "sensor-7")
    _, eight = world.writer(channel, "sensor-8")
    _, box = world.connection()
    world.reader(box, channel, sender="sensor-7", every=2)
    for i in range(8):  # sensor-7 writes seqs 1, 3, 5, 7
        world.broker.publish(seven if i % 2 == 0 else eight, 1.0, payload(i))
    assert [seq for _, _, seq, _ in data(box)] == [1, 5]


def test_a_full_filtered_block_reader_holds_back_only_its_sender() -> None:
    world = World()
    channel = world.channel()
    seven_box, seven = world.writer(channel, "sensor-7")
    eight_box, eight = world.writer(channel, "sensor-8")
    _, box = world.connection()
    world.reader(box, channel, Policy.BLOCK, 1, window=1, sender="sensor-7")
    world.broker.publish(seven, 1.0, payload(1))  # buffered
    world.broker.publish(seven, 1.0, payload(2))  # parked
    for i in range(5):
        world.broker.publish(eight, 1.0, payload(i))  # never offered: acknowledged at once
    assert seven.parked_frames == 1 and eight.parked_frames == 0
    assert decode(eight_box.next_batch()).acks == [(1, 5)]
    assert decode(seven_box.next_batch()).acks == [(1, 1)]
    assert [seq for _, _, seq, _ in data(box)] == [1]
    assert seven.parked_frames == 0  # taken into the buffer once frame 1 went out


def test_history_replays_only_the_senders_frames_uncounted_as_lost() -> None:
    world = World()
    channel = world.channel(history=10)
    _, seven = world.writer(channel, "sensor-7")
    _, eight = world.writer(channel, "sensor-8")
    for i in range(6):
        world.broker.publish(seven if i < 2 else eight, 1.0, payload(i))
    _, box = world.connection()
    reader = world.reader(box, channel, sender="sensor-7")
    assert [(lost, seq) for _, lost, seq, _ in data(box)] == [(0, 1), (0, 2)]
    assert reader.lost == 0


def test_leaving_removes_the_reader_from_its_group() -> None:
    world = World()
    channel = world.channel()
    _, seven = world.writer(channel, "sensor-7")
    _, box = world.connection()
    reader = world.reader(box, channel, sender="sensor-7")
    world.broker.unsubscribe(reader)
    assert channel.selective is None and channel.readers == 0
    world.broker.publish(seven, 1.0, payload(1))
    assert data(box) == []


@pytest.mark.parametrize("policy", POLICIES)
async def test_sender_filter_over_the_wire_with_every_policy(url: str, policy: str) -> None:
    async with (
        ts.open_client(url, name="sensor-7") as seven,
        ts.open_client(url, name="sensor-8") as eight,
        ts.open_client(url, name="reader") as reader,
    ):
        await seven.create_channel("temps")
        async with (
            reader.subscribe("temps", sender="sensor-7", policy=policy, size=100) as sub,
            seven.publisher("temps") as pub7,
            eight.publisher("temps") as pub8,
        ):
            with trio.fail_after(STEP_S):
                await pub7.wait_for_readers()
                await pub8.wait_for_readers()
                for i in range(20):
                    await (pub7 if i % 2 else pub8).send(i)
                await pub7.send("end")
                got = []
                async for msg in sub:
                    assert msg.sender == "sensor-7" and msg.lost == 0
                    if msg.data == "end":
                        break
                    got.append(msg.data)
        assert got == list(range(1, 20, 2))
        assert sub.lost == 0


async def test_history_for_a_filtered_reader_over_the_wire(url: str) -> None:
    async with (
        ts.open_client(url, name="sensor-7") as seven,
        ts.open_client(url, name="sensor-8") as eight,
        ts.open_client(url, name="reader") as reader,
    ):
        await seven.create_channel("temps", history=10)
        with trio.fail_after(STEP_S):
            # A reader, so that the writers' sends go out at all.
            async with (
                reader.subscribe("temps", policy="unbounded"),
                seven.publisher("temps") as pub7,
                eight.publisher("temps") as pub8,
            ):
                await pub7.wait_for_readers()
                await pub8.wait_for_readers()
                for i in range(4):
                    await (pub7 if i % 2 else pub8).send(i)
                await pub7.send("last")
                await pub7.wait_acknowledged()
                await pub8.wait_acknowledged()
            async with reader.subscribe("temps", sender="sensor-7") as sub:
                got = [(await sub.receive()).data for _ in range(3)]
        assert got == [1, 3, "last"] and sub.lost == 0


async def test_a_sender_filter_must_name_someone(url: str) -> None:
    async with ts.open_client(url, name="reader") as reader:
        await reader.create_channel("temps")
        with pytest.raises(ts.InvalidArgument, match="sender"):
            await reader.open_subscription("temps", sender="")


async def test_sync_client_passes_the_sender_filter(server: ts.Server) -> None:
    url = server.tcp_url
    assert url is not None

    def scenario() -> None:
        with (
            SyncClient(url, name="sensor-7") as seven,
            SyncClient(url, name="sensor-8") as eight,
            SyncClient(url, name="reader") as reader,
        ):
            seven.create_channel("temps")
            with reader.subscribe("temps", sender="sensor-8", policy="unbounded") as sub:
                for i in range(6):
                    (seven if i % 2 else eight).publish("temps", i)
                got = [sub.get(timeout=STEP_S).data for _ in range(3)]
                assert got == [0, 2, 4]
                with pytest.raises(TimeoutError):
                    sub.get(timeout=0.2)

    with trio.fail_after(30):
        await trio.to_thread.run_sync(scenario)
