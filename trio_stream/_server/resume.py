"""Resume on the server: a reconnecting client takes its place back, readers continue.

Five jobs, each small, called from the session and its requests at a few points:

- **Leases.** A client that says ``resume`` in its hello gets a resume token in the welcome.
  When the connection ends, its lease lives on for ``resume_grace_s``: its channels are not
  deleted at once but orphaned (still readable, still the same epoch and history) and the
  number of frames each of its publishers had published is noted. A hello that presents the
  token, with the same name, takes it all back: the channels are its own again, and a session
  of that name the server still believes alive (a half-open connection not noticed yet) is
  replaced at once, so the name comes back without a ``NameInUse`` race.
- **Taking over by name.** A client restarted as a new process has no token; its name is
  its identity. Creating a channel that a gone client of that name still holds (in its
  grace period, or ``keep``) with the same options adopts it (``adopt_channel``); so does a
  subscribe ``since=`` a position with the same options a reader kept for it
  (requests.take_back_by_name): a restarted recorder gets what the server held for it.
- **Publisher resume.** ``open_publisher`` with ``resume_pub`` learns how many frames the
  previous connection's publisher of that id had published (``taken``): the client resends
  exactly the rest of its window.
- **Subscription resume.** ``subscribe`` with ``since_epoch``/``since_seq``: within the same
  epoch the history frames after ``since_seq`` are offered to the new subscription as any
  frame would be (its policy, size, ``every`` and ``max_rate`` apply; a full ``block`` buffer
  takes them past its size, as the history has no writer to hold back) and every frame
  between ``since_seq`` and the first one the history still holds is counted lost on the
  next frame the reader gets (of ``every=N``, every N-th: those it would have kept, in step
  with its frames before the cut); a different epoch is a reset (the channel was created
  anew): the new epoch's history as to a new subscription, and the frames of the new epoch
  it does not get (gone from the history, left out of it) counted lost as well.
- **Readers kept.** While a lease waits, the gone connection's subscriptions wait with it,
  attached to their channels (kept.py): the resubscription of each takes its own back, with
  what arrived meanwhile and what was in flight, so a reader loses nothing to its own cut.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import trio

from .._exceptions import ChannelExists
from .._protocol.frames import SharedData
from .._protocol.messages import CreateChannel
from .absent_owners import AbsentOwners
from .broker import Broker, Channel, decimated, replay_history
from .kept import KeptReaders
from .outbox import Outbox, Reader

log = logging.getLogger(__name__)

RESUME_TOKEN_BYTES: Final = 16
# Welcomes lost in a row that a client's old token still follows (ResumeBook._current).
RESUME_CHAIN_MAX: Final = 16
# How often the kept readers of a taken-over lease look again whether its new connection was
# heard from (their grace starts then).
TAKER_RECHECK_S: Final = 0.5
# Deletions of its channels that a connection was told of, remembered for its next welcome
# (the notice may have been lost with it), at most: the newest. A name's notice is one entry.
DELETIONS_REMEMBERED_MAX: Final = 1000


class Resumable(Protocol):
    """What a lease needs of a session."""

    client_id: int
    name: str
    resume_token: str | None
    resume_lease: Lease | None  # the lease this connection took over at hello
    outbox: Outbox
    # Its channels that another client deleted while it was connected, with each reason:
    # told in a CONTROL that a cut may have lost (see Lease.untold).
    deletions_told: dict[str, str]

    def published_frames(self) -> dict[int, int]: ...
    def next_pub_id(self) -> int: ...
    def heard_after_welcome(self) -> float | None: ...
    def close(self, reason: str, *, drain: bool = False, reconnect: bool = True) -> None: ...
    def unlist(self) -> None: ...


@dataclass(eq=False)
class Lease:
    token: str
    name: str
    client_id: int
    session: Resumable | None  # its live connection; None once that ended or was replaced
    taken: dict[int, int] = field(default_factory=dict)  # old pub id -> frames published
    next_pub: int = 1  # the id its session would have given next: its successor goes on there
    next_sub: int = 1  # the same for subscription ids (kept.py: an id names one subscription)
    orphans: list[Channel] = field(default_factory=list)
    # Every channel it owned when its connection ended (``keep`` ones too): those that
    # another client deleted meanwhile are named in the welcome of the connection that takes
    # the lease over (``deleted``, with each one's reason: Channel.owner_notice), so
    # that its client does not create them again.
    owned: list[Channel] = field(default_factory=list)
    deleted: dict[str, str] = field(default_factory=dict)
    # Deletions its connection was told of but may not have got: those told while it was
    # connected (the CONTROL lost with a cut or a half-open link), and its welcome's, if
    # nothing was heard from it after its welcome. Named again in the next welcome, unless
    # its client has a channel of that name again (created anew after it was told).
    untold: dict[str, str] = field(default_factory=dict)
    ends_at: float | None = None  # trio clock: when the grace period of a gone session ends
    kept: KeptReaders | None = None  # its readers, waiting for the resubscriptions
    # The connection that took this lease over, until it is heard from after its welcome
    # (which then reached the client), when the kept readers' grace starts (see expire).
    taker: Resumable | None = None


class ResumeBook:
    """The leases of one server (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        grace_s: float,
        wake: Callable[[], None],
        end: Callable[[Channel, str, bool], None],
        absent_owners: AbsentOwners,
    ) -> None:
        self.broker = broker
        # A lease that ends leaves there the deletions its client may not have got (untold).
        self._absent_owners = absent_owners
        self.grace_s = grace_s
        self._wake = wake  # housekeeping: a grace period to watch
        # Ends a channel whose owner's grace is over: the engine's (Engine.end_orphan), as
        # with several nodes another node may have taken it over meanwhile.
        self._end = end
        self._leases: dict[str, Lease] = {}
        # Leases taken over whose kept readers the new connection has not all taken back
        # yet: those left end ``grace_s`` after the take-over.
        self._taken: dict[str, Lease] = {}
        # A token whose lease a connection took over -> the token that connection was given,
        # and back. If that connection ends before its welcome reached the client, the client
        # comes back with the old token: it takes the newer lease (see _current).
        self._successor: dict[str, str] = {}
        self._predecessor: dict[str, str] = {}
        # Names whose client resumed on another node while a connection of theirs here was
        # still closing: its readers end with it instead of being kept (see closing_moved).
        self._moved: set[str] = set()

    def issue(self, session: Resumable, presented: str | None = None) -> str:
        """A resume token for ``session``, whose hello presented ``presented`` (None: none)
        and took ``session.resume_lease`` over (None: none found). The token it took over, or
        else the one it presented, leads to the new one (see _current): a client that never
        had this welcome comes back with its old token, and takes this lease, with what the
        welcome told it (a reconnection past its grace was told of deletions it then missed)."""
        self._moved.discard(session.name)  # back here: its readers are kept again on a cut
        token = secrets.token_hex(RESUME_TOKEN_BYTES)
        self._leases[token] = Lease(token, session.name, session.client_id, session)
        previous = session.resume_lease.token if session.resume_lease is not None else presented
        if previous is not None and previous not in self._leases:
            replaced = self._successor.get(previous)  # (a chain that led to no lease)
            if replaced is not None:
                self._predecessor.pop(replaced, None)
            self._successor[previous] = token
            self._predecessor[token] = previous
            # Only the newest RESUME_CHAIN_MAX links can ever be followed (_current): the
            # older ones go, or a client that resumes all day grew the chain by one a time.
            oldest: str | None = token
            for _ in range(RESUME_CHAIN_MAX):
                oldest = self._predecessor.get(oldest) if oldest is not None else None
            if oldest is not None:
                self._forget_chain(oldest)
        return token

    def _current(self, token: str) -> str:
        """``token``, or, if its lease was taken over, the token the connection that took it
        was given (along a chain of such): a client presents an older token only if it never
        had that connection's welcome, so that connection is one it has given up on."""
        for _ in range(RESUME_CHAIN_MAX):
            if token in self._leases or token not in self._successor:
                break
            token = self._successor[token]
        return token

    def _forget_chain(self, token: str) -> None:
        """``token``'s lease ended for good: no older token leads to it any more."""
        while token in self._predecessor:
            older = self._predecessor.pop(token)
            self._successor.pop(older, None)
            token = older

    def name_of(self, token: str) -> str | None:
        """The name of the client that ``token``'s lease was issued to (None: no such lease).

        A client that never chose a name sends none when it reconnects: this server gives it
        its old one back, while a new server (whose own unnamed clients are counted from 1
        again) names it afresh rather than have it claim a name the new server may already
        have given to another client."""
        lease = self._leases.get(self._current(token))
        return None if lease is None else lease.name

    def take_over(self, token: str, session: Resumable, by_name: dict[str, Any]) -> Lease | None:
        """At hello: ``session`` presents ``token``; give it its predecessor's place.

        Called before the name is claimed. A predecessor still registered under the name is
        closed and unnamed here, synchronously, so the name claim that follows succeeds.
        """
        token = self._current(token)
        lease = self._leases.get(token)
        if lease is None or lease.name != session.name:
            return None
        holder = by_name.get(session.name)
        if holder is not None and holder is not lease.session:
            # A new process of that name holds it now (see adopt_channel): this hello gets
            # NameInUse, and the lease stays as it was (its grace runs on).
            return None
        del self._leases[token]
        old = lease.session
        if old is not None:  # a half-open connection the server has not noticed yet
            lease.taken = old.published_frames()
            lease.next_pub = old.next_pub_id()
            lease.next_sub = old.outbox.next_sub_id
            lease.kept = self._keep(old)  # its readers, before its end unsubscribes them
            old.resume_token = None  # its end must not orphan what we take now
            name = old.name
            if by_name.get(name) is old:
                del by_name[name]
            # Not to come back: a client still reading it would take the lease back in
            # turn, and the two connections would take it from each other for good.
            old.close("replaced: the same client connected again (resume)", reconnect=False)
            # Out of the server's list now, before its successor is in it: its tasks end a
            # moment later (2-124 ms with a channel and a publisher), while `clients` listed
            # both and $clients said the new one connected before the old one left.
            old.unlist()
            lease.orphans = list(self.broker.owned_by(old.client_id))
            lease.untold = _untold_by(old)
            # The lease is the new session's now (its resume_lease): naming the old one it
            # would keep it, and the old one its own lease, a chain growing by a Session per
            # take-over for as long as the client stays.
            lease.session = None
        channels = self.broker.channels
        lease.deleted = {
            name: reason
            for name, reason in lease.untold.items()
            if (again := channels.get(name)) is None or again.owner_id != lease.client_id
        }
        lease.deleted.update(
            (c.name, c.owner_notice)
            for c in lease.owned
            if c.owner_notice is not None and channels.get(c.name) is not c
        )
        lease.untold = {}
        lease.owned = []
        for channel in lease.orphans:
            # Not one that a new process of this name has adopted meanwhile (adopt_channel).
            if (
                self.broker.channels.get(channel.name) is channel
                and channel.owner_id == lease.client_id
            ):
                channel.owner_id = session.client_id
        if lease.kept is not None:
            # The resubscriptions take them back; those left end a grace period after the
            # client is heard from (its welcome reached it: see expire), or with the next
            # lease if this connection breaks first.
            lease.ends_at = trio.current_time() + self.grace_s
            lease.taker = session
            self._taken[token] = lease
            self._wake()
        log.info(
            "client %r resumed (%d channels, %d subscriptions kept)",
            session.name,
            len(lease.orphans),
            len(lease.kept or ()),
        )
        return lease

    def release(self, session: Resumable) -> None:
        """The client said goodbye: its channels end with it, as without resume."""
        token = session.resume_token
        if token is not None:
            self._leases.pop(token, None)
            self._forget_chain(token)
            session.resume_token = None

    def closing_moved(self, name: str) -> None:
        """The connection of client ``name`` here is being closed because the client resumed
        on another node (several nodes): its readers end with it instead of being kept for
        ``grace_s``, where a `block` one would hold its channel's writers, cluster-wide,
        although its client is back. Its channels keep their grace: the other node takes
        them over by name."""
        self._moved.add(name)

    def lease_moved(self, name: str, token: str) -> None:
        """Client ``name`` resumed on another node with ``token``: the readers kept here for
        the connection that token names (gone already) end now, as in closing_moved."""
        lease = self._leases.get(self._current(token))
        if lease is not None and lease.name == name and lease.session is None:
            self._end_kept(lease)

    def grace_left(self, name: str) -> float | None:
        """Seconds left of the resume grace of ``name``'s session, whose connection was
        lost (None: no such session kept). A scan of the leases: only a call to a provider
        that is not connected asks."""
        now = trio.current_time()
        # The latest grace: a process killed twice leaves two leases, and the first one's
        # grace (the older) said the caller would wait seconds less than it did.
        ends = [
            lease.ends_at
            for lease in self._leases.values()
            if lease.name == name and lease.session is None and (lease.ends_at or 0.0) > now
        ]
        return max(end or 0.0 for end in ends) - now if ends else None

    def ends_in(self, channel: Channel) -> float | None:
        """Seconds until ``channel``, held for its gone owner, ends with that owner's resume
        grace (None: it does not end so: a ``keep`` channel, or no lease holds it)."""
        now = trio.current_time()
        for lease in self._leases.values():
            if lease.session is None and lease.ends_at is not None and channel in lease.orphans:
                return max(0.0, lease.ends_at - now)
        return None

    def kept_for_name(self, name: str) -> list[KeptReaders]:
        """The readers kept for gone connections of client ``name`` (whose leases wait out
        their grace): what a new process of that name may take over (take_back_by_name)."""
        return [
            lease.kept
            for lease in self._leases.values()
            if lease.name == name and lease.session is None and lease.kept is not None
        ]

    def kept_subscriptions(self) -> int:
        """Subscriptions kept for clients that are away (stats, metrics)."""
        leases = (*self._leases.values(), *self._taken.values())
        return sum(len(lease.kept) for lease in leases if lease.kept is not None)

    def _keep(self, session: Resumable) -> KeptReaders | None:
        """Move ``session``'s readers, and those it had not taken back of its own
        predecessor's, into the keeping of its lease; None: it had none."""
        kept = KeptReaders(session.outbox, session.client_id, session.name, self._wake)
        kept.keep_all(session.outbox)
        previous = session.resume_lease
        if previous is not None and previous.kept is not None:
            previous.kept.carry_to(kept)
            self._end_kept(previous)
        if not kept.waiting:
            kept.end(self.broker)
            return None
        return kept

    def _end_kept(self, lease: Lease) -> None:
        """End the readers ``lease`` still keeps (nobody took them back in time)."""
        if lease.kept is not None:
            lease.kept.end(self.broker)
            lease.kept = None
        # The session that took it names it (its resume_lease): a cycle, which the server's
        # frozen garbage (gc_policy.py) would keep for good with all the session holds.
        lease.taker = None
        self._taken.pop(lease.token, None)

    def end_kept_of(self, session: Resumable) -> None:
        """``session`` ended for good (a goodbye, no lease): the readers its predecessor left
        that it did not take back end with it."""
        if session.resume_lease is not None:
            self._end_kept(session.resume_lease)

    def session_ended(self, session: Resumable, published: dict[int, int]) -> bool:
        """The connection ended; True if its channels are kept for the grace period.

        Args:
            published: frames each of its publishers had published, by publisher id.
        """
        moved = session.name in self._moved  # (the mark goes whichever way this ends)
        self._moved.discard(session.name)
        token = session.resume_token
        lease = self._leases.get(token) if token is not None else None
        if lease is None or lease.session is not session:
            return False
        if self.grace_s <= 0:
            del self._leases[lease.token]
            self._forget_chain(lease.token)
            lease.untold = _untold_by(session)
            self._leave_untold(lease)
            return False
        lease.session = None
        lease.taken = published
        lease.next_pub = session.next_pub_id()
        lease.next_sub = session.outbox.next_sub_id
        lease.owned = list(self.broker.owned_by(session.client_id))
        lease.orphans = [c for c in lease.owned if not c.keep]
        lease.untold = _untold_by(session)
        lease.kept = self._keep(session)
        if moved:  # its client is on another node already
            self._end_kept(lease)
        lease.ends_at = trio.current_time() + self.grace_s
        self._wake()
        return True

    def _leave_untold(self, lease: Lease) -> None:
        """``lease`` ends: the deletions its client may not have got are named in the
        welcome of its next reconnection (absent_owners.py), unless a client of its name has
        a channel of that name again (made anew after it was told: by this connection's
        client, or a new process of it that came meanwhile)."""
        channels = self.broker.channels
        for name, reason in lease.untold.items():
            again = channels.get(name)
            if again is None or again.owner != lease.name:
                self._absent_owners.note(lease.name, name, reason)
        lease.untold = {}

    def expire(self, now: float) -> float:
        """End the channels and kept readers of leases whose grace period is over, time the
        holds of kept block readers; the next deadline."""
        deadline = float("inf")
        for lease in list(self._taken.values()):
            kept = lease.kept
            taker = lease.taker
            if taker is not None and kept is not None and kept.waiting:
                heard = taker.heard_after_welcome()
                if heard is None:
                    # Not heard from since its hello: its welcome may not have reached the
                    # client (a one-way outage), which gives up on it after its connect
                    # timeout and comes back with the old token. The grace waits for that:
                    # counted from the hello, the two timeouts raced and the readers were
                    # lost (a network tester). The connection's own end bounds the wait.
                    deadline = min(deadline, now + TAKER_RECHECK_S, kept.check(now))
                    continue
                lease.taker = None
                lease.ends_at = max(lease.ends_at or 0.0, heard + self.grace_s)
            if kept is None or not kept.waiting or (lease.ends_at or 0.0) <= now:
                self._end_kept(lease)
            else:
                deadline = min(deadline, lease.ends_at or now, kept.check(now))
        for token, lease in list(self._leases.items()):
            if lease.ends_at is None:
                continue
            if lease.ends_at > now:
                deadline = min(deadline, lease.ends_at)
                if lease.kept is not None:
                    deadline = min(deadline, lease.kept.check(now))
                continue
            del self._leases[token]
            self._forget_chain(token)
            kept_subs = len(lease.kept or ())
            owned = sum(1 for c in lease.orphans if c.owner_id == lease.client_id)
            if kept_subs or owned:
                log.info(
                    "client %r did not come back within resume_grace_s (%g s): its %d kept "
                    "subscriptions and %d channels end",
                    lease.name,
                    self.grace_s,
                    kept_subs,
                    owned,
                )
            else:
                # Nothing held for it: a restarted process took its subscriptions over by
                # name, or it never had any. "did not come back ... 0 kept subscriptions"
                # read as a recorder that failed to return (an operator, after 25 good
                # takeovers), so only its end, quietly.
                log.debug("client %r's resume grace ended with nothing kept for it", lease.name)
            self._end_kept(lease)
            self._leave_untold(lease)
            for channel in lease.orphans:
                if channel.owner_id == lease.client_id:
                    self._end(
                        channel,
                        f"channel {channel.name!r} ended with its owner (who did not come back "
                        f"within resume_grace_s, {self.grace_s:g} s)",
                        False,  # not final: its client, when back, creates it again
                    )
        return deadline


