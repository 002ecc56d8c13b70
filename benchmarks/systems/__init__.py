"""System adapters, loaded by name so that a missing client library only affects its system."""

from __future__ import annotations

import importlib
from typing import cast

from benchmarks.systems.base import System

# name -> module defining SYSTEM. A new adapter is one module and one line here.
_MODULES = {
    "redis": "benchmarks.systems.redis_pubsub",
    "nats": "benchmarks.systems.nats_pubsub",
    "trio_stream_tcp": "benchmarks.systems.trio_stream_tcp",
    "trio_stream_ws": "benchmarks.systems.trio_stream_ws",
    "relay": "benchmarks.systems.trio_relay",
}

NAMES = tuple(_MODULES)


def load(name: str) -> System:
    """The adapter called ``name`` (ImportError if its client library is missing)."""
    module = importlib.import_module(_MODULES[name])
    return cast(System, module.SYSTEM)
