"""Deletions of channels whose owners were not there to be told, for their next welcome.

Another client (a holder of the key, an admin) may delete a channel while its owner is away:
cut off for longer than ``resume_grace_s`` with a ``keep`` channel, say, or connected to
another node. A client that comes back creates its channels again (that is what a
reconnection does), so an owner nobody told brought the deleted channel back. The owner
that resumes within its grace is told by its lease (resume.Lease.deleted); this book keeps
the rest, by the owner's name, for the welcome of the next reconnection of that name
(session.Session._claim_name_now), on this server or node.

A notice goes when it is taken, when its owner makes a channel of that name again (its
client would otherwise forget a channel it has again), and, oldest first, past
ABSENT_DELETIONS_MAX: a bound on what clients that never come back leave here.
"""

from __future__ import annotations

from typing import Final

# Deletions kept for owners that were away, at most (~200 bytes each): the oldest go first.
ABSENT_DELETIONS_MAX: Final = 10_000


class AbsentOwners:
    """What to tell owners, by name, of their channels deleted while they were away."""

    def __init__(self, limit: int = ABSENT_DELETIONS_MAX) -> None:
        self._limit = limit
        # Channel name -> (its owner's name, the notice), oldest first. One per channel name:
        # a channel of that name deleted again replaces the older notice.
        self._by_channel: dict[str, tuple[str, str]] = {}
        self._by_owner: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_channel)

    def note(self, owner: str, channel: str, reason: str) -> None:
        """``channel``, owned by the client named ``owner``, was deleted; ``reason`` is the
        notice its owner is to get."""
        self._forget(channel)  # (to the end: the newest)
        self._by_channel[channel] = (owner, reason)
        self._by_owner.setdefault(owner, set()).add(channel)
        while len(self._by_channel) > self._limit:
            self._forget(next(iter(self._by_channel)))

    def made_again(self, channel: str, owner: str) -> None:
        """The client named ``owner`` made a channel of that name again: no notice of its
        older one stands (another client's new channel of that name leaves it standing)."""
        noted = self._by_channel.get(channel)
        if noted is not None and noted[0] == owner:
            self._forget(channel)

    def _forget(self, channel: str) -> None:
        noted = self._by_channel.pop(channel, None)
        if noted is None:
            return
        channels = self._by_owner[noted[0]]
        channels.discard(channel)
        if not channels:
            del self._by_owner[noted[0]]

    def take(self, owner: str) -> dict[str, str]:
        """The notices for the client named ``owner`` (channel -> reason), given once."""
        channels = self._by_owner.pop(owner, ())
        return {channel: self._by_channel.pop(channel)[1] for channel in channels}
