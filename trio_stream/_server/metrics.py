"""The server's counters in the Prometheus text exposition format (served at /metrics).

Per-channel series cover public channels only (the system channels are public): a private
channel's name must not leak to whoever can reach the HTTP port. The server-wide totals
include every channel, as ``$stats`` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from .broker import Channel
from .rpc import Router
from .state import ServerState, resident_bytes

if TYPE_CHECKING:
    from .admission import ConnectionCounter

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "trio_stream_"
# Channels whose lines of one per-channel series a part of the text holds (metrics_steps):
# ~2-4 ms of work between two chances for everyone else to run.
METRICS_STEP_CHANNELS: Final = 2000
# The engine's gauges (Engine.health), present with several nodes only: what an operator
# alerts on (a Redis down, a node gone), which /metrics could not tell.
ENGINE_GAUGES: Final = {
    "cluster_nodes": (
        "Live nodes of the cluster, this one included, as its heartbeats see them (the last "
        "count while redis_up is 0)."
    ),
    "redis_up": "1 while Redis answers this node's heartbeats (within a heartbeat TTL), else 0.",
}


def render_metrics(
    state: ServerState, connections_refused: int = 0, admission: ConnectionCounter | None = None
) -> str:
    """The text /metrics answers; ``admission``: the server's connection counts (what the
    connection limits count), left out without it."""
    return "".join(metrics_steps(state, connections_refused, admission))


def metrics_steps(
    state: ServerState,
    connections_refused: int = 0,
    admission: ConnectionCounter | None = None,
    step: int = METRICS_STEP_CHANNELS,
) -> Iterator[str]:
    """:func:`render_metrics`'s text in parts, each made as it is asked for: the server-wide
    series, then the per-channel ones ``step`` channels at a time. The server lets other
    tasks run between parts (metrics_budget.py): with 100,000 channels a render in one go
    took ~0.5 s, in which nobody's frame moved."""
    broker = state.broker
    channels = [c for c in broker.channels.values() if c.public]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float) -> None:
        lines.extend(_header(name, kind, help_text))
        lines.append(f"{PREFIX}{name} {_number(value)}")

    metric(
        "connections",
        "gauge",
        "Connected clients (past their hello; trio_stream_open_connections counts every "
        "connection, as the connection limits do).",
        len(state.sessions),
    )
    if admission is not None:
        _admission_metrics(lines, admission)
    metric(
        "connections_refused_total",
        "counter",
        "Connections refused for max_connections or max_connections_per_address.",
        connections_refused,
    )
    metric("channels", "gauge", "Public channels, system channels included.", len(channels))
    metric("frames_in_total", "counter", "Frames published by writers.", broker.frames_in)
    metric("bytes_in_total", "counter", "Payload bytes published by writers.", broker.bytes_in)
    metric("frames_out_total", "counter", "DATA frames sent to readers.", state.frames_out)
    metric("bytes_out_total", "counter", "DATA bytes sent to readers.", state.bytes_out)
    metric(
        "frames_lost_total",
        "counter",
        "Frames readers lost to their buffer policy.",
        state.frames_lost(),
    )
    metric(
        "buffered_bytes",
        "gauge",
        "Bytes waiting in the server's subscription buffers and parked for block readers.",
        state.buffered_bytes(),
    )
    metric(
        "kept_subscriptions",
        "gauge",
        "Subscriptions kept for clients whose connection broke, until they resume.",
        state.resume.kept_subscriptions(),
    )
    metric("uptime_seconds", "gauge", "Seconds since the server started.", state.uptime_s())
    metric(
        "resident_memory_bytes", "gauge", "Resident memory of the server process.", resident_bytes()
    )
    metric("cpu_seconds_total", "counter", "CPU time the server process used.", time.process_time())
    metric(
        "held_channels",
        "gauge",
        "Channels whose writers a block reader holds back (held_by not empty), public or not.",
        sum(1 for c in broker.channels.values() if c.held),
    )
    for name, value in state.engine.health().items():
        metric(name, "gauge", ENGINE_GAUGES[name], value)
    _rpc_metrics(lines, state.rpc, state.engine.routed_calls())

    per_channel = (
        ("channel_readers", "gauge", "Readers subscribed to the channel.", _readers),
        ("channel_writers", "gauge", "Open publishers of the channel.", _writers),
        ("channel_frames_total", "counter", "Frames published to the channel.", _frames),
        ("channel_bytes_total", "counter", "Payload bytes published to the channel.", _bytes),
        ("channel_lost_total", "counter", "Frames the channel's readers lost.", _lost),
    )
    yield "".join(line + "\n" for line in lines)
    for name, kind, help_text, value_of in per_channel:
        yield "".join(line + "\n" for line in _header(name, kind, help_text))
        for start in range(0, len(channels), step):
            yield "".join(
                f'{PREFIX}{name}{{channel="{escape_label(c.name)}"}} {_number(value_of(c))}\n'
                for c in channels[start : start + step]
            )


