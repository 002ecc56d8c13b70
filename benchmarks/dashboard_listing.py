"""What an open dashboard costs a server of many channels: its CPU while the page lists them.

    python benchmarks/dashboard_listing.py                              # 100,000 channels
    python benchmarks/dashboard_listing.py --channels 25000 --src /tmp/base --src .

For each source tree (``--src``, default this one) a child process (its ``PYTHONPATH`` the
tree) runs the server of the dashboard's browser test (this repository's
``tests/js/many_channels_server.py``) with ``--channels`` public channels, made in its
broker directly, which counts the ``channels`` listings it answers. Headless Chromium
(Debian's ``chromium``, driven by playwright; no ``playwright install``) opens the tree's
dashboard; after ``--warmup-s`` the server's CPU time (``/proc/PID/stat``) and its
listings are counted over ``--window-s``; before the page opens, the server's CPU alone
over 10 s. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE_WINDOW_S = 10.0

# The server of the dashboard's browser test (its channels made in the broker, its
# listings counted), run with each tree's trio_stream (PYTHONPATH).
SERVER_SCRIPT = REPO_ROOT / "tests" / "js" / "many_channels_server.py"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(tree: str, channels: int, warmup_s: float, window_s: float) -> None:
    env = {**os.environ, "PYTHONPATH": tree}
    server = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), str(channels)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["dashboard"]
        listings = 0

        def read_listings() -> None:
            nonlocal listings
            assert server.stdout is not None
            for line in server.stdout:
                listings = json.loads(line).get("listings", listings)

        threading.Thread(target=read_listings, daemon=True).start()
        # The server's own CPU first, with no page open (its housekeeping walks every
        # channel's rates once a second).
        idle = cpu_seconds(server.pid)
        time.sleep(IDLE_WINDOW_S)
        idle = cpu_seconds(server.pid) - idle
        print(
            f"  server CPU with no page: {100 * idle / IDLE_WINDOW_S:.1f} % of a core", flush=True
        )
        chromium = shutil.which("chromium")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            time.sleep(warmup_s)
            cpu, listed, started = cpu_seconds(server.pid), listings, time.monotonic()
            time.sleep(window_s)
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(server.pid) - cpu
            listed = listings - listed
            count = page.eval_on_selector("#channels-count", "el => el.textContent")
            rows = page.eval_on_selector_all("#channels-body tr", "rows => rows.length")
            browser.close()
        print(
            f"  server CPU {100 * cpu / elapsed:.1f} % of a core over {elapsed:.0f} s, "
            f"{listed} listings; the page shows {rows} rows, count {count!r}",
            flush=True,
        )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--warmup-s", type=float, default=20.0)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--src", action="append", help="a source tree (repeatable)")
    args = parser.parse_args()
    for src in args.src or [str(REPO_ROOT)]:
        tree = str(Path(src).resolve())
        print(f"{tree}: a dashboard on {args.channels:,} channels", flush=True)
        measure(tree, args.channels, args.warmup_s, args.window_s)


if __name__ == "__main__":
    main()
