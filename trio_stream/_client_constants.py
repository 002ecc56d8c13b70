"""Constants shared by the client, its publishers and its subscriptions.

They live here, not in _client.py, so that _publisher.py and _subscription.py can use them
without importing the client module (which imports them).
"""

from __future__ import annotations

from typing import Final

POLICIES: Final = ("drop_oldest", "drop_newest", "clear", "unbounded", "block")
OUTGOING_HIGH_WATER_BYTES: Final = 4 * 2**20  # writers wait while more than this is unsent
# Closing a publisher while its client reconnects waits this long for the connection, so
# that what send() took goes out before the close (SyncClient.close's bound on its flush too).
CLOSE_DELIVER_S: Final = 10.0
# Leaving a subscription or publisher waits at most this long for the server's answer: a frozen
# server gets the request when it wakes up, and nobody is left waiting for it meanwhile.
LEAVE_TIMEOUT_S: Final = 1.0
