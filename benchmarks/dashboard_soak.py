"""Dashboard soak: does the page's memory, its DOM or the server's memory grow over time?

    python benchmarks/dashboard_soak.py                           # 20 minutes, a sample / 30 s
    python benchmarks/dashboard_soak.py --minutes 2 --sample-s 10 --json soak.json
    python benchmarks/dashboard_soak.py --no-heavy                # the demo's channels only
    python benchmarks/dashboard_soak.py --report soak.json --warmup-min 3 --table-every 4

A dashboard left open in a control room runs for days; this watches one for ``--minutes``:

- the server: ``python -m trio_stream demo`` in a child process (its sine, image and counter
  channels), on loopback with free ports;
- with ``--heavy`` (the default) a writer child (this script, ``--writer``) that publishes
  a 1000-sample float64 line at 30 Hz and a 512 x 512 uint8 image at 10 Hz into
  ``soak/line`` and ``soak/image``: the load of the "Dashboard performance" figures;
- the page: headless Chromium (Debian's ``chromium``, driven by playwright; no
  ``playwright install``) opened on a URL fragment with one panel per channel, the line at
  30 Hz, the rest at the panels' default 10 Hz.

Every ``--sample-s`` it forces two full garbage collections in the page
(``HeapProfiler.collectGarbage`` over CDP), so that the figures are what the page keeps, and
records: the JS heap in use and the ArrayBuffer backing stores (``Runtime.getHeapUsage``: frames
are typed arrays, whose bytes live outside the JS heap), the live DOM nodes, event listeners
and documents (``Performance.getMetrics``), the elements in the document, the frames plotted
and lost, the server's RSS and the Chromium renderer's (``/proc/PID/status`` VmRSS; the
page's renderer is the largest ``--type=renderer`` process below this one that is not
Chromium's own UI).

It prints a table of the samples and a least-squares slope per hour of each figure, over all
samples and over those after ``--warmup-min`` (the page's windows fill first: the load
sparklines keep 300 one-second samples, a scalar series 60 s). A slope that is not about 0 once
the windows are full, by more than about twice its standard error (printed beside it), is a
leak. ``--json PATH`` writes the samples and the slopes; ``--report PATH`` prints a saved run
again (another warm-up, fewer rows).

The run is bounded: it stops after ``--minutes``, and a watchdog kills everything if a step
hangs. The children are killed on exit, on Ctrl-C and on SIGTERM, and by the kernel
(``PR_SET_PDEATHSIG``) if this process itself is killed; the browser goes with playwright's
driver. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime
import json
import math
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Final

from playwright.sync_api import CDPSession, Page, ViewportSize, sync_playwright

ROOT: Final = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
VIEWPORT: Final[ViewportSize] = {"width": 1400, "height": 900}
STEP_TIMEOUT_MS: Final = 30_000  # each browser step; the machine is shared, so generous
START_TIMEOUT_S: Final = 30.0  # the demo server's and the writer's start-up
WATCHDOG_MARGIN_S: Final = 180.0  # past the planned end: something hangs, kill it all
STOP_GRACE_S: Final = 5.0  # a child's time to stop on SIGINT before it is killed

# Loopback and free ports: several runs (and other work) can share the machine.
DEMO_ARGS: Final = ["--host", "127.0.0.1", "--tcp-port", "0", "--http-port", "0", "--name", "soak"]
DEMO_CHANNELS: Final = ("demo/sine", "demo/image", "demo/counter")
LINE_CHANNEL: Final = "soak/line"
IMAGE_CHANNEL: Final = "soak/image"
LINE_HZ: Final = 30.0
IMAGE_HZ: Final = 10.0
LINE_SAMPLES: Final = 1000
IMAGE_SIDE: Final = 512

MIB: Final = 2**20
_PR_SET_PDEATHSIG: Final = 1  # from <linux/prctl.h>


# -- the writer (child process) ---------------------------------------------------------------
def run_writer(url: str) -> None:
    """Publish the heavy channels until killed: the page's real load."""
    import numpy as np
    import trio

    import trio_stream as ts

    x = np.linspace(0.0, 20 * math.pi, LINE_SAMPLES)
    y, xx = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE]
    # Computed once: a 512 x 512 image per frame from scratch would take a share of the two
    # cores from the page being measured. uint8 addition wraps, so the pattern moves.
    base = ((xx + y) % 256).astype(np.uint8)

    def line(n: int) -> object:
        return np.sin(x + 0.2 * n)

    def image(n: int) -> object:
        return base + np.uint8((8 * n) % 256)

    async def write(
        client: ts.Client, channel: str, rate_hz: float, make: Callable[[int], object]
    ) -> None:
        async with client.publisher(channel) as pub:
            n = 0
            next_at = trio.current_time()
            while True:
                await pub.send(make(n))
                n += 1
                # Deadlines from the clock, not sleeps in a row: no drift below the rate.
                next_at = max(next_at + 1 / rate_hz, trio.current_time() - 1 / rate_hz)
                await trio.sleep_until(next_at)

    async def main() -> None:
        async with (
            ts.open_client(url, name="soak-writer") as client,
            trio.open_nursery() as nursery,
        ):
            await client.create_channel(LINE_CHANNEL, meta={"units": "V"})
            await client.create_channel(IMAGE_CHANNEL, meta={"units": "counts"})
            print("ready", flush=True)
            nursery.start_soon(write, client, LINE_CHANNEL, LINE_HZ, line)
            nursery.start_soon(write, client, IMAGE_CHANNEL, IMAGE_HZ, image)

    trio.run(main)


