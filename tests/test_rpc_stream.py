"""Streaming RPC: an exposed generator streams to the caller's loop, with credit and
cancellation both ways, over TCP and WebSocket through the real server."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from proxy import open_proxy

import trio_stream as ts
from trio_stream._protocol import rpc_messages as R
from trio_stream._protocol.messages import ControlMessage, Error, Reply
from trio_stream._rpc import encode_args
from trio_stream._rpc_stream import Inbox
from trio_stream._server.rpc import Router

INTERRUPTED_STREAM = Path(__file__).with_name("sync_interrupted_stream.py")
SETTLE_S = 10.0  # generous bound for things that take milliseconds on loopback


class Sensor:
    def __init__(self) -> None:
        self.steps = 0  # values the generators produced
        self.closed = trio.Event()  # a generator's finally ran
        self.thread_ids: set[int] = set()

    async def rpc_samples(self, n: int) -> AsyncIterator[int]:
        """Yield 0..n-1."""
        for i in range(n):
            self.steps += 1
            yield i

    async def rpc_forever(self, start: int = 0) -> AsyncIterator[int]:
        try:
            i = start
            while True:
                self.steps += 1
                yield i
                i += 1
        finally:
            self.closed.set()

    async def rpc_fails_after(self, k: int) -> AsyncIterator[int]:
        for i in range(k):
            yield i
        raise ValueError(f"sensor broke after {k}")

    def rpc_counted(self, n: int) -> Iterator[int]:
        self.thread_ids.add(threading.get_ident())
        yield from range(n)

    def rpc_plain(self) -> int:
        return 1


@asynccontextmanager
async def pair(
    url: str, provider: object, *, thread: bool = False
) -> AsyncIterator[tuple[ts.Client, ts.Client, Any]]:
    async with (
        ts.open_client(url, name="sensor", reconnect=False) as sensor,
        ts.open_client(url, name="ctl", reconnect=False) as ctl,
    ):
        sensor.expose(provider, thread=thread)
        yield sensor, ctl, await ctl.rpc("sensor", timeout=SETTLE_S)


async def wait_until(predicate: Any) -> None:
    with trio.fail_after(SETTLE_S):
        while not predicate():  # noqa: ASYNC110 - state of other objects, polled
            await trio.sleep(0.005)


async def test_stream_delivers_every_value_in_order(url: str, server: ts.Server) -> None:
    async with pair(url, Sensor()) as (_, _, sensor):
        with trio.fail_after(SETTLE_S):
            assert [x async for x in sensor.samples(2000)] == list(range(2000))
            # a window of one: a credit round trip per value, still complete
            values = [x async for x in sensor.stream("samples", 50, window=1)]
        assert values == list(range(50))
        assert await sensor.plain() == 1  # calls and streams share the proxy
    assert server.state.rpc.pending() == 0


async def test_provider_never_runs_ahead_of_the_window(url: str) -> None:
    provider = Sensor()
    window = 8
    async with pair(url, provider) as (_, _, sensor):
        stream = sensor.stream("forever", window=window)
        consumed = 0
        async with stream:
            for _ in range(3):  # three rounds: read a few, then let the provider try
                for _ in range(5):
                    assert await stream.__anext__() == consumed
                    consumed += 1
                # It fills the window that the credit allows, then waits.
                await wait_until(lambda n=consumed: provider.steps >= n + window // 2)
                await trio.sleep(0.2)
                assert consumed <= provider.steps <= consumed + window


async def test_caller_leaving_the_loop_closes_the_generator(url: str, server: ts.Server) -> None:
    provider = Sensor()
    async with pair(url, provider) as (sensor_client, _, sensor):
        async for x in sensor.forever():
            if x == 20:
                break
        with trio.fail_after(SETTLE_S):
            await provider.closed.wait()
        await wait_until(lambda: server.state.rpc.pending() == 0)
        await wait_until(lambda: sensor_client._rpc.running == 0)


async def test_caller_cancel_scope_closes_the_generator(url: str, server: ts.Server) -> None:
    provider = Sensor()
    async with pair(url, provider) as (_, ctl, sensor):
        taken = 0
        with trio.move_on_after(0.3):
            async for _ in sensor.forever():
                taken += 1
                await trio.sleep(0.01)
        assert taken > 0
        with trio.fail_after(SETTLE_S):
            await provider.closed.wait()
        await wait_until(lambda: server.state.rpc.pending() == 0)
        assert not ctl._rpc._streams  # the caller forgot it


class SlowCount:
    async def rpc_count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await trio.sleep(0.05)
            yield i


async def test_a_wait_cut_short_leaves_the_stream_going(url: str) -> None:
    # A timeout around one wait for a value closed the stream: the loop after it ended at
    # once, as if the provider had finished (an outside audit of the trio client).
    async with pair(url, SlowCount()) as (_, _, proxy):
        with trio.fail_after(SETTLE_S):
            async with proxy.stream("count", 5) as stream:
                with trio.move_on_after(0.01) as waited:
                    await stream.__anext__()
                assert waited.cancelled_caught
                assert [value async for value in stream] == [0, 1, 2, 3, 4]


async def test_provider_raising_ends_the_loop_with_remote_error(url: str) -> None:
    async with pair(url, Sensor()) as (_, _, sensor):
        got: list[int] = []
        with pytest.raises(ts.RemoteError) as info:
            async for x in sensor.fails_after(5):
                got.append(x)
        assert got == [0, 1, 2, 3, 4]
        assert info.value.type_name == "ValueError"
        assert info.value.message == "sensor broke after 5"
        assert "rpc_fails_after" in info.value.remote_traceback


async def test_provider_disconnect_ends_the_loop_with_a_clear_error(
    url: str, server: ts.Server
) -> None:
    provider = Sensor()
    async with pair(url, provider) as (_, _, sensor):
        got = 0
        with pytest.raises(ts.RpcError, match=r"'sensor' disconnected .*stream") as info:
            async for _ in sensor.stream("forever", window=4):
                got += 1
                if got == 10:
                    # Cut the provider's connection from the server's side, no goodbye.
                    await server.state.by_name["sensor"].transport.aclose()
        assert not isinstance(info.value, ts.RemoteError)
    assert server.state.rpc.pending() == 0


async def test_caller_disconnect_closes_the_generator(url: str, server: ts.Server) -> None:
    provider = Sensor()
    async with ts.open_client(url, name="sensor") as sensor_client:
        sensor_client.expose(provider)
        async with ts.open_client(url, name="ctl", reconnect=False) as ctl:
            sensor = await ctl.rpc("sensor")
            with pytest.raises(ts.ConnectionClosed):
                async for x in sensor.forever():
                    if x == 5:
                        await server.state.by_name["ctl"].transport.aclose()
        with trio.fail_after(SETTLE_S):
            await provider.closed.wait()
        await wait_until(lambda: sensor_client._rpc.running == 0)


async def test_sync_generator_runs_in_a_worker_thread_with_thread_true(url: str) -> None:
    provider = Sensor()
    async with pair(url, provider, thread=True) as (_, _, sensor):
        with trio.fail_after(SETTLE_S):
            assert [x async for x in sensor.counted(100)] == list(range(100))
    assert provider.thread_ids and threading.get_ident() not in provider.thread_ids


async def test_a_provider_lost_for_good_stops_what_it_runs(url: str) -> None:
    # reconnect=False: the provider's connection breaks, its client is closed, its callers
    # are told. Its generator and methods ran on until the application left `async with`
    # (a provider that sleeps forever: forever); on a reconnect they were cancelled at once.
    provider = Sensor()
    async with (
        open_proxy(url) as proxy,
        ts.open_client(url, name="ctl") as ctl,
        ts.open_client(proxy.url, name="sensor", reconnect=False) as sensor,
    ):
        sensor.expose(provider)
        remote = await ctl.rpc("sensor", timeout=SETTLE_S)
        stream = remote.forever()
        with trio.fail_after(SETTLE_S):
            assert await stream.__anext__() == 0
            proxy.reset()
            await sensor.wait_state("closed")
            await provider.closed.wait()
            await wait_until(lambda: sensor._rpc.running == 0)
            with pytest.raises(ts.RpcError):  # its caller was told
                async for _ in stream:
                    pass


class BlockingDevice:
    """A thread=True generator whose second value blocks in its worker thread (a device
    read) until the test lets it go; and a plain method that blocks the same way."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()  # the generator's finally ran (in some thread)

    def rpc_reads(self) -> Iterator[int]:
        try:
            yield 0
            self.release.wait(SETTLE_S)
            yield 1
        finally:
            self.closed.set()

    def rpc_counts(self) -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            self.closed.set()

    def rpc_hold(self) -> None:
        self.release.wait(SETTLE_S)


