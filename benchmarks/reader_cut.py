"""What a reader loses when its own TCP connection is cut while a writer keeps publishing.

    PYTHONPATH=. python benchmarks/reader_cut.py
    PYTHONPATH=. python benchmarks/reader_cut.py --systems trio_stream,redis,nats \\
        --cuts 10 --rate 1000 --json /tmp/reader_cut/out.json

For each system in turn: a fresh server on a free loopback port (benchmarks.servers), a
writer connected to it directly, and a reader connected through a small TCP proxy written
here. The writer publishes a counter (0, 1, 2, ...) at ``--rate`` frames/s against a
monotonic schedule for the whole run. Every ``--interval`` seconds the proxy closes every
link it carries (the reader's connection: both the client and the server see it end at
once) and accepts new ones right away; ``--cuts`` cuts in all, 2 s of quiet after the last,
then the writer stops and the reader drains (at most 5 s).

Measured per system:

- published: values the writer handed over; "to no reader": those the system said nobody
  received (trio_stream: ``send`` returned False; Redis: PUBLISH returned 0; NATS: cannot
  tell, n/a);
- received, missing (published values never received, by value), duplicates, out of order
  (first receipts lower than a value received before);
- stall: from a cut to the first message received among those published after it (frames
  already on their way before the cut do not count), median and max over the cuts;
- reconnects: reconnections the reader itself reported (trio_stream: messages carrying
  ``msg.gap``; Redis: SUBSCRIBE confirmations after the first; NATS: ``reconnected_cb``);
- the writer's longest single send/publish call.

How each reader reconnects (each client's own, documented mechanism):

- trio_stream: ``ts.open_client(..., reconnect=ts.Reconnect(initial=0.05, maximum=0.5))``.
  The client reconnects with a doubling, jittered backoff, resumes its session (resume
  token) and resubscribes each subscription after its last frame; the server kept the
  broken connection's subscriptions for ``resume_grace_s`` (10 s), with the frames that
  arrived meanwhile and those in flight, and hands them back. The first message after
  the cut carries ``msg.gap``.
- Redis pub/sub (redis-py asyncio): ``redis.asyncio.Redis(host=..., port=...)``'s default
  ``Retry`` (redis-py 8: 10 retries, exponential backoff with jitter from 10 ms, capped at
  1 s) reconnects inside ``PubSub.get_message`` at the first failure (the backoff sleep
  comes after the reconnection), and the PubSub's on-connect callback sends SUBSCRIBE
  again. (``Redis.from_url`` builds its pool without that Retry: it would not reconnect.)
  The benchmark only adds an outer loop for when those retries run out (noted if it ever
  happens). Whatever was published while no SUBSCRIBE was in place is gone.
- NATS core (nats-py): its built-in reconnect (``reconnect_time_wait=0.05``, unlimited
  attempts) reconnects and replays its SUB commands by itself. Core NATS keeps nothing
  for a disconnected subscriber either.

The proxy runs in trio in the main thread; trio_stream's clients share its event loop, the
peers' asyncio clients run in one worker thread (``asyncio.run``) and ask the main thread
for the cuts. Prints a markdown table (one row per system) to stdout, progress to stderr,
and with ``--json`` writes every figure, per-cut details, notes and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import importlib.metadata
import json
import math
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import redis
import redis.asyncio as aioredis
import trio
from nats.aio.msg import Msg

import trio_stream as ts
from benchmarks import systems
from benchmarks.servers import running_server
from benchmarks.systems.base import LOOPBACK

CHANNEL = "cut"
# benchmark name -> benchmarks.systems adapter whose server_command/url start the server
ADAPTERS = {"trio_stream": "trio_stream_tcp", "redis": "redis", "nats": "nats"}
TAIL_S = 2.0  # after the last cut: the last reconnection settles before the writer stops
DRAIN_S = 5.0  # longest wait for the writer's last value to reach the reader
STRAGGLER_S = 0.2  # after the last value: room for anything out of order behind it
SETUP_TIMEOUT_S = 20.0  # connect, subscribe, the writer learning of its reader
CLOSE_TIMEOUT_S = 5.0
READER_SIZE = 10_000  # trio_stream reader buffer (frames): ~10 s at 1 kHz, far above a cut
READER_RECONNECT = ts.Reconnect(initial=0.05, maximum=0.5)
NATS_RECONNECT_WAIT_S = 0.05
REDIS_POLL_S = 0.1
REDIS_RETRY_S = 0.05  # pause of the outer loop when redis-py's own retries ran out
COUNTER = struct.Struct(">Q")  # the peers' payload: the counter as 8 bytes
DEFAULT_OUT = Path("/tmp/reader_cut")

Schedule = Callable[[], Awaitable[None]]
Send = Callable[[int], Awaitable[bool | None]]  # True/False: delivered to a reader; None: unknown


def _nothing() -> None:
    pass


@dataclass
class Tally:
    """Everything one system's run records, in time.monotonic() seconds (shared by threads:
    the peers' clients append from the asyncio thread, the proxy's cuts from the trio one)."""

    sent_at: list[float] = field(default_factory=list)  # by value: when its send began
    no_reader: int | None = None  # None: the system cannot tell
    longest_send_s: float = 0.0
    stopping: bool = False  # set when the schedule is over: the writer stops
    last: int | None = None  # the writer's last value, once it stopped
    top: int = -1  # the highest value received
    received: list[int] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    reconnects: list[float] = field(default_factory=list)  # as the reader's client reported
    cuts: list[float] = field(default_factory=list)
    links_cut: list[int] = field(default_factory=list)  # proxy links closed at each cut
    gaps: list[dict[str, Any]] = field(default_factory=list)  # trio_stream: msg.gap of each
    overflow_lost: int = 0  # trio_stream: msg.lost (the reader's own policy dropped frames)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    wake: Callable[[], None] = _nothing  # sets the drain's event (its loop's own kind)

    def take(self, value: int, now: float) -> None:
        self.received.append(value)
        self.received_at.append(now)
        self.top = max(self.top, value)
        if self.last is not None and self.top >= self.last:
            self.wake()

    def finish(self) -> None:
        """The writer stopped: the drain waits for its last value."""
        self.last = len(self.sent_at) - 1
        if self.top >= self.last:
            self.wake()

    def note(self, text: str) -> None:
        if text not in self.notes:  # a reconnect loop reports the same error each cut
            self.notes.append(text)


# -- the proxy --------------------------------------------------------------------------------
class CutProxy:
    """A TCP relay to one upstream port; ``cut()`` closes every current link at once."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._links: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
        port: int = listeners[0].socket.getsockname()[1]
        task_status.started(port)
        await trio.serve_listeners(self._link, listeners)

    async def _link(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._links.add(scope)
            try:
                async with (
                    client,
                    await trio.open_tcp_stream(LOOPBACK, self.upstream_port) as server,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(_pump, client, server, nursery.cancel_scope)
                    nursery.start_soon(_pump, server, client, nursery.cancel_scope)
            except OSError:
                pass  # the upstream refused: the client sees its link close, as on a cut
            finally:
                self._links.discard(scope)

    def cut(self) -> int:
        """Close every link now (the sockets close as their tasks unwind); returns how many."""
        links = list(self._links)
        for scope in links:
            scope.cancel()
        return len(links)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, link: trio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    link.cancel()  # either side ending ends the link: no half-open connections


async def cut_schedule(proxy: CutProxy, tally: Tally, cuts: int, interval: float) -> None:
    """``cuts`` cuts ``interval`` apart (the first one ``interval`` in), then TAIL_S."""
    start = trio.current_time()
    for i in range(cuts):
        await trio.sleep_until(start + (i + 1) * interval)
        tally.cuts.append(time.monotonic())  # before the cut: nothing after it is "in flight"
        tally.links_cut.append(proxy.cut())
    await trio.sleep(TAIL_S)


# -- the writer (trio or asyncio: the sleep decides) -------------------------------------------
async def write_paced(
    send: Send, sleep: Callable[[float], Awaitable[None]], rate: float, tally: Tally
) -> None:
    """Values 0, 1, 2, ... at ``rate``/s until ``tally.stopping``; a late writer catches up."""
    start = time.monotonic()
    seq = 0
    while not tally.stopping:
        # Always sleep, even for 0 s: a send that does not wait must still let the reader run.
        await sleep(max(0.0, start + seq / rate - time.monotonic()))
        if tally.stopping:
            break
        began = time.monotonic()
        delivered = await send(seq)
        tally.longest_send_s = max(tally.longest_send_s, time.monotonic() - began)
        tally.sent_at.append(began)
        if delivered is False and tally.no_reader is not None:
            tally.no_reader += 1
        seq += 1


# -- trio_stream --------------------------------------------------------------------------------
async def case_trio_stream(
    server_url: str, proxy_url: str, schedule: Schedule, tally: Tally, rate: float
) -> None:
    tally.no_reader = 0
    async with ts.open_client(server_url, name="writer") as writer:
        await writer.create_channel(CHANNEL)  # no history: only the kept reader can help
        async with (
            writer.publisher(CHANNEL) as pub,
            ts.open_client(proxy_url, name="reader", reconnect=READER_RECONNECT) as reader,
            reader.subscribe(CHANNEL, policy="block", size=READER_SIZE) as sub,
            trio.open_nursery() as nursery,
        ):
            drained = trio.Event()
            tally.wake = drained.set
            nursery.start_soon(_read_trio_stream, sub, tally)
            with trio.fail_after(SETUP_TIMEOUT_S):
                await pub.wait_for_readers()
            async with trio.open_nursery() as writing:
                writing.start_soon(write_paced, pub.send, trio.sleep, rate, tally)
                await schedule()
                tally.stopping = True
            tally.finish()
            with trio.move_on_after(DRAIN_S):
                await drained.wait()
            await trio.sleep(STRAGGLER_S)
            nursery.cancel_scope.cancel()


async def _read_trio_stream(sub: ts.Subscription, tally: Tally) -> None:
    async for msg in sub:
        now = time.monotonic()
        if msg.gap is not None:  # the first message after a reconnection
            tally.reconnects.append(now)
            tally.gaps.append(msg.gap._asdict())
        tally.overflow_lost += msg.lost
        tally.take(int(msg.data), now)


# -- the peers, in asyncio ------------------------------------------------------------------------
async def _quietly(closing: Awaitable[None]) -> None:
    """Close a peer client, bounded; an error while closing must not hide the run's own."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, CLOSE_TIMEOUT_S)


async def run_asyncio_case(
    send: Send,
    read: Callable[[], Coroutine[Any, Any, None]] | None,
    schedule: Schedule,
    tally: Tally,
    rate: float,
    flush: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The writer, the optional reader task and the schedule; then the drain."""
    drained = asyncio.Event()
    tally.wake = drained.set
    async with asyncio.TaskGroup() as group:
        reading = group.create_task(read()) if read is not None else None
        writing = group.create_task(write_paced(send, asyncio.sleep, rate, tally))
        await schedule()
        tally.stopping = True
        await writing
        if flush is not None:
            await flush()  # the writer's buffered frames are on the server before the drain
        tally.finish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), DRAIN_S)
        await asyncio.sleep(STRAGGLER_S)
        if reading is not None:
            reading.cancel()


