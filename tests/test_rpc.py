"""RPC through the server: exposing, proxies, errors, timeouts, cancellation, provider loss."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import pickle
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import numpy as np
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from proxy import open_proxy

import trio_stream as ts
from trio_stream import _rpc as rpc_module
from trio_stream._protocol import messages as M
from trio_stream._protocol import rpc_messages as R
from trio_stream._protocol.codec import encode_control
from trio_stream._rpc import RpcEndpoint, RpcProxy, _clip, decode_args, encode_args
from trio_stream._server.rpc import MAX_CLOSE_CANDIDATES, MAX_PENDING_CALLS, Router, _near

SETTLE_S = 10.0  # generous bound for things that take milliseconds on loopback


class Daq:
    """A provider with every kind of method the tests need."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = trio.Event()
        self.release = trio.Event()
        self.cancelled = False
        self.running = 0
        self.max_running = 0

    def rpc_my_echo(self, data: Any) -> list[Any]:
        """Return the data, marked."""
        self.calls += 1
        return ["MY ECHO", data]

    async def rpc_read(self, n: int = 10) -> list[float]:
        """Read n samples."""
        await trio.lowlevel.checkpoint()
        return [float(i) for i in range(n)]

    def rpc_boom(self, message: str) -> None:
        raise ValueError(message)

    async def rpc_async_boom(self, message: str) -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError(message)

    async def rpc_wait(self) -> str:
        """Block until the test releases it; remember whether it was cancelled."""
        self.started.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        return "released"

    async def rpc_sleepy(self, seconds: float) -> float:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await trio.sleep(seconds)
        finally:
            self.running -= 1
        return seconds

    def rpc_kinds(self, a: int, /, b: str, *args: Any, c: float = 1.5, **kw: Any) -> dict[str, Any]:
        return {"a": a, "b": b, "args": list(args), "c": c, "kw": kw}

    def not_exposed(self) -> str:
        return "private"


@asynccontextmanager
async def pair(
    url: str, provider: object | None = None, *, thread: bool = False
) -> AsyncIterator[tuple[ts.Client, Any]]:
    """A provider named "daq" exposing ``provider`` and a caller's proxy for it."""
    async with ts.open_client(url, name="daq") as daq, ts.open_client(url, name="ctl") as ctl:
        daq.expose(provider if provider is not None else Daq(), thread=thread)
        yield daq, await ctl.rpc("daq", timeout=SETTLE_S)


async def test_calls_sync_and_async_methods_with_defaults(url: str) -> None:
    async with pair(url) as (_, daq):
        assert await daq.my_echo("HALLO") == ["MY ECHO", "HALLO"]
        assert await daq.read() == [float(i) for i in range(10)]
        assert await daq.read(3) == [0.0, 1.0, 2.0]
        assert await daq.read(n=2) == [0.0, 1.0]
        assert await daq.call("my_echo", "HALLO", timeout=10) == ["MY ECHO", "HALLO"]


class Shadowed:
    def rpc_stream(self, n: int) -> list[int]:
        return list(range(n))

    def rpc_read(self) -> float:
        return 1.5


async def test_a_method_the_proxys_own_attribute_hides_is_said_at_expose(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # proxy.stream(3) ran the proxy's own stream() and failed with a TypeError about str
    # and int (an RPC persona): the provider is told at expose how callers reach it.
    async with pair(url, Shadowed()) as (_, daq):
        assert await daq.call("stream", 3) == [0, 1, 2]
        assert await daq.read() == 1.5
    said = [r.getMessage() for r in caplog.records if "exposed" in r.getMessage()]
    assert said == [
        "exposed 'stream': a caller's proxy has an attribute of that name of its own, so it "
        "calls this one as proxy.call('stream', ...)"
    ], said


async def test_every_parameter_kind_survives_the_description(url: str) -> None:
    async with pair(url) as (_, daq):
        result = await daq.kinds(1, "b", 2, 3, c=4.0, extra=True)
        assert result == {"a": 1, "b": "b", "args": [2, 3], "c": 4.0, "kw": {"extra": True}}
        with pytest.raises(TypeError):
            await daq.kinds(a=1, b="b")  # `a` is positional-only


async def test_argument_mismatch_raises_locally_and_sends_nothing(url: str) -> None:
    provider = Daq()
    async with pair(url, provider) as (daq_client, daq):
        sent_before = daq_client._rpc.running
        with pytest.raises(TypeError, match="missing a required argument: 'data'"):
            await daq.my_echo()
        with pytest.raises(TypeError, match="too many positional arguments"):
            await daq.my_echo(1, 2)
        with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
            await daq.call("my_echo", 1, x=2)
        # A mistyped keyword is named, as Python names it (not the parameter it misses).
        with pytest.raises(TypeError) as mistyped:
            await daq.my_echo(dta=5)
        assert str(mistyped.value).startswith(
            "daq.my_echo(): got an unexpected keyword argument 'dta' (its signature when this "
            "proxy was made: my_echo(data: Any) -> list[Any]; if 'daq' changed it since, "
            "make a new proxy with rpc('daq'))"
        ), str(mistyped.value)
        assert await daq.my_echo(data=5) == ["MY ECHO", 5]
        assert provider.calls == 1  # only the last, well-formed call reached the provider
        assert sent_before == 0


async def test_a_proxy_made_before_its_provider_changed_says_so(url: str) -> None:
    # A worker redeployed with work(x, scale=1) and a new extra(): the old proxy's errors
    # said "unexpected keyword argument 'scale'" and "exposes no method 'extra'", both as
    # if true (a team migrating from NATS).
    class Old:
        def rpc_work(self, x: int) -> int:
            return x

    class New:
        def rpc_work(self, x: int, scale: int = 1) -> int:
            return x * scale

        def rpc_extra(self) -> str:
            return "extra"

    async with ts.open_client(url, name="ctl") as ctl:
        async with ts.open_client(url, name="svc") as old:
            old.expose(Old())
            proxy = await ctl.rpc("svc", timeout=SETTLE_S)
        async with ts.open_client(url, name="svc") as new:
            new.expose(New())
            with pytest.raises(TypeError, match=r"when this proxy was made: work\(x: int\)"):
                await proxy.work(2, scale=3)
            with pytest.raises(ts.UnknownMethod, match="as described when this proxy was made"):
                proxy.extra  # noqa: B018
            assert await proxy.call("extra") == "extra"  # unchecked, as the message says
            fresh = await ctl.rpc("svc", timeout=SETTLE_S)
            assert await fresh.work(2, scale=3) == 6


async def test_remote_exception_comes_back_as_remote_error(url: str) -> None:
    async with pair(url) as (_, daq):
        with pytest.raises(ts.RemoteError) as info:
            await daq.boom("the sensor is on fire")
        error = info.value
        assert error.type_name == "ValueError"
        assert error.message == "the sensor is on fire"
        assert "rpc_boom" in error.remote_traceback
        assert "ValueError: the sensor is on fire" in error.remote_traceback
        assert isinstance(error, ts.RpcError)
        # the provider is unharmed
        assert await daq.my_echo(1) == ["MY ECHO", 1]


@pytest.mark.parametrize(
    ("method", "thread"), [("boom", False), ("boom", True), ("async_boom", False)]
)
async def test_the_remote_traceback_starts_at_the_method(
    url: str, method: str, thread: bool
) -> None:
    # It began with the library's frames: two, and eight for a method run in a worker
    # thread (the hand-off, trio's and outcome's), above the one that says what failed.
    async with pair(url, thread=thread) as (_, daq):
        with pytest.raises(ts.RemoteError) as info:
            await daq.call(method, "the sensor is on fire")
        lines = info.value.remote_traceback.splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert lines[1].startswith(f'  File "{__file__}"') and lines[1].endswith(f"rpc_{method}")
        assert sum(line.startswith("  File ") for line in lines) == 1, lines
        assert lines[-1] == "ValueError: the sensor is on fire"


async def test_a_call_that_fails_before_the_method_runs_keeps_its_whole_traceback(
    url: str,
) -> None:
    # Nothing of the method's own: the library's frames are all there is to show.
    async with pair(url) as (_, daq):
        with pytest.raises(ts.RemoteError) as info:
            await daq._endpoint.call("daq", "my_echo", (1, 2), {}, SETTLE_S)  # not checked here
        assert info.value.type_name == "TypeError"
        assert '/trio_stream/_rpc.py", line ' in info.value.remote_traceback


async def test_timeout_raises_rpc_timeout_and_cancels_the_provider(
    url: str, autojump_clock: trio.testing.MockClock
) -> None:
    provider = Daq()
    async with pair(url, provider) as (daq_client, daq):
        start = trio.current_time()
        with pytest.raises(ts.RpcTimeout):
            await daq.call("wait", timeout=30)
        assert trio.current_time() - start == pytest.approx(30, abs=1)
        with trio.fail_after(SETTLE_S):
            while daq_client._rpc.running:  # noqa: ASYNC110 - the abort is on its way
                await trio.sleep(0.01)
        assert provider.cancelled


async def test_a_timeout_while_reconnecting_says_the_call_was_never_sent(url: str) -> None:
    # It blamed the provider ("runs the calls ... one at a time"), which never saw the call.
    async with (
        open_proxy(url) as proxy,
        ts.open_client(url, name="daq") as daq_client,
        ts.open_client(proxy.url, name="ctl", reconnect=ts.Reconnect(initial=0.05)) as ctl,
    ):
        daq_client.expose(Daq())
        daq = await ctl.rpc("daq", timeout=SETTLE_S)
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(SETTLE_S):
            await ctl.wait_state("reconnecting")
            with pytest.raises(
                ts.RpcTimeout, match=r"was not sent within 0\.3 s: this client"
            ) as unsent:
                await daq.call("my_echo", 1, timeout=0.3)
            # `sent` tells it from a slow provider (the CLI read the message's wording).
            assert unsent.value.sent is False
            assert pickle.loads(pickle.dumps(unsent.value)).sent is False
            # It named an operation the caller never called ("describe 'daq'").
            with pytest.raises(ts.RpcTimeout, match=r"^rpc\('daq'\) was not sent within 0\.3 s"):
                await ctl.rpc("daq", timeout=0.3)
            with pytest.raises(ts.RpcTimeout, match="provider is slow or stuck") as slow:
                proxy.accept()
                await ctl.wait_state("open")
                await daq.call("wait", timeout=0.3)
            assert slow.value.sent
            # A SyncClient's provider runs one call at a time: an interrupted call that runs on
            # holds the next one back, which the advice to use thread=True did not explain.
            assert "or still runs an earlier call to the same object" in str(slow.value)


async def test_proxy_timeout_is_the_default_for_each_call(
    url: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        ts.open_client(url, name="daq") as daq_client,
        ts.open_client(url, name="ctl") as ctl,
    ):
        daq_client.expose(Daq())
        daq = await ctl.rpc("daq", timeout=2.0)
        start = trio.current_time()
        with pytest.raises(ts.RpcTimeout):
            await daq.wait()
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.5)
        no_limit = await ctl.rpc("daq", timeout=None)
        assert await no_limit.sleepy(1000.0) == 1000.0
        # Changed later, it is the calls' default from then on, and checked as at rpc().
        no_limit.timeout = np.float32(3.0)  # type: ignore[assignment]
        assert type(no_limit.timeout) is float and no_limit.timeout == 3.0
        start = trio.current_time()
        with pytest.raises(ts.RpcTimeout):
            await no_limit.wait()
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.5)
        for bad in (-1, "5", float("nan")):
            with pytest.raises(ts.InvalidArgument, match="timeout must be"):
                no_limit.timeout = bad  # type: ignore[assignment]
        assert no_limit.timeout == 3.0


