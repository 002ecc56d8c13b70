"""The Python codec against the shared CBOR vectors (tests/vectors/), which the browser codec
is checked against too (tests/js/cbor.test.mjs): both sides agree on the bytes.

Every valid vector decodes with ``decode_payload`` to the value its JSON form describes (apart
from the ones marked ``optional``, which a decoder may refuse); every numpy array among them is
rebuilt from its JSON form and encoded by ``encode_payload`` to exactly the vector's bytes
(little-endian tags, as docs/protocol.md section 4 says writers use); every invalid vector of
level ``wellformed`` or ``protocol`` is refused with ``ProtocolError``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

from trio_stream import ProtocolError
from trio_stream._protocol.codec import decode_payload, encode_payload

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "cbor_vectors.json").read_text(encoding="utf-8")
)
VALID = VECTORS["valid"]
INVALID = [v for v in VECTORS["invalid"] if v["level"] in ("wellformed", "protocol")]
# Payloads are decoded with one cbor2.loads per frame, which stops after the first item: the
# trailing-bytes check is made on CONTROL envelopes only (docs/protocol.md section 3).
PAYLOAD_ACCEPTS = {"trailing byte"}
# Whose bytes cbor2 wrote in a form our encoder does not choose (it is cbor2 too, but numpy
# arrays are ours): big-endian arrays, which no trio_stream writer produces.
BIG_ENDIAN = ">"


# -- the JSON forms of tests/vectors/README.md, rebuilt as Python values ------------------------
def _number(x: Any) -> Any:
    if isinstance(x, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}.get(x, x)
    return x


def _flat(dtype: np.dtype[Any], values: list[Any]) -> np.ndarray[Any, Any]:
    if dtype.kind in "iu" and dtype.itemsize == 8:
        return np.array([int(v) for v in values], dtype=dtype)
    return np.array([_number(v) for v in values], dtype=dtype)


def _typed(form: dict[str, Any]) -> np.ndarray[Any, Any]:
    dtype = np.dtype(form["dtype"])
    if form["type"] == "Array":
        raise LookupError("tag 40 around a plain array has no numpy form here")
    return _flat(dtype, form["values"])


def _ext(form: dict[str, Any]) -> np.ndarray[Any, Any]:
    dtype = np.dtype(form["dtype"])
    values = form["values"]
    flat: np.ndarray[Any, Any]
    if dtype.kind == "c":  # interleaved real and imaginary parts
        part = np.float32 if dtype.itemsize == 8 else np.float64
        flat = np.array([_number(v) for v in values], dtype=part).view(dtype)
    elif dtype.kind == "b":
        flat = np.array([bool(v) for v in values], dtype=dtype)
    else:  # dtypes JS has no type for: the raw bytes
        flat = np.frombuffer(bytes(values), dtype=dtype)
    return flat.reshape(form["shape"])


def rebuild(form: Any) -> Any:
    """The Python value a vector's JSON form stands for."""
    if isinstance(form, list):
        return [rebuild(x) for x in form]
    if not isinstance(form, dict):
        return form
    if len(form) == 1:
        ((key, inner),) = form.items()
        if key == "$bigint":
            return int(inner)
        if key == "$float":
            return _number(inner)
        if key == "$bytes":
            return bytes.fromhex(inner)
        if key == "$undefined":
            return cbor2.undefined
        if key == "$simple":
            return cbor2.CBORSimpleValue(inner)
        if key == "$date":
            return dt.datetime.fromisoformat(inner.replace("Z", "+00:00"))
        if key == "$map":
            return {rebuild(k): rebuild(v) for k, v in inner}
        if key == "$object":
            return {k: rebuild(v) for k, v in inner.items()}
        if key == "$tag":
            return cbor2.CBORTag(inner["tag"], rebuild(inner["value"]))
        if key == "$typed":
            return _typed(inner)
        if key == "$ndarray":
            return _typed(inner).reshape(inner["shape"])
        if key == "$ext":
            return _ext(inner)
    return {k: rebuild(v) for k, v in form.items()}


