"""Subscription: the messages of one channel, as a Client receives them."""

from __future__ import annotations

import enum
import math
import struct
import sys
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn

import trio

from ._client_constants import POLICIES
from ._exceptions import (
    ChannelNotFound,
    ClusterUnavailable,
    ConnectionClosed,
    InvalidArgument,
    ProtocolError,
    TrioStreamError,
)
from ._protocol.bytes_like import BytesLike
from ._protocol.codec import PayloadReader, decode_payload
from ._protocol.frames import (
    DATA_FIELDS_AT,
    DATA_HEAD_BYTES,
    credit_frame,
    data_sender,
    data_seq,
)
from ._protocol.limits import SUBSCRIBE_WINDOW_BYTES, PayloadLimits
from ._protocol.messages import Retune, Subscribe, Unsubscribe, check_fields
from ._records import Gap, GapKind, Message, Position
from ._stats import RateMeter, SubscriptionStatistics
from ._subscription_end import SubscriptionEnded
from ._util import fresh

if TYPE_CHECKING:
    from ._client import Client

# A reader with messages waiting yields this often (messages). Each yield is a pass of trio's
# run loop (an epoll_wait, the client's reader task trying a read that mostly finds nothing
# and re-arming epoll): ~6 us, which at 64 cost a flooded reader ~0.1 us a message. At 256 a
# busy reader still lets other tasks run every ~0.3 ms (its own work per message aside), and
# the CREDIT it queues each quarter window (250 frames in S1) still goes out with the next
# yield while three quarters of the window are in flight. Measured with
# benchmarks/cpu_per_frame.py, 4 readers, raw 100-byte frames: 1.48 -> 1.41 us/frame.
YIELD_EVERY_MESSAGES: Final = 256

# A subscription whose server said its channel lives on at a new epoch (a `sub_end` marked
# `again`: a cluster's Redis restarted empty, or the channel was created anew on another node)
# subscribes again by itself, since its position, and waits for the channel at most this long
# (s) before it ends with the server's reason after all. The channel is back within seconds
# when the node that keeps it is alive: its re-registration pass runs every second once Redis
# answers again, and an owner whose client must create it again is back within its reconnect
# backoff (5 s at most by default). The CLI's reader waits as long for a channel missing
# after a reconnect (cli's CHANNEL_BACK_S), and a pattern subscription's longest backoff is
# the same; a channel that is truly gone (its keeping node died with the Redis restart) ends
# its readers half a minute late, not never.
RESET_BACK_S: Final = 30.0

# The per-message path looks these up once here, not through two module attributes each time.
_checkpoint_if_cancelled: Final = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint: Final = trio.lowlevel.cancel_shielded_checkpoint
_DATA_FIELDS_AT: Final = DATA_FIELDS_AT
_DATA_HEAD_BYTES: Final = DATA_HEAD_BYTES
# A Message straight from its fields (a C call): the NamedTuple's __new__ is a Python function.
_new_tuple: Final = tuple.__new__


_PayloadDecoder = Callable[[BytesLike, int, PayloadLimits, PayloadReader | None], Any]


def _payload_bytes(data: BytesLike, offset: int, limits: object, reader: object) -> memoryview:
    """A DATA frame's payload undecoded (decode_payload's signature: see
    Subscription._keep_payloads_encoded). The frame is the message's alone, as a decoded
    array's memory is."""
    return memoryview(data)[offset:]


class _Keep(enum.Enum):
    """A keyword left out (where None means something else)."""

    KEEP = 0

    def __repr__(self) -> str:
        # What help() and signatures show: retune(max_rate=<unchanged>), not <_Keep.KEEP: 0>.
        return "<unchanged>"


