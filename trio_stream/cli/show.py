"""``show``: print a recording (a ``dump`` file) as ``sub`` prints a channel, with no server."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from ._options import HelpFormatter, Subparsers, add_log_level, explain_option, positive_int
from ._output import counted, json_line
from ._run import CliError
from .dumpfile import DumpFormatError, DumpReader
from .pubsub import add_print_options, printed_record

SHOW_EPILOG = """\
Each frame is one JSON line, as `trio-stream sub` prints it: {"seq", "time", "sender",
"lost", "data"} (and "gap" where the recorder reconnected). What the recording is (its
channel, server and start) is said on stderr, so stdout is the frames alone.

examples:
  trio-stream show run42.tsdump --count 3
  trio-stream show run42.tsdump --data-only --full --count 100
"""


def register(subparsers: Subparsers) -> None:
    show = subparsers.add_parser(
        "show",
        help="print a recorded file's frames as JSON lines",
        epilog=SHOW_EPILOG,
        formatter_class=HelpFormatter,
        description="Print the frames of a dump file (made by `trio-stream dump`) as JSON "
        "lines, without a server.",
    )
    add_log_level(show, default=None)
    show.add_argument("file", metavar="FILE", type=Path, help="the recording (- for stdin)")
    out = show.add_argument_group("output")
    out.add_argument("--count", type=positive_int, metavar="N", help="stop after N frames")
    add_print_options(out)
    explain_option(show, "--json", "show prints JSON lines already, one frame a line: leave it out")
    show.set_defaults(run=run_show)


async def run_show(args: argparse.Namespace) -> int:
    # Synchronous reads: nothing else runs in this command, and a local file's chunks come
    # from the page cache. (No server: the event loop is only what every command runs in.)
    try:
        # "-": stdin (`zcat run.tsdump.gz | trio-stream show -`); not closed here
        file = (
            open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115, ASYNC230 (an fd)
            if str(args.file) == "-"
            else args.file.open("rb")
        )
    except OSError as exc:  # missing, a directory, not readable: the reason, without errno
        raise CliError(f"cannot read {args.file}: {(exc.strerror or str(exc)).lower()}") from None
    with file:
        try:
            reader = DumpReader(file)
            shown_name = "stdin" if str(args.file) == "-" else args.file
            print(f"{shown_name}: {_describe(reader.header)}", file=sys.stderr)
            shown = 0
            for frame in reader:
                sys.stdout.write(json_line(_record(frame, args)) + "\n")
                shown += 1
                if shown == args.count:
                    break  # before reading on: what follows may be damaged, or not there yet
        except DumpFormatError as exc:
            sys.stdout.flush()
            raise CliError(f"{args.file}: {exc}") from None
    sys.stdout.flush()
    if reader.truncated and shown != args.count:
        print(
            f"trio-stream show: {args.file} ends inside a frame (an interrupted recording); "
            f"the {counted(shown, 'frame')} before it are shown",
            file=sys.stderr,
        )
    return 0


def _describe(header: dict[str, Any]) -> str:
    """The header in words: "channel 'demo/sine' of tcp://..., recorded at ... UTC (policy
    block)", what of it the file has."""
    words = [f"channel {header.get('channel')!r}"]
    if isinstance(header.get("source"), str):
        words.append(f"of {header['source']}")
    created = header.get("created")
    if isinstance(created, int | float) and not isinstance(created, bool):
        started = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
        if len(words) > 1:  # after "of tcp://...": the place, then the time
            words[-1] += ","
        words.append(f"recorded at {started:%Y-%m-%d %H:%M:%S} UTC")
    if isinstance(header.get("policy"), str):
        words.append(f"(policy {header['policy']})")
    return " ".join(words)


def _record(frame: dict[str, Any], args: argparse.Namespace) -> Any:
    gap = frame.get("gap")
    return printed_record(
        frame.get("seq", 0),
        frame["time"],
        frame.get("sender", ""),
        frame.get("lost", 0),
        gap if isinstance(gap, dict) else None,
        frame["data"],
        args,
    )
