"""_records: what the client hands to applications, as a notebook shows it."""

from __future__ import annotations

import numpy as np

import trio_stream as ts


def test_a_message_shows_an_array_by_its_dtype_and_shape() -> None:
    # In full, 1,000 samples were 170 lines under a notebook cell (a notebook user).
    msg = ts.Message(np.arange(1000.0), 5, "demo/sine", "daq", 1.5, 0)
    assert (
        repr(msg)
        == str(msg)
        == (
            "Message(data=<array float64 (1000,)>, seq=5, channel='demo/sine', sender='daq', "
            "time=1.5, lost=0, gap=None)"
        )
    )
    assert msg.data.shape == (1000,)  # the value itself is whole


def test_a_message_cuts_a_long_value_and_shows_a_short_one_as_it_is() -> None:
    long = ts.Message("x" * 500, 1, "c", "s", 0.0, 0)
    shown = repr(long)
    assert shown.startswith("Message(data='xxx") and "... (502 characters), seq=1" in shown
    assert len(shown) < 300
    short = ts.Message({"t": 1.5}, 2, "c", "s", 0.0, 3, ts.Gap("reset", None, 0))
    assert repr(short) == (
        "Message(data={'t': 1.5}, seq=2, channel='c', sender='s', time=0.0, lost=3, "
        "gap=Gap(kind='reset', lost=None, recovered=0))"
    )
