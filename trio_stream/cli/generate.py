"""``generate``: synthetic load, numpy arrays at a chosen size and rate, with a live display."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from typing import Any

import numpy as np
import trio
from rich.live import Live
from rich.text import Text

import trio_stream as ts

from ._channels import connect, publisher, wait_for_readers
from ._options import (
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_create_options,
    add_log_level,
    add_reader_wait_options,
    byte_size,
    positive_float,
    positive_int,
)
from ._output import counted, human_bytes, human_rate, stderr_console
from ._run import NoReaders, UsageError, no_readers_advice

EPILOG = """\
examples:
  trio-stream generate tcp://127.0.0.1:9870 load --create --size 1MiB --rate 100
  trio-stream generate tcp://127.0.0.1:9870 load --create --shape 64x64 --dtype uint16
  trio-stream generate tcp://127.0.0.1:9870 load --create --count 10000  # as fast as possible

Like pub and replay, generate first waits for a reader (a writer sends nothing to a channel
without readers) and says so on stderr; --no-wait starts at once. Without --rate, frames go
out as fast as the readers take them, waiting while there are none (with --no-wait: it stops
when there are none); with --rate, frames that find no reader are counted as skipped. Exit
codes: 0 sent, 1 an error, 2 a usage error, 3 frames not sent for want of readers.
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="send synthetic load to a channel",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
        description="Send numpy arrays of a given size or shape to a channel, at a fixed rate "
        "or as fast as possible, with a live display of the rate achieved.",
    )
    add_log_level(parser, default=None)
    add_connection_options(parser)
    parser.add_argument("channel", metavar="CHANNEL", help="the channel to write")
    what = parser.add_argument_group("frames")
    what.add_argument(
        "--size",
        type=byte_size,
        metavar="BYTES",
        help="frames of BYTES bytes (a uint8 array), e.g. 1000, 64KiB, 1MiB",
    )
    what.add_argument(
        "--shape",
        type=_shape,
        metavar="SHAPE",
        help="frames of this array shape, e.g. 1000 or 64x64 (default: 1000)",
    )
    what.add_argument(
        "--dtype",
        type=np.dtype,
        metavar="DTYPE",
        help="array element type with --shape (default: float64)",
    )
    what.add_argument(
        "--rate", type=positive_float, metavar="HZ", help="frames per second (default: max)"
    )
    what.add_argument("--count", type=positive_int, metavar="N", help="stop after N frames")
    what.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop after this long"
    )
    parser.add_argument("--quiet", action="store_true", help="no live display or summary")
    add_reader_wait_options(parser, wait=True)  # as pub and replay: never blind into a void
    add_create_options(parser, what="CHANNEL", key=True)
    parser.set_defaults(run=run_generate)


def _shape(text: str) -> tuple[int, ...]:
    """``1000``, ``64x64`` or ``64,64``: every dimension a whole number (an empty one, as in
    ``64x``, is a typo, not a dimension fewer)."""
    pieces = text.lower().replace(",", "x").split("x")
    if not all(piece.strip().isdigit() for piece in pieces):
        # ArgumentTypeError: argparse shows this message (a ValueError becomes its generic
        # "invalid shape value").
        raise argparse.ArgumentTypeError(
            f"not a shape: {text!r} (whole numbers joined by x, e.g. 1000 or 64x64)"
        )
    return tuple(int(piece) for piece in pieces)


_shape.__name__ = "shape"


def make_frame(args: argparse.Namespace) -> np.ndarray[Any, Any]:
    if args.size is not None:
        if args.shape is not None or args.dtype is not None:
            raise UsageError("give either --size or --shape/--dtype, not both")
        noise: np.ndarray[Any, Any] = np.random.default_rng(0).integers(
            0, 256, args.size, dtype=np.uint8
        )
        return noise
    dtype = args.dtype if args.dtype is not None else np.dtype("float64")
    if dtype.kind not in "biufc":
        raise UsageError(f"--dtype {dtype} has no wire form; use a numeric or bool dtype")
    shape = args.shape or (1000,)
    # One array for the whole run: it is never modified, so it is safe to send it again
    # while earlier sends still reference its memory in the outgoing queue.
    frame: np.ndarray[Any, Any] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return frame


