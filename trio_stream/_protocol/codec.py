"""CBOR for payloads and control envelopes: the only module that imports cbor2 and numpy.

Payloads are any CBOR-able Python value, numpy arrays first among them. Arrays travel as RFC
8746 typed arrays (little-endian; tag 40 around ``[shape, typed array]`` when not 1-D), and the
few dtypes RFC 8746 has no tag for (bool, complex, long double) use the extension tag
``EXT_ARRAY_TAG`` (docs/protocol.md section 4).

Large arrays and a payload of bytes are never copied into a CBOR buffer: :func:`encode_payload`
returns *pieces* (CBOR head bytes, an array's elements copied once or, for a caller that
joins or writes them at once, its own memory, a ``bytes`` value itself, ...) that the
transport writes one after the other. The bytes on the wire are standard CBOR all the same.
On the way in, :func:`decode_payload` wraps the received bytes with ``np.frombuffer`` instead
of copying them (an array that is the payload, or a large one in a list or dict that is most
of it; where the elements are not aligned, or the bytes are read-only, one copy), and copies
a byte string once into the ``bytes`` it returns.
"""

from __future__ import annotations

import gc
import io
import math
import struct
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import cbor2
import numpy as np

from .._exceptions import InvalidArgument, ProtocolError
from .brief import brief, cut
from .bytes_like import BytesLike
from .cbor_scan import check_key_collisions
from .limits import DEFAULT_PAYLOAD_LIMITS, PayloadLimits, PayloadRefused, raise_limit_hint

#: Arrays at least this large go out as their own piece (their elements copied at most once,
#: not through an encoder); smaller ones are cheaper to copy into one CBOR buffer than to
#: write separately.
ZERO_COPY_MIN_BYTES: Final = 4096

#: trio_stream's private tag for arrays whose dtype RFC 8746 cannot express.
EXT_ARRAY_TAG: Final = 7631617  # 0x747301, "ts" + 1
#: Private tags around a compressed payload's bytes (compression.py, docs/protocol.md 4.1).
ZLIB_PAYLOAD_TAG: Final = 7631618  # 0x747302
ZSTD_PAYLOAD_TAG: Final = 7631619  # 0x747303
NDARRAY_TAG: Final = 40

#: Nesting limit of control envelopes: they are tiny and shallow (payloads: PayloadLimits).
CONTROL_MAX_DEPTH: Final = 16
# A client's CONTROL message holds at most this many CBOR items (the server checks, before it
# decodes: cbor2 builds an object per item, and one 16 MiB message of empty maps held the
# server for 4.3 s and took 1.2 GB; at this bound the worst takes ~10-25 ms). RPC arguments
# and results travel as one byte string, one item whatever their size; a create_channel's
# meta is at most 4096 bytes; the largest a client of this package sends is a provider's
# description of its methods (a `methods` answer), shortened to fit (_rpc._methods_within).
CONTROL_MAX_ITEMS: Final = 32_768

# RFC 8746 typed-array tags for little-endian element types (numpy dtype.str -> tag).
_TAG_BY_DTYPE: Final[dict[str, int]] = {
    "|u1": 64,
    "<u2": 69,
    "<u4": 70,
    "<u8": 71,
    "|i1": 72,
    "<i2": 77,
    "<i4": 78,
    "<i8": 79,
    "<f2": 84,
    "<f4": 85,
    "<f8": 86,
}
# Decoders accept both byte orders (RFC 8746 section 2.1).
_DTYPE_BY_TAG: Final[dict[int, np.dtype[Any]]] = {
    64: np.dtype("u1"),
    65: np.dtype(">u2"),
    66: np.dtype(">u4"),
    67: np.dtype(">u8"),
    68: np.dtype("u1"),  # uint8 clamped: numpy has no clamped type, the bytes are the same
    69: np.dtype("<u2"),
    70: np.dtype("<u4"),
    71: np.dtype("<u8"),
    72: np.dtype("i1"),
    73: np.dtype(">i2"),
    74: np.dtype(">i4"),
    75: np.dtype(">i8"),
    77: np.dtype("<i2"),
    78: np.dtype("<i4"),
    79: np.dtype("<i8"),
    80: np.dtype(">f2"),
    81: np.dtype(">f4"),
    82: np.dtype(">f8"),
    84: np.dtype("<f2"),
    85: np.dtype("<f4"),
    86: np.dtype("<f8"),
}
# dtypes for the extension tag: only plain numeric ones, never object or structured dtypes.
# Long doubles and their complex: 16 (or 12, on 32-bit x86) bytes, 32 (24) for complex.
_EXT_DTYPES: Final = frozenset({"|b1", "<c8", "<c16", "<f16", "<f12", "<c32", "<c24"})
_REFUSED_TAGS: Final = (35, 36)  # regular expressions and MIME messages: never from the wire

_TAG40_HEAD: Final = b"\xd8\x28\x82"  # tag 40, array of 2
_EXT_HEAD: Final = b"\xda" + struct.pack(">I", EXT_ARRAY_TAG) + b"\x83"


def cbor_head(major: int, value: int) -> bytes:
    """The head of a CBOR item of major type ``major`` with argument ``value``."""
    mt = major << 5
    if value < 24:
        return bytes((mt | value,))
    if value < 0x100:
        return bytes((mt | 24, value))
    if value < 0x10000:
        return struct.pack(">BH", mt | 25, value)
    if value < 0x100000000:
        return struct.pack(">BI", mt | 26, value)
    return struct.pack(">BQ", mt | 27, value)


def _tag_head(tag: int) -> bytes:
    return cbor_head(6, tag)


def _shape_cbor(shape: tuple[int, ...]) -> bytes:
    return cbor_head(4, len(shape)) + b"".join(cbor_head(0, n) for n in shape)


