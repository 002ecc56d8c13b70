"""The trio client: ``async with open_client(url, name=...) as client``.

One reader task parses what the server sends and routes it (replies to waiting requests, DATA
to subscriptions, acknowledgements to publishers); one sender task is the only writer to the
socket and coalesces whatever is queued into one write, so a publisher that sends many small
frames costs few syscalls and never a round trip per frame.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import itertools
import logging
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, SupportsFloat, TypeVar

import trio

from . import _files
from ._async_context import AsyncContext as AsyncContext  # (the managers' run-time annotations)
from ._async_context import async_context
from ._client_constants import LEAVE_TIMEOUT_S as LEAVE_TIMEOUT_S
from ._client_constants import OUTGOING_HIGH_WATER_BYTES as OUTGOING_HIGH_WATER_BYTES
from ._client_constants import POLICIES as POLICIES
from ._client_port import ClientPort, PendingRequest
from ._exceptions import (
    ChannelExists,
    ChannelNotFound,
    ClusterUnavailable,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    LimitExceeded,
    NameInUse,
    ProtocolError,
    TrioStreamError,
    error_from_wire,
)
from ._files import DEFAULT_MAX_FILE_BYTES, FileEvent, FileService
from ._matching import DEFAULT_MAX_CHANNELS, PatternSubscription, check_pattern
from ._protocol.array_view import View
from ._protocol.bytes_like import BytesLike
from ._protocol.codec import EncodedPayload, decode_control, encode_control, encode_payload
from ._protocol.compression import compressor
from ._protocol.frames import (
    CONTROL,
    DATA,
    DATA_OVER_LIMIT_BYTES,
    PUB_ACK,
    DataRun,
    data_sub_id,
    parse_counter,
    take_data_runs,
)
from ._protocol.framing import frame_prefix
from ._protocol.limits import (
    DEFAULT_PAYLOAD_LIMITS,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Limits,
    PayloadLimits,
)
from ._protocol.messages import (
    ChannelDeleted,
    ControlMessage,
    CreateChannel,
    DeleteChannel,
    Error,
    GetStats,
    Goodbye,
    Hello,
    ListChannels,
    ListClients,
    Lost,
    OpenPublisher,
    Ping,
    Pong,
    PubEnd,
    Readers,
    Reply,
    Request,
    Restored,
    SubEnd,
    Subscribe,
    UnknownOp,
    Welcome,
    check_fields,
    check_message,
    decode_message,
    encode_message,
)
from ._publisher import YIELD_EVERY_BYTES as YIELD_EVERY_BYTES
from ._publisher import Publisher as Publisher
from ._publisher import new_writer_key
from ._reconnect import STATES, Backoff, Reconnect, State
from ._records import (
    ChannelInfo,
    ClientInfo,
    Position,
    ServerStats,
    answer_from_wire,
    list_from_answer,
)
from ._seconds import check_timeout, positive_seconds
from ._subscription import YIELD_EVERY_MESSAGES as YIELD_EVERY_MESSAGES
from ._subscription import Subscription as Subscription
from ._transport import sniff
from ._transport.base import FrameTransport, WrongServer
from ._transport.connect import connect, split_url, was_refused
from ._transport.tcp import COALESCE_MAX_PIECE, StreamTransport
from ._util import fresh, open_own_nursery, unwrap_single_exception

if TYPE_CHECKING:
    from ._rpc import RpcProxy

log = logging.getLogger(__name__)


SEND_BATCH_BYTES: Final = 1 * 2**20
CONNECT_TIMEOUT_S: Final = 10.0
# The shortest a reconnect attempt is cut to by the lease it races (see _attempt_bound): a
# loaded server's welcome takes a few hundred ms at most.
MIN_RECONNECT_ATTEMPT_S: Final = 1.0
SILENCE_REASON: Final = "server silent"  # the reason of a loss the heartbeat noticed
# Liveness (docs/protocol.md section 2): the client pings at least every HEARTBEAT_S (and every
# third of the server's idle_timeout_s), and declares the server gone once nothing at all has
# come from it for SILENT_HEARTBEATS heartbeats (at least MIN_SILENCE_S): 15 s by default.
HEARTBEAT_S: Final = 5.0
SILENT_HEARTBEATS: Final = 3
MIN_SILENCE_S: Final = 2.0
# A publisher or subscription whose channel is missing after a reconnect (its owner has not
# re-created it yet) asks again after RETRY_INITIAL_S, doubling up to RETRY_MAX_S.
RETRY_INITIAL_S: Final = 0.05
RETRY_MAX_S: Final = 1.0
# subscribe(wait_channel=True) looks again this often for a channel $channels does not
# announce (a private one; on several nodes, one created on another node).
CHANNEL_POLL_S: Final = 1.0
# A wait_channel subscribe still waiting after this long says so, once, with the names of
# channels that exist and look like the one it waits for (a typo waited silently for good).
WAIT_CHANNEL_WARN_S: Final = 5.0
# What it logs (the CLI says it in its own words, and drops this record: trio_stream.cli).
STILL_WAITING_MESSAGE: Final = (
    "still waiting for channel %r to be created (nobody has created it yet; a private channel "
    "also needs its key)%s"
)
# A channel name with one of these is likely meant as a pattern (Redis's PSUBSCRIBE glob,
# NATS's wildcards); they are valid in names, so only a missing channel's error says it.
PATTERN_CHARACTERS: Final = frozenset("*>?[")
# A request safe to repeat (_request's repeat_if_lost) is sent again after this many
# connections lost it at most.
MAX_REPEATS: Final = 3
# The shortest heartbeat a client takes: each one is a ping and a pong.
MIN_HEARTBEAT_S: Final = 0.01
# A reconnecting client says each new reason it meets a wrong server for at WARNING, up to
# this many; then, and for a reason said before, INFO.
MAX_WRONG_SERVER_WARNINGS: Final = 16

T = TypeVar("T")

# How the program that connects waits for a server that is not up yet, named in the error
# of a first connection that found nothing listening: a program started together with its
# server (one compose file, a boot script) meets that error whenever the server is slower to
# start. The SyncClient and the CLI set their own way of saying it.
WAITING_ADVICE: contextvars.ContextVar[str] = contextvars.ContextVar(
    "WAITING_ADVICE",
    default="a program started together with its server waits for it with "
    "open_client(..., wait_for_server=SECONDS)",
)


class Client:
    """A connection to a trio_stream server. Make one with :func:`open_client`.

    With reconnection on (the default), a lost connection is not the end: the client moves to
    ``state == "reconnecting"``, tries its URLs again with a jittered backoff, and once back
    re-creates its channels, reopens its publishers, resumes its subscriptions from their last
    position and re-exposes its RPC objects, before it is ``"open"`` again (docs/protocol.md,
    Resume). Requests made meanwhile wait, within their own timeout; requests that were in
    flight fail with ConnectionClosed (they may have run on the server). The loss and the
    return are each logged once at WARNING, unless ``announce_reconnects`` is set False.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        name: str | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        heartbeat: float | None = HEARTBEAT_S,
        reconnect: Reconnect | None = None,
        payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
        wait_for_server: float = 0.0,
    ) -> None:
        self.payload_limits = payload_limits  # what this client's payload decoder accepts
        self._wait_for_server_s = wait_for_server
        self._urls = urls
        self._url_index = 0
        self._welcomed_by: set[str] = set()  # the URLs a server welcomed this client at
        self._subscribes_repeating = 0  # lost with a connection, to be sent again (_request)
        self._restored_held = -1  # the connection whose `restored` waits for those repeats
        self._wanted_name = name
        self._token = token
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        # How long a publisher's window waits after a reconnect for the readers its channel
        # had (Publisher._hold_for_readers): a reader's client on the same backoff is back
        # within the longest wait, and its resubscription finds a re-created channel within
        # RETRY_MAX_S more.
        self._readers_grace_s = 0.0 if reconnect is None else reconnect.maximum + RETRY_MAX_S
        self._transport: FrameTransport | None = None
        self._nursery: trio.Nursery | None = None
        self._heartbeat_s = heartbeat
        self._heard = False  # something arrived since the last heartbeat (set per read batch)
        self._io_scope = trio.CancelScope()  # the reader, sender and heartbeat tasks
        self.name = ""
        self.client_id = 0
        self.server = ""
        self.url = urls[0]
        self.limits = Limits()
        self.reconnects = 0  # connections made after the first
        self._state: State = "connecting"
        self._state_changed = trio.Event()
        # A WARNING line when the connection is lost and when it is back: a trio writer whose
        # server restarted looked healthy, silent, while its SyncClient and CLI peers said it.
        # Their owners say it in their own words, and turn this off.
        self.announce_reconnects = True
        self._lost_at: float | None = None  # since when "reconnecting" was announced
        self._connected = False  # a transport whose handshake is done and not lost yet
        self._resume_token: str | None = None
        # The welcomes' ``run`` (protocol.md 2): this connection's, and that of the last one
        # that reached "open" (restored): the reconnect line says whether the server kept
        # running ("" from an older server). Not the last welcome's: one from a restarted
        # server, cut before its restore, is not the server the client's state is from.
        self._server_run = ""
        self._opened_run = ""
        self._reconnected_how = ""  # _which_server() at the last "open"
        self._lost: ConnectionClosed | None = None  # why the last connection ended
        self._generation = 0  # connections made: a retry belongs to one of them
        self._ids = itertools.count(1)
        self._replies: dict[int, PendingRequest] = {}
        self._stalled_leave: PendingRequest | None = None  # see _leave
        self._subscriptions: dict[int, Subscription] = {}  # by the current connection's id
        self._publishers: dict[int, Publisher] = {}
        self._resuming_subs: set[Subscription] = set()  # waiting for the next connection
        self._resuming_pubs: set[Publisher] = set()
        self._owned: dict[str, dict[str, Any]] = {}  # channels we created: their options
        # publish()'s publishers, by channel and key: a publish with another key (a wrong
        # one) must not ride on the publisher the right key opened (it did, and was sent).
        self._shared_publishers: dict[tuple[str, str | None], Publisher] = {}
        self._out: list[BytesLike] = []
        self._out_bytes = 0
        self._out_wake = trio.Event()
        self._out_space = trio.Event()
        self._out_space.set()
        # Set while the sender waits idle on plain TCP: Publisher.send then writes a frame
        # itself (no sender-task hop); _wrote_at is when a write last went out either way.
        self._write_now: Callable[[list[BytesLike]], list[BytesLike]] | None = None
        self._wrote_at = -math.inf
        self._closed: ConnectionClosed | None = None
        self._closing = False
        self._closed_by_us: ConnectionClosed | None = None  # aclose(): what waiters get
        self._goodbye: str | None = None
        # One dispatch shape with the server's Session: frame type -> handler, and for CONTROL
        # messages, message type -> handler.
        self._frame_handlers: dict[int, Callable[[bytearray], None]] = {
            DATA: self._on_data,
            PUB_ACK: self._on_pub_ack,
            CONTROL: self._on_control,
        }
        self._handlers: dict[type[ControlMessage], Callable[[Any], None]] = {
            Reply: self._on_reply,
            Error: self._on_error,
            Readers: self._on_readers,
            SubEnd: self._on_sub_end,
            Lost: self._on_lost,
            PubEnd: self._on_pub_end,
            Goodbye: self._on_goodbye,
            Pong: lambda msg: None,
            ChannelDeleted: self._on_channel_deleted,
        }
        from ._rpc import RpcEndpoint  # here, not at the top: _rpc imports this module

        self._rpc = RpcEndpoint(self._port())

    def _port(self) -> ClientPort:
        return _Port(self)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """``"connecting"``, ``"open"``, ``"reconnecting"`` or ``"closed"``."""
        return self._state

    def _set_state(self, state: State) -> None:
        if state != self._state:
            if state == "open":
                self._reconnected_how = self._which_server()
                self._opened_run = self._server_run
            log.info("client %r: %s -> %s", self.name, self._state, state)
            if self.announce_reconnects:
                self._announce(self._state, state)
            self._state = state
            self._state_changed.set()
            self._state_changed = trio.Event()

    def _announce(self, old: State, new: State) -> None:
        if old == "open" and new == "reconnecting":
            self._lost_at = trio.current_time()
            log.warning(
                "client %r: the connection to %s is lost; reconnecting", self.name, self.url
            )
        elif old == "reconnecting" and new == "open" and self._lost_at is not None:
            # (Only after a loss said: turned on during an outage, it has no start to tell.)
            log.warning(
                "client %r: reconnected to %s after %.1f s%s",
                self.name,
                self.url,
                trio.current_time() - self._lost_at,
                self._reconnected_how,
            )
            self._lost_at = None

    def _which_server(self) -> str:
        """What the welcomes say of the server, for a reconnect line: the same run as the
        last connection that was open (it kept running: what it kept for this client is
        back) or a new one (it restarted, or another node of several took over); "" when a
        welcome had no ``run``."""
        before, now = self._opened_run, self._server_run
        if not before or not now:
            return ""
        if before == now:
            return " (the same server, still running)"
        return " (a new server run: it restarted, or another node took over)"

    async def wait_state(self, *states: State) -> State:
        """Wait until the client is in one of ``states``; returns the state it is in.

        ``await client.wait_state("reconnecting")`` returns when the connection is lost;
        ``await client.wait_state("open", "closed")`` when it is back (or gave up). To follow
        every change, loop: ``while True: s = await client.wait_state_change(s)``.

        Raises:
            InvalidArgument: no states (it would wait for ever), a name that is not a state.
            ConnectionClosed: the client is closed (for good: it gave up, or was closed),
                and "closed" is not among ``states`` (it waited for ever, or its timeout).
        """
        check_states(states)
        while self._state not in states:
            self._check_open()
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()
        return self._state

    async def wait_state_change(self, old: State) -> State:
        """Wait until the state is not ``old`` any more; returns the new state."""
        while self._state == old:
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()
        return self._state

    @property
    def closed(self) -> bool:
        """Closed: left its ``async with``, or gave up reconnecting (``state`` "closed")."""
        return self._closed is not None

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionClosed(str(self._closed), self._closed.reason)

    async def wait_usable(self) -> None:
        """Return once requests can go out (at once while open; after a reconnect otherwise).

        Raises:
            ConnectionClosed: the client is closed, or gave up reconnecting.
        """
        while self._state != "open":
            self._check_open()
            await self._state_changed.wait()
        self._check_open()

    # -- connection ----------------------------------------------------------------------------
    async def _handshake(self, transport: FrameTransport) -> tuple[Welcome, list[bytearray]]:
        """Send the hello; the welcome and the frames that came behind it (nothing of them
        taken yet: see _welcomed)."""
        # Only a name the user chose: a server-given one ("client-7") is asked back through
        # the resume token, which only the server that gave it knows; a restarted server
        # counts its unnamed clients from 1 again and may have given it to another client.
        hello = encode_message(
            Hello(
                v=PROTOCOL_VERSION,
                name=self._wanted_name,
                token=self._token,
                resume=self._reconnect is not None,
                resume_token=self._resume_token,
            )
        )
        await transport.send([frame_prefix(len(hello)), hello])
        # tcp:// on an HTTP port gets "HTTP/1.1 400 ...": name the port, not a huge frame.
        first = await sniff.peek(getattr(transport, "stream", None))
        if first and (wrong := sniff.describe_http_reply(f"tcp://{transport.remote}", first)):
            raise WrongServer(wrong)
        try:
            frames = await transport.receive_frames()
        except (FrameTooLarge, ProtocolError):
            # TLS: the stream could not be peeked; its first bytes tell an HTTP answer
            # (tcps:// on an HTTPS port) from a frame "of 1213486160 bytes".
            first = getattr(transport, "first_bytes", None)
            if first and (wrong := sniff.describe_http_reply(f"tcps://{transport.remote}", first)):
                raise WrongServer(wrong) from None
            raise
        except ConnectionClosed as exc:
            # A server refuses with an error first: a peer that just closes is most often
            # another service on that port (SSH, a web server, a proxy's dead end).
            raise ConnectionClosed(
                f"{exc} before any welcome (is {transport.remote} a trio_stream server's port? "
                "one with TLS needs tcps:// or wss://)"
            ) from None
        reply = decode_message(frames[0])
        if isinstance(reply, Error):
            raise error_from_wire(reply.type, reply.message)
        if not isinstance(reply, Welcome):
            raise ProtocolError(f"expected welcome, got {reply.OP}")
        return reply, frames[1:]

    def _welcomed(self, transport: FrameTransport, reply: Welcome, frames: list[bytearray]) -> None:
        """Take the connection that ``reply`` welcomed (and the frames behind it)."""
        self.name = reply.name
        self.client_id = reply.client_id
        self.server = reply.server
        self._server_run = reply.run
        self._resume_token = reply.resume_token
        self.limits = Limits.from_wire(reply.limits)
        max_frame = getattr(transport, "max_frame_bytes", None)
        if max_frame is not None:
            # A DATA frame carries a payload of up to the limit under a longer head.
            transport.max_frame_bytes = (  # type: ignore[attr-defined]
                self.limits.max_frame_bytes + DATA_OVER_LIMIT_BYTES
            )
        self._transport = transport
        self._goodbye = None
        self._connected = True
        self._generation += 1
        self._heard = True
        # Before _restore, which creates our channels again: not those that another client
        # deleted while we were away.
        for channel, reason in (reply.channels_deleted or {}).items():
            if self._owned.pop(channel, None) is not None:
                log.info("client %r: %s while it was away: not created again", self.name, reason)
        self._take(frames)

    async def _connect_once(
        self,
        on_open: Callable[[], None],
        give_up_at: float = math.inf,
        attempt_s: float = math.inf,
    ) -> None:
        """Connect to the next URL, shake hands, call ``on_open`` and run until the loss;
        an attempt still without its welcome at ``give_up_at`` (reconnect's give_up_after)
        or after ``attempt_s`` (when shorter than connect_timeout) ends there.

        Raises:
            ConnectionClosed: no connection or no welcome (within connect_timeout).
            AuthError, ProtocolError, NameInUse, InvalidArgument, ClusterUnavailable: refused
                at hello.
        """
        url = self._urls[self._url_index % len(self._urls)]
        self._url_index += 1
        # connect_timeout bounds the whole way to the welcome: the TCP connect, a WebSocket's
        # upgrade (a peer that accepts and never answers it would otherwise hold the client
        # for good: trio-websocket's own bound did not end its wait) and the hello.
        timeout_s = min(self._connect_timeout, attempt_s)
        deadline = min(trio.current_time() + timeout_s, give_up_at)
        if url in self._welcomed_by:
            # A server that welcomed us there before: its port is right, the way is not
            # (a one-way outage said "is it a trio_stream server's port?": a network tester).
            why = "the server, or the way back from it, does not answer"
        else:
            why = (
                "is it a trio_stream server's port? another service, Redis for one, may "
                "accept and never answer"
            )
        clock = trio.lowlevel.current_clock()
        if type(clock).__name__ != "SystemClock":
            # A test's trio.testing.MockClock with autojump_threshold=0 jumps past the
            # timeout while a server in another process answers: the line blamed the port
            # (a trio developer's tests).
            why += (
                f"; or this trio run's clock, a {type(clock).__name__}, jumped past the "
                "timeout: an autojump_threshold under the server's answer time skips it "
                "(a server in the same trio run, or a threshold of a second or more, does not)"
            )
        waited = f"{self._connect_timeout}"
        if attempt_s < self._connect_timeout:
            waited = f"{timeout_s:.1f}"
            why = (
                "cut short of connect_timeout to try the other URLs while the server keeps "
                "this client's place"
            )
        too_late = f"no welcome from {url} within {waited} s ({why})"
        with trio.CancelScope(deadline=deadline) as opening:
            async with connect(
                url, max_frame_bytes=MAX_FRAME_BYTES, ssl_context=self._ssl_context
            ) as transport:
                welcome, behind = await self._handshake(transport)
                if opening.cancel_called:
                    # The deadline passed in the same turn as the welcome came: a timeout
                    # all the same, decided before anything of the welcome is taken (the
                    # scope's cancel cannot be undone, and would hit the connection's first
                    # checkpoint). The server keeps the lease; the next try resumes it.
                    raise ConnectionClosed(too_late)
                opening.deadline = math.inf
                self._welcomed(transport, welcome, behind)
                self._welcomed_by.add(url)
                self.url = url
                self._io_scope = trio.CancelScope()
                on_open()
                await self._run_io()
        if opening.cancelled_caught:
            raise ConnectionClosed(too_late)

    async def _supervise(self, task_status: trio.TaskStatus[None]) -> None:
        """The connection's life: the first connection, then reconnections until closed.

        The first connection fails fast (``open_client`` raises, after one try of each URL);
        after that a lost connection is retried with backoff while ``reconnect`` allows.
        Authentication and protocol errors are final: trying again would only repeat them.
        """
        try:
            await self._first_connection(task_status)
            while self._reconnect is not None and not self._closing:
                if not await self._reconnect_loop(self._reconnect):
                    break
            self._fail(self._lost_error())
        finally:
            # Cancelled from outside (the nursery around open_client) or done: nothing more
            # will be sent, so nobody may keep waiting for an answer.
            self._fail(ConnectionClosed("the client is closed"))

    async def _first_connection(self, task_status: trio.TaskStatus[None]) -> None:
        errors: list[ConnectionClosed] = []

        def on_open() -> None:
            self._set_state("open")
            task_status.started()

        # wait_for_server: a script started with its server (at boot, by one compose file)
        # tries again while no server answers, with the reconnect backoff; a server that
        # answers and refuses (token, name, protocol, a wrong port's other service) is final.
        waiting_until = trio.current_time() + self._wait_for_server_s
        backoff = Backoff(Reconnect())
        said = False
        while True:
            errors.clear()
            for _ in self._urls:
                try:
                    await self._connect_once(on_open)
                    return
                except ConnectionClosed as exc:
                    errors.append(exc)
            unanswered = all(type(error) is ConnectionClosed for error in errors)
            left = waiting_until - trio.current_time()
            if not unanswered or left <= 0:
                break
            if not said:
                said = True
                who = f"client {self._wanted_name!r}: " if self._wanted_name else ""
                log.warning(
                    "%sno server answers yet (%s); trying again for up to %g s",
                    who,
                    errors[-1],
                    self._wait_for_server_s,
                )
            # The last try at the end of the wait: a server up just before it is found.
            await trio.sleep(min(backoff.next_wait(), left))
        if len(errors) == 1:
            error = errors[0]
            if self._wait_for_server_s == 0 and was_refused(error):
                advised = ConnectionClosed(f"{error}; {WAITING_ADVICE.get()}")
                advised.__context__ = error.__context__  # (the OSError, as cannot_connect's)
                raise advised.with_traceback(error.__traceback__) from None
            if type(error) is not ConnectionClosed:
                # An internal kind (WrongServer, EndedMidFrame: the reconnect loop tells them
                # apart) reaches the caller as what it catches: a traceback's last line named
                # "trio_stream._transport.base.WrongServer", which no script can import.
                raise ConnectionClosed(str(error), error.reason).with_traceback(
                    error.__traceback__
                ) from error.__cause__
            raise error
        raise ConnectionClosed("no server answered: " + "; ".join(str(e) for e in errors))

    def _lost_error(self) -> ConnectionClosed:
        return self._lost or ConnectionClosed("the connection was lost")

    async def _reconnect_loop(self, policy: Reconnect) -> bool:
        """Try the URLs in turn until one answers, then restore everything and run it.

        Returns:
            True once a new connection ran (and was lost again); False: gave up.
        """
        backoff = Backoff(policy)
        started_at = trio.current_time()
        give_up_at = math.inf
        if policy.give_up_after is not None:
            give_up_at = started_at + policy.give_up_after
        # The server just lost comes first, unless it went silent: a cut to a healthy server
        # is the common case, and it holds this client's place (on one server, its only
        # copy); a silent one is the one known not to answer (a stopped node, a partition:
        # 5 s lost to it first, a review), so the rotation goes on past it. The lease's end
        # is an estimate: the server starts it when it notices the loss, about now for a
        # cut, earlier than this for a silence.
        lost = self._lost
        if self.url in self._urls and not (lost is not None and lost.reason == SILENCE_REASON):
            self._url_index = self._urls.index(self.url)
        lease_ends_at = started_at + self.limits.resume_grace_s

        def on_open() -> None:
            self.reconnects += 1
            if self._nursery is not None:
                self._nursery.start_soon(self._restore)

        # WrongServer reasons logged at WARNING, each once: URLs tried in turn alternate
        # theirs. Bounded, for reasons that would differ at every try (then INFO for good).
        said_wrong: set[str] = set()
        while not self._closing:
            self._set_state("reconnecting")
            wait = backoff.next_wait()
            if policy.give_up_after is not None:
                left = give_up_at - trio.current_time()
                if left <= 0:
                    log.warning("client %r gives up reconnecting", self.name)
                    # What every later call raises: it said only how the connection ended
                    # ("the peer closed the connection"), not that the client stopped trying.
                    lost = self._lost_error()
                    self._lost = ConnectionClosed(
                        f"{lost}; the client gave up reconnecting after "
                        f"{policy.give_up_after:g} s (Reconnect.give_up_after): open a new "
                        "client once the server is back",
                        lost.reason,  # the server's own words, if it said any
                    )
                    return False
                wait = min(wait, left)
            await trio.sleep(wait)
            try:
                await self._connect_once(
                    on_open, give_up_at, self._attempt_bound(lease_ends_at - trio.current_time())
                )
                return True
            except WrongServer as exc:
                # Tried again (the operator may put the right certificate or port back), but
                # said where it shows: each new reason once at WARNING.
                level = logging.INFO
                if str(exc) not in said_wrong and len(said_wrong) < MAX_WRONG_SERVER_WARNINGS:
                    level = logging.WARNING
                    said_wrong.add(str(exc))
                log.log(level, "client %r cannot reconnect yet: %s", self.name, exc)
            except (ConnectionClosed, NameInUse, ClusterUnavailable, LimitExceeded) as exc:
                # ClusterUnavailable: the node's Redis is down; it comes back, so try again.
                # LimitExceeded: the server holds its most connections (from this address);
                # others close (it escaped here, and closed the client's nursery with it).
                log.info("client %r: reconnect attempt failed: %s", self.name, exc)
            except TrioStreamError as exc:
                # AuthError, ProtocolError, InvalidArgument, or a refusal of a type a newer
                # server has: final, said (nothing else may escape the client's task).
                log.error("client %r cannot reconnect: %s", self.name, exc)
                self._lost = ConnectionClosed(f"reconnecting failed for good: {exc}")
                return False
        return False

    def _attempt_bound(self, lease_left_s: float) -> float:
        """How long one reconnect attempt may wait for its welcome besides connect_timeout.

        With several URLs, while the server still keeps this client's place: half of what is
        left of it (never under MIN_RECONNECT_ATTEMPT_S), so that one URL that accepts and
        never answers (a hung node, a frozen proxy) leaves time for the others. At the
        default connect_timeout of 10 s, equal to the default resume_grace_s, one such URL
        tried first used the whole lease up: the channels ended and a writer's acknowledged
        values went to nobody (an outside fault-injection run). One URL keeps connect_timeout:
        a slow server is better waited for than cut off each time.
        """
        if len(set(self._urls)) < 2 or lease_left_s <= 0:
            return math.inf
        return max(MIN_RECONNECT_ATTEMPT_S, lease_left_s / 2)

    async def _restore(self) -> None:
        """After a reconnect: channels, RPC, publishers, subscriptions; then "open".

        Channels first (our publishers and readers may need them), publishers before
        subscriptions. Publishers and subscriptions are restored concurrently, one request
        each; one whose channel is missing (its owner has not re-created it yet) is retried
        in the background while the client is already "open".
        """
        for channel, options in list(self._owned.items()):
            try:
                if not await self._recreate(channel, options):
                    recreate = functools.partial(self._recreate, channel, options)
                    self._spawn_retry(recreate, f"re-create {channel[:80]}")
            except ConnectionClosed:
                return
        try:
            self._rpc.reexpose()
        except ConnectionClosed:
            return
        attempts: list[tuple[Callable[[], Awaitable[bool]], str]] = [
            (pub._reopen, f"reopen publisher {pub.channel[:80]}") for pub in self._resuming_pubs
        ]
        attempts += [
            (sub._resubscribe, f"resubscribe {sub.channel[:80]}") for sub in self._resuming_subs
        ]
        resubscriptions = len(attempts) - len(self._resuming_pubs)
        generation = self._generation
        all_done = True  # every resubscription answered at its first try

        async def first_try(
            attempt: Callable[[], Awaitable[bool]], what: str, resubscribes: bool
        ) -> None:
            nonlocal all_done
            try:
                done = await attempt()
            except ConnectionClosed:
                all_done = False
                return
            if not done:
                # (a publisher's reopen retried for its missing channel holds nothing back)
                all_done = all_done and not resubscribes
                self._spawn_retry(attempt, what)

        async with trio.open_nursery() as nursery:
            for index, (attempt, what) in enumerate(attempts):
                resubscribes = index >= len(attempts) - resubscriptions
                nursery.start_soon(first_try, attempt, what, resubscribes)
        if not self._connected or self._generation != generation:
            return
        if all_done and self._subscribes_repeating:
            self._restored_held = generation  # sent once the repeats are answered (_request)
        elif all_done:
            # Every resubscription is answered: the server ends the subscriptions it kept
            # for us that none took back (one given up on just before the cut would hold
            # its writers for the grace period otherwise). Not after a retry: its kept
            # subscription may be the one it takes back. The answer does not matter (an
            # older server does not know the op).
            self._forget(self._send_request(Restored))
        self._set_state("open")

    async def _recreate(self, channel: str, options: dict[str, Any]) -> bool:
        """Create an owned channel again after a reconnect; False: the cluster's Redis failed
        (a transient error: retried like a resubscribe to a missing channel)."""
        if channel not in self._owned:
            return True  # deleted by its owner since
        try:
            await self._request_now(CreateChannel, channel=channel, **options)
        except ChannelExists:
            pass  # ours still (kept through the grace period), or re-created already
        except ClusterUnavailable:
            return False
        except ConnectionClosed:
            raise
        except TrioStreamError as exc:
            log.warning("client %r could not re-create %r: %s", self.name, channel, exc)
        return True

    def _spawn_retry(self, attempt: Callable[[], Awaitable[bool]], what: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._retry, attempt, name=what)

    async def _retry(self, attempt: Callable[[], Awaitable[bool]]) -> None:
        """Run ``attempt`` until it is done (True), the connection drops or the client closes.

        A channel missing after a reconnect (its owner has not re-created it yet) is awaited
        this way: polled with a backoff, up to RETRY_MAX_S apart.
        """
        delay = RETRY_INITIAL_S
        generation = self._generation
        while self._connected and self._generation == generation:
            try:
                if await attempt():
                    return
            except ConnectionClosed:
                return
            with trio.move_on_after(delay):
                await self.wait_state_change(self._state)
            delay = min(delay * 2, RETRY_MAX_S)

    def _fail(self, error: ConnectionClosed) -> None:
        """The client is closed for good: wake everything that waits on it."""
        if self._closed is not None:
            return
        self._closed = error
        self._connected = False
        # The calls this provider runs have nobody to answer any more (their callers were
        # told): cancelled, as on a reconnect. They ran on until the application left.
        self._rpc.connection_lost()
        for reply in list(self._replies.values()):  # an abandoned one's on_done forgets it
            reply.fail(error)
        self._replies.clear()
        for sub in [*self._subscriptions.values(), *self._resuming_subs]:
            sub._fail(error)
        for pub in [*self._publishers.values(), *self._resuming_pubs]:
            pub._fail(error)
        self._resuming_subs.clear()
        self._resuming_pubs.clear()
        self._out_space.set()
        self._out_wake.set()
        self._set_state("closed")

    def _lose(self, error: ConnectionClosed) -> None:
        """The connection is gone: the one place that says so, whatever noticed it.

        The reader (end of stream, a protocol error), the sender (a failed write) and the
        heartbeat (a silent server) all come here. Without reconnection every waiter fails
        with ``error``. With it, requests in flight fail (they may have run) and everything
        else waits for the next connection: subscriptions and publishers are parked for
        restoring. The connection's I/O tasks stop either way.
        """
        if not self._connected:
            return
        self._connected = False
        self._lost = error
        self._io_scope.cancel()
        if self._reconnect is None or self._closing:
            if self._closed_by_us is None:
                # Lost for good: what the server had not acknowledged is undelivered (as it
                # is while reconnecting), so a close says how many values that was.
                for pub in self._publishers.values():
                    pub._suspend()
            self._fail(self._closed_by_us or error)
            return
        interrupted = ConnectionClosed(
            f"the connection was lost during this request ({error}); it may have been carried "
            "out (a request is carried out at most once): check before repeating it",
            error.reason,
        )
        self._rpc.connection_lost()
        for reply in list(self._replies.values()):  # an abandoned one's on_done forgets it
            reply.fail(interrupted)
        self._replies.clear()
        self._out.clear()
        self._out_bytes = 0
        self._out_space.set()
        for sub in self._subscriptions.values():
            sub._suspend()
            self._resuming_subs.add(sub)
        self._subscriptions.clear()
        for pub in self._publishers.values():
            pub._suspend()
            self._resuming_pubs.add(pub)
        self._publishers.clear()
        self._set_state("reconnecting")

    async def aclose(self) -> None:
        """Say goodbye, flush what is queued (briefly) and close the connection."""
        self._closing = True
        self._closed_by_us = ConnectionClosed(
            "the client closed the connection: use a client inside its `async with "
            "ts.open_client(...)` block (or open another)"
        )
        for pub in [*self._publishers.values(), *self._resuming_pubs]:
            if pub.undelivered and not pub.drops_reported:  # closed while reconnecting: said
                log.warning("%s", pub.undelivered_message(pub.undelivered, client_closing=True))
        if self._connected:
            goodbye = encode_message(Goodbye(reason="client closing"))
            self._enqueue([frame_prefix(len(goodbye)), goodbye])
            with trio.move_on_after(1.0):
                while self._out and self._connected:
                    if self._out_space.is_set():  # shared: never strand a send waiting on it
                        self._out_space = trio.Event()
                    await self._out_space.wait()
                # Then the server's end of it: it frees the name and ends (or keeps) the
                # channels before it closes the connection, so a process that starts again
                # at once under this name gets it, and its keep channels, not NameInUse.
                while self._connected:
                    await self.wait_state_change(self._state)
        self._fail(self._closed_by_us)
        transport = self._transport
        if transport is not None:
            with trio.CancelScope(shield=True):
                await transport.aclose()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- outgoing ------------------------------------------------------------------------------
    def _enqueue(self, pieces: list[BytesLike], nbytes: int | None = None) -> None:
        self._out.extend(pieces)
        self._out_bytes += nbytes if nbytes is not None else sum(len(p) for p in pieces)
        self._out_wake.set()
        if self._out_bytes > OUTGOING_HIGH_WATER_BYTES and self._out_space.is_set():
            self._out_space = trio.Event()

    def _send_soon(self, frame: bytes) -> None:
        """Write a small frame (a CREDIT) now if the sender waits idle with nothing queued,
        else queue it for the sender.

        Credit written by the sender task goes out only at the application's next yield,
        which for a reader working through a window of queued messages is after the last of
        them: the server then refills an empty window, a round trip during which the reader
        idles. Written at once, it reaches the server while the reader still works through
        the rest. Measured (S4, a flooded ``drop_oldest`` reader of size 100, with the
        publisher's 16 KiB yield): 143-161k -> 165-175k frames/s; S1 with one reader and
        cbor2 values, this change alone: 274-292k -> 300-303k. Reader CPU per frame did not
        move (cpu_per_frame.py: 1.54 against 1.53 us).
        """
        write_now = self._write_now
        if write_now is None or self._out:
            self._enqueue([frame], len(frame))
            return
        self._wrote_at = time.monotonic()
        self._write_through(write_now, [frame])

    def _write_through(
        self, write_now: Callable[[list[BytesLike]], list[BytesLike]], pieces: list[BytesLike]
    ) -> None:
        """Write ``pieces`` from the calling task while the sender waits idle (``write_now``
        is its transport's send_now); what the socket does not take, and everything once the
        connection is gone, is queued for the sender (which then says the connection is
        gone)."""
        try:
            rest = write_now(pieces)
        except ConnectionClosed:
            rest = pieces
        if rest:
            self._enqueue(rest)

    async def _wait_out_space(self, pub: Publisher | None = None) -> None:
        while self._out_bytes > OUTGOING_HIGH_WATER_BYTES and self._connected:
            if pub is not None and pub._ended is not None:
                return
            await self._out_space.wait()

    def _wake_out_space_waiters(self) -> None:
        old = self._out_space
        if not old.is_set():
            self._out_space = trio.Event()
            old.set()

    async def _sender(self) -> None:
        transport = self._transport
        assert transport is not None
        write_now = transport.direct_writer() if isinstance(transport, StreamTransport) else None
        try:
            while True:
                self._out_wake = trio.Event()
                if not self._out:
                    if not self._connected:
                        return
                    self._write_now = write_now
                    self._wrote_at = time.monotonic()
                    try:
                        await self._out_wake.wait()
                    finally:
                        self._write_now = None
                    continue
                pieces, self._out = self._out, []
                self._out_bytes = 0
                self._out_space.set()
                if len(pieces) > 1 and max(map(len, pieces)) < COALESCE_MAX_PIECE:
                    # A flood's frames (a head and a payload each) joined in one C call: the
                    # transport's loop over the pieces cost a writer ~0.1 us a frame. Large
                    # pieces (arrays) still go to the transport as they are, not copied again.
                    pieces = [b"".join(pieces)]
                await transport.send(pieces)
        except ConnectionClosed as exc:
            # The reader usually notices first, but a write can fail before the reader sees
            # the end of the stream: the error must say the same either way.
            self._lose(self._closed_by_server(exc))

    def _send_control(self, message: ControlMessage) -> None:
        """Queue a CONTROL message on the current connection.

        Raises:
            ConnectionClosed: no connection now (closed, or reconnecting).
        """
        if not self._connected:
            self._check_open()
            raise ConnectionClosed("the connection is lost (reconnecting)")
        body = encode_message(message)
        self._enqueue([frame_prefix(len(body)), body])

    def _start_request(
        self, build: Callable[[int], ControlMessage], on_result: Callable[[Any], Any] | None = None
    ) -> PendingRequest:
        """Send a request without waiting: the pending request to wait on."""
        if not self._connected:
            self._check_open()
            raise ConnectionClosed("the connection is lost (reconnecting)")
        request = PendingRequest(next(self._ids), on_result)
        message = build(request.id)
        check_message(message)  # a mistyped argument, raised here, would close the connection
        self._replies[request.id] = request
        self._send_control(message)
        return request

    def _send_request(
        self,
        cls: type[Request],
        on_result: Callable[[Any], Any] | None = None,
        **fields: Any,
    ) -> PendingRequest:
        return self._start_request(lambda ident: cls(id=ident, **fields), on_result)

    async def _request(
        self,
        cls: type[Request],
        *,
        on_result: Callable[[Any], Any] | None = None,
        undo: Callable[[Any], None] | None = None,
        settle_late: bool = False,
        repeat_if_lost: bool = False,
        **fields: Any,
    ) -> Any:
        """Send a request once the client is usable (waiting while it reconnects).

        ``repeat_if_lost``: a request safe to make twice (it reads, or makes a subscription
        only this caller holds) is sent again once the client has reconnected, when the
        connection was lost on its way: a recorder's subscribe cut by a link that failed
        raised "it may have been carried out: check before repeating it", which it cannot
        check, and it waited with wait_channel=True for nothing (a lab's audit). What the
        lost one made on the server went with that connection."""
        # A scope cancelled already: Cancelled before the request goes out, not after (trio's
        # rule, that an operation cancelled at its first checkpoint did nothing; a
        # create_channel in a cancelled scope raised Cancelled and made the channel: a trio
        # developer's audit). Once sent, a request given up is still done by the server.
        await trio.lowlevel.checkpoint_if_cancelled()
        repeats = 0
        holding_restored = False
        try:
            while True:
                await self.wait_usable()
                try:
                    return await self._request_now(
                        cls, on_result=on_result, undo=undo, settle_late=settle_late, **fields
                    )
                except ConnectionClosed:
                    # A few times at most: a request that every connection loses on its way
                    # (one it makes too big for a proxy, say) is not repeated for ever.
                    repeats += 1
                    if not repeat_if_lost or self._state == "closed" or repeats > MAX_REPEATS:
                        raise
                    if cls is Subscribe and not holding_restored:
                        # The lost one may have made a subscription that the server keeps
                        # for our return: no `restored` (which would end it, dropping what
                        # it holds) before the repeat, which says it is one and continues it.
                        holding_restored = True
                        self._subscribes_repeating += 1
                        fields["repeat"] = True
        finally:
            if holding_restored:
                self._subscribes_repeating -= 1
                if not self._subscribes_repeating and self._restored_held == self._generation:
                    # The restore held `restored` back for the repeats: it goes now.
                    self._restored_held = -1
                    if self._connected:
                        self._forget(self._send_request(Restored))

    async def _request_now(
        self,
        cls: type[Request],
        *,
        on_result: Callable[[Any], Any] | None = None,
        undo: Callable[[Any], None] | None = None,
        settle_late: bool = False,
        **fields: Any,
    ) -> Any:
        """Send a request on the current connection (restoring uses it before "open").

        ``undo``: a request that makes something on the server, abandoned before its
        answer reached the caller (a cancel, a timeout): ``undo(made)`` closes what it made
        (``made``: what ``on_result`` returned), once the answer comes or at once.
        ``settle_late``: a request whose change the client keeps a copy of (a retune's
        window, the channels it owns), done in ``on_result``: abandoned after it went out,
        its answer is still taken when it comes. Else the server had changed and the client
        not (a retuned block reader waited for credit that never came; a deleted channel
        came back after a reconnection)."""
        request = self._send_request(cls, on_result, **fields)
        try:
            await request.done.wait()
        except BaseException:
            if settle_late and not request.done.is_set():

                def forget_settled() -> None:
                    self._replies.pop(request.id, None)

                request.on_done = forget_settled
                raise
            if undo is not None and not request.done.is_set():
                # Stays pending: a result is undone, and either answer forgets it.
                def forget() -> None:
                    self._replies.pop(request.id, None)

                make = on_result

                def make_and_undo(result: Any) -> Any:
                    made = result if make is None else make(result)
                    undo(made)
                    return made

                request.on_result = make_and_undo
                request.on_done = forget
                raise
            if undo is not None and request.error is None:
                # Answered in the same scheduler turn as the cancel: made already, and the
                # caller will never have it (a block orphan held its writers for good).
                undo(request.result)
            self._replies.pop(request.id, None)
            raise
        self._replies.pop(request.id, None)
        if request.error is not None:
            raise fresh(request.error)  # (one error fails every request of a lost client)
        return request.result

    def _forget(self, request: PendingRequest) -> None:
        """Nobody waits for this request's answer: it is ignored when it comes."""
        self._replies.pop(request.id, None)

    async def _leave(self, cls: type[Request], **fields: Any) -> bool:
        """Close a subscription or publisher on the server, waiting for it only briefly.

        The request goes out at once; its answer is awaited at most LEAVE_TIMEOUT_S, shielded
        (a cancel does not lose the answer of a server that is merely slow), and not at all
        once the connection is gone. A late answer is ignored.

        Returns:
            True if the request went out and no answer came in time (a stalled connection
            the heartbeat has not found out yet, or a very slow server).
        """
        if not self._connected:
            return False
        request = self._send_request(cls, **fields)
        stalled = self._stalled_leave
        if stalled is not None:
            if not stalled.done.is_set():
                # The last leave that ran out of time is not answered yet either (the
                # answers come in order): no wait for this one. Five subscriptions and a
                # publisher left a frozen server in 6 s, one at a time (an outside review).
                self._forget(request)
                return True
            self._forget(stalled)
            self._stalled_leave = None
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + LEAVE_TIMEOUT_S
                await request.done.wait()
        finally:
            if request.done.is_set() or not self._connected:
                self._forget(request)
            else:  # kept listed: its answer, when it comes, tells the next leave to wait
                self._stalled_leave = request
        if request.error is not None and not isinstance(request.error, ConnectionClosed):
            raise fresh(request.error)
        return not request.done.is_set()

    def _heartbeat_times(self) -> tuple[float, float | None]:
        """(seconds between pings, seconds of silence after which the server is gone).

        The second is None with ``heartbeat=None``: the client then pings only to keep the
        server's idle timeout at bay and never gives up on a silent server by itself.
        """
        idle_interval = self.limits.idle_timeout_s / 3  # the server's idle timeout comes first
        if self._heartbeat_s is None:
            return idle_interval, None
        interval = min(self._heartbeat_s, idle_interval)
        return interval, max(SILENT_HEARTBEATS * interval, MIN_SILENCE_S)

    async def _heartbeat(self) -> None:
        """Ping the server; declare it gone when nothing at all comes back for too long.

        Silence is counted in heartbeats, not in wall time: each one adds at most one interval.
        If this process itself stalled (a long computation holding the trio thread, a suspended
        laptop), the late wake-up is not the server's silence; the reader gets its turn first
        and finds whatever the server sent meanwhile.
        """
        interval, dead_after = self._heartbeat_times()
        silent_s = 0.0
        last = trio.current_time()
        moved = self._transport.progress if self._transport is not None else 0
        while self._connected:
            await trio.sleep(interval)
            now = trio.current_time()
            # A whole frame, or bytes of one on their way either way: a large frame on a
            # slow link takes longer than the silence bound, and the pongs wait behind it.
            was, moved = moved, self._transport.progress if self._transport is not None else 0
            if self._heard or moved != was:
                self._heard = False
                silent_s = 0.0
            else:
                silent_s += min(now - last, interval)
            last = now
            if dead_after is not None and silent_s >= dead_after:
                transport = self._transport
                self._lose(
                    ConnectionClosed(
                        f"the server was silent for {silent_s:.1f} s (nothing, not even an "
                        f"answer to a ping; pings every {interval:g} s): it is frozen, "
                        "overloaded or unreachable. Connect again; raise heartbeat= of "
                        "open_client (or SyncClient) if the server is slow on purpose",
                        SILENCE_REASON,
                    )
                )
                if transport is not None:
                    # Not the close handshake: a silent server would make it wait its bound
                    # before the next connection could be tried.
                    with trio.CancelScope(shield=True):
                        await transport.abort()
                return
            if self._connected:
                self._send_control(Ping(data=None))

    async def _run_io(self) -> None:
        """The connection's tasks: the reader, the sender and the heartbeat."""
        try:
            with self._io_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    nursery.start_soon(self._sender)
                    nursery.start_soon(self._heartbeat)
        finally:
            if self._connected:  # cancelled from outside: the application is done with us
                self._closing = True
                self._lose(ConnectionClosed("the client is closed"))
                await self._say_goodbye()

    async def _say_goodbye(self) -> None:
        """Tell the server we leave on purpose (our channels end now, no resume grace);
        the sender is gone, so straight to the transport, shielded and briefly."""
        transport = self._transport
        if transport is None:
            return
        goodbye = encode_message(Goodbye(reason="client closing"))
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(LEAVE_TIMEOUT_S),
            contextlib.suppress(ConnectionClosed, trio.BrokenResourceError),
        ):
            await transport.send([frame_prefix(len(goodbye)), goodbye])

    # -- incoming ------------------------------------------------------------------------------
    async def _reader(self) -> None:
        transport = self._transport
        assert transport is not None
        take_runs = take_data_runs
        try:
            while True:
                items = await transport.receive_runs(take_runs)
                self._take(items)
                # Per batch, not per frame: the heartbeat only needs "some". The readers these
                # frames woke get their turn no later than the next read: the transport
                # yields (or, once the socket is empty, waits for data) before it reads.
                self._heard = True
        except ConnectionClosed as exc:
            self._lose(self._closed_by_server(exc))
        except TrioStreamError as exc:  # ProtocolError, FrameTooLarge from the server
            self._protocol_error(exc)
            with trio.CancelScope(shield=True):
                await transport.aclose()

    def _protocol_error(self, exc: TrioStreamError) -> None:
        """The server broke the protocol (docs/protocol.md section 1): the connection ends,
        for good. The reader calls this, and a subscription that finds a DATA frame cut in
        its head only when the application reads it. The connection's tasks are cancelled;
        its transport is closed by the reader, or by _connect_once once they are done."""
        log.error("closing the connection: %s", exc)
        # Final, as at the handshake: a new connection would meet the same server, and
        # the frame it sends again (a resumed subscription's), in a loop.
        self._closing = True
        self._lose(ConnectionClosed(f"protocol error from the server: {exc}"))

    def _take(self, items: Iterable[bytearray | DataRun]) -> None:
        """Hand on what one read brought, in order.

        DATA frames come in runs of one subscription's frames, routed by the pass that found
        them in the read (frames.take_data_runs): a run goes to its subscription's queue at
        once, which is woken once for it. Other frames (and the DATA frames the runs leave:
        large, truncated) come alone.
        """
        handlers = self._frame_handlers
        subscriptions = self._subscriptions
        for item in items:
            if not isinstance(item, bytearray):
                sub = subscriptions.get(item[0])
                if sub is not None:
                    sub._deliver(item[1])
                continue
            handler = handlers.get(item[0])
            if handler is None:
                raise ProtocolError(f"frame type {item[0]:#04x} is not valid from a server")
            handler(item)

    def _closed_by_server(self, exc: ConnectionClosed) -> ConnectionClosed:
        """The error for a lost connection: the server's goodbye, when it said one."""
        reason = self._goodbye
        message = f"the server closed the connection: {reason}" if reason else str(exc)
        return ConnectionClosed(message, reason)

    def _on_data(self, frame: bytearray) -> None:
        """A DATA frame that came alone, not in a run (large, truncated, over WebSocket)."""
        sub = self._subscriptions.get(data_sub_id(frame))
        if sub is not None:
            sub._deliver([frame])

    def _on_pub_ack(self, frame: bytearray) -> None:
        pub_id, count = parse_counter(frame)
        pub = self._publishers.get(pub_id)
        if pub is not None:
            pub._acked(count)

    def _on_control(self, frame: bytearray) -> None:
        try:
            message = decode_message(frame)
        except UnknownOp:
            return  # a newer server's notice: nothing this client must act on
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"unexpected {message.OP} from the server")
        handler(message)

    def _on_reply(self, msg: Reply) -> None:
        reply = self._replies.get(msg.id)
        if reply is not None:
            reply.resolve(msg.result)

    def _on_error(self, msg: Error) -> None:
        error = error_from_wire(msg.type, msg.message)
        if msg.id is None:
            log.error("server error: %s", error)
            return
        reply = self._replies.get(msg.id)
        if reply is not None:
            reply.fail(error)

    def _on_readers(self, msg: Readers) -> None:
        pub = self._publishers.get(msg.pub)
        if pub is not None:
            pub._set_readers(msg.readers, msg.lossless)

    def _on_sub_end(self, msg: SubEnd) -> None:
        sub = self._subscriptions.pop(msg.sub, None)
        if sub is None:
            return
        error = error_from_wire(msg.error, msg.reason) if msg.error else None
        if msg.again and error is None and sub._reset_by_server(msg.reason):
            # The channel lives on at a new epoch (a cluster's Redis restarted empty): the
            # subscription resumes as after a reconnect, since its position, with a reset
            # gap; retried while the channel is missing, at most RESET_BACK_S.
            self._resuming_subs.add(sub)
            self._spawn_retry(sub._resubscribe, f"resubscribe {sub.channel[:80]}")
            return
        sub._end(msg.reason, error)

    def _on_lost(self, msg: Lost) -> None:
        # Frames dropped at the end of a burst, that no message will carry: count them.
        if msg.lost < 0:
            # A count (DATA's is a u32); a negative one would lower sub.lost and reach the
            # application as a message's negative ``lost``. The reader closes on this.
            raise ProtocolError(f"a lost notice with a negative count: {msg.lost}")
        sub = self._subscriptions.get(msg.sub)
        if sub is not None:
            sub._lost_notice(msg.lost, msg.seq)

    def _on_channel_deleted(self, msg: ChannelDeleted) -> None:
        # Another client deleted a channel this one created: not created again when back.
        self._owned.pop(msg.channel, None)

    def _on_pub_end(self, msg: PubEnd) -> None:
        pub = self._publishers.pop(msg.pub, None)
        if pub is not None:
            pub._end(msg.reason)
            for shared, held in list(self._shared_publishers.items()):
                if held is pub:
                    del self._shared_publishers[shared]

    def _on_goodbye(self, msg: Goodbye) -> None:
        self._goodbye = msg.reason
        if msg.reconnect is False:
            # Told not to come back (an admin's kick): the loss that follows closes the
            # client as aclose() would, with the server's reason. A shutdown's goodbye has
            # no flag: a restart is expected, and the client reconnects.
            self._closing = True
            self._goodbye = f"{msg.reason} (the server asked this client not to reconnect)"
        log.info("server says goodbye: %s", self._goodbye)

    # -- channels ------------------------------------------------------------------------------
    async def create_channel(
        self,
        channel: str,
        *,
        public: bool = True,
        key: str | None = None,
        lifetime: float | None = None,
        history: int = 0,
        single_writer: bool = False,
        keep: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Create a channel owned by this client.

        Args:
            public: listed in ``channels()`` and system channels; ``False`` hides it.
            key: readers and writers (other than the owner) must give this key.
            lifetime: seconds after which the channel ends by itself.
            history: frames kept for readers who subscribe later.
            single_writer: refuse a second writer.
            keep: survive this client's disconnect (otherwise the channel ends with it).
            meta: what readers should know to show it, e.g. ``{"units": "V", "labels":
                ["x", "y"], "description": "..."}``: a map with text keys, at most 4 KiB
                encoded, listed in ``channels()`` and shown by the dashboard and the CLI.

        Raises:
            ChannelExists, InvalidArgument, LimitExceeded.
        """
        check_fields(CreateChannel, {"channel": channel, "lifetime": lifetime})
        if meta is not None:
            check_meta(meta)
        options: dict[str, Any] = {
            "public": public,
            "key": key,
            "lifetime": None if lifetime is None else float(lifetime),
            "history": history,
            "single_writer": single_writer,
            "keep": keep,
            "meta": meta,
        }

        def created(result: Any) -> Any:
            if lifetime is None:  # a temporary channel that ended must not come back
                self._owned[channel] = options
            return result

        try:
            await self._request(
                CreateChannel, on_result=created, settle_late=True, channel=channel, **options
            )
        except ChannelExists:
            made = self._owned.get(channel)
            if made is None:
                raise
            # Not the server's advice to a stranger (whose channel it is, how to wait for
            # it): it came first and made this, the point, the end of a long line.
            raise ChannelExists(
                f"the channel {channel!r} exists already: this client created it"
                f"{_options_unlike(made, options)} (a create_channel() given up after it was "
                "sent, by a timeout say, still creates it); use it as it is, or "
                "delete_channel() it first"
            ) from None

    async def delete_channel(self, channel: str, *, key: str | None = None) -> None:
        """Delete a channel: its readers' iterations end, its writers get ChannelNotFound."""

        def deleted(result: Any) -> Any:
            self._owned.pop(channel, None)
            return result

        try:
            await self._request(
                DeleteChannel, on_result=deleted, settle_late=True, channel=channel, key=key
            )
        except ConnectionClosed:
            # Lost with the connection, it may have been carried out: it is not created
            # again by the reconnection (which undid a delete that was: a cancellation
            # audit). One that was not is still there to delete again.
            self._owned.pop(channel, None)
            raise

    async def channels(self) -> list[ChannelInfo]:
        """Public channels and this client's own."""
        # An answer of the wrong shape is the server's fault: a ProtocolError that says what
        # was wrong, not a TypeError from inside the records.
        result = await self._request(ListChannels, repeat_if_lost=True)
        return list_from_answer(
            ChannelInfo.from_wire, result, "channels()", "a list of channel records"
        )

    async def clients(self) -> list[ClientInfo]:
        """The connected clients (see ``ClientInfo``)."""
        result = await self._request(ListClients, repeat_if_lost=True)
        return list_from_answer(
            ClientInfo.from_wire, result, "clients()", "a list of client records"
        )

    async def stats(self) -> ServerStats:
        """The server's figures (see ``ServerStats``)."""
        result = await self._request(GetStats, repeat_if_lost=True)
        return answer_from_wire(ServerStats.from_wire, result, "stats()", "the server's figures")

    # -- RPC (trio_stream/_rpc.py) ---------------------------------------------------------------
    def expose(self, obj: object, name: str | None = None, *, thread: bool = False) -> list[str]:
        """Let other clients call ``obj``'s ``rpc_*`` methods (without the prefix).

        Methods may be sync or async; each call runs in its own task. Sync methods run in the
        trio thread and should be quick; with ``thread=True`` they run in a worker thread, one
        call at a time for this object. Exposing the same object again exposes its methods
        as they are now; another object with a method of a name exposed already is refused
        (expose it under ``name=``). ``unexpose`` withdraws them.

        Args:
            name: expose as a sub-service: ``rpc_move`` becomes ``"name.move"``.

        Returns:
            The names exposed.

        Raises:
            InvalidArgument: ``obj`` has no ``rpc_*`` methods, ``name`` is not dotted
                identifiers, a method's full name is over 200 characters, or another object
                exposes a method of that name already.
            LimitExceeded: more than 1000 methods, or their names over the server's
                max_frame_bytes.
        """
        return self._rpc.expose(obj, name, thread=thread)

    def unexpose(self, target: object) -> list[str]:
        """Withdraw methods that ``expose`` exposed; other clients can no longer call them.

        A call of a withdrawn method made from now on is refused as one of a method never
        exposed (the caller gets ``RpcError``: "... exposes no method ..."); calls already
        running, streaming ones too, run on to their end. A reconnect exposes again only
        what is still exposed. When an object's last method goes, the client lets go of it
        (and of its one-at-a-time turn once its running calls end: exposed again before
        then, it still runs one call at a time). Exposing it again later is allowed. On a
        closed client it only lets go (there is nobody to tell).

        Args:
            target: the exposed object itself (by identity, as ``expose`` keys it): all its
                methods, under every name it was exposed under. Or a name as callers call
                it: a method's full name (``"read"``, ``"stage.move"``), or the ``name=`` it
                was exposed under (``"stage"``: the methods right under it; those exposed
                under ``name="stage.x"`` stay).

        Returns:
            The names withdrawn.

        Raises:
            InvalidArgument: nothing exposed is ``target`` (the message lists what is); or
                ``target`` is ``""``, or a name that says two things (a method's full name
                that is also a ``name=``: Stage's ``x`` exposed under ``"stage"``, and another
                object exposed under ``"stage.x"``): nothing is withdrawn, pass the object.
        """
        return self._rpc.unexpose(target)

    # `timeout` (not a cancel scope) is the contract: the proxy keeps it as its calls' default.
    async def rpc(
        self,
        provider: str,
        *,
        timeout: float | None = 5.0,  # noqa: ASYNC109
        wait_provider: bool = False,
        wait_reconnect: bool = True,
    ) -> RpcProxy:
        """A proxy for the methods that the client named ``provider`` exposes.

        Args:
            timeout: seconds for this look-up and, by default, for each call (None: no limit).
            wait_provider: while no client of that name is connected (or it exposes nothing
                yet), wait for it, as long as it takes (bound it with ``trio.fail_after``),
                instead of raising RpcError: a caller started together with its provider.
            wait_reconnect: a provider that lost its connection and may be back (the server
                keeps its session ``resume_grace_s``) is waited for within each call's
                timeout, and the call made once it is back. False: such a call (and this
                look-up) raises RpcError at once, the call never sent to it: a caller with
                several workers tries the next instead of waiting out a crashed one.
                ``proxy.wait_reconnect`` may be changed later.

        Raises:
            RpcError: no such client connected, or it exposes no methods.
            RpcTimeout: the provider did not answer in time.
        """
        return await self._rpc.proxy(provider, timeout, wait_provider, wait_reconnect)

    # `timeout` (not a cancel scope) is the contract, as for a proxy's call.
    async def call(
        self,
        provider: str,
        method: str,
        /,
        *args: Any,
        timeout: float | None = 5.0,  # noqa: ASYNC109
        wait_reconnect: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` of the client named ``provider`` once, without a proxy:
        ``await client.call("daq", "read", 10)`` is ``await (await client.rpc("daq")).read(10)``
        in one round trip (no description asked first, so the arguments are checked by the
        provider, not here). ``timeout`` and ``wait_reconnect`` as for :meth:`rpc`; a method
        argument of either name goes through a proxy's ``call``.

        Raises:
            RemoteError: the method raised. RpcTimeout: no answer in time.
            RpcError: no such provider or method, or the provider left during the call.
        """
        return await self._rpc.call_once(
            provider, method, args, kwargs, check_timeout(timeout), wait_reconnect
        )

    # -- files (trio_stream/_files.py) ---------------------------------------------------------
    def accept_files(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        overwrite: bool = False,
        share: bool = False,
        on_event: Callable[[FileEvent], None] | None = None,
    ) -> FileService:
        """Receive files that other clients send (``send_file``) into ``directory``.

        Exposes the RPC sub-service ``files``. A file lands under its name only complete and
        checked (sha256); names are plain file names (never a path outside ``directory``).

        Args:
            max_bytes: the largest file accepted (refused up front from its declared size).
            overwrite: replace an existing file of the same name (default: refuse).
            share: also let other clients list and fetch the files of ``directory``
                (``fetch_file``).
            on_event: called with a :class:`FileEvent` as transfers start, progress and end.

        Raises:
            InvalidArgument: ``directory`` is not a directory.
        """
        return _files.accept_files(
            self,
            directory,
            max_bytes=max_bytes,
            overwrite=overwrite,
            share=share,
            on_event=on_event,
        )

    async def send_file(
        self,
        target: str,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """Send the file at ``path`` to the client ``target`` (which called ``accept_files``).

        Chunked through the server with a few chunks in flight, checked with sha256 at the end.
        Returns the name it was stored under (``name``, default: the file's own name).
        ``progress(sent_bytes, total_bytes)`` is called as chunks are acknowledged.

        Raises:
            InvalidArgument: ``name`` is not a plain file name.
            RemoteError: the receiver refused it (exists, too large, damaged on its way...).
            RpcError: ``target`` is not connected or does not accept files.
        """
        return await _files.send_file(self, target, path, name=name, progress=progress)

    async def fetch_file(
        self,
        source: str,
        name: str,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Fetch the file ``name`` from the client ``source`` (``accept_files(share=True)``)
        into ``dest`` (a file path, or a directory to keep the name); returns the path.

        Raises:
            FileExistsError: ``dest`` exists and ``overwrite`` is false.
            RemoteError: the source refused (not shared, no such file).
            RpcError: the file arrived incomplete or damaged (nothing is left at ``dest``).
        """
        return await _files.fetch_file(
            self, source, name, dest, overwrite=overwrite, progress=progress
        )

    # -- writing -------------------------------------------------------------------------------
    async def open_publisher(
        self, channel: str, *, key: str | None = None, compress: str | None = None
    ) -> Publisher:
        """A publisher for ``channel``; close it with ``aclose()`` (or use :meth:`publisher`).

        ``compress="zlib"`` or ``"zstd"`` compresses payloads of 64 KiB or more (see
        :mod:`trio_stream._protocol.compression`); readers decompress transparently.
        """
        compress_fn = compressor(compress)
        writer_key = new_writer_key()

        def register(result: Any) -> Publisher:
            pub = Publisher(
                self,
                channel,
                key,
                result["pub"],
                result["readers"],
                result.get("keeps_history", False),
                compress_fn,
                writer_key=writer_key,
                lossless=result.get("lossless", False),
            )
            self._publishers[pub.pub_id] = pub
            return pub

        try:
            pub: Publisher = await self._request(
                OpenPublisher,
                on_result=register,
                undo=Publisher.close_nowait,
                channel=channel,
                key=key,
                writer=writer_key,
            )
        except ChannelNotFound as missing:
            raise await self._named_alike(missing, channel) from None
        return pub

    @async_context(
        'client.publisher() is entered with "async with client.publisher(channel) as pub:" '
        "(or pub = await client.open_publisher(channel) ... await pub.aclose())"
    )
    async def publisher(
        self, channel: str, *, key: str | None = None, compress: str | None = None
    ) -> AsyncIterator[Publisher]:
        """``async with client.publisher("ch") as pub: await pub.send(value)``.

        ``compress``: "zlib" or "zstd" for large compressible values (see open_publisher).
        """
        pub = await self.open_publisher(channel, key=key, compress=compress)
        try:
            yield pub
        except BaseException:
            # Leaving on an error or a cancel: do not wait for the server, nor for a lost
            # connection (a client that gave up reconnecting), but say what that drops.
            pub.say_closed_early()
            pub.close_nowait()
            raise
        await pub.aclose()

    async def publish(
        self,
        channel: str,
        value: Any,
        *,
        key: str | None = None,
        compress: str | None = None,
        time_s: SupportsFloat | None = None,
    ) -> bool:
        """Send one value to ``channel``; False (nothing sent) while it has no readers.

        The publisher behind it is opened once per channel and kept, so repeated calls are
        as cheap as ``Publisher.send``. ``compress``: as for :meth:`publisher`; ``time_s``:
        as for ``Publisher.send``.
        """
        compress_fn = compressor(compress)
        if compress_fn is not None:
            value = EncodedPayload(b"".join(compress_fn(encode_payload(value, copy=False))))
        pub = self._shared_publishers.get((channel, key))
        if pub is None or not pub.is_open:
            pub = await self.open_publisher(channel, key=key)
            self._shared_publishers[channel, key] = pub
        return await pub.send(value, time_s=time_s)

    # -- reading -------------------------------------------------------------------------------
    async def open_subscription(
        self,
        channel: str,
        *,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        since: Position | None = None,
        wait_channel: bool = False,
        prefetch: bool = True,
    ) -> Subscription:
        """Subscribe; close it with ``aclose()`` (or use :meth:`subscribe`)."""
        return await self._open_subscription(
            channel,
            hint=True,
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            key=key,
            window=window,
            block_timeout=block_timeout,
            sender=sender,
            view=view,
            since=since,
            wait_channel=wait_channel,
            prefetch=prefetch,
        )

    async def _open_subscription(
        self,
        channel: str,
        *,
        hint: bool,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        since: Position | None = None,
        wait_channel: bool = False,
        prefetch: bool = True,
    ) -> Subscription:
        """:meth:`open_subscription`; ``hint=False`` leaves the channels named alike out of a
        ChannelNotFound, and the listing they cost (subscribe_matching's channels gone
        meanwhile)."""
        check_subscribe_options(
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            window=window,
            block_timeout=block_timeout,
            view=view,
            prefetch=prefetch,
        )
        if since is not None and not (
            isinstance(since, tuple) and isinstance(since[0], str) and isinstance(since[1], int)
        ):
            raise InvalidArgument(f"since must be a ts.Position (sub.position), not {since!r:.80}")
        spec: dict[str, Any] = {
            "channel": channel,
            "key": key,
            "policy": policy,
            "size": size,
            "every": every,
            "max_rate": None if max_rate is None else float(max_rate),
            "window": window,
            "block_timeout": None if block_timeout is None else float(block_timeout),
            "sender": sender,
            "view": None if view is None else view.to_wire(),
        }

        def register(result: Any) -> Subscription:
            sub = Subscription(self, spec, result, since, prefetch=prefetch)
            self._subscriptions[sub.sub_id] = sub
            return sub

        since_fields: dict[str, Any] = (
            {} if since is None else {"since_epoch": since[0], "since_seq": since[1]}
        )

        async def subscribe_once() -> Subscription:
            sub: Subscription = await self._request(
                Subscribe,
                on_result=register,
                undo=Subscription.close_nowait,
                repeat_if_lost=True,
                **spec,
                **since_fields,
            )
            return sub

        if wait_channel and not channel.startswith("$"):  # the server's own exist from its start
            return await self._when_created(channel, subscribe_once)
        if not hint:
            return await subscribe_once()
        try:
            return await subscribe_once()
        except ChannelNotFound as missing:
            raise await self._named_alike(missing, channel) from None

    async def _when_created(self, channel: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until ``channel`` exists (ChannelNotFound: not yet): tried at once,
        again as soon as ``$channels`` announces a channel of that name, and every
        CHANNEL_POLL_S (private channels are not announced; nor, on several nodes, are
        channels created on another node)."""
        # Listen for creations before the first attempt, so that one in between is not missed.
        warn_at = trio.current_time() + WAIT_CHANNEL_WARN_S
        async with self.subscribe("$channels", policy="unbounded") as events:
            while True:
                try:
                    return await attempt()
                except ChannelNotFound:
                    pass
                if warn_at <= trio.current_time():
                    warn_at = math.inf
                    await self._say_still_waiting(channel)
                with trio.move_on_after(CHANNEL_POLL_S):
                    async for event in events:
                        if isinstance(event.data, dict) and event.data.get("channel") == channel:
                            break

    async def _say_still_waiting(self, channel: str) -> None:
        """Log, once, that a wait_channel subscribe is still waiting, naming the channels
        whose names are close to ``channel`` (a typo, another case)."""
        alike = await self._channels_like(channel)
        hint = f"; did you mean {alike}?" if alike else ""
        log.warning(STILL_WAITING_MESSAGE, channel[:100], hint)

    async def _channels_like(self, channel: str) -> str:
        """``'demo/counter'`` (or ``'a' or 'b'``): the channels listed to this client whose
        names are close to ``channel`` (a typo, another case), or "" (none, or no answer
        within a second: a reconnection, a cluster's Redis away)."""
        names: list[str] = []
        with trio.move_on_after(1.0), contextlib.suppress(TrioStreamError):
            names = [info.name for info in await self.channels()]
        # Never the name asked for (listed by now: created just after, or a race's "ended
        # meanwhile: subscribe again" suggested the very name; a review).
        names = [n for n in names if n != channel]
        alike = [n for n in names if n.lower() == channel.lower()]
        alike += [n for n in _closest(channel, names) if n not in alike]
        return " or ".join(map(repr, alike))

    async def _named_alike(self, missing: ChannelNotFound, channel: str) -> ChannelNotFound:
        """``missing`` with the names of the channels close to ``channel`` in its message
        (a typo got no hint until a wait_channel wait's warning, 5 s in); ``missing``
        itself when there are none."""
        alike = await self._channels_like(channel)
        text = str(missing)
        if PATTERN_CHARACTERS.intersection(channel):
            # Redis's PSUBSCRIBE and NATS's wildcards are subscribe_matching here: a name is
            # only ever itself (a team migrating from them waited for 'sensors.*' for good).
            text += (
                "; channel names are exact, not patterns: subscribe_matching(pattern) "
                "subscribes to every channel that matches a glob, and follows '$channels' "
                'for those created later (README, "Coming from Redis pub/sub or NATS")'
            )
        if not alike:
            return missing if text == str(missing) else ChannelNotFound(text)
        head = f"no channel named {channel!r} that you may use"
        if text.startswith(head):  # the server's words: the hint next to the name
            return ChannelNotFound(f"{head} (did you mean {alike}?){text[len(head) :]}")
        return ChannelNotFound(f"{text}; did you mean {alike}?")

    @async_context(
        'client.subscribe() is entered with "async with client.subscribe(channel) as sub:" '
        "(or sub = await client.open_subscription(channel) ... await sub.aclose())"
    )
    async def subscribe(
        self,
        channel: str,
        *,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        since: Position | None = None,
        wait_channel: bool = False,
        prefetch: bool = True,
    ) -> AsyncIterator[Subscription]:
        """``async with client.subscribe("ch", policy=..., size=...) as sub: async for msg in sub``.

        Args:
            policy: what the server does when this reader's buffer of ``size`` frames is full:
                ``drop_oldest``, ``drop_newest``, ``clear``, ``unbounded`` or ``block``.
            size: the server-side buffer, in frames (ignored for ``unbounded``).
            every: keep every Nth frame of the channel.
            max_rate: deliver at most this many frames per second, always the newest.
            key: the channel's key, for channels that have one.
            window: frames in flight to this client, 1 or more (default: the server's, at most
                ``size``; 0 or less raises ``InvalidArgument``).
            block_timeout: ``block`` only: seconds this reader may hold the channel's writers
                back (and so its other readers) before the server ends the subscription
                with ``LimitExceeded`` (default: the server's ``block_timeout_s``). Given
                with another policy, it waits for a ``retune(policy="block")``.
            sender: only the frames written by the client of this name (filtered on the
                server; ``every`` and ``max_rate`` then count that writer's frames only).
            view: ``ts.View(slices=...)``: of each numpy frame only this strided sub-array,
                cut by the server (other frames arrive whole).
            since: continue after this position (``sub.position`` of an earlier
                subscription): the channel's history replays what it still holds after it,
                through this reader's policy, and the first message carries ``msg.gap``.
            wait_channel: a channel that does not exist yet is waited for (a reader started
                before its writer) instead of raising ChannelNotFound. A private channel
                with a wrong or missing ``key`` looks the same as a missing one, so it is
                waited for too: bound the wait with a cancel scope if that can happen.
            prefetch: False: the next frames are asked for when your code asks for a
                message and none is here (``receive``, the next turn of ``async for``), not
                as it takes them. A slow reader of a lossy buffer (``drop_oldest``,
                ``size=1``) then gets the newest frame the server holds when it asks, one
                round trip later, instead of the one that came while it worked; a reader
                that keeps up waits a round trip for each message.
        """
        sub = await self.open_subscription(
            channel,
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            key=key,
            window=window,
            block_timeout=block_timeout,
            sender=sender,
            view=view,
            since=since,
            wait_channel=wait_channel,
            prefetch=prefetch,
        )
        try:
            yield sub
        except BaseException:
            sub.close_nowait()  # leaving on an error or a cancel: do not wait for the server
            raise
        await sub.aclose()

    async def _open_matching(
        self,
        pattern: str,
        *,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        prefetch: bool = True,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        since: Position | None = None,
        wait_channel: bool = False,
    ) -> PatternSubscription:
        """A started PatternSubscription (subscribe_matching, and the SyncClient's)."""
        check_pattern(pattern)
        if since is not None:
            raise InvalidArgument(
                "since= is a position in one channel (its epoch and seq); a pattern "
                "subscription reads each matching channel as a new subscribe does (its "
                "history, if it keeps one, then its new frames): resume one channel with "
                "subscribe(channel, since=sub.position)"
            )
        if wait_channel:
            raise InvalidArgument(
                "wait_channel= waits for one channel; subscribe_matching() waits for "
                "matching channels already (those created later are subscribed as they come)"
            )
        if type(max_channels) is not int or max_channels < 1:
            raise InvalidArgument(f"max_channels must be an int >= 1, not {max_channels!r:.80}")
        options: dict[str, Any] = {
            "policy": policy,
            "size": size,
            "every": every,
            "max_rate": max_rate,
            "key": key,
            "window": window,
            "block_timeout": block_timeout,
            "sender": sender,
            "view": view,
            "prefetch": prefetch,
        }
        # The options are checked here, before anything is subscribed (no matching channel
        # yet must not hide a bad policy until the first one comes).
        check_subscribe_options(
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            window=window,
            block_timeout=block_timeout,
            view=view,
            prefetch=prefetch,
        )
        self._check_open()
        matching = PatternSubscription(self, pattern, options, max_channels)
        await matching._start()
        return matching

    @async_context(
        'client.subscribe_matching() is entered with "async with '
        'client.subscribe_matching(pattern) as matching:"'
    )
    async def subscribe_matching(
        self,
        pattern: str,
        *,
        policy: str = "drop_oldest",
        size: int | None = 100,
        every: int = 1,
        max_rate: float | None = None,
        key: str | None = None,
        window: int | None = None,
        block_timeout: float | None = None,
        sender: str | None = None,
        view: View | None = None,
        prefetch: bool = True,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        since: Position | None = None,
        wait_channel: bool = False,
    ) -> AsyncIterator[PatternSubscription]:
        """Every channel whose name matches ``pattern``, now and created later, as one stream
        (Redis's PSUBSCRIBE, NATS's wildcards): ``async with client.subscribe_matching(
        "sensors.*") as matching: async for msg in matching`` (``msg.channel`` says which).

        ``pattern`` is a shell-style glob, case-sensitive (``fnmatch.fnmatchcase``): ``*``
        any characters, dots included (NATS's ``*`` stops at a dot; its ``>`` is this
        ``*``), ``?`` one character, ``[...]`` one of a set; a name without any of them
        follows that one channel across its lives (``subscribe`` ends with it). System
        channels (``$...``) match only a pattern that starts with ``$``. Channels this
        client cannot see (other clients' private ones) are not matched.

        Each matching channel gets its own ordinary subscription, with the options below (as
        :meth:`subscribe`'s): its own buffer on the server, ``msg.lost``, resume after a
        reconnect. A channel that ends leaves the set after its last message; one created
        later (or again) joins it, also while the client was reconnecting. Entering returns
        once every channel that matches now is subscribed (``matching.channels``).

        Args:
            max_channels: the most channels subscribed at once. A pattern that matches more
                on entering raises ``LimitExceeded`` rather than opening thousands of
                subscriptions unnoticed; a channel created later past it is not subscribed
                (a warning in the log, once per name), the others are read on.
            since, wait_channel: refused (``InvalidArgument``): each names one channel.

        Raises:
            InvalidArgument: an empty pattern, NATS's ``>`` without ``*``, ``?`` or ``[``, a
                bad option, ``since`` or ``wait_channel``.
            LimitExceeded: more than ``max_channels`` channels match, or the server's limit
                of subscriptions per client was reached.
        """
        matching = await self._open_matching(
            pattern,
            policy=policy,
            size=size,
            every=every,
            max_rate=max_rate,
            key=key,
            window=window,
            block_timeout=block_timeout,
            sender=sender,
            view=view,
            prefetch=prefetch,
            max_channels=max_channels,
            since=since,
            wait_channel=wait_channel,
        )
        try:
            yield matching
        except BaseException:
            matching.close_nowait()  # leaving on an error or a cancel: no wait for the server
            raise
        await matching.aclose()


def check_subscribe_options(
    *,
    policy: str,
    size: int | None,
    every: int,
    max_rate: float | None,
    window: int | None,
    block_timeout: float | None,
    view: View | None,
    prefetch: bool,
) -> None:
    """The checks a subscribe makes before anything is sent (subscribe_matching's too).

    Raises:
        InvalidArgument: a value the server would refuse, said in the caller's terms.
    """
    given = {"policy": policy, "size": size, "every": every, "max_rate": max_rate}
    check_fields(Subscribe, {**given, "block_timeout": block_timeout, "window": window})
    if policy not in POLICIES:
        raise InvalidArgument(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    if policy != "unbounded" and (size is None or size < 1):
        raise InvalidArgument(f"policy {policy!r} needs size >= 1 (frames)")
    if every < 1:
        raise InvalidArgument("every must be 1 or more")
    if window is not None and window < 1:  # (the server's words would say null)
        raise InvalidArgument(
            f"window must be 1 or more frames in flight (or None for the server's "
            f"default), not {window!r}"
        )
    if max_rate is not None and not 0 < max_rate < math.inf:
        raise InvalidArgument("max_rate must be a positive number of frames per second")
    if block_timeout is not None and not 0 < block_timeout < math.inf:
        raise InvalidArgument("block_timeout must be a positive number of seconds (or None)")
    if view is not None and not isinstance(view, View):
        raise InvalidArgument(f"view must be a ts.View, not {type(view).__name__}")
    if type(prefetch) is not bool:
        raise InvalidArgument(f"prefetch must be True or False, not {prefetch!r:.80}")


def check_states(states: Sequence[str]) -> None:
    """The states a ``wait_state`` waits for: at least one, each a state.

    Raises:
        InvalidArgument: none (a wait for nothing would never end), or an unknown one.
    """
    if not states:
        raise InvalidArgument(f"wait_state needs at least one state of {', '.join(STATES)}")
    for state in states:
        if state not in STATES:
            raise InvalidArgument(f"unknown state {state!r}; states are {', '.join(STATES)}")


def checked_urls(url: str | Sequence[str]) -> list[str]:
    """``url`` as the list of URLs a client tries in turn, each checked (a malformed URL is
    the caller's error, never retried).

    Raises:
        InvalidArgument: not a str or a list of them, an empty list, a malformed URL.
    """
    if isinstance(url, str):
        urls = [url]
    elif isinstance(url, list | tuple):
        urls = list(url)
    else:  # None, a port number, bytes (which list() would turn into ints)
        raise InvalidArgument(
            "url must be a str such as 'tcp://127.0.0.1:9870', or a list of them, not "
            f"{type(url).__name__}"
        )
    if not urls:
        raise InvalidArgument("a client needs at least one URL")
    for one in urls:
        split_url(one)
    return urls


def check_meta(meta: Any) -> None:
    """A channel's meta as the server takes it (a control message's plain CBOR: text keys,
    no tags), or InvalidArgument here: the server cannot tell a value it refuses there from
    a broken client, and closed the connection (a datetime or an int key in meta did)."""
    if not isinstance(meta, Mapping) or not all(isinstance(key, str) for key in meta):
        raise InvalidArgument(
            "meta must be a dict with text keys, e.g. {'units': 'V', 'labels': ['x', 'y']}"
        )
    try:
        decode_control(encode_control({"meta": dict(meta)}))
    except (TypeError, ValueError, ProtocolError) as exc:
        raise InvalidArgument(
            "meta must hold plain values (numbers, text, bytes, True/False/None, and lists and "
            "dicts with text keys of them): no datetimes, sets, Decimals, numpy arrays or "
            f"integers past 64 bits ({exc})"
        ) from None


@async_context(
    'open_client() is entered with "async with ts.open_client(url) as client:" (in a plain '
    "script or a notebook, without trio: client = ts.SyncClient(url))"
)
async def open_client(
    url: str | Sequence[str],
    *,
    name: str | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    heartbeat: float | None = HEARTBEAT_S,
    payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
    reconnect: bool | Reconnect = True,
    wait_for_server: float = 0.0,
) -> AsyncIterator[Client]:
    """Connect to a server (``tcp://host:port`` or ``ws://host:port/ws``).

    Args:
        url: a URL, or a list of URLs tried in turn (first connection and reconnections).
        connect_timeout: seconds one URL may take up to the server's welcome (the TCP
            connect, a WebSocket's upgrade, the hello); then the next URL is tried.
        heartbeat: seconds between pings (at most a third of the server's idle timeout).
            When nothing at all comes from the server for three of them (at least 2 s), the
            server is gone. None: never give up on a silent server.
        payload_limits: what the payload decoder accepts from writers (a payload beyond it
            raises PayloadRefused from that one receive; the subscription goes on).
        reconnect: True (the default): a lost connection is retried with a jittered backoff
            (``ts.Reconnect()``: 0.1 s doubling to 5 s, never giving up) and everything comes
            back by itself; ``ts.Reconnect(initial, maximum, give_up_after)`` to tune it;
            False: a lost connection is final, and every waiting call, iteration and send
            fails with ConnectionClosed. The first connection is not retried (if no URL
            answers, this raises), unless ``wait_for_server`` says for how long.
        wait_for_server: seconds to keep trying the first connection while no server
            answers (a script started together with its server); 0: one try of each URL.
            A server that answers and refuses (a wrong token, a name in use) ends it at once.

    Raises:
        ConnectionClosed: the server cannot be reached or went away during the handshake.
        AuthError: wrong token. NameInUse: another client has that name.
    """
    if heartbeat is not None:
        heartbeat_s = positive_seconds(heartbeat)
        if heartbeat_s is None or heartbeat_s < MIN_HEARTBEAT_S:
            # (a microsecond heartbeat, seconds typed as milliseconds, kept a core busy)
            raise InvalidArgument(
                f"heartbeat must be a number of seconds >= {MIN_HEARTBEAT_S} or None, not "
                f"{heartbeat!r:.40}"
            )
        heartbeat = heartbeat_s
    if not isinstance(payload_limits, PayloadLimits):
        raise InvalidArgument(
            "payload_limits must be a ts.PayloadLimits (e.g. ts.PayloadLimits(max_depth=128)), "
            f"not {type(payload_limits).__name__}"
        )
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise InvalidArgument(
            "ssl_context must be an ssl.SSLContext (ssl.create_default_context(cafile=...)) "
            f"or None, not {type(ssl_context).__name__}"
        )
    connect_s = positive_seconds(connect_timeout)
    if connect_s is None:
        raise InvalidArgument(
            f"connect_timeout must be a positive number of seconds, not {connect_timeout!r:.40}"
        )
    connect_timeout = connect_s
    waiting = 0.0 if wait_for_server == 0 else positive_seconds(wait_for_server)
    if waiting is None:
        raise InvalidArgument(
            f"wait_for_server must be a number of seconds >= 0, not {wait_for_server!r:.40}"
        )
    if name is not None and not isinstance(name, str):
        raise InvalidArgument(f"name must be a str or None, not {type(name).__name__}")
    check_fields(Hello, {"name": name, "token": token})  # e.g. a lone surrogate, said here
    urls = checked_urls(url)
    client = Client(
        urls,
        name=name,
        token=token,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
        heartbeat=heartbeat,
        reconnect=Reconnect.from_argument(reconnect),
        payload_limits=payload_limits,
        wait_for_server=waiting,
    )
    # The background tasks never raise (they record failures on the client), so what
    # leaves this nursery is the caller's own exception: as itself, so that
    # `except ts.ChannelNotFound` works around `async with open_client(...)`.
    async with open_own_nursery() as nursery:
        # The client's tasks live in a nursery of their own, hosted by one task of this one:
        # a client.aclose() inside the block cancels them, not the block. With the block in
        # the tasks' nursery, what followed an aclose() (saving results) was skipped at its
        # first checkpoint without a word (an outside review); a server's aclose() never did.
        client._nursery = await nursery.start(_host_tasks)
        # A failed first connection is one error, whatever nurseries (a transport's)
        # wrapped it on its way.
        with unwrap_single_exception():
            await client._nursery.start(client._supervise)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()


async def _host_tasks(task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery for a client's background tasks until its ``aclose()`` cancels it."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def _options_unlike(made: dict[str, Any], asked: dict[str, Any]) -> str:
    """What a second create_channel() asked for that the channel was not made with, said
    after its name (a key by name only: it is a secret)."""
    unlike = [
        "another key" if name == "key" else f"{name}={made[name]!r} (not {asked.get(name)!r})"
        for name in made
        if asked.get(name) != made[name]
    ]
    return f" with {', '.join(unlike)}" if unlike else ""


class _Port:
    """The client as its RPC endpoint sees it (trio_stream._client_port.ClientPort)."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def name(self) -> str:
        return self._client.name

    @property
    def limits(self) -> Limits:
        return self._client.limits

    @property
    def closed(self) -> bool:
        return self._client.closed

    @property
    def payload_limits(self) -> PayloadLimits:
        return self._client.payload_limits

    def start_request(
        self, build: Callable[[int], ControlMessage], on_result: Callable[[Any], Any] | None = None
    ) -> PendingRequest:
        return self._client._start_request(build, on_result)

    def forget(self, request: PendingRequest) -> None:
        self._client._forget(request)

    def pending(self, ident: int) -> PendingRequest | None:
        return self._client._replies.get(ident)

    def send_control(self, message: ControlMessage) -> None:
        self._client._send_control(message)

    def handle(self, message_type: type[ControlMessage], handler: Callable[[Any], None]) -> None:
        self._client._handlers[message_type] = handler

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str) -> bool:
        nursery = self._client._nursery
        if nursery is None or self._client.closed:
            return False
        nursery.start_soon(fn, *args, name=name)
        return True

    async def wait_usable(self) -> None:
        await self._client.wait_usable()


# A name suggested for a typo is this close to the asked one, at most this much less close
# than the closest: 'demo/countr' got "did you mean 'demo/counter' or 'demo/sine'?", the
# second alike only by its prefix (a first hour).
_CLOSE_RATIO: Final = 0.6
_CLOSE_RATIO_BELOW_BEST: Final = 0.2


def _closest(name: str, names: list[str]) -> list[str]:
    """Up to three of ``names`` close to ``name``, closest first."""
    scored = []
    for candidate in difflib.get_close_matches(name, names, n=3, cutoff=_CLOSE_RATIO):
        scored.append((difflib.SequenceMatcher(None, name, candidate).ratio(), candidate))
    if not scored:
        return []
    best = scored[0][0]
    return [n for ratio, n in scored if ratio >= best - _CLOSE_RATIO_BELOW_BEST]
