"""Generate tests/vectors/cbor_vectors.json: CBOR test vectors shared by the JS and Python sides.

Run from the repository root with the project venv:  python tests/vectors/make_vectors.py

Each valid vector is the CBOR bytes (hex) of a value plus the value in a JSON form that both
sides can rebuild (see tests/vectors/README.md). Bytes come from cbor2 where cbor2 encodes the
value natively, and are built by hand exactly per docs/protocol.md section 4 for numpy arrays
(RFC 8746 typed arrays, tag 40, extension tag 7631617), so this script does not depend on the
project's codec.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import cbor2
import numpy as np
from cbor2 import CBORSimpleValue, CBORTag
from numpy.typing import NDArray

OUT = pathlib.Path(__file__).with_name("cbor_vectors.json")
SAFE = 2**53 - 1

# dtype -> (RFC 8746 little-endian tag, big-endian tag or None, JS TypedArray name)
TYPED = {
    "u1": (64, None, "Uint8Array"),
    "u2": (69, 65, "Uint16Array"),
    "u4": (70, 66, "Uint32Array"),
    "u8": (71, 67, "BigUint64Array"),
    "i1": (72, None, "Int8Array"),
    "i2": (77, 73, "Int16Array"),
    "i4": (78, 74, "Int32Array"),
    "i8": (79, 75, "BigInt64Array"),
    "f2": (84, 80, "Float32Array"),  # JS has no portable Float16Array: decoded to Float32Array
    "f4": (85, 81, "Float32Array"),
    "f8": (86, 82, "Float64Array"),
}
EXT_TAG = 7631617


# ----------------------------------------------------------------------------- JSON forms


def jnum(x: Any) -> Any:
    """A scalar (int/float, numpy or not) as its JSON form."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        x = int(x)
        return x if -SAFE <= x <= SAFE else {"$bigint": str(x)}
    x = float(x)
    if math.isnan(x):
        return {"$float": "NaN"}
    if math.isinf(x):
        return {"$float": "Infinity" if x > 0 else "-Infinity"}
    if x == 0 and math.copysign(1, x) < 0:
        return {"$float": "-0"}
    return x


def typed_values(arr: NDArray[Any]) -> list[Any]:
    """Flat element values as JS sees them (64-bit ints as decimal strings, complex interleaved)."""
    flat = arr.reshape(-1)
    if arr.dtype.kind == "c":
        flat = flat.view(np.float32 if arr.dtype.itemsize == 8 else np.float64)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        return [str(int(v)) for v in flat]
    if arr.dtype.kind == "b":
        return [int(v) for v in flat]
    out = []
    for v in flat:
        j = jnum(v)
        out.append(j["$float"] if isinstance(j, dict) else j)  # NaN/Infinity as plain strings here
    return out


