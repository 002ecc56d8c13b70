"""How many connections the server holds, in all and per peer address (no I/O in here).

Counted from accept to close, before the handshake too: a peer that opens connections and
never says hello costs memory as well. TCP and HTTP connections (each WebSocket is one)
share the counts. /metrics shows them (``trio_stream_open_connections`` by transport, the
largest count of one address): ``trio_stream_connections`` counts clients that said hello,
and an operator saw 2 there while one address was 8 connections from its limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from .log_throttle import LogThrottle

log = logging.getLogger(__name__)

#: The transports counted apart (``admit``'s ``transport``): the raw TCP port's connections,
#: and the HTTP port's (dashboard, /metrics, WebSocket).
TRANSPORTS: Final = ("tcp", "http")

#: After the first refusal's line, at most one line per this many seconds, counting them.
REFUSALS_SAID_EVERY_S: Final = 60.0


class ConnectionCounter:
    """``max_connections`` and ``max_connections_per_address``, enforced at accept."""

    def __init__(
        self,
        max_total: int,
        max_per_address: int,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self.by_transport = dict.fromkeys(TRANSPORTS, 0)  # (together: ``total``)
        self._by_address: dict[str, int] = {}
        self.refusals = RefusalLog(clock)
        self.refused_total = 0  # since the start (/metrics)

    def admit(self, address: str, transport: str) -> str | None:
        """Count a new connection from ``address`` on ``transport`` (one of TRANSPORTS); or
        say which limit refuses it (None: in)."""
        if self.total >= self.max_total:
            refusal = (
                f"the server holds {self.total} connections, its limit (max_connections): "
                "try again later, or raise max_connections on the server"
            )
            self.refused_total += 1
            self.refusals.refused(address, refusal)
            return refusal
        count = self._by_address.get(address, 0)
        if count >= self.max_per_address:
            refusal = (
                f"{address[:80]} holds {count} connections to this server, the limit per "
                "address (max_connections_per_address): close some, or raise the limit on "
                "the server"
            )
            self.refused_total += 1
            self.refusals.refused(address, refusal)
            return refusal
        self.total += 1
        self.by_transport[transport] += 1
        self._by_address[address] = count + 1
        return None

    def release(self, address: str, transport: str) -> None:
        """A connection that ``admit`` let in (on ``transport``) has closed."""
        self.total -= 1
        self.by_transport[transport] -= 1
        count = self._by_address[address] - 1
        if count:
            self._by_address[address] = count
        else:
            del self._by_address[address]

    def from_address(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def largest_per_address(self) -> int:
        """The most connections one address holds (0: none): how close the busiest peer is
        to max_connections_per_address (a walk over the addresses: for /metrics)."""
        return max(self._by_address.values(), default=0)


class RefusalLog:
    """Refused connections in the log at WARNING: clients were refused while the server's
    log said nothing (an operator; it was at INFO). A flood of them (a client that retries
    in a loop, a scan) must not flood the log: the first is said at once, the rest at most
    once per :data:`REFUSALS_SAID_EVERY_S`, counted, with the latest one's address and reason.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._throttle = LogThrottle(REFUSALS_SAID_EVERY_S)
        self._latest = ("", "")

    def refused(self, address: str, reason: str) -> None:
        self._latest = (address, reason)
        self._say(self._throttle.happened(self._clock()))

    def flush(self, now: float) -> None:
        """Say the refusals not said yet, if the last line is a minute old (the server's
        housekeeping calls this, so that a count is said when the refusals stop)."""
        self._say(self._throttle.due(now))

    def _say(self, due: tuple[int, float | None] | None) -> None:
        if due is None:
            return
        count, since = due
        address, reason = self._latest
        if since is None or count == 1:
            log.warning("connection from %s refused: %s", address[:80], reason)
        else:
            log.warning(
                "%d connections refused in the %.0f s since the last such line, the latest "
                "from %s: %s",
                count,
                since,
                address[:80],
                reason,
            )
