"""Subscriptions kept while their client is away, so that a reader loses nothing to its own cut.

When a connection with a resume lease (resume.py) ends without a goodbye, its subscriptions
are not ended: they move, whole, into the lease's :class:`KeptReaders`. There each stays
attached to its channel and takes frames as a reader that stopped reading would: its policy
applies (a ``block`` reader fills its buffer, then holds the channel's writers back, and
``block_timeout`` still ends it; a lossy one drops and counts), and it keeps the frames that
were in flight to the client and not yet credited. The writers see no reader leave, so a
``block`` reader's writer neither sends into a channel without readers nor loses a frame.

The client's reconnect resubscribes each subscription with ``since_epoch``/``since_seq`` and
``resume_sub`` (its id on the connection that broke). The kept reader of that id, on that
channel, takes over on the new connection (:meth:`KeptReaders.take`): the frames in flight
after ``since_seq`` go back to the front of its buffer and the rest follows: no gap, no
duplicate. A client that sends no ``resume_sub`` is matched by channel and options.
Readers nobody takes back end when the lease's grace period does (``resume_grace_s`` after
the cut, or after the take-over of the lease by a new connection), as a broken connection's
readers always did.

I/O-free like the outbox: the clock and the housekeeping wake-up are injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from .outbox import EndedReader, Outbox, Reader

if TYPE_CHECKING:
    from .broker import Broker, Channel
    from .buffers import Policy

# Ids a kept subscription is known by at most: its client knows the one of the last reply it
# had; replies lost in this many cuts in a row are not worth more memory.
KNOWN_IDS_MAX: Final = 8


class KeptReaders:
    """A gone connection's readers, waiting for their client (see the module docstring).

    It is the :class:`~.outbox.OutboxOwner` of the outbox that holds them: nothing is
    written from it, and a block reader's hold is timed by the housekeeping (:meth:`check`).
    """

    def __init__(
        self, template: Outbox, client_id: int, name: str, wake: Callable[[], None]
    ) -> None:
        """Args:
        template: the gone connection's outbox (its bounds and clock are kept).
        wake: asks the housekeeping to call :meth:`check` again (a hold began).
        """
        self.client_id = client_id
        self.name = name
        self._wake = wake
        self.outbox = template.spare(self)
        self.outbox.keeps_ended = True
        self._by_old_id: dict[int, Reader] = {}  # the sub id its client knows it by
        # Subscriptions the server ended whose sub_end the client may not have had (the
        # connection broke right after): told again when it resubscribes (:meth:`ended`).
        self._ended: dict[int, EndedReader] = {}

    def __len__(self) -> int:
        return len(self.outbox.readers)

    @property
    def waiting(self) -> bool:
        """Something here waits for the client: a reader, or an end it may not have heard."""
        return bool(self.outbox.readers or self._ended)

    def keep(self, reader: Reader, known_as: Iterable[int] | None = None) -> None:
        """Keep ``reader`` (still attached to its channel) for its client, who knows it by
        one of ``known_as`` (default: its sub id now, or an earlier one whose resubscription
        reply the client may not have had)."""
        ids = (reader.sub_id, *reader.known_as) if known_as is None else tuple(known_as)
        reader.pause()
        self.outbox.adopt(reader)
        for known in ids:
            self._by_old_id[known] = reader

    def keep_all(self, outbox: Outbox) -> None:
        """Keep every reader of ``outbox`` (a connection that ended, or a half-open one that
        its client replaced), and what it ended last."""
        for reader in list(outbox.readers.values()):
            if not reader.closed:
                self.keep(reader)
        if outbox.ended:
            self._ended.update(outbox.ended)

    def ended(self, old_id: int | None, name: str, epoch: str) -> EndedReader | None:
        """How the subscription ``old_id`` (of channel ``name``, ``epoch``) ended, if the
        server ended it lately and its client resubscribes as if it had not heard."""
        if old_id is None:
            return None
        ended = self._ended.get(old_id)
        if ended is None or (ended.channel, ended.epoch) != (name, epoch):
            return None
        del self._ended[old_id]
        return ended

    def carry_to(self, other: KeptReaders) -> None:
        """The connection that took these over ended too, before its client took them all
        back: the rest wait in ``other``, still known by their old ids."""
        for reader in list(dict.fromkeys(self._by_old_id.values())):
            if not reader.closed and reader.outbox is self.outbox:
                other.keep(reader, self._ids_of(reader))
        self._by_old_id.clear()
        other._ended.update(self._ended)
        self._ended.clear()

    def has(self, old_id: int | None, name: str) -> bool:
        """Whether a reader of channel ``name`` (known as ``old_id``, if given) waits here."""
        return any(
            reader.channel.name == name and (old_id is None or known_as == old_id)
            for known_as, reader in self._by_old_id.items()
        )

    def ended_channel(self, name: str) -> Channel | None:
        """The channel of a reader of ``name`` waiting here, if it has ended since."""
        for reader in self._by_old_id.values():
            if reader.channel.name == name and reader.channel.end_reason:
                return reader.channel
        return None

    def take(
        self,
        old_id: int | None,
        name: str,
        epoch: str,
        since_seq: int,
        options: tuple[Policy, int | None, int, float | None, bytes | None, object],
        window: int,
        *,
        held: int = 0,
        by_name: bool = False,
    ) -> Reader | None:
        """The kept reader a resubscription continues, made ready for ``since_seq`` (its
        frames in flight after it back in its buffer), still in this outbox: the caller's
        outbox adopts it. None: no kept reader can continue without a gap (the caller
        subscribes afresh, from the history).

        The reader is found by channel name and epoch, not by the channel the name has now:
        one whose channel ended while its client was away is taken back too, to deliver
        what it holds and then its end.

        Args:
            old_id: the subscription's id on the broken connection (``resume_sub``), if sent.
            options: (policy, size, every, max_rate, sender, view) as the client asks them.
            window: the credit window the new connection gives it.
            held: frames its client got and will return credit for (Reader.resume_after).
            by_name: for a new process of the client (requests.take_back_by_name): its
                position must be one this reader sent, the reader it takes is known by its
                new id only (the new process numbers its subscriptions from 1 again), and
                one it cannot take without a gap is dropped: the subscription it opens
                instead replaces it, and a ``block`` one would hold its writers back.
        """
        named = self._by_old_id.get(old_id) if old_id is not None else None
        candidates = [named] if named is not None else list(self._by_old_id.values())
        for reader in candidates:
            its_options = _options(reader) if reader is not None else None
            if (
                reader is not None
                and its_options is not None
                and not reader.closed
                and reader.outbox is self.outbox
                and reader.channel.name == name
                and reader.channel.epoch == epoch
                # Named by its id, it may have other policy, size, every or max_rate than
                # asked (a retune whose answer the cut lost: the client asks with what it
                # had): the caller retunes it. Dropped, a block reader's buffered frames
                # and those in flight were lost to its own cut.
                and (its_options == options or (reader is named and its_options[4:] == options[4:]))
                and reader.resumable_after(since_seq, sent_only=by_name)
            ):
                # The reply may be lost with the new connection too: the client would then
                # ask by one of these ids again (ids grow along its connections: the newest).
                ids = self._ids_of(reader)
                for known in ids:
                    del self._by_old_id[known]
                reader.known_as = () if by_name else tuple(sorted(ids)[-KNOWN_IDS_MAX:])
                reader.resume_after(since_seq, window, held)
                return reader
        if by_name:
            for reader in candidates:
                if (
                    reader is not None
                    and not reader.closed
                    and reader.outbox is self.outbox
                    and reader.channel.name == name
                    and _options(reader) == options
                ):
                    for known in self._ids_of(reader):
                        del self._by_old_id[known]
                    self.outbox.drop(reader)
                    break
            return None
        if named is not None and not named.closed and named.outbox is self.outbox:
            # Its client asks for it by its id, from another position or with other options:
            # the subscription it opens now replaces this one, which holds nobody back then.
            for known in self._ids_of(named):
                del self._by_old_id[known]
            self.outbox.drop(named)
        return None

    def take_unheard(
        self,
        channel: Channel,
        options: tuple[Policy, int | None, int, float | None, bytes | None, object],
        window: int,
    ) -> Reader | None:
        """The kept reader of ``channel`` with these options whose client may never have
        heard of it, for a subscribe its client repeats because the reply was lost with the
        connection: the frames it holds for that client, in flight or buffered, go to the
        repeated subscription. Without this, the repeat was a new subscription and the kept
        one ended at ``restored``, dropping its frames without a count (a block recorder
        lost 300 frames silently: a network tester). None: there is none."""
        for reader in dict.fromkeys(self._by_old_id.values()):
            if (
                reader.closed
                or reader.outbox is not self.outbox
                or reader.channel is not channel  # (the live channel of that name)
                or _options(reader) != options
            ):
                continue
            since = reader.unheard_since()
            if since is None or not reader.resumable_after(since):
                continue
            for known in self._ids_of(reader):
                del self._by_old_id[known]
            reader.known_as = ()
            reader.resume_after(since, window)
            return reader
        return None

    def _ids_of(self, reader: Reader) -> list[int]:
        return [known for known, kept in self._by_old_id.items() if kept is reader]

    def check(self, now: float) -> float:
        """End block readers that held their writers back for their ``block_timeout``, show
        the others in ``held_by``; the next time to look (see Outbox.check_holds)."""
        return self.outbox.check_holds(now)

    def end(self, broker: Broker) -> None:
        """Nobody took these back in time: they end as a broken connection's readers did."""
        for reader in list(self.outbox.readers.values()):
            broker.unsubscribe(reader)
        self._by_old_id.clear()
        self.outbox.close()

    # -- OutboxOwner ---------------------------------------------------------------------------
    def wake_sender(self) -> None:
        """Nothing is written from here (credit is 0: nothing becomes ready either)."""

    def parked_room(self) -> None:
        """Kept readers have no writers of their own."""

    def hold_started(self, deadline: float) -> None:
        self._wake()

    def writer_ended(self, pub_id: int) -> None:
        """Kept readers have no writers of their own."""


def _options(reader: Reader) -> tuple[Policy, int | None, int, float | None, bytes | None, object]:
    return (
        reader.policy,
        reader.buffer.size,
        reader.every,
        reader.max_rate,
        reader.sender,
        reader.view,
    )
