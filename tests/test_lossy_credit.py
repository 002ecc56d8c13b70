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
SIZE = 10  # the reader's size; its window is twice that (LOSSY_WINDOW_PER_SIZE)
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
    # Of each burst: the frames its credit let out at once (about a window: 2 * SIZE, less
    # what the client holds back until a quarter is consumed), then the newest SIZE; keeping
    # only the newest SIZE gave SIZE per burst read whole, a window of SIZE about 2 * SIZE.
    assert len(messages) >= BURSTS * (2 * SIZE + SIZE // 2), len(messages)


async def test_a_lossy_reader_has_a_window_of_twice_its_size_and_a_block_reader_of_its_size(
    server: ts.Server,
) -> None:
    asked = {
        ("drop_oldest", 100, None): 200,
        ("drop_oldest", 1, None): 2,
        ("drop_newest", 3, None): 6,
        ("clear", 5, None): 10,
        ("drop_oldest", 1000, None): 1024,  # the server's bound
        ("drop_oldest", 100, 50): 50,  # what the client asked for
        ("block", 100, None): 100,
        ("block", 100, 1000): 100,
        ("unbounded", None, None): 1024,
    }
    async with ts.open_client(server.tcp_url or "", name="reader") as client:
        await client.create_channel("c")
        for (policy, size, window), expected in asked.items():
            async with client.subscribe("c", policy=policy, size=size, window=window) as sub:
                assert sub.window == expected, (policy, size, window)
        async with client.subscribe("c", policy="drop_oldest", size=10) as sub:
            await sub.retune(policy="block")
            assert sub.window == 10
            await sub.retune(policy="drop_newest", size=4)
            assert sub.window == 8


async def test_a_paused_size_1_reader_is_at_most_three_frames_behind_the_newest(
    server: ts.Server,
) -> None:
    # The freshness a small size promises: a dashboard that stopped reading while 50 frames
    # went by resumes with at most its window (2) of old frames, then the newest.
    async with (
        ts.open_client(server.tcp_url or "", name="reader") as reader,
        ts.open_client(server.tcp_url or "", name="writer") as writer,
    ):
        await writer.create_channel("c", public=True)
        async with reader.subscribe("c", policy="drop_oldest", size=1) as sub:
            async with writer.publisher("c") as pub:
                await pub.wait_for_readers()
                for i in range(50):
                    await pub.send(i)
                await pub.wait_acknowledged()  # every frame is in the reader's buffer
            messages: list[ts.Message] = []
            with trio.fail_after(WAIT_S):
                while not messages or messages[-1].seq < 50:
                    messages.append(await sub.receive())
    assert len(messages) <= 3, [(msg.seq, msg.lost) for msg in messages]
    assert messages[-1].data == 49
    assert len(messages) + sum(msg.lost for msg in messages) == 50
