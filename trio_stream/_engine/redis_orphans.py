"""A Redis node's ends of gone owners' channels: tried in Redis, retried, or given up.

A channel this node keeps ends, once its owner is gone for good, only when Redis agrees that
this node still keeps it (see :meth:`OrphanEnds.start`). Redis down, hanging or refusing
(NOPERM, READONLY...): the node asks again after ORPHAN_END_RETRY_S, doubling the wait per
failed round up to ORPHAN_END_RETRY_MAX_S (Redis down or hanging: one Redis call per round
for all the pending ends, Redis is failing already), and ORPHAN_END_GIVE_UP_S after the
owner's end it ends the channel here anyway (its readers must not wait for a gone owner for
good). One try is bounded by ORPHAN_END_TRY_TIMEOUT_S (also the bound of its DELETED
announcement): a Redis that hangs raises nothing. A try never runs past the give-up time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import trio

from .redis_streams import REDIS_DOWN, REDIS_ERRORS

if TYPE_CHECKING:
    from .._server.broker import Channel
    from .redis_io import RedisEngineIO

log = logging.getLogger(__name__)

ORPHAN_END_RETRY_S: Final = 0.5
ORPHAN_END_RETRY_MAX_S: Final = 4.0
ORPHAN_END_GIVE_UP_S: Final = 30.0
ORPHAN_END_TRY_TIMEOUT_S: Final = 2.0


class EndingNode(Protocol):
    """What the ends need of their node (the Redis engine)."""

    node: str

    @property
    def io(self) -> RedisEngineIO: ...

    def let_go(self, name: str, epoch: str, holder: str) -> None: ...

    def end_here(self, channel: Channel, reason: str) -> None: ...

    async def tell_deleted(self, name: str, epoch: str, reason: str) -> None: ...


@dataclass(eq=False)
class _Orphan:
    """A gone owner's channel this node is ending (see OrphanEnds.start)."""

    channel: Channel
    reason: str
    holder: str  # the holder token this node keeps it under (the delete's condition)
    give_up_at: float  # trio time: ended here without Redis's word from then on
    done: trio.Event = field(default_factory=trio.Event)  # decided (also in ``ending``)
    # A try of its own is over (decided, or it failed; not skipped for another end's failure),
    # or it gave up: the owner's name may go (RedisEngine._release_name).
    first_tried: trio.Event = field(default_factory=trio.Event)
    warned: bool = False  # Redis's failure logged once as a warning, then at debug level
    # Its last try failed for Redis as a whole (down, or no answer within a full try's
    # bound), not for this channel alone (its key refused: NOPERM, WRONGTYPE...).
    redis_failed: bool = False


