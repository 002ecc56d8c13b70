"""Command line: run the chosen scenarios on the chosen systems, print the table."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import systems
from benchmarks.orchestrate import Outcome, run_case
from benchmarks.report import CaseRecord, markdown_table, write_json
from benchmarks.scenarios import SCENARIOS, build_cases
from benchmarks.systems.base import System


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="trio_stream against Redis pub/sub and NATS on loopback.",
    )
    parser.add_argument(
        "--systems",
        type=_csv,
        default=list(systems.NAMES),
        help=f"comma-separated, from {','.join(systems.NAMES)} (default: all)",
    )
    parser.add_argument(
        "--scenarios",
        type=_csv,
        default=list(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; median reported")
    parser.add_argument("--quick", action="store_true", help="shorter warm-up and windows")
    parser.add_argument(
        "--payload-only",
        action="store_true",
        help="peers move raw bytes without cbor2 (trio_stream gets a bytes value)",
    )
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    args = parser.parse_args(argv)
    if unknown := set(args.systems) - set(systems.NAMES):
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return out.stdout.strip() or out.stderr.strip()


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "python": platform.python_version(),
        "versions": {
            "redis-server": _version(["redis-server", "--version"]),
            "nats-server": _version(["nats-server", "--version"]),
            **{p: _package(p) for p in ("redis", "hiredis", "nats-py", "trio", "cbor2", "numpy")},
        },
    }


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM would end the process without running finally blocks: servers and workers
    # would outlive us. As SystemExit it unwinds through them.
    raise SystemExit(128 + signum)


def _progress(system: str, case: str, run: str, outcome: Outcome) -> None:
    figures = ", ".join(f"{k}={v:,.3f}" for k, v in (outcome.figures or {}).items())
    notes = f" ({'; '.join(outcome.notes)})" if outcome.notes else ""
    print(f"[{system}] {case} run {run}: {figures or 'FAILED'}{notes}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_system_exit)
    cases = build_cases(args.scenarios, args.quick, args.payload_only)
    # Other work on the machine moves the figures a lot (2 cores): say so up front.
    load_before = round(os.getloadavg()[0], 2)
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before} before the run", file=sys.stderr)
    records: dict[tuple[str, str], CaseRecord] = {}
    loaded: list[System] = []
    for name in args.systems:
        try:
            loaded.append(systems.load(name))
        except ImportError as exc:
            print(f"{name}: cannot load its adapter ({exc}); skipped", file=sys.stderr)
            for case in cases:
                records[name, case.name] = CaseRecord(name, case.name, [], [f"not run: {exc}"])
    with tempfile.TemporaryDirectory(prefix="trio_stream-bench-") as scratch:
        # Repeats of a case alternate between systems, so slow drift of the machine (other
        # load, heat) spreads over all of them instead of landing on one.
        for case in cases:
            for run in range(1, args.repeat + 1):
                for system in loaded:
                    record = records.setdefault(
                        (system.name, case.name), CaseRecord(system.name, case.name)
                    )
                    outcome = run_case(system, case, Path(scratch) / system.name)
                    record.runs.append(outcome.figures)
                    record.notes += [n for n in outcome.notes if n not in record.notes]
                    _progress(system.name, case.name, f"{run}/{args.repeat}", outcome)
    header = environment()
    mode = "raw payload (--payload-only)" if args.payload_only else "cbor2 on both ends"
    header["load_average_before"] = load_before
    print(
        f"\n{header['date']}, {mode}, median of {args.repeat}, `{header['command']}`, "
        f"load average before the run {load_before}\n"
    )
    print(markdown_table(args.systems, cases, records))
    if args.json:
        write_json(args.json, {**header, "mode": mode, "repeat": args.repeat}, records)
    return 0
