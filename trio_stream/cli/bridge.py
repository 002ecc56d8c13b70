"""``bridge``: forward channels from one server to another."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from functools import partial
from typing import Final

import trio

import trio_stream as ts

from .._protocol.codec import EncodedPayload
from .._protocol.frames import MAX_CLIENT_NAME_CHARS, MAX_SENDER_NAME_BYTES
from .._util import counted
from ._channels import check_readable, connect, ended, publisher, subscription
from ._options import (
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_create_options,
    add_log_level,
    add_subscription_options,
)
from ._run import UsageError, stop_on_signal
from .pubsub import next_message

log = logging.getLogger(__name__)

DST_NAME_SUFFIX: Final = "-dst"  # the destination client's name: NAME-dst (one name per server)
LOSS_REPORT_S: Final = 1.0  # losses are said at most this often per channel (and at the end)

EPILOG = """\
A channel is read from SRC_URL only while its copy on DST_URL has readers, like any
trio_stream writer: an unwatched bridge costs nothing. Frames keep their writer's time, and
their payload's bytes as the writer sent them (a compressed one stays compressed).
SRC_URL and DST_URL may be one server, or two nodes of one cluster, if no channel comes
back to itself (a --rename makes the copy another channel). The bridge is two clients:
NAME on the source and NAME-dst on the destination.

examples:
  trio-stream bridge tcp://daq.lab:9870 tcp://web.lab:9870 demo/sine demo/counter
  trio-stream bridge tcp://daq.lab:9870 tcp://web.lab:9870 demo/image --every 10 \\
      --rename demo/image=preview
  trio-stream bridge tcp://daq.lab:9870 tcp://web.lab:9870 demo/sine --policy drop_oldest \\
      --size 1 --max-rate 2
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "bridge",
        help="forward channels from one server to another",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
        description="Subscribe to CHANNELs on SRC_URL and publish what arrives to the same "
        "channels (or --rename'd ones) on DST_URL, creating them there if needed.",
    )
    add_log_level(parser, default=None)
    parser.add_argument("src_url", metavar="SRC_URL")
    parser.add_argument("dst_url", metavar="DST_URL")
    parser.add_argument("channels", metavar="CHANNEL", nargs="+")
    parser.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="SRC=DST",
        help="publish channel SRC as DST on the destination (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no status lines on stderr")
    add_connection_options(parser, url=False)
    parser.add_argument(
        "--dst-token", metavar="TOKEN", help="the destination's token, if not --token's"
    )
    add_subscription_options(parser)
    add_create_options(parser, what=None)  # missing destination channels are always made
    parser.set_defaults(run=run_bridge)


def _routes(args: argparse.Namespace) -> list[tuple[str, str]]:
    renames: dict[str, str] = {}
    for rule in args.rename:
        src, sep, dst = rule.partition("=")
        if not sep or not src or not dst:
            raise UsageError(f"--rename takes SRC=DST, not {rule!r}")
        if src not in args.channels:
            raise UsageError(f"--rename {rule}: {src!r} is not one of the bridged channels")
        renames[src] = dst
    routes = [(channel, renames.get(channel, channel)) for channel in dict.fromkeys(args.channels)]
    if args.name is not None:
        dst_name = args.name + DST_NAME_SUFFIX
        if len(dst_name) > MAX_CLIENT_NAME_CHARS or len(dst_name.encode()) > MAX_SENDER_NAME_BYTES:
            raise UsageError(
                f"--name is too long for a bridge: its destination client is NAME"
                f"{DST_NAME_SUFFIX}, and a client name is at most {MAX_CLIENT_NAME_CHARS} "
                f"characters ({MAX_SENDER_NAME_BYTES} bytes of UTF-8)"
            )
    if args.src_url == args.dst_url:
        _refuse_loops(routes)  # before connecting; other URLs of one server: run_bridge
    return routes


def _refuse_loops(routes: list[tuple[str, str]]) -> None:
    """On one server (or cluster), a frame must never come back to a channel it left: a
    route onto itself, or routes in a circle, would send every frame round for ever."""
    copy_of = dict(routes)
    for start, _ in routes:
        path = [start]
        while (channel := copy_of.get(path[-1])) is not None:
            path.append(channel)
            if channel == start:
                circle = " -> ".join(repr(c) for c in path)
                raise UsageError(
                    f"{circle} would send every frame round for ever (SRC_URL and DST_URL are "
                    "one server): --rename the copies to channels that are not bridged"
                )
            if len(path) > len(routes):
                break  # a chain into a circle that does not pass through start: found from it


