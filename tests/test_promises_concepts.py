"""README promises of "Concepts" and "Limits and guarantees" that no other test pinned.

- Names: a client name is 1–100 printable characters (refused at connect with
  ``InvalidArgument``); a channel name 1–200 printable characters, checked at creation.
- Values: the other types cbor2 knows (set, Decimal, Fraction, UUID, complex, ipaddress
  objects) come back as themselves to a Python reader, over a real subscription.
- A silent server: the clients ping every ``heartbeat`` seconds (5 by default, at most a third
  of ``idle_timeout_s``) and give up after three silent ones (at least 2 s: 15 s by default).

Real servers on port 0.
"""

from __future__ import annotations

import ipaddress
import uuid
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
import trio

import trio_stream as ts

WAIT_S = 5.0


def tcp_url(server: ts.Server) -> str:
    assert server.tcp_url is not None
    return server.tcp_url


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["n" * 100, "\u00e9" * 100, "lab pc 3"], ids=["100-ascii", "100-accented", "spaces"]
)
async def test_a_client_name_of_up_to_100_printable_characters_is_taken(
    server: ts.Server, name: str
) -> None:
    # README 188: "A client name is 1–100 printable characters and at most 255 bytes of UTF-8".
    async with (
        ts.open_client(tcp_url(server), name=name) as client,
        ts.open_client(tcp_url(server), name="observer") as observer,
    ):
        assert client.name == name
        assert name in [c.name for c in await observer.clients()]
        await client.create_channel("c")
        async with observer.subscribe("c") as sub, client.publisher("c") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                await pub.send(1)
                assert (await sub.receive()).sender == name  # carried whole


@pytest.mark.parametrize(
    "name", ["n" * 101, "", "tab\there", "line\nbreak"], ids=["101", "empty", "tab", "newline"]
)
async def test_a_client_name_outside_the_rule_is_refused_at_connect(
    server: ts.Server, name: str
) -> None:
    # README 189: "a longer one is refused at connect with InvalidArgument".
    with pytest.raises(ts.InvalidArgument, match="client names are 1 to 100 printable"):
        async with ts.open_client(tcp_url(server), name=name):
            pass
    async with ts.open_client(tcp_url(server), name="observer") as observer:
        assert [c.name for c in await observer.clients()] == ["observer"]  # nobody else got in


async def test_a_channel_name_of_1_to_200_printable_characters_and_no_other_is_created(
    server: ts.Server,
) -> None:
    # README 91: "A channel has a name (1–200 printable characters; names starting with `$`
    # belong to the server)".
    async with ts.open_client(tcp_url(server), name="owner") as client:
        for name in ("c" * 200, "x", "AnalogInput1 / ch 3 \u00b5V"):
            await client.create_channel(name)
        listed = {c.name for c in await client.channels()}
        assert {"c" * 200, "x", "AnalogInput1 / ch 3 \u00b5V"} <= listed
        for name in ("c" * 201, "", "a\nb", "tab\there", "$mine"):
            with pytest.raises(ts.InvalidArgument):
                await client.create_channel(name)
        assert {c.name for c in await client.channels()} == listed  # nothing else created


# -- values ----------------------------------------------------------------------------------
OTHER_CBOR_TYPES: list[Any] = [
    {1, 2, "three"},
    Decimal("-12.345"),
    Fraction(1, 3),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    complex(1.5, -2.0),
    ipaddress.IPv4Address("192.168.1.7"),
    ipaddress.IPv6Address("fe80::1"),
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv6Network("2001:db8::/32"),
]


async def test_the_other_types_cbor2_knows_come_back_as_themselves_to_a_python_reader(
    server: ts.Server,
) -> None:
    # README 177-179: "The other types cbor2 knows (set, Decimal, Fraction, UUID, complex,
    # ipaddress objects) travel as their standard CBOR tags and come back as themselves to a
    # Python reader".
    values: list[Any] = [*OTHER_CBOR_TYPES, {"all": OTHER_CBOR_TYPES}, [OTHER_CBOR_TYPES]]
    async with (
        ts.open_client(tcp_url(server), name="w") as w,
        ts.open_client(tcp_url(server), name="r") as r,
    ):
        await w.create_channel("c")
        async with r.subscribe("c", policy="unbounded") as sub, w.publisher("c") as pub:
            with trio.fail_after(WAIT_S):
                await pub.wait_for_readers()
                for value in values:
                    assert await pub.send(value)
                got = [(await sub.receive()).data for _ in values]
    for sent, received in zip(values, got, strict=True):
        assert received == sent
        assert type(received) is type(sent)
    for sent, received in zip(OTHER_CBOR_TYPES, got[-2]["all"], strict=True):
        assert type(received) is type(sent) and received == sent
    for sent, received in zip(OTHER_CBOR_TYPES, got[-1][0], strict=True):
        assert type(received) is type(sent) and received == sent


# -- a silent server -------------------------------------------------------------------------
async def heartbeat_times(
    nursery: trio.Nursery, idle_timeout_s: float, **client: Any
) -> tuple[float, float | None]:
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=None, idle_timeout_s=idle_timeout_s
    )
    server: ts.Server = await nursery.start(ts.serve, config)
    try:
        async with ts.open_client(tcp_url(server), **client) as c:
            return c._heartbeat_times()
    finally:
        await server.aclose()


async def test_the_heartbeat_is_5_s_and_silence_15_s_by_default(nursery: trio.Nursery) -> None:
    # README 1127-1129: "the clients ping every `heartbeat` seconds (5 by default, at most a
    # third of `idle_timeout_s`) and, when nothing at all comes from the server for three of
    # them (at least 2 s: 15 s by default), drop the connection".
    assert ts.ServerConfig().idle_timeout_s >= 15  # the default server leaves 5 s alone
    assert await heartbeat_times(nursery, ts.ServerConfig().idle_timeout_s) == (5.0, 15.0)


@pytest.mark.parametrize(
    ("idle_timeout_s", "client", "expected"),
    [
        (6.0, {}, (2.0, 6.0)),  # at most a third of the server's idle timeout
        (60.0, {"heartbeat": 1.0}, (1.0, 3.0)),  # three silent heartbeats
        (60.0, {"heartbeat": 0.2}, (0.2, 2.0)),  # ... but at least 2 s
        (3.0, {"heartbeat": 4.0}, (1.0, 3.0)),  # the idle timeout's third wins over heartbeat=
        (30.0, {"heartbeat": None}, (10.0, None)),  # None never gives up (pings still go)
    ],
)
async def test_the_heartbeat_and_silence_bound_follow_the_rules(
    nursery: trio.Nursery,
    idle_timeout_s: float,
    client: dict[str, Any],
    expected: tuple[float, float | None],
) -> None:
    assert await heartbeat_times(nursery, idle_timeout_s, **client) == pytest.approx(expected)
