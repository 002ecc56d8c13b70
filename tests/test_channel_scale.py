"""Channel creation and housekeeping cost what one channel costs, not what all of them do.

An operator's server (12 clients creating 1,000 channels each) took 3 s for the first
1,000 creates and 33 s for the twelfth: each create counted the client's channels by walking
every channel (the quota), and woke housekeeping, which walked every channel again for
lifetimes. These tests count the walks over the registry instead of timing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from server_parts import FakeOwner, World, payload

import trio_stream as ts
from trio_stream._server.broker import Broker, Channel


class CountingChannels(dict[str, Channel]):
    """The broker's registry, counting every walk over it (not the look-ups by name)."""

    walks = 0

    def __iter__(self) -> Iterator[str]:
        self.walks += 1
        return super().__iter__()

    def keys(self) -> Any:
        self.walks += 1
        return super().keys()

    def values(self) -> Any:
        self.walks += 1
        return super().values()

    def items(self) -> Any:
        self.walks += 1
        return super().items()


def counting(broker: Broker) -> CountingChannels:
    broker.channels = registry = CountingChannels(broker.channels)
    return registry


def test_a_create_and_the_quota_count_walk_no_channels() -> None:
    world = World()
    owners = [FakeOwner(i) for i in range(1, 11)]
    for i in range(2_000):
        world.broker.create_channel(f"c{i}", owners[i % 10])
    registry = counting(world.broker)
    for i in range(100):
        owner = owners[i % 10]
        assert world.broker.owned_count(owner.client_id) == 200 + i // 10
        world.broker.create_channel(f"more{i}", owner)
    assert registry.walks == 0
    assert world.broker.owned_count(owners[0].client_id) == 210
    assert world.broker.owned_count(999) == 0


def test_the_owned_count_follows_deletes_and_owner_changes() -> None:
    world = World()
    a, b = FakeOwner(1), FakeOwner(2)
    mine = [world.broker.create_channel(f"a{i}", a) for i in range(3)]
    world.broker.create_channel("b0", b)
    world.broker.delete_channel(mine[0], "deleted")
    world.broker.delete_channel(mine[0], "deleted")  # twice: counted once
    assert (world.broker.owned_count(1), world.broker.owned_count(2)) == (2, 1)
    # A resumed client's new connection takes its channels over (resume.py), and a node
    # lets go of one taken over elsewhere (the Redis engine): both set owner_id.
    mine[1].owner_id = 2
    assert (world.broker.owned_count(1), world.broker.owned_count(2)) == (1, 2)
    mine[2].owner_id = None
    assert (world.broker.owned_count(1), world.broker.owned_count(2)) == (0, 2)
    # owned_by: the registry's order, whatever order the owner got them in.
    assert [c.name for c in world.broker.owned_by(2)] == ["a1", "b0"]
    assert list(world.broker.owned_by(1)) == []
    # A deleted channel's owner_id changes no count.
    world.broker.delete_channel(mine[1], "deleted")
    mine[1].owner_id = 1
    assert (world.broker.owned_count(1), world.broker.owned_count(2)) == (0, 1)


def test_owned_by_is_a_snapshot_its_caller_may_delete_from() -> None:
    world = World()
    owner = FakeOwner(1)
    for i in range(5):
        world.broker.create_channel(f"c{i}", owner)
    for channel in world.broker.owned_by(1):  # as a closing session ends its channels
        world.broker.delete_channel(channel, "its owner left")
    assert world.broker.channels == {} and world.broker.owned_count(1) == 0


def test_expiry_visits_only_the_channels_due() -> None:
    world = World()
    owner = FakeOwner(1)
    for i in range(1_000):
        world.broker.create_channel(f"idle{i}", owner)
    late = world.broker.create_channel("late", owner, lifetime=20.0)
    soon = world.broker.create_channel("soon", owner, lifetime=5.0)
    registry = counting(world.broker)
    assert world.broker.expire(world.clock.now) == soon.expires_at
    world.clock.now += 5.0
    assert world.broker.expire(world.clock.now) == late.expires_at
    assert soon.end_reason == "temporary channel 'soon' reached its lifetime"
    assert "soon" not in world.broker.channels and "late" in world.broker.channels
    assert registry.walks == 0


def test_a_changed_or_dropped_deadline_is_the_one_that_counts() -> None:
    # The Redis engine moves a taken-over channel's deadline, or drops it (a mirror).
    world = World()
    owner = FakeOwner(1)
    moved = world.broker.create_channel("moved", owner, lifetime=10.0)
    dropped = world.broker.create_channel("dropped", owner, lifetime=10.0)
    deleted = world.broker.create_channel("deleted", owner, lifetime=1.0)
    start = world.clock.now
    moved.expires_at = start + 30.0
    dropped.expires_at = None
    world.broker.delete_channel(deleted, "deleted")
    assert world.broker.expire(start + 15.0) == start + 30.0
    assert {"moved", "dropped"} <= world.broker.channels.keys()
    assert world.broker.expire(start + 30.0) == float("inf")
    assert "moved" not in world.broker.channels and "dropped" in world.broker.channels
    # Set again to the same deadline (twice in the heap): it ends once.
    again = world.broker.create_channel("again", owner, lifetime=1.0)
    deadline = again.expires_at
    assert deadline is not None
    again.expires_at = deadline + 1.0
    again.expires_at = deadline
    assert world.broker.expire(deadline + 5.0) == float("inf")
    assert "again" not in world.broker.channels


