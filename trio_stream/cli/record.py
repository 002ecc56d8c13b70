"""``dump`` and ``replay``: record a channel to a file (see ``dumpfile``) and play it back."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import math
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Final

import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
)

import trio_stream as ts

from .._protocol.bytes_like import BytesLike
from .._util import exception_leaves, unwrap_single_exception
from . import dumpfile as dumpfile
from ._channels import (
    connect,
    ended,
    ended_if_not_back,
    marked_new_life,
    publisher,
    subscription,
    wait_for_readers,
)
from ._gaps import gap_line
from ._options import (
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_create_options,
    add_log_level,
    add_reader_wait_options,
    add_subscription_options,
    positive_float,
    positive_int,
)
from ._output import counted, human_bytes, stderr_console
from ._output import progress_display as _progress
from ._run import CliError, NoReaders, UsageError, no_readers_advice, stop_on_signal
from .pubsub import next_message

FLUSH_BYTES: Final = 4 * 2**20  # write to disk once this much is encoded...
FLUSH_INTERVAL_S: Final = 0.5  # ...or this long after the previous write
# The last write, on the way out, waits at most this long (a pipe nobody reads, a stuck disk):
# a second Ctrl-C ends the wait sooner.
FINAL_FLUSH_TIMEOUT_S: Final = 30.0

DUMP_EPILOG = """\
The file is a CBOR sequence (RFC 8742): a header map, then one map per frame with its
receive time "t", writer "time", "seq", "sender", "lost" and "data", the payload's bytes as
the writer sent them (numpy arrays as RFC 8746 typed arrays; a compressed payload stays
compressed). A payload that is not CBOR cannot be stored: that frame is left out, with one
line on stderr. docs/dump-format.md shows how to read the file with a few lines of Python.

examples:
  trio-stream dump tcp://127.0.0.1:9870 demo/counter run42.tsdump          # until Ctrl-C
  trio-stream dump tcp://127.0.0.1:9870 demo/counter run42.tsdump --append --name rec42
  trio-stream dump tcp://127.0.0.1:9870 demo/sine sine.tsdump --duration 2
  trio-stream replay sine.tsdump tcp://127.0.0.1:9870 sine/replayed --create --speed 2
"""


REPLAY_EPILOG = """\
examples:
  trio-stream replay sine.tsdump tcp://127.0.0.1:9870 sine/again --create --fast
  trio-stream replay run42.tsdump tcp://127.0.0.1:9870 counter/again --create --speed 10 \\
      --repeat 2
