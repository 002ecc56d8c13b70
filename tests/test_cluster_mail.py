"""Messages to one node, in order and once (trio_stream/_engine/cluster_mail.py).

The bus here is a stand-in for pub/sub's one fact the mailer acts on, how many subscribers
got a message (or an error for a Redis that did not take it), and for what it cannot see, a
message counted received that never arrives; the same paths over a real Redis cut by a
proxy are in test_cluster.py (an answer and a stream through a lapse, an answer lost on a
hung link).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import coredis
from hypothesis import given
from hypothesis import strategies as st

from trio_stream._engine import cluster_mail
from trio_stream._engine.cluster_mail import Inbox, Letter, Mailer, Replaced
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
        self.delivered.append((to, kind, dict(body)))  # as sent now: Redis has its bytes
        return 1

    async def listening(self, node: str) -> bool:
        if self.down:
            raise ConnectionError("Redis is down")
        return node in self.listeners

    def bodies(self, node: str) -> list[Any]:
        return [envelope["b"] for to, _, envelope in self.delivered if to == node]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def mailer_on(
    bus: Bus, dropped: list[tuple[str, Any]] | None = None, clock: Callable[[], float] = float
) -> Mailer:
    mail = Mailer(cast(ControlBus, bus), clock=clock)
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
    assert mail.holding == {"a"} and mail.pending == {"a", "b"} and bus.bodies("b") == [2]
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


class Receiver:
    """Node "a"'s side: an inbox fed what the bus delivered, whose acknowledgements go back
    to the mailer (each lost if ``lose_ack`` says so)."""

    def __init__(self, bus: Bus, mail: Mailer, clock: Clock) -> None:
        self.bus, self.mail, self.clock = bus, mail, clock
        self.inbox = Inbox(clock)
        self.read = 0  # of bus.delivered
        self.opened: list[tuple[Any, bool]] = []

    async def take(self, lose: Callable[[], bool] = lambda: False) -> None:
        """Open what arrived (each message lost on its way if ``lose()``), then send the
        acknowledgements (each lost if ``lose()``)."""
        for _, _, envelope in self.bus.delivered[self.read :]:
            if not lose() and (opened := self.inbox.open("a", dict(envelope))) is not None:
                self.opened.append(opened)
        self.read = len(self.bus.delivered)
        for ack in self.inbox.acks():
            if not lose() and self.mail.acknowledged("a", ack.body):
                await self.mail.resend("a")


def link_to_a(dropped: list[tuple[str, Any]] | None = None) -> tuple[Clock, Bus, Mailer, Receiver]:
    """A mailer on a fake clock, node "a" listening, and a's receiving side."""
    clock = Clock()
    bus = Bus()
    bus.listeners = {"a"}
    mail = mailer_on(bus, dropped, clock)
    return clock, bus, mail, Receiver(bus, mail, clock)


async def test_an_answer_lost_with_nothing_after_it_is_sent_again() -> None:
    # A message Redis counted received that died with a link: before, a call's last
    # answer lost so waited for the call's timeout.
    clock, bus, mail, receiver = link_to_a()
    await mail.post("answer", "last", "a")
    bus.delivered.clear()  # lost on its way
    clock.now += cluster_mail.RESEND_AFTER_S - 0.1
    await mail.retry(gone=())
    assert bus.delivered == []  # not late yet: its acknowledgement may be on its way
    clock.now += 0.1
    await mail.retry(gone=())
    await receiver.take()
    assert receiver.opened == [("last", False)] and mail.pending == set()


async def test_a_gap_is_asked_for_and_what_follows_it_waits_for_it() -> None:
    _clock, bus, mail, receiver = link_to_a()
    await mail.post("answer", 1, "a")
    await receiver.take()
    for body in (2, 3, 4):
        await mail.post("answer", body, "a")
    del bus.delivered[-3]  # 2 died with a link; 3 and 4 arrived
    await receiver.take()  # 3 tells the gap: 3 and 4 wait, and 2 is asked for at once
    await receiver.take()  # what was sent again
    assert [body for body, _ in receiver.opened] == [1, 2, 3, 4]
    assert not any(lost for _, lost in receiver.opened)
    await receiver.take()  # everything acknowledged: nothing is kept
    assert mail.pending == set()


