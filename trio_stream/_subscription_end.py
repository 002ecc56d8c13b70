"""The end of a subscription, as trio's loops and trio_stream's errors both see it."""

from __future__ import annotations

import trio

from ._exceptions import TrioStreamError


class SubscriptionEnded(TrioStreamError, trio.EndOfChannel):
    """This subscription delivers nothing more: its channel was deleted or ended (with its
    owner, its lifetime), or the subscription or its client was closed; the message (and
    ``end_reason``) says which.

    A ``trio.EndOfChannel`` too, so that ``async for`` and ``for`` loops just stop; a
    ``TrioStreamError``, so that a script that knows nothing of trio catches it with the rest.
    Its own module, apart from ``_exceptions``: the wire format's modules import those, and
    they import no trio.
    """


SubscriptionEnded.__module__ = "trio_stream"  # as the other errors (_exceptions, at its end)
