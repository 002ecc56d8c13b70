"""What the client's helpers (RPC, the SyncClient) may ask of a client: its small internal port.

The RPC endpoint and the SyncClient used to edit the client's handler table, request ids and
reply map directly. They now go through this port: send a request and wait for (or forget) its
answer, send a notification, register a handler for a message type, spawn a task in the
client's nursery, wait until the connection is usable. ``Client`` implements it; nothing else
of the client is theirs to touch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ._exceptions import TrioStreamError
from ._protocol.limits import Limits, PayloadLimits
from ._protocol.messages import ControlMessage


class PendingRequest:
    """A request on its way: the id it went out with, and its answer once it comes."""

    __slots__ = ("done", "error", "id", "on_done", "on_result", "result")

    def __init__(self, ident: int, on_result: Callable[[Any], Any] | None = None) -> None:
        self.id = ident
        self.done = trio.Event()
        self.result: Any = None
        self.error: TrioStreamError | None = None
        # Runs inside the reader task as the reply is parsed, before any frame after it:
        # a subscription must exist before its first DATA frame is dispatched.
        self.on_result = on_result
        # Runs once the request is done either way: a streaming call waits on its values and
        # on its end together, with one event of its own.
        self.on_done: Callable[[], None] | None = None

    def resolve(self, result: Any) -> None:
        self.result = result if self.on_result is None else self.on_result(result)
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def fail(self, error: TrioStreamError) -> None:
        if self.done.is_set():
            # Answered already (its waiter has not run yet): a connection lost just after
            # the answer does not undo it. An open that then failed left its publisher or
            # subscription to nobody, restored on every reconnect (a cancellation audit).
            return
        self.error = error
        self.done.set()
        if self.on_done is not None:
            self.on_done()


class ClientPort(Protocol):
    """The part of a client its RPC endpoint and the SyncClient use."""

    @property
    def name(self) -> str: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def closed(self) -> bool: ...
    @property
    def payload_limits(self) -> PayloadLimits:
        """What the client's payload decoder accepts (values, RPC arguments and results)."""
        ...

    def start_request(
        self, build: Callable[[int], ControlMessage], on_result: Callable[[Any], Any] | None = None
    ) -> PendingRequest:
        """Send the message ``build(id)`` now; its answer resolves the returned request."""
        ...

    def forget(self, request: PendingRequest) -> None:
        """Nobody waits for ``request`` any more: its answer is ignored when it comes."""
        ...

    def pending(self, ident: int) -> PendingRequest | None:
        """The request waiting for an answer with this id, if any."""
        ...

    def send_control(self, message: ControlMessage) -> None:
        """Queue a CONTROL message (a notification: no answer is awaited)."""
        ...

    def handle(self, message_type: type[ControlMessage], handler: Callable[[Any], None]) -> None:
        """Call ``handler(message)`` in the reader task for every message of this type."""
        ...

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> bool:
        """Start ``fn(*args)`` in the client's nursery; False once the client is closing."""
        ...

    async def wait_usable(self) -> None:
        """Return once requests can be sent (at once unless the client is reconnecting).

        Raises:
            ConnectionClosed: the client is closed (or gave up reconnecting).
        """
        ...
