"""The HTTP port: dashboard files, /metrics, limits on requests, and the WebSocket origin check."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
import trio
import trio.testing
import trio_websocket

import trio_stream as ts
from trio_stream._server import http
from trio_stream._server.http import CONTENT_SECURITY_POLICY, MAX_REQUEST_HEAD_BYTES
from trio_stream._server.metrics_budget import INTERVAL_S, MAX_WAITING
from trio_stream._server.rpc import ERROR_REASONS
from trio_stream._transport import web_files
from trio_stream._transport.origin import origin_allowed

TIMEOUT_S = 10.0


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpClient:
    """A keep-alive HTTP/1.1 client on one connection (h11), for exact control of requests."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, target: str, *, method: str = "GET", headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        request = h11.Request(method=method, target=target, headers=[("Host", self.host), *headers])
        await self.stream.send_all(
            (self.conn.send(request) or b"") + (self.conn.send(h11.EndOfMessage()) or b"")
        )
        response: h11.Response | None = None
        body = b""
        with trio.fail_after(TIMEOUT_S):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(f"unexpected {event!r}")
        assert response is not None
        headers_out = {k.decode().lower(): v.decode() for k, v in response.headers}
        return Response(response.status_code, headers_out, body)


def port_of(server: ts.Server) -> int:
    assert server.http_url
    return int(server.http_url.rstrip("/").rsplit(":", 1)[1])


@asynccontextmanager
async def http_client(server: ts.Server) -> AsyncIterator[HttpClient]:
    port = port_of(server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield HttpClient(stream, f"127.0.0.1:{port}")


async def get(server: ts.Server, target: str, **kwargs: object) -> Response:
    async with http_client(server) as client:
        return await client.request(target, **kwargs)  # type: ignore[arg-type]


async def raw_exchange(server: ts.Server, data: bytes) -> bytes:
    """Send bytes, read everything until the server closes."""
    received = b""
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(server))
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(TIMEOUT_S):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


