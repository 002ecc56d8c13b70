"""``pub`` and ``sub``: send values from the command line, print a channel as JSON lines."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import numpy as np
import trio

import trio_stream as ts

from .._matching import DEFAULT_MAX_CHANNELS, matches
from .._protocol.brief import cut
from .._util import unwrap_single_exception, were
from ._channels import (
    connect,
    ended,
    ended_if_not_back,
    marked_new_life,
    publisher,
    subscription,
    wait_for_readers,
)
from ._options import (
    CommandParser,
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_create_options,
    add_log_level,
    add_reader_wait_options,
    add_subscription_options,
    check_parsed,
    explain_option,
    glob_pattern,
    json_or_text,
    positive_float,
    positive_int,
    subscription_kwargs,
)
from ._output import counted, json_line, jsonable
from ._run import CliError, NoReaders, UsageError, no_readers_advice
from .dumpfile import gap_record, undecodable_reason
from .inspect import meta_text

PUB_EPILOG = """\
A writer sends nothing to a channel without readers, so pub first waits for a reader (it
says so on stderr), unless the channel keeps history and outlives pub (--history with
--keep, or someone else's channel): the value waits there for a late reader. --no-wait
sends at once to the readers already there, and exits 3 if a value found none. Exit
codes: 0 sent, 1 an error (one line on stderr), 2 a usage error, 3 not sent for want of
readers.

examples (start a reader first, e.g. `trio-stream sub tcp://127.0.0.1:9870 setpoint
--wait-channel`):
  trio-stream pub tcp://127.0.0.1:9870 setpoint 21.5 --create
  trio-stream pub tcp://127.0.0.1:9870 config '{"gain": 2, "mode": "fast"}' --create
  trio-stream pub tcp://127.0.0.1:9870 waveform '[0, 1, 2, 3]' --dtype float32 --create
  seq 100 | trio-stream pub tcp://127.0.0.1:9870 numbers - --create
"""

SUB_EPILOG = """\
Each message is one JSON line: {"seq", "time", "sender", "lost", "data"}, with "gap" ({"kind",
"lost", "recovered"}) on the first message after a reconnection (and, with --wait-channel,
a "reset" one on the first of the channel's new life). numpy arrays are
summarized as {"dtype", "shape", "min", "max", "mean"} (and "nan", how many are NaN, when
some are) unless --full; bytes are base64 (or hex). What JSON cannot spell is an object of
one "$" key: NaN and infinities are {"$float": "nan"}, {"$float": "inf"}, {"$float": "-inf"};
also {"$undefined": true}, {"$tag": N, "value": ...} and the like. A frame whose payload does
not decode (not CBOR, or over the reader's limits) is skipped, with one line on stderr.

--match PATTERN reads every channel whose name matches the glob (Redis's PSUBSCRIBE, NATS's
wildcards), those created later too, each with its own subscription under the subscription
options; each line then begins with the "channel" it came from. Which channels are read, and
which end, is said on stderr; a pattern that matches nothing yet waits for a channel that
does (another client's private channel is never matched).

examples:
  trio-stream sub tcp://127.0.0.1:9870 demo/counter --count 5
  trio-stream sub tcp://127.0.0.1:9870 demo/sine --max-rate 1 --data-only
  trio-stream sub tcp://127.0.0.1:9870 demo/image --policy drop_oldest --size 1 --full
  trio-stream sub tcp://127.0.0.1:9870 --match 'demo/*' --max-rate 2 --count 6
"""


def register(subparsers: Subparsers) -> None:
    pub = subparsers.add_parser(
        "pub",
        help="send values to a channel",
        epilog=PUB_EPILOG,
        formatter_class=HelpFormatter,
        description="Send one value, or one value per line of stdin, to a channel. Values are "
        "JSON (text that is not JSON is sent as a string).",
    )
    add_log_level(pub, default=None)
    add_connection_options(pub)
    pub.add_argument(
        "channel", metavar="CHANNEL", help="the channel to write (--create makes it if missing)"
    )
    pub.add_argument(
        "value",
        metavar="VALUE",
        nargs="?",
        default="-",
        help="a JSON value, or - (the default) for one JSON value per line of stdin",
    )
    pub.add_argument("--raw", action="store_true", help="send VALUE (or each line) as a string")
    pub.add_argument(
        "--dtype",
        metavar="DTYPE",
        type=np.dtype,
        help="send each value as a numpy array of this dtype (e.g. float64, uint8)",
    )
    add_reader_wait_options(pub, wait=True)
    add_create_options(pub, what="CHANNEL", key=True)
    pub.set_defaults(run=run_pub)

    sub = subparsers.add_parser(
        "sub",
        help="print a channel's messages as JSON lines",
        epilog=SUB_EPILOG,
        formatter_class=HelpFormatter,
        description="Subscribe to a channel and print each message as one JSON line.",
    )
    add_log_level(sub, default=None)
    add_connection_options(sub)
    sub.add_argument(
        "channel", metavar="CHANNEL", nargs="?", help="the channel to read (or --match PATTERN)"
    )
    pattern = sub.add_argument_group("every channel that matches")
    pattern.add_argument(
        "--match",
        metavar="PATTERN",
        type=glob_pattern,
        help="instead of CHANNEL, read every channel whose name matches this glob, now and "
        "created later (quote it: 'sensors.*'; * any characters, / and . too; ? one; [abc] "
        'one of a set); each line names its "channel"',
    )
    pattern.add_argument(
        "--max-channels",
        type=positive_int,
        metavar="N",
        help=f"with --match: read at most N channels at once (default: {DEFAULT_MAX_CHANNELS})",
    )
    add_subscription_options(sub)
    out = sub.add_argument_group("output")
    out.add_argument("--count", type=positive_int, metavar="N", help="stop after N messages")
    out.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="stop this long after starting (a --wait-channel wait included)",
    )
    add_print_options(out)
    explain_option(sub, "--json", "sub prints JSON lines already, one message a line: leave it out")
    check_parsed(sub, _check_channel_or_match)
    sub.set_defaults(run=run_sub)


def _check_channel_or_match(parser: CommandParser, args: argparse.Namespace) -> None:
    """CHANNEL or --match, and with --match none of the options that name one channel."""
    if args.match is None:
        if args.channel is None:
            parser.error("the following arguments are required: CHANNEL (or --match PATTERN)")
        if args.max_channels is not None:
            parser.refuse("--max-channels goes with --match PATTERN")
        return
    if args.channel is not None:
        parser.refuse(
            f"give CHANNEL or --match PATTERN, not both ({args.channel!r} and {args.match!r})"
        )
    if args.wait_channel:
        parser.refuse(
            "--wait-channel does not go with --match: a pattern waits for its channels "
            "already (one created later, or again, is read as it comes)"
        )
    if args.data_only:
        parser.refuse(
            "--data-only does not go with --match: each line must say which channel it "
            "came from; take the data from the lines instead (e.g. | jq -c .data)"
        )


def add_print_options(group: argparse._ArgumentGroup) -> None:
    """How a message is printed: by ``sub``, and by ``show`` from a recording."""
    group.add_argument("--full", action="store_true", help="print arrays in full, as nested lists")
    group.add_argument(
        "--bytes",
        dest="bytes_format",
        choices=("base64", "hex"),
        default="base64",
        help="how to print byte strings (default: base64)",
    )
    group.add_argument("--data-only", action="store_true", help="print only each message's data")


# -- pub ---------------------------------------------------------------------------------------
# numpy dtype kinds the codec sends: bool, signed and unsigned integers, floats, complex.
_SENDABLE_KINDS: Final = "biufc"


def _value(text: str, args: argparse.Namespace, line: int | None = None) -> Any:
    """The value ``text`` stands for.

    Raises:
        UsageError: VALUE cannot become a --dtype array. CliError: line ``line`` of stdin.
    """
    value = text if args.raw else json_or_text(text)
    dtype = args.dtype
    if dtype is None:
        return value
    if dtype.kind not in _SENDABLE_KINDS:  # checked before any value: one line, not the codec's
        raise UsageError(
            f"--dtype {dtype} cannot be sent: use a numeric, bool or complex dtype "
            "(e.g. float64, int32, uint8, bool, complex128)"
        )
    try:
        with np.errstate(over="raise"):  # 1e300 as float32 is an error, not inf
            array = np.asarray(value, dtype=dtype)
        # An integer dtype would cut 1.5 to 1 without a word (numpy's cast): refused instead.
        # A float dtype rounds, as asked.
        # (Text, from --raw or a JSON string, numpy parses itself, and refuses "1.5".)
        given = np.asarray(value)
        if (
            dtype.kind in "biu"
            and given.dtype.kind not in "SUO"
            and not np.array_equal(array, given)
        ):
            raise ValueError(f"not every number fits {dtype} exactly")
        return array
    except (TypeError, ValueError, ArithmeticError) as exc:  # OverflowError, FloatingPointError
        # numpy's own words whole (they are bounded; an 80-character cut lost the point of
        # "... has an inhomogeneous shape after 1 dimensions" mid-word); what we quote of
        # the user's text, cut.
        what = f"cannot make an array of dtype {dtype} from {text[:80]!r} ({cut(str(exc), 300)})"
        if isinstance(value, str):  # not JSON: "1 2 3" meant as a list, most likely
            what += "; give each value as JSON, e.g. [1, 2, 3] for an array"
        if line is None:
            raise UsageError(what) from None
        raise CliError(f"stdin line {line}: {what}; nothing from this line on was sent") from None


# What one worker-thread hop reads from stdin, at most: a pipe or a file hands over all it
# holds up to this, a terminal one line as it is typed (so a typed line goes out at once).
# A hop per line cost ~300 us: `seq 100000 | trio-stream pub ...` took 32 s.
STDIN_CHUNK_BYTES: Final = 64 * 1024


async def _stdin_lines() -> AsyncIterator[bytes]:
    """The lines of stdin, each without its b"\\n", as they come."""
    fd = sys.stdin.fileno()
    partial: list[bytes] = []  # a line's start, read without its end (a long line's pieces)
    while True:
        # A worker thread reads, abandoned on Ctrl-C (trio.wrap_file's thread could not be:
        # pub waited for the next Enter however often Ctrl-C was pressed). os.read, not
        # sys.stdin: it returns what is there rather than waiting to fill a buffer.
        chunk = await trio.to_thread.run_sync(
            os.read, fd, STDIN_CHUNK_BYTES, abandon_on_cancel=True
        )
        if not chunk:
            if partial:  # a last line without its end of line
                yield b"".join(partial)
            return
        lines = chunk.split(b"\n")
        if len(lines) > 1 and partial:
            partial.append(lines[0])
            lines[0] = b"".join(partial)
            partial = []
        rest = lines.pop()
        if rest:
            partial.append(rest)
        for line in lines:
            yield line


def _stdin_text(line: bytes, number: int) -> str:
    """Line ``number`` of stdin as text.

    Raises:
        CliError: it is not UTF-8.
    """
    try:
        return line.decode()
    except UnicodeDecodeError as exc:
        at = len(line[: exc.start].decode()) + 1  # in characters, as the user counts
        raise CliError(
            f"stdin line {number} is not UTF-8 text (a byte that is not, at character {at}): "
            "give one JSON value or text per line; nothing from this line on was sent"
        ) from None


async def _values(args: argparse.Namespace) -> AsyncIterator[tuple[int | None, Any]]:
    """(stdin line number or None for VALUE, the value), in order."""
    if args.value != "-":
        yield None, _value(args.value, args)
        return
    if sys.stdin.isatty():
        # Without this, `pub URL CH` on a terminal would seem to hang.
        print(
            "trio-stream pub: reading values from stdin, one per line (Ctrl-D to end)",
            file=sys.stderr,
            flush=True,
        )
    number = 0
    async for line in _stdin_lines():
        number += 1
        text = _stdin_text(line, number).rstrip("\r")
        if text.strip():
            yield number, _value(text, args, number)


async def run_pub(args: argparse.Namespace) -> int:
    sent = unsent = 0
    async with (
        connect(args) as client,
        publisher(client, args.channel, args, key=args.key or args.create_key) as pub,
    ):
        await wait_for_readers(client, pub, args)
        try:
            async for number, value in _values(args):
                try:
                    taken = await pub.send(value)
                except (ts.InvalidArgument, ts.FrameTooLarge) as refused:
                    if number is None:
                        raise
                    raise CliError(
                        f"stdin line {number}: {refused}; nothing from this line on was sent"
                    ) from None
                if taken:
                    sent += 1
                else:
                    unsent += 1
        except CliError as bad_line:
            if not unsent:
                raise
            # "nothing from this line on was sent": nor were these, before it.
            raise CliError(
                f"{bad_line}; and {unsent} of the {counted(sent + unsent, 'value')} before it "
                f"{were(unsent)} not sent: channel {args.channel!r} had no "
                "readers then"
            ) from None
        # Readers got everything once the server has taken it into their buffers.
        await pub.wait_acknowledged()
    if unsent:
        advice = no_readers_advice("pub", args.wait_readers or args.min_readers)
        raise NoReaders(
            f"{unsent} of {counted(sent + unsent, 'value')} not sent: channel {args.channel!r} "
            f"had no readers then ({advice})"
        )
    return 0


# -- sub ---------------------------------------------------------------------------------------
def message_record(msg: ts.Message, args: argparse.Namespace) -> Any:
    """A message as ``sub`` prints it: with --match, its channel first."""
    gap = None if msg.gap is None else gap_record(msg.gap)
    channel = msg.channel if args.match is not None else None
    return printed_record(
        msg.seq, msg.time, msg.sender, msg.lost, gap, msg.data, args, channel=channel
    )


def printed_record(
    seq: int,
    time: float,
    sender: str,
    lost: int,
    gap: dict[str, Any] | None,
    data: Any,
    args: argparse.Namespace,
    *,
    channel: str | None = None,
) -> Any:
    """A message as ``sub`` prints it (``show`` prints a recorded frame so too); ``channel``:
    named first (the messages of several channels, ``sub --match``)."""
    shown = jsonable(data, full=args.full, bytes_format=args.bytes_format)
    if args.data_only:
        return shown
    record: dict[str, Any] = {} if channel is None else {"channel": channel}
    record.update(seq=seq, time=time, sender=sender, lost=lost)
    if gap is not None:  # the connection came back just before this message
        record["gap"] = gap
    record["data"] = shown
    return record


async def _receive(
    sub: ts.Subscription | ts.PatternSubscription, flush: Callable[[], object]
) -> ts.Message:
    """The next message; flushes the output first when none is waiting yet.

    Output stays live (nothing sits in a buffer while we wait) and is still written in one
    go per burst of messages rather than one write per line.

    Raises:
        trio.EndOfChannel: the channel ended.
    """
    try:
        return sub.receive_nowait()
    except trio.WouldBlock:
        pass  # waited for below, outside the handler (see Subscription.receive)
    flush()
    return await sub.receive()


async def next_message(
    sub: ts.Subscription,
    skipped: Callable[[str], object],
    flush: Callable[[], object] | None = None,
) -> ts.Message:
    """The next message, past any whose frame does not decode: ``skipped`` gets what was
    wrong with each such frame, in words ("frame seq 7: malformed payload: ..."); ``flush``:
    as :func:`_receive` (called when no message is waiting yet).

    A payload that is not CBOR (the server relays payloads unchecked: docs/protocol.md
    section 4), or beyond the reader's PayloadLimits (``ts.PayloadRefused``, an integer of
    more than 1024 bytes), makes the subscription raise a ``ts.ProtocolError`` for that
    message alone, and it goes on: a command that stopped there (exit 1) lost the rest of
    the channel for one writer's odd frame.

    Raises:
        trio.EndOfChannel: the channel ended.
        ts.ProtocolError: the subscription ended with it (not one frame's).
    """
    while True:
        received, seq_before = sub.received, sub.position.seq
        try:
            if flush is None:
                return await sub.receive()
            return await _receive(sub, flush)
        except ts.ProtocolError as exc:
            if sub.received == received:  # no frame was taken: the subscription's own end
                raise
            skipped(_undecodable(exc, sub.position.seq, seq_before))


def _undecodable(exc: ts.ProtocolError, seq: int, seq_before: int) -> str:
    """What was wrong with the frame that raised ``exc``, in words."""
    # A frame too short to hold its head has no seq to read (the subscription's stays).
    where = f"frame seq {seq}" if seq != seq_before else f"a frame after seq {seq_before}"
    return f"{where}: {undecodable_reason(exc)}"


async def _say_if_no_such_writer(
    client: ts.Client, sender: str, *, channel: str = "", pattern: str | None = None
) -> None:
    """A --sender that writes nothing there now (to ``channel``, or to any channel that
    matches ``pattern``) is said (a typo printed nothing, for good)."""
    clients = await client.clients()
    here = next((c.node for c in clients if c.name == client.name), "")
    if any(c.name == sender and c.node != here for c in clients):
        return  # a client of another node of a cluster: what it writes is not listed here
    if pattern is None:
        where, they, none = repr(channel), "its writers", "it has no writer"
        writers = sorted(c.name for c in clients if channel in c.publishers)
    else:
        where = f"channels matching {pattern!r}"
        they, none = "their writers", "they have no writer"
        writers = sorted(
            c.name for c in clients if any(matches(pattern, name) for name in c.publishers)
        )
    if sender not in writers:
        now = f"{they} now: {', '.join(writers[:10])}" if writers else f"{none} now"
        print(
            f"trio-stream sub: no client named {sender!r} writes to {where} ({now}); "
            "waiting for its frames",
            file=sys.stderr,
        )


# The end of an end's reason that tells the application to subscribe again (the server's words).
_ADVICE_TO_SUBSCRIBE: Final = re.compile(r"[:;] [^:;]*subscribe again$")


async def run_sub(args: argparse.Namespace) -> int:
    if args.match is not None:
        return await _run_sub_matching(args)
    out = sys.stdout
    received = 0
    skipped = 0

    def skip(what: str) -> None:
        nonlocal skipped
        skipped += 1
        print(f"trio-stream sub: skipped {what} ({skipped} so far)", file=sys.stderr)

    # --duration counts from the start: a --wait-channel wait for a channel that never comes
    # is part of it (it used to start once subscribed, so such a wait never ended).
    deadline = trio.current_time() + (args.duration or math.inf)
    async with connect(args) as client:
        with trio.CancelScope(deadline=deadline):
            ended_once = False
            # Where the life that ended was read to: the next life is read from there, so
            # that what it held before sub was subscribed again is replayed (a reset gap:
            # its whole history). Read afresh, 920-1610 frames of a cluster's Redis restart
            # were missed, which a reader subscribing `since=` its position had.
            since: ts.Position | None = None
            while True:  # with --wait-channel, each life of the channel until Ctrl-C
                async with subscription(
                    client, args.channel, args, back=ended_once, since=since
                ) as sub:
                    if not ended_once:
                        await _say_what_is_read(client, args)
                    new_life = ended_once
                    try:
                        async with ended_if_not_back(client, sub, args) as gone:
                            while args.count is None or received < args.count:
                                msg = await next_message(sub, skip, out.flush)
                                if new_life:  # the channel came back: marked as dump marks it
                                    new_life = False
                                    msg = marked_new_life(msg)
                                out.write(json_line(message_record(msg, args)) + "\n")
                                received += 1
                                if received % 64 == 0:  # receive_nowait() does not yield
                                    await trio.lowlevel.checkpoint()
                        if not gone.cancelled_caught:
                            break
                        # Not back after a server restart (said): as at the channel's end.
                    except trio.EndOfChannel:
                        said = ended(args.channel, sub)
                        if args.wait_channel:
                            # The library's advice ("subscribe again") is what happens next.
                            said = (
                                _ADVICE_TO_SUBSCRIBE.sub("", said) + " (reading on when it is back)"
                            )
                        else:
                            said += " (--wait-channel reads on when it is back)"
                        print(f"trio-stream sub: {said}", file=sys.stderr)
                        ended_once = True
                        since = sub.position
                        if args.wait_channel:
                            out.flush()
                            continue
                    if args.count is not None:
                        # Fewer than asked for: a script that reads "the next N values"
                        # must not take what it got for them.
                        print(
                            f"trio-stream sub: {received} of the {args.count} messages asked "
                            "for (--count) came before the end",
                            file=sys.stderr,
                        )
                        out.flush()
                        return 1
                    break
    out.flush()
    return 0


async def _say_what_is_read(client: ts.Client, args: argparse.Namespace) -> None:
    """The channel's units and labels, and a --sender that writes nothing there now."""
    channels = await client.channels()
    meta = next((c.meta for c in channels if c.name == args.channel), None)
    if meta:  # units and labels: on stderr, so stdout stays one JSON value a line
        print(f"trio-stream sub: {args.channel}: {meta_text(meta)}", file=sys.stderr)
    if args.sender is not None:
        await _say_if_no_such_writer(client, args.sender, channel=args.channel)


# -- sub --match -------------------------------------------------------------------------------
# How often the set of channels read is looked at, to say on stderr which joined and which
# ended (seconds). A channel's first message says it at once; this is for the quiet ones.
MEMBERS_POLL_S: Final = 0.5
# Channels named in the first line at most (the rest are counted).
NAMED_AT_START: Final = 10


async def _run_sub_matching(args: argparse.Namespace) -> int:
    """``sub --match PATTERN``: every matching channel, through ``subscribe_matching``."""
    pattern: str = args.match
    max_channels: int = args.max_channels or DEFAULT_MAX_CHANNELS
    kwargs = subscription_kwargs(args)
    deadline = trio.current_time() + (args.duration or math.inf)
    async with connect(args) as client:
        with trio.CancelScope(deadline=deadline):
            listed = [c for c in await client.channels() if matches(pattern, c.name)]
            if len(listed) > max_channels:  # said in the CLI's words (the library's: its API's)
                raise CliError(
                    f"pattern {pattern!r} matches {len(listed)} channels, more than "
                    f"--max-channels {max_channels} (each is a subscription with its own "
                    "buffer on the server): narrow the pattern, or give --max-channels "
                    f"{len(listed)} or more"
                )
            async with client.subscribe_matching(
                pattern, **kwargs, max_channels=max_channels
            ) as matching:
                members = _Members(pattern, matching.channels)
                members.say_start({c.name: c.meta for c in listed})
                if args.sender is not None:
                    await _say_if_no_such_writer(client, args.sender, pattern=pattern)
                with unwrap_single_exception():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(members.follow, matching)
                        await _print_matching(matching, members, args)
                        nursery.cancel_scope.cancel()
    sys.stdout.flush()
    return 0


async def _print_matching(
    matching: ts.PatternSubscription, members: _Members, args: argparse.Namespace
) -> None:
    """Print the messages as JSON lines, until --count (or cancelled)."""
    out = sys.stdout
    received = 0
    skipped = 0
    while args.count is None or received < args.count:
        try:
            msg = await _receive(matching, out.flush)
        except trio.EndOfChannel:
            return  # (closed: not before the end of run_sub's block)
        except ts.TrioStreamError as exc:
            if matching.end_reason is not None:
                raise  # the pattern's own end (the client's): one line, exit 1
            # One channel's, said once; the others, and that one, are read on.
            if isinstance(exc, ts.ProtocolError):
                skipped += 1
                what = f"a frame of a channel matching {members.pattern!r}"
                print(
                    f"trio-stream sub: skipped {what}: {undecodable_reason(exc)} "
                    f"({skipped} so far)",
                    file=sys.stderr,
                )
            else:
                print(
                    f"trio-stream sub: {type(exc).__name__}: {exc} (it is subscribed again)",
                    file=sys.stderr,
                )
            continue
        members.note(msg.channel)
        out.write(json_line(message_record(msg, args)) + "\n")
        received += 1
        if received % 64 == 0:  # receive_nowait() does not yield
            await trio.lowlevel.checkpoint()


class _Members:
    """What ``sub --match`` says on stderr of the channels it reads: those matching at the
    start, each that joins later, each that ends, and a wait while none matches."""

    def __init__(self, pattern: str, channels: list[str]) -> None:
        self.pattern = pattern
        self.seen = set(channels)
        self._sorted = channels

    def say_start(self, meta: dict[str, dict[str, Any] | None]) -> None:
        names = self._sorted
        if not names:
            self._say(
                f"waiting for channels matching {self.pattern!r} (none yet; Ctrl-C to stop; "
                "another client's private channel is never matched)"
            )
            return
        shown = ", ".join(repr(name) for name in names[:NAMED_AT_START])
        more = len(names) - NAMED_AT_START
        if more > 0:
            shown += f" and {more} more"
        self._say(
            f"reading {counted(len(names), 'channel')} matching {self.pattern!r}: {shown} "
            "(and those created later)"
        )
        for name in names:
            units = meta.get(name)
            if units:  # units and labels, as sub says them of its channel
                self._say(f"{name}: {meta_text(units)}")

    def note(self, channel: str) -> None:
        """A message of ``channel`` is printed next: said first if it is new here."""
        if channel not in self.seen:
            self.seen.add(channel)
            self._say(f"channel {channel!r} matches {self.pattern!r}: reading it")

    async def follow(self, matching: ts.PatternSubscription) -> None:
        """Until cancelled: the channels that joined or left since the last look."""
        while True:
            await trio.sleep(MEMBERS_POLL_S)
            now = matching.channels
            for name in now:
                self.note(name)
            gone = self.seen.difference(now)
            for name in sorted(gone):
                self._say(
                    f"channel {name!r} ended; reading on (the others, and it again if it "
                    "comes back)"
                )
            self.seen.difference_update(gone)
            if gone and not self.seen:
                self._say(f"no channel matches {self.pattern!r} now: waiting for one")

    @staticmethod
    def _say(line: str) -> None:
        print(f"trio-stream sub: {line}", file=sys.stderr, flush=True)
