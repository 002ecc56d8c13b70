"""A connection's reading: the reader task that parses a client's frames and acts on them at
once, in order, and stops reading while the client holds too much of the server's memory.
A request the engine answers with I/O (Redis) is awaited before the frames after it; pings
are answered meanwhile, so the connection never falls silent for the engine's sake.

The one dispatch shape, as in the client: frame type -> handler, and for CONTROL messages,
message type -> handler (requests.py's table, the RPC router's, the engine's). Consecutive
PUBLISH frames go to the fan-out as batches, a slice of the read at a time. Control messages
a client does not read make the reader stop reading that client (CONTROL_HIGH_WATER_BYTES),
so its requests cannot grow the server's memory; so do frames its writers parked for full
``block`` readers beyond max_parked_bytes.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio

from .._exceptions import (
    AuthError,
    ChannelNotFound,
    FrameTooLarge,
    InvalidArgument,
    ProtocolError,
    TrioStreamError,
)
from .._protocol.codec import CONTROL_MAX_ITEMS, decode_control
from .._protocol.frames import (
    CONTROL,
    CREDIT,
    PUBLISH,
    PUBLISH_HEAD,
    parse_counter,
    parse_publish,
    publish_runs,
)
from .._protocol.framing import PREFIX_BYTES, frame_prefix
from .._protocol.limits import PING_FRAME_MAX_BYTES
from .._protocol.messages import (
    MESSAGE_TYPES,
    ControlMessage,
    EncodedItems,
    Error,
    Goodbye,
    Hello,
    Ping,
    Pong,
    Reply,
    Request,
    UnknownOp,
    decode_message,
    list_reply_body,
)
from .._util import open_own_nursery
from .broker import wrong_key
from .engine import AsyncHandler
from .outbox import control_frame
from .requests import ANSWERED_LATER, REQUEST_HANDLERS, STEPWISE_HANDLERS
from .sender import write_woken
from .wrong_tokens import host_of

if TYPE_CHECKING:
    from .session import Session

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
# slice (PUBLISH frames counted across the read, whatever other frames come between them, and
# CONTROL frames counted as CONTROL_SLICE_WEIGHT each, below); a read of less never yields.
PUBLISH_SLICE_FRAMES: Final = 256
# What a CONTROL frame counts toward a slice, in PUBLISH frames: a request (a ping, a stats)
# costs the server some 20-30 us, a PUBLISH frame's fan-out 1-2. A read of 20,000 pipelined
# pings (256 KiB) was handled in one go, and every other client waited 250-650 ms (a fuzzer's
# canary); counted so, a slice of requests is about 16 of them, under a millisecond.
CONTROL_SLICE_WEIGHT: Final = 16
# ... and one more per this many of its bytes: a large envelope (up to CONTROL_MAX_ITEMS
# items, some 10-25 ms to decode at worst) ends its slice by itself.
CONTROL_SLICE_BYTES: Final = 64
# ... and a slice ends, whatever it counted, once its requests took this long: what a request
# costs is not known from its frame. A subscribe that replays a history of 10,000 frames
# costs 3-11 ms, and 16 of them in a read kept every other client waiting ~0.5 s (victim
# p99 4 to 292 ms, an outside pass); read on the wall clock, as the wait of the others is.
CONTROL_SLICE_S: Final = 0.001
# Pings answered out of turn per read while a request waits on the engine (a slice's worth):
# see Inbound._answer_pings.
PINGS_PER_SCAN: Final = PUBLISH_SLICE_FRAMES // CONTROL_SLICE_WEIGHT
# While a request waits on the engine's I/O (Redis), the reader reads on, answers pings and
# holds the rest, up to this many bytes not acted on yet (plus the read that passes it); then
# it stops reading that client until the requests before are answered.
HELD_WHILE_ANSWERING_BYTES: Final = 256 * 1024


class Inbound:
    """Reads one client's frames (:meth:`run`) and acts on each, in order."""

    # Slots: one per connection, on the path of every frame read.
    __slots__ = (
        "_handlers",
        "_held_bytes",
        "_held_error",
        "_outbox",
        "_parked_space",
        "_pending_request",
        "_publish",
        "_sender",
        "_session",
        "_state",
        "_stopped",
        "_transport",
        "_writers",
        "last_heard",
        "started_at",
    )

    def __init__(self, session: Session) -> None:
        self._session = session
        self._state = state = session.state
        self._transport = session.transport
        self._outbox = session.outbox
        self._writers = session.writers  # the session's own dict: it opens and closes them
        self._sender = session.sender
        self._publish = state.publish  # the broker's, unless several nodes share channels
        # Built on the first request: a connection that only pings (most idle clients) never
        # needs it, and it is ~3 KiB of bound methods and closures per connection.
        self._handlers: dict[type[ControlMessage], Callable[[Any], Any]] | None = None
        # A request answered with I/O (an engine's, several nodes) or a step at a time (a
        # listing, listing.py): awaited by the reader task right after the frame that
        # carried it, so requests stay in order.
        self._pending_request: tuple[AsyncHandler, Request] | None = None
        # What the reading on while it was answered met (the client left, a bad frame):
        # raised once the answer is queued, in the order the frames came.
        self._held_error: TrioStreamError | None = None
        self._held_bytes = 0  # bytes of those frames not acted on yet (the wait's bound)
        # Made on first use: an idle connection should hold nothing it may never need.
        self._parked_space: trio.Event | None = None  # the reader waits for parked bytes to go
        self._stopped = False  # see stop()
        self.last_heard = trio.current_time()  # when the client last sent anything
        self.started_at = math.inf  # when run() started: after the welcome (see run)

    async def run(self, early_frames: list[bytearray]) -> NoReturn:
        """The reader task: dispatch ``early_frames`` (pipelined behind the hello), then every
        read, until cancelled.

        Raises:
            ConnectionClosed: the client left.
            ProtocolError, FrameTooLarge: the client sent what it must not.
        """
        transport = self._transport
        # After the welcome: a later read shows the client got it (resume.py's grace).
        self.started_at = self.last_heard = trio.current_time()
        if not self._stopped:  # admitted before its welcome, it may be closed already
            await self._dispatch_all(early_frames)
        while True:
            frames = await transport.receive_frames()
            if self._stopped:
                await trio.sleep_forever()  # until the session ends its tasks
            self.last_heard = trio.current_time()
            # The senders this batch woke get their turn no later than the next read: the
            # transport yields (or, once the socket is empty, waits for data) before it reads.
            await self._dispatch_all(frames)

    def parked_room(self) -> None:
        """The connection's writers have no more than max_parked_bytes parked: read on."""
        if self._parked_space is not None:
            self._parked_space.set()

    def stop(self) -> None:
        """Act on nothing more this client sent: its connection closes without draining
        (replaced by the client's resume, disconnected, silent).

        At once, whatever await the reader is in: a resume counts what the old connection's
        writers published, and the client sends the rest again on the new one, so nothing
        may be published here after that count (those frames would reach readers twice),
        nor a request acted on that the client may make again there. The reader looks at
        this after every await of a dispatch (_flush_then), after each read and before the
        frames that came with the hello; a slice of PUBLISH frames runs without an await,
        so none is cut in two.
        """
        self._stopped = True

    def refuse_publishes(self) -> None:
        """Publish nothing more this client sends (the server is shutting down; the client
        goes on reading what is buffered for it).

        The frames published before this are acknowledged while the connection drains; one
        taken after its last write would not be, and its writer, told only by
        acknowledgements what the server took, would send it again to the next server: a
        frame twice (a soak saw one or two per graceful restart). Refused, it is not taken
        here, so sent there once. The PUBLISH frames of open publishers are ignored as if
        their channel had gone (no lookup finds a writer), at no cost to those before."""
        self._writers = {}

    def close(self) -> None:
        """Drop every reference that leads back to the session (Session._break_cycles)."""
        self._handlers = None  # bound methods of the session's handlers
        del self._session

    # -- dispatch ----------------------------------------------------------------------------
    async def _dispatch_all(self, frames: list[bytearray]) -> None:
        # Senders woken on the way are written to at the end (write_direct), and before any
        # await: the queue exists only while this task runs without yielding.
        state = self._state
        state.direct_writes = []
        try:
            await self._dispatch_frames(frames)
        finally:
            write_woken(state)

    async def _dispatch_frames(self, frames: list[bytearray]) -> None:
        handlers = _FRAME_HANDLERS
        outbox = self._outbox
        index = 0
        count = len(frames)
        # Work done since this task last let the others run, in PUBLISH frames fanned out (a
        # CONTROL frame counts CONTROL_SLICE_WEIGHT of them)
        published = 0
        # Once a request of this read waits on the engine, ``frames`` becomes a list of our
        # own, scanned for pings, to which each wait adds what it reads; ``counted``: the
        # frames before it are out of _held_bytes (dispatched).
        owned = False
        counted = 0
        slice_started = time.perf_counter()
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
                handler(self, frame)
                if self._stopped:  # a request of this read closed the connection
                    return
                if kind == CONTROL:
                    published += CONTROL_SLICE_WEIGHT + len(frame) // CONTROL_SLICE_BYTES
                    if time.perf_counter() - slice_started > CONTROL_SLICE_S:
                        published = PUBLISH_SLICE_FRAMES
                else:
                    published += 1
                if self._pending_request is not None:
                    if not owned:
                        # The rest of this read, its pings answered now: scanned once, as
                        # each frame read during a wait is (a scan per wait was quadratic
                        # in a read of many requests).
                        frames = self._answer_pings(frames[index:])
                        index = 0
                        owned = True
                        self._held_bytes = sum(map(len, frames))
                    else:
                        self._held_bytes -= sum(map(len, islice(frames, counted, index)))
                    counted = index
                    await self._flush_then(functools.partial(self._answer_pending, frames))
                    count = len(frames)
                    published = 0
                    slice_started = time.perf_counter()
            if published >= PUBLISH_SLICE_FRAMES and index < count:
                await self._flush_then(trio.lowlevel.checkpoint)
                published = 0
                slice_started = time.perf_counter()
            if (
                outbox.control_bytes > CONTROL_HIGH_WATER_BYTES
                or outbox.parked_bytes > outbox.max_parked_bytes
            ):
                await self._flush_then(self._wait_for_space)
                published = 0
                slice_started = time.perf_counter()
        if self._held_error is not None:  # after the frames that came before it
            raise self._held_error

    async def _flush_then(self, step: Callable[[], Awaitable[None]]) -> None:
        """Await ``step`` (other tasks run meanwhile), the senders this read woke written to
        first. ``state.direct_writes`` is a queue only while one dispatch runs without
        yielding (every session's dispatch uses it), so each await of a dispatch comes here;
        and so does the end of a dispatch that stop() ended meanwhile."""
        state = self._state
        write_woken(state)
        await step()
        if self._stopped:
            # Before the queue opens again: it is every connection's, and one left open
            # here would take other connections' wake-ups while this task sleeps.
            await trio.sleep_forever()  # until the session ends its tasks
        state.direct_writes = []

    # -- back-pressure -----------------------------------------------------------------------
    async def _wait_for_space(self) -> None:
        await self._wait_for_control_space()
        await self._wait_for_parked_space()

    async def _wait_for_parked_space(self) -> None:
        """Read nothing more from this client while its writers have more than
        max_parked_bytes parked for full block readers (each writer is bounded by its own
        credit window; this bounds a connection with many held-back writers)."""
        outbox = self._outbox
        while outbox.parked_bytes > outbox.max_parked_bytes:
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
        while self._outbox.control_bytes > CONTROL_HIGH_WATER_BYTES:
            await self._sender.wait_control_written()

    # -- frame handlers ----------------------------------------------------------------------
    def _on_publish(self, frame: bytearray) -> None:
        pub_id, time_s = parse_publish(frame)
        writer = self._writers.get(pub_id)
        if writer is None:
            if not self._session.was_opened(pub_id):
                raise ProtocolError(f"PUBLISH for publisher {pub_id}, which was never opened")
            return  # the channel went away while this frame was in flight
        self._publish(writer, time_s, memoryview(frame)[_PUBLISH_HEAD_BYTES:])

    def _on_publishes(self, frames: list[bytearray], start: int, stop: int) -> int:
        """Publish the PUBLISH frames from ``frames[start]`` on (one batch per writer's run);
        returns the index of the first frame after them."""
        writers = self._writers
        runs, parsed = publish_runs(frames, start, stop)
        for run in runs:
            writer = writers.get(run.pub_id)
            if writer is None:
                if not self._session.was_opened(run.pub_id):
                    raise ProtocolError(
                        f"PUBLISH for publisher {run.pub_id}, which was never opened"
                    )
                continue  # the channel went away while these frames were in flight
            if len(run.times) == 1:
                self._publish(writer, run.times[0], run.payloads[0])
            else:
                self._state.publish_batch(writer, run.times, run.payloads)
        if parsed < stop and frames[parsed][0] == PUBLISH:
            self._on_publish(frames[parsed])  # a truncated frame: refused there
        return parsed

    def _on_credit(self, frame: bytearray) -> None:
        self._outbox.credit(*parse_counter(frame))

    def _on_control(self, frame: bytearray) -> None:
        try:
            message = decode_message(frame, CONTROL_MAX_ITEMS)
        except ProtocolError as exc:
            if isinstance(exc, UnknownOp):
                self._unknown_op(exc)
                return
            # A message only the server sends (a welcome, an item) failed on a field it lacks:
            # "welcome lacks the field 'v'" read as if it would do with that field.
            op = _op_of(frame)
            if op is not None and not self._client_may_send(MESSAGE_TYPES[op]):
                raise ProtocolError(f"{op} is not a message a client may send") from None
            raise
        self._dispatch(message, frame)

    def _client_may_send(self, kind: type[ControlMessage]) -> bool:
        return kind in (Ping, Goodbye, Hello) or kind in (self._handlers or self._handler_table())

    def _unknown_op(self, exc: UnknownOp) -> None:
        # A newer client may probe for ops this server lacks: a request (an integer id)
        # is answered and the connection stays; anything else is a protocol error.
        if exc.id is None:
            raise ProtocolError(str(exc)) from None
        unknown = isinstance(exc.op, str)  # else no op, or not text: not a newer op
        self._outbox.send(
            Error(
                id=exc.id,
                type=InvalidArgument.__name__,
                message=f"{exc}: this server does not know it (protocol version 1)"
                if unknown
                else str(exc),
            )
        )

    def _dispatch(self, message: ControlMessage, frame: bytearray) -> None:
        if type(message) is Ping:
            if len(frame) > PING_FRAME_MAX_BYTES:
                raise ProtocolError(
                    f"a ping of {len(frame)} bytes: a ping frame carries at most "
                    f"{PING_FRAME_MAX_BYTES} bytes, its data included"
                )
            self._outbox.send(Pong(data=message.data))
            return
        if type(message) is Goodbye:
            session = self._session
            self._state.resume.release(session)  # a client that leaves on purpose won't return
            session.peer_left("it said goodbye", on_purpose=True)
            return
        handler = (self._handlers or self._handler_table()).get(type(message))
        if handler is None:
            if type(message) is Hello:
                raise ProtocolError("a second hello: a connection says hello once, first")
            raise ProtocolError(f"{message.OP} is not a message a client may send")
        handler(message)

    def _answer_pings(self, frames: list[bytearray]) -> list[bytearray]:
        """Answer the first pings of ``frames`` now (a request waits on the engine); the
        frames left, in order, pings beyond the first PINGS_PER_SCAN among them.

        A few keep the connection's heartbeat answered while the request waits; all of them,
        a read of 20,000 pings after a request, kept every other connection waiting 0.7 s
        (a review): the rest are answered in their turn, a slice at a time."""
        left: list[bytearray] = []
        answered = 0
        for frame in frames:
            if answered < PINGS_PER_SCAN and self._answered_ping(frame):
                answered += 1
            else:
                left.append(frame)
        return left

    def _answered_ping(self, frame: bytearray) -> bool:
        """Answer ``frame`` if it is a valid ping (read while a request is answered)."""
        if frame[0] != CONTROL or len(frame) > PING_FRAME_MAX_BYTES:
            return False
        try:
            message = decode_message(frame)
        except ProtocolError:
            return False  # refused in its turn, in order
        if type(message) is not Ping:
            return False
        self._outbox.send(Pong(data=message.data))
        return True

    # -- requests ----------------------------------------------------------------------------
    def _handler_table(self) -> dict[type[ControlMessage], Callable[[Any], Any]]:
        state = self._state
        self._handlers = {
            **{kind: self._request(handler) for kind, handler in REQUEST_HANDLERS.items()},
            **state.rpc.handlers(self._session),
        }
        for kind, async_handler in (STEPWISE_HANDLERS | state.engine.request_handlers()).items():
            self._handlers[kind] = self._defer(async_handler)
        return self._handlers

    def _request(self, handler: Callable[[Session, Any], Any]) -> Callable[[Request], None]:
        """``handler`` as a message handler that answers with a reply or an error."""

        def answer(message: Request) -> None:
            try:
                result = handler(self._session, message)
            except ProtocolError:
                # Closes the connection, as from every other path: an admin call reusing the
                # id of a call in flight was answered with an error of this type instead,
                # while the same call sent plainly closed it (a protocol implementer).
                raise
            except (TrioStreamError, ValueError) as exc:
                self._refuse(message, exc)
            else:
                if result is not ANSWERED_LATER:
                    self._reply(message, result)

        return answer

    def _refuse(self, request: Request, exc: TrioStreamError | ValueError) -> None:
        """Answer ``request`` with ``exc``; a wrong channel key is counted as a wrong token
        is (wrong_tokens.py): an address trying keys of a private channel thousands of
        times a second went unseen in the log (an outside audit)."""
        key = getattr(request, "key", None)
        if (
            key is not None
            and isinstance(exc, (AuthError, ChannelNotFound))
            and wrong_key(self._state.broker, getattr(request, "channel", None), key)
        ):
            self._state.wrong_tokens.failed(host_of(self._transport.remote), "channel key")
        self._outbox.send(_error_reply(request.id, exc))

    def _reply(self, request: Request, result: Any) -> None:
        """``request``'s answer, or FrameTooLarge if it would exceed max_frame_bytes: the
        server's frames keep to it too, DATA aside (docs/protocol.md section 2), and a client
        that holds to it closed its connection on a listing of 80 channels at 4 KiB (a
        protocol implementer). Only a listing grows that large (channels, clients): a
        request that made something (a subscription) has a small answer."""
        if isinstance(result, EncodedItems):  # a listing made a step at a time
            body = list_reply_body(request.id, result)
            frame = frame_prefix(len(body)) + body
        else:
            frame = control_frame(Reply(id=request.id, result=result))
        body_bytes = len(frame) - PREFIX_BYTES
        limit = self._state.config.max_frame_bytes
        if body_bytes <= limit:
            self._outbox.queue_control(frame)
            return
        error = FrameTooLarge(
            f"the answer to {request.OP} ({body_bytes} bytes) would exceed max_frame_bytes "
            f"({limit} bytes): raise max_frame_bytes on the server"
        )
        self._outbox.send(_error_reply(request.id, error))

    def _defer(self, handler: AsyncHandler) -> Callable[[Request], None]:
        """``handler`` (it awaits) as a message handler: awaited right after its frame."""

        def defer(message: Request) -> None:
            self._pending_request = (handler, message)

        return defer

    async def _answer_pending(self, held: list[bytearray]) -> None:
        """Answer the request the engine answers with I/O; meanwhile read on into ``held``
        (after the frames of the read that brought the request, not acted on yet).

        The requests stay in order (what came after this one waits for its answer), but
        the connection does not fall silent: a Redis that does not answer for the engine's
        bound (10 s) would otherwise hold back the answers to the client's pings too, and a
        client with a short heartbeat would take the server for gone and reconnect.
        """
        assert self._pending_request is not None
        handler, message = self._pending_request
        self._pending_request = None
        async with open_own_nursery() as nursery:
            nursery.start_soon(self._read_while_answering, held)
            try:
                result = await handler(self._session, message)
            except (TrioStreamError, ValueError) as exc:
                self._refuse(message, exc)
            else:
                # At once, before the nursery's end lets other tasks run: the DATA of a
                # subscription this request made follows its reply (the sender could
                # otherwise write its first frames ahead of it).
                self._reply(message, result)
            nursery.cancel_scope.cancel()

    async def _read_while_answering(self, held: list[bytearray]) -> None:
        """Read the client's frames while a request is answered: pings are answered at once,
        the rest held (in order) for after the answer, up to HELD_WHILE_ANSWERING_BYTES.

        Cancelled once the answer is there (a read is cancelled whole or not at all: the
        transports keep what they have not returned). The error a read meets (the client
        left, a malformed frame) is kept for after the held frames, as reading in order
        would have met it.
        """
        if self._held_error is not None:
            return  # the connection is broken already: nothing more to read
        transport = self._transport
        outbox = self._outbox
        try:
            while (
                self._held_bytes < HELD_WHILE_ANSWERING_BYTES
                and outbox.control_bytes <= CONTROL_HIGH_WATER_BYTES
            ):
                frames = self._answer_pings(await transport.receive_frames())
                if self._stopped:
                    return
                self.last_heard = trio.current_time()
                held += frames
                self._held_bytes += sum(map(len, frames))
        except TrioStreamError as exc:
            self._held_error = exc


# The one dispatch shape, as in the client: frame type -> handler. One table for every
# connection (plain functions, called with the connection's Inbound): a table of bound
# methods per connection cost ~400 bytes each and a cycle to break at its end.
_FRAME_HANDLERS: Final[dict[int, Callable[[Inbound, bytearray], None]]] = {
    PUBLISH: Inbound._on_publish,
    CREDIT: Inbound._on_credit,
    CONTROL: Inbound._on_control,
}


def _error_reply(request_id: int, exc: TrioStreamError | ValueError) -> Error:
    """The ``error`` answer to a request: its type (a ValueError is an InvalidArgument)."""
    name = type(exc).__name__ if isinstance(exc, TrioStreamError) else InvalidArgument.__name__
    return Error(id=request_id, type=name, message=str(exc))


def _op_of(frame: bytearray) -> str | None:
    """The op a CONTROL frame names, if it is a known one (read again on an error path)."""
    try:
        op = decode_control(memoryview(frame)[1:], CONTROL_MAX_ITEMS).get("op")
    except ProtocolError:
        return None
    return op if isinstance(op, str) and op in MESSAGE_TYPES else None