async def test_caller_cancel_scope_cancels_the_provider_task(url: str) -> None:
    provider = Daq()
    async with pair(url, provider) as (daq_client, daq):
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                await daq.wait()
                raise AssertionError("the call should have been cancelled")

            nursery.start_soon(caller)
            with trio.fail_after(SETTLE_S):
                await provider.started.wait()
            nursery.cancel_scope.cancel()
        with trio.fail_after(SETTLE_S):
            while not provider.cancelled:  # noqa: ASYNC110 - the abort is on its way
                await trio.sleep(0.01)
        assert daq_client._rpc.running == 0


async def test_a_call_to_a_reconnecting_provider_waits_for_it_within_its_timeout(
    server: ts.Server,
) -> None:
    # A worker's link cut for a second: calls meanwhile failed at once with "no client named
    # 'worker' is connected" although the server kept its session for its return (a team
    # migrating from NATS). Now the caller's client asks again within the call's timeout;
    # out of time, the error says the provider may be back.
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(
            proxy.url, name="worker", reconnect=ts.Reconnect(initial=0.1, maximum=0.2)
        ) as worker,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        worker.expose(Daq())
        proxy_daq = await ctl.rpc("worker", timeout=SETTLE_S)
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(SETTLE_S):
            while "worker" in server.state.by_name:  # noqa: ASYNC110
                await trio.sleep(0.01)
        away = r"\(it lost its connection and may be back\)"
        with pytest.raises(ts.RpcTimeout, match=away) as late:
            await proxy_daq.call("my_echo", "early", timeout=0.3)
        # Out of time: a timeout (an `except TimeoutError` missed it), never sent to it.
        assert isinstance(late.value, TimeoutError) and late.value.sent is False
        results: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                results.append(await proxy_daq.call("my_echo", "HALLO", timeout=SETTLE_S))

            nursery.start_soon(call)
            await trio.sleep(0.5)
            assert not results  # waiting for the worker, not failed
            proxy.accept()
        assert results == [["MY ECHO", "HALLO"]]


async def test_a_caller_that_does_not_wait_for_a_reconnecting_provider_fails_at_once(
    server: ts.Server,
) -> None:
    # A crashed worker's session is kept for its return: a call to it waited out its whole
    # timeout (5 s), where a caller with several workers wanted to try the next one at once
    # (a team migrating from NATS's "no responders"). wait_reconnect=False raises at once.
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as proxy,
        ts.open_client(proxy.url, name="worker", reconnect=ts.Reconnect(initial=0.1)) as worker,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        worker.expose(Daq())
        eager = await ctl.rpc("worker", timeout=SETTLE_S, wait_reconnect=False)
        assert eager.wait_reconnect is False
        assert await eager.my_echo("up") == ["MY ECHO", "up"]

        def sync_proxy() -> None:  # the SyncClient's proxy shares the trio proxy's setting
            assert server.tcp_url is not None
            with ts.SyncClient(server.tcp_url, name="script") as c:
                blocking = c.rpc("worker", wait_reconnect=False)
                assert blocking.wait_reconnect is False
                blocking.wait_reconnect = True
                assert blocking._proxy.wait_reconnect is True
                assert blocking.my_echo("sync") == ["MY ECHO", "sync"]

        await trio.to_thread.run_sync(sync_proxy)
        proxy.refuse()
        proxy.cut()
        with trio.fail_after(SETTLE_S):
            while "worker" in server.state.by_name:  # noqa: ASYNC110
                await trio.sleep(0.01)
        away = r"\(it lost its connection and may be back\)"
        started = trio.current_time()
        with pytest.raises(ts.RpcError, match=away) as refused:
            await eager.my_echo("now")
        assert not isinstance(refused.value, ts.RpcTimeout)
        assert str(refused.value).endswith(
            "; worker.my_echo() never reached it (calling again, or another provider, is safe)"
        )
        with pytest.raises(ts.RpcError, match=away):
            await eager.call("my_echo", "by name")
        with pytest.raises(ts.RpcError, match=away):
            await ctl.rpc("worker", wait_reconnect=False)  # the look-up too
        assert trio.current_time() - started < 1.0
        with pytest.raises(ts.InvalidArgument, match="wait_reconnect must be True or False"):
            await ctl.rpc("worker", wait_reconnect=0)  # type: ignore[arg-type]
        with pytest.raises(ts.RpcError, match=away):  # waiting for a provider, not for this
            await ctl.rpc("worker", wait_provider=True, wait_reconnect=False)
        with pytest.raises(ts.InvalidArgument, match="wait_reconnect must be True or False"):
            eager.wait_reconnect = "no"  # type: ignore[assignment]
        eager.wait_reconnect = True  # as the default: waits within the timeout
        with pytest.raises(ts.RpcTimeout, match=away):
            await eager.call("my_echo", "waited", timeout=0.3)

        def sync_look_up() -> None:
            assert server.tcp_url is not None
            with (
                ts.SyncClient(server.tcp_url, name="script2") as c,
                pytest.raises(ts.RpcError, match=away),
            ):
                c.rpc("worker", wait_reconnect=False)

        await trio.to_thread.run_sync(sync_look_up)