@pytest.mark.parametrize("blocked", ["its own next()", "an abandoned call of its object"])
async def test_a_closing_provider_does_not_wait_for_a_blocked_thread_generator(
    url: str, blocked: str
) -> None:
    # README: a sync method running in a worker thread cannot be interrupted, "but a closing
    # provider, Ctrl-C included, does not" wait for it. A thread=True generator's close
    # waited (shielded) for its blocked next(), or for the object's one-at-a-time turn that
    # an abandoned call held: seconds after Ctrl-C. Now it is closed once that step is done.
    device = BlockingDevice()
    try:
        async with ts.open_client(url, name="ctl", reconnect=False) as ctl:
            async with ts.open_client(url, name="device", reconnect=False) as provider:
                provider.expose(device, thread=True)
                proxy = await ctl.rpc("device", timeout=SETTLE_S)
                with trio.fail_after(SETTLE_S):
                    if blocked == "its own next()":
                        stream = proxy.reads()
                        assert await stream.__anext__() == 0
                        # The provider asks for the next value at once (credit): it blocks.
                        await wait_until(lambda: provider._rpc.running == 1)
                        await trio.sleep(0.05)
                    else:
                        stream = proxy.stream("counts", window=1)
                        assert await stream.__anext__() == 0
                        with pytest.raises(ts.RpcTimeout):
                            await proxy.call("hold", timeout=0.2)  # holds the object's turn
                        await stream.aclose()  # its next step waits for the turn
                        await wait_until(lambda: provider._rpc.running == 0)
                with trio.fail_after(SETTLE_S / 4):  # well before the device lets go
                    await provider.aclose()
            assert not device.closed.is_set()  # still blocked; closed once its step returns
    finally:
        device.release.set()
    assert await trio.to_thread.run_sync(device.closed.wait, SETTLE_S)


