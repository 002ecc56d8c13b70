"""The per-connection send scheduler: deficit round robin by bytes over subscriptions.

Every subscription with something to send and credit to send it takes turns. On its turn it
earns ``quantum`` bytes of deficit and sends frames while the deficit is positive, so a channel
of 1 MiB frames and a channel of 100-byte frames share the connection by *bytes*, and a quiet
channel never waits behind more than about one quantum of a hot one. Our buffers cannot peek at
the next frame's size, so a turn may overdraw (the deficit goes negative and is paid back on
later turns): the same long-run shares as classic DRR, with at most one frame of overshoot.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from .._protocol.bytes_like import BytesLike
from .broker import Subscription

QUANTUM_BYTES: Final = 16 * 1024


class DeficitRoundRobin:
    def __init__(self, quantum: int = QUANTUM_BYTES) -> None:
        self.quantum = quantum
        # Made on the first turn: an empty deque is ~0.7 KiB, and most connections of a big
        # server are idle ones that never receive a frame.
        self._turns: deque[Subscription] | None = None

    def __bool__(self) -> bool:
        return bool(self._turns)

    def add(self, sub: Subscription) -> None:
        if not sub.active:
            sub.active = True
            if self._turns is None:
                self._turns = deque()
            self._turns.append(sub)

    def fill(self, pieces: list[BytesLike], budget: int) -> tuple[int, int]:
        """Append DATA frames to ``pieces`` until about ``budget`` bytes are taken.

        Small frames are joined into as few pieces as possible (one join here is far cheaper
        than a transport copying piece by piece); large payloads stay pieces of their own.

        Returns:
            (frames, bytes) appended.
        """
        turns = self._turns
        if turns is None:
            return 0, 0
        run: list[bytes] = []
        frames = 0
        taken = 0
        quantum = self.quantum
        while turns and taken < budget:
            sub = turns.popleft()
            if sub.closed or not sub.ready():
                sub.active = False
                sub.deficit = 0  # an idle flow does not bank credit (classic DRR)
                continue
            sub.deficit += quantum
            sent, nbytes = sub.take_into(pieces, run, min(sub.deficit, budget - taken))
            sub.deficit -= nbytes
            taken += nbytes
            frames += sent
            if sub.ending and not len(sub.buffer):
                # After its last frame, in the same write: the end of the subscription.
                run.append(sub.session.finish(sub))
            elif sub.ready():
                turns.append(sub)
                continue
            sub.active = False
            sub.deficit = 0
        if run:
            pieces.append(b"".join(run))
        return frames, taken
