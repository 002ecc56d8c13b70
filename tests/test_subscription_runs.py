"""A reader routes the DATA frames of a read in the pass that finds them, and decides exactly
what routing frame by frame decides.

The client reads with FrameDecoder.frames_and_runs(frames.take_data_runs): whole well-formed
DATA frames come out in runs of one subscription's frames, which Client._take hands to the
subscription at once; every other frame (and a DATA frame too short for its head and name)
comes alone and goes through the frame handlers, as every frame did before. These tests feed
the same bytes, cut anywhere, through both paths into real Subscription objects and compare
every outcome: values, fields, errors, losses, order.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_stream import FrameTooLarge, PayloadRefused, ProtocolError
from trio_stream._client import Client
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import encode_payload
from trio_stream._protocol.framing import PREFIX_BYTES, FrameDecoder, frame_prefix
from trio_stream._subscription import Subscription

SUB_IDS = (1, 2)
UNKNOWN_SUB_ID = 9  # no subscription has it: its frames are dropped
WINDOW_FRAMES = 10_000
MAX_FRAME_BYTES = 2**20


def data_body(sub_id: int, lost: int, seq: int, sender: bytes, payload: bytes) -> bytes:
    head = F.DATA_HEAD.pack(F.DATA, sub_id, lost, seq, 1.25 * seq, len(sender))
    return head + sender + payload


values = (
    st.binary(max_size=300)
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=20)
    | st.lists(st.integers(0, 1000), max_size=5)
    | st.tuples(
        st.lists(st.integers(0, 100), min_size=1, max_size=40),
        st.sampled_from(["uint8", "int16", "float32", "int64"]),
    ).map(lambda a: np.array(a[0], dtype=a[1]))
)
payloads = values.map(lambda value: b"".join(encode_payload(value))) | st.binary(max_size=40)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A frame body a server may send a reader: DATA (whole, or cut in its sub id, head or
    name, for one of two subscriptions or one the client does not have) or PUB_ACK."""
    if draw(st.integers(0, 9)) == 0:
        return F.pub_ack_frame(draw(st.integers(100, 200)), 1)[4:]  # no such publisher
    body = data_body(
        draw(st.sampled_from((*SUB_IDS, UNKNOWN_SUB_ID))),
        draw(st.sampled_from([0, 0, 0, 3])),
        draw(st.integers(1, 2**40)),
        draw(st.sampled_from([b"w", b"w", b"other", b"", b"\xe2\x82"])),
        draw(payloads),
    )
    cut = draw(st.sampled_from([None, None, None, None, 3, 5, 21, 26, 28]))
    return body if cut is None else body[:cut]


# Sub ids that differ from SUB_IDS[0] in one high byte only: a flood's bulk path compares
# each route byte on its own (frames._take_alike), so each byte must be able to break a run.
HIGH_BYTE_SUB_IDS = (SUB_IDS[0] + 2**8, SUB_IDS[0] + 2**16, SUB_IDS[0] + 2**24)


@st.composite
def floods(draw: st.DrawFn) -> list[bytes]:
    """Bodies as a flood brings them: runs of DATA frames of one length for one subscription
    (the route bytes repeat frame after frame), each broken by a frame that differs in one
    route byte (another sub id, a length 1 or 256 bytes off, another type) or is cut."""
    payload = draw(payloads)
    sender = draw(st.sampled_from([b"w", b"other"]))
    out: list[bytes] = []
    seq = 1
    for _ in range(draw(st.integers(1, 4))):
        sub_id = draw(st.sampled_from(SUB_IDS))
        for _ in range(draw(st.integers(1, 30))):
            out.append(data_body(sub_id, draw(st.sampled_from([0, 0, 0, 2])), seq, sender, payload))
            seq += 1
        odd = draw(st.sampled_from(["sub", "high sub", "+1", "+256", "type", "cut", "none"]))
        if odd == "sub":
            other = draw(st.sampled_from((*SUB_IDS, UNKNOWN_SUB_ID)))
            out.append(data_body(other, 0, seq, sender, payload))
        elif odd == "high sub":
            other = draw(st.sampled_from(HIGH_BYTE_SUB_IDS))
            out.append(data_body(other, 0, seq, sender, payload))
        elif odd in ("+1", "+256"):
            padded = b"".join(encode_payload(bytes(int(odd))))
            out.append(data_body(sub_id, 0, seq, sender, padded))
        elif odd == "type":
            out.append(F.pub_ack_frame(150, 1)[4:])
        elif odd == "cut":
            out.append(data_body(sub_id, 0, seq, sender, payload)[: draw(st.integers(3, 28))])
        seq += 1
    return out


def outcome(take: Any) -> tuple[Any, ...]:
    """What reading one message gives: its fields (an array as its dtype and values, and
    whether it is writable), or the error's type."""
    try:
        message = take()
    except (ProtocolError, PayloadRefused) as exc:
        return ("error", type(exc).__name__)
    value = message.data
    if isinstance(value, np.ndarray):
        value = ("array", value.dtype.str, value.tolist(), value.flags.writeable)
    return ("message", repr(value), message[1:])


