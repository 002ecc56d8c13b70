"""``send-file`` and ``receive-files``: file transfer between clients (trio_stream/_files.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

import trio_stream as ts

from .._files import DEFAULT_MAX_FILE_BYTES
from ._channels import connect
from ._options import HelpFormatter, Subparsers, add_connection_options, add_log_level, byte_size
from ._output import counted, human_bytes, progress_display, stderr_console
from ._run import CliError, stop_on_signal

SEND_EPILOG = """\
The receiver is a client that accepts files (`trio-stream receive-files`, or a program that
called accept_files). Each file is sent in chunks through the server and checked with sha256;
it appears on the receiver's side only complete.

examples (with `trio-stream receive-files tcp://127.0.0.1:9870 incoming --name store`
running):
  trio-stream send-file tcp://127.0.0.1:9870 store run42.h5 run43.h5
"""

RECEIVE_EPILOG = """\
Runs until Ctrl-C and prints one line per file received. Names are plain file names: a sender
can never write outside DIR. An existing file is kept (the sender gets an error) unless
--overwrite.

examples:
  trio-stream receive-files tcp://127.0.0.1:9870 . --name store
  trio-stream receive-files tcp://127.0.0.1:9870 . --name store --max-bytes 2GiB --share
"""


def register(subparsers: Subparsers) -> None:
    send = subparsers.add_parser(
        "send-file",
        help="send files to a client that accepts them",
        epilog=SEND_EPILOG,
        formatter_class=HelpFormatter,
        description="Send each PATH to the client named CLIENT (through the server).",
    )
    add_log_level(send, default=None)
    add_connection_options(send)
    send.add_argument("client", metavar="CLIENT", help="the receiving client's name")
    send.add_argument("paths", metavar="PATH", nargs="+", type=Path, help="files to send")
    send.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    send.set_defaults(run=run_send)

    receive = subparsers.add_parser(
        "receive-files",
        help="accept files that clients send, into a directory",
        epilog=RECEIVE_EPILOG,
        formatter_class=HelpFormatter,
        description="Accept files sent to this client (its --name) into DIR, until Ctrl-C.",
    )
    add_log_level(receive, default=None)
    add_connection_options(receive)
    receive.add_argument("directory", metavar="DIR", type=Path, help="where files land")
    receive.add_argument(
        "--max-bytes",
        type=byte_size,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="SIZE",
        help="the largest file accepted, e.g. 2GiB (default: 16GiB)",
    )
    receive.add_argument(
        "--overwrite", action="store_true", help="replace files that exist (default: refuse)"
    )
    receive.add_argument(
        "--share", action="store_true", help="also let clients fetch the files of DIR"
    )
    receive.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    receive.set_defaults(run=run_receive)


def _bar(progress: Progress, label: str, total: int | None) -> TaskID:
    return progress.add_task(label, total=total)


COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    DownloadColumn(),
    TransferSpeedColumn(),
)


async def run_send(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not path.exists():
            raise CliError(f"no such file: {path}")
        if not path.is_file():
            raise CliError(f"{path} is not a file (send-file sends files, not directories)")
    console = stderr_console()
    refused: list[Path] = []
    async with connect(args) as client:
        with progress_display(not args.quiet and console.is_terminal, *COLUMNS) as progress:
            for path in args.paths:
                size = path.stat().st_size
                task = None if progress is None else _bar(progress, path.name, size)

                def show(sent: int, total: int, task: TaskID | None = task) -> None:
                    if progress is not None and task is not None:
                        progress.update(task, completed=sent)

                started = time.monotonic()
                try:
                    name = await client.send_file(args.client, path, progress=show)
                except ts.RemoteError as exc:
                    # The receiver refused this file (it exists there, it is too large):
                    # the others still go, as cp and scp go on past a file they cannot copy.
                    # Any other error (no such receiver, the connection) ends the command.
                    if progress is not None and task is not None:
                        progress.remove_task(task)
                    print(f"trio-stream send-file: {path} not sent: {exc}", file=sys.stderr)
                    refused.append(path)
                    continue
                elapsed = max(time.monotonic() - started, 1e-9)
                if not args.quiet:
                    # A rate over less than a tenth of a second says nothing (a small file
                    # read "0.0 MB/s"): its size is the news then.
                    took = (
                        f"{elapsed:.1f} s, {size / elapsed / 1e6:.1f} MB/s"
                        if elapsed >= 0.1
                        else f"{elapsed * 1000:.0f} ms"
                    )
                    print(
                        f"sent {path} to {args.client} as {name} ({human_bytes(size)} in {took})",
                        file=sys.stderr,
                    )
    if refused:
        raise CliError(f"{len(refused)} of the {counted(len(args.paths), 'file')} not sent")
    return 0


async def run_receive(args: argparse.Namespace) -> int:
    console = stderr_console()
    async with connect(args) as client:
        with progress_display(not args.quiet and console.is_terminal, *COLUMNS) as progress:
            bars: dict[str, TaskID] = {}

            def on_event(event: ts.FileEvent) -> None:
                if progress is not None:
                    task = bars.get(event.name)
                    if task is None:
                        task = bars[event.name] = _bar(progress, event.name, event.size)
                    progress.update(task, completed=event.received)
                    if event.kind in ("done", "failed"):
                        progress.remove_task(bars.pop(event.name))
                if event.kind == "done":
                    # stdout: one line per file, for scripts to follow
                    print(f"received {event.path} ({event.size} bytes)", flush=True)
                elif event.kind == "failed":
                    print(f"failed {event.name}: {event.error}", file=sys.stderr, flush=True)

            service = client.accept_files(
                args.directory,
                max_bytes=args.max_bytes,
                overwrite=args.overwrite,
                share=args.share,
                on_event=on_event,
            )
            print(
                f"accepting files into {service.directory} as {client.name!r}; Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            async with stop_on_signal():
                await client.wait_state("closed")
    return 0