def _normalize(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """C-contiguous and little-endian: the only layout the wire knows."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not _LITTLE_HOST):
        # Native order where that is little-endian: numpy's buffer interface refuses a long
        # double marked "<" explicitly (a big-endian one raised numpy's own ValueError).
        array = array.astype(array.dtype.newbyteorder("=" if _LITTLE_HOST else "<"))
    # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
    return array if array.flags.c_contiguous else array.copy(order="C")


_LITTLE_HOST: Final = np.little_endian
# Where a long double is wider than a float (x86), these scalars' .item() is themselves.
_LONG_DOUBLE_SCALARS: Final = (
    (np.longdouble, np.clongdouble) if np.finfo(np.longdouble).nmant > 52 else ()
)


_MASKED_ARRAY: Final = np.ma.MaskedArray


def _array_pieces(array: np.ndarray[Any, Any], copy: bool) -> list[BytesLike]:
    """CBOR for one array as pieces: heads as bytes, the elements as the array's own memory,
    or with ``copy`` as a copy of them where that memory is the caller's (see
    :func:`encode_payload`)."""
    if isinstance(array, _MASKED_ARRAY):  # sent as its data alone, the mask was lost unsaid
        raise TypeError(
            "masked numpy arrays cannot be sent (the mask has no wire form): send "
            "arr.filled(value), and arr.mask as an array of its own if readers need it"
        )
    given = array
    array = _normalize(array)
    dtype_str = array.dtype.str
    tag = _TAG_BY_DTYPE.get(dtype_str)
    if tag is None and dtype_str not in _EXT_DTYPES:
        # Checked before the memoryview, which refuses some (datetime64) in numpy's words.
        raise TypeError(
            f"numpy arrays of dtype {array.dtype} cannot be sent: use a numeric, bool or "
            "complex dtype (structured, object, string and datetime arrays have no wire form)"
            + _DTYPE_ADVICE.get("fields" if array.dtype.names else array.dtype.kind, "")
        )
    body: BytesLike
    if not array.size:
        body = b""
    elif copy and array is given:  # (else _normalize made it: ours already)
        body = array.tobytes()
    else:
        body = memoryview(array).cast("B")  # type: ignore[arg-type]
    nbytes = array.nbytes
    if tag is not None:
        typed_head = _tag_head(tag) + cbor_head(2, nbytes)
        if array.ndim == 1:
            return [typed_head, body]
        return [_TAG40_HEAD + _shape_cbor(array.shape) + typed_head, body]
    head = _EXT_HEAD + cbor2.dumps(dtype_str) + _shape_cbor(array.shape) + cbor_head(2, nbytes)
    return [head, body]


# What an array of a dtype without a wire form is sent as instead, by dtype kind.
_DTYPE_ADVICE: Final = {
    "M": "; send datetime64 as int64 with .view('int64'), and its unit beside it",
    "m": "; send timedelta64 as int64 with .view('int64'), and its unit beside it",
    "U": "; send text as a list of str (.tolist())",
    "S": "; send bytes as a list of bytes (.tolist())",
    "fields": "; send each field as an array of its own (a dict of arr[name] arrays)",
    "O": "; send the objects as a list (.tolist()) if each one can be sent",
}


class _LargeArray(Exception):
    """Raised inside cbor2 to abandon a plain encode: the value holds a large array."""


def _encode_default(encoder: Any, value: Any) -> None:
    """cbor2 hook for values it does not know: small arrays and numpy scalars."""
    if isinstance(value, np.ndarray):
        if value.nbytes >= ZERO_COPY_MIN_BYTES:
            raise _LargeArray
        encoder.write(b"".join(_array_pieces(value, copy=False)))
    elif isinstance(value, np.datetime64):
        # .item() is a naive datetime (refused in words that never named numpy) or, for
        # nanoseconds, a bare int that arrives as one (a values audit).
        raise TypeError(
            "a numpy datetime64 scalar cannot be sent: send an aware datetime "
            "(x.astype('datetime64[us]').item().replace(tzinfo=timezone.utc)) or its count "
            "(int(x.view('int64')), and its unit beside it)"
        )
    elif isinstance(value, np.timedelta64):  # (a duration: "an aware datetime" is no advice)
        raise TypeError(
            "a numpy timedelta64 scalar cannot be sent: send its seconds "
            "(x / np.timedelta64(1, 's'), a float) or its count (int(x.view('int64')), and "
            "its unit beside it)"
        )
    elif isinstance(value, _LONG_DOUBLE_SCALARS):  # .item() gives the numpy scalar back
        raise TypeError(
            f"a numpy {type(value).__name__} scalar has no Python number that keeps its "
            "precision: send float(x) (or complex(x)), or np.asarray(x), a 0-d array that "
            "keeps every bit"
        )
    elif isinstance(value, np.generic):
        if isinstance(value, np.void):  # .item() was a tuple (a list) or bytes: dtype lost
            raise TypeError(_void_refusal(value))
        encoder.encode(value.item())
    else:
        raise TypeError(
            f"values of type {type(value).__name__} cannot be sent: use numbers, str, bytes, "
            "lists, dicts, None, datetimes, numpy arrays or another type cbor2 knows (set, "
            "Decimal, UUID, ...: README, Values)"
        )


def _void_refusal(value: np.void) -> str:
    """What to do about a numpy void scalar: a structured array's element, or raw bytes."""
    if value.dtype.names:
        return (
            f"a numpy structured scalar (np.void of dtype {value.dtype!s:.80}) cannot be "
            "sent: its field names and dtypes have no wire form; send a dict of its fields, "
            "{name: x[name] for name in x.dtype.names}, or one array per field"
        )
    return (
        f"a numpy void scalar (dtype {value.dtype}) cannot be sent: send its bytes, "
        "x.tobytes(), or the values it holds as a numeric array (np.frombuffer(x.tobytes(), "
        "dtype))"
    )


def _encode_copying(encoder: Any, value: Any) -> None:
    """cbor2 hook below the depth :func:`_has_large_array` looks to: a large array nested
    that deep is copied into the encoding (rare; the alternative is no wire form at all)."""
    if isinstance(value, np.ndarray):
        encoder.write(b"".join(_array_pieces(value, copy=False)))
    else:
        _encode_default(encoder, value)


