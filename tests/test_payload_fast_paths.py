"""decode_payload's shortcuts decide exactly what its full path decides.

A reader takes every message through decode_payload, so it skips work where it can prove the
outcome: a short byte string is sliced out without cbor2, and a payload too short to reach the
depth or key-collision limits is decoded without those two checks (``short_payload_bytes``).
These tests compare each shortcut with the full path on the same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream import PayloadLimits, PayloadRefused, ProtocolError
from trio_stream._protocol import codec
from trio_stream._protocol.codec import (
    SHORT_PAYLOAD_MAX_BYTES,
    decode_payload,
    short_payload_bytes,
)
from trio_stream._protocol.limits import DEFAULT_PAYLOAD_LIMITS


@contextlib.contextmanager
def short_path_disabled() -> Iterator[None]:
    """decode_payload with every payload counted as long: its full, checked path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_DEFAULT_SHORT_PAYLOAD_BYTES", 0)
        patch.setattr(codec, "short_payload_bytes", lambda limits: 0)
        yield


def outcome(data: bytes, offset: int, limits: PayloadLimits) -> tuple[str, str]:
    """What decode_payload makes of ``data``: the value's repr (NaN-safe), or the error type."""
    try:
        return "value", repr(decode_payload(bytearray(data), offset, limits))
    except PayloadRefused:
        return "error", "PayloadRefused"
    except ProtocolError:
        return "error", "ProtocolError"


def outcome_of_full_path(data: bytes, offset: int, limits: PayloadLimits) -> tuple[str, str]:
    with short_path_disabled():
        return outcome(data, offset, limits)


# Keys that collide: -1 and -2 share a hash in CPython, and so do i * (2**61 - 1).
colliding_ints = st.sampled_from([-1, -2, 2**61 - 1, 2 * (2**61 - 1), 3 * (2**61 - 1)])
atoms = (
    st.integers(-(2**70), 2**70)
    | colliding_ints
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(max_size=4)
    | st.binary(max_size=4)
)
keys = st.integers(-30, 30) | colliding_ints | st.text(max_size=3) | st.floats(allow_nan=False)
values = st.recursive(
    atoms,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(keys, inner, max_size=6)
        | st.frozensets(keys, max_size=6)
    ),
    max_leaves=12,
)
limits_strategy = st.builds(
    PayloadLimits,
    max_depth=st.integers(1, 80),
    max_key_collisions=st.integers(1, 40),
)


@settings(max_examples=400, deadline=None)
@given(value=values, limits=limits_strategy | st.just(DEFAULT_PAYLOAD_LIMITS))
def test_a_short_payload_decodes_as_the_checked_path_decodes_it(
    value: Any, limits: PayloadLimits
) -> None:
    wire = cbor2.dumps(value)
    assert outcome(wire, 0, limits) == outcome_of_full_path(wire, 0, limits)


@settings(max_examples=400, deadline=None)
@given(
    wire=st.binary(max_size=SHORT_PAYLOAD_MAX_BYTES),
    limits=limits_strategy | st.just(DEFAULT_PAYLOAD_LIMITS),
)
def test_short_arbitrary_bytes_fail_or_decode_as_the_checked_path_says(
    wire: bytes, limits: PayloadLimits
) -> None:
    assert outcome(wire, 0, limits) == outcome_of_full_path(wire, 0, limits)


def test_a_limit_that_short_payloads_could_reach_is_still_enforced() -> None:
    # {-1: 0, -2: 0}: two keys of one hash in five bytes; one collision allowed.
    two_colliding = cbor2.dumps({-1: 0, -2: 0})
    limits = PayloadLimits(max_key_collisions=1)
    assert len(two_colliding) >= short_payload_bytes(limits)
    with pytest.raises(PayloadRefused, match="max_key_collisions"):
        decode_payload(two_colliding, limits=limits)
    # Four arrays deep, three allowed.
    deep = cbor2.dumps([[[[0]]]])
    shallow = PayloadLimits(max_depth=3)
    assert len(deep) >= short_payload_bytes(shallow)
    with pytest.raises(ProtocolError):
        decode_payload(deep, limits=shallow)
    assert decode_payload(deep, limits=PayloadLimits(max_depth=4)) == [[[[0]]]]


def test_cbor2_default_depth_admits_every_short_payload() -> None:
    # The short path leaves max_depth to cbor2's default: it must never refuse what the
    # reader's own max_depth (at most SHORT_PAYLOAD_MAX_BYTES here) would accept.
    deepest = b"\x81" * (SHORT_PAYLOAD_MAX_BYTES - 1) + b"\x00"
    expected: Any = 0
    for _ in range(SHORT_PAYLOAD_MAX_BYTES - 1):
        expected = [expected]
    assert cbor2.loads(deepest) == expected
    assert short_payload_bytes(PayloadLimits(max_depth=500, max_key_collisions=10_000)) == (
        SHORT_PAYLOAD_MAX_BYTES
    )


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=70_000),
    head=st.binary(max_size=8),
    trailing=st.binary(max_size=3),
)
def test_a_byte_string_payload_is_sliced_out_exactly_as_cbor2_decodes_it(
    payload: bytes, head: bytes, trailing: bytes
) -> None:
    wire = head + cbor2.dumps(payload) + trailing
    got = outcome(wire, len(head), DEFAULT_PAYLOAD_LIMITS)
    if not trailing:
        assert got == ("value", repr(payload))
        assert type(decode_payload(bytearray(wire), len(head))) is bytes
    # cbor2 ignores bytes after the item; the shortcut hands those payloads to it.
    expected = ("value", repr(cbor2.loads(wire[len(head) :])))
    assert got == expected
