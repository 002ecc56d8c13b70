"""Messages from this node to one other node, in order and once, through a lapse of either.

The control bus is Redis pub/sub: a message published while its node's subscription is away
(a Redis restart, a blip on its link) reaches nobody, and PUBLISH says so: it returns how
many subscribers got it. An RPC call, answer, streamed value, stream's credit or cancel lost
that way left a call waiting for its timeout and a stream stalled for good. So a message
that reached nobody, or that Redis did not take (it is down), is held, with every later one
to that node behind it, and sent again (by the RPC watch, twice a second) until that node
listens, or leaves the cluster (then it is dropped: nobody there waits for it).

PUBLISH's count is not delivery: a message Redis handed to a subscription whose link then
died with it in flight (reset, or hung until the node's heartbeat finds it out), or a large
one whose stored copy a Redis restart emptied before its node read it, counts as received.
So what was sent is also kept until the receiving node acknowledges it (go-back-N, as TCP
did before selective acknowledgements): each message carries this sender's epoch (one per
process) and a number per destination; the receiver (:class:`Inbox`) takes them in order,
drops copies, acknowledges what it took twice a second (and after every
:data:`ACK_EVERY_MESSAGES`), and when a number shows a gap it drops what came after the gap
and asks for everything from the gap on. A message nobody acknowledged for
:data:`RESEND_AFTER_S` is sent again with all after it: that covers a loss with nothing
after it (a call's last answer), and a lost acknowledgement or request.

What is kept for sending again is bounded (:data:`MAX_UNACKED_BYTES`); past it the oldest
are let go, and each message says from which number its sender can still send again, so a
receiver that misses one let go is told it is lost for good (the RPC then ends every call
between the two nodes); and up to which number it was acknowledged, so that a receiver tells
those let go from those a run before it took (a restart), and one that never heard from a
sender tells those let go before any arrived. Messages past the bound on what is *held*, or
that Redis refuses, are dropped and the calls they belong to fail (``on_dropped``).
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import trio

from .redis_control import ControlBus
from .redis_streams import REDIS_DOWN, REDIS_ERRORS

log = logging.getLogger(__name__)

#: Held for one node at most (RPC answers count their frames' bytes): past it, that node's
#: held messages are dropped, with a warning (the calls they belong to fail).
MAX_HELD_BYTES: Final = 64 * 1024 * 1024
#: Sent to one node and kept until it acknowledges them, at most: past it the oldest are let
#: go (a loss among them is then told, not repaired). A node acknowledges twice a second and
#: after every ACK_EVERY_MESSAGES, so only a stream of large values comes near it.
MAX_UNACKED_BYTES: Final = 64 * 1024 * 1024
#: A message not acknowledged this long after it was sent is sent again, with all after it.
#: Three of the receiver's acknowledgement intervals: a late acknowledgement is no reason.
RESEND_AFTER_S: Final = 1.5
#: A receiver acknowledges at once after this many messages from one node (else at its
#: next tick), so that its sender does not keep a busy stream's values for long.
ACK_EVERY_MESSAGES: Final = 32
_SMALL_BYTES: Final = 64  # what a credit or a cancel counts toward the bounds


class Replaced(enum.Enum):
    """What :meth:`Mailer.replace_held` did."""

    NOT_HELD = "not held"
    INSTEAD = "instead"
    PERHAPS_ARRIVED = "perhaps arrived"


@dataclass(eq=False)
class Letter:
    kind: str
    envelope: dict[str, Any]
    size: int
    # Redis may have it: it took it once, or a publish of it failed on the way (a reply lost
    # with its connection: the PUBLISH may have gone through).
    sent: bool = False
    # Redis said no to it (OOM, NOPERM): dropped, on_dropped told.
    refused: bool = False

    @property
    def body(self) -> Any:
        return self.envelope["b"]

    @property
    def number(self) -> int:
        return int(self.envelope["n"])


class Ack(NamedTuple):
    """What a receiver tells a sender: it took every message up to ``number`` of the
    sender's run ``epoch``; with ``resend``, it missed the next one: send from there."""

    node: str  # the sender
    epoch: str
    number: int
    resend: bool

    @property
    def body(self) -> dict[str, Any]:
        return {"e": self.epoch, "n": self.number, "r": self.resend}


