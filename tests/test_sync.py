"""SyncClient: the blocking client over one trio thread.

The server runs in the test's trio loop; each scenario runs the SyncClient in worker threads
(``in_thread``), as a synchronous program would, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import pickle
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from decimal import Decimal
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
from engine_marks import BOTH_ENGINES
from proxy import TcpProxy, open_proxy

import trio_stream as ts
from trio_stream import sync as sync_module
from trio_stream.sync import SyncClient

pytestmark = BOTH_ENGINES

T = TypeVar("T")

DEADLINE_S = 60.0  # a whole scenario; each blocking step has its own, shorter bound
STEP_S = 10.0
CHILD = Path(__file__).with_name("sync_child.py")
INTERRUPTED_PUBLISHER = Path(__file__).parent / "sync_interrupted_publisher.py"
INTERRUPTED_READER = Path(__file__).with_name("sync_interrupted_reader.py")
INTERRUPTED_CLOSE = Path(__file__).with_name("sync_interrupted_close.py")
FORK_CHILD = Path(__file__).with_name("sync_fork_child.py")


async def read_to_end(stream: trio.abc.ReceiveStream | None) -> bytes:
    """What a child's pipe still holds, up to its end."""
    assert stream is not None
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a synchronous scenario in a worker thread while the server keeps serving."""
    with trio.fail_after(DEADLINE_S):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trio_stream SyncClient")]


async def test_every_operation_as_a_blocking_call(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="script") as c, SyncClient(url, name="rec") as rec:
            assert c.name == "script" and c.client_id > 0
            c.create_channel("AnalogInput1", public=True)
            assert "AnalogInput1" in [ch.name for ch in c.channels()]
            assert {"script", "rec"} <= {cl.name for cl in rec.clients()}
            assert c.stats().connections >= 2
            with rec.subscribe("AnalogInput1", policy="unbounded") as sub:
                with c.publisher("AnalogInput1") as pub:
                    pub.wait_for_readers(timeout=STEP_S)
                    assert pub.readers == 1
                    arrays = [np.random.default_rng(i).normal(size=(2, 50)) for i in range(5)]
                    for array in arrays:
                        assert pub.send(array)
                # leaving the publisher flushed it: everything is at the server
                for array in arrays:
                    msg = sub.get(timeout=STEP_S)
                    np.testing.assert_array_equal(msg.data, array)
                    assert msg.channel == "AnalogInput1" and msg.sender == "script"
                assert c.publish("AnalogInput1", {"t": 1.5})
                c.flush(timeout=STEP_S)
                assert sub.get(timeout=STEP_S).data == {"t": 1.5}
                with pytest.raises(TimeoutError, match=r"within 0\.05 s$"):  # the time asked
                    sub.get(timeout=0.05)
                assert sub.end_reason is None
                c.delete_channel("AnalogInput1")
                assert list(sub) == []  # the channel ended: iteration stops
                assert sub.end_reason == "channel 'AnalogInput1' was deleted"
            with pytest.raises(ts.ChannelNotFound):
                c.publish("AnalogInput1", 1)

    await in_thread(scenario)


async def test_get_with_timeout_zero_polls_what_has_arrived(url: str) -> None:
    # The instrument-loop idiom: take a message if one is there, else carry on at once.
    def scenario() -> None:
        with SyncClient(url, name="w") as c, SyncClient(url, name="r") as r:
            c.create_channel("ch")
            with r.subscribe("ch", policy="unbounded", window=2) as sub:
                with pytest.raises(TimeoutError):
                    sub.get(timeout=0)
                for i in range(5):
                    c.publish("ch", i)
                c.flush(timeout=STEP_S)
                # Until the frames are at the reader's client, a poll may find nothing yet.
                deadline = time.monotonic() + STEP_S
                got: list[int] = []
                while len(got) < 5 and time.monotonic() < deadline:
                    try:
                        got.append(sub.get(timeout=0).data)
                    except TimeoutError:
                        time.sleep(0.01)
                assert got == list(range(5))
                with pytest.raises(TimeoutError):
                    sub.get(timeout=0)
                with pytest.raises(ValueError, match="timeout"):
                    sub.get(timeout=-1)

    await in_thread(scenario)


async def test_a_wait_for_a_channel_can_be_bounded(url: str) -> None:
    # A script could not bound wait_channel=True (a trio program puts move_on_after round
    # it): a private channel without its right key waited until Ctrl-C.
    def scenario() -> None:
        with SyncClient(url, name="w") as c, SyncClient(url, name="r") as r:
            c.create_channel("locked", public=False, key="right")
            started = time.monotonic()
            with pytest.raises(TimeoutError) as waited:
                r.subscribe("locked", key="wrong", wait_channel=True, wait_timeout=0.5)
            assert 0.5 <= time.monotonic() - started < STEP_S
            assert str(waited.value) == (
                "no channel named 'locked' came within 0.5 s (wait_timeout; a private channel "
                "also needs its key: key=...)"
            )
            with r.subscribe("locked", key="right", wait_channel=True, wait_timeout=5) as sub:
                assert sub.channel == "locked"
            with pytest.raises(ts.InvalidArgument, match="wait_timeout bounds wait_channel"):
                r.subscribe("locked", key="right", wait_timeout=5)
            for bad in (-1.0, math.nan):
                with pytest.raises(ts.InvalidArgument, match="wait_timeout must be >= 0"):
                    r.subscribe("locked", key="right", wait_channel=True, wait_timeout=bad)
            for not_a_name in (5, None):  # a TypeError from the message's slice (an audit)
                with pytest.raises(ts.InvalidArgument, match="channel must be a str"):
                    r.subscribe(not_a_name)  # type: ignore[arg-type]

    await in_thread(scenario)


async def test_a_waiting_get_does_not_stretch_another_threads_timeout(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="r") as r:
            r.create_channel("quiet")
            with r.subscribe("quiet") as sub:

                def wait() -> None:
                    with pytest.raises(TimeoutError):
                        sub.get(timeout=2.0)

                waiter = threading.Thread(target=wait)
                waiter.start()
                time.sleep(0.2)  # the other thread now waits in get() on this subscription
                start = time.monotonic()
                with pytest.raises(TimeoutError):
                    sub.get(timeout=0.2)
                assert time.monotonic() - start < 1.0
                waiter.join(STEP_S)

    await in_thread(scenario)


async def test_subscriptions_and_publishers_outlive_a_cell_without_with(url: str) -> None:
    # A notebook subscribes in one cell and reads in the next: no `with` block spans them.
    def scenario() -> None:
        with SyncClient(url, name="nb") as c:
            c.create_channel("ch")
            sub = c.subscribe("ch", policy="unbounded")
            pub = c.open_publisher("ch")
            gc.collect()  # nothing but our references keeps them open
            pub.wait_for_readers(timeout=STEP_S)
            assert pub.send(np.arange(3)) and pub.send("two")
            pub.close()  # flushes first
            assert pub.closed and "closed" in repr(pub)
            with pytest.raises(ts.ResourceClosed):
                pub.send(1)
            with pytest.raises(ts.ResourceClosed):
                pub.wait_for_readers(timeout=0)
            np.testing.assert_array_equal(sub.get(timeout=STEP_S).data, np.arange(3))
            assert sub.get(timeout=STEP_S).data == "two"
            sub.close()
            sub.close()
            assert sub.closed and sub.end_reason == "unsubscribed"
            with pytest.raises(trio.EndOfChannel, match="unsubscribed"):
                sub.get(timeout=STEP_S)
            (info,) = [ch for ch in c.channels() if ch.name == "ch"]
            assert info.readers == 0
            also = c.open_subscription("ch")
            with also:
                assert [ch.readers for ch in c.channels() if ch.name == "ch"] == [1]
            assert also.closed

    await in_thread(scenario)


async def test_publish_takes_a_snapshot_of_reused_buffers(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="w") as c, SyncClient(url, name="r") as r:
            c.create_channel("ch")
            with r.subscribe("ch", policy="unbounded") as sub:
                c.publish("ch", 0)  # opens the publisher
                c.flush()
                sub.get(timeout=STEP_S)
                buffer = np.zeros(8)
                record: dict[str, Any] = {}
                for i in range(50):
                    buffer[:] = i  # reused at once, while the value may still be queued
                    record["i"] = i
                    c.publish("ch", buffer)
                    c.publish("ch", record)
                c.flush(timeout=STEP_S)
                for i in range(50):
                    assert sub.get(timeout=STEP_S).data[0] == i
                    assert sub.get(timeout=STEP_S).data == {"i": i}

    await in_thread(scenario)


async def test_publish_batches_without_a_crossing_per_value(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 20_000

    def scenario() -> None:
        with SyncClient(url, name="w") as c, SyncClient(url, name="r") as r:
            c.create_channel("ch")
            with r.subscribe("ch", policy="unbounded") as sub:
                c.publish("ch", -1)  # the first publish opens the publisher (one crossing)
                crossings = wakeups = 0
                original_call, original_wake = c._call, c._wake_drainer

                def counting_call(fn: Callable[[], Any]) -> Any:
                    nonlocal crossings
                    crossings += 1
                    return original_call(fn)

                def counting_wake() -> None:
                    nonlocal wakeups
                    wakeups += 1
                    original_wake()

                monkeypatch.setattr(c, "_call", counting_call)
                monkeypatch.setattr(c, "_wake_drainer", counting_wake)
                for i in range(count):
                    c.publish("ch", i)
                assert crossings == 0
                assert wakeups < count / 10  # woken only when the trio side was idle
                c.flush(timeout=STEP_S)
                assert crossings == 1
                values = [sub.get(timeout=STEP_S).data for _ in range(count + 1)]
                assert values == list(range(-1, count))
                assert sub.lost == 0

    await in_thread(scenario)


async def test_a_full_queue_blocks_the_writer_and_loses_nothing(url: str) -> None:
    # More than the reader's buffer, the server's writer window (1024 frames) and the queue.
    count = 3000

    def scenario() -> None:
        with SyncClient(url, name="w", queue_frames=8) as c, SyncClient(url, name="r") as r:
            c.create_channel("ch")
            with r.subscribe("ch", policy="block", size=4) as sub:
                c.publish("ch", 0)
                done = threading.Event()

                def writer() -> None:
                    for i in range(1, count):
                        c.publish("ch", i)
                    done.set()

                thread = threading.Thread(target=writer)
                thread.start()
                # The reader reads nothing yet: block holds the writer back, the queue fills,
                # and publish() waits instead of dropping.
                assert not done.wait(0.5)
                assert c._queued_frames() <= 8
                values = [sub.get(timeout=STEP_S).data for _ in range(count)]
                thread.join(STEP_S)
                assert done.is_set()
                assert values == list(range(count))
                assert sub.lost == 0

    await in_thread(scenario)


async def test_a_publish_timeout_bounds_the_wait_through_an_outage(server: ts.Server) -> None:
    # An instrument loop must not stall for the length of an outage: with timeout= the
    # wait for room (and for a first publish's publisher) ends in TimeoutError, that value is
    # not queued, and every value queued before goes out once the server is back.
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:

        def scenario() -> None:
            with (
                SyncClient(proxy.url, name="w", queue_frames=4) as c,
                SyncClient(server.tcp_url, name="r") as r,
            ):
                c.create_channel("loop")
                with r.subscribe("loop", policy="block") as sub, c.publisher("loop") as pub:
                    pub.wait_for_readers(timeout=STEP_S)
                    with pytest.raises(ts.InvalidArgument, match="timeout must be None or"):
                        pub.send(-1, timeout=-1)  # (nothing queued)
                    proxy.refuse()
                    trio.from_thread.run_sync(proxy.cut)
                    c.wait_state("reconnecting", timeout=STEP_S)
                    queued = 0
                    started = time.monotonic()
                    with pytest.raises(TimeoutError) as info:
                        # The publisher's window (1,024) and the queue (4) take the first.
                        # (1 s each: on a loaded machine the drain took 0.2 s to make room
                        # for one value now and then, and the loop ended at 896.)
                        for value in range(2000):
                            pub.send(value, timeout=1.0)
                            queued += 1
                    assert 1024 <= queued < 2000
                    assert time.monotonic() - started < STEP_S
                    assert "no room in the publish queue for a value of 'loop'" in str(info.value)
                    assert "reconnecting" in str(info.value)
                    # The timeout given, not what was left of it ("1.99999 s": a script user).
                    with pytest.raises(
                        TimeoutError, match=r"no publisher of 'other' opened within 0\.2 s"
                    ):
                        c.publish("other", 1, timeout=0.2)
                    proxy.accept()
                    c.wait_state("open", timeout=STEP_S)
                    values = [sub.get(timeout=STEP_S).data for _ in range(queued)]
                    assert values == list(range(queued))
                    assert sub.lost == 0

        await in_thread(scenario)


async def test_errors_in_the_background_are_raised_once_never_swallowed(url: str) -> None:
    def scenario() -> None:
        with (
            SyncClient(url, name="owner") as owner,
            SyncClient(url, name="w") as w,
            SyncClient(url, name="r") as r,
        ):
            owner.create_channel("ch")
            with r.subscribe("ch", policy="block", size=1):
                # The reader never reads: the values wait in the queue behind `block`...
                for i in range(1500):
                    assert w.publish("ch", i)
                time.sleep(0.2)
                assert w._queued_frames() > 0
                owner.delete_channel("ch")  # ...when the channel goes away under them
                with pytest.raises(ts.ChannelNotFound) as info:
                    w.flush(timeout=STEP_S)
                assert "were not sent" in str(info.value.__notes__)
                w.flush(timeout=STEP_S)  # reported once
                with pytest.raises(ts.ChannelNotFound):
                    w.publish("ch", 0)  # reopening the publisher fails at once
            owner.create_channel("other")
            raised_by_send = False
            with r.subscribe("other"):
                try:
                    with w.publisher("other") as pub:
                        owner.delete_channel("other")
                        try:
                            for _ in range(1000):  # until the server's word arrives
                                pub.send(1)
                                time.sleep(0.01)
                        except ts.ChannelNotFound:
                            raised_by_send = True
                except ts.ChannelNotFound:
                    pass  # values queued before the news came: reported by the closing flush
                # A value queued just before the news came, which the publisher's close on
                # that error did not wait for: reported once, by the client's next call
                # (else by its close, at the end of this block).
                with contextlib.suppress(ts.ChannelNotFound):
                    w.flush(timeout=STEP_S)
                w.flush(timeout=STEP_S)  # once
            assert raised_by_send
            with pytest.raises(ts.ResourceClosed):
                pub.send(1)

    await in_thread(scenario)


async def test_safe_from_several_threads(url: str) -> None:
    threads, per_thread = 8, 300

    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def rpc_add(self, k: int) -> int:
            self.n += k
            return self.n

    def scenario() -> None:
        with SyncClient(url, name="shared") as c, SyncClient(url, name="rec") as rec:
            c.create_channel("ch")
            rec.expose(Counter())
            with rec.subscribe("ch", policy="unbounded") as sub:
                c.publish("ch", [-1, -1])
                errors: list[BaseException] = []

                def worker(t: int) -> None:
                    try:
                        counter = c.rpc("rec")
                        for i in range(per_thread):
                            c.publish("ch", [t, i])
                            if i % 50 == 0:
                                counter.add(1)
                                c.channels()
                        c.flush(timeout=STEP_S)
                    except BaseException as exc:
                        errors.append(exc)

                workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join(DEADLINE_S / 2)
                assert not errors
                assert sub.get(timeout=STEP_S).data == [-1, -1]
                seen: dict[int, list[int]] = {t: [] for t in range(threads)}
                for _ in range(threads * per_thread):
                    t, i = sub.get(timeout=STEP_S).data
                    seen[t].append(i)
                # every value arrived, and each thread's values in the order it sent them
                assert all(seen[t] == list(range(per_thread)) for t in range(threads))
                assert c.rpc("rec").add(0) == threads * per_thread // 50

    await in_thread(scenario)


async def test_rpc_waits_for_its_provider_within_wait_timeout(url: str) -> None:
    class Late:
        def rpc_ping(self) -> str:
            return "pong"

    def scenario() -> None:
        with SyncClient(url, name="ctl") as ctl:
            with pytest.raises(ts.InvalidArgument, match="wait_timeout bounds wait_provider"):
                ctl.rpc("late", wait_timeout=1)
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="no provider named 'late' with methods within"):
                ctl.rpc("late", wait_provider=True, wait_timeout=0.3)
            assert time.monotonic() - started < STEP_S

            def provide() -> None:
                time.sleep(0.3)
                with SyncClient(url, name="late") as late:
                    late.expose(Late())
                    time.sleep(2.0)

            thread = threading.Thread(target=provide)
            thread.start()
            try:
                proxy = ctl.rpc("late", wait_provider=True, wait_timeout=STEP_S)
                assert proxy.ping() == "pong"
            finally:
                thread.join(STEP_S)

    await in_thread(scenario)


async def test_blocking_rpc_both_ways(url: str) -> None:
    class Instrument:
        def __init__(self) -> None:
            self.rate = 1.0

        def rpc_read_temperature(self) -> float:
            """Degrees Celsius."""
            time.sleep(0.01)  # blocking I/O: fine, sync methods run in a worker thread here
            return 21.5

        def rpc_set_rate(self, hz: float) -> float:
            if hz <= 0:
                raise ValueError("the rate must be positive")
            self.rate = hz
            return hz

        async def rpc_hang(self) -> None:
            await trio.sleep_forever()

        def rpc_frame(self, shape: list[int]) -> Any:
            return np.ones(shape, dtype=np.float32)

    def scenario() -> None:
        with SyncClient(url, name="instrument") as inst, SyncClient(url, name="ctl") as ctl:
            assert inst.expose(Instrument()) == [
                "frame",
                "hang",
                "read_temperature",
                "set_rate",
            ]
            inst.expose(Instrument(), name="spare")
            proxy = ctl.rpc("instrument", timeout=STEP_S)
            assert proxy.read_temperature() == 21.5
            assert proxy.read_temperature.__doc__ == "Degrees Celsius."
            assert proxy.set_rate(10) == 10
            assert proxy.spare.set_rate(hz=5) == 5
            assert proxy.call("spare.read_temperature", timeout=STEP_S) == 21.5
            assert proxy.frame([2, 3]).shape == (2, 3)
            with pytest.raises(TypeError):
                proxy.set_rate()
            with pytest.raises(ts.RemoteError) as info:
                proxy.set_rate(-1)
            assert info.value.type_name == "ValueError"
            with pytest.raises(ts.RpcTimeout):
                proxy.call("hang", timeout=0.2)
            proxy.timeout = 0.2  # the calls' default from now on (a copy here did nothing)
            with pytest.raises(ts.RpcTimeout, match=r"within 0\.2 s"):
                proxy.hang()
            with pytest.raises(ts.InvalidArgument):
                proxy.timeout = -1
            assert proxy.timeout == 0.2
            with pytest.raises(ts.RpcError):
                ctl.rpc("nobody")
            with pytest.raises(ts.RpcError, match="exposes no method 'set_rat'"):
                proxy.set_rat(10)

    await in_thread(scenario)


async def test_a_trio_client_and_a_sync_client_call_each_other(url: str) -> None:
    class Echo:
        async def rpc_echo(self, value: Any) -> Any:
            return value

    async with ts.open_client(url, name="async-side") as client:
        client.expose(Echo())

        def scenario() -> None:
            with SyncClient(url, name="sync-side") as c:
                c.expose(Echo())
                assert c.rpc("async-side").echo([1, "two"]) == [1, "two"]

        await in_thread(scenario)
        # the sync client is gone now; calling it fails at once
        with pytest.raises(ts.RpcError):
            await client.rpc("sync-side")


async def test_blocking_calls_refused_in_a_thread_that_runs_trio(url: str) -> None:
    with pytest.raises(RuntimeError, match="runs trio"):
        SyncClient(url)

    class Reentrant:
        def __init__(self) -> None:
            self.client: SyncClient | None = None

        def rpc_channels(self) -> int:
            # Runs in the SyncClient's own trio thread (thread=False): a blocking call here
            # would deadlock, so it is refused.
            assert self.client is not None
            return len(self.client.channels())

    def scenario() -> None:
        provider = Reentrant()
        with SyncClient(url, name="p") as c:
            provider.client = c
            c.expose(provider, thread=False)
            with pytest.raises(ts.RemoteError) as info:
                c.rpc("p").channels()
            assert info.value.type_name == "RuntimeError"
            assert "runs trio" in info.value.message

    await in_thread(scenario)


async def test_close_is_refused_in_a_thread_that_runs_trio(url: str) -> None:
    # Every other blocking method was refused there; close() blocked the trio program's event
    # loop for up to its flush's 10 s (a script user, with the server gone).
    client = await in_thread(lambda: SyncClient(url, name="w"))
    try:
        with pytest.raises(RuntimeError, match=r"SyncClient.close\(\) blocks, and this thread"):
            client.close()
        assert not client.closed  # refused: still open, to close from a thread
    finally:
        await in_thread(client.close)
    assert client.closed


async def test_close_is_idempotent_flushes_and_ends_the_thread(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="r") as r:
            c = SyncClient(url, name="w")
            c.create_channel("ch", keep=True)
            with r.subscribe("ch", policy="unbounded") as sub:
                c.publish("ch", 0)
                for i in range(1, 1000):
                    c.publish("ch", i)
                c.close()  # sends what is queued first
                c.close()
                assert c.closed
                assert not [t for t in sync_threads() if t.name.endswith(" w")]
                assert [sub.get(timeout=STEP_S).data for _ in range(1000)] == list(range(1000))
            with pytest.raises(ts.ConnectionClosed):
                c.channels()
            with pytest.raises(ts.ConnectionClosed):
                c.publish("ch", 1)

    await in_thread(scenario)


def first_of_a_batch(r: SyncClient, w: SyncClient, count: int) -> ts.SyncSubscription:
    """A subscription of r's to w's new channel "ch" that has read the first of ``count``
    values, the rest of them taken into this thread in the same batch."""
    w.create_channel("ch", keep=True)
    sub = r.subscribe("ch", policy="unbounded")
    for i in range(count):
        w.publish("ch", i)
    w.flush(timeout=STEP_S)
    deadline = time.monotonic() + STEP_S
    while sub.statistics().buffered < count - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sub.get(timeout=STEP_S).data == 0  # takes a batch into this thread
    return sub


async def test_get_after_close_raises_even_with_messages_taken_into_the_thread(
    url: str,
) -> None:
    # close() says messages not read yet are dropped; get() went on handing out the rest of
    # the batch it had taken into the caller's thread (16 of them), then raised.
    def scenario() -> None:
        with SyncClient(url, name="r") as r, SyncClient(url, name="w") as w:
            sub = first_of_a_batch(r, w, 50)
            sub.close()
            with pytest.raises(trio.EndOfChannel, match="unsubscribed"):
                sub.get(timeout=0)
            assert list(sub) == []

    await in_thread(scenario)


async def test_a_get_waiting_for_another_threads_sees_a_close_that_came_meanwhile(
    url: str,
) -> None:
    # It took the turn after the close and handed out a message of the batch in this thread.
    def scenario() -> None:
        with SyncClient(url, name="r") as r, SyncClient(url, name="w") as w:
            sub = first_of_a_batch(r, w, 5)
            with sub._turn:
                sub._busy = True  # as another thread's get() while it crosses over
            outcome: list[object] = []

            def waiting_get() -> None:
                try:
                    outcome.append(sub.get(timeout=STEP_S).data)
                except trio.EndOfChannel as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=waiting_get)
            thread.start()
            while thread.is_alive() and not sub._turn._waiters:  # type: ignore[attr-defined]
                time.sleep(0.001)
            sub.close()
            with sub._turn:  # the other get() is done: the turn passes on
                sub._busy = False
                sub._turn.notify_all()
            thread.join(STEP_S)
            assert len(outcome) == 1 and isinstance(outcome[0], trio.EndOfChannel), outcome

    await in_thread(scenario)


async def test_repr_says_the_state_and_a_closed_publisher_has_no_readers(
    server: ts.Server,
) -> None:
    url = server.tcp_url
    assert url is not None
    async with open_proxy(url) as proxy:

        def scenario() -> None:
            with (
                SyncClient(proxy.url, name="w", reconnect=ts.Reconnect(initial=0.2)) as c,
                SyncClient(url, name="r") as r,
            ):
                assert repr(c) == f"<SyncClient {proxy.url} open>"
                c.create_channel("ch")
                with r.subscribe("ch"):
                    pub = c.publisher("ch")
                    pub.wait_for_readers(timeout=STEP_S)
                    assert pub.readers == 1
                    proxy.refuse()
                    trio.from_thread.run_sync(proxy.cut)
                    c.wait_state("reconnecting", timeout=STEP_S)
                    assert repr(c) == f"<SyncClient {proxy.url} reconnecting>"
                    proxy.accept()
                    c.wait_state("open", timeout=STEP_S)
                    pub.close()
                    assert pub.readers == 0  # not the last count it heard
            assert repr(c) == f"<SyncClient {proxy.url} closed>"

        await in_thread(scenario)


def five_in_the_window_while_reconnecting(
    c: SyncClient, pub: ts.SyncPublisher, proxy: TcpProxy
) -> None:
    """Cut ``c``'s connection for good (the proxy refuses it back), send five values, and
    wait until the drain has handed them to ``pub``'s window (waiting for a connection)."""
    proxy.refuse()
    trio.from_thread.run_sync(proxy.cut)
    c.wait_state("reconnecting", timeout=STEP_S)
    for value in range(5):
        pub.send(value)
    deadline = time.monotonic() + STEP_S
    while c._queued_frames() and time.monotonic() < deadline:
        time.sleep(0.01)


