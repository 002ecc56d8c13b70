"""Wrong tokens and channel keys, counted per peer address and said in the log (no I/O here).

One address tried ~2,400 server tokens a second and ~14,000 admin tokens a second on one
connection, and the log said nothing (an outside audit). Tokens are not rate-limited: a
lock-out per address lets anyone on a shared address (a NAT, the same host, a reverse proxy in
front of the HTTP port) lock out everyone else on it, reconnecting clients with the right
token among them. A token is a secret to make long (the server warns at start about a short
one, see :func:`short_token_warning`); this says where wrong ones come from: the first from
an address at WARNING, and again when it reaches :data:`GUESSING_COUNT` within
:data:`WINDOW_S`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

log = logging.getLogger(__name__)

WINDOW_S: Final = 60.0
#: Wrong tokens from one address within WINDOW_S that are called guessing in the log.
GUESSING_COUNT: Final = 10
#: Addresses remembered at most (the oldest forgotten first): a flood of them costs this.
MAX_ADDRESSES: Final = 10_000
#: A token shorter than this is warned about at start: guessed at thousands a second.
SHORT_TOKEN_CHARS: Final = 16


class WrongTokens:
    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[float, int]] = {}  # address -> (window start, count)

    def failed(self, address: str, what: str) -> int:
        """Count a wrong ``what`` (which token) from ``address``; its count in the window."""
        now = self._clock()
        start, count = self._counts.pop(address, (now, 0))
        if now - start >= WINDOW_S:
            start, count = now, 0
        count += 1
        if len(self._counts) >= MAX_ADDRESSES:
            del self._counts[next(iter(self._counts))]
        self._counts[address] = (start, count)  # (last: the newest, forgotten last)
        if count == 1:
            log.warning("a wrong %s from %s", what, address[:80])
        elif count == GUESSING_COUNT:
            log.warning(
                "%d wrong tokens or keys from %s within %g s: someone may be guessing (use "
                "long random ones: tokens and channel keys are not rate-limited)",
                count,
                address[:80],
                WINDOW_S,
            )
        return count


def short_token_warning(name: str, token: str | None) -> str | None:
    """What to say at start about ``token`` (the ``name`` setting), if it is short."""
    if token is None or len(token) >= SHORT_TOKEN_CHARS:
        return None
    return (
        f"the {name} has {len(token)} characters: anyone who can reach the server can try "
        f"thousands a second; use {SHORT_TOKEN_CHARS} or more random ones "
        "(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
    )


def host_of(remote: str) -> str:
    """The address part of a transport's ``host:port`` (an IPv6 address keeps its colons)."""
    return remote.rpartition(":")[0] or remote