class _LossReport:
    """What the source lost before the bridge read it, said on stderr: the copy's readers
    see its frames numbered without a gap, so this line is the only place it shows (the
    bridge's own --policy and --size drop frames too, as any reader's do)."""

    def __init__(self, src_name: str, dst_name: str) -> None:
        self._route = f"{src_name!r} -> {dst_name!r}"
        self.total = 0
        self._unsaid = 0
        self._said_at = -math.inf
        # Frames read from the source that the copy took from no one: it had no reader then
        # (its readers had not come back after the destination's restart, say).
        self.unsent = 0
        self._unsent_unsaid = 0

    def not_forwarded(self) -> None:
        self.unsent += 1
        self._unsent_unsaid += 1
        if trio.current_time() - self._said_at >= LOSS_REPORT_S:
            self.say()

    def note(self, msg: ts.Message) -> None:
        if msg.gap is not None and msg.gap.kind == "reset":
            self.say()
            _warn(
                f"{self._route}: the source channel was reset (created anew, or its server "
                "restarted): what was sent to it meanwhile may be missing from the copy"
            )
        if msg.lost:
            self.total += msg.lost
            self._unsaid += msg.lost
            if trio.current_time() - self._said_at >= LOSS_REPORT_S:
                self.say()

    async def keep_saying(self) -> None:
        while True:
            await trio.sleep(LOSS_REPORT_S)
            self.say()

    def say(self) -> None:
        if self._unsaid:
            _warn(
                f"{self._route}: {counted(self._unsaid, 'frame')} of the source lost before "
                f"the bridge read {'it' if self._unsaid == 1 else 'them'} ({self.total} in all: "
                "a slow destination or the bridge's --policy/--size); the copy's readers "
                "cannot see this"
            )
            self._unsaid = 0
            self._said_at = trio.current_time()
        if self._unsent_unsaid:
            _warn(
                f"{self._route}: {counted(self._unsent_unsaid, 'frame')} read from the source "
                f"reached no reader of the copy ({self.unsent} in all: the copy had no reader "
                "then, e.g. its readers had not come back after the destination reconnected)"
            )
            self._unsent_unsaid = 0
            self._said_at = trio.current_time()


def _warn(line: str) -> None:
    print(f"trio-stream bridge: {line}", file=sys.stderr, flush=True)


async def _forward(
    args: argparse.Namespace, src: ts.Client, dst: ts.Client, src_name: str, dst_name: str
) -> None:
    losses = _LossReport(src_name, dst_name)
    async with publisher(
        dst, dst_name, args, key=args.create_key, key_option="--create-key"
    ) as pub:
        if not args.quiet:
            print(f"bridging {src_name} -> {dst_name}", file=sys.stderr, flush=True)
        try:
            async with trio.open_nursery() as nursery:
                # A loss noted within a second of the last report is said a second later at
                # the latest, not with the next loss (which may be hours away).
                nursery.start_soon(losses.keep_saying)
                await _forward_while_read(args, src, pub, src_name, dst_name, losses)
                nursery.cancel_scope.cancel()
        finally:
            losses.say()  # what the last second lost, on the way out too (Ctrl-C)


async def _forward_while_read(
    args: argparse.Namespace,
    src: ts.Client,
    pub: ts.Publisher,
    src_name: str,
    dst_name: str,
    losses: _LossReport,
) -> None:
    """Forward while the copy has readers, until the source channel ends."""
    while True:
        await pub.wait_for_readers()
        log.info("%s has readers: subscribing to %s", dst_name, src_name)
        async with subscription(src, src_name, args) as sub:
            # Forwarded as they came, undecoded: a compressed payload stays compressed (the
            # slow link it was compressed for), a non-Python writer's CBOR its own, and a
            # payload this reader could not decode (not CBOR, beyond its limits) is the
            # copy's readers' to refuse, as the source's readers do, not the end of the
            # bridge (it ended it, and the copy with it, for all its readers).
            sub._keep_payloads_encoded()
            skipped = partial(_skipped, src_name, dst_name)
            while True:
                try:
                    msg = await next_message(sub, skipped)
                except trio.EndOfChannel:
                    if not args.quiet:
                        _warn(ended(src_name, sub))
                    return
                if msg.lost or msg.gap is not None:
                    losses.note(msg)
                if not await pub.send(EncodedPayload(bytes(msg.data)), time_s=msg.time):
                    losses.not_forwarded()  # not silently: counted and said
                # Not `pub.readers == 0`: after the destination reconnects, the copy has no
                # readers until theirs reconnect too, and the publisher holds its frames for
                # them meanwhile (wanted). Unsubscribing then lost what the source sent until
                # they were back, without a word.
                if not pub.wanted:
                    break
        log.info("%s has no readers: unsubscribed from %s", dst_name, src_name)


def _skipped(src_name: str, dst_name: str, what: str) -> None:
    """A frame too damaged to forward (its head cut short: a server's fault)."""
    _warn(f"{src_name!r} -> {dst_name!r}: {what}: not forwarded")


async def _one_server(src: ts.Client, dst: ts.Client) -> bool:
    """True if both clients reach one server or cluster: the source client is listed on the
    destination (URLs that differ may still name one server: localhost, tcp:// and ws://)."""
    return src.name in {client.name for client in await dst.clients()}


async def run_bridge(args: argparse.Namespace) -> int:
    routes = _routes(args)
    async with (
        connect(args, args.src_url) as src,
        connect(args, args.dst_url, token=args.dst_token, name_suffix=DST_NAME_SUFFIX) as dst,
    ):
        if args.src_url != args.dst_url and await _one_server(src, dst):
            _refuse_loops(routes)
        # A mistyped channel fails now, not when someone first reads its copy.
        await check_readable(src, [src_name for src_name, _ in routes], args)
        # A bridge runs until it is stopped, as serve and dump do: Ctrl-C or SIGTERM is its
        # normal end (exit 0), and the two clients then say goodbye to their servers.
        async with stop_on_signal(), trio.open_nursery() as nursery:
            for src_name, dst_name in routes:
                nursery.start_soon(_forward, args, src, dst, src_name, dst_name)
    return 0
