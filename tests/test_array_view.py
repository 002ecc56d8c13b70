"""ts.View and cut_array: a strided sub-array cut from an encoded payload's bytes."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import trio_stream as ts
from trio_stream._protocol.array_view import cut_array
from trio_stream._protocol.codec import decode_payload, encode_payload

# every dtype the codec sends: RFC 8746 tags and the extension tag (bool, complex, long double)
DTYPES = [
    "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "?", "c8", "c16", "g",
]  # fmt: skip


def encoded(value: Any) -> bytes:
    return b"".join(bytes(p) for p in encode_payload(value))


bounds = st.one_of(st.none(), st.integers(-12, 12))
slices = st.builds(slice, bounds, bounds, st.one_of(st.none(), st.integers(-5, 5).filter(bool)))


@st.composite
def array_and_view(draw: st.DrawFn) -> tuple[np.ndarray[Any, Any], ts.View]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9))
    array = draw(
        hnp.arrays(dtype, shape, elements={"allow_nan": False} if dtype.kind in "fc" else None)
    )
    view = ts.View(tuple(draw(st.lists(slices, min_size=1, max_size=len(shape)))))
    return array, view


@settings(max_examples=400, deadline=None)
@given(array_and_view())
def test_cutting_the_bytes_equals_slicing_the_decoded_array(
    case: tuple[np.ndarray[Any, Any], ts.View],
) -> None:
    array, view = case
    payload = encoded(array)
    cut = cut_array(payload, view)
    assert cut is not None
    got = decode_payload(cut)
    expected = decode_payload(payload)[view.slices]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert cut == encoded(expected)  # exactly what the writer would send for the sub-array


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.lists(slices, min_size=1, max_size=3))
def test_any_bytes_either_pass_unchanged_or_cut_consistently(
    data: bytes, items: list[slice]
) -> None:
    view = ts.View(tuple(items))
    cut = cut_array(data, view)
    if cut is not None:
        np.testing.assert_array_equal(decode_payload(cut), decode_payload(data)[view.slices])


# Dimensions numpy cannot make, beside a 0 that leaves no elements: the bytes match, the shape
# does not reshape (reshape raised "Maximum allowed dimension exceeded", which ended the
# writer's connection, or a cluster node whose delivery cut it).
huge_dims = st.sampled_from([0, 1, 3, 2**31, 2**62, 2**63 - 1, 2**63, 2**64 - 1])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(DTYPES),
    st.lists(huge_dims, min_size=1, max_size=4),
    st.lists(slices, min_size=1, max_size=3),
)
def test_a_shape_numpy_cannot_make_passes_unchanged(
    dtype: str, shape: list[int], items: list[slice]
) -> None:
    shape = [0, *shape]  # no elements, so the (empty) bytes always match the shape
    wrapped = cbor2.loads(encoded(np.zeros((0, 1), dtype)))  # tag 40 or the extension tag
    parts = [list(shape) if part == (0, 1) else part for part in wrapped.value]
    payload = cbor2.dumps(cbor2.CBORTag(wrapped.tag, parts))
    view = ts.View(tuple(items))
    cut = cut_array(payload, view)  # never raises
    if cut is not None:
        np.testing.assert_array_equal(decode_payload(cut), decode_payload(payload)[view.slices])


def test_every_4th_pixel_of_a_camera_image() -> None:
    image = np.arange(480 * 640, dtype=np.uint16).reshape(480, 640)
    cut = cut_array(encoded(image), ts.View((slice(None, None, 4), slice(None, None, 4))))
    assert cut is not None
    np.testing.assert_array_equal(decode_payload(cut), image[::4, ::4])
    assert len(cut) < image.nbytes // 16 + 16  # only the view's bytes travel


def test_one_channel_of_a_multichannel_sample_and_a_big_endian_writer() -> None:
    samples = np.arange(1000 * 8, dtype=np.float32).reshape(1000, 8)
    view = ts.View((slice(None), slice(3, 4)))
    cut = cut_array(encoded(samples), view)
    assert cut is not None
    np.testing.assert_array_equal(decode_payload(cut), samples[:, 3:4])
    # another language's writer may send big-endian float32 (tag 81): cut, sent little-endian
    body = samples.astype(">f4").tobytes()
    big = b"\xd8\x28\x82\x82\x19\x03\xe8\x08\xd8\x51\x5a" + struct.pack(">I", len(body)) + body
    cut = cut_array(big, view)
    assert cut is not None
    np.testing.assert_array_equal(decode_payload(cut), samples[:, 3:4])


@pytest.mark.parametrize(
    "value",
    [
        {"x": np.arange(10)},  # an array inside a map: not one array
        [np.arange(10)],
        "text",
        b"bytes",
        12,
        np.float64(1.5),
        np.array(3.0),  # 0-d: no dimension to slice
    ],
)
def test_frames_that_are_not_one_sliceable_array_pass_unchanged(value: Any) -> None:
    assert cut_array(encoded(value), ts.View((slice(1, None),))) is None


def test_a_view_with_more_dimensions_than_the_array_or_none_passes_unchanged() -> None:
    payload = encoded(np.arange(10))
    assert cut_array(payload, ts.View((slice(None), slice(None)))) is None
    assert cut_array(payload, ts.View(())) is None


def test_a_payload_whose_shape_does_not_match_its_bytes_passes_unchanged() -> None:
    payload = bytearray(encoded(np.zeros((4, 4), np.uint8)))
    payload[4] = 5  # shape [5, 4] over 16 bytes
    assert cut_array(bytes(payload), ts.View((slice(1, None),))) is None


def test_view_validation_and_wire_form() -> None:
    view = ts.View((slice(None, None, 4), slice(10, -10)))
    assert view.to_wire() == [[None, None, 4], [10, -10, None]]
    assert ts.View.from_wire(view.to_wire()) == view
    assert hash(ts.View.from_wire(view.to_wire())) == hash(view)
    assert len({view, ts.View.from_wire([[None, None, 4], [10, -10, None]])}) == 1
    with pytest.raises(ts.InvalidArgument, match="step cannot be zero"):
        ts.View((slice(None, None, 0),))
    with pytest.raises(ts.InvalidArgument, match="slices only"):
        ts.View((1,))  # type: ignore[arg-type]
    with pytest.raises(ts.InvalidArgument, match="tuple of slices"):
        ts.View(slice(None))  # type: ignore[arg-type]
    with pytest.raises(ts.InvalidArgument, match="int64"):
        ts.View((slice(1.5, None),))
    with pytest.raises(ts.InvalidArgument, match="int64"):
        ts.View((slice(True, None),))
    with pytest.raises(ts.InvalidArgument, match="at most 32"):
        ts.View((slice(None),) * 33)
    with pytest.raises(ts.InvalidArgument, match=r"\[start, stop, step\]"):
        ts.View.from_wire([[1, 2]])
    with pytest.raises(ts.InvalidArgument, match="int64"):
        ts.View.from_wire([[2**70, None, None]])


class _Index:
    """Not an int, but an integer to Python (``operator.index``), as numpy's are."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, _Index]),
    st.lists(st.tuples(bounds, bounds, st.integers(-5, 5).filter(bool)), min_size=1, max_size=3),
)
def test_numpy_integers_are_taken_as_slice_bounds(
    kind: Any, triples: list[tuple[int | None, int | None, int]]
) -> None:
    # Bounds computed with numpy (np.argmax, arithmetic on an array's shape) were refused:
    # "slice start must be None or an int64 integer, not np.int64(1)".
    def make(x: int | None) -> Any:
        if x is None:
            return None
        if kind in (np.uint8, np.uint64) and x < 0:
            return np.int64(x)
        return kind(x)

    given_view = ts.View(tuple(slice(*map(make, t)) for t in triples))
    plain = ts.View(tuple(slice(*t) for t in triples))
    assert given_view == plain and hash(given_view) == hash(plain)
    assert given_view.to_wire() == plain.to_wire()
    assert all(
        type(b) is int
        for s in given_view.slices
        for b in (s.start, s.stop, s.step)
        if b is not None
    )
    array = np.arange(12 * 12 * 12).reshape(12, 12, 12)
    cut = cut_array(encoded(array), given_view)
    assert cut is not None
    np.testing.assert_array_equal(decode_payload(cut), array[plain.slices])


