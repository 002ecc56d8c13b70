"""What a connection leaves behind: nothing that needs the cyclic garbage collector, since the
server freezes long-lived objects out of its sight (gc_policy.py); the watchdog that replaced
a task per connection (idle.py); stats() figures kept as running totals."""

from __future__ import annotations

import gc
import logging
import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing
from test_robustness import control, framed, read_messages

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server import gc_policy
from trio_stream._server.gc_policy import YOUNG_COLLECTION_THRESHOLD, FreezePolicy
from trio_stream._server.idle import READ_GRACE_S, Watchdog
from trio_stream._server.serve import Server

CONNECTIONS_PER_KIND = 10
WAIT_S = 30


async def poll_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll the server's own state: there is no event to wait on."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


@contextmanager
def collector_disabled() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def track(server: Server, name: str, refs: list[weakref.ref[object]]) -> None:
    """Weak references to the connected session called ``name`` and what it holds."""
    session = server.state.by_name[name]  # claimed before the welcome is sent
    refs.append(weakref.ref(session))
    refs.append(weakref.ref(session.outbox))
    refs.extend(weakref.ref(sub) for sub in session.outbox.readers.values())
    refs.extend(weakref.ref(pub) for pub in session.writers.values())


async def raw_hello(server: Server, name: str) -> trio.SocketStream:
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=name)))
    assert isinstance((await read_messages(stream, until=M.Welcome))[-1], M.Welcome)
    return stream


class Echo:
    def rpc_echo(self, value: object) -> object:
        return value


async def test_closed_sessions_are_freed_by_reference_counting_alone(
    nursery: trio.Nursery,
) -> None:
    """With the cyclic collector off, every session of 50 closed connections (silent ones,
    ones that said goodbye, ones closed for a bad frame, clients that created, published,
    subscribed, exposed and called) is freed, with its subscriptions and publishers: the
    server may freeze them (gc.freeze) while they live without leaking them."""
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: Server = await nursery.start(ts.serve, config)
    assert server.tcp_url is not None
    refs: list[weakref.ref[object]] = []
    with collector_disabled():
        for i in range(CONNECTIONS_PER_KIND):
            stream = await raw_hello(server, f"leaves-{i}")
            track(server, f"leaves-{i}", refs)
            await stream.aclose()

            stream = await raw_hello(server, f"goodbye-{i}")
            track(server, f"goodbye-{i}", refs)
            await stream.send_all(control(M.Goodbye(reason="done")))
            await read_messages(stream)  # until the server closes
            await stream.aclose()

            stream = await raw_hello(server, f"bad-{i}")
            track(server, f"bad-{i}", refs)
            await stream.send_all(framed(b"\x09ab"))  # not a frame type: closed with a reason
            assert any(isinstance(m, M.Goodbye) for m in await read_messages(stream))
            await stream.aclose()

            async with (
                ts.open_client(server.tcp_url, name=f"full-{i}") as client,
                ts.open_client(server.tcp_url, name=f"caller-{i}") as caller,
            ):
                client.expose(Echo())
                await client.create_channel(f"ch-{i}")
                async with (
                    client.subscribe(f"ch-{i}", policy="drop_oldest", size=4) as sub,
                    client.publisher(f"ch-{i}") as pub,
                ):
                    await pub.wait_for_readers()
                    await pub.send({"i": i})
                    with trio.fail_after(WAIT_S):
                        assert (await sub.__anext__()).data == {"i": i}
                    async with client.subscribe("$clients"):
                        track(server, f"full-{i}", refs)
                    proxy = await caller.rpc(f"full-{i}", timeout=WAIT_S)
                    assert await proxy.echo([i]) == [i]
                    track(server, f"caller-{i}", refs)

        await poll_until(lambda: not server.connections)
        await trio.sleep(0.1)  # the last tasks finish unwinding
        alive = [type(obj).__name__ for ref in refs if (obj := ref()) is not None]
    assert len(refs) >= 5 * CONNECTIONS_PER_KIND + 3 * CONNECTIONS_PER_KIND
    assert alive == [], f"{len(alive)} of {len(refs)} objects need the cyclic collector"


async def test_stats_buffered_bytes_is_the_sum_over_connections(nursery: trio.Nursery) -> None:
    """buffered_bytes is a running total (stats() walks no connections): it equals the sum of
    every connection's buffered bytes as frames are buffered, dropped, taken and freed."""
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    server: Server = await nursery.start(ts.serve, config)
    state = server.state
    assert server.tcp_url is not None

    def check() -> int:
        total = sum(s.outbox.buffered_bytes for s in state.sessions.values())
        assert state.buffer_totals.buffered_bytes == total
        assert state.stats()["buffered_bytes"] == total + state.broker.parked_bytes
        return total

    async with (
        ts.open_client(server.tcp_url, name="writer") as writer,
        ts.open_client(server.tcp_url, name="reader") as reader,
    ):
        await writer.create_channel("c")
        async with (
            reader.subscribe("c", policy="drop_oldest", size=3, window=1) as ring,
            reader.subscribe("c", policy="unbounded", window=1) as everything,
            writer.publisher("c") as pub,
        ):
            await pub.wait_for_readers(2)
            for n in range(20):
                await pub.send(bytes(1000 + n))
            with trio.fail_after(WAIT_S):
                await ring.__anext__()
                await everything.__anext__()
            await poll_until(lambda: state.broker.frames_in >= 20)
            assert check() > 0  # the ring dropped frames, the unbounded reader holds many
            with trio.fail_after(WAIT_S):
                for _ in range(5):
                    await everything.__anext__()
            check()
        check()  # unsubscribed: their buffers freed
    await poll_until(lambda: not server.connections)
    assert check() == 0


