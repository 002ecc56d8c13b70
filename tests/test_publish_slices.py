"""A writer's read of many PUBLISH frames is fanned out a slice at a time (inbound.py
PUBLISH_SLICE_FRAMES), with the server's other tasks run between slices, over a real server."""

from __future__ import annotations

import itertools
import types

import pytest
import trio
from test_cli import wait_for_channel
from test_memory_bounds import publish_frame
from test_robustness import control, raw_session

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._server import inbound
from trio_stream._server.inbound import PUBLISH_SLICE_FRAMES

WAIT_S = 30
BURST_FRAMES = 1_800  # ~200 KiB in one write: most of it arrives in one read


@pytest.fixture(autouse=True)
def slices_counted_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices end by their count here: the clock their requests are timed on is stopped (on
    a loaded machine 50 pings can take over CONTROL_SLICE_S and end a slice early)."""
    monkeypatch.setattr(inbound, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))


async def fan_out_watched(
    server: ts.Server, runs: int, run_frames: int, between: bytes = b""
) -> list[int]:
    """Write, in one go, ``runs`` runs of ``run_frames`` PUBLISH frames each followed by
    ``between``, and watch from another task how far the fan-out got each time it ran
    (as another connection's task would). Returns those counts; checks every frame came."""
    total = runs * run_frames
    broker = server.state.broker
    writer = await raw_session(server)
    await writer.send_all(control(M.CreateChannel(id=1, channel="flood")))
    async with ts.open_client(server.tcp_url or "", name="reader") as client:
        await wait_for_channel(client, "flood")
        async with client.subscribe("flood", policy="block", size=total) as sub:
            await writer.send_all(control(M.OpenPublisher(id=2, channel="flood")))
            start = broker.frames_in
            seen: list[int] = []

            async def watch() -> None:
                while not seen or seen[-1] < total:
                    seen.append(broker.frames_in - start)
                    await trio.lowlevel.checkpoint()

            frames = (publish_frame(1, i.to_bytes(4, "big") + bytes(96)) for i in range(total))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await writer.send_all(
                    b"".join(
                        b"".join(itertools.islice(frames, run_frames)) + between
                        for _ in range(runs)
                    )
                )
            with trio.fail_after(WAIT_S):
                seqs = [(await sub.receive()).seq for _ in range(total)]
            assert seqs == list(range(1, total + 1))  # all of it, in order
    await writer.aclose()
    return seen


async def test_a_long_read_of_publish_frames_lets_other_tasks_run_between_slices(
    server: ts.Server,
) -> None:
    seen = await fan_out_watched(server, 1, BURST_FRAMES)
    steps = [b - a for a, b in itertools.pairwise(seen)]
    # The server's reading task runs at most twice between two turns of the watcher (trio
    # may reverse a batch's order), each time one slice at most.
    assert max(steps) <= 2 * PUBLISH_SLICE_FRAMES, steps


@pytest.mark.parametrize("run_frames", [1, 10])
async def test_slices_count_publish_frames_across_the_other_frames_of_a_read(
    server: ts.Server, run_frames: int
) -> None:
    # Runs of PUBLISH frames broken by pings: the slice counts them all, so such a read is
    # still cut every PUBLISH_SLICE_FRAMES frames (and not after every run: see below).
    runs = BURST_FRAMES // run_frames
    seen = await fan_out_watched(server, runs, run_frames, control(M.Ping(data=None)))
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(steps) <= 2 * PUBLISH_SLICE_FRAMES, steps


async def test_a_short_read_of_publish_runs_and_other_frames_is_fanned_out_in_one_go(
    server: ts.Server,
) -> None:
    # 100 PUBLISH frames in runs of 2, each followed by a ping, fewer than a slice: one read
    # is dispatched without letting other tasks run in the middle (a yield, an early flush
    # per run, cost a writer that also sends CREDIT or requests a scheduler pass per run).
    seen = await fan_out_watched(server, 50, 2, control(M.Ping(data=None)))
    # The watcher sees the start, the end, and a few counts in between if TCP cut the ~5 KiB
    # write into more than one read (four reads, five counts, on a loaded CI machine: [0, 30,
    # 60, 90, 100]); a yield or a flush per run would show ~50.
    assert len(set(seen)) <= 8, sorted(set(seen))
