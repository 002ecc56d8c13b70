"""Run one case: a fresh server, worker processes, the go signal, the results, cleanup."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from benchmarks.jobs import (
    PublishJob,
    PublishResult,
    ReadJob,
    ReadResult,
    Timing,
    WorkerFailure,
    WorkerResult,
)
from benchmarks.measure import seconds_until
from benchmarks.scenarios import Case
from benchmarks.servers import running_server
from benchmarks.systems.base import System
from benchmarks.worker import worker_main

SETUP_TIMEOUT_S = 60.0  # 16 readers starting on 2 cores, each connecting and subscribing
GO_DELAY_S = 0.1  # time for every worker to receive the timing before go
RESULT_GRACE_S = 20.0  # after drain: closing connections, pickling latencies
JOIN_TIMEOUT_S = 2.0

# fork: workers inherit the imported modules (numpy, the client library) instead of each
# importing them again, which on 2 cores and 16 readers would take seconds.
_CONTEXT = multiprocessing.get_context("fork")


class CaseFailed(Exception):
    """The case could not be measured at all (a worker or the server failed to start)."""


@dataclass
class Outcome:
    figures: dict[str, float] | None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Worker:
    label: str
    process: BaseProcess
    conn: Connection
    ready: bool = False
    result: WorkerResult | None = None


class _Workers:
    """The worker processes of one case, all killed when the case ends."""

    def __init__(self, system: System, url: str) -> None:
        self._system = system
        self._url = url
        self.all: list[_Worker] = []

    def start(self, label: str, job: PublishJob | ReadJob) -> _Worker:
        mine, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=worker_main, args=(self._system.name, self._url, job, theirs), daemon=True
        )
        process.start()
        theirs.close()  # so that a dead worker reads as EOF here
        worker = _Worker(label, process, mine)
        self.all.append(worker)
        return worker

    def _poll(self, pending: Sequence[_Worker], timeout: float) -> None:
        """Take in whatever the pending workers have sent, or notice that they died."""
        ready = multiprocessing.connection.wait([w.conn for w in pending], timeout)
        for worker in pending:
            if worker.conn not in ready:
                continue
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(JOIN_TIMEOUT_S)
                code = worker.process.exitcode
                worker.result = WorkerFailure(f"{worker.label} died (exit code {code})")
                continue
            if kind == "ready":
                worker.ready = True
            else:
                worker.result = payload

    def wait_ready(self, workers: Sequence[_Worker]) -> None:
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while pending := [w for w in workers if not w.ready]:
            for worker in pending:
                if isinstance(worker.result, WorkerFailure):
                    _log_failure(worker.label, worker.result)
                    raise CaseFailed(f"{worker.label}: {worker.result.message}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaseFailed(f"{pending[0].label} not ready after {SETUP_TIMEOUT_S} s")
            self._poll(pending, remaining)

    def go(self, timing: Timing) -> None:
        for worker in self.all:
            worker.conn.send(timing)

    def collect(self, deadline: float) -> None:
        """Wait for every result until deadline (time.monotonic())."""
        while pending := [w for w in self.all if w.result is None]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for worker in pending:
                    worker.result = WorkerFailure(f"{worker.label} timed out")
                return
            self._poll(pending, remaining)

    def kill_all(self) -> None:
        for worker in self.all:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self.all:
            worker.process.join(JOIN_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


def _log_failure(label: str, failure: WorkerFailure) -> None:
    print(f"  ! {label}: {failure.message}", file=sys.stderr)
    if failure.detail:
        print("    " + failure.detail.strip().replace("\n", "\n    "), file=sys.stderr)


def _timeline(case: Case) -> Timing:
    go = time.monotonic_ns() + round(GO_DELAY_S * 1e9)
    start = go + round(case.window.warmup_s * 1e9)
    end = start + round(case.window.window_s * 1e9)
    return Timing(go, start, end, end + round(case.window.drain_s * 1e9))


def run_case(system: System, case: Case, workdir: Path) -> Outcome:
    """Measure one case once. Never raises for a system's failure: it becomes a note."""
    try:
        with ExitStack() as stack:
            server = stack.enter_context(running_server(system, workdir))
            workers = _Workers(system, server.url)
            stack.callback(workers.kill_all)
            # Publishers first: on trio_stream they create the channels readers subscribe to.
            pubs = [workers.start(f"publisher {i}", j) for i, j in enumerate(case.publishers)]
            workers.wait_ready(pubs)
            reads = [workers.start(f"reader {i}", j) for i, j in enumerate(case.readers)]
            workers.wait_ready(reads)
            timing = _timeline(case)
            workers.go(timing)
            # The hard timeout of the case: every loop in the workers ends by drain_ns.
            workers.collect(time.monotonic() + seconds_until(timing.drain_ns) + RESULT_GRACE_S)
            server_problem = server.check_alive()
    except CaseFailed as exc:
        return Outcome(None, [str(exc)])
    except Exception as exc:  # a server that would not start, an OSError...
        return Outcome(None, [f"{type(exc).__name__}: {exc}"])
    notes = [server_problem] if server_problem else []
    return _evaluate(case, pubs, reads, timing, notes)


def _evaluate(
    case: Case, pubs: list[_Worker], reads: list[_Worker], timing: Timing, notes: list[str]
) -> Outcome:
    pub_results: list[PublishResult] = []
    read_results: list[ReadResult] = []
    for worker in pubs + reads:
        result = worker.result
        if isinstance(result, WorkerFailure) or result is None:
            failure = result or WorkerFailure(f"{worker.label} sent nothing")
            _log_failure(worker.label, failure)
            notes.append(failure.message)
            continue
        # "reader: ..." without its number, so that 16 readers' identical notes read as one.
        role = worker.label.split()[0]
        notes += [f"{role}: {n}" for n in result.notes]
        if isinstance(result, PublishResult):
            pub_results.append(result)
        else:
            read_results.append(result)
    if len(pub_results) < len(pubs) or len(read_results) < len(reads):
        return Outcome(None, _dedupe(notes))
    return Outcome(case.evaluate(pub_results, read_results, timing.window_s), _dedupe(notes))


def _dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))
