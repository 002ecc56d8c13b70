"""The payload and control codec: round trips of every value kind, and the hardening."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trio_stream import InvalidArgument, PayloadLimits, PayloadRefused, ProtocolError
from trio_stream._protocol import codec
from trio_stream._protocol.cbor_scan import check_key_collisions
from trio_stream._protocol.codec import (
    CBOR2_BUILTIN_TAGS,
    CONTROL_MAX_ITEMS,
    READER_BUFFER_MAX_BYTES,
    ZERO_COPY_MIN_BYTES,
    PayloadReader,
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


def test_large_array_is_copied_once_not_encoded_and_decoded_writable() -> None:
    array = np.arange(ZERO_COPY_MIN_BYTES, dtype=np.float64)
    pieces = encode_payload(array)
    # Its elements are a piece of their own, copied (the caller may refill the array as
    # soon as send() returns), not run through an encoder...
    assert pieces[-1] == array.tobytes() and type(pieces[-1]) is bytes
    array[0] = -1.0
    assert pieces[-1] != array.tobytes()
    # ... and the array's own memory for a caller that joins them at once.
    pieces = encode_payload(array, copy=False)
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


@settings(max_examples=200, deadline=None)
@given(
    # st.text() never draws a surrogate, so the str is joined from its characters here.
    st.lists(st.integers(0xD800, 0xDFFF).map(chr) | st.characters(), max_size=8).map("".join),
    st.booleans(),
)
def test_text_either_round_trips_or_is_an_invalid_argument(text: str, as_key: bool) -> None:
    # Any str, lone surrogates included: UTF-8 cannot encode those, and the caller gets an
    # InvalidArgument that says where, never the encoder's UnicodeEncodeError.
    value: Any = {text: 1} if as_key else text
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        with pytest.raises(InvalidArgument, match=f"at position {exc.start} cannot be sent"):
            encode_payload(value)
    else:
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
    for dtype in ("datetime64[s]", "timedelta64[ms]"):  # numpy's own buffer error before
        with pytest.raises(TypeError, match=r"cannot be sent.*\.view\('int64'\)"):
            encode_payload({"t": np.zeros(3, dtype=dtype)})
    with pytest.raises(ValueError, match=r"without a timezone .* datetime.now\(timezone.utc\)"):
        encode_payload(dt.datetime(2026, 1, 1))  # naive: ambiguous on the other side
    # A masked array went as its data alone, the mask lost without a word; small or large.
    for masked in (
        np.ma.masked_array([1, 2], mask=[False, True]),
        np.ma.masked_array(np.zeros(10**5)),
    ):
        with pytest.raises(TypeError, match=r"masked numpy arrays .* arr\.filled\(value\)"):
            encode_payload({"m": masked})


@pytest.mark.parametrize(
    "value",
    [
        object(),
        [1, object()],
        dt.datetime(2026, 1, 1),
        np.array(["a"]),
        [np.zeros(ZERO_COPY_MIN_BYTES), object()],  # refused on the way in pieces
    ],
)
def test_a_value_without_a_wire_form_shows_one_error_not_cbor2_s_before_it(value: Any) -> None:
    # A traceback that repeats the message, or cbor2's own first, buries what to do.
    with pytest.raises((TypeError, ValueError)) as caught:
        encode_payload(value)
    error = caught.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_a_value_that_fails_leaves_the_reused_encoder_as_good_as_new() -> None:
    # encode_payload reuses one cbor2 encoder per thread (codec._ThreadEncoder).
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    failing = [cyclic, object(), {"a": [object()]}, dt.datetime(2026, 1, 1), np.array(["a"])]
    value = [time.time_ns(), 7, False, {"x": np.float32(1.5), "y": b"q" * 30}]
    for bad in failing:
        with pytest.raises((TypeError, ValueError)):
            encode_payload(bad)
        assert encode_payload(value) == [cbor2.dumps(value, default=codec._encode_default)]
    # a large array in a container: the hook gives up, the value goes out in pieces
    pieces = encode_payload({"big": np.zeros(ZERO_COPY_MIN_BYTES)})
    assert len(pieces) > 1
    assert encode_payload(value) == [cbor2.dumps(value, default=codec._encode_default)]


def test_threads_encoding_at_once_each_get_their_own_values() -> None:
    # The default hook (numpy scalars here) runs Python code, so the GIL passes between
    # threads in the middle of a value: one encoder shared by the threads mixes them up.
    def values(thread: int) -> list[Any]:
        return [[thread, i, np.int64(i), "x" * (i % 40), np.float64(i / 3)] for i in range(2000)]

    expected = {
        t: [cbor2.dumps(v, default=codec._encode_default) for v in values(t)] for t in range(4)
    }
    got: dict[int, list[bytes]] = {}

    def encode_all(thread: int) -> None:
        got[thread] = [b"".join(bytes(p) for p in encode_payload(v)) for v in values(thread)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        threads = [threading.Thread(target=encode_all, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert got == expected


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


def cbor_items(value: Any) -> int:
    """The CBOR items ``value`` encodes to (a map's pairs count two each)."""
    if isinstance(value, dict):
        return 1 + sum(cbor_items(k) + cbor_items(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(cbor_items(v) for v in value)
    return 1


ENVELOPE_VALUES = st.recursive(
    # (What an envelope may hold: no NaN, which equals nothing, and no bignum, a tag.)
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), ENVELOPE_VALUES, max_size=6), st.integers(1, 80))
def test_an_item_budget_refuses_exactly_the_envelopes_over_it(
    envelope: dict[str, Any], budget: int
) -> None:
    wire = encode_control(envelope)
    items = cbor_items(envelope)
    if items > budget:
        with pytest.raises(ProtocolError, match=f"more than {budget} CBOR items"):
            decode_control(wire, max_items=budget)
    else:
        assert decode_control(wire, max_items=budget) == decode_control(wire)


def test_a_control_message_of_many_small_items_is_refused_before_it_is_decoded() -> None:
    # One 16 MiB message of empty maps (an unknown op) held the server for 4.3 s and took
    # 1.2 GB of memory to decode (a fuzzer). The walk stops at the budget.
    bomb = b"\xa2bopebogusdlist" + cbor_head(4, 16 * 2**20) + b"\xa0" * (16 * 2**20)
    with pytest.raises(ProtocolError, match=f"more than {CONTROL_MAX_ITEMS} CBOR items"):
        decode_control(bomb, max_items=CONTROL_MAX_ITEMS)
    assert elapsed(lambda: decode_control(bomb, max_items=CONTROL_MAX_ITEMS)) < 0.05
    # A large envelope of few items (an RPC's arguments: one byte string) is decoded.
    call = {"op": "call", "id": 1, "args": bytes(16 * 2**20)}
    assert decode_control(encode_control(call), max_items=CONTROL_MAX_ITEMS) == call


# -- cost guards: every decode of untrusted bytes is bounded in time ------------------------------
def cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    return struct.pack(">BQ", major << 5 | 27, value)


def decimal_bomb(mantissa_bytes: int, tag: int = 4) -> bytes:
    """A decimal fraction (tag 4) or bigfloat (5) with a huge bignum mantissa."""
    return (
        bytes((0xC0 | tag, 0x82, 0x00))
        + b"\xc2"
        + cbor_head(2, mantissa_bytes)
        + b"\xff" * (mantissa_bytes)
    )


def colliding_keys(count: int) -> bytes:
    """A map of ``count`` int keys that all hash alike (i * (2**61 - 1))."""
    return cbor_head(5, count) + b"".join(
        cbor2.dumps(i * (2**61 - 1)) + b"\x00" for i in range(1, count + 1)
    )


def elapsed(fn: Callable[[], Any]) -> float:
    """The fastest of three calls: a slow decode is slow every time, while a neighbour on the
    machine's cores (CI shares them) slows one call."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with contextlib.suppress(ProtocolError):
            fn()
        times.append(time.perf_counter() - start)
    return min(times)


# The repro of the pre-authentication freeze: a 1 MiB CONTROL body (89 s of CPU before).
FREEZE_REPRO = b"\xa2bopdpingddata" + decimal_bomb(2**20)


def test_control_envelope_with_a_huge_decimal_is_refused_in_linear_time() -> None:
    with pytest.raises(ProtocolError, match=r"tag [24] is not allowed in a control message"):
        decode_control(FREEZE_REPRO)
    assert elapsed(lambda: decode_control(FREEZE_REPRO)) < 0.05


@pytest.mark.parametrize("tag", (*CBOR2_BUILTIN_TAGS, 40, 86, 7631617, 99999, 2**64 - 1))
def test_control_envelopes_refuse_every_tag(tag: int) -> None:
    wire = b"\xa2bopdpingddata" + cbor_head(6, tag) + b"\x01"
    with pytest.raises(ProtocolError, match=f"tag {tag} is not allowed"):
        decode_control(wire)


def test_control_envelopes_refuse_integers_beyond_64_bits() -> None:
    for number in (2**64, -(2**64) - 1, 2**70, 10**5000):
        with pytest.raises(ProtocolError, match=r"tag [23] is not allowed"):
            decode_control(cbor2.dumps({"op": "reply", "id": number}))
    assert decode_control(cbor2.dumps({"id": 2**64 - 1}))["id"] == 2**64 - 1


def test_control_envelopes_refuse_shared_values_that_would_re_encode_exponentially() -> None:
    shared = b"\xa2bopdpingddata\x82\xd8\x1c\x80\xd8\x1d\x00"  # [shareable([]), ref(0)]
    with pytest.raises(ProtocolError, match="tag 28"):
        decode_control(shared)


@pytest.mark.parametrize("tag", [4, 5])
def test_payload_decimal_with_a_huge_mantissa_is_refused_quickly(tag: int) -> None:
    bomb = decimal_bomb(64 * 1024, tag)  # 0.34 s before
    with pytest.raises(PayloadRefused, match=r"max_bignum_bytes \(1024\)"):
        decode_payload(bomb)
    medium = decimal_bomb(1000, tag)  # within max_bignum_bytes, beyond max_decimal_bytes
    with pytest.raises(PayloadRefused, match=r"PayloadLimits.max_decimal_bytes \(64\).*raise it"):
        decode_payload(medium)
    assert elapsed(lambda: decode_payload(bomb)) < 0.01
    raised = PayloadLimits(max_decimal_bytes=1000)
    assert isinstance(decode_payload(medium, limits=raised), decimal.Decimal)


def test_payload_bignum_over_the_limit_is_refused_and_can_be_allowed() -> None:
    wire = cbor2.dumps(2**20000)
    with pytest.raises(PayloadRefused, match=r"integer of 2501 bytes exceeds PayloadLimits"):
        decode_payload(wire)
    assert decode_payload(wire, limits=PayloadLimits(max_bignum_bytes=4096)) == 2**20000


def test_payload_map_of_colliding_keys_is_refused_quickly_and_can_be_allowed() -> None:
    bomb = colliding_keys(20_000)  # 1.6 s per decode before
    with pytest.raises(PayloadRefused, match=r"max_key_collisions.*raise it"):
        decode_payload(bomb)
    assert elapsed(lambda: decode_payload(bomb)) < 0.05
    small = colliding_keys(100)
    assert len(decode_payload(small, limits=PayloadLimits(max_key_collisions=100))) == 100


def test_colliding_set_elements_and_nested_maps_are_caught_too() -> None:
    as_set = (
        b"\xd9\x01\x02"
        + cbor_head(4, 100)
        + b"".join(cbor2.dumps(i * (2**61 - 1)) for i in range(1, 101))
    )
    with pytest.raises(PayloadRefused):
        decode_payload(as_set)
    deep = b"\xa1at\x82\x01\xa1\x01" + colliding_keys(100)  # {"t": [1, {1: bomb}]}
    with pytest.raises(PayloadRefused):
        decode_payload(deep)


def test_payload_depth_limit_is_enforced_and_can_be_raised() -> None:
    wire = cbor2.dumps(nested(100))
    with pytest.raises(ProtocolError):
        decode_payload(wire)
    assert decode_payload(wire, limits=PayloadLimits(max_depth=200)) == nested(100)


def test_payload_limits_must_be_positive_ints() -> None:
    for bad in ({"max_depth": 0}, {"max_bignum_bytes": 1.5}, {"max_depth": 10_000}):
        with pytest.raises(InvalidArgument, match="PayloadLimits"):  # (a ValueError too)
            PayloadLimits(**bad)


hashable_keys = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.tuples(st.integers(), st.text(max_size=3))
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(hashable_keys, st.integers() | st.text(max_size=3), max_size=20)
    | st.frozensets(st.integers() | st.text(max_size=3), max_size=10)
    | st.lists(st.dictionaries(st.integers(), st.none(), max_size=5), max_size=3)
    | st.decimals(allow_nan=False, allow_infinity=False, places=5)
)
def test_values_with_any_keys_and_decimals_decode_as_cbor2_does(value: Any) -> None:
    wire = cbor2.dumps(value)
    assert decode_payload(wire) == cbor2.loads(wire)


def test_typed_array_payloads_take_no_per_element_scan() -> None:
    array = np.arange(2**17, dtype=np.float64)  # 1 MiB
    wire = bytearray(b"".join(bytes(p) for p in encode_payload({"a": array, 1: 2})))
    decoded = decode_payload(wire)  # the int key sends it through the key walk
    np.testing.assert_array_equal(decoded["a"], array)
    assert elapsed(lambda: decode_payload(wire)) < 0.05


# -- the key walk (cbor_scan): a parser of untrusted bytes --------------------------------------
def walk(data: bytes) -> None:
    check_key_collisions(
        memoryview(data), max_collisions=4, max_depth=64, decode_key=lambda b: cbor2.loads(b)
    )


cbor_values = st.recursive(
    st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.none()
    | st.booleans(),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.integers(0, 3) | st.text(max_size=2), c, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 100, 258, 1000]), c)
    ),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(cbor_values)
def test_key_walk_accepts_well_formed_cbor_and_every_cut_is_an_error(value: Any) -> None:
    wire = cbor2.dumps(value)
    walk(wire)  # well-formed: no error (at most 4 keys per map, so no collision refusal)
    for cut in range(len(wire)):
        with pytest.raises((ValueError, ProtocolError)):
            walk(wire[:cut])
        with pytest.raises(ProtocolError):
            decode_payload(wire[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_key_walk_raises_only_value_error_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ValueError, ProtocolError):
        walk(data)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: b"\x9f" * 60 + b"\x80" * n,  # many items, shallow
        lambda n: cbor_head(5, n) + b"\x01\x00" * n,  # int keys (distinct hashes)
        lambda n: b"\x5f" + b"\x41a" * n + b"\xff",  # indefinite string of many chunks
        lambda n: cbor_head(4, n) + b"\xf6" * n,  # nulls
    ],
    ids=["shallow", "int keys", "chunks", "nulls"],
)
def test_decode_time_is_linear_in_the_input(make: Callable[[int], bytes]) -> None:
    def decode_time(wire: bytes) -> float:
        return elapsed(lambda: decode_payload(wire))

    small, large = decode_time(make(20_000)), decode_time(make(160_000))
    # 8x the input: linear is ~8x; quadratic would be ~64x. Generous for a loaded machine.
    assert large < 24 * small + 0.01


# -- PayloadReader: one reader's buffer and decoders, the same answers --------------------------
def outcome(decode: Callable[[], Any]) -> tuple[str, str]:
    """What a decode gives, comparable across two decoders: the value's repr (NaN, arrays)
    or the error's type and message."""
    try:
        return "value", repr(decode())
    except (ProtocolError, PayloadRefused) as exc:
        return type(exc).__name__, str(exc)


STRICT_LIMITS = PayloadLimits(max_depth=3, max_key_collisions=2, max_bignum_bytes=4)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8),
            cbor_values.map(cbor2.dumps) | st.binary(max_size=120),
            st.integers(0, 200),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([PayloadLimits(), STRICT_LIMITS]),
)
def test_a_reader_decodes_every_payload_as_decode_payload_does(
    payloads: list[tuple[int, bytes, int]], limits: PayloadLimits
) -> None:
    """One reader across a sequence (so stale bytes of a longer payload are behind a shorter
    one, and errors come between values): each answer is decode_payload's without it, cut
    payloads included."""
    reader = PayloadReader(limits)
    for head, wire, cut in payloads:
        data = bytearray(b"\xee" * head) + wire[: max(1, len(wire) - cut % 4)]
        alone = outcome(lambda: decode_payload(data, head, limits))  # noqa: B023
        assert outcome(lambda: decode_payload(data, head, limits, reader)) == alone  # noqa: B023


