"""``channels``, ``clients`` and ``stats [--watch]``: what a server holds, as tables or JSON."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from typing import Any

import trio
from rich.console import Group
from rich.live import Live
from rich.table import Table
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
from ._output import human_bytes, human_duration, human_rate, json_line, stdout_console
from ._run import UsageError


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


def _visible(channels: list[ts.ChannelInfo], system: bool) -> list[ts.ChannelInfo]:
    return sorted(
        (c for c in channels if system or not c.name.startswith("$")), key=lambda c: c.name
    )


def _records(items: list[Any]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(item) for item in items]


# -- channels ----------------------------------------------------------------------------------
def channels_table(
    channels: list[ts.ChannelInfo], lost_per_s: dict[str, float] | None = None
) -> Table:
    table = Table(title="channels", title_justify="left", expand=False)
    for column in ("channel", "owner", "readers", "writers", "frames/s", "bytes/s", "seq"):
        table.add_column(column, justify="left" if column in ("channel", "owner") else "right")
    table.add_column("lost", justify="right")
    if lost_per_s is not None:
        table.add_column("lost/s", justify="right")
    table.add_column("flags")
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
        lost = [str(c.lost)]
        if lost_per_s is not None:
            lost.append(f"{lost_per_s.get(c.name, 0.0):.1f}")
        table.add_row(
            c.name,
            c.owner,
            str(c.readers),
            str(c.writers),
            human_rate(c.rate_fps),
            human_bytes(c.rate_bps, "B/s"),
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


async def run_channels(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        channels = _visible(await client.channels(), args.system)
    if args.json:
        print(json_line(_records(channels)))
    elif not channels:
        print("no channels")
    else:
        stdout_console().print(channels_table(channels))
    return 0


# -- clients -----------------------------------------------------------------------------------
def clients_table(clients: list[ts.ClientInfo]) -> Table:
    table = Table(title="clients", title_justify="left")
    for column in (
        "id",
        "name",
        "address",
        "transport",
        "connected",
        "subscriptions",
        "publishing",
        "methods",
    ):
        table.add_column(column, justify="right" if column == "id" else "left")
    now = time.time()
    for c in sorted(clients, key=lambda c: c.id):
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
            c.address,
            c.transport,
            human_duration(now - c.connected_at) + " ago" if c.connected_at else "",
            subs,
            ", ".join(c.publishers),
            ", ".join(c.methods),
        )
    return table


async def run_clients(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        clients = await client.clients()
    if args.json:
        print(json_line(_records(clients)))
    else:
        stdout_console().print(clients_table(clients))
    return 0


# -- stats -------------------------------------------------------------------------------------
def stats_text(server: str, stats: ts.ServerStats) -> Text:
    s = stats
    return Text.assemble(
        ("server ", ""),
        (server, "bold"),
        f"  up {human_duration(s.uptime_s)}",
        f"  connections {s.connections}  channels {s.channels}\n",
        f"in  {human_rate(s.frames_in_per_s)} frames  {human_bytes(s.bytes_in_per_s, 'B/s')}"
        f"  (total {s.frames_in} frames, {human_bytes(s.bytes_in)})\n",
        f"out {human_rate(s.frames_out_per_s)} frames  {human_bytes(s.bytes_out_per_s, 'B/s')}"
        f"  (total {s.frames_out} frames, {human_bytes(s.bytes_out)})\n",
        f"lost {s.frames_lost}  buffered {human_bytes(s.buffered_bytes)}"
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
        channels = _visible(await client.channels(), args.system)
    if args.json:
        print(json_line({"stats": dataclasses.asdict(stats), "channels": _records(channels)}))
    else:
        console = stdout_console()
        console.print(stats_text(client.server, stats))
        if channels:
            console.print(channels_table(channels))
    return 0


async def _watch(client: ts.Client, args: argparse.Namespace) -> None:
    """Refresh once per interval, like mflow's m_stats; lost/s from successive samples."""
    console = stdout_console()
    previous: dict[str, tuple[float, int]] = {}
    updates = 0
    # JSON lines go straight to stdout; only the table view needs the live display.
    live = Live(console=console, auto_refresh=False) if not args.json else None
    with live if live is not None else contextlib.nullcontext():
        next_at = trio.current_time()
        while args.count is None or updates < args.count:
            stats = await client.stats()
            channels = _visible(await client.channels(), args.system)
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
                live.update(
                    Group(stats_text(client.server, stats), channels_table(channels, lost_per_s)),
                    refresh=True,
                )
            updates += 1
            next_at += args.interval or 1.0
            if args.count is None or updates < args.count:
                await trio.sleep_until(next_at)
