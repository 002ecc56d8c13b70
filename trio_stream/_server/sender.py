"""A connection's writing: the sender task that writes what its :class:`Outbox` batches, and
the direct-write path that writes from the task that woke it.

The outbox decides *what* goes out (control messages, reader counts, DATA through the fair
scheduler, writer acknowledgements, coalesced into one batch); this module only *writes* it,
counts it, and tells the connection's reader when the control messages it waits on are gone.
Both paths take the same batches in the same order, so a frame is never written twice nor
overtaken: what a direct write leaves unwritten, the sender task writes before anything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._exceptions import ConnectionClosed
from .._protocol.bytes_like import BytesLike
from .._transport.base import FrameTransport
from .._transport.tcp import StreamTransport
from .outbox import Batch, Outbox

if TYPE_CHECKING:
    from .state import ServerState


def _nothing() -> None:
    pass


class Sender:
    """Writes one connection's outbox: a task (:meth:`run`) and the direct path (:meth:`wake`
    queues, :meth:`write_direct` writes)."""

    # Slots: one per connection, on the path of every delivery.
    __slots__ = (
        "_closing",
        "_control_written",
        "_drain",
        "_drained",
        "_idle",
        "_outbox",
        "_peer_left",
        "_queued",
        "_send_now",
        "_state",
        "_transport",
        "_unsent",
        "_wake",
    )

    def __init__(
        self,
        state: ServerState,
        transport: FrameTransport,
        outbox: Outbox,
        peer_left: Callable[[], None],
    ) -> None:
        """``peer_left()`` is called when a write finds the connection gone."""
        self._state = state
        self._transport = transport
        self._outbox = outbox
        self._peer_left = peer_left
        self._wake = trio.Event()
        # Direct writes (write_direct): plain TCP only; the sender waits idle with nothing
        # left to write; queued once per dispatch; what the socket did not take at once.
        self._send_now = (
            transport.direct_writer() if isinstance(transport, StreamTransport) else None
        )
        self._idle = False
        self._queued = False
        self._unsent: tuple[list[BytesLike], Batch] | None = None
        self._closing = False
        self._drain = False
        # Made on first use: an idle connection should hold nothing it may never need.
        self._drained: trio.Event | None = None  # made when closing begins
        self._control_written: trio.Event | None = None  # the reader waits for control to go

    def wake(self) -> None:
        """Something is ready to write (or a deadline changed): the outbox's wake-up."""
        pending = self._state.direct_writes
        if pending is not None and self._idle:
            # A reader task is dispatching what it read: it writes to us itself when done.
            if not self._queued:
                self._queued = True
                pending.append(self)
            return
        self._wake.set()

    def write_direct(self, acks: bool = False) -> bool:
        """Write what the outbox holds now, from the task that woke it (no sender hop).

        Called once a reader task has dispatched a read (see write_woken), for connections
        whose sender waits idle: the frames go out in the same scheduler turn as the read
        that brought them, not in the sender's next turn (a task switch and an epoll_wait
        later, on the path of every frame at low rates). The batch is the one the sender
        would have taken (same scheduler, same order); a busy sender is left to do it, so
        under load nothing changes. What the socket does not take at once, the sender
        writes before anything else.

        Returns:
            True if the outbox holds writer acknowledgements alone and ``acks`` is false:
            they are for a second call with ``acks=True``, once the DATA that the same
            publishes woke on other connections is written.
        """
        self._queued = False
        send_now = self._send_now
        if not self._idle or self._unsent is not None or self._closing or send_now is None:
            # The sender has work of its own (the rest of an earlier direct write, which
            # must go first).
            self._wake.set()
            return False
        if not acks and self._outbox.only_acks():
            return True
        batch = self._outbox.next_batch()
        if batch.deadline != math.inf:
            self._wake.set()  # a max_rate reader's next frame: the sender keeps the time
        if not batch.pieces:
            return False
        try:
            rest = send_now(batch.pieces)
        except ConnectionClosed:
            self._peer_left()
            return False
        if rest:
            self._unsent = (rest, batch)
            self._idle = False  # busy from now: nothing more is written around it
            self._wake.set()
            return False
        self._written(batch)
        if self._outbox.data_ready() or self._outbox.control_ready():
            # The batch was full (batch_bytes): the rest is the sender's. Nothing else would
            # wake it, since its readers are active already (and its control was queued
            # already), so with no further read to dispatch a block reader's connection
            # stalled after one batch (32 frames of 8 KB), until the next ping.
            self._wake.set()
        return False

    async def run(self) -> None:
        """The sender task: write batches until cancelled or the connection breaks."""
        transport = self._transport
        outbox = self._outbox
        try:
            while True:
                if self._unsent is not None:
                    # A direct write's rest (write_direct): it goes before anything newer.
                    pieces, batch = self._unsent
                    self._unsent = None
                    await transport.send(pieces)
                    self._written(batch)
                    continue
                if outbox.only_acks():
                    # Acknowledgements alone can wait one scheduler turn, so that the DATA
                    # that the same publish woke on readers' connections is written first:
                    # a PUB_ACK syscall ahead of it showed in publish-to-receive latency.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                self._wake = trio.Event()
                batch = outbox.next_batch()
                if batch.pieces:
                    await transport.send(batch.pieces)
                    self._written(batch)
                    continue
                deadline = batch.deadline
                if self._closing and not (self._drain and outbox.drains_more()):
                    self._drained_event().set()
                    deadline = math.inf
                if deadline == math.inf:
                    self._idle = self._send_now is not None
                    try:
                        await self._wake.wait()
                    finally:
                        self._idle = False
                else:
                    # Only with a deadline: a cancel scope per wait is not free, and an
                    # expiring one (cancellation delivered by exception) far less so.
                    with trio.move_on_at(deadline):
                        await self._wake.wait()
        except ConnectionClosed:
            self._peer_left()

    def _written(self, batch: Batch) -> None:
        """``batch`` went out: count it, and let the reader go on if it waited for room."""
        state = self._state
        state.frames_out += batch.frames
        state.bytes_out += batch.data_bytes
        if batch.control_bytes:
            self._outbox.written(batch)
            if self._control_written is not None:
                self._control_written.set()

    async def wait_control_written(self) -> None:
        """Wait until a batch with control messages has been written."""
        self._control_written = event = trio.Event()
        try:
            await event.wait()
        finally:
            self._control_written = None

    def finish(self, drain: bool) -> None:
        """The connection is closing: write no more directly, and once nothing is left to
        write (with ``drain``, nothing buffered for the readers either; else the control
        messages only), say so to :meth:`wait_drained`. A second call changes nothing."""
        if not self._closing:
            self._closing = True
            self._drain = drain

    async def wait_drained(self) -> None:
        """Wait until the sender has written what :meth:`finish` asked for."""
        await self._drained_event().wait()

    def _drained_event(self) -> trio.Event:
        if self._drained is None:
            self._drained = trio.Event()
        return self._drained

    def close(self) -> None:
        """Drop the reference to the connection (see Session._break_cycles)."""
        self._peer_left = _nothing


def write_woken(state: ServerState) -> None:
    """End a dispatch: write to the idle senders it woke (Sender.write_direct), in the order
    they were woken, then to those that have writer acknowledgements alone: the DATA that a
    publish woke goes out before its PUB_ACK (an ack's syscall ahead of it showed in
    publish-to-receive latency), and at a low rate neither waits for a sender task's turn
    (a task switch and a pass of the run loop each, on the path of every frame)."""
    pending = state.direct_writes
    state.direct_writes = None
    if pending:
        acks_only = [sender for sender in pending if sender.write_direct()]
        for sender in acks_only:
            sender.write_direct(acks=True)
