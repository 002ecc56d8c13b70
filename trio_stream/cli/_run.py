"""Running one command: trio.run, exit codes, one-line errors, and a graceful stop on signals.

Exit codes: 0 success, 1 an error worth one line on stderr (a TrioStreamError, an OSError, a
:class:`CliError`), 2 a usage error (argparse's convention), 3 values not sent for want of
readers (:class:`NoReaders`), 130 interrupted by Ctrl-C. Anything else is a bug and keeps its
traceback. The README's "Command line" section lists them too.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeGuard

import trio

import trio_stream as ts

from .._util import exception_leaves, unwrap_single_exception

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_READERS: Final = 3  # a writer sent nothing (or not everything): nobody was reading
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what shells report for Ctrl-C

Command = Callable[[argparse.Namespace], Awaitable[int | None]]


class CliError(Exception):
    """A failure the user can act on, reported as one line on stderr."""

    exit_code = EXIT_ERROR


class UsageError(CliError):
    """The invocation itself is wrong (a bad option value, a bad config file)."""

    exit_code = EXIT_USAGE


class NoReaders(CliError):
    """Values were not sent because the channel had no readers (a writer never sends blind)."""

    exit_code = EXIT_NO_READERS


def no_readers_advice(command: str, waited: object, during: str = "run") -> str:
    """What to do after ``command`` (replay, generate) left values unsent: ``waited`` (its
    --wait-readers or --min-readers) true, it had a reader at the start that left during
    the ``during``; else it was told not to wait for one."""
    if waited:
        return (
            f"its readers went away during the {during} (they left, or their subscriptions "
            f"ended): keep a reader for the whole {during}"
        )
    return f"start a reader first; without --no-wait {command} waits for one"


def typed_command() -> str:
    """How the user can type this program again: ``trio-stream`` if that is on PATH, else
    the path they ran (``.venv/bin/trio-stream`` right after the README's first command),
    else ``python -m trio_stream`` with this interpreter."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "trio-stream"
    name = os.path.basename(argv0)
    if name == "__main__.py" or not os.path.exists(argv0):
        python = os.path.relpath(sys.executable) if sys.executable else "python3"
        if python.startswith(".."):
            python = sys.executable
        return f"{shlex.quote(python)} -m trio_stream"
    on_path = shutil.which(name)
    if on_path is not None and os.path.samefile(on_path, argv0):
        return name
    return shlex.quote(argv0)


# Commands that run a server: their log is a server's, each line naming the module.
SERVER_COMMANDS: Final = ("serve", "demo")


def configure_logging(level: str, command: str = "") -> None:
    # The library only logs; choosing where and how much is the application's job (here).
    # A client command's lines name the command, as its own messages do ("trio-stream sub:
    # ..."): a raw "WARNING trio_stream._client: ..." among them read as another program's.
    where = f"trio-stream {command}"
    if command in SERVER_COMMANDS or not command or level.upper() == "DEBUG":
        where = "%(name)s"  # (debugging: which module said it is the point)
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)-7s {where}: %(message)s",
        stream=sys.stderr,
    )
    if level.upper() != "DEBUG":
        # coredis says at INFO what it handles itself ("Retry attempt 1 due to error: No
        # matching script", once per script and node; "Connection closed unexpectedly!" with a
        # stray "NoneType: None"): a node's own lines say what matters about Redis.
        logging.getLogger("coredis").setLevel(logging.WARNING)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _one_line(exc: BaseException) -> str:
    text = _squash(str(exc))
    # A wrapper that ends in ":" left the reason to its cause ("connection lost: " over a
    # BrokenResourceError over the SSL error that says what went wrong): follow the chain.
    cause = exc.__cause__
    while (not text or text.endswith(":")) and cause is not None:
        text = f"{text} {_squash(str(cause))}".strip()
        cause = cause.__cause__
    text = text or type(exc).__name__
    if isinstance(exc, ts.TrioStreamError) and not isinstance(exc, ts.ConnectionClosed):
        return f"{type(exc).__name__}: {text}"
    return text


# Commands whose data goes to stdout (their messages go to stderr); ``dump`` too with FILE -.
# Not serve and demo: their stdout is a banner, and a server started with it closed runs on.
_STDOUT_COMMANDS: Final = frozenset(
    {"sub", "show", "channels", "clients", "stats", "call", "receive-files"}
)
# Commands that read their data from stdin when given -, and what to do instead.
_STDIN_ADVICE: Final = {
    "pub": ("value", "give VALUE, or pipe values in"),
    "show": ("file", "give the recording's FILE, or pipe it in"),
    "replay": ("file", "give the recording's FILE, or pipe it in"),
}


def check_streams(args: argparse.Namespace) -> None:
    """Refuse at once a closed stdin or stdout that the command's data needs (``<&-``,
    ``>&-``): Python makes them None, which failed later as a 20-line AttributeError or,
    where print() skips a None stdout, as a command that printed nothing and exited 0.

    Raises:
        CliError: the stream is closed.
    """
    command = args.command
    reads = _STDIN_ADVICE.get(command)
    if reads is not None and sys.stdin is None and str(getattr(args, reads[0])) == "-":
        raise CliError(f"stdin is closed: {reads[1]}")
    writes = command in _STDOUT_COMMANDS or (command == "dump" and str(args.file) == "-")
    if writes and sys.stdout is None:
        raise CliError(
            "stdout is closed: the command prints its output there; redirect it instead "
            "(>/dev/null to drop it)"
        )


