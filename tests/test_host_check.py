"""The Host check of the HTTP port: DNS rebinding against a loopback server is refused."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._transport.origin import host_allowed
from trio_stream.cli import build_parser
from trio_stream.cli._server_options import server_config

TIMEOUT_S = 10.0
REBIND = "rebind.attacker.example"


def http_port(server: ts.Server) -> int:
    assert server.http_url
    return int(server.http_url.rstrip("/").rsplit(":", 1)[1])


async def raw_request(server: ts.Server, head: str) -> bytes:
    """Send one request head, read the answer until the server closes or 2 s of silence."""
    stream = await trio.open_tcp_stream("127.0.0.1", http_port(server))
    received = b""
    async with stream:
        await stream.send_all(head.encode())
        with trio.move_on_after(2.0), trio.fail_after(TIMEOUT_S):
            while chunk := await stream.receive_some(65536):
                received += chunk
                if received.startswith(b"HTTP/1.1 101 "):
                    break
    return received


def get_head(target: str, host: str, *extra: str) -> str:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Connection: close", *extra]
    return "\r\n".join(lines) + "\r\n\r\n"


def upgrade_head(host: str, origin: str) -> str:
    return get_head(
        "/ws",
        host,
        f"Origin: {origin}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ).replace("Connection: close\r\n", "", 1)


async def test_dns_rebinding_upgrade_and_metrics_are_refused_on_a_loopback_server(
    server: ts.Server,
) -> None:
    port = http_port(server)
    upgrade = await raw_request(server, upgrade_head(f"{REBIND}:{port}", f"http://{REBIND}:{port}"))
    assert upgrade.startswith(b"HTTP/1.1 403 ")
    assert b"allowed_hosts" in upgrade and b"--allowed-host" in upgrade
    for target in ("/metrics", "/"):
        answer = await raw_request(server, get_head(target, f"{REBIND}:{port}"))
        assert answer.startswith(b"HTTP/1.1 403 "), answer[:100]
        assert b"trio_stream_connections" not in answer


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]", "LocalHost"])
async def test_loopback_names_are_served_with_or_without_the_port(
    server: ts.Server, name: str
) -> None:
    port = http_port(server)
    for host in (f"{name}:{port}", name):
        answer = await raw_request(server, get_head("/metrics", host))
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    upgrade = await raw_request(
        server, upgrade_head(f"{name}:{port}", f"http://{name}:{port}".lower())
    )
    assert upgrade.startswith(b"HTTP/1.1 101 "), upgrade[:200]


async def test_allowed_hosts_adds_names_and_keeps_refusing_others() -> None:
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=None, http_port=0, allowed_hosts=("Lab.Example",)
    )
    async with ts.open_server(config) as server:
        port = http_port(server)
        ok = await raw_request(server, get_head("/metrics", f"lab.example:{port}"))
        assert ok.startswith(b"HTTP/1.1 200 ")
        upgrade = await raw_request(
            server, upgrade_head(f"lab.example:{port}", f"https://lab.example:{port}")
        )
        assert upgrade.startswith(b"HTTP/1.1 101 ")
        still_local = await raw_request(server, get_head("/metrics", f"localhost:{port}"))
        assert still_local.startswith(b"HTTP/1.1 200 ")
        refused = await raw_request(server, get_head("/metrics", f"{REBIND}:{port}"))
        assert refused.startswith(b"HTTP/1.1 403 ")


def test_a_server_on_every_address_answers_any_host_unless_allowed_hosts_is_given() -> None:
    # Binding 0.0.0.0 in a test would expose it: the rule is checked as a function.
    assert host_allowed("lab.example:9871", None, bound_to="0.0.0.0")
    assert host_allowed("10.1.2.3", None, bound_to="::")
    assert not host_allowed("other.example", ("lab.example",), bound_to="0.0.0.0")
    assert host_allowed("lab.example", ("lab.example",), bound_to="0.0.0.0")
    assert host_allowed("anything.example", ("*",), bound_to="127.0.0.1")
    assert host_allowed(None, None, bound_to="127.0.0.1")  # HTTP/1.0 without Host: no browser
    assert not host_allowed("[::1", None, bound_to="127.0.0.1")  # malformed


loopback_names = st.sampled_from(["localhost", "127.0.0.1", "127.1.2.3", "[::1]", "a.localhost"])
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
other_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){1,3}", fullmatch=True)


@given(loopback_names, ports, st.sampled_from(["127.0.0.1", "::1", "localhost"]))
def test_loopback_names_pass_on_any_port(name: str, port: str, bound: str) -> None:
    assert host_allowed(name + port, None, bound_to=bound)


@given(other_names, ports, st.sampled_from(["127.0.0.1", "::1", "localhost"]))
def test_other_names_never_reach_a_loopback_server(name: str, port: str, bound: str) -> None:
    if name == "localhost" or name.endswith(".localhost"):
        return
    assert not host_allowed(name + port, None, bound_to=bound)
    assert host_allowed(name + port, (name.upper(),), bound_to=bound)


def test_allowed_host_flag_is_repeatable() -> None:
    args = build_parser().parse_args(
        ["serve", "--allowed-host", "lab.example", "--allowed-host", "proxy.example"]
    )
    assert server_config(args).allowed_hosts == ("lab.example", "proxy.example")
