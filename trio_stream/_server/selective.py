"""A channel's selective readers: those that take one writer's frames only, or a view of each.

Most readers take every frame whole, and the fan-out offers them the one shared frame in a
plain loop (``Channel.fanout``) that knows nothing of selection. Readers with a sender filter
(``subscribe(sender=...)``) or an array view (``subscribe(view=...)``) live here instead,
grouped by sender, then by view, so that one publish costs a channel without such readers one
attribute check, and a channel with them one dictionary lookup per group kind (the writer's
own name, and "any writer"): no reader ever compares a name per frame, and a view is cut once
per publish for all the readers that share it (View is hashable and compares by value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .._protocol.array_view import View
from .._protocol.frames import SharedData

if TYPE_CHECKING:
    from .outbox import Reader

#: ``cut(frame, view)``: the frame as a reader of ``view`` gets it (the frame itself when the
#: view does not apply to it, e.g. a payload that is no array).
Cut = Callable[[SharedData, View], SharedData]

_Groups = dict[View | None, dict["Reader", None]]  # (dicts as ordered sets: O(1) removal)


class Selective:
    """Readers grouped by sender filter (None: any writer), then by view (None: whole)."""

    __slots__ = ("_by_sender",)

    def __init__(self) -> None:
        self._by_sender: dict[bytes | None, _Groups] = {}

    def __bool__(self) -> bool:
        return bool(self._by_sender)

    def add(self, reader: Reader) -> None:
        views = self._by_sender.setdefault(reader.sender, {})
        views.setdefault(reader.view, {})[reader] = None

    def remove(self, reader: Reader) -> None:
        views = self._by_sender.get(reader.sender)
        if views is None:
            return
        readers = views.get(reader.view)
        if readers is None or reader not in readers:
            return
        del readers[reader]
        if not readers:
            del views[reader.view]
            if not views:
                del self._by_sender[reader.sender]

    def targets(
        self, frame: SharedData, sender: bytes, cut: Cut
    ) -> Iterator[tuple[Reader, SharedData]]:
        """Each reader that takes a frame of ``sender``, with the frame it gets.

        The groups are snapshotted first: a reader may end while it is offered a frame.
        """
        by_sender = self._by_sender
        groups: list[_Groups] = []
        mine = by_sender.get(sender)
        if mine:
            groups.append(mine)
        anyone = by_sender.get(None)
        if anyone:
            groups.append(anyone)
        for views in groups:
            for view, readers in list(views.items()):
                shown = frame if view is None else cut(frame, view)
                for reader in list(readers):
                    yield reader, shown