def test_a_reader_leaves_large_payloads_and_fast_kinds_to_the_usual_paths() -> None:
    reader = PayloadReader()
    large = cbor2.dumps(["x" * READER_BUFFER_MAX_BYTES])
    assert decode_payload(bytearray(large), 0, PayloadLimits(), reader) == cbor2.loads(large)
    array = np.arange(4, dtype=np.float64)
    wire = bytearray(b"".join(bytes(p) for p in encode_payload(array)))
    got = decode_payload(wire, 0, PayloadLimits(), reader)
    np.testing.assert_array_equal(got, array)
    assert decode_payload(bytearray(cbor2.dumps(b"abc")), 0, PayloadLimits(), reader) == b"abc"
    assert reader._buffer.tell() == 0  # none of them went through its buffer
    assert decode_payload(bytearray(cbor2.dumps([1])), 0, PayloadLimits(), reader) == [1]
    assert reader._buffer.tell() == 2  # a small CBOR value does


def test_a_reader_starts_shared_values_and_string_references_afresh() -> None:
    # cbor2 keeps shared values (tags 28/29) and string references (256/25) per decode: a
    # reference to what an earlier payload shared is as malformed as on its own.
    reader = PayloadReader()
    shared = bytearray(cbor2.dumps(cbor2.CBORTag(28, [1, 2])))
    assert decode_payload(shared, 0, PayloadLimits(), reader) == [1, 2]
    with pytest.raises(ProtocolError, match="shared reference 0 not found"):
        decode_payload(bytearray(b"\xd8\x1d\x00"), 0, PayloadLimits(), reader)
    names = bytearray(cbor2.dumps(["abcdefgh", "abcdefgh"], string_referencing=True))
    assert decode_payload(names, 0, PayloadLimits(), reader) == ["abcdefgh", "abcdefgh"]
    with pytest.raises(ProtocolError):
        decode_payload(bytearray(b"\xd8\x19\x00"), 0, PayloadLimits(), reader)


