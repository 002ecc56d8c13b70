"""The server's request handlers: one function per request a client may send, in one table.

Each handler takes the session and the decoded request and returns the ``result`` of the reply
(or raises: TrioStreamError and ValueError become an ``error`` reply, see Session), or
``ANSWERED_LATER`` when someone else answers the request's id (an admin ``call``: the provider).
Handlers touch only in-memory state (broker, outbox, server state); none awaits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import AuthError, ChannelNotFound, InvalidArgument, LimitExceeded
from .._protocol.array_view import View
from .._protocol.brief import brief
from .._protocol.frames import sender_field
from .._protocol.limits import (
    SUBSCRIBE_WINDOW_BYTES,
    SUBSCRIBE_WINDOW_FRAMES,
    WRITER_CLAIM_MAX,
    WRITER_KEY_MAX_BYTES,
)
from .._protocol.messages import (
    Admin,
    ClosePublisher,
    ControlMessage,
    CreateChannel,
    DeleteChannel,
    EncodedItems,
    GetStats,
    ListChannels,
    ListClients,
    Lost,
    OpenPublisher,
    Restored,
    Retune,
    SubEnd,
    Subscribe,
    Unsubscribe,
)
from . import admin
from .admin import ANSWERED_LATER as ANSWERED_LATER
from .broker import check_access, nothing_to_delete
from .buffers import Policy, drops_when_full, parse_policy
from .engine import AsyncHandler
from .resume import adopt_channel, recovered, subscribe_since

if TYPE_CHECKING:
    from .broker import Channel
    from .kept import KeptReaders
    from .outbox import Reader
    from .session import Session

log = logging.getLogger(__name__)


def check_channel_quota(session: Session) -> None:
    """LimitExceeded if ``session`` owns as many channels as it may (every engine's create)."""
    owned = session.state.broker.owned_count(session.client_id)  # (a count kept, no walk)
    if owned >= session.state.limits.max_channels_per_client:
        raise LimitExceeded(
            f"this client owns {owned} channels, the limit (max_channels_per_client); "
            "delete some first"
        )


def check_kept_quota(session: Session, msg: CreateChannel) -> None:
    """LimitExceeded if ``msg`` would create a ``keep`` channel beyond max_kept_channels
    (every engine's create of a new channel; taking one back is not a new one)."""
    if not msg.keep:
        return
    state = session.state
    kept = state.engine.kept_channels()
    if kept >= state.config.max_kept_channels:
        raise LimitExceeded(
            f"this server keeps {kept} channels created with keep=True, the limit "
            "(max_kept_channels): they stay after their owners leave, so delete those no "
            "longer needed, or raise the server's max_kept_channels"
        )


def create_channel(session: Session, msg: CreateChannel) -> None:
    broker = session.state.broker
    check_channel_quota(session)
    if adopt_channel(broker, session.state.sessions, session, msg, session.state.resume.ends_in):
        return  # a crashed client's new process takes its channel back (resume.py)
    check_kept_quota(session, msg)
    create_requested_channel(session, msg)


def create_requested_channel(
    session: Session, msg: CreateChannel, *, epoch: str | None = None
) -> Channel:
    """The broker's channel for a ``create_channel`` request: the one place that maps the
    request's options onto the broker (the Redis engine passes the epoch Redis gave it)."""
    return session.state.broker.create_channel(
        msg.channel,
        session,
        public=msg.public,
        key=msg.key,
        lifetime=msg.lifetime,
        history=msg.history,
        single_writer=msg.single_writer,
        keep=msg.keep,
        meta=msg.meta,
        epoch=epoch,
    )


def delete_channel(session: Session, msg: DeleteChannel) -> None:
    broker = session.state.broker
    try:
        channel = broker.lookup(msg.channel, msg.key, session)
    except ChannelNotFound:
        raise nothing_to_delete(msg.channel) from None
    if channel.name.startswith("$"):  # (the text below would suggest a key)
        raise AuthError(f"{channel.name!r} is one of the server's own channels: nobody deletes it")
    # The name is the identity once the owner's connection has ended (a keep channel, or
    # within the resume grace): its restarted program may delete what it could take over
    # (resume.adopt_channel); a private one still needs its key. As on several nodes.
    heir = (
        channel.owner == session.name
        and channel.owner_id not in session.state.sessions
        and channel.key is None
    )
    if (
        channel.owner_id != session.client_id
        and not heir
        and (channel.key is None or msg.key is None)
    ):
        raise AuthError(
            f"only the owner of {msg.channel!r} ({channel.owner}) or a holder of its key "
            "may delete it"
        )
    reason = f"channel {channel.name!r} was deleted"
    broker.delete_channel(channel, reason)
    session.state.tell_owner_deleted(channel, session, f"{reason} by {session.name}")


def open_publisher(session: Session, msg: OpenPublisher) -> dict[str, Any]:
    return open_publisher_on(
        session, msg, session.state.broker.lookup(msg.channel, msg.key, session)
    )


def open_publisher_on(session: Session, msg: OpenPublisher, channel: Channel) -> dict[str, Any]:
    """open_publisher on a channel found (and access checked) already."""
    check_writer_key(msg.writer)
    check_writer_claim(msg)
    _check_publisher_quota(session)
    writer = session.open_writer(channel, msg.writer)
    # keeps_history: the channel wants frames even with no reader (docs/protocol.md 8).
    result = {
        "pub": writer.pub_id,
        "readers": channel.readers,
        "lossless": channel.lossless,
        "keeps_history": channel.history > 0,
    }
    lease = session.resume_lease
    if msg.resume_pub is not None and lease is not None:
        taken = lease.taken.get(msg.resume_pub)  # what its previous publisher had published
        if taken is not None:
            result["taken"] = taken
    if msg.resume_pub is not None and "taken" not in result:
        # No lease (its grace ran out): what the writer's key published here, over all its
        # connections, as a node of several answers (docs/protocol.md 8).
        published = session.state.broker.writer_published(channel, writer)
        if published is not None:
            result["published"] = published
    return result


def check_writer_key(key: str | None) -> None:
    """open_publisher's ``writer``: absent, or 1 to WRITER_KEY_MAX_BYTES bytes."""
    if key is not None and not 0 < len(key.encode()) <= WRITER_KEY_MAX_BYTES:
        raise InvalidArgument(
            f"writer must be 1 to {WRITER_KEY_MAX_BYTES} bytes (a random name the client "
            f"keeps for one publisher), not {brief(key)}"
        )


def check_writer_claim(msg: OpenPublisher) -> None:
    """open_publisher's ``claim``: absent, or 1 to WRITER_CLAIM_MAX with a ``writer``."""
    if msg.claim is None:
        return
    if msg.writer is None:
        raise InvalidArgument("claim numbers the reopens of a writer: send it with writer")
    if not 0 < msg.claim <= WRITER_CLAIM_MAX:
        raise InvalidArgument(
            f"claim must be 1 to {WRITER_CLAIM_MAX} (1 on a writer's first reopen, one more "
            f"on each), not {msg.claim}"
        )


def close_publisher(session: Session, msg: ClosePublisher) -> None:
    session.close_writer(msg.pub)


def subscribe(session: Session, msg: Subscribe) -> dict[str, Any]:
    def lookup() -> Channel:
        return session.state.broker.lookup(msg.channel, msg.key, session)

    taken = take_back(session, msg) or take_back_by_name(session, msg, lookup)
    if taken is not None:
        return taken
    try:
        return take_back_unheard(session, msg, lookup) or subscribe_to(session, msg, lookup)
    except ChannelNotFound:
        ended = ended_while_away(session, msg)
        if ended is None:
            raise
        return ended


def ended_while_away(session: Session, msg: Subscribe) -> dict[str, Any] | None:
    """A resubscription (``resume_sub``: a client's own, after a reconnect) to a channel
    that ended after the position it continues from, while its client was away longer than
    resume_grace_s (its kept reader ended with the grace): answered as a subscription that
    ends at once, with a ``lost`` notice of the frames the channel had after that position.
    Without it the client took the missing channel for one a server restart will bring
    back, and waited for good, its losses never told (a lab tester). None: the channel did
    not end so (never was, another epoch, ended over ENDED_CHANNEL_KEPT_S ago).

    Only resubscriptions: a plain ``since=`` subscribe may come from a recorder that waits
    for the channel's next life, and must keep getting ChannelNotFound until it comes.
    """
    if msg.since_epoch is None or msg.resume_sub is None:
        return None
    ended = session.state.broker.ended_lately_as(msg.channel, msg.since_epoch)
    if ended is None:
        return None
    check_access(ended, msg.key, session)  # as it was: the same answer as a live one's
    since = msg.since_seq or 0
    missed = max(0, ended.seq - since)
    if msg.every > 1 and msg.max_rate is None and msg.sender is None:
        # Of every=N, those it would have kept, in step with its last frame (as a resume
        # counts the frames gone from the history: resume._EveryPhase); with max_rate or a
        # sender filter the server cannot tell, so all of them.
        missed //= msg.every
    said = (
        "1 frame after the last one it had was"
        if missed == 1
        else f"{missed} frames after the last one it had were"
    )
    reason = (
        f"{ended.reason} while this client was away (longer than resume_grace_s); {said} "
        "not delivered"
        if missed
        else f"{ended.reason} while this client was away"
    )
    answer = _ended_at_once(
        session,
        ended.epoch,
        _Asked.of(session, msg).window,
        lambda sub_id: (
            SubEnd(sub=sub_id, reason=reason),
            Lost(sub=sub_id, lost=missed, seq=ended.seq) if missed else None,
        ),
    )
    log.info(
        "client %r resubscribed to %r, which ended while it was away: told of the end "
        "and of %d frames not delivered",
        session.name,
        msg.channel,
        missed,
    )
    return answer


def _ended_at_once(
    session: Session,
    epoch: str,
    window: int,
    notices: Callable[[int], tuple[SubEnd, Lost | None]],
) -> dict[str, Any]:
    """A subscribe answered with a subscription that is over at once: its reply (a resume
    in ``epoch``, nothing recovered, the ``window`` its options give, as any subscription's
    reply), then, on the sender's next turn, the notices ``notices(sub_id)`` makes: its
    ``lost`` if any, and its ``sub_end``."""
    sub_id = session.outbox.new_sub_id()
    session.outbox.end_after_reply(*notices(sub_id))
    return {
        "sub": sub_id,
        "window": window,
        "window_bytes": SUBSCRIBE_WINDOW_BYTES,
        "epoch": epoch,
        "resume": {"kind": "resumed", "recovered": 0},
    }


def take_back_unheard(
    session: Session, msg: Subscribe, find: Callable[[], Channel]
) -> dict[str, Any] | None:
    """A plain subscribe from a resumed connection that continues a kept subscription its
    client never heard of: the reply of the same subscribe, sent just before the cut, was
    lost with the connection, and the client asks again as a new one (its frames held for
    it meanwhile go to this one). None: there is none to continue."""
    lease = session.resume_lease
    if lease is None or lease.kept is None or msg.since_epoch is not None or not msg.repeat:
        return None
    asked = _Asked.of(session, msg)
    channel = find()
    reader = lease.kept.take_unheard(channel, asked.options, asked.window)
    if reader is None:
        return None
    _adopt(session, reader, asked)
    log.info(
        "client %r subscribed again to %r: it continues the subscription whose reply its "
        "connection lost",
        session.name,
        msg.channel,
    )
    return _reply(reader, asked.window, channel.epoch)


def subscribe_to(session: Session, msg: Subscribe, find: Callable[[], Channel]) -> dict[str, Any]:
    """subscribe, the channel given by ``find`` (called once the arguments are checked)."""
    state = session.state
    _check_subscription_quota(session)
    asked = _Asked.of(session, msg)
    channel = find()
    reader = session.outbox.open_reader(
        channel,
        asked.policy,
        asked.size,
        asked.every,
        asked.max_rate,
        asked.window,
        SUBSCRIBE_WINDOW_BYTES,
        asked.block_timeout if asked.policy is Policy.BLOCK else None,
        sender=asked.sender,
        view=asked.view,
        window_asked=msg.window,
        block_timeout_asked=msg.block_timeout,
    )
    result = _reply(reader, asked.window, channel.epoch)
    if msg.since_epoch is None:
        state.broker.subscribe(reader)
    else:  # a resume: from a position (resume.py)
        result["resume"] = subscribe_since(
            state.broker, reader, msg.since_epoch, msg.since_seq or 0
        )
    return result


@dataclass(frozen=True)
class _Asked:
    """A subscribe's options, checked (InvalidArgument for a bad one), as every way of
    answering a subscribe (new, taken back, continued) reads them."""

    policy: Policy
    size: int | None
    every: int
    max_rate: float | None
    sender: bytes | None
    view: View | None
    block_timeout: float | None  # the one a block reader gets (its own or the server's)
    block_timeout_asked: float | None  # as the client sent it (kept for a later retune)
    window: int

    @classmethod
    def of(cls, session: Session, msg: Subscribe) -> _Asked:
        policy, size = parse_policy(msg.policy, msg.size)
        _check_every(msg.every)
        _check_max_rate(msg.max_rate)
        if msg.held is not None and msg.held < 0:
            raise InvalidArgument(
                f"held must be 0 or more (the frames this client got and has not returned "
                f"credit for), not {msg.held}"
            )
        return cls(
            policy,
            size,
            msg.every,
            msg.max_rate,
            _sender(msg.sender),
            _view(msg.view),
            _block_timeout(session, msg.block_timeout),
            msg.block_timeout,
            _window(msg.window, size),
        )

    @property
    def options(self) -> tuple[Policy, int | None, int, float | None, bytes | None, object]:
        """What a kept reader must match to be continued (KeptReaders.take)."""
        return (self.policy, self.size, self.every, self.max_rate, self.sender, self.view)


def _adopt(session: Session, reader: Reader, asked: _Asked) -> None:
    """A kept reader into this connection's outbox, with the block_timeout asked now."""
    reader.block_timeout_asked = asked.block_timeout_asked
    if reader.blocks_writers:
        reader.block_timeout = asked.block_timeout
    session.outbox.adopt(reader)


def _reply(reader: Reader, window: int, epoch: str) -> dict[str, Any]:
    """A subscribe's result (a resume adds its ``resume``)."""
    return {
        "sub": reader.sub_id,
        "window": window,
        "window_bytes": reader.window_bytes,
        "epoch": epoch,
    }


def _check_publisher_quota(session: Session) -> None:
    writers = len(session.writers)
    if writers >= session.state.config.max_publishers_per_client:
        raise LimitExceeded(
            f"this connection holds {writers} publishers open, the limit "
            "(max_publishers_per_client); close some first"
        )


def _check_subscription_quota(session: Session) -> None:
    readers = len(session.outbox.readers)
    if readers >= session.state.limits.max_subscriptions_per_client:
        raise LimitExceeded(
            f"this connection holds {readers} subscriptions, the limit "
            "(max_subscriptions_per_client); unsubscribe some first"
        )


def take_back(session: Session, msg: Subscribe) -> dict[str, Any] | None:
    """A resubscription that continues the subscription its broken connection left, kept
    on the server meanwhile (kept.py): no gap at all. None: there is none to continue.

    Before the channel's lookup: a subscription whose channel ended while its client was
    away is taken back too, to deliver what it holds and then its end. (It was this
    client's, with the key it gave: nothing new is disclosed.)
    """
    lease = session.resume_lease
    if lease is None or lease.kept is None or msg.since_epoch is None:
        return None
    return _take_kept(session, msg, lease.kept)


def take_back_by_name(
    session: Session, msg: Subscribe, may_use: Callable[[], object]
) -> dict[str, Any] | None:
    """A new process of a gone client (it crashed, or was killed: no resume token, so no
    lease here, and no ``resume_sub``) that subscribes ``since=`` a position takes over the
    reader the server kept for the old one on that channel, if it asks with the same
    options: a restarted ``block`` recorder gets the frames held for it meanwhile, where the
    history alone lost them (a channel without one). Its name is its identity, as for
    channels (resume.adopt_channel). ``may_use`` raises if ``session`` may not read the
    channel (its key, again: the engine's check, as for a plain subscribe)."""
    if session.resume_lease is not None or msg.since_epoch is None or msg.resume_sub is not None:
        return None
    for kept in session.state.resume.kept_for_name(session.name):
        if kept.has(None, msg.channel):
            ended = kept.ended_channel(msg.channel)
            if ended is None:
                may_use()
            else:
                # Ended while its reader was away (a writer that finished, its channel
                # ending with it): what the reader holds, then its end, as take_back gives
                # a cut client. The lookup found no channel, and the restarted recorder
                # lost those frames uncounted (a lab scientist); its key is checked against
                # the channel as it was.
                check_access(ended, msg.key, session)
            _check_subscription_quota(session)
            taken = _take_kept(session, msg, kept, by_name=True)
            if taken is not None:
                log.info(
                    "client %r took over its gone process's subscription to %r",
                    session.name,
                    msg.channel,
                )
                return taken
    return None


def _take_kept(
    session: Session, msg: Subscribe, kept: KeptReaders, *, by_name: bool = False
) -> dict[str, Any] | None:
    """take_back from the readers ``kept`` for a gone connection (``by_name``: see
    KeptReaders.take)."""
    epoch = msg.since_epoch
    if epoch is None:  # (its callers checked: for the type checker)
        return None
    ended = kept.ended(msg.resume_sub, msg.channel, epoch)
    if ended is not None:  # it ended as its connection broke: its client did not hear
        end = ended.end
        window = _Asked.of(session, msg).window
        return _ended_at_once(
            session, epoch, window, lambda sub_id: (replace(end, sub=sub_id), None)
        )
    if not kept.has(msg.resume_sub, msg.channel):
        return None
    asked = _Asked.of(session, msg)  # checked before it is taken
    reader = kept.take(
        msg.resume_sub,
        msg.channel,
        epoch,
        msg.since_seq or 0,
        asked.options,
        asked.window,
        held=msg.held or 0,
        by_name=by_name,
    )
    if reader is None:
        return None
    _adopt(session, reader, asked)
    differs = (reader.policy, reader.buffer.size, reader.every, reader.max_rate) != (
        asked.options[:4]
    )
    if differs and not (reader.closed or reader.ending):  # (ending: it delivers what it has)
        # Kept with other options than asked (a retune the cut left in doubt): the asked
        # ones, as a retune would set them (between two frames: no gap, no duplicate).
        dropped_when_full = drops_when_full(reader.policy)
        reader.retune(
            asked.policy,
            asked.size,
            asked.every,
            asked.max_rate,
            asked.window,
            asked.block_timeout,
        )
        session.state.broker.retuned(reader, dropped_when_full)
    result = _reply(reader, asked.window, epoch)
    result["resume"] = {"kind": "resumed", "recovered": recovered(reader)}
    if msg.held is not None:
        # Of the frames its client said it holds, those that count in its window: it
        # returns credit for these as they are taken, and not for the others.
        result["resume"]["held"] = reader.frames_in_flight
    return result


def retune(session: Session, msg: Retune) -> dict[str, int]:
    """Change a live subscription (see Reader.retune); absent fields stay as they are."""
    reader = session.outbox.readers.get(msg.sub)
    if reader is None:
        raise InvalidArgument(
            f"no subscription {msg.sub} on this connection (it ended or was never opened): "
            "subscribe again"
        )
    policy, size = parse_policy(
        reader.policy.value if msg.policy is None else msg.policy,
        reader.buffer.size if msg.size is None else msg.size,
    )
    every = reader.every if msg.every is None else msg.every
    _check_every(every)
    max_rate = reader.max_rate
    if msg.max_rate is not None:
        max_rate = msg.max_rate or None  # 0: no rate limit
        _check_max_rate(max_rate)
    # Given here, or the one the subscription asked for before (under any policy: it waits
    # for a retune to block), else the server's.
    asked = reader.block_timeout_asked if msg.block_timeout is None else msg.block_timeout
    block_timeout = _block_timeout(session, asked)
    window = _window(reader.window_asked, size)
    dropped_when_full = drops_when_full(reader.policy)
    reader.retune(policy, size, every, max_rate, window, block_timeout)
    reader.block_timeout_asked = asked
    session.state.broker.retuned(reader, dropped_when_full)  # its writers' bursts may change
    return {"window": window, "window_bytes": reader.window_bytes}


def _check_every(every: int) -> None:
    if every < 1:
        raise InvalidArgument("every must be 1 or more")


def _check_max_rate(max_rate: float | None) -> None:
    if max_rate is not None and not (0 < max_rate < math.inf):
        raise InvalidArgument("max_rate must be a positive number of frames per second")


def _block_timeout(session: Session, asked: float | None) -> float | None:
    """The block_timeout a block reader gets: its own, or the server's block_timeout_s."""
    if asked is None:
        return session.state.config.block_timeout_s
    if not 0 < asked < math.inf:
        raise InvalidArgument("block_timeout must be a positive number of seconds (or None)")
    return asked


def _window(asked: int | None, size: int | None) -> int:
    """Frames in flight: what the client asked for, within the server's bound and ``size``.

    Raises:
        InvalidArgument: ``asked`` below 1 (null asks for the default).
    """
    if asked is not None and asked < 1:
        raise InvalidArgument(
            f"window must be 1 or more frames in flight (or null for the server's "
            f"{SUBSCRIBE_WINDOW_FRAMES}), not {asked}"
        )
    window = min(asked or SUBSCRIBE_WINDOW_FRAMES, SUBSCRIBE_WINDOW_FRAMES)
    if size is not None:
        window = min(window, size)
    return max(window, 1)


def _sender(name: str | None) -> bytes | None:
    """A sender filter as the DATA frames' sender field carries the name."""
    if name is None:
        return None
    if not name or not name.isprintable():
        raise InvalidArgument(
            f"sender must be a client's name (printable, not empty), not {brief(name)}"
        )
    return sender_field(name)


def _view(wire: list[Any] | None) -> View | None:
    """A view as the client sent it (InvalidArgument for a malformed one); none when empty:
    a view of no slices is the whole frame, and such a reader joins the plain fan-out."""
    if wire is None:
        return None
    view = View.from_wire(wire)
    return view if view.slices else None


def unsubscribe(session: Session, msg: Unsubscribe) -> None:
    reader = session.outbox.readers.get(msg.sub)
    if reader is not None:
        session.state.broker.unsubscribe(reader)


def restored(session: Session, msg: Restored) -> None:
    # The client's resubscriptions are all answered: what it did not take back of its kept
    # subscriptions (one it gave up on just before the cut, whose reply it never had) would
    # otherwise wait out the grace period, a block one holding its channel's writers.
    session.state.resume.end_kept_of(session)


async def list_channels(session: Session, msg: ListChannels) -> EncodedItems:
    return await session.state.channel_listing(session)


async def list_clients(session: Session, msg: ListClients) -> EncodedItems:
    return await session.state.client_listing()


def stats(session: Session, msg: GetStats) -> dict[str, Any]:
    return session.state.stats()


Handler = Callable[["Session", Any], Any]

#: Request type -> handler; what Session dispatches CONTROL requests through.
REQUEST_HANDLERS: Final[dict[type[ControlMessage], Handler]] = {
    CreateChannel: create_channel,
    DeleteChannel: delete_channel,
    OpenPublisher: open_publisher,
    ClosePublisher: close_publisher,
    Subscribe: subscribe,
    Retune: retune,
    Unsubscribe: unsubscribe,
    Restored: restored,
    GetStats: stats,
    Admin: admin.handle,
}

#: The requests answered a step at a time (listing.py): the connection's later frames wait
#: for the answer, as for an engine's (Inbound._defer), while other connections run.
STEPWISE_HANDLERS: Final[dict[type[ControlMessage], AsyncHandler]] = {
    ListChannels: list_channels,
    ListClients: list_clients,
}