async def test_a_copy_is_acknowledged_again() -> None:
    # Our acknowledgement was lost, so the sender sent it again: it must hear of it, or it
    # would send it again for good.
    clock, _bus, mail, receiver = link_to_a()
    await mail.post("answer", 1, "a")
    await receiver.take(lose=iter([False, True]).__next__)  # opened; its ack lost
    clock.now += cluster_mail.RESEND_AFTER_S
    await mail.retry(gone=())
    await receiver.take()
    assert receiver.opened == [(1, False)] and mail.pending == set()


async def test_past_what_is_kept_a_loss_is_told_not_asked_for() -> None:
    _clock, bus, mail, receiver = link_to_a()
    await mail.post("answer", 0, "a")
    await receiver.take()
    half = cluster_mail.MAX_UNACKED_BYTES // 2
    for body in (1, 2, 3):
        await mail.post("answer", body, "a", size=half)  # 1 is let go when 3 is sent
    del bus.delivered[1]  # and 1 never arrived
    await receiver.take()  # 2 and 3 wait for 1, asked for
    await receiver.take()  # what was sent again: 2 and 3
    # Nothing can bring 1 back: 2 says it is lost for good (the RPC ends the calls between
    # the two nodes), rather than the receiver asking for it for good.
    assert receiver.opened == [(0, False), (2, True), (3, False)]


async def test_a_loss_among_the_first_messages_from_a_node_is_told_too() -> None:
    # Never heard from before, the receiver asked for 1 and stayed "never heard": when 1 was
    # let go meanwhile, the resent 2 (its k past 1) was taken as a first contact, untold
    # (the review of the change).
    clock, bus, mail, receiver = link_to_a()
    big = cluster_mail.MAX_UNACKED_BYTES * 5 // 8  # two of them pass what is kept
    await mail.post("answer", 1, "a", size=big)
    bus.delivered.clear()  # lost on its way
    await mail.post("answer", 2, "a", size=big)  # keeping it lets 1 go
    for _ in range(4):
        await receiver.take()
        clock.now += 0.5
        await mail.retry(gone=())
    assert receiver.opened == [(2, True)]


async def test_the_first_messages_lost_and_let_go_before_any_arrived_are_told() -> None:
    # Nothing from the sender ever arrived, and it keeps its first message no longer: the
    # receiver took the oldest kept as where its sender began, and 1 went untold (a
    # two-node flow's seeds 302, 1231 and 3262). Each message says what was acknowledged.
    clock, bus, mail, receiver = link_to_a()
    big = cluster_mail.MAX_UNACKED_BYTES * 5 // 8  # two of them pass what is kept
    await mail.post("answer", 1, "a", size=big)
    await mail.post("answer", 2, "a", size=big)  # keeping it lets 1 go
    bus.delivered.clear()  # both lost on their way
    await mail.post("answer", 3, "a")
    for _ in range(4):
        await receiver.take()
        clock.now += 0.5
        await mail.retry(gone=())
    assert receiver.opened == [(2, True), (3, False)]


async def test_a_new_run_of_the_receiver_is_not_told_its_last_runs_messages_lost() -> None:
    clock, bus, mail, receiver = link_to_a()
    await mail.post("answer", 1, "a")
    await receiver.take()  # taken and acknowledged
    restarted = Receiver(bus, mail, clock)
    restarted.read = len(bus.delivered)
    await mail.post("answer", 2, "a")
    await restarted.take()
    assert restarted.opened == [(2, False)]


