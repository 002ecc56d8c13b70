"""A flooding publisher hands its frames to the socket in bursts of about YIELD_EVERY_BYTES
(LOSSLESS_YIELD_EVERY_BYTES while every reader is lossless), through the real server, and
every frame arrives in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
from client_parts import tcp_transport
from proxy import open_proxy

import trio_stream as ts
from trio_stream._client_constants import OUTGOING_HIGH_WATER_BYTES
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import PREFIX_BYTES
from trio_stream._publisher import LOSSLESS_YIELD_EVERY_BYTES, YIELD_EVERY_BYTES

FRAMES = 3_000
PAYLOAD_BYTES = 100
WAIT_S = 30


@pytest.mark.parametrize(
    ("policy", "burst_bytes"),
    [("block", LOSSLESS_YIELD_EVERY_BYTES), ("drop_oldest", YIELD_EVERY_BYTES)],
)
async def test_a_flood_leaves_the_client_in_bursts_of_bounded_size(
    server: ts.Server, policy: str, burst_bytes: int
) -> None:
    # A block reader loses nothing to a burst: the server tells the writer (``lossless``),
    # which then sends larger ones; a drop_oldest reader would lose frames to them.
    assert server.tcp_url
    writes: list[int] = []
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as writer,
            ts.open_client(server.tcp_url) as reader,
        ):
            transport, _ = tcp_transport(writer)
            send = transport.send

            async def counted_send(pieces: list[BytesLike]) -> None:  # a spy: the real send runs
                writes.append(sum(map(len, pieces)))
                await send(pieces)

            transport.send = counted_send  # type: ignore[method-assign]
            await writer.create_channel("flood")
            async with (
                reader.subscribe("flood", policy=policy, size=FRAMES) as sub,
                writer.publisher("flood") as pub,
            ):
                await pub.wait_for_readers()
                for seq in range(FRAMES):
                    assert await pub.send(seq.to_bytes(4, "big") * (PAYLOAD_BYTES // 4))
                got = [int.from_bytes((await sub.receive()).data[:4], "big") for _ in range(FRAMES)]
                await pub.wait_acknowledged()
    assert got == list(range(FRAMES))
    frame_bytes = PREFIX_BYTES + 128  # a PUBLISH frame of this payload, with room to spare
    # The frame that crossed the mark, and one more when trio runs the publisher before the
    # sender after the yield.
    assert max(writes) < burst_bytes + 2 * frame_bytes
    if burst_bytes > YIELD_EVERY_BYTES:  # larger bursts, not merely as small as before
        assert max(writes) > YIELD_EVERY_BYTES + 2 * frame_bytes
    # The flood went out in bursts, not frame by frame.
    assert len(writes) < FRAMES // 20


async def test_time_s_is_a_number_of_seconds_or_invalid_argument(server: ts.Server) -> None:
    # A str as time_s raised struct.error from the wire head's pack, after the value was
    # encoded: a library error it is not.
    assert server.tcp_url
    async with ts.open_client(server.tcp_url) as client:
        await client.create_channel("t", history=5)  # wanted without readers
        async with client.publisher("t") as pub:
            for bad in ("now", None.__class__, True, float("nan"), float("inf")):
                with pytest.raises(ts.InvalidArgument, match="time_s must be"):
                    await pub.send(1, time_s=bad)  # type: ignore[arg-type]
            assert pub.sent == 0
            # A DAQ's time array gives numpy numbers: taken, as the wire head's pack took them.
            assert await pub.send(0, time_s=np.float32(10.5))
            assert await pub.send(0, time_s=np.int64(11))
            assert await pub.send(1, time_s=12)
        with pytest.raises(ts.InvalidArgument, match="time_s must be"):
            await client.publish("t", 1, time_s="now")  # type: ignore[arg-type]
        async with client.subscribe("t", policy="unbounded") as sub:
            assert [(await sub.receive()).time for _ in range(3)] == [10.5, 11.0, 12.0]


async def test_a_send_waiting_for_its_window_ends_when_another_task_closes_the_publisher(
    server: ts.Server,
) -> None:
    # A block reader that reads nothing holds the writer's window full: a send waits for an
    # acknowledgement that never comes. Closing the publisher from another task must end that
    # wait (it raises ResourceClosed), and a wait_for_readers too; both waited for good.
    assert server.tcp_url
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url, name="w") as writer,
            ts.open_client(server.tcp_url, name="r") as reader,
        ):
            await writer.create_channel("stuck")
            async with reader.subscribe("stuck", policy="block", size=1):
                pub = await writer.open_publisher("stuck")
                await pub.wait_for_readers()
                outcomes: list[BaseException] = []

                async def send_until_closed() -> None:
                    try:
                        while True:
                            await pub.send(b"x" * PAYLOAD_BYTES)
                    except ts.ResourceClosed as exc:
                        outcomes.append(exc)

                async def wait_for_two_readers() -> None:
                    try:
                        await pub.wait_for_readers(2)
                    except ts.ResourceClosed as exc:
                        outcomes.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_until_closed)
                    nursery.start_soon(wait_for_two_readers)
                    sent = -1
                    while sent != pub.sent:  # until the window is full and send waits
                        sent = pub.sent
                        await trio.sleep(0.2)
                    await pub.aclose()
                assert [type(e) for e in outcomes] == [ts.ResourceClosed] * 2
                assert "is closed" in str(outcomes[0])


async def flood_until_out_space_is_full(
    client: ts.Client, pub: ts.Publisher, blocked: trio.Event, outcome: list[BaseException]
) -> None:
    """Send until a send waits for the client's outgoing buffer; record how it ends."""
    try:
        while True:
            if client._out_bytes > OUTGOING_HIGH_WATER_BYTES:
                blocked.set()  # this send waits for out space
            await pub.send(b"x" * 60_000)
    except ts.TrioStreamError as exc:
        outcome.append(exc)