# What a create_channel must repeat to adopt a channel (the fields of CreateChannel).
ADOPTED_OPTIONS: Final = ("public", "key", "lifetime", "history", "single_writer", "keep", "meta")


def adopt_channel(
    broker: Broker,
    connected: Container[int],
    session: Resumable,
    msg: CreateChannel,
    ends_in: Callable[[Channel], float | None] = lambda channel: None,
) -> bool:
    """``create_channel`` of a name that exists: True if ``session`` took the channel over.

    The name is the identity (docs/protocol.md section 8, "Taking over by name"): a channel
    whose owner's connection has ended (kept through the resume grace period, or ``keep``) is
    adopted by a client of the same name that creates it again with the same options. The
    create is then a no-op that makes it the owner: the epoch, history, publishers and
    readers stay, so readers see the stream go on, not a reset. This is how a crashed client
    restarted as a new process (no resume token) gets its channels back at once.

    Args:
        connected: the client ids of the server's connected sessions.
        ends_in: seconds until a channel held for a gone owner ends with its grace, if
            known (ResumeBook.ends_in): the refusal says how long.

    Returns:
        False when the rule does not apply (no such channel, a connected or server owner,
        another name): the create goes on and fails with ChannelExists as it always did.

    Raises:
        ChannelExists: the same owner name, other options (named, values not shown).
    """
    channel = broker.channels.get(msg.channel)
    if (
        channel is None
        or channel.owner_id is None
        or channel.owner_id in connected
        or channel.owner != session.name
    ):
        return False
    different = [
        o for o in ADOPTED_OPTIONS if not same_option(getattr(channel, o), getattr(msg, o))
    ]
    if different:
        raise adoption_refused(
            msg.channel, different, keep=channel.keep, ends_in_s=ends_in(channel)
        )
    channel.owner_id = session.client_id
    log.info("client %r took channel %r over by name", session.name, channel.name)
    return True


