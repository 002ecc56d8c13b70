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
without Redis knowing (a hung link, until its health check ends it), which counts as
received. Calls themselves do not come here: one that reaches nobody fails at once (its
provider's node is not listening), since it has not run.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .redis_control import ControlBus
from .redis_streams import REDIS_ERRORS

log = logging.getLogger(__name__)

#: Held for one node at most (RPC answers count their frames' bytes): past it, that node's
#: held messages are dropped, with a warning (its calls end with their timeouts, as before).
MAX_HELD_BYTES: Final = 64 * 1024 * 1024
_SMALL_BYTES: Final = 64  # what a credit or a cancel counts toward MAX_HELD_BYTES


@dataclass(eq=False)
class _Letter:
    kind: str
    envelope: dict[str, Any]
    size: int


class Mailer:
    """The sending side. :meth:`post` and :meth:`retry` run in the engine's job task, one
    at a time and in order (so a message held is never passed by a later one)."""

    def __init__(self, bus: ControlBus) -> None:
        self._bus = bus
        self._epoch = secrets.token_hex(8)
        self._numbers = itertools.count(1)
        self._held: dict[str, deque[_Letter]] = {}
        self._held_bytes: dict[str, int] = {}

    @property
    def holding(self) -> set[str]:
        """The nodes that messages wait for."""
        return set(self._held)

    async def post(
        self, kind: str, body: Any, to: str, *, size: int = _SMALL_BYTES, hold_if_down: bool = True
    ) -> None:
        """Send ``body`` to node ``to``, after what waits for it (``size``: its bytes, for
        the bound on what is held).

        Raises:
            REDIS_ERRORS: Redis did not take it, and not ``hold_if_down`` (the caller says so
                to its own client instead). Behind a message held for that node, it waits
                in turn all the same: it may not pass it.
        """
        letter = _Letter(kind, {"e": self._epoch, "n": next(self._numbers), "b": body}, size)
        if to in self._held:  # an earlier one waits: this one goes after it
            self._hold(to, letter)
            return
        try:
            received = await self._bus.publish(kind, letter.envelope, to=to)
        except REDIS_ERRORS:
            if not hold_if_down:
                raise
            received = 0
        if not received:
            self._hold(to, letter)

    def _hold(self, node: str, letter: _Letter) -> None:
        held = self._held.setdefault(node, deque())
        held.append(letter)
        total = self._held_bytes.get(node, 0) + letter.size
        self._held_bytes[node] = total
        if total > MAX_HELD_BYTES:
            log.warning(
                "%d messages for node %r dropped: it has not listened while %d bytes "
                "waited for it (its callers' calls end with their timeouts)",
                len(held),
                node[:80],
                total,
            )
            self._drop(node)

    def _drop(self, node: str) -> None:
        self._held.pop(node, None)
        self._held_bytes.pop(node, None)

    async def retry(self, gone: Iterable[str]) -> None:
        """Send again what waits, in order, for each node that listens now; drop what
        waits for the ``gone`` nodes (they left the cluster)."""
        for node in gone:
            self._drop(node)
        for node in list(self._held):
            held = self._held[node]
            while held:
                try:
                    received = await self._bus.publish(held[0].kind, held[0].envelope, to=node)
                except REDIS_ERRORS:
                    return  # Redis is away: everything at the next try
                if not received:
                    break  # that node does not listen yet: the rest stays behind it
                self._held_bytes[node] -= held.popleft().size
            if not held:
                self._drop(node)


class Inbox:
    """The receiving side: the body of each message once, or None for one had already."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int]] = {}  # sender node -> (its epoch, last number)

    def open(self, node: str, envelope: Any) -> Any | None:
        epoch, number = envelope["e"], int(envelope["n"])
        last = self._last.get(node)
        # A sender's numbers grow in the order it sends to this node (held ones included),
        # so one not above the last is a copy; a new epoch is a restarted node.
        if last is not None and last[0] == epoch and number <= last[1]:
            return None
        self._last[node] = (epoch, number)
        return envelope["b"]
