"""When the server moves long-lived objects out of the garbage collector's sight (gc.freeze).

A full collection visits every container object of the process. An idle connection is ~100
of them (its tasks, their coroutine frames, cancel scopes and events, the session and its
transport), so a server holding 10,000 idle clients had ~1.1 million objects to walk on every
full collection, and CPython starts one each time the objects that survived younger
collections reach a quarter of those that survived the previous full one: all along a ramp
to 10,000 clients. Measured with benchmarks/idle_connections.py on the shared 2-core
machine: the longest pause while 10,000 clients connected was 1,651 ms with only the
start-up objects frozen; one full collection of 300,000 plain objects takes ~21 ms
uncontended, of 30,000 under 1 ms.

So the server freezes twice: once the first server of the process has started (modules,
classes, functions: a few hundred thousand objects with numpy and cbor2 that never become
garbage), and then again each time ``FREEZE_EVERY_CONNECTIONS`` connections have opened while
it holds at least ``FREEZE_MIN_CONNECTIONS``. Each later freeze first runs one full
collection, which walks only what is not frozen yet (at most about that many connections'
objects, a few ms) so that no garbage that already exists gets frozen, then freezes what
survived. Any collection, automatic or ours, then walks at most the objects of the
connections opened since the last freeze. ``gc.freeze()`` itself costs nothing: it splices
the generations' lists onto the permanent one.

Freezing is safe only for objects that reference counting frees: a cycle that holds a
frozen object is never collected. Connections are: a session breaks its reference cycles
when it ends (``Session._break_cycles``), trio (0.35) leaves none per task, and
tests/test_memory_per_connection.py pins it down (with the collector disabled, every closed
session, subscription and publisher is freed). Objects of an application that embeds the
server are frozen too; the later freezes happen only in a server that holds
FREEZE_MIN_CONNECTIONS at once, where a pause of a second would hurt every client, and which
is a process of its own in every deployment we know. We never unfreeze: ``gc.unfreeze()``
puts everything back in the oldest generation, and the next full collection would walk all
of it (the very pause this avoids).

Measured (benchmarks/idle_connections.py, 10,000 idle clients, the shared machine at a load
of 5 to 7 on 2 cores): the longest pause while they connect went from 1,651 ms to 14 and
45 ms of wall time in two runs, 4.6 and 4.1 ms of CPU time (the rest is time the process was
not scheduled); the longest is now a young collection, not a full one. With every 250 and
at least 500 connections it was 36 to 224 ms wall, up to 24 ms CPU, full collections.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

log = logging.getLogger(__name__)

# Connections opened between two freezes: bounds what a full collection walks (~100
# container objects each, ~1 ms per 30,000 objects uncontended).
FREEZE_EVERY_CONNECTIONS: Final = 100
# Below this many connections at once the later freezes are not worth it: a full collection
# of every connection's objects stays under ~5 ms (uncontended).
FREEZE_MIN_CONNECTIONS: Final = 200

# Allocations (net of frees) of container objects between two young collections; CPython's
# default is 700. A frame in flight lives until its reader's client credits it (up to a
# window, 1,000 frames in S1: the server keeps it for that client's resume, kept.py), about
# 3,000 to 30,000 allocations at full rate: at 700, young collections walked each of these
# frames and their entries and promoted them, and the older generations then walked them
# again. Measured with benchmarks/cpu_per_frame.py (cbor, 4 readers, 800k deliveries): 250
# young and 23 middle collections per run at 700, 0.08-0.10 s of the server's CPU (about 0.1
# s per million deliveries, 8 %); at 10,000, 7 young collections in 0.012-0.017 s in all,
# and the longest collection 2.0-2.7 ms against 7.9-8.7 ms (the one full collection at 700).
# Garbage in reference cycles waits a little longer; the server frees its own cycles itself
# (Session._break_cycles).
YOUNG_COLLECTION_THRESHOLD: Final = 10_000

_startup_frozen = False


def freeze_startup_objects() -> None:
    """Freeze what exists once the first server of the process has started, and collect
    young objects less often (see YOUNG_COLLECTION_THRESHOLD); once per process. A higher
    threshold that the application set stays."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        # Collected first: garbage the application left in reference cycles would be frozen
        # with the rest, never to be collected (a trio developer embedding the server).
        gc.collect()
        gc.freeze()
        young, *older = gc.get_threshold()
        if young and young < YOUNG_COLLECTION_THRESHOLD:  # 0: the application disabled it
            gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *older)


class FreezePolicy:
    """Counts opened connections; freezes the survivors every FREEZE_EVERY_CONNECTIONS."""

    __slots__ = ("every", "freezes", "minimum", "opened")

    def __init__(
        self, every: int = FREEZE_EVERY_CONNECTIONS, minimum: int = FREEZE_MIN_CONNECTIONS
    ) -> None:
        self.every = every
        self.minimum = minimum
        self.opened = 0  # since the last freeze
        self.freezes = 0

    def connection_opened(self, connections: int) -> None:
        """A connection opened; ``connections`` are open now (this one included)."""
        self.opened += 1
        if self.opened >= self.every and connections >= self.minimum:
            self.opened = 0
            self.freeze()

    def freeze(self) -> None:
        collected = gc.collect()  # only the unfrozen objects: what opened since the last freeze
        gc.freeze()
        self.freezes += 1
        if log.isEnabledFor(logging.DEBUG):
            # Only then: get_freeze_count() walks every frozen object (300,000 and more with
            # a few thousand connections: 20-50 ms, most of what a burst of connections cost).
            log.debug("froze %d objects (%d collected first)", gc.get_freeze_count(), collected)
