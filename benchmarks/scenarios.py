"""The scenarios S1-S4: who publishes what, who reads what, and which figures come out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.jobs import (
    Measure,
    PayloadKind,
    PayloadSpec,
    PublishJob,
    PublishResult,
    ReadJob,
    ReadResult,
    Subscription,
)
from benchmarks.payload import ARRAY_BYTES

S1_READER_COUNTS = (1, 4, 16)
S2_READERS = 4
S3_RATE_HZ = 1000.0
S4_QUIET_RATE_HZ = 10.0
# trio_stream buffer sizes (frames). Lossless ("block") fan-out needs room for a few round
# trips of credit at full speed; S2's frames are 1 MiB each, so fewer of them.
S1_BUFFER_FRAMES = 1000
S2_BUFFER_FRAMES = 8
DEFAULT_BUFFER_FRAMES = 100  # the brief's "defaults" for S3/S4


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # table header
    digits: int  # decimals shown


@dataclass(frozen=True)
class Window:
    warmup_s: float  # publishers run, nothing is counted
    window_s: float  # measured
    drain_s: float  # after the window: latency readers wait this long for late frames


Evaluate = Callable[[Sequence[PublishResult], Sequence[ReadResult], float], dict[str, float]]


@dataclass(frozen=True)
class Case:
    name: str  # "S1/4"
    publishers: tuple[PublishJob, ...]  # started first (trio_stream: they create channels)
    readers: tuple[ReadJob, ...]
    window: Window
    metrics: tuple[Metric, ...]
    evaluate: Evaluate  # (publisher results, reader results, window seconds) -> figures

    @property
    def scenario(self) -> str:
        return self.name.split("/")[0]


def _percentile_ms(latencies_ns: list[int], q: float) -> float:
    if not latencies_ns:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_ns, dtype=np.float64), q)) / 1e6


def _s1(readers: int, payload: PayloadSpec, window: Window) -> Case:
    sub = Subscription("bench.s1", Measure.THROUGHPUT, lossless=True, size=S1_BUFFER_FRAMES)

    def evaluate(
        _pubs: Sequence[PublishResult], reads: Sequence[ReadResult], seconds: float
    ) -> dict[str, float]:
        delivered = sum(r.subscriptions[0].in_window for r in reads)
        return {"frames_per_s": delivered / seconds}

    return Case(
        f"S1/{readers}",
        (PublishJob(sub.channel, payload),),
        tuple(ReadJob((sub,), payload) for _ in range(readers)),
        window,
        (Metric("frames_per_s", f"S1 {readers}r frames/s", 0),),
        evaluate,
    )


def _s2(payload: PayloadSpec, window: Window) -> Case:
    sub = Subscription("bench.s2", Measure.THROUGHPUT, lossless=True, size=S2_BUFFER_FRAMES)

    def evaluate(
        _pubs: Sequence[PublishResult], reads: Sequence[ReadResult], seconds: float
    ) -> dict[str, float]:
        delivered = sum(r.subscriptions[0].in_window for r in reads)
        return {"mb_per_s": delivered * ARRAY_BYTES / seconds / 1e6}

    return Case(
        "S2",
        (PublishJob(sub.channel, payload),),
        tuple(ReadJob((sub,), payload) for _ in range(S2_READERS)),
        window,
        (Metric("mb_per_s", f"S2 {S2_READERS}r MB/s", 0),),
        evaluate,
    )


def _s3(payload: PayloadSpec, window: Window) -> Case:
    sub = Subscription("bench.s3", Measure.LATENCY, lossless=False, size=DEFAULT_BUFFER_FRAMES)

    def evaluate(
        pubs: Sequence[PublishResult], reads: Sequence[ReadResult], _seconds: float
    ) -> dict[str, float]:
        got = reads[0].subscriptions[0]
        return {
            "p50_ms": _percentile_ms(got.latencies_ns, 50),
            "p99_ms": _percentile_ms(got.latencies_ns, 99),
            "lost": pubs[0].sent_in_window - got.received,
        }

    return Case(
        "S3",
        (PublishJob(sub.channel, payload, rate_hz=S3_RATE_HZ),),
        (ReadJob((sub,), payload),),
        window,
        (Metric("p50_ms", "S3 p50 ms", 3), Metric("p99_ms", "S3 p99 ms", 3)),
        evaluate,
    )


def _s4(payload: PayloadSpec, window: Window) -> Case:
    flood = Subscription(
        "bench.s4.flood", Measure.THROUGHPUT, lossless=False, size=DEFAULT_BUFFER_FRAMES
    )
    # The quiet channel is the one whose frames matter: lossless where the system allows.
    quiet = Subscription("bench.s4.quiet", Measure.LATENCY, lossless=True, size=100)

    def evaluate(
        pubs: Sequence[PublishResult], reads: Sequence[ReadResult], seconds: float
    ) -> dict[str, float]:
        flood_got, quiet_got = reads[0].subscriptions
        return {
            "quiet_p99_ms": _percentile_ms(quiet_got.latencies_ns, 99),
            "quiet_lost": pubs[1].sent_in_window - quiet_got.received,
            "quiet_sent": pubs[1].sent_in_window,
            "flood_frames_per_s": flood_got.in_window / seconds,
        }

    return Case(
        "S4",
        (
            PublishJob(flood.channel, payload),
            PublishJob(quiet.channel, payload, rate_hz=S4_QUIET_RATE_HZ),
        ),
        (ReadJob((flood, quiet), payload),),
        window,
        (Metric("quiet_p99_ms", "S4 quiet p99 ms", 1), Metric("quiet_lost", "S4 quiet lost", 0)),
        evaluate,
    )


SCENARIOS = ("S1", "S2", "S3", "S4")


def build_cases(scenarios: Sequence[str], quick: bool, raw: bool) -> list[Case]:
    """The cases of the chosen scenarios ("S1" means S1/1, S1/4 and S1/16)."""
    small = PayloadSpec(PayloadKind.SMALL, raw)
    array = PayloadSpec(PayloadKind.ARRAY, raw)
    warmup, window, drain = (0.5, 2.0, 3.0) if quick else (1.0, 3.0, 5.0)
    steady = Window(warmup, window, 0.0)
    latency = Window(warmup, window, drain)
    # 10 Hz gives few samples: S4 runs twice as long so that its p99 rests on 40-60 of them.
    fairness = Window(warmup, window * 2, drain)
    cases: list[Case] = []
    for scenario in scenarios:
        if scenario == "S1":
            cases += [_s1(n, small, steady) for n in S1_READER_COUNTS]
        elif scenario == "S2":
            cases.append(_s2(array, steady))
        elif scenario == "S3":
            cases.append(_s3(small, latency))
        elif scenario == "S4":
            cases.append(_s4(small, fairness))
        else:
            raise ValueError(f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
    return cases
