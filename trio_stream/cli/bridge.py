"""``bridge``: forward channels from one server to another."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

import trio_stream as ts

from ._channels import connect, ended, publisher, subscription
from ._options import (
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_create_options,
    add_log_level,
    add_subscription_options,
)
from ._run import UsageError

log = logging.getLogger(__name__)

EPILOG = """\
A channel is read from SRC_URL only while its copy on DST_URL has readers, like any
trio_stream writer: an unwatched bridge costs nothing. Frames keep their writer's time.
SRC_URL and DST_URL may be one server (a channel then needs a --rename). The bridge is
two clients: NAME on the source and NAME-dst on the destination.

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
    if args.src_url == args.dst_url:
        for src, dst in routes:
            if src == dst:
                raise UsageError(
                    f"{src!r} would be bridged onto itself (SRC_URL and DST_URL are one "
                    f"server): --rename {src}=NEW publishes it as another channel"
                )
    return routes


async def _forward(
    args: argparse.Namespace, src: ts.Client, dst: ts.Client, src_name: str, dst_name: str
) -> None:
    async with publisher(dst, dst_name, args, key=args.create_key) as pub:
        if not args.quiet:
            print(f"bridging {src_name} -> {dst_name}", file=sys.stderr, flush=True)
        while True:
            await pub.wait_for_readers()
            log.info("%s has readers: subscribing to %s", dst_name, src_name)
            async with subscription(src, src_name, args) as sub:
                async for msg in sub:
                    await pub.send(msg.data, time_s=msg.time)
                    if pub.readers == 0:
                        break
                else:
                    if not args.quiet:
                        print(ended(src_name, sub), file=sys.stderr, flush=True)
                    return
            log.info("%s has no readers: unsubscribed from %s", dst_name, src_name)


async def run_bridge(args: argparse.Namespace) -> int:
    routes = _routes(args)
    async with (
        connect(args, args.src_url) as src,
        connect(args, args.dst_url, token=args.dst_token, name_suffix="-dst") as dst,
        trio.open_nursery() as nursery,
    ):
        for src_name, dst_name in routes:
            nursery.start_soon(_forward, args, src, dst, src_name, dst_name)
    return 0
