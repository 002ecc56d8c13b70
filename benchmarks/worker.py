"""Entry point of a worker process: one publisher or one reader of one case."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import traceback
from multiprocessing.connection import Connection

from benchmarks import systems
from benchmarks.control import WorkerControl
from benchmarks.jobs import PublishJob, ReadJob, WorkerFailure, WorkerResult

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, even by SIGKILL.

    The orchestrator kills its children in finally blocks; this covers the case where the
    orchestrator itself is killed and finally never runs.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def worker_main(system_name: str, url: str, job: PublishJob | ReadJob, conn: Connection) -> None:
    die_with_parent()
    # Ctrl-C reaches the whole process group: the orchestrator handles it and kills us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = WorkerControl(conn)
    result: WorkerResult
    try:
        system = systems.load(system_name)
        if isinstance(job, PublishJob):
            result = system.publish(url, job, ctl)
        else:
            result = system.read(url, job, ctl)
    except BaseException as exc:  # report everything: the orchestrator records it as a note
        result = WorkerFailure(f"{type(exc).__name__}: {exc}", traceback.format_exc())
    ctl.report(result)
