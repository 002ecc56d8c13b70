"""``channels``, ``clients`` and ``stats [--watch]``: what a server holds, as tables or JSON."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import textwrap
import time
from typing import Any, Final

import trio
from rich.console import Group
from rich.live import Live
from rich.text import Text

import trio_stream as ts

from ._channels import connect
from ._options import (
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_log_level,
    positive_float,
    positive_int,
)
from ._output import (
    counted,
    human_bytes,
    human_duration,
    human_rate,
    json_line,
    print_out,
    stdout_console,
)
from ._run import UsageError, stop_on_signal
from ._table import Column, FitTable

EPILOGS = {
    "channels": """\
examples:
  trio-stream channels tcp://127.0.0.1:9870
  trio-stream channels ws://127.0.0.1:9871/ws --system      # the server's $ channels too
  trio-stream channels tcp://127.0.0.1:9870 --json          # one JSON list, for scripts
""",
    "clients": """\
examples:
  trio-stream clients tcp://127.0.0.1:9870
  trio-stream clients tcp://127.0.0.1:9870 --json
""",
    "stats": """\
examples:
  trio-stream stats tcp://127.0.0.1:9870
  trio-stream stats tcp://127.0.0.1:9870 --watch                        # live, until Ctrl-C
  trio-stream stats tcp://127.0.0.1:9870 --watch --interval 0.5 --count 4 --json
""",
}


def register(subparsers: Subparsers) -> None:
    for name, help_text, run in (
        ("channels", "list the channels", run_channels),
        ("clients", "list the connected clients", run_clients),
        ("stats", "server load and per-channel rates (--watch: live)", run_stats),
    ):
        parser = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=EPILOGS[name],
            formatter_class=HelpFormatter,
        )
        add_log_level(parser, default=None)
        add_connection_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        if name != "clients":
            parser.add_argument(
                "--system", action="store_true", help="include the server's $ channels"
            )
        if name == "stats":
            parser.add_argument(
                "--watch", action="store_true", help="a live view (JSON: one line per update)"
            )
            parser.add_argument(
                "--interval",
                type=positive_float,
                metavar="SECONDS",
                help="seconds between updates with --watch (default: 1)",
            )
            parser.add_argument(
                "--count", type=positive_int, metavar="N", help="stop --watch after N updates"
            )
        parser.set_defaults(run=run)


NAME_MIN_WIDTH = 12  # columns a name keeps when words must break to fit the terminal
TEXT_MIN_WIDTH = 8  # ... and any other text


def _text(header: str) -> Column:
    # Text wraps onto more lines rather than losing its end ("demo/c…"): the end is often
    # what tells two names apart. Numbers (right-aligned) break only as a last resort.
    floor = NAME_MIN_WIDTH if header in ("channel", "name") else TEXT_MIN_WIDTH
    return Column(header, floor=floor)


def _number(header: str) -> Column:
    return Column(header, justify="right")


def _visible(channels: list[ts.ChannelInfo], system: bool) -> list[ts.ChannelInfo]:
    return sorted(
        (c for c in channels if system or not c.name.startswith("$")), key=lambda c: c.name
    )


def _records(items: list[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(item) for item in items]


# -- channels ----------------------------------------------------------------------------------
def channels_table(
    channels: list[ts.ChannelInfo], lost_per_s: dict[str, float] | None = None
) -> FitTable:
    # One "rate" column (frames/s, then bytes/s, wrapping between them) leaves room for the
    # names: a table of the demo's channels with lost/s and flags fits 80 columns.
    numbers = ["readers\n/writers", "rate", "seq", "lost"]
    if lost_per_s is not None:
        numbers.append("lost/s")
    table = FitTable(
        "channels",
        [_text("channel"), _text("owner"), *map(_number, numbers), _text("flags")],
    )
    now = time.time()
    for c in channels:
        flags = [
            flag
            for flag, on in (
                ("private", not c.public),
                ("keep", c.keep),
                ("single-writer", c.single_writer),
            )
            if on
        ]
        if c.history:
            flags.append(f"history={c.history}")
        if c.meta:
            flags.append(meta_text(c.meta))
        if c.lifetime is not None:
            flags.append(f"ends in {human_duration(c.created + c.lifetime - now)}")
        # A block reader holding the writers back: a stalled channel showed nothing here, its
        # rate 0 as a quiet one's (operator persona; --json had it).
        flags.extend(
            f"held by {str(h.get('client'))[:40]} {human_duration(float(h.get('held_s', 0)))}"
            for h in c.held_by
        )
        lost = [str(c.lost)]
        if lost_per_s is not None:
            lost.append(f"{lost_per_s.get(c.name, 0.0):.1f}")
        table.add_row(
            c.name,
            c.owner,
            f"{c.readers}/{c.writers}",
            f"{human_rate(c.rate_fps)} {human_bytes(c.rate_bps, 'B/s')}",
            str(c.seq),
            *lost,
            " ".join(flags),
        )
    return table


def meta_text(meta: dict[str, Any], max_chars: int = 80) -> str:
    """A channel's meta on one line: ``units=V labels=x,y "description"``, cut to fit."""
    parts = []
    for key, value in meta.items():
        if key == "description":
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={shown}")
    if meta.get("description"):
        parts.append(repr(str(meta["description"])))
    text = " ".join(parts)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


