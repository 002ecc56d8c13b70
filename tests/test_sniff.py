"""Wrong port, wrong scheme: recognised from the first bytes and named in one line.

The pure checks on bytes, then each mistake for real against a server on loopback.
"""

from __future__ import annotations

import logging
import ssl

import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._transport import sniff

TLS_CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01"


def test_http_requests_and_answers_are_recognised() -> None:
    assert sniff.is_http_request(b"GET /ws HTTP/1.1\r\n")
    assert sniff.is_http_request(b"POST / HTTP/1.1\r\n")
    assert not sniff.is_http_request(b"\x00\x00\x00\x1d\x01")
    assert sniff.is_http_response(b"HTTP/1.1 400 Bad Request\r\n")
    assert not sniff.is_http_response(b"\x00\x00\x00\x40\x01")


def test_tls_client_hello_is_recognised() -> None:
    assert sniff.is_tls_hello(TLS_CLIENT_HELLO_START)
    assert not sniff.is_tls_hello(b"GET ")
    assert not sniff.is_tls_hello(b"\x16")


def test_a_trio_stream_hello_cannot_start_an_http_request() -> None:
    hello = M.encode_message(M.Hello(v=PROTOCOL_VERSION, name="x", token=None))
    assert sniff.cannot_start_http_request(bytes(frame_prefix(len(hello))) + hello)
    assert sniff.cannot_start_http_request(TLS_CLIENT_HELLO_START)
    for request in (b"GET / HTTP/1.1\r\n", b"\r\nGET / HTTP/1.1", b"get /"):
        assert not sniff.cannot_start_http_request(request)
    assert not sniff.cannot_start_http_request(b"")  # nothing yet: no verdict


@given(st.binary(min_size=1, max_size=64))
def test_bytes_starting_with_a_letter_may_be_http(data: bytes) -> None:
    assert sniff.cannot_start_http_request(data) == (
        not (chr(data[0]).isascii() and chr(data[0]).isalpha()) and data[0] not in b"\r\n"
    )


def test_explanations_name_the_right_urls() -> None:
    text = sniff.tcp_port_explanation("127.0.0.1:9870", 9871)
    assert text.startswith(sniff.TCP_PORT_MARK)
    assert "tcp://127.0.0.1:9870" in text and "ws://127.0.0.1:9871/ws" in text
    assert "no HTTP port" in sniff.tcp_port_explanation("127.0.0.1:9870", None)
    text = sniff.http_port_explanation(b"\x00\x00", "127.0.0.1:9871", "tcp://127.0.0.1:9870")
    assert "ws://127.0.0.1:9871/ws" in text and "tcp://127.0.0.1:9870" in text
    tls = sniff.http_port_explanation(TLS_CLIENT_HELLO_START, "127.0.0.1:9871", None)
    assert "does not use TLS" in tls
    # A TLS server's ports: its schemes (the bytes came after a TLS handshake).
    text = sniff.tcp_port_explanation("127.0.0.1:9870", 9871, tls=True)
    assert "use tcps://127.0.0.1:9870, or wss://127.0.0.1:9871/ws" in text
    assert "dashboard: https://127.0.0.1:9871/" in text
    text = sniff.http_port_explanation(b"\x00", "127.0.0.1:9871", "tcps://h:9870", tls=True)
    assert "use wss://127.0.0.1:9871/ws, or tcps:// on the TCP port (tcps://h:9870)" in text


def test_an_http_answer_becomes_one_line_for_the_client() -> None:
    body = sniff.http_port_explanation(b"\x00", "h:1", "tcp://h:2")
    answer = sniff.http_answer(400, "Bad Request", body)
    assert sniff.describe_http_reply("tcp://h:1", answer) == f"tcp://h:1: {body}"
    other = sniff.describe_http_reply("tcp://h:1", b"HTTP/1.1 404 Not Found\r\n\r\nnope")
    assert other is not None and "HTTP port" in other
    assert sniff.describe_http_reply("tcp://h:1", b"\x00\x00\x00\x10") is None


def test_only_a_plain_answer_to_tls_is_named() -> None:
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plain.reason = "WRONG_VERSION_NUMBER"
    wrapped = trio.BrokenResourceError("x")
    wrapped.__cause__ = plain
    text = sniff.describe_tls_failure("tcps://h:1", wrapped)
    assert text is not None and "use tcp://h:1" in text
    other = ssl.SSLError(1, "certificate verify failed")
    other.reason = "CERTIFICATE_VERIFY_FAILED"
    assert sniff.describe_tls_failure("wss://h:1/ws", other) is None


