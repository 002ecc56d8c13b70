"""Server URLs (_transport/urls.py): what the client accepts, and one clear error for the rest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._transport.urls import SCHEMES, split_url


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("tcp://127.0.0.1:9870", ("tcp", "127.0.0.1", 9870, "/ws")),
        ("ws://daq.lab:9871/ws", ("ws", "daq.lab", 9871, "/ws")),
        ("ws://daq.lab:9871", ("ws", "daq.lab", 9871, "/ws")),
        ("ws://daq.lab:9871/", ("ws", "daq.lab", 9871, "/ws")),  # "/" is the dashboard's
        ("wss://[::1]:443/stream", ("wss", "::1", 443, "/stream")),
    ],
)
def test_a_server_url_splits_into_its_parts(url: str, parts: tuple[str, str, int, str]) -> None:
    assert split_url(url) == parts


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h:21",
        "tcp://[::1:9870",
        "tcp://:9870",
        "h:x:y",
        "tcp://[127.0.0.1]:9870",  # brackets are for IPv6 (urlsplit refuses it)
        "tcp://[::1x]:9870",
        "tcp://h]:9870",
    ],
)
def test_a_url_the_client_cannot_use_is_one_clear_error(url: str) -> None:
    # It said "cannot connect to", as if a connection had been tried.
    with pytest.raises(ts.InvalidArgument) as refused:
        split_url(url)
    assert str(refused.value) == (
        f"{url!r} is not a server URL: use tcp://host:port or ws://host:port/ws (tcps:// and "
        "wss:// for TLS)"
    )


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("tcp://h:99999", "99999"),
        ("tcp://h:abc", "abc"),
        ("http://h:abc/", "abc"),
        ("https://h:70000/", "70000"),
        ("ws://[::1]:-1/ws", "-1"),
        ("tcp://[::1]:99999", "99999"),
        ("tcp://h:1:2", "1:2"),  # the port is all after the first ":", as urllib reads it
        ("tcp://h:abc?x", "abc"),
        ("tcp://h:99999?x=a:b", "99999"),
        ("tcp://u:p@h:1x", "1x"),
    ],
)
def test_a_port_out_of_range_or_not_a_number_is_named(url: str, port: str) -> None:
    # tcp://127.0.0.1:99999 was told to "use tcp://host:port", which it looked like it did.
    with pytest.raises(ts.InvalidArgument) as refused:
        split_url(url)
    assert str(refused.value).startswith(
        f"{url!r} is not a server URL: its port {port!r} is not a number from 0 to 65535; use "
    )


@pytest.mark.parametrize(
    ("url", "example"),
    [
        ("tcp://127.0.0.1", "tcp://127.0.0.1:9870"),
        ("tcps://lab.example", "tcps://lab.example:9870"),
        ("ws://localhost/ws", "ws://localhost:9871/ws"),
        ("wss://[::1]", "wss://[::1]:9871/ws"),
    ],
)
def test_a_url_without_its_port_is_told_the_servers_default_ones(url: str, example: str) -> None:
    # It said "use tcp://host:port", which does not say what is missing (first-hour audit).
    with pytest.raises(ts.InvalidArgument) as refused:
        split_url(url)
    assert str(refused.value).startswith(f"{url!r} has no port: give the server's, e.g. {example}")


@pytest.mark.parametrize("address", ["127.0.0.1:9870", "localhost:9870", "[::1]:9870"])
def test_an_address_without_its_scheme_is_told_the_scheme_to_add(address: str) -> None:
    with pytest.raises(ts.InvalidArgument) as refused:
        split_url(address)
    assert str(refused.value) == (
        f"{address!r} has no scheme: use tcp://{address} (or ws://host:port/ws on the "
        "server's HTTP port)"
    )


def test_the_dashboard_s_address_names_the_websocket_url_there() -> None:
    with pytest.raises(ts.InvalidArgument, match=r"a client connects to ws://h:9871/ws if that is"):
        split_url("http://h:9871/")


@given(st.text(max_size=60) | st.builds("{}://{}".format, st.sampled_from(SCHEMES), st.text()))
def test_any_text_is_a_url_or_invalid_argument(text: str) -> None:
    try:
        scheme, host, port, path = split_url(text)
    except ts.InvalidArgument:
        return
    assert scheme in SCHEMES and host and 0 <= port <= 65535 and path


@pytest.mark.parametrize("url", [b"tcp://127.0.0.1:9870", None, 9870])
def test_a_url_that_is_no_str_is_one_clear_error(url: object) -> None:
    with pytest.raises(ts.InvalidArgument, match="a server URL is a str"):
        split_url(url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"url": []}, "at least one URL"),
        ({"url": [b"tcp://127.0.0.1:9"]}, "a server URL is a str"),
        ({"url": "tcp://127.0.0.1:9", "name": 123}, "name must be a str"),
        ({"url": "tcp://127.0.0.1:9", "connect_timeout": -1}, "connect_timeout must be"),
        ({"url": "tcp://127.0.0.1:9", "connect_timeout": None}, "connect_timeout must be"),
        ({"url": "tcp://127.0.0.1:9", "connect_timeout": "5"}, "connect_timeout must be"),
        ({"url": "tcp://127.0.0.1:9", "heartbeat": "5"}, "heartbeat must be"),
        ({"url": None}, "url must be a str"),
        ({"url": 9870}, "url must be a str"),
        ({"url": b"tcp://127.0.0.1:9"}, "url must be a str"),
    ],
)
async def test_open_client_refuses_what_it_cannot_use_before_connecting(
    arguments: dict[str, object], error: str
) -> None:
    # Before: an IndexError, an AttributeError from inside urlsplit, the server's protocol
    # error for the hello, "no welcome within -1 s".
    with pytest.raises(ts.InvalidArgument, match=error):
        async with ts.open_client(**arguments):  # type: ignore[arg-type]
            pass
