"""Pages in headless Chromium beyond the plain dashboard (see test_dashboard_browser.py):

- the dashboard of a server that has a token asks for it, refuses a wrong one, and works with
  the right one;
- the README's "Your own page" example, copied verbatim from README.md, runs from another web
  server (another origin, let in with ``allowed_origins``) and shows a live value.

Chromium is Debian's (``shutil.which("chromium")``); a missing browser fails, as in
test_dashboard_browser.py.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest
import trio
from playwright.sync_api import ConsoleMessage, Error, Page, expect, sync_playwright

import trio_stream as ts
from trio_stream._transport.web_files import web_root

ROOT: Final = Path(__file__).resolve().parents[1]
ARTIFACTS: Final = ROOT / "test-artifacts"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
STEP_TIMEOUT_MS: Final = 15_000
TEST_TIMEOUT_S: Final = 120.0
TOKEN: Final = "lab-token-4711"


def chromium_path() -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is missing: apt-get install chromium (CI installs it)")
    return chromium


def in_browser(chromium: str, url: str, steps: Callable[[Page], None], shot: Path) -> list[str]:
    """Open ``url``, run ``steps``; the page's errors. A failing step leaves ``shot``."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console.error: {message.text}")

    def on_page_error(error: Error) -> None:
        errors.append(f"page error: {error}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=STEP_TIMEOUT_MS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            page.goto(url)
            try:
                steps(page)
            finally:
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot}")
        finally:
            browser.close()
    return errors


async def count_forever(client: ts.Client, channel: str, rate_hz: float) -> None:
    async with client.publisher(channel) as pub:
        n = 0
        while True:
            await pub.send(n)
            n += 1
            await trio.sleep(1 / rate_hz)


# -- the dashboard of a server with a token -------------------------------------------------------
def enter_tokens(page: Page) -> None:
    # Locators only (no wait_for_function): the page's CSP forbids eval, and the page reloads.
    form = page.locator("#token-form")
    expect(form).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "closed")
    # Nothing said of channels it cannot know yet (it said "No channels yet.").
    expect(page.locator("#channels-empty")).to_be_hidden()
    page.fill("#token-input", "a wrong guess")
    page.click("#token-form button")
    expect(page.locator("#token-label")).to_contain_text("another token")
    expect(page.locator("#notice")).to_contain_text("refused")
    expect(form).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.press("#token-input", "Enter")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator('tr[data-channel="lab/counter"]')).to_be_visible()
    expect(form).to_be_hidden()
    assert TOKEN not in page.url  # kept in the tab's session storage, not in the address


async def test_dashboard_asks_for_the_token_of_a_server_that_has_one() -> None:
    chromium = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, token=TOKEN)
    with trio.fail_after(TEST_TIMEOUT_S):
        async with ts.open_server(config) as server:
            assert server.tcp_url and server.http_url
            async with ts.open_client(server.tcp_url, name="lab", token=TOKEN) as client:
                await client.create_channel("lab/counter")
                errors = await trio.to_thread.run_sync(
                    in_browser,
                    chromium,
                    server.http_url,
                    enter_tokens,
                    ARTIFACTS / "dashboard-token.png",
                )
    assert not errors, errors


