"""A lossy reader's ``size`` is on top of what its credit lets out, over a real server: a
flood read in bursts keeps, of each burst, what the sender writes at once and the newest
``size``, and every frame between them is counted in ``msg.lost``."""

from __future__ import annotations

import trio
from test_cli import wait_for_channel
from test_memory_bounds import publish_frame
from test_robustness import control, raw_session

import trio_stream as ts
from trio_stream._protocol import messages as M

WAIT_S = 30
SIZE = 10  # the reader's size, and so its window (never more than size)
BURST_FRAMES = 300
BURSTS = 8


async def test_a_flood_at_a_drop_oldest_reader_that_keeps_up_delivers_what_its_credit_lets_out(
    server: ts.Server,
) -> None:
    writer = await raw_session(server)
    await writer.send_all(control(M.CreateChannel(id=1, channel="flood")))
    messages: list[ts.Message] = []
    async with ts.open_client(server.tcp_url or "", name="reader") as client:
        await wait_for_channel(client, "flood")
        async with client.subscribe("flood", policy="drop_oldest", size=SIZE) as sub:
            await writer.send_all(control(M.OpenPublisher(id=2, channel="flood")))
            for burst in range(BURSTS):
                # One write of 300 frames: the server reads the burst at once (or in a few
                # reads) and fans it out in one step.
                first = burst * BURST_FRAMES
                await writer.send_all(
                    b"".join(
                        publish_frame(1, (first + i).to_bytes(4, "big") + bytes(96))
                        for i in range(BURST_FRAMES)
                    )
                )
                with trio.fail_after(WAIT_S):
                    while not messages or messages[-1].seq < first + BURST_FRAMES:
                        messages.append(await sub.receive())
                # The reader's credit (returned by quarters) reaches the server before the
                # next burst: a reader that keeps up.
                await trio.sleep(0.05)
    await writer.aclose()
    seqs = [msg.seq for msg in messages]
    assert seqs == sorted(set(seqs))
    # Every gap is counted on the first message after it, once.
    previous = 0
    for msg in messages:
        assert msg.lost == msg.seq - previous - 1
        previous = msg.seq
    assert len(messages) + sum(msg.lost for msg in messages) == BURSTS * BURST_FRAMES
    # Of each burst: the frames its credit let out at once (about a window: SIZE), then the
    # newest SIZE; keeping only the newest SIZE gave SIZE per burst read whole.
    assert len(messages) >= BURSTS * (SIZE + SIZE // 2), len(messages)