def test_an_interrupt_inside_a_hook_goes_on_up_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # cbor2 wraps what a semantic decoder raises, a KeyboardInterrupt too: it is not a
    # malformed payload, and a reader does not swallow it by decoding again.
    limits = PayloadLimits(max_depth=7)
    decoders = codec._payload_decoders(limits)

    decode_decimal = decoders[4]
    calls = 0

    def interrupted_once(decoder: Any, immutable: bool) -> Any:  # as one Ctrl-C
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return decode_decimal(decoder, immutable)

    monkeypatch.setitem(decoders, 4, interrupted_once)
    wire = bytearray(cbor2.dumps([decimal.Decimal("1.5")] * 3))
    for reader in (None, PayloadReader(limits)):
        calls = 0
        with pytest.raises(KeyboardInterrupt):
            decode_payload(wire, 0, limits, reader)
        assert decode_payload(wire, 0, limits, reader) == [decimal.Decimal("1.5")] * 3


def test_a_reader_goes_on_after_a_refusal_with_a_fresh_decoder() -> None:
    reader = PayloadReader(STRICT_LIMITS)
    deep = bytearray(cbor2.dumps([[[[[1]]]]]))
    with pytest.raises(PayloadRefused, match=r"nesting deeper than PayloadLimits\.max_depth"):
        decode_payload(deep, 0, STRICT_LIMITS, reader)
    with pytest.raises(PayloadRefused, match="bignum"):
        decode_payload(bytearray(cbor2.dumps(2**80)), 0, STRICT_LIMITS, reader)
    with pytest.raises(ProtocolError):
        decode_payload(bytearray(b"\x82\x01"), 0, STRICT_LIMITS, reader)  # cut after a longer one
    assert decode_payload(bytearray(cbor2.dumps([1, {"a": 2}])), 0, STRICT_LIMITS, reader) == [
        1,
        {"a": 2},
    ]