async def test_a_send_waiting_for_out_space_ends_when_its_publisher_closes(
    server: ts.Server,
) -> None:
    # The path to the server freezes: the client's outgoing buffer fills and a send waits
    # for room. Another task closes the publisher: that send raises ResourceClosed (it
    # waited for the heartbeat to give up, and for good without one).
    assert server.tcp_url
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, heartbeat=None) as client,
    ):
        await client.create_channel("frozen", history=1)  # wanted without a reader
        pub = await client.open_publisher("frozen")
        proxy.hold()
        outcome: list[BaseException] = []
        blocked = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood_until_out_space_is_full, client, pub, blocked, outcome)
            with trio.fail_after(WAIT_S):
                await blocked.wait()
            await trio.sleep(0.2)
            pub.close_nowait()
            try:
                with trio.fail_after(WAIT_S):
                    while not outcome:  # noqa: ASYNC110 - the flood task records its end
                        await trio.sleep(0.01)
            finally:
                nursery.cancel_scope.cancel()
                proxy.release()
        assert [type(e) for e in outcome] == [ts.ResourceClosed]


async def test_a_send_waiting_for_out_space_ends_when_its_client_closes(
    server: ts.Server,
) -> None:
    # A send of a task outside the client's block waits for room when the client closes:
    # the close replaced the event that send waited on, and set only the new one.
    assert server.tcp_url
    outcome: list[BaseException] = []
    async with open_proxy(server.tcp_url) as proxy, trio.open_nursery() as outer:
        blocked = trio.Event()
        async with ts.open_client(proxy.url, heartbeat=None) as client:
            await client.create_channel("frozen", history=1)
            pub = await client.open_publisher("frozen")
            proxy.hold()
            outer.start_soon(flood_until_out_space_is_full, client, pub, blocked, outcome)
            with trio.fail_after(WAIT_S):
                await blocked.wait()
            await trio.sleep(0.2)
        try:
            with trio.fail_after(WAIT_S):
                while not outcome:  # noqa: ASYNC110 - the flood task records its end
                    await trio.sleep(0.01)
        finally:
            outer.cancel_scope.cancel()
            proxy.release()
    assert [type(e) for e in outcome] == [ts.ConnectionClosed]


async def test_a_send_to_no_readers_closed_at_its_checkpoint_raises(server: ts.Server) -> None:
    # A channel without readers: send() yields once and returns False. Closed by another task
    # at that yield, it returned False all the same, and the SyncClient counted the value
    # twice: dropped by the close, and "not sent: its readers left" by the drain.
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="w") as writer:
        await writer.create_channel("empty")
        pub = await writer.open_publisher("empty")
        after_close: list[object] = []

        async def send_until_closed() -> None:
            try:
                while True:
                    sent = await pub.send(b"x")  # always suspended here when the close comes
                    if not pub.is_open:
                        after_close.append(sent)
            except ts.ResourceClosed as exc:
                after_close.append(exc)

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_until_closed)
                for _ in range(5):
                    await trio.lowlevel.checkpoint()
                pub.close_nowait()
        assert [type(outcome) for outcome in after_close] == [ts.ResourceClosed]


@pytest.mark.parametrize(
    "wrap",
    [lambda a: a, lambda a: {"trace": a, "n": 1}, lambda a: [a[:5], a]],
    ids=["the array", "in a dict", "in a list"],
)
@pytest.mark.parametrize("elements", [10, 100_000], ids=["small", "large"])
@pytest.mark.parametrize("compress", [None, "zlib"])
async def test_an_array_refilled_after_send_returns_arrives_as_it_was_sent(
    server: ts.Server,
    wrap: Callable[[np.ndarray[Any, Any]], object],
    elements: int,
    compress: str | None,
) -> None:
    # A DAQ loop refills one buffer and sends it each time. The frame may still wait for its
    # write (and in the window, for a resend) when send() returns: it carried the array's
    # later contents, torn frames included (an outside audit: 49 or 50 frames of 50).
    assert server.tcp_url
    buffer = np.empty(elements, dtype="f8")
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as writer,
            ts.open_client(server.tcp_url) as reader,
        ):
            await writer.create_channel("daq")
            async with (
                reader.subscribe("daq", policy="block", size=100) as sub,
                writer.publisher("daq", compress=compress) as pub,
            ):
                await pub.wait_for_readers()
                noise = np.random.default_rng(0).random(elements)  # zlib cannot shrink it
                for i in range(50):
                    buffer[:] = noise
                    buffer[0] = i
                    await pub.send(wrap(buffer))
                buffer.fill(-1)
                for i in range(50):
                    data = (await sub.receive()).data
                    arrays = [data] if isinstance(data, np.ndarray) else None
                    if arrays is None:
                        arrays = [data["trace"]] if isinstance(data, dict) else list(data)
                    assert all(a[0] == i and (a[1:] == noise[1 : len(a)]).all() for a in arrays)