"""


def register(subparsers: Subparsers) -> None:
    dump = subparsers.add_parser(
        "dump",
        help="record a channel to a file",
        epilog=DUMP_EPILOG,
        formatter_class=HelpFormatter,
        description="Record a channel's frames with their timestamps to FILE until Ctrl-C "
        "(or --count/--duration). The default subscription is lossless (policy block: the "
        "channel's writers wait for the recorder rather than frames being dropped).",
    )
    add_log_level(dump, default=None)
    add_connection_options(dump)
    dump.add_argument("channel", metavar="CHANNEL", help="the channel to record")
    dump.add_argument("file", metavar="FILE", type=Path, help="the recording (- for stdout)")
    dump.add_argument("--count", type=positive_int, metavar="N", help="stop after N frames")
    dump.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop after this long"
    )
    dump.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    dump.add_argument(
        "--append",
        action="store_true",
        help="continue FILE, a dump of CHANNEL, after its last frame: what the server still "
        "holds after it is replayed, the gap counts the rest (a recorder killed and started "
        "again with the same --name within resume_grace_s loses nothing)",
    )
    dump.add_argument("--quiet", action="store_true", help="no progress display or summary")
    add_subscription_options(dump, policy="block", size=1000)
    dump.set_defaults(run=run_dump)

    replay = subparsers.add_parser(
        "replay",
        help="play a recorded file into a channel",
        epilog=REPLAY_EPILOG,
        formatter_class=HelpFormatter,
        description="Send the frames of a dump file to CHANNEL (default: the channel it was "
        "recorded from) with their original timing, scaled by --speed. It first waits for a "
        "reader (a writer sends nothing to an empty channel); with --no-wait, frames that "
        "found no reader make it exit 3.",
    )
    add_log_level(replay, default=None)
    replay.add_argument(
        "file", metavar="FILE", type=Path, help="the recording (- for stdin: played once)"
    )
    add_connection_options(replay)
    replay.add_argument(
        "channel",
        metavar="CHANNEL",
        nargs="?",
        help="the channel to write (default: the recorded one)",
    )
    timing = replay.add_argument_group("timing")
    # Each pair contradicts itself (--loop ran for ever whatever --repeat said; --fast took
    # no notice of --speed): a usage error, not one silently winning.
    pace = timing.add_mutually_exclusive_group()
    times = timing.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        metavar="X",
        help="play X times faster (default: 1, the original timing)",
    )
    pace.add_argument("--fast", action="store_true", help="no waiting: as fast as possible")
    times.add_argument("--loop", action="store_true", help="play the file again and again")
    times.add_argument(
        "--repeat", type=positive_int, default=1, metavar="N", help="play the file N times"
    )
    timing.add_argument(
        "--original-time",
        action="store_true",
        help="stamp frames with their recorded writer time instead of now",
    )
    add_reader_wait_options(replay, wait=True)
    replay.add_argument("--quiet", action="store_true", help="no progress display or summary")
    add_create_options(replay, what="the channel", key=True)
    replay.set_defaults(run=run_replay)


# -- dump --------------------------------------------------------------------------------------
class _BatchWriter:
    """Encodes items at once and writes them in batches from a worker thread.

    One write per batch keeps the event loop free while the disk is busy, and a batch of
    many frames costs one thread hop instead of one per frame.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._pieces: list[BytesLike] = []
        self.pending = 0
        self.written = 0
        self.unwritten = 0  # bytes a final flush gave up on
        self.failed: OSError | None = None  # the write that failed (nothing is written after)
        self._last_flush = time.monotonic()  # of the last synced flush
        self._unsynced = False  # written by flush(sync=False) since, not synced
        # Flushes (the recording task's and the timer's) write one after the other, in order.
        self._lock = trio.Lock()
        self._durable = _is_regular_file(file)  # (stdout may be a pipe: nothing to sync)

    def add(self, item: dict[str, Any]) -> None:
        self.add_pieces(dumpfile.encode_item(item))

    def write_at_once(self, item: dict[str, Any]) -> None:
        """Write ``item`` now, from this thread: a new file's header, so that the file is
        never seen without one (a program polling a live recording read a file just made,
        still empty, as "not a trio_stream dump"). A few hundred bytes: no thread hop.

        Raises:
            OSError: the write failed.
        """
        pieces = dumpfile.encode_item(item)
        try:
            self._write(pieces, durable=False)
        except OSError as exc:
            self.failed = exc
            raise
        self.written += sum(len(p) for p in pieces)
        self._unsynced = self._durable  # synced with the first batch

    def add_pieces(self, pieces: list[BytesLike]) -> None:
        """An item encoded already (dumpfile.frame_pieces)."""
        self._pieces.extend(pieces)
        self.pending += sum(len(p) for p in pieces)

    def due(self) -> bool:
        return self.pending >= FLUSH_BYTES or (
            (self.pending > 0 or self._unsynced)
            and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S
        )

    async def flush(self, give_up_after_s: float = math.inf, *, sync: bool = True) -> bool:
        """Write what waits. ``give_up_after_s``: stop waiting for the write after this long,
        or at a second Ctrl-C (it goes on in its thread, abandoned): False then. ``sync``:
        to the disk too, with what earlier flushes wrote without; False: to the OS only
        (what a killed process still leaves in the file), and synced when due.

        Raises:
            OSError: the write failed (a full disk).
        """
        async with self._lock:
            # Shielded: pieces taken out and then cancelled before the thread started
            # (Ctrl-C, --duration, the timer's end) were a batch never written.
            with trio.CancelScope(shield=True):
                pieces, self._pieces = self._pieces, []
                written, self.pending = self.pending, 0
                if sync:
                    self._last_flush = time.monotonic()
                if pieces and self.failed is not None:
                    return True  # (said by the caller: the first failure is the one)
                if pieces or (sync and self._unsynced):
                    durable = sync and self._durable
                    self._unsynced = not sync
                    with trio.move_on_after(give_up_after_s) as waited:
                        try:
                            await trio.to_thread.run_sync(
                                self._write,
                                pieces,
                                durable,
                                abandon_on_cancel=give_up_after_s < math.inf,
                            )
                        except OSError as exc:
                            self.failed = exc
                            raise
                    if waited.cancelled_caught:
                        self.unwritten = written
                        return False
                self.written += written
        return True

    async def flush_when_due(self) -> None:
        """Flush what waits FLUSH_INTERVAL_S after it came, whether more frames come or not:
        checked only as frames arrived, a burst's frames stayed in memory for as long as the
        channel was quiet after it, and a kill -9 then lost them (a files audit)."""
        while True:
            await trio.sleep(FLUSH_INTERVAL_S / 2)
            if self.due():
                await self.flush()

    def _write(self, pieces: list[BytesLike], durable: bool) -> None:
        self._file.writelines(pieces)
        self._file.flush()
        if durable:
            # On the disk, not only in the OS's cache: a power loss (which dump-format.md
            # names) loses at most the last batch. A sync at most every half second or 4 MiB.
            os.fsync(self._file.fileno())