def jvalue(v: Any) -> Any:
    """JSON form of a plain Python value (what cbor2 decodes to)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if v is cbor2.undefined:
        return {"$undefined": None}
    if isinstance(v, (int, float)):
        return jnum(v)
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, list):
        return [jvalue(x) for x in v]
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            obj = {k: jvalue(x) for k, x in v.items()}
            # Escape maps whose keys could be mistaken for a special form
            return {"$object": obj} if any(k.startswith("$") for k in v) else obj
        return {"$map": [[jvalue(k), jvalue(x)] for k, x in v.items()]}
    if isinstance(v, dt.datetime):
        return {
            "$date": v.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        }
    if isinstance(v, CBORSimpleValue):
        return {"$simple": v.value}
    raise TypeError(type(v))


# ------------------------------------------------------------------- encoders per protocol.md


def typed_tag(arr: NDArray[Any], big_endian: bool = False) -> CBORTag:
    """1-D numpy array -> RFC 8746 typed array tag (little-endian unless asked)."""
    key = arr.dtype.kind + str(arr.dtype.itemsize)
    le, be, _ = TYPED[key]
    tag = be if big_endian and be is not None else le
    dtype = arr.dtype.newbyteorder(">" if big_endian else "<")
    return CBORTag(tag, np.ascontiguousarray(arr).astype(dtype).tobytes())


def encode_array(arr: NDArray[Any], big_endian: bool = False) -> CBORTag:
    """numpy array -> CBOR item exactly per protocol.md section 4."""
    key = arr.dtype.kind + str(arr.dtype.itemsize)
    if key not in TYPED or arr.dtype.kind == "b":
        le = arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.itemsize > 1 else arr
        dtype = le.dtype.str
        return CBORTag(EXT_TAG, [dtype, list(arr.shape), np.ascontiguousarray(le).tobytes()])
    if arr.ndim == 1:
        return typed_tag(arr, big_endian)
    return CBORTag(40, [list(arr.shape), typed_tag(arr.reshape(-1), big_endian)])


def jarray(arr: NDArray[Any], big_endian: bool = False) -> dict[str, Any]:
    key = arr.dtype.kind + str(arr.dtype.itemsize)
    if key not in TYPED or arr.dtype.kind == "b":
        js = {"c8": "Float32Array", "c16": "Float64Array", "b1": "Uint8Array"}.get(
            key, "Uint8Array"
        )
        values = (
            typed_values(arr)
            if key in ("c8", "c16", "b1")
            else list(np.ascontiguousarray(arr).tobytes())
        )
        return {
            "$ext": {
                "dtype": arr.dtype.newbyteorder("<").str
                if arr.dtype.itemsize > 1
                else arr.dtype.str,
                "shape": list(arr.shape),
                "type": js,
                "values": values,
            }
        }
    typed = {
        "type": TYPED[key][2],
        "dtype": arr.dtype.newbyteorder(">" if big_endian else "<").str,
        "values": typed_values(arr),
    }
    if arr.ndim == 1:
        return {"$typed": typed}
    return {"$ndarray": {"shape": list(arr.shape), **typed}}


# ----------------------------------------------------------------------------- vector lists

VALID: list[dict[str, Any]] = []
INVALID: list[dict[str, Any]] = []


def plain(name: str, value: Any, js_encodes: bool = True, note: str | None = None) -> None:
    """A value cbor2 encodes natively (canonical=False, the default writer)."""
    add(name, cbor2.dumps(value), jvalue(value), js_encodes, note)


def raw(
    name: str, hexstr: str, value_json: Any, js_encodes: bool = False, note: str | None = None
) -> None:
    add(name, bytes.fromhex(hexstr.replace(" ", "")), value_json, js_encodes, note)


def array(
    name: str,
    arr: NDArray[Any],
    big_endian: bool = False,
    js_encodes: bool | None = None,
    wrap: Callable[[Any], Any] | None = None,
    note: str | None = None,
) -> None:
    item = encode_array(arr, big_endian)
    vj = jarray(arr, big_endian)
    if wrap is not None:  # embed in a container to shift the data off alignment
        item, vj = wrap(item), wrap(vj)
    if js_encodes is None:
        # The JS encoder writes the little-endian tag for every TypedArray except Uint8Array
        # (a byte string) and has no float16 type: those don't reproduce byte for byte.
        key = arr.dtype.kind + str(arr.dtype.itemsize)
        js_encodes = not big_endian and key not in ("u1", "f2")
    add(name, cbor2.dumps(item), vj, js_encodes, note)


def add(
    name: str,
    data: bytes,
    value_json: Any,
    js_encodes: bool,
    note: str | None,
    optional: bool = False,
) -> None:
    v = {"name": name, "hex": data.hex(), "value": value_json, "js_encodes": js_encodes}
    if note:
        v["note"] = note
    if optional:  # a decoder may refuse it (see README.md)
        v["optional"] = True
    VALID.append(v)


def invalid(name: str, hexstr: str, reason: str, level: str) -> None:
    data = bytes.fromhex(hexstr.replace(" ", ""))
    try:
        cbor2.loads(data)
        cbor2_refuses = False
    except Exception:  # any refusal counts
        cbor2_refuses = True
    INVALID.append(
        {
            "name": name,
            "hex": data.hex(),
            "reason": reason,
            "level": level,
            "cbor2_refuses": cbor2_refuses,
        }
    )


def build() -> None:
    # --- integers
    for n in [
        0,
        1,
        10,
        23,
        24,
        100,
        255,
        256,
        1000,
        65535,
        65536,
        1000000,
        2**32 - 1,
        2**32,
        SAFE,
        2**53,
        2**63,
        2**64 - 1,
        -1,
        -10,
        -24,
        -25,
        -100,
        -256,
        -257,
        -1000,
        -65536,
        -65537,
        -(2**32),
        -(2**32) - 1,
        -SAFE,
        -(2**53),
        -(2**63),
        -(2**64),
    ]:
        plain(f"int {n}", n)
    plain("bignum 2^64", 2**64)
    plain("bignum 2^100", 2**100)
    plain("negative bignum -2^64-1", -(2**64) - 1)

    # --- floats (cbor2 writes float64 except non-finite values, which take float16)
    for x in [1.5, -4.1, 0.1, 3.141592653589793, 1e300, -1e-300, 5e-324, 100000.5]:
        plain(f"float {x!r}", x)
    plain("float -0.0", -0.0)
    plain("float nan", math.nan)
    plain("float inf", math.inf)
    plain("float -inf", -math.inf)
    raw("float16 1.0", "f93c00", 1.0)
    raw("float16 -2.0", "f9c000", -2.0)
    raw("float16 max 65504", "f97bff", 65504.0)
    raw("float16 smallest subnormal", "f90001", 5.960464477539063e-08)
    raw("float16 0.5", "f93800", 0.5)
    raw("float16 -0", "f98000", {"$float": "-0"})
    raw("float32 100000.0", "fa47c35000", 100000.0)
    raw("float32 3.4028234663852886e+38", "fa7f7fffff", 3.4028234663852886e38)
    raw("float32 inf", "fa7f800000", {"$float": "Infinity"})
    raw("float64 1.1", "fb3ff199999999999a", 1.1, js_encodes=True)

    # --- strings and bytes
    for s in [
        "",
        "a",
        "IETF",
        '"\\',
        "\u00fc",
        "\u6c34",
        "\U0001f30a",
        "\ufeffbom kept",
        "x" * 23,
        "y" * 24,
        "Grüße, " * 40,
    ]:
        plain(f"text {s[:12]!r} ({len(s)})", s)
    for b in [b"", b"\x01\x02\x03\x04", bytes(range(256))]:
        plain(f"bytes ({len(b)})", b)

    # --- containers
    plain("array empty", [])
    plain("array [1,2,3]", [1, 2, 3])
    plain("array nested", [1, [2, 3], [4, 5]])
    plain("array 25 items", list(range(1, 26)))
    plain("map empty", {})
    plain("map text keys", {"a": 1, "b": [2, 3]})
    plain("map nested", {"a": {"b": {"c": None}}, "op": "hello", "v": 1})
    plain("map int keys", {1: 2, 3: 4})
    plain("map mixed keys", {"a": 1, 2: "b"})
    plain(
        "map __proto__ key",
        {"__proto__": {"polluted": True}, "ok": 1},
        note="must decode as an own data property, never as the prototype",
    )
    plain("map $-key is escaped", {"$stats": 1})
    plain("payload-like dict", {"t": 1.5, "name": "AnalogInput1", "ok": True, "n": None})

    # --- simple values
    plain("false", False)
    plain("true", True)
    plain("null", None)
    plain("undefined", cbor2.undefined)
    raw("simple 16", "f0", {"$simple": 16}, js_encodes=True)
    raw("simple 255", "f8ff", {"$simple": 255}, js_encodes=True)

    # --- datetimes
    utc = dt.UTC
    plain("datetime tag 0 (UTC)", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc))
    plain("datetime tag 0 with ms", dt.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=utc))
    plain(
        "datetime tag 0 with offset",
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        js_encodes=False,
    )
    add(
        "datetime tag 1 int",
        cbor2.dumps(CBORTag(1, 1700000000)),
        {"$date": "2023-11-14T22:13:20.000Z"},
        False,
        None,
    )
    add(
        "datetime tag 1 float",
        cbor2.dumps(CBORTag(1, 1700000000.5)),
        {"$date": "2023-11-14T22:13:20.500Z"},
        False,
        None,
    )

    # --- other tags
    add(
        "unknown tag 12345",
        cbor2.dumps(CBORTag(12345, "x")),
        {"$tag": {"tag": 12345, "value": "x"}},
        True,
        None,
    )
    add(
        "unknown tag 1040 (column-major)",
        cbor2.dumps(CBORTag(1040, [1, 2])),
        {"$tag": {"tag": 1040, "value": [1, 2]}},
        True,
        None,
    )
    raw(
        "self-describe tag 55799",
        "d9d9f7 83 01 02 03",
        [1, 2, 3],
        note="self-describe is transparent",
    )

    # --- indefinite lengths (decoders accept them in payloads; nobody writes them)
    raw("indefinite bytes", "5f 42 0102 43 030405 ff", {"$bytes": "0102030405"})
    raw("indefinite text", "7f 65 7374726561 64 6d696e67 ff", "streaming")
    raw("indefinite array", "9f 01 82 02 03 9f 04 05 ff ff", [1, [2, 3], [4, 5]])
    raw("indefinite map", "bf 61 61 01 61 62 9f 02 03 ff ff", {"a": 1, "b": [2, 3]})

    # --- RFC 8746 typed arrays (1-D), little-endian
    rng = np.random.default_rng(1234)
    array("typed uint8 (tag 64)", np.array([0, 1, 127, 128, 255], dtype="u1"))
    array("typed uint16 LE (tag 69)", np.array([0, 1, 258, 65535], dtype="u2"))
    array("typed uint32 LE (tag 70)", np.array([0, 1, 2**31, 2**32 - 1], dtype="u4"))
    array("typed uint64 LE (tag 71)", np.array([0, 1, 2**53 + 1, 2**64 - 1], dtype="u8"))
    array("typed int8 (tag 72)", np.array([-128, -1, 0, 1, 127], dtype="i1"))
    array("typed int16 LE (tag 77)", np.array([-32768, -1, 0, 258, 32767], dtype="i2"))
    array("typed int32 LE (tag 78)", np.array([-(2**31), -1, 0, 2**31 - 1], dtype="i4"))
    array("typed int64 LE (tag 79)", np.array([-(2**63), -1, 0, 2**63 - 1], dtype="i8"))
    array(
        "typed float16 LE (tag 84)", np.array([0.0, 1.0, -2.5, 65504.0, np.inf, 6e-08], dtype="f2")
    )
    array("typed float32 LE (tag 85)", np.array([0.0, 1.5, -2.25, np.inf, -np.inf], dtype="f4"))
    array("typed float64 LE (tag 86)", np.array([0.0, 1.5, -2.25, 1e300, np.nan, -0.0], dtype="f8"))
    array("typed float64 LE, 1000 random", rng.standard_normal(1000))
    array("typed float64 empty", np.zeros(0))
    add(
        "typed uint8 clamped (tag 68)",
        cbor2.dumps(CBORTag(68, bytes([0, 255, 7]))),
        {"$typed": {"type": "Uint8ClampedArray", "dtype": "|u1", "values": [0, 255, 7]}},
        True,
        None,
    )
    # big-endian tags: decoders accept them (nobody in trio_stream writes them)
    for key, values in [
        ("u2", [1, 258, 65535]),
        ("u4", [1, 2**32 - 1]),
        ("u8", [1, 2**64 - 1]),
        ("i2", [-2, 258]),
        ("i4", [-2, 2**31 - 1]),
        ("i8", [-2, 2**63 - 1]),
        ("f2", [1.0, -2.5]),
        ("f4", [1.5, -np.inf]),
        ("f8", [1.1, np.nan]),
    ]:
        arr = np.array(values, dtype=key)
        array(f"typed {arr.dtype.name} BE (tag {TYPED[key][1]})", arr, big_endian=True)

    # unaligned data: the byte string starts at an odd offset inside the item
    array("typed float64 unaligned in array", np.array([1.0, 2.0, 3.0]), wrap=lambda x: [1, x])
    array(
        "typed int32 unaligned in map", np.array([1, -2, 3], dtype="i4"), wrap=lambda x: {"abc": x}
    )
    array(
        "typed float32 BE unaligned",
        np.array([1.0, 2.0], dtype="f4"),
        big_endian=True,
        wrap=lambda x: [x],
    )

    # --- tag 40 n-d arrays (row-major)
    array("ndarray float64 2x3", np.arange(6.0).reshape(2, 3))
    array("ndarray int32 2x2x2", np.arange(-4, 4, dtype="i4").reshape(2, 2, 2))
    array("ndarray uint8 image 3x4", np.arange(12, dtype="u1").reshape(3, 4))
    array("ndarray 0-d float64", np.array(42.5))
    array("ndarray empty 0x3", np.zeros((0, 3)))
    array("ndarray float32 BE 2x2", np.array([[1, 2], [3, 4]], dtype="f4"), big_endian=True)
    array("ndarray float64 2x2 unaligned", np.eye(2), wrap=lambda x: {"frame": 7, "img": x})
    add(
        "ndarray with plain-array data",
        cbor2.dumps(CBORTag(40, [[2, 2], [1, 2, 3, 4]])),
        {"$ndarray": {"shape": [2, 2], "type": "Array", "values": [1, 2, 3, 4]}},
        True,
        "RFC 8746 allows a plain array as the data; protocol.md asks for a typed array",
        optional=True,
    )

    # --- extension tag 7631617: dtypes without an RFC 8746 tag
    array("ext bool 1-D", np.array([True, False, True]))
    array("ext bool 2x2", np.array([[True, False], [False, True]]))
    array("ext complex64", np.array([1 + 2j, -3.5 - 0.5j], dtype="c8"))
    array("ext complex128 2x1", np.array([[1 + 2j], [3 - 4j]], dtype="c16"))
    # x86 80-bit extended precision in 16 bytes (1.0, -2.0), padding zeroed: numpy leaves the
    # padding of its long doubles uninitialised, so these bytes are spelled out
    ld = bytes.fromhex("0000000000000080ff3f000000000000000000000000008000c0000000000000")
    add(
        "ext long double (raw bytes)",
        cbor2.dumps(CBORTag(EXT_TAG, ["<f16", [2], ld])),
        {"$ext": {"dtype": "<f16", "shape": [2], "type": "Uint8Array", "values": list(ld)}},
        True,
        "no JS type: data is the raw bytes as Uint8Array",
    )
    add(
        "ext complex128 unaligned",
        cbor2.dumps([0, encode_array(np.array([5 - 1j]))]),
        [0, jarray(np.array([5 - 1j]))],
        True,
        None,
    )

    # --- invalid input: every decoder must refuse (level "wellformed": not well-formed CBOR;
    # level "protocol": well-formed but refused by docs/protocol.md; level "strict": refused by
    # the JS decoder's extra validity checks, other decoders may accept it)
    invalid("empty input", "", "truncated", "wellformed")
    invalid("truncated uint8 argument", "18", "truncated", "wellformed")
    invalid("truncated uint64 argument", "1b 00000000", "truncated", "wellformed")
    invalid("truncated float64", "fb 3ff0", "truncated", "wellformed")
    invalid("truncated text", "62 61", "truncated", "wellformed")
    invalid("byte string longer than input", "5a ffffffff 00", "truncated", "wellformed")
    invalid("array count beyond input", "9b 00000000ffffffff", "truncated", "wellformed")
    invalid("map count beyond input", "bb 7fffffffffffffff 01", "truncated", "wellformed")
    invalid("array missing items", "83 01 02", "truncated", "wellformed")
    invalid("map missing value", "a1 61 61", "truncated", "wellformed")
    invalid("unterminated indefinite array", "9f 01 02", "truncated", "wellformed")
    invalid("reserved additional info 28", "1c", "reserved", "wellformed")
    invalid("reserved additional info 30 in major 7", "fe", "reserved", "wellformed")
    invalid("lone break", "ff", "break", "wellformed")
    invalid("break in definite array", "82 01 ff", "break", "wellformed")
    invalid("indefinite integer", "1f", "indefinite", "wellformed")
    invalid("bad chunk in indefinite bytes", "5f 01 ff", "chunk", "wellformed")
    invalid("text chunk in indefinite bytes", "5f 61 61 ff", "chunk", "wellformed")
    invalid("simple value < 32 in two-byte form", "f8 10", "simple", "wellformed")
    invalid("invalid UTF-8", "62 c328", "utf-8", "wellformed")
    invalid("trailing byte", "00 00", "trailing", "protocol")
    invalid("tag 35 regexp refused", "d8 23 63 612e62", "tag 35", "protocol")
    invalid("tag 36 MIME refused", "d8 24 60", "tag 36", "protocol")
    invalid("typed float64 with 3 bytes", "d8 56 43 000000", "multiple", "protocol")
    invalid("typed array content not bytes", "d8 56 01", "byte string", "protocol")
    invalid(
        "tag 40 shape/data mismatch",
        "d8 28 82 82 02 03 d8 56 48 000000000000f03f",
        "shape",
        "protocol",
    )
    invalid("tag 40 not a pair", "d8 28 81 80", "shape", "protocol")
    invalid("tag 40 negative dimension", "d8 28 82 81 20 d8 56 40", "dimension", "protocol")
    invalid(
        "ext array wrong byte count",
        f"da {EXT_TAG:08x} 83 63 3c6338 81 01 43 000000",
        "bytes",
        "protocol",
    )
    invalid("ext array bad dtype", f"da {EXT_TAG:08x} 83 62 3f3f 81 01 41 00", "dtype", "protocol")
    invalid("nesting 10000 deep", "81" * 10000 + "00", "nesting", "protocol")
    invalid("tags nested 10000 deep", "d9 3039" * 10000 + "00", "nesting", "protocol")
    invalid("duplicate text key", "a2 61 61 01 61 61 02", "duplicate", "strict")
    invalid("tag 0 with an integer", "c0 01", "datetime", "strict")
    invalid("tag 0 not RFC 3339", "c0 63 616263", "datetime", "strict")


def main() -> int:
    build()
    doc = {
        "format": "trio_stream CBOR test vectors v1; see tests/vectors/README.md",
        "generator": "tests/vectors/make_vectors.py (cbor2 + numpy)",
        "valid": VALID,
        "invalid": INVALID,
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    if "--check" in sys.argv:  # CI: the committed file must match the generator
        return 0 if OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(VALID)} valid, {len(INVALID)} invalid vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
