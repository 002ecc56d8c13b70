"""Array views: cut a strided sub-array out of an encoded numpy payload, without decoding it.

A reader may ask for only part of each array frame of a channel (``ts.View``: every 4th pixel
of a camera image, one region, one channel of a multichannel sample), EPICS-style. The cut
works on the payload's *bytes*: it parses the few CBOR heads in front of the elements (tag 40,
``[shape, typed array]``, the typed-array tag, the byte string's length; or trio_stream's
extension array), wraps the elements with ``np.frombuffer`` (no copy), slices (no copy), and
encodes the slice as codec.py would have encoded that array in the first place (one copy of
only the selected elements). cbor2 never sees the payload, so the cost is the size of the
view, not of the frame, and a payload that is anything else passes unchanged (None).

Sans-io and stateless; wiring it into the subscribe path (once per distinct view per frame)
is the server's job.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from .._exceptions import InvalidArgument
from .bytes_like import BytesLike
from .codec import (
    _DTYPE_BY_TAG,
    _EXT_DTYPES,
    _EXT_HEAD,
    _TAG40_HEAD,
    _array_pieces,
    _read_dims,
    _read_uint,
)

#: numpy's own limit is 64 dimensions; a view needs no more than 32.
MAX_VIEW_DIMS: Final = 32
_INDEX_LIMIT: Final = 2**63  # slice bounds beyond int64 mean nothing to an array
_MAX_DTYPE_CHARS: Final = 8


@dataclass(frozen=True)
class View:
    """The part of each array frame a reader wants: one slice per leading dimension.

    ``View(slices=(slice(None, None, 4), slice(None, None, 4)))`` is ``array[::4, ::4]``;
    dimensions without a slice are kept whole. Like numpy basic slicing: start, stop and step
    may be None or any integer within int64 (numpy integers too, not bools; negative counts
    from the end), step not 0. A frame that is not a numpy array, or has fewer dimensions than
    the view has slices, passes unchanged.

    Raises:
        InvalidArgument: not a sequence of slices of integers, a step of 0, or too many
            dimensions.
    """

    slices: tuple[slice, ...]

    def __post_init__(self) -> None:
        slices = self.slices
        if isinstance(slices, slice) or not isinstance(slices, Sequence):
            raise InvalidArgument(
                "View(slices=...) takes a tuple of slices, one per dimension, e.g. "
                "(slice(None, None, 4),)"
            )
        if len(slices) > MAX_VIEW_DIMS:
            raise InvalidArgument(f"a view has at most {MAX_VIEW_DIMS} dimensions")
        checked = []
        for item in slices:
            if not isinstance(item, slice):
                raise InvalidArgument(f"a view holds slices only, not {item!r:.80}")
            start = _bound("start", item.start)
            stop = _bound("stop", item.stop)
            step = _bound("step", item.step)
            if step == 0:
                raise InvalidArgument("slice step cannot be zero")
            checked.append(slice(start, stop, step))
        # Kept as plain ints, whatever integer type was given: to_wire, equality and the hash
        # (the server's key for a cut) see the same view for np.int64(4) as for 4.
        object.__setattr__(self, "slices", tuple(checked))

    def __hash__(self) -> int:
        # slice objects are unhashable before Python 3.12; the server keys cuts by view.
        return hash(tuple((s.start, s.stop, s.step) for s in self.slices))

    def to_wire(self) -> list[list[int | None]]:
        """``[[start, stop, step], ...]`` with null for None (docs/protocol.md)."""
        return [[s.start, s.stop, s.step] for s in self.slices]

    @classmethod
    def from_wire(cls, data: Any) -> View:
        """The view of a wire form.

        Raises:
            InvalidArgument: not a list of ``[start, stop, step]`` lists of integers or null.
        """
        if not isinstance(data, list | tuple) or not all(
            isinstance(item, list | tuple) and len(item) == 3 for item in data
        ):
            raise InvalidArgument(
                f"a view is a list of [start, stop, step] (null for none), not {data!r:.80}"
            )
        return cls(tuple(slice(*item) for item in data))


def _bound(name: str, bound: Any) -> int | None:
    """A slice bound as a plain int: None, or an integer (anything ``operator.index`` takes,
    numpy integers too, but not a bool) within int64.

    Raises:
        InvalidArgument: anything else.
    """
    if bound is None:
        return None
    if not isinstance(bound, bool | np.bool_):
        try:
            value = operator.index(bound)
        except TypeError:
            pass
        else:
            if -_INDEX_LIMIT <= value < _INDEX_LIMIT:  # int64's lowest, -2**63, too
                return value
    raise InvalidArgument(
        f"slice {name} must be None or an integer within int64 (a Python or numpy integer, "
        f"not a bool), not {bound!r:.80}"
    )


def _shape_at(data: memoryview, pos: int) -> tuple[tuple[int, ...] | None, int]:
    """An array of unsigned integers at ``pos`` (a shape), and the position after it."""
    ndim, pos = _read_uint(data, pos, major=4)
    if ndim is None or ndim > 64:
        return None, pos
    return _read_dims(data, pos, ndim)


def _layout(data: memoryview) -> tuple[np.dtype[Any], tuple[int, ...], int] | None:
    """dtype, shape and the elements' offset of a payload that is exactly one array."""
    shape: tuple[int, ...] | None = None
    pos = 0
    if bytes(data[:3]) == _TAG40_HEAD:
        shape, pos = _shape_at(data, 3)
        if shape is None:
            return None
    elif bytes(data[: len(_EXT_HEAD)]) == _EXT_HEAD:
        nchars, pos = _read_uint(data, len(_EXT_HEAD), major=3)
        if nchars is None or nchars > _MAX_DTYPE_CHARS:
            return None
        dtype_str = bytes(data[pos : pos + nchars]).decode("ascii", "replace")
        if dtype_str not in _EXT_DTYPES:
            return None
        shape, pos = _shape_at(data, pos + nchars)
        return _elements(data, pos, np.dtype(dtype_str), shape)
    if len(data) < pos + 2 or data[pos] != 0xD8:
        return None
    dtype = _DTYPE_BY_TAG.get(data[pos + 1])
    if dtype is None:
        return None
    return _elements(data, pos + 2, dtype, shape)