async def case_redis(
    server_url: str, proxy_url: str, schedule: Schedule, tally: Tally, rate: float
) -> None:
    tally.no_reader = 0
    writer = aioredis.Redis(host=LOOPBACK, port=_port(server_url))
    # The constructor's default Retry reconnects and resubscribes inside get_message (see the
    # docstring). Not Redis.from_url: its connection pool is built without that Retry (a
    # connection's own default is no retry), and every cut would end in a ConnectionError.
    reader = aioredis.Redis(host=LOOPBACK, port=_port(proxy_url))
    # redis-py leaves pubsub() untyped.
    pubsub = reader.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
    try:
        await pubsub.subscribe(CHANNEL)
        await asyncio.wait_for(_redis_confirmed(pubsub), SETUP_TIMEOUT_S)

        async def send(seq: int) -> bool:
            receivers: int = await writer.publish(CHANNEL, COUNTER.pack(seq))
            return receivers > 0

        await run_asyncio_case(send, partial(_read_redis, pubsub, tally), schedule, tally, rate)
    finally:
        # redis-py leaves PubSub.aclose untyped.
        await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call,unused-ignore]
        await _quietly(reader.aclose())
        await _quietly(writer.aclose())


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def _redis_confirmed(pubsub: Any) -> None:
    """The server confirmed the SUBSCRIBE: the writer may start without losing frame 0."""
    while True:
        message = await pubsub.get_message(timeout=REDIS_POLL_S)
        if message is not None and message["type"] == "subscribe":
            return