async def test_a_call_without_a_proxy_goes_in_one_round_trip(
    server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Every Python call needed rpc() first (a describe round trip); the browser client had
    # client.call(provider, method, ...) (a NATS migrator's request/reply).
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="daq") as daq_client,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        daq_client.expose(Daq())
        asked_before = server.state.rpc.calls_total
        assert await ctl.call("daq", "my_echo", "HALLO") == ["MY ECHO", "HALLO"]
        assert server.state.rpc.calls_total == asked_before + 1  # no describe first
        with pytest.raises(ts.RemoteError):
            await ctl.call("daq", "my_echo")  # checked by the provider, not here
        with pytest.raises(ts.RpcError, match="exposes no method"):
            await ctl.call("daq", "nope")
        with pytest.raises(ts.RpcError, match="no client named 'dqa' is connected"):
            await ctl.call("dqa", "my_echo", 1)
        with pytest.raises(ts.InvalidArgument, match="provider must be a str"):
            await ctl.call(5, "my_echo")  # type: ignore[arg-type]
        with pytest.raises(ts.InvalidArgument, match="method must be a str"):
            await ctl.call("daq", None)  # type: ignore[arg-type]
        with pytest.raises(ts.InvalidArgument, match="timeout must be"):
            await ctl.call("daq", "my_echo", 1, timeout=-1)

        def sync_call() -> Any:
            with ts.SyncClient(server.tcp_url, name="script") as c:
                return c.call("daq", "my_echo", "sync")

        assert await trio.to_thread.run_sync(sync_call) == ["MY ECHO", "sync"]


async def test_provider_disconnect_mid_call_fails_at_once(url: str, server: ts.Server) -> None:
    provider = Daq()
    async with ts.open_client(url, name="ctl") as ctl:
        async with trio.open_nursery() as nursery:
            gone = trio.Event()

            async def run_provider() -> None:
                async with ts.open_client(url, name="daq") as daq_client:
                    daq_client.expose(provider)
                    await provider.started.wait()
                gone.set()

            nursery.start_soon(run_provider)
            with trio.fail_after(SETTLE_S):
                while "daq" not in server.state.by_name:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            daq = await ctl.rpc("daq", timeout=1000)
            errors: list[Exception] = []

            async def call(method: str, *args: Any) -> None:
                try:
                    await daq.call(method, *args)
                except ts.RpcError as exc:
                    errors.append(exc)

            # Three calls in flight at once: all fail as soon as the provider leaves, long
            # before their timeout.
            with trio.fail_after(SETTLE_S):
                async with trio.open_nursery() as calls:
                    calls.start_soon(call, "sleepy", 500.0)
                    calls.start_soon(call, "sleepy", 600.0)
                    calls.start_soon(call, "wait")
            with trio.fail_after(SETTLE_S):
                await gone.wait()
            assert len(errors) == 3
            # Each may have run (a motor moved): the message says to check first.
            said = "'daq' disconnected before answering the call (it may have run: check before"
            assert all(said in str(e) for e in errors), errors
        assert server.state.rpc.pending() == 0


async def test_caller_disconnect_aborts_its_calls(url: str, server: ts.Server) -> None:
    provider = Daq()
    async with ts.open_client(url, name="daq") as daq_client:
        daq_client.expose(provider)
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                async with ts.open_client(url, name="ctl") as ctl:
                    daq = await ctl.rpc("daq")
                    with pytest.raises(ts.ConnectionClosed):
                        await daq.wait()

            nursery.start_soon(caller)
            with trio.fail_after(SETTLE_S):
                await provider.started.wait()
            # Kill the caller's connection without a goodbye: the server must notice by itself.
            ctl_session = server.state.by_name["ctl"]
            await ctl_session.transport.aclose()
            with trio.fail_after(SETTLE_S):
                while not provider.cancelled:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert daq_client._rpc.running == 0
        assert server.state.rpc.pending() == 0


async def test_unknown_provider_or_method_fails_at_once(url: str) -> None:
    async with (
        ts.open_client(url, name="daq") as daq_client,
        ts.open_client(url, name="ctl") as ctl,
        ts.open_client(url, name="quiet"),
    ):
        daq_client.expose(Daq())
        with trio.fail_after(SETTLE_S):
            with pytest.raises(ts.RpcError, match="no client named 'nobody'"):
                await ctl.rpc("nobody", timeout=1000)
            # A typo is named, with the clients that expose methods (first-hour audit).
            with pytest.raises(ts.RpcError) as typo:
                await ctl.rpc("dqa", timeout=1000)
            assert str(typo.value).endswith(
                "no client named 'dqa' is connected; did you mean 'daq'? (clients with "
                "methods: 'daq')"
            )
            with pytest.raises(ts.RpcError, match="exposes no methods"):
                await ctl.rpc("quiet", timeout=1000)
            daq = await ctl.rpc("daq", timeout=1000)
            with pytest.raises(ts.RpcError, match=r"exposes no method 'nope' \(it has: .*read"):
                await daq.call("nope")
            with pytest.raises(ts.RpcError, match="exposes no method 'not_exposed'"):
                await daq.call("not_exposed")
            # As an attribute: the README's RpcError, and what getattr expects of a miss.
            with pytest.raises(ts.RpcError, match="exposes no method 'nope'"):
                daq.nope  # noqa: B018
            assert not hasattr(daq, "nope")
            assert not isinstance(await daq.call("read", 1), ts.RpcError)


