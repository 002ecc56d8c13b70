"""Reconnection policy: when to try again, and the client's connection states.

The backoff doubles from ``initial`` up to ``maximum`` with *equal jitter*: each wait is half
the current delay plus a random part of up to the other half. Half is never zero (a client
never hammers a server that just refused it) and the random half spreads clients apart (200
clients cut by one server restart do not come back in the same instant, each attempt of theirs
drifting further from the others'). Full jitter could wait zero; no jitter moves in lock-step.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from ._exceptions import InvalidArgument

State = Literal["connecting", "open", "reconnecting", "closed"]
STATES: Final[tuple[State, ...]] = ("connecting", "open", "reconnecting", "closed")


@dataclass(frozen=True)
class Reconnect:
    """How a client reconnects: ``open_client(url, reconnect=ts.Reconnect(...))``.

    Args:
        initial: the first delay, in seconds (each wait is between half of it and all of it).
        maximum: the delay stops doubling here (seconds).
        give_up_after: seconds without a connection after which the client gives up and
            closes (every waiter then gets ConnectionClosed); None: never.
    """

    initial: float = 0.1
    maximum: float = 5.0
    give_up_after: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum < math.inf:
            raise InvalidArgument(
                f"Reconnect needs 0 < initial <= maximum (seconds), not initial={self.initial!r}"
                f" maximum={self.maximum!r}"
            )
        if self.give_up_after is not None and not self.give_up_after >= 0:
            raise InvalidArgument(
                f"give_up_after must be seconds >= 0 or None, not {self.give_up_after!r:.40}"
            )

    @classmethod
    def from_argument(cls, value: bool | Reconnect) -> Reconnect | None:
        """``reconnect=`` of open_client: True (the defaults), False (None: fail fast)."""
        if isinstance(value, Reconnect):
            return value
        if value is True:
            return cls()
        if value is False:
            return None
        raise InvalidArgument(
            f"reconnect must be True, False or ts.Reconnect(...), not {value!r:.60}"
        )


class Backoff:
    """The waits between attempts of one outage: doubling, capped, equally jittered."""

    def __init__(self, policy: Reconnect, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._delay = policy.initial
        self._random = rng or random.Random()

    def next_wait(self) -> float:
        """Seconds to wait before the next attempt (in [delay/2, delay])."""
        delay = self._delay
        self._delay = min(delay * 2, self._policy.maximum)
        half = delay / 2
        return half + self._random.uniform(0, half)
