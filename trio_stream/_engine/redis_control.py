"""A small message bus between nodes over Redis pub/sub (control only, never frames).

Each message is a CBOR map ``{"k": kind, "f": from_node, "b": body}`` published on the
broadcast channel or on one node's own channel. Pub/sub is fire-and-forget: a message sent
while a node's subscription is reconnecting is lost, so nothing that must not be lost rides
here alone (reader counts are also resynchronised from Redis by the heartbeat, at once when
the subscription is back; RPC envelopes have their own timeouts). The subscription is
reopened whenever it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import cbor2
import coredis
import trio
from coredis.retry import NoRetryPolicy

from .._util import exception_leaves
from .redis_keys import KeySpace
from .retry_log import RetryLog

logger = logging.getLogger(__name__)

RESUBSCRIBE_DELAY_MIN_S = 0.05
RESUBSCRIBE_DELAY_MAX_S = 1.0  # also the deaf time after an outage, at most
# What ends a subscription to be opened again (alone or in a group of them).
_RESUBSCRIBE_AFTER = (coredis.exceptions.ConnectionError, TimeoutError, OSError)

Handler = Callable[[str, Any], None]


class ControlBus:
    def __init__(self, client: coredis.Redis[bytes], keys: KeySpace, node: str) -> None:
        self._client = client
        self._keys = keys
        self.node = node
        self._handlers: dict[str, list[Handler]] = {}
        self._subscribed = False  # a subscription was acknowledged once: run() has started
        self._took = False  # the current try's subscription was acknowledged
        # Called each time a subscription is back after one that ended: what was published
        # meanwhile never came, so whoever relies on it reads Redis again.
        self._on_resubscribed: list[Callable[[], None]] = []

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
        return await self._client.publish(channel, message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive until cancelled; started once the first subscription is acknowledged."""
        delay = RESUBSCRIBE_DELAY_MIN_S
        # One line when the subscription lapses, one when it is back: during an outage it
        # is tried again every 2 s.
        retry_log = RetryLog(logger, "the control bus's subscription")
        while True:
            self._took = False
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
            if self._took:  # it worked until now: a new lapse starts at the shortest delay
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
                self._took = True
                retry_log.succeeded()
                if not self._subscribed:
                    self._subscribed = True
                    task_status.started()
                else:
                    for callback in self._on_resubscribed:
                        callback()
                async for message in sub:
                    if message["type"] == "message":
                        self._dispatch(message["data"])
        except* anyio.ClosedResourceError:
            logger.debug("control subscription closed under its cleanup")

    def _dispatch(self, data: object) -> None:
        try:
            decoded = cbor2.loads(data) if isinstance(data, bytes) else {}
            kind, sender, body = decoded["k"], decoded["f"], decoded["b"]
        except Exception:
            logger.warning("ignored a malformed control message: %r", repr(data)[:80])
            return
        for handler in self._handlers.get(kind, ()):
            try:
                handler(sender, body)
            except Exception:
                logger.exception("control handler for %r failed", kind)