async def test_wait_provider_waits_for_a_provider_that_connects_later(
    url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller started together with its provider (one boot script) failed at once with "no
    # client named ..." and had to write its own retry loop; wait_provider=True waits, as
    # subscribe(wait_channel=True) waits for a channel, and says once that it still waits.
    monkeypatch.setattr(rpc_module, "PROVIDER_WAIT_WARN_S", 0.2)
    found: list[Any] = []
    got = trio.Event()
    async with ts.open_client(url, name="ctl") as ctl, trio.open_nursery() as nursery:

        async def caller() -> None:
            found.append(await ctl.rpc("late", timeout=SETTLE_S, wait_provider=True))
            got.set()

        nursery.start_soon(caller)
        await trio.sleep(0.5)
        assert not found
        async with ts.open_client(url, name="late") as late:
            await trio.sleep(0.2)
            assert not found  # connected, exposing nothing yet: it waits on
            late.expose(Daq())
            with trio.fail_after(SETTLE_S):
                await got.wait()
            assert await found[0].my_echo("hi") == ["MY ECHO", "hi"]
    assert caplog.text.count("rpc('late') is still waiting for its provider") == 1


async def test_wait_provider_does_not_wait_out_other_errors(url: str) -> None:
    async with ts.open_client(url, name="ctl") as ctl:
        with trio.fail_after(SETTLE_S), pytest.raises(ts.RpcTimeout):
            await ctl.rpc("late", timeout=0.0, wait_provider=True)  # (its own timeout)
        # A name the server refuses is no name a provider could ever have.
        for never in ("x" * 101, "$server", "€" * 100, "tab\there"):  # (€: 3 bytes)
            with trio.fail_after(SETTLE_S), pytest.raises(ts.InvalidArgument, match="for good"):
                await ctl.rpc(never, wait_provider=True)


async def test_numpy_arguments_and_results_round_trip(url: str) -> None:
    class Math:
        def rpc_identity(self, value: Any) -> Any:
            return value

        def rpc_scale(self, array: np.ndarray[Any, Any], factor: float) -> Any:
            return array * factor

    async with pair(url, Math()) as (_, math_proxy):
        rng = np.random.default_rng(1)
        values: list[Any] = [
            rng.normal(size=(3, 4)).astype(np.float32),
            np.arange(6, dtype=np.int16).reshape(2, 3),
            np.array([1 + 2j, 3 - 4j]),
            np.array([True, False]),
            np.zeros(2**18),  # 2 MiB: the zero-copy path
            {"t": 1.5, "nested": [{"deep": np.arange(3)}], "bytes": b"\x00\x01"},
        ]
        for value in values:
            back = await math_proxy.identity(value)
            if isinstance(value, np.ndarray):
                assert back.dtype == value.dtype and back.shape == value.shape
                np.testing.assert_array_equal(back, value)
            else:
                assert back["t"] == 1.5 and back["bytes"] == b"\x00\x01"
                np.testing.assert_array_equal(back["nested"][0]["deep"], np.arange(3))
        scaled = await math_proxy.scale(np.arange(4.0), factor=2)
        np.testing.assert_array_equal(scaled, np.arange(4.0) * 2)
        # arguments nest deeper than a control message may (16): they travel as a payload
        deep: Any = "bottom"
        for _ in range(40):
            deep = [deep]
        assert await math_proxy.identity(deep) == deep
        assert await math_proxy.identity({1: "int keys"}) == {1: "int keys"}


async def test_values_without_a_wire_form_fail_clearly(url: str) -> None:
    class Odd:
        def rpc_give(self) -> object:
            return object()

        def rpc_take(self, value: Any) -> None:
            return None

    async with pair(url, Odd()) as (_, odd):
        with pytest.raises(ts.RemoteError) as info:
            await odd.give()
        assert info.value.type_name == "TypeError"
        with pytest.raises(TypeError):
            await odd.take(object())  # refused before anything is sent


async def test_sub_services_are_attributes_and_dotted_names(url: str) -> None:
    class Axis:
        def __init__(self) -> None:
            self.position = 0.0

        def rpc_move(self, to: float) -> float:
            self.position = to
            return to

        def rpc_where(self) -> float:
            return self.position

    async with ts.open_client(url, name="daq") as daq_client, ts.open_client(url) as ctl:
        assert daq_client.expose(Axis(), name="stage.x") == ["stage.x.move", "stage.x.where"]
        daq_client.expose(Axis(), name="stage.y")
        daq_client.expose(Daq())
        daq = await ctl.rpc("daq")
        assert await daq.stage.x.move(1.5) == 1.5
        assert await daq.call("stage.y.move", 2.5) == 2.5
        assert await daq.stage.call("x.where") == 1.5
        assert await daq.stage.y.where() == 2.5
        assert await daq.my_echo(0) == ["MY ECHO", 0]
        assert {"stage", "my_echo", "call"} <= set(dir(daq))
        assert set(dir(daq.stage)) >= {"x", "y"}
        with pytest.raises(ts.InvalidArgument):
            daq_client.expose(Axis(), name="bad name")
        # Not a str (the arguments swapped, a bytes name): AttributeError and TypeError.
        for wrong in (42, b"stage", Axis()):
            with pytest.raises(ts.InvalidArgument, match="name must be a str"):
                daq_client.expose(Axis(), name=wrong)  # type: ignore[arg-type]
        with pytest.raises(ts.InvalidArgument, match="no rpc_"):
            daq_client.expose(object())


async def test_clients_lists_the_methods_a_provider_exposes(url: str) -> None:
    async with ts.open_client(url, name="daq") as daq_client, ts.open_client(url) as ctl:
        daq_client.expose(Daq())
        await daq_client.clients()  # the expose message is ahead of this on its connection
        (record,) = [c for c in await ctl.clients() if c.name == "daq"]
        assert "my_echo" in record.methods and "read" in record.methods
        assert "not_exposed" not in record.methods


async def test_expose_then_call_at_once_from_another_client_never_races(url: str) -> None:
    # expose() is not awaited, and the caller's describe travels on another connection; the
    # server asks the provider itself, so the order of arrival cannot matter.
    async with ts.open_client(url, name="ctl") as ctl:
        for i in range(10):
            async with ts.open_client(url, name=f"daq{i}") as daq_client:
                daq_client.expose(Daq())
                daq = await ctl.rpc(f"daq{i}")
                assert await daq.my_echo(i) == ["MY ECHO", i]


async def test_many_concurrent_calls_on_one_connection(url: str) -> None:
    provider = Daq()
    async with pair(url, provider) as (_, daq):
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await daq.sleepy(0.05 + (i % 7) * 0.01)

        with trio.fail_after(SETTLE_S):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
        assert results == {i: 0.05 + (i % 7) * 0.01 for i in range(200)}
        assert provider.max_running > 100  # they really ran at the same time


async def test_a_slow_call_does_not_block_streaming(url: str) -> None:
    provider = Daq()
    async with pair(url, provider) as (daq_client, daq), ts.open_client(url, name="rec") as rec:
        await daq_client.create_channel("AnalogInput1")
        async with (
            rec.subscribe("AnalogInput1", policy="unbounded") as sub,
            daq_client.publisher("AnalogInput1") as pub,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(daq.wait)
            with trio.fail_after(SETTLE_S):
                await provider.started.wait()
                await pub.wait_for_readers()
                for i in range(100):
                    await pub.send(np.full(16, i))
                for i in range(100):
                    assert (await sub.receive()).data[0] == i
                # and other calls still get through while the slow one runs
                assert await daq.my_echo("fast") == ["MY ECHO", "fast"]
            assert not provider.cancelled
            provider.release.set()


async def test_sync_methods_in_the_trio_thread_or_in_a_worker_thread(url: str) -> None:
    class Instrument:
        def __init__(self) -> None:
            self.threads: set[int] = set()
            self.busy = False
            self.overlapped = False

        def rpc_where(self) -> int:
            self.threads.add(threading.get_ident())
            return threading.get_ident()

        def rpc_command(self) -> None:
            # A blocking command: one at a time per exposed object, whichever method it is.
            self.overlapped |= self.busy
            self.busy = True
            threading.Event().wait(0.02)
            self.busy = False

        def rpc_status(self) -> None:
            self.rpc_command()

    direct, threaded = Instrument(), Instrument()
    async with ts.open_client(url, name="daq") as daq_client, ts.open_client(url) as ctl:
        daq_client.expose(direct, name="direct")
        daq_client.expose(threaded, name="threaded", thread=True)
        daq_client.expose(threaded, name="alias", thread=True)  # the same object again
        daq = await ctl.rpc("daq")
        assert await daq.direct.where() == threading.get_ident()
        assert await daq.threaded.where() != threading.get_ident()
        with trio.fail_after(SETTLE_S):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(daq.threaded.command)
                    nursery.start_soon(daq.threaded.status)  # another method, the same object
                    nursery.start_soon(daq.alias.command)  # and under its other name
        assert not threaded.overlapped


async def test_proxy_shows_the_remote_signature_and_docstring(url: str) -> None:
    async with pair(url) as (_, daq):
        assert str(inspect.signature(daq.read)) == "(n: int = 10) -> list[float]"
        assert daq.read.__doc__ == "Read n samples."
        assert "my_echo" in repr(daq.my_echo)
        assert "daq" in repr(daq)


async def test_a_proxy_s_repr_counts_its_methods_in_words(url: str) -> None:
    class One:
        def rpc_home(self) -> None:
            pass

    async with ts.open_client(url, name="rig") as rig, ts.open_client(url) as ctl:
        rig.expose(One(), name="motor")
        proxy = await ctl.rpc("rig")
        assert repr(proxy) == "<rpc proxy 'rig': 1 method>"
        assert repr(proxy.motor) == "<rpc proxy 'rig' motor: 1 method>"
        rig.expose(Daq(), name="daq")
        many = await ctl.rpc("rig")
        assert len(many.methods) > 1
        assert repr(many) == f"<rpc proxy 'rig': {len(many.methods)} methods>"


async def test_a_client_may_call_its_own_methods(url: str) -> None:
    async with ts.open_client(url, name="solo") as solo:
        solo.expose(Daq())
        me = await solo.rpc("solo")
        assert await me.read(2) == [0.0, 1.0]


async def test_malformed_arguments_are_refused_by_the_provider(url: str) -> None:
    async with pair(url) as (_, daq):
        endpoint = daq._endpoint
        with pytest.raises(ts.RpcError, match="malformed arguments"):
            await endpoint.ask(
                lambda ident: R.Call(id=ident, provider="daq", method="my_echo", args=b"\xff"),
                SETTLE_S,
                "garbage",
            )
        with pytest.raises(ts.RpcError, match="malformed arguments"):
            await endpoint.ask(
                lambda ident: R.Call(
                    id=ident, provider="daq", method="my_echo", args=b"\x82\x01\x02"
                ),
                SETTLE_S,
                "not [list, map]",
            )


async def test_bad_timeouts_are_refused(url: str) -> None:
    async with pair(url) as (daq_client, daq):
        with pytest.raises(ValueError, match="timeout"):
            await daq.call("read", timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            await daq_client.rpc("daq", timeout=float("nan"))


# -- the router on its own (sans-io) --------------------------------------------------------------
class FakeSession:
    def __init__(self, name: str) -> None:
        self.name = name
        self.methods: list[str] = []
        self.sent: list[M.ControlMessage] = []

    def send_control(self, message: M.ControlMessage) -> None:
        self.sent.append(message)

    def send_control_frame(self, frame: bytes) -> None:
        self.sent.append(M.decode_message(frame[4:]))


def make_router(*names: str) -> tuple[Router, dict[str, FakeSession]]:
    sessions = {name: FakeSession(name) for name in names}
    return Router(sessions.get), sessions


def test_router_routes_a_call_and_its_result() -> None:
    router, s = make_router("caller", "provider")
    router.call(s["caller"], R.Call(id=7, provider="provider", method="m", args=b"\x80"))
    (invoke,) = s["provider"].sent
    assert isinstance(invoke, R.Invoke) and invoke.caller == "caller" and invoke.args == b"\x80"
    router.result(s["provider"], R.Result(call=invoke.call, value=b"\x01"))
    assert s["caller"].sent == [M.Reply(id=7, result=b"\x01")]
    assert router.pending() == 0


def test_router_counts_a_failed_call_once_by_what_its_caller_got() -> None:
    # An error reply too large to forward was counted "raised" and "too_large": one call,
    # two errors in /metrics (a review).
    sessions = {name: FakeSession(name) for name in ("caller", "provider")}
    router = Router(sessions.get, max_frame_bytes=2000)
    caller, provider = sessions["caller"], sessions["provider"]
    for ident, message in ((1, "x" * 1990), (2, "boom")):
        router.call(caller, R.Call(id=ident, provider="provider", method="m", args=b""))
        invoke = provider.sent[-1]
        assert isinstance(invoke, R.Invoke)
        router.fail(provider, R.Fail(call=invoke.call, type="ValueError", message=message))
    assert [type(m).__name__ for m in caller.sent] == ["Error", "RpcErrorReply"]
    assert router.calls_total == 2
    assert {k: v for k, v in router.errors_total.items() if v} == {"too_large": 1, "raised": 1}


def test_router_answers_for_aborted_calls_are_dropped_but_forged_ones_refused() -> None:
    router, s = make_router("caller", "provider", "other")
    router.call(s["caller"], R.Call(id=1, provider="provider", method="m", args=b""))
    (invoke,) = s["provider"].sent
    assert isinstance(invoke, R.Invoke)
    router.cancel(s["caller"], R.Cancel(id=1))
    assert s["provider"].sent[-1] == R.Abort(call=invoke.call)
    router.result(s["provider"], R.Result(call=invoke.call, value=b""))  # crossed the abort
    assert s["caller"].sent == []
    with pytest.raises(ts.ProtocolError, match="never made"):
        router.result(s["provider"], R.Result(call=999, value=b""))
    router.call(s["caller"], R.Call(id=2, provider="provider", method="m", args=b""))
    invoke = s["provider"].sent[-1]
    assert isinstance(invoke, R.Invoke)
    with pytest.raises(ts.ProtocolError, match="not this client's"):
        router.result(s["other"], R.Result(call=invoke.call, value=b""))
    with pytest.raises(ts.ProtocolError, match="in use"):
        router.call(s["caller"], R.Call(id=2, provider="provider", method="m", args=b""))


def test_router_names_the_answer_a_call_takes() -> None:
    # A refuse of an introspect was "not this client's to answer", though it was.
    router, s = make_router("caller", "provider")
    router.describe(s["caller"], R.Describe(id=1, provider="provider"))
    (introspect,) = s["provider"].sent
    assert isinstance(introspect, R.Introspect)
    with pytest.raises(ts.ProtocolError, match=r"refuse for call .*introspect.*with methods"):
        router.refuse(s["provider"], R.Refuse(call=introspect.call, message="no"))
    router.call(s["caller"], R.Call(id=2, provider="provider", method="m", args=b""))
    invoke = s["provider"].sent[-1]
    assert isinstance(invoke, R.Invoke)
    with pytest.raises(ts.ProtocolError, match=r"methods for call .*invoke.*result, fail or"):
        router.methods(s["provider"], R.Methods(call=invoke.call, methods=[]))


def test_router_fails_or_aborts_everything_when_a_session_ends() -> None:
    router, s = make_router("a", "b", "provider")
    router.call(s["a"], R.Call(id=1, provider="provider", method="m", args=b""))
    router.call(s["b"], R.Call(id=1, provider="provider", method="m", args=b""))
    router.describe(s["a"], R.Describe(id=2, provider="provider"))
    router.call(s["provider"], R.Call(id=5, provider="a", method="m", args=b""))
    router.session_closed(s["provider"])
    for name, ids in (("a", {1, 2}), ("b", {1})):
        errors = [m for m in s[name].sent if isinstance(m, M.Error)]
        assert {e.id for e in errors} == ids
        assert all(e.type == "RpcError" for e in errors)
    # the provider's own call on "a" was aborted there
    assert any(isinstance(m, R.Abort) for m in s["a"].sent)
    assert router.pending() == 0


def test_router_keeps_no_trace_of_a_caller_whose_calls_were_all_refused() -> None:
    # A call to nobody used to leave the caller in the router's table (an empty entry), and
    # with it its whole session, for good, once it disconnected.
    router, s = make_router("caller")
    router.call(s["caller"], R.Call(id=1, provider="nobody", method="m", args=b""))
    router.describe(s["caller"], R.Describe(id=2, provider="nobody"))
    assert [m.type for m in s["caller"].sent if isinstance(m, M.Error)] == ["RpcError"] * 2
    assert not router._by_caller and not router._by_provider
    router.session_closed(s["caller"])
    assert router.pending() == 0


def test_router_limits_calls_in_flight() -> None:
    router, s = make_router("caller", "provider")
    for i in range(MAX_PENDING_CALLS):
        router.call(s["caller"], R.Call(id=i, provider="provider", method="m", args=b""))
    router.call(s["caller"], R.Call(id=-1, provider="provider", method="m", args=b""))
    error = s["caller"].sent[-1]
    assert isinstance(error, M.Error) and error.type == "LimitExceeded"
    assert error.message.endswith(
        "wait for answers (or bound your concurrent calls, e.g. "
        "with a trio.CapacityLimiter) before making more"
    )
    assert router.pending(s["caller"]) == MAX_PENDING_CALLS


def test_router_describe_and_expose_keep_the_listing_current() -> None:
    router, s = make_router("caller", "provider")
    router.expose(s["provider"], R.Expose(methods=["b", "a"]))
    assert s["provider"].methods == ["a", "b"]
    router.describe(s["caller"], R.Describe(id=3, provider="provider"))
    (introspect,) = s["provider"].sent
    assert isinstance(introspect, R.Introspect)
    router.methods(s["provider"], R.Methods(call=introspect.call, methods=[{"name": "c"}]))
    assert s["caller"].sent == [M.Reply(id=3, result=[{"name": "c"}])]
    assert s["provider"].methods == ["c"]
    with pytest.raises(ts.ProtocolError):
        router.expose(s["provider"], R.Expose(methods=[""]))


def test_rpc_messages_round_trip_through_the_codec() -> None:
    messages: list[M.ControlMessage] = [
        R.Describe(id=1, provider="daq"),
        R.Call(id=2, provider="daq", method="read", args=b"\x82\x80\xa0"),
        R.Cancel(id=2),
        R.Expose(methods=["read"]),
        R.Methods(call=3, methods=[{"name": "read", "params": []}]),
        R.Result(call=3, value=b"\x01"),
        R.Fail(call=3, type="ValueError", message="bad", traceback="Traceback ..."),
        R.Refuse(call=3, message="no such method"),
        R.Introspect(call=4),
        R.Invoke(call=4, method="read", args=b"\x82\x80\xa0", caller="ctl"),
        R.Abort(call=4),
        R.RpcErrorReply(id=2, type="ValueError", message="bad", traceback=""),
    ]
    for message in messages:
        assert M.decode_message(M.encode_message(message)) == message
    wire = {"op": "call", "id": 1, "provider": "daq", "method": "m", "args": "not bytes"}
    with pytest.raises(ts.ProtocolError, match="args"):
        M.decode_message(b"\x01" + encode_control(wire))


# -- properties of what crosses the wire ----------------------------------------------------------
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(_values, max_size=5), st.dictionaries(st.text(max_size=8), _values, max_size=5))
@settings(max_examples=200, deadline=None)
def test_arguments_round_trip(args: list[Any], kwargs: dict[str, Any]) -> None:
    assert decode_args(encode_args(tuple(args), kwargs)) == (args, kwargs)


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_malformed_arguments_only_ever_raise_protocol_error(data: bytes) -> None:
    try:
        args, kwargs = decode_args(data)
    except ts.ProtocolError:
        return
    assert isinstance(args, list) and isinstance(kwargs, dict)


_params = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=5) | st.integers(),
        "kind": st.sampled_from(["positional_only", "keyword_only", "var_keyword", "bogus"]),
        "default": st.none() | st.text(max_size=5) | st.integers(),
        "annotation": st.none() | st.text(max_size=5),
    },
)