async def test_a_new_run_of_the_receiver_is_not_told_what_its_last_run_lost() -> None:
    # 2 was for the last run, which died before reading it; Redis refused it sent again, so
    # it was let go. The new run cannot tell whose it was: telling it lost would end its
    # calls with the sender for nothing (the review of the change).
    clock, bus, mail, receiver = link_to_a()
    await mail.post("answer", 1, "a")
    await receiver.take()  # taken and acknowledged
    await mail.post("answer", 2, "a")  # delivered; that run dies before reading it
    restarted = Receiver(bus, mail, clock)
    restarted.read = len(bus.delivered)
    bus.refused = {2}  # sent again, refused (OOM): let go
    clock.now += cluster_mail.RESEND_AFTER_S
    await mail.retry(gone=())
    bus.refused = set()
    await mail.post("answer", 3, "a")
    await restarted.take()
    assert restarted.opened == [(3, False)]


async def test_a_new_runs_first_message_racing_the_last_runs_acknowledgements_loses_nothing() -> (
    None
):
    # The new run heard 5 before the sender had the last run's acknowledgement of 1-4: it
    # asked for 1 on. Sent again, 5 then said the sender keeps nothing before it, and the
    # gap was told lost (a restarting receiver in the two-node flow). 1-4 were taken.
    clock, bus, mail, receiver = link_to_a()
    for body in (1, 2, 3, 4):
        await mail.post("answer", body, "a")
    for _, _, envelope in bus.delivered:
        receiver.inbox.open("a", dict(envelope))
    last_runs_acks = receiver.inbox.acks()  # on their way when it dies
    restarted = Receiver(bus, mail, clock)
    restarted.read = len(bus.delivered)
    await mail.post("answer", 5, "a")
    assert restarted.inbox.open("a", dict(bus.delivered[-1][2])) is None  # 1-4 asked for
    for ack in last_runs_acks:
        mail.acknowledged("a", ack.body)  # they arrive now
    restarted.read = len(bus.delivered)
    for ack in restarted.inbox.acks():
        if mail.acknowledged("a", ack.body):
            await mail.resend("a")  # 5 again, the sender keeping nothing before it
    await restarted.take()
    assert restarted.opened == [(5, False)]


async def test_a_node_that_left_and_came_back_is_not_told_what_was_dropped_lost() -> None:
    # Dropped because it left: its new run under the same name is owed none of it.
    _clock, bus, mail, receiver = link_to_a()
    bus.listeners = set()
    await mail.post("answer", 1, "a")  # held: it does not listen
    await mail.retry(gone={"a"})  # it left: dropped
    bus.listeners = {"a"}
    await mail.post("answer", 2, "a")
    await receiver.take()
    assert receiver.opened == [(2, False)]


async def test_an_acknowledgement_that_passes_its_publish_keeps_nothing() -> None:
    # Handled in the bus task while the publish it acknowledges was still awaited, it was
    # followed by the letter's keeping: sent again 1.5 s later, for nothing.
    _, bus, mail, _ = link_to_a()
    publish = bus.publish

    async def acknowledged_at_once(kind: str, body: Any, *, to: str | None = None) -> int:
        received = await publish(kind, body, to=to)
        mail.acknowledged("a", {"e": body["e"], "n": body["n"], "r": False})
        return received

    bus.publish = acknowledged_at_once  # type: ignore[method-assign]
    await mail.post("answer", 1, "a")
    assert mail.pending == set()


async def test_a_message_refused_when_posted_leaves_no_gap() -> None:
    # Nothing after it had a number yet: the next takes its number. Told as a gap, one
    # refused call ended every call between the two nodes (a review).
    dropped: list[tuple[str, Any]] = []
    _clock, bus, mail, receiver = link_to_a(dropped)
    await mail.post("answer", 1, "a")
    bus.refused = {2}
    refused = await mail.post("answer", 2, "a")  # its calls fail (on_dropped)
    await mail.post("answer", 3, "a")
    await receiver.take()
    await receiver.take()
    assert dropped == [("a", 2)] and not refused.sent
    assert receiver.opened == [(1, False), (3, False)] and mail.pending == set()


