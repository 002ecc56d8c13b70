"""What ``dump`` says on stderr of a gap in its recording: what was lost, and where the
frames it got back came from."""

from __future__ import annotations

import argparse
from typing import Final

import trio

import trio_stream as ts

from .._util import counted

# A look-up of the channel's history for the line: a server slow to answer delays the line
# (and the recording) at most this long, and the line says less.
HISTORY_LOOKUP_S: Final = 2.0


async def gap_line(
    client: ts.Client, args: argparse.Namespace, gap: ts.Gap, *, continued: bool
) -> str:
    """The line for ``gap`` (without the ``trio-stream dump:`` prefix).

    ``continued``: the gap is the seam of a recording --append continues (this process's
    first frame). A ``resumed`` gap's ``recovered`` counts frames replayed from the channel's
    history or handed over by the subscription the server kept for a reader of this name
    (docs/protocol.md section 8): the gap does not say which, so the line says what is known.
    "replayed from history" for 352 frames on a channel with history 0 (they were the kept
    subscription's) and for 0 frames after a restart without --name (which could take over
    nothing) sent users looking in the wrong place (a new user's first hour).
    """
    if gap.kind == "reset":
        return f"the channel was reset (server restart or re-creation); {gap.recovered} replayed"
    lost = f"resumed: {counted(gap.lost or 0, 'frame')} lost"
    if continued and args.name is None:
        # A new process, named afresh (trio-stream-dump-PID): no subscription the server
        # kept is this one's to take over, so what came back came from the history.
        line = f"{lost}, {gap.recovered} replayed from the channel's history"
        if gap.lost:
            line += (
                "; the frames the server holds for a killed recorder are taken over only by "
                "one of the same --name, within resume_grace_s (record with --name NAME, "
                "continue with --append --name NAME)"
            )
        return line
    if not gap.recovered:
        return f"{lost}, none recovered"
    kept = f"the subscription the server kept for {client.name!r}"
    history = await _history(client, args.channel)
    if history is not None and gap.recovered > history:  # (history 0: all of them)
        return f"{lost}, {gap.recovered} handed over by {kept}"
    return f"{lost}, {gap.recovered} handed over by {kept} or replayed from the channel's history"


async def _history(client: ts.Client, channel: str) -> int | None:
    """The channel's ``history`` (None: not known: not listed to this client, or no answer
    in time)."""
    with trio.move_on_after(HISTORY_LOOKUP_S):
        try:
            listed = await client.channels()
        except ts.TrioStreamError:
            return None
        return next((c.history for c in listed if c.name == channel), None)
    return None