def run(command: Command, args: argparse.Namespace) -> int:
    """Run ``command(args)`` under trio and turn its outcome into an exit code."""
    prog = f"trio-stream {args.command}"
    try:
        check_streams(args)
        return trio.run(_until_ctrl_c, command, args) or EXIT_OK
    except BaseException as exc:
        leaves = exception_leaves(exc)
        # Ctrl-C usually arrives while tasks are running in nurseries, wrapped in exception
        # groups next to the Cancelled siblings it caused; the user only pressed a key.
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print(file=sys.stderr)
            return EXIT_INTERRUPTED
        if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
            # `trio-stream sub ... | head`: the reader has what it wanted. Point stdout at
            # /dev/null so that the interpreter's final flush does not complain again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            if args.command == "dump":
                # Not for a recording: what it was written for is lost (record.py says how
                # many frames came first; this is the line for a pipe it did not see close).
                print(
                    f"{prog}: error: the output pipe closed: the recording stopped",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            return EXIT_OK
        for leaf in leaves:
            if isinstance(leaf, CliError):
                print(f"{prog}: error: {_one_line(leaf)}", file=sys.stderr)
                return leaf.exit_code
            if _stdout_full(leaf, args.command):
                # "[Errno 28] No space left on device" named neither stdout nor what to do
                # (dump says "cannot write stdout: ..." itself: record.py).
                reason = (leaf.strerror or str(leaf)).lower()
                print(
                    f"{prog}: error: cannot write stdout: {reason} (make room there, or "
                    "redirect the output elsewhere)",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            if isinstance(leaf, ts.TrioStreamError | OSError):
                print(f"{prog}: error: {_one_line(leaf)}", file=sys.stderr)
                return EXIT_ERROR
        raise


# What a write to a full or failing disk raises: on a command that writes only to stdout, and
# with no file named, it is stdout's.
_WRITE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _stdout_full(leaf: BaseException, command: str) -> TypeGuard[OSError]:
    return (
        command in _STDOUT_COMMANDS
        and isinstance(leaf, OSError)
        and leaf.errno in _WRITE_ERRNOS
        and leaf.filename is None
    )


async def _until_ctrl_c(command: Command, args: argparse.Namespace) -> int | None:
    """``command(args)``, Ctrl-C cancelling it (exit 130 once it has cleaned up) rather than
    raising KeyboardInterrupt.

    Trio raises KeyboardInterrupt in whichever task runs when the signal comes; one that
    landed in a nursery's own bookkeeping (a client's) now and then left trio's state broken:
    a 100-line "Nursery stack corrupted" traceback and exit 1, about once in a hundred
    Ctrl-Cs of ``sub``. A cancellation unwinds only at checkpoints. A second Ctrl-C, for a
    cleanup that hangs, is trio's KeyboardInterrupt again (this receiver is gone by then).
    Commands whose normal end is Ctrl-C take the first one themselves (stop_on_signal, exit
    0); their second one comes here (exit 130).
    """
    interrupted = trio.CancelScope()
    result: int | None = EXIT_INTERRUPTED
    try:
        with unwrap_single_exception():
            async with trio.open_nursery() as nursery:
                await nursery.start(_cancel_on_signal, interrupted, (signal.SIGINT,))
                try:
                    with interrupted:
                        result = await command(args)
                finally:
                    nursery.cancel_scope.cancel()
    except Exception:
        if not interrupted.cancel_called:
            raise
        # Raised by the cleanup that the interrupt started (a connection it cut, say): the
        # user pressed a key, that is all.
    if interrupted.cancel_called:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    return result


SAME_STOP_S: Final = 0.3  # signals this close after the first are that one's echo


async def _cancel_on_signal(
    scope: trio.CancelScope,
    signals_to_catch: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(*signals_to_catch) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            # A second signal within SAME_STOP_S is the same stop: `timeout -s INT` signals
            # the command and then its process group, and it cut the recording's flush short
            # (exit 130, no summary).
            with trio.move_on_after(SAME_STOP_S):
                async for _ in signals:
                    pass
            # Leaving the receiver restores trio's own SIGINT handling, so a second Ctrl-C
            # interrupts a shutdown that hangs (exit 130) instead of being swallowed.
            return


@asynccontextmanager
async def stop_on_signal() -> AsyncIterator[trio.CancelScope]:
    """Run the block in a cancel scope that SIGINT or SIGTERM cancels.

    For commands whose normal end is Ctrl-C (serve, dump, bridge): the block stops, the code after
    it cleans up (closes the server, flushes the file) and the command exits 0.
    ``scope.cancelled_caught`` says whether a signal stopped it.
    """
    scope = trio.CancelScope()
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(_cancel_on_signal, scope)
            try:
                with scope:
                    yield scope
            finally:
                if not scope.cancel_called:  # no signal came: nothing to wait out
                    nursery.cancel_scope.cancel()
                # else the receiver takes what comes within SAME_STOP_S of the signal, then
                # ends (what follows this block may take a while: a second Ctrl-C then
                # interrupts it)