async def _read_redis(pubsub: Any, tally: Tally) -> None:
    while True:
        try:
            message = await pubsub.get_message(timeout=REDIS_POLL_S)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # redis-py's retries ran out; the next get_message connects (and resubscribes).
            tally.note(f"redis reader: retries exhausted: {type(exc).__name__}: {exc}")
            await asyncio.sleep(REDIS_RETRY_S)
            continue
        if message is None:
            continue
        now = time.monotonic()
        if message["type"] == "message":
            tally.take(COUNTER.unpack(message["data"])[0], now)
        elif message["type"] == "subscribe":  # the resubscription after a reconnect
            tally.reconnects.append(now)


async def case_nats(
    server_url: str, proxy_url: str, schedule: Schedule, tally: Tally, rate: float
) -> None:
    async def on_error(exc: Exception) -> None:
        tally.note(f"nats reader: {type(exc).__name__}: {exc}")

    async def on_reconnected() -> None:
        tally.reconnects.append(time.monotonic())

    async def on_message(msg: Msg) -> None:
        tally.take(COUNTER.unpack(msg.data)[0], time.monotonic())

    writer = await nats.connect(server_url, name="writer", connect_timeout=int(SETUP_TIMEOUT_S))
    try:
        reader = await nats.connect(
            proxy_url,
            name="reader",
            allow_reconnect=True,
            reconnect_time_wait=NATS_RECONNECT_WAIT_S,
            max_reconnect_attempts=-1,
            reconnected_cb=on_reconnected,
            error_cb=on_error,
            connect_timeout=int(SETUP_TIMEOUT_S),
        )
        try:
            await reader.subscribe(CHANNEL, cb=on_message)
            await reader.flush(int(SETUP_TIMEOUT_S))  # the server has the SUB: frame 0 counts

            async def send(seq: int) -> None:
                await writer.publish(CHANNEL, COUNTER.pack(seq))

            async def flush() -> None:
                await writer.flush(int(SETUP_TIMEOUT_S))

            await run_asyncio_case(send, None, schedule, tally, rate, flush)
        finally:
            await _quietly(reader.close())
    finally:
        await _quietly(writer.close())


