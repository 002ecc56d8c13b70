"""Shared command-line options and the value parsers behind them (sizes, ports, JSON values)."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, TypeAlias

from .._exceptions import InvalidArgument
from .._matching import GLOB_CHARACTERS
from .._protocol.array_view import View
from .._transport.urls import SCHEMES, missing_scheme, split_url
from ._run import UsageError

# The object add_subparsers() returns (generic for type checkers only).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

TOKEN_ENV: Final = "TRIO_STREAM_TOKEN"
POLICIES: Final = ("drop_oldest", "drop_newest", "clear", "unbounded", "block")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

# Binary multiples for the single letters and the IEC names, decimal for kB/MB/GB: the
# usual reading of each (``16M`` and ``16MiB`` are the same, ``16MB`` is 16 000 000).
_BYTE_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
}
# What byte_size() takes, for its error message (a test parses every example and unit).
SIZE_UNITS: Final = (
    "give bytes, e.g. 100, 64KiB, 16M, 1MB, 1.5GB (K/KiB, M/MiB, G/GiB: powers of 1024; "
    "kB, MB, GB: of 1000; B: bytes; any letter case)"
)
_OFF_WORDS: Final = ("off", "none", "no", "disabled")


class HelpFormatter(argparse.HelpFormatter):
    """Fills prose paragraphs to the terminal's width, keeps indented lines (examples) as is."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        prose: list[str] = []
        for line in [*text.splitlines(), ""]:
            if line and not line[0].isspace():
                prose.append(line)
                continue
            if prose:
                out.append(
                    textwrap.fill(
                        " ".join(prose), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
                prose = []
            out.append(indent + line if line else "")
        return "\n".join(out).rstrip("\n")


# argparse's words for an argument given in the wrong form (not a bad value): shown with the
# usage, which shows the form.
_FORM_ERRORS: Final = ("expected ", "not allowed with argument", "ignored explicit argument")


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: options may come between positionals, in any order.

    Plain argparse gives an optional positional its default as soon as it has seen the
    required ones, so ``pub URL CH --create 5`` would reject ``5``; intermixed parsing
    reads every option first and fills the positionals from what is left.
    """

    _intermixing = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated options: `--max-rat` would work until a `--max-ratio` came along,
        # and then break the scripts that used it. A mistyped option gets a suggestion
        # instead (unrecognized()).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # Options it does not take that a user may well try, with what to say instead (see
        # explain_option): closer to the point than the nearest option's name.
        self.explained: dict[str, str] = {}
        # What is checked once every argument is read (check_parsed): the options that go
        # together, or do not.
        self.checks: list[Callable[[CommandParser, argparse.Namespace], None]] = []

    def error(self, message: str) -> NoReturn:
        """A bad value of a named argument in one line (``serve``'s usage is 25 lines above
        it); a command line of the wrong form (an argument missing or unknown) with the
        usage, which shows the form."""
        if message.startswith("argument ") and not any(form in message for form in _FORM_ERRORS):
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)

    def unrecognized(self, extras: Sequence[str]) -> NoReturn:
        """A usage error for arguments this command does not take, with the closest option."""
        for extra in extras:
            why = self.explained.get(extra.partition("=")[0])
            if why is not None:
                self._hinted(f"unrecognized arguments: {' '.join(extras)} ({why})")
        hint = next(
            filter(None, (did_you_mean(self, extra) for extra in extras if extra.startswith("-"))),
            "",
        )
        if hint:
            self._hinted(f"unrecognized arguments: {' '.join(extras)}{hint}")
        self.error(f"unrecognized arguments: {' '.join(extras)}")

    def refuse(self, message: str) -> NoReturn:
        """A usage error of arguments that do not go together, in one line (exit 2): each is
        of the right form, so the usage would only hide the reason."""
        self._hinted(message)

    def _hinted(self, message: str) -> NoReturn:
        """A usage error that names the fix: one line, without the usage above it (20 lines
        of serve's usage hid the "did you mean --tcp-port?" at their end: an operator)."""
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        for check in self.checks:
            check(self, parsed)
        return parsed, extras


def explain_option(parser: argparse.ArgumentParser, option: str, why: str) -> None:
    """Have ``option``, which ``parser``'s command does not take, refused with ``why``."""
    if isinstance(parser, CommandParser):
        parser.explained[option] = why


def check_parsed(
    parser: argparse.ArgumentParser, check: Callable[[CommandParser, argparse.Namespace], None]
) -> None:
    """Have ``check(parser, args)`` run once ``parser``'s command line is read, to refuse
    arguments that do not go together (``parser.refuse``) or that are missing
    (``parser.error``)."""
    if isinstance(parser, CommandParser):
        parser.checks.append(check)


def did_you_mean(parser: argparse.ArgumentParser, option: str) -> str:
    """`` (did you mean --max-rate?)`` for a mistyped ``option`` (``--opt=value`` too), or ""."""
    options = [o for action in parser._actions for o in action.option_strings]
    close = difflib.get_close_matches(option.partition("=")[0], options, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# -- value parsers (argparse ``type=`` callables: ValueError -> a usage error) -----------------
class BadValue(argparse.ArgumentTypeError, ValueError):
    """A value parser's own words for argparse to print (for a plain ValueError it prints only
    "invalid size value: '10XB'"); still a ValueError to callers outside argparse (the
    --config file's settings)."""


def byte_size(text: str) -> int:
    """``1048576``, ``64KiB``, ``16M``, ``1.5GB`` -> bytes."""
    value = text.strip().lower().replace("_", "")
    number = value.rstrip("kmgib")
    unit = value[len(number) :]
    try:
        size = float(number) * _BYTE_UNITS[unit]
    except (KeyError, ValueError):
        size = math.nan
    if not math.isfinite(size):  # "nan" and "inf" are floats, but no size
        raise BadValue(f"not a size: {text!r}: {SIZE_UNITS}")
    if size < 1 or size != int(size):
        raise BadValue(f"not a whole positive number of bytes: {text!r}: {SIZE_UNITS}")
    return int(size)


def port_or_off(text: str) -> int | None:
    """A TCP port (0 picks a free one) or ``off`` to switch the endpoint off."""
    if text.strip().lower() in _OFF_WORDS:
        return None
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise BadValue(f"not a port: {text!r}: give 0-65535 (0: any free port) or off")
    return port


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be 1 or more: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"must be a positive number: {text!r}")
    return value


def array_view(text: str) -> View:
    """``::4,::4`` -> ``View(slices=(slice(None, None, 4), slice(None, None, 4)))``: numpy's
    slice syntax, one slice per leading dimension."""
    slices = []
    for part in text.split(","):
        bounds = part.strip().split(":")
        if not 2 <= len(bounds) <= 3:
            raise BadValue(
                f"not a view: {text!r}: give slices, one per dimension, e.g. ::4,::4 or 100:200 "
                "(an index without a colon is not a slice)"
            )
        try:
            slices.append(slice(*(int(b) if b.strip() else None for b in bounds)))
        except ValueError:
            raise BadValue(f"not a view: {text!r}: slice bounds are whole numbers") from None
    try:
        return View(slices=tuple(slices))
    except InvalidArgument as exc:  # a step of 0, too many dimensions
        raise BadValue(f"not a view: {text!r}: {exc}") from None


def glob_pattern(text: str) -> str:
    """A glob over channel names (``sensors.*``): ``*``, ``?`` or ``[...]`` in it."""
    if not GLOB_CHARACTERS.intersection(text):
        nats = " (NATS's '>' is '*' here: it matches dots too)" if ">" in text else ""
        raise BadValue(
            f"{text[:100]!r} has no glob character (*, ?, [...]): it names one channel, so "
            f"give it as CHANNEL (with --wait-channel to follow it across its lives){nats}"
        )
    return text


# argparse names the type in its error message ("invalid byte_size value: 'x'").
byte_size.__name__ = "size"
port_or_off.__name__ = "port"
positive_int.__name__ = "positive integer"
non_negative_int.__name__ = "non-negative integer"
positive_float.__name__ = "positive number"


def json_or_text(text: str) -> Any:
    """A JSON value, or the text itself when it is not JSON (so ``pub url ch hello`` works)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def server_url(text: str) -> str:
    """The URL argument: a channel name there (the URL left out) is named as such at once,
    rather than as a missing CHANNEL argument after it; an address without its scheme is
    told which scheme to add, and a scheme without its two slashes (``tcp:/host:port``) is
    named as a malformed URL (saying "the URL comes first" would send the user astray)."""
    if "://" not in text:
        no_scheme = missing_scheme(text)
        if no_scheme is not None:
            raise argparse.ArgumentTypeError(no_scheme)
        if text.partition(":")[0].lower() in (*SCHEMES, "http", "https"):
            try:
                split_url(text)
            except InvalidArgument as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        raise argparse.ArgumentTypeError(
            f"{text[:200]!r} is not a server URL: the URL comes first, e.g. "
            "tcp://127.0.0.1:9870 (or ws://host:port/ws)"
        )
    try:
        split_url(text)
    except InvalidArgument as exc:  # the dashboard's address, an unknown scheme
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# -- option groups -----------------------------------------------------------------------------
def add_log_level(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    # The subcommands repeat the option with a suppressed default so that it works on either
    # side of the command name without the subcommand's default overwriting the main one.
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS if default is None else default,
        help="how much to log on stderr (default: warning)",
    )


def add_connection_options(parser: argparse.ArgumentParser, *, url: bool = True) -> None:
    if url:
        parser.add_argument(
            "url", metavar="URL", type=server_url, help="server URL: tcp://host:port or ws://..."
        )
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--name", help="this client's name on the server (default: trio-stream-COMMAND-PID)"
    )
    group.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the server's access token (default: ${TOKEN_ENV})",
    )
    group.add_argument(
        "--tls-ca", metavar="FILE", help="trust this CA bundle for tcps:// and wss:// servers"
    )
    group.add_argument(
        "--wait-server",
        type=positive_float,
        default=0.0,
        metavar="SECONDS",
        help="keep trying this long while no server answers at start (a command started "
        "together with its server); default: fail at once",
    )


def add_channel_key(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--key", help="the channel's key, for channels created with one")


def add_subscription_options(
    parser: argparse.ArgumentParser, *, policy: str = "drop_oldest", size: int = 100
) -> None:
    group = parser.add_argument_group("subscription (applied on the server)")
    group.add_argument(
        "--policy",
        choices=POLICIES,
        default=policy,
        help="what happens when this reader's buffer is full (default: %(default)s)",
    )
    group.add_argument(
        "--size",
        type=positive_int,
        default=size,
        help="the reader's buffer on the server, in frames (default: %(default)s)",
    )
    group.add_argument(
        "--every", type=positive_int, default=1, metavar="N", help="keep every Nth frame"
    )
    group.add_argument(
        "--max-rate",
        type=positive_float,
        metavar="HZ",
        help="at most HZ frames per second, always the newest",
    )
    group.add_argument(
        "--window", type=positive_int, metavar="FRAMES", help="frames in flight to this client"
    )
    group.add_argument(
        "--sender", metavar="NAME", help="only the frames that the client named NAME writes"
    )
    group.add_argument(
        "--view",
        type=array_view,
        metavar="SLICES",
        help="of each array frame only this part, cut on the server: numpy slices, one per "
        "dimension, e.g. ::4,::4 or 100:200",
    )
    group.add_argument(
        "--block-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="with --policy block: how long this reader may hold the writers back before "
        "the server ends the subscription (default: the server's)",
    )
    add_channel_key(group)
    group.add_argument(
        "--wait-channel",
        action="store_true",
        help="wait for the channel to be created instead of failing (sub, dump: and for "
        "it again when it ends)",
    )


def subscription_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The subscription options as ``open_subscription`` keywords.

    Raises:
        UsageError: --block-timeout without --policy block.
    """
    if args.block_timeout is not None and args.policy != "block":
        # Checked here rather than left to the server: under a lossy policy it would be
        # accepted and do nothing, which is not what the user asked for.
        raise UsageError("--block-timeout goes with --policy block")
    return {
        "policy": args.policy,
        "size": None if args.policy == "unbounded" else args.size,
        "every": args.every,
        "max_rate": args.max_rate,
        "key": args.key,
        "window": args.window,
        "sender": args.sender,
        "view": args.view,
        "block_timeout": args.block_timeout,
    }


def add_create_options(
    parser: argparse.ArgumentParser, *, what: str | None, key: bool = False
) -> None:
    """The options of channels a command creates; ``what=None``: it always creates them.

    ``key``: also the --key of the channel the command writes, which a channel it creates
    gets as its key unless --create-key says another (created_channel_key).
    """
    if key:
        parser.set_defaults(key_creates=True)
        parser.add_argument(
            "--key",
            help="the channel's key, for channels created with one; a channel that --create "
            "creates gets it as its key",
        )
    group = parser.add_argument_group("creating the channel")
    if what is None:
        parser.set_defaults(create=True, creates_always=True)
    else:
        group.add_argument(
            "--create", action="store_true", help=f"create {what} if it does not exist"
        )
    group.add_argument(
        "--private", action="store_true", help="created channels are not listed to others"
    )
    group.add_argument("--keep", action="store_true", help="created channels outlive this client")
    group.add_argument(
        "--history",
        type=non_negative_int,
        default=0,
        metavar="FRAMES",
        help="created channels keep this many frames for late readers",
    )
    group.add_argument(
        "--lifetime",
        type=positive_float,
        metavar="SECONDS",
        help="created channels end by themselves after this long",
    )
    group.add_argument(
        "--create-key",
        metavar="KEY",
        help="created channels need this key"
        + (" (default: --key; with both, --key opens a channel that exists)" if key else ""),
    )


def created_channel_key(args: argparse.Namespace) -> str | None:
    """The key a channel that --create creates gets: --create-key, else (pub, replay,
    generate) --key. Someone who gives a channel's key means the channel to have one, and
    creating it without would leave it open to any reader, silently."""
    if args.create_key is not None:
        return str(args.create_key)
    if getattr(args, "key_creates", False) and args.key is not None:
        return str(args.key)
    return None


def add_reader_wait_options(parser: argparse.ArgumentParser, *, wait: bool = False) -> None:
    """``wait``: wait for a reader by default (a writer sends nothing to an empty channel)."""
    group = parser.add_argument_group("readers")
    group.add_argument(
        "--wait-readers",
        action="store_true",
        default=wait,
        help="first wait until the channel has a reader" + (" (the default)" if wait else ""),
    )
    # --no-wait with --min-readers waited all the same (the count won): a usage error instead.
    exclusive = group.add_mutually_exclusive_group()
    if wait:
        exclusive.add_argument(
            "--no-wait",
            dest="wait_readers",
            action="store_false",
            help="do not wait: values go only to readers already there (exit 3 if some found none)",
        )
    exclusive.add_argument(
        "--min-readers",
        type=positive_int,
        metavar="N",
        help="first wait until the channel has N readers",
    )
    group.add_argument(
        "--wait-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="give up waiting for readers after this long (exit 3)",
    )
