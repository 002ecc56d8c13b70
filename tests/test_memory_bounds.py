"""Every byte the server holds for a connection is bounded and reported, parked frames included;
a block reader that holds its channel back is shown (held_by) and, with block_timeout, ended."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
import trio
from engine_marks import BOTH_ENGINES, VIRTUAL_TIME, memory_only
from test_cli import wait_for_channel
from test_robustness import control, raw_session, read_messages

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import frame_prefix

pytestmark = BOTH_ENGINES

WAIT_S = 30


def publish_frame(pub_id: int, payload: bytes) -> bytes:
    body = F.publish_head(pub_id, 0.0) + payload
    return frame_prefix(len(body)) + body


@pytest.mark.parametrize(
    ("window", "frames", "nbytes"),
    [("publish_window_frames", 8, 2**24), ("publish_window_bytes", 1024, 64 * 1024)],
)
async def test_a_writer_that_ignores_its_credit_window_is_disconnected_and_memory_stays_bounded(
    nursery: trio.Nursery, window: str, frames: int, nbytes: int, caplog: pytest.LogCaptureFixture
) -> None:
    server_config = ts.ServerConfig(
        host="127.0.0.1",
        tcp_port=0,
        http_port=None,
        publish_window_frames=frames,
        publish_window_bytes=nbytes,
    )
    server: ts.Server = await nursery.start(ts.serve, server_config)
    writer = await raw_session(server)
    await writer.send_all(control(M.CreateChannel(id=1, channel="c")))
    frame = publish_frame(1, bytes(16 * 1024))
    peak_parked = 0
    async with ts.open_client(server.tcp_url or "", name="reader") as reader:
        await wait_for_channel(reader, "c")
        async with reader.subscribe("c", policy="block", size=1):  # never reads
            await writer.send_all(control(M.OpenPublisher(id=2, channel="c")))
            with contextlib.suppress(trio.BrokenResourceError), trio.fail_after(WAIT_S):
                # Never waits for PUB_ACK: up to 2000 frames of 16 KiB (32 MiB), far past
                # either window, until the server hangs up.
                for i in range(2000):
                    await writer.send_all(frame)
                    if i % 4 == 3:
                        peak_parked = max(peak_parked, (await reader.stats()).parked_bytes)
            with contextlib.suppress(trio.BrokenResourceError):
                await read_messages(writer)  # until the server closes it
            assert (await reader.stats()).connections == 1  # only the writer went
    await writer.aclose()
    # The reason is the goodbye's (which a reset may swallow on the way) and the server's log.
    (record,) = [r for r in caplog.records if "sent past its credit window" in r.getMessage()]
    assert window in record.getMessage() and "wait for PUB_ACK" in record.getMessage()
    # What the server held for the writer never exceeded its window (8 frames or 64 KiB).
    assert 0 < peak_parked <= 8 * len(frame)


@memory_only("parking is one node's: across Redis a writer waits on positions (README)")
async def test_stats_count_frames_parked_for_a_block_reader(server: ts.Server) -> None:
    url = server.tcp_url or ""
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", policy="block", size=1), w.publisher("c") as pub:
            await pub.wait_for_readers()
            with trio.move_on_after(1.0):  # until the writer is held back
                for _ in range(5000):
                    await pub.send(bytes(1000))
            stats = await w.stats()
            # The writer's whole window is parked (one frame more is in the reader's buffer,
            # one on its way to the reader); a frame is counted as the writer counts it.
            window = ts.ServerConfig().publish_window_frames
            assert stats.parked_bytes == window * (F.PUBLISH_HEAD.size + 3 + 1000)
            assert stats.buffered_bytes >= stats.parked_bytes + 1000
        assert (await w.stats()).parked_bytes == 0  # the reader left: nothing parked


@VIRTUAL_TIME
async def test_block_timeout_ends_the_reader_that_holds_its_writers_and_the_rest_go_on(
    server: ts.Server, autojump_clock: trio.testing.MockClock
) -> None:
    url = server.tcp_url or ""
    async with (
        ts.open_client(url, name="w") as w,
        ts.open_client(url, name="stalled") as stalled,
        ts.open_client(url, name="dashboard") as dashboard,
    ):
        await w.create_channel("c")
        async with (
            stalled.subscribe("c", policy="block", size=1, block_timeout=5.0) as stuck,
            dashboard.subscribe("c", policy="drop_oldest", size=1) as live,
            w.publisher("c") as pub,
        ):
            await pub.wait_for_readers(2)
            start = trio.current_time()
            with trio.fail_after(60):
                i = 0
                while pub.readers == 2:  # the writer waits while the stalled reader holds it
                    await pub.send(i)
                    i += 1
            assert 5.0 <= trio.current_time() - start < 10.0
            with pytest.raises(ts.LimitExceeded, match="block_timeout"), trio.fail_after(10):
                while True:
                    await stuck.receive()
            for j in range(3):  # the writer and the other reader go on
                await pub.send(["after", j])
            with trio.fail_after(10):
                while (await live.receive()).data != ["after", 2]:
                    pass


async def test_the_server_default_block_timeout_applies_and_names_the_setting(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, block_timeout_s=3.0)
    server: ts.Server = await nursery.start(ts.serve, config)
    url = server.tcp_url or ""
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c")
        async with r.subscribe("c", policy="block", size=1) as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            for i in range(3):
                await pub.send(i)  # one in the buffer, two parked: the writer is held
            received = 0
            with pytest.raises(ts.LimitExceeded, match=r"3 s \(block_timeout\)") as ended:
                with trio.fail_after(10):
                    await trio.sleep(5)
                    while True:
                        await sub.receive()
                        received += 1
            # What waited for it (parked; the first frame was sent before) is said and counted
            # lost (it counted nowhere: an operators' audit).
            dropped = 3 - received
            assert f"the {dropped} frames waiting for it were dropped" in str(ended.value)
            (channel,) = [c for c in await w.channels() if c.name == "c"]
            assert channel.lost == dropped == (await w.stats()).frames_lost > 0
        with pytest.raises(ts.InvalidArgument, match="block_timeout"):
            async with r.subscribe("c", policy="block", size=1, block_timeout=float("nan")):
                pass


@VIRTUAL_TIME
async def test_channels_and_channel_events_show_which_reader_holds_a_channel_back(
    server: ts.Server, autojump_clock: trio.testing.MockClock
) -> None:
    url = server.tcp_url or ""
    async with (
        ts.open_client(url, name="w") as w,
        ts.open_client(url, name="recorder") as recorder,
        ts.open_client(url, name="observer") as observer,
        observer.subscribe("$channels", policy="unbounded") as events,
    ):
        await w.create_channel("c")
        async with recorder.subscribe("c", policy="block", size=1) as sub, w.publisher("c") as pub:
            await pub.wait_for_readers()
            for i in range(3):
                await pub.send(i)
            await trio.sleep(2.0)  # held for longer than HOLD_NOTICE_S
            (info,) = [c for c in await observer.channels() if c.name == "c"]
            assert [(h["client"], h["sub"]) for h in info.held_by] == [("recorder", sub.sub_id)]
            assert info.held_by[0]["held_s"] >= 1.0
            for _ in range(3):  # the recorder reads: the writer is free again
                await sub.receive()
            await pub.wait_acknowledged()
            (info,) = [c for c in await observer.channels() if c.name == "c"]
            assert info.held_by == []
        with trio.fail_after(10):
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["event"] != "released":
                seen.append((await events.receive()).data)
    held = [e for e in seen if e["event"] == "held"]
    assert len(held) == 1 and held[0]["held_by"][0]["client"] == "recorder"
    assert seen[-1]["held_by"] == []


def test_the_publish_head_size_is_what_writers_count() -> None:
    # The server counts a parked frame as the client counts its window: PUBLISH head + payload.
    assert F.PUBLISH_HEAD.size == struct.calcsize(">BId")