def _admission_metrics(lines: list[str], admission: ConnectionCounter) -> None:
    """What max_connections and max_connections_per_address count, and those limits."""
    name = "open_connections"
    lines.extend(
        _header(
            name,
            "gauge",
            "Open connections, as max_connections counts them: from accept to close, before "
            "their hello too; transport http is the HTTP port's (dashboard, /metrics, "
            "WebSocket).",
        )
    )
    lines.extend(
        f'{PREFIX}{name}{{transport="{transport}"}} {count}'
        for transport, count in admission.by_transport.items()
    )
    gauges = (
        (
            "open_connections_largest_per_address",
            "The most open connections one peer address holds (refused at "
            "max_connections_per_address).",
            admission.largest_per_address(),
        ),
        ("max_connections", "The server's max_connections.", admission.max_total),
        (
            "max_connections_per_address",
            "The server's max_connections_per_address.",
            admission.max_per_address,
        ),
    )
    for gauge, help_text, value in gauges:
        lines.extend(_header(gauge, "gauge", help_text))
        lines.append(f"{PREFIX}{gauge} {_number(value)}")


def _rpc_metrics(lines: list[str], router: Router, routed: int) -> None:
    """Calls between clients: in flight, passed on, and answered with an error (by reason:
    what an operator tells apart, a provider's bug from a provider gone or a caller too fast)."""
    gauges = (
        (
            "rpc_calls_in_flight",
            "gauge",
            "Calls and describes waiting for their answer: to a provider connected to this "
            "node, and those this node's clients made to another node's.",
            router.pending() + routed,
        ),
        (
            "rpc_calls_total",
            "counter",
            "Calls and describes passed on to a provider connected to this node.",
            router.calls_total,
        ),
    )
    for name, kind, help_text, value in gauges:
        lines.extend(_header(name, kind, help_text))
        lines.append(f"{PREFIX}{name} {_number(value)}")
    name = "rpc_errors_total"
    lines.extend(
        _header(
            name,
            "counter",
            "Calls and describes answered with an error, by reason: raised (by the provider), "
            "refused (no such method), no_provider, limit (calls in flight, memory bounds), "
            "too_large (max_frame_bytes), disconnected (the provider, its node or the "
            "messages between nodes gone mid-call), invalid (a bad method or provider name), "
            "unavailable (the cluster's Redis: the call did not run). Per node: the node that "
            "answered the error counts it.",
        )
    )
    lines.extend(
        f'{PREFIX}{name}{{reason="{reason}"}} {count}'
        for reason, count in router.errors_total.items()
    )


def _readers(channel: Channel) -> int:
    return channel.readers


def _writers(channel: Channel) -> int:
    return len(channel.publishers)


def _frames(channel: Channel) -> int:
    return channel.frames_here


def _bytes(channel: Channel) -> int:
    return channel.bytes_here


def _lost(channel: Channel) -> int:
    return channel.lost


def _header(name: str, kind: str, help_text: str) -> Iterable[str]:
    return (f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
