"""Publisher: sends values into one channel of a Client."""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, SupportsFloat

import trio

from ._client_constants import CLOSE_DELIVER_S, LEAVE_TIMEOUT_S, OUTGOING_HIGH_WATER_BYTES
from ._exceptions import (
    ChannelNotFound,
    ClusterUnavailable,
    ConnectionClosed,
    FrameTooLarge,
    ResourceClosed,
    TrioStreamError,
)
from ._protocol.bytes_like import BytesLike
from ._protocol.codec import EncodedPayload, encode_payload
from ._protocol.compression import Compressor
from ._protocol.frames import PUBLISH, PUBLISH_HEAD, PUBLISH_WIRE_HEAD, publish_wire_head
from ._protocol.messages import ClosePublisher, OpenPublisher
from ._seconds import check_time
from ._util import counted, fresh, were

if TYPE_CHECKING:
    from ._client import Client

# A flooding publisher yields (and its sender writes) once this much is queued. Frames wait in
# the client until then, and the server gets them in bursts of this size: at 64 KiB (~500 small
# frames, ~1.5 ms of a Python writer's work) a flooded ``drop_oldest`` reader of size 100 found
# the server's buffer empty between bursts and got at most size + window frames per burst
# (S4's flooded channel: 105-133k frames/s, Redis 148-157k). At 16 KiB: 146-176k; at 32 KiB
# 113-141k; 8 KiB gained nothing more. The cost is S1's (block readers), 7-12 % fewer frames
# with cbor2 values (alternating runs against 64 KiB: 1 reader 248k against 274-292k, 4
# readers 515-538k against 559-580k), though CPU per frame did not move: the writer's 2.2 us
# (writer_cpu.py), the server's per delivery (cpu_per_frame.py, 1 and 4 readers). Not kept:
# writing each burst from send() itself and yielding every 64 KiB (S4 134-150k); 64 KiB
# for a writer its window held back within its last window of frames (S4 117-137k: a
# flooding writer of lossy readers is held back too).
YIELD_EVERY_BYTES: Final = 16 * 1024
# ... and once this much is queued when every reader of the channel takes every frame (the
# server says so: ``lossless`` in open_publisher's reply and the ``readers`` notice). Such
# readers lose nothing to a burst, and fewer, larger bursts cost the readers less: S1 with
# cbor2 values (block readers), alternating against 16 KiB, 1 reader 334k and 342k against
# 271k and 288k frames/s, 4 readers 671k and 653k against 625k and 613k; S4's flooded
# drop_oldest channel keeps 16 KiB (at 64 KiB it fell to 132k and 161k against 195k).
LOSSLESS_YIELD_EVERY_BYTES: Final = 64 * 1024


def yield_bytes(lossless: bool) -> int:
    """Queued bytes after which a flooding send() yields (see the two constants above)."""
    return LOSSLESS_YIELD_EVERY_BYTES if lossless else YIELD_EVERY_BYTES


# A frame is written by send() itself, not by the client's sender task, when that task waits
# idle and the connection wrote nothing for this long (s): a paced writer's frames skip a
# task switch and a scheduler turn each, while a flood stays batched into large writes (its
# sender is busy, or has just written, or frames are queued). With a lone frame written
# whenever the sender idled for a moment, a flood cost the server 7-10 % more CPU per
# delivery (smaller reads); measured with benchmarks/cpu_per_frame.py.
DIRECT_WRITE_INTERVAL_S: Final = 200e-6

# A publisher's writer key: 16 random bytes, 32 hex digits (the protocol allows 64 bytes).
WRITER_KEY_RANDOM_BYTES: Final = 16
# send() looks these up once here, not through module attributes for every frame.
_checkpoint_if_cancelled: Final = trio.lowlevel.checkpoint_if_cancelled
_wall_clock: Final = time.time
_wire_head: Final = PUBLISH_WIRE_HEAD.pack  # (body bytes, PUBLISH, pub_id, time)
_PUBLISH: Final = PUBLISH
_PUBLISH_HEAD_BYTES: Final = PUBLISH_HEAD.size
# try_first_value remembers at most this many types (a dict-then-array writer: two).
TRIED_TYPES_MAX: Final = 16


log = logging.getLogger(__name__)