# -- child processes --------------------------------------------------------------------------
def exec_with_parent(argv: list[str]) -> None:
    """Become ``argv`` (same pid), to be SIGKILLed when this script dies, even by SIGKILL.

    The death signal is set here rather than in a ``preexec_fn``, which is unsafe once threads
    run (the children's pipe readers are threads); it survives the exec.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the signal was set
        raise SystemExit(1)
    os.execv(argv[0], argv)


class Child:
    """A child process whose stdout is read by a thread (a full pipe would stall it)."""

    def __init__(self, argv: list[str], what: str) -> None:
        self.what = what
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: list[str] = []  # its last lines, for an error message
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--exec-with-parent", *argv],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own session: Ctrl-C reaches this script only, which stops the children in
            # order (a server that stops first would make the page log errors).
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail = [*self.tail[-19:], line.rstrip()]
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise RuntimeError(
                    f"the {self.what} did not start (no {pattern!r}):\n" + "\n".join(self.tail)
                )
            with contextlib.suppress(queue.Empty):
                match = re.search(pattern, self.lines.get(timeout=min(left, 0.5)))
                if match:
                    return match

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the {self.what} exited ({self.process.returncode}):\n" + "\n".join(self.tail)
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the demo server stops cleanly on it
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- /proc ------------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid``, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc/*/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields after its end.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    """The arguments of ``pid``. Chromium's zygote children rewrite theirs into one string
    (setproctitle): split on spaces too."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").replace("\0", " ").split()
    except OSError:
        return []


def browser_rss() -> tuple[int, int, int, int]:
    """(the page's renderer's RSS and pid, the renderers, every Chromium process's RSS summed).

    Found from this process down (playwright's driver, then Chromium): other users' browsers
    on a shared machine are not ours. Chromium runs a renderer for its own UI
    (--top-chrome-webui) and may keep a spare one ready; the page's is the largest of the
    others (the pid is recorded, to see that it stayed the same).
    """
    largest = pid_of_largest = renderers = total = 0
    for pid in descendants(os.getpid()):
        args = cmdline(pid)
        if not args or "chrom" not in os.path.basename(args[0]):
            continue
        rss = rss_bytes(pid)
        total += rss
        if "--type=renderer" in args:
            renderers += 1
            if "--top-chrome-webui" not in args and rss > largest:
                largest, pid_of_largest = rss, pid
    return largest, pid_of_largest, renderers, total