# Several nodes: what in the tables only the node that answered knows (README, Several nodes).
CLUSTER_CHANNELS_NOTE: Final = (
    "readers: every node's; writers, rates, lost and held-by: this node's own"
)
CLUSTER_CLIENTS_NOTE: Final = (
    "reading and writing: shown for this node's clients only (ask a client's own node)"
)


async def run_channels(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        listed = await client.channels()
    channels = _visible(listed, args.system)
    if args.json:
        print(json_line(_records(channels)))
        return 0
    console = stdout_console()
    if channels:
        print_out(console, channels_table(channels))
        if any(c.node for c in channels):
            print(CLUSTER_CHANNELS_NOTE)
    # The system channels left out are said, not silently missing: "no channels" on a
    # server that had three read as a listing that could not see them (a new user). Within
    # the table's width (COLUMNS), as the table is.
    shown = {c.name for c in channels}
    hidden = sorted(c.name for c in listed if c.name not in shown)
    if hidden or not channels:
        line = hidden_channels_line(hidden, empty=not channels)
        print(textwrap.fill(line, max(console.width, 20), break_long_words=False))
    return 0


def hidden_channels_line(hidden: list[str], *, empty: bool) -> str:
    """The line under a ``channels`` table (or instead of it) that says the system channels
    it leaves out: ``(+3 system channels: $channels, $clients, $stats; --system lists
    them)``; ``empty``: there is no table."""
    if not hidden:
        return "no channels"
    said = f"+{counted(len(hidden), 'system channel')}: {', '.join(hidden)}; --system lists them"
    return f"no channels ({said})" if empty else f"({said})"


# -- clients -----------------------------------------------------------------------------------
def clients_table(clients: list[ts.ClientInfo]) -> FitTable:
    # With several nodes, which one each client is connected to; one node: no such column.
    # Nor a "methods" column when no client has any: its room goes to the names. Short
    # headers ("reading": its subscriptions) leave room too.
    nodes = any(c.node for c in clients)
    methods = any(c.methods for c in clients)
    headers = [
        "name",
        *(["node"] if nodes else []),
        "address",
        "via",  # its transport: tcp or ws
        "connected",
        "reading",
        "writing",
        *(["methods"] if methods else []),
    ]
    table = FitTable("clients", [_number("id"), *map(_text, headers)])
    now = time.time()
    # Ids are each node's own: by node first, they read as numbered per node.
    for c in sorted(clients, key=lambda c: (c.node, c.id)):
        subs = ", ".join(
            f"{s.channel} ({s.policy}"
            + (f" {s.size}" if s.size else "")
            + (f", lost {s.lost}" if s.lost else "")
            + ")"
            for s in c.subscriptions
        )
        table.add_row(
            str(c.id),
            c.name,
            *([c.node] if nodes else []),
            c.address,
            c.transport,
            human_duration(now - c.connected_at) + " ago" if c.connected_at else "",
            subs,
            ", ".join(c.publishers),
            *([", ".join(c.methods)] if methods else []),
        )
    return table


async def run_clients(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        clients = await client.clients()
    if args.json:
        print(json_line(_records(clients)))
    else:
        print_out(stdout_console(), clients_table(clients))
        if any(c.node for c in clients):
            print(CLUSTER_CLIENTS_NOTE)
    return 0


# -- stats -------------------------------------------------------------------------------------
def channel_count(shown: int, hidden: int) -> str:
    """``4 (+3 system)``: the channels a table shows, then the system ones it leaves out.

    Not the server's own count (``stats.channels``): that one counts the system channels
    and not the private ones a table may list, so it never matched the table's rows.
    """
    return f"{shown} (+{hidden} system)" if hidden else str(shown)


def stats_text(
    server: str, stats: ts.ServerStats, channels: str | None = None, hidden_lost: int = 0
) -> Text:
    """``channels``: the channel count to show (channel_count()); default the server's.
    ``hidden_lost``: of the frames lost, those of channels the table leaves out (system
    ones), said so that the table's column adds up."""
    s = stats
    return Text.assemble(
        ("server ", ""),
        (server, "bold"),
        f"  up {human_duration(s.uptime_s)}",
        f"  connections {s.connections}  channels {s.channels if channels is None else channels}\n",
        # With several nodes: which one answered (the uptime and memory are its own).
        f"node {s.node} (one of {s.nodes}), holding {s.node_connections} of the "
        f"{counted(s.connections, 'connection')}\n"
        if s.node
        else "",
        f"in  {human_rate(s.frames_in_per_s)} frames  {human_bytes(s.bytes_in_per_s, 'B/s')}"
        f"  (total {counted(s.frames_in, 'frame')}, {human_bytes(s.bytes_in)})\n",
        f"out {human_rate(s.frames_out_per_s)} frames  {human_bytes(s.bytes_out_per_s, 'B/s')}"
        f"  (total {counted(s.frames_out, 'frame')}, {human_bytes(s.bytes_out)})\n",
        f"lost {s.frames_lost}"
        + (f" ({hidden_lost} on system channels: --system)" if hidden_lost else "")
        + f"  buffered {human_bytes(s.buffered_bytes)}"
        f"  memory {human_bytes(s.memory_bytes)}  cpu {s.cpu_percent:.0f}%",
    )


async def run_stats(args: argparse.Namespace) -> int:
    if not args.watch and (args.count is not None or args.interval is not None):
        raise UsageError("--count and --interval go with --watch")
    async with connect(args) as client:
        if args.watch:
            await _watch(client, args)
            return 0
        stats = await client.stats()
        listed = await client.channels()
        channels = _visible(listed, args.system)
    if args.json:
        print(json_line({"stats": dataclasses.asdict(stats), "channels": _records(channels)}))
    else:
        count = channel_count(len(channels), len(listed) - len(channels))
        shown: list[Any] = [stats_text(client.server, stats, count, _lost_beyond(listed, channels))]
        if channels:
            shown.append(channels_table(channels))
        print_out(stdout_console(), *shown)
    return 0


def _lost_beyond(listed: list[ts.ChannelInfo], shown: list[ts.ChannelInfo]) -> int:
    """Frames lost on the channels listed but not shown (the system ones)."""
    return sum(c.lost for c in listed) - sum(c.lost for c in shown)


def plain_lines(
    server: str, stats: ts.ServerStats, channels: list[ts.ChannelInfo], hidden: int = 0
) -> list[str]:
    """One update of ``stats --watch`` off a terminal: a line for the server, one per channel
    (``hidden``: the system channels left out, counted as ``system=``)."""
    s = stats
    stamp = time.strftime("%H:%M:%S")
    lines = [
        f"{stamp} server {server} connections={s.connections} channels={len(channels)} "
        + (f"system={hidden} " if hidden else "")
        + f"in={s.frames_in_per_s:.1f}fps/{human_bytes(s.bytes_in_per_s, 'B/s')} "
        f"out={s.frames_out_per_s:.1f}fps/{human_bytes(s.bytes_out_per_s, 'B/s')} "
        f"lost={s.frames_lost} buffered={human_bytes(s.buffered_bytes)}"
        + (f" node={s.node} nodes={s.nodes}" if s.node else "")
    ]
    lines.extend(
        f"{stamp} channel {c.name} readers={c.readers} writers={c.writers} "
        f"fps={c.rate_fps:.1f} bytes/s={c.rate_bps:.0f} seq={c.seq} lost={c.lost}"
        for c in channels
    )
    return lines


async def _watch(client: ts.Client, args: argparse.Namespace) -> None:
    """Refresh once per interval until --count or a signal (a last line says which)."""
    # Counted here, not returned: the signal cancels _watch_updates, and a return value
    # would never arrive (the line said "stopped after 0 update(s)" every time).
    shown = [0]
    async with stop_on_signal() as scope:
        await _watch_updates(client, args, shown)
    if scope.cancelled_caught:
        print(
            f"trio-stream stats: stopped after {counted(shown[0], 'update')}",
            file=sys.stderr,
            flush=True,
        )


async def _watch_updates(client: ts.Client, args: argparse.Namespace, shown: list[int]) -> None:
    """Like mflow's m_stats; lost/s from successive samples. ``shown[0]`` counts the
    updates shown."""
    console = stdout_console()
    previous: dict[str, tuple[float, int]] = {}
    updates = 0
    # JSON lines go straight to stdout; the table view needs the live display, and off a
    # terminal (a pipe, a log file) each update is plain lines, flushed at once.
    live = None
    if not args.json and console.is_terminal:
        live = Live(console=console, auto_refresh=False)
    with live if live is not None else contextlib.nullcontext():
        next_at = trio.current_time()
        while args.count is None or updates < args.count:
            stats = await client.stats()
            listed = await client.channels()
            channels = _visible(listed, args.system)
            hidden = len(listed) - len(channels)
            now = trio.current_time()
            lost_per_s: dict[str, float] = {}
            for c in channels:
                then, lost = previous.get(c.name, (now, c.lost))
                lost_per_s[c.name] = (c.lost - lost) / (now - then) if now > then else 0.0
                previous[c.name] = (now, c.lost)
            if args.json:
                print(
                    json_line(
                        {
                            "time": time.time(),
                            "stats": dataclasses.asdict(stats),
                            "channels": _records(channels),
                        }
                    ),
                    flush=True,
                )
            elif live is not None:
                text = stats_text(
                    client.server,
                    stats,
                    channel_count(len(channels), hidden),
                    _lost_beyond(listed, channels),
                )
                live.update(Group(text, channels_table(channels, lost_per_s)), refresh=True)
            else:
                lines = plain_lines(client.server, stats, channels, hidden)
                print("\n".join(lines), flush=True)
            updates += 1
            shown[0] = updates
            next_at += args.interval or 1.0
            if args.count is None or updates < args.count:
                await trio.sleep_until(next_at)