class _Counts:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.sent = 0
        self.skipped = 0
        self.restart()

    def restart(self) -> None:
        self.started = time.monotonic()
        self._mark = (self.started, self.sent)
        self.rate = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        then, sent = self._mark
        if now - then >= 0.5:
            self.rate = (self.sent - sent) / (now - then)
            self._mark = (now, self.sent)

    def text(self, channel: str) -> Text:
        return Text(
            f"{channel}: {counted(self.sent, 'frame')} sent, {self.skipped} skipped (no readers)  "
            f"{human_rate(self.rate)}  {human_bytes(self.rate * self.nbytes, 'B/s')}"
        )


async def run_generate(args: argparse.Namespace) -> int:
    frame = make_frame(args)
    counts = _Counts(frame.nbytes)
    console = stderr_console()
    finished = False
    try:
        async with (
            connect(args) as client,
            publisher(client, args.channel, args, key=args.key or args.create_key) as pub,
        ):
            for_later = await wait_for_readers(client, pub, args)
            show = not args.quiet and console.is_terminal
            live = Live(counts.text(args.channel), console=console, refresh_per_second=4)
            with (
                live if show else contextlib.nullcontext(),
                trio.move_on_after(args.duration or math.inf),
            ):
                await _send_frames(args, pub, frame, counts, live if show else None, for_later)
            await pub.wait_acknowledged()
        finished = True
    finally:
        # Also when stopped (Ctrl-C without --count, a lost server): what went out so far.
        if not args.quiet and (finished or counts.sent or counts.skipped):
            elapsed = time.monotonic() - counts.started
            print(
                f"generated {counted(counts.sent + counts.skipped, 'frame')} of "
                f"{human_bytes(frame.nbytes)} in {elapsed:.1f} s: {counts.sent} sent, "
                f"{counts.skipped} skipped (no readers), "
                f"{human_rate(counts.sent / elapsed if elapsed else 0.0)}"
                + ("" if finished else " (stopped before the end)"),
                file=sys.stderr,
            )
    if counts.skipped:
        advice = no_readers_advice("generate", args.wait_readers or args.min_readers)
        raise NoReaders(
            f"{counts.skipped} of {counted(counts.sent + counts.skipped, 'frame')} not sent: "
            f"channel {args.channel!r} had no readers then ({advice})"
        )
    return 0


async def _send_frames(
    args: argparse.Namespace,
    pub: ts.Publisher,
    frame: np.ndarray[Any, Any],
    counts: _Counts,
    live: Live | None,
    for_later: bool,
) -> None:
    """``for_later``: the channel's history keeps the frames for later readers (a flat-out
    run does not wait for a reader then)."""
    period = 1 / args.rate if args.rate else 0.0
    counts.restart()
    next_at = trio.current_time()
    waits = args.wait_readers or args.min_readers  # not --no-wait
    n = 0
    while args.count is None or n < args.count:
        if not period and pub.readers == 0 and waits and not for_later:
            # Flat out into a channel nobody reads (nor keeps) would just spin.
            await pub.wait_for_readers()
        if await pub.send(frame):
            counts.sent += 1
        else:
            counts.skipped += 1
            if not period and not waits:
                break  # --no-wait, flat out, and nobody reads: the rest would be skipped too
        n += 1
        counts.sample()
        if live is not None and (period or n % 64 == 0):
            live.update(counts.text(args.channel))
        if period:
            # Deadlines from the start, not sleeps in a row: the rate does not drift.
            next_at += period
            await trio.sleep_until(next_at)
