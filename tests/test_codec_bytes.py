"""Byte-string payloads: built and parsed without cbor2, yet standard CBOR byte for byte.

A bytes value is sent as its CBOR head and its own memory (no copy); a bytearray or a
memoryview of bytes is copied once when it is encoded (the caller may reuse it); a byte string
of any length is decoded in one copy into the ``bytes`` a reader gets. The wire is what
cbor2 writes for the same bytes, and decoding gives what cbor2.loads gives.
"""

from __future__ import annotations

import ctypes
import random
from typing import Any

import cbor2
import numpy as np
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream import ProtocolError
from trio_stream._protocol.codec import ZERO_COPY_MIN_BYTES, decode_payload, encode_payload
from trio_stream._protocol.compression import compressor

# The lengths where the CBOR head changes width (24, 256, 65536) and where the encoder
# switches to a separate piece (ZERO_COPY_MIN_BYTES), each tried at the edge and next to it.
EDGES = (0, 23, 24, 255, 256, ZERO_COPY_MIN_BYTES, 65535, 65536, 2**20)
lengths = st.builds(
    lambda edge, delta: max(0, edge + delta), st.sampled_from(EDGES), st.integers(-2, 2)
)
BUFFER_KINDS = (
    "bytes",
    "bytearray",
    "view of bytes",
    "view of bytearray",
    "char view",
    "signed view",
    "strided view",
)


