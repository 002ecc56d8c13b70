"""What a worker process is asked to do, and what it reports back (plain picklable data)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PayloadKind(enum.Enum):
    SMALL = "small"  # ~100 bytes on the wire, carries a send timestamp
    ARRAY = "array"  # a 1 MiB float64 numpy array (raw mode: 1 MiB of bytes)


class Measure(enum.Enum):
    THROUGHPUT = "throughput"  # count frames that arrive inside the window
    LATENCY = "latency"  # publish-to-receive time of frames sent inside the window


@dataclass(frozen=True)
class PayloadSpec:
    kind: PayloadKind
    # raw=True: peers move bytes without cbor2 (the --payload-only comparison).
    raw: bool


@dataclass(frozen=True)
class PublishJob:
    channel: str
    payload: PayloadSpec
    # None: publish as fast as the system accepts, from "go" until the window ends.
    rate_hz: float | None = None


@dataclass(frozen=True)
class Subscription:
    channel: str
    measure: Measure
    # Only trio_stream has per-reader buffers: lossless -> policy="block", else "drop_oldest".
    lossless: bool
    size: int = 100


@dataclass(frozen=True)
class ReadJob:
    subscriptions: tuple[Subscription, ...]
    payload: PayloadSpec


@dataclass(frozen=True)
class Timing:
    """One case's timeline, in time.monotonic_ns() units (system-wide on Linux)."""

    go_ns: int  # publishers start
    start_ns: int  # the measuring window opens (after the warm-up)
    end_ns: int  # the window closes; publishers stop
    drain_ns: int  # latency readers give up waiting for late frames

    @property
    def window_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass
class PublishResult:
    sent: int = 0
    sent_in_window: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class SubscriptionResult:
    in_window: int = 0  # throughput: frames received inside the window
    received: int = 0  # latency: frames sent inside the window and received
    latencies_ns: list[int] = field(default_factory=list)


@dataclass
class ReadResult:
    subscriptions: list[SubscriptionResult]
    notes: list[str] = field(default_factory=list)


@dataclass
class WorkerFailure:
    """A worker that could not do its job at all (setup failed, crashed)."""

    message: str
    detail: str = ""  # the traceback, for the log


WorkerResult = PublishResult | ReadResult | WorkerFailure
