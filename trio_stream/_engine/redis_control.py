"""A small message bus between nodes over Redis pub/sub (control only, never frames).

Each message is a CBOR map ``{"k": kind, "f": from_node, "b": body}`` published on the
broadcast channel or on one node's own channel. One larger than :data:`MAX_INLINE_BYTES`
(an RPC call, answer or batch of streamed values, up to ``max_frame_bytes``) is stored under
a key of its own instead and published as ``{"k": kind, "f": from_node, "r": key}``; the
receiving bus reads it back (takes it, if it was sent to that node alone) before it
dispatches the messages after it. Pub/sub is fire-and-forget: a message sent while a node's
subscription is reconnecting is lost, so nothing that must not be lost rides here alone
(reader counts are also resynchronised from Redis by the heartbeat, at once when the
subscription is back; RPC envelopes have their own timeouts). The subscription is reopened
whenever it ends.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, Final

import anyio
import cbor2
import coredis
import trio
from coredis.retry import NoRetryPolicy

from .._util import exception_leaves
from .redis_keys import KeySpace
from .redis_streams import REDIS_ERRORS
from .retry_log import RetryLog

logger = logging.getLogger(__name__)

RESUBSCRIBE_DELAY_MIN_S = 0.05
RESUBSCRIBE_DELAY_MAX_S = 1.0  # also the deaf time after an outage, at most
# What ends a subscription to be opened again (alone or in a group of them).
_RESUBSCRIBE_AFTER = (coredis.exceptions.ConnectionError, TimeoutError, OSError)
#: A message whose encoding is larger than this is not published inline, but stored under its
#: own key, which the pub/sub message names. Redis closes a subscriber's connection whose
#: output buffer passes 32 MiB at once or 8 MiB for a minute (``client-output-buffer-limit
#: pubsub``, by default): that lost the large message and every other one to that node until
#: it resubscribed. Far below the limit, so a burst of inline messages stays far from it too.
MAX_INLINE_BYTES: Final = 512 * 1024
#: How long a stored message waits for its readers: a bus busy with other messages reads it
#: well within this; one nobody reads (its node gone, or a broadcast) is not kept.
STORED_MESSAGE_TTL_MS: Final = 60_000
FETCH_TIMEOUT_S: Final = 10.0  # reading a stored message (see _fetch)
# A subscription that lived this long was well: a lapse after it starts at the shortest
# delay again (one killed as soon as it is made backs off, not 20 tries a second).
HEALTHY_SUBSCRIPTION_S: Final = 1.0

Handler = Callable[[str, Any], None]


class ControlBus:
    def __init__(self, client: coredis.Redis[bytes], keys: KeySpace, node: str) -> None:
        self._client = client
        self._keys = keys
        self.node = node
        self._handlers: dict[str, list[Handler]] = {}
        self._subscribed = False  # a subscription was acknowledged once: run() has started
        self._took: float | None = None  # when the current try's subscription was acknowledged
        # Called each time a subscription is back after one that ended: what was published
        # meanwhile never came, so whoever relies on it reads Redis again.
        self._on_resubscribed: list[Callable[[], None]] = []
        # Named in the subscription's failure line, as the heartbeat's (set by RedisEngineIO).
        self.redis_named = "Redis"

    def on(self, kind: str, handler: Handler) -> None:
        """Call ``handler(from_node, body)`` for every message of ``kind`` (in the bus task)."""
        self._handlers.setdefault(kind, []).append(handler)

    def on_resubscribed(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (in the bus task) whenever a lapsed subscription is back."""
        self._on_resubscribed.append(callback)

    async def publish(self, kind: str, body: Any, *, to: str | None = None) -> int:
        """Send to every node (``to=None``) or to one; returns how many subscribers got it."""
        channel = self._keys.control if to is None else self._keys.control_for(to)
        message = cbor2.dumps({"k": kind, "f": self.node, "b": body})
        if len(message) <= MAX_INLINE_BYTES:
            return await self._client.publish(channel, message)
        key = self._keys.control_message(self.node, secrets.token_hex(8))
        await self._client.set(key, message, px=STORED_MESSAGE_TTL_MS)
        del message  # up to max_frame_bytes: in Redis now, not held here while the rest runs
        reference = cbor2.dumps({"k": kind, "f": self.node, "r": key})
        received = await self._client.publish(channel, reference)
        if received == 0 and to is not None:
            await self._client.delete([key])  # its one reader is not listening: not kept
        return received

    async def listening(self, node: str) -> bool:
        """Whether ``node``'s subscription is there now (a look, not a send)."""
        channel = self._keys.control_for(node)
        counts = await self._client.pubsub_numsub(channel)
        return any(count > 0 for count in counts.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive until cancelled; started once the first subscription is acknowledged."""
        delay = RESUBSCRIBE_DELAY_MIN_S
        # One line when the subscription lapses, one when it is back: during an outage it
        # is tried again every second.
        retry_log = RetryLog(logger, "the control bus's subscription", where=self.redis_named)
        while True:
            self._took = None
            try:
                await self._subscribe_and_dispatch(task_status, retry_log)
                error: BaseException = ConnectionError("it ended")
            except Exception as raised:
                # coredis may raise these in a group of its task group's (a subscription
                # not acknowledged within 1 s under load, a soak found): resubscribe all
                # the same; the group took the node down.
                leaves = exception_leaves(raised)
                if not all(isinstance(leaf, _RESUBSCRIBE_AFTER) for leaf in leaves):
                    raise
                error = leaves[0]
            if self._subscribed:  # started() once, by the first subscription that took
                task_status = trio.TASK_STATUS_IGNORED
            if self._took is not None and trio.current_time() - self._took >= (
                HEALTHY_SUBSCRIPTION_S
            ):  # it worked until now: a new lapse starts at the shortest delay
                delay = RESUBSCRIBE_DELAY_MIN_S
            retry_log.failed(error)
            await trio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_DELAY_MAX_S)

    async def _subscribe_and_dispatch(
        self, task_status: trio.TaskStatus[None], retry_log: RetryLog
    ) -> None:
        # coredis 6.9 reconnects a PubSub by itself, but with more than one channel its
        # iteration then just ends (measured: CLIENT KILL TYPE pubsub, two channels); so the
        # subscription is reopened here whenever it ends. Its own retries are off: they back
        # off up to 16 s, so after an outage of a few seconds the bus stayed deaf for 2-6 s
        # after Redis was back (every call between nodes lost meanwhile); run()'s delays
        # stay under RESUBSCRIBE_DELAY_MAX_S, and every lapse reaches on_resubscribed.
        # Its cleanup on cancellation sends UNSUBSCRIBE and only expects ConnectionError; on a
        # connection already closed it raises anyio.ClosedResourceError. Nothing is left to
        # unsubscribe then: ignore it (the Cancelled in the same group still propagates).
        channels = [self._keys.control, self._keys.control_for(self.node)]
        try:
            async with self._client.pubsub(
                channels=channels, ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
            ) as sub:
                self._took = trio.current_time()
                retry_log.succeeded()
                if not self._subscribed:
                    self._subscribed = True
                    task_status.started()
                else:
                    for callback in self._on_resubscribed:
                        callback()
                async for message in sub:
                    if message["type"] == "message":
                        await self._receive(message["channel"], message["data"])
        except* anyio.ClosedResourceError:
            logger.debug("control subscription closed under its cleanup")

    async def _receive(self, channel: str | bytes, data: object) -> None:
        # Awaited in the bus task, stored messages included: handlers see every message in
        # the order it was published (a stream's values, then its end).
        message = _decode(data)
        if message is not None and "r" in message:
            own = _text(channel) == self._keys.control_for(self.node)
            message = await self._fetch(message, take=own)
        if message is not None:
            self._dispatch(message)

    async def _fetch(self, reference: dict[str, Any], *, take: bool) -> dict[str, Any] | None:
        """The stored message ``reference`` names, or None (logged). A message to this node
        alone is taken (GETDEL); a broadcast is read by every node and left to expire."""
        key, kind, sender = reference["r"], reference["k"], reference["f"]
        try:
            # Bounded: the bus task waits here, and a command connection that hangs would
            # leave the node deaf to every other message meanwhile.
            with trio.fail_after(FETCH_TIMEOUT_S):
                data = await (self._client.getdel(key) if take else self._client.get(key))
        except (*REDIS_ERRORS, trio.TooSlowError) as error:
            logger.warning(
                "control message %r from node %r dropped: reading it from Redis failed: %s",
                kind,
                sender,
                str(error)[:80],
            )
            return None
        if data is None:
            logger.warning(
                "control message %r from node %r dropped: it was gone from Redis when read "
                "(unread for %d s, or evicted: give Redis the memory for messages up to "
                "max_frame_bytes)",
                kind,
                sender,
                STORED_MESSAGE_TTL_MS // 1000,
            )
            return None
        return _decode(data, stored=True)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, sender, body = message["k"], message["f"], message["b"]
        for handler in self._handlers.get(kind, ()):
            try:
                handler(sender, body)
            except Exception:
                logger.exception("control handler for %r failed", kind)


def _decode(data: object, *, stored: bool = False) -> dict[str, Any] | None:
    """A message's map, with its body (or, published, the key of the stored message), or
    None (logged) for anything else."""
    try:
        message = cbor2.loads(data) if isinstance(data, bytes) else None
    except Exception:
        message = None
    if (
        isinstance(message, dict)
        and isinstance(message.get("k"), str)
        and "f" in message
        and ("b" in message or (not stored and isinstance(message.get("r"), str)))
    ):
        return message
    preview = data[:80] if isinstance(data, bytes) else data  # a stored one is large
    logger.warning("ignored a malformed control message: %r", repr(preview)[:80])
    return None


def _text(channel: str | bytes) -> str:
    return channel.decode(errors="replace") if isinstance(channel, bytes) else channel