def test_deadlines_of_channels_deleted_early_do_not_pile_up() -> None:
    world = World()
    owner = FakeOwner(1)
    for i in range(10_000):  # temporary channels of a day, each deleted after use
        channel = world.broker.create_channel(f"t{i}", owner, lifetime=86_400.0)
        world.broker.delete_channel(channel, "deleted")
    assert len(world.broker._deadlines) <= 2 * len(world.broker.channels) + 65


def test_an_idle_channel_is_left_alone_and_its_next_rate_counts_one_interval() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    world.clock.now += 1.0
    world.broker.update_rates()
    mark = channel._rate_mark
    for _ in range(3):  # idle: nothing to update
        world.clock.now += 1.0
        world.broker.update_rates()
        assert channel._rate_mark is mark and channel.rate_fps == 0.0
    for i in range(10):
        world.broker.publish(writer, 1.0, payload(i))
    world.clock.now += 1.0
    world.broker.update_rates()
    assert channel.rate_fps == pytest.approx(10.0)  # over the last second, not the last 4
    assert channel.rate_bps == pytest.approx(10.0 * len(payload(0)))
    world.clock.now += 1.0
    world.broker.update_rates()  # idle again: back to 0
    assert (channel.rate_fps, channel.rate_bps) == (0.0, 0.0)


def test_the_rates_walk_goes_a_step_at_a_time_to_the_same_rates() -> None:
    # Housekeeping lets other tasks run between steps (100,000 channels took 30-70 ms in
    # one go, each second): stepped or not, each channel gets the same rates.
    worlds = [World(), World()]
    for world in worlds:
        writers = [world.writer(world.channel(f"c{i}"))[1] for i in range(5)]
        world.clock.now += 1.0
        world.broker.update_rates()
        for count, writer in enumerate(writers):
            for i in range(count):
                world.broker.publish(writer, 1.0, payload(i))
        world.clock.now += 1.0
    stepped, whole = worlds
    steps = stepped.broker.rate_steps(step=2)
    assert sum(1 for _ in steps) == 2  # 2 + 2 + 1 channels: a pause between each
    whole.broker.update_rates()
    rates = [[(c.rate_fps, c.rate_bps) for c in w.broker.channels.values()] for w in worlds]
    assert rates[0] == rates[1] and [fps for fps, _ in rates[0]] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_channel_created_or_deleted_during_the_rates_walk_is_no_trouble() -> None:
    world = World()
    writers = [world.writer(world.channel(f"c{i}"))[1] for i in range(4)]
    world.clock.now += 1.0
    steps = world.broker.rate_steps(step=2)
    next(steps)  # the first step done
    world.broker.delete_channel(writers[3].channel, "deleted")
    world.channel("new")  # created meanwhile: for the next walk
    assert list(steps) == []  # the rest of the walk ends without an error


def test_a_channel_whose_seqs_start_again_counts_from_there() -> None:
    # A channel Redis lost starts its seqs again (the rates are never below 0).
    world = World()
    channel = world.channel(seq=1_000)
    world.clock.now += 1.0
    world.broker.update_rates()
    channel.seq = 0
    world.clock.now += 1.0
    world.broker.update_rates()
    assert channel.rate_fps == 0.0
    channel.seq = 5
    world.clock.now += 1.0
    world.broker.update_rates()
    assert channel.rate_fps == pytest.approx(5.0)


async def test_creates_on_a_server_walk_no_channels(nursery: trio.Nursery) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, stats_interval_s=3600)
    server: ts.Server = await nursery.start(ts.serve, config)
    async with ts.open_client(server.tcp_url, name="hog") as client:
        for i in range(300):
            await client.create_channel(f"hog/{i}")
        registry = counting(server.state.broker)
        for i in range(50):
            await client.create_channel(f"more/{i}")
            await client.create_channel(f"short/{i}", lifetime=3600.0)
        await trio.sleep(0.05)  # housekeeping's turn, had it been woken
        # Before: 2 walks per create (the quota's count, housekeeping's wake), 200 here.
        assert registry.walks == 0
    await server.aclose()


async def test_a_lifetime_shorter_than_housekeeping_s_interval_still_ends_on_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, stats_interval_s=3600)
    server: ts.Server = await nursery.start(ts.serve, config)
    async with ts.open_client(server.tcp_url, name="w") as client:
        await client.create_channel("long", lifetime=100.0)
        await trio.sleep(1.0)  # housekeeping sleeps until then
        start = trio.current_time()
        await client.create_channel("short", lifetime=5.0)  # earlier: wakes it
        async with client.subscribe("short") as sub:
            assert [m async for m in sub] == []  # ends with the channel
        assert 5.0 <= trio.current_time() - start < 5.5
        # A deadline moved earlier outside the broker's create (the Redis engine, a
        # take-over) wakes it too, through on_channel_created.
        async with client.subscribe("long") as sub:
            long = server.state.broker.channels["long"]
            start = trio.current_time()
            long.expires_at = start + 2.0
            assert server.state.on_channel_created is not None
            server.state.on_channel_created(long)
            assert [m async for m in sub] == []
        assert 2.0 <= trio.current_time() - start < 2.5
    await server.aclose()