def take_all(sub: Subscription) -> list[tuple[Any, ...]]:
    out = []
    while sub.statistics().buffered:
        out.append(outcome(sub.receive_nowait))
    return out


def reader() -> tuple[Client, dict[int, Subscription]]:
    """A client that is not connected, with a subscription for each of SUB_IDS."""
    client = Client(["tcp://127.0.0.1:1"], reconnect=None)
    subs = {}
    for sub_id in SUB_IDS:
        sub = Subscription(client, {"channel": "c"}, {"sub": sub_id, "window": WINDOW_FRAMES})
        client._subscriptions[sub_id] = sub
        subs[sub_id] = sub
    return client, subs


def read(wire: bytes, cuts: list[int], *, runs: bool) -> dict[int, list[tuple[Any, ...]]]:
    """Feed ``wire`` to a reader in chunks cut at ``cuts``, taking messages after odd cuts
    (and all at the end, after the reader stopped if a frame made it stop): with runs, as
    the client reads, or frame by frame."""
    client, subs = reader()
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    got: dict[int, list[tuple[Any, ...]]] = {sub_id: [] for sub_id in SUB_IDS}
    pos = 0
    for bound in sorted({c % (len(wire) + 1) for c in cuts} | {len(wire)}):
        decoder.receive_data(wire[pos:bound])
        pos = bound
        try:
            if runs:
                items = decoder.frames_and_runs(F.take_data_runs)
                client._take(items)
            else:
                client._take(decoder.frames())
        except ProtocolError as exc:  # a DATA frame without its sub id: the reader stops
            got[SUB_IDS[0]].append(("connection closed", str(exc)))
            break
        if bound % 2:  # take now, or let several reads' runs queue up
            for sub_id, sub in subs.items():
                got[sub_id] += take_all(sub)
    for sub_id, sub in subs.items():
        got[sub_id] += take_all(sub)
        got[sub_id].append(("lost", sub.lost, "received", sub.received))
    return got


def items_of(frames: list[bytes]) -> list[Any]:
    """What one read of ``frames`` gives the reader: frames left alone, and runs by sub id."""
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    decoder.receive_data(b"".join(frame_prefix(len(body)) + body for body in frames))
    return list(decoder.frames_and_runs(F.take_data_runs))