async def test_a_wall_dashboard_tries_its_token_again_after_a_restart_refused_it() -> None:
    # A server restarted for a moment with another token: the page stayed on "refused" until
    # someone typed the token again, and its panels gave a program's advice (open_client...).
    chromium = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, token=TOKEN)
    async with trio.open_nursery() as nursery:
        servers = [await nursery.start(ts.serve, config)]
        url = servers[0].http_url
        assert url is not None
        port = int(url.rsplit(":", 1)[1].split("/")[0])

        async def restart(token: str) -> None:
            await servers[-1].aclose()
            again = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=port, token=token)
            servers.append(await nursery.start(ts.serve, again))

        def steps(page: Page) -> None:
            page.fill("#token-input", TOKEN)
            page.press("#token-input", "Enter")
            expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            trio.from_thread.run(restart, "another-token-0815")
            trying = (
                "The server refused this token, which it took before (restarted with another?); "
                "trying it again every 10 s."
            )
            expect(page.locator("#notice")).to_contain_text(trying, timeout=STEP_TIMEOUT_MS)
            # Its first try is refused too (a reload): it goes on trying (it gave up after
            # one try: a review).
            page.wait_for_event("load", timeout=STEP_TIMEOUT_MS)
            expect(page.locator("#notice")).to_contain_text(trying, timeout=STEP_TIMEOUT_MS)
            trio.from_thread.run(restart, TOKEN)
            # Its next try (a reload) connects: within the 10 s retry and the page's start.
            expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=25_000)
            expect(page.locator("#token-form")).to_be_hidden()

        with trio.fail_after(TEST_TIMEOUT_S):
            errors = await trio.to_thread.run_sync(
                in_browser, chromium, url, steps, ARTIFACTS / "dashboard-token-again.png"
            )
        await servers[-1].aclose()
    # (A refused connection is logged by the browser as an error: those are not the page's.)
    assert not [e for e in errors if "refused" not in e and "WebSocket" not in e], errors


# -- the README's own-page example ----------------------------------------------------------------
def readme_block(start: str) -> str:
    """The fenced block of README.md whose first line is ``start``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```\w*\n(" + re.escape(start) + r"\n.*?)```", readme, re.S)
    assert match, f"README.md has no code block starting with {start!r}"
    return match.group(1)


class StaticSite:
    """A minimal web server for a few files (the user's own web server in the README)."""

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        self.files = files

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode().partition("?")[0]
            body, content_type = self.files.get(path, (b"not found", "text/plain"))
            status = "200 OK" if path in self.files else "404 Not Found"
            await stream.send_all(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )


def watch_latest_value(page: Page) -> None:
    value = page.locator("#value")
    expect(value).to_have_text(re.compile(r"^\d+ \(seq \d+\)$"))
    expect(value).not_to_have_text(value.inner_text())  # it keeps changing


async def test_readme_own_page_example_runs_from_another_web_server(
    nursery: trio.Nursery,
) -> None:
    chromium = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    html = readme_block("<!-- latest.html -->")
    js = readme_block("// latest.js")
    readme_url = re.search(r"connect\('(ws://[^']+)'\)", js)
    assert readme_url, "the example connects to the trio_stream server by URL"
    web = web_root()
    files = {
        "/latest.html": (html.encode(), "text/html; charset=utf-8"),
        "/trio_stream.js": ((web / "trio_stream.js").read_bytes(), "text/javascript"),
        "/cbor.js": ((web / "cbor.js").read_bytes(), "text/javascript"),
        "/favicon.ico": ((web / "favicon.svg").read_bytes(), "image/svg+xml"),  # asked anyway
    }
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, StaticSite(files).handle, 0, host="127.0.0.1")
    )
    site = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, allowed_origins=(site,))
    with trio.fail_after(TEST_TIMEOUT_S):
        async with ts.open_server(config) as server:
            assert server.tcp_url and server.ws_url
            # The one change: this server's port instead of the README's 9871.
            files["/latest.js"] = (
                js.replace(readme_url.group(1), server.ws_url).encode(),
                "text/javascript",
            )
            async with (
                ts.open_client(server.tcp_url, name="demo") as client,
                trio.open_nursery() as writers,
            ):
                await client.create_channel("demo/counter")
                writers.start_soon(count_forever, client, "demo/counter", 10.0)
                errors = await trio.to_thread.run_sync(
                    in_browser,
                    chromium,
                    f"{site}/latest.html",
                    watch_latest_value,
                    ARTIFACTS / "readme-own-page.png",
                )
                writers.cancel_scope.cancel()
    assert not errors, errors