PEER_CASES: dict[str, Callable[[str, str, Schedule, Tally, float], Awaitable[None]]] = {
    "redis": case_redis,
    "nats": case_nats,
}


# -- one system's run ---------------------------------------------------------------------------
async def drive(name: str, server_url: str, tally: Tally, args: argparse.Namespace) -> None:
    """The proxy in front of ``server_url``, then the system's case (the peers' in a thread)."""
    proxy = CutProxy(_port(server_url))
    budget = args.cuts * args.interval + TAIL_S + DRAIN_S + STRAGGLER_S + 2 * SETUP_TIMEOUT_S
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.run)
        proxy_url = f"{urlsplit(server_url).scheme}://{LOOPBACK}:{port}"
        schedule = partial(cut_schedule, proxy, tally, args.cuts, args.interval)
        # The trio side's bound; the asyncio side has its own, a little shorter, inside.
        with trio.fail_after(budget + 2 * CLOSE_TIMEOUT_S + 5):
            if name == "trio_stream":
                await case_trio_stream(server_url, proxy_url, schedule, tally, args.rate)
            else:
                token = trio.lowlevel.current_trio_token()

                async def schedule_from_asyncio() -> None:
                    # An executor thread runs the schedule in the trio loop and waits for it.
                    await asyncio.to_thread(trio.from_thread.run, schedule, trio_token=token)

                async def bounded() -> None:
                    async with asyncio.timeout(budget):
                        await PEER_CASES[name](
                            server_url, proxy_url, schedule_from_asyncio, tally, args.rate
                        )

                def in_thread() -> None:
                    asyncio.run(bounded())

                await trio.to_thread.run_sync(in_thread)
        nursery.cancel_scope.cancel()


