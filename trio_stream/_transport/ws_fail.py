"""A close frame for a WebSocket frame that breaks RFC 6455, before the TCP close.

wsproto reports such a frame (a client's unmasked frame, a reserved opcode or bit, a control
frame too long, text that is not UTF-8) as a ``CloseConnection`` event while the connection is
still open, as if the peer had sent a close frame. trio-websocket (0.12) then closes the TCP
stream without a word, so the peer sees only an abnormal closure (1006) and never learns what
it did wrong. RFC 6455 7.1.7 ("Fail the WebSocket Connection") has the endpoint send a close
frame first; here it carries wsproto's code (1002, 1007, 1009) and its reason, and it matters
most to someone writing a client in another language from docs/protocol.md.

A patch of one method rather than a fork of trio-websocket: the branch is small and the rest
of its behaviour is what we want. tests/test_websocket.py fails if an upgrade moves it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
import trio_websocket
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError

log = logging.getLogger(__name__)

# The close frame goes through the connection's write lock: a writer stuck on a peer that does
# not read must not keep the reader from closing.
FAIL_SEND_TIMEOUT_S: Final = 2.0
MAX_REASON_BYTES: Final = 123  # a close frame's payload is at most 125 bytes

_Handler = Callable[[Any, CloseConnection], Awaitable[None]]


def reason_that_fits(reason: str | None) -> str | None:
    """``reason`` cut to what a close frame holds (whole UTF-8 characters)."""
    if reason is None:
        return None
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def install() -> None:
    """Patch trio-websocket's close handling (once; later calls do nothing).

    A trio-websocket without the method leaves things as they are (a log line says so):
    the close frame is a courtesy to the peer, not worth failing the import over.
    """
    connection_class: Any = trio_websocket.WebSocketConnection
    original: _Handler | None = getattr(connection_class, "_handle_close_connection_event", None)
    if original is None:
        log.warning("trio-websocket changed: a broken WebSocket frame gets no close frame")
        return
    if getattr(original, "_sends_close_on_bad_frames", False):
        return

    async def handle_close_connection_event(self: Any, event: CloseConnection) -> None:
        if self._wsproto.state == ConnectionState.OPEN:  # a frame wsproto could not parse
            reason = reason_that_fits(event.reason)
            # Closed for writers first, as trio-websocket does for a peer's close frame:
            # wsproto refuses messages from the moment the close frame is made (before the
            # write lock is taken), and a writer in between must get ConnectionClosed, not
            # wsproto's LocalProtocolError (a connection's sender busy with a flood did).
            self._close_reason = trio_websocket.CloseReason(event.code, reason)
            with (
                trio.move_on_after(FAIL_SEND_TIMEOUT_S),
                contextlib.suppress(
                    trio_websocket.ConnectionClosed,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    LocalProtocolError,
                ),
            ):
                await self._send(CloseConnection(code=event.code, reason=reason))
        await original(self, event)

    handle_close_connection_event._sends_close_on_bad_frames = True  # type: ignore[attr-defined]
    connection_class._handle_close_connection_event = handle_close_connection_event
