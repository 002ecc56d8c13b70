"""The payload and control codec: round trips of every value kind, and the hardening."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trio_stream import ProtocolError
from trio_stream._protocol.codec import (
    ZERO_COPY_MIN_BYTES,
    decode_control,
    decode_payload,
    encode_control,
    encode_payload,
)

NUMERIC_DTYPES = [
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


def roundtrip(value: Any) -> Any:
    wire = bytearray(b"".join(bytes(p) for p in encode_payload(value)))
    return decode_payload(wire)


def assert_same_array(got: Any, want: np.ndarray[Any, Any]) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype.newbyteorder("=") or got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(NUMERIC_DTYPES).map(np.dtype),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)
def test_any_numeric_array_round_trips(array: np.ndarray[Any, Any]) -> None:
    assert_same_array(roundtrip(array), array)


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(["<f8", ">f8", ">i4", "<u2"]).map(np.dtype),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
    ),
    st.booleans(),
)
def test_non_contiguous_and_big_endian_arrays_round_trip(
    array: np.ndarray[Any, Any], transpose: bool
) -> None:
    view = array.T if transpose else array[..., ::2]
    got = roundtrip(view)
    assert got.shape == view.shape
    np.testing.assert_array_equal(got, view)
    assert got.dtype.byteorder in ("=", "|", "<")  # the wire is little-endian


def test_large_array_is_sent_without_copy_and_decoded_writable() -> None:
    array = np.arange(ZERO_COPY_MIN_BYTES, dtype=np.float64)
    pieces = encode_payload(array)
    # The array's own memory is one of the pieces: nothing was copied.
    assert any(getattr(p, "obj", None) is array for p in pieces)
    got = roundtrip(array)
    got[0] = 42.0  # writable: numpy in-place maths works on what a reader receives
    np.testing.assert_array_equal(got[1:], array[1:])


def test_large_arrays_inside_containers_are_pieces_and_standard_cbor() -> None:
    value: dict[str, Any] = {
        "t": 1.5,
        "image": np.ones((64, 64)),
        "pair": [np.arange(1000.0), "x"],
    }
    pieces = encode_payload(value)
    assert len(pieces) > 1
    wire = b"".join(bytes(p) for p in pieces)
    # Standard CBOR: a generic decoder sees the RFC 8746 tags.
    generic = cbor2.loads(wire)
    assert generic["image"].tag == 40
    got = roundtrip(value)
    assert got["t"] == 1.5 and got["pair"][1] == "x"
    assert_same_array(got["image"], value["image"])
    assert_same_array(got["pair"][0], value["pair"][0])


def test_typed_array_tags_follow_rfc_8746() -> None:
    wire = b"".join(bytes(p) for p in encode_payload(np.array([1.0, 2.0])))
    assert wire[:2] == b"\xd8\x56"  # tag 86: float64 little-endian
    wire = b"".join(bytes(p) for p in encode_payload(np.zeros((2, 3), np.int16)))
    assert wire[:3] == b"\xd8\x28\x82"  # tag 40 around [shape, typed array]


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_plain_values_round_trip(value: Any) -> None:
    assert roundtrip(value) == value


def test_datetimes_and_numpy_scalars() -> None:
    now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
    assert roundtrip(now) == now
    assert roundtrip(np.float32(1.5)) == 1.5
    assert roundtrip({"n": np.int64(3)}) == {"n": 3}


def test_values_without_a_wire_form_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="cannot be sent"):
        encode_payload(object())
    with pytest.raises(TypeError, match="dtype"):
        encode_payload(np.array(["a", "b"]))
    with pytest.raises(ValueError):
        encode_payload(dt.datetime(2026, 1, 1))  # naive: ambiguous on the other side


@pytest.mark.parametrize(
    "wire",
    [
        cbor2.dumps(cbor2.CBORTag(35, "a+")),  # regex
        cbor2.dumps(cbor2.CBORTag(36, "MIME-Version: 1.0\n\nx")),  # MIME
        b"\x9f" + b"\x81" * 100 + b"\x01",  # absurd nesting
        cbor2.dumps(cbor2.CBORTag(86, b"\x00" * 7)),  # not a whole number of float64
        cbor2.dumps(cbor2.CBORTag(40, [[3], cbor2.CBORTag(86, b"\x00" * 16)])),  # bad shape
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # byte string longer than the input
    ],
)
def test_malformed_payloads_raise_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(bytearray(wire))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_decoders(wire: bytes) -> None:
    for decode in (decode_payload, decode_control):
        with contextlib.suppress(ProtocolError):
            decode(bytearray(wire))


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_control_decoder_is_hardened() -> None:
    assert decode_control(encode_control({"op": "x", "a": [1, 2]})) == {"op": "x", "a": [1, 2]}
    for bad in (
        cbor2.dumps({1: "int key"}),  # strict_hashable_types
        cbor2.dumps([1, 2]),  # not a map
        cbor2.dumps({"a": nested(20)}),  # deeper than 16
        cbor2.dumps({"op": "x"}) + b"\x01",  # trailing
        b"\xbf\x61a\x01\xff",  # indefinite-length map
        cbor2.dumps({"re": cbor2.CBORTag(35, "x")}),
    ):
        with pytest.raises(ProtocolError):
            decode_control(bad)