def assert_same(got: Any, want: Any, where: str = "value") -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: {got!r} is not an array"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        if want.dtype.kind == "f" and want.dtype.itemsize > 8:  # long double: compare bytes
            assert got.tobytes() == want.tobytes(), where
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)
            # -0.0 == 0.0 for numpy: the sign bits must match too
            if want.dtype.kind == "f":
                assert np.array_equal(np.signbit(got), np.signbit(want)), where
    elif isinstance(want, float):
        assert isinstance(got, float), f"{where}: {got!r} is not a float"
        if math.isnan(want):
            assert math.isnan(got), where
        else:
            assert got == want and math.copysign(1, got) == math.copysign(1, want), where
    elif isinstance(want, list):
        # cbor2 decodes arrays inside a tag as tuples (the tag's content is made hashable)
        assert isinstance(got, list | tuple) and len(got) == len(want), f"{where}: {got!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: {got!r}"
        for k in want:
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, cbor2.CBORTag):
        assert isinstance(got, cbor2.CBORTag) and got.tag == want.tag, f"{where}: {got!r}"
        assert_same(got.value, want.value, f"{where}.value")
    elif isinstance(want, dt.datetime):
        assert isinstance(got, dt.datetime) and got.tzinfo is not None, f"{where}: {got!r}"
        assert got == want, where
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def arrays_in(value: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, list):
        return [a for item in value for a in arrays_in(item)]
    if isinstance(value, dict):
        return [a for item in value.values() for a in arrays_in(item)]
    return []


NO_FORM: Any = object()


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_valid_vector_decodes_to_its_value(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    try:
        want = rebuild(vector["value"])
    except LookupError:
        assert vector.get("optional"), vector["name"]
        want = NO_FORM
    try:
        got = decode_payload(data)
    except ProtocolError:
        if vector.get("optional"):
            return  # a decoder may refuse it (tests/vectors/README.md)
        raise
    assert want is not NO_FORM, "an optional form decoded: teach rebuild() about it"
    assert_same(got, want)
    # Whatever the alignment of the received bytes, the same value (payloads arrive anywhere
    # inside a frame).
    for offset in range(1, 8):
        assert_same(decode_payload(b"\x00" * offset + data, offset), want, f"at offset {offset}")


ENCODABLE = [
    v
    for v in VALID
    if not v.get("optional")
    and isinstance(v["value"], dict)
    and len(v["value"]) == 1
    and next(iter(v["value"])) in ("$typed", "$ndarray", "$ext")
    and BIG_ENDIAN not in json.dumps(v["value"])
    # numpy has no clamped uint8 (tag 68): Python writes tag 64 for those bytes
    and "Uint8ClampedArray" not in json.dumps(v["value"])
]


def test_every_array_kind_is_checked_both_ways() -> None:
    names = {v["name"] for v in ENCODABLE}
    for kind in ("typed", "ndarray", "ext"):
        assert any(name.startswith(kind) for name in names), kind
    assert len(ENCODABLE) >= 20


@pytest.mark.parametrize("vector", ENCODABLE, ids=ids(ENCODABLE))
def test_python_encodes_arrays_to_the_vector_bytes(vector: dict[str, Any]) -> None:
    (array,) = arrays_in(rebuild(vector["value"]))
    encoded = b"".join(bytes(piece) for piece in encode_payload(array))
    assert encoded.hex() == vector["hex"]
    # ... and large arrays, which go out as their own piece (no copy), give the same bytes.
    big = np.ascontiguousarray(np.resize(array, 4096)) if array.size else array
    big_bytes = b"".join(bytes(piece) for piece in encode_payload(big))
    assert_same(decode_payload(big_bytes), big)


@pytest.mark.parametrize("vector", INVALID, ids=[f"{v['name']} [{v['level']}]" for v in INVALID])
def test_invalid_vector_is_refused(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    if vector["name"] in PAYLOAD_ACCEPTS:
        decode_payload(data)  # accepted as a payload (see PAYLOAD_ACCEPTS) ...
        return
    with pytest.raises(ProtocolError):
        decode_payload(data)
