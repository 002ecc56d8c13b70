"""A mistyped argument to a client call is refused by the client, as InvalidArgument, and
costs nothing else: the server, which cannot tell a wrong value from a broken peer, would
close the whole connection for it (every subscription of the client would see a gap)."""

from __future__ import annotations

import datetime
import enum
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
import trio

import trio_stream as ts

STEP_S = 10.0
NOW = datetime.datetime.now(datetime.UTC)

LONE_SURROGATE_AT_2 = (
    "a str with '\\udc80' at position 2 cannot be sent: a lone surrogate has no UTF-8 form; "
    "repair the text first, e.g. text.encode('utf-8', 'backslashreplace').decode() (a file "
    "name from os.fsdecode: os.fsencode(name).decode('utf-8', 'replace'))"
)

# (client method, its arguments, what InvalidArgument says): one mistake each.
MISTYPED: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("create_channel", ("x",), {"history": 10.0}, "history must be an int, not float 10.0"),
    ("create_channel", (5,), {}, "channel must be a str, not int 5"),
    ("create_channel", ("x",), {"lifetime": "5"}, "lifetime must be a number or None, not str '5'"),
    ("open_subscription", ("c",), {"size": 10.5}, "size must be an int or None, not float 10.5"),
    ("open_subscription", ("c",), {"size": "10"}, "size must be an int or None, not str '10'"),
    ("open_subscription", ("c",), {"every": 2.5}, "every must be an int, not float 2.5"),
    (
        "open_subscription",
        ("c",),
        {"max_rate": "2"},
        "max_rate must be a number or None, not str '2'",
    ),
    ("open_subscription", ("c",), {"sender": 5}, "sender must be a str or None, not int 5"),
    ("open_subscription", ("c",), {"window": 2.0}, "window must be an int or None, not float 2.0"),
    # The server's words name its wire value (null), not the one a Python caller writes.
    (
        "open_subscription",
        ("c",),
        {"window": 0},
        "window must be 1 or more frames in flight (or None for the server's default), not 0",
    ),
    ("publish", (5, 1), {}, "channel must be a str, not int 5"),
    ("delete_channel", (5,), {}, "channel must be a str, not int 5"),
    ("rpc", (5,), {}, "provider must be a str, not int 5"),
    # A lone surrogate (os.fsdecode makes them of a file name's undecodable bytes) has no
    # UTF-8 form: the encoder's UnicodeEncodeError said neither which argument nor what to do.
    ("create_channel", ("ch\udc80",), {}, f"channel: {LONE_SURROGATE_AT_2}"),
    ("open_subscription", ("c",), {"sender": "ch\udc80"}, f"sender: {LONE_SURROGATE_AT_2}"),
    ("publish", ("c", "ch\udc80"), {}, LONE_SURROGATE_AT_2),
    ("publish", ("c", {"ch\udc80": 1}), {}, LONE_SURROGATE_AT_2),
    # Values the server refuses in a control message closed the connection (options audit).
    ("create_channel", ("x",), {"meta": {1: 2}}, "meta must be a dict with text keys"),
    ("create_channel", ("x",), {"meta": ["units"]}, "meta must be a dict with text keys"),
    ("create_channel", ("x",), {"meta": {"t": NOW}}, "meta must hold plain values"),
    ("create_channel", ("x",), {"meta": {"n": 2**70}}, "meta must hold plain values"),
    ("create_channel", ("x",), {"meta": {"a": np.zeros(3)}}, "meta must hold plain values"),
    ("create_channel", ("x",), {"meta": {"s": {1}}}, "meta must hold plain values"),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "message"), MISTYPED)
