"""Wrong tokens, counted per peer address: a guesser gets a few tries a minute (no I/O here).

Without a bound, one address tried the server token ~2,400 times a second (new connections)
and the admin token ~14,000 times a second (requests on one connection), and the log said
nothing of it (an outside audit). Past :data:`MAX_FAILURES` wrong tokens (the server's or
the admin's) within :data:`WINDOW_S`, that address is refused without a look at its token
until the oldest of them is a window old. A program on that address with the right token is
refused meanwhile too: what a lock-out costs, and why the bound leaves room for typing
mistakes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Final

import trio

log = logging.getLogger(__name__)

#: Wrong tokens from one address within WINDOW_S before it is refused.
MAX_FAILURES: Final = 10
WINDOW_S: Final = 60.0
#: Addresses remembered at most (the oldest forgotten first): a bound on what a flood of
#: addresses costs.
MAX_ADDRESSES: Final = 10_000


class AuthThrottle:
    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}  # address -> times, oldest first

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not try a token now; None: it may."""
        failures = self._recent(address)
        if failures is None or len(failures) < MAX_FAILURES:
            return None
        wait = failures[0] + WINDOW_S - self._clock()
        return (
            f"{len(failures)} wrong tokens from {address[:80]} within {WINDOW_S:g} s: "
            f"refused without a try for {max(wait, 1):.0f} s more"
        )

    def failed(self, address: str, what: str) -> None:
        """Count a wrong ``what`` (token) from ``address``; the first of a run, and the one
        that makes the address refused, are logged at WARNING."""
        failures = self._recent(address)
        if failures is None:
            if len(self._failures) >= MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]
            failures = self._failures[address] = deque()
        failures.append(self._clock())
        count = len(failures)
        if count == 1:
            log.warning("a wrong %s from %s", what, address[:80])
        elif count == MAX_FAILURES:
            log.warning(
                "%d wrong tokens from %s within %g s: it is refused without a try until "
                "the oldest is %g s old",
                count,
                address[:80],
                WINDOW_S,
                WINDOW_S,
            )

    def _recent(self, address: str) -> deque[float] | None:
        """``address``'s failures within the window (forgotten when none is)."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._clock() - WINDOW_S
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures


def host_of(remote: str) -> str:
    """The address part of a transport's ``host:port`` (an IPv6 address keeps its colons)."""
    return remote.rpartition(":")[0] or remote