# -- the samples ------------------------------------------------------------------------------
@dataclasses.dataclass
class Sample:
    t_s: float  # since the first sample
    heap_used: int  # JS heap in use after the forced collections, bytes
    heap_total: int
    array_buffers: int  # ArrayBuffer backing stores (typed arrays' bytes), 0 if not reported
    nodes: int  # live DOM nodes, attached or not (Blink's counter)
    elements: int  # elements in the document
    listeners: int
    documents: int
    frames_plotted: int
    lost: int  # frames the server dropped for the panels (their subscriptions' counts)
    panel_frames: list[int]
    server_rss: int
    renderer_rss: int
    renderer_pid: int
    renderers: int
    chromium_rss: int
    sampling_s: float  # what taking this sample took (the collections mostly)


PAGE_JS: Final = """() => ({
  framesPlotted: window.__tsDashboard.framesPlotted,
  connected: window.__tsDashboard.connected,
  elements: document.getElementsByTagName('*').length,
  panelFrames: window.__tsPanels.map((p) => p.frames),
  lost: window.__tsPanels.reduce((n, p) =>
    n + [...p.subs.values()].reduce((m, s) => m + (s.sub ? s.sub.lost : 0), 0), 0),
})"""

# Every panel has plotted a few frames: the run starts from a page that works.
PANELS_LIVE_JS: Final = """n => window.__tsDashboard && window.__tsDashboard.connected
  && window.__tsPanels.length === n && window.__tsPanels.every((p) => p.frames > 2)"""


def take_sample(page: Page, cdp: CDPSession, server_pid: int, t_s: float) -> Sample:
    started = time.monotonic()
    timeout = STEP_TIMEOUT_MS
    # Twice: objects with finalizers or weak callbacks are freed by the second collection.
    for _ in range(2):
        cdp.send("HeapProfiler.collectGarbage", timeout=timeout)
    heap = cdp.send("Runtime.getHeapUsage", timeout=timeout)
    metrics = {
        m["name"]: m["value"]
        for m in cdp.send("Performance.getMetrics", timeout=timeout)["metrics"]
    }
    seen = page.evaluate(PAGE_JS)
    if not seen["connected"]:
        print(f"  the page is not connected at {t_s:.0f} s", file=sys.stderr)
    renderer, renderer_pid, renderers, chromium = browser_rss()
    return Sample(
        t_s=t_s,
        heap_used=int(heap["usedSize"]),
        heap_total=int(heap["totalSize"]),
        array_buffers=int(heap.get("backingStorageSize", 0)),
        nodes=int(metrics["Nodes"]),
        elements=int(seen["elements"]),
        listeners=int(metrics["JSEventListeners"]),
        documents=int(metrics["Documents"]),
        frames_plotted=int(seen["framesPlotted"]),
        lost=int(seen["lost"]),
        panel_frames=[int(n) for n in seen["panelFrames"]],
        server_rss=rss_bytes(server_pid),
        renderer_rss=renderer,
        renderer_pid=renderer_pid,
        renderers=renderers,
        chromium_rss=chromium,
        sampling_s=time.monotonic() - started,
    )


# What the slopes are taken of: (label, field, scale to the unit shown).
SLOPED: Final[list[tuple[str, str, float]]] = [
    ("JS heap, MiB", "heap_used", 1 / MIB),
    ("ArrayBuffers, MiB", "array_buffers", 1 / MIB),
    ("DOM nodes", "nodes", 1.0),
    ("listeners", "listeners", 1.0),
    ("server RSS, MiB", "server_rss", 1 / MIB),
    ("renderer RSS, MiB", "renderer_rss", 1 / MIB),
]


def slope_per_hour(samples: list[Sample], field: str, scale: float) -> tuple[float, float] | None:
    """Least-squares slope of ``field`` (times ``scale``) per hour and its standard error.

    None below 3 samples. The standard error says whether a slope is more than the samples'
    scatter: a slope within about two of them is no evidence of growth.
    """
    if len(samples) < 3:
        return None
    hours = [s.t_s / 3600 for s in samples]
    values = [getattr(s, field) * scale for s in samples]
    fit = statistics.linear_regression(hours, values)
    residuals = [v - (fit.slope * h + fit.intercept) for h, v in zip(hours, values, strict=True)]
    mean_h = statistics.fmean(hours)
    spread = sum((h - mean_h) ** 2 for h in hours)
    error = math.sqrt(sum(r * r for r in residuals) / (len(samples) - 2) / spread)
    return fit.slope, error


