"""What every connection of one server shares: config, broker, the client registry, counters."""

from __future__ import annotations

import os
import resource
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from .._config import ServerConfig
from .._exceptions import NameInUse
from .._protocol.bytes_like import BytesLike
from .._protocol.codec import encode_payload
from .._protocol.limits import Limits
from .._protocol.messages import ChannelDeleted, EncodedItems
from .absent_owners import AbsentOwners
from .broker import Broker, Channel, Writer
from .engine import make_engine
from .idle import Watchdog
from .listing import channel_record, encode_stepwise
from .outbox import BufferTotals
from .resume import DELETIONS_REMEMBERED_MAX, ResumeBook
from .rpc import Router
from .wrong_tokens import WrongTokens

SYSTEM_CHANNELS = ("$clients", "$channels", "$stats")
# A name's holder silent this long is said to be so when another connection claims the name:
# the clients ping every 5 s by default (heartbeat), so a healthy one is rarely silent longer.
SILENT_HOLDER_S: Final = 10.0
RUN_ID_BYTES: Final = 8  # a server run's id: 16 hex digits (the welcome's ``run``)

if TYPE_CHECKING:
    from .sender import Sender
    from .session import Session


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.limits: Limits = config.limits()
        # Deletions whose owners nobody could tell, for their next welcome (absent_owners.py).
        self.absent_owners = AbsentOwners()
        self.broker = Broker(
            on_event=self._channel_event,
            clock=trio.current_time,
            max_history_bytes=config.max_buffered_bytes,
            publish_window_frames=config.publish_window_frames,
            publish_window_bytes=config.publish_window_bytes,
        )
        # The memory engine leaves the publish path as the broker's own methods (no hop).
        self.engine = make_engine(self)
        self.publish: Callable[[Writer, float, BytesLike], None]
        self.publish_batch: Callable[[Writer, Sequence[float], Sequence[BytesLike]], None]
        if self.engine.clustered:
            self.publish = self.engine.publish
            self.publish_batch = self.engine.publish_batch
        else:
            self.publish = self.broker.publish
            self.publish_batch = self.broker.publish_batch
        self.buffer_totals = BufferTotals()  # every connection's outbox adds to it
        # While a reader task dispatches a read: the idle senders it woke (inbound.py, sender.py).
        self.direct_writes: list[Sender] | None = None
        self.sessions: dict[int, Session] = {}
        self.by_name: dict[str, Session] = {}  # claimed at hello, before the welcome
        # Set when the name's holder releases it, for hellos that wait for it (at most one
        # per held name: it goes with the release).
        self._name_released: dict[str, trio.Event] = {}
        self.rpc = Router(
            self.by_name.get,
            max_frame_bytes=config.max_frame_bytes,
            remote=self.engine.route_call if self.engine.clustered else None,
            connected=self.by_name.values,
            away=lambda name: self.resume.grace_left(name),
        )
        self.watchdog = Watchdog(self.limits.idle_timeout_s, self.sessions.get)
        self.wrong_tokens = WrongTokens()  # per address, for the log (handshake, admin, HTTP)
        # Uptime and rates on trio's clock, as the intervals that take them: under a test's
        # MockClock, 10 frames/s over 5 s read 1,512 frames/s and 0.04 s up (a trio developer).
        self.started = trio.current_time()
        # This server's run, in every welcome (a reconnecting client tells a restart by it).
        self.run_id = secrets.token_hex(RUN_ID_BYTES)
        self.closing = False
        self._next_client_id = 1
        self.frames_out = 0
        self.bytes_out = 0
        # From the start: the first interval's rates are counted too (they read 0).
        self._rate_mark: tuple[float, int, int, int, int] = (trio.current_time(), 0, 0, 0, 0)
        self._cpu_mark: tuple[float, float] = (time.monotonic(), time.process_time())
        self.cpu_percent = 0.0  # over the last stats interval (see update_rates)
        self.rates: dict[str, float] = {}
        # Housekeeping's (serve.py): a channel was created or given a lifetime (its deadline
        # may come before housekeeping's next wake), and a resume grace period to watch.
        self.on_channel_created: Callable[[Channel], None] | None = None
        self.wake_housekeeping: Callable[[], None] | None = None
        self.system = {name: self.broker.create_channel(name, None) for name in SYSTEM_CHANNELS}
        self.resume = ResumeBook(
            self.broker,
            config.resume_grace_s,
            self._wake_housekeeping,
            self.engine.end_orphan,
            self.absent_owners,
        )

    def _wake_housekeeping(self) -> None:
        """A resume grace period to watch (resume.py): housekeeping recomputes its deadline."""
        if self.wake_housekeeping is not None:
            self.wake_housekeeping()

    def next_client_id(self) -> int:
        ident = self._next_client_id
        self._next_client_id += 1
        return ident

    # -- system channels ---------------------------------------------------------------------
    def publish_system(self, name: str, value: dict[str, Any]) -> None:
        if self._read(name):
            channel = self.system[name]
            self.broker.publish_system(channel, b"".join(encode_payload(value, copy=False)))

    def _read(self, name: str) -> bool:
        """Someone reads the system channel ``name`` here: its events are worth building."""
        channel = self.system.get(name)
        return channel is not None and bool(channel.subscriptions)

    def _channel_event(self, kind: str, channel: Channel) -> None:
        if kind == "created":
            self.absent_owners.made_again(channel.name, channel.owner)
        if not self.engine.channel_event(kind, channel):
            return  # several nodes: another node's news, announced there
        if kind == "created" and self.on_channel_created is not None:
            self.on_channel_created(channel)
        if channel.name.startswith("$") or not channel.public:
            return  # private channels never show up in system channels
        if not self._read("$channels"):
            return  # (no reader to build it for: 20,000 readers let go at once made 20,000)
        event = {
            "event": kind,
            "channel": channel.name,
            "owner": channel.owner,
            "readers": channel.readers,
            "writers": len(channel.publishers),
            "held_by": channel.held_by(),
        }
        if kind == "deleted":  # deleted, expired, or gone with its owner: which one
            event["reason"] = channel.end_reason
        self.publish_system("$channels", event)

    def client_event(self, kind: str, session: Session) -> None:
        self.engine.client_event(kind, session)
        event = {"event": kind, **session.summary()}
        if self.engine.clustered:  # as the other nodes' news of their clients have it
            event["node"] = self.engine.node
        self.publish_system("$clients", event)

    def publish_stats(self) -> None:
        if self._read("$stats"):  # (stats() reads /proc and walks the leases)
            self.publish_system("$stats", self.engine.stats(self.stats()))

    async def channel_listing(self, session: Session) -> EncodedItems:
        """The channels ``session`` may see (public ones and its own private ones), as
        ``channels()`` lists them, made a step at a time (listing.py)."""
        channels = self.broker.channels

        def record(channel: Channel) -> dict[str, Any] | None:
            if channels.get(channel.name) is not channel or not channel.visible_to(session):
                return None  # (deleted since the listing began)
            return channel_record(channel)

        return await encode_stepwise(channels.values(), record)

    async def client_listing(self) -> EncodedItems:
        """The clients connected here, as ``clients()`` lists them, a step at a time."""
        sessions = self.sessions

        def record(session: Session) -> dict[str, Any] | None:
            return session.record() if sessions.get(session.client_id) is session else None

        return await encode_stepwise(sessions.values(), record)

    # -- clients -----------------------------------------------------------------------------
    def claim_name(self, session: Session) -> None:
        """Reserve ``session.name`` (at hello, before any await: two hellos cannot both win)."""
        holder = self.by_name.get(session.name)
        if holder is not None:
            raise NameInUse(
                f"a client named {session.name[:100]!r} is connected already"
                f"{self._silence_of(holder)}; pick another name (or close the one that has it: "
                "an earlier client of this program, say, made by a notebook cell run again)"
            )
        self.by_name[session.name] = session

    def _silence_of(self, holder: Session) -> str:
        """For a name's holder silent for a while: a process restarted after its host lost
        the old connection without closing it (a pulled cable, a NAT's timeout) meets its
        old self, which the server drops only once it has been silent for idle_timeout_s
        (a migrating team waited a minute without a word of why)."""
        silent = trio.current_time() - holder.heard_at()
        if silent < SILENT_HOLDER_S:
            return ""
        idle = self.limits.idle_timeout_s
        left = max(idle - silent, 0.0)
        return (
            f" (it has sent nothing for {silent:.0f} s: a connection its host lost? The server "
            f"drops one silent for idle_timeout_s, {idle:g} s: in {left:.0f} s)"
        )

    async def wait_name_released(self, name: str) -> bool:
        """For a hello refused ``name``: wait until its holder releases it, if the holder's
        connection has ended (its client killed and started again: the reset is in the
        kernel, not yet read by the holder's reader task) or may have (the kernel cannot
        tell: Session.connection_ended). Cancel it to stop waiting.

        Returns:
            False at once if the holder is connected as far as this host knows (the hello's
            NameInUse stands), else True once the name is free (the hello claims it again).
        """
        holder = self.by_name.get(name)
        if holder is None:
            return True
        if holder.connection_ended() is False:
            return False
        released = self._name_released.get(name)
        if released is None:
            released = self._name_released[name] = trio.Event()
        await released.wait()
        return True

    def release_name(self, session: Session) -> None:
        if self.by_name.get(session.name) is session:
            del self.by_name[session.name]
            self.engine.release_name(session.name)
            released = self._name_released.pop(session.name, None)
            if released is not None:
                released.set()

    def register(self, session: Session) -> None:
        """The handshake is done (its name is claimed already): the client is connected."""
        self.sessions[session.client_id] = session
        self.watchdog.start(session.client_id)
        self.client_event("connected", session)

    def tell_owner_deleted(self, channel: Channel, deleter: Session | None, reason: str) -> None:
        """``deleter`` (a holder of the key, an admin; None: a client of another node) deleted
        ``channel``: its owner, if it is another client connected here, is told, or it
        created the channel again at its next reconnect (a soak: 500 channels deleted by a
        key holder, back after one cut). An owner away is told in its welcome if it resumes
        (resume.ResumeBook.take_over), as is one whose resume is on its way to its welcome;
        and in the welcome of its next reconnection, if later (absent_owners.py)."""
        owner = None if channel.owner_id is None else self.sessions.get(channel.owner_id)
        if deleter is not None and (owner is deleter or deleter.name == channel.owner):
            return  # its own delete (or by its name's new process): its client knows
        channel.owner_notice = reason
        if owner is None:  # away: by its name (a reconnection of it may be on its way)
            self.tell_owner_by_name(channel.owner, channel.name, reason)
        else:
            self._tell_connected(owner, channel.name, reason)

    def tell_owner_by_name(self, owner: str, channel: str, reason: str) -> None:
        """``channel``, owned by the client named ``owner``, was deleted by another client:
        the client of that name here is told (connected, or on its way to its welcome: a
        resume, or a reconnection past its grace), else the next welcome of a reconnection
        of that name here names it (absent_owners.py). Also for another node's delete of a
        channel this node has none of (its owner moved here, say, and another node keeps it)."""
        session = self.by_name.get(owner)
        if session is None:
            self.absent_owners.note(owner, channel, reason)
        elif self.sessions.get(session.client_id) is session:
            self._tell_connected(session, channel, reason)
        else:
            self._tell_greeted(session, channel, reason)

    @staticmethod
    def _tell_greeted(greeted: Session, channel: str, reason: str) -> None:
        """Between its hello's claim and its welcome (several nodes: the name's claim is a
        round trip to Redis): that welcome names it, and the next one again should this
        one be lost (Session.deletions_told)."""
        greeted.welcome_deleted[channel] = reason
        _remember_told(greeted, channel, reason)

    @staticmethod
    def _tell_connected(owner: Session, channel: str, reason: str) -> None:
        owner.send_control(ChannelDeleted(channel=channel, reason=reason))
        # Said again in its next welcome, should a cut lose this (resume.Lease.untold).
        _remember_told(owner, channel, reason)

    def unregister(self, session: Session) -> None:
        if self.sessions.pop(session.client_id, None) is not None:
            self.client_event("disconnected", session)
        self.release_name(session)

    def uptime_s(self) -> float:
        return trio.current_time() - self.started

    def update_rates(self) -> None:
        """The server's rates and CPU over the last interval (each channel's: the broker's
        rate_steps, which housekeeping walks a step at a time after this)."""
        now = trio.current_time()
        broker = self.broker
        then, f_in, b_in, f_out, b_out = self._rate_mark
        dt = max(now - then, 1e-9)
        self.rates = {
            "frames_in_per_s": (broker.frames_in - f_in) / dt,
            "bytes_in_per_s": (broker.bytes_in - b_in) / dt,
            "frames_out_per_s": (self.frames_out - f_out) / dt,
            "bytes_out_per_s": (self.bytes_out - b_out) / dt,
        }
        self._rate_mark = (now, broker.frames_in, broker.bytes_in, self.frames_out, self.bytes_out)
        # CPU over the same interval: measured here, once per interval, so that clients
        # asking for stats() in between do not shorten the window the next figure covers.
        cpu = time.process_time()
        cpu_then_wall, cpu_then = self._cpu_mark
        self.cpu_percent = 100.0 * (cpu - cpu_then) / max(now - cpu_then_wall, 1e-9)
        self._cpu_mark = (now, cpu)

    def frames_lost(self) -> int:
        """Frames readers lost to their policies since the server started: a running total
        (a Prometheus counter), which does not go down when a lossy channel goes away."""
        return self.broker.frames_lost

    def buffered_bytes(self) -> int:
        """Bytes held for readers (their buffers) and for writers (frames parked for block
        readers): running totals the broker keeps, so that stats() never walks the sessions
        (with 10,000 connected, a sum over them took ~0.3 ms per request)."""
        return self.buffer_totals.buffered_bytes + self.broker.parked_bytes

    def stats(self) -> dict[str, Any]:
        broker = self.broker
        return {
            "connections": len(self.sessions),
            # Public ones only (system channels included): the count must not tell anyone
            # how many private channels exist.
            "channels": broker.public_channels,
            "frames_in": broker.frames_in,
            "frames_out": self.frames_out,
            "bytes_in": broker.bytes_in,
            "bytes_out": self.bytes_out,
            "frames_in_per_s": self.rates.get("frames_in_per_s", 0.0),
            "frames_out_per_s": self.rates.get("frames_out_per_s", 0.0),
            "bytes_in_per_s": self.rates.get("bytes_in_per_s", 0.0),
            "bytes_out_per_s": self.rates.get("bytes_out_per_s", 0.0),
            "frames_lost": self.frames_lost(),
            "buffered_bytes": self.buffered_bytes(),
            "parked_bytes": broker.parked_bytes,
            "kept_subscriptions": self.resume.kept_subscriptions(),
            "uptime_s": self.uptime_s(),
            "memory_bytes": resident_bytes(),
            "cpu_percent": self.cpu_percent,
        }


def resident_bytes() -> int:
    """Resident memory of this process (Linux /proc; peak RSS elsewhere)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _remember_told(session: Session, channel: str, reason: str) -> None:
    """``session``'s client was told of ``channel``'s deletion, by a notice or a welcome that
    a cut may lose: named again in its next welcome (resume.Lease.untold)."""
    told = session.deletions_told
    told.pop(channel, None)  # (to the end: the newest)
    told[channel] = reason
    if len(told) > DELETIONS_REMEMBERED_MAX:
        del told[next(iter(told))]