class OrphanEnds:
    """The gone owners' channels a node is ending, all tried in one task (:meth:`run`).

    Args:
        node: the node (its Redis connection, and what it does with a decided end).
        ending: the node's channels being ended in Redis, name -> set when decided (shared
            with the node's reaper; a take-over by name on the node waits for the outcome).
    """

    def __init__(self, node: EndingNode, ending: dict[str, trio.Event]) -> None:
        self._node = node
        self._ending = ending
        # Waiting for Redis's word, in the order of their next try (a failed try goes last).
        self._orphans: dict[str, _Orphan] = {}
        # Ended here without Redis's word (the give-up): name -> (epoch, holder). Still this
        # node's in Redis until the reaper (or a create, see RedisEngine._adopt) deletes them
        # there: not a previous run's channel that a new process may take over.
        self.given_up: dict[str, tuple[str, str]] = {}
        self._wake = trio.Event()
        self._delay = ORPHAN_END_RETRY_S  # the wait after the next failed round
        self._retry_at = math.inf  # trio time of the next round of retries

    def start(self, channel: Channel, reason: str, holder: str) -> None:
        """End ``channel`` (kept here as ``holder``), its owner gone for good: its first try
        comes at once, in :meth:`run`'s task (a job would wait for Redis without a bound,
        and behind a Redis that hangs the end would never start)."""
        name = channel.name
        orphan = _Orphan(channel, reason, holder, trio.current_time() + ORPHAN_END_GIVE_UP_S)
        self._ending[name] = orphan.done
        self._orphans[name] = orphan
        self._wake.set()

    def first_tries_of(self, owner: str) -> list[trio.Event]:
        """Set once each pending end of ``owner``'s channels had a try of its own."""
        return [o.first_tried for o in self._orphans.values() if o.channel.owner == owner]

    async def run(self) -> None:
        """End the gone owners' channels, round by round.

        A new one gets its first try at once. While Redis as a whole fails (down, or no
        answer within a full try's bound), a round tries one pending end (the others would
        fail alike), a different one each round (the one tried goes last), and the next round
        comes after a wait that doubles up to ORPHAN_END_RETRY_MAX_S. A failure of one end's
        own (Redis refusing its key: NOPERM, WRONGTYPE...) says nothing of the others: the
        round goes on with them. A channel whose owner went ORPHAN_END_GIVE_UP_S ago ends
        here without Redis's word (its copy there, this node's, goes with the reaper of this
        node's channels it no longer keeps; if a take-over elsewhere came first, the readers
        here see the channel end and may subscribe again)."""
        while True:
            with trio.move_on_at(self._retry_at):
                await self._wake.wait()
            self._wake = trio.Event()
            due = trio.current_time() >= self._retry_at
            failed = False
            for orphan in self._tries(due):
                if not await self._try(orphan):
                    failed = True
                    if orphan.redis_failed:
                        # Only Redis as a whole failing (see _try_end) makes the others
                        # skip this round.
                        break
            self._give_up_due()
            self._schedule(failed=failed, due=due)

    def _tries(self, due: bool) -> Iterator[_Orphan]:
        """This round's tries, in order: every pending end if the retry time is ``due``, else
        the new ones (never tried yet).

        A generator: each is picked after the previous try is over (a try may end others)."""
        for orphan in list(self._orphans.values()):
            if self._orphans.get(orphan.channel.name) is not orphan:
                continue  # decided meanwhile
            if not (due or not orphan.first_tried.is_set()):
                # Skipped, not tried: its owner's name stays (_release_name waits for a try
                # of its own, or its give-up). Were it released now, a Redis that answers
                # again before its next try would let a new process of that name, without a
                # lease, take over a channel that should end.
                continue
            yield orphan

    async def _try(self, orphan: _Orphan) -> bool:
        """One try of ``orphan``'s end; False if it failed (it goes last in the order)."""
        left_s = orphan.give_up_at - trio.current_time()
        timeout_s = min(ORPHAN_END_TRY_TIMEOUT_S, left_s)
        try:
            decided = left_s > 0 and await self._try_end(orphan, timeout_s)
        except Exception:
            # Not Redis (a bug): its readers must not wait for a gone owner for good.
            log.exception("end of channel %r failed", orphan.channel.name[:80])
            decided = True
            self._node.end_here(orphan.channel, orphan.reason)
        if decided:
            self._done(orphan)
            return True
        if left_s <= 0:
            return True  # past its give-up: ended below, not a failed try
        orphan.first_tried.set()
        # Last in the order: the next failed round tries another one first (one end Redis
        # keeps refusing must not be the only one ever tried).
        name = orphan.channel.name
        self._orphans[name] = self._orphans.pop(name)
        return False

    def _give_up_due(self) -> None:
        """End here the channels whose owner went ORPHAN_END_GIVE_UP_S ago."""
        now = trio.current_time()
        for orphan in list(self._orphans.values()):
            if now >= orphan.give_up_at:
                log.warning(
                    "channel %r ended here without Redis's word (no answer for %g s, "
                    "ORPHAN_END_GIVE_UP_S)",
                    orphan.channel.name[:80],
                    ORPHAN_END_GIVE_UP_S,
                )
                self._node.end_here(orphan.channel, orphan.reason)
                self.given_up[orphan.channel.name] = (orphan.channel.epoch, orphan.holder)
                self._done(orphan)

    def _schedule(self, *, failed: bool, due: bool) -> None:
        """When the next round comes: after the (doubling) retry wait if a try failed, at once
        if retries were due and Redis answered, never with nothing pending; never after the
        first give-up time."""
        if not self._orphans:
            self._delay, self._retry_at = ORPHAN_END_RETRY_S, math.inf
            return
        if not (failed or due or self._retry_at == math.inf):
            return
        now = trio.current_time()
        if failed:
            self._retry_at = now + self._delay
            self._delay = min(2 * self._delay, ORPHAN_END_RETRY_MAX_S)
        else:  # Redis answered: the rest go on at once
            self._delay, self._retry_at = ORPHAN_END_RETRY_S, now
        self._retry_at = min(self._retry_at, *(o.give_up_at for o in self._orphans.values()))

    def _done(self, orphan: _Orphan) -> None:
        name = orphan.channel.name
        del self._orphans[name]
        del self._ending[name]
        orphan.done.set()
        orphan.first_tried.set()

    async def _try_end(self, orphan: _Orphan, timeout_s: float) -> bool:
        """End the gone owner's channel in Redis, then here; or, if a take-over by name came
        first, let it live on. False if Redis did not answer within ``timeout_s`` (or
        refused): not decided."""
        node = self._node
        channel, reason, holder = orphan.channel, orphan.reason, orphan.holder
        name, epoch = channel.name, channel.epoch
        registry = node.io.registry
        try:
            with trio.fail_after(timeout_s):
                deleted = await registry.delete(
                    name, epoch=epoch, node=node.node, holder=holder, reason=reason
                )
                record = None if deleted is not None else await registry.get(name)
        except (*REDIS_ERRORS, trio.TooSlowError) as error:
            # A try cut short by its own give-up time says nothing of Redis.
            slow = isinstance(error, trio.TooSlowError)
            orphan.redis_failed = isinstance(error, REDIS_DOWN) or (
                slow and timeout_s >= ORPHAN_END_TRY_TIMEOUT_S
            )
            # Once per channel as a warning: a client that owned many channels leaving
            # while Redis fails would flood the log, one line per channel per try.
            (log.debug if orphan.warned else log.warning)(
                "channel %r (its owner gone) not ended yet, Redis failed: %s; asking again "
                "for up to %g s (ORPHAN_END_GIVE_UP_S)",
                name[:80],
                repr(error)[:200],
                ORPHAN_END_GIVE_UP_S,
            )
            orphan.warned = True
            return False
        if record is not None and record.epoch == epoch:
            # Taken over by name first: it lives on, where the take-over moved it.
            if record.node != node.node:
                node.let_go(name, epoch, holder)
            log.info("channel %r lives on at node %r", name[:80], record.node)
            return True
        # Ended in Redis, by us or (deleted, lost in a restart) before: here too, and on the
        # nodes that read it (again, if another node told them: harmless, by epoch).
        node.end_here(channel, reason)
        await node.tell_deleted(name, epoch, reason)
        return True