@given(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=5)},
        optional={"params": st.lists(_params, max_size=4) | st.integers(), "returns": _values},
    )
)
@settings(max_examples=300, deadline=None)
def test_hostile_descriptions_become_rpc_errors(description: dict[str, Any]) -> None:
    # A proxy is built from what another client sent: anything odd must be a clear RpcError.
    try:
        proxy = RpcProxy._build(cast(RpcEndpoint, None), "p", [description], 1.0)
    except ts.RpcError:
        return
    assert description["name"] in proxy.methods


# -- forwarded messages never exceed max_frame_bytes ----------------------------------------------
class Echo:
    def rpc_echo(self, data: Any) -> Any:
        return data


async def test_a_call_whose_invoke_would_exceed_the_frame_limit_is_refused_to_the_caller(
    nursery: trio.Nursery,
) -> None:
    """A caller with a long multi-byte name sends a call of exactly max_frame_bytes: the
    invoke the server would forward is larger (it names the caller). The caller gets
    FrameTooLarge; the provider, which did nothing wrong, stays connected and serves."""
    from test_robustness import control, read_messages

    from trio_stream._protocol.framing import frame_prefix
    from trio_stream._protocol.limits import PROTOCOL_VERSION

    limit = 64 * 1024
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_frame_bytes=limit)
    server: ts.Server = await nursery.start(ts.serve, config)
    url = server.tcp_url or ""
    async with ts.open_client(url, name="provider") as provider:
        provider.expose(Echo())
        port = int(url.rsplit(":", 1)[1])
        caller = await trio.open_tcp_stream("127.0.0.1", port)
        name = "\N{GRINNING FACE}" * 63  # 252 bytes of UTF-8
        await caller.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=name)))
        assert isinstance((await read_messages(caller, until=M.Welcome))[-1], M.Welcome)

        def call(ident: int, padding: int) -> bytes:
            args = encode_args(("x" * padding,), {})
            return M.encode_message(R.Call(id=ident, provider="provider", method="echo", args=args))

        padding = limit - 200
        while len(call(1, padding)) < limit:  # a call body of exactly max_frame_bytes
            padding += 1
        body = call(1, padding)
        assert len(body) == limit
        await caller.send_all(frame_prefix(len(body)) + body)
        (answer,) = await read_messages(caller, until=M.Error)
        assert isinstance(answer, M.Error) and answer.id == 1
        assert answer.type == "FrameTooLarge" and "max_frame_bytes" in answer.message
        # Nothing was forwarded, and both ends still work.
        small = call(2, 10)
        await caller.send_all(frame_prefix(len(small)) + small)
        (reply,) = await read_messages(caller, until=M.Reply)
        assert isinstance(reply, M.Reply) and reply.id == 2
        assert (await provider.stats()).connections == 2
        await caller.aclose()