@pytest.mark.parametrize("with_reader", [False, True])
def test_nesting_beyond_max_depth_is_refused_as_a_limit_not_as_malformed(
    with_reader: bool,
) -> None:
    limits = PayloadLimits(max_depth=8)
    reader = PayloadReader(limits) if with_reader else None

    def nested(levels: int) -> bytearray:
        value: list[object] = []
        for _ in range(levels - 1):
            value = [value]
        return bytearray(cbor2.dumps(value))

    # cbor2's count: max_depth=N takes N + 1 levels. The walk of a payload with an int key
    # (cbor_scan) and cbor2 itself must agree, whichever refuses.
    assert decode_payload(nested(9), 0, limits, reader) is not None
    for levels in (10, 40):
        with pytest.raises(PayloadRefused, match=r"PayloadLimits.max_depth \(8\)"):
            decode_payload(nested(levels), 0, limits, reader)
    keyed = bytearray(cbor2.dumps({1: cbor2.loads(nested(9))}))
    with pytest.raises(PayloadRefused, match="max_depth"):
        decode_payload(keyed, 0, limits, reader)


def test_bytes_after_a_payloads_first_item_are_not_looked_for() -> None:
    # As docs/protocol.md section 4 says (a check per message costs a decoder object): the
    # first item is delivered; a writer must not send more.
    assert decode_payload(bytes([0x01, 0x02])) == 1
    assert decode_payload(cbor2.dumps("abc") + b"\xff\xff") == "abc"


