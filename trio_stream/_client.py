"""The trio client: ``async with open_client(url, name=...) as client``.

One reader task parses what the server sends and routes it (replies to waiting requests, DATA
to subscriptions, acknowledgements to publishers); one sender task is the only writer to the
socket and coalesces whatever is queued into one write, so a publisher that sends many small
frames costs few syscalls and never a round trip per frame.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from ._exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    ProtocolError,
    TrioStreamError,
    error_from_wire,
)
from ._protocol import frames as F
from ._protocol import messages as M
from ._protocol.array_view import View
from ._protocol.bytes_like import BytesLike
from ._protocol.codec import EncodedPayload, decode_payload, encode_payload
from ._protocol.compression import Compressor, compressor
from ._protocol.framing import frame_prefix
from ._protocol.limits import (
    DEFAULT_PAYLOAD_LIMITS,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    SUBSCRIBE_WINDOW_BYTES,
    Limits,
    PayloadLimits,
)
from ._records import ChannelInfo, ClientInfo, Message, ServerStats
from ._stats import RateMeter, SubscriptionStatistics
from ._transport import sniff
from ._transport.base import FrameTransport
from ._transport.connect import connect
from ._util import unwrap_single_exception

if TYPE_CHECKING:
    from ._rpc import RpcProxy

log = logging.getLogger(__name__)

POLICIES: Final = ("drop_oldest", "drop_newest", "clear", "unbounded", "block")
OUTGOING_HIGH_WATER_BYTES: Final = 4 * 2**20  # writers wait while more than this is unsent
SEND_BATCH_BYTES: Final = 1 * 2**20
CONNECT_TIMEOUT_S: Final = 10.0
YIELD_EVERY_BYTES: Final = 64 * 1024  # a publisher yields once this much is queued
YIELD_EVERY_MESSAGES: Final = 64  # a reader with messages waiting yields this often
# Liveness (docs/protocol.md section 2): the client pings at least every HEARTBEAT_S (and every
# third of the server's idle_timeout_s), and declares the server gone once nothing at all has
# come from it for SILENT_HEARTBEATS heartbeats (at least MIN_SILENCE_S): 15 s by default.
HEARTBEAT_S: Final = 5.0
SILENT_HEARTBEATS: Final = 3
MIN_SILENCE_S: Final = 2.0
# Leaving a subscription or publisher waits at most this long for the server's answer: a frozen
# server gets the request when it wakes up, and nobody is left waiting for it meanwhile.
LEAVE_TIMEOUT_S: Final = 1.0

T = TypeVar("T")


class _Keep(enum.Enum):
    """A keyword left out (where None means something else)."""

    KEEP = 0


class _Reply:
    __slots__ = ("done", "error", "on_result", "result")

    def __init__(self, on_result: Callable[[Any], Any] | None = None) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: TrioStreamError | None = None
        # Runs inside the reader task as the reply is parsed, before any frame after it:
        # a subscription must exist before its first DATA frame is dispatched.
        self.on_result = on_result


class Client:
    """A connection to a trio_stream server. Make one with :func:`open_client`."""

    def __init__(
        self,
        transport: FrameTransport,
        nursery: trio.Nursery | None,
        heartbeat: float | None = HEARTBEAT_S,
        payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
    ) -> None:
        self._transport = transport
        self.payload_limits = payload_limits  # what this client's payload decoder accepts
        self._nursery = nursery
        self._heartbeat_s = heartbeat
        self._heard = False  # something arrived since the last heartbeat (set per read batch)
        self._io_scope = trio.CancelScope()  # the reader, sender and heartbeat tasks
        self.name = ""
        self.client_id = 0
        self.server = ""
        self.limits = Limits()
        self._ids = itertools.count(1)
        self._replies: dict[int, _Reply] = {}
        self._subscriptions: dict[int, Subscription] = {}
        self._publishers: dict[int, Publisher] = {}
        self._shared_publishers: dict[str, Publisher] = {}
        self._out: list[BytesLike] = []
        self._out_bytes = 0
        self._out_wake = trio.Event()
        self._out_space = trio.Event()
        self._out_space.set()
        self._closed: ConnectionClosed | None = None
        self._goodbye: str | None = None
        # One dispatch shape with the server's Session: frame type -> handler, and for CONTROL
        # messages, message type -> handler.
        self._frame_handlers: dict[int, Callable[[bytearray], None]] = {
            F.DATA: self._on_data,
            F.PUB_ACK: self._on_pub_ack,
            F.CONTROL: self._on_control,
        }
        self._handlers: dict[type[M.Message], Callable[[Any], None]] = {
            M.Reply: self._on_reply,
            M.Error: self._on_error,
            M.Readers: self._on_readers,
            M.SubEnd: self._on_sub_end,
            M.Lost: self._on_lost,
            M.PubEnd: self._on_pub_end,
            M.Goodbye: self._on_goodbye,
            M.Pong: lambda msg: None,
        }
        from ._rpc import RpcEndpoint  # here, not at the top: _rpc imports this module

        self._rpc = RpcEndpoint(self)

    # -- connection ----------------------------------------------------------------------------
    async def _handshake(self, name: str | None, token: str | None) -> None:
        hello = M.encode_message(M.Hello(v=PROTOCOL_VERSION, name=name, token=token))
        await self._transport.send([frame_prefix(len(hello)), hello])
        # tcp:// on an HTTP port gets "HTTP/1.1 400 ...": name the port, not a huge frame.
        first = await sniff.peek(getattr(self._transport, "stream", None))
        if first and (wrong := sniff.describe_http_reply(f"tcp://{self._transport.remote}", first)):
            raise ConnectionClosed(wrong)
        frames = await self._transport.receive_frames()
        reply = M.decode_message(frames[0])
        if isinstance(reply, M.Error):
            raise error_from_wire(reply.type, reply.message)
        if not isinstance(reply, M.Welcome):
            raise ProtocolError(f"expected welcome, got {reply.OP}")
        self.name = reply.name
        self.client_id = reply.client_id
        self.server = reply.server
        self.limits = Limits.from_wire(reply.limits)
        max_frame = getattr(self._transport, "max_frame_bytes", None)
        if max_frame is not None:
            self._transport.max_frame_bytes = self.limits.max_frame_bytes  # type: ignore[attr-defined]
        for frame in frames[1:]:
            self._dispatch(frame)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionClosed(str(self._closed), self._closed.reason)

    def _fail(self, error: ConnectionClosed) -> None:
        """The connection is gone: wake everything that waits on it."""
        if self._closed is not None:
            return
        self._closed = error
        for reply in self._replies.values():
            reply.error = error
            reply.done.set()
        self._replies.clear()
        for sub in self._subscriptions.values():
            sub._fail(error)
        for pub in self._publishers.values():
            pub._fail(error)
        self._out_space.set()
        self._out_wake.set()

    def _lose(self, error: ConnectionClosed) -> None:
        """The connection is gone: the one place that says so, whatever noticed it.

        The reader (end of stream, a protocol error), the sender (a failed write) and the
        heartbeat (a silent server) all come here: every waiter fails with ``error`` and the
        connection's I/O tasks stop. A reconnect loop hooks on here.
        """
        self._fail(error)
        self._io_scope.cancel()

    async def aclose(self) -> None:
        """Say goodbye, flush what is queued (briefly) and close the connection."""
        if self._closed is None:
            goodbye = M.encode_message(M.Goodbye(reason="client closing"))
            self._enqueue([frame_prefix(len(goodbye)), goodbye])
            with trio.move_on_after(1.0):
                while self._out and self._closed is None:
                    self._out_space = trio.Event()
                    await self._out_space.wait()
            self._fail(ConnectionClosed("the client closed the connection"))
        with trio.CancelScope(shield=True):
            await self._transport.aclose()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- outgoing ------------------------------------------------------------------------------
    def _enqueue(self, pieces: list[BytesLike], nbytes: int | None = None) -> None:
        self._out.extend(pieces)
        self._out_bytes += nbytes if nbytes is not None else sum(len(p) for p in pieces)
        self._out_wake.set()
        if self._out_bytes > OUTGOING_HIGH_WATER_BYTES and self._out_space.is_set():
            self._out_space = trio.Event()

    async def _wait_out_space(self) -> None:
        while self._out_bytes > OUTGOING_HIGH_WATER_BYTES and self._closed is None:
            await self._out_space.wait()

    async def _sender(self) -> None:
        transport = self._transport
        try:
            while True:
                self._out_wake = trio.Event()
                if not self._out:
                    if self._closed is not None:
                        return
                    await self._out_wake.wait()
                    continue
                pieces, self._out = self._out, []
                self._out_bytes = 0
                self._out_space.set()
                await transport.send(pieces)
        except ConnectionClosed as exc:
            # The reader usually notices first, but a write can fail before the reader sees
            # the end of the stream: the error must say the same either way.
            self._lose(self._closed_by_server(exc))
        finally:
            # Cancelled from outside (the nursery around open_client): nothing more will be
            # sent, so nobody may keep waiting for an answer.
            self._fail(ConnectionClosed("the client is closed"))

    def _send_control(self, message: M.Message) -> None:
        self._check_open()
        body = M.encode_message(message)
        self._enqueue([frame_prefix(len(body)), body])

    def _send_request(
        self,
        cls: type[M.Request],
        on_result: Callable[[Any], Any] | None = None,
        **fields: Any,
    ) -> tuple[int, _Reply]:
        """Send a request without waiting: its id and the reply to wait on."""
        self._check_open()
        ident = next(self._ids)
        reply = _Reply(on_result)
        self._replies[ident] = reply
        self._send_control(cls(id=ident, **fields))
        return ident, reply

    async def _request(
        self,
        cls: type[M.Request],
        *,
        on_result: Callable[[Any], Any] | None = None,
        **fields: Any,
    ) -> Any:
        ident, reply = self._send_request(cls, on_result, **fields)
        try:
            await reply.done.wait()
        finally:
            self._replies.pop(ident, None)
        if reply.error is not None:
            raise reply.error
        return reply.result

    def _forget(self, request: tuple[int, _Reply]) -> None:
        """Nobody waits for this request's answer: it is ignored when it comes."""
        self._replies.pop(request[0], None)

    async def _leave(self, cls: type[M.Request], **fields: Any) -> None:
        """Close a subscription or publisher on the server, waiting for it only briefly.

        The request goes out at once; its answer is awaited at most LEAVE_TIMEOUT_S, shielded
        (a cancel does not lose the answer of a server that is merely slow), and not at all
        once the connection is gone. A late answer is ignored.
        """
        if self._closed is not None:
            return
        ident, reply = self._send_request(cls, **fields)
        try:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + LEAVE_TIMEOUT_S
                await reply.done.wait()
        finally:
            self._replies.pop(ident, None)
        if reply.error is not None and not isinstance(reply.error, ConnectionClosed):
            raise reply.error

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
        while self._closed is None:
            await trio.sleep(interval)
            now = trio.current_time()
            if self._heard:
                self._heard = False
                silent_s = 0.0
            else:
                silent_s += min(now - last, interval)
            last = now
            if dead_after is not None and silent_s >= dead_after:
                self._lose(
                    ConnectionClosed(
                        f"the server was silent for {silent_s:.1f} s (nothing, not even an "
                        f"answer to a ping; pings every {interval:g} s): it is frozen, "
                        "overloaded or unreachable. Connect again; raise heartbeat= of "
                        "open_client if the server is slow on purpose",
                        "server silent",
                    )
                )
                with trio.CancelScope(shield=True):
                    await self._transport.aclose()
                return
            if self._closed is None:
                self._send_control(M.Ping(data=None))

    async def _run_io(self) -> None:
        """The connection's tasks: the reader, the sender and the heartbeat."""
        with self._io_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._sender)
                nursery.start_soon(self._heartbeat)

    # -- incoming ------------------------------------------------------------------------------
    async def _reader(self) -> None:
        transport = self._transport
        handlers = self._frame_handlers
        subscriptions = self._subscriptions
        sub_id_of = F.data_sub_id
        data = F.DATA
        try:
            while True:
                # DATA frames go straight to their subscription's queue; each subscription
                # is woken once per run of its frames, not once per frame.
                woken: Subscription | None = None
                for frame in await transport.receive_frames():
                    if frame[0] == data:
                        sub = subscriptions.get(sub_id_of(frame))
                        if sub is not woken:
                            if woken is not None:
                                woken._wake()
                            woken = sub
                        if sub is not None:
                            sub._frames.append(frame)
                        continue
                    handler = handlers.get(frame[0])
                    if handler is None:
                        raise ProtocolError(
                            f"frame type {frame[0]:#04x} is not valid from a server"
                        )
                    handler(frame)
                if woken is not None:
                    woken._wake()
                self._heard = True  # per batch, not per frame: the heartbeat only needs "some"
                # The readers these frames woke go first: the next read usually finds nothing
                # and re-arms epoll, two syscalls that need not delay the application.
                await trio.lowlevel.cancel_shielded_checkpoint()
        except ConnectionClosed as exc:
            self._lose(self._closed_by_server(exc))
        except TrioStreamError as exc:  # ProtocolError, FrameTooLarge from the server
            log.error("closing the connection: %s", exc)
            self._lose(ConnectionClosed(f"protocol error from the server: {exc}"))
            with trio.CancelScope(shield=True):
                await transport.aclose()
        finally:
            self._fail(ConnectionClosed("the client is closed"))

    def _closed_by_server(self, exc: ConnectionClosed) -> ConnectionClosed:
        """The error for a lost connection: the server's goodbye, when it said one."""
        reason = self._goodbye
        message = f"the server closed the connection: {reason}" if reason else str(exc)
        return ConnectionClosed(message, reason)

    def _dispatch(self, frame: bytearray) -> None:
        handler = self._frame_handlers.get(frame[0])
        if handler is None:
            raise ProtocolError(f"frame type {frame[0]:#04x} is not valid from a server")
        handler(frame)

    def _on_data(self, frame: bytearray) -> None:
        sub = self._subscriptions.get(F.data_sub_id(frame))
        if sub is not None:
            sub._deliver(frame)

    def _on_pub_ack(self, frame: bytearray) -> None:
        pub_id, count = F.parse_counter(frame)
        pub = self._publishers.get(pub_id)
        if pub is not None:
            pub._acked(count)

    def _on_control(self, frame: bytearray) -> None:
        try:
            message = M.decode_message(frame)
        except M.UnknownOp:
            return  # a newer server's notice: nothing this client must act on
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"unexpected {message.OP} from the server")
        handler(message)

    def _on_reply(self, msg: M.Reply) -> None:
        reply = self._replies.get(msg.id)
        if reply is not None:
            reply.result = msg.result if reply.on_result is None else reply.on_result(msg.result)
            reply.done.set()

    def _on_error(self, msg: M.Error) -> None:
        error = error_from_wire(msg.type, msg.message)
        if msg.id is None:
            log.error("server error: %s", error)
            return
        reply = self._replies.get(msg.id)
        if reply is not None:
            reply.error = error
            reply.done.set()

    def _on_readers(self, msg: M.Readers) -> None:
        pub = self._publishers.get(msg.pub)
        if pub is not None:
            pub._set_readers(msg.readers)

    def _on_sub_end(self, msg: M.SubEnd) -> None:
        sub = self._subscriptions.pop(msg.sub, None)
        if sub is not None:
            error = error_from_wire(msg.error, msg.reason) if msg.error else None
            sub._end(msg.reason, error)

    def _on_lost(self, msg: M.Lost) -> None:
        # Frames dropped at the end of a burst, that no message will carry: count them.
        sub = self._subscriptions.get(msg.sub)
        if sub is not None:
            sub._lost_notice(msg.lost)

    def _on_pub_end(self, msg: M.PubEnd) -> None:
        pub = self._publishers.pop(msg.pub, None)
        if pub is not None:
            pub._end(msg.reason)
            if self._shared_publishers.get(pub.channel) is pub:
                del self._shared_publishers[pub.channel]

    def _on_goodbye(self, msg: M.Goodbye) -> None:
        self._goodbye = msg.reason
        log.info("server says goodbye: %s", msg.reason)

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
        await self._request(
            M.CreateChannel,
            channel=channel,
            public=public,
            key=key,
            lifetime=None if lifetime is None else float(lifetime),
            history=history,
            single_writer=single_writer,
            keep=keep,
            meta=meta,
        )

    async def delete_channel(self, channel: str, *, key: str | None = None) -> None:
        """Delete a channel: its readers' iterations end, its writers get ChannelNotFound."""
        await self._request(M.DeleteChannel, channel=channel, key=key)

    async def channels(self) -> list[ChannelInfo]:
        """Public channels and this client's own."""
        return [ChannelInfo.from_wire(c) for c in await self._request(M.ListChannels)]

    async def clients(self) -> list[ClientInfo]:
        return [ClientInfo.from_wire(c) for c in await self._request(M.ListClients)]

    async def stats(self) -> ServerStats:
        return ServerStats.from_wire(await self._request(M.GetStats))

    # -- RPC (trio_stream/_rpc.py) ---------------------------------------------------------------
    def expose(self, obj: object, name: str | None = None, *, thread: bool = False) -> list[str]:
        """Let other clients call ``obj``'s ``rpc_*`` methods (without the prefix).

        Methods may be sync or async; each call runs in its own task. Sync methods run in the
        trio thread and should be quick; with ``thread=True`` they run in a worker thread, one
        call at a time for this object. Exposing again replaces methods of the same name.

        Args:
            name: expose as a sub-service: ``rpc_move`` becomes ``"name.move"``.

        Returns:
            The names exposed.

        Raises:
            InvalidArgument: ``obj`` has no ``rpc_*`` methods, or ``name`` is not dotted
                identifiers.
        """
        return self._rpc.expose(obj, name, thread=thread)

    # `timeout` (not a cancel scope) is the contract: the proxy keeps it as its calls' default.
    async def rpc(self, provider: str, *, timeout: float | None = 5.0) -> RpcProxy:  # noqa: ASYNC109
        """A proxy for the methods that the client named ``provider`` exposes.

        Args:
            timeout: seconds for this look-up and, by default, for each call (None: no limit).

        Raises:
            RpcError: no such client connected, or it exposes no methods.
            RpcTimeout: the provider did not answer in time.
        """
        return await self._rpc.proxy(provider, timeout)

    # -- writing -------------------------------------------------------------------------------
    async def open_publisher(
        self, channel: str, *, key: str | None = None, compress: str | None = None
    ) -> Publisher:
        """A publisher for ``channel``; close it with ``aclose()`` (or use :meth:`publisher`).

        ``compress="zlib"`` or ``"zstd"`` compresses payloads of 64 KiB or more (see
        :mod:`trio_stream._protocol.compression`); readers decompress transparently.
        """
        compress_fn = compressor(compress)

        def register(result: Any) -> Publisher:
            pub = Publisher(self, channel, result["pub"], result["readers"], compress_fn)
            self._publishers[pub.pub_id] = pub
            return pub

        pub: Publisher = await self._request(
            M.OpenPublisher, on_result=register, channel=channel, key=key
        )
        return pub

    @asynccontextmanager
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
            pub._close_nowait()  # leaving on an error or a cancel: do not wait for the server
            raise
        await pub.aclose()

    async def publish(
        self, channel: str, value: Any, *, key: str | None = None, compress: str | None = None
    ) -> bool:
        """Send one value to ``channel``; False (nothing sent) while it has no readers.

        The publisher behind it is opened once per channel and kept, so repeated calls are
        as cheap as ``Publisher.send``. ``compress``: as for :meth:`publisher`.
        """
        compress_fn = compressor(compress)
        if compress_fn is not None:
            value = EncodedPayload(b"".join(compress_fn(encode_payload(value))))
        pub = self._shared_publishers.get(channel)
        if pub is None or pub._ended is not None:
            pub = await self.open_publisher(channel, key=key)
            self._shared_publishers[channel] = pub
        return await pub.send(value)

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
    ) -> Subscription:
        """Subscribe; close it with ``aclose()`` (or use :meth:`subscribe`)."""
        if policy not in POLICIES:
            raise InvalidArgument(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        if policy != "unbounded" and (size is None or size < 1):
            raise InvalidArgument(f"policy {policy!r} needs size >= 1 (frames)")
        if every < 1:
            raise InvalidArgument("every must be 1 or more")
        if max_rate is not None and not 0 < max_rate < math.inf:
            raise InvalidArgument("max_rate must be a positive number of frames per second")
        if block_timeout is not None and not 0 < block_timeout < math.inf:
            raise InvalidArgument("block_timeout must be a positive number of seconds (or None)")
        if view is not None and not isinstance(view, View):
            raise InvalidArgument(f"view must be a ts.View, not {type(view).__name__}")

        def register(result: Any) -> Subscription:
            window_bytes = result.get("window_bytes", SUBSCRIBE_WINDOW_BYTES)
            sub = Subscription(self, channel, result["sub"], result["window"], window_bytes)
            self._subscriptions[sub.sub_id] = sub
            return sub

        sub: Subscription = await self._request(
            M.Subscribe,
            on_result=register,
            channel=channel,
            key=key,
            policy=policy,
            size=size,
            every=every,
            max_rate=None if max_rate is None else float(max_rate),
            window=window,
            block_timeout=None if block_timeout is None else float(block_timeout),
            sender=sender,
            view=None if view is None else view.to_wire(),
        )
        return sub

    @asynccontextmanager
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
    ) -> AsyncIterator[Subscription]:
        """``async with client.subscribe("ch", policy=..., size=...) as sub: async for msg in sub``.

        Args:
            policy: what the server does when this reader's buffer of ``size`` frames is full:
                ``drop_oldest``, ``drop_newest``, ``clear``, ``unbounded`` or ``block``.
            size: the server-side buffer, in frames (ignored for ``unbounded``).
            every: keep every Nth frame of the channel.
            max_rate: deliver at most this many frames per second, always the newest.
            key: the channel's key, for channels that have one.
            window: frames in flight to this client (default: the server's, at most ``size``).
            block_timeout: ``block`` only: seconds this reader may hold the channel's writers
                back (and so its other readers) before the server ends the subscription
                with ``LimitExceeded`` (default: the server's ``block_timeout_s``).
            sender: only the frames written by the client of this name (filtered on the
                server; ``every`` and ``max_rate`` then count that writer's frames only).
            view: ``ts.View(slices=...)``: of each numpy frame only this strided sub-array,
                cut by the server (other frames arrive whole).
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
        )
        try:
            yield sub
        except BaseException:
            sub._close_nowait()  # leaving on an error or a cancel: do not wait for the server
            raise
        await sub.aclose()


class Publisher:
    """Sends values into one channel. ``readers`` is kept current by the server."""

    def __init__(
        self,
        client: Client,
        channel: str,
        pub_id: int,
        readers: int,
        compress: Compressor | None = None,
    ) -> None:
        self.channel = channel
        self._compress = compress
        self.pub_id = pub_id
        self.readers = readers
        self._client = client
        self._unacked: deque[int] = deque()
        self._unacked_bytes = 0
        self._acked_event = trio.Event()
        self._readers_event = trio.Event()
        self._ended: TrioStreamError | None = None
        self.sent = 0

    def _set_readers(self, readers: int) -> None:
        self.readers = readers
        self._readers_event.set()

    def _acked(self, count: int) -> None:
        unacked = self._unacked
        for _ in range(min(count, len(unacked))):
            self._unacked_bytes -= unacked.popleft()
        self._acked_event.set()

    def _end(self, reason: str) -> None:
        from ._exceptions import ChannelNotFound

        self._ended = ChannelNotFound(f"channel {self.channel!r} is gone: {reason}")
        self._acked_event.set()
        self._readers_event.set()

    def _fail(self, error: TrioStreamError) -> None:
        if self._ended is None:
            self._ended = error
        self._acked_event.set()
        self._readers_event.set()

    def _check(self) -> None:
        if self._ended is not None:
            raise self._ended

    def _next_event(self, attr: str) -> trio.Event:
        """The event the next ack (or readers change) sets, shared by every task waiting.

        A waiter that replaced an event another task still waits on would strand that task
        (send() and wait_acknowledged() run at once, e.g. under the SyncClient's flush()).
        """
        event: trio.Event = getattr(self, attr)
        if event.is_set():
            event = trio.Event()
            setattr(self, attr, event)
        return event

    async def wait_for_readers(self, count: int = 1) -> None:
        """Wait until the channel has at least ``count`` readers."""
        while self.readers < count:
            self._check()
            await self._next_event("_readers_event").wait()
        self._check()

    async def send(self, value: Any, *, time_s: float | None = None) -> bool:
        """Send one value; returns False (nothing on the wire) while the channel has no readers.

        Waits only when the writer is a whole window ahead of the server (or the channel has a
        ``block`` reader whose buffer is full).

        Raises:
            FrameTooLarge: the encoded value exceeds the server's frame limit (nothing sent).
            ChannelNotFound: the channel was deleted.
            TypeError: the value has no wire form.
        """
        self._check()
        client = self._client
        if self.readers <= 0:
            await trio.lowlevel.checkpoint()
            return False
        pieces = encode_payload(value)
        if self._compress is not None and type(value) is not EncodedPayload:
            pieces = self._compress(pieces)  # an EncodedPayload is compressed already
        size = F.PUBLISH_HEAD.size + (
            len(pieces[0]) if len(pieces) == 1 else sum(len(p) for p in pieces)
        )
        if size > client.limits.max_frame_bytes:
            raise FrameTooLarge(
                f"this value encodes to {size} bytes, over the server's limit of "
                f"{client.limits.max_frame_bytes} bytes; send it in parts or raise "
                "max_frame_bytes on the server"
            )
        limits = client.limits
        while self._unacked and (
            len(self._unacked) >= limits.publish_window_frames
            or self._unacked_bytes + size > limits.publish_window_bytes
        ):
            await self._next_event("_acked_event").wait()
            self._check()
        if client._out_bytes > OUTGOING_HIGH_WATER_BYTES:
            await client._wait_out_space()
            client._check_open()
        elif client._out_bytes >= YIELD_EVERY_BYTES:
            await trio.lowlevel.checkpoint()
        else:
            # Not a full checkpoint on purpose: yielding after every small frame would write
            # every frame on its own (one syscall each). Queued bytes and the writer window
            # bound how long we keep the CPU; cancellation is still honoured here.
            await trio.lowlevel.checkpoint_if_cancelled()
        self._unacked.append(size)
        self._unacked_bytes += size
        head = F.publish_wire_head(size, self.pub_id, time.time() if time_s is None else time_s)
        pieces.insert(0, head)
        client._enqueue(pieces, size + 4)
        self.sent += 1
        return True

    async def wait_acknowledged(self) -> None:
        """Wait until the server has taken every frame sent so far into its readers' buffers."""
        while self._unacked:
            self._check()
            await self._next_event("_acked_event").wait()

    async def aclose(self) -> None:
        """Close the publisher; waits for the server's answer at most LEAVE_TIMEOUT_S."""
        client = self._client
        if client._publishers.pop(self.pub_id, None) is not None:
            await client._leave(M.ClosePublisher, pub=self.pub_id)

    def _close_nowait(self) -> None:
        """Close the publisher without waiting for the server's answer."""
        client = self._client
        if client._publishers.pop(self.pub_id, None) is not None and not client.closed:
            client._forget(client._send_request(M.ClosePublisher, pub=self.pub_id))

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Subscription:
    """Messages of one channel, as this reader's server-side buffer releases them."""

    def __init__(
        self,
        client: Client,
        channel: str,
        sub_id: int,
        window: int,
        window_bytes: int = SUBSCRIBE_WINDOW_BYTES,
    ) -> None:
        self.channel = channel
        self.sub_id = sub_id
        self.window = window
        self.lost = 0  # running total of frames lost to overflow
        self.received = 0
        self._client = client
        self._payload_limits = client.payload_limits
        self._frames: deque[bytearray] = deque()
        # Set only while a receiver waits: setting an Event per delivered frame was a
        # measurable part of a busy reader's cost.
        self._waiter: trio.Event | None = None
        self._parse = F.DataParser().parse  # the wire format's owner, one per subscription
        # Losses the server reported in a `lost` notice (no DATA frame to carry them), as
        # [position, count, counted]: counted in ``lost`` once the application has read every
        # message before them, and carried to the message at ``position`` as its ``lost``.
        self._carried: deque[list[int]] = deque()
        self._consumed = 0
        self._consumed_bytes = 0
        # Return credit once a quarter of the window is consumed, in frames or in bytes (the
        # server also stops at ``window_bytes`` in flight: with large frames the byte bound
        # comes first, and counting frames alone would leave both sides waiting): few CREDIT
        # frames, and the server still has most of a window in flight to us while the credit
        # travels (on a busy 2-core machine a round trip takes milliseconds; half-window
        # batches made the pipeline stall measurably). Not on every wait as well: a reader
        # of a slow channel waits after each message, and a CREDIT per message cost a
        # syscall on both ends (S3 latency), while the quarter rule alone cannot stall.
        self._credit_batch = max(1, window // 4)
        self._credit_bytes = max(1, window_bytes // 4)
        self._ended = False
        self._end_error: TrioStreamError | None = None
        self.end_reason: str | None = None
        self._meter = RateMeter()

    def _deliver(self, frame: bytearray) -> None:
        self._frames.append(frame)
        self._wake()

    async def retune(
        self,
        *,
        policy: str | None = None,
        size: int | None = None,
        every: int | None = None,
        max_rate: float | _Keep | None = _Keep.KEEP,
        block_timeout: float | None = None,
    ) -> None:
        """Change this subscription on the server, between two frames: no gap, no duplicate.

        Args left out stay as they are; ``max_rate=None`` removes the rate limit. A smaller
        ``size`` keeps the newest frames (``drop_newest``: the oldest) and counts the others
        in ``lost``; leaving ``block`` lets the frames it held back in under the new policy.

        Raises:
            InvalidArgument: a bad value, or the subscription has ended.
        """
        if policy is not None and policy not in POLICIES:
            raise InvalidArgument(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        if size is not None and size < 1:
            raise InvalidArgument("size must be 1 or more (frames)")
        if every is not None and every < 1:
            raise InvalidArgument("every must be 1 or more")
        rate: float | None = None  # absent on the wire: unchanged
        if max_rate is None:
            rate = 0.0  # the wire's "no rate limit"
        elif not isinstance(max_rate, _Keep):
            if not 0 < max_rate < math.inf:
                raise InvalidArgument("max_rate must be a positive number of frames per second")
            rate = float(max_rate)
        if block_timeout is not None and not 0 < block_timeout < math.inf:
            raise InvalidArgument("block_timeout must be a positive number of seconds")
        if self._ended:
            raise InvalidArgument(f"this subscription has ended ({self.end_reason})")
        await self._client._request(
            M.Retune,
            on_result=self._new_window,
            sub=self.sub_id,
            policy=policy,
            size=size,
            every=every,
            max_rate=rate,
            block_timeout=None if block_timeout is None else float(block_timeout),
        )

    def _new_window(self, result: Any) -> None:
        """A retune's answer: credit goes back by the new window's quarters from now on."""
        self.window = result["window"]
        window_bytes = result.get("window_bytes", SUBSCRIBE_WINDOW_BYTES)
        self._credit_batch = max(1, self.window // 4)
        self._credit_bytes = max(1, window_bytes // 4)
        if self._consumed >= self._credit_batch or self._consumed_bytes >= self._credit_bytes:
            # A smaller window: what was taken under the old quarter must not wait for it.
            self._return_credit()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def _end(self, reason: str, error: TrioStreamError | None) -> None:
        self._ended = True
        self.end_reason = reason
        self._end_error = error
        self._wake()

    def _fail(self, error: TrioStreamError) -> None:
        if not self._ended:
            self._end(str(error), error)

    def receive_nowait(self) -> Message:
        """The next message if one is here already.

        Raises:
            trio.WouldBlock: nothing yet. trio.EndOfChannel: the channel ended.
        """
        if not self._frames:
            if self._ended:
                if self._end_error is not None:
                    raise self._end_error
                raise trio.EndOfChannel(self.end_reason)
            raise trio.WouldBlock
        return self._message(self._frames.popleft())

    def _message(self, frame: bytearray) -> Message:
        # The hot path of every reader: one parse (the sender name cached), one decode.
        # The frame is consumed whether or not it decodes: its credit goes back first, or a
        # few bad frames would shrink the window for good (and a reader that got only bad
        # frames would never receive anything again, from any writer).
        self._consumed += 1
        self._consumed_bytes += len(frame)
        if self._consumed >= self._credit_batch or self._consumed_bytes >= self._credit_bytes:
            self._return_credit()
        lost, seq, time_s, sender, offset = self._parse(frame)
        if lost:
            self.lost += lost
        value = decode_payload(frame, offset, self._payload_limits)
        if self._carried:
            lost = self._carry_loss(lost)
        self.received += 1
        return Message(value, seq, self.channel, sender, time_s, lost)

    def _lost_notice(self, count: int) -> None:
        """The server dropped ``count`` frames after the last one it sent (a `lost` notice)."""
        position = self.received + len(self._frames)  # the message after those here now
        carried = self._carried
        if carried and carried[-1][0] == position:
            carried[-1][1] += count
        else:
            carried.append([position, count, 0])
        if position == self.received:  # the application has read up to the gap
            self._count_carried()

    def _carry_loss(self, lost: int) -> int:
        """``lost`` for the message being read, with a notice's loss that lands on it."""
        carried = self._carried
        if carried[0][0] == self.received:
            lost += carried.popleft()[1]
        if carried and carried[0][0] == self.received + 1:
            self._count_carried()
        return lost

    def _count_carried(self) -> None:
        head = self._carried[0]
        if not head[2]:
            head[2] = 1
            self.lost += head[1]

    def _return_credit(self) -> None:
        """Tell the server how many messages the application took since the last CREDIT."""
        if self._consumed and not self._ended:
            client = self._client
            if not client.closed:
                client._enqueue(
                    [F.credit_frame(self.sub_id, self._consumed)], F.COUNTER_FRAME_BYTES
                )
        self._meter.add(self._consumed, self._consumed_bytes)
        self._consumed = 0
        self._consumed_bytes = 0

    def statistics(self) -> SubscriptionStatistics:
        """Frames, bytes and losses so far, and the rates (see SubscriptionStatistics)."""
        return self._meter.statistics(
            self._consumed, self._consumed_bytes, self.lost, len(self._frames)
        )

    def _wake_with(self, event: trio.Event) -> bool:
        """Have the next frame (or the end) set ``event``: how ts.merge waits on several.

        False if a task waits in receive() already (replacing its event would strand it).
        """
        waiter = self._waiter
        if waiter is not None and waiter is not event and not waiter.is_set():
            return False
        self._waiter = event
        return True

    def _unwake(self, event: trio.Event) -> None:
        """Undo :meth:`_wake_with` (a set event left behind would make receive() spin)."""
        if self._waiter is event:
            self._waiter = None

    async def receive(self) -> Message:
        """The next message, waiting for it.

        Raises:
            trio.EndOfChannel: the channel ended (deleted, expired); ``async for`` just stops.
            ConnectionClosed: the connection is gone.
            LimitExceeded: the server ended this subscription at a memory limit.
        """
        # Cancellation is honoured only *before* a message is taken: a message taken and then
        # lost to a cancel or a timeout (move_on_after around receive) would be gone for good.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                message = self.receive_nowait()
            except trio.WouldBlock:
                if self._waiter is None:
                    self._waiter = trio.Event()
                await self._waiter.wait()
                continue
            if not self.received % YIELD_EVERY_MESSAGES:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return message

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._frames:  # the common case under load, without receive()'s loop
            await trio.lowlevel.checkpoint_if_cancelled()
            message = self._message(self._frames.popleft())
            if not self.received % YIELD_EVERY_MESSAGES:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Unsubscribe (messages not taken yet are dropped).

        Waits for the server's answer at most LEAVE_TIMEOUT_S, and not at all once the
        connection is gone.
        """
        client = self._client
        self._end("unsubscribed", None)
        if client._subscriptions.pop(self.sub_id, None) is not None:
            await client._leave(M.Unsubscribe, sub=self.sub_id)

    def _close_nowait(self) -> None:
        """Unsubscribe without waiting for the server's answer."""
        client = self._client
        self._end("unsubscribed", None)
        if client._subscriptions.pop(self.sub_id, None) is not None and not client.closed:
            client._forget(client._send_request(M.Unsubscribe, sub=self.sub_id))

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def open_client(
    url: str,
    *,
    name: str | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    heartbeat: float | None = HEARTBEAT_S,
    payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
) -> AsyncIterator[Client]:
    """Connect to a server (``tcp://host:port`` or ``ws://host:port/ws``).

    Args:
        heartbeat: seconds between pings (at most a third of the server's idle timeout).
            When nothing at all comes from the server for three of them (at least 2 s), the
            server is gone: every waiting call, iteration and send fails with
            ConnectionClosed. None: never give up on a silent server.
        payload_limits: what the payload decoder accepts from writers (a payload beyond it
            raises PayloadRefused from that one receive; the subscription goes on).

    Raises:
        ConnectionClosed: the server cannot be reached or went away during the handshake.
        AuthError: wrong token. NameInUse: another client has that name.
    """
    if heartbeat is not None and not 0 < heartbeat < math.inf:
        raise InvalidArgument(
            f"heartbeat must be a positive number of seconds or None, not {heartbeat!r:.40}"
        )
    async with connect(url, max_frame_bytes=MAX_FRAME_BYTES, ssl_context=ssl_context) as transport:
        client = Client(transport, None, heartbeat, payload_limits)
        try:
            with trio.fail_after(connect_timeout):
                await client._handshake(name, token)
        except trio.TooSlowError:
            raise ConnectionClosed(f"no welcome from {url} within {connect_timeout} s") from None
        # The background tasks never raise (they record failures on the client), so an
        # exception group leaving this nursery carries the caller's own exception: unwrap it
        # so that `except ts.ChannelNotFound` works around `async with open_client(...)`.
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                client._nursery = nursery
                nursery.start_soon(client._run_io)
                try:
                    yield client
                finally:
                    with trio.CancelScope(shield=True):
                        await client.aclose()
