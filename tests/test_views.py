"""subscribe(view=ts.View(...)): the server cuts a strided sub-array of each array frame.

Unit tests drive the broker and outboxes with fakes (server_parts): one cut per distinct view
per publish, shared by the readers of that view; the rest go through a real server over TCP
and WebSocket.
"""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
import trio
from engine_marks import BOTH_ENGINES
from server_parts import World, decode

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import EncodedPayload, decode_payload, encode_payload
from trio_stream._server.buffers import Policy
from trio_stream._server.outbox import Outbox, Reader
from trio_stream.sync import SyncClient

pytestmark = BOTH_ENGINES


STEP_S = 10.0
EVERY_4TH = ts.View(slices=(slice(None, None, 4), slice(None, None, 4)))
ROI = ts.View(slices=(slice(2, 6), slice(1, 3)))


def encoded(value: object) -> bytes:
    return b"".join(bytes(piece) for piece in encode_payload(value))


def image(i: int = 0) -> np.ndarray:
    return np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) + i


def buffered(reader: Reader) -> list[object]:
    return list(reader.buffer.items())


def payloads(box: Outbox) -> dict[int, list[object]]:
    """Per subscription, the decoded payloads of every DATA frame the outbox writes."""
    out: dict[int, list[object]] = {}
    while True:
        batch = box.next_batch()
        if not batch.pieces:
            return out
        for sub, _lost, _seq, body in decode(batch).data:
            out.setdefault(sub, []).append(decode_payload(body))


def test_one_cut_per_distinct_view_shared_by_its_readers() -> None:
    world = World(max_buffered_bytes=64 << 20)
    channel = world.channel()
    _, writer = world.writer(channel)
    boxes = [world.connection()[1] for _ in range(5)]
    a, b = (world.reader(box, channel, view=EVERY_4TH) for box in boxes[:2])
    c = world.reader(boxes[2], channel, view=ts.View(slices=(slice(None, None, 4),) * 2))
    roi = world.reader(boxes[3], channel, view=ROI)
    whole = world.reader(boxes[4], channel)
    world.broker.publish(writer, 1.0, encoded(image()))
    (fa,), (fb,), (fc,), (froi,), (fwhole,) = map(buffered, (a, b, c, roi, whole))
    assert fa is fb is fc  # equal views: one cut
    assert froi is not fa and fwhole not in (fa, froi)
    assert fa.nbytes < fwhole.nbytes / 10  # type: ignore[attr-defined]
    # The byte accounting counts what each reader holds: the cut.
    assert boxes[0].buffered_bytes == fa.nbytes  # type: ignore[attr-defined]
    assert boxes[4].buffered_bytes == fwhole.nbytes  # type: ignore[attr-defined]
    got = payloads(boxes[0])[a.sub_id][0]
    np.testing.assert_array_equal(got, image()[::4, ::4])
    np.testing.assert_array_equal(payloads(boxes[3])[roi.sub_id][0], image()[2:6, 1:3])
    np.testing.assert_array_equal(payloads(boxes[4])[whole.sub_id][0], image())


def test_frames_that_are_not_arrays_pass_unchanged() -> None:
    world = World()
    channel = world.channel()
    _, writer = world.writer(channel)
    _, box = world.connection()
    viewer = world.reader(box, channel, view=EVERY_4TH)
    plain = world.reader(box, channel)
    vector = np.arange(10.0)  # one dimension: fewer than the view's two
    for value in ({"t": 1.5}, "text", vector):
        world.broker.publish(writer, 1.0, encoded(value))
    assert buffered(viewer) == buffered(plain)  # the very frames, not copies
    got = payloads(box)[viewer.sub_id]
    assert got[:2] == [{"t": 1.5}, "text"]
    np.testing.assert_array_equal(got[2], vector)


def test_history_replays_through_the_view() -> None:
    world = World(max_buffered_bytes=64 << 20)
    channel = world.channel(history=3)
    _, writer = world.writer(channel)
    for i in range(3):
        world.broker.publish(writer, 1.0, encoded(image(i)))
    _, box = world.connection()
    reader = world.reader(box, channel, view=EVERY_4TH)
    got = payloads(box)[reader.sub_id]
    assert len(got) == 3
    for i, array in enumerate(got):
        np.testing.assert_array_equal(array, image(i)[::4, ::4])