def _elements(
    data: memoryview, pos: int, dtype: np.dtype[Any], shape: tuple[int, ...] | None
) -> tuple[np.dtype[Any], tuple[int, ...], int] | None:
    nbytes, pos = _read_uint(data, pos, major=2)
    if nbytes is None or pos + nbytes != len(data) or nbytes % dtype.itemsize:
        return None
    count = nbytes // dtype.itemsize
    if shape is None:
        shape = (count,)
    elif math.prod(shape) != count:
        return None
    return dtype, shape, pos


def cut_array(payload: BytesLike, view: View) -> bytes | None:
    """The encoded payload of ``view`` applied to the array that ``payload`` encodes.

    Returns None (send the payload unchanged) when the payload is not exactly one numpy array
    in the wire forms of docs/protocol.md section 4, when the array has fewer dimensions than
    the view has slices, or when the view has no slices. The result is what the writer would
    have sent for the sub-array (little-endian, C order).
    """
    if not view.slices:
        return None
    data = memoryview(payload).cast("B")
    if len(data) < 2:
        return None
    layout = _layout(data)
    if layout is None:
        return None
    dtype, shape, offset = layout
    if len(view.slices) > len(shape):
        return None
    count = math.prod(shape)
    try:
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        cut = array[view.slices]
    except (ValueError, OverflowError, IndexError, MemoryError):
        # A shape numpy cannot make, though its elements fit the bytes: a dimension of 2**63
        # beside a 0, say. Such a payload goes whole, as any other it cannot cut; raised
        # here, it would end the connection of the writer (or a cluster node's whole
        # delivery) for a frame the server only forwards.
        return None
    return b"".join(_array_pieces(cut, copy=False))