async def test_a_publisher_closed_on_an_error_while_reconnecting_says_what_it_drops(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Values handed to the publisher while the client reconnects wait in its window; leaving
    # its `with` block on an exception (Ctrl-C) closes it at once and drops them: that was
    # silent (README: "leaving the with block on an exception logs that instead of waiting").
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:

        def scenario() -> None:
            with SyncClient(proxy.url, name="w") as c:
                c.create_channel("dd")
                with (
                    c.subscribe("dd"),
                    pytest.raises(KeyboardInterrupt),
                    c.publisher("dd") as pub,
                ):
                    five_in_the_window_while_reconnecting(c, pub, proxy)
                    raise KeyboardInterrupt
                proxy.accept()

        with caplog.at_level("WARNING", logger="trio_stream"):
            await in_thread(scenario)
    assert "5 values sent to 'dd' were not delivered" in caplog.text
    # Not "a close waits 10 s for it": this one did not (a trio developer's Ctrl-C).
    assert "closed without waiting for it to come back (on an exception" in caplog.text


async def test_a_publisher_close_interrupted_while_reconnecting_says_what_it_drops(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Ctrl-C in pub.close() while the values send() took waited in the window for the
    # connection: they were dropped without a word (a review).
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:

        def scenario() -> None:
            with SyncClient(proxy.url, name="w") as c:
                c.create_channel("dd")
                with c.subscribe("dd"):
                    pub = c.publisher("dd")
                    five_in_the_window_while_reconnecting(c, pub, proxy)
                    call = c._call

                    def interrupted(fn: Any, keep: Any = None) -> Any:
                        if getattr(fn, "func", None) == c._flush_and_close_publisher:
                            raise KeyboardInterrupt  # as Ctrl-C in the flush's wait
                        return call(fn, keep)

                    c._call = interrupted  # type: ignore[method-assign]
                    with pytest.raises(KeyboardInterrupt):
                        pub.close()
                    c._call = call  # type: ignore[method-assign]
                proxy.accept()

        with caplog.at_level("WARNING", logger="trio_stream"):
            await in_thread(scenario)
    assert "5 values sent to 'dd' were not delivered" in caplog.text


async def test_a_close_that_drops_a_value_says_so_once_in_the_singular(
    server: ts.Server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The close's error counted the value, and the trio client's close logged it again:
    # one value dropped read as two ("1 values", "1 published values").
    monkeypatch.setattr(sync_module, "CLOSE_FLUSH_S", 0.5)
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:

        def scenario() -> str:
            c = SyncClient(proxy.url, name="once")
            c.create_channel("one")
            with c.subscribe("one"):
                pub = c.publisher("one")
                proxy.refuse()
                trio.from_thread.run_sync(proxy.cut)
                c.wait_state("reconnecting", timeout=STEP_S)
                pub.send(1)
                with pytest.raises(ts.ConnectionClosed) as dropped:
                    c.close()
            return str(dropped.value)

        with caplog.at_level("WARNING", logger="trio_stream"):
            message = await in_thread(scenario)
    assert message.startswith(
        "1 published value to 'one' was not sent before the SyncClient closed"
    )
    assert "not delivered" not in caplog.text, caplog.text


async def test_a_close_on_a_stall_not_found_yet_says_what_it_drops(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The link stops forwarding and the script closes before the heartbeat finds out: the
    # close waited its flush bound and returned as if all were sent (a network tester), while
    # the values written on the stalled link never reached the reader.
    monkeypatch.setattr(sync_module, "CLOSE_FLUSH_S", 0.5)
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:

        def scenario() -> None:
            c = SyncClient(proxy.url, name="stalled")
            c.create_channel("st")
            with SyncClient(server.tcp_url, name="r") as r, r.subscribe("st", policy="block"):
                pub = c.publisher("st")
                pub.wait_for_readers(timeout=STEP_S)
                for value in range(5):
                    pub.send(value)
                c.flush(timeout=STEP_S)
                trio.from_thread.run_sync(proxy.hold)
                for value in range(5, 105):
                    pub.send(value)
                c.close()  # (not raised: on a slow server they may be on their way)

        with caplog.at_level("WARNING", logger="trio_stream"):
            await in_thread(scenario)
    assert "100 values written to the server were not acknowledged when the SyncClient" in (
        caplog.text
    )
    assert "did not answer the publisher's close" not in caplog.text  # said once


async def test_a_forked_child_is_told_to_make_its_own_client(server: ts.Server) -> None:
    # The child of os.fork has a copy of the SyncClient but not its trio thread: a call must
    # say so at once (it waited for good), and the parent's client must go on working.
    assert server.tcp_url is not None
    with trio.fail_after(DEADLINE_S):
        result = await trio.run_process(
            [sys.executable, str(FORK_CHILD), server.tcp_url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, (lines, result.stderr.decode()[-2000:])
    for call in ("channels", "publish", "flush"):
        line = next(line for line in lines if line.startswith(f"{call} "))
        assert line.startswith(f"{call} ConnectionClosed: "), line
        assert "cannot cross a fork" in line and "make a new SyncClient in the child" in line
    assert "close returned" in lines  # nothing of the parent's to close
    assert lines[-2:] == ["child exit 0", "parent ok"]


async def test_pickling_is_refused_with_a_clear_error(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="p") as c:
            c.create_channel("ch")
            with c.subscribe("ch") as sub, c.publisher("ch") as pub:
                for thing, what in (
                    (c, "SyncClient"),
                    (sub, "SyncSubscription"),
                    (pub, "SyncPublisher"),
                ):
                    with pytest.raises(TypeError, match=f"a {what} cannot be pickled"):
                        pickle.dumps(thing)

    await in_thread(scenario)


async def test_connection_errors_are_raised_by_the_constructor(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="taken"), pytest.raises(ts.NameInUse):
            SyncClient(url, name="taken")
        with pytest.raises(ts.ConnectionClosed):
            SyncClient("tcp://127.0.0.1:1", name="nowhere")
        assert not [t for t in sync_threads() if t.name.endswith((" taken", " nowhere"))]

    await in_thread(scenario)


async def test_works_under_a_running_asyncio_loop(url: str) -> None:
    # Jupyter runs cells inside an asyncio loop in the main thread: nothing here may care.
    async def cell() -> list[str]:
        with SyncClient(url, name="notebook") as c:
            c.create_channel("nb")
            with c.subscribe("nb", policy="unbounded") as sub:
                c.publish("nb", "hello")
                c.flush()
                assert sub.get(timeout=STEP_S).data == "hello"
            return [ch.name for ch in c.channels()]

    names = await in_thread(lambda: asyncio.run(cell()))
    assert "nb" in names


async def interrupt_child(
    url: str, mode: str, how: str, before: Callable[[], None] = lambda: None
) -> tuple[int, str, float, str]:
    """Run tests/sync_child.py until it blocks, call ``before()``, then send it SIGINT.

    Returns its exit code, its output, the seconds from SIGINT to its exit and its stderr.
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, str(CHILD), url, mode, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        output = b""
        with trio.fail_after(30):
            while b"ready" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, "the child ended before it was ready"
                output += chunk
        await trio.sleep(0.2)  # let it settle into the blocking call
        before()
        process.send_signal(signal.SIGINT)
        interrupted = trio.current_time()
        with trio.fail_after(15):  # well under the time any hang would take
            await process.wait()
            exited = trio.current_time()
            output += await read_to_end(process.stdout)
            errors = await read_to_end(process.stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(), exited - interrupted, errors.decode()


@pytest.mark.parametrize(
    ("mode", "how"),
    [
        ("get", "catch"),
        ("contended", "catch"),
        ("publish", "catch"),
        ("rpc", "catch"),
        ("connect", "catch"),
        ("connect", "raw"),
        ("get", "raw"),
        ("noclose", "raw"),
    ],
)
async def test_ctrl_c_neither_hangs_nor_leaves_the_thread(
    server: ts.Server, mode: str, how: str
) -> None:
    assert server.tcp_url is not None
    returncode, text, took_s, errors = await interrupt_child(server.tcp_url, mode, how)
    if how == "catch":
        assert returncode == 0, text
        assert "interrupted; SyncClient threads alive: 0" in text
    else:
        assert returncode != 0  # ended by KeyboardInterrupt, not hanging
        assert errors.rstrip().endswith("KeyboardInterrupt"), errors
    assert took_s < 5.0, text  # promptly: not after a join's or a connect's timeout


async def test_ctrl_c_of_a_provider_does_not_wait_for_its_running_sync_method(
    server: ts.Server,
) -> None:
    # A sync method runs in its worker thread (a minute-long measurement), which nothing can
    # interrupt: the client's close waited for it, up to its thread's join bound (5 s).
    assert server.tcp_url is not None
    returncode, text, took_s, errors = await interrupt_child(
        server.tcp_url, "busy-provider", "catch"
    )
    assert returncode == 0, errors
    assert "interrupted; SyncClient threads alive:" in text  # (the caller's may live on)
    assert took_s < 3.0, errors


async def test_ctrl_c_of_a_script_that_never_closes_says_what_it_drops_at_once(
    server: ts.Server,
) -> None:
    # Without a with block, the client is closed at exit. After Ctrl-C that close waited
    # 10 s for a queue no reader took, silently; now it drops the queue at once and says so.
    assert server.tcp_url is not None
    returncode, _, took_s, errors = await interrupt_child(server.tcp_url, "noclose-publish", "raw")
    assert returncode != 0
    assert "KeyboardInterrupt" in errors
    dropped = (
        r"published values? to 'child' (was|were) dropped: the SyncClient closed without "
        "sending (it|them)"
    )
    assert re.search(dropped, errors), errors  # one value, or more
    assert took_s < 5.0, errors


async def test_ctrl_c_in_a_close_waiting_to_flush_says_what_it_drops(server: ts.Server) -> None:
    # close() had taken the client off the exit handler's list before it waited, so a
    # Ctrl-C there dropped the queue without a word (and Python 3.11's join, interrupted,
    # takes the thread for ended: counting after it missed what the thread had).
    assert server.tcp_url is not None
    returncode, _, took_s, errors = await interrupt_child(server.tcp_url, "close", "raw")
    assert returncode != 0
    assert errors.rstrip().endswith(
        "published values to 'child' were dropped: the close was interrupted before the "
        "server took them"
    ), errors
    dropped = int(errors.rstrip().splitlines()[-1].split()[0])
    assert 0 < dropped <= 3000
    assert took_s < 5.0, errors


async def test_ctrl_c_in_the_exit_handlers_flush_says_what_it_drops(server: ts.Server) -> None:
    # The exit handler caught the KeyboardInterrupt that carries the count (close()'s note,
    # as above): the values were lost without a word, exit code 0 (a lab scientist).
    assert server.tcp_url is not None
    _, _, took_s, errors = await interrupt_child(server.tcp_url, "exit-flush", "raw")
    said = re.search(
        r"at exit, interrupted: (\d+) published values to 'child' were dropped: the close was "
        "interrupted before the server took them",
        errors,
    )
    assert said is not None, errors
    assert 0 < int(said.group(1)) <= 3000
    assert took_s < 5.0, errors


@pytest.mark.parametrize("mode", ["get", "contended", "iterate", "publish", "rpc"])
async def test_ctrl_c_shows_the_script_s_frames_only(server: ts.Server, mode: str) -> None:
    # Python's usual KeyboardInterrupt traceback, but without threading's wait that the
    # SyncClient's call blocked in: the script's own line and the SyncClient method it called.
    # (A publish() waiting for room in a full queue, and a get() waiting for another
    # thread's, showed Condition.wait's frames.)
    assert server.tcp_url is not None
    returncode, _, _, errors = await interrupt_child(server.tcp_url, mode, "raw")
    assert returncode != 0
    assert errors.rstrip().endswith("KeyboardInterrupt"), errors
    assert "threading.py" not in errors and "sync_child.py" in errors, errors
    if mode in ("get", "contended", "iterate"):  # the reading method's line, nothing below
        assert "_portal.py" not in errors and errors.count("sync.py") == 1, errors


async def failing_script(script: str) -> str:
    """Run ``script`` in a new interpreter, which must fail (exit 1); its stderr."""
    result = await trio.run_process(
        [sys.executable, "-c", script], capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 1, result.stderr.decode()
    return result.stderr.decode()


async def test_a_refused_connection_is_one_short_traceback() -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    script = f"import trio_stream as ts; ts.SyncClient('tcp://127.0.0.1:{port}')"
    errors = await failing_script(script)
    last = errors.rstrip().splitlines()[-1]
    assert last.startswith("trio_stream.ConnectionClosed: cannot connect to"), errors
    assert "Connection refused (no server listens there" in last
    # Not the chained OSError, trio's exception group and the trio thread's frames (60 lines).
    assert "ExceptionGroup" not in errors and "direct cause" not in errors, errors
    assert len(errors.splitlines()) <= 8, errors


async def test_a_get_that_times_out_is_a_short_traceback(server: ts.Server) -> None:
    # The script's line and the SyncClient method, not the trio thread's frames it crossed.
    assert server.tcp_url is not None
    script = (
        "import trio_stream as ts\n"
        f"c = ts.SyncClient({server.tcp_url!r})\n"
        "c.create_channel('quiet')\n"
        "with c.subscribe('quiet') as sub:\n"
        "    sub.get(timeout=0.2)\n"
    )
    errors = await failing_script(script)
    assert errors.rstrip().splitlines()[-1] == (
        "TimeoutError: no message on 'quiet' within 0.2 s"
    ), errors
    assert "_run_call" not in errors and "trio/" not in errors, errors


async def test_a_get_at_the_channels_end_is_a_short_traceback(server: ts.Server) -> None:
    # EndOfChannel crossed with the trio thread's frames (_run_call, _take, receive_nowait).
    assert server.tcp_url is not None
    script = (
        "import trio_stream as ts\n"
        f"c = ts.SyncClient({server.tcp_url!r})\n"
        "c.create_channel('brief')\n"
        "with c.subscribe('brief') as sub:\n"
        "    c.delete_channel('brief')\n"
        "    sub.get(timeout=5)\n"
    )
    errors = await failing_script(script)
    assert errors.rstrip().splitlines()[-1].startswith("trio_stream.SubscriptionEnded: "), errors
    assert "_run_call" not in errors and "receive_nowait" not in errors, errors


@pytest.mark.parametrize("mode", ["get", "publish", "rpc"])
async def test_ctrl_c_returns_promptly_even_from_a_frozen_server(
    server: ts.Server, mode: str
) -> None:
    # The child reaches the server through a proxy that stops forwarding just before the
    # interrupt: the server's answers to unsubscribe, close and goodbye never come. Leaving
    # `with c.subscribe()` used to wait for them with no limit.
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:
        returncode, text, took_s, _ = await interrupt_child(proxy.url, mode, "catch", proxy.hold)
    assert returncode == 0, text
    assert "interrupted; SyncClient threads alive: 0" in text
    # The client's close waits at most 1 s for the server to end the connection after its
    # goodbye (Client.aclose: the name is free at once for a script started again); a frozen
    # server never does. The rest is the child's own exit: 1.06-1.48 s measured here, under
    # a loaded machine (a CI run with two test workers) more.
    assert took_s < 2.5, text


async def test_ctrl_c_caught_again_and_again_in_a_publish_loop_leaves_the_client_working(
    server: ts.Server,
) -> None:
    # An interrupt that landed as `with self._cond` released the publish queue's lock (in
    # Condition.__exit__, Python code) left it held: the client's trio thread waited on it
    # for good, flush and close with it, and the script's exit hung (an outside audit froze
    # it in 7 of 7 runs, after 3 to 27 interrupts).
    assert server.tcp_url is not None
    result = await trio.run_process(
        [sys.executable, str(INTERRUPTED_PUBLISHER), server.tcp_url, "interrupted", "200"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    text = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0 and text.startswith("ok "), text
    assert int(text.split()[1]) >= 200, text  # it was interrupted, again and again


async def test_ctrl_c_between_queueing_a_value_and_waking_the_drain_stalls_nothing(
    url: str,
) -> None:
    # A Ctrl-C that landed after publish() queued a value and took the drain's wake-up, but
    # before it sent it, left the drain asleep with the value queued and marked awake: no
    # later publish woke it, flush timed out and close gave up on every value ("the server
    # took none of them for 10 s", once in a CI run with four test workers). The interrupt
    # comes here where it is rarest: in the call that sends the wake-up.
    def scenario() -> tuple[float, list[float]]:
        with SyncClient(url, name="script") as c, SyncClient(url, name="rec") as rec:
            c.create_channel("ch")
            sub = rec.subscribe("ch", policy="block", size=100)
            send_wake_up = c._portal.run_sync_soon
            interrupted: list[Callable[[], object]] = []

            def interrupted_once(fn: Callable[[], object]) -> None:
                if fn == c._wake_drainer and not interrupted:
                    interrupted.append(fn)
                    raise KeyboardInterrupt
                send_wake_up(fn)

            c.flush(timeout=5)  # the drain asleep, as between bursts
            c._portal.run_sync_soon = interrupted_once  # type: ignore[method-assign]
            with pytest.raises(KeyboardInterrupt):
                c.publish("ch", 1.0)
            assert interrupted
            started = time.monotonic()
            c.flush(timeout=5)
            took = time.monotonic() - started
            c.publish("ch", 2.0)
            c.flush(timeout=5)
            got = [sub.get(timeout=5).data for _ in range(2)]
            return took, got

    took, got = await in_thread(scenario)
    assert got == [1.0, 2.0]
    assert took < 2.0


async def test_ctrl_c_in_get_loses_no_message(server: ts.Server) -> None:
    # A Ctrl-C that lands while the trio side has just taken a batch for get() must not drop
    # it: the child reads numbered values through hundreds of interrupts and must see each
    # exactly once, in order.
    assert server.tcp_url is not None
    count = 20_000
    process = await trio.lowlevel.open_process(
        [sys.executable, str(INTERRUPTED_READER), server.tcp_url, "numbers", str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, pending = process.stdout, b""

    async def next_line() -> str:
        nonlocal pending
        while b"\n" not in pending:
            chunk = await stdout.receive_some()
            if not chunk:
                return pending.decode()
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        return line.decode()

    interrupts = 0
    verdict = ""
    try:
        async with (
            ts.open_client(server.tcp_url, name="numbers-writer") as writer,
            trio.open_nursery() as nursery,
        ):
            await writer.create_channel("numbers")

            async def publish() -> None:
                async with writer.publisher("numbers") as pub:
                    await pub.wait_for_readers()
                    for i in range(count):
                        await pub.send(i)

            with trio.fail_after(DEADLINE_S):
                while line := await next_line():
                    if line == "ready":
                        nursery.start_soon(publish)
                    elif line != "interrupted":
                        verdict = line
                        break
                    # Ctrl-C at a random moment of the reading, the next only once the
                    # child has caught this one; then a quiet end, for the child's verdict.
                    if interrupts < 300:
                        await trio.sleep(random.uniform(0.001, 0.006))
                        process.send_signal(signal.SIGINT)
                        interrupts += 1
        with trio.fail_after(STEP_S):
            await process.wait()
            errors = await read_to_end(process.stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert verdict.startswith("ok"), (verdict, errors.decode()[-2000:])
    assert process.returncode == 0
    assert interrupts >= 100, interrupts  # the reading really was interrupted, often


def test_sync_client_is_exported() -> None:
    assert ts.SyncClient is SyncClient


def flush_into(client: SyncClient, outcomes: list[BaseException]) -> None:
    """``client.flush()`` with no timeout, its error (if any) into ``outcomes``."""
    try:
        client.flush()
    except BaseException as exc:  # what the test is about
        outcomes.append(exc)


@contextlib.contextmanager
def fifty_held(url: str, proxy: TcpProxy) -> Iterator[tuple[SyncClient, ts.SyncPublisher]]:
    """A reconnect=False writer through ``proxy`` (left open: the test closes it) whose
    server acknowledged ten values and not the fifty after them (the proxy held), its reader
    subscribed meanwhile (from the scenario's thread)."""
    c = SyncClient(proxy.url, name="w", reconnect=False)
    with SyncClient(url, name="r") as r:
        c.create_channel("ch")
        with r.subscribe("ch"):
            pub = c.publisher("ch")
            pub.wait_for_readers(timeout=STEP_S)
            for value in range(10):
                pub.send(value)
            c.flush(timeout=STEP_S)  # these ten are acknowledged
            trio.from_thread.run_sync(proxy.hold)
            for value in range(50):
                pub.send(value)
            with pytest.raises(TimeoutError):
                c.flush(timeout=0.5)  # written, never acknowledged
            yield c, pub


@pytest.mark.parametrize("background_error", [False, True])
async def test_values_a_lost_connection_took_are_counted_by_close(
    server: ts.Server, background_error: bool
) -> None:
    """Without reconnection, values written but never acknowledged when the connection is
    lost for good are not delivered, as far as anyone can tell: close() says how many (it
    returned silently: the publisher counted them only while reconnecting)."""
    url = server.tcp_url
    assert url is not None
    async with open_proxy(url) as proxy:

        def scenario() -> None:
            with fifty_held(url, proxy) as (c, pub):
                # Flushes waiting at the cut fail; none is a value of its own (each
                # counted one more in close()'s count).
                flushes: list[BaseException] = []
                flushers = [
                    threading.Thread(target=flush_into, args=(c, flushes)) for _ in range(2)
                ]
                for thread in flushers:
                    thread.start()
                if background_error:
                    # More than the publisher's window: the rest wait in the queue, and
                    # the loss fails their send in the background.
                    for value in range(2000):
                        pub.send(value)
                time.sleep(0.2)  # the flushes wait
                trio.from_thread.run_sync(proxy.cut)
                c.wait_state("closed", timeout=STEP_S)
                for thread in flushers:
                    thread.join(STEP_S)
                assert [type(e) for e in flushes] == [ts.ConnectionClosed] * 2, flushes
            if not background_error:
                # Not "call flush(timeout=...)": no server is coming back to a reconnect=False
                # one.
                with pytest.raises(
                    ts.ConnectionClosed,
                    match=r"^50 published values to 'ch' were not delivered: .* for good",
                ):
                    c.close()
                return
            # The publish that failed in the background is what close() raises; the count
            # goes with it (it went to a log nobody reads in a script).
            with pytest.raises(ts.ConnectionClosed) as raised:
                c.close()
            notes = "\n".join(getattr(raised.value, "__notes__", []))
            assert "2050 published values to 'ch' were not delivered" in notes, (
                raised.value,
                notes,
            )

        await in_thread(scenario)


async def test_a_publishers_close_after_a_connection_lost_for_good_says_its_own_loss(
    server: ts.Server,
) -> None:
    """The README's promise ("closing a publisher (or the SyncClient) after it raises
    ConnectionClosed saying how many values the server had not acknowledged"): the
    publisher's close returned quietly, and only the client's close said them (a lab pass;
    the trio Publisher's close raised). Said once: the client's close then says nothing."""
    url = server.tcp_url
    assert url is not None
    async with open_proxy(url) as proxy:

        def scenario() -> None:
            with fifty_held(url, proxy) as (c, pub):
                trio.from_thread.run_sync(proxy.cut)
                c.wait_state("closed", timeout=STEP_S)
                with pytest.raises(
                    ts.ConnectionClosed, match=r"^50 values sent to 'ch' were not delivered"
                ):
                    pub.close()
                pub.close()  # idempotent: said once
            c.close()

        await in_thread(scenario)


async def test_a_wait_for_readers_that_a_close_ends_raises_resource_closed(url: str) -> None:
    # As after the close: it said ConnectionClosed ("the call was cancelled").
    def scenario() -> None:
        c = SyncClient(url, name="w")
        c.create_channel("ch")
        pub = c.publisher("ch")
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                pub.wait_for_readers(5, timeout=STEP_S)
            except BaseException as exc:  # what the test is about
                outcome.append(exc)

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)  # it waits
        c.close()
        thread.join(STEP_S)
        assert [type(e) for e in outcome] == [ts.ResourceClosed], outcome

    await in_thread(scenario)


async def test_closing_the_client_ends_a_reader_threads_loop(server: ts.Server) -> None:
    # A notebook: a reader thread loops over a subscription made without `with`, and the
    # main thread closes the client. The loop raised ConnectionClosed ("the call was
    # cancelled: the SyncClient is closing") out of the thread; it ends, as after sub.close().
    url = server.tcp_url
    assert url is not None

    def scenario() -> None:
        c = SyncClient(url, name="notebook")
        c.create_channel("ch")
        sub = c.subscribe("ch")
        pub = c.publisher("ch")
        outcome: list[object] = []
        got_one = threading.Event()

        def reader() -> None:
            try:
                for _ in sub:
                    got_one.set()
                # Read at once, as a recorder does to tell why: it was None (the trio
                # side's end came later), and then worded otherwise than get()'s error.
                outcome.append(f"ended: {sub.end_reason}")
            except BaseException as exc:  # the failure this test is about
                outcome.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        pub.wait_for_readers(timeout=STEP_S)
        pub.send(1)
        assert got_one.wait(STEP_S)
        c.close()
        thread.join(STEP_S)
        assert outcome == ["ended: the SyncClient was closed"]
        assert sub.closed and pub.closed
        assert repr(pub) == "<SyncPublisher 'ch' closed>" and repr(sub).endswith("closed>")
        with pytest.raises(ts.ResourceClosed):  # as after its own close
            pub.send(2)
        with pytest.raises(ts.ResourceClosed):  # as documented (it was ConnectionClosed)
            pub.wait_for_readers(timeout=0)
        with pytest.raises(trio.EndOfChannel, match="the SyncClient was closed"):
            sub.get(timeout=0)

    await in_thread(scenario)


async def test_a_lost_connection_and_its_return_are_said_once_each(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # A script's calls wait while the client reconnects: without a line on stderr it seemed
    # to hang. A get() that times out meanwhile says why nothing came.
    url = server.tcp_url
    assert url is not None
    async with open_proxy(url) as proxy:

        def scenario() -> None:
            with SyncClient(proxy.url, name="patient", reconnect=ts.Reconnect(initial=0.1)) as c:
                c.create_channel("ch")
                with c.subscribe("ch") as sub, c.publisher("ch") as pub:
                    proxy.refuse()
                    trio.from_thread.run_sync(proxy.cut)
                    c.wait_state("reconnecting", timeout=STEP_S)
                    with pytest.raises(TimeoutError) as timed_out:
                        sub.get(timeout=0.05)
                    assert str(timed_out.value) == (
                        f"no message on 'ch' within 0.05 s (the connection to {proxy.url} "
                        "is lost; reconnecting)"
                    )
                    with pytest.raises(TimeoutError) as timed_out:  # a script's bound
                        c.wait_state("open", timeout=0.05)
                    assert str(timed_out.value) == (
                        f"not 'open' within 0.05 s (the connection to {proxy.url} is lost; "
                        "reconnecting)"
                    )
                    # So does a flush of values the server cannot take meanwhile.
                    assert pub.send(1)
                    with pytest.raises(TimeoutError) as timed_out:
                        c.flush(timeout=0.05)
                    assert str(timed_out.value) == (
                        "the values published were not all taken by the server within "
                        f"0.05 s (the connection to {proxy.url} is lost; reconnecting)"
                    )
                    proxy.accept()
                    c.wait_state("open", timeout=STEP_S)
                    deadline = time.monotonic() + STEP_S
                    while "reconnected" not in caplog.text and time.monotonic() < deadline:
                        time.sleep(0.01)

        with caplog.at_level("WARNING", logger="trio_stream"):
            await in_thread(scenario)
    said = [r.getMessage() for r in caplog.records if r.name == "trio_stream.sync"]
    # Not said twice: its trio client's own lines are left to the SyncClient's.
    assert not [r for r in caplog.records if r.name == "trio_stream._client"], caplog.text
    assert said[0] == (
        f"SyncClient 'patient': the connection to {proxy.url} is lost; reconnecting (calls "
        "wait meanwhile; Ctrl-C stops)"
    )
    assert said[1].startswith(f"SyncClient 'patient': reconnected to {proxy.url} after ")
    assert said[1].endswith(" s (the same server, still running)"), said
    assert len(said) == 2, said


async def test_sync_calls_check_their_arguments_before_waiting(url: str) -> None:
    # flush(-1) raised trio's "`seconds` must be non-negative", get(timeout="1") a bare
    # TypeError, SyncClient([]) an IndexError, and wait_state() with no state waited for ever.
    def scenario() -> None:
        with pytest.raises(ts.InvalidArgument, match="at least one URL"):
            SyncClient([])
        with pytest.raises(ts.InvalidArgument, match="url must be a str"):
            SyncClient(None)  # type: ignore[arg-type]
        # A plain ValueError, which `except ts.TrioStreamError` did not catch:
        with pytest.raises(ts.InvalidArgument, match="queue_frames must be a whole number >= 1"):
            SyncClient(url, queue_frames=0)
        with pytest.raises(ts.InvalidArgument, match="queue_bytes must be a whole number >= 1"):
            SyncClient(url, queue_bytes=2.5)  # type: ignore[arg-type]
        SyncClient(url, name="whole", queue_bytes=64e6).close()  # type: ignore[arg-type]
        with SyncClient(url, name="w") as c:
            c.create_channel("ch")
            sub = c.subscribe("ch")
            with c.publisher("ch") as pub:
                for bad in (-1, "1", True, math.nan):
                    with pytest.raises(ts.InvalidArgument, match="timeout must be"):
                        c.flush(timeout=bad)  # type: ignore[arg-type]
                    with pytest.raises(ts.InvalidArgument, match="timeout must be"):
                        sub.get(timeout=bad)  # type: ignore[arg-type]
                    with pytest.raises(ts.InvalidArgument, match="timeout must be"):
                        pub.wait_for_readers(timeout=bad)  # type: ignore[arg-type]
                    with pytest.raises(ts.InvalidArgument, match="timeout must be"):
                        c.wait_state("open", timeout=bad)  # type: ignore[arg-type]
                with pytest.raises(ts.InvalidArgument, match="at least one state"):
                    c.wait_state(timeout=1)
                with pytest.raises(ts.InvalidArgument, match="time_s must be"):
                    pub.send(1, time_s="now")  # type: ignore[arg-type]
        assert c.wait_state("closed", timeout=1) == "closed"  # not ConnectionClosed
        assert c.state == "closed"

    await in_thread(scenario)


async def test_a_sync_publish_is_stamped_when_called_or_with_time_s(url: str) -> None:
    # The stamp was taken in the trio thread as the value went out: a value held back in the
    # queue (here by a block reader that does not read yet; an outage alike) said when it
    # was sent, not when it was published.
    def scenario() -> None:
        with SyncClient(url, name="w") as c, SyncClient(url, name="r") as r:
            c.create_channel("ch")
            sub = r.subscribe("ch", policy="block", size=10)
            with c.publisher("ch") as pub:
                pub.wait_for_readers(timeout=STEP_S)
                assert pub.wanted
                for i in range(2000):  # past the publish window and the reader's size
                    pub.send(i)
                called = time.time()
                assert pub.send("now")
                assert pub.send("then", time_s=1_000_000.5)
                assert c.publish("ch", "also then", time_s=np.int64(2_000_000))
                time.sleep(0.5)  # still queued: the reader has not read
                every = [sub.get(timeout=STEP_S) for _ in range(2003)]
            assert not pub.wanted  # closed
            # By value: "also then" went through publish()'s own publisher, whose frames
            # the Redis engine may put before those pub still held (two publishers).
            stamped = {m.data: m.time for m in every if isinstance(m.data, str)}
            assert called <= stamped["now"] < called + 0.4, stamped["now"] - called
            assert (stamped["then"], stamped["also then"]) == (1_000_000.5, 2_000_000.0)

    await in_thread(scenario)


async def test_wait_state_closed_returns_when_another_thread_closes(url: str) -> None:
    # It raised ConnectionClosed ("the SyncClient is closing") instead.
    def scenario() -> None:
        c = SyncClient(url, name="w")
        closer = threading.Timer(0.3, c.close)
        closer.start()
        try:
            assert c.wait_state("closed", timeout=STEP_S) == "closed"
        finally:
            closer.join()

    await in_thread(scenario)


async def test_an_error_shows_the_callers_line_the_method_and_one_more_frame(url: str) -> None:
    # The portal's frames came too, and a notebook listed the whole statement of each (a
    # notebook user): only the method called and the line that raises it again remain.
    def scenario() -> None:
        with SyncClient(url, name="tb") as c:
            with pytest.raises(ts.ChannelNotFound) as info:
                c.subscribe("never-created")
            with pytest.raises(ts.ChannelNotFound) as listed:
                c.publisher("never-created").close()
        for raised, method in ((info, "subscribe"), (listed, "publisher")):
            names = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
            assert names == ["scenario", method, "_call"], names

    await in_thread(scenario)


async def test_a_closed_client_cannot_be_entered_again(url: str) -> None:
    # It entered silently; the block then failed at its first use.
    def scenario() -> None:
        with SyncClient(url, name="twice") as c:
            pass
        with pytest.raises(ts.ConnectionClosed, match="make a new one"), c:
            pytest.fail("entered a closed client")

    await in_thread(scenario)


async def test_waiting_for_open_on_a_client_closed_for_good_says_so_at_once(
    server: ts.Server,
) -> None:
    # A client with reconnect=False whose server went away waited out the whole timeout
    # (and for ever without one), then said only "not 'open' within 2 s" (a scripts audit).
    assert server.tcp_url is not None
    async with open_proxy(server.tcp_url) as proxy:

        def scenario() -> None:
            with SyncClient(proxy.url, name="once", reconnect=False) as c:
                trio.from_thread.run_sync(proxy.cut)
                assert c.wait_state("closed", timeout=STEP_S) == "closed"
                started = time.monotonic()
                with pytest.raises(ts.ConnectionClosed):
                    c.wait_state("open", timeout=STEP_S)
                assert time.monotonic() - started < 1.0

        await in_thread(scenario)


async def test_a_sync_client_of_several_urls_says_the_one_it_reached(server: ts.Server) -> None:
    assert server.tcp_url is not None
    live = server.tcp_url

    def scenario() -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            dead = f"tcp://127.0.0.1:{unused.getsockname()[1]}"  # bound, never listening
            with SyncClient([dead, live], name="r") as c:
                assert c.url == live
                assert live in repr(c)

    await in_thread(scenario)


@pytest.mark.parametrize(
    "seconds",
    [np.float32(0.25), np.float16(0.25), np.longdouble(0.25), Decimal("0.25"), Fraction(1, 4)],
    ids=repr,
)
async def test_a_timeout_of_any_real_type_times_out_when_it_says(url: str, seconds: Any) -> None:
    # Each was handed on as it came: a float32 deadline killed the client's trio thread
    # (epoll refuses it) and the call hung; a float16 one ran out at once (the clock's
    # precision lost); a Decimal could not be added to the clock at all.
    def scenario() -> None:
        with SyncClient(url, name="odd-timeouts") as c:
            c.create_channel("quiet")
            with c.subscribe("quiet") as sub:
                for wait in (sub.get, partial(c.wait_state, "reconnecting")):
                    started = time.monotonic()
                    with pytest.raises(TimeoutError, match=r"within 0\.25 s"):
                        wait(timeout=seconds)
                    assert 0.2 < time.monotonic() - started < STEP_S
            assert c.publish("quiet", 1) is False  # nobody reads: the client still works
            c.flush(timeout=seconds)

    await in_thread(scenario)


async def test_an_unlimited_get_waits_its_turn_behind_another_threads(url: str) -> None:
    # Waiting for another thread's get() on the same subscription, a timeout of inf (or
    # anything past threading.TIMEOUT_MAX) raised OverflowError.
    def scenario() -> None:
        with SyncClient(url, name="turns") as c:
            c.create_channel("turns")
            with c.subscribe("turns") as sub:
                got: list[Any] = []
                first = threading.Thread(target=lambda: got.append(sub.get(timeout=STEP_S).data))
                first.start()
                time.sleep(0.2)  # the first get() holds the turn
                second = threading.Thread(target=lambda: got.append(sub.get(timeout=math.inf).data))
                second.start()
                time.sleep(0.2)  # the second waits for it
                c.publish("turns", "one")
                c.publish("turns", "two")
                for thread in (first, second):
                    thread.join(STEP_S)
                    assert not thread.is_alive()
                assert sorted(got) == ["one", "two"]

    await in_thread(scenario)


async def test_a_flush_waits_for_what_was_published_before_it_not_what_follows(
    url: str,
) -> None:
    # Another thread that keeps publishing kept the queue from ever being empty, and the
    # window from ever being acknowledged whole: flush(timeout=5) timed out every time.
    def scenario() -> None:
        with SyncClient(url, name="busy") as c, SyncClient(url, name="rec") as rec:
            c.create_channel("busy")
            stop = threading.Event()
            with rec.subscribe("busy", policy="drop_oldest", size=10):
                c.publisher("busy").wait_for_readers(timeout=STEP_S)

                def keep_publishing() -> None:
                    deadline = time.monotonic() + DEADLINE_S
                    while not stop.is_set() and time.monotonic() < deadline:
                        c.publish("busy", b"x" * 100)

                writer = threading.Thread(target=keep_publishing)
                writer.start()
                try:
                    time.sleep(0.2)
                    for _ in range(3):
                        c.flush(timeout=STEP_S)
                finally:
                    stop.set()
                    writer.join(STEP_S)

    await in_thread(scenario)


async def test_a_connection_lost_for_good_fails_every_flush_and_the_close_says_so(
    url: str,
) -> None:
    # With reconnect=False the loss is final: each thread's flush raised ConnectionClosed
    # only once (the next returned as if all had been delivered), and close() told to call
    # flush(timeout=...) for a server coming back, which none would.
    async with open_proxy(url) as proxy:

        def scenario() -> None:
            c = SyncClient(proxy.url, name="w", reconnect=False)
            with SyncClient(url, name="r") as r:
                c.create_channel("held")
                with r.subscribe("held", policy="block", size=1):  # read by nobody
                    c.publisher("held").wait_for_readers(timeout=STEP_S)
                    for i in range(20):
                        assert c.publish("held", i)  # the block reader holds most back
                    with pytest.raises(TimeoutError):
                        c.flush(timeout=0.5)
                    trio.from_thread.run_sync(proxy.cut)
                    assert c.wait_state("closed", timeout=STEP_S) == "closed"
                    outcomes: list[BaseException | None] = []

                    def flush() -> None:
                        try:
                            c.flush(timeout=STEP_S)
                            outcomes.append(None)
                        except BaseException as exc:
                            outcomes.append(exc)

                    threads = [threading.Thread(target=flush) for _ in range(2)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join(STEP_S)
                    flush()  # and a third, after them
                    assert len(outcomes) == 3
                    assert all(isinstance(o, ts.ConnectionClosed) for o in outcomes), outcomes
                    with pytest.raises(ts.ConnectionClosed, match="lost for good"):
                        c.close()

        await in_thread(scenario)


@pytest.mark.parametrize("closing", ["the client", "the publisher"])
async def test_a_close_waits_for_a_slow_block_reader_as_long_as_it_takes_values(
    url: str, closing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lossless reader slower than the writer: the close waits while the server takes
    # values, however long the whole takes; it gives up only after CLOSE_FLUSH_S (here
    # 2.5 s, the whole ~6 s) in which nothing moved. It gave up after a fixed bound (10 s),
    # and the values not taken by then were dropped (a publisher's close even said nothing
    # of them). Through Redis a held writer's acknowledgements come a batch at a time
    # (~0.6 s apart here on a quiet machine; a loaded one took over 1.5 s): progress, all
    # the same.
    monkeypatch.setattr(sync_module, "CLOSE_FLUSH_S", 2.5)
    monkeypatch.setattr(sync_module, "CLOSE_DELIVER_S", 2.5, raising=False)  # older trees
    published = 8000  # past the publisher's window (1024): the rest waits in the queue
    async with ts.open_client(url, name="rec") as rec:
        await rec.create_channel("slow")
        async with rec.subscribe("slow", policy="block", size=8) as sub:

            def write() -> None:
                with SyncClient(url, name="w") as c:
                    if closing == "the client":
                        for value in range(published):
                            c.publish("slow", value)
                    else:
                        with c.publisher("slow") as pub:
                            for value in range(published):
                                pub.send(value)

            got: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_thread, write)
                with trio.fail_after(DEADLINE_S):
                    while len(got) < published:
                        got.append((await sub.receive()).data)
                        if len(got) % 4 == 0:
                            await trio.sleep(0.003)  # ~6 s in all: over twice the bound
    assert got == list(range(published))


async def test_a_publisher_close_that_gives_up_counts_every_value_it_drops(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A block reader that reads nothing holds the writer back: the publisher's close gives
    # up after CLOSE_FLUSH_S and says how many values it dropped. Those are the values
    # queued and those in the batch the drain was working through (taken out of the queue,
    # not sent yet): it counted the queue only, and said nothing of the rest. Whatever was
    # not dropped reached the server, so the reader gets exactly the others.
    monkeypatch.setattr(sync_module, "CLOSE_FLUSH_S", 0.5)
    published = 3000  # past the publisher's window (1024) and the reader's size
    async with ts.open_client(url, name="rec") as rec:
        await rec.create_channel("stuck")
        async with rec.subscribe("stuck", policy="block", size=8) as sub:

            def write() -> str:
                with SyncClient(url, name="w") as c:
                    pub = c.publisher("stuck")
                    for value in range(published):
                        pub.send(value)
                    with pytest.raises(ts.TrioStreamError) as gave_up:
                        pub.close()
                    return str(gave_up.value)

            with trio.fail_after(DEADLINE_S):
                message = await in_thread(write)
                dropped = int(message.split()[0])
                assert f"{dropped} values published to 'stuck' were not sent" in message
                got: list[int] = []
                while len(got) < published - dropped:
                    got.append((await sub.receive()).data)
                assert got == list(range(published - dropped))
                with trio.move_on_after(0.5):  # and nothing after them
                    extra = await sub.receive()
                    pytest.fail(f"one more value than the close said: {extra.data}")


async def test_values_a_closed_publisher_leaves_in_the_queue_are_counted_by_channel(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A publisher closed without its flush (on an error) while values for it wait in the
    # queue: the drain drops them and says so, naming the channel ("N queued values for
    # closed publishers were not sent" named none).
    published = 3000  # past the publisher's window: the drain waits in send, the rest queued
    async with ts.open_client(url, name="rec") as rec:
        await rec.create_channel("stuck")
        async with rec.subscribe("stuck", policy="block", size=8):

            def scenario() -> None:
                with SyncClient(url, name="w") as c:
                    pub = c.publisher("stuck")
                    for value in range(published):
                        pub.send(value)
                    pub.close(flush=False)
                    c.flush(timeout=STEP_S)  # the drain has gone through the queue

            with caplog.at_level("WARNING", logger="trio_stream.sync"):
                await in_thread(scenario)
    said = [r.getMessage() for r in caplog.records if "its publisher closed" in r.getMessage()]
    assert said and all("published to 'stuck' were not sent" in line for line in said), said
    # Some, or all of them (a loaded machine: the close came before the drain sent any).
    assert 0 < sum(int(line.split()[0]) for line in said) <= published


async def test_a_flush_waiting_on_a_publisher_another_thread_closes_returns(url: str) -> None:
    # A flush waits for the server to take what a publisher sent; a block reader that reads
    # nothing holds that back. Closing the publisher (without its own flush) from another
    # thread ends the flush's wait for it: the close says what it drops, the flush neither
    # hangs (it did: the closed publisher heard no more acks) nor raises.
    async with ts.open_client(url, name="rec") as rec:
        await rec.create_channel("held")
        async with rec.subscribe("held", policy="block", size=8):

            def scenario() -> None:
                with SyncClient(url, name="w") as c:
                    pub = c.publisher("held")
                    pub.wait_for_readers(timeout=STEP_S)
                    for value in range(100):  # within the window: send does not wait
                        pub.send(value)
                    outcome: list[BaseException | None] = []

                    def flush() -> None:
                        try:
                            c.flush(timeout=STEP_S)
                            outcome.append(None)
                        except BaseException as exc:  # reported by the assert below
                            outcome.append(exc)

                    flusher = threading.Thread(target=flush)
                    flusher.start()
                    flusher.join(0.5)
                    assert flusher.is_alive(), "the flush should wait for the held values"
                    pub.close(flush=False)
                    flusher.join(STEP_S)
                    assert outcome == [None]

            await in_thread(scenario)


async def test_a_publishers_close_waits_for_its_own_readers_not_another_publishers(
    url: str,
) -> None:
    # A script with two publishers: one on a channel a block reader holds back (it reads
    # nothing). Closing the other waited for the held one's acknowledgements too, until
    # the close gave up (CLOSE_FLUSH_S, 10 s), though its own reader had taken everything.
    async with ts.open_client(url, name="rec") as rec:
        await rec.create_channel("held")
        await rec.create_channel("free")
        async with (
            rec.subscribe("held", policy="block", size=8),
            rec.subscribe("free", policy="block", size=100) as free,
        ):

            def scenario() -> float:
                with SyncClient(url, name="w") as c:
                    held = c.publisher("held")
                    held.wait_for_readers(timeout=STEP_S)
                    for value in range(100):  # within the window: sent, acks held back
                        held.send(value)
                    with c.publisher("free") as pub:
                        pub.wait_for_readers(timeout=STEP_S)
                        pub.send("last")
                        started = time.monotonic()
                    took = time.monotonic() - started
                    held.close(flush=False)
                    return took

            took = await in_thread(scenario)
            assert (await free.receive()).data == "last"
    assert took < sync_module.CLOSE_FLUSH_S / 4, f"the close took {took:.1f} s"


async def test_a_wait_for_readers_that_times_out_names_the_channel(url: str) -> None:
    def scenario() -> None:
        with SyncClient(url, name="w") as c:
            c.create_channel("e1")
            with c.publisher("e1") as pub, pytest.raises(TimeoutError) as timed_out:
                pub.wait_for_readers(timeout=0.2)
            assert str(timed_out.value) == "fewer than 1 reader of 'e1' within 0.2 s"
            with c.publisher("e1") as pub, pytest.raises(TimeoutError) as timed_out:
                pub.wait_for_readers(2, timeout=0.2)
            assert str(timed_out.value) == "fewer than 2 readers of 'e1' within 0.2 s"

    await in_thread(scenario)


async def test_values_whose_readers_left_while_they_were_queued_are_said_lost(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # publish() returned True (the channel had a reader then); the reader left while they
    # waited in the queue behind a full window, and they went nowhere without a word.
    published = threading.Event()
    async with ts.open_client(url, name="rec") as rec, AsyncExitStack() as reading:
        await rec.create_channel("x")
        await reading.enter_async_context(rec.subscribe("x", policy="block", size=1))

        def write() -> None:
            with SyncClient(url, name="w") as c, c.publisher("x") as pub:
                pub.wait_for_readers(timeout=STEP_S)
                for value in range(1500):  # past the window (1024): the rest is queued
                    assert pub.send(value)
                time.sleep(0.1)  # the drainer took those as one batch, and waits in it
                for value in range(500):  # ... so these are a second batch
                    assert pub.send(value)
                published.set()
                c.flush(timeout=STEP_S)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, write)
            await trio.to_thread.run_sync(published.wait, STEP_S)
            await reading.aclose()  # the reader leaves before the queued values are sent
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lost = [w for w in warnings if "published to 'x' were not sent: its readers left" in w]
    # One line for the flush, not one per batch of the queue (a notebook had two).
    assert len(lost) == 1, warnings


async def test_ctrl_c_as_a_subscription_closes_leaves_nothing_open(url: str) -> None:
    # Ctrl-C before the close's call began in the trio thread: the subscription stayed open on
    # the server for good (a block reader holding its writers), while `closed` said True and
    # a second close() did nothing (a cancellation audit: 7 runs of 7, within 12-52 tries).
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, str(INTERRUPTED_CLOSE), url, "400"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    assert result.returncode == 0 and out.startswith("ok"), (out, result.stderr.decode()[-1500:])


# -- a script-writing user's findings ----------------------------------------------------------
async def test_ctrl_c_in_a_close_shows_the_script_s_frames_only(server: ts.Server) -> None:
    # close() let the interrupt through with threading's join frames below it
    # (_join_thread, Thread.join, _wait_for_tstate_lock), where every other call is short.
    assert server.tcp_url is not None
    returncode, _, _, errors = await interrupt_child(server.tcp_url, "close", "raw")
    assert returncode != 0
    assert "\nKeyboardInterrupt\n" in errors and "were dropped: the close was interrupted" in errors
    assert "threading.py" not in errors and "sync_child.py" in errors, errors
    assert errors.count("sync.py") == 1, errors  # close()'s line, nothing below it


async def test_two_ctrl_cs_in_a_close_show_one_short_traceback(server: ts.Server) -> None:
    # The second, as the close stopped its flush, came out of Condition.wait with threading's
    # frames under the first's ("During handling of the above exception...").
    assert server.tcp_url is not None
    script = textwrap.dedent(
        f"""
        import signal, threading, time
        import trio_stream as ts
        c = ts.SyncClient({server.tcp_url!r}, name="twice")
        c.create_channel("twice")
        c.subscribe("twice", policy="block", size=1)
        for value in range(3000):  # past the window: the rest waits in the queue
            c.publish("twice", value)
        main = threading.main_thread().ident
        def twice():
            time.sleep(0.5)  # close() waits for its flush by then
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.0003)
            signal.pthread_kill(main, signal.SIGINT)
        threading.Thread(target=twice, daemon=True).start()
        c.close()
        """
    )
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-c", script], capture_stderr=True, check=False
        )
    errors = result.stderr.decode()
    assert result.returncode != 0 and "KeyboardInterrupt" in errors, errors
    assert "threading.py" not in errors and "During handling" not in errors, errors


async def test_a_refused_connection_says_how_a_script_waits_for_its_server() -> None:
    # A script started together with its server (a compose file, a boot script) was told to
    # start a server or check the host and port, not that it can wait for one.
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    script = f"import trio_stream as ts; ts.SyncClient('tcp://127.0.0.1:{port}')"
    last = (await failing_script(script)).rstrip().splitlines()[-1]
    assert last.endswith(
        "or check the host and port); a script started together with its server waits for it "
        "with SyncClient(..., wait_for_server=SECONDS)"
    ), last


async def test_a_mistyped_channel_is_named_with_the_one_meant(url: str) -> None:
    # "did you mean 'demo/counter'?" was only in the warning logged 5 s into a wait_channel
    # wait: the immediate ChannelNotFound had no suggestion.
    meant = "no channel named 'demo/countr' that you may use (did you mean 'demo/counter'?); "
    async with ts.open_client(url, name="owner") as owner:
        await owner.create_channel("demo/counter")
        with pytest.raises(ts.ChannelNotFound, match=re.escape(meant)):
            await owner.open_subscription("demo/countr")
        with pytest.raises(ts.ChannelNotFound, match=re.escape(meant)):
            await owner.open_publisher("demo/countr")
        with pytest.raises(ts.ChannelNotFound) as far_off:
            await owner.open_subscription("nothing/like/it")
        assert "did you mean" not in str(far_off.value)

        def scenario() -> None:
            with SyncClient(url, name="script") as c:
                with pytest.raises(ts.ChannelNotFound, match=re.escape(meant)):
                    c.subscribe("demo/countr")
                with pytest.raises(ts.ChannelNotFound, match="did you mean 'demo/counter'"):
                    c.publish("Demo/Counter", 1)

        await in_thread(scenario)
