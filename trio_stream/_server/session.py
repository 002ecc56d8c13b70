"""One client connection on the server: handshake, a reader task and a sender task.

The reader task parses frames and acts on them at once (requests touch only in-memory state,
publishes fan out synchronously through the broker). The sender task is the only writer to the
socket: it drains, in this order, control messages, reader counts, the subscriptions' buffers
through the fair scheduler and then writer acknowledgements, coalescing everything ready into
one write. Control messages a client does not read make the reader task stop reading that
client (CONTROL_HIGH_WATER_BYTES), so its requests cannot grow the server's memory; so do
frames its writers parked for full ``block`` readers beyond max_parked_bytes. The server's
watchdog (idle.py) closes a connection that has been silent for idle_timeout_s, and has the
session end ``block`` readers that have held their writers back longer than their
block_timeout (check_holds).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from .._exceptions import (
    AuthError,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    LimitExceeded,
    ProtocolError,
    TrioStreamError,
)
from .._protocol import frames as F
from .._protocol import messages as M
from .._protocol.bytes_like import BytesLike
from .._protocol.framing import frame_prefix
from .._protocol.limits import PROTOCOL_VERSION, SUBSCRIBE_WINDOW_BYTES, SUBSCRIBE_WINDOW_FRAMES
from .._transport import sniff
from .._transport.base import FrameTransport
from .._version import __version__
from .admin import admin_handlers
from .broker import HOLD_NOTICE_S, Channel, Publisher, Subscription
from .buffers import Policy, parse_policy
from .fairness import DeficitRoundRobin
from .state import ServerState

log = logging.getLogger(__name__)

SEND_BATCH_BYTES: Final = 256 * 1024  # one write's worth of coalesced frames
# Control messages (answers, notices) queued for one client and not yet written: above this,
# the server stops reading that client until they are written, so a client that sends
# requests and never reads the answers holds at most this much (plus one answer) here.
CONTROL_HIGH_WATER_BYTES: Final = 1 * 2**20
REFUSAL_FLUSH_S: Final = 1.0  # how long a refused handshake may take to deliver its error
_PUBLISH_HEAD_BYTES: Final = F.PUBLISH_HEAD.size  # where a PUBLISH frame's payload starts
MAX_CLIENT_NAME_CHARS: Final = 100  # and at most F.MAX_SENDER_NAME_BYTES of UTF-8 (DATA frames)


def control_frame(message: M.Message) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


class Session:
    # Slots: with more than 30 attributes an instance __dict__ stops sharing its keys and
    # costs ~1.5 KiB per connection. "__dict__" stays, so an attribute added later works.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_acks",
        "_close_requested",
        "_closing",
        "_control",
        "_control_bytes",
        "_control_space",
        "_drain",
        "_drained",
        "_early_frames",
        "_handlers",
        "_holding",
        "_last_heard",
        "_name_claimed",
        "_next_pub",
        "_next_sub",
        "_over_limit",
        "_parked_space",
        "_peer_gone",
        "_publish",
        "_rate_limited",
        "_reader_scope",
        "_readers",
        "_scheduler",
        "_wake",
        "block_bytes",
        "buffered_bytes",
        "client_id",
        "connected_at",
        "max_block_bytes",
        "max_buffered_bytes",
        "max_parked_bytes",
        "methods",
        "name",
        "parked_bytes",
        "publishers",
        "state",
        "subscriptions",
        "transport",
    )

    def __init__(self, state: ServerState, transport: FrameTransport) -> None:
        self.state = state
        self.transport = transport
        self.client_id = state.next_client_id()
        self.name = f"client-{self.client_id}"
        self.connected_at = time.time()
        self.buffered_bytes = 0
        self.max_buffered_bytes = state.limits.max_buffered_bytes
        self.block_bytes = 0
        self.max_block_bytes = self.max_buffered_bytes // 2  # see Subscription.admit
        self.parked_bytes = 0  # frames our writers sent that wait for block readers (broker)
        # What this connection's writers may have parked before it is read no more: one whole
        # writer window always fits, so one held-back channel never stops its other writers.
        self.max_parked_bytes = max(self.max_buffered_bytes, state.limits.publish_window_bytes)
        self._parked_space: trio.Event | None = None  # the reader waits for parked bytes to go
        # Block subs with frames parked for them; made on first use, like the events below:
        # an idle connection should hold nothing it may never need.
        self._holding: set[Subscription] | None = None
        self._name_claimed = False
        self._over_limit: list[Subscription] = []
        self.subscriptions: dict[int, Subscription] = {}
        self.publishers: dict[int, Publisher] = {}
        self.methods: list[str] = []
        self._next_sub = 1
        self._next_pub = 1
        self._control: list[bytes] = []
        self._control_bytes = 0  # queued in _control or being written by the sender
        self._control_space: trio.Event | None = None  # the reader waits for control to go
        self._acks: dict[int, Publisher] = {}
        self._readers: dict[int, int] = {}  # pub_id -> the newest reader count to tell it
        self._rate_limited: set[Subscription] = set()
        self._scheduler = DeficitRoundRobin()
        self._wake = trio.Event()
        self._early_frames: list[bytearray] = []
        self._reader_scope = trio.CancelScope()
        self._last_heard = trio.current_time()  # when the client last sent anything
        self._closing = False
        self._drain = False
        self._peer_gone = False
        self._close_requested = trio.Event()
        self._drained: trio.Event | None = None  # made when closing begins
        self._publish = state.broker.publish
        # Built on the first request: a connection that only pings (most idle clients) never
        # needs it, and it is ~3 KiB of bound methods and closures per connection.
        self._handlers: dict[type[M.Message], Callable[[Any], Any]] | None = None

    def _handler_table(self) -> dict[type[M.Message], Callable[[Any], Any]]:
        state = self.state
        self._handlers = {
            M.CreateChannel: self._create_channel,
            M.DeleteChannel: self._delete_channel,
            M.OpenPublisher: self._open_publisher,
            M.ClosePublisher: self._close_publisher,
            M.Subscribe: self._subscribe,
            M.Unsubscribe: self._unsubscribe,
            M.ListChannels: self._list_channels,
            M.ListClients: self._list_clients,
            M.GetStats: self._stats,
            **state.rpc.handlers(self),
            **admin_handlers(self),
        }
        return self._handlers

    # -- SessionPort (called by the broker) --------------------------------------------------
    def activate(self, sub: Subscription) -> None:
        self._scheduler.add(sub)
        self._wake.set()

    def schedule_rate(self, sub: Subscription) -> None:
        if sub not in self._rate_limited:
            self._rate_limited.add(sub)
            self._wake.set()

    def ack(self, pub: Publisher) -> None:
        pub.acks_due += 1
        self._acks[pub.pub_id] = pub
        self._wake.set()

    def readers_changed(self, pub: Publisher, readers: int) -> None:
        # A writer needs only the newest count: one pending notice per publisher, however
        # fast readers come and go, and however slowly this client reads.
        self._readers[pub.pub_id] = readers
        self._wake.set()

    def subscription_ended(self, sub: Subscription, error: Exception | None) -> None:
        """The channel ended (error None) or the server ended the subscription (error)."""
        self._rate_limited.discard(sub)
        if error is None and len(sub.buffer):
            sub.ending = True  # the scheduler sends the end right after the last frame
            if not sub.active and sub.ready():
                self.activate(sub)
            return
        self.state.broker.unsubscribe(sub)
        self._queue_control(self.finish(sub, error))

    def unparked(self) -> None:
        if self._parked_space is not None and self.parked_bytes <= self.max_parked_bytes:
            self._parked_space.set()

    def holding(self, sub: Subscription) -> None:
        """``sub`` (a block reader) just started holding its writers back: time it."""
        if self._holding is None:
            self._holding = set()
        self._holding.add(sub)
        limit = HOLD_NOTICE_S
        if sub.block_timeout is not None:
            limit = min(limit, sub.block_timeout)
        self.state.watchdog.wake_at(self.client_id, trio.current_time() + limit)

    def over_limit(self, sub: Subscription) -> None:
        self._over_limit.append(sub)
        self._wake.set()

    def _end_over_limit(self) -> None:
        for sub in self._over_limit:
            if sub.closed:
                continue
            self.subscription_ended(
                sub,
                LimitExceeded(
                    f"the server buffers more than max_buffered_bytes "
                    f"({self.max_buffered_bytes} bytes) for this connection, so the "
                    f"subscription to {sub.channel.name!r} was ended: read faster, use a "
                    "bounded policy (drop_oldest, block), or raise max_buffered_bytes"
                ),
            )
        self._over_limit = []

    def finish(self, sub: Subscription, error: Exception | None = None) -> bytes:
        """Forget ``sub`` and return its SubEnd frame."""
        self.subscriptions.pop(sub.sub_id, None)
        sub.closed = True
        if error is None:
            return control_frame(M.SubEnd(sub=sub.sub_id, reason="the channel ended"))
        return control_frame(
            M.SubEnd(sub=sub.sub_id, reason=str(error), error=type(error).__name__)
        )

    def publisher_ended(self, pub: Publisher, error: Exception) -> None:
        self.publishers.pop(pub.pub_id, None)
        self._forget_publisher(pub.pub_id)
        self.send_control(M.PubEnd(pub=pub.pub_id, reason=str(error)))

    def _forget_publisher(self, pub_id: int) -> None:
        """Nothing more goes to a publisher that has ended: no acks, no reader counts."""
        self._acks.pop(pub_id, None)
        self._readers.pop(pub_id, None)

    def send_control(self, message: M.Message) -> None:
        self._queue_control(control_frame(message))

    def send_control_frame(self, frame: bytes) -> None:
        """Queue a CONTROL frame encoded already (length prefix included)."""
        self._queue_control(frame)

    def _queue_control(self, frame: bytes) -> None:
        self._control.append(frame)
        self._control_bytes += len(frame)
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve this connection until it closes; never raises for the peer's faults."""
        try:
            with trio.fail_after(self.state.limits.handshake_timeout_s):
                await self._handshake()
        except trio.TooSlowError:
            self._release_name()
            log.info("%s: no hello within the handshake timeout", self.transport.remote)
            await self._refuse(ProtocolError("no hello within the handshake timeout"))
            return
        except ConnectionClosed:
            self._release_name()
            with trio.CancelScope(shield=True):
                await self.transport.aclose()
            return
        except TrioStreamError as exc:
            self._release_name()
            log.info("%s: handshake refused: %s", self.transport.remote, exc)
            await self._refuse(exc)
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

    async def _handshake(self) -> None:
        # A WebSocket client or a browser on the TCP port learns which port this is (sniff).
        stream = getattr(self.transport, "stream", None)
        if await sniff.answer_http_on_tcp_port(stream, self.state.config.http_port):
            raise ConnectionClosed("an HTTP request on the TCP port (answered with a 400)")
        frames = await self.transport.receive_frames()
        if frames[0][0] != F.CONTROL:
            raise ProtocolError("the first frame must be a CONTROL hello")
        # A client may pipeline requests behind its hello: they wait for the reader task.
        self._early_frames = frames[1:]
        hello = M.decode_message(frames[0])
        if not isinstance(hello, M.Hello):
            raise ProtocolError(f"expected hello, got {hello.OP}")
        if hello.v != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {hello.v} is not supported (this server speaks "
                f"{PROTOCOL_VERSION}); upgrade the client"
            )
        token = self.state.config.token
        if token is not None and (
            hello.token is None or not hmac.compare_digest(hello.token.encode(), token.encode())
        ):
            raise AuthError("wrong or missing token; pass token=... to open_client")
        if hello.name is not None:
            check_client_name(hello.name)
            self.name = hello.name
        # Claimed before the first await (the welcome's send): of two hellos with one name,
        # exactly one gets it, and the other its NameInUse.
        self.state.claim_name(self)
        self._name_claimed = True
        welcome = M.Welcome(
            v=PROTOCOL_VERSION,
            client_id=self.client_id,
            name=self.name,
            server=f"{self.state.config.name} trio_stream/{__version__}",
            limits=self.state.limits.to_wire(),
        )
        await self.transport.send([control_frame(welcome)])

    def _release_name(self) -> None:
        if self._name_claimed:
            self._name_claimed = False
            self.state.release_name(self)
            self.state.rpc.session_closed(self)  # a call routed to us meanwhile fails now

    async def _refuse(self, error: TrioStreamError) -> None:
        self._closing_for(error)
        with trio.move_on_after(REFUSAL_FLUSH_S):
            with contextlib.suppress(ConnectionClosed):
                await self.transport.send(
                    [control_frame(M.Error(id=None, type=type(error).__name__, message=str(error)))]
                )
        with trio.CancelScope(shield=True):
            await self.transport.aclose()

    def _closing_for(self, error: TrioStreamError) -> None:
        # Only a WebSocket has a close code and reason to set (1002 for a protocol error).
        closing_for = getattr(self.transport, "closing_for", None)
        if closing_for is not None:
            closing_for(error)

    def close(self, reason: str, *, drain: bool = False) -> None:
        """Ask the connection to say goodbye, flush and close.

        With ``drain`` (server shutdown) the reader may first take what is buffered for it,
        within the server's grace period; otherwise only control messages are flushed.
        """
        if not self._closing:
            self._closing = True
            self._drain = drain
            self.send_control(M.Goodbye(reason=reason))
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
        for sub in list(self.subscriptions.values()):
            broker.unsubscribe(sub)
        self.subscriptions.clear()
        for pub in list(self.publishers.values()):
            broker.close_publisher(pub)
        self.publishers.clear()
        self.state.rpc.session_closed(self)
        for channel in list(broker.owned_by(self.client_id)):
            if not channel.keep:
                broker.delete_channel(channel, f"channel {channel.name!r} ended with its owner")
        self.state.unregister(self)
        self._break_cycles()

    def _break_cycles(self) -> None:
        """Drop every reference that leads back here, so that reference counting alone frees
        this session once its tasks end: the server freezes long-lived objects out of the
        garbage collector's sight (gc_policy.py), and a frozen cycle is never collected."""
        self._handlers = None  # bound methods of this session
        self._acks = {}  # publishers, which refer to their session
        self._readers = {}
        self._rate_limited = set()  # subscriptions, likewise
        self._holding = None
        self._over_limit = []
        self._scheduler = DeficitRoundRobin()

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
            self._closing_for(exc)
            self.close(f"{type(exc).__name__}: {exc}")

    # -- called by the server's watchdog (idle.py) -------------------------------------------
    def heard_at(self) -> float:
        """When the server last read anything from this client (trio clock)."""
        return self._last_heard

    def close_idle(self, idle_s: float) -> None:
        self.close(f"idle for {idle_s:g} s (idle_timeout_s): send ping to stay connected")
        self._reader_scope.cancel()  # hear nothing more from it

    def check_holds(self, now: float) -> float:
        """Show and end block readers by how long they have held writers; next deadline."""
        deadline = math.inf
        if not self._holding:
            return deadline
        for sub in list(self._holding):
            if sub.closed or not sub.parked:
                self._holding.discard(sub)
                continue
            since = sub.parked[0].since
            timeout = sub.block_timeout
            if timeout is not None and now - since >= timeout:
                self._holding.discard(sub)
                self.subscription_ended(
                    sub,
                    LimitExceeded(
                        f"this block subscription to {sub.channel.name[:80]!r} held the "
                        f"channel's writers (and so its other readers) back for {timeout:g} s "
                        "(block_timeout): read faster, or subscribe with a larger "
                        "block_timeout (server default: block_timeout_s)"
                    ),
                )
                continue
            due = math.inf if timeout is None else since + timeout
            if not sub.held_reported:
                if now - since >= HOLD_NOTICE_S:
                    self.state.broker.hold_noticed(sub)
                else:
                    due = min(due, since + HOLD_NOTICE_S)
            if due == math.inf:
                self._holding.discard(sub)  # shown; parking again re-adds it
            deadline = min(deadline, due)
        return deadline

    async def _dispatch_all(self, frames: list[bytearray]) -> None:
        for frame in frames:
            self._dispatch(frame)
            if (
                self._control_bytes > CONTROL_HIGH_WATER_BYTES
                or self.parked_bytes > self.max_parked_bytes
            ):
                await self._wait_for_control_space()
                await self._wait_for_parked_space()

    async def _wait_for_parked_space(self) -> None:
        """Read nothing more from this client while its writers have more than
        max_parked_bytes parked for full block readers (each writer is bounded by its own
        credit window; this bounds a connection with many held-back writers)."""
        while self.parked_bytes > self.max_parked_bytes:
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
        while self._control_bytes > CONTROL_HIGH_WATER_BYTES:
            self._control_space = trio.Event()
            await self._control_space.wait()
        self._control_space = None

    def _dispatch(self, frame: bytearray) -> None:
        kind = frame[0]
        if kind == F.PUBLISH:
            pub_id, time_s = F.parse_publish(frame)
            pub = self.publishers.get(pub_id)
            if pub is None:
                if pub_id >= self._next_pub:
                    raise ProtocolError(f"PUBLISH for publisher {pub_id}, which was never opened")
                return  # the channel went away while this frame was in flight
            self._publish(pub, time_s, memoryview(frame)[_PUBLISH_HEAD_BYTES:])
        elif kind == F.CREDIT:
            sub_id, credit = F.parse_counter(frame)
            sub = self.subscriptions.get(sub_id)
            if sub is not None:
                sub.add_credit(credit)
        elif kind == F.CONTROL:
            self._on_control(M.decode_message(frame))
        else:
            raise ProtocolError(f"frame type {kind:#04x} is not valid from a client")

    def _on_control(self, message: M.Message) -> None:
        if isinstance(message, M.Ping):
            self.send_control(M.Pong(data=message.data))
            return
        if isinstance(message, M.Goodbye):
            self._peer_left()
            return
        handler = (self._handlers or self._handler_table()).get(type(message))
        if handler is None:
            raise ProtocolError(f"{message.OP} is not a message a client may send")
        if not isinstance(message, M.Request):
            handler(message)  # a notification (RPC): its handler answers later, if at all
            return
        try:
            result = handler(message)
        except (TrioStreamError, ValueError) as exc:
            name = type(exc).__name__
            if not isinstance(exc, TrioStreamError):
                name = InvalidArgument.__name__
            self.send_control(M.Error(id=message.id, type=name, message=str(exc)))
        else:
            self.send_control(M.Reply(id=message.id, result=result))

    # -- requests ----------------------------------------------------------------------------
    def _create_channel(self, msg: M.CreateChannel) -> None:
        broker = self.state.broker
        owned = sum(1 for _ in broker.owned_by(self.client_id))
        if owned >= self.state.limits.max_channels_per_client:
            raise LimitExceeded(
                f"this client owns {owned} channels, the limit (max_channels_per_client); "
                "delete some first"
            )
        broker.create_channel(
            msg.channel,
            self,
            public=msg.public,
            key=msg.key,
            lifetime=msg.lifetime,
            history=msg.history,
            single_writer=msg.single_writer,
            keep=msg.keep,
            meta=msg.meta,
        )

    def _delete_channel(self, msg: M.DeleteChannel) -> None:
        broker = self.state.broker
        channel = broker.lookup(msg.channel, msg.key, self)
        if channel.owner_id != self.client_id and (channel.key is None or msg.key is None):
            raise AuthError(
                f"only the owner of {msg.channel!r} ({channel.owner}) or a holder of its key "
                "may delete it"
            )
        broker.delete_channel(channel, f"channel {channel.name!r} was deleted")

    def _open_publisher(self, msg: M.OpenPublisher) -> dict[str, int]:
        channel = self.state.broker.lookup(msg.channel, msg.key, self)
        pub_id = self._next_pub
        pub = self.state.broker.open_publisher(channel, self, pub_id)
        self._next_pub += 1
        self.publishers[pub_id] = pub
        return {"pub": pub_id, "readers": channel.readers}

    def _close_publisher(self, msg: M.ClosePublisher) -> None:
        pub = self.publishers.pop(msg.pub, None)
        if pub is not None:
            self.state.broker.close_publisher(pub)
            self._forget_publisher(pub.pub_id)

    def _subscribe(self, msg: M.Subscribe) -> dict[str, int]:
        limits = self.state.limits
        if len(self.subscriptions) >= limits.max_subscriptions_per_client:
            raise LimitExceeded(
                f"this connection holds {len(self.subscriptions)} subscriptions, the limit "
                "(max_subscriptions_per_client); unsubscribe some first"
            )
        policy, size = parse_policy(msg.policy, msg.size)
        if msg.every < 1:
            raise InvalidArgument("every must be 1 or more")
        if msg.max_rate is not None and not (0 < msg.max_rate < math.inf):
            raise InvalidArgument("max_rate must be a positive number of frames per second")
        block_timeout = msg.block_timeout
        if block_timeout is None:
            block_timeout = self.state.config.block_timeout_s
        elif not 0 < block_timeout < math.inf:
            raise InvalidArgument("block_timeout must be a positive number of seconds (or None)")
        channel: Channel = self.state.broker.lookup(msg.channel, msg.key, self)
        window = min(msg.window or SUBSCRIBE_WINDOW_FRAMES, SUBSCRIBE_WINDOW_FRAMES)
        if size is not None:
            window = min(window, size)
        window = max(window, 1)
        sub = Subscription(
            self._next_sub,
            channel,
            self,
            policy,
            size,
            msg.every,
            msg.max_rate,
            window,
            SUBSCRIBE_WINDOW_BYTES,
            block_timeout if policy is Policy.BLOCK else None,
        )
        self._next_sub += 1
        self.subscriptions[sub.sub_id] = sub
        self.state.broker.subscribe(sub)
        return {"sub": sub.sub_id, "window": window, "window_bytes": SUBSCRIBE_WINDOW_BYTES}

    def _unsubscribe(self, msg: M.Unsubscribe) -> None:
        sub = self.subscriptions.pop(msg.sub, None)
        if sub is not None:
            self._rate_limited.discard(sub)
            self.state.broker.unsubscribe(sub)

    def _list_channels(self, msg: M.ListChannels) -> list[dict[str, Any]]:
        return self.state.channel_records(self)

    def _list_clients(self, msg: M.ListClients) -> list[dict[str, Any]]:
        return [s.record() for s in self.state.sessions.values()]

    def _stats(self, msg: M.GetStats) -> dict[str, Any]:
        return self.state.stats()

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
                for s in self.subscriptions.values()
                if s.channel.public or s.channel.name.startswith("$")
            ],
            "publishers": sorted(
                {p.channel.name for p in self.publishers.values() if p.channel.public}
            ),
            "methods": list(self.methods),
        }

    # -- sender ------------------------------------------------------------------------------
    async def _sender(self) -> None:
        transport = self.transport
        state = self.state
        scheduler = self._scheduler
        try:
            while True:
                if self._acks and not self._control and not scheduler:
                    # Acknowledgements alone can wait one scheduler turn, so that the DATA
                    # that the same publish woke on readers' connections is written first:
                    # a PUB_ACK syscall ahead of it showed in publish-to-receive latency.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                self._wake = trio.Event()
                if self._over_limit:
                    self._end_over_limit()
                pieces: list[BytesLike] = []
                control_bytes = self._control_bytes
                if self._control:
                    pieces.extend(self._control)
                    self._control = []
                if self._readers:
                    pieces.extend(self._readers_frames())
                deadline = self._release_rates() if self._rate_limited else math.inf
                if scheduler:
                    frames, nbytes = scheduler.fill(pieces, SEND_BATCH_BYTES)
                    state.frames_out += frames
                    state.bytes_out += nbytes
                if self._acks:
                    for pub in self._acks.values():
                        pieces.append(F.pub_ack_frame(pub.pub_id, pub.acks_due))
                        pub.acks_due = 0
                    self._acks = {}
                if pieces:
                    await transport.send(pieces)
                    if control_bytes:
                        self._control_bytes -= control_bytes
                        if self._control_space is not None:
                            self._control_space.set()
                    continue
                if self._closing and not (
                    self._drain and any(len(sub.buffer) for sub in self.subscriptions.values())
                ):
                    self._drained_event().set()
                    deadline = math.inf
                if deadline == math.inf:
                    await self._wake.wait()
                else:
                    # Only with a deadline: a cancel scope per wait is not free, and an
                    # expiring one (cancellation delivered by exception) far less so.
                    with trio.move_on_at(deadline):
                        await self._wake.wait()
        except ConnectionClosed:
            self._peer_left()

    def _readers_frames(self) -> list[bytes]:
        frames = [
            control_frame(M.Readers(pub=pub_id, readers=readers))
            for pub_id, readers in self._readers.items()
        ]
        self._readers = {}
        return frames

    def _release_rates(self) -> float:
        """Move max_rate frames whose time has come into their buffers; next deadline."""
        now = trio.current_time()
        deadline = math.inf
        for sub in list(self._rate_limited):
            if sub.closed:
                self._rate_limited.discard(sub)
            elif sub.next_due <= now:
                self._rate_limited.discard(sub)
                sub.release_rate(now)  # may schedule itself again (a full block buffer)
            else:
                deadline = min(deadline, sub.next_due)
        return deadline


def check_client_name(name: str) -> None:
    """Refuse a client name the wire cannot carry whole (DATA frames: 255 bytes of UTF-8)."""
    if not 1 <= len(name) <= MAX_CLIENT_NAME_CHARS or not name.isprintable():
        raise InvalidArgument(
            f"client names are 1 to {MAX_CLIENT_NAME_CHARS} printable characters "
            f"(and at most {F.MAX_SENDER_NAME_BYTES} bytes of UTF-8); pick another name"
        )
    size = len(name.encode())
    if size > F.MAX_SENDER_NAME_BYTES:
        raise InvalidArgument(
            f"client name of {size} bytes of UTF-8: names are at most "
            f"{F.MAX_SENDER_NAME_BYTES} bytes (and {MAX_CLIENT_NAME_CHARS} characters); "
            "pick a shorter name"
        )
    if name.startswith("$"):
        raise InvalidArgument("client names starting with '$' belong to the server")