def _has_large_array(value: Any, depth: int = 0) -> bool:
    if isinstance(value, np.ndarray):
        return value.nbytes >= ZERO_COPY_MIN_BYTES
    if depth >= 8:  # deeper structures are encoded whole, their arrays copied (_encode_copying)
        return False
    if isinstance(value, dict):
        return any(_has_large_array(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_large_array(v, depth + 1) for v in value)
    return False


#: The deepest nesting of lists, tuples, dicts and sets a value may have to be sent. Readers
#: refuse more than PayloadLimits.max_depth (64 by default, 500 at most), so nothing deeper
#: is of use to them; and cbor2's encoder (6.3) recurses on the C stack without a bound: a
#: list nested 20,000 deep crashed the writer's process (a segfault).
MAX_SEND_DEPTH: Final = 1000
_NESTING: Final = frozenset({list, tuple, dict, set, frozenset})
_gc_tracked: Final = gc.is_tracked


def _check_depth(value: Any) -> None:
    """Refuse ``value`` (a list, tuple, dict or set) nested deeper than MAX_SEND_DEPTH.

    Walks the containers level by level, not recursively (Python's own recursion limit is
    about as deep), at a cost in containers visited, not items: a list or tuple is looked
    into through its first and last items only (a chain through middle items is not seen),
    a dict only if the garbage collector tracks it (a dict of numbers and text is not: one
    call), a set through every item. Not shapes data takes: a chain through middle items,
    a chain of tuples in a dict the collector stopped tracking.

    Raises:
        InvalidArgument: nested too deep.
    """
    nesting = _NESTING
    level = [value]
    for _ in range(MAX_SEND_DEPTH):
        below: list[Any] = []
        add = below.append
        for container in level:
            kind = type(container)
            if kind is list or kind is tuple:
                # Its first and last items, as encode_payload looks: how chains and wrappers
                # nest. Every item made a dict holding a list of 100 floats 75 % slower to
                # send (a review), for chains through middle items that are not data's shape.
                if container:
                    if type(container[0]) in nesting:
                        add(container[0])
                    if len(container) > 1 and type(container[-1]) in nesting:
                        add(container[-1])
            elif kind is dict:
                if _gc_tracked(container):
                    for item in container.values():
                        if type(item) in nesting:
                            add(item)
            else:
                for item in container:
                    if type(item) in nesting:
                        add(item)
        if not below:
            return
        level = below
    raise InvalidArgument(
        f"this value nests lists, tuples, dicts or sets more than {MAX_SEND_DEPTH} deep, "
        "which cannot be sent (readers refuse more than 64 by default: "
        "PayloadLimits.max_depth); flatten it"
    )


def _dumps(value: Any, default: Callable[[Any, Any], None] = _encode_default) -> bytes:
    if type(value) in _NESTING:
        _check_depth(value)
    try:
        return cbor2.dumps(value, default=default)
    except UnicodeEncodeError as exc:
        raise unencodable_text(exc) from None
    except NotImplementedError:  # cbor2 iterates a memoryview, which numpy's 2-D ones refuse
        raise TypeError(
            "a memoryview of more than one dimension cannot be sent inside a list or dict: "
            "pass bytes(view) for raw bytes or np.asarray(view) for typed data"
        ) from None
    except cbor2.CBOREncodeError as exc:
        # Surface plain TypeError/ValueError: callers should not need to know about cbor2.
        cause = exc.__cause__
        if isinstance(cause, _LargeArray):
            raise cause from None
        # from None: the message says what to do; cbor2's traceback would only repeat it.
        if isinstance(cause, TypeError | ValueError):
            raise type(cause)(str(cause)) from None
        if "naive datetime" in str(exc):
            raise ValueError(
                "a datetime without a timezone cannot be sent (a reader could not tell which "
                "time it is): give it one, e.g. datetime.now(timezone.utc)"
            ) from None
        raise ValueError(f"cannot encode this value: {exc}") from None


def unencodable_text(exc: UnicodeEncodeError) -> InvalidArgument:
    """The error for a str that UTF-8 cannot encode: a lone surrogate, as ``os.fsdecode``
    makes of a file name's undecodable bytes (CBOR text is UTF-8, so it has no wire form)."""
    bad = exc.object[exc.start : exc.end]
    return InvalidArgument(
        f"a str with {bad!r} at position {exc.start} cannot be sent: a lone surrogate has no "
        "UTF-8 form; repair the text first, e.g. text.encode('utf-8', 'backslashreplace')"
        ".decode() (a file name from os.fsdecode: os.fsencode(name).decode('utf-8', "
        "'replace'))"
    )


class _ThreadEncoder(threading.local):
    """One cbor2 encoder per thread, reused for every value the thread encodes.

    ``cbor2.dumps`` makes a BytesIO and an encoder per call. encode_payload runs once per
    frame on the writer's hot path; for the benchmarks' small value (a list of two ints, a
    bool and 82 bytes) reusing an encoder takes it from ~10,100 to ~9,050 instructions
    (valgrind's cachegrind; cbor2 6.3, benchmarks/README.md). Per thread because the default
    hook runs Python code, so the GIL can pass to another thread (a SyncClient's caller)
    mid-value. cbor2 restores the encoder's stream when a value fails, and keeps no state
    between values (no value sharing, no string references), so a failed value leaves it as
    good as new.
    """

    def __init__(self) -> None:
        self.encode_to_bytes: Callable[[Any], bytes] = cbor2.CBOREncoder(
            io.BytesIO(), default=_encode_default
        ).encode_to_bytes


_thread_encoder: Final = _ThreadEncoder()


def _pieces_of(value: Any, out: list[BytesLike], copy: bool) -> None:
    """Append the CBOR of ``value`` to ``out``, large arrays as separate pieces."""
    if isinstance(value, np.ndarray) and value.nbytes >= ZERO_COPY_MIN_BYTES:
        out.extend(_array_pieces(value, copy))
    elif type(value) is bytes:
        out.extend(_bytes_pieces(value))
    elif isinstance(value, dict) and _has_large_array(value):
        out.append(cbor_head(5, len(value)))
        for key, item in value.items():
            out.append(_dumps(key))
            _pieces_of(item, out, copy)
    elif isinstance(value, list | tuple) and _has_large_array(value):
        out.append(cbor_head(4, len(value)))
        for item in value:
            _pieces_of(item, out, copy)
    else:
        out.append(_dumps(value, _encode_copying))


# A payload of bytes is its CBOR head and the bytes: built here, not by cbor2. Its dumps()
# costs a call per value (a 100-byte string: ~180 ns, against ~60 ns here) and, for a large
# string, writes into a buffer of its own and copies that out: two fresh allocations, which
# glibc serves from pages it has just given back (1 MiB: ~480 page faults, ~0.7 ms on this
# machine with cbor2 6.3). Sent as its own piece, a large bytes value costs nothing here.
_SHORT_BYTES_HEADS: Final = tuple(cbor_head(2, n) for n in range(0x100))
# memoryview formats whose items are single bytes (after any byte-order prefix, as ctypes
# writes them: "<B"): such a view is a byte string. A flat view of another plain format is
# left to cbor2, which sends it as an array of its items; anything else has no wire form.
_BYTE_FORMATS: Final = frozenset({"B", "b", "c"})
_BYTE_ORDER_PREFIXES: Final = "@=<>!"


def _bytes_pieces(value: bytes) -> list[BytesLike]:
    """CBOR for a byte string; a large one is its own piece (immutable: never copied)."""
    size = len(value)
    if size < 0x100:
        return [_SHORT_BYTES_HEADS[size] + value]
    if size < ZERO_COPY_MIN_BYTES:
        return [cbor_head(2, size) + value]
    return [cbor_head(2, size), value]


def _buffer_pieces(value: bytearray | memoryview) -> list[BytesLike]:
    """CBOR for a bytearray or a memoryview of bytes, as a byte string.

    The caller may change the buffer as soon as send() returns, while the frame can still
    wait in the publisher's window (until the server acknowledges it): so its bytes are
    copied once, here. Only a view of a ``bytes`` object, which nothing can change, goes out
    as it is.
    """
    if type(value) is memoryview:
        if value.itemsize != 1 or value.format.lstrip(_BYTE_ORDER_PREFIXES) not in _BYTE_FORMATS:
            if value.ndim == 1 and value.format.isalpha():
                return [_dumps(value)]  # cbor2's own encoding: an array of the items
            raise TypeError(
                f"a memoryview of format {value.format[:20]!r} with {value.ndim} dimension(s) "
                "cannot be sent: send np.asarray(view) for typed data or bytes(view) for raw bytes"
            )
        if not value.c_contiguous or value.ndim != 1:
            return _bytes_pieces(value.tobytes())  # flat, in C order (also an empty 2-D view)
        immutable = type(value.obj) is bytes
        value = value.cast("B")  # flat, and our own: the caller may release() theirs
        if immutable and len(value) >= ZERO_COPY_MIN_BYTES:
            return [cbor_head(2, len(value)), value]
    size = len(value)
    if size < ZERO_COPY_MIN_BYTES:
        return [cbor_head(2, size) + value]
    return [cbor_head(2, size), bytes(value)]


class EncodedPayload:
    """A payload that :func:`encode_payload` produced already: it is sent as it is.

    It lets a value be encoded where it is produced and sent later: the synchronous client
    encodes in the caller's thread, so that a buffer the caller reuses for the next value
    cannot change a frame still waiting in its queue.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def encode_payload(value: Any, *, copy: bool = True) -> list[BytesLike]:
    """Encode one value as CBOR pieces whose concatenation is the payload.

    ``copy``: the elements of the caller's numpy arrays are copied (once, not through an
    encoder), as a bytearray's bytes are. A published frame can wait in the writer's queue,
    and then in its window until the server acknowledges it (sent again from there after a
    reconnect): pieces that were views of the caller's array carried whatever the caller
    wrote into it after ``send()`` returned (a reused acquisition buffer arrived torn: an
    outside audit). A caller that joins or writes the pieces before it returns passes False.

    Raises:
        TypeError: the value (or something inside it) has no wire form.
        ValueError: e.g. a naive datetime (send aware datetimes).
    """
    kind = type(value)
    if kind is np.ndarray:
        return _array_pieces(value, copy)
    if kind is bytes:
        return _bytes_pieces(value)
    if kind is EncodedPayload:
        return [value.data]
    if kind is bytearray or kind is memoryview:
        return _buffer_pieces(value)
    # Nesting checked before cbor2, which a value nested thousands deep crashes, at a cost
    # the values sent most hardly see: a dict of plain values is not tracked by the garbage
    # collector (see _check_depth); a list or tuple is walked only if its first or last
    # item nests (how chains and wrappers nest: [[[...]]], [value, next]). Looking at every
    # item of every list cost a small list's encode 30 % (0.75 of 2.5 us), so a chain that
    # nests only through middle items is left to cbor2.
    if kind in _NESTING:
        if kind is dict:
            if _gc_tracked(value):
                _check_depth(value)
        elif kind is not list and kind is not tuple:
            _check_depth(value)  # a set
        elif value and (type(value[0]) in _NESTING or type(value[-1]) in _NESTING):
            _check_depth(value)
    # The errors below are raised outside the handlers, so that the user sees that one
    # error, not cbor2's (or _LargeArray) chained before it.
    try:
        # The common case in one cbor2 call; only a large array inside a container makes
        # the hook give up, and then the value is encoded piece by piece.
        return [_thread_encoder.encode_to_bytes(value)]
    except _LargeArray:
        large = True
    except Exception:
        large = False
    if large:
        out: list[BytesLike] = []
        _pieces_of(value, out, copy)
        return out
    # No wire form: _dumps raises the error callers expect (TypeError or ValueError).
    return [_dumps(value)]


# --- decoding -------------------------------------------------------------------------------


def _refuse_tag(value: Any, immutable: bool) -> Any:
    raise ValueError("CBOR tags 35 (regex) and 36 (MIME) are refused")


def _typed_array(dtype: np.dtype[Any]) -> Callable[[Any, bool], Any]:
    def decode(value: Any, immutable: bool) -> np.ndarray[Any, Any]:
        if not isinstance(value, bytes | bytearray):
            raise ValueError("a typed array tag must wrap a byte string")
        if len(value) % dtype.itemsize:
            raise ValueError(f"typed array of {len(value)} bytes is not a whole number of {dtype}")
        # bytearray: arrays handed to the application are writable, like any other array.
        return np.frombuffer(bytearray(value), dtype=dtype)

    return decode


def _check_shape(shape: Any, count: int) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError("an array shape must be a list of non-negative integers")
    if math.prod(shape) != count:
        raise ValueError(f"shape {list(shape)} does not match {count} elements")
    return tuple(shape)


def _ndarray(value: Any, immutable: bool) -> np.ndarray[Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("tag 40 must wrap [shape, typed array]")
    shape, flat = value
    if not isinstance(flat, np.ndarray):
        raise ValueError("tag 40 must wrap a typed array")
    return flat.reshape(_check_shape(shape, flat.size))


def _ext_array(value: Any, immutable: bool) -> np.ndarray[Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(f"tag {EXT_ARRAY_TAG} must wrap [dtype, shape, bytes]")
    dtype_str, shape, data = value
    if dtype_str not in _EXT_DTYPES or not isinstance(data, bytes | bytearray):
        raise ValueError(f"unsupported extension array dtype {dtype_str!r}")
    dtype = np.dtype(dtype_str)
    if len(data) % dtype.itemsize:
        raise ValueError("extension array bytes are not a whole number of elements")
    flat = np.frombuffer(bytearray(data), dtype=dtype)
    return flat.reshape(_check_shape(shape, flat.size))


#: RFC 8949 section 3.4.6: "this is CBOR", which some encoders put in front of what they
#: write. cbor2's own decoder for it handed out its content as immutable: [1] as (1,).
SELF_DESCRIBE_TAG: Final = 55799


def _self_described(value: Any, immutable: bool) -> Any:
    """The content of tag 55799, as it would have been without the tag (cbor2 decoded it
    mutable or immutable, as its place in the payload asks)."""
    return value


def _refuse_nested_compression(value: Any, immutable: bool) -> Any:
    raise ValueError("a compressed payload tag is allowed only around a whole payload, once")


_SEMANTIC_DECODERS: Final[Mapping[int, Callable[[Any, bool], Any]]] = {
    **{tag: _typed_array(dtype) for tag, dtype in _DTYPE_BY_TAG.items()},
    NDARRAY_TAG: _ndarray,
    EXT_ARRAY_TAG: _ext_array,
    SELF_DESCRIBE_TAG: _self_described,
    **dict.fromkeys(_REFUSED_TAGS, _refuse_tag),
    **dict.fromkeys((ZLIB_PAYLOAD_TAG, ZSTD_PAYLOAD_TAG), _refuse_nested_compression),
}

# --- the cost guards ----------------------------------------------------------------------------
# cbor2 turns a bignum's bytes into an int in linear time, but a decimal fraction or bigfloat
# (tags 4/5) converts its mantissa to decimal digits in quadratic time: one 1 MiB CONTROL frame
# held the server for ~90 s. The tags 2-5 are therefore decoded by our own hooks, which look at
# the size of what they were given before converting anything.
_RAISE_HINT: Final = raise_limit_hint("{}")  # .format(field); compression.py's too


def _bignum(negative: bool, max_bytes: int) -> Callable[[Any, bool], Any]:
    def decode(value: Any, immutable: bool) -> int:
        if type(value) is not bytes:
            raise ValueError("a bignum tag must wrap a byte string")
        if len(value) > max_bytes:
            raise PayloadRefused(
                f"payload refused: an integer of {len(value)} bytes exceeds "
                f"PayloadLimits.max_bignum_bytes ({max_bytes}); "
                + _RAISE_HINT.format("max_bignum_bytes")
            )
        number = int.from_bytes(value, "big")
        return -1 - number if negative else number

    return decode


def _decimal(binary: bool, max_bytes: int) -> Callable[[Any, bool], Any]:
    """Tag 4 (decimal fraction, ``m * 10**e``) or 5 (bigfloat, ``m * 2**e``) as cbor2 does."""

    def decode(value: Any, immutable: bool) -> Decimal:
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or type(value[0]) is not int
            or type(value[1]) is not int
        ):
            raise ValueError(f"tag {5 if binary else 4} must wrap [exponent, mantissa] integers")
        exponent, mantissa = value
        if mantissa.bit_length() > 8 * max_bytes:
            raise PayloadRefused(
                f"payload refused: a decimal of {(mantissa.bit_length() + 7) // 8} bytes of "
                f"mantissa exceeds PayloadLimits.max_decimal_bytes ({max_bytes}); "
                + _RAISE_HINT.format("max_decimal_bytes")
            )
        try:
            if binary:
                return Decimal(mantissa) * (2 ** Decimal(exponent))
            sign, digits, _ = Decimal(mantissa).as_tuple()
            return Decimal((sign, digits, exponent))
        except (ArithmeticError, ValueError) as exc:  # exponents out of Decimal's range
            raise ValueError(f"unusable decimal exponent {brief(exponent)}") from exc

    return decode


def _payload_decoders(limits: PayloadLimits) -> Mapping[int, Callable[[Any, bool], Any]]:
    decoders = _DECODERS_BY_LIMITS.get(limits)
    if decoders is None:
        decoders = {
            **_SEMANTIC_DECODERS,
            2: _bignum(False, limits.max_bignum_bytes),
            3: _bignum(True, limits.max_bignum_bytes),
            4: _decimal(False, limits.max_decimal_bytes),
            5: _decimal(True, limits.max_decimal_bytes),
        }
        if len(_DECODERS_BY_LIMITS) >= 64:  # a program makes a few limits objects, not many
            _DECODERS_BY_LIMITS.clear()
        _DECODERS_BY_LIMITS[limits] = decoders
    return decoders


_DECODERS_BY_LIMITS: dict[PayloadLimits, Mapping[int, Callable[[Any, bool], Any]]] = {}
_DEFAULT_DECODERS: Final = _payload_decoders(DEFAULT_PAYLOAD_LIMITS)


def _refusal(exc: BaseException) -> PayloadRefused | None:
    """The PayloadRefused a hook raised, which cbor2 wraps (once per enclosing tag)."""
    refused = _wrapped(exc, PayloadRefused)
    return refused if isinstance(refused, PayloadRefused) else None


def _raise_wrapped(exc: BaseException) -> None:
    """Raise what a hook raised inside cbor2, which wraps it, if it must go on up as itself:
    a PayloadRefused, or a KeyboardInterrupt (or SystemExit), which is not a malformed
    payload and must not be lost to a second try that succeeds."""
    refused = _refusal(exc)
    if refused is not None:
        raise refused from None
    interrupt = _wrapped(exc, (KeyboardInterrupt, SystemExit))
    if interrupt is not None:
        raise interrupt from None


def _wrapped(
    exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 100:
        if isinstance(cause, kind):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


# Control envelopes carry no tags at all (payloads inside them are byte strings): every tag
# is refused, cbor2's built-in ones (which includes 2-5: bignums, decimals, bigfloats, and
# 28/29: shared values, which turn an echoed ping into an exponential re-encode) through
# semantic decoders, the others through the tag hook. Refused at the tag, in linear time.
CBOR2_BUILTIN_TAGS: Final = (
    *(0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100),
    *(256, 258, 260, 261, 1004, 43000, 55799),
)


def _refuse_in_control(tag: int) -> Callable[[Any, bool], Any]:
    def refuse(value: Any, immutable: bool) -> Any:
        raise ValueError(f"CBOR tag {tag} is not allowed in a control message")

    return refuse


def _refuse_unknown_in_control(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise ValueError(f"CBOR tag {brief(tag.tag)} is not allowed in a control message")


_CONTROL_DECODERS: Final = {tag: _refuse_in_control(tag) for tag in CBOR2_BUILTIN_TAGS}


def _loads_control(data: BytesLike) -> Any:
    """Decode exactly one CBOR item; trailing bytes are an error (cbor2.loads ignores them)."""
    view = memoryview(data)
    stream = io.BytesIO(view)
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=CONTROL_MAX_DEPTH,
        strict_hashable_types=True,
        allow_indefinite=False,
        semantic_decoders=_CONTROL_DECODERS,
        tag_hook=_refuse_unknown_in_control,
    )
    value = decoder.decode()
    if stream.tell() != view.nbytes:
        raise ValueError(f"{view.nbytes - stream.tell()} trailing bytes after the CBOR item")
    return value


def _reason(exc: BaseException) -> str:
    """cbor2's message with the one our hook gave, cut for an error message."""
    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, ValueError) and not isinstance(cause, cbor2.CBORError):
        text = f"{text}: {cause}"
    return cut(text)