def _wrapped(leaf: Any, levels: int, kind: str) -> Any:
    value = leaf
    for _ in range(levels):
        value = (
            [value]
            if kind == "list"
            else {"k": value}
            if kind == "map"
            else cbor2.CBORTag(1000, value)
        )
    return value


@given(
    max_depth=st.integers(1, 70),
    around=st.integers(-2, 2),
    kind=st.sampled_from(["list", "map", "tag"]),
    leaf=st.sampled_from(["0", "x", "[]", "{}", "{1}", "tag"]),
    int_key=st.booleans(),  # a map with an int key: the walk (cbor_scan) runs as well
)
def test_max_depth_refuses_exactly_what_cbor2_refuses_and_as_the_limit(
    max_depth: int, around: int, kind: str, leaf: str, int_key: bool
) -> None:
    # A number 65 deep passed the walk and reached cbor2, whose refusal was "malformed
    # payload" with no advice (values audit).
    leaves = {"0": 0, "x": "x", "[]": [], "{}": {}, "{1}": {1}, "tag": cbor2.CBORTag(1001, [1])}
    value = _wrapped(leaves[leaf], max(0, max_depth + around), kind)
    data = bytearray(cbor2.dumps({1: value} if int_key else value))
    limits = PayloadLimits(max_depth=max_depth)
    try:
        cbor2.loads(data, max_depth=max_depth)
    except cbor2.CBORDecodeError:
        with pytest.raises(PayloadRefused, match=r"PayloadLimits\.max_depth"):
            decode_payload(data, 0, limits)
    else:
        decode_payload(data, 0, limits)


@pytest.mark.parametrize("dtype", [">f16", "<f16", ">c32", "<c32", ">f8", ">c16"])
def test_long_doubles_and_their_complex_in_either_byte_order_round_trip(dtype: str) -> None:
    # A big-endian long double raised numpy's "cannot expose native-only dtype", and
    # complex256 was refused in words that asked for a complex dtype (values audit).
    array = (np.arange(6) * (1.25 + (0.5j if "c" in dtype else 0))).astype(dtype).reshape(2, 3)
    got = roundtrip(array)
    assert got.dtype == array.dtype.newbyteorder("<") and got.shape == (2, 3)
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ([np.zeros((2, 2), dtype="u1").data], "a memoryview of more than one dimension"),
        (np.longdouble(1.5), "np.asarray(x)"),
        ([np.clongdouble(1 + 2j)], "np.asarray(x)"),
        (np.datetime64("2026-12-05T10:00:00"), "a numpy datetime64 scalar cannot be sent"),
        ({"t": np.datetime64(1, "ns")}, "a numpy datetime64 scalar cannot be sent"),
        ([np.timedelta64(5, "s")], "a numpy timedelta64 scalar cannot be sent: send its seconds"),
        (np.array(["a"]), "send text as a list of str (.tolist())"),
        (np.array([1], dtype="m8[s]"), "send timedelta64 as int64 with .view('int64')"),
        (np.array([1], dtype="M8[s]"), "send datetime64 as int64 with .view('int64')"),
        (np.zeros(2, dtype=[("x", "f8")]), "send each field as an array of its own"),
    ],
    ids=[
        "2-D memoryview in a list",
        "long double",
        "complex long double in a list",
        "datetime64",
        "datetime64 ns in a dict",
        "timedelta64 in a list",
        "str array",
        "timedelta64 array",
        "datetime64 array",
        "structured array",
    ],
)
def test_values_without_a_wire_form_are_a_type_error_that_says_what_to_send(
    value: Any, said: str
) -> None:
    if isinstance(value, np.longdouble) and np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("long double is a double here")
    with pytest.raises(TypeError, match=re.escape(said)):
        encode_payload(value)


# -- the writer's nesting bound ----------------------------------------------------------------
def _nested_in(kind: str, levels: int) -> Any:
    """A number inside ``levels`` containers of ``kind``."""
    value: Any = 1.5
    for _ in range(levels):
        value = {"k": value} if kind == "dict" else (value,) if kind == "tuple" else [value]
    return value