# -- the mistakes, for real -------------------------------------------------------------------
async def one_line_error(url: str) -> str:
    with trio.fail_after(5):  # promptly: no handshake timeout is waited out
        with pytest.raises(ts.ConnectionClosed) as info:
            async with ts.open_client(url):
                pass
    text = str(info.value)
    assert "\n" not in text
    # What a script catches, named so in a traceback (not an internal subclass's module path).
    assert type(info.value) is ts.ConnectionClosed, type(info.value)
    return text


def port_of(url: str | None) -> str:
    assert url is not None
    return url.split("//")[1].split("/")[0]


async def test_ws_scheme_on_the_tcp_port_is_named(server: ts.Server) -> None:
    text = await one_line_error(f"ws://{port_of(server.tcp_url)}/ws")
    assert sniff.TCP_PORT_MARK in text
    assert f"use {server.tcp_url}" in text


async def test_tcp_scheme_on_the_http_port_is_named(server: ts.Server) -> None:
    text = await one_line_error(f"tcp://{port_of(server.ws_url)}")
    assert sniff.HTTP_PORT_MARK in text
    assert server.ws_url is not None and server.ws_url in text
    assert f"({server.tcp_url})" in text


@pytest.mark.parametrize("port", ["tcp", "http"])
async def test_tls_schemes_against_a_plain_server_are_named(server: ts.Server, port: str) -> None:
    address = port_of(server.tcp_url if port == "tcp" else server.ws_url)
    for scheme in ("tcps", "wss"):
        text = await one_line_error(f"{scheme}://{address}/ws")
        assert "the server answered without TLS" in text, text


async def test_the_tcp_port_answers_a_browser_with_a_400(server: ts.Server) -> None:
    host, port = port_of(server.tcp_url).split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some():
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert sniff.TCP_PORT_MARK.encode() in answer


async def test_the_tcp_port_names_a_tls_client_hello_in_its_refusal(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # The TLS peer cannot read the refusal, but the server's log and a raw reader can; it
    # used to be "FrameTooLarge: frame of 369295616 bytes".
    caplog.set_level(logging.INFO, logger="trio_stream")
    host, port = port_of(server.tcp_url).split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    client_side = ssl.create_default_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        client_side.do_handshake()
    await stream.send_all(outgoing.read())
    answer = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some():
            answer += chunk
    error = M.decode_message(bytearray(answer[4:]))
    assert isinstance(error, M.Error) and error.type == "ProtocolError"
    assert "a TLS ClientHello on a plain TCP port" in error.message
    assert "a TLS ClientHello on a plain TCP port" in caplog.text


async def test_a_tls_connection_keeps_its_first_bytes_only_until_the_hello_is_read(
    nursery: trio.Nursery,
) -> None:
    # They hold the hello's token; let go after the handshake, the next read took them
    # again (a later request, an admin token in it) for the connection's life (a review).
    ca = trustme.CA()
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(ca, http_port=None))
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, ssl_context=trusting(ca)) as client:
        await client.create_channel("after-the-hello")
        (session,) = server.state.sessions.values()
        assert getattr(session.transport, "first_bytes", "absent") is None
    await server.aclose()