async def run_dump(args: argparse.Namespace) -> int:
    to_stdout = str(args.file) == "-"
    if to_stdout and sys.stdout.isatty():
        raise CliError("FILE - writes the recording to stdout, which is a terminal: redirect it")
    appended = _continued(args) if args.append else None
    if not to_stdout and args.file.exists() and not args.force and appended is None:
        raise CliError(
            f"{args.file} exists; pass --force to overwrite it (or --append to continue it)"
        )
    if not to_stdout:
        _check_writable(args.file)
    since = _resume_position(appended)
    console = stderr_console()
    # --duration counts from the start, a --wait-channel wait included (a wait for a channel
    # that never came never ended); once subscribed, _record keeps the same deadline.
    deadline = trio.current_time() + (args.duration or math.inf)
    async with connect(args) as client, contextlib.AsyncExitStack() as stack:
        sub: ts.Subscription | None = None
        with trio.CancelScope(deadline=deadline) as waiting:
            # Ctrl-C during a --wait-channel wait is dump's normal end too (it exited 130
            # with an empty line); only the wait: the recording takes its own signals.
            async with stop_on_signal() as stopped:
                sub = await stack.enter_async_context(
                    subscription(client, args.channel, args, since=since, prefetch=False)
                )
        if waiting.cancelled_caught:
            print(
                f"trio-stream dump: channel {args.channel!r} did not come within --duration "
                f"{args.duration:g} s; nothing recorded",
                file=sys.stderr,
            )
            return 0
        if stopped.cancel_called or sub is None:
            print(
                f"trio-stream dump: stopped while waiting for channel {args.channel!r}; "
                "nothing recorded",
                file=sys.stderr,
            )
            return 0
        recording = await _record_to_file(args, client, sub, console, deadline, appended)
    frames = recording.frames
    if not args.quiet:
        print(
            f"dumped {counted(frames, 'frame')} ({human_bytes(recording.written)}) of "
            f"{args.channel!r} to {'stdout' if to_stdout else args.file}"
            + _appended_after(appended)
            + f" in {recording.took:.1f} s; lost {recording.lost}"
            # "lost 0" alone read as nothing missed across a server that crashed.
            + (
                f" and {counted(recording.resets, 'reset')} (loss unknown)"
                if recording.resets
                else ""
            )
            + (
                f"; {counted(recording.left_out, 'frame')} left out (payload not CBOR)"
                if recording.left_out
                else ""
            ),
            file=sys.stderr,
        )
    if recording.channel_ended and args.count is not None:
        # As with `sub --count`: a script that records "the next N frames" must not take a
        # shorter file for them.
        print(
            f"trio-stream dump: {frames} of the {args.count} frames asked for (--count) came "
            "before the channel's end",
            file=sys.stderr,
        )
        return 1
    return 0


def _appended_after(appended: dumpfile.RecordingEnd | None) -> str:
    """For the summary line: where the file held by --append ended (its frames are not
    counted: --append reads only the file's last bytes)."""
    if appended is None:
        return ""
    return " (appended)" if appended.seq is None else f" (appended after seq {appended.seq})"


def _continued(args: argparse.Namespace) -> dumpfile.RecordingEnd:
    """--append: where FILE, a dump of CHANNEL, ends, read before subscribing; a last frame
    cut short (a recorder killed while writing) is cut off first, and said.

    Raises:
        UsageError: FILE - or --force with it. CliError: FILE missing, not a dump of
            CHANNEL, or without the channel's epoch (an older dump: no position to give).
    """
    if str(args.file) == "-":
        raise UsageError("--append continues a FILE: it cannot continue - (stdout)")
    if args.force:
        raise UsageError("--append continues FILE, --force overwrites it: give one of them")
    try:
        file = args.file.open("r+b")
    except FileNotFoundError:
        raise CliError(
            f"{args.file} does not exist: --append continues a recording (leave it out to "
            "start one)"
        ) from None
    except OSError as exc:  # a directory, not readable or writable: the reason
        reason = (exc.strerror or str(exc)).lower()
        raise CliError(f"cannot append to {args.file}: {reason}") from None
    with file:
        try:
            end = dumpfile.recording_end(file)
        except dumpfile.DumpFormatError as exc:
            raise CliError(
                f"{args.file}: {exc}; --append continues a dump: give another FILE"
            ) from None
        _check_continuable(args, end)
        if end.whole_bytes < end.size:
            file.truncate(end.whole_bytes)
            print(
                f"trio-stream dump: {args.file} ended inside a frame (its recorder stopped "
                f"while writing): cut off its last {counted(end.size - end.whole_bytes, 'byte')},"
                f" after its last whole frame (seq {end.seq})",
                file=sys.stderr,
            )
    return end