async def test_describe_marks_streams_and_misuse_is_a_type_error(url: str) -> None:
    async with pair(url, Sensor()) as (_, _, sensor):
        assert sensor.methods["samples"].stream
        assert not sensor.methods["plain"].stream
        assert "stream" in repr(sensor.samples)
        with pytest.raises(TypeError, match="streams its values"):
            await sensor.call("samples", 3)
        with pytest.raises(TypeError, match="returns one result"):
            sensor.stream("plain")
        with pytest.raises(TypeError, match="missing a required argument"):
            sensor.samples()
        with pytest.raises(ts.InvalidArgument, match="window"):  # a ValueError too
            sensor.stream("samples", 3, window=0)


async def test_undescribed_method_called_the_wrong_way_is_refused(url: str) -> None:
    async with pair(url, Sensor()) as (_, ctl, _):
        proxy = await ctl.rpc("sensor")
        proxy.methods.clear()  # as if described before the provider exposed them
        with pytest.raises(ts.RpcError, match="streams its values"):
            await proxy.call("samples", 3)
        with pytest.raises(ts.RpcError, match="returns one result"):
            async for _ in proxy.stream("plain"):
                pass


async def test_sync_client_iterates_a_stream(url: str) -> None:
    provider = Sensor()
    async with ts.open_client(url, name="sensor") as sensor_client:
        sensor_client.expose(provider)

        def script() -> tuple[list[int], list[int]]:
            with ts.SyncClient(url, name="script") as c:
                proxy = c.rpc("sensor")
                everything = list(proxy.samples(300))
                first: list[int] = []
                for x in proxy.stream("forever", window=4):
                    first.append(x)
                    if len(first) == 7:
                        break
                return everything, first

        with trio.fail_after(SETTLE_S * 3):
            everything, first = await trio.to_thread.run_sync(script)
        assert everything == list(range(300))
        assert first == list(range(7))
        with trio.fail_after(SETTLE_S):
            await provider.closed.wait()  # leaving the sync loop closed the generator


