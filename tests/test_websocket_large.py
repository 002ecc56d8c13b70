"""Large frames over WebSocket: whole and bit-identical, and without wsproto's per-byte costs.

A 63 MiB array took ~6x as long over ws:// as over tcp://: wsproto masked a client's message
with strided slices in Python (~100 MB/s on a large one) and copied a message five to seven
times on its way out. trio_stream/_transport/websocket.py masks with numpy, frames large
messages itself, and hands a message of one large frame on without a second copy. The tests
of that cost count what goes through the slow paths instead of timing anything (a shared
machine's timings swing by half): the benchmark is benchmarks/ws_large.py.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import numpy as np
import pytest
import trio
import trio_websocket
import wsproto.frame_protocol
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, XorMaskerSimple

import trio_stream as ts
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import frame_prefix
from trio_stream._transport import websocket as websocket_transport
from trio_stream._transport.websocket import (
    DIRECT_MESSAGE_MIN_BYTES,
    MASK_CHUNK_BYTES,
    MESSAGE_BATCH_BYTES,
    NUMPY_MASK_MIN_BYTES,
    NumpyXorMasker,
    WebSocketTransport,
    batch_bounds,
    frame_header,
    message_pieces,
    send_masked,
    send_unmasked,
    single_frame,
    split_message,
)

MIB = 2**20
TIMEOUT_S = 60.0  # a 20 MiB array through a server and back on a loaded 2-core machine
# wsproto's own masker (its module's name for it is ours once trio_stream is imported).
WSPROTO_MASKER = cast("type[XorMaskerSimple]", NumpyXorMasker.__bases__[0])


def framed(body: bytes) -> bytes:
    return frame_prefix(len(body)) + body


def masked_by_rfc(data: bytes, key: bytes) -> bytes:
    """RFC 6455 5.3, byte by byte: the reference for the masking."""
    return bytes(byte ^ key[i % 4] for i, byte in enumerate(data))


def cut_into(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@asynccontextmanager
async def ws_server() -> AsyncIterator[ts.Server]:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)
    async with ts.open_server(config) as server:
        yield server


async def round_trip(server: ts.Server, *arrays: np.ndarray[Any, Any]) -> list[Any]:
    """Each array published by one ws:// client and received by another, in turn."""
    received = []
    async with ts.open_client(server.ws_url) as writer, ts.open_client(server.ws_url) as reader:
        await writer.create_channel("large")
        async with (
            reader.subscribe("large", policy="block", size=2) as sub,
            writer.publisher("large") as pub,
        ):
            await pub.wait_for_readers()
            for array in arrays:
                await pub.send(array)
                received.append((await sub.receive()).data)
    return received