def _check_continuable(args: argparse.Namespace, end: dumpfile.RecordingEnd) -> None:
    """Refuse a recording --append cannot continue (see _continued)."""
    channel = end.header.get("channel")
    if channel != args.channel:
        raise CliError(
            f"{args.file} is a recording of channel {channel!r}, not {args.channel!r}: "
            f"--append continues a recording of the same channel"
        )
    if end.seq is not None and end.epoch is None:
        raise CliError(
            f"{args.file} does not say which life of the channel its frames are of (a dump "
            "older than --append): it cannot be continued; record to another FILE"
        )


def _resume_position(appended: dumpfile.RecordingEnd | None) -> ts.Position | None:
    """Where a recording --append continues goes on from (None: from the next frame)."""
    if appended is None:
        return None
    if appended.seq is None or appended.epoch is None:
        print(
            "trio-stream dump: the recording holds no frames yet: it goes on from the "
            "channel's next frame (nothing is replayed)",
            file=sys.stderr,
        )
        return None
    return ts.Position(appended.epoch, appended.seq)


def _check_writable(path: Path) -> None:
    """Refuse at once a FILE that cannot be written, without making it (it is made once
    the subscription stands). A --wait-channel recorder found out only when the channel
    came, maybe hours later, unattended: the run it was meant to record was lost.

    Raises:
        CliError: as opening it would (the same line).
    """
    folder = path.parent
    if path.is_dir():
        code = errno.EISDIR
    elif not folder.exists():
        code = errno.ENOENT
    elif not folder.is_dir():
        code = errno.ENOTDIR
    elif not os.access(path if path.exists() else folder, os.W_OK):
        code = errno.EACCES
    else:
        return
    raise CliError(f"cannot write {path}: {os.strerror(code).lower()}")


@dataclasses.dataclass
class _Recording:
    frames: int = 0
    lost: int = 0
    written: int = 0
    took: float = 0.0
    channel_ended: bool = False
    resets: int = 0  # reset gaps: the old server's undelivered frames, not counted in lost
    # The channel's epoch the file's last frame is of (its header's before a frame; None: not
    # known): a frame of another is written with its epoch (dump-format.md, --append).
    epoch: str | None = None
    stopped: bool = False  # by Ctrl-C, --duration or --count: not to go on
    left_out: int = 0  # frames whose payload is not CBOR (no item of a dump can hold it)
    # What a frame left out carried, for the next one recorded: the file's counts still add up.
    carried_lost: int = 0
    carried_gap: ts.Gap | None = None
    # The file header's mark (dumpfile.new_mark), put with the epoch on a frame every
    # MARK_EVERY_BYTES: --append finds one from the file's end. None: a file continued that
    # has none (written by an older dump).
    mark: bytes | None = None
    # Bytes of frames added since the last marked one (dumpfile.MARK_EVERY_BYTES); from
    # that many, so that the first frame this run adds is marked.
    unmarked_bytes: int = dumpfile.MARK_EVERY_BYTES


async def _record_to_file(
    args: argparse.Namespace,
    client: ts.Client,
    sub: ts.Subscription,
    console: Console,
    deadline: float,
    appended: dumpfile.RecordingEnd | None = None,
) -> _Recording:
    """Record ``sub`` to --file; with --wait-channel, the channel's next life after it ends
    too (into the same file, as after a server restart: its seqs start again).
    ``appended``: the end of the recording --file holds, which this one continues."""
    # The file is made only once the subscription stands: a typo in the channel name
    # leaves no empty recording behind.
    try:
        # "-": stdout, for a pipe (`dump URL CH - | gzip > run.tsdump.gz`); not closed here
        opened = (
            open(sys.stdout.fileno(), "wb", closefd=False)  # noqa: SIM115, ASYNC230 (an fd)
            if str(args.file) == "-"
            else args.file.open("wb" if appended is None else "ab")
        )
    except OSError as exc:  # no such directory, not writable: the reason, without errno
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        raise CliError(f"cannot write {args.file}: {reason}") from None
    writer = _BatchWriter(opened)
    recording = _Recording()
    if appended is not None and appended.seq is not None:
        recording.epoch = appended.epoch
    if appended is not None:
        kept_mark = appended.header.get("mark")
        recording.mark = kept_mark if isinstance(kept_mark, bytes) else None
    else:
        recording.mark = dumpfile.new_mark()
    # (else not known: subscribed without a position, its first frame names its epoch)
    try:
        try:
            started = time.monotonic()
            if appended is None:
                recording.epoch = sub.position.epoch
                writer.write_at_once(
                    dumpfile.header(
                        args.channel,
                        source=args.url,
                        policy=args.policy,
                        epoch=recording.epoch,
                        mark=recording.mark,
                    )
                )
            await _record_all(args, client, sub, console, deadline, writer, recording)
        except BaseException:
            # An error, a cancel or an interrupt: the frames received before it are written
            # too (up to 4 MiB or half a second of them waited in memory, and were lost).
            if not await _final_flush(writer, opened):
                print(f"trio-stream dump: {_unwritten(writer, args)}", file=sys.stderr)
            raise
        if not await _final_flush(writer, opened):
            raise CliError(_unwritten(writer, args))
    except BaseException as exc:
        failed = writer.failed
        if failed is None or not any(leaf is failed for leaf in exception_leaves(exc)):
            raise
        raise CliError(_write_failure(failed, args, recording)) from None
    recording.written, recording.took = writer.written, time.monotonic() - started
    return recording