def flattened(items: list[Any]) -> list[bytes]:
    """The frames of ``items`` in order, checking each run holds only its sub id's DATA."""
    out: list[bytes] = []
    for item in items:
        if isinstance(item, bytearray):
            # Left alone: another type, or a DATA frame without a whole sub id.
            assert item[0] != F.DATA or len(item) < F.DATA_ROUTE_BYTES
            out.append(bytes(item))
            continue
        sub_id, run = item
        assert run
        for body in run:
            assert isinstance(body, bytearray)  # writable, as frames() hands them out
            assert F.data_sub_id(body) == sub_id
        out += [bytes(body) for body in run]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    # Mixed frames (runs of a few), and floods of one size (the bulk path, frames._take_alike).
    st.one_of(st.lists(bodies(), min_size=1, max_size=25), floods()),
    st.lists(st.integers(0, 20_000), max_size=6),
)
async def test_frames_routed_in_runs_decide_as_frame_by_frame(
    frames: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(frame_prefix(len(body)) + body for body in frames)
    assert read(wire, cuts, runs=True) == read(wire, cuts, runs=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(bodies(), min_size=1, max_size=25))
def test_runs_hold_every_routable_data_frame_and_only_those(frames: list[bytes]) -> None:
    items = items_of(frames)
    assert flattened(items) == frames
    # Consecutive runs are for different subscriptions, unless a frame came between them.
    for a, b in itertools.pairwise(items):
        if not isinstance(a, bytearray) and not isinstance(b, bytearray):
            assert a[0] != b[0]


@settings(max_examples=200, deadline=None)
@given(floods())
def test_a_flood_taken_in_bulk_holds_every_routable_frame_in_order(frames: list[bytes]) -> None:
    assert flattened(items_of(frames)) == frames


def test_a_flood_of_one_size_is_taken_whole_and_stops_at_the_first_unlike_frame() -> None:
    # 300 alike frames (the bulk path's case), then one for another sub id that differs only
    # in its high byte, then more alike frames: three runs, every frame once, in order.
    alike = [data_body(1, 0, seq, b"w", bytes(100)) for seq in range(1, 301)]
    odd = data_body(HIGH_BYTE_SUB_IDS[2], 0, 301, b"w", bytes(100))
    more = [data_body(1, 0, seq, b"w", bytes(100)) for seq in range(302, 310)]
    wire = bytearray(b"".join(frame_prefix(len(b)) + b for b in (*alike, odd, *more)))
    runs, pos = F.take_data_runs(wire, 0, len(wire), MAX_FRAME_BYTES)
    assert pos == len(wire)
    assert [(sub_id, [bytes(b) for b in run]) for sub_id, run in runs] == [
        (1, alike),
        (HIGH_BYTE_SUB_IDS[2], [odd]),
        (1, more),
    ]


def test_a_data_frame_beyond_the_frame_limit_is_left_to_the_decoder() -> None:
    body = data_body(1, 0, 1, b"w", bytes(100))
    decoder = FrameDecoder(max_frame_bytes=50)
    decoder.receive_data(frame_prefix(len(body)) + body)
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 50"):
        decoder.frames_and_runs(F.take_data_runs)


async def test_a_data_frame_too_short_to_route_closes_the_connection() -> None:
    # As before: a DATA frame without a whole sub id cannot go anywhere.
    client, _ = reader()
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(frame_prefix(4) + bytes([F.DATA, 0, 0, 0]))
    items = decoder.frames_and_runs(F.take_data_runs)
    with pytest.raises(ProtocolError, match="truncated DATA frame"):
        client._take(items)


async def test_a_run_wakes_its_reader_once_with_every_frame_there() -> None:
    client, subs = reader()
    wire = b"".join(
        frame_prefix(len(b)) + b
        for b in (data_body(1, 0, seq, b"w", b"".join(encode_payload(seq))) for seq in (1, 2, 3))
    )
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.receive_data(wire)
    got = []
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            got.append((await subs[1].receive()).data)
            got.append(subs[1].statistics().buffered)

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        items = decoder.frames_and_runs(F.take_data_runs)
        client._take(items)
    assert got == [1, 2]


async def test_a_loss_notice_lands_on_its_message_after_a_frame_that_failed_to_decode() -> None:
    # DATA 1 (not CBOR), DATA 2, a notice of 3 frames lost after 2, DATA 6, DATA 7: the loss
    # is on 6. The frame that failed is still a position in the stream (it used to be
    # skipped in the count, so the loss landed on 7).
    client = Client(["tcp://127.0.0.1:1"], reconnect=None)
    sub = Subscription(client, {"channel": "c"}, {"sub": 1, "window": WINDOW_FRAMES})
    client._subscriptions[1] = sub
    notice = M.encode_message(M.Lost(sub=1, lost=3))

    def data_frame(seq: int, payload: bytes) -> bytes:
        body = data_body(1, 0, seq, b"w", payload)
        return frame_prefix(len(body)) + body

    decoder = FrameDecoder(MAX_FRAME_BYTES)
    decoder.receive_data(
        data_frame(1, b"\xff\xfe")
        + data_frame(2, b"\x02")
        + frame_prefix(len(notice))
        + notice
        + data_frame(6, b"\x06")
        + data_frame(7, b"\x07")
    )
    items = decoder.frames_and_runs(F.take_data_runs)
    client._take(items)
    got: list[Any] = []
    while sub.statistics().buffered:
        try:
            message = sub.receive_nowait()
        except ProtocolError:
            got.append("error")
        else:
            got.append((message.seq, message.lost))
    assert got == ["error", (2, 0), (6, 3), (7, 0)]
    assert sub.lost == 3 and sub.received == 4


async def test_two_loss_notices_in_a_row_are_both_counted_in_sub_lost() -> None:
    # The application has read everything when two notices come with no DATA between them:
    # the next message carries both in msg.lost, and sub.lost counts both (the second, merged
    # into a count already taken, used to be left out of sub.lost).
    client = Client(["tcp://127.0.0.1:1"], reconnect=None)
    sub = Subscription(client, {"channel": "c"}, {"sub": 1, "window": WINDOW_FRAMES})
    client._subscriptions[1] = sub
    notices = [M.encode_message(M.Lost(sub=1, lost=count)) for count in (2, 3)]
    body = data_body(1, 0, 9, b"w", b"\x09")
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    decoder.receive_data(
        b"".join(frame_prefix(len(n)) + n for n in notices) + frame_prefix(len(body)) + body
    )
    items = decoder.frames_and_runs(F.take_data_runs)
    client._take(items)
    message = sub.receive_nowait()
    assert (message.seq, message.lost, sub.lost) == (9, 5, 5)


def test_bulk_routing_compares_every_route_byte_once_low_bytes_first() -> None:
    # frames._take_alike compares these offsets across a run of frames: all of the length
    # prefix, type and sub id, or frames of another length or subscription could pass as
    # alike (a wire format change must change them too).
    columns = F._ROUTE_COLUMNS
    assert sorted(columns) == list(range(F._ROUTE_BYTES_WITH_PREFIX))
    prefix_low = PREFIX_BYTES - 1
    sub_id_low = PREFIX_BYTES + F.DATA_ROUTE_BYTES - 1
    assert columns[:2] == (prefix_low, sub_id_low)