def test_a_full_block_reader_of_a_view_parks_its_cut_and_frees_the_writer_after() -> None:
    world = World(max_buffered_bytes=64 << 20)
    channel = world.channel()
    writer_box, writer = world.writer(channel)
    _, box = world.connection()
    reader = world.reader(box, channel, Policy.BLOCK, 1, window=1, view=EVERY_4TH)
    world.broker.publish(writer, 1.0, encoded(image(0)))  # buffered
    world.broker.publish(writer, 1.0, encoded(image(1)))  # parked, as its cut
    assert writer.parked_frames == 1
    assert decode(writer_box.next_batch()).acks == [(1, 1)]
    got = payloads(box)[reader.sub_id]
    assert writer.parked_frames == 0  # frame 2 moved in when frame 1 went out
    assert decode(writer_box.next_batch()).acks == [(1, 1)]
    box.credit(reader.sub_id, 1)
    got += payloads(box)[reader.sub_id]
    for i, array in enumerate(got):
        np.testing.assert_array_equal(array, image(i)[::4, ::4])


async def test_a_view_over_the_wire(url: str) -> None:
    async with ts.open_client(url, name="camera") as cam, ts.open_client(url, name="dash") as dash:
        await cam.create_channel("camera")
        async with (
            dash.subscribe("camera", view=EVERY_4TH, policy="unbounded") as small,
            dash.subscribe("camera", policy="unbounded") as full,
            cam.publisher("camera") as pub,
        ):
            with trio.fail_after(STEP_S):
                await pub.wait_for_readers(2)
                for i in range(3):
                    await pub.send(image(i))
                await pub.send({"not": "an array"})
                for i in range(3):
                    np.testing.assert_array_equal((await small.receive()).data, image(i)[::4, ::4])
                    np.testing.assert_array_equal((await full.receive()).data, image(i))
                assert (await small.receive()).data == {"not": "an array"}
                assert (await full.receive()).data == {"not": "an array"}


# An array numpy cannot shape although its (no) elements match: shape [0, 2**63], float64.
UNSHAPEABLE = cbor2.dumps(cbor2.CBORTag(40, [[0, 2**63], cbor2.CBORTag(86, b"")]))


async def read_unshapeable_then_image(small: ts.Subscription, full: ts.Subscription) -> None:
    """What readers with and without a view get of UNSHAPEABLE then image(0)."""
    for sub in (small, full):  # passed whole: each reader's client says it is malformed
        with pytest.raises(ts.ProtocolError, match="malformed payload"):
            await sub.receive()
    np.testing.assert_array_equal((await small.receive()).data, image(0)[::4, ::4])
    np.testing.assert_array_equal((await full.receive()).data, image(0))


async def test_an_array_numpy_cannot_shape_passes_whole_and_the_writer_stays(url: str) -> None:
    # Cutting it raised in the server, which closed the writer's connection with a
    # traceback and no reason (its channel ended with it), and made a history holding it
    # refuse every subscribe with a view.
    async with ts.open_client(url, name="cam") as cam, ts.open_client(url, name="dash") as dash:
        await cam.create_channel("camera", history=5)
        async with (
            dash.subscribe("camera", view=EVERY_4TH, policy="unbounded") as small,
            dash.subscribe("camera", policy="unbounded") as full,
            cam.publisher("camera") as pub,
        ):
            with trio.fail_after(STEP_S):
                await pub.wait_for_readers(2)
                await pub.send(EncodedPayload(UNSHAPEABLE))
                await pub.send(image(0))
                await read_unshapeable_then_image(small, full)
                await pub.wait_acknowledged()
        assert cam.state == "open"
        # The history holds it: a later reader with a view is answered, and gets it whole.
        with trio.fail_after(STEP_S):
            async with (
                dash.subscribe("camera", view=EVERY_4TH, policy="unbounded") as small,
                dash.subscribe("camera", policy="unbounded") as full,
            ):
                await read_unshapeable_then_image(small, full)


async def test_a_bad_view_is_refused_at_subscribe(url: str) -> None:
    async with ts.open_client(url, name="dash") as dash:
        await dash.create_channel("camera")
        with pytest.raises(ts.InvalidArgument, match="step cannot be zero"):
            await dash._request(M.Subscribe, channel="camera", view=[[None, None, 0]])
        with pytest.raises(ts.InvalidArgument, match="start, stop, step"):
            await dash._request(M.Subscribe, channel="camera", view=[[1, 2]])
        with pytest.raises(ts.InvalidArgument, match=r"ts\.View"):
            await dash.open_subscription("camera", view=(slice(None),))  # type: ignore[arg-type]
        # The connection goes on.
        async with dash.subscribe("camera", view=ROI):
            pass


async def test_sync_client_passes_the_view(server: ts.Server) -> None:
    url = server.tcp_url
    assert url is not None

    def scenario() -> None:
        with SyncClient(url, name="camera") as cam, SyncClient(url, name="dash") as dash:
            cam.create_channel("camera")
            with dash.subscribe("camera", view=ROI, policy="unbounded") as sub:
                cam.publish("camera", image(7))
                np.testing.assert_array_equal(sub.get(timeout=STEP_S).data, image(7)[2:6, 1:3])

    with trio.fail_after(30):
        await trio.to_thread.run_sync(scenario)