def tls_server_config(
    ca: trustme.CA, tcp_port: int | None = 0, http_port: int | None = 0
) -> ts.ServerConfig:
    """A server on loopback with a certificate from ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return ts.ServerConfig(
        host="127.0.0.1", tcp_port=tcp_port, http_port=http_port, ssl_context=context
    )


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client's TLS context that trusts ``ca``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_a_tls_server_still_serves_tls_clients(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    client_context = trusting(ca)
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(ca))
    for url in (server.tcp_url, server.ws_url):
        assert url is not None
        async with ts.open_client(url, ssl_context=client_context) as client:
            assert "trio_stream" in client.server
    await server.aclose()


async def test_a_refused_certificate_says_how_to_trust_it(nursery: trio.Nursery) -> None:
    # OpenSSL's words alone ("self-signed certificate") did not say that a private CA is
    # given with --tls-ca or an ssl_context; a name mismatch has another cure.
    ca = trustme.CA()
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(ca))
    for url in (server.tcp_url, server.ws_url):
        assert url is not None
        with pytest.raises(ts.ConnectionClosed) as refused:
            async with ts.open_client(url, reconnect=False):
                pass
        assert str(refused.value) == (
            f"cannot connect to {url}: the server's certificate was refused (unable to get "
            "local issuer certificate): if the server's certificate comes from a private CA, "
            "give that CA's certificate: --tls-ca FILE to trio-stream, "
            "ssl_context=ssl.create_default_context(cafile=FILE) in Python"
        )
    assert server.tcp_url is not None
    elsewhere = server.tcp_url.replace("127.0.0.1", "localhost")
    with pytest.raises(ts.ConnectionClosed, match="connect by a name or address that the"):
        async with ts.open_client(elsewhere, ssl_context=trusting(ca), reconnect=False):
            pass
    await server.aclose()


async def test_the_wrong_port_of_a_tls_server_is_named(nursery: trio.Nursery) -> None:
    # A TLS stream is not peeked: tcps:// on the HTTPS port said "FrameTooLarge: frame of
    # 1213486160 bytes ... raise max_frame_bytes" (the bytes "HTTP"), and wss:// on the TCPS
    # port got an error frame where its upgrade's answer should be (outside TLS audit).
    ca = trustme.CA()
    client_context = trusting(ca)
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(ca))
    assert server.tcp_url is not None and server.ws_url is not None
    on_https_port = f"tcps://{port_of(server.ws_url)}"
    with trio.fail_after(10), pytest.raises(ts.ConnectionClosed) as refused:
        async with ts.open_client(on_https_port, ssl_context=client_context, reconnect=False):
            pass
    text = str(refused.value)
    assert text.startswith(f"{on_https_port}: {sniff.HTTP_PORT_MARK}"), text
    assert f"use {server.ws_url}" in text and f"({server.tcp_url})" in text
    on_tcps_port = f"wss://{port_of(server.tcp_url)}/ws"
    with trio.fail_after(10), pytest.raises(ts.ConnectionClosed) as refused:
        async with ts.open_client(on_tcps_port, ssl_context=client_context, reconnect=False):
            pass
    text = str(refused.value)
    assert sniff.TCP_PORT_MARK in text and f"use {server.tcp_url}," in text, text
    assert "wss://127.0.0.1:" in text
    await server.aclose()


async def test_a_server_back_with_a_certificate_not_trusted_is_said_while_reconnecting(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # Restarted with a new self-signed certificate, the server was tried again and again,
    # logged at INFO only: the client sat in "reconnecting" without a word (TLS audit).
    trusted, other = trustme.CA(), trustme.CA()
    client_context = trusting(trusted)
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(trusted, http_port=None))
    assert server.tcp_url is not None
    port = int(server.tcp_url.rsplit(":", 1)[1])
    policy = ts.Reconnect(initial=0.05, maximum=0.2)
    async with ts.open_client(server.tcp_url, ssl_context=client_context, reconnect=policy) as c:
        await server.aclose()
        stranger: ts.Server = await nursery.start(ts.serve, tls_server_config(other, port, None))
        with trio.fail_after(10):
            while "certificate was refused" not in caplog.text:  # noqa: ASYNC110
                await trio.sleep(0.05)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "connection to" in warned[0] and "is lost; reconnecting" in warned[0], warned
        assert len(warned) == 2, warned  # each new reason once, not at every try
        assert "cannot reconnect yet: cannot connect to tcps://" in warned[1]
        assert c.state == "reconnecting"
        await stranger.aclose()
        again: ts.Server = await nursery.start(ts.serve, tls_server_config(trusted, port, None))
        with trio.fail_after(10):
            await c.wait_state("open")
        await again.aclose()


async def test_wrong_servers_at_two_urls_are_each_said_once_while_reconnecting(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # A client tries its URLs in turn: with two wrong servers their two reasons alternated,
    # and each try was a new WARNING (only the last reason was remembered).
    caplog.set_level(logging.INFO, logger="trio_stream._client")
    trusted = trustme.CA()
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(trusted, http_port=None))
    plain: ts.Server = await nursery.start(
        ts.serve, ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    )
    assert server.tcp_url is not None and plain.tcp_url is not None
    port = int(server.tcp_url.rsplit(":", 1)[1])
    urls = [server.tcp_url, plain.tcp_url.replace("tcp://", "tcps://")]
    policy = ts.Reconnect(initial=0.02, maximum=0.05)
    async with ts.open_client(urls, ssl_context=trusting(trusted), reconnect=policy) as c:
        await server.aclose()
        stranger: ts.Server = await nursery.start(
            ts.serve, tls_server_config(trustme.CA(), port, None)
        )

        def tries() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "cannot reconnect yet" in r.getMessage()]

        with trio.fail_after(10):
            while len(tries()) < 8:  # noqa: ASYNC110
                await trio.sleep(0.05)
        warned = [r for r in tries() if r.levelno == logging.WARNING]
        assert len(warned) == 2, [r.getMessage() for r in warned]
        assert c.state == "reconnecting"
        await stranger.aclose()
    await plain.aclose()


async def test_a_plain_websocket_client_on_a_tls_port_is_told_wss(nursery: trio.Nursery) -> None:
    server: ts.Server = await nursery.start(ts.serve, tls_server_config(trustme.CA(), None))
    assert server.ws_url is not None and server.ws_url.startswith("wss://")
    plain = server.ws_url.replace("wss://", "ws://")
    with pytest.raises(ts.ConnectionClosed, match=r"\(if that port uses TLS, use wss://\)$"):
        async with ts.open_client(plain, reconnect=False):
            pass
    await server.aclose()