# -- end to end -------------------------------------------------------------------------------
async def test_a_20_mib_array_crosses_websocket_bit_identical() -> None:
    rng = np.random.default_rng(20)
    # Every bit pattern (NaNs with payloads included), and a length that is no multiple of 4
    # (the mask's last bytes and its turn from one piece to the next).
    floats = rng.integers(0, 2**64, size=20 * MIB // 8, dtype=np.uint64).view(np.float64)
    odd = rng.integers(0, 256, size=20 * MIB + 3, dtype=np.uint8)
    with trio.fail_after(TIMEOUT_S):
        async with ws_server() as server:
            got_floats, got_odd = await round_trip(server, floats, odd)
    assert got_floats.dtype == floats.dtype and got_floats.shape == floats.shape
    assert got_floats.tobytes() == floats.tobytes()
    assert got_odd.dtype == odd.dtype and got_odd.tobytes() == odd.tobytes()


async def test_a_large_frame_skips_wsproto_per_byte_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """What made large frames slow, counted rather than timed: wsproto's own masking never
    sees a large piece (numpy masks and unmasks it), wsproto never frames a large message
    (the transport writes it), and the receiving side gets a message of one frame as a
    bytearray, which becomes the frame without a copy."""
    slow_masked: list[int] = []
    numpy_masked: list[int] = []
    wsproto_framed: list[int] = []
    single: list[tuple[type, int, bool]] = []
    wsproto_process = WSPROTO_MASKER.process
    numpy_process = NumpyXorMasker.process
    wsproto_send_data = FrameProtocol.send_data
    real_single_frame = single_frame

    def counted_slow(self: Any, data: bytearray) -> bytearray:
        slow_masked.append(len(data))
        return wsproto_process(self, data)

    def counted_numpy(self: Any, data: bytearray) -> bytearray:
        numpy_masked.append(len(data))
        return numpy_process(self, data)

    def counted_send_data(self: Any, payload: Any = b"", fin: bool = True) -> bytearray:
        wsproto_framed.append(len(payload))
        return wsproto_send_data(self, payload, fin)

    def counted_single(message: bytes | bytearray, max_frame_bytes: int) -> bytearray | None:
        body_at = np.frombuffer(message, np.uint8).ctypes.data + 4
        single.append((type(message), len(message), body_at % 16 == 0))
        return real_single_frame(message, max_frame_bytes)

    monkeypatch.setattr(WSPROTO_MASKER, "process", counted_slow)
    monkeypatch.setattr(NumpyXorMasker, "process", counted_numpy)
    monkeypatch.setattr(FrameProtocol, "send_data", counted_send_data)
    monkeypatch.setattr(websocket_transport, "single_frame", counted_single)
    array = np.arange(4 * MIB // 8, dtype=np.float64)
    with trio.fail_after(TIMEOUT_S):
        async with ws_server() as server:
            (got,) = await round_trip(server, array)
    np.testing.assert_array_equal(got, array)
    assert wsproto_framed and max(wsproto_framed) < DIRECT_MESSAGE_MIN_BYTES
    assert max(slow_masked, default=0) < NUMPY_MASK_MIN_BYTES  # (numpy's own small inputs)
    assert sum(numpy_masked) >= array.nbytes  # the server unmasked the writer's message
    large = [(kind, size, aligned) for kind, size, aligned in single if size > array.nbytes]
    assert len(large) == 2  # the server's from the writer, the reader's from the server
    assert all(kind is bytearray for kind, _, _ in large)
    # The frame's body (after the 4-byte prefix) starts as a buffer of its own would: an
    # array in it is aligned or not as over TCP (numpy copies an unaligned one).
    assert all(aligned for _, _, aligned in large)


def test_wsproto_masks_with_numpy() -> None:
    # Both sides of wsproto look the masker up by this name for each frame.
    assert wsproto.frame_protocol.XorMaskerSimple is NumpyXorMasker
    handler = trio_websocket.WebSocketConnection._handle_message_event
    assert getattr(handler, "_trio_stream_bytearray_messages", False)


# -- masking ------------------------------------------------------------------------------------
@given(
    st.binary(min_size=0, max_size=3 * NUMPY_MASK_MIN_BYTES),
    st.lists(st.integers(min_value=0), max_size=6),
    st.binary(min_size=4, max_size=4),
)
def test_numpy_masker_masks_as_rfc_6455_says_in_pieces_of_any_size(
    data: bytes, cuts: list[int], key: bytes
) -> None:
    masker = NumpyXorMasker(bytearray(key))
    out = b"".join(masker.process(bytearray(piece)) for piece in cut_into(data, cuts))
    assert out == masked_by_rfc(data, key)


def test_numpy_masker_leaves_its_input_alone_and_masks_large_data() -> None:
    data = bytearray(np.random.default_rng(3).integers(0, 256, 3 * MIB + 1, np.uint8).tobytes())
    original = bytes(data)
    key = b"\x01\x80\xfe\x37"
    first = NumpyXorMasker(bytearray(key)).process(data[: MIB + 3])
    masker = NumpyXorMasker(bytearray(key))
    out = masker.process(data[: MIB + 3]) + masker.process(data[MIB + 3 :])
    assert data == original
    assert out[: MIB + 3] == first
    expected = np.frombuffer(original, np.uint8) ^ np.resize(
        np.frombuffer(key, np.uint8), len(data)
    )
    assert out == expected.tobytes()


# -- frames written past wsproto -----------------------------------------------------------------
class Recorder:
    """A stream that keeps what is written to it."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.writes = 0

    async def send_all(self, data: BytesLike) -> None:
        self.written += data
        self.writes += 1


def wsproto_reads(wire: bytes, *, client: bool) -> list[tuple[Opcode, bytes, bool]]:
    """The frames that a wsproto endpoint (the client's, or the server's) reads in ``wire``."""
    protocol = FrameProtocol(client=client, extensions=[])
    protocol.receive_bytes(wire)
    payloads = bytearray()
    frames = []
    for frame in protocol.received_frames():
        assert isinstance(frame.payload, (bytes, bytearray))
        payloads += frame.payload
        if frame.frame_finished:
            frames.append((frame.opcode, bytes(payloads), frame.message_finished))
            payloads = bytearray()
    return frames


SIZES = [0, 1, 125, 126, 1000, 65535, 65536, 65537, MASK_CHUNK_BYTES - 13, 2 * MASK_CHUNK_BYTES + 5]


@pytest.mark.parametrize("size", SIZES)
async def test_direct_frames_are_wsprotos_own(size: int) -> None:
    payload = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
    pieces: list[BytesLike] = [
        memoryview(piece) for piece in cut_into(payload, [7, size // 3, size // 3 + 1])
    ]
    key = b"\x9a\x02\xc4\x5f"
    # A server's frame: byte for byte what wsproto writes.
    unmasked = Recorder()
    await send_unmasked(unmasked, frame_header(size, None), pieces)  # type: ignore[arg-type]
    assert bytes(unmasked.written) == bytes(FrameProtocol(False, []).send_data(payload))
    # A client's frame: the header wsproto writes, the key, the payload masked as the RFC says.
    masked = Recorder()
    header = frame_header(size, key)
    await send_masked(masked, header, pieces, size, key)  # type: ignore[arg-type]
    wsprotos = bytes(FrameProtocol(True, []).send_data(payload))
    assert header == wsprotos[: len(wsprotos) - size - 4] + key
    assert bytes(masked.written) == header + masked_by_rfc(payload, key)
    assert wsproto_reads(bytes(masked.written), client=False) == [(Opcode.BINARY, payload, True)]
    # Through one buffer of at most MASK_CHUNK_BYTES: the message is never copied whole.
    chunk = len(header) + min(size, MASK_CHUNK_BYTES)
    assert masked.writes == -(-(len(header) + size) // chunk)


@settings(max_examples=200)
@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=30),
    st.lists(st.integers(min_value=0), max_size=10),
    st.integers(min_value=1, max_value=2000),
)
def test_message_pieces_cut_as_batch_bounds_without_joining(
    bodies: list[bytes], cuts: list[int], limit: int
) -> None:
    data = b"".join(framed(body) for body in bodies)
    pieces: list[BytesLike] = list(cut_into(data, cuts))  # prefixes cut across pieces too
    messages = [(b"".join(parts), size) for parts, size in message_pieces(pieces, limit)]
    expected = [data[start:end] for start, end in batch_bounds(data, limit)]
    assert [message for message, _ in messages] == expected
    assert all(size == len(message) for message, size in messages)


def test_single_frame_takes_a_bytearray_message_without_a_copy() -> None:
    body = bytes(range(256)) * (DIRECT_MESSAGE_MIN_BYTES // 256)
    message = bytearray(framed(body))
    frame = single_frame(message, len(body))
    assert frame is message and frame == body
    copied = single_frame(framed(body), len(body))  # bytes: one copy
    assert copied is not None and bytes(copied) == body
    # Not its business: small, several frames, over the limit (split_message says what).
    assert single_frame(bytearray(framed(b"x" * 100)), 2**20) is None
    assert single_frame(bytearray(framed(body) + framed(b"x")), 2**30) is None
    assert single_frame(bytearray(framed(body)), len(body) - 1) is None
    with pytest.raises(ts.FrameTooLarge):
        split_message(bytearray(framed(body)), len(body) - 1)


# -- real connections ---------------------------------------------------------------------------
@asynccontextmanager
async def transport_pair(
    max_frame_bytes: int,
) -> AsyncIterator[tuple[WebSocketTransport, WebSocketTransport, trio.SocketStream]]:
    """(client, server, the client's socket stream): two transports over loopback TCP."""
    limit = websocket_transport.max_message_bytes(max_frame_bytes)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio_websocket.WebSocketConnection] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            stream = await listeners[0].accept()
            request = await trio_websocket.wrap_server_stream(
                nursery, stream, max_message_size=limit
            )
            accepted.append(await request.accept())
            done.set()

        nursery.start_soon(serve)
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = await trio_websocket.wrap_client_stream(
            nursery, client_stream, "127.0.0.1", "/ws", max_message_size=limit
        )
        await done.wait()
        yield (
            WebSocketTransport(client, max_frame_bytes, "the server"),
            WebSocketTransport(accepted[0], max_frame_bytes, "the client"),
            client_stream,
        )
        nursery.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()


async def receive_n(transport: WebSocketTransport, count: int) -> list[bytearray]:
    frames: list[bytearray] = []
    while len(frames) < count:
        frames += await transport.receive_frames()
    return frames


async def test_large_messages_both_ways_over_real_connections() -> None:
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, 3 * MIB + 1, np.uint8).tobytes()
    middling = [rng.integers(0, 256, 300_000, np.uint8).tobytes() for _ in range(5)]
    small = [bytes([i]) * 50 for i in range(20)]
    with trio.fail_after(TIMEOUT_S):
        async with transport_pair(8 * MIB) as (client, server, _):
            assert client._direct and server._direct  # the way large messages go
            # One large frame: a head piece and a body, as a publisher sends them.
            await client.send([frame_prefix(len(big))[:2], frame_prefix(len(big))[2:], big])
            assert await receive_n(server, 1) == [big]
            await server.send([frame_prefix(len(big)), memoryview(big)])
            assert await receive_n(client, 1) == [big]
            # A batch over the message budget: cut between frames, sent in order.
            bodies = small[:10] + middling + small[10:]
            pieces: list[BytesLike] = [
                p for body in bodies for p in (frame_prefix(len(body)), body)
            ]
            assert sum(map(len, pieces)) > MESSAGE_BATCH_BYTES
            await client.send(pieces)
            assert await receive_n(server, len(bodies)) == bodies
            await server.send(pieces)
            assert await receive_n(client, len(bodies)) == bodies


async def test_a_large_message_on_a_closed_connection_raises_connection_closed() -> None:
    big = bytes(2 * MIB)
    with trio.fail_after(TIMEOUT_S):
        async with transport_pair(8 * MIB) as (client, _server, _):
            await client.aclose()
            with pytest.raises(ts.ConnectionClosed):
                await client.send([frame_prefix(len(big)), big])
        async with transport_pair(8 * MIB) as (client, _server, stream):
            await trio.aclose_forcefully(stream)  # the socket gone under trio-websocket
            with pytest.raises(ts.ConnectionClosed):
                await client.send([frame_prefix(len(big)), big])
