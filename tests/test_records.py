"""_records: what the client hands to applications, as a notebook shows it."""

from __future__ import annotations

import numpy as np
import pytest

import trio_stream as ts
from trio_stream._records import answer_from_wire, list_from_answer


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


def test_records_from_the_server_ignore_keys_a_newer_server_adds() -> None:
    channel = {"name": "c", "owner": "o", "readers": 2, "from_a_newer_server": [1]}
    client = {"id": 1, "name": "n", "subscriptions": [{"channel": "c", "policy": "block", "x": 0}]}
    [info] = list_from_answer(ts.ChannelInfo.from_wire, [channel], "channels()", "records")
    assert (info.name, info.owner, info.readers) == ("c", "o", 2)
    [who] = list_from_answer(ts.ClientInfo.from_wire, [client], "clients()", "records")
    assert who.subscriptions == (ts.SubscriptionInfo("c", "block"),)
    stats = answer_from_wire(ts.ServerStats.from_wire, {"connections": 3, "y": 1}, "stats()", "")
    assert (stats.connections, stats.node_connections) == (3, 3)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"a": 1}, "{'a': 1}"),  # a map where the list is due: not its keys as items
        ([{"name": "c", "owner": "o"}, "x" * 200], "item 1 is '" + "x" * 76 + "..., not a map"),
        ([{}], "item 0 lacks 'name', 'owner' ({})"),
    ],
)
def test_a_wrong_answer_names_its_first_wrong_item_in_one_short_line(
    answer: object, reason: str
) -> None:
    with pytest.raises(ts.ProtocolError) as caught:
        list_from_answer(ts.ChannelInfo.from_wire, answer, "channels()", "channel records")
    assert (
        str(caught.value) == f"the server's answer to channels() is not channel records: {reason}"
    )