@pytest.mark.parametrize("kind", ["list", "dict", "tuple"])
def test_a_value_nested_deeper_than_the_writers_bound_is_refused_in_words(kind: str) -> None:
    # cbor2's encoder recursed without a bound: a list nested 20,000 deep was a segfault.
    # Refused from MAX_SEND_DEPTH on, far above what readers accept (PayloadLimits.max_depth).
    assert 10 * PayloadLimits().max_depth <= codec.MAX_SEND_DEPTH
    assert encode_payload(_nested_in(kind, codec.MAX_SEND_DEPTH))  # at the bound: sent
    for too_deep in ([_nested_in(kind, codec.MAX_SEND_DEPTH)], {"x": [0, _nested_in(kind, 5000)]}):
        with pytest.raises(InvalidArgument, match=r"more than 1000 deep, which cannot be sent"):
            encode_payload(too_deep)
    with pytest.raises(InvalidArgument, match="more than 1000 deep"):
        codec.encode_control({"meta": _nested_in(kind, 5000)})  # (a channel's meta, say)


def test_a_value_nested_20000_deep_is_an_error_not_a_crash() -> None:
    # In a child: without the bound, this test's worker died with it.
    script = (
        "from trio_stream._protocol.codec import encode_payload\n"
        "v = []\n"
        "for _ in range(20_000): v = [v]\n"
        "try: encode_payload(v)\n"
        "except ValueError as e: print(type(e).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "InvalidArgument\n"), done.stderr


def test_a_payload_limit_s_refusal_names_both_clients() -> None:
    # It named open_client(...) only, to SyncClient users too.
    with pytest.raises(PayloadRefused) as refused:
        decode_payload(cbor2.dumps(2**20000))
    assert str(refused.value).endswith(
        "raise it with payload_limits=PayloadLimits(max_bignum_bytes=...) of open_client(...) "
        "or SyncClient(...)"
    )


# -- numpy void scalars -------------------------------------------------------------------------
RECORDS = np.array([(1.5, 7)], dtype=[("volts", "<f4"), ("channel", "<i4")])


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            RECORDS[0],
            r"structured scalar .*volts.* \{name: x\[name\] for name in x\.dtype\.names\}",
        ),
        ({"r": RECORDS[0]}, "structured scalar"),
        ([1.0, RECORDS[0]], "structured scalar"),
        ([np.zeros(ZERO_COPY_MIN_BYTES), RECORDS[0]], "structured scalar"),  # sent in pieces
        (np.void(b"\x01\x02\x03\x04"), r"void scalar \(dtype \|V4\) .* x\.tobytes\(\)"),
        ({"raw": np.void(b"\x01\x02")}, "void scalar"),
    ],
    ids=["record", "record in a dict", "record in a list", "beside a large array", "V4", "V2"],
)
def test_numpy_void_scalars_are_refused_as_structured_arrays_are(value: Any, said: str) -> None:
    # A structured array was refused, but one of its elements went as a bare list [1.5, 7]
    # (field names and dtypes gone), and a raw np.void as bytes (its dtype gone).
    with pytest.raises(TypeError, match=said) as caught:
        encode_payload(value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    # the way it says to send it works
    record = RECORDS[0]
    assert roundtrip({name: record[name] for name in record.dtype.names}) == {
        "volts": 1.5,
        "channel": 7,
    }


# -- the CBOR self-describe tag 55799 ------------------------------------------------------------
SELF_DESCRIBED = b"\xd9\xd9\xf7"  # tag 55799, which some CBOR encoders put in front


@pytest.mark.parametrize("with_reader", [False, True])
def test_the_self_describe_tag_is_transparent(with_reader: bool) -> None:
    # cbor2's own decoder for the tag made its content immutable: d9d9f7 8101 was (1,).
    reader = PayloadReader() if with_reader else None

    def decoded(hex_text: str) -> Any:
        return decode_payload(bytearray.fromhex(hex_text), 0, reader=reader)

    got = decoded("d9d9f7 8101")
    assert got == [1] and type(got) is list
    assert decoded("d9d9f7 a1 6161 8101") == {"a": [1]}  # {"a": [1]}
    assert decoded("82 d9d9f7 8101 02") == [[1], 2]  # inside a list
    assert decoded("a1 6161 d9d9f7 8102") == {"a": [2]}  # inside a map
    assert decoded("d9d9f7 d9d9f7 8101") == [1]  # twice
    assert decoded("d9d9f7 f6") is None
    assert decoded("d9d9f7 a1 8101 02") == {(1,): 2}  # a key stays a key, as without the tag
    array = decoded("d9d9f7 d856 48 000000000000f83f")  # around a float64 typed array
    assert isinstance(array, np.ndarray) and array.tolist() == [1.5]
    array[0] = 2.0  # writable, as any array handed out


@settings(max_examples=200, deadline=None)
@given(cbor_values, st.integers(1, 3))
def test_a_self_described_payload_decodes_as_without_the_tag(value: Any, times: int) -> None:
    wire = cbor2.dumps(value)
    tagged = bytearray(SELF_DESCRIBED * times + wire)
    want = outcome(lambda: decode_payload(bytearray(wire)))
    assert outcome(lambda: decode_payload(tagged)) == want
    assert outcome(lambda: decode_payload(tagged, 0, reader=PayloadReader())) == want


# -- NaN: every bit kept in arrays, the NaN alone in a scalar -------------------------------------
def test_a_nan_keeps_its_bits_in_an_array_and_is_the_plain_nan_as_a_scalar() -> None:
    # As the README says: cbor2 writes every float NaN as CBOR's canonical NaN (f97e00), so a
    # scalar's sign and payload bits do not travel; send np.asarray(x) to keep them. Keeping
    # them for floats would take a Python hook per float (~3x a dict of floats' encode).
    bits = 0xFFF8000000000001  # negative, with a payload
    x = struct.unpack("<d", struct.pack("<Q", bits))[0]
    for scalar in (x, np.float64(x), np.float32(x), [x], {"v": np.float64(x)}):
        wire = b"".join(bytes(p) for p in encode_payload(scalar))
        assert b"\xf9\x7e\x00" in wire
        got = roundtrip(scalar)
        got = got[0] if isinstance(got, list) else got["v"] if isinstance(got, dict) else got
        assert struct.unpack("<Q", struct.pack("<d", got))[0] == 0x7FF8000000000000
    for array in (np.array([x, -x]), np.asarray(x), np.array([x], np.float32)):
        assert roundtrip(array).tobytes() == array.tobytes()


# -- arrays inside lists and dicts: taken out of the received bytes ------------------------------
BIG = 70_000  # float64 elements: 560 kB, beyond codec._SPLICE_MIN_BYTES


def frame_of(value: Any, offset: int, *, immutable: bool = False) -> bytearray | bytes:
    """A frame with ``value``'s payload at ``offset``, as a client receives it."""
    frame = bytearray(b"\xee" * offset) + b"".join(bytes(p) for p in encode_payload(value))
    return bytes(frame) if immutable else frame


def elements_aligned(frame: bytearray | bytes, array: np.ndarray[Any, Any]) -> bool:
    at = bytes(frame).index(array.tobytes())
    return bool((np.frombuffer(frame, np.uint8).ctypes.data + at) % array.dtype.alignment == 0)


def shares(array: np.ndarray[Any, Any], frame: bytearray | bytes) -> bool:
    return bool(np.shares_memory(array, np.frombuffer(frame, np.uint8)))


def peak_bytes(decode: Callable[[], Any]) -> tuple[Any, int]:
    """What ``decode`` returns and the most memory (numpy's too) it held at once."""
    import tracemalloc

    tracemalloc.start()
    try:
        value = decode()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("offset", range(8))
@pytest.mark.parametrize("kind", ["dict", "list", "tuple-in-dict"])
def test_a_large_array_in_a_container_wraps_the_frame_or_is_copied_once(
    offset: int, kind: str
) -> None:
    # cbor2 copied its bytes into a bytes object, then the typed array's decoder into a
    # bytearray: an 8 MB array in a dict decoded ~6x slower than alone, at 3x its size.
    array = np.arange(BIG, dtype=np.float64)
    value: Any = (
        {"image": array, "t": 1.5}
        if kind == "dict"
        else [array, "x"]
        if kind == "list"
        else {"pair": (1, array)}
    )
    frame = frame_of(value, offset)
    got, peak = peak_bytes(lambda: decode_payload(frame, offset))
    got_array = got["image"] if kind == "dict" else got[0] if kind == "list" else got["pair"][1]
    assert_same_array(got_array, array)
    assert got_array.flags.writeable and got_array.flags.aligned
    if elements_aligned(frame, array):
        assert shares(got_array, frame)  # as an array alone does
        assert peak < array.nbytes / 10
    else:
        assert not shares(got_array, frame)
        assert peak < 1.5 * array.nbytes  # one copy
    got_array[:] = 0  # the application's to write into


def test_a_nested_array_from_read_only_bytes_or_a_small_part_of_the_frame_is_a_copy() -> None:
    array = np.arange(BIG, dtype=np.float64)
    for offset in range(8):
        frame = frame_of({"a": array}, offset, immutable=True)  # an RPC result: bytes
        got, peak = peak_bytes(lambda: decode_payload(frame, offset)["a"])  # noqa: B023
        assert got.flags.writeable and not shares(got, frame)
        assert peak < 1.5 * array.nbytes  # one copy (cbor2's bytes, then a bytearray: 3x)
        np.testing.assert_array_equal(got, array)
    # An array that is a small part of the frame does not keep all of it alive.
    small = np.arange(1000, dtype=np.float64)  # 8 kB
    for offset in range(8):
        frame = frame_of({"small": small, "rest": bytes(200_000)}, offset)
        got = decode_payload(frame, offset)
        assert not shares(got["small"], frame) and got["small"].flags.writeable
        np.testing.assert_array_equal(got["small"], small)


def same(a: Any, b: Any) -> bool:
    """Equal values, arrays equal in dtype, shape and bytes; lists not equal to tuples."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
            and a.flags.writeable == b.flags.writeable
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, cbor2.CBORTag):
        return bool(a.tag == b.tag) and same(a.value, b.value)
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or repr(a) == repr(b)


def unspliced(decode: Callable[[], Any]) -> tuple[str, Any]:
    """``decode``'s outcome with the arrays left to cbor2, as before the splice."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_SPLICE_MIN_BYTES", 2**62)
        return outcome_of(decode)


def outcome_of(decode: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", decode()
    except (ProtocolError, PayloadRefused) as exc:
        return type(exc).__name__, str(exc)


SPLICE_DTYPES = [*NUMERIC_DTYPES, ">f8", ">i2", ">u4", ">f2"]
big_arrays = st.builds(
    lambda dtype, count, ndim: (
        (np.arange(count) % 1000)
        .astype(dtype)
        .reshape((count // 4, 4) if ndim == 2 else (count // 4, 2, 2) if ndim == 3 else (count,))
    ),
    st.sampled_from(SPLICE_DTYPES).map(np.dtype),
    st.sampled_from([512, 9000, 40_000, 70_000]),
    st.integers(1, 3),
)
payload_parts = st.recursive(
    big_arrays | st.integers() | st.text(max_size=4) | st.binary(max_size=4) | st.none(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=2), c, max_size=4),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(payload_parts, st.integers(0, 8), st.booleans())
def test_containers_of_large_arrays_decode_as_cbor2_alone_decoded_them(
    value: Any, offset: int, immutable: bool
) -> None:
    value = [value, np.arange(40_000.0)]  # 320 kB: a payload that is walked
    frame = frame_of(value, offset, immutable=immutable)
    got = outcome_of(lambda: decode_payload(frame, offset))
    want = unspliced(lambda: decode_payload(frame, offset))
    assert got[0] == want[0] == "value" and same(got[1], want[1])


def arrays_in(value: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(value, np.ndarray):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [array for item in items for array in arrays_in(item)]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        [
            {"a": np.arange(9000.0), "b": [np.ones((300, 300), bool), 1.5]},
            [np.arange(20_000, dtype=np.complex64).reshape(100, 200), {"k": "v"}],
            {1: np.arange(40_000, dtype=np.int16), "x": np.arange(10_000.0)},
        ]
    ),
    st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(0, 40),
    st.sampled_from([PayloadLimits(), PayloadLimits(max_depth=2)]),
)
@example(
    {1: np.arange(40_000, dtype=np.int16), "x": np.arange(10_000.0)},
    [(266, 198)],
    0,
    PayloadLimits(),
).via("a key made a tag around an array: its hash raised RuntimeError through the walk")
def test_a_damaged_payload_with_large_arrays_fails_or_decodes_as_before(
    value: Any, flips: list[tuple[int, int]], cut: int, limits: PayloadLimits
) -> None:
    """Bytes changed in the heads (where the walk looks), or the payload cut: the same value,
    or the same kind of error, as cbor2 alone gave."""
    value = [value, np.arange(40_000.0)]
    frame = bytearray(frame_of(value, 0))
    # the heads: the first bytes, the last, and those before each array's elements
    wire = bytes(frame)
    starts = [wire.index(array.tobytes()) for array in arrays_in(value)]
    heads = sorted(
        {i for start in [0, *starts] for i in range(max(0, start - 24), start + 2)}
        | set(range(len(wire) - 24, len(wire)))
    )
    for where, byte in flips:
        frame[heads[where % len(heads)]] = byte
    if cut:
        del frame[-cut:]
    got = outcome_of(lambda: decode_payload(frame, 0, limits))
    want = unspliced(lambda: decode_payload(frame, 0, limits))
    assert got[0] == want[0]
    assert same(got[1], want[1]) if got[0] == "value" else got[1] == want[1]


def test_a_payload_that_carries_the_splice_tag_itself_decodes_as_it_is() -> None:
    # The private tag decode_payload puts in an array's place never comes from the wire: a
    # payload holding it is decoded as it is, the tag as a CBORTag, the arrays by cbor2.
    array = np.arange(BIG, dtype=np.float64)
    wire = cbor2.dumps([cbor2.CBORTag(codec._SPLICE_TAG, 0), b"x" * 300_000])
    got = decode_payload(bytearray(wire))
    assert got[0] == cbor2.CBORTag(codec._SPLICE_TAG, 0)
    tail = b"".join(bytes(p) for p in encode_payload({"a": array}))
    wire = b"\x82" + cbor2.dumps(cbor2.CBORTag(codec._SPLICE_TAG, 0)) + tail
    got = decode_payload(bytearray(wire))
    assert got[0] == cbor2.CBORTag(codec._SPLICE_TAG, 0)
    assert_same_array(got[1]["a"], array)


def test_a_big_endian_typed_array_from_another_writer_is_taken_out_too() -> None:
    # RFC 8746's big-endian tags (82: float64), as a writer other than trio_stream may send.
    array = np.arange(BIG, dtype=">f8")
    body = array.tobytes()
    wire = b"\xa2\x62be\xd8\x52\x5a" + struct.pack(">I", len(body)) + body + b"\x61n\x01"
    for offset in range(8):
        frame = bytearray(offset) + wire
        got = decode_payload(frame, offset)
        assert same(got, unspliced(lambda: decode_payload(frame, offset))[1])  # noqa: B023
        assert got["be"].dtype == np.dtype(">f8") and got["n"] == 1
        np.testing.assert_array_equal(got["be"], array)
        assert shares(got["be"], frame) == elements_aligned(frame, array)


def test_nested_arrays_keep_the_depth_limit_exact() -> None:
    # In the bytes cbor2 decodes, an array's place is as deep as the array was: a payload
    # is refused at PayloadLimits.max_depth as it was before.
    for array in (np.arange(BIG, dtype=np.float64), np.ones((600, 600), bool)):
        for depth in range(1, 6):
            value: Any = array
            for _ in range(depth):
                value = [value]
            frame = frame_of(value, 0)
            for max_depth in range(1, 8):
                limits = PayloadLimits(max_depth=max_depth)
                got = outcome_of(lambda: decode_payload(frame, 0, limits))  # noqa: B023
                want = unspliced(lambda: decode_payload(frame, 0, limits))  # noqa: B023
                assert got[0] == want[0], (array.dtype, depth, max_depth)