def retune_changes(
    *,
    policy: str | None,
    size: int | None,
    every: int | None,
    max_rate: float | _Keep | None,
    block_timeout: float | None,
) -> dict[str, Any]:
    """The options a retune with these arguments changes, as the Subscribe fields say them
    (``max_rate``: a float, or None for no limit), checked before anything is sent.

    Raises:
        InvalidArgument: a bad value.
    """
    given = {"policy": policy, "size": size, "every": every, "block_timeout": block_timeout}
    rate_given = {} if isinstance(max_rate, _Keep) else {"max_rate": max_rate}
    check_fields(Retune, {**given, **rate_given})  # before the ranges below compare them
    if policy is not None and policy not in POLICIES:
        raise InvalidArgument(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    if size is not None and size < 1:
        raise InvalidArgument("size must be 1 or more (frames)")
    if every is not None and every < 1:
        raise InvalidArgument("every must be 1 or more")
    if max_rate is not None and not isinstance(max_rate, _Keep) and not 0 < max_rate < math.inf:
        raise InvalidArgument("max_rate must be a positive number of frames per second")
    if block_timeout is not None and not 0 < block_timeout < math.inf:
        raise InvalidArgument("block_timeout must be a positive number of seconds")
    changed: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if "block_timeout" in changed:
        changed["block_timeout"] = float(changed["block_timeout"])
    if not isinstance(max_rate, _Keep):
        changed["max_rate"] = None if max_rate is None else float(max_rate)
    return changed


class Subscription:
    """Messages of one channel, as this reader's server-side buffer releases them.

    After a reconnect it resumes by itself after the last frame it accounted for (received,
    or counted lost in a ``lost`` notice): the server replays what the channel's history
    still holds after it and counts the rest, and the first message after the gap carries
    ``msg.gap``. ``position`` is where it stands.
    """

    def __init__(
        self,
        client: Client,
        spec: dict[str, Any],
        result: dict[str, Any],
        since: Position | None = None,
        *,
        prefetch: bool = True,
    ) -> None:
        self.channel: str = spec["channel"]
        self._spec = spec  # the Subscribe fields, for resubscribing
        self.sub_id: int = result["sub"]
        self.window: int = result["window"]
        window_bytes: int = result.get("window_bytes", SUBSCRIBE_WINDOW_BYTES)
        self.lost = 0  # running total of frames lost to overflow
        self.received = 0
        self._client = client
        # One decoder and buffer for all this reader's values (codec.PayloadReader).
        self._payload_limits = client.payload_limits
        self._payload_reader = PayloadReader(client.payload_limits)
        self._undecoded = False  # see _keep_payloads_encoded
        self._epoch: str = result.get("epoch", "")
        self._last_seq = 0 if since is None else since[1]  # of the last message taken
        self._live = True  # subscribed on the current connection (sub_id is valid)
        self._frames: deque[bytearray] = deque()
        # Set only while a receiver waits: setting an Event per delivered frame was a
        # measurable part of a busy reader's cost.
        self._waiter: trio.Event | None = None
        # The last sender's name, raw and decoded: a channel's frames mostly come from one
        # writer, whose name is compared in place rather than copied out and decoded.
        self._sender_raw = b""
        self._sender_len = -1
        self._sender = ""
        # Losses the server reported in a `lost` notice (no DATA frame to carry them), as
        # [position, count, counted]: counted in ``lost`` once the application has read every
        # message before them, and carried to the message at ``position`` as its ``lost``.
        self._carried: deque[list[int]] = deque()
        # The seq the last `lost` notice accounted for (0: none in this epoch): the frames up
        # to it were counted lost, so a resume must not ask for them again (see _resume_seq).
        self._notice_seq = 0
        self._consumed = 0
        self._consumed_bytes = 0
        # How many times credit went back: the SyncClient ends a batch it takes into the
        # script's thread with the message that returned credit, so that the server, which
        # keeps what the last credit let go until the next one (outbox.Reader._released),
        # still has every message of the batch a killed script may not have saved.
        self._credit_returns = 0
        # Frames still queued from a previous connection when this subscription resumed that
        # the new one does not count in flight (a new subscription's: it never sent them;
        # _count_held): taking them returns no credit to it (which would let the server put
        # more than its window in flight).
        self._stale = 0
        # Return credit once a quarter of the window is consumed, in frames or in bytes (the
        # server also stops at ``window_bytes`` in flight: with large frames the byte bound
        # comes first, and counting frames alone would leave both sides waiting): few CREDIT
        # frames, and the server still has most of a window in flight to us while the credit
        # travels (on a busy 2-core machine a round trip takes milliseconds; half-window
        # batches made the pipeline stall measurably). Not on every wait as well: a reader
        # of a slow channel waits after each message, and a CREDIT per message cost a
        # syscall on both ends (S3 latency), while the quarter rule alone cannot stall.
        self._prefetch = prefetch
        self._credit_batch = self._credit_bytes = 0
        self._credit_quarters(window_bytes)
        self._ended = False
        # Reset by the server (a `sub_end` marked `again`) and waiting for the channel's new
        # life: that end's reason, and until when (trio time) it waits (RESET_BACK_S).
        self._reset_end: tuple[str, float] | None = None
        # Set when a reset wait begins or ends, the end of the subscription included: made
        # by the one that watches for that (the CLI's lines: _watch_resets), never on a
        # message's path.
        self._reset_news: trio.Event | None = None
        self._rides_resets = True  # see _end_at_reset
        self._closed = False  # by its user: see closed
        self._end_error: TrioStreamError | None = None
        self.end_reason: str | None = None
        self._meter = RateMeter()
        # Gaps waiting for their first message: [its index in ``received``, kind, recovered]
        # each, oldest first (see _expect_gap).
        self._gaps: deque[list[Any]] = deque()
        if "resume" in result:
            self._expect_gap(result["resume"])

    @property
    def position(self) -> Position:
        """The channel's epoch and the seq of the last message taken (0: none yet)."""
        return Position(self._epoch, self._last_seq)

    @property
    def closed(self) -> bool:
        """Closed by its user (``aclose()``, ``close_nowait()``, its ``async with``'s end),
        or with its client; a channel's end is ``end_reason``, not this (as SyncSubscription)."""
        return self._closed or self._client.closed

    # -- resuming ------------------------------------------------------------------------------
    def _suspend(self) -> None:
        """The connection is lost: wait for the next one (messages here stay readable)."""
        self._live = False

    def _resume_seq(self) -> int:
        """Where a resume continues: after the newest frame accounted for.

        That is the last frame received (taken or not), or the seq a `lost` notice after it
        accounted for: the frames it counted lost, if the history still holds them, would
        otherwise be replayed (delivered although counted lost, or counted lost twice) and
        the notice's count, carried to the first message after the resume, would land on a
        frame that directly follows the one before it. Notices and DATA frames arrive in
        the channel's order, so the newer of the two is the position.
        """
        seq = data_seq(self._frames[-1]) if self._frames else self._last_seq
        return max(seq, self._notice_seq)

    def _reset_by_server(self, reason: str) -> bool:
        """The server ended this subscription with ``again``: its channel lives on at a new
        epoch. Unless it has ended (closed by its user), it waits to resume as after a
        reconnect (the caller retries :meth:`_resubscribe`), at most RESET_BACK_S; messages
        here stay readable. True: it waits."""
        if self._ended or not self._rides_resets:
            return False
        self._live = False
        self._reset_end = (reason, trio.current_time() + RESET_BACK_S)
        self._tell_reset_news()
        return True

    def _watch_resets(self) -> trio.Event:
        """Internal (the CLI's lines about a reset wait): an event set at the next change of
        whether this subscription waits out a reset end (``_reset_end``), its end included.
        One watcher: each call replaces the event, so that a change after the watcher read
        the state is never missed."""
        self._reset_news = news = trio.Event()
        return news

    def _tell_reset_news(self) -> None:
        news = self._reset_news
        if news is not None:
            self._reset_news = None
            news.set()

    def _end_at_reset(self) -> None:
        """Another subscription reads this one's channel's new life (a pattern
        subscription's newer member of that name): a reset end ends this one, as any other
        end does (it must not follow the channel into that life too); at once if it waits
        for the new life already. The messages here stay readable."""
        self._rides_resets = False
        reset = self._reset_end
        if reset is not None and not self._ended:
            self._end_waiting(reset[0])

    def _end_waiting(self, reason: str) -> None:
        """End this subscription while it waits to resume (after a reconnect, or a reset
        end), with ``reason``: its retries stop; the messages here stay readable."""
        self._client._resuming_subs.discard(self)
        self._reset_end = None
        self._end(reason, None)

    async def _resubscribe(self) -> bool:
        """Subscribe again after a reconnect (or a reset end: :meth:`_reset_by_server`),
        after the newest frame accounted for.

        Returns:
            False while the channel is missing, or the cluster's Redis failed (both retried
            later); True when done (or ended: a reset end whose channel did not come back
            within RESET_BACK_S ends with the server's reason).
        """
        if self._ended:
            return True
        reset = self._reset_end
        if reset is not None and trio.current_time() >= reset[1]:
            self._end_waiting(reset[0])  # as the server said it (the channel is gone)
            return True
        # The server may have kept this subscription (the same server, within its resume
        # grace): it continues under a new id, with nothing lost. Not one it ended with a
        # reset: named, it would be answered with that end again.
        kept: dict[str, Any] = {} if reset is not None else {"resume_sub": self.sub_id}
        if kept:
            # The frames it got and has not returned credit for (taken since its last
            # CREDIT, or still queued): continued, the subscription counts them in its
            # window, and this one returns credit for them as they are taken (_resumed).
            # Not counted, they came on top of a whole window: this client held both, and
            # the server what it had got of every cut until a credit came.
            kept["held"] = self._consumed + len(self._frames) - self._stale
        try:
            await self._client._request_now(
                Subscribe,
                on_result=self._resumed,
                **self._spec,
                since_epoch=self._epoch,
                since_seq=self._resume_seq(),
                **kept,
            )
        except (ChannelNotFound, ClusterUnavailable):
            return False
        except ConnectionClosed:
            raise
        except TrioStreamError as exc:
            self._client._resuming_subs.discard(self)
            self._fail(exc)
        return True

    def _resumed(self, result: dict[str, Any]) -> Subscription:
        """The resubscription's answer (in the reader task, before its first DATA frame)."""
        client = self._client
        client._resuming_subs.discard(self)
        self.sub_id = result["sub"]
        self._live = True
        if self._reset_end is not None:
            self._reset_end = None
            self._tell_reset_news()
        if self._ended:  # closed while the request was on its way
            client._forget(client._send_request(Unsubscribe, sub=self.sub_id))
            return self
        client._subscriptions[self.sub_id] = self
        epoch = result.get("epoch", "")
        if epoch != self._epoch:  # a reset: seqs start again, the old notice's means nothing
            self._notice_seq = 0
        self._epoch = epoch
        # The window the server grants now: a pattern's retune while this waited to come
        # back changed its size, and credit kept going back by the old window's quarters
        # (25 of 100 awaited where 4 came: the channel stalled for good; a review).
        self.window = result.get("window", self.window)
        self._credit_quarters(result.get("window_bytes", SUBSCRIBE_WINDOW_BYTES))
        resume = result.get("resume")
        held = resume.get("held") if isinstance(resume, dict) else None
        if isinstance(held, int):
            self._count_held(held)
        else:
            # A new subscription (or an older server's): the old connection's credit is
            # void, and the frames still queued return none to this one. What the
            # application took stays counted in the statistics (it went missing from
            # ``frames`` after each reconnect).
            self._meter.add(self._consumed, self._consumed_bytes)
            self._consumed = self._consumed_bytes = 0
            self._stale = len(self._frames)
        if resume is not None:
            self._expect_gap(resume)
        return self

    def _count_held(self, held: int) -> None:
        """Continued with ``held`` of the frames this subscription said it holds (the
        newest) counted in its window: credit goes back for those, as they are taken (some
        may have been, since the resubscription went out), and not for the older ones."""
        uncounted = self._consumed + len(self._frames) - self._stale - held
        if uncounted > 0:
            taken = min(uncounted, self._consumed)
            if taken == self._consumed:
                self._meter.add(self._consumed, self._consumed_bytes)
                self._consumed = self._consumed_bytes = 0
            else:
                self._meter.add(taken, 0)  # (their bytes go with the rest's)
                self._consumed -= taken
            self._stale += uncounted - taken  # the oldest queued, after those stale already
        if self._consumed and (
            self._consumed >= self._credit_batch
            or self._consumed_bytes >= self._credit_bytes
            or not self._frames
        ):
            # Taken while this waited (_return_credit keeps them then): with nothing
            # queued, no later take would return their credit, and the server, counting
            # them in flight, might have none left to send with.
            self._return_credit()

    def _expect_gap(self, resume: dict[str, Any]) -> None:
        """Attach a Gap to the first message after the frames already received.

        The method that builds messages is swapped for the one that adds the gaps, and
        swapped back by it: the hot path pays nothing for gaps that are not pending. Each
        resubscription's gap keeps its own place: a second one before the first was read
        moved the first past the frames between them, so a new epoch began with no reset
        (a loss-accounting audit: two restarts 0.2 s apart, a slow reader).
        """
        # A kind this client does not know (a newer server's) is taken as a reset: what was
        # lost is not known.
        kind: GapKind = "resumed" if resume.get("kind") == "resumed" else "reset"
        recovered = int(resume.get("recovered", 0))
        at = self.received + len(self._frames)
        gaps = self._gaps
        if gaps and gaps[-1][0] == at:
            # Nothing came between the two: one gap, and a reset not yet reported stays one.
            last = gaps[-1]
            last[1] = "reset" if "reset" in (last[1], kind) else kind
            last[2] += recovered
        else:
            gaps.append([at, kind, recovered])
        self._message = self._message_after_gap  # type: ignore[method-assign,assignment]

    def _message_after_gap(self, frame: bytearray) -> Message:
        gaps = self._gaps
        build = Subscription._message_undecoded if self._undecoded else Subscription._message
        if gaps[0][0] != self.received:  # (``received``: this frame's index, before it)
            return build(self, frame)
        try:
            message = build(self, frame)
        except ProtocolError:  # a refused payload: the gap goes on the next message
            gaps[0][0] += 1
            raise
        _, kind, recovered = gaps.popleft()
        if not gaps:
            if self._undecoded:
                self._message = self._message_undecoded  # type: ignore[method-assign,assignment]
            else:
                del self._message  # the class's method again
        lost = message.lost if kind == "resumed" else None
        return message._replace(gap=Gap(kind, lost, recovered))

    def _deliver(self, frames: list[bytearray]) -> None:
        """DATA frame bodies for this subscription, in order (a run of one read's)."""
        self._frames.extend(frames)
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
        changed = retune_changes(
            policy=policy, size=size, every=every, max_rate=max_rate, block_timeout=block_timeout
        )
        rate: float | None = None  # absent on the wire: unchanged
        if "max_rate" in changed:
            rate = changed["max_rate"] or 0.0  # 0: the wire's "no rate limit"
        if self._ended:
            raise InvalidArgument(f"this subscription has ended ({self.end_reason})")

        def retuned(result: Any) -> None:
            # A resubscription after a reconnect asks for what the subscription is now.
            self._spec.update(changed)
            self._new_window(result)

        # Its id is read once the connection is usable: read before a reconnect, it named
        # this subscription on the lost connection, which is another one's on the new (the
        # other was retuned, and a block reader stalled: a cancellation audit).
        client = self._client
        await client.wait_usable()
        if not self._live:  # its channel is missing after the reconnect: not back yet
            after = "its channel's reset" if self._reset_end is not None else "the reconnect"
            raise ChannelNotFound(
                f"the subscription to {self.channel[:80]!r} is not back after {after} "
                "(its channel is missing, and it waits for it): retune once it is back"
            )
        # Taken even if this call is cancelled once it went out: the server changes the
        # window, and credit must follow it (a block reader stalled for good).
        await client._request_now(
            Retune,
            on_result=retuned,
            settle_late=True,
            sub=self.sub_id,
            policy=policy,
            size=size,
            every=every,
            max_rate=rate,
            block_timeout=changed.get("block_timeout"),
        )

    def _respec(self, changed: dict[str, Any]) -> None:
        """Resubscribe with ``changed`` (``retune_changes``'s) after a reconnect: a retune
        this subscription could not take while it waits to resume (a pattern subscription's
        retune). The server sets them as it takes a kept subscription back."""
        self._spec.update(changed)

    def _new_window(self, result: Any) -> None:
        """A retune's answer: credit goes back by the new window's quarters from now on."""
        self.window = result["window"]
        self._credit_quarters(result.get("window_bytes", SUBSCRIBE_WINDOW_BYTES))
        if self._consumed >= self._credit_batch or self._consumed_bytes >= self._credit_bytes:
            # A smaller window: what was taken under the old quarter must not wait for it.
            self._return_credit()

    @property
    def _has_queued(self) -> bool:
        """A frame is here, taken without asking the server for more (SyncSubscription)."""
        return bool(self._frames)

    def _credit_quarters(self, window_bytes: int) -> None:
        """Credit goes back at each quarter of the window (see __init__); without prefetch
        only when the application asks for a message and none is here (receive_nowait)."""
        if self._prefetch:
            self._credit_batch = max(1, self.window // 4)
            self._credit_bytes = max(1, window_bytes // 4)
        else:  # never reached by _message's count: no cost on its path
            self._credit_batch = self._credit_bytes = sys.maxsize

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def _end(self, reason: str, error: TrioStreamError | None) -> None:
        self._ended = True
        self.end_reason = reason
        self._end_error = error
        self._wake()
        self._tell_reset_news()

    def _fail(self, error: TrioStreamError) -> None:
        if not self._ended:
            self._end(str(error), error)

    def receive_nowait(self) -> Message:
        """The next message if one is here already.

        Raises:
            trio.WouldBlock: nothing yet.
            SubscriptionEnded: (a ``trio.EndOfChannel``) as ``receive``.
        """
        if not self._frames:
            if self._ended:
                if self._end_error is not None:
                    raise fresh(self._end_error)
                raise SubscriptionEnded(self.end_reason)
            if self._consumed and not self._prefetch:
                # Asked for a message with none here: only now may the server send the next
                # ones, so that they are the newest it holds (a lossy reader's buffer keeps
                # replacing them while the application works), not those that came meanwhile.
                self._return_credit()
            raise trio.WouldBlock
        return self._message(self._frames.popleft())

    def _message(self, frame: bytearray, _decode: _PayloadDecoder = decode_payload) -> Message:
        # The hot path of every reader: one unpack of the DATA head (frames.DATA_HEAD, the
        # wire format's owner), the sender name compared in place, one decode. (``_decode``:
        # _message_undecoded's; a default argument is read as fast as a global, where an
        # attribute holding the function cost a reader ~30 ns a message on Python 3.11.)
        # The frame is consumed whether or not it decodes: its credit goes back first, or a
        # few bad frames would shrink the window for good (and a reader that got only bad
        # frames would never receive anything again, from any writer).
        stale = self._stale  # (a truncated frame of a lost connection must not end this one)
        if stale:
            self._stale = stale - 1
            self._meter.add(1, len(frame))  # counted in the statistics, not credited
        else:
            consumed = self._consumed + 1
            consumed_bytes = self._consumed_bytes + len(frame)
            self._consumed = consumed
            self._consumed_bytes = consumed_bytes
            if consumed >= self._credit_batch or consumed_bytes >= self._credit_bytes:
                self._return_credit()
        # The frame is also counted as received (and a loss notice due on it is taken) before
        # its payload is decoded: a frame that fails to decode is still this position in the
        # stream, or every later notice would land one message late.
        try:
            lost, seq, time_s, name_len = _DATA_FIELDS_AT(frame)
        except struct.error:
            if self._carried:
                self._carry_loss(0)
            self.received += 1
            raise self._truncated(frame, stale) from None
        if lost:
            self.lost += lost
        if self._carried:
            lost = self._carry_loss(lost)
        self.received += 1
        self._last_seq = seq
        if name_len != self._sender_len or not frame.startswith(self._sender_raw, _DATA_HEAD_BYTES):
            # (A frame that ends inside the name never matches the last name in place.)
            try:
                self._sender_raw, self._sender = data_sender(frame, name_len)
            except ProtocolError:
                raise self._truncated(frame, stale) from None
            self._sender_len = name_len
        try:
            value = _decode(
                frame, _DATA_HEAD_BYTES + name_len, self._payload_limits, self._payload_reader
            )
        except ProtocolError:  # PayloadRefused too: raised for this frame, the stream goes on
            if lost:
                self._carry_to_next(lost)
            raise
        return _new_tuple(Message, (value, seq, self.channel, self._sender, time_s, lost, None))

    def _truncated(self, frame: bytearray, stale: int) -> ProtocolError:
        """A DATA frame cut in its fixed head or its sender name: unlike a payload that does
        not decode, the server broke the framing (docs/protocol.md section 1), and the
        connection ends as for any protocol error. Found here, where the frame is read, so
        that routing costs nothing per frame: this receive raises the error, the next ones
        the connection's end. Not when the frame came on a connection lost since
        (``stale``): the new one, perhaps to another server, broke nothing (a review)."""
        error = ProtocolError(f"truncated DATA frame ({len(frame)} bytes) on {self.channel!r:.80}")
        client = self._client
        if client._connected and self._live and not stale:
            client._protocol_error(error)
        return error

    def _keep_payloads_encoded(self) -> None:
        """Internal (the CLI's dump and bridge): from now on each message's ``data`` is its
        payload's bytes as they came, undecoded (a memoryview of the frame: a compressed
        payload still compressed, a non-Python writer's CBOR as it wrote it, a payload that is
        not CBOR as well), so no message raises for its payload. The method that builds
        messages is swapped for this subscription alone (as _expect_gap swaps it): the other
        subscriptions' per-message path is unchanged."""
        self._undecoded = True
        if "_message" not in self.__dict__:  # (else a gap's, which puts this one back after it)
            self._message = self._message_undecoded  # type: ignore[method-assign,assignment]

    def _message_undecoded(self, frame: bytearray) -> Message:
        return Subscription._message(self, frame, _payload_bytes)

    def _carry_to_next(self, lost: int) -> None:
        """A frame whose payload is refused raises instead of being a Message: the frames lost
        before it (counted in ``self.lost`` already) go on the next message's ``lost``, so
        that the messages' ``lost`` still add up to what was missed."""
        carried = self._carried
        position = self.received  # the next message's
        if carried and carried[0][0] == position:
            carried[0][1] += lost  # counted: a head at this position is counted by now
        else:
            carried.appendleft([position, lost, 1])

    def _lost_notice(self, count: int, seq: int | None) -> None:
        """The server dropped ``count`` frames after the last one it sent (a `lost` notice);
        ``seq``: the channel's seq it accounts this subscription for (None: an older server,
        and a resume continues after the last frame received, as it then did)."""
        if seq is not None and seq > self._notice_seq:
            self._notice_seq = seq
        position = self.received + len(self._frames)  # the message after those here now
        carried = self._carried
        if carried and carried[-1][0] == position:
            entry = carried[-1]
            entry[1] += count
            if entry[2]:  # counted in ``lost`` already: so is what this notice adds
                self.lost += count
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
            if not (self._live and client._connected):
                # Waiting to resume: the server keeps these in flight and counts them in
                # the window when this says it holds them (_resubscribe): their credit goes
                # back on the next connection.
                return
            client._send_soon(credit_frame(self.sub_id, self._consumed))
        self._meter.add(self._consumed, self._consumed_bytes)
        self._consumed = 0
        self._consumed_bytes = 0
        self._credit_returns += 1

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
            SubscriptionEnded: (a ``trio.EndOfChannel``) the channel ended (deleted, expired,
                ended with its owner), or this subscription was closed (``end_reason``
                "unsubscribed"); ``async for`` just stops. A ``while True: await
                sub.receive()`` loop catches it to end.
            ConnectionClosed: the connection is gone.
            LimitExceeded: the server ended this subscription at a memory limit.
        """
        # Cancellation is honoured only *before* a message is taken: a message taken and then
        # lost to a cancel or a timeout (move_on_after around receive) would be gone for good.
        await _checkpoint_if_cancelled()
        while True:
            try:
                message = self.receive_nowait()
            except trio.WouldBlock:
                # Waited for outside the handler: a timeout, Ctrl-C or a lost connection
                # while waiting would otherwise show "During handling of WouldBlock" first.
                pass
            else:
                break
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = trio.Event()
            try:
                await waiter.wait()
            except BaseException:
                # If nobody waits on it now: left behind, it would make ts.merge (which sets
                # its own) think another task still receives here. Another receiver waiting
                # on it keeps it, or the next frame would wake nobody.
                if not waiter.statistics().tasks_waiting:
                    self._unwake(waiter)
                raise
        if not self.received % YIELD_EVERY_MESSAGES:
            await _cancel_shielded_checkpoint()
        return message

    def __aiter__(self) -> Subscription:
        return self

    if not TYPE_CHECKING:  # mypy still says a plain `for` needs __iter__

        def __iter__(self) -> NoReturn:
            # Python's own "'Subscription' object is not iterable" said nothing of the fix, where
            # every other trio/sync mix-up says the line to write (a first hour).
            raise TypeError(
                'a trio client\'s subscription is read with "async for msg in sub:" (plain '
                '"for msg in sub:" is the SyncClient\'s)'
            )

    async def __anext__(self) -> Message:
        frames = self._frames
        if frames:  # the common case under load, without receive()'s loop
            await _checkpoint_if_cancelled()
            message = self._message(frames.popleft())
            if not self.received % YIELD_EVERY_MESSAGES:
                await _cancel_shielded_checkpoint()
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
        if self._detach():
            await self._client._leave(Unsubscribe, sub=self.sub_id)

    def _detach(self) -> bool:
        """Closed by its user: forget it; True if the server still has it."""
        self._closed = True
        client = self._client
        # A clean end that came first keeps its reason ("channel 'x' was deleted"); after an
        # error end, or none, a receive says "unsubscribed", as documented for a close.
        if not self._ended or self._end_error is not None:
            self._end("unsubscribed", None)
        # Dropped, as documented: a reader that closes to stop reading must not be handed
        # the frames that were on their way (a receive after the close returned them all).
        self._frames.clear()
        client._resuming_subs.discard(self)
        return self._live and client._subscriptions.pop(self.sub_id, None) is not None

    def close_nowait(self) -> None:
        """Unsubscribe without waiting for the server's answer (the request goes out; its
        answer is ignored): for leaving on an error, a cancel, or from outside trio."""
        client = self._client
        if self._detach() and client._connected:
            client._forget(client._send_request(Unsubscribe, sub=self.sub_id))

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if t is None:
            await self.aclose()
        else:  # an error, a cancel, Ctrl-C: no wait for the server (as client.subscribe()'s)
            self.close_nowait()