def _write_failure(failed: OSError, args: argparse.Namespace, recording: _Recording) -> str:
    """The line for a write of the recording that failed: the file it was for, in words
    ("[Errno 28] No space left on device" named no file)."""
    if str(args.file) == "-" and isinstance(failed, BrokenPipeError):
        # `dump - | head -c 100`: what reads the recording went away; unlike `sub | head`
        # (a viewer that has seen enough), the recording is lost: not a success.
        return (
            "the output pipe closed: the recording stopped after "
            f"{counted(recording.frames, 'frame')}"
        )
    shown = "stdout" if str(args.file) == "-" else str(args.file)
    reason = (failed.strerror or str(failed)).lower()
    return f"cannot write {shown}: {reason}"


async def _final_flush(writer: _BatchWriter, file: IO[bytes]) -> bool:
    """Write what waits, whatever the way out, and close the file.

    Returns:
        False if the write did not finish within FINAL_FLUSH_TIMEOUT_S: the file stays open
        then, as closing it would wait for the write that hangs (a second Ctrl-C raises).
    """
    try:
        # Shielded as a whole: the lock the flush takes first is a checkpoint too, where the
        # cancel that brought us here (a second Ctrl-C, --duration) would stop it again.
        with trio.CancelScope(shield=True):
            done = await writer.flush(give_up_after_s=FINAL_FLUSH_TIMEOUT_S)
    except OSError:  # the write failed (it is over): the error is the one to report
        with contextlib.suppress(OSError):
            file.close()
        raise
    if done:
        # After a failed write, what it left in the file's buffer fails again: that one is
        # already reported.
        with contextlib.suppress(*(() if writer.failed is None else (OSError,))):
            file.close()
    return done


def _unwritten(writer: _BatchWriter, args: argparse.Namespace) -> str:
    shown = "stdout" if str(args.file) == "-" else args.file
    if not writer.unwritten:  # written before each credit (_record): the sync alone hung
        return (
            f"the recording could not be synced to the disk of {shown} within "
            f"{FINAL_FLUSH_TIMEOUT_S:g} s: its last second may be lost if the machine stops"
        )
    return (
        f"the last {human_bytes(writer.unwritten)} of the recording could not be written to "
        f"{shown} within {FINAL_FLUSH_TIMEOUT_S:g} s"
    )


async def _record_all(
    args: argparse.Namespace,
    client: ts.Client,
    sub: ts.Subscription,
    console: Console,
    deadline: float,
    writer: _BatchWriter,
    recording: _Recording,
) -> None:
    """The recording into ``writer`` (its header in it: a new file's) and ``recording``; the
    last flush is the caller's."""
    await writer.flush()  # a recording killed before its first frame is still a dump
    with _progress(
        not args.quiet and console.is_terminal,
        TextColumn(f"recording [bold]{args.channel}[/] to {args.file}"),
        BarColumn() if args.count else TextColumn(""),
        TextColumn("{task.completed} frames  {task.fields[size]}  lost {task.fields[lost]}"),
    ) as progress:
        task = progress.add_task("", total=args.count, size="", lost=0) if progress else None
        # One signal scope for the whole recording, the waits between a channel's lives
        # included (a Ctrl-C there ended the command without its summary).
        async with stop_on_signal():
            await _record(args, client, sub, writer, progress, task, deadline, recording)
            while recording.channel_ended and args.wait_channel and not recording.stopped:
                # "Until Ctrl-C" means it: a channel that ends (its owner gone for good, a
                # deletion) may come back, and the recording goes on with it, from where
                # it was: the server replays the new life from its first frame it holds (a
                # reset). Subscribed afresh, a cluster's recorder missed the 920-1610
                # frames written before it was back, which a reader `since=` its position had.
                recording.channel_ended = False
                await writer.flush()
                since = sub.position
                with trio.CancelScope(deadline=deadline):
                    async with subscription(
                        client, args.channel, args, back=True, since=since, prefetch=False
                    ) as sub:
                        await _record(
                            args, client, sub, writer, progress, task, deadline, recording, True
                        )
                recording.stopped |= trio.current_time() >= deadline


