"""trio_stream._seconds: every argument that is seconds is checked one way."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._seconds import check_time, check_timeout, positive_seconds, real_seconds

NOT_NUMBERS = ["1", b"1", bytearray(b"1"), True, False, None, object(), [1.0]]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_time_is_any_finite_float(value: float) -> None:
    if math.isfinite(value):
        assert check_time(value) == value
    else:
        with pytest.raises(ts.InvalidArgument, match="time_s must be"):
            check_time(value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_timeout_is_none_or_seconds_not_below_zero(value: float) -> None:
    if value >= 0:  # inf included: no limit
        check_timeout(value)
    else:
        with pytest.raises(ts.InvalidArgument, match="timeout must be"):
            check_timeout(value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_positive_seconds_are_finite_and_above_zero(value: float) -> None:
    assert positive_seconds(value) == (0 < value < math.inf)


@pytest.mark.parametrize("value", [np.float32(2.5), np.int64(7), Decimal("3.25"), 4])
def test_real_numbers_of_other_types_are_taken(value: object) -> None:
    assert check_time(value) == float(value)  # type: ignore[arg-type]
    check_timeout(value)
    assert positive_seconds(value)


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=repr)
def test_str_bytes_bools_and_non_numbers_are_refused(value: object) -> None:
    assert real_seconds(value) is None
    with pytest.raises(ts.InvalidArgument):
        check_time(value)
    if value is not None:  # None is "no limit" for a timeout
        with pytest.raises(ts.InvalidArgument):
            check_timeout(value)
    assert not positive_seconds(value)