def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A plain decorator, as applications write them: a sync wrapper."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Counts:
    def __call__(self, n: int) -> Iterator[int]:
        yield from range(n)


class Decorated:
    def __init__(self) -> None:
        self.rpc_count = Counts()  # an object whose __call__ is a generator

    @logged
    async def rpc_double(self, x: int) -> int:
        await trio.lowlevel.checkpoint()
        return 2 * x


@pytest.mark.parametrize("thread", [False, True])
async def test_a_decorated_async_method_and_a_generator_object_are_what_they_wrap(
    url: str, thread: bool
) -> None:
    # With thread=True (the SyncClient's default) the decorated async method ran in a worker
    # thread, which refused the coroutine it made; the generator object was taken for a
    # plain method ("returns one result") and its generator could not be sent.
    async with pair(url, Decorated(), thread=thread) as (_, proxy):
        with trio.fail_after(SETTLE_S):
            assert await proxy.double(21) == 42
            assert [v async for v in proxy.count(3)] == [0, 1, 2]


def listed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that consumes the generator it wraps: a plain method, not a stream."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return list(fn(*args, **kwargs))

    return wrapper


def in_trio(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that runs an async method from its worker thread (thread=True)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return trio.from_thread.run(partial(fn, *args, **kwargs))

    return wrapper


class Wrapped:
    @listed
    def rpc_items(self, n: int) -> Iterator[int]:
        yield from range(n)

    @in_trio
    async def rpc_later(self, x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x + 1


async def test_a_wrapper_is_what_it_does_not_what_it_wraps(url: str) -> None:
    # A wrapper that consumes a generator returns a list; one that runs an async method
    # through trio.from_thread needs its worker thread. Looking through functools.wraps
    # took the first for a stream and ran the second in the trio thread, where it failed.
    async with pair(url, Wrapped(), thread=True) as (_, proxy):
        with trio.fail_after(SETTLE_S):
            assert await proxy.items(3) == [0, 1, 2]
            assert await proxy.later(41) == 42


async def server_with_frame_limit(nursery: trio.Nursery, limit: int) -> str:
    """A server of its own with ``max_frame_bytes=limit``; its TCP URL."""
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_frame_bytes=limit)
    server: ts.Server = await nursery.start(ts.serve, config)
    return server.tcp_url or ""


class Picky:
    def rpc_load(self, data: str) -> int:
        raise ValueError(f"bad header: {data!r}")  # its argument in its message, whole

    def rpc_ok(self) -> str:
        return "still here"

    async def rpc_lines(self, data: str) -> AsyncIterator[int]:
        yield 1
        raise ValueError(data)


async def test_an_error_larger_than_the_frame_limit_reaches_the_caller_clipped(
    nursery: trio.Nursery,
) -> None:
    # The method put its (large) argument in its error: the `fail` frame was over
    # max_frame_bytes, the server disconnected the provider, and every caller of it got
    # "disconnected before answering". Now the message's start and the traceback's end go.
    url = await server_with_frame_limit(nursery, 64 * 1024)
    async with pair(url, Picky()) as (provider, picky):
        with trio.fail_after(SETTLE_S):
            with pytest.raises(ts.RemoteError) as raised:
                await picky.load("x" * 60_000)  # the call fits; repr() in the error too
            assert raised.value.type_name == "ValueError"
            assert raised.value.message.startswith("bad header: 'xxx")
            assert "bytes cut]" in raised.value.message
            assert "rpc_load" in raised.value.remote_traceback  # where it was raised
            with pytest.raises(ts.RemoteError, match="bytes cut"):
                async for _ in picky.lines("y" * 60_000):
                    pass
            assert await picky.ok() == "still here"  # the provider stayed connected
            assert provider.state == "open"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=40, max_value=400), st.sampled_from(["start", "end"]))
def test_clipped_text_fits_its_bytes_and_short_text_is_kept(
    text: str, max_bytes: int, keep: Any
) -> None:
    clipped = _clip(text, max_bytes, keep)
    encoded = clipped.encode()  # encodable: a lone surrogate became "?"
    assert len(encoded) <= max_bytes
    if len(text.encode("utf-8", "replace")) <= max_bytes:
        assert clipped == text.encode("utf-8", "replace").decode()
    else:
        assert "bytes cut]" in clipped


async def test_a_description_larger_than_the_frame_limit_keeps_first_doc_lines(
    nursery: trio.Nursery,
) -> None:
    # 100 methods with long docstrings: the `methods` answer was over max_frame_bytes, and
    # every rpc() of the provider disconnected it. Over the limit, each doc is its first line.
    url = await server_with_frame_limit(nursery, 64 * 1024)
    doc = "Read the sensor.\n\n" + "A long explanation of what it does. " * 40

    def method(self: object) -> int:
        return 7

    method.__doc__ = doc
    wordy = type("Wordy", (), {f"rpc_m{i:03d}": method for i in range(100)})
    with trio.fail_after(SETTLE_S):
        async with pair(url, wordy()) as (provider, proxy):
            assert await proxy.m042() == 7
            assert inspect.getdoc(proxy.m042) == "Read the sensor."
            assert provider.state == "open"


async def test_a_description_that_fits_nowhere_keeps_every_method_callable(
    nursery: trio.Nursery,
) -> None:
    # The smallest frame limit and 60 methods: even without their docs the descriptions were
    # over it, and the provider sent them anyway (the server disconnected it). Now those
    # that fit are described by name alone; every method is still called by name.
    url = await server_with_frame_limit(nursery, 4096)  # the smallest

    def method(self: object, first: int = 1, second: str = "a long default value") -> int:
        return first + len(second)

    many = type("Many", (), {f"rpc_method_number_{i:03d}": method for i in range(60)})
    with trio.fail_after(SETTLE_S):
        async with pair(url, many()) as (provider, proxy):
            assert await proxy.method_number_000(2, "abc") == 5  # described: by name alone
            assert 0 < len(proxy.methods) < 60
            assert await proxy.call("method_number_059", 2, "abc") == 5
            assert provider.state == "open"