def content(length: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(length)


def as_kind(data: bytes, kind: str) -> Any:
    """``data`` as the given kind of buffer (the strided view skips every other byte)."""
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "view of bytes":
        return memoryview(data)
    if kind == "view of bytearray":
        return memoryview(bytearray(data))
    if kind == "char view":
        return memoryview(data).cast("c")
    if kind == "signed view":
        return memoryview(bytearray(data)).cast("b")
    assert kind == "strided view"
    return memoryview(data + data)[::2]  # not contiguous; its bytes are data (ones of each pair)


def its_bytes(data: bytes, kind: str) -> bytes:
    """The bytes that ``as_kind(data, kind)`` holds."""
    return (data + data)[::2] if kind == "strided view" else data


def wire_of(value: Any) -> bytes:
    return b"".join(bytes(p) for p in encode_payload(value))


def outcome(wire: bytes, head: bytes = b"") -> tuple[str, str]:
    """decode_payload's result for ``wire`` read at an offset in a frame: the value's repr and
    type, or the error type."""
    try:
        value = decode_payload(bytearray(head + wire), len(head))
    except ProtocolError:
        return "error", "ProtocolError"
    return type(value).__name__, repr(value)


def cbor2_outcome(wire: bytes) -> tuple[str, str]:
    try:
        value = cbor2.loads(wire)
    except (cbor2.CBORDecodeError, ValueError):
        return "error", "ProtocolError"
    return type(value).__name__, repr(value)


@settings(max_examples=250, deadline=None)
@given(
    length=lengths,
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(BUFFER_KINDS),
    head=st.binary(max_size=30),
)
def test_a_byte_payload_is_cbor2s_byte_string_and_decodes_to_the_same_bytes(
    length: int, seed: int, kind: str, head: bytes
) -> None:
    data = content(length, seed)
    value = as_kind(data, kind)
    expected = its_bytes(data, kind)
    wire = wire_of(value)
    assert wire == cbor2.dumps(expected)
    got = decode_payload(bytearray(head + wire), len(head))
    assert type(got) is bytes
    assert got == cbor2.loads(wire) == expected


byte_values = st.builds(
    lambda length, seed, kind: as_kind(content(length, seed), kind),
    lengths,
    st.integers(0, 2**32),
    st.sampled_from(("bytes", "bytearray")),
)
containers = st.recursive(
    byte_values | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@settings(max_examples=80, deadline=None)
@given(value=containers, with_array=st.booleans())
def test_byte_strings_inside_containers_are_cbor2s_and_decode_as_cbor2_does(
    value: Any, with_array: bool
) -> None:
    # A large array beside them makes the value go out in pieces, the large byte strings as
    # pieces of their own; without one it is a single cbor2 call. The wire is the same.
    array = np.linspace(0.0, 1.0, ZERO_COPY_MIN_BYTES)  # float64: tag 86
    sent: Any = [value, array] if with_array else value
    wire = wire_of(sent)
    plain: Any = [value, cbor2.CBORTag(86, array.tobytes())] if with_array else value
    assert wire == cbor2.dumps(plain)
    got = decode_payload(bytearray(wire))
    if with_array:
        np.testing.assert_array_equal(got[1], array)
        got = got[0]
    assert repr(got) == repr(cbor2.loads(cbor2.dumps(value)))


def test_a_large_bytes_value_goes_out_as_its_own_memory() -> None:
    data = bytes(ZERO_COPY_MIN_BYTES)
    assert any(piece is data for piece in encode_payload(data))
    view = memoryview(b"x" + data)[1:]
    pieces = encode_payload(view)
    assert any(getattr(piece, "obj", None) is view.obj for piece in pieces)
    view.release()  # the caller's own view: the encoded payload holds a view of its own
    assert b"".join(bytes(p) for p in pieces) == cbor2.dumps(data)
    # Inside a container that goes out in pieces, too.
    pieces = encode_payload({"raw": data, "array": np.zeros(ZERO_COPY_MIN_BYTES)})
    assert any(piece is data for piece in pieces)


@pytest.mark.parametrize("length", [10, 300, ZERO_COPY_MIN_BYTES, 2**20])
@pytest.mark.parametrize("kind", ["bytearray", "view of bytearray"])
def test_a_reused_buffer_does_not_change_a_payload_already_encoded(length: int, kind: str) -> None:
    buffer = bytearray(b"a" * length)
    value = memoryview(buffer) if kind == "view of bytearray" else buffer
    pieces = encode_payload(value)
    buffer[:] = b"b" * length
    assert b"".join(bytes(p) for p in pieces) == cbor2.dumps(b"a" * length)


def test_a_memoryview_of_other_items_keeps_cbor2s_encoding() -> None:
    # Only a view of single bytes is a byte string; cbor2 sends any other as its items.
    view = memoryview(np.arange(3.0))  # type: ignore[arg-type]
    assert wire_of(view) == cbor2.dumps(view)
    assert decode_payload(bytearray(wire_of(view))) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "view",
    [
        memoryview((ctypes.c_ubyte * 3)(1, 2, 3)),  # format "<B"
        memoryview((ctypes.c_char * 3)(b"\x01", b"\x02", b"\x03")),  # format "<c"
        # (the last: 2-D and not contiguous)
        memoryview(np.array([[1, 2], [3, 0]], np.uint8)[:, :1]),  # type: ignore[arg-type]
    ],
    ids=["ctypes c_ubyte", "ctypes c_char", "2-D strided"],
)
def test_a_view_of_single_bytes_in_any_format_or_shape_is_a_flat_byte_string(
    view: memoryview,
) -> None:
    assert wire_of(view) == cbor2.dumps(bytes(view.tobytes()))


def test_an_empty_two_dimensional_byte_view_is_an_empty_byte_string() -> None:
    assert wire_of(memoryview(np.zeros((0, 3), np.uint8))) == cbor2.dumps(b"")  # type: ignore[arg-type]


def test_a_view_with_no_wire_form_is_a_type_error_that_says_what_to_send() -> None:
    # Several dimensions of floats: cbor2 has no encoding (it raised NotImplementedError).
    with pytest.raises(TypeError, match=r"np\.asarray"):
        encode_payload(memoryview(np.zeros((2, 2))))  # type: ignore[arg-type]


def test_a_memoryview_inside_a_container_arrives_as_its_items() -> None:
    # What the README says: inside a list or dict, send bytes (a view is cbor2's list).
    assert decode_payload(bytearray(wire_of({"raw": memoryview(b"ab")}))) == {"raw": [97, 98]}
    assert decode_payload(bytearray(wire_of({"raw": b"ab"}))) == {"raw": b"ab"}


def test_a_large_array_nested_deeper_than_the_piece_scan_is_encoded_whole() -> None:
    array = np.arange(1000.0)  # 8000 bytes: large enough to go out as a piece
    value: Any = array
    for _ in range(10):
        value = [value]
    decoded = decode_payload(bytearray(wire_of(value)))
    for _ in range(10):
        decoded = decoded[0]
    np.testing.assert_array_equal(decoded, array)


# Byte strings whose length is written in 0, 1, 2, 4 or 8 bytes (a longer head than needed is
# still well-formed CBOR), complete, cut short or followed by more bytes.
@settings(max_examples=400, deadline=None)
@given(
    width=st.sampled_from([0, 1, 2, 4, 8]),
    length=st.integers(0, 300),
    cut=st.integers(0, 3),
    trailing=st.binary(max_size=3),
    head=st.binary(max_size=9),
)
def test_a_byte_string_with_any_length_head_decodes_as_cbor2_decides(
    width: int, length: int, cut: int, trailing: bytes, head: bytes
) -> None:
    if width == 0:
        length = min(length, 23)
        string_head = bytes([0x40 | length])
    else:
        length = min(length, 256**width - 1)
        info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
        string_head = bytes([0x40 | info]) + length.to_bytes(width, "big")
    wire = string_head + bytes(range(256))[:length] + trailing
    wire = wire[: len(wire) - cut] if cut else wire
    if not wire:
        return
    assert outcome(wire, head) == cbor2_outcome(wire)


def test_a_long_byte_string_cut_short_is_a_protocol_error() -> None:
    wire = cbor2.dumps(bytes(2**20))
    assert wire[0] == 0x5A  # a 4-byte length
    with pytest.raises(ProtocolError, match="malformed payload"):
        decode_payload(bytearray(wire[:-1]))
    with pytest.raises(ProtocolError, match="malformed payload"):
        decode_payload(bytearray(wire[:3]))


@pytest.mark.parametrize("name", ["zlib", "zstd"])
def test_a_compressed_large_bytes_payload_decodes_to_the_bytes(name: str) -> None:
    # zstd too: the test extra installs python-zstandard, so this never skips.
    compress = compressor(name)
    assert compress is not None
    data = bytes(range(256)) * 4096  # 1 MiB that compresses well
    pieces = compress(encode_payload(data))
    wire = bytearray(b"".join(bytes(p) for p in pieces))
    assert len(wire) < len(data) // 4
    got = decode_payload(wire)
    assert type(got) is bytes and got == data


FRAMES = 12
FRAME_BYTES = 256 * 1024
WAIT_S = 20.0


async def test_a_writer_that_refills_one_bytearray_delivers_every_value_as_it_was_sent(
    server: ts.Server,
) -> None:
    # The writer fills the same buffer again as soon as send() returns, while earlier frames
    # still wait in its window: every reader gets each value as it was at its send().
    assert server.tcp_url
    buffer = bytearray(FRAME_BYTES)
    with trio.fail_after(WAIT_S):
        async with (
            ts.open_client(server.tcp_url) as writer,
            ts.open_client(server.tcp_url) as reader,
        ):
            await writer.create_channel("raw")
            async with (
                reader.subscribe("raw", policy="block", size=FRAMES) as sub,
                writer.publisher("raw") as pub,
            ):
                await pub.wait_for_readers()
                for i in range(FRAMES):
                    buffer[:] = bytes([i]) * FRAME_BYTES
                    assert await pub.send(buffer)
                buffer[:] = b"\xff" * FRAME_BYTES
                got = [await sub.receive() for _ in range(FRAMES)]
    for i, msg in enumerate(got):
        assert type(msg.data) is bytes
        assert msg.data == bytes([i]) * FRAME_BYTES
