"""Messages to one node, in order and once (trio_stream/_engine/cluster_mail.py).

The bus here is a stand-in for pub/sub's one fact the mailer acts on, how many subscribers
got a message (or an error for a Redis that did not take it); the same paths over a real
Redis cut by a proxy are in test_cluster.py (an answer and a stream through a lapse).
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_stream._engine import cluster_mail
from trio_stream._engine.cluster_mail import Inbox, Mailer
from trio_stream._engine.redis_control import ControlBus


class Bus:
    """Delivers to the nodes in ``listening``; raises while ``down``."""

    def __init__(self) -> None:
        self.listening: set[str] = set()
        self.down = False
        self.delivered: list[tuple[str, str, Any]] = []  # (node, kind, envelope)

    async def publish(self, kind: str, body: Any, *, to: str | None = None) -> int:
        assert to is not None
        if self.down:
            raise ConnectionError("Redis is down")
        if to not in self.listening:
            return 0
        self.delivered.append((to, kind, body))
        return 1

    def bodies(self, node: str) -> list[Any]:
        return [envelope["b"] for to, _, envelope in self.delivered if to == node]


def mailer_on(bus: Bus) -> Mailer:
    return Mailer(cast(ControlBus, bus))


async def test_a_message_nobody_got_waits_and_later_ones_queue_behind_it() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    bus.listening = {"b"}
    await mail.post("answer", 1, "a")  # a does not listen: held
    await mail.post("answer", 2, "b")  # b does: other nodes are not held up
    await mail.post("answer", 3, "a")  # behind 1, though a might listen by now
    assert mail.holding == {"a"} and bus.bodies("b") == [2]
    await mail.retry(gone=())
    assert bus.bodies("a") == [] and mail.holding == {"a"}
    bus.listening.add("a")
    await mail.retry(gone=())
    assert bus.bodies("a") == [1, 3] and mail.holding == set()


async def test_redis_down_holds_or_raises_as_the_sender_asks() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    bus.listening = {"a", "b"}
    bus.down = True
    with pytest.raises(ConnectionError):
        await mail.post("credit", 1, "a", hold_if_down=False)
    await mail.post("answer", 2, "a")
    # Behind a message held for its node, one goes in turn, down or not: it may not pass it.
    await mail.post("credit", 3, "a", hold_if_down=False)
    await mail.retry(gone=())  # still down: kept, no error
    bus.down = False
    await mail.retry(gone=())
    assert bus.bodies("a") == [2, 3]


async def test_what_waits_for_a_node_that_left_is_dropped() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    await mail.post("answer", 1, "gone")
    await mail.retry(gone={"gone"})
    bus.listening.add("gone")  # a node of that name again: it does not get the old one
    await mail.retry(gone=())
    assert bus.delivered == [] and mail.holding == set()


async def test_what_is_held_for_one_node_is_bounded_in_bytes() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    half = cluster_mail.MAX_HELD_BYTES // 2
    await mail.post("answer", 1, "a", size=half)
    await mail.post("answer", 2, "a", size=half)
    assert mail.holding == {"a"}
    await mail.post("answer", 3, "a", size=1)  # past the bound: all of a's are dropped
    assert mail.holding == set()
    bus.listening.add("a")
    await mail.post("answer", 4, "a")
    assert bus.bodies("a") == [4]


@given(
    st.lists(st.booleans(), min_size=1, max_size=40),  # does the node listen at each post
    st.lists(st.integers(1, 3), min_size=1, max_size=40),  # copies delivered of each
    st.booleans(),
)
async def test_each_message_is_opened_once_in_order_whatever_the_lapses(
    listening: list[bool], copies: list[int], restarted: bool
) -> None:
    bus = Bus()
    mail = mailer_on(bus)
    for number, listens in enumerate(listening):
        bus.listening = {"a"} if listens else set()
        await mail.post("answer", number, "a")
    bus.listening = {"a"}
    await mail.retry(gone=())
    sent = [envelope for _, _, envelope in bus.delivered]
    assert [envelope["b"] for envelope in sent] == list(range(len(listening)))
    # A copy comes right after its original: a PUBLISH whose reply was lost holds it, and
    # every later message to that node waits behind it.
    inbox = Inbox()
    opened = [
        body
        for envelope, count in zip(sent, copies * len(sent), strict=False)
        for _ in range(count)
        if (body := inbox.open("a", envelope)) is not None
    ]
    assert opened == list(range(len(listening)))
    if restarted:  # a new process of that node: its numbers start again, and are taken
        await mailer_on(bus).post("answer", "after", "a")
        assert inbox.open("a", bus.delivered[-1][2]) == "after"
