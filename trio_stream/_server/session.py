"""One client connection on the server: a thin driver of its tasks.

After the handshake (handshake.py), two tasks run: the reader parses frames and acts on them
at once through two tables (frame type -> handler; for CONTROL, message type -> handler, see
requests.py and the RPC router), and the sender writes what the connection's :class:`Outbox`
batches (control messages, reader counts, DATA through the fair scheduler, writer
acknowledgements, coalesced into one write). The server's watchdog (idle.py) closes a
connection that has been silent for idle_timeout_s and has the outbox end ``block`` readers
that have held their writers back longer than their block_timeout (check_holds).

Control messages a client does not read make the reader task stop reading that client
(CONTROL_HIGH_WATER_BYTES), so its requests cannot grow the server's memory; so do frames its
writers parked for full ``block`` readers beyond max_parked_bytes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from .._exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    ProtocolError,
    TrioStreamError,
)
from .._protocol.bytes_like import BytesLike
from .._protocol.frames import (
    CONTROL,
    CREDIT,
    PUBLISH,
    PUBLISH_HEAD,
    parse_counter,
    parse_publish,
    publish_runs,
)
from .._protocol.messages import (
    Error,
    Goodbye,
    Hello,
    Message,
    Ping,
    Pong,
    Reply,
    Request,
    UnknownOp,
    decode_message,
)
from .._transport.base import FrameTransport
from .._transport.tcp import StreamTransport
from .broker import Channel, Writer
from .engine import AsyncHandler
from .handshake import closing_for, handshake, refuse
from .outbox import Batch, Outbox
from .requests import ANSWERED_LATER, REQUEST_HANDLERS
from .resume import Lease
from .state import ServerState

log = logging.getLogger(__name__)

# Control messages (answers, notices) queued for one client and not yet written: above this,
# the server stops reading that client until they are written, so a client that sends
# requests and never reads the answers holds at most this much (plus one answer) here.
CONTROL_HIGH_WATER_BYTES: Final = 1 * 2**20
_PUBLISH_HEAD_BYTES: Final = PUBLISH_HEAD.size  # where a PUBLISH frame's payload starts
# A flood writer's read holds up to RECEIVE_BUFFER_BYTES (256 KiB: ~2,300 frames of 100 bytes,
# ~2 ms of fan-out), during which no other connection was served. Slices of this many frames,
# with the senders written to and the other tasks run between them, bound that wait; the
# readers' CREDIT is heard between slices, so their senders write more of the read and park
# less. Measured (loaded 2-core machine): server CPU per delivery (cpu_per_frame.py, block
# readers) -12 % (1,024-frame slices: -7 %); S4's flooded drop_oldest reader +28 % frames
# (raw payloads); S1 unchanged. S4's quiet channel did not gain: its wait is the processes'
# run-queue time on two cores, not the fan-out. The cost is one scheduler pass (~5 us) per
# slice (PUBLISH frames counted across the read, whatever other frames come between them); a
# read of fewer never yields.
PUBLISH_SLICE_FRAMES: Final = 256
# A resumed session carries the publish counts of its predecessor's publishers that its client
# has not reopened yet (see published_frames), at most this many (the newest: pub ids grow
# along a client's connections): a bound on what a client that reconnects for ever leaves.
RESUME_CARRIED_PUBS_MAX: Final = 4096


class Session:
    # Slots: with many attributes an instance __dict__ stops sharing its keys and costs
    # ~1.5 KiB per connection. "__dict__" stays, so an attribute added later works.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_close_requested",
        "_closing",
        "_control_space",
        "_direct_queued",
        "_drain",
        "_drained",
        "_early_frames",
        "_frame_handlers",
        "_handlers",
        "_last_heard",
        "_name_claimed",
        "_next_pub",
        "_parked_space",
        "_peer_gone",
        "_pending_request",
        "_publish",
        "_reader_scope",
        "_send_now",
        "_sender_idle",
        "_unsent",
        "_wake",
        "client_id",
        "connected_at",
        "methods",
        "name",
        "outbox",
        "resume_lease",
        "resume_token",
        "state",
        "transport",
        "writers",
    )

    def __init__(self, state: ServerState, transport: FrameTransport) -> None:
        self.state = state
        self.transport = transport
        self.client_id = state.next_client_id()
        self.name = state.engine.default_client_name(self.client_id)
        self.connected_at = time.time()
        limits = state.limits
        self.outbox = Outbox(
            self,
            max_buffered_bytes=limits.max_buffered_bytes,
            # What this connection's writers may have parked before it is read no more: one
            # whole writer window always fits, so one held-back channel never stops its
            # other writers.
            max_parked_bytes=max(limits.max_buffered_bytes, limits.publish_window_bytes),
            clock=trio.current_time,
            detach=state.broker.unsubscribe,
            totals=state.buffer_totals,
        )
        self.writers: dict[int, Writer] = {}
        self.methods: list[str] = []  # RPC names, kept by the router
        self._next_pub = 1
        self._name_claimed = False
        self.resume_token: str | None = None  # issued at welcome to a client that resumes
        self.resume_lease: Lease | None = None  # what its previous connection left
        self._wake = trio.Event()
        # Direct writes (write_direct): plain TCP only; the sender waits idle with nothing
        # left to write; queued once per dispatch; what the socket did not take at once.
        self._send_now = (
            transport.direct_writer() if isinstance(transport, StreamTransport) else None
        )
        self._sender_idle = False
        self._direct_queued = False
        self._unsent: tuple[list[BytesLike], Batch] | None = None
        # Made on first use: an idle connection should hold nothing it may never need.
        self._control_space: trio.Event | None = None  # the reader waits for control to go
        self._parked_space: trio.Event | None = None  # the reader waits for parked bytes to go
        self._early_frames: list[bytearray] = []
        self._reader_scope = trio.CancelScope()
        self._last_heard = trio.current_time()  # when the client last sent anything
        self._closing = False
        self._drain = False
        self._peer_gone = False
        self._close_requested = trio.Event()
        self._drained: trio.Event | None = None  # made when closing begins
        self._publish = state.publish  # the broker's, unless several nodes share channels
        # The one dispatch shape, as in the client: frame type -> handler, and for CONTROL
        # messages, message type -> handler.
        self._frame_handlers: dict[int, Callable[[bytearray], None]] = {
            PUBLISH: self._on_publish,
            CREDIT: self._on_credit,
            CONTROL: self._on_control,
        }
        # Built on the first request: a connection that only pings (most idle clients) never
        # needs it, and it is ~3 KiB of bound methods and closures per connection.
        self._handlers: dict[type[Message], Callable[[Any], Any]] | None = None
        # A request the engine answers with I/O (several nodes): awaited by the reader task
        # right after the frame that carried it, so requests stay in order.
        self._pending_request: tuple[AsyncHandler, Request] | None = None

    def _handler_table(self) -> dict[type[Message], Callable[[Any], Any]]:
        self._handlers = {
            **{kind: self._request(handler) for kind, handler in REQUEST_HANDLERS.items()},
            **self.state.rpc.handlers(self),
        }
        for kind, async_handler in self.state.engine.request_handlers().items():
            self._handlers[kind] = self._defer(async_handler)
        return self._handlers

    def _defer(self, handler: AsyncHandler) -> Callable[[Request], None]:
        def defer(message: Request) -> None:
            self._pending_request = (handler, message)

        return defer

    async def _answer_pending(self) -> None:
        assert self._pending_request is not None
        handler, message = self._pending_request
        self._pending_request = None
        try:
            result = await handler(self, message)
        except (TrioStreamError, ValueError) as exc:
            name = type(exc).__name__
            if not isinstance(exc, TrioStreamError):
                name = InvalidArgument.__name__
            self.send_control(Error(id=message.id, type=name, message=str(exc)))
        else:
            self.send_control(Reply(id=message.id, result=result))

    # -- OutboxOwner ---------------------------------------------------------------------------
    def wake_sender(self) -> None:
        pending = self.state.direct_writes
        if pending is not None and self._sender_idle:
            # A reader task is dispatching what it read: it writes to us itself when done.
            if not self._direct_queued:
                self._direct_queued = True
                pending.append(self)
            return
        self._wake.set()

    def write_direct(self) -> None:
        """Write what the outbox holds now, from the task that woke it (no sender hop).

        Called once a reader task has dispatched a read (see _dispatch_all), for connections
        whose sender waits idle: the frames go out in the same scheduler turn as the read
        that brought them, not in the sender's next turn (a task switch and an epoll_wait
        later, on the path of every frame at low rates). The batch is the one the sender
        would have taken (same scheduler, same order); a busy sender is left to do it, so
        under load nothing changes. What the socket does not take at once, the sender
        writes before anything else.
        """
        self._direct_queued = False
        send_now = self._send_now
        if (
            not self._sender_idle
            or self._unsent is not None
            or self._closing
            or send_now is None
            or self.outbox.only_acks()
        ):
            # The sender has work of its own (the rest of an earlier direct write, which
            # must go first), or acknowledgements alone, which it lets wait a turn: a flood
            # writer's acks then cover several reads, and it is woken less often.
            self._wake.set()
            return
        batch = self.outbox.next_batch()
        if batch.deadline != math.inf:
            self._wake.set()  # a max_rate reader's next frame: the sender keeps the time
        if not batch.pieces:
            return
        try:
            rest = send_now(batch.pieces)
        except ConnectionClosed:
            self._peer_left()
            return
        if rest:
            self._unsent = (rest, batch)
            self._sender_idle = False  # busy from now: nothing more is written around it
            self._wake.set()
            return
        self._written(batch)

    def parked_room(self) -> None:
        if self._parked_space is not None:
            self._parked_space.set()

    def hold_started(self, deadline: float) -> None:
        self.state.watchdog.wake_at(self.client_id, deadline)

    def writer_ended(self, pub_id: int) -> None:
        self.writers.pop(pub_id, None)

    # -- what the requests and the RPC router use --------------------------------------------
    def send_control(self, message: Message) -> None:
        self.outbox.send(message)

    def send_control_frame(self, frame: bytes) -> None:
        """Queue a CONTROL frame encoded already (length prefix included)."""
        self.outbox.queue_control(frame)

    def open_writer(self, channel: Channel) -> Writer:
        writer = self.state.broker.open_publisher(channel, self, self.outbox, self._next_pub)
        self._next_pub += 1
        self.writers[writer.pub_id] = writer
        return writer

    def close_writer(self, pub_id: int) -> None:
        writer = self.writers.pop(pub_id, None)
        if writer is not None:
            self.state.broker.close_publisher(writer)
            self.outbox.forget_writer(pub_id)

    def published_frames(self) -> dict[int, int]:
        """Frames each publisher has published, by pub id (a resuming client resends the rest).

        This connection's open publishers, and those its predecessors left that the client
        has not reopened here yet (a reopen waiting for its retry: a channel not re-created
        yet, Redis failing): the connection may end before it does, and the next one must
        still tell that publisher what was taken, or the client sends its whole window again
        and frames published but not acknowledged arrive twice. Pub ids go on from the
        predecessor's (see _claim_name), so an old publisher's id never names a new one.
        """
        lease = self.resume_lease
        own = {pub_id: writer.frames for pub_id, writer in self.writers.items()}
        if lease is None or not lease.taken:
            return own
        carried = lease.taken
        if len(carried) > RESUME_CARRIED_PUBS_MAX:
            carried = dict(sorted(carried.items())[-RESUME_CARRIED_PUBS_MAX:])
        return carried | own

    def record(self) -> dict[str, Any]:
        return {
            "id": self.client_id,
            "name": self.name,
            "address": self.transport.remote,
            "transport": self.transport.kind,
            "connected_at": self.connected_at,
            "subscriptions": [
                {
                    "channel": s.channel.name,
                    "policy": s.policy.value,
                    "size": s.buffer.size,
                    "every": s.every,
                    "max_rate": s.max_rate,
                    "queued": len(s.buffer),
                    "lost": s.lost,
                    "sent": s.sent,
                }
                for s in self.outbox.readers.values()
                if s.channel.public or s.channel.name.startswith("$")
            ],
            "publishers": sorted(
                {w.channel.name for w in self.writers.values() if w.channel.public}
            ),
            "methods": list(self.methods),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve this connection until it closes; never raises for the peer's faults."""
        try:
            with trio.fail_after(self.state.limits.handshake_timeout_s):
                self._early_frames = await handshake(
                    self.state, self.transport, self.client_id, self._claim_name
                )
        except trio.TooSlowError:
            self._release_name()
            log.info("%s: no hello within the handshake timeout", self.transport.remote)
            await refuse(self.transport, ProtocolError("no hello within the handshake timeout"))
            return
        except ConnectionClosed:
            self._release_name()
            with trio.CancelScope(shield=True):
                await self.transport.aclose()
            return
        except TrioStreamError as exc:
            self._release_name()
            log.info("%s: handshake refused: %s", self.transport.remote, exc)
            await refuse(self.transport, exc)
            return
        except BaseException:
            self._release_name()
            raise
        self.state.register(self)
        log.info("client %r connected from %s", self.name, self.transport.remote)
        self._last_heard = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                # Constant names: trio would format one string per task and connection.
                nursery.start_soon(self._sender, name="trio_stream session sender")
                nursery.start_soon(self._reader, name="trio_stream session reader")
                await self._close_requested.wait()
                if not self._peer_gone:
                    # Say goodbye and let what is buffered drain, within the grace period.
                    with trio.move_on_after(self.state.config.shutdown_grace_s):
                        await self._drained_event().wait()
                nursery.cancel_scope.cancel()
        finally:
            self._cleanup()
            with trio.CancelScope(shield=True):
                await self.transport.aclose()
            log.info("client %r disconnected", self.name)

    def _claim_name(self, hello: Hello) -> tuple[str, str | None]:
        if hello.name is not None:
            self.name = hello.name
        resume = self.state.resume
        if hello.resume_token is not None:  # a reconnection: its old place comes back
            self.resume_lease = resume.take_over(hello.resume_token, self, self.state.by_name)
            if self.resume_lease is not None:  # see published_frames
                self._next_pub = max(self.resume_lease.taken, default=0) + 1
        # Claimed before the first await (the welcome's send): of two hellos with one name,
        # exactly one gets it, and the other its NameInUse.
        self.state.claim_name(self)
        self._name_claimed = True
        if hello.resume:
            self.resume_token = resume.issue(self)
        return self.name, self.resume_token

    def _release_name(self) -> None:
        if self._name_claimed:
            self._name_claimed = False
            self.state.release_name(self)
            self.state.rpc.session_closed(self)  # a call routed to us meanwhile fails now

    def close(self, reason: str, *, drain: bool = False, reconnect: bool = True) -> None:
        """Ask the connection to say goodbye, flush and close.

        With ``drain`` (server shutdown) the reader may first take what is buffered for it,
        within the server's grace period; otherwise only control messages are flushed.
        ``reconnect=False`` tells the client not to come back (the goodbye's flag).
        """
        if not self._closing:
            self._closing = True
            self._drain = drain
            self.send_control(Goodbye(reason=reason, reconnect=None if reconnect else False))
            self._close_requested.set()

    def _drained_event(self) -> trio.Event:
        if self._drained is None:
            self._drained = trio.Event()
        return self._drained

    def _peer_left(self) -> None:
        self._peer_gone = True
        self._closing = True
        self._close_requested.set()

    def _cleanup(self) -> None:
        broker = self.state.broker
        published = self.published_frames()
        for reader in list(self.outbox.readers.values()):
            broker.unsubscribe(reader)
        for writer in list(self.writers.values()):
            broker.close_publisher(writer)
        self.writers.clear()
        self.state.rpc.session_closed(self)
        if not self.state.resume.session_ended(self, published):  # else kept for a while
            for channel in list(broker.owned_by(self.client_id)):
                if not channel.keep:  # the engine's: a take-over elsewhere may have come first
                    self.state.engine.end_orphan(
                        channel, f"channel {channel.name!r} ended with its owner"
                    )
        self.state.unregister(self)
        self._break_cycles()

    def _break_cycles(self) -> None:
        """Drop every reference that leads back here, so that reference counting alone frees
        this session once its tasks end: the server freezes long-lived objects out of the
        garbage collector's sight (gc_policy.py), and a frozen cycle is never collected."""
        self._handlers = None  # bound methods of this session
        self._frame_handlers = {}
        self.outbox.close()  # it refers to us (its owner), and its readers to it

    # -- reader ------------------------------------------------------------------------------
    async def _reader(self) -> None:
        transport = self.transport
        try:
            with self._reader_scope:
                frames, self._early_frames = self._early_frames, []
                await self._dispatch_all(frames)
                while True:
                    frames = await transport.receive_frames()
                    self._last_heard = trio.current_time()
                    await self._dispatch_all(frames)
                    # Let the senders this batch woke write before we try to read again:
                    # a read finds nothing at once and re-arms epoll (two syscalls) that
                    # would otherwise sit between a publish and its delivery.
                    await trio.lowlevel.cancel_shielded_checkpoint()
        except ConnectionClosed:
            self._peer_left()
        except (ProtocolError, FrameTooLarge) as exc:
            # str(exc): a buffered log record must not keep the traceback, and through its
            # frames this session, alive.
            log.warning("%s (%s): %s", self.name, transport.remote, str(exc))
            closing_for(transport, exc)
            self.close(f"{type(exc).__name__}: {exc}")

    async def _dispatch_all(self, frames: list[bytearray]) -> None:
        # Senders woken on the way are written to at the end (write_direct), and before any
        # await: the queue exists only while this task runs without yielding.
        state = self.state
        state.direct_writes = []
        try:
            await self._dispatch_frames(frames)
        finally:
            write_woken(state)

    async def _dispatch_frames(self, frames: list[bytearray]) -> None:
        handlers = self._frame_handlers
        outbox = self.outbox
        index = 0
        count = len(frames)
        published = 0  # PUBLISH frames fanned out since this task last let the others run
        while index < count:
            frame = frames[index]
            kind = frame[0]
            index += 1
            if kind == PUBLISH and index < count and frames[index][0] == PUBLISH:
                # Consecutive PUBLISH frames go to the fan-out as batches (one per writer),
                # a slice of the read at a time, and the other tasks run between slices
                # (counted across runs: other frames between them do not end a slice).
                start = index - 1
                index = self._on_publishes(
                    frames, start, min(count, start + PUBLISH_SLICE_FRAMES - published)
                )
                published += index - start
            else:
                handler = handlers.get(kind)
                if handler is None:
                    raise ProtocolError(f"frame type {kind:#04x} is not valid from a client")
                handler(frame)
                published += kind == PUBLISH
                if self._pending_request is not None:
                    await self._flush_then(self._answer_pending)
                    published = 0
            if published >= PUBLISH_SLICE_FRAMES and index < count:
                await self._flush_then(trio.lowlevel.checkpoint)
                published = 0
            if (
                outbox.control_bytes > CONTROL_HIGH_WATER_BYTES
                or outbox.parked_bytes > outbox.max_parked_bytes
            ):
                await self._flush_then(self._wait_for_space)
                published = 0

    async def _flush_then(self, step: Callable[[], Awaitable[None]]) -> None:
        """Await ``step`` (other tasks run meanwhile), the senders this read woke written to
        first. ``state.direct_writes`` is a queue only while one dispatch runs without
        yielding (every session's dispatch uses it), so each await of a dispatch comes here."""
        state = self.state
        write_woken(state)
        await step()
        state.direct_writes = []

    async def _wait_for_space(self) -> None:
        await self._wait_for_control_space()
        await self._wait_for_parked_space()

    async def _wait_for_parked_space(self) -> None:
        """Read nothing more from this client while its writers have more than
        max_parked_bytes parked for full block readers (each writer is bounded by its own
        credit window; this bounds a connection with many held-back writers)."""
        while self.outbox.parked_bytes > self.outbox.max_parked_bytes:
            self._parked_space = trio.Event()
            await self._parked_space.wait()
        self._parked_space = None

    async def _wait_for_control_space(self) -> None:
        """Read nothing more from this client until the answers queued for it are written.

        Checked after every frame, not every read: one read can hold thousands of small
        requests whose answers are far larger. Only this connection waits (its sender keeps
        writing, the broker and other clients never notice). A client left paused here for
        idle_timeout_s is closed by the watchdog, like a silent one.
        """
        while self.outbox.control_bytes > CONTROL_HIGH_WATER_BYTES:
            self._control_space = trio.Event()
            await self._control_space.wait()
        self._control_space = None

    def _on_publish(self, frame: bytearray) -> None:
        pub_id, time_s = parse_publish(frame)
        writer = self.writers.get(pub_id)
        if writer is None:
            if not 0 < pub_id < self._next_pub:
                raise ProtocolError(f"PUBLISH for publisher {pub_id}, which was never opened")
            return  # the channel went away while this frame was in flight
        self._publish(writer, time_s, memoryview(frame)[_PUBLISH_HEAD_BYTES:])

    def _on_publishes(self, frames: list[bytearray], start: int, stop: int) -> int:
        """Publish the PUBLISH frames from ``frames[start]`` on (one batch per writer's run);
        returns the index of the first frame after them."""
        writers = self.writers
        runs, parsed = publish_runs(frames, start, stop)
        for run in runs:
            writer = writers.get(run.pub_id)
            if writer is None:
                if not 0 < run.pub_id < self._next_pub:
                    raise ProtocolError(
                        f"PUBLISH for publisher {run.pub_id}, which was never opened"
                    )
                continue  # the channel went away while these frames were in flight
            if len(run.times) == 1:
                self._publish(writer, run.times[0], run.payloads[0])
            else:
                self.state.publish_batch(writer, run.times, run.payloads)
        if parsed < stop and frames[parsed][0] == PUBLISH:
            self._on_publish(frames[parsed])  # a truncated frame: refused there
        return parsed

    def _on_credit(self, frame: bytearray) -> None:
        self.outbox.credit(*parse_counter(frame))

    def _on_control(self, frame: bytearray) -> None:
        try:
            message = decode_message(frame)
        except UnknownOp as exc:
            # A newer client may probe for ops this server lacks: a request (an integer id)
            # is answered and the connection stays; anything else is a protocol error.
            if exc.id is None:
                raise ProtocolError(str(exc)) from None
            self.send_control(
                Error(
                    id=exc.id,
                    type=InvalidArgument.__name__,
                    message=f"{exc}: this server does not know it (protocol version 1)",
                )
            )
            return
        if type(message) is Ping:
            self.send_control(Pong(data=message.data))
            return
        if type(message) is Goodbye:
            self.state.resume.release(self)  # a client that leaves on purpose is not coming back
            self._peer_left()
            return
        handler = (self._handlers or self._handler_table()).get(type(message))
        if handler is None:
            raise ProtocolError(f"{message.OP} is not a message a client may send")
        handler(message)

    def _request(self, handler: Callable[[Session, Any], Any]) -> Callable[[Request], None]:
        """``handler`` as a message handler that answers with a reply or an error."""

        def answer(message: Request) -> None:
            try:
                result = handler(self, message)
            except (TrioStreamError, ValueError) as exc:
                name = type(exc).__name__
                if not isinstance(exc, TrioStreamError):
                    name = InvalidArgument.__name__
                self.send_control(Error(id=message.id, type=name, message=str(exc)))
            else:
                if result is not ANSWERED_LATER:
                    self.send_control(Reply(id=message.id, result=result))

        return answer

    # -- called by the server's watchdog (idle.py) -------------------------------------------
    def heard_at(self) -> float:
        """When the server last read anything from this client (trio clock)."""
        return self._last_heard

    def close_idle(self, idle_s: float) -> None:
        self.close(f"idle for {idle_s:g} s (idle_timeout_s): send ping to stay connected")
        self._reader_scope.cancel()  # hear nothing more from it

    def check_holds(self, now: float) -> float:
        """Show and end block readers by how long they have held writers; next deadline."""
        return self.outbox.check_holds(now)

    # -- sender ------------------------------------------------------------------------------
    async def _sender(self) -> None:
        transport = self.transport
        outbox = self.outbox
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
                if self._closing and not (self._drain and outbox.has_buffered()):
                    self._drained_event().set()
                    deadline = math.inf
                if deadline == math.inf:
                    self._sender_idle = self._send_now is not None
                    try:
                        await self._wake.wait()
                    finally:
                        self._sender_idle = False
                else:
                    # Only with a deadline: a cancel scope per wait is not free, and an
                    # expiring one (cancellation delivered by exception) far less so.
                    with trio.move_on_at(deadline):
                        await self._wake.wait()
        except ConnectionClosed:
            self._peer_left()

    def _written(self, batch: Batch) -> None:
        """``batch`` went out: count it, and let the reader go on if it waited for room."""
        state = self.state
        state.frames_out += batch.frames
        state.bytes_out += batch.data_bytes
        if batch.control_bytes:
            self.outbox.written(batch)
            if self._control_space is not None:
                self._control_space.set()


def write_woken(state: ServerState) -> None:
    """End a dispatch: write to the idle senders it woke (Session.write_direct), in the order
    they were woken; a writer's acknowledgements alone are left to its sender, which writes
    them a turn later, after the DATA that the same publish woke."""
    pending = state.direct_writes
    state.direct_writes = None
    if pending:
        for session in pending:
            session.write_direct()
