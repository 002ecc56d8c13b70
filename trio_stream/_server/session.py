"""One client connection on the server: a thin driver of its tasks.

After the handshake (handshake.py, a function), two tasks run: the reader (inbound.py) parses
the client's frames and acts on them at once through two tables (frame type -> handler; for
CONTROL, message type -> handler, see requests.py and the RPC router), and the sender
(sender.py) writes what the connection's :class:`Outbox` batches. The server's watchdog
(idle.py) closes a connection that has been silent for idle_timeout_s and has the outbox end
``block`` readers that have held their writers back longer than their block_timeout
(check_holds).

What stays here: the lifecycle (run, close, cleanup, the name claim), and the few methods the
outbox, the broker, the request handlers and the RPC router call on a connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from .._exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    NameInUse,
    ProtocolError,
    TrioStreamError,
)
from .._protocol.limits import parked_bound
from .._protocol.messages import ControlMessage, Goodbye, Hello
from .._transport.base import EndedMidFrame, FrameTransport
from .._transport.replay import ReplayStream
from .broker import Channel, Writer
from .handshake import Claimed, closing_for, handshake, refuse
from .inbound import Inbound
from .outbox import Outbox
from .resume import Lease
from .sender import Sender
from .state import ServerState

log = logging.getLogger(__name__)

# A resumed session carries the publish counts of its predecessors' publishers (see
# published_frames), at most this many (the newest: pub ids grow along a client's
# connections): a bound on what a client that reconnects for ever leaves (a leak soak: about
# 150 KiB per 1,000 reconnects of one writer, up to this bound).
RESUME_CARRIED_PUBS_MAX: Final = 4096
# After a shutdown's grace: how long the `lost` notices of what a slow reader could not take
# have to go out before the connection closes.
SHUTDOWN_NOTICE_S: Final = 0.5
# A client that resumes a connection this server has no lease of numbers its publishers from
# BASE + a random number below SPREAD: pub ids are u32 on the wire (PUBLISH), and a client
# opens far fewer than 2**31 - BASE publishers on one connection.
UNKNOWN_PREDECESSOR_PUB_BASE: Final = 2**24
UNKNOWN_PREDECESSOR_PUB_SPREAD: Final = 2**30
# A hello whose name is held by a connection that has ended (connection_ended: its client was
# killed and started again, and said hello before the server read the old connection's reset
# or FIN) waits this long for the holder to go, then gets NameInUse. What the wait takes is
# the holder's reader reading the end and its session's cleanup, a few scheduler passes:
# measured on a 2-core machine, a raw client closing (reset or FIN) and saying hello again
# at once, 300 times each: max 0.4 ms idle, 4 ms beside two busy loops, 4 ms with the server
# fanning a flood writer out to 5 readers, 47 ms with both (p99 44 ms). Five times that, with
# room for a slower machine; a holder the kernel has connected is refused at once, so this
# is only the cost of a true conflict that the kernel cannot tell (a WebSocket, not Linux).
NAME_HOLDER_END_WAIT_S: Final = 0.25
# Linux only: FreeBSD has TCP_INFO too, with other state numbers (ESTABLISHED is 4 there),
# which would read every live holder as ended (each real conflict then waits the bound).
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
_TCP_ESTABLISHED: Final = 1  # tcp_info's tcpi_state (Linux include/net/tcp_states.h)


class Session:
    # Slots: with many attributes an instance __dict__ stops sharing its keys and costs
    # ~1.5 KiB per connection. "__dict__" stays, so an attribute added later works.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_close_requested",
        "_closing",
        "_first_pub",
        "_how_it_ended",
        "_left_on_purpose",
        "_next_pub",
        "_nursery",
        "_peer_gone",
        "_reader_scope",
        "client_id",
        "connected_at",
        "deletions_told",
        "inbound",
        "methods",
        "name",
        "outbox",
        "resume_lease",
        "resume_token",
        "sender",
        "state",
        "transport",
        "wake_sender",
        "welcome_deleted",
        "writers",
    )
    # The outbox's wake-up (OutboxOwner.wake_sender) is the sender's own method, not a method
    # here that passes the call on: it runs for nearly every delivery at low rates, and a
    # call more per delivery shows in the server's CPU per frame.
    wake_sender: Callable[[], None]

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
            # other writers (the clients keep all their writers within it).
            max_parked_bytes=parked_bound(limits),
            clock=trio.current_time,
            detach=state.broker.unsubscribe,
            totals=state.buffer_totals,
            end_soon=self._end_over_limit_soon,
        )
        self.writers: dict[int, Writer] = {}
        self.methods: list[str] = []  # RPC names, kept by the router
        self._next_pub = self._first_pub = 1
        self.resume_token: str | None = None  # issued at welcome to a client that resumes
        self.resume_lease: Lease | None = None  # what its previous connection left
        self.deletions_told: dict[str, str] = {}  # (resume.Resumable)
        # Its channels deleted while it was away, for its welcome (handshake.Claimed): its
        # lease's (resume.Lease.deleted) and those nobody could tell it (absent_owners.py).
        self.welcome_deleted: dict[str, str] = {}
        self.sender = Sender(state, transport, self.outbox, self.peer_left)
        self.inbound = Inbound(self)
        self.wake_sender = self.sender.wake
        self._reader_scope = trio.CancelScope()
        # Cancelled by a close() before the hello (a server shutting down): a connection that
        # has not said hello has nothing to drain, and it held the stop for the whole grace.
        self._handshake_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None  # its tasks', while they run
        self._closing = False
        self._peer_gone = False
        self._close_requested = trio.Event()
        # For the log line of its end: a crash, a closed tab and a goodbye all read "client
        # 'x' disconnected", whether or not its session was kept (an operator).
        self._how_it_ended = "the connection was lost"
        # It said goodbye: its channels end for good (a reader away meanwhile is told so,
        # Broker.ended_lately); a lost connection's client comes back and creates them again.
        self._left_on_purpose = False

    # -- OutboxOwner (with wake_sender above) ------------------------------------------------
    def parked_room(self) -> None:
        self.inbound.parked_room()  # once per batch of frames unparked, at most

    def hold_started(self, deadline: float) -> None:
        self.state.watchdog.wake_at(self.client_id, deadline)

    def writer_ended(self, pub_id: int) -> None:
        self.writers.pop(pub_id, None)

    def _end_over_limit_soon(self) -> None:
        """A subscription took this connection over max_buffered_bytes, mid fan-out: the
        readers that hold the most are ended right after it, in a task of this connection.
        Not left to the sender alone: blocked writing a large frame to a client that reads
        nothing, it never got to them, and their frames stayed buffered for good while the
        channel counted them as readers (an operator: 269 MB for a reader of 1 MB frames).
        Before the tasks start (a resume's readers, adopted at the hello), the sender's
        first batch ends them."""
        nursery = self._nursery
        if nursery is None:
            return
        # (Closed to new tasks: the connection ends, and its readers with it.)
        with contextlib.suppress(RuntimeError):
            nursery.start_soon(self._end_over_limit, name="trio_stream session memory bound")

    async def _end_over_limit(self) -> None:
        self.outbox.end_over_limit()

    # -- what the requests and the RPC router use --------------------------------------------
    def send_control(self, message: ControlMessage) -> None:
        self.outbox.send(message)

    def send_control_frame(self, frame: bytes) -> None:
        """Queue a CONTROL frame encoded already (length prefix included)."""
        self.outbox.queue_control(frame)

    def over_memory_bound(self, nbytes: int) -> tuple[int, int] | None:
        """Whether a control message of ``nbytes`` more (a call forwarded to this client, an
        answer to one of its calls) would take the control messages not written to it yet
        over max_buffered_bytes: then those bytes and that bound; None if it fits. One
        message always fits when none is queued, however large (within max_frame_bytes), as
        one frame always fits a block reader. Its subscriptions' buffers are not counted
        here (they have their own bound of that size): a client that reads its connection
        fine but keeps a forgotten subscription full had the answers of its calls dropped,
        calls that had run (a review)."""
        outbox = self.outbox
        queued = outbox.control_bytes
        if queued and queued + nbytes > outbox.max_buffered_bytes:
            return queued, outbox.max_buffered_bytes
        return None

    def open_writer(self, channel: Channel, key: str | None = None) -> Writer:
        writer = self.state.broker.open_publisher(channel, self, self.outbox, self._next_pub, key)
        self._next_pub += 1
        self.writers[writer.pub_id] = writer
        return writer

    def close_writer(self, pub_id: int) -> None:
        writer = self.writers.pop(pub_id, None)
        if writer is not None:
            self.state.broker.close_publisher(writer)
            self.outbox.forget_writer(pub_id)

    def next_pub_id(self) -> int:
        """The id the next publisher of this connection gets (a resumed one goes on there)."""
        return self._next_pub

    def was_opened(self, pub_id: int) -> bool:
        """Whether ``pub_id`` was given to a publisher of this connection (open or closed)."""
        return self._first_pub <= pub_id < self._next_pub

    def published_frames(self) -> dict[int, int]:
        """Frames each publisher has published, by pub id (a resuming client resends the rest).

        This connection's open publishers, and those its predecessors left (the newest
        RESUME_CARRIED_PUBS_MAX): one the client has not reopened here yet (a reopen waiting
        for its retry: a channel not re-created yet, Redis failing), or reopened with an
        answer that may not have reached it (it then asks by the old id again). The
        connection may end before the client knows, and the next one must still tell that
        publisher what was taken, or the client sends its whole window again and frames
        published but not acknowledged arrive twice. Pub ids go on from the predecessor's
        (see _claim_name), so an old publisher's id never names a new one.
        """
        lease = self.resume_lease
        own = {pub_id: writer.frames for pub_id, writer in self.writers.items()}
        if lease is None or not lease.taken:
            return own
        carried = lease.taken
        if len(carried) > RESUME_CARRIED_PUBS_MAX:
            carried = dict(sorted(carried.items())[-RESUME_CARRIED_PUBS_MAX:])
        return carried | own

    def summary(self) -> dict[str, Any]:
        """Who this client is: the head of its record, and what ``$clients`` and a cluster's
        client list say of it."""
        return {
            "id": self.client_id,
            "name": self.name,
            "address": self.transport.remote,
            "transport": self.transport.kind,
            "connected_at": self.connected_at,
        }

    def record(self) -> dict[str, Any]:
        return self.summary() | {
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
            try:
                with self._handshake_scope, trio.fail_after(self.state.limits.handshake_timeout_s):
                    early_frames = await handshake(
                        self.state,
                        self.transport,
                        self.client_id,
                        self._claim_name,
                        functools.partial(self.state.register, self),
                    )
                if self._handshake_scope.cancelled_caught:
                    # As a connection that comes during the stop: closed, no word (its
                    # client takes it as the server gone and reconnects as it would then).
                    raise ConnectionClosed("the server is shutting down")
            except BaseException:
                # A failed handshake ends as any connection does: the client is not connected
                # (if admitted, no longer), its name is free again, a call routed to it
                # meanwhile fails, and a lease its hello took over (with its channels) ends
                # after the resume grace unless the client comes back for it.
                self._cleanup()
                raise
        except trio.TooSlowError:
            log.info("%s: no hello within the handshake timeout", self.transport.remote)
            await refuse(self.transport, ProtocolError("no hello within the handshake timeout"))
            return
        except EndedMidFrame as exc:  # (a peer that only shut down its side still reads)
            log.info("%s: handshake refused: %s", self.transport.remote, exc)
            await refuse(self.transport, ProtocolError(str(exc)))
            return
        except ConnectionClosed:
            with trio.CancelScope(shield=True):
                await self.transport.aclose()
            return
        except TrioStreamError as exc:
            log.info("%s: handshake refused: %s", self.transport.remote, exc)
            await refuse(self.transport, exc)
            return
        log.info("client %r connected from %s", self.name, self.transport.remote)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # Constant names: trio would format one string per task and connection.
                nursery.start_soon(self.sender.run, name="trio_stream session sender")
                nursery.start_soon(self._read, early_frames, name="trio_stream session reader")
                await self._close_requested.wait()
                if not self._peer_gone:
                    # Say goodbye and let what is buffered drain, within the grace period.
                    with trio.move_on_after(self.state.config.shutdown_grace_s) as grace:
                        await self.sender.wait_drained()
                    if (
                        grace.cancelled_caught
                        and not self.state.engine.clustered  # (through Redis: replayed)
                        and self.outbox.drop_buffered_at_shutdown()
                    ):
                        # What the readers could not take in time is dropped: the notices
                        # that count it go out first (a moment more, not another grace).
                        with trio.move_on_after(SHUTDOWN_NOTICE_S):
                            await self.sender.wait_drained()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            kept = self._cleanup()
            with trio.CancelScope(shield=True):
                await self.transport.aclose()
            if kept:
                log.info(
                    "client %r disconnected (%s); its session is kept %g s for it to "
                    "resume (resume_grace_s)",
                    self.name,
                    self._how_it_ended,
                    self.state.resume.grace_s,
                )
            else:
                log.info("client %r disconnected (%s)", self.name, self._how_it_ended)

    async def _read(self, early_frames: list[bytearray]) -> None:
        """The reader task (inbound.py), and what its end means for the connection."""
        try:
            with self._reader_scope:
                await self.inbound.run(early_frames)
        except EndedMidFrame as exc:
            # A truncated frame, as malformed as any: the reason goes to a peer that only
            # shut down its writing side (a client killed while writing gets nothing, as
            # it would for a clean end). INFO, not WARNING: a killed writer does this.
            log.info("%s (%s): %s", self.name, self.transport.remote, str(exc))
            self.close(f"ProtocolError: {exc}")
        except ConnectionClosed:
            self.peer_left()
        except (ProtocolError, FrameTooLarge) as exc:
            # str(exc): a buffered log record must not keep the traceback, and through its
            # frames this session, alive.
            log.warning("%s (%s): %s", self.name, self.transport.remote, str(exc))
            closing_for(self.transport, exc)
            self.close(f"{type(exc).__name__}: {exc}")

    async def _claim_name(self, hello: Hello) -> Claimed:
        """The hello's name (and its resume), or NameInUse (handshake()'s ``claim``).

        A name held by a connection that has just ended waits for it to go, within
        NAME_HOLDER_END_WAIT_S: a client killed and started again at once said hello before
        the server read its old connection's reset, and was refused its own name (an
        outside tester, 5 times in 100 restarts ~10 ms apart). Each try is whole, with no
        await in it: of two hellos with one name, exactly one gets it, and the other its
        NameInUse (a try that fails changes nothing, so the next try starts afresh).
        """
        with trio.move_on_after(NAME_HOLDER_END_WAIT_S):
            while True:
                try:
                    return self._claim_name_now(hello)
                except NameInUse:
                    if not await self.state.wait_name_released(self.name):
                        raise  # its holder is connected: at once
        return self._claim_name_now(hello)  # the holder is still there: its NameInUse

    def _claim_name_now(self, hello: Hello) -> Claimed:
        if hello.resume_token is not None and self.connection_ended():
            # The client gave this attempt up before its hello was read (this server was
            # stopped or stalled past the client's wait) and may be back elsewhere: taking its
            # place back here would take it from the connection it has now (a hung node that
            # woke took a writer off the healthy one: an outside fault-injection run). Checked
            # at each try: the client may give up while the hello waits for a name's holder.
            raise ConnectionClosed("the client left before its hello was read")
        resume = self.state.resume
        if hello.name is not None:
            self.name = hello.name
        elif hello.resume_token is not None:  # a client without a name of its own
            self.name = resume.name_of(hello.resume_token) or self.name
        if hello.resume_token is not None:  # a reconnection: its old place comes back
            self.resume_lease = resume.take_over(hello.resume_token, self, self.state.by_name)
            if self.resume_lease is not None:  # see published_frames
                # On from the predecessor's ids (those it carried are below them too), and
                # from 1: a try before this one (_claim_name) may have set a random start.
                self._first_pub, self._next_pub = 1, self.resume_lease.next_pub
                self.outbox.number_from(self.resume_lease.next_sub)
            else:
                # Its previous connection was to another node (or this server's previous
                # run): ids from a random start, so that none of its old publishers' ids,
                # which its reopens name, ever names one of this connection's (whose counts
                # a later lease of this node answers them with).
                self._next_pub = self._first_pub = UNKNOWN_PREDECESSOR_PUB_BASE + (
                    secrets.randbelow(UNKNOWN_PREDECESSOR_PUB_SPREAD)
                )
        # Claimed with no await since the checks above: of two hellos with one name, exactly
        # one gets it, and the other its NameInUse. A refused try has taken nothing (no lease:
        # take_over leaves one whose name another session holds), so it can be made again.
        self.state.claim_name(self)
        if hello.resume:
            self.resume_token = resume.issue(self, hello.resume_token)
        lease = self.resume_lease
        self.welcome_deleted = lease.deleted if lease is not None else {}
        if hello.resume_token is not None:
            # A reconnection (a new process has no channels to create again): what was
            # deleted while nobody could tell it, here or by another node's news, is in its
            # welcome, and in the next one should this one be lost.
            missed = self.state.absent_owners.take(self.name)
            self.welcome_deleted.update(missed)
            self.deletions_told.update(missed)
        return Claimed(self.name, self.resume_token, self.welcome_deleted, self.deletions_told)

    def close(self, reason: str, *, drain: bool = False, reconnect: bool = True) -> None:
        """Ask the connection to say goodbye, flush and close.

        With ``drain`` (server shutdown) the reader may first take what is buffered for it,
        within the server's grace period; otherwise only control messages are flushed.
        ``reconnect=False`` tells the client not to come back (the goodbye's flag).
        """
        if not drain:
            # Also when closing already (the sender found the socket gone): a resume may
            # count what this connection published, and nothing may follow that count.
            self.inbound.stop()
        else:
            self.inbound.refuse_publishes()
        if drain:  # a server shutting down (after the handshake, the scope has ended)
            self._handshake_scope.cancel()
        if not self._closing:
            self._closing = True
            # The reason's head only ("ProtocolError", "idle for 60 s (idle_timeout_s)"):
            # an error's whole text is logged where it is met, once.
            self._how_it_ended = f"closed by the server: {reason.partition(':')[0]}"
            self.sender.finish(drain)
            self.send_control(Goodbye(reason=reason, reconnect=None if reconnect else False))
            self._close_requested.set()

    def unlist(self) -> None:
        """Leave the server's list of clients now (its end unregisters it otherwise)."""
        self.state.unregister(self)

    def peer_left(self, how: str = "", *, on_purpose: bool = False) -> None:
        """The client has gone (it said goodbye: ``on_purpose``, or the connection broke):
        close now. ``how``, for the log: said when it is not a lost connection."""
        self._left_on_purpose |= on_purpose
        if how and not self._closing:
            self._how_it_ended = how
        self._peer_gone = True
        self._closing = True
        self.sender.finish(drain=False)
        self._close_requested.set()

    def _cleanup(self) -> bool:
        """Unregister; True if its lease lives on (its session kept for a resume)."""
        broker = self.state.broker
        resume = self.state.resume
        # With a lease, its readers stay attached, kept for the client's resume (kept.py).
        lease_lives = resume.session_ended(self, self.published_frames())
        if not lease_lives:
            for reader in list(self.outbox.readers.values()):
                broker.unsubscribe(reader)
            resume.end_kept_of(self)
        for writer in list(self.writers.values()):
            broker.close_publisher(writer)
        self.writers.clear()
        self.state.rpc.session_closed(self)
        if not lease_lives:  # else its channels are kept for a while too
            for channel in list(broker.owned_by(self.client_id)):
                if not channel.keep:  # the engine's: a take-over elsewhere may have come first
                    self.state.engine.end_orphan(
                        channel,
                        f"channel {channel.name!r} ended with its owner",
                        self._left_on_purpose,
                    )
        self.state.unregister(self)
        self._break_cycles()
        return lease_lives

    def _break_cycles(self) -> None:
        """Drop every reference that leads back here, so that reference counting alone frees
        this session once its tasks end: the server freezes long-lived objects out of the
        garbage collector's sight (gc_policy.py), and a frozen cycle is never collected."""
        self.inbound.close()  # its handler tables and it refer to us
        self.sender.close()  # its peer_left is ours
        self.outbox.close()  # it refers to us (its owner), and its readers to it

    # -- called by a hello that wants this client's name (state.py) --------------------------
    def connection_ended(self) -> bool | None:
        """Whether this host has the client's end of the connection already (its FIN or
        reset), which the reader task may not have read yet: True; False: connected as far
        as this host knows; None: it cannot tell (a WebSocket, not Linux).

        The kernel's TCP state, looked at: no read, and no close of the session from here.
        What the client sent before its end is still its reader's to act on (a killed
        writer's last frames are published, as when no hello waits); the hello waits for the
        reader to get to the end, a few scheduler passes (NAME_HOLDER_END_WAIT_S)."""
        sock = _tcp_socket_of(self.transport)
        if sock is None or _TCP_INFO is None:
            return None
        try:
            # struct tcp_info starts with tcpi_state (one byte).
            state = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
        except OSError:  # closed already
            return True
        return state != _TCP_ESTABLISHED

    # -- called by the server's watchdog (idle.py) -------------------------------------------
    def heard_at(self) -> float:
        """When the server last read anything from this client (trio clock)."""
        return self.inbound.last_heard

    def heard_after_welcome(self) -> float | None:
        """When the server last read anything from this client after its welcome went out
        (trio clock); None: nothing yet (the welcome may not have reached it)."""
        inbound = self.inbound
        return inbound.last_heard if inbound.last_heard > inbound.started_at else None

    def close_idle(self, idle_s: float) -> None:
        self.close(f"idle for {idle_s:g} s (idle_timeout_s): send ping to stay connected")
        self._reader_scope.cancel()  # hear nothing more from it

    def check_holds(self, now: float) -> float:
        """Show and end block readers by how long they have held writers; next deadline."""
        return self.outbox.check_holds(now)


def _tcp_socket_of(transport: FrameTransport) -> trio.socket.SocketType | None:
    """The TCP socket under ``transport`` (plain, TLS, or a WebSocket over either); None for
    a test's stand-in or a trio-websocket without the attribute."""
    stream = getattr(transport, "stream", None)
    if stream is None:
        # A WebSocket: trio-websocket keeps its stream in a private attribute (taken for
        # direct writes too, websocket._DIRECT_NEEDS). Without it a live browser holding a
        # name cost every conflicting hello NAME_HOLDER_END_WAIT_S before its refusal.
        stream = getattr(getattr(transport, "connection", None), "_stream", None)
        if isinstance(stream, ReplayStream):  # the HTTP port's (the request head read first)
            stream = stream.stream
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None