def slopes(
    samples: list[Sample], warmup_s: float
) -> dict[str, dict[str, tuple[float, float] | None]]:
    late = [s for s in samples if s.t_s >= warmup_s]
    return {
        label: {
            "all": slope_per_hour(samples, field, scale),
            "after_warmup": slope_per_hour(late, field, scale),
        }
        for label, field, scale in SLOPED
    }


def row(sample: Sample, previous: Sample | None) -> str:
    rate = "–"
    if previous is not None and sample.t_s > previous.t_s:
        frames = sample.frames_plotted - previous.frames_plotted
        rate = f"{frames / (sample.t_s - previous.t_s):.1f}"
    return (
        f"| {sample.t_s / 60:.1f} | {sample.heap_used / MIB:.2f} "
        f"| {sample.array_buffers / MIB:.2f} | {sample.nodes} | {sample.elements} "
        f"| {sample.listeners} | {sample.documents} "
        f"| {sample.frames_plotted} | {rate} | {sample.lost} | {sample.server_rss / MIB:.1f} "
        f"| {sample.renderer_rss / MIB:.1f} |"
    )


HEADER: Final = (
    "| min | JS heap MiB | ArrayBuffers MiB | DOM nodes | elements | listeners | documents "
    "| frames plotted | frames/s | lost | server RSS MiB | renderer RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def report(samples: list[Sample], warmup_s: float, every: int = 1) -> str:
    lines = [HEADER]
    previous = None
    for k, sample in enumerate(samples):
        if k % every == 0 or k == len(samples) - 1:
            # frames/s since the previous row shown
            lines.append(row(sample, previous))
            previous = sample
    lines.append("")
    lines.append(
        "least-squares slope per hour ± its standard error "
        f"(all samples / from minute {warmup_s / 60:g}):"
    )
    for label, slope in slopes(samples, warmup_s).items():
        shown = [f"{v[0]:+.3g} ± {v[1]:.2g}" if v is not None else "–" for v in slope.values()]
        lines.append(f"  {label:<18} {shown[0]:>16} / {shown[1]:>16}")
    first, last = samples[0], samples[-1]
    lines.append(
        f"first sample: heap {first.heap_used / MIB:.2f} MiB, nodes {first.nodes}, listeners "
        f"{first.listeners}, server RSS {first.server_rss / MIB:.1f} MiB, renderer RSS "
        f"{first.renderer_rss / MIB:.1f} MiB"
    )
    lines.append(
        f"last sample ({last.t_s / 60:.1f} min): heap {last.heap_used / MIB:.2f} MiB, nodes "
        f"{last.nodes}, listeners {last.listeners}, server RSS {last.server_rss / MIB:.1f} MiB, "
        f"renderer RSS {last.renderer_rss / MIB:.1f} MiB"
    )
    pids = sorted({s.renderer_pid for s in samples})
    if len(pids) > 1:
        lines.append(f"the page's renderer changed during the run (pids {pids}): its RSS jumps")
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------
def fragment(heavy: bool) -> str:
    """One panel per channel (layout.js: ';' between panels, '~r=' a panel's rate)."""
    rates = {LINE_CHANNEL: f"~r={LINE_HZ:g}"}  # the others keep the default 10 Hz
    names = [LINE_CHANNEL, IMAGE_CHANNEL, *DEMO_CHANNELS] if heavy else list(DEMO_CHANNELS)
    return "#" + ";".join(n.replace("/", "%2F") + rates.get(n, "") for n in names)


class Terminated(Exception):
    """SIGTERM came."""


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the children.
    raise Terminated(signum)


@contextlib.contextmanager
def watchdog(limit_s: float, children: list[Child]) -> Iterator[None]:
    """Kill the children and this process if the run is still going at ``limit_s``."""

    def fire() -> None:
        print(f"watchdog: still running after {limit_s:.0f} s, killing it", file=sys.stderr)
        for child in children:
            with contextlib.suppress(OSError):
                child.process.kill()
        os._exit(3)  # playwright's driver sees its pipe close and takes the browser down

    timer = threading.Timer(limit_s, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def soak(args: argparse.Namespace, children: list[Child], samples: list[Sample]) -> list[str]:
    """Run the page for ``--minutes``, appending to ``samples``; the page's errors."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is missing: apt-get install chromium")
    python = sys.executable
    server = Child([python, "-m", "trio_stream", "demo", *DEMO_ARGS], "demo server")
    children.append(server)
    tcp_url = server.wait_for(r"TCP:\s+(tcp://\S+)", START_TIMEOUT_S)[1]
    http_url = server.wait_for(r"dashboard:\s+(http://\S+)", START_TIMEOUT_S)[1]
    if args.heavy:
        writer = Child([python, __file__, "--writer", tcp_url], "writer")
        children.append(writer)
        writer.wait_for(r"^ready", START_TIMEOUT_S)
    url = http_url.rstrip("/") + "/" + fragment(args.heavy)
    print(f"dashboard: {url}", file=sys.stderr)

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=STEP_TIMEOUT_MS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            panels = len(DEMO_CHANNELS) + (2 if args.heavy else 0)
            # A function, not an expression: the page's CSP refuses playwright's eval polling.
            page.wait_for_function(PANELS_LIVE_JS, arg=panels)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            count = max(1, math.floor(args.minutes * 60 / args.sample_s)) + 1
            started = time.monotonic()
            for k in range(count):
                # Samples on a fixed schedule from the start: one slow sample delays none after.
                page.wait_for_timeout(
                    max(0.0, started + k * args.sample_s - time.monotonic()) * 1e3
                )
                for child in children:
                    child.check_alive()
                sample = take_sample(page, cdp, server.process.pid, time.monotonic() - started)
                print(row(sample, samples[-1] if samples else None), file=sys.stderr)
                samples.append(sample)
        finally:
            browser.close()
    return errors


def main() -> None:
    if sys.argv[1:2] == ["--exec-with-parent"]:  # a child's first step (Child), before argparse
        exec_with_parent(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument(
        "--warmup-min",
        type=float,
        default=5.0,
        help="the second slope starts here (the load sparklines fill in 5 minutes)",
    )
    parser.add_argument(
        "--heavy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a 30 Hz 1000-sample line and a 10 Hz 512 x 512 image (default: on)",
    )
    parser.add_argument("--json", help="also write the samples and slopes to this file")
    parser.add_argument(
        "--report",
        metavar="JSON",
        help="run nothing: print the table and slopes of a run saved with --json "
        "(with this --warmup-min and --table-every)",
    )
    parser.add_argument(
        "--table-every", type=int, default=1, help="the table shows every Nth sample (and the last)"
    )
    parser.add_argument("--writer", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        run_writer(args.writer)
        return
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        print(saved["command"])
        loaded = [Sample(**s) for s in saved["samples"]]
        print(report(loaded, args.warmup_min * 60, args.table_every))
        return
    signal.signal(signal.SIGTERM, _terminate)
    children: list[Child] = []
    samples: list[Sample] = []
    errors: list[str] = []
    limit_s = START_TIMEOUT_S * 2 + args.minutes * 60 + WATCHDOG_MARGIN_S
    interrupted: BaseException | None = None
    try:
        with watchdog(limit_s, children):
            errors = soak(args, children, samples)
    except (KeyboardInterrupt, Terminated) as exc:
        interrupted = exc  # the samples so far are still worth printing
    finally:
        # The page is closed by now: the writer, then the server (in reverse of start).
        for child in reversed(children):
            child.stop()
    if not samples:
        raise SystemExit("interrupted before the first sample")
    if interrupted:
        print(f"interrupted after {samples[-1].t_s / 60:.1f} minutes", file=sys.stderr)
    print(report(samples, args.warmup_min * 60, args.table_every))
    if errors:
        print(f"the page logged {len(errors)} error(s); the first: {errors[:3]}")
    if args.json:
        result = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "args": vars(args),
            "fragment": fragment(args.heavy),
            "samples": [dataclasses.asdict(s) for s in samples],
            "slopes": slopes(samples, args.warmup_min * 60),
            "page_errors": errors,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if interrupted:
        raise SystemExit(130)


if __name__ == "__main__":
    main()