async def _record(
    args: argparse.Namespace,
    client: ts.Client,
    sub: ts.Subscription,
    writer: _BatchWriter,
    progress: Progress | None,
    task: TaskID | None,
    deadline: float,
    recording: _Recording,
    new_life: bool = False,
) -> None:
    """Write frames into ``recording`` until --count, --duration or the channel's end
    (``recording.stopped`` says it was one of those but the end); Ctrl-C cancels it.
    ``new_life``: the channel ended and is back: its first frame carries a ``reset`` gap,
    as after a server restart (dump-format.md), for a reader of the file to see the seam."""
    # The payloads' bytes as they came: stored without decoding them and encoding them again
    # (a compressed payload stays compressed, a non-Python writer's CBOR stays its own, and
    # a value the reader's limits refuse is recorded all the same).
    sub._keep_payloads_encoded()

    def skipped(what: str) -> None:
        recording.left_out += 1
        print(f"trio-stream dump: {what}: left out", file=sys.stderr)

    # Losses a notice told after the last message (sub.lost, not in any msg.lost): the end
    # of a reader away past the grace, drops after its last frame. Counted at the end: the
    # summary said "lost 0" under a line saying 2,026 frames were not delivered (a tester).
    lost_before, lost_in_messages = sub.lost, 0
    # The channel's end is said once the block below is left, as sub says it: after the
    # watcher's last line ("giving up" a reset wait). Woken by the same end, the two tasks
    # printed in either order (a review); README: giving up, then the end's own line.
    end_line: str | None = None
    async with _flushing(writer) as flushing:
        async with ended_if_not_back(client, sub, args) as gone:
            with trio.CancelScope(deadline=deadline) as timed:
                while True:
                    if writer.pending and not sub._frames:
                        # This receive returns the credit (prefetch=False) that lets the
                        # server forget the frames taken since the last one: they are written
                        # first (not synced), so that a recorder killed now and continued
                        # (--append) finds them in its file or in what the server held for it.
                        await writer.flush(sync=False)
                    try:
                        msg = await next_message(sub, skipped)
                    except trio.EndOfChannel:
                        # The channel ended (deleted, its lifetime, a cluster's Redis restarted).
                        hint = (
                            ""
                            if args.wait_channel
                            else " (--wait-channel records on when it is back)"
                        )
                        end_line = f"trio-stream dump: {ended(args.channel, sub)}{hint}"
                        recording.channel_ended = True
                        recording.lost += max(0, sub.lost - lost_before - lost_in_messages)
                        break
                    if new_life:
                        new_life = False
                        msg = marked_new_life(msg)
                    recording.lost += msg.lost
                    lost_in_messages += msg.lost
                    if msg.gap is not None:
                        # (this process's first frame of a recording --append continues)
                        continued = args.append and not recording.frames + recording.left_out
                        line = await gap_line(client, args, msg.gap, continued=continued)
                        print(f"trio-stream dump: {line}", file=sys.stderr)
                        recording.resets += msg.gap.kind == "reset"
                    if not _add_frame(writer, msg, recording, sub):
                        continue
                    recording.frames += 1
                    if writer.due():
                        await writer.flush()
                    if progress is not None and task is not None:
                        size = human_bytes(writer.written + writer.pending)
                        progress.update(
                            task, completed=recording.frames, size=size, lost=recording.lost
                        )
                    if recording.frames == args.count:
                        recording.stopped = True
                        break
        if end_line is not None:
            print(end_line, file=sys.stderr)
        flushing.cancel_scope.cancel()  # (the caller flushes the rest)
    # Not back after a server restart (ended_if_not_back said so): as at the channel's end.
    recording.channel_ended |= gone.cancelled_caught
    recording.stopped |= timed.cancelled_caught


def _add_frame(
    writer: _BatchWriter, msg: ts.Message, recording: _Recording, sub: ts.Subscription
) -> bool:
    """Add ``msg`` (its data: the payload's bytes) to the recording; False if its payload is
    not CBOR, which said on stderr and carried to the next frame (its lost, its gap)."""
    try:
        payload = dumpfile.payload_item(msg.data)
    except dumpfile.DumpFormatError as exc:
        recording.left_out += 1
        print(
            f"trio-stream dump: frame seq {msg.seq}: its payload is not CBOR ({exc}): left out",
            file=sys.stderr,
        )
        recording.carried_lost += msg.lost
        if recording.carried_gap is None:
            recording.carried_gap = msg.gap
        return False
    if recording.carried_lost or recording.carried_gap is not None:
        gap = msg.gap if recording.carried_gap is None else recording.carried_gap
        msg = msg._replace(lost=msg.lost + recording.carried_lost, gap=gap)
        recording.carried_lost, recording.carried_gap = 0, None
    epoch = None
    # The epoch changes with a gap only (a reset, a new life): looked up then, not per frame.
    if (msg.gap is not None or recording.epoch is None) and sub.position.epoch != recording.epoch:
        epoch = recording.epoch = sub.position.epoch
    # A frame every MARK_EVERY_BYTES is marked (the first this run adds too): from the
    # file's end, --append finds a mark within that many bytes (dumpfile.recording_end).
    mark = None
    if recording.mark is not None and recording.unmarked_bytes >= dumpfile.MARK_EVERY_BYTES:
        mark = [recording.mark, recording.epoch]
        recording.unmarked_bytes = 0
    pieces = dumpfile.frame_pieces(msg, time.time(), payload, epoch, mark)
    recording.unmarked_bytes += sum(len(piece) for piece in pieces)
    writer.add_pieces(pieces)
    return True