async def test_a_mistyped_argument_is_refused_and_the_connection_stays(
    server: ts.Server, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="app", reconnect=False) as client:
        await client.create_channel("c")
        async with client.subscribe("c", policy="block", size=10) as sub:
            with pytest.raises(ts.InvalidArgument) as refused, trio.fail_after(STEP_S):
                await getattr(client, method)(*args, **kwargs)
            said = str(refused.value)  # (meta's: the codec's reason follows)
            assert said == message or (message.startswith("meta") and said.startswith(message))
            # Nothing else was lost: the same connection carries on.
            with trio.fail_after(STEP_S):
                await client.publish("c", 1)
                assert (await sub.receive()).data == 1
            assert client.state == "open"


async def test_a_mistyped_retune_is_refused_and_the_subscription_goes_on(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="app", reconnect=False) as client:
        await client.create_channel("c")
        async with client.subscribe("c", policy="block", size=10) as sub:
            mistyped: list[tuple[dict[str, Any], str]] = [
                ({"every": 1.5}, "every must be an int or None, not float 1.5"),
                ({"size": "3"}, "size must be an int or None, not str '3'"),
                ({"max_rate": "1"}, "max_rate must be a number or None, not str '1'"),
                ({"block_timeout": "1"}, "block_timeout must be a number or None, not str '1'"),
            ]
            for wrong, message in mistyped:
                with pytest.raises(ts.InvalidArgument) as refused, trio.fail_after(STEP_S):
                    await sub.retune(**wrong)
                assert str(refused.value) == message
            with trio.fail_after(STEP_S):
                await client.publish("c", 2)
                assert (await sub.receive()).data == 2


class Channels(enum.StrEnum):
    RAW = "raw"


async def test_numpy_numbers_decimals_mappings_and_str_subclasses_still_go_through(
    server: ts.Server,
) -> None:
    # Applications pass numpy scalars (computed sizes, rates) and StrEnum names; the wire
    # carries them as the plain types, and the check must not refuse them.
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="app", reconnect=False) as client:
        created: dict[str, Any] = {
            "history": np.int64(3),
            "lifetime": Decimal(60),  # converted with float(), as ever
            "public": np.bool_(True),
            "meta": MappingProxyType({"units": "V"}),  # any mapping, encoded as a map
        }
        await client.create_channel(Channels.RAW, **created)
        options: dict[str, Any] = {
            "size": np.int32(5),
            "max_rate": np.float64(100.0),
            "block_timeout": Decimal("2.5"),
            "every": np.int64(1),
        }
        async with client.subscribe(Channels.RAW, **options) as sub:
            with trio.fail_after(STEP_S):
                await client.publish(Channels.RAW, 7)
                assert (await sub.receive()).data == 7


@pytest.mark.parametrize("field", ["name", "token"])
async def test_a_client_name_or_token_utf8_cannot_encode_is_refused_before_connecting(
    server: ts.Server, field: str
) -> None:
    assert server.tcp_url
    with pytest.raises(ts.InvalidArgument) as refused:
        chosen: dict[str, Any] = {field: "ab\udc80"}
        async with ts.open_client(server.tcp_url, reconnect=False, **chosen):
            pass
    assert str(refused.value) == f"{field}: {LONE_SURROGATE_AT_2}"


@pytest.mark.parametrize(
    ("argument", "said"),
    [
        ({"payload_limits": {"max_depth": 3}}, "payload_limits must be a ts.PayloadLimits"),
        ({"payload_limits": None}, "payload_limits must be a ts.PayloadLimits"),
        ({"ssl_context": "notssl"}, "ssl_context must be an ssl.SSLContext"),
    ],
)
async def test_a_client_option_of_the_wrong_type_is_refused_before_connecting(
    server: ts.Server, argument: dict[str, Any], said: str
) -> None:
    # A dict for payload_limits connected, then the first message received ended the client
    # in an ExceptionGroup of AttributeError (options audit).
    assert server.tcp_url
    with pytest.raises(ts.InvalidArgument, match=said):
        async with ts.open_client(server.tcp_url, reconnect=False, **argument):
            pass
    with pytest.raises(ts.InvalidArgument, match=said):
        await trio.to_thread.run_sync(lambda: ts.SyncClient(server.tcp_url or "", **argument))