async def test_a_description_of_more_items_than_the_server_takes_is_shortened(
    nursery: trio.Nursery,
) -> None:
    # The server refuses a client's message of more than CONTROL_MAX_ITEMS CBOR items (a
    # fuzzer's 16 MiB of empty maps held it 4 s): 1,000 methods of 12 parameters each are
    # ~150,000, far within max_frame_bytes, and the provider must not be cut off for them.
    url = await server_with_frame_limit(nursery, 64 * 2**20)

    def method(
        self: object, a: int = 1, b: int = 2, c: int = 3, d: int = 4, e: int = 5, f: int = 6,
        g: int = 7, h: int = 8, i: int = 9, j: int = 10, k: int = 11, m: int = 12,
    ) -> int:  # fmt: skip
        return a + m

    many = type("Many", (), {f"rpc_m{i:04d}": method for i in range(1000)})
    with trio.fail_after(SETTLE_S):
        async with pair(url, many()) as (provider, proxy):
            assert await proxy.m0999(2) == 14
            assert len(proxy.methods) == 1000
            # The first ones whole, while the bound has room: their arguments are checked
            # here (nothing sent); the rest by name alone, any arguments.
            with pytest.raises(TypeError):
                await proxy.m0000(n=1)
            assert "m: int = 12" in str(inspect.signature(proxy.m0000))
            assert "m: int = 12" not in str(inspect.signature(proxy.m0999))
            assert provider.state == "open"


def test_the_router_refuses_an_invoke_over_the_limit_and_forgets_the_call() -> None:
    sessions = {name: FakeSession(name) for name in ("caller-" + "\u00e9" * 100, "provider")}
    caller, provider = sessions.values()
    router = Router(sessions.get, max_frame_bytes=1000)
    args = b"\x00" * 900
    body = M.encode_message(R.Call(id=7, provider="provider", method="m", args=args))
    assert len(body) <= 1000  # the call itself fits
    router.call(caller, R.Call(id=7, provider="provider", method="m", args=args))
    assert provider.sent == []
    (error,) = caller.sent
    assert isinstance(error, M.Error) and error.type == "FrameTooLarge"
    assert router.pending() == 0


async def test_a_refused_call_lists_at_most_fifty_methods_and_counts_the_rest(url: str) -> None:
    many = type("Many", (), {f"rpc_m{i:02d}": lambda self: None for i in range(60)})
    async with ts.open_client(url, name="many") as provider, ts.open_client(url) as caller:
        provider.expose(many())
        with trio.fail_after(SETTLE_S):
            proxy = await caller.rpc("many", timeout=1000)
            with pytest.raises(ts.RpcError, match=r"\(it has: m00, m01, .* m49 and 10 more\)"):
                await proxy.call("nope")


async def running_on(
    nursery: trio.Nursery, provider: ts.Client, call: Callable[[], Awaitable[Any]]
) -> list[ts.ConnectionClosed]:
    """Start ``call`` in ``nursery``; return once ``provider`` runs it. The list gets the
    ConnectionClosed the call raises (a restart of its server)."""
    lost: list[ts.ConnectionClosed] = []

    async def make_the_call() -> None:
        try:
            await call()
        except ts.ConnectionClosed as exc:
            lost.append(exc)

    nursery.start_soon(make_the_call)
    while not provider._rpc.running:  # noqa: ASYNC110 - the provider's table, polled
        await trio.sleep(0.005)
    return lost


async def test_a_call_running_at_a_server_restart_never_answers_a_call_of_the_new_server() -> None:
    # The restarted server numbers its calls from 1 again. The provider's call of the lost
    # connection, still running, used to answer on the new connection: its result reached
    # another caller's call of the same number (or, with no such call, got the provider
    # disconnected for answering a call never made). It is cancelled at the reconnect now.
    class Slow:
        def __init__(self) -> None:
            self.cancelled: list[str] = []

        async def rpc_slow(self, tag: str, seconds: float) -> str:
            try:
                await trio.sleep(seconds)
            except trio.Cancelled:
                self.cancelled.append(tag)
                raise
            return f"result of {tag}"

    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    slow = Slow()
    fast = ts.Reconnect(initial=0.05, maximum=0.1)
    with trio.fail_after(SETTLE_S):
        async with ts.open_server(config) as first:
            port = int(str(first.tcp_url).rsplit(":", 1)[1])
            async with (
                ts.open_client(str(first.tcp_url), name="prov", reconnect=fast) as prov,
                ts.open_client(str(first.tcp_url), name="one", reconnect=False) as one,
                trio.open_nursery() as nursery,
            ):
                prov.expose(slow)
                proxy = await one.rpc("prov")
                first_answer = await running_on(nursery, prov, partial(proxy.slow, "A", 1.0))
                await first.aclose()
                second_config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
                async with ts.open_server(second_config) as second:
                    state = prov.state
                    while state != "open":
                        state = await prov.wait_state_change(state)
                    async with ts.open_client(str(second.tcp_url), name="two") as two:
                        again = await two.rpc("prov")  # the describe is call 1, "B" call 2
                        assert await again.slow("B", 1.5) == "result of B"
                    assert second.state.by_name["prov"] is not None
                assert len(first_answer) == 1
                assert slow.cancelled == ["A"]


async def test_a_call_of_the_lost_connection_cannot_answer_during_the_restore() -> None:
    # The provider owns a channel, so its restore re-creates it (a round trip) before it
    # exposes its methods again: an invocation of the lost connection that finished in that
    # window answered on the new connection, whose server had never made that call, and
    # the provider was disconnected for it. Its invocations now end at the loss itself.
    fast = ts.Reconnect(initial=0.05, maximum=0.1)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    with trio.fail_after(SETTLE_S):
        async with trio.open_nursery() as nursery:
            first: ts.Server = await nursery.start(ts.serve, config)
            port = int(str(first.tcp_url).rsplit(":", 1)[1])
            async with (
                ts.open_client(str(first.tcp_url), name="prov", reconnect=fast) as prov,
                ts.open_client(str(first.tcp_url), name="caller") as caller,
            ):

                class Service:
                    def rpc_quick(self) -> int:
                        return 1

                    async def rpc_until_welcomed_again(self) -> str:
                        start = prov.reconnects
                        while prov.reconnects == start:
                            await trio.lowlevel.checkpoint()  # returns right after the new welcome
                        return "late"

                prov.expose(Service())
                await prov.create_channel("owned")
                proxy = await caller.rpc("prov")
                for _ in range(4):
                    await proxy.quick()  # the lost call gets a number the new server uses
                outcome = await running_on(nursery, prov, proxy.until_welcomed_again)
                await first.aclose()
                second_config = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
                second: ts.Server = await nursery.start(ts.serve, second_config)
                while prov.reconnects < 1 or prov.state != "open":  # noqa: ASYNC110
                    await trio.sleep(0.02)
                await trio.sleep(0.5)  # a refused answer would close it again meanwhile
                assert prov.reconnects == 1 and prov.state == "open"
                assert len(outcome) == 1
                await second.aclose()
            nursery.cancel_scope.cancel()


async def test_one_call_at_a_time_per_object_by_identity(url: str) -> None:
    # The limiter of thread=True methods belongs to the object itself: an unhashable one
    # (a plain dataclass) exposed under two names runs one call at a time, and two distinct
    # objects that compare equal (two identical instruments) each run their own.
    both_in = threading.Barrier(2, timeout=5.0)  # the equal pair: met only side by side

    @dataclasses.dataclass
    class Instrument:
        serial: str
        busy: int = 0
        most: int = 0

        def rpc_measure(self) -> None:
            self.busy += 1
            self.most = max(self.most, self.busy)
            threading.Event().wait(0.05)
            self.busy -= 1

        def rpc_meet(self) -> None:
            both_in.wait()  # BrokenBarrierError (a RemoteError here) if run one at a time

    shared, left, right = Instrument("a"), Instrument("b"), Instrument("b")
    assert left == right
    async with ts.open_client(url, name="daq") as daq_client, ts.open_client(url) as ctl:
        daq_client.expose(shared, name="one", thread=True)
        daq_client.expose(shared, name="same", thread=True)
        daq_client.expose(left, name="left", thread=True)
        daq_client.expose(right, name="right", thread=True)
        daq = await ctl.rpc("daq")
        with trio.fail_after(SETTLE_S):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(daq.one.measure)
                    nursery.start_soon(daq.same.measure)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(daq.left.meet)
                nursery.start_soon(daq.right.meet)
    assert shared.most == 1