def adoption_refused(
    name: str, different: list[str], *, keep: bool | None = None, ends_in_s: float | None = None
) -> ChannelExists:
    """The error of a take-over by name with other options (named, values not shown).

    Args:
        keep: whether the channel was created with ``keep`` (None: not known).
        ends_in_s: seconds until it ends with its previous owner's resume grace, if known.
    """
    # The third way out, the one a restart with changed options most often wants: the
    # channel ends when its owner's grace does (unless created with keep), and the name is
    # free again. Without it, a user tried other names or options (a new user's first hour).
    if keep:
        wait = "delete it (created with keep, it outlives its owner) to create it anew"
    elif ends_in_s is not None:
        wait = (
            f"wait {ends_in_s:.1f} s for its previous owner's resume grace (resume_grace_s) "
            "to run out, which ends it"
        )
    else:
        wait = (
            "wait for its previous owner's resume grace (resume_grace_s) to run out, which "
            "ends it unless it was created with keep"
        )
    return ChannelExists(
        f"channel {name[:80]!r} is held for its previous owner of your name (gone) "
        f"with another {', '.join(different)}: create it with the options it was created "
        f"with to take it over, {wait}, or pick another name"
    )


def same_option(held: Any, asked: Any) -> bool:
    """Whether a create_channel option asks for what the channel has (keys: constant time)."""
    if isinstance(held, str) and isinstance(asked, str):
        return hmac.compare_digest(held.encode(), asked.encode())  # keys: constant time
    return bool(held == asked)


