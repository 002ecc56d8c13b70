"""Answers that list the whole server (``channels()``, ``clients()``), made a part at a time.

A listing of 100,000 channels took ~0.4 s of the server's loop in one go (records ~0.2 s,
their CBOR ~0.2 s), every frame of every other client waiting behind it; the dashboard asks
for one each second. Made here a step at a time, with a checkpoint between steps, the
others run in between (a step of 2,000 records is 4-8 ms). The CPU is the same; the answer
is what each record was when its step ran (a listing was never one moment across several
nodes either), and a channel gone before its step is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from .._protocol.messages import EncodedItems

if TYPE_CHECKING:
    from .broker import Channel

# Records one step makes and encodes before the others get a turn.
LISTING_STEP: Final = 2000

T = TypeVar("T")


async def encode_stepwise(
    values: Iterable[T],
    record: Callable[[T], dict[str, Any] | None],
    step: int = LISTING_STEP,
) -> EncodedItems:
    """The records of ``values`` (``record`` of each; None leaves it out), encoded ``step``
    at a time with a checkpoint after each step. ``values`` is taken in one go first: the
    dict it may come from can change between steps."""
    snapshot = list(values)
    parts = []
    for start in range(0, len(snapshot), step):
        chunk = snapshot[start : start + step]
        records = [r for value in chunk if (r := record(value)) is not None]
        parts.append(EncodedItems.of(records))
        await trio.lowlevel.checkpoint()
    return EncodedItems.joined(parts)


def channel_record(c: Channel) -> dict[str, Any]:
    """A channel as ``channels()`` lists it (a node of several adds ``node``)."""
    return {
        "name": c.name,
        "owner": c.owner,
        "public": c.public,
        "readers": c.readers,
        "writers": len(c.publishers),
        "seq": c.seq,
        "rate_fps": c.rate_fps,
        "rate_bps": c.rate_bps,
        "lost": c.lost,
        "created": c.created,
        "lifetime": c.lifetime,
        "history": c.history,
        "single_writer": c.single_writer,
        "keep": c.keep,
        "held_by": c.held_by(),
        "meta": c.meta,
    }