# -- the dashboard's files ------------------------------------------------------------------------
SITE = {
    "index.html": b"<!doctype html><title>dashboard</title>",
    "app.js": b"export const x = 1;",
    "style.css": b"body { margin: 0 }",
    "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    "pic.png": b"\x89PNG\r\n\x1a\n",
    "lib/deep.mjs": b"export default 2;",
    ".hidden.js": b"secret",
    "notes.xyz": b"unknown type",
}
SECRET = b"THE SECRET OUTSIDE web/"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A web/ directory of known files, with a secret file beside it."""
    root = tmp_path / "web"
    for name, content in SITE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    monkeypatch.setattr(web_files, "web_root", lambda: root)
    yield root


async def test_root_serves_the_dashboard_with_a_strict_csp(server: ts.Server, site: Path) -> None:
    response = await get(server, "/")
    assert response.status == 200
    assert response.body == SITE["index.html"]
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    csp = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split("; ")
    }
    assert csp["script-src"] == ["'self'"]  # no inline script, no eval, nothing from elsewhere
    assert csp["default-src"] == ["'self'"]
    assert csp["object-src"] == csp["base-uri"] == csp["form-action"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]  # no other site may frame the dashboard
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"].startswith('"')


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/lib/deep.mjs", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.svg", "image/svg+xml"),
        ("/pic.png", "image/png"),
        ("/index.html?v=3", "text/html; charset=utf-8"),
    ],
)
async def test_files_come_with_their_content_type(
    server: ts.Server, site: Path, target: str, content_type: str
) -> None:
    response = await get(server, target)
    assert response.status == 200
    assert response.headers["content-type"] == content_type
    assert response.body == SITE[target[1:].partition("?")[0]]


async def test_every_packaged_web_file_is_served(server: ts.Server) -> None:
    """Whatever trio_stream/web/ holds is reachable, with a content type we know."""
    names = [entry.name for entry in web_files.web_root().iterdir() if entry.is_file()]
    assert "cbor.js" in names
    for name in names:
        suffix = name[name.rfind(".") :]
        assert suffix in web_files.CONTENT_TYPES, f"add a content type for {name}"
        response = await get(server, f"/{name}")
        assert response.status == 200, name
        assert response.headers["content-type"] == web_files.CONTENT_TYPES[suffix]
        assert response.body == (web_files.web_root() / name).read_bytes()


async def test_etag_revalidation_answers_304_without_body(server: ts.Server, site: Path) -> None:
    async with http_client(server) as client:
        first = await client.request("/app.js")
        etag = first.headers["etag"]
        again = await client.request("/app.js", headers=(("If-None-Match", etag),))
        assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)
        (site / "app.js").write_bytes(b"export const x = 2;")
        changed = await client.request("/app.js", headers=(("If-None-Match", etag),))
        assert changed.status == 200 and changed.headers["etag"] != etag


async def test_keep_alive_serves_several_requests_on_one_connection(
    server: ts.Server, site: Path
) -> None:
    async with http_client(server) as client:
        for name in ("index.html", "app.js", "style.css"):
            response = await client.request(f"/{name}")
            assert (response.status, response.body) == (200, SITE[name])


async def test_head_gives_headers_without_body(server: ts.Server, site: Path) -> None:
    response = await get(server, "/app.js", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-length"] == str(len(SITE["app.js"]))


async def test_unknown_paths_are_404_and_other_methods_405(server: ts.Server, site: Path) -> None:
    assert (await get(server, "/nope.js")).status == 404
    assert (await get(server, "/notes.xyz")).status == 404  # no known content type
    assert (await get(server, "/lib")).status == 404  # a directory
    response = await get(server, "/", method="POST")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert (await get(server, "/ws")).status == 426  # plain GET on the WebSocket path


async def test_a_body_waiting_for_100_continue_is_answered_at_once(server: ts.Server) -> None:
    # curl sends "Expect: 100-continue" with a large body and waits for it: no request here
    # takes a body, and the server waited for it until its handshake timeout (a 408).
    head = (
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    with trio.fail_after(2):  # the server's handshake timeout is 10 s
        answer = await raw_exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 405 "), answer[:100]
    assert b"100 Continue" not in answer


TRAVERSALS = [
    "/../secret.txt",
    "/lib/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/lib/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/..\\secret.txt",
    "//secret.txt",
    "/.hidden.js",
    "/%00index.html",
    "/%ff%fe.js",
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_nothing_outside_web_is_reachable(server: ts.Server, site: Path, target: str) -> None:
    response = await get(server, target)
    assert response.status == 404
    assert SECRET not in response.body and b"secret" not in response.body


async def test_request_head_over_the_limit_is_refused(server: ts.Server, site: Path) -> None:
    start = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: "
    fits = start + b"a" * (MAX_REQUEST_HEAD_BYTES - len(start) - 4) + b"\r\n\r\n"
    assert len(fits) == MAX_REQUEST_HEAD_BYTES
    assert (await raw_exchange(server, fits.replace(b"HTTP/1.1", b"HTTP/1.0"))).startswith(
        b"HTTP/1.1 200 "
    )
    too_big = fits.replace(b"X-Big: ", b"X-Big: a")
    answer = await raw_exchange(server, too_big)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert (await get(server, "/")).status == 200  # the server carries on


async def test_garbage_request_is_a_400(server: ts.Server) -> None:
    answer = await raw_exchange(server, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_slow_request_head_is_cut_off_at_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0, handshake_timeout_s=5)
    async with ts.open_server(config) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(server))
        async with stream:
            start = trio.current_time()
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # ... and nothing more
            answer = b""
            with trio.fail_after(60):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert 5 <= trio.current_time() - start < 6


async def test_idle_keep_alive_connection_is_closed_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0, handshake_timeout_s=5)
    async with ts.open_server(config) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(server))
        async with stream:
            with trio.fail_after(60):
                assert await stream.receive_some(65536) == b""


# -- /metrics -----------------------------------------------------------------------------------
def metric_lines(body: bytes) -> dict[str, str]:
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return dict(line.rsplit(" ", 1) for line in lines)


async def test_metrics_count_public_channels_in_prometheus_format(server: ts.Server) -> None:
    url = server.tcp_url or ""
    weird = 'we"ird\\name'
    with trio.fail_after(TIMEOUT_S):
        async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
            await w.create_channel("public")
            await w.create_channel("hidden", public=False)
            await w.create_channel(weird)
            async with (
                r.subscribe("public", policy="block", size=10) as sub,
                w.publisher("public") as pub,
            ):
                await pub.wait_for_readers()
                for i in range(3):
                    await pub.send(i)
                for _ in range(3):
                    await sub.receive()
                response = await get(server, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    assert "hidden" not in text
    assert "# TYPE trio_stream_frames_in_total counter" in text
    metrics = metric_lines(response.body)
    assert metrics["trio_stream_connections"] == "2"
    assert metrics['trio_stream_channel_frames_total{channel="public"}'] == "3"
    assert metrics['trio_stream_channel_readers{channel="public"}'] == "1"
    assert metrics['trio_stream_channel_writers{channel="public"}'] == "1"
    assert metrics['trio_stream_channel_lost_total{channel="public"}'] == "0"
    assert metrics['trio_stream_channel_readers{channel="we\\"ird\\\\name"}'] == "0"
    assert int(metrics["trio_stream_frames_in_total"]) >= 3
    assert int(metrics["trio_stream_frames_out_total"]) >= 3
    assert float(metrics["trio_stream_uptime_seconds"]) >= 0
    for name in ("bytes_in_total", "bytes_out_total", "frames_lost_total", "buffered_bytes"):
        assert f"trio_stream_{name}" in metrics
    assert metrics["trio_stream_held_channels"] == "0"
    assert metrics["trio_stream_connections_refused_total"] == "0"
    assert "trio_stream_redis_up" not in metrics  # one node: no cluster gauges


class Motor:
    def rpc_move(self, steps: int) -> int:
        if steps < 0:
            raise ValueError("steps must be positive")
        return steps

    async def rpc_wait(self) -> None:
        await trio.sleep_forever()


async def test_metrics_count_rpc_calls_and_their_errors_by_reason(
    server: ts.Server, nursery: trio.Nursery
) -> None:
    url = server.tcp_url or ""

    async def serve_motor(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with ts.open_client(url, name="motor") as provider:
                provider.expose(Motor())
                task_status.started(scope)
                await trio.sleep_forever()

    async def wait_in_flight() -> None:
        while server.state.rpc.pending() < 1:  # noqa: ASYNC110 - the server's table
            await trio.sleep(0.01)

    with trio.fail_after(TIMEOUT_S):
        provider_scope = await nursery.start(serve_motor)
        async with ts.open_client(url, name="ctl") as ctl:
            motor = await ctl.rpc("motor", timeout=TIMEOUT_S)  # a describe: passed on
            assert await motor.move(3) == 3
            with pytest.raises(ts.RemoteError):
                await motor.move(-1)
            with pytest.raises(ts.RpcError, match="turn"):
                await motor.call("turn")  # the provider refuses it
            with pytest.raises(ts.RpcError, match="no client named 'motr'"):
                await ctl.rpc("motr")
            async with trio.open_nursery() as waiting:
                waiting.start_soon(motor.wait)
                await wait_in_flight()
                during = metric_lines((await get(server, "/metrics")).body)
                waiting.cancel_scope.cancel()

            async def cut_short() -> None:
                with pytest.raises(ts.RpcError, match="'motor' disconnected before answering"):
                    await motor.wait()

            async with trio.open_nursery() as waiting:
                waiting.start_soon(cut_short)
                await wait_in_flight()
                provider_scope.cancel()  # the provider's client goes, mid-call
            after = metric_lines((await get(server, "/metrics")).body)
    assert during["trio_stream_rpc_calls_in_flight"] == "1"
    assert after["trio_stream_rpc_calls_in_flight"] == "0"
    # describe, move(3), move(-1), turn, wait, wait
    assert after["trio_stream_rpc_calls_total"] == "6"
    errors = {
        reason: int(after[f'trio_stream_rpc_errors_total{{reason="{reason}"}}'])
        for reason in ERROR_REASONS
    }
    assert errors == {
        "raised": 1,
        "refused": 1,
        "no_provider": 1,
        "limit": 0,
        "too_large": 0,
        "disconnected": 1,
        "invalid": 0,
        "unavailable": 0,
    }


async def test_metrics_want_the_token_when_the_server_has_one() -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0, token="s3cret")
    async with ts.open_server(config) as server:
        refused = await get(server, "/metrics")
        assert refused.status == 401
        wrong = await get(server, "/metrics", headers=(("Authorization", "Bearer nope"),))
        assert wrong.status == 401
        ok = await get(server, "/metrics", headers=(("Authorization", "Bearer s3cret"),))
        assert ok.status == 200 and b"trio_stream_connections" in ok.body


async def test_metrics_without_the_token_take_no_turn_from_the_scraper_with_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Answered 401 at once: requests without the token, from the scraper's address (a NAT),
    # waited for its turns and pushed it to 429s (a review).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0, token="s3cret")
    async with ts.open_server(config) as server:
        refused: list[int] = []

        async def guess() -> None:
            refused.append((await get(server, "/metrics")).status)

        async with trio.open_nursery() as nursery:
            for _ in range(MAX_WAITING * 2):
                nursery.start_soon(guess)
        assert refused == [401] * (MAX_WAITING * 2)
        start = trio.current_time()
        ok = await get(server, "/metrics", headers=(("Authorization", "Bearer s3cret"),))
        assert ok.status == 200 and trio.current_time() == start


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_metrics_take_the_bearer_scheme_in_any_case(scheme: str) -> None:
    # RFC 7235: the auth scheme is case-insensitive; some scrapers send "bearer".
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0, token="s3cret")
    async with ts.open_server(config) as server:
        ok = await get(server, "/metrics", headers=(("Authorization", f"{scheme} s3cret"),))
        assert ok.status == 200
        wrong = await get(server, "/metrics", headers=(("Authorization", f"{scheme} s3cre"),))
        assert wrong.status == 401
        basic = await get(server, "/metrics", headers=(("Authorization", "Basic s3cret"),))
        assert basic.status == 401


async def test_metrics_asked_in_a_loop_are_answered_once_an_interval_and_stay_true(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A scraper in a loop is slowed to one answer per INTERVAL_S for its address (not
    # refused), and each answer still shows what changed since the one before.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0)
    async with (
        ts.open_server(config) as server,
        ts.open_client(server.tcp_url or "") as client,
        http_client(server) as http,
    ):
        start = trio.current_time()
        counts = []
        for i in range(5):
            await client.create_channel(f"counted.{i}")
            response = await http.request("/metrics")
            assert response.status == 200
            counts.append(int(metric_lines(response.body)["trio_stream_channels"]))
        assert trio.current_time() - start >= 4 * INTERVAL_S
        assert [c - counts[0] for c in counts] == [0, 1, 2, 3, 4]


async def test_metrics_requests_over_the_waiting_bound_get_a_429_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)
    statuses: list[tuple[int, str | None]] = []
    async with ts.open_server(config) as server:

        async def scrape() -> None:
            async with http_client(server) as http:
                response = await http.request("/metrics")
                statuses.append((response.status, response.headers.get("retry-after")))

        async with trio.open_nursery() as nursery:
            for _ in range(MAX_WAITING + 5):
                nursery.start_soon(scrape)
    answered = statuses.count((200, None))
    # (the first may be answered, at its turn "now", before the last ones arrive)
    assert answered in (MAX_WAITING, MAX_WAITING + 1), statuses
    assert statuses.count((429, "1")) == len(statuses) - answered


# -- WebSocket upgrades ---------------------------------------------------------------------------
async def upgrade_status(server: ts.Server, origin: str | None) -> int:
    """101 when the upgrade is accepted, else the refusal's status."""
    headers = [(b"Origin", origin.encode())] if origin is not None else []
    try:
        with trio.fail_after(TIMEOUT_S):
            async with trio_websocket.open_websocket_url(
                server.ws_url or "", extra_headers=headers
            ):
                return 101
    except trio_websocket.ConnectionRejected as exc:
        return int(exc.status_code)