def subscribe_since(
    broker: Broker, sub: Reader, since_epoch: str, since_seq: int
) -> dict[str, Any]:
    """Attach ``sub`` resuming after ``(since_epoch, since_seq)``; the reply's ``resume``."""
    outcome: dict[str, Any] = {}

    def replay(sub: Reader, recent: deque[SharedData]) -> None:
        channel = sub.channel
        if since_epoch != channel.epoch or not 0 <= since_seq <= channel.seq:
            # Another epoch: the reader starts afresh, its every and max_rate applied to the
            # history as to a new subscription's (they were not, and an every=3 reader got
            # 50 frames in a row after a server restart).
            whole = channel.recent
            first_kept = whole[0].seq if whole else channel.seq + 1
            # The new epoch's frames the history no longer holds went by while the reader
            # was away: lost, counted on its first frame. Only a new epoch's: a seq of this
            # one beyond the channel's (a client come from a node ahead) had those frames.
            # With every=N, those it would have kept in step with the history it gets (the
            # oldest held, and every N-th after it). Left uncounted, a drop_oldest size 10
            # reader back after a Redis restart began at seq 3618 of the new epoch with
            # lost 0: through Redis the replay reads back only its size of the stream (a
            # cluster tester).
            phase = _every_phase(sub, first_kept - sub.every)
            new_epoch = since_epoch != channel.epoch
            if new_epoch:
                sub.skip(phase.kept_between(0, first_kept - 1))
            history = decimated(sub, recent)
            if sub.blocks_writers:
                # A recorder takes all of the new epoch the history holds, past its size, as
                # a resume within an epoch does: it got its newest `size` and a count of the
                # rest, while the stream still held them (a cluster operator: 925 of 1,025
                # frames left behind in Redis after a restart).
                # (admit, not offer: decimated() applied every and max_rate already.)
                for frame in history:
                    if not sub.admit(frame, past_size=True):
                        sub.skip(1)  # over the connection's byte bounds: counted
            else:
                replay_history(sub, history)
            # Newer than the history given (through Redis, a replay that could not catch
            # up): lost too, as in a resume within the epoch below.
            newest = whole[-1].seq if whole else channel.seq
            if new_epoch and channel.seq > newest:
                sub.skip(phase.kept_between(newest, channel.seq))
                phase.align(channel.seq + 1)
            outcome.update(kind="reset", recovered=recovered(sub))
            return
        phase = _every_phase(sub, since_seq)
        # Gone from the channel's history: lost, exactly (with a sender filter the server
        # cannot tell whose they were, nor with max_rate which of them it would have let
        # through, so all of them count as this reader's loss then).
        whole = channel.recent
        first_kept = whole[0].seq if whole else channel.seq + 1
        missing = phase.kept_between(since_seq, first_kept - 1)
        if missing:
            sub.skip(missing)
        for frame in recent:
            if frame.seq <= since_seq:
                continue
            phase.align(frame.seq)
            if not sub.offer(frame) and not sub.admit(frame, past_size=True):
                # A full block buffer takes history past its size (Reader.admit);
                # only what the connection's byte bounds leave out is lost (counted on the
                # next frame, or in a `lost` notice whose seq the client resumes after next
                # time: never replayed and counted again).
                sub.skip(1)
        # Frames newer than the history given (through Redis, a replay that could not catch
        # up with a node reading fast): lost, counted, as live frames follow channel.seq.
        newest = max(whole[-1].seq if whole else channel.seq, since_seq)
        if channel.seq > newest:
            sub.skip(phase.kept_between(newest, channel.seq))
        phase.align(channel.seq + 1)  # the live frames go on in step
        outcome.update(kind="resumed", recovered=recovered(sub))

    broker.subscribe(sub, replay=replay)
    return outcome


