"""The dashboard in a real browser: headless Chromium against an in-process server.

A Python writer publishes a sine wave (1-D arrays at 20 Hz), a scalar and a 2-D image; the test
opens the dashboard, picks each channel and checks that frames reach the plot, that the canvas
shows something, and that the page logged no error. Screenshots are kept under
``test-artifacts/`` (printed, and named in assertion messages) for a person to look at.

Playwright's sync API runs in a worker thread: it brings its own event loop, and trio keeps
serving the page and running the writers meanwhile. Chromium is Debian's package
(``shutil.which("chromium")``); ``playwright install`` is never used. A missing browser fails
the test rather than skipping it: CI installs Chromium, and a skip would hide a broken dashboard.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest
import trio
from playwright.sync_api import ConsoleMessage, Error, Page, ViewportSize, sync_playwright

import trio_stream as ts

ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
VIEWPORT: Final[ViewportSize] = {"width": 1400, "height": 900}
STEP_TIMEOUT_MS: Final = 15_000  # each browser step: load, wait for a row, wait for frames
TEST_TIMEOUT_S: Final = 120.0  # the whole test, browser start included
FAILURE_SHOT: Final = ARTIFACTS / "dashboard-failure.png"

SINE: Final = "lab/sine"
SCALAR: Final = "lab/temperature"
IMAGE: Final = "lab/camera"
SINE_RATE_HZ: Final = 20.0
SCALAR_RATE_HZ: Final = 10.0
IMAGE_RATE_HZ: Final = 5.0
SINE_SAMPLES: Final = 500
IMAGE_SHAPE: Final = (48, 64)  # rows, columns


def sine_frame(n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    x = np.linspace(0.0, 4 * math.pi, SINE_SAMPLES)
    return np.sin(x + 0.3 * n)


def scalar_frame(n: int) -> float:
    return 21.5 + 0.5 * math.sin(n / 10)


def image_frame(n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    y, x = np.mgrid[0 : IMAGE_SHAPE[0], 0 : IMAGE_SHAPE[1]].astype(np.float64)
    image: np.ndarray[Any, np.dtype[np.float64]] = np.sin(x / 5 + 0.4 * n) * np.cos(y / 7)
    return image


async def write(
    client: ts.Client, channel: str, rate_hz: float, make: Callable[[int], object]
) -> None:
    """Publish ``make(n)`` at ``rate_hz`` forever (nothing goes on the wire without readers)."""
    async with client.publisher(channel) as pub:
        n = 0
        while True:
            await pub.send(make(n))
            n += 1
            await trio.sleep(1 / rate_hz)


@dataclass
class BrowserReport:
    """What the browser thread saw; asserted on by the trio side."""

    frames: dict[str, tuple[int, int]] = field(default_factory=dict)  # channel: (first, later)
    colours: dict[str, int] = field(default_factory=dict)  # channel: distinct canvas colours
    selected: dict[str, str | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # console errors and page errors
    screenshots: list[Path] = field(default_factory=list)


# Distinct colours on the plot canvas, sampled on a grid: a blank or cleared canvas has one or
# two (background, frame), a drawn line or image many more.
CANVAS_COLOURS_JS: Final = """() => {
  const c = document.getElementById('plot');
  const ctx = c.getContext('2d');
  const data = ctx.getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  for (let y = 0; y < c.height; y += 3) {
    for (let x = 0; x < c.width; x += 3) {
      const o = (y * c.width + x) * 4;
      seen.add((data[o] << 16) | (data[o + 1] << 8) | data[o + 2]);
    }
  }
  return seen.size;
}"""


# The channel table's Frames/s cell of a channel shows a live rate (refreshed once a second).
ROW_HAS_RATE_JS: Final = """c => {
  const rows = [...document.querySelectorAll('tr[data-channel]')];
  const row = rows.find((r) => r.dataset.channel === c);
  const cell = row && row.children[4];
  return !!cell && !['', '0', '–'].includes(cell.textContent.trim());
}"""


def drive_dashboard(url: str, chromium: str, shots: dict[str, Path]) -> BrowserReport:
    """Open the dashboard, plot each channel of ``shots`` in turn (a screenshot each).

    A step that fails leaves ``FAILURE_SHOT`` and raises with the page's errors so far.
    """
    report = BrowserReport()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            report.errors.append(f"console.error: {message.text}")

    def on_page_error(error: Error) -> None:
        report.errors.append(f"page error: {error}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=STEP_TIMEOUT_MS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            try:
                page.goto(url)
                page.wait_for_function("window.__tsDashboard && window.__tsDashboard.connected")
                for channel, shot in shots.items():
                    row = page.locator(f'tr[data-channel="{channel}"]')
                    row.wait_for(state="visible")
                    row.click()
                    page.wait_for_function("c => window.__tsDashboard.selected === c", arg=channel)
                    first = _frames_after(page, 0)
                    later = _frames_after(page, first)
                    page.wait_for_function(ROW_HAS_RATE_JS, arg=channel)
                    report.frames[channel] = (first, later)
                    report.selected[channel] = page.evaluate("window.__tsDashboard.selected")
                    report.colours[channel] = page.evaluate(CANVAS_COLOURS_JS)
                    page.screenshot(path=str(shot), full_page=True)
                    report.screenshots.append(shot)
            except Exception as exc:
                page.screenshot(path=str(FAILURE_SHOT), full_page=True)
                print(f"dashboard screenshot: {FAILURE_SHOT}")
                raise AssertionError(
                    f"{exc}\nscreenshot: {FAILURE_SHOT}\npage errors: {report.errors}"
                ) from exc
        finally:
            browser.close()
    return report


def _frames_after(page: Page, count: int) -> int:
    """Wait until the dashboard has plotted more than ``count`` frames; the new count."""
    page.wait_for_function("n => window.__tsDashboard.framesPlotted > n", arg=count)
    frames: int = page.evaluate("window.__tsDashboard.framesPlotted")
    return frames


async def test_dashboard_plots_live_channels_in_headless_chromium() -> None:
    # A missing browser fails the test (not a skip, not a fixture error): CI installs it.
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "Chromium is missing: the dashboard browser test needs Debian's chromium "
            "(apt-get install chromium). It is not skipped, so that CI cannot pass with a "
            "dashboard nobody has looked at."
        )
    ARTIFACTS.mkdir(exist_ok=True)
    shots = {SINE: ARTIFACTS / "dashboard.png", IMAGE: ARTIFACTS / "dashboard-image.png"}
    shots_and_scalar = {**shots, SCALAR: ARTIFACTS / "dashboard-scalar.png"}
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0)
    with trio.fail_after(TEST_TIMEOUT_S):
        async with ts.open_server(config) as server:
            assert server.tcp_url is not None and server.http_url is not None
            async with (
                ts.open_client(server.tcp_url, name="lab-writer") as client,
                trio.open_nursery() as writers,
            ):
                for channel in (SINE, SCALAR, IMAGE):
                    await client.create_channel(channel)
                writers.start_soon(write, client, SINE, SINE_RATE_HZ, sine_frame)
                writers.start_soon(write, client, SCALAR, SCALAR_RATE_HZ, scalar_frame)
                writers.start_soon(write, client, IMAGE, IMAGE_RATE_HZ, image_frame)
                # Not abandoned on cancel: every browser step has its own timeout, and the
                # browser must be closed before the server goes.
                report = await trio.to_thread.run_sync(
                    drive_dashboard, server.http_url, chromium, shots_and_scalar
                )
                writers.cancel_scope.cancel()

    for path in report.screenshots:
        print(f"dashboard screenshot: {path}")
    where = f"(screenshots: {', '.join(str(p) for p in report.screenshots)})"
    assert not report.errors, f"the dashboard logged errors {where}:\n" + "\n".join(report.errors)
    for channel in shots_and_scalar:
        first, later = report.frames[channel]
        assert later > first, f"{channel}: plotted frames did not grow ({first}) {where}"
        assert report.selected[channel] == channel, f"{channel} not selected {where}"
        # axes, labels and a line or an image: far more than a blank canvas' few colours
        assert report.colours[channel] > 8, f"{channel}: the plot looks empty {where}"
    for path in shots.values():
        assert path.is_file(), f"no screenshot at {path} {where}"