@pytest.mark.parametrize("thread", [False, True])
async def test_a_method_that_calls_sys_exit_fails_the_call_not_the_provider(
    url: str, thread: bool
) -> None:
    # sys.exit() in a method ended the provider's client (a SyncClient's thread died with
    # a 50-line traceback while its script went on, no longer a provider).
    class Quitter:
        def rpc_quit(self) -> None:
            sys.exit(3)

        def rpc_still_here(self) -> bool:
            return True

    async with ts.open_client(url, name="daq") as daq_client, ts.open_client(url) as ctl:
        daq_client.expose(Quitter(), thread=thread)
        daq = await ctl.rpc("daq")
        with trio.fail_after(SETTLE_S):
            with pytest.raises(ts.RemoteError) as failed:
                await daq.quit()
            assert failed.value.type_name == "SystemExit"
            assert await daq.still_here()
        assert daq_client.state == "open"


async def test_expose_on_a_closed_client_raises(server: ts.Server) -> None:
    # It returned the method names as if exposed (the suppress meant for a reconnecting
    # client swallowed "the client is closed").
    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="p") as client:
        pass
    with pytest.raises(ts.ConnectionClosed, match="the client is closed"):
        client.expose(Daq())


async def test_exposing_a_class_instead_of_an_instance_says_so(server: ts.Server) -> None:
    # It was accepted, and every call failed later ("missing a required argument: 'self'").
    # A class whose methods are static needs no instance, and is exposed as before.
    class Static:
        @staticmethod
        def rpc_ping() -> str:
            return "pong"

    assert server.tcp_url
    async with ts.open_client(server.tcp_url, name="p") as client:
        with pytest.raises(ts.InvalidArgument, match=r"Daq is a class: expose an instance"):
            client.expose(Daq)
        assert client.expose(Static) == ["ping"]


class Arrays:
    """Results and streamed values that are one numpy array, and deep values."""

    def rpc_array(self, n: int, dtype: str) -> Any:
        return np.arange(n, dtype=dtype)

    async def rpc_arrays(self, n: int) -> AsyncIterator[Any]:
        for i in range(n):
            yield np.arange(6, dtype="<i4") + i

    def rpc_deep(self, levels: int) -> Any:
        value: Any = 0
        for _ in range(levels):
            value = [value]
        return value

    def rpc_depth_of(self, value: Any) -> int:
        levels = 0
        while isinstance(value, list):
            value, levels = value[0], levels + 1
        return levels


@pytest.mark.parametrize(
    ("n", "dtype"), [(6, "float32"), (4, "float64"), (1000, "uint8"), (0, "int16")]
)
async def test_an_array_result_or_streamed_value_arrives_writable(
    url: str, n: int, dtype: str
) -> None:
    # An RPC result is immutable bytes: the one-array fast path wrapped them read-only
    # ("a += 1" raised), depending on where the bytes fell (values audit).
    async with pair(url, Arrays()) as (_, arrays):
        with trio.fail_after(SETTLE_S):
            got = await arrays.array(n, dtype)
            assert got.flags.writeable and got.dtype == np.dtype(dtype) and len(got) == n
            got += 1
            async for value in arrays.arrays(3):
                assert value.flags.writeable
                value += 1


async def test_rpc_decodes_with_the_clients_payload_limits(url: str) -> None:
    # Arguments, results and streamed values were decoded with the default limits whatever
    # the client was given, while PayloadRefused advised raising them there (values audit).
    deep = ts.PayloadLimits(max_depth=300)
    async with (
        ts.open_client(url, name="deep", payload_limits=deep) as provider,
        ts.open_client(url, name="ctl", payload_limits=deep) as caller,
        ts.open_client(url, name="plain") as plain,
    ):
        provider.expose(Arrays())
        arrays = await caller.rpc("deep", timeout=SETTLE_S)
        with trio.fail_after(SETTLE_S):
            assert await arrays.depth_of(Arrays().rpc_deep(200)) == 200
            assert Arrays().rpc_depth_of(await arrays.deep(200)) == 200
            default = await plain.rpc("deep", timeout=SETTLE_S)
            with pytest.raises(ts.PayloadRefused, match="max_depth"):
                await default.deep(200)


async def test_a_second_object_with_a_method_of_an_exposed_name_is_refused(url: str) -> None:
    # Its method silently took the first one's calls (first-hour audit).
    class Other:
        def rpc_read(self) -> str:
            return "other"

    async with ts.open_client(url, name="daq") as daq_client, ts.open_client(url) as ctl:
        first = Daq()
        daq_client.expose(first)
        daq_client.expose(first)  # the same object again: as it is
        with pytest.raises(ts.InvalidArgument, match=r"'read' is exposed already, by a Daq"):
            daq_client.expose(Other())
        daq_client.expose(Other(), name="other")
        with trio.fail_after(SETTLE_S):
            daq = await ctl.rpc("daq", timeout=1000)
            assert await daq.call("other.read") == "other"
            assert await daq.call("read") != "other"


class WhoAsks:
    def rpc_sync(self) -> str | None:
        return ts.current_caller()

    async def rpc_async(self) -> str | None:
        await trio.lowlevel.checkpoint()
        return ts.current_caller()


@pytest.mark.parametrize("thread", [False, True])
async def test_a_method_learns_who_calls_it(url: str, thread: bool) -> None:
    # python-socketio hands each handler the caller's sid: a method here reads its caller's
    # name (a worker thread's method too), and code outside any call reads None.
    async with pair(url, WhoAsks(), thread=thread) as (_, daq):
        assert await daq.sync() == "ctl"
        assert await daq.call("async") == "ctl"
    assert ts.current_caller() is None


async def test_a_sync_clients_method_learns_who_calls_it(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url

    def provide_and_call() -> list[str | None]:
        with ts.SyncClient(url, name="script") as script, ts.SyncClient(url, name="ctl2") as ctl:
            script.expose(WhoAsks())
            proxy = ctl.rpc("script", timeout=SETTLE_S)
            return [proxy.sync(), proxy.call("async")]

    assert await trio.to_thread.run_sync(provide_and_call) == ["ctl2", "ctl2"]


async def test_a_method_that_raises_is_logged_by_its_provider_at_info(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The caller gets a RemoteError; the provider's own log said nothing (at DEBUG). A line
    # at INFO, the traceback at DEBUG (any caller could fill the log with tracebacks).
    caplog.set_level(logging.DEBUG, logger="trio_stream")
    async with pair(url, Streams()) as (_, daq):
        with pytest.raises(ts.RemoteError):
            await daq.call("async_boom", "no such sensor")
        with pytest.raises(ts.RemoteError):
            async for _ in daq.stream("fails_after", 1):
                pass
    lines = [r for r in caplog.records if r.getMessage().startswith("rpc ")]
    said = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in lines]
    assert said == [
        (
            logging.INFO,
            "rpc async_boom from ctl raised ValueError: no such sensor (sent to the caller)",
            False,
        ),
        (logging.DEBUG, "rpc async_boom from ctl: the traceback", True),
        (
            logging.INFO,
            "rpc stream fails_after from ctl raised RuntimeError: after 1 (sent to the caller)",
            False,
        ),
        (logging.DEBUG, "rpc stream fails_after from ctl: the traceback", True),
    ]


class Streams(Daq):
    async def rpc_fails_after(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise RuntimeError(f"after {n}")


@given(
    st.lists(st.text("abcd", min_size=1, max_size=4), max_size=600, unique=True),
    st.text("abcd", min_size=1, max_size=4),
)
@settings(max_examples=200)
def test_a_misspelt_provider_is_compared_with_at_most_a_bounded_run_of_names(
    names: list[str], name: str
) -> None:
    # Each compared name costs ~23 us (difflib): 990 providers made each call to a missing
    # one cost 22 ms. All of them up to the bound, else those of its first character
    # nearest it in order.
    names.sort()
    near = _near(names, name)
    assert len(near) <= MAX_CLOSE_CANDIDATES
    if len(names) <= MAX_CLOSE_CANDIDATES:
        assert near == names
        return
    same_first = [n for n in names if n[:1] == name[:1]]
    assert all(n[:1] == name[:1] for n in near)
    assert len(near) == min(len(same_first), MAX_CLOSE_CANDIDATES)
    if near:  # a contiguous run of them, around where the name would go
        start = same_first.index(near[0])
        assert same_first[start : start + len(near)] == near
        assert near[0] <= name or start == 0
        assert name <= near[-1] or start + len(near) == len(same_first)
