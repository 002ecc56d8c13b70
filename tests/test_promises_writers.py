"""README promises about writers that no other test pinned by their numbers.

- "Concepts", Writers: ``send`` does not even encode a value while the channel has no
  readers, so a value that cannot be sent is raised only once the channel has a reader.
- "Concepts", Writers, and "Surviving failures", Writers lose nothing silently: the writer
  is held back only by its credit window (1024 frames / 16 MiB not yet taken by the
  server); frames handed to ``send`` while disconnected wait in that window, ``send`` waits
  once it is full, and on reconnect every one arrives, once, in order.

Real sockets on port 0; the writer's connection goes through a TCP proxy (tests/proxy.py)
that cuts it and refuses it back until the test lets it in.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import trio
from proxy import open_proxy

import trio_stream as ts
from trio_stream._protocol.limits import PUBLISH_WINDOW_BYTES, PUBLISH_WINDOW_FRAMES

WAIT_S = 5.0
# Long enough for a send that was going to be taken to be taken (it returns at once), short
# enough to keep the test quick: the sends that wait here wait for the connection.
SETTLE_S = 0.3
FAST = ts.Reconnect(initial=0.05, maximum=0.2)
MIB = 2**20


async def test_without_readers_send_encodes_the_first_value_of_each_type_only(
    nursery: trio.Nursery,
) -> None:
    # README "Writers": "It does not even encode the value then, but the first value of each
    # type a publisher is given (so that a value of the wrong kind, or one too large for the
    # server, fails at once in a script tried alone), so a value that cannot be sent and is
    # of a type sent before ... is raised only once the channel has a reader". Once per
    # publisher only, a bad value after a good one returned False silently (a first hour).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_frame_bytes=10_000)
    server: ts.Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    naive = dt.datetime(2026, 1, 1)  # without a timezone: the point
    too_large = np.zeros(2000)  # 16000 bytes of float64, over the 10000-byte frame limit
    async with (
        ts.open_client(server.tcp_url, name="w") as w,
        ts.open_client(server.tcp_url, name="r") as r,
    ):
        await w.create_channel("c")
        async with w.publisher("c") as pub:
            assert pub.readers == 0
            # Until one value of a type encodes, each of it is tried (and dropped: nobody
            # reads), again and again.
            for _ in range(2):
                with pytest.raises(TypeError, match="values of type object cannot be sent"):
                    await pub.send(object())
                with pytest.raises(ValueError, match="timezone"):
                    await pub.send(naive)
                with pytest.raises(ts.FrameTooLarge, match="limit of 10000"):
                    await pub.send(too_large)  # too large for any reader (a first hour)
            assert await pub.send(1.5) is False
            with pytest.raises(TypeError, match="values of type object cannot be sent"):
                await pub.send(object())  # another type after a good one (a first hour)
            # Of a type tried already, nothing is encoded: nothing raised (each type once,
            # not only the last one's: a writer alternating a header dict and an array
            # encoded every value).
            assert await pub.send(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) is False
            assert await pub.send(2.5) is False
            assert await pub.send(naive) is False
            assert await pub.send(np.zeros(2)) is False
            assert await pub.send(too_large) is False
            assert await w.publish("c", "a first value") is False  # (another publisher)
            with pytest.raises(TypeError, match="values of type object cannot be sent"):
                await w.publish("c", object())
            async with r.subscribe("c", policy="unbounded") as sub:
                with trio.fail_after(WAIT_S):
                    await pub.wait_for_readers()
                with pytest.raises(TypeError, match="values of type object cannot be sent"):
                    await pub.send(object())
                with pytest.raises(ValueError, match="timezone"):
                    await pub.send(naive)
                with pytest.raises(ts.FrameTooLarge, match="limit of 10000"):
                    await pub.send(too_large)
                assert await pub.send("fine")  # none of them harmed the publisher
                with trio.fail_after(WAIT_S):
                    msg = await sub.receive()
                assert (msg.data, msg.seq, msg.lost) == ("fine", 1, 0)


async def taken_while_cut(
    server: ts.Server, values: list[object], then: object
) -> tuple[int, list[ts.Message]]:
    """A writer (through a proxy) and a block reader (direct) on "AI1", owned by the reader.
    The writer's connection is cut and refused; ``values``, then ``then``, are handed to
    ``send`` meanwhile. Returns how many of them ``send`` took while the connection stayed
    down, and every message the reader got once the writer was back."""
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="daq", reconnect=FAST) as writer,
        ts.open_client(server.tcp_url, name="recorder") as reader,
    ):
        await reader.create_channel("AI1")  # the writer's cut does not touch the channel
        async with (
            reader.subscribe("AI1", policy="block", size=100) as sub,
            writer.publisher("AI1") as pub,
        ):
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                assert await pub.send("before")
                await pub.wait_acknowledged()  # the window is empty when the cut comes
            proxy.refuse()
            proxy.cut()
            with trio.fail_after(WAIT_S):
                await writer.wait_state("reconnecting")
            sent_before = pub.sent
            returned: list[bool] = []
            got: list[ts.Message] = []

            async def write() -> None:
                for value in [*values, then]:
                    returned.append(await pub.send(value))

            async def read() -> None:
                async for msg in sub:
                    got.append(msg)
                    if len(got) == 1 + len(values) + 1:
                        return

            with trio.fail_after(WAIT_S * 2):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    nursery.start_soon(write)
                    await trio.sleep(SETTLE_S)
                    taken = pub.sent - sent_before
                    assert writer.state == "reconnecting"  # still cut: nothing went out
                    proxy.accept()
                await pub.wait_acknowledged()
            assert all(returned) and len(returned) == len(values) + 1  # none refused, none lost
    return taken, got


async def test_a_cut_writer_takes_exactly_its_window_of_frames_then_waits_and_loses_nothing(
    server: ts.Server,
) -> None:
    # README 113-114 ("held back only by its credit window (1024 frames / 16 MiB not yet
    # taken by the server)") and 810-811 ("frames handed to send while disconnected wait in
    # the publisher's window and go out on reconnect; send waits once the window is full").
    assert PUBLISH_WINDOW_FRAMES == 1024
    values: list[object] = list(range(1024))
    taken, got = await taken_while_cut(server, values, then=1024)
    assert taken == 1024  # the 1025th send waited for the connection
    assert [m.data for m in got] == ["before", *range(1025)]  # all of them, once, in order
    assert [m.seq for m in got] == list(range(1, 1027))
    assert all(m.lost == 0 and m.gap is None for m in got)


@pytest.mark.parametrize(
    ("payload_bytes", "fit"),
    [(MIB - 64, 16), (MIB + 64, 15)],
    ids=["just-under-1MiB", "just-over-1MiB"],
)
async def test_a_cut_writer_takes_at_most_16_mib_then_waits_and_loses_nothing(
    server: ts.Server, payload_bytes: int, fit: int
) -> None:
    # The byte half of the window: 16 frames of a little under 1 MiB fit in 16 MiB, 16 of a
    # little over it do not (the 64 bytes leave room for each frame's few header bytes).
    assert PUBLISH_WINDOW_BYTES == 16 * MIB
    values: list[object] = [bytes([i]) * payload_bytes for i in range(fit)]
    last = b"\xff" * payload_bytes
    taken, got = await taken_while_cut(server, values, then=last)
    assert taken == fit  # the next one waited: it would take the window past 16 MiB
    assert [m.data for m in got] == ["before", *values, last]
    assert all(m.lost == 0 and m.gap is None for m in got)