async def test_a_sync_stream_kept_in_a_variable_outlives_a_break(url: str) -> None:
    # Each `for` over it (and each iter()) made a generator that closed the stream when it
    # was collected: the values after a first next() or a break were lost, silently.
    async with ts.open_client(url, name="sensor") as sensor_client:
        sensor_client.expose(Sensor())

        def script() -> tuple[int, list[int], list[int]]:
            with ts.SyncClient(url, name="script") as c:
                stream = c.rpc("sensor").samples(10)
                head = next(iter(stream))
                middle: list[int] = []
                for x in stream:
                    middle.append(x)
                    if x == 4:
                        break
                return head, middle, list(stream)

        with trio.fail_after(SETTLE_S * 3):
            head, middle, rest = await trio.to_thread.run_sync(script)
        assert (head, middle, rest) == (0, [1, 2, 3, 4], [5, 6, 7, 8, 9])


async def test_a_ctrl_c_as_a_sync_streams_values_cross_over_loses_none(url: str) -> None:
    # The batch the trio side had taken was dropped with the interrupt, and the stream went
    # on after it (8 values missing; the review of the change).
    async with ts.open_client(url, name="daq") as provider:
        provider.expose(Count())
        result = await trio.run_process(
            [sys.executable, str(INTERRUPTED_STREAM), url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout) == list(range(100))


async def test_a_sync_stream_keeps_its_provider_within_one_window(url: str) -> None:
    # protocol.md 6.1: at most `window` values are ever queued for a caller. The SyncClient
    # takes what has arrived into its thread in one batch; it returned that batch's credit
    # as it crossed, so the provider made a second window meanwhile (8 ahead with window 4).
    provider = Sensor()
    async with ts.open_client(url, name="sensor") as sensor_client:
        sensor_client.expose(provider)
        took_one = threading.Event()
        done = threading.Event()

        def script() -> None:
            with ts.SyncClient(url, name="script") as c:
                stream = c.rpc("sensor").stream("forever", window=4)
                for _ in stream:
                    took_one.set()
                    done.wait(SETTLE_S)  # the script reads nothing more meanwhile
                    break

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, script)
            with trio.fail_after(SETTLE_S):
                await trio.to_thread.run_sync(took_one.wait, SETTLE_S)
                await wait_until(lambda: provider.steps >= 4)
                await trio.sleep(0.3)  # what it would make more, it makes now
            try:
                assert provider.steps <= 1 + 4  # the one taken, and one window
            finally:
                done.set()


# -- the router alone: credit is enforced on the server -----------------------------------------
class FakeSession:
    def __init__(self, name: str) -> None:
        self.name = name
        self.methods: list[str] = []
        self.sent: list[ControlMessage] = []
        self.frames: list[bytes] = []

    def send_control(self, message: ControlMessage) -> None:
        self.sent.append(message)

    def send_control_frame(self, frame: bytes) -> None:
        self.frames.append(frame)


def test_router_refuses_a_yield_beyond_the_callers_credit() -> None:
    caller, provider = FakeSession("ctl"), FakeSession("sensor")
    router = Router({"sensor": provider}.get)
    router.call(caller, R.Call(id=7, provider="sensor", method="x", args=b"", window=2))
    router.yield_(provider, R.Yield(call=1, value=b"a"))
    router.yield_(provider, R.Yield(call=1, value=b"b"))
    assert len(caller.frames) == 2  # two items forwarded
    with pytest.raises(ts.ProtocolError, match="beyond the caller's credit"):
        router.yield_(provider, R.Yield(call=1, value=b"c"))
    router.credit(caller, R.Credit(id=7, n=1))
    assert provider.sent[-1] == R.Demand(call=1, n=1)
    router.yield_(provider, R.Yield(call=1, value=b"c"))
    router.end(provider, R.End(call=1))
    assert caller.sent[-1] == Reply(id=7, result=None)
    assert router.pending() == 0
    router.credit(caller, R.Credit(id=7, n=1))  # late credit after the end: ignored