def test_slice_bounds_that_are_not_int64_integers_are_refused() -> None:
    assert ts.View((slice(np.int64(2**63 - 1), np.int64(-(2**63) + 1)),)).slices[0].start == (
        2**63 - 1
    )
    # int64's lowest is one too (it was refused, as "not within int64"), as numpy's slices
    # take it: a start of "as far back as there is", a step of "the last, then nothing".
    lowest = np.iinfo(np.int64).min
    array = np.arange(10.0)
    for bounds in [(lowest, None, None), (None, lowest, None), (None, None, lowest)]:
        view = ts.View.from_wire(ts.View((slice(*bounds),)).to_wire())
        cut = cut_array(encoded(array), view)
        assert cut is not None
        np.testing.assert_array_equal(decode_payload(cut), array[slice(*bounds)])
    for bad in (
        True,
        np.True_,
        1.0,
        np.float64(1),
        "1",
        np.uint64(2**63),
        _Index(2**63),
        -(2**63) - 1,
    ):
        for position in range(3):
            bounds_: list[Any] = [None, None, None]
            bounds_[position] = bad
            with pytest.raises(ts.InvalidArgument, match="integer within int64"):
                ts.View((slice(*bounds_),))
    with pytest.raises(ts.InvalidArgument, match="step cannot be zero"):
        ts.View((slice(None, None, np.int64(0)),))
