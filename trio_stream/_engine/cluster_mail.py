"""Messages from this node to one other node, in order and once, through a lapse of either.

The control bus is Redis pub/sub: a message published while its node's subscription is away
(a Redis restart, a blip on its link) reaches nobody, and PUBLISH says so: it returns how
many subscribers got it. An RPC answer, a streamed value, a stream's credit or a cancel lost
that way left a call waiting for its timeout and a stream stalled for good. So a message
that reached nobody, or that Redis did not take (it is down), is held, with every later one
to that node behind it, and sent again (by the RPC watch, twice a second) until that node
listens, or leaves the cluster (then it is dropped: nobody there waits for it).

A message sent again may arrive twice: Redis can run a PUBLISH whose reply is then lost
with the connection. Each message carries this sender's epoch (one per process) and a
number, so a receiver drops what it has had already (:class:`Inbox`).

What is still lost: a message that Redis handed to a subscription whose connection was dead
without Redis knowing (a hung link, until the node's heartbeat finds it out), and a large
one whose stored copy is gone when its node fetches it (a Redis restart in between): both
count as received. Messages past the bound on what is held, or that Redis refuses, are
dropped, and the calls they belong to fail (``on_dropped``). Calls themselves do not come
here: one that reaches nobody fails at once (its provider's node is not listening), since
it has not run.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from .redis_control import ControlBus
from .redis_streams import REDIS_DOWN, REDIS_ERRORS

log = logging.getLogger(__name__)

#: Held for one node at most (RPC answers count their frames' bytes): past it, that node's
#: held messages are dropped, with a warning (its calls end with their timeouts, as before).
MAX_HELD_BYTES: Final = 64 * 1024 * 1024
_SMALL_BYTES: Final = 64  # what a credit or a cancel counts toward MAX_HELD_BYTES


@dataclass(eq=False)
class Letter:
    kind: str
    envelope: dict[str, Any]
    size: int

    @property
    def body(self) -> Any:
        return self.envelope["b"]


class Mailer:
    """The sending side. :meth:`post` and :meth:`retry` run in the engine's job task, one
    at a time and in order (so a message held is never passed by a later one).

    ``on_dropped(node, letters)`` hears of messages that will never go: past the bound on
    what is held, or refused by Redis (not an outage: OOM, NOPERM); the RPC fails the calls
    they belonged to, so that a stream never goes on past a hole.
    """

    def __init__(self, bus: ControlBus, *, epoch: str | None = None) -> None:
        self._bus = bus
        self._epoch = epoch or secrets.token_hex(8)  # the node's run: one per process
        # Numbered per destination, from 1: its receiver tells a lost message by a gap.
        self._numbers: dict[str, itertools.count[int]] = {}
        self._held: dict[str, deque[Letter]] = {}
        self._held_bytes: dict[str, int] = {}
        self.on_dropped: Callable[[str, list[Letter]], None] = lambda node, letters: None

    @property
    def holding(self) -> set[str]:
        """The nodes that messages wait for."""
        return set(self._held)

    async def post(self, kind: str, body: Any, to: str, *, size: int = _SMALL_BYTES) -> None:
        """Send ``body`` to node ``to``, after what waits for it (``size``: its bytes, for
        the bound on what is held)."""
        number = next(self._numbers.setdefault(to, itertools.count(1)))
        letter = Letter(kind, {"e": self._epoch, "n": number, "b": body}, size)
        # Behind what waits for that node, it waits too: it may not pass it.
        if to in self._held or await self._send(to, letter) is not _SENT:
            self._hold(to, letter)

    async def _send(self, node: str, letter: Letter) -> object:
        """_SENT, _REFUSED (dropped, said), or _AWAY (Redis) or _DEAF (the node): held."""
        try:
            received = await self._bus.publish(letter.kind, letter.envelope, to=node)
        except REDIS_DOWN:
            return _AWAY
        except REDIS_ERRORS as error:
            # Redis is there and said no (OOM, NOPERM): sent again, it would say no again,
            # and everything to that node would wait behind it.
            log.warning("a %s message for node %r refused by Redis: %s", letter.kind, node, error)
            self.on_dropped(node, [letter])
            return _SENT
        return _SENT if received else _DEAF

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
            self._drop(node)
            self.on_dropped(node, list(held))

    def _drop(self, node: str) -> None:
        self._held.pop(node, None)
        self._held_bytes.pop(node, None)

    async def retry(self, gone: Iterable[str]) -> None:
        """Send again what waits, in order, for each node that listens now; drop what
        waits for the ``gone`` nodes (they left the cluster: nobody there waits for it)."""
        for node in gone:
            self._drop(node)
        for node in list(self._held):
            try:
                # A look first: a large held message costs a write of all of it to Redis
                # (redis_control stores it under a key) each time it is tried.
                if not await self._bus.listening(node):
                    continue
            except REDIS_ERRORS:
                return  # Redis is away: everything at the next try
            held = self._held[node]
            while held:
                outcome = await self._send(node, held[0])
                if outcome is _AWAY:
                    return
                if outcome is _DEAF:
                    break  # it does not listen (again): the rest stays behind it
                self._held_bytes[node] -= held.popleft().size
            if not held:
                self._drop(node)


_SENT: Final = object()
_AWAY: Final = object()
_DEAF: Final = object()


class Inbox:
    """The receiving side: each message once, and whether any before it were lost.

    A sender numbers what it sends to this node 1, 2, 3... in one run (epoch): a number not
    above the last one is a copy (dropped); one further on than the next says that those in
    between were lost, which happens only to messages Redis counted as received (a link
    that died with them in flight, a stored message gone before it was read).
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int]] = {}  # sender node -> (its epoch, last number)

    def open(self, node: str, envelope: Any) -> tuple[Any, bool] | None:
        """(the body, whether messages before it were lost), or None for a copy."""
        epoch, number = envelope["e"], int(envelope["n"])
        last = self._last.get(node)
        if last is not None and last[0] == epoch and number <= last[1]:
            return None
        # A new run of the sender starts at 1; the first message heard from a sender (this
        # node just started) may be any number.
        expected = last[1] + 1 if last is not None and last[0] == epoch else 1
        self._last[node] = (epoch, number)
        return envelope["b"], last is not None and number > expected
