"""Messages to one node, in order and once (trio_stream/_engine/cluster_mail.py).

The bus here is a stand-in for pub/sub's one fact the mailer acts on, how many subscribers
got a message (or an error for a Redis that did not take it); the same paths over a real
Redis cut by a proxy are in test_cluster.py (an answer and a stream through a lapse).
"""

from __future__ import annotations

from typing import Any, cast

import coredis
from hypothesis import given
from hypothesis import strategies as st

from trio_stream._engine import cluster_mail
from trio_stream._engine.cluster_mail import Inbox, Letter, Mailer
from trio_stream._engine.redis_control import ControlBus


class Bus:
    """Delivers to the nodes in ``listeners``; raises while ``down``; refuses ``refused``."""

    def __init__(self) -> None:
        self.listeners: set[str] = set()
        self.down = False
        self.refused: set[Any] = set()  # bodies Redis says no to (OOM, say)
        self.delivered: list[tuple[str, str, Any]] = []  # (node, kind, envelope)
        self.tries = 0

    async def publish(self, kind: str, body: Any, *, to: str | None = None) -> int:
        assert to is not None
        self.tries += 1
        if self.down:
            raise ConnectionError("Redis is down")
        if body["b"] in self.refused:
            raise coredis.exceptions.ResponseError("OOM command not allowed")
        if to not in self.listeners:
            return 0
        self.delivered.append((to, kind, body))
        return 1

    async def listening(self, node: str) -> bool:
        if self.down:
            raise ConnectionError("Redis is down")
        return node in self.listeners

    def bodies(self, node: str) -> list[Any]:
        return [envelope["b"] for to, _, envelope in self.delivered if to == node]


def mailer_on(bus: Bus, dropped: list[tuple[str, Any]] | None = None) -> Mailer:
    mail = Mailer(cast(ControlBus, bus))
    if dropped is not None:

        def on_dropped(node: str, letters: list[Letter]) -> None:
            dropped.extend((node, letter.body) for letter in letters)

        mail.on_dropped = on_dropped
    return mail


async def test_a_message_nobody_got_waits_and_later_ones_queue_behind_it() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    bus.listeners = {"b"}
    await mail.post("answer", 1, "a")  # a does not listen: held
    await mail.post("answer", 2, "b")  # b does: other nodes are not held up
    await mail.post("answer", 3, "a")  # behind 1, though a might listen by now
    assert mail.holding == {"a"} and bus.bodies("b") == [2]
    await mail.retry(gone=())
    assert bus.bodies("a") == [] and mail.holding == {"a"}
    bus.listeners.add("a")
    await mail.retry(gone=())
    assert bus.bodies("a") == [1, 3] and mail.holding == set()


async def test_redis_down_holds_and_a_refusal_drops_only_that_message() -> None:
    bus = Bus()
    dropped: list[tuple[str, Any]] = []
    mail = mailer_on(bus, dropped)
    bus.listeners = {"a"}
    bus.down = True
    await mail.post("answer", 1, "a")
    await mail.retry(gone=())  # still down: kept, no error
    bus.down = False
    bus.refused = {2}
    await mail.post("answer", 2, "a")  # behind 1: held, then refused when tried
    await mail.post("answer", 3, "a")
    await mail.retry(gone=())
    # A refusal is not an outage: tried again it would be refused again, and everything
    # to that node would wait behind it for good.
    assert bus.bodies("a") == [1, 3] and dropped == [("a", 2)] and mail.holding == set()


async def test_a_node_that_does_not_listen_is_looked_at_not_written_to() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    await mail.post("answer", 1, "a", size=cluster_mail.MAX_HELD_BYTES // 2)
    tries = bus.tries
    for _ in range(3):
        await mail.retry(gone=())
    assert bus.tries == tries  # a large message is not stored in Redis again to no one


async def test_what_waits_for_a_node_that_left_is_dropped() -> None:
    bus = Bus()
    mail = mailer_on(bus)
    await mail.post("answer", 1, "gone")
    await mail.retry(gone={"gone"})
    bus.listeners.add("gone")  # a node of that name again: it does not get the old one
    await mail.retry(gone=())
    assert bus.delivered == [] and mail.holding == set()


async def test_what_is_held_for_one_node_is_bounded_in_bytes() -> None:
    bus = Bus()
    dropped: list[tuple[str, Any]] = []
    mail = mailer_on(bus, dropped)
    half = cluster_mail.MAX_HELD_BYTES // 2
    await mail.post("answer", 1, "a", size=half)
    await mail.post("answer", 2, "a", size=half)
    assert mail.holding == {"a"}
    await mail.post("answer", 3, "a", size=1)  # past the bound: all of a's are dropped
    assert mail.holding == set()
    assert dropped == [("a", 1), ("a", 2), ("a", 3)]  # said: their calls fail
    bus.listeners.add("a")
    await mail.post("answer", 4, "a")
    assert bus.bodies("a") == [4]


@given(
    st.lists(st.booleans(), min_size=1, max_size=40),  # does the node listen at each post
    st.lists(st.integers(0, 3), min_size=1, max_size=40),  # copies delivered of each (0: lost)
    st.booleans(),
)
async def test_each_message_is_opened_once_in_order_and_a_loss_is_told(
    listening: list[bool], copies: list[int], restarted: bool
) -> None:
    bus = Bus()
    mail = mailer_on(bus)
    for number, listens in enumerate(listening):
        bus.listeners = {"a"} if listens else set()
        await mail.post("answer", number, "a")
    bus.listeners = {"a"}
    await mail.retry(gone=())
    sent = [envelope for _, _, envelope in bus.delivered]
    assert [envelope["b"] for envelope in sent] == list(range(len(listening)))
    # What the receiver gets: each message 0-3 times (0: Redis counted it received, but the
    # link died with it; more: a PUBLISH whose reply was lost, sent again). A copy comes
    # right after its original, as every later message to that node waits behind it.
    counts = (copies * len(sent))[: len(sent)]
    inbox = Inbox()
    opened: list[tuple[Any, bool]] = []
    for envelope, count in zip(sent, counts, strict=True):
        for _ in range(count):
            if (result := inbox.open("a", envelope)) is not None:
                opened.append(result)
    arrived = [number for number, count in enumerate(counts) if count]
    assert [body for body, _ in opened] == arrived  # once each, in order
    for position, (body, lost) in enumerate(opened):
        # Told exactly when some were lost since the one before (the first one heard may
        # be any number: the receiver may have started after it).
        before = arrived[position - 1] if position else None
        assert lost == (before is not None and body > before + 1), (body, before)
    if restarted:  # a new process of that node: its numbers start again at 1, and are taken
        await mailer_on(bus).post("answer", "after", "a")
        assert inbox.open("a", bus.delivered[-1][2]) == ("after", False)