def _is_regular_file(file: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (OSError, ValueError):
        return False


@asynccontextmanager
async def _flushing(writer: _BatchWriter) -> AsyncIterator[trio.Nursery]:
    """The block with ``writer``'s timed flush beside it; what the block raises, as itself."""
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.flush_when_due)
            yield nursery


# -- replay ------------------------------------------------------------------------------------
def _open_dump(path: Path) -> tuple[IO[bytes], dumpfile.DumpReader]:
    """The file (``-``: stdin) and its reader, its header read.

    Raises:
        CliError: it cannot be opened, or is not a dump.
    """
    try:
        # "-": stdin (`zcat run.tsdump.gz | trio-stream replay - URL`), unbuffered: a read
        # that Ctrl-C abandons in its worker thread then holds no lock that closing it
        # would wait for (a BufferedReader's did, until the pipe said something).
        file: IO[bytes] = (
            open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115 (an fd)
            if _is_stdin(path)
            else path.open("rb")
        )
    except OSError as exc:  # missing, a directory, not readable: the reason, without errno
        reason = (exc.strerror or str(exc)).lower()
        raise CliError(f"cannot read {_shown(path)}: {reason}") from None
    try:
        return file, dumpfile.DumpReader(file)
    except dumpfile.DumpFormatError as exc:
        file.close()
        raise CliError(f"{_shown(path)}: {exc}") from None


def _is_stdin(path: Path) -> bool:
    return str(path) == "-"


def _shown(path: Path) -> str:
    return "stdin" if _is_stdin(path) else str(path)


async def run_replay(args: argparse.Namespace) -> int:
    from_stdin = _is_stdin(args.file)
    if from_stdin and (args.loop or args.repeat > 1):
        raise UsageError(
            "a recording from stdin is played once: give a FILE for --loop or --repeat"
        )
    # stdin's header may be long in coming (a live `dump ... - |`): waited for in a thread,
    # so that Ctrl-C stops the wait.
    file, reader = (
        await trio.to_thread.run_sync(_open_dump, args.file, abandon_on_cancel=True)
        if from_stdin
        else _open_dump(args.file)
    )
    # A file is opened again for each round; stdin can be read once, from here on.
    first_round = (file, reader) if from_stdin else None
    if first_round is None:
        file.close()
    channel = args.channel or reader.header.get("channel")
    if not isinstance(channel, str):
        raise CliError(f"{_shown(args.file)} names no channel; give CHANNEL")
    size = None if from_stdin else args.file.stat().st_size
    stats = _ReplayStats()
    try:
        await _replay_to(args, channel, size, first_round, stats)
    except BaseException:
        # Stopped (Ctrl-C, a lost server): what went out so far, as generate says it.
        if not args.quiet and (stats.sent or stats.unsent):
            print(
                f"replayed {counted(stats.sent, 'frame')} to {channel!r} (stopped before the end)",
                file=sys.stderr,
            )
        raise
    return _replay_summary(args, channel, stats)


async def _replay_to(
    args: argparse.Namespace,
    channel: str,
    size: int | None,
    first_round: tuple[IO[bytes], dumpfile.DumpReader] | None,
    stats: _ReplayStats,
) -> None:
    console = stderr_console()
    async with (
        connect(args) as client,
        publisher(client, channel, args, key=args.key or args.create_key) as pub,
    ):
        await wait_for_readers(client, pub, args)
        with _progress(
            not args.quiet and console.is_terminal,
            TextColumn(f"replaying {_shown(args.file)} to [bold]{channel}[/]"),
            BarColumn(),
            TextColumn("{task.fields[sent]} sent  {task.fields[unsent]} without readers"),
        ) as progress:
            total = None if args.loop or size is None else size * args.repeat
            task = progress.add_task("", total=total, sent=0, unsent=0) if progress else None
            rounds = 0
            while args.loop or rounds < args.repeat:
                opened = first_round or _open_dump(args.file)
                offset = rounds * (size or 0)
                if not await _play_once(args, opened, pub, stats, progress, task, offset):
                    break  # a file without frames: nothing to play again
                rounds += 1
        await pub.wait_acknowledged()