async def test_a_held_message_refused_is_told_lost_not_asked_for_again_and_again() -> None:
    dropped: list[tuple[str, Any]] = []
    _clock, bus, mail, receiver = link_to_a(dropped)
    await mail.post("answer", 1, "a")
    bus.listeners = set()
    await mail.post("answer", 2, "a")  # held, and 3 behind it, numbered
    await mail.post("answer", 3, "a")
    bus.listeners, bus.refused = {"a"}, {2}
    await mail.retry(gone=())
    await receiver.take()
    await receiver.take()
    assert dropped == [("a", 2)]
    assert receiver.opened == [(1, False), (3, True)] and mail.pending == set()


async def test_a_held_message_can_be_replaced_in_its_place() -> None:
    # A call given up while it waits for its node goes as its own cancel: it never runs,
    # and its number is still taken (no gap).
    _clock, bus, mail, receiver = link_to_a([])
    bus.listeners = set()
    call = await mail.post("call", "run me", "a", size=1000)
    await mail.post("answer", "after", "a")
    assert mail.replace_held("a", call, "cancel", "never mind") is Replaced.INSTEAD
    bus.listeners = {"a"}
    await mail.retry(gone=())
    await receiver.take()
    await receiver.take()
    assert receiver.opened == [("never mind", False), ("after", False)]
    assert [kind for _, kind, _ in bus.delivered] == ["cancel", "answer"]
    assert mail.replace_held("a", call, "cancel", "sent: too late") is Replaced.NOT_HELD


async def test_a_held_message_whose_publish_failed_on_its_way_is_replaced_perhaps_arrived() -> None:
    # Its PUBLISH may have gone through, its answer lost with the connection. Not replaced,
    # it was sent again when Redis came back, its cancel behind it, and the call ran (a
    # migrating user: calls given up while Redis hung ran 0.2-9.8 s later). Replaced, it
    # goes as a cancel; the caller sends its cancel as well, for the case it had arrived
    # (then the replacement is dropped as a copy: a review).
    _clock, bus, mail, receiver = link_to_a([])
    bus.down = True
    call = await mail.post("call", "run me", "a")
    assert call.sent
    assert mail.replace_held("a", call, "cancel", "never mind") is Replaced.PERHAPS_ARRIVED
    await mail.post("cancel", "never mind, again", "a")
    bus.down = False
    await mail.retry(gone=())
    await receiver.take()
    await receiver.take()
    assert [kind for _, kind, _ in bus.delivered] == ["cancel", "cancel"]


@given(
    st.integers(1, 30),  # messages
    st.lists(st.booleans(), max_size=60),  # whether each delivery, then each ack, is lost
    st.lists(st.booleans(), min_size=1, max_size=30),  # does the node listen at each post
    st.integers(0, 2),  # copies of each delivery (a PUBLISH whose reply was lost)
)
async def test_every_message_is_opened_once_in_order_through_losses(
    count: int, losses: list[bool], listening: list[bool], copies: int
) -> None:
    clock = Clock()
    bus = Bus()
    mail = mailer_on(bus, clock=clock)
    receiver = Receiver(bus, mail, clock)
    lose = iter(losses)

    def lost() -> bool:
        return next(lose, False)  # losses end: the links heal

    for number in range(count):
        bus.listeners = {"a"} if listening[number % len(listening)] else set()
        await mail.post("answer", number, "a")
        bus.delivered.extend(bus.delivered[-1:] * copies)
        await receiver.take(lost)
    bus.listeners = {"a"}
    for _ in range(200):  # ticks of the RPC watch: retry, then what the receiver says
        if mail.pending == set() and len(receiver.opened) == count:
            break
        clock.now += 0.5
        await mail.retry(gone=())
        await receiver.take(lost)
    assert receiver.opened == [(number, False) for number in range(count)]
    assert mail.pending == set()


async def test_a_new_run_of_the_sender_starts_again_at_one() -> None:
    bus = Bus()
    bus.listeners = {"a"}
    inbox = Inbox(Clock())
    await mailer_on(bus).post("answer", "before", "a")
    assert inbox.open("a", bus.delivered[-1][2]) == ("before", False)
    await mailer_on(bus).post("answer", "after", "a")  # a new process of that node
    assert inbox.open("a", bus.delivered[-1][2]) == ("after", False)