def new_writer_key() -> str:
    """A publisher's own name, the same on every connection (open_publisher's ``writer``):
    random, so that no other publisher, of this process or of another, ever has it."""
    return secrets.token_hex(WRITER_KEY_RANDOM_BYTES)


class Publisher:
    """Sends values into one channel. ``readers`` is kept current by the server.

    Frames sent and not yet acknowledged stay in the publisher's window (references to the
    encoded pieces, no copy) until the server acknowledges them: after a reconnect the server
    says how many of them it took, and the rest go out again on the new connection, so a
    blip loses nothing and duplicates nothing. While disconnected, ``send`` keeps filling the
    window and waits once it is full. A publisher keeps one random name (its writer key) on
    every connection: a node of a cluster that its client moves to learns from Redis how many
    of its frames the old node had appended.
    """

    def __init__(
        self,
        client: Client,
        channel: str,
        key: str | None,
        pub_id: int,
        readers: int,
        keeps_history: bool = False,
        compress: Compressor | None = None,
        *,
        writer_key: str,
        lossless: bool = False,
    ) -> None:
        self.channel = channel
        self._writer_key = writer_key  # the one open_publisher sent (new_writer_key)
        self._claims = 0  # reopens sent: each names its number (open_publisher's ``claim``)
        self._compress = compress
        self.pub_id = pub_id
        self.readers = readers
        # Queued bytes after which send() yields: larger while every reader is lossless.
        self._yield_bytes = yield_bytes(lossless)
        # The channel keeps history: frames are wanted even with no reader (a late or
        # resuming reader gets them from the history).
        self._keeps_history = keeps_history
        # The types of the values tried while nobody read (see try_first_value).
        self._tried_types: set[type] = set()
        self._client = client
        self._key = key
        self._unacked: deque[tuple[int, list[BytesLike]]] = deque()  # (body bytes, pieces)
        self._unacked_bytes = 0
        # Of the window, while no connection writes it: those written on the connection that
        # was lost (unacknowledged: some may have reached readers); the rest never left.
        self._written_unacked = 0
        self._acked_here = 0  # frames acknowledged under the current pub_id
        self._drops_reported = False  # take_undelivered(): its caller says them, not the close
        # Frames let go of since it was opened, on every connection: acknowledged, or taken
        # by the server as a reopen's answer said (what a cluster's ``published`` counts).
        self._acked_total = 0
        self._live = True  # open on the current connection (pub_id is valid)
        # Frames go out as they are sent: open here, and not holding its window back for
        # readers that have not come back after a reconnect (see _hold_for_readers).
        self._writing = True
        # The readers the channel had when the connection was lost: after a reconnect the
        # window waits (for at most the client's grace) until as many are back.
        self._readers_at_cut = 0
        self._holding = False
        self._holds = 0  # holds begun: a hold's timer ends only its own hold
        self._acked_event = trio.Event()
        self._readers_event = trio.Event()
        self._ended: TrioStreamError | None = None
        self._closed = False
        self.sent = 0

    @property
    def compressor(self) -> Compressor | None:
        """What ``send`` applies to each encoded payload (``compress=`` of open_publisher), or
        None: a caller that encodes values itself (the SyncClient, in its own thread)
        compresses them the same way and sends an EncodedPayload."""
        return self._compress

    @property
    def wanted(self) -> bool:
        """Whether ``send`` takes frames: the channel has readers or keeps history, or it had
        readers when the connection was lost and they are not all back yet (the frames wait
        for them: see _hold_for_readers)."""
        return self.readers > 0 or self._keeps_history or self._awaiting_readers

    @property
    def undelivered(self) -> int:
        """Frames ``send`` took that wait for a connection, or that the server had not
        acknowledged when the connection was lost for good (0 while connected: those in the
        window are written and wait only for their acknowledgement)."""
        return 0 if self._writing else len(self._unacked)

    @property
    def acknowledged(self) -> int:
        """Frames the server has taken since this publisher was opened, on every connection
        (a flush that sees it grow is making progress)."""
        return self._acked_total

    @property
    def is_open(self) -> bool:
        """Not closed and not ended: ``send`` may be called (it may wait while reconnecting)."""
        return self._ended is None

    @property
    def failure(self) -> TrioStreamError | None:
        """What ended this publisher (ResourceClosed once closed, ChannelNotFound...), or None."""
        return self._ended

    @property
    def _awaiting_readers(self) -> bool:
        """Disconnected, or holding the window, with readers before the cut: what ``send``
        adds waits in the window for them (also over a second cut during a hold)."""
        return not self._writing and self._readers_at_cut > 0

    def _set_readers(self, readers: int, lossless: bool) -> None:
        self.readers = readers
        self._yield_bytes = yield_bytes(lossless)
        self._readers_event.set()
        if self._holding and readers >= self._readers_at_cut:
            self._release()

    def _acked(self, count: int) -> None:
        unacked = self._unacked
        if count >= len(unacked):  # a flood's ack often covers the whole window
            unacked.clear()
            self._unacked_bytes = 0
        else:
            popleft = unacked.popleft
            freed = 0
            for _ in range(count):
                freed += popleft()[0]
            self._unacked_bytes -= freed
        self._acked_here += count
        self._acked_total += count
        if self._written_unacked:  # (0 while connected: one test per ack on the hot path)
            self._written_unacked = max(0, self._written_unacked - count)
        self._acked_event.set()

    def _suspend(self) -> None:
        """The connection is lost: frames wait in the window for the next one."""
        if not self._holding:  # (a hold keeps the count from before the first cut)
            self._readers_at_cut = self.readers
        if self._writing:
            self._written_unacked = len(self._unacked)
        self._holding = False
        self._live = False
        self._writing = False
        self._acked_event.set()  # wakes aclose(), waiting for a hold's end

    async def _reopen(self) -> bool:
        """Open this publisher again on a new connection; False: the channel is missing.

        The request names our previous publisher id: the server answers how many of its
        frames it took (``taken``), or a node of a cluster how many frames of this publisher
        Redis holds (``published``, all connections and nodes together), so exactly the rest
        is sent again.
        """
        if not self.is_open:
            return True
        self._claims += 1
        try:
            await self._client._request_now(
                OpenPublisher,
                on_result=self._reopened,
                channel=self.channel,
                key=self._key,
                resume_pub=self.pub_id,
                writer=self._writer_key,
                claim=self._claims,
            )
        except (ChannelNotFound, ClusterUnavailable):
            return False  # retried later (its owner re-creates it; Redis comes back)
        except ConnectionClosed:
            raise
        except TrioStreamError as exc:
            self._fail(exc)
            self._client._resuming_pubs.discard(self)
        return True

    def _reopened(self, result: Any) -> Publisher:
        """The reopen's answer (in the reader task, before anything after it)."""
        client = self._client
        taken = result.get("taken")
        published = result.get("published")
        if isinstance(taken, int):
            # Frames the server took whose acknowledgement the lost connection never brought.
            self._acked(min(max(0, taken - self._acked_here), len(self._unacked)))
        elif isinstance(published, int):
            # A cluster's node answers with Redis's count of this publisher's frames, over
            # every connection and node: those of the window it has are let go, and the
            # count is ours from now on (it is less than ours only if Redis lost frames it
            # had acknowledged, with a restart: the channel is then a new epoch anyway).
            self._acked(min(max(0, published - self._acked_total), len(self._unacked)))
            self._acked_total = published
        self.pub_id = result["pub"]
        self._set_readers(result["readers"], result.get("lossless", False))
        self._keeps_history = result.get("keeps_history", False)
        self._acked_here = 0
        self._live = True
        client._resuming_pubs.discard(self)
        if self._closed:  # closed while the reopen was on its way
            client._forget(client._send_request(ClosePublisher, pub=self.pub_id))
            return self
        client._publishers[self.pub_id] = self
        repack = PUBLISH_WIRE_HEAD
        for size, pieces in self._unacked:
            time_s = repack.unpack_from(pieces[0])[3]
            pieces[0] = publish_wire_head(size, self.pub_id, time_s)
        if self.readers < self._readers_at_cut and self._hold_for_readers():
            return self
        self._release()
        self._acked_event.set()  # (_set_readers above woke the readers' waiters)
        return self

    def _hold_for_readers(self) -> bool:
        """Keep the window (and what ``send`` adds to it) from the wire until the readers
        the channel had before the cut are back, or the client's grace (its reconnect's
        ``maximum`` and RETRY_MAX_S) has passed; False: no hold (the client is closing).

        After a server restart the writer's client often reconnects before its readers'
        clients do (or before their resubscriptions find the channel it re-created): frames
        sent into a channel without readers go nowhere, so the window's frames, handed to
        ``send`` while disconnected, would be lost without a count, and ``send`` would return
        False until a reader came back. A ``block`` reader's writer must not lose them.
        """
        client = self._client
        grace = client._readers_grace_s
        nursery = client._nursery
        if grace <= 0 or nursery is None or client.closed:
            return False
        self._holding = True
        self._holds += 1
        nursery.start_soon(self._release_after, grace, self._holds, name="publisher hold")
        return True

    async def _release_after(self, grace: float, hold: int) -> None:
        await trio.sleep(grace)
        if self._holding and self._holds == hold:
            if self.readers or self._keeps_history or not self._unacked:
                # (none held: nothing is lost, and "the 0 values held ... are lost" was
                # noise in a trio developer's log)
                log.info(
                    "publisher of %r: %d of %d readers came back within %.1f s; sending on",
                    self.channel,
                    self.readers,
                    self._readers_at_cut,
                    grace,
                )
            else:  # not silently: the window's frames reach nobody
                log.warning(
                    "publisher of %r: none of its %d readers came back within %.1f s: the %d "
                    "values held for them go to a channel without readers, and are lost",
                    self.channel,
                    self._readers_at_cut,
                    grace,
                    len(self._unacked),
                )
            self._release()

    def _release(self) -> None:
        """The window goes out on the current connection; ``send`` writes again."""
        self._holding = False
        self._writing = True
        client = self._client
        for size, pieces in self._unacked:
            client._enqueue(pieces, size + 4)
        self._acked_event.set()  # wakes aclose(), waiting for the hold's end

    def _end(self, reason: str) -> None:
        # The server's reason names the channel most often ("channel 'x' was deleted"):
        # not said twice ("channel 'x' is gone: channel 'x' was deleted").
        named = f"'{self.channel[:80]}" in reason  # (the server cuts a long name in reasons)
        said = reason if named else f"channel {self.channel!r}: {reason}"
        self._ended = ChannelNotFound(f"{said}; this publisher has ended")
        self._holding = False
        self._acked_event.set()
        self._readers_event.set()

    def _fail(self, error: TrioStreamError) -> None:
        if self._ended is None:
            self._ended = error
        self._holding = False
        self._acked_event.set()
        self._readers_event.set()

    def _check(self) -> None:
        if self._ended is not None:
            raise fresh(self._ended)

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

    def try_first_value(self, value: Any) -> None:
        """Encode ``value`` (and drop it) while nobody reads, when it is the first of its type
        this publisher is given so: once per type, not a cost per frame. A value with no
        wire form (a type cbor2 lacks, a naive datetime) then fails at once, not when the
        first reader comes: a script tried alone ran clean, and stopped mid-measurement once
        its colleague subscribed (a first-hour audit); once per publisher only, a bad value
        after a good one returned False silently (another).

        Raises:
            TypeError, ValueError, FrameTooLarge: as ``send`` does for such a value (too
                large too: an 80 MiB array went nowhere, ``False``, until a reader came).
        """
        kind = type(value)
        if kind not in self._tried_types:
            pieces = encode_payload(value, copy=False)
            if self._compress is not None and kind is not EncodedPayload:
                pieces = self._compress(pieces)  # (as send does)
            size = _PUBLISH_HEAD_BYTES + sum(map(len, pieces))
            if size > self._client.limits.max_frame_bytes:
                raise _too_large(size, self._client.limits.max_frame_bytes)
            # (A refused one is tried again: each call raises. Bounded: a publisher given
            # values of many types encodes again after this many, as if new.)
            if len(self._tried_types) >= TRIED_TYPES_MAX:
                self._tried_types.clear()
            self._tried_types.add(kind)

    async def send(self, value: Any, *, time_s: SupportsFloat | None = None) -> bool:
        """Send one value; returns False (nothing on the wire) while nobody wants it.

        A channel wants frames while it has readers, and always when it keeps history
        (``history=N``): the newest values are there for late and resuming readers. While
        the client reconnects, frames wait in the publisher's window and go out on the new
        connection (exactly those the server had not taken).

        Waits only when the writer is a whole window ahead of the server (or the channel has a
        ``block`` reader whose buffer is full).

        Raises:
            FrameTooLarge: the encoded value exceeds the server's frame limit (nothing sent).
            ChannelNotFound: the channel was deleted.
            TypeError: the value has no wire form.
        """
        # The writer's hot path (once per frame): the window's state and the module's names
        # are read once into locals, the wire head is one pack (frames.PUBLISH_WIRE_HEAD).
        if self._ended is not None:
            raise fresh(self._ended)
        if time_s is not None:  # checked first: a bad one is refused readers or not
            time_s = check_time(time_s)
        client = self._client
        if self.readers <= 0 and not self._keeps_history and not self._awaiting_readers:
            self.try_first_value(value)
            await trio.lowlevel.checkpoint()
            # Closed meanwhile: the close counted this value as not sent (the SyncClient's
            # drops), so False (not sent, nobody read) would count it a second time.
            self._check()
            return False
        # Arrays copied: the frame may wait, after send() returns, for a write and an
        # acknowledgement (encode_payload). Compressed too: a compressor hands back what it
        # cannot shrink (or what is too small to try) as it got it.
        pieces = encode_payload(value)
        if self._compress is not None and type(value) is not EncodedPayload:
            pieces = self._compress(pieces)  # an EncodedPayload is compressed already
        size = _PUBLISH_HEAD_BYTES + (
            len(pieces[0]) if len(pieces) == 1 else sum(len(p) for p in pieces)
        )
        limits = client.limits
        if size > limits.max_frame_bytes:
            raise _too_large(size, limits.max_frame_bytes)
        unacked = self._unacked
        held_back = False  # by the window: a flood, whose frames go out in bulk
        while unacked and (
            len(unacked) >= limits.publish_window_frames
            or self._unacked_bytes + size > limits.publish_window_bytes
        ):
            held_back = True
            await self._next_event("_acked_event").wait()
            self._check()
        out_bytes = client._out_bytes
        if out_bytes > OUTGOING_HIGH_WATER_BYTES:
            await client._wait_out_space(self)
            self._check()
        elif out_bytes >= self._yield_bytes:
            await trio.lowlevel.checkpoint()
            self._check()  # closed meanwhile: a frame after the close would be unknown
        else:
            # Not a full checkpoint on purpose: yielding after every small frame would write
            # every frame on its own (one syscall each). Queued bytes and the writer window
            # bound how long we keep the CPU; cancellation is still honoured here.
            await _checkpoint_if_cancelled()
        pieces.insert(
            0,
            _wire_head(size, _PUBLISH, self.pub_id, _wall_clock() if time_s is None else time_s),
        )
        unacked.append((size, pieces))
        self._unacked_bytes += size
        if self._writing:  # else it waits in the window and goes out on reconnect
            write_now = client._write_now
            if (
                write_now is None
                or held_back
                or client._out
                or not self._write_direct(write_now, pieces)
            ):
                client._enqueue(pieces, size + 4)
        self.sent += 1
        return True

    def _write_direct(
        self, write_now: Callable[[list[BytesLike]], list[BytesLike]], pieces: list[BytesLike]
    ) -> bool:
        """Write one frame from send() itself (the sender waits idle); False: queue it."""
        client = self._client
        now = time.monotonic()
        if now - client._wrote_at < DIRECT_WRITE_INTERVAL_S:
            return False
        client._wrote_at = now
        client._write_through(write_now, pieces)
        return True

    async def wait_acknowledged(self) -> None:
        """Wait until the server has taken every frame sent so far into its readers' buffers.

        Those sent before the call: not the ones other tasks send meanwhile (a flush while
        another thread kept publishing never ended).

        Raises:
            ResourceClosed: the publisher was closed (by another task) while this waited.
        """
        # Frames leave the window in the order sent: acknowledged, or counted as taken
        # after a resume, each adding to _acked_total.
        sent = self._acked_total + len(self._unacked)
        while self._unacked and self._acked_total < sent:
            self._check()
            await self._next_event("_acked_event").wait()

    def _detach(self) -> bool:
        """Closed by its user: forget it; True if the server still has it open."""
        self._closed = True
        if self._ended is None:
            self._ended = ResourceClosed(f"the publisher of {self.channel[:80]!r} is closed")
        client = self._client
        client._resuming_pubs.discard(self)
        if self._holding:  # close_nowait: what was sent goes out before the close, now
            self._release()
        # A send() waiting for the window (a block reader that reads nothing) or a
        # wait_for_readers() in another task raises ResourceClosed now: no ack or reader may
        # ever come to wake it.
        self._acked_event.set()
        self._readers_event.set()
        client._wake_out_space_waiters()
        return self._live and client._publishers.pop(self.pub_id, None) is not None

    async def aclose(self) -> None:
        """Close the publisher; waits for the server's answer at most LEAVE_TIMEOUT_S.

        Holding its window for readers after a reconnect, it first waits for them (at most
        the rest of the grace): a writer that ends right after a server restart must not
        send its last frames to a channel its readers have not found again yet. While its
        client reconnects, with frames ``send`` took still in the window, it waits for the
        connection (at most CLOSE_DELIVER_S) so that they go out before the close.

        Frames written but not acknowledged when the server does not answer the close in
        time (a stalled connection the heartbeat has not found out yet) are logged at
        WARNING: some may have reached readers.

        Raises:
            ConnectionClosed: the connection was still down after CLOSE_DELIVER_S; says how
                many frames were not delivered (closed all the same, they are dropped).
        """
        if self._closed and self._drops_reported:
            # Closed already, its drops said (an aclose() in the publisher's block raised
            # them, and the block's end closes again): once is enough, or the code after the
            # block never runs.
            return
        undelivered = await self.close_delivering(deliver=True)
        if undelivered:
            raise ConnectionClosed(self.undelivered_message(undelivered))

    async def close_delivering(
        self, *, deliver: bool, before_close: Callable[[], object] | None = None
    ) -> int:
        """Close (see aclose), waiting for a lost connection only with ``deliver``; returns
        how many frames ``send`` took were not delivered (dropped with the close).

        ``before_close`` runs after every wait, right before the close, with no checkpoint
        between: what it counts as not sent yet cannot be sent after all (the SyncClient's
        queue, whose drain goes on sending while the close waits for a hold's end)."""
        undelivered = 0
        unanswered = False
        try:
            deadline = trio.current_time() + CLOSE_DELIVER_S
            while self._ended is None:
                if self._holding:
                    await self._next_event("_acked_event").wait()
                elif deliver and self._unacked and not self._writing:
                    with trio.move_on_at(deadline):
                        await self._next_event("_acked_event").wait()
                    if trio.current_time() >= deadline:
                        break
                else:
                    break
            undelivered = self.undelivered
        except BaseException:
            # Cancelled while waiting for the connection (an application's shutdown
            # deadline, Ctrl-C): what it drops is said here, as on leaving a publisher's
            # block on an exception; it went unsaid (a trio developer's audit).
            if not self._drops_reported:
                self.say_closed_early()
            raise
        finally:  # cancelled while waiting, it still closes (releasing the window first)
            if before_close is not None:
                before_close()
            # Written, not acknowledged: the close's answer would come after their
            # acknowledgements (one ordered stream), so without it they are not known taken.
            unacked = len(self._unacked)
            if self._detach():
                unanswered = await self._client._leave(ClosePublisher, pub=self.pub_id)
        if undelivered:
            # Its caller says them (aclose raises, the SyncClient's close too): the client's
            # close, which finds a publisher of a connection lost for good still listed,
            # must not log them a second time (an operator adding warnings up counted 36).
            self._drops_reported = True
        if unanswered and unacked > undelivered:
            # A stall the heartbeat has not found yet, or a very slow server: the close
            # returned after its wait, and the frames in the window were dropped without a
            # word (a network tester). Said, not raised: they may be on their way.
            log.warning(
                "%s", self.undelivered_message(unacked - undelivered, close_unanswered=True)
            )
        return undelivered

    def take_undelivered(self) -> int:
        """:attr:`undelivered`, for a caller that reports them itself (the SyncClient's close
        raises with the count): the client's close does not log them again."""
        self._drops_reported = True
        return self.undelivered

    @property
    def unconfirmed(self) -> int:
        """Frames written on a connection that still looks up and not acknowledged yet: on a
        stall the heartbeat has not found out yet, lost; on a slow server, on their way."""
        return len(self._unacked) if self._writing else 0

    @property
    def drops_reported(self) -> bool:
        return self._drops_reported

    def undelivered_message(
        self,
        count: int,
        *,
        close_unanswered: bool = False,
        waited: bool = True,
        client_closing: bool = False,
    ) -> str:
        """What a user reads of ``count`` values ``send`` took and the server may not have
        (``close_unanswered``: the close's own answer did not come, see close_delivering;
        ``waited``: False for a close that did not wait for the connection, on an error;
        ``client_closing``: the client closed with this publisher open, while reconnecting)."""
        sent = f"{counted(count, 'value')} sent to {self.channel[:80]!r} {were(count)}"
        if close_unanswered:
            return (
                f"{sent} not acknowledged: the server did not answer the publisher's close "
                f"within {LEAVE_TIMEOUT_S:g} s (a stalled connection?); some may have reached "
                "readers, none are sent again"
            )
        if isinstance(self._ended, ConnectionClosed):  # lost for good: nothing waited
            written = min(count, self._written_unacked)
            if written == count:
                return (
                    f"{sent} not delivered: the server had not acknowledged them when the "
                    f"connection was lost for good ({self._ended}); some may have reached "
                    "readers, none are sent again"
                )
            # Taken while the client reconnected, and it closed before a connection came
            # (its block cancelled, say): those never left this process. Said as if sent
            # and unacknowledged, the line told an operator they "may have reached readers".
            never = count - written
            said = f"{sent} not delivered: {counted(never, 'value')} {were(never)} "
            said += "waiting for a connection when the client closed"
            if written:
                said += (
                    f", and {written} written before the connection was lost {were(written)} "
                    "not acknowledged (some of those may have reached readers)"
                )
            return f"{said} ({self._ended}); they are dropped"
        if client_closing:
            # Not "a close waits 10 s": the client's close waits for no connection.
            return (
                f"{sent} not delivered: the connection was lost, and the client closed "
                "while it reconnected, with this publisher open (its close waits "
                f"{CLOSE_DELIVER_S:g} s for the connection: close it first); they are dropped"
            )
        if not waited:
            # "a close waits 10 s for it" read as if this one had (a trio developer's Ctrl-C).
            return (
                f"{sent} not delivered: the connection was lost, and the publisher closed "
                "without waiting for it to come back (on an exception such as a cancel or "
                "Ctrl-C, or close(flush=False)); they are dropped"
            )
        return (
            f"{sent} not delivered: the connection was lost and did not come back before the "
            f"publisher closed (a close waits {CLOSE_DELIVER_S:g} s for it); they are dropped"
        )

    def close_nowait(self) -> None:
        """Close the publisher without waiting for the server's answer (the request goes
        out; its answer is ignored): for leaving on an error, a cancel, or from outside trio."""
        client = self._client
        if self._detach() and client._connected:
            client._forget(client._send_request(ClosePublisher, pub=self.pub_id))

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if t is None:
            await self.aclose()
            return
        # Leaving on an exception (a cancel, Ctrl-C) waits neither for a connection to come
        # back nor for the server's answer (as client.publisher()'s does; this waited up to
        # a second for a frozen server: a cancellation audit): it logs what that drops.
        self.say_closed_early()
        self.close_nowait()

    def say_closed_early(self) -> None:
        """Log what a close that waits for nothing (on an exception, a cancel) does to the
        window, before it closes: drops it while the client reconnects; sends it while it
        is held for readers to come back (the close releases it: see _detach), which those
        readers get only if the server kept their subscriptions. It was said to be dropped
        (a review)."""
        if not self._holding:
            self.say_dropped(self.undelivered)
            return
        count = len(self._unacked)
        if count:
            self._drops_reported = True
            log.warning(
                "%s sent to %r %s held for its readers to come back after the reconnection "
                "(%d of %d back) and went out as the publisher closed without waiting for "
                "them: a reader not back yet gets them only if the server kept its "
                "subscription (within resume_grace_s; not after a server restart)",
                counted(count, "value"),
                self.channel[:80],
                were(count),
                self.readers,
                self._readers_at_cut,
            )

    def say_dropped(self, count: int) -> None:
        """Log the ``count`` values ``send`` took that a close on an error drops (none: no
        line): a writer loses nothing silently, even leaving on an exception."""
        if count:
            self._drops_reported = True  # (not again at the client's close)
            log.warning("%s", self.undelivered_message(count, waited=False))


def _too_large(size: int, limit: int) -> FrameTooLarge:
    return FrameTooLarge(
        f"this value encodes to {size} bytes, over the server's limit of {limit} bytes; send "
        "it in parts or raise max_frame_bytes on the server (serve --max-frame-bytes)"
    )
