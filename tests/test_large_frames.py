"""Readers of large frames: the flow control must not stall them.

The server stops sending to a subscription once SUBSCRIBE_WINDOW_BYTES (8 MiB) are in flight
to it. A client that returned credit only per quarter window *in frames* would hold 8 frames
of 1 MiB, need 25 before saying anything, and both sides would wait for each other for good
(``trio-stream generate ... --size 1MiB`` piped into ``trio-stream sub`` showed 8 frames, then
nothing). The client returns credit per quarter window in frames *or* bytes; the server
sends past the byte window while no credit is due (a small frame in flight, not credited yet,
must not hold back a large one).
"""

from __future__ import annotations

import numpy as np
import pytest
import trio
from engine_marks import BOTH_ENGINES

import trio_stream as ts
from trio_stream._protocol.frames import PUBLISH_HEAD

pytestmark = BOTH_ENGINES


FRAME_BYTES = 2**20
FRAMES = 40  # 40 MiB: five times the server's bytes-in-flight window
STALL_S = 5.0  # loopback moves 40 MiB in well under a second; this long is a stall


async def test_a_reader_of_large_frames_gets_them_all(url: str) -> None:
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("big")
        async with r.subscribe("big", policy="block", size=100) as sub, w.publisher("big") as pub:
            await pub.wait_for_readers()
            got = 0
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    for i in range(FRAMES):
                        await pub.send(np.full(FRAME_BYTES, i % 256, dtype=np.uint8))

                nursery.start_soon(write)
                while got < FRAMES:
                    with trio.move_on_after(STALL_S):
                        msg = await sub.receive()
                        assert msg.data[0] == got % 256
                        got += 1
                        continue
                    nursery.cancel_scope.cancel()
                    break
    assert got == FRAMES, f"the reader stalled after {got} of {FRAMES} frames"


# (the first frame, the second): together past the 8 MiB byte window, the first below a quarter
@pytest.mark.parametrize("sizes", [(1, 9 * 2**20), (int(1.9 * 2**20), int(6.5 * 2**20))])
@pytest.mark.parametrize("from_history", [False, True])
async def test_a_large_frame_after_a_small_one_is_not_held_back_by_its_credit(
    url: str, sizes: tuple[int, int], from_history: bool
) -> None:
    # One small frame in flight, far below a quarter of the window, so not credited yet; the
    # large frame after it did not fit beside it in window_bytes and waited for that credit,
    # and the client waited for the large frame: the reader stalled for good with lost 0 (and
    # a block reader's writers with it), live or replaying a history.
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("c", history=10 if from_history else 0)
        values = [b"a" * sizes[0], b"z" * sizes[1], b"b"]
        async with w.publisher("c") as pub:
            if from_history:
                for value in values:
                    assert await pub.send(value)
                await pub.wait_acknowledged()
            async with r.subscribe("c", policy="block", size=100) as sub:
                if not from_history:
                    await pub.wait_for_readers()
                    for value in values:
                        await pub.send(value)
                with trio.fail_after(STALL_S):
                    got = [await sub.receive() for _ in values]
    assert [msg.data for msg in got] == values
    assert sum(msg.lost for msg in got) == 0


LIMIT_BYTES = 65_536


@pytest.mark.server_options(max_frame_bytes=LIMIT_BYTES)
async def test_a_frame_at_the_limit_reaches_a_reader_under_a_writer_of_the_longest_name(
    url: str,
) -> None:
    # The PUBLISH body is exactly max_frame_bytes; the DATA frame carrying its payload is
    # longer (its head, and the writer's name of 255 bytes, the most a name holds).
    # A reader that held DATA to max_frame_bytes closed, reconnected and met it again, for good.
    name = "\N{GRINNING FACE}" * 63 + "www"  # 255 bytes of UTF-8
    payload = bytes(LIMIT_BYTES - PUBLISH_HEAD.size - 3)  # 3: the CBOR byte string's head
    async with ts.open_client(url, name=name) as w, ts.open_client(url, name="r") as r:
        await w.create_channel("edge")
        async with r.subscribe("edge") as sub, w.publisher("edge") as pub:
            await pub.wait_for_readers()
            assert await pub.send(payload)
            with pytest.raises(ts.FrameTooLarge):
                await pub.send(payload + b"x")
            with trio.fail_after(STALL_S):
                msg = await sub.receive()
    assert msg.data == payload and msg.sender == name and sub.received == 1
