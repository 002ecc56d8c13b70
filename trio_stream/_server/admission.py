"""How many connections the server holds, in all and per peer address (no I/O in here).

Counted from accept to close, before the handshake too: a peer that opens connections and
never says hello costs memory as well. TCP and HTTP connections (each WebSocket is one)
share the counts.
"""

from __future__ import annotations


class ConnectionCounter:
    """``max_connections`` and ``max_connections_per_address``, enforced at accept."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or say which limit refuses it (None: in)."""
        if self.total >= self.max_total:
            return (
                f"the server holds {self.total} connections, its limit (max_connections): "
                "try again later, or raise max_connections on the server"
            )
        count = self._by_address.get(address, 0)
        if count >= self.max_per_address:
            return (
                f"{address[:80]} holds {count} connections to this server, the limit per "
                "address (max_connections_per_address): close some, or raise the limit on "
                "the server"
            )
        self.total += 1
        self._by_address[address] = count + 1
        return None

    def release(self, address: str) -> None:
        """A connection that ``admit`` let in has closed."""
        self.total -= 1
        count = self._by_address[address] - 1
        if count:
            self._by_address[address] = count
        else:
            del self._by_address[address]

    def from_address(self, address: str) -> int:
        return self._by_address.get(address, 0)
