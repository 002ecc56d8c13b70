"""Connecting and opening channels the way the commands' options say."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shlex
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

import trio_stream as ts

from .._client import PATTERN_CHARACTERS, STILL_WAITING_MESSAGE, WAIT_CHANNEL_WARN_S, WAITING_ADVICE
from .._client import log as client_log
from .._matching import GLOB_CHARACTERS
from .._protocol.messages import CHANNEL_ENDED_REASON
from .._util import unwrap_single_exception
from ._options import created_channel_key, subscription_kwargs
from ._output import counted
from ._reset_wait import say_reset_waits
from ._run import CliError, NoReaders


# -- connecting --------------------------------------------------------------------------------
def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=args.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        # "[Errno 2] No such file or directory" or "[X509: NO_CERTIFICATE_OR_CRL_FOUND]" named
        # neither the file nor the option.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(
            f"--tls-ca {args.tls_ca}: {reason} (give a PEM file of the CA certificate that "
            "signed the server's)"
        ) from None


@asynccontextmanager
async def connect(
    args: argparse.Namespace,
    url: str | None = None,
    *,
    token: str | None = None,
    name_suffix: str = "",
) -> AsyncIterator[ts.Client]:
    """A client for ``url`` (default ``args.url``) with the connection options.

    ``name_suffix``: for a command's second connection, which may reach the same server
    (a client name is unique per server).
    """
    name = (args.name or f"trio-stream-{args.command}-{os.getpid()}") + name_suffix
    WAITING_ADVICE.set(  # (this command's run's)
        "a command started together with its server waits for it with --wait-server SECONDS"
    )
    async with (
        ts.open_client(
            url or args.url,
            name=name,
            token=token or args.token,
            ssl_context=client_ssl_context(args),
            wait_for_server=getattr(args, "wait_server", 0.0),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        client.announce_reconnects = False  # said in the command's own words, below
        nursery.start_soon(tell_connection_changes, client, prog(args), url or args.url)
        yield client
        nursery.cancel_scope.cancel()


async def tell_connection_changes(client: ts.Client, prog: str, url: str) -> None:
    """One stderr line when the connection goes and when it is back, in the command's words
    (the client's own WARNING lines would come in the logging format)."""
    state = client.state
    while True:
        state = await client.wait_state_change(state)
        if state == "reconnecting":
            print(
                f"{prog}: the connection to {url} is lost; reconnecting (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
        elif state == "open":
            print(f"{prog}: reconnected to {url}", file=sys.stderr, flush=True)
        else:
            return


# -- channels --------------------------------------------------------------------------------------
async def ensure_channel(client: ts.Client, channel: str, args: argparse.Namespace) -> bool:
    """Create ``channel`` as the ``--create`` options say; False if it existed already."""
    try:
        await client.create_channel(
            channel,
            public=not args.private,
            key=created_channel_key(args),
            lifetime=args.lifetime,
            history=args.history,
            keep=args.keep,
        )
    except ts.ChannelExists:
        if getattr(args, "creates_always", False):
            return False  # bridge: its copies are written as they are, as they always were
        differences = await _options_not_applied(client, channel, args)
        if differences:
            # Writing on would put, say, what was meant for a --private channel on someone's
            # public one, without a word.
            raise CliError(
                f"channel {channel!r} exists already, not as asked: {'; '.join(differences)}. "
                "Pick another name, or leave those options out to write to it as it is"
            ) from None
        return False
    return True


async def _options_not_applied(
    client: ts.Client, channel: str, args: argparse.Namespace
) -> list[str]:
    """The --create options given that the channel that exists does not have."""
    info = next((c for c in await client.channels() if c.name == channel), None)
    if info is None:  # not listed to us: someone's private channel, which needs its key
        return []
    differences = []
    if args.private and info.public:
        differences.append("--private (it is public)")
    if args.history and args.history != info.history:
        differences.append(f"--history {args.history} (it keeps {info.history})")
    if args.keep and not info.keep:
        differences.append("--keep (it ends with its owner)")
    if args.lifetime is not None and info.lifetime is None:
        differences.append("--lifetime (it has none)")
    return differences


async def check_readable(client: ts.Client, channels: list[str], args: argparse.Namespace) -> None:
    """Refuse at once channels that are not there (unless --wait-channel, or --key: a
    private channel is listed to its owner only), as ``sub`` would; for a command that
    subscribes only later (``bridge``: once its copy has readers).

    Raises:
        CliError: a channel that is not there.
    """
    if args.wait_channel or args.key:
        return
    listed = {c.name for c in await client.channels()}
    for channel in channels:
        if channel not in listed:
            raise await no_such_channel(client, channel)


async def no_such_channel(
    client: ts.Client,
    channel: str,
    verb: str = "read",
    how: str = "--wait-channel waits for it",
    error: ts.ChannelNotFound | None = None,
) -> CliError:
    """The error for a channel to ``verb`` that is not there, naming those whose names are
    close (a typo), as the library's ChannelNotFound does; ``how``: the option that helps.
    ``error``: the library's, whose message names them already (not listed twice)."""
    if error is not None:
        named = _DID_YOU_MEAN.search(str(error))
        alike = (named.group(1) or named.group(2)) if named else ""
    else:
        alike = await client._channels_like(channel)
    # A name with a glob's characters (Redis's PSUBSCRIBE, NATS's wildcards) is said to be a
    # name: the library's error says so, the CLI's did not (a new user's `sub URL 'lab/*'`).
    # A reader is pointed at what reads every match.
    exact = ""
    if PATTERN_CHARACTERS.intersection(channel):
        exact = "; channel names are exact, not patterns"
        if verb == "read":
            glob = channel if GLOB_CHARACTERS.intersection(channel) else channel.replace(">", "*")
            exact += (
                f": `trio-stream sub URL --match {shlex.quote(glob)}` reads every channel "
                "that matches" + (" (NATS's '>' is '*' there)" if glob != channel else "")
            )
    if alike:
        return CliError(
            f"no channel named {channel!r} that you may {verb}; did you mean {alike}? (else "
            f"{how}; a private channel needs its key: --key){exact}"
        )
    return CliError(
        f"no channel named {channel!r} that you may {verb} ({how}; a private channel needs "
        f"its key: --key){exact}"
    )


# The names the library's ChannelNotFound gives (Client._named_alike).
_DID_YOU_MEAN: Final = re.compile(r"\(did you mean (.+?)\?\)|; did you mean (.+?)\?$")


def key_refused(channel: str, key: str | None, option: str = "--key") -> CliError:
    """The CLI's words for a channel key the server refused (AuthError): the option to
    give, where the library's message names its keyword (``pass key=...``)."""
    if channel.startswith("$"):  # no key opens them: "give it with --key" sent users looking
        return CliError(f"channel {channel!r} is the server's own: it is read-only (sub reads it)")
    if key is None:
        return CliError(f"channel {channel!r} needs its key: give it with {option}")
    return CliError(f"wrong key for channel {channel!r}: check {option}")


def _not_the_library_s_wait_line(record: logging.LogRecord) -> bool:
    """A logging filter: the client's "still waiting for channel" record is dropped, since
    the command says it itself (_say_still_waiting), as its other lines, and knows whether
    the channel is new or coming back."""
    return record.msg is not STILL_WAITING_MESSAGE


async def _say_still_waiting(
    client: ts.Client, channel: str, args: argparse.Namespace, back: bool
) -> None:
    """One line, WAIT_CHANNEL_WARN_S into a --wait-channel wait, as the library would log."""
    await trio.sleep(WAIT_CHANNEL_WARN_S)
    if back:
        print(
            f"{prog(args)}: still waiting for channel {channel!r} to come back (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        return
    alike = await client._channels_like(channel)
    print(
        f"{prog(args)}: still waiting for channel {channel!r} to be created (nobody has "
        "created it yet; a private channel also needs its --key)"
        + (f"; did you mean {alike}?" if alike else ""),
        file=sys.stderr,
        flush=True,
    )


async def _open_subscription(
    client: ts.Client,
    channel: str,
    args: argparse.Namespace,
    back: bool = False,
    **more: Any,
) -> ts.Subscription:
    kwargs = {**subscription_kwargs(args), **more}
    try:
        return await client.open_subscription(channel, **kwargs)
    except ts.AuthError:
        raise key_refused(channel, args.key) from None
    except ts.ChannelNotFound as missing:
        if not args.wait_channel:
            raise await no_such_channel(client, channel, error=missing) from None
    if not back:  # (after an end, the line that said so said that it reads on)
        print(
            f"{prog(args)}: waiting for channel {channel!r} (Ctrl-C to stop; a private channel "
            "also needs its --key)",
            file=sys.stderr,
            flush=True,
        )
    client_log.addFilter(_not_the_library_s_wait_line)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_say_still_waiting, client, channel, args, back)
            sub = await client.open_subscription(channel, **kwargs, wait_channel=True)
            nursery.cancel_scope.cancel()
            return sub
    except ts.AuthError:
        raise key_refused(channel, args.key) from None


@asynccontextmanager
async def subscription(
    client: ts.Client,
    channel: str,
    args: argparse.Namespace,
    *,
    back: bool = False,
    since: ts.Position | None = None,
    prefetch: bool = True,
) -> AsyncIterator[ts.Subscription]:
    """Subscribe with the subscription options (waiting for the channel with --wait-channel).

    ``back``: the channel was read and ended; a wait for it is a wait for its return.
    ``since``: continue after this position (a reader's last, or a recording's): the server
    replays what the channel still holds after it (all of a new life's: a reset) and the
    first message's gap counts the rest. ``prefetch``: as ``open_subscription``'s.

    Raises:
        CliError: no such channel (and no --wait-channel).
    """
    sub = await _open_subscription(client, channel, args, back, since=since, prefetch=prefetch)
    try:
        yield sub
    finally:
        with trio.CancelScope(shield=True):
            await sub.aclose()


@asynccontextmanager
async def publisher(
    client: ts.Client,
    channel: str,
    args: argparse.Namespace,
    *,
    key: str | None,
    key_option: str = "--key",
) -> AsyncIterator[ts.Publisher]:
    """A publisher, creating the channel first with --create.

    ``key_option``: the option that gave ``key``, for the error if it is refused.

    Raises:
        CliError: no such channel (and no --create), or its key missing or wrong.
    """
    created = args.create and await ensure_channel(client, channel, args)
    try:
        pub = await client.open_publisher(channel, key=key)
    except ts.AuthError:
        raise key_refused(channel, key, key_option) from None
    except ts.ChannelNotFound as missing:
        if args.create and not created:
            raise CliError(
                f"channel {channel!r} exists and is not yours to write: a private channel "
                "needs its key (--key); --create did not create it (the name is taken)"
            ) from None
        raise await no_such_channel(
            client, channel, "write", "--create creates it", error=missing
        ) from None
    try:
        yield pub
    finally:
        with trio.CancelScope(shield=True):
            await pub.aclose()


async def kept_for_later(client: ts.Client, pub: ts.Publisher) -> bool:
    """Whether what ``pub`` sends now waits in its channel's history for a later reader: the
    channel keeps history and outlives this command (someone else's, or created with
    --keep). A channel of ours without --keep ends as we leave, its history with it."""
    if not pub.wanted:  # no history (wanted: readers, or frames kept for later)
        return False
    for info in await client.channels():
        if info.name == pub.channel:
            return info.history > 0 and (info.owner != client.name or info.keep)
    # Not listed: a private channel of someone else's (ours are listed to us). Wanted without
    # a reader, it keeps history: what is sent waits there, as on a listed one.
    return pub.readers == 0


async def wait_for_readers(client: ts.Client, pub: ts.Publisher, args: argparse.Namespace) -> bool:
    """Wait as --wait-readers/--min-readers say; True if the channel keeps what is sent for
    later readers (kept_for_later), so the default wait for a reader was skipped.

    Raises:
        CliError: not enough readers within --wait-timeout.
    """
    wanted = args.min_readers or (1 if args.wait_readers else 0)
    if not wanted or pub.readers >= wanted:
        return False
    if not args.min_readers and await kept_for_later(client, pub):
        # What is sent now waits in the history for a late reader (the last value of a
        # setpoint): there is no reader to wait for.
        return True
    what = "a reader" if wanted == 1 else f"{wanted} readers"
    print(
        f"{prog(args)}: waiting for {what} of {pub.channel!r} (Ctrl-C to stop; --no-wait "
        "sends only to readers already there)",
        file=sys.stderr,
        flush=True,
    )
    with trio.move_on_after(args.wait_timeout or math.inf):
        await pub.wait_for_readers(wanted)
        return False
    raise NoReaders(
        f"channel {pub.channel!r} has {counted(pub.readers, 'reader')}, not {wanted}, after "
        f"{args.wait_timeout:g} s (--wait-timeout): nothing was sent; start a reader first"
    )


# How long a channel missing after a reconnect (a server restart) may take to come back
# before a command without --wait-channel ends as at the channel's end. Its owner's client
# re-creates it within its own reconnect (6 s at most by default); 30 s also covers an owner
# whose process restarts with the server (a service manager's restart), and is three times
# the server's default resume_grace_s, after which a live server ends a channel whose owner
# is away.
CHANNEL_BACK_S: Final = 30.0


@asynccontextmanager
async def ended_if_not_back(
    client: ts.Client, sub: ts.Subscription, args: argparse.Namespace
) -> AsyncIterator[trio.CancelScope]:
    """The block, beside a watch of ``sub``'s channel across reconnects: one line at once
    when the channel is not on the server after a reconnect, and without --wait-channel the
    block cancelled (``scope.cancelled_caught``) if it is not back within CHANNEL_BACK_S.
    And across reset ends (a cluster's Redis restarted empty): a line when ``sub`` begins
    to wait for its channel's new life, and one when it reads on or gives up.

    The client resubscribes on its own once the channel is back; until then the command
    waited on in silence, for ever, for a channel whose owner was gone with the server."""
    scope = trio.CancelScope()
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_channel, client, sub, args, scope)
            if client is not None:  # (a recording driven without a server: see _watch_channel)
                nursery.start_soon(say_reset_waits, sub, args)
            try:
                with scope:
                    yield scope
            finally:
                nursery.cancel_scope.cancel()


async def _watch_channel(
    client: ts.Client, sub: ts.Subscription, args: argparse.Namespace, scope: trio.CancelScope
) -> None:
    if client is None:  # a recording driven without a server (a test's): nothing to watch
        return
    state = client.state
    while True:
        state = await client.wait_state_change(state)
        # "open" comes once every resubscription had its first try: one whose channel is
        # missing is not live then, and is retried in the background.
        if state == "closed":
            return
        if state != "open":
            continue
        # After connect()'s "reconnected" line (woken by the same change), and not for a
        # channel whose first retry finds it at once.
        await trio.sleep(0.1)
        if client.state != "open" or sub._live or sub.end_reason is not None:
            continue
        if sub._reset_end is not None:
            continue  # waiting out a reset end, bounded and said (say_reset_waits)
        bound = "" if args.wait_channel else f"; it ends if not back within {CHANNEL_BACK_S:g} s"
        print(
            f"{prog(args)}: channel {args.channel!r} is not on the server after the reconnect: "
            "waiting for its owner to create it again (Ctrl-C to stop"
            + ("; the recording so far is complete" if args.command == "dump" else "")
            + f"){bound}",
            file=sys.stderr,
            flush=True,
        )
        with trio.move_on_after(math.inf if args.wait_channel else CHANNEL_BACK_S):
            while not sub._live and sub.end_reason is None and client.state == "open":  # noqa: ASYNC110 (no event for it)
                await trio.sleep(0.1)
            if sub._live:
                # Said, or the last line on stderr still said it waited while the data went
                # on (a new user's first hour).
                print(
                    f"{prog(args)}: channel {args.channel!r} is back: going on",
                    file=sys.stderr,
                    flush=True,
                )
            continue  # back, ended (which the command says) or another reconnect
        print(
            f"{prog(args)}: channel {args.channel!r} did not come back within "
            f"{CHANNEL_BACK_S:g} s after the reconnect: its end (--wait-channel waits for it)",
            file=sys.stderr,
            flush=True,
        )
        scope.cancel()
        return


def ended(channel: str, sub: ts.Subscription) -> str:
    """The line saying that ``sub``'s channel ended, with the server's reason if it tells more."""
    reason = sub.end_reason
    if not reason or reason == CHANNEL_ENDED_REASON:
        return f"channel {channel!r} ended"
    if reason.startswith(f"channel {channel!r} ") or f" channel {channel!r} " in reason:
        return reason  # the server's sentence names the channel: "channel 'x' was deleted"
    return f"channel {channel!r} ended: {reason}"


def marked_new_life(msg: ts.Message) -> ts.Message:
    """The first message of a channel's new life (it ended and is back, with --wait-channel):
    its seqs start again, so it carries a ``reset`` gap, as after a server restart, or a
    stream of records jumps from seq 3733 to 1 unexplained. A "resumed" gap there (the client
    reconnected before it) is only part of the story: it becomes a reset too, with what was
    replayed kept."""
    if msg.gap is not None and msg.gap.kind == "reset":
        return msg
    recovered = 0 if msg.gap is None else msg.gap.recovered
    return msg._replace(gap=ts.Gap("reset", lost=None, recovered=recovered))


def prog(args: argparse.Namespace) -> str:
    return f"trio-stream {args.command}"