class FakeSession:
    def __init__(self) -> None:
        self.heard = trio.current_time()
        self.holds_at = math.inf
        self.hold_checks: list[float] = []
        self.closed_for: float | None = None

    def heard_at(self) -> float:
        return self.heard

    def check_holds(self, now: float) -> float:
        self.hold_checks.append(now)
        if self.holds_at <= now:
            self.holds_at = math.inf
        return self.holds_at

    def close_idle(self, idle_s: float) -> None:
        self.closed_for = idle_s


async def test_watchdog_closes_only_silent_clients(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """One task for all: the silent client is closed once idle_timeout_s and the read grace
    have passed, the one that keeps talking never, and a client gone is forgotten."""
    sessions = {1: FakeSession(), 2: FakeSession(), 3: FakeSession()}
    watchdog = Watchdog(10.0, sessions.get)
    nursery.start_soon(watchdog.run)
    for client_id in sessions:
        watchdog.start(client_id)
    del sessions[3]  # disconnected before its deadline
    talker = sessions[2]

    async def ping_every_3_s() -> None:
        while True:  # ends with the test's nursery
            talker.heard = trio.current_time()
            await trio.sleep(3)

    nursery.start_soon(ping_every_3_s)
    started = trio.current_time()
    await poll_until(lambda: sessions[1].closed_for is not None)
    silent_for = trio.current_time() - started
    assert sessions[1].closed_for == 10.0
    assert 10.0 + READ_GRACE_S <= silent_for <= 10.0 + READ_GRACE_S + 0.1
    await trio.sleep(60)
    assert talker.closed_for is None
    assert watchdog._due.keys() == {2}  # nothing kept for the closed and the gone client
    nursery.cancel_scope.cancel()


async def test_watchdog_looks_at_held_back_writers_when_asked(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A session that asks (a block reader started holding its writers) is looked at then,
    long before its idle deadline, and again when its hold says so."""
    session = FakeSession()
    watchdog = Watchdog(60.0, {1: session}.get)
    nursery.start_soon(watchdog.run)
    watchdog.start(1)
    await trio.sleep(5)
    session.holds_at = trio.current_time() + 2.5
    watchdog.wake_at(1, trio.current_time() + 1)
    await trio.sleep(3)
    assert [round(t - 5, 3) for t in session.hold_checks] == [1.0, 2.5]
    assert session.closed_for is None
    nursery.cancel_scope.cancel()


def test_freeze_policy_freezes_after_a_burst_of_connections_only_when_many() -> None:
    policy = FreezePolicy(every=3, minimum=5)
    for connections in range(1, 5):
        policy.connection_opened(connections)
    assert policy.freezes == 0  # fewer than the minimum connected
    frozen = gc.get_freeze_count()
    policy.connection_opened(5)
    assert policy.freezes == 1
    assert gc.get_freeze_count() >= frozen
    policy.connection_opened(6)
    policy.connection_opened(7)
    assert policy.freezes == 1  # the next one after three more
    policy.connection_opened(8)
    assert policy.freezes == 2


def test_a_freeze_counts_the_frozen_objects_only_for_a_debug_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # gc.get_freeze_count() walks every frozen object: 20-50 ms with a few thousand
    # connections, once every FREEZE_EVERY_CONNECTIONS, most of a connection burst's CPU.
    counted: list[int] = []

    def count() -> int:
        counted.append(1)
        return 0

    monkeypatch.setattr(gc, "get_freeze_count", count)
    policy = FreezePolicy(every=1, minimum=1)
    with caplog.at_level(logging.INFO, logger=gc_policy.log.name):
        policy.connection_opened(1)
    assert policy.freezes == 1 and not counted
    with caplog.at_level(logging.DEBUG, logger=gc_policy.log.name):
        policy.connection_opened(1)
    assert policy.freezes == 2 and counted == [1]
    assert "froze 0 objects" in caplog.text


async def test_a_started_server_collects_young_objects_less_often(server: ts.Server) -> None:
    # Frames in flight live until their reader credits them: at CPython's default of 700
    # they were walked and promoted by young collections (gc_policy.py).
    assert gc.get_threshold()[0] >= YOUNG_COLLECTION_THRESHOLD


def test_the_young_threshold_keeps_an_applications_higher_or_disabled_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = gc.get_threshold()
    try:
        for chosen in (10 * YOUNG_COLLECTION_THRESHOLD, 0, 100):
            monkeypatch.setattr(gc_policy, "_startup_frozen", False)
            gc.set_threshold(chosen, 10, 10)
            gc_policy.freeze_startup_objects()
            expected = YOUNG_COLLECTION_THRESHOLD if chosen == 100 else chosen
            assert gc.get_threshold() == (expected, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_the_startup_freeze_collects_the_applications_garbage_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Garbage in a reference cycle when the first server started was frozen with the living
    # objects, for good (gc.freeze without a collection first).
    class Node:
        def __init__(self) -> None:
            self.me = self

    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    before = gc.get_threshold()
    monkeypatch.setattr(gc_policy, "_startup_frozen", False)
    try:
        gc_policy.freeze_startup_objects()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