def _fast_array(data: memoryview) -> np.ndarray[Any, Any] | None:
    """Zero-copy decode of a payload that is exactly one array in our own canonical form.

    Anything else (or anything odd) returns None and takes the general cbor2 path.
    """
    pos = 0
    shape: tuple[int, ...] | None = None
    if bytes(data[:3]) == _TAG40_HEAD:
        pos = 3
        head = data[pos]
        if head >> 5 != 4 or head & 0x1F >= 24:
            return None
        shape, pos = _read_dims(data, pos + 1, head & 0x1F)
        if shape is None:
            return None
    if len(data) < pos + 2 or data[pos] != 0xD8:
        return None
    dtype = _DTYPE_BY_TAG.get(data[pos + 1])
    if dtype is None:
        return None
    pos += 2
    if data[pos] >> 5 != 2:
        return None
    nbytes, pos = _read_uint(data, pos, major=2)
    if nbytes is None or pos + nbytes != len(data) or nbytes % dtype.itemsize:
        return None
    array = np.frombuffer(data, dtype=dtype, offset=pos, count=nbytes // dtype.itemsize)
    if not array.flags.aligned or not array.flags.writeable:
        # Unaligned float math is slow in numpy: one copy is cheaper. Read-only: the bytes
        # were immutable (an RPC result); arrays handed to the application are writable.
        array = array.copy()
    if shape is not None:
        if math.prod(shape) != array.size:
            return None
        array = array.reshape(shape)
    return array


def _read_dims(data: memoryview, pos: int, ndim: int) -> tuple[tuple[int, ...] | None, int]:
    """An array's shape: ``ndim`` unsigned integers from ``pos`` (None: not that)."""
    dims = []
    for _ in range(ndim):
        dim, pos = _read_uint(data, pos)
        if dim is None:
            return None, pos
        dims.append(dim)
    return tuple(dims), pos


def _read_uint(data: memoryview, pos: int, major: int = 0) -> tuple[Any, int]:
    if pos >= len(data) or data[pos] >> 5 != major:
        return None, pos
    info = data[pos] & 0x1F
    if info < 24:
        return info, pos + 1
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or pos + 1 + width > len(data):
        return None, pos
    return int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width


# Arrays inside a list or dict. cbor2 copies a byte string into a new bytes object, which a
# typed array's decoder copied again into a bytearray (arrays handed out are writable): two
# copies, and two fresh allocations, of each (an 8 MB array inside a dict decoded ~7x slower
# than alone). So a large payload is first walked here, by its heads alone, and each large
# array in it is taken out of the received bytes as a top-level one is (_fast_array); cbor2
# decodes the rest, where a private tag holding the array's index takes its place. That rest
# is copied once more (into the bytes cbor2 is given), so it is done only where the arrays
# are at least half the payload. The walk gives up (and cbor2 decodes the payload as it is)
# at anything else: more than _SPLICE_MAX_ITEMS items in all (a container's count says so at
# once), strings that leave too little for the arrays, an indefinite length, a cut. What it
# costs when it finds nothing (~1.5 us, and ~0.3 us a head, on a slow shared machine) is why
# only payloads of 256 KiB and more are walked. There, on that machine: a dict of a 256 kB
# bytes value and an int ~3 us more (of ~50 us); the dearest case, arrays just short of half
# (a 128 kB array beside 130 kB of bytes), ~10 us more (of ~60 us); a dict of a 256 kB array
# and a float ~40 us instead of ~60 (~5 us where its elements are aligned); 8 MB: ~1.4 ms
# instead of ~11 ms (~0.02 ms aligned).
_SPLICE_MIN_BYTES: Final = 262144  # of the payload
_SPLICE_MIN_ARRAY_BYTES: Final = 65536  # of each array taken out
_SPLICE_MAX_ITEMS: Final = 32  # CBOR items: {"image": arr} and 15 more numbers and keys
#: Never on the wire: only in the bytes decode_payload gives cbor2 (a payload that carries it
#: already is decoded as it is, the tag as a CBORTag).
_SPLICE_TAG: Final = 7631620  # 0x747304
_SPLICE_HEAD: Final = _tag_head(_SPLICE_TAG)
# [[index]] in place of the extension tag's [dtype, [shape], bytes]: as deep, so that
# PayloadLimits.max_depth refuses the same payloads.
_SPLICE_EXT_HEAD: Final = _SPLICE_HEAD + b"\x81\x81"
_SPLICE_CONTENT_HEADS: Final = frozenset({0x5A, 0x5B, 0x83})  # bytes of 4- and 8-byte length; [3]
_unpack_u32: Final = struct.Struct(">I").unpack_from
_unpack_u64: Final = struct.Struct(">Q").unpack_from
_ArraySpec = tuple[int, int, np.dtype[Any], int, int, tuple[int, ...] | None]


def _splice_decoder(arrays: list[np.ndarray[Any, Any]]) -> Callable[[Any, bool], Any]:
    def take(index: Any, immutable: bool) -> Any:
        return arrays[index if type(index) is int else index[0][0]]

    return take


def _spliced(data: memoryview, size: int) -> tuple[bytes, list[np.ndarray[Any, Any]]] | None:
    """The payload ``data`` (``size`` bytes) with each large array replaced by
    ``_SPLICE_TAG(index)``, and the arrays; None if it has none or the walk gave up."""
    found: list[_ArraySpec] = []
    found_bytes = 0
    pos = 0
    pending = 1  # items still to walk over
    budget = _SPLICE_MAX_ITEMS
    while pending:
        if pos >= size:
            return None
        initial = data[pos]
        info = initial & 0x1F
        if info < 24:
            arg = info
            end = pos + 1
        elif info == 24:
            end = pos + 2
            if end > size:
                return None
            arg = data[pos + 1]
        elif info == 26:
            end = pos + 5
            if end > size:
                return None
            arg = _unpack_u32(data, pos + 1)[0]
        elif info <= 27:
            end = pos + 1 + (1 << (info - 24))
            if end > size:
                return None
            arg = int.from_bytes(data[pos + 1 : end], "big")
        else:
            return None  # an indefinite length (or a reserved value): cbor2's to decode
        major = initial >> 5
        pending -= 1
        budget -= 1
        if major == 5:
            pending += arg + arg
        elif major == 4:
            pending += arg
        elif major == 2 or major == 3:
            end += arg
            if 2 * (found_bytes + size - end) < size:
                return None  # what is left cannot hold arrays of half the payload
        elif major == 6:
            if arg == _SPLICE_TAG:
                return None
            # A large array's bytes have a 4- or 8-byte length (extension: a 3-item array)
            spec = (
                _array_at(data, pos, end, arg, size)
                if end < size and data[end] in _SPLICE_CONTENT_HEADS
                else None
            )
            if spec is None:
                pending += 1  # the tag's content
            else:
                found.append(spec)
                end = spec[1]
                found_bytes += end - spec[3]
        # else a number or simple value: its head is all of it
        if pending > budget:
            return None
        pos = end
    if pos > size or 2 * found_bytes < size:
        return None  # none, or a rewrite that copies more than half the payload again
    pieces: list[BytesLike] = []
    arrays = []
    done = 0
    for index, (start, stop, dtype, at, count, shape) in enumerate(found):
        array = np.frombuffer(data, dtype=dtype, offset=at, count=count)
        if 2 * (stop - at) < size or not array.flags.aligned or not array.flags.writeable:
            # One copy: unaligned or read-only as _fast_array says; and an array that is less
            # than half the payload does not keep the rest of it (the whole frame) alive.
            array = array.copy()
        arrays.append(array if shape is None else array.reshape(shape))
        head = _SPLICE_HEAD if shape is None else _SPLICE_EXT_HEAD
        pieces += (data[done:start], head, cbor_head(0, index))
        done = stop
    pieces.append(data[done:pos])
    return b"".join(pieces), arrays


def _array_at(data: memoryview, start: int, pos: int, tag: int, size: int) -> _ArraySpec | None:
    """Where the elements are of the large array that the typed-array or extension tag
    ``tag`` (its head at ``start``) holds at ``pos``; None if it holds none."""
    dtype = _DTYPE_BY_TAG.get(tag)
    shape: tuple[int, ...] | None = None
    at = pos
    if dtype is None:  # [dtype, shape, bytes] of the extension tag?
        if tag != EXT_ARRAY_TAG or pos >= size or data[pos] != 0x83:
            return None
        nchars, at = _read_uint(data, pos + 1, major=3)
        if nchars is None or nchars > 8:
            return None
        dtype_str = bytes(data[at : at + nchars]).decode("ascii", "replace")
        if dtype_str not in _EXT_DTYPES:
            return None
        try:
            dtype = np.dtype(dtype_str)
        except TypeError:  # a long double this machine does not have: _ext_array says so
            return None
        ndim, at = _read_uint(data, at + nchars, major=4)
        if ndim is None or ndim > 64:
            return None
        shape, at = _read_dims(data, at, ndim)
        if shape is None:
            return None
    if at + 9 > size:
        return None
    head = data[at]
    if head == 0x5A:  # a byte string of a 4-byte length (8: beyond 4 GiB)
        nbytes = _unpack_u32(data, at + 1)[0]
        at += 5
    elif head == 0x5B:
        nbytes = _unpack_u64(data, at + 1)[0]
        at += 9
    else:
        return None
    if nbytes < _SPLICE_MIN_ARRAY_BYTES or nbytes % dtype.itemsize or at + nbytes > size:
        return None
    count = nbytes // dtype.itemsize
    if shape is not None and math.prod(shape) != count:
        return None  # _ext_array's error to raise
    return start, at + nbytes, dtype, at, count, shape


_COMPRESSED_HEADS: Final = {_tag_head(tag): tag for tag in (ZLIB_PAYLOAD_TAG, ZSTD_PAYLOAD_TAG)}


def _decompressed(data: BytesLike, offset: int, max_bytes: int) -> bytes | None:
    """The CBOR inside a compressed payload (at most ``max_bytes``); None if not one."""
    tag = _COMPRESSED_HEADS.get(bytes(data[offset : offset + 5]))
    if tag is None:
        return None
    view = memoryview(data)[offset + 5 :]
    nbytes, pos = _read_uint(view, 0, major=2)
    if nbytes is None or pos + nbytes != len(view):
        raise ValueError(f"tag {tag} must wrap exactly one byte string")
    from .compression import decompress  # compression.py imports this module

    inner = decompress(tag, view[pos:], max_bytes)
    if bytes(inner[:5]) in _COMPRESSED_HEADS:
        raise ValueError("a payload is compressed once, not twice")
    return inner


# One CBOR byte string (major type 2): the payload of a writer that sends bytes. Decoded here
# without cbor2, whose loads() builds a decoder object per call (several times what a short
# slice costs) and copies a long string more than once (1 MiB: ~65 us, against ~20 us here).
_BYTES_FIRST: Final = 0x40
_BYTES_INLINE_LAST: Final = 0x57  # lengths 0-23 in the head byte
_BYTES_U8: Final = 0x58
_BYTES_U16: Final = 0x59
_BYTES_U32: Final = 0x5A
_BYTES_U64: Final = 0x5B  # the widest definite length; 0x5F (indefinite) is cbor2's job
_TAG_U8: Final = 0xD8  # a tag of one byte first: maybe one array (zero-copy)
_TAG_U32: Final = 0xDA  # a tag of four bytes first: maybe a compressed payload


def _byte_string(data: BytesLike, offset: int, size: int) -> bytes | None:
    """The payload's bytes if it is exactly one byte string, else None (cbor2's job)."""
    first = data[offset]
    if first <= _BYTES_INLINE_LAST:
        start, length = 1, first - _BYTES_FIRST
    elif first == _BYTES_U16:
        if size < 3:
            return None
        start, length = 3, data[offset + 1] << 8 | data[offset + 2]
    elif first == _BYTES_U8:
        if size < 2:
            return None
        start, length = 2, data[offset + 1]
    else:  # the length in the next 4 or 8 bytes
        start = 5 if first == _BYTES_U32 else 9
        if size < start:
            return None
        length = int.from_bytes(data[offset + 1 : offset + start], "big")
    if start + length != size:
        return None  # trailing bytes or truncated: cbor2 says what it makes of them
    if size < ZERO_COPY_MIN_BYTES:
        return bytes(data[offset + start :])  # two small copies cost less than a view
    # The one copy the API promises (a value of type bytes), straight from the frame.
    return bytes(memoryview(data)[offset + start :])


SHORT_PAYLOAD_MAX_BYTES: Final = 64


def short_payload_bytes(limits: PayloadLimits) -> int:
    """Payloads shorter than this cannot reach ``limits.max_depth`` nor
    ``limits.max_key_collisions``: cbor2 decodes them without those two checks.

    Every CBOR item takes at least one byte, so a payload of n bytes nests at most n deep and
    holds at most n keys in one map or elements in one set. Small values (a number, a short
    list of them: what most lab channels carry) skip the checks' cost; the bignum and decimal
    limits are the semantic decoders' and always apply. At most SHORT_PAYLOAD_MAX_BYTES, far
    below the depth cbor2 allows by default (400), so its own default never refuses what
    ``limits.max_depth`` would let through.
    """
    return min(limits.max_depth, limits.max_key_collisions + 1, SHORT_PAYLOAD_MAX_BYTES)


_DEFAULT_SHORT_PAYLOAD_BYTES: Final = short_payload_bytes(DEFAULT_PAYLOAD_LIMITS)


#: The largest payload a PayloadReader decodes from its own buffer (which grows to this).
READER_BUFFER_MAX_BYTES: Final = ZERO_COPY_MIN_BYTES


class _Unread(Exception):
    """PayloadReader.read could not decode it: decode_payload's turn. ``keys_unchecked``:
    its checked decoder refused it (a map key other than text and bytes, or malformed), as
    decode_payload's own checked try would, so the key walk is next. An exception, not a
    returned marker: the value's way back stays a plain return (~25 ns a value)."""

    def __init__(self, keys_unchecked: bool) -> None:
        super().__init__()
        self.keys_unchecked = keys_unchecked


class PayloadReader:
    """What makes :func:`decode_payload` ~50-80 ns cheaper for one reader's CBOR values.

    ``cbor2.loads`` makes a BytesIO and a decoder for every call, and copies a frame slice
    (a bytearray) into bytes first: a third of the cost of a 100-byte value. A reader keeps one
    buffer and two decoders on it (without and with the depth and key checks, chosen by
    size as decode_payload chooses): the frame is written into the buffer, which then ends
    where the frame does, so a cut payload still fails. A value that fails here is decoded
    again the usual way, which raises the error it always raised; one the checked decoder
    refused goes on from where decode_payload's own checked try would fail. A refusal costs
    a fresh decoder (~0.5 us: the one that raised keeps what it read ahead), so a map with
    keys other than text and bytes costs ~7 % more than without a reader (its key walk,
    ~13 us for 20 integer keys, is the bulk either way).

    Not for sharing between threads (the buffer is written, then read): a subscription has
    its own. cbor2 starts every decode afresh (shared values, string references).
    """

    __slots__ = ("_buffer", "_checked", "_limits", "_quick", "_short")

    def __init__(self, limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS) -> None:
        self._limits = limits
        self._short = short_payload_bytes(limits)
        self._buffer = io.BytesIO()
        self._quick = self._decoder(checked=False)
        self._checked = self._decoder(checked=True)

    def _decoder(self, *, checked: bool) -> Callable[[], Any]:
        limits = self._limits
        decoders = _payload_decoders(limits)
        if not checked:
            return cbor2.CBORDecoder(self._buffer, semantic_decoders=decoders).decode
        return cbor2.CBORDecoder(
            self._buffer,
            semantic_decoders=decoders,
            max_depth=limits.max_depth,
            strict_hashable_types=True,
        ).decode

    def read(self, data: BytesLike, offset: int, size: int) -> Any:
        """The CBOR value at ``data[offset:]`` (``size`` bytes, at most
        READER_BUFFER_MAX_BYTES).

        Raises:
            _Unread: it does not decode here.
        """
        buffer = self._buffer
        buffer.seek(0)
        buffer.write(data)
        buffer.truncate()
        buffer.seek(offset)
        try:
            return self._quick() if size < self._short else self._checked()
        except Exception as exc:
            # A decoder that raised keeps what it read ahead: a fresh one for the next value.
            checked = size >= self._short
            if checked:
                self._checked = self._decoder(checked=True)
            else:
                self._quick = self._decoder(checked=False)
            _raise_wrapped(exc)
            raise _Unread(checked and isinstance(exc, cbor2.CBORDecodeError)) from None


def decode_payload(
    data: BytesLike,
    offset: int = 0,
    limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
    reader: PayloadReader | None = None,
) -> Any:
    """Decode a payload. Arrays are writable numpy arrays.

    An array that is the whole payload shares ``data`` when its elements are aligned and
    ``data`` is writable, else it is copied once. So is a large array inside a list or dict
    (64 KiB or more, in a payload of 256 KiB or more that is at least half such arrays), if
    it is at least half the payload; a smaller one is copied once (it does not keep the frame
    alive). Other arrays inside containers are copied twice (cbor2's bytes, then ours).

    ``reader``: one made with the same ``limits``, for a reader of many values (faster).

    A compressed payload (docs/protocol.md 4.1) is decompressed first, to at most
    ``limits.max_decompressed_bytes``.

    Raises:
        PayloadRefused: the payload is beyond ``limits`` (the message names the limit), e.g.
            it decompresses to more than ``limits.max_decompressed_bytes``.
        ProtocolError: the bytes are not a well-formed payload (bytes after a complete
            first item are not looked for: see docs/protocol.md section 4).
    """
    # Every reader calls this once per message: the common payloads (a byte string,
    # an array or map for cbor2) are told apart by their first byte, one comparison each.
    size = len(data) - offset
    try:
        first = data[offset] if size > 0 else -1
        if _BYTES_FIRST <= first <= _BYTES_U64:
            if first == _BYTES_U8:  # the commonest: 24-255 bytes
                if size >= 2 and data[offset + 1] == size - 2:
                    return bytes(data[offset + 2 :])
            else:
                raw = _byte_string(data, offset, size)
                if raw is not None:
                    return raw
        elif first == _TAG_U8:
            array = _fast_array(memoryview(data)[offset:])
            if array is not None:
                return array
        elif first == _TAG_U32 and size > 5:
            inner = _decompressed(data, offset, limits.max_decompressed_bytes)
            if inner is not None:
                return decode_payload(inner, 0, limits)
        keys_unchecked = False
        if reader is not None and size <= READER_BUFFER_MAX_BYTES:
            try:
                return reader.read(data, offset, size)
            except _Unread as unread:
                keys_unchecked = unread.keys_unchecked
        if limits is DEFAULT_PAYLOAD_LIMITS:
            decoders = _DEFAULT_DECODERS
            short = size < _DEFAULT_SHORT_PAYLOAD_BYTES
        else:
            decoders = _payload_decoders(limits)
            short = size < short_payload_bytes(limits)
        view: BytesLike
        if size < ZERO_COPY_MIN_BYTES:
            view = data[offset:]  # a small payload is cheaper to slice (copy) than to view
        else:
            view = memoryview(data)[offset:]
            if size >= _SPLICE_MIN_BYTES:
                spliced = _spliced(view, size)
                if spliced is not None:
                    view, arrays = spliced
                    decoders = {**decoders, _SPLICE_TAG: _splice_decoder(arrays)}
        if short:  # no depth or key limit to check: see short_payload_bytes
            return cbor2.loads(view, semantic_decoders=decoders)
        # Payloads are the writers' data, not envelopes: one cbor2.loads (no trailing-bytes
        # check, which would cost a decoder object per frame). Map keys other than text and
        # bytes are refused in this first try: see cbor_scan for why and what follows.
        if not keys_unchecked:
            try:
                return cbor2.loads(
                    view,
                    max_depth=limits.max_depth,
                    semantic_decoders=decoders,
                    strict_hashable_types=True,
                )
            except cbor2.CBORDecodeError as exc:
                _raise_wrapped(exc)
        return _decode_with_keys_checked(view, limits, decoders)
    except (cbor2.CBORDecodeError, ValueError, IndexError) as exc:
        _raise_wrapped(exc)
        raise ProtocolError(f"malformed payload: {_reason(exc)}") from exc


def _decode_with_keys_checked(
    view: BytesLike, limits: PayloadLimits, decoders: Mapping[int, Callable[[Any, bool], Any]]
) -> Any:
    """The second try of decode_payload: a payload with map keys other than text and bytes,
    decoded once its keys are known not to collide (see cbor_scan)."""

    def decode_key(key: memoryview) -> Any:
        return cbor2.loads(
            key, max_depth=limits.max_depth, semantic_decoders=decoders, immutable=True
        )

    check_key_collisions(
        memoryview(view),
        max_collisions=limits.max_key_collisions,
        max_depth=limits.max_depth,
        decode_key=decode_key,
    )
    return cbor2.loads(view, max_depth=limits.max_depth, semantic_decoders=decoders)


def encode_control(message: Mapping[str, Any]) -> bytes:
    """Encode a control envelope (a map with text keys)."""
    return _dumps(dict(message))


def decode_control(data: BytesLike, max_items: int | None = None) -> dict[str, Any]:
    """Decode an untrusted control envelope with cbor2's hardening switched on;
    ``max_items``: refuse one of more CBOR items than that before decoding anything.

    Raises:
        ProtocolError: not exactly one CBOR map with text keys within the limits.
    """
    if max_items is not None and len(data) > max_items:  # (an item takes a byte at least)
        _check_item_count(memoryview(data), max_items)
    try:
        value = _loads_control(data)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed control message: {_reason(exc)}") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ProtocolError("a control message must be a CBOR map with text keys")
    if len(value) != _declared_pairs(data):
        # cbor2 keeps the last of two equal keys: a map read one way here and another way by
        # any intermediary (RFC 8949 section 5.6 calls it not valid). One comparison a message.
        raise ProtocolError("a control message has a key twice: send each key once")
    return value


_LENGTH_FOLLOWS: Final = {24: 1, 25: 2, 26: 4, 27: 8}  # CBOR additional info -> argument bytes


def _check_item_count(data: memoryview, max_items: int) -> None:
    """Refuse ``data`` if its CBOR item holds more than ``max_items`` items, looking at
    the heads of at most that many (strings are skipped by their length): bounded time,
    whatever the bytes. What this walk cannot read (truncated, indefinite, reserved) is left
    to the decoder, which refuses it.

    Raises:
        ProtocolError: more items than ``max_items``.
    """
    size = len(data)
    pos = 0
    pending = 1  # items still to read: the top one, then what containers and tags declare
    items = 0
    while pending:
        if pos >= size:
            return
        initial = data[pos]
        info = initial & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info <= 27:
            end = pos + (1 << (info - 24))
            arg = int.from_bytes(data[pos:end], "big")
            pos = end
        else:
            return
        pending -= 1
        items += 1
        if items > max_items:
            raise ProtocolError(
                f"a control message of more than {max_items} CBOR items: envelopes are small "
                "(RPC arguments and results go in one byte string; docs/protocol.md, section 3)"
            )
        major = initial >> 5
        if major == 2 or major == 3:
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1


def _declared_pairs(data: BytesLike) -> int:
    """The pair count a definite-length CBOR map's head (at ``data[0]``) declares."""
    info = data[0] & 0x1F
    size = _LENGTH_FOLLOWS.get(info)
    if size is None:
        return info
    return int.from_bytes(data[1 : 1 + size], "big")