def test_router_bounds_credit_and_window() -> None:
    caller, provider = FakeSession("ctl"), FakeSession("sensor")
    router = Router({"sensor": provider}.get)
    router.call(caller, R.Call(id=1, provider="sensor", method="x", args=b"", window=0))
    assert "window" in getattr(caller.sent[-1], "message", "")
    router.call(
        caller,
        R.Call(id=2, provider="sensor", method="x", args=b"", window=R.MAX_STREAM_WINDOW),
    )
    with pytest.raises(ts.ProtocolError, match="window limit"):
        router.credit(caller, R.Credit(id=2, n=1))
    for n in (0, -1):  # not "would exceed the window", as it once said
        with pytest.raises(ts.ProtocolError, match=f"must be n >= 1 values, not {n}"):
            router.credit(caller, R.Credit(id=2, n=n))


def test_router_hands_a_stream_to_a_provider_on_another_node_to_the_engine() -> None:
    caller = FakeSession("ctl")
    routed: list[ControlMessage] = []

    def remote(_caller: Any, msg: ControlMessage) -> bool:
        routed.append(msg)
        return True

    nobody: dict[str, FakeSession] = {}
    router = Router(nobody.get, remote=remote)
    call = R.Call(id=3, provider="far", method="x", args=b"", window=4)
    router.call(caller, call)
    router.credit(caller, R.Credit(id=3, n=2))  # not a stream of this node's: the engine's
    router.call(caller, R.Call(id=4, provider="far", method="x", args=b""))
    assert routed == [call, R.Credit(id=3, n=2), R.Call(id=4, provider="far", method="x", args=b"")]
    assert caller.sent == []


def test_router_refuses_an_end_for_a_plain_call_without_closing_it() -> None:
    # Refused with the call still open: the provider's connection then closes, and that fails
    # the call for its caller. Closed first, its caller was never told and waited for good.
    caller, provider = FakeSession("ctl"), FakeSession("sensor")
    router = Router({"sensor": provider}.get)
    router.call(caller, R.Call(id=7, provider="sensor", method="x", args=b""))
    with pytest.raises(ts.ProtocolError, match="not a streaming call"):
        router.end(provider, R.End(call=1))
    assert router.pending() == 1
    router.session_closed(provider)  # what the refused provider's connection does next
    assert router.pending() == 0
    told = caller.sent[-1]
    assert isinstance(told, Error) and told.id == 7 and told.type == "RpcError", told


async def test_credit_returned_right_behind_the_call_is_not_lost(url: str) -> None:
    # The caller may return credit at once (docs/protocol.md, section 6.1): the server sends
    # the provider's ``demand`` right behind the ``invoke``. The provider counted it only once
    # its invocation's task had started, so it dropped it and the stream stalled at the
    # window, while the server and the caller counted window + credit.
    sensor = Sensor()
    async with pair(url, sensor) as (_, ctl, _proxy):
        port = ctl._port()
        inbox = Inbox()
        request = port.start_request(
            lambda i: R.Call(
                id=i, provider="sensor", method="samples", args=encode_args((10,), {}), window=2
            )
        )
        ctl._rpc._streams[request.id] = inbox
        port.send_control(R.Credit(id=request.id, n=8))
        await wait_until(lambda: len(inbox.values) == 10)
        assert sensor.steps == 10


class OneThenSilence:
    def __init__(self) -> None:
        self.started = 0
        self.stopped = trio.Event()

    async def rpc_one_then_silence(self) -> AsyncIterator[int]:
        self.started += 1
        try:
            yield 1
            await trio.sleep_forever()
        finally:
            self.stopped.set()


