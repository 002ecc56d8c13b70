"""Arguments that are seconds (timeouts, heartbeats, a frame's time): one check, one error.

Any real number is taken (a numpy float32 or int64 from a DAQ's time array too); a str, bytes
or a bool is not, though ``float()`` would take a str and a bool is an int.
"""

from __future__ import annotations

import math

from ._exceptions import InvalidArgument


def real_seconds(value: object) -> float | None:
    """``value`` as a float (inf and NaN included), or None when it is no real number."""
    if isinstance(value, str | bytes | bytearray | bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    except OverflowError:  # an int (or Fraction) beyond any float: as far as inf
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]


def positive_seconds(value: object) -> float | None:
    """``value`` as a float if it is a finite number of seconds above 0 (a heartbeat, a
    connect timeout), else None. The float is what the caller must go on with (see
    check_timeout)."""
    seconds = real_seconds(value)
    return seconds if seconds is not None and 0 < seconds < math.inf else None


def check_time(time_s: object) -> float:
    """A ``time_s=`` given to a publish: seconds since the epoch, as ``time.time()``.

    Raises:
        InvalidArgument: not a finite number.
    """
    if type(time_s) is float and time_s - time_s == 0.0:  # the publish path's common case
        return time_s
    seconds = real_seconds(time_s)
    if seconds is None or not math.isfinite(seconds):
        raise InvalidArgument(
            f"time_s must be a number of seconds (time.time()), not {time_s!r:.40}"
        )
    return seconds


def check_timeout(timeout: object) -> float | None:
    """A blocking call's ``timeout=``: None (no limit) or seconds >= 0 (inf: no limit), as a
    float, which is what the caller must go on with: a numpy float32 added to a clock stays
    a float32 (which trio's epoll refuses, killing its run), a float16 loses the clock's
    precision (a 3 s timeout ran out at once), a Decimal cannot be added to a float.

    Raises:
        InvalidArgument: anything else (also a ValueError).
    """
    if timeout is None:
        return None
    seconds = real_seconds(timeout)
    if seconds is None or not seconds >= 0:  # NaN too
        raise InvalidArgument(
            f"timeout must be None or a number of seconds >= 0, not {timeout!r:.40}"
        )
    return seconds + 0.0  # -0.0 as 0.0: "within 0 s", not "within -0 s"
