"""A writer's read of many PUBLISH frames is fanned out a slice at a time (session.py
PUBLISH_SLICE_FRAMES), with the server's other tasks run between slices, over a real server."""

from __future__ import annotations

import itertools

import trio
from test_cli import wait_for_channel
from test_memory_bounds import publish_frame
from test_robustness import control, raw_session

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._server.session import PUBLISH_SLICE_FRAMES

WAIT_S = 30
BURST_FRAMES = 1_800  # ~200 KiB in one write: most of it arrives in one read


async def test_a_long_read_of_publish_frames_lets_other_tasks_run_between_slices(
    server: ts.Server,
) -> None:
    broker = server.state.broker
    writer = await raw_session(server)
    await writer.send_all(control(M.CreateChannel(id=1, channel="flood")))
    async with ts.open_client(server.tcp_url or "", name="reader") as client:
        await wait_for_channel(client, "flood")
        async with client.subscribe("flood", policy="block", size=BURST_FRAMES) as sub:
            await writer.send_all(control(M.OpenPublisher(id=2, channel="flood")))
            start = broker.frames_in
            seen: list[int] = []

            async def watch() -> None:
                # A task of this process, as another connection's would be: it runs between
                # the server's slices, and sees how far the fan-out got each time.
                while not seen or seen[-1] < start + BURST_FRAMES:
                    seen.append(broker.frames_in)
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await writer.send_all(
                    b"".join(
                        publish_frame(1, i.to_bytes(4, "big") + bytes(96))
                        for i in range(BURST_FRAMES)
                    )
                )
            steps = [b - a for a, b in itertools.pairwise(seen)]
            # The server's reading task runs at most twice between two turns of the watcher
            # (trio may reverse a batch's order), each time one slice at most.
            assert max(steps) <= 2 * PUBLISH_SLICE_FRAMES, steps
            with trio.fail_after(WAIT_S):
                seqs = [(await sub.receive()).seq for _ in range(BURST_FRAMES)]
            assert seqs == list(range(1, BURST_FRAMES + 1))  # all of it, in order
    await writer.aclose()