async def test_a_close_from_another_task_ends_an_iteration_waiting_for_a_value(
    url: str,
) -> None:
    # The iterating task waits for a second value that never comes; another task closes the
    # stream: the loop ends (nothing woke it, and it waited until its nursery was cancelled).
    async with (
        ts.open_client(url, name="slow", reconnect=False) as provider,
        ts.open_client(url, name="ctl", reconnect=False) as caller,
    ):
        provider.expose(OneThenSilence())
        stream = (await caller.rpc("slow", timeout=SETTLE_S)).one_then_silence()
        got: list[int] = []
        first = trio.Event()
        ended = trio.Event()

        async def read() -> None:
            async for value in stream:
                got.append(value)
                first.set()
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with trio.fail_after(SETTLE_S):
                await first.wait()
            await trio.sleep(0.1)  # the reader waits for a second value now
            await stream.aclose()
            with trio.fail_after(SETTLE_S):
                await ended.wait()
        assert got == [1]


async def test_a_sync_stream_closed_from_another_thread_ends_its_loop(url: str) -> None:
    outcome: list[bool] = []

    def scenario() -> None:
        with (
            ts.SyncClient(url, name="slow", reconnect=False) as provider,
            ts.SyncClient(url, name="ctl", reconnect=False) as caller,
        ):
            provider.expose(OneThenSilence())
            stream = caller.rpc("slow", timeout=SETTLE_S).one_then_silence()
            first = threading.Event()
            done = threading.Event()

            def loop() -> None:
                for _ in stream:
                    first.set()
                done.set()

            thread = threading.Thread(target=loop, daemon=True)
            thread.start()
            assert first.wait(SETTLE_S)
            done.wait(0.1)  # the loop waits for a second value now
            stream.close()
            outcome.append(done.wait(SETTLE_S))

    await trio.to_thread.run_sync(scenario)
    assert outcome == [True], "the iterating thread was not woken by close()"


async def test_a_stream_closed_while_its_client_reconnects_never_calls(url: str) -> None:
    # The first __anext__ waits for the connection; the stream is closed meanwhile. It made
    # the call all the same once the client was back, handed out a value from the closed
    # stream, and never cancelled the call: the provider's generator ran on.
    provider_object = OneThenSilence()
    async with (
        open_proxy(url) as proxy,
        ts.open_client(url, name="slow", reconnect=False) as provider,
        ts.open_client(proxy.url, name="ctl", reconnect=ts.Reconnect(initial=0.05)) as caller,
    ):
        provider.expose(provider_object)
        stream = (await caller.rpc("slow", timeout=SETTLE_S)).one_then_silence()
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(SETTLE_S):
            await caller.wait_state("reconnecting")
        got: list[int] = []

        async def read() -> None:
            async for value in stream:  # waits for the connection
                got.append(value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.1)
            await stream.aclose()
            proxy.accept()
            with trio.fail_after(SETTLE_S):
                await caller.wait_state("open")
            await trio.sleep(0.3)  # a call made now would have reached the provider
            nursery.cancel_scope.cancel()
        assert got == []
        assert provider_object.started == 0


class Count:
    async def rpc_count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


async def test_a_cancelled_next_loses_no_value(url: str) -> None:
    # A timeout that has run out around __anext__ while values are there: the value was
    # taken, then the cancel raised at the checkpoint after it, and the stream went on
    # without it. A cancel is honoured only before a value is taken (as Subscription's).
    async with (
        ts.open_client(url, name="counter", reconnect=False) as provider,
        ts.open_client(url, name="ctl", reconnect=False) as caller,
    ):
        provider.expose(Count())
        proxy = await caller.rpc("counter", timeout=SETTLE_S)
        got: list[int] = []
        with trio.fail_after(SETTLE_S):
            async with proxy.count(10) as stream:
                got.append(await stream.__anext__())
                await trio.sleep(0.2)  # the next values have arrived
                with trio.move_on_after(0):
                    got.append(await stream.__anext__())
                got.extend([value async for value in stream])
        assert got == list(range(10))
