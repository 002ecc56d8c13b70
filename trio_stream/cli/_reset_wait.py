"""What ``sub`` and ``dump`` say on stderr while their subscription waits out a reset end.

A cluster's Redis that restarts empty ends every reader of a channel with a reset end (a
``sub_end`` marked ``again``, docs/protocol.md section 8): the channel lives on at a new epoch,
and the subscription subscribes again by itself, for at most RESET_BACK_S. The command's
output stood still meanwhile, up to half a minute, without a word.
"""

from __future__ import annotations

import argparse
import sys

import trio_stream as ts

from .. import _subscription


async def say_reset_waits(sub: ts.Subscription, args: argparse.Namespace) -> None:
    """Until cancelled or ``sub`` ends: one line when it begins to wait out a reset end, one
    when it reads on (or when it gives up: its end, which the command says next)."""
    prog = f"trio-stream {args.command}"
    channel: str = args.channel
    while True:
        # Taken before the state is read: a change after the read sets it.
        news = sub._watch_resets()
        if sub._reset_end is not None:
            print(f"{prog}: {_waiting_line(channel, args)}", file=sys.stderr, flush=True)
            while sub._reset_end is not None and sub.end_reason is None:
                await news.wait()
                news = sub._watch_resets()
            if sub.end_reason is None:
                print(
                    f"{prog}: channel {channel!r} is back after its reset: going on (its seqs "
                    "start again; the first message of its new life has a reset gap)",
                    file=sys.stderr,
                    flush=True,
                )
            elif not sub.closed and sub._end_error is None:
                print(
                    f"{prog}: channel {channel!r} did not come back within "
                    f"{_subscription.RESET_BACK_S:g} s of its reset: giving up",
                    file=sys.stderr,
                    flush=True,
                )
        if sub.end_reason is not None:
            return
        await news.wait()


def _waiting_line(channel: str, args: argparse.Namespace) -> str:
    # Not the server's reason: it tells the application to subscribe again (done already),
    # and on the other nodes it lists a delete among the causes, where the mark says the
    # channel lives on. The reason is said if the wait ends with it (giving up).
    complete = "; the recording so far is complete" if args.command == "dump" else ""
    return (
        f"channel {channel!r} was reset in the cluster (its Redis restarted empty, or it was "
        "created anew on another node): resubscribing since the last message, for at most "
        f"{_subscription.RESET_BACK_S:g} s (Ctrl-C to stop{complete})"
    )
