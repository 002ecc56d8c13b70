"""trio_stream._seconds: every argument that is seconds is checked one way."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._seconds import check_time, check_timeout, positive_seconds, real_seconds

NOT_NUMBERS = ["1", b"1", bytearray(b"1"), True, False, None, object(), [1.0]]


def type_and_value(value: object) -> str:
    """A test id that is the same in every process (pytest-xdist compares them): an
    ``object()``'s repr has its address."""
    return type(value).__name__ if type(value) is object else repr(value)


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
        assert check_timeout(value) == value
    else:
        with pytest.raises(ts.InvalidArgument, match="timeout must be"):
            check_timeout(value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_positive_seconds_are_finite_and_above_zero(value: float) -> None:
    assert positive_seconds(value) == (value if 0 < value < math.inf else None)


OTHER_REALS = [
    np.float32(2.5),
    np.float16(3.0),
    np.longdouble(1.5),
    np.int64(7),
    Decimal("3.25"),
    Fraction(3, 10),
    4,
]


@pytest.mark.parametrize("value", OTHER_REALS, ids=repr)
def test_real_numbers_of_other_types_are_taken_as_floats(value: object) -> None:
    # What goes on is a float: a numpy float32 added to a clock stayed a float32 (trio's
    # epoll refused it, and the SyncClient's thread died), a float16 lost the clock's
    # precision (a 3 s timeout ran out at once), a Decimal could not be added at all.
    for seconds in (check_time(value), check_timeout(value), positive_seconds(value)):
        assert type(seconds) is float and seconds == float(value)  # type: ignore[arg-type]


def test_a_timeout_of_minus_zero_is_zero() -> None:
    seconds = check_timeout(-0.0)
    assert seconds is not None and math.copysign(1.0, seconds) == 1.0  # "within 0 s", not -0


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=type_and_value)
def test_str_bytes_bools_and_non_numbers_are_refused(value: object) -> None:
    assert real_seconds(value) is None
    with pytest.raises(ts.InvalidArgument):
        check_time(value)
    if value is not None:  # None is "no limit" for a timeout
        with pytest.raises(ts.InvalidArgument):
            check_timeout(value)
    assert positive_seconds(value) is None


@pytest.mark.parametrize("sign", [1, -1])
def test_a_number_beyond_any_float_is_as_far_as_infinity(sign: int) -> None:
    # float(10**400) raises OverflowError, which escaped every check as a traceback.
    for value in (sign * 10**400, Fraction(sign * 10**400, 3)):
        assert real_seconds(value) == sign * math.inf
        with pytest.raises(ts.InvalidArgument, match="time_s must be"):
            check_time(value)
        assert positive_seconds(value) is None
        if sign > 0:
            assert check_timeout(value) == math.inf  # no limit
        else:
            with pytest.raises(ts.InvalidArgument, match="timeout must be"):
                check_timeout(value)