@dataclass
class _EveryPhase:
    """Which seqs a resumed ``every=N`` reader keeps: those N, 2N, ... after ``since_seq``,
    its last frame, as the subscription that broke would have gone on keeping them. So the
    frames gone from the history count as lost only where it would have kept one, and the
    history and live frames after them are kept in the same step (a fresh subscription
    keeps the first frame it is offered instead). ``every`` 1: every frame."""

    reader: Reader | None  # None: the seqs say nothing (every 1, max_rate, a sender filter)
    every: int
    since_seq: int

    def kept_between(self, after: int, upto: int) -> int:
        """How many of seqs ``after + 1 .. upto`` it keeps (every one of them: a loss that
        the server cannot tell apart from decimation counts in full)."""
        if upto <= after:
            return 0
        if self.reader is None:
            return upto - after
        return (upto - self.since_seq) // self.every - (after - self.since_seq) // self.every

    def align(self, seq: int) -> None:
        """Set the reader's count so that it keeps ``seq`` if the step does."""
        if self.reader is not None:
            self.reader.seen = (seq - self.since_seq) % self.every


def _every_phase(sub: Reader, since_seq: int) -> _EveryPhase:
    in_step = sub.every > 1 and not sub.interval and sub.sender is None
    return _EveryPhase(sub if in_step else None, sub.every, since_seq)


def recovered(sub: Reader) -> int:
    """Frames a resumed reader will get: in its buffer, or held back by max_rate."""
    return len(sub.buffer) + (sub.latest is not None)


def _untold_by(session: Resumable) -> dict[str, str]:
    """The deletions ``session``'s client may not have got (see Lease.untold)."""
    untold: dict[str, str] = {}
    taken_over = session.resume_lease
    if taken_over is not None and session.heard_after_welcome() is None:
        untold.update(taken_over.deleted)  # its welcome may never have reached the client
    untold.update(session.deletions_told)
    # (Each welcome nothing was heard after adds its predecessor's: the newest, at most.)
    for name in list(untold)[: max(len(untold) - DELETIONS_REMEMBERED_MAX, 0)]:
        del untold[name]
    return untold