class Mailer:
    """The sending side. :meth:`post`, :meth:`retry` and :meth:`resend` run in the engine's
    job task, one at a time and in order (so a message held is never passed by a later one);
    :meth:`acknowledged` runs in the bus task and only forgets what was acknowledged.

    ``on_dropped(node, letters)`` hears of messages that will never go: past the bound on
    what is held, or refused by Redis (not an outage: OOM, NOPERM); the RPC fails the calls
    they belonged to, so that a stream never goes on past a hole.
    """

    def __init__(
        self,
        bus: ControlBus,
        *,
        epoch: str | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._epoch = epoch or secrets.token_hex(8)  # the node's run: one per process
        # Numbered per destination, from 1: its receiver tells a lost message by a gap.
        self._last_number: dict[str, int] = {}
        self._held: dict[str, deque[Letter]] = {}
        self._held_bytes: dict[str, int] = {}
        # Sent, and kept until acknowledged (in number order), with their bytes, and when
        # the oldest of them was last sent or anything was last acknowledged.
        self._unacked: dict[str, deque[Letter]] = {}
        self._unacked_bytes: dict[str, int] = {}
        # The highest number each node acknowledged: an acknowledgement can come (bus task)
        # while the publish of what it acknowledges is still awaited here; and each message
        # carries it, for its receiver to tell what is lost from what an earlier run of it
        # took (see Inbox.open).
        self._acked_upto: dict[str, int] = {}
        # The last number sent to each node that left the cluster, when it left (_drop).
        self._dropped_upto: dict[str, int] = {}
        self._since: dict[str, float] = {}
        self.on_dropped: Callable[[str, list[Letter]], None] = lambda node, letters: None

    @property
    def holding(self) -> set[str]:
        """The nodes that messages wait for, to be sent."""
        return set(self._held)

    @property
    def pending(self) -> set[str]:
        """The nodes that messages wait for, to be sent or acknowledged."""
        return set(self._held) | set(self._unacked)

    async def post(
        self, kind: str, body: Any, to: str, *, size: int = _SMALL_BYTES, quiet: bool = False
    ) -> Letter:
        """Send ``body`` to node ``to``, after what waits for it (``size``: its bytes, for
        the bounds on what is held and kept); the letter, to :meth:`replace_held` later.
        ``quiet``: a refusal by Redis is not logged (the caller tries again and says so)."""
        number = self._last_number[to] = self._last_number.get(to, 0) + 1
        letter = Letter(kind, {"e": self._epoch, "n": number, "b": body}, size)
        # Behind what waits for that node, it waits too: it may not pass it.
        held_back = to in self._held
        if held_back or await self._send(to, letter, fresh=True, quiet=quiet) in _NOT_NOW:
            self._hold(to, letter)
        return letter

    def replace_held(self, node: str, letter: Letter, kind: str, body: Any) -> Replaced:
        """Make ``letter``, if it still waits to be sent, a ``kind`` with ``body`` (of the
        smallest size) in its place. Its number stays: what follows it must not look like a
        gap to the receiver.

        Returns:
            NOT_HELD: it left (or was dropped); INSTEAD: it never left, the replacement is
            all that goes; PERHAPS_ARRIVED: replaced, but a publish of it failed on its way
            and may have gone through, so the receiver may have it already and would drop
            the replacement as a copy: the caller sends ``kind`` again as a message of its
            own. (Not replacing such a letter let a call given up while Redis hung run when
            Redis woke up: sent again ahead of its cancel, its method ran before the cancel
            came; a migrating user's motor.)
        """
        held = self._held.get(node)
        if not held or not any(waiting is letter for waiting in held):
            return Replaced.NOT_HELD
        self._held_bytes[node] -= letter.size - _SMALL_BYTES
        letter.kind, letter.size = kind, _SMALL_BYTES
        letter.envelope["b"] = body
        return Replaced.PERHAPS_ARRIVED if letter.sent else Replaced.INSTEAD

    async def _send(
        self, node: str, letter: Letter, *, fresh: bool = False, quiet: bool = False
    ) -> object:
        """_SENT, _REFUSED (dropped, said), or _AWAY (Redis) or _DEAF (the node): held.

        ``fresh``: the newest letter to ``node``, sent from :meth:`post` (nothing numbered
        after it yet)."""
        unacked = self._unacked.get(node)
        # The oldest this node can still have again: the receiver's test for a hole it
        # can ask to be filled, or one that is lost for good.
        letter.envelope["k"] = unacked[0].number if unacked else letter.number
        # Up to `a`, every number was taken by some run of that node; up to `f`, also those
        # dropped as it left. What the receiver misses below `k` is lost for good only
        # past `a`, and a receiver that first hears of this sender tells those lost only
        # if `f` is 0 (see Inbox.open).
        acked = self._acked_upto.get(node, 0)
        letter.envelope["a"] = acked
        letter.envelope["f"] = max(acked, self._dropped_upto.get(node, 0))
        try:
            received = await self._bus.publish(letter.kind, letter.envelope, to=node)
        except REDIS_DOWN:
            letter.sent = True  # perhaps: the PUBLISH may have gone, its answer not come
            return _AWAY
        except REDIS_ERRORS as error:
            # Redis is there and said no (OOM, NOPERM): sent again, it would say no again,
            # and everything to that node would wait behind it.
            if not quiet:
                log.warning(
                    "a %s message for node %r refused by Redis: %s", letter.kind, node, error
                )
            letter.refused = True
            if fresh:
                # Nothing after it has a number yet: the next letter takes this one, and
                # the receiver sees no gap (a gap told as a loss ends every call between
                # the two nodes, for one refused message).
                self._last_number[node] = letter.number - 1
            else:
                self._let_go(node, letter.number)
            self.on_dropped(node, [letter])
            return _REFUSED
        if not received:
            return _DEAF
        letter.sent = True
        self._keep(node, letter)
        return _SENT

    def _keep(self, node: str, letter: Letter) -> None:
        """Keep a letter just sent until ``node`` acknowledges it (a copy sent again is kept
        already)."""
        if letter.number <= self._acked_upto.get(node, 0):
            return  # acknowledged already, while its publish was awaited
        unacked = self._unacked.setdefault(node, deque())
        if unacked and unacked[-1].number >= letter.number:
            return
        if not unacked:
            self._since[node] = self._clock()
        unacked.append(letter)
        total = self._unacked_bytes.get(node, 0) + letter.size
        while total > MAX_UNACKED_BYTES and len(unacked) > 1:
            total -= unacked.popleft().size  # sent long ago: a loss among them is told
        self._unacked_bytes[node] = total

    def _hold(self, node: str, letter: Letter) -> None:
        held = self._held.setdefault(node, deque())
        held.append(letter)
        total = self._held_bytes.get(node, 0) + letter.size
        self._held_bytes[node] = total
        if total > MAX_HELD_BYTES:
            log.warning(
                "%d messages for node %r dropped: it has not listened while %d bytes "
                "waited for it (the calls they belong to fail)",
                len(held),
                node[:80],
                total,
            )
            self._drop_held(node)
            self._let_go(node, letter.number)
            self.on_dropped(node, list(held))

    def _let_go(self, node: str, number: int) -> None:
        """Keep nothing numbered up to ``number`` for ``node`` any more: a message among them
        will never go, so the receiver must not wait for any of them (the ``k`` of what
        follows tells it they are lost for good; go-back-N would ask for them forever)."""
        unacked = self._unacked.get(node)
        while unacked and unacked[0].number <= number:
            self._unacked_bytes[node] -= unacked.popleft().size
        if node in self._unacked and not unacked:
            self._forget_unacked(node)

    def _forget_unacked(self, node: str) -> None:
        self._unacked.pop(node, None)
        self._unacked_bytes.pop(node, None)
        self._since.pop(node, None)

    def _drop_held(self, node: str) -> None:
        self._held.pop(node, None)
        self._held_bytes.pop(node, None)

    def _drop(self, node: str) -> None:
        """``node`` left the cluster: nothing is sent to it again. Its numbering goes on
        (should it be only cut off, a number again from 1 would look like a copy, and it
        is told what it missed), and a new run under its name is not told that what was
        numbered so far was lost (it was for the run that left)."""
        self._drop_held(node)
        self._forget_unacked(node)
        self._dropped_upto[node] = self._last_number.get(node, 0)

    def acknowledged(self, node: str, ack: dict[str, Any]) -> bool:
        """``node`` took what it acknowledges (an :class:`Ack` body); whether it asks for
        the rest to be sent again (then :meth:`resend`, in the job task)."""
        if ack.get("e") != self._epoch:
            return False  # to an earlier run of this node
        self._acked_upto[node] = max(self._acked_upto.get(node, 0), int(ack["n"]))
        unacked = self._unacked.get(node)
        if unacked and unacked[0].number <= int(ack["n"]):
            self._since[node] = self._clock()  # it hears us: the rest is not late yet
            self._let_go(node, int(ack["n"]))
        return bool(ack.get("r")) and node in self._unacked

    async def resend(self, node: str) -> None:
        """Send again, in order, what ``node`` has not acknowledged (it asked, or it is
        late); what waits to be sent follows it, as in :meth:`retry`."""
        unacked = self._unacked.get(node)
        if not unacked:
            return
        self._since[node] = self._clock()
        # A copy: an acknowledgement may pop letters meanwhile (the bus task).
        for letter in list(unacked):
            if node not in self._unacked or letter.number < self._unacked[node][0].number:
                continue  # acknowledged while we sent the ones before it
            outcome = await self._send(node, letter)
            if outcome is _AWAY or outcome is _DEAF:
                return  # all of them again at the next try

    async def retry(self, gone: Iterable[str]) -> None:
        """Send again what waits, in order, for each node that listens now: what it has not
        acknowledged for RESEND_AFTER_S, then what was held; drop what waits for the
        ``gone`` nodes (they left the cluster: nobody there waits for it)."""
        for node in gone:
            self._drop(node)
        now = self._clock()
        for node in list(self.pending):
            late = node in self._unacked and now - self._since[node] >= RESEND_AFTER_S
            if not late and node not in self._held:
                continue
            try:
                # A look first: a large held message costs a write of all of it to Redis
                # (redis_control stores it under a key) each time it is tried.
                if not await self._bus.listening(node):
                    continue
            except REDIS_ERRORS:
                return  # Redis is away: everything at the next try
            if late:
                log.info("messages to node %r not acknowledged: sent again", node[:80])
                await self.resend(node)
            held = self._held.get(node)
            while held:
                outcome = await self._send(node, held[0])
                if outcome is _AWAY:
                    return
                if outcome is _DEAF:
                    break  # it does not listen (again): the rest stays behind it
                self._held_bytes[node] -= held.popleft().size
            if node in self._held and not held:
                self._drop_held(node)


_SENT: Final = object()
_REFUSED: Final = object()
_AWAY: Final = object()
_DEAF: Final = object()
_NOT_NOW: Final = (_AWAY, _DEAF)  # held, to be sent again


class Inbox:
    """The receiving side: each message once and in order, what was lost asked for again,
    and whether any before one were lost for good.

    A sender numbers what it sends to this node 1, 2, 3... in one run (epoch): a number not
    above the last one taken is a copy (dropped); one further on than the next is a gap.
    A gap its sender can still fill (its envelope's ``k``, the oldest it keeps, is not past
    it) is asked for, and what comes after it dropped until it is filled; one it cannot is
    told (``lost``) with the message after it.
    """

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._last: dict[str, tuple[str, int]] = {}  # sender node -> (its epoch, last number)
        self._acked: dict[str, tuple[str, int]] = {}  # ... what was last acknowledged to it
        self._unacked_count: dict[str, int] = {}  # messages taken from it since then
        self._asked: dict[str, tuple[str, int, float]] = {}  # ... and the gap last asked for
        self._due: dict[str, Ack] = {}  # acknowledgements to send
        self._lost: set[str] = set()  # senders whose messages were lost for good: not told yet
        #: Some acknowledgement should go now, not at the next tick: a gap to fill, or many
        #: messages taken from one sender.
        self.urgent = False

    def open(self, node: str, envelope: Any) -> tuple[Any, bool] | None:
        """(the body, whether messages before it were lost for good), or None for a copy
        or a message after a gap (asked for again)."""
        epoch, number = envelope["e"], int(envelope["n"])
        oldest_kept = min(int(envelope.get("k", number)), number)
        acked = envelope.get("a")  # None from a sender of an earlier version
        heard = node in self._last  # from any run of that node
        last_epoch, last_number = self._last.get(node, ("", 0))
        if last_epoch == epoch and number <= last_number:
            # Sent again: its sender may have missed our acknowledgement. Said again (at
            # the next tick), unless a request to send again is on its way.
            if node not in self._due or not self._due[node].resend:
                self._acked.pop(node, None)
                self._due[node] = Ack(node, epoch, last_number, False)
            return None
        if last_epoch == epoch:
            expected = last_number + 1
        elif heard:
            expected = 1  # a new run of the sender starts at 1
        elif envelope.get("f", acked) == 0:
            # The first heard from it, and no run of this node ever took anything of it (nor
            # left the cluster): what it sent before what it still keeps was for this run
            # (or for a last run that died before acknowledging anything: rare, its calls
            # died with it). Lost if let go meanwhile: told (untold, a call's answer was
            # simply missing).
            expected = 1
        else:
            # The first heard from it (this node just started), after some run of it took
            # messages: from what it still keeps, which may have been for the last run. What
            # it let go before that may have been too (a restart right after a refusal), and
            # telling it would end this run's calls with it for nothing. (A sender of an
            # earlier version does not say what was acknowledged: the same.)
            expected = oldest_kept
        if expected < oldest_kept:
            # Its sender keeps those before oldest_kept no longer. Lost for good, and told
            # with the next message taken, unless an earlier run of this node took them all
            # (acknowledged up to `a`, and this run took none of those: a restart whose
            # first message raced the last run's acknowledgements). From there on, what it
            # keeps can be asked for.
            if acked is None or max(expected, int(acked) + 1) < oldest_kept:
                self._lost.add(node)
            expected = oldest_kept
            self._last[node] = (epoch, expected - 1)
        if number > expected:
            # Remembered as heard up to the gap (a first contact too): should its sender let
            # the missing ones go meanwhile, the next message's `k` tells the loss.
            self._last[node] = (epoch, expected - 1)
            self._ask(node, epoch, expected)
            return None
        self._last[node] = (epoch, number)
        self._asked.pop(node, None)
        count = self._unacked_count.get(node, 0) + 1
        self._unacked_count[node] = count
        self._due[node] = Ack(node, epoch, number, False)  # a request not sent yet is moot
        self.urgent |= count >= ACK_EVERY_MESSAGES
        lost = node in self._lost
        self._lost.discard(node)
        return envelope["b"], lost

    def _ask(self, node: str, epoch: str, expected: int) -> None:
        """Ask ``node`` to send again from ``expected`` on: once a RESEND_AFTER_S for one
        gap (what it sends again arrives in order, and asking again would double it)."""
        now = self._clock()
        asked = self._asked.get(node)
        if asked is not None and asked[:2] == (epoch, expected) and now - asked[2] < RESEND_AFTER_S:
            return  # asked already (the sender's own timer covers a request that was lost)
        self._asked[node] = (epoch, expected, now)
        self._due[node] = Ack(node, epoch, expected - 1, True)
        self.urgent = True

    def acks(self) -> list[Ack]:
        """The acknowledgements to send now (each node's latest), taken."""
        due = [
            ack
            for ack in self._due.values()
            if ack.resend or self._acked.get(ack.node) != (ack.epoch, ack.number)
        ]
        for ack in due:
            self._acked[ack.node] = (ack.epoch, ack.number)
            self._unacked_count[ack.node] = 0
        self._due.clear()
        self.urgent = False
        return due

    @property
    def due(self) -> bool:
        """Whether acknowledgements wait to be sent."""
        return bool(self._due)