def run_system(name: str, args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    started = time.monotonic()
    print(f"{name}: {args.cuts} cuts, {args.rate:g} frames/s ...", file=sys.stderr)
    try:
        with running_server(systems.load(ADAPTERS[name]), args.out / name) as server:
            trio.run(drive, name, server.url, tally, args)
            if (problem := server.check_alive()) is not None:
                tally.note(problem)
    except Exception as exc:  # one system failing must not hide the others' figures
        tally.error = f"{type(exc).__name__}: {exc}"
        print(f"{name}: FAILED: {tally.error}", file=sys.stderr)
    return summarize(name, tally, args.interval, time.monotonic() - started)


def summarize(name: str, tally: Tally, interval: float, seconds: float) -> dict[str, Any]:
    published = len(tally.sent_at)
    seen: set[int] = set()
    duplicates = out_of_order = 0
    top = -1
    for value in tally.received:
        if value in seen:
            duplicates += 1
            continue
        seen.add(value)
        if value < top:
            out_of_order += 1
        top = max(top, value)
    missing = sorted(set(range(published)) - seen)
    never_published = sum(1 for v in seen if not 0 <= v < published)

    # Stall: from a cut to the first message received among those published after it.
    stalls: list[float | None] = []
    for cut in tally.cuts:
        first_after = bisect.bisect_left(tally.sent_at, cut)  # sent_at is ascending
        start = bisect.bisect_left(tally.received_at, cut)
        found = next(
            (
                tally.received_at[i] - cut
                for i in range(start, len(tally.received))
                if tally.received[i] >= first_after
            ),
            None,
        )
        stalls.append(found)
    measured = [s for s in stalls if s is not None]

    # Each missing value is charged to the cut nearest to when it was published (frames in
    # flight at a cut were published just before it).
    per_cut = [0] * len(tally.cuts)
    away = 0
    for value in missing:
        index = bisect.bisect_right(tally.cuts, tally.sent_at[value] + interval / 2) - 1
        if index < 0:
            away += 1
        else:
            per_cut[index] += 1
    if tally.overflow_lost:
        tally.note(f"the reader's policy dropped {tally.overflow_lost} frames (msg.lost)")
    if any(n == 0 for n in tally.links_cut):
        tally.note("a cut found no reader link to close (still reconnecting?)")

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    first = tally.cuts[0] if tally.cuts else 0.0
    return {
        "system": name,
        "cuts": len(tally.cuts),
        "reconnects": len(tally.reconnects),
        "published": published,
        "no_reader_sends": tally.no_reader,
        "received": len(tally.received),
        "missing": len(missing),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "never_published": never_published,
        "stall_p50_ms": ms(statistics.median(measured)) if measured else None,
        "stall_max_ms": ms(max(measured)) if measured else None,
        "cuts_without_stall_figure": len(stalls) - len(measured),
        "longest_send_ms": ms(tally.longest_send_s),
        "per_cut": [
            {
                "at_s": round(cut - first, 4),
                "links_cut": links,
                "stall_ms": ms(stall),
                "missing": lost,
            }
            for cut, links, stall, lost in zip(
                tally.cuts, tally.links_cut, stalls, per_cut, strict=True
            )
        ],
        "missing_away_from_cuts": away,
        "missing_values_first": missing[:50],
        "gaps": tally.gaps,
        "overflow_lost": tally.overflow_lost,
        "notes": tally.notes,
        "error": tally.error,
        "seconds": round(seconds, 2),
    }


# -- output -------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    columns = [
        ("system", "system"),
        ("cuts", "cuts"),
        ("reconnects", "reconnects"),
        ("published", "published"),
        ("no_reader_sends", "to no reader"),
        ("received", "received"),
        ("missing", "missing"),
        ("duplicates", "duplicates"),
        ("out_of_order", "out of order"),
        ("stall_p50_ms", "stall p50 (ms)"),
        ("stall_max_ms", "stall max (ms)"),
        ("longest_send_ms", "longest send (ms)"),
    ]
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(row[key]) for key, _ in columns) + " |" for row in rows]
    for row in rows:
        if row["gaps"]:
            kinds = sorted({gap["kind"] for gap in row["gaps"]})
            lost = [gap["lost"] for gap in row["gaps"]]
            known = [n for n in lost if n is not None]
            lines.append(
                f"\n{row['system']}: {len(row['gaps'])} gaps ({', '.join(kinds)}), "
                f"lost by msg.gap: {sum(known)}"
                + (f" (+{len(lost) - len(known)} unknown)" if len(known) < len(lost) else "")
                + f", recovered: {sum(gap['recovered'] for gap in row['gaps'])}"
            )
        for text in [*row["notes"], *([row["error"]] if row["error"] else [])]:
            lines.append(f"\n{row['system']}: {text}")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {"trio_stream": ts.__version__, "python": sys.version.split()[0]}
    for package in ("trio", "redis", "nats-py"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    for server in ("redis-server", "nats-server"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(
                [server, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
            found[server] = result.stdout.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(ADAPTERS), help="comma-separated")
    parser.add_argument("--cuts", type=int, default=10, help="cuts per system (default 10)")
    parser.add_argument("--rate", type=float, default=1000.0, help="frames/s (default 1000)")
    parser.add_argument("--interval", type=float, default=1.0, help="s between cuts")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"server logs (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in ADAPTERS]
    if unknown or not names:
        parser.error(f"--systems: choose among {', '.join(ADAPTERS)} (not {unknown})")
    if args.cuts < 1 or args.rate <= 0 or args.interval <= 0 or not math.isfinite(args.rate):
        parser.error("--cuts >= 1, --rate > 0 and --interval > 0")

    started = time.monotonic()
    rows = [run_system(name, args) for name in names]
    print(table(rows))
    total = time.monotonic() - started
    print(f"\n({total:.1f} s)", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": sys.argv,
            "settings": {
                "cuts": args.cuts,
                "rate": args.rate,
                "interval_s": args.interval,
                "tail_s": TAIL_S,
                "drain_s": DRAIN_S,
                "trio_stream_reader": {"policy": "block", "size": READER_SIZE},
                "trio_stream_reconnect": vars(READER_RECONNECT),
                "nats_reconnect_time_wait_s": NATS_RECONNECT_WAIT_S,
            },
            "versions": versions(),
            "results": rows,
            "seconds": round(total, 2),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
