"""The ``trio-stream`` command line (also ``python -m trio_stream``).

One module per command group registers its subcommands; this module builds the parser and
runs the chosen command. Every command has ``--help``; exit codes are in ``_run``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .._version import __version__
from . import bridge as bridge
from . import call as call
from . import files as files
from . import generate as generate
from . import inspect as inspect
from . import pubsub as pubsub
from . import record as record
from . import serve as serve
from ._options import CommandParser, HelpFormatter, add_log_level
from ._run import configure_logging, run

COMMAND_GROUPS = (serve, inspect, pubsub, record, generate, bridge, call, files)

EPILOG = """\
start here:
  trio-stream demo                          # a server with live demo channels
  trio-stream channels tcp://127.0.0.1:9870
  trio-stream sub tcp://127.0.0.1:9870 demo/counter --count 5

`trio-stream COMMAND --help` tells more about each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-stream",
        description="Run, inspect, tap, record, replay, load and bridge trio_stream servers.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_log_level(parser, default="warning")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=CommandParser
    )
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return run(args.run, args)