SAME = "same-origin"
OTHER_PORT = "same host, other port"
LAB = "https://lab.example.org"


@pytest.mark.parametrize(
    ("allowed", "origin", "status"),
    [
        (None, None, 101),  # not a browser
        (None, SAME, 101),  # the dashboard itself
        (None, "http://evil.example", 403),
        (None, OTHER_PORT, 403),
        (None, "null", 403),
        ((LAB,), LAB, 101),
        ((LAB,), LAB.upper(), 101),
        ((LAB,), SAME, 101),  # the dashboard still connects
        ((LAB,), OTHER_PORT, 403),
        ((LAB,), "https://lab.example.org.evil.example", 403),
        ((LAB,), None, 101),  # not a browser
    ],
)
async def test_websocket_origin_check(
    allowed: tuple[str, ...] | None, origin: str | None, status: int
) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0, allowed_origins=allowed)
    async with ts.open_server(config) as server:
        port = port_of(server)
        origin = {SAME: f"http://127.0.0.1:{port}", OTHER_PORT: f"http://127.0.0.1:{port + 1}"}.get(
            origin or "", origin
        )
        assert await upgrade_status(server, origin) == status


async def test_a_refused_origin_is_logged_with_how_to_let_it_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The browser shows its page nothing of a 403 upgrade: the server's log line is the
    # page author's only clue, so it names the flag that lets the page in.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)
    async with ts.open_server(config) as server:
        with caplog.at_level(logging.WARNING, logger="trio_stream._server.http"):
            assert await upgrade_status(server, "http://127.0.0.1:8000") == 403
    assert (
        "WebSocket from origin 'http://127.0.0.1:8000' refused (not a page of this server): "
        "let it in with --allowed-origin http://127.0.0.1:8000 or "
        "ServerConfig(allowed_origins=(...))" in caplog.text
    )