def _replay_summary(args: argparse.Namespace, channel: str, stats: _ReplayStats) -> int:
    if stats.truncated:
        print(
            f"trio-stream replay: {_shown(args.file)} ends inside a frame (an interrupted "
            "recording); the frames before it were played",
            file=sys.stderr,
        )
    if stats.gaps or stats.lost:
        # Counts as the recording states them (a file written elsewhere may hold anything:
        # a count that is not one counts as none, rather than a traceback after the play).
        resets = sum(1 for g in stats.gaps if g.get("kind") == "reset")
        gaps = (
            f"; {counted(len(stats.gaps), 'gap')} where its recorder reconnected"
            + (f", {counted(resets, 'reset')} (frames lost there unknown)" if resets else "")
            if stats.gaps
            else ""
        )
        print(
            f"trio-stream replay: the recording notes {counted(stats.lost, 'frame')} its "
            f"recorder lost{gaps}",
            file=sys.stderr,
        )
    if stats.unsent:
        advice = no_readers_advice("replay", args.wait_readers or args.min_readers, "replay")
        raise NoReaders(
            f"replayed {counted(stats.sent + stats.unsent, 'frame')} to {channel!r}: "
            f"{stats.sent} sent, {stats.unsent} not sent for want of readers ({advice})"
        )
    if not args.quiet:
        print(f"replayed {counted(stats.sent, 'frame')} to {channel!r}", file=sys.stderr)
    return 0


class _ReplayStats:
    def __init__(self) -> None:
        self.sent = 0
        self.unsent = 0
        self.gaps: list[dict[str, Any]] = []  # of the recording (reconnections of dump)
        self.lost = 0  # frames its recorder lost, as its frames' `lost` say
        self.truncated = False
        self.interval = 0.0  # mean gap between frames: the pause between two rounds


async def _play_once(
    args: argparse.Namespace,
    opened: tuple[IO[bytes], dumpfile.DumpReader],
    pub: ts.Publisher,
    stats: _ReplayStats,
    progress: Progress | None,
    task: TaskID | None,
    offset: int,
) -> int:
    """Play the recording once; returns how many frames it had."""
    file, reader = opened
    with file:
        start = 0.0
        first_t: float | None = None
        last_t = 0.0
        count = 0
        # A file is read synchronously: a chunk of a local file comes from the page cache in
        # far less time than the gaps between frames we wait for anyway. A pipe may keep us
        # waiting for as long as its writer likes: read in a thread, the connection lives on.
        records = _frames(args.file, reader)
        from_stdin = _is_stdin(args.file)
        while (record := await _next_record(reader, records, from_stdin)) is not None:
            t = record["t"]
            gap = record.get("gap")
            if not offset:  # (the first round: the file's own counts, once)
                if isinstance(gap, dict):
                    stats.gaps.append(gap)
                lost = record.get("lost")
                if type(lost) is int and lost > 0:
                    stats.lost += lost
            if first_t is None:
                # The clock starts with the first frame in hand and encoded once, so neither
                # reading it nor cbor2's first encode (it imports modules then, 10-25 ms)
                # makes it late against the frames after it.
                dumpfile.encode_item(record["data"])
                first_t, start = t, trio.current_time() + stats.interval
            if not args.fast:
                await trio.sleep_until(start + (t - first_t) / args.speed)
            time_s = record.get("time") if args.original_time else None
            if await pub.send(record["data"], time_s=time_s):
                stats.sent += 1
            else:
                stats.unsent += 1
            last_t, count = t, count + 1
            if progress is not None and task is not None:
                progress.update(
                    task, completed=offset + reader.position, sent=stats.sent, unsent=stats.unsent
                )
        if first_t is not None and count > 1:
            stats.interval = (last_t - first_t) / (count - 1) / args.speed
        stats.truncated = stats.truncated or reader.truncated
    return count


def _frames(path: Path, reader: dumpfile.DumpReader) -> Iterator[dict[str, Any]]:
    try:
        # A compressed payload (or one this reader cannot decode) is sent on as recorded.
        yield from reader.frames(keep_encoded=True)
    except dumpfile.DumpFormatError as exc:
        raise CliError(f"{_shown(path)}: {exc}") from None


async def _next_record(
    reader: dumpfile.DumpReader, records: Iterator[dict[str, Any]], from_pipe: bool
) -> dict[str, Any] | None:
    """The next record of a recording (None at its end). From a pipe, a record not read in
    yet is waited for in a worker thread (a thread per chunk read, not per record: a hop
    per record made stdin 3.6 times slower than a file)."""
    if from_pipe and not reader.item_ready():
        return await trio.to_thread.run_sync(next, records, None, abandon_on_cancel=True)
    return next(records, None)
