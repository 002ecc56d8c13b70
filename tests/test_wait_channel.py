"""subscribe(wait_channel=True): a reader started before its writer waits for the channel
(trio client, SyncClient, CLI through the library), on one node and through Redis."""

from __future__ import annotations

import pytest
import trio
from engine_marks import BOTH_ENGINES

import trio_stream as ts
from trio_stream.sync import SyncClient

pytestmark = BOTH_ENGINES

WAIT_S = 10.0


async def test_a_reader_started_before_its_channel_gets_its_frames(url: str) -> None:
    async with ts.open_client(url, name="rec") as reader, ts.open_client(url, name="daq") as daq:
        got: list[object] = []

        async def read_one() -> None:
            async with reader.subscribe("AI1", policy="block", size=10, wait_channel=True) as sub:
                got.append((await sub.receive()).data)

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_one)
                await trio.sleep(0.2)  # the reader waits: no channel yet
                assert not got
                await daq.create_channel("AI1")
                async with daq.publisher("AI1") as pub:
                    await pub.wait_for_readers()
                    await pub.send(42)
        assert got == [42]


async def test_a_private_channel_is_found_by_looking_again(url: str) -> None:
    # Private channels are not announced in $channels: found by the periodic look.
    async with ts.open_client(url, name="rec") as reader, ts.open_client(url, name="daq") as daq:
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:

                async def create_later() -> None:
                    await trio.sleep(0.2)
                    await daq.create_channel("secret", public=False, key="k3y")

                nursery.start_soon(create_later)
                sub = await reader.open_subscription("secret", key="k3y", wait_channel=True)
        assert sub.channel == "secret"
        await sub.aclose()


async def test_without_wait_channel_a_missing_channel_is_an_error(url: str) -> None:
    async with ts.open_client(url, name="rec") as reader:
        with pytest.raises(ts.ChannelNotFound, match="create it with create_channel"):
            await reader.open_subscription("AI9")


async def test_the_sync_client_waits_for_a_channel_too(url: str) -> None:
    def reader() -> object:
        with SyncClient(url, name="rec") as c, c.subscribe("AI1", wait_channel=True) as sub:
            return sub.get(timeout=WAIT_S).data

    async with ts.open_client(url, name="daq") as daq:
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                got: list[object] = []

                async def run_reader() -> None:
                    got.append(await trio.to_thread.run_sync(reader, abandon_on_cancel=True))

                nursery.start_soon(run_reader)
                await trio.sleep(0.2)
                await daq.create_channel("AI1")
                async with daq.publisher("AI1") as pub:
                    await pub.wait_for_readers()
                    await pub.send("first")
        assert got == ["first"]


async def test_a_long_wait_says_so_once_naming_channels_of_a_close_name(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A misspelt name ("Camera" for "camera") waited silently for good (first-hour audit).
    monkeypatch.setattr(ts._client, "WAIT_CHANNEL_WARN_S", 0.3)
    async with ts.open_client(url, name="rec") as reader, ts.open_client(url, name="daq") as daq:
        await daq.create_channel("camera")
        await daq.create_channel("lab/cameras")
        with trio.move_on_after(2.0), caplog.at_level("WARNING", logger="trio_stream._client"):
            await reader.open_subscription("Camera", wait_channel=True)
    said = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
    assert len(said) == 1, said
    assert "still waiting for channel 'Camera' to be created (nobody has" in said[0]
    assert "did you mean 'camera'" in said[0]


async def test_the_names_offered_for_a_missing_channel_are_never_its_own(url: str) -> None:
    # A race's ChannelNotFound ("ended meanwhile: subscribe again") went on "did you mean
    # 'demo/counter'?", the very name, once it was listed (a review).
    async with ts.open_client(url, name="w") as w:
        await w.create_channel("demo/counter")
        await w.create_channel("demo/Counter")
        assert await w._channels_like("demo/counter") == "'demo/Counter'"
        assert await w._channels_like("demo/countr") == "'demo/counter' or 'demo/Counter'"
        # Not a name alike only by a shared prefix, beside a close one (a first hour).
        await w.create_channel("demo/sine")
        assert await w._channels_like("demo/countr") == "'demo/counter' or 'demo/Counter'"
        assert await w._channels_like("demo/sin") == "'demo/sine'"


async def test_a_missing_name_that_looks_like_a_pattern_says_names_are_exact(url: str) -> None:
    # Coming from Redis's PSUBSCRIBE or NATS's wildcards, 'sensors.*' got "did you mean
    # 'sensors.temp'?" and nothing about patterns (a team migrating from them).
    async with ts.open_client(url, name="w") as w:
        await w.create_channel("sensors.temp")
        for pattern in ("sensors.*", "sensors.>"):
            with pytest.raises(ts.ChannelNotFound) as info:
                await w.open_subscription(pattern)
            assert "channel names are exact, not patterns" in str(info.value)
            assert "'$channels'" in str(info.value)
        with pytest.raises(ts.ChannelNotFound) as plain:
            await w.open_subscription("sensors.tmp")
        assert "patterns" not in str(plain.value)
        assert "did you mean 'sensors.temp'" in str(plain.value)
