"""The ``trio-stream`` command line (also ``python -m trio_stream``).

One module per command group registers its subcommands; this module builds the parser and
runs the chosen command. Every command has ``--help``; exit codes are in ``_run``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from .._version import __version__
from . import bridge as bridge
from . import call as call
from . import files as files
from . import generate as generate
from . import inspect as inspect
from . import pubsub as pubsub
from . import record as record
from . import serve as serve
from . import show as show
from ._options import CommandParser, HelpFormatter, add_log_level, did_you_mean
from ._run import configure_logging, run

COMMAND_GROUPS = (serve, inspect, pubsub, record, show, generate, bridge, call, files)

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
        allow_abbrev=False,  # as the commands' parsers (CommandParser)
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_log_level(parser, default="warning")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=CommandParser
    )
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args``, but arguments that the command does not take are the command's
    usage error (its usage, and the option meant), not the main parser's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _check_main_options(parser, argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        command = commands.choices.get(args.command)
        if isinstance(command, CommandParser):
            command.unrecognized(extras)
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    command = commands.choices.get(args.command)
    if command is not None:
        _check_text(command, args)
    return args


# Metavars of arguments that are paths, whose bytes are the file system's business.
_PATH_METAVARS: Final = ("FILE", "DIR", "PATH")


def _check_text(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An argument that goes to the server as text (a VALUE, a CHANNEL, a --key) with bytes
    that are not UTF-8 is a usage error naming it. (Python keeps such bytes as lone
    surrogates, which text on the wire cannot carry: the codec's refusal, deep in the
    command, advised Python code to repair the str.)"""
    for action in command._actions:
        if any(word in str(action.metavar) for word in _PATH_METAVARS):
            continue
        value = getattr(args, action.dest, None)
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue  # (paths are Paths, numbers numbers)
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                name = argparse._get_action_name(action)
                command.error(
                    f"argument {name}: not UTF-8 text (a byte that is not, at character "
                    f"{exc.start + 1}): give it as UTF-8 (convert it first, e.g. with "
                    "iconv -t utf-8)"
                )


def _check_main_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """An unknown option before the command, named with the option meant. (argparse would
    set it aside and take its value for the command: "invalid choice: 'debug'".) A mistyped
    command is named with the command meant, as options are."""
    known = {option: action for action in parser._actions for option in action.option_strings}
    at = 0
    while at < len(argv) and argv[at].startswith("-"):
        option, has_value, _ = argv[at].partition("=")
        action = known.get(option)
        if action is None:
            parser.error(f"unrecognized arguments: {argv[at]}{did_you_mean(parser, option)}")
        at += 1 if has_value or action.nargs == 0 else 2
    if at < len(argv):
        _check_command(parser, argv[at])
    elif not {"-h", "--help", "--version"} & set(argv):
        _no_command(parser)


def _no_command(parser: argparse.ArgumentParser) -> NoReturn:
    """No command given (``trio-stream`` alone): the help, which lists the commands and
    where to start, rather than argparse's bare "required: COMMAND"."""
    parser.print_help(sys.stderr)
    parser.exit(2, f"\n{parser.prog}: error: give a COMMAND (listed above)\n")


_COMMAND_WORDS: Final = {
    "subscribe": "sub",
    "publish": "pub",
    "send": "pub",
    "listen": "sub",
    "read": "sub",
    "list": "channels",
    "ls": "channels",
    "server": "serve",
    "start": "serve",
    "rpc": "call",
}


def _check_command(parser: argparse.ArgumentParser, command: str) -> None:
    """``sbu``: the usage error names ``sub`` (argparse lists every command instead)."""
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    if command in commands.choices:
        return
    # Whole words a newcomer types for the short commands (too far apart for difflib).
    meant = _COMMAND_WORDS.get(command.lower())
    close = [meant] if meant else difflib.get_close_matches(command, list(commands.choices), n=1)
    if close:
        parser.error(f"argument COMMAND: invalid choice: {command!r} (did you mean {close[0]}?)")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit code."""
    args = parse_command_line(build_parser(), argv)
    configure_logging(args.log_level, args.command)
    return run(args.run, args)
