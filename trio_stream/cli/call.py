"""``call``: call a method another client exposes, print the result as JSON."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import trio

import trio_stream as ts

from .._protocol.rpc_messages import provider_not_there
from .._rpc_stream import RemoteStream
from ._channels import connect, prog
from ._options import (
    HelpFormatter,
    Subparsers,
    add_connection_options,
    add_log_level,
    json_or_text,
    positive_float,
)
from ._output import json_line, jsonable
from ._run import CliError, UsageError

EPILOG = """\
Arguments are JSON (text that is not JSON is passed as a string); the result is printed as
JSON, numpy arrays as nested lists. A streaming method (a generator, listed with [streams])
prints each value as one JSON line as it comes, until it ends or Ctrl-C; --timeout does not
apply to it.

examples (with `python examples/rpc_service.py tcp://127.0.0.1:9870 --role instrument`
running, a client named thermo):
  trio-stream call tcp://127.0.0.1:9870 thermo                  # list thermo's methods
  trio-stream call tcp://127.0.0.1:9870 thermo read_temperature
  trio-stream call tcp://127.0.0.1:9870 thermo set_rate 5 --timeout 30
  trio-stream call tcp://127.0.0.1:9870 thermo calibrate --kw seconds=0.5
  trio-stream call tcp://127.0.0.1:9870 thermo read_temperature --wait-provider
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "call",
        help="call a method another client exposes",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
        description="Call METHOD of the client named CLIENT (RPC through the server).",
    )
    add_log_level(parser, default=None)
    add_connection_options(parser)
    parser.add_argument("client", metavar="CLIENT", help="the name of the client to call")
    parser.add_argument(
        "method",
        metavar="METHOD",
        nargs="?",
        help="e.g. my_echo, or service.method (none: list CLIENT's methods)",
    )
    # default=[]: argparse marks a "*" positional without a default as required, and named
    # ARG among the missing arguments when CLIENT was left out.
    parser.add_argument(
        "args", metavar="ARG", nargs="*", default=[], type=json_or_text, help="JSON values"
    )
    parser.add_argument(
        "--kw",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a keyword argument (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the result, not for a streaming method's values "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--wait-provider",
        action="store_true",
        help="wait while no client named CLIENT is connected (or it exposes nothing yet), "
        "instead of failing at once: a command started together with its provider",
    )
    parser.add_argument(
        "--wait-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="with --wait-provider: give up after this long (exit 1); --timeout bounds the "
        "result only",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="print the remote traceback when it raises"
    )
    parser.set_defaults(run=run_call)


def _keywords(pairs: list[str]) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--kw takes NAME=JSON, not {pair!r}")
        keywords[name] = json_or_text(value)
    return keywords


async def _proxy(client: ts.Client, args: argparse.Namespace) -> ts.RpcProxy:
    """The provider's proxy; with --wait-provider, a provider not there yet is waited for
    after a line that says so (it was silent for 5 s, then logged a timestamped warning,
    where sub --wait-channel says at once what it waits for: a first hour)."""
    if args.wait_timeout is not None and not args.wait_provider:
        raise UsageError("--wait-timeout bounds the wait of --wait-provider: give both")
    if args.wait_provider:
        try:
            return await client.rpc(args.client, timeout=args.timeout)
        except ts.RpcError as exc:
            if type(exc) is not ts.RpcError or not provider_not_there(str(exc)):
                raise
        print(
            f"{prog(args)}: waiting for a client named {args.client!r} to connect and expose "
            "methods "
            + (f"(for up to {args.wait_timeout:g} s)" if args.wait_timeout else "(Ctrl-C to stop)"),
            file=sys.stderr,
            flush=True,
        )
    if not args.wait_provider:
        return await client.rpc(args.client, timeout=args.timeout)
    # The wait was bounded by nothing: a provider that never came held the command for good
    # (a new user's, for ten minutes).
    with trio.move_on_after(args.wait_timeout or math.inf):
        return await client.rpc(args.client, timeout=args.timeout, wait_provider=True)
    raise ts.RpcError(
        f"no client named {args.client!r} connected and exposed methods within "
        f"{args.wait_timeout:g} s (--wait-timeout)"
    )


async def run_call(args: argparse.Namespace) -> int:
    keywords = _keywords(args.kw)
    async with connect(args) as client:
        proxy = await _proxy(client, args)
        if args.method is None:
            for name, method in sorted(proxy.methods.items()):
                doc = (method.__doc__ or "").strip().split("\n", 1)[0]
                streams = "  [streams]" if method.stream else ""
                print(f"{name}{method.__signature__}{streams}" + (f"  # {doc}" if doc else ""))
            return 0
        remote = proxy.methods.get(args.method)
        problem = None if remote is None else remote.mismatch(args.args, keywords)
        if remote is not None and problem is not None:
            # Checked here, not by the call: its advice ("make a new proxy with rpc(...)")
            # is Python's, and this proxy was made a moment ago anyway.
            raise UsageError(
                f"{args.client}.{args.method}{remote.__signature__}: {problem}; "
                f"`trio-stream call {args.url} {args.client}` lists its methods and their "
                "arguments"
            )
        try:
            # Through the method itself when the provider described it: proxy.call's own
            # `timeout` (and stream's `window`) would take a method's keyword of that name
            # (an instrument's move(position, timeout=...)): the proxy has --timeout already.
            if remote is not None and remote.stream:
                await _print_stream(remote(*args.args, **keywords))
                return 0
            if remote is not None:
                result = await remote(*args.args, **keywords)
            else:  # not described (exposed since?): sent unchecked, the provider answers
                endpoint = proxy._endpoint  # as RemoteMethod does: every keyword the method's
                result = await endpoint.call(
                    proxy.provider, args.method, tuple(args.args), keywords, args.timeout
                )
        except TypeError as exc:  # the arguments do not fit the signature: nothing was sent
            raise UsageError(str(exc)) from None
        except ts.RemoteError as exc:
            if args.traceback and exc.remote_traceback:
                print(exc.remote_traceback.rstrip(), file=sys.stderr)
            raise
        except ts.RpcTimeout as exc:
            # The library's advice names its keywords (timeout=, client.wait_state): here it
            # is the option, or trying again.
            where = f"{args.client}.{args.method}"
            if not exc.sent:  # the connection was down, not the provider slow
                raise CliError(
                    f"{where} was not called within {args.timeout:g} s: the connection to the "
                    "server was down all along; try again once it is back"
                ) from None
            raise CliError(
                f"no answer from {where} within {args.timeout:g} s: the provider is slow or "
                "stuck (--timeout SECONDS for a long call)"
            ) from None
    print(json_line(jsonable(result, full=True)))
    return 0


async def _print_stream(stream: RemoteStream) -> None:
    """One JSON line per value of a streaming method, flushed as it comes (a pipe reader
    sees each value then, not at the end)."""
    async with stream as values:
        async for value in values:
            print(json_line(jsonable(value, full=True)), flush=True)
