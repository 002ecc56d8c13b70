"""The log throttle: the first line at once, then at most one per period, nothing uncounted."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import example, given
from hypothesis import strategies as st

from trio_stream._server.log_throttle import LogThrottle


def test_the_first_is_said_at_once_then_one_line_a_period_with_the_count() -> None:
    throttle = LogThrottle(60.0)
    assert throttle.happened(100.0) == (1, None)
    assert throttle.happened(101.0) is None
    assert throttle.happened(159.0) is None
    assert throttle.due(159.9) is None  # (housekeeping before the minute is up)
    assert throttle.due(160.0) == (2, 60.0)
    assert throttle.due(500.0) is None  # nothing left to say
    assert throttle.happened(500.0) == (1, 340.0)


@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(0.0, 100.0, allow_nan=False)),
        max_size=200,
    ),
    st.floats(0.1, 60.0, allow_nan=False),
)
@example([(True, 64.0), (True, 0.0)], 0.1)  # found by hypothesis: the test's own rounding
def test_every_occurrence_is_counted_once_and_lines_are_a_period_apart(
    steps: list[tuple[bool, float]], every_s: float
) -> None:
    # Occurrences and housekeeping calls, in time order.
    throttle = LogThrottle(every_s)
    now = 0.0
    happened = said = 0
    lines: list[float] = []
    for occurrence, gap in steps:
        now += gap
        if occurrence:
            happened += 1
            due = throttle.happened(now)
            if not lines:
                assert due == (1, None)  # the first at once
        else:
            due = throttle.due(now)
        if due is not None:
            count, since = due
            assert count >= 1
            assert since == (None if not lines else now - lines[-1])
            said += count
            lines.append(now)
    assert all(b - a >= every_s for a, b in pairwise(lines))
    left = throttle.due(now + 2 * every_s)  # (twice: now + every_s - now may round below)
    assert happened == said + (left[0] if left else 0)