async def test_a_flood_of_refused_origins_and_hosts_is_not_a_flood_of_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Anyone may send these: 6,000 refusals were 6,000 WARNING lines (an outside review).
    # The first is said at once, the rest counted into a line a minute, as refused
    # connections are.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)
    async with ts.open_server(config) as server:
        with caplog.at_level(logging.WARNING):
            for _ in range(20):
                assert await upgrade_status(server, "http://127.0.0.1:8000") == 403
            port = port_of(server)
            for _ in range(20):
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
                    assert b" 403 " in await stream.receive_some(4096)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
    assert "WebSocket from origin 'http://127.0.0.1:8000' refused" in refused[0].getMessage()


async def test_a_refused_null_origin_is_not_advised_in(caplog: pytest.LogCaptureFixture) -> None:
    # Every file:// page and sandboxed frame sends "null": the log advised allowing it.
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=None, http_port=0)
    async with ts.open_server(config) as server:
        with caplog.at_level(logging.WARNING, logger="trio_stream._server.http"):
            assert await upgrade_status(server, "null") == 403
    assert "--allowed-origin null" not in caplog.text
    assert "serve the page from a web server" in caplog.text


GOOD_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


@pytest.mark.parametrize(
    ("version", "extra", "status", "said"),
    [
        ("1.1", f"Sec-WebSocket-Version: 8\r\n{GOOD_KEY}", 426, "version 13"),
        ("1.1", "Sec-WebSocket-Version: 13\r\n", 400, "not a valid WebSocket upgrade"),
        # RFC 6455 4.2.1 (these were answered with a 101):
        ("1.0", f"Sec-WebSocket-Version: 13\r\n{GOOD_KEY}", 400, "HTTP/1.1 request"),
        ("1.1", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n", 400, "16 random"),
        (  # two keys: the second was never looked at
            "1.1",
            f"Sec-WebSocket-Version: 13\r\n{GOOD_KEY}Sec-WebSocket-Key: not-a-key\r\n",
            400,
            "16 random",
        ),
        (  # 24 characters of base64, but 18 bytes
            "1.1",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: YWJjZGVmZ2hpamtsbW5vcHFy\r\n",
            400,
            "16 random",
        ),
    ],
)
async def test_malformed_upgrades_are_refused(
    server: ts.Server, version: str, extra: str, status: int, said: str
) -> None:
    head = (
        f"GET /ws HTTP/{version}\r\nHost: localhost\r\n"
        f"Connection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
    )
    answer = await raw_exchange(server, head.encode())
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert said.encode() in answer, answer


@pytest.mark.parametrize(
    ("host", "connection", "extra", "said"),
    [
        # The WebSocket handshake (wsproto) decodes Host as IDNA: a byte past ASCII in it
        # was a logged traceback and no answer at all (an outside fuzz of the HTTP port).
        ("127.0.0.1:\xb1", "Upgrade", "", "the Host header is not a host name"),
        # ... and these as ASCII (a later outside pass: 2,700 such requests in 5 s wrote
        # 6 MB of tracebacks to the log).
        ("localhost:", "Upgrade", "Sec-WebSocket-Protocol: chat\xff\r\n", "protocol header"),
        ("localhost:", "Upgrade", "Sec-WebSocket-Extensions: a\xe9\r\n", "extensions header"),
        ("localhost:", "Upgrade, keep-alive\xa0", "", "the connection header must be ASCII"),
    ],
)
async def test_an_upgrade_with_a_header_wsproto_cannot_read_is_refused_in_one_line(
    server: ts.Server,
    caplog: pytest.LogCaptureFixture,
    host: str,
    connection: str,
    extra: str,
    said: str,
) -> None:
    head = (
        f"GET /ws HTTP/1.1\r\nHost: {host}{port_of(server)}\r\n"
        f"Connection: {connection}\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    with caplog.at_level(logging.INFO):
        answer = await raw_exchange(server, head.encode("latin-1"))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert said.encode() in answer, answer
    assert "Traceback" not in caplog.text and "ERROR" not in caplog.text


async def test_a_failing_http_connection_is_one_traceback_a_minute_with_a_count(
    server: ts.Server,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A bug that a peer can trigger, it can trigger in a loop: each was a traceback in the
    # log (2,700 requests in 5 s were 6 MB of them).
    async def fails(connection: http.HttpConnection) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(http.HttpConnection, "run", fails)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            await raw_exchange(server, request)
        assert [r.exc_info is not None for r in caplog.records if r.levelno >= logging.ERROR] == [
            True
        ]
        await trio.sleep(http.FAILURES_SAID_EVERY_S)
        await raw_exchange(server, request)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 2 and said[1].endswith("failed (2 more since the last such line)")


async def test_upgrade_elsewhere_than_ws_is_404(server: ts.Server) -> None:
    url = (server.http_url or "").replace("http://", "ws://") + "other"
    with pytest.raises(trio_websocket.ConnectionRejected) as info, trio.fail_after(TIMEOUT_S):
        async with trio_websocket.open_websocket_url(url):
            pass
    assert info.value.status_code == 404


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed"),
    [
        ("http://localhost:9871", "localhost:9871", False, True),
        ("https://localhost:9871", "localhost:9871", False, True),  # behind a TLS proxy
        ("http://example.org", "example.org", False, True),
        ("https://example.org", "example.org", True, True),
        ("http://example.org:80", "example.org", False, True),
        ("http://example.org:8080", "example.org", False, False),
        ("http://localhost:9871", "127.0.0.1:9871", False, False),
        ("file://", "localhost:9871", False, False),
        ("http://[::1]:9871", "[::1]:9871", False, True),
        ("http://x:notaport", "x", False, False),
    ],
)
def test_same_origin_rules(origin: str, host: str, secure: bool, allowed: bool) -> None:
    assert origin_allowed(origin, host, None, secure=secure) is allowed
