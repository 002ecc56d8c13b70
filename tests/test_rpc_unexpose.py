"""Client.unexpose and SyncClient.unexpose: withdrawing what expose exposed.

Every test runs a real server on loopback; connections are cut with the TCP proxy
(tests/proxy.py) and servers restarted for real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from proxy import open_proxy

import trio_stream as ts
import trio_stream.sync as sync_module
from trio_stream._protocol.rpc_messages import MAX_METHODS
from trio_stream.sync import SyncClient

SETTLE_S = 10.0  # a bound for what takes milliseconds on loopback
FAST = ts.Reconnect(initial=0.05, maximum=0.2)


class Daq:
    def rpc_read(self) -> str:
        return "read"

    def rpc_status(self) -> str:
        return "ok"


@dataclasses.dataclass
class Motor:
    """Two of them compare equal: identical instruments, distinct all the same."""

    def rpc_move(self, to: float) -> float:
        return to


class Gate:
    """Async methods that wait until the test lets them go."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.release = trio.Event()

    async def rpc_wait(self) -> str:
        self.started.set()
        await self.release.wait()
        return "done"

    async def rpc_count(self, n: int) -> AsyncIterator[int]:
        yield 0
        await self.release.wait()
        for i in range(1, n):
            yield i


async def refused(call: Any) -> str:
    """The message of the plain RpcError (not a RemoteError: the provider refused) ``call``
    raises."""
    with trio.fail_after(SETTLE_S), pytest.raises(ts.RpcError) as caught:
        await call
    assert type(caught.value) is ts.RpcError
    return str(caught.value)


async def methods_listed(client: ts.Client, name: str) -> tuple[str, ...]:
    """The provider's methods as the server's ``clients`` record has them (the wire list).
    Asked by the provider itself: its connection brings the server its ``expose`` first."""
    with trio.fail_after(SETTLE_S):
        return next(c.methods for c in await client.clients() if c.name == name)


async def test_a_withdrawn_method_is_refused_as_one_never_exposed(url: str) -> None:
    async with (
        ts.open_client(url, name="prov") as prov,
        ts.open_client(url, name="ctl") as ctl,
    ):
        daq = Daq()
        prov.expose(daq)
        prov.expose(Motor(), name="motor")
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)  # made before: it still has "read"
        never = await refused(proxy.call("never"))
        assert never == "'prov' exposes no method 'never' (it has: motor.move, read, status)"

        assert prov.unexpose(daq) == ["read", "status"]
        gone = await refused(proxy.read())
        assert gone == "'prov' exposes no method 'read' (it has: motor.move)"
        assert await refused(ctl.call("prov", "status")) == gone.replace("'read'", "'status'")
        assert await proxy.motor.move(2.5) == 2.5  # the rest stays
        assert await methods_listed(prov, "prov") == ("motor.move",)  # the server was told
        assert sorted((await ctl.rpc("prov")).methods) == ["motor.move"]

        # Everything withdrawn: as a provider that never exposed anything.
        assert prov.unexpose("motor") == ["motor.move"]
        assert await methods_listed(prov, "prov") == ()
        with pytest.raises(ts.RpcError, match=r"'prov' exposes no methods \(yet\)"):
            await ctl.rpc("prov")
        assert await refused(proxy.motor.move(1.0)) == (
            "'prov' exposes no method 'motor.move' (it has: none)"
        )

        # Exposed again, as new.
        assert prov.expose(daq) == ["read", "status"]
        assert await proxy.read() == "read"


async def test_what_each_kind_of_target_withdraws(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="prov") as prov:
        daq, motor, inner = Daq(), Motor(), Motor()
        prov.expose(daq)
        prov.expose(daq, name="spare")
        prov.expose(motor, name="stage")
        prov.expose(inner, name="stage.x")
        everything = ["read", "spare.read", "spare.status", "stage.move", "stage.x.move", "status"]
        assert sorted(prov._rpc._methods) == everything

        # A method's full name: that method alone.
        assert prov.unexpose("spare.status") == ["spare.status"]
        assert prov.unexpose("read") == ["read"]
        # A name= given to expose: the methods right under it, not those of "stage.x".
        assert prov.unexpose("stage") == ["stage.move"]
        assert sorted(prov._rpc._methods) == ["spare.read", "stage.x.move", "status"]
        # The object: whatever of it is left, under every name.
        assert prov.unexpose(daq) == ["spare.read", "status"]
        assert sorted(prov._rpc._methods) == ["stage.x.move"]
        # An equal object is another object: motor is not exposed any more, inner still is.
        assert motor == inner
        with pytest.raises(ts.InvalidArgument, match=r"this Motor is not exposed"):
            prov.unexpose(motor)
        assert prov.unexpose(inner) == ["stage.x.move"]


async def test_unexposing_what_is_not_exposed_says_what_is(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="prov") as prov:
        daq = Daq()
        prov.expose(daq, name="daq")
        listed = re.escape("(exposed now: daq.read, daq.status)")
        with pytest.raises(ts.InvalidArgument, match=r"this Motor is not exposed: .*" + listed):
            prov.unexpose(Motor())
        with pytest.raises(ValueError, match=r"no method and no name= 'dag' is exposed: .*"):
            prov.unexpose("dag")
        with pytest.raises(ts.InvalidArgument, match=listed):
            prov.unexpose("read")  # exposed as "daq.read"
        with pytest.raises(ts.InvalidArgument, match=listed):
            prov.unexpose(daq.rpc_read)  # a bound method is not the object
        assert prov.unexpose(daq) == ["daq.read", "daq.status"]
        with pytest.raises(ts.InvalidArgument, match=r"\(exposed now: none\)"):
            prov.unexpose(daq)  # twice


async def test_an_empty_name_withdraws_nothing(server: ts.Server) -> None:
    # Every method exposed without a name= is "right under" "": an empty variable withdrew
    # them all.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="prov") as prov:
        prov.expose(Daq())
        prov.expose(Motor(), name="motor")
        said = re.escape(
            "unexpose('') names nothing: pass the exposed object, a method's full name "
            "('read', 'stage.move') or the name= it was exposed under ('stage') (exposed now: "
            "motor.move, read, status)"
        )
        with pytest.raises(ts.InvalidArgument, match=f"^{said}$"):
            prov.unexpose("")
        assert sorted(prov._rpc._methods) == ["motor.move", "read", "status"]
        assert await methods_listed(prov, "prov") == ("motor.move", "read", "status")
        # A top-level method's name is still that method alone; a name= its methods.
        assert prov.unexpose("read") == ["read"]
        assert prov.unexpose("motor") == ["motor.move"]
        assert sorted(prov._rpc._methods) == ["status"]


class Stage:
    def rpc_x(self) -> str:
        return "Stage's x"

    def rpc_move(self, to: float) -> float:
        return to


async def test_a_name_that_says_two_things_withdraws_nothing(server: ts.Server) -> None:
    # "stage.x" is Stage's method x (exposed under "stage") and the name= another object
    # was exposed under: both went, where whoever wrote it meant one of them.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="prov") as prov:
        stage, inner = Stage(), Motor()
        prov.expose(stage, name="stage")
        prov.expose(inner, name="stage.x")
        everything = ["stage.move", "stage.x", "stage.x.move"]
        said = re.escape(
            "'stage.x' names both a method (of Stage) and the name= methods of Motor were "
            "exposed under (stage.x.move): pass the object to withdraw instead, unexpose(obj)"
        )
        with pytest.raises(ts.InvalidArgument, match=f"^{said}$"):
            prov.unexpose("stage.x")
        assert sorted(prov._rpc._methods) == everything
        assert await methods_listed(prov, "prov") == tuple(everything)
        # The object says which; once one meaning is gone, the name says the other.
        assert prov.unexpose(inner) == ["stage.x.move"]
        assert prov.unexpose("stage.x") == ["stage.x"]
        assert sorted(prov._rpc._methods) == ["stage.move"]
        prov.expose(inner, name="stage.x")
        assert prov.unexpose("stage.x") == ["stage.x.move"]
        assert prov.unexpose("stage") == ["stage.move"]


async def test_calls_already_running_run_to_their_end(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
        trio.open_nursery() as nursery,
    ):
        gate = Gate()
        prov.expose(gate)
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)
        results: list[str] = []

        async def wait() -> None:
            results.append(await proxy.wait())

        with trio.fail_after(SETTLE_S):
            nursery.start_soon(wait)
            await gate.started.wait()
            stream = proxy.count(5)
            values = stream.__aiter__()
            assert await values.__anext__() == 0

            prov.unexpose(gate)
            assert "exposes no method 'wait'" in await refused(proxy.wait())
            with pytest.raises(ts.RpcError, match="exposes no method 'count'"):
                async for _ in proxy.count(1):
                    pass
            assert prov._rpc.running == 2  # the call and the stream
            # The stream goes on to its end, the call returns.
            gate.release.set()
            assert [v async for v in values] == [1, 2, 3, 4]
            while not results:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert results == ["done"]


async def test_a_withdrawn_object_is_let_go(server: ts.Server) -> None:
    # A driver swapped at run time: the client holds nothing of the old one any more (its
    # one-at-a-time turn included), and the new one takes the same names.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        old = Daq()
        prov.expose(old, thread=True)
        prov.expose(old, name="spare", thread=True)
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)
        assert await proxy.read() == "read"
        held = weakref.ref(old)
        prov.unexpose("spare")
        prov.unexpose("read")
        del old
        gc.collect()
        assert held() is not None  # its "status" is still exposed
        prov.unexpose("status")

        class NewDaq(Daq):
            def rpc_read(self) -> str:
                return "new read"

        prov.expose(NewDaq(), thread=True)  # the same names: no "exposed already"
        assert await proxy.read() == "new read"
        gc.collect()
        assert held() is None


class Instrument:
    """thread=True methods that count how many of them run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.entered = threading.Event()
        self.go_on = threading.Event()
        self.made = 0  # values rpc_steps made

    def _enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def _leave(self) -> None:
        with self.lock:
            self.now -= 1

    def rpc_slow(self) -> str:
        self._enter()
        self.entered.set()
        try:
            assert self.go_on.wait(SETTLE_S)
        finally:
            self._leave()
        return "slow"

    def rpc_quick(self) -> str:
        self._enter()
        self._leave()
        return "quick"

    def rpc_steps(self) -> Iterator[int]:
        """Four quick values, then one that waits for go_on."""
        for i in range(4):
            self.made = i + 1
            yield i
        self.rpc_slow()
        yield 4


async def test_an_object_exposed_again_while_its_call_runs_keeps_one_call_at_a_time(
    server: ts.Server,
) -> None:
    # Unexposed while a call runs in its worker thread, then exposed again: the object's
    # next call waits for that one, as it would have without the unexpose (an instrument
    # takes one command at a time). When the last call ends, the object is let go.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
        trio.open_nursery() as nursery,
    ):
        inst = Instrument()
        prov.expose(inst, thread=True)
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)
        results: list[str] = []

        async def call(method: str) -> None:
            results.append(await proxy.call(method))

        with trio.fail_after(SETTLE_S):
            nursery.start_soon(call, "slow")
            await trio.to_thread.run_sync(inst.entered.wait)
            prov.unexpose(inst)
            prov.expose(inst, thread=True)
            nursery.start_soon(call, "quick")
            while prov._rpc.running < 2:  # noqa: ASYNC110 - the provider's table, polled
                await trio.sleep(0.005)
            await trio.sleep(0.3)  # time enough for a quick call that does not wait
            assert results == []
            inst.go_on.set()
            while len(results) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert results == ["slow", "quick"] and inst.most == 1

        # Unexposed while its call runs: let go once that call ends.
        inst.entered.clear()
        inst.go_on.clear()
        async with trio.open_nursery() as calls:
            calls.start_soon(call, "slow")
            with trio.fail_after(SETTLE_S):
                await trio.to_thread.run_sync(inst.entered.wait)
            prov.unexpose(inst)
            held = weakref.ref(inst)
            del inst
            gc.collect()
            assert held() is not None  # its call still runs
            held_inst = held()
            assert held_inst is not None
            held_inst.go_on.set()
            del held_inst
        gc.collect()
        assert held() is None


async def test_an_object_exposed_again_after_a_call_given_up_on_waits_for_it(
    server: ts.Server,
) -> None:
    # A thread=True call whose caller gave up runs on in its thread (nothing interrupts
    # it), its invocation over; the object's next call waits for it, exposed again or not.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        inst = Instrument()
        prov.expose(inst, thread=True)
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)
        with pytest.raises(ts.RpcTimeout):
            await proxy.call("slow", timeout=0.2)
        with trio.fail_after(SETTLE_S):
            await trio.to_thread.run_sync(inst.entered.wait)
            while prov._rpc.running:  # noqa: ASYNC110 - aborted: the thread runs on alone
                await trio.sleep(0.005)
        prov.unexpose(inst)
        prov.expose(inst, thread=True)
        with trio.move_on_after(0.3):  # time enough for a quick call that does not wait
            await proxy.quick()
            pytest.fail("the quick call ran beside the slow one")
        inst.go_on.set()
        assert await proxy.quick() == "quick"
        assert inst.most == 1


async def test_a_withdrawn_method_stays_withdrawn_after_a_cut(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with (
        open_proxy(server.tcp_url) as cutter,
        ts.open_client(cutter.url, name="prov", reconnect=FAST) as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        daq, motor = Daq(), Motor()
        prov.expose(daq)
        prov.expose(motor, name="motor")
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)

        # Withdrawn while connected, then the connection is cut.
        prov.unexpose("status")
        cutter.cut()
        with trio.fail_after(SETTLE_S):
            await prov.wait_state("reconnecting")
            await prov.wait_state("open")
        assert prov.reconnects == 1
        assert await methods_listed(prov, "prov") == ("motor.move", "read")
        assert "exposes no method 'status'" in await refused(proxy.status())
        assert await proxy.read() == "read"

        # Withdrawn while reconnecting (nothing to tell the server then): the reconnection
        # exposes what is left.
        cutter.refuse()
        cutter.cut()
        with trio.fail_after(SETTLE_S):
            await prov.wait_state("reconnecting")
        assert prov.unexpose(motor) == ["motor.move"]
        cutter.accept()
        with trio.fail_after(SETTLE_S):
            await prov.wait_state("open")
        assert prov.reconnects == 2
        assert await methods_listed(prov, "prov") == ("read",)
        assert "exposes no method 'motor.move'" in await refused(proxy.motor.move(1.0))
        assert await proxy.read() == "read"


async def test_a_withdrawn_method_stays_withdrawn_after_a_server_restart() -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    async with ts.open_server(config) as first:
        assert first.tcp_url is not None
        port = int(first.tcp_url.rsplit(":", 1)[1])
        async with ts.open_client(first.tcp_url, name="prov", reconnect=FAST) as prov:
            daq = Daq()
            prov.expose(daq)
            prov.expose(Motor(), name="motor")
            await first.aclose()
            with trio.fail_after(SETTLE_S):
                await prov.wait_state("reconnecting")
            prov.unexpose("read")  # while the server is down
            again = ts.ServerConfig(host="127.0.0.1", tcp_port=port, http_port=None)
            async with ts.open_server(again) as second:
                assert second.tcp_url is not None
                with trio.fail_after(SETTLE_S):
                    await prov.wait_state("open")
                async with ts.open_client(second.tcp_url, name="ctl") as ctl:
                    assert await methods_listed(prov, "prov") == ("motor.move", "status")
                    proxy = await ctl.rpc("prov", timeout=SETTLE_S)
                    assert sorted(proxy.methods) == ["motor.move", "status"]
                    assert "exposes no method 'read'" in await refused(ctl.call("prov", "read"))
                    assert await proxy.status() == "ok"


async def test_unexpose_on_a_closed_client_only_forgets(server: ts.Server) -> None:
    # A `finally: client.unexpose(driver)` after the client closed does not raise: there is
    # nobody to tell, and the client lets go of the object.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="prov") as prov:
        daq = Daq()
        prov.expose(daq)
    assert prov.unexpose(daq) == ["read", "status"]
    with pytest.raises(ts.InvalidArgument):
        prov.unexpose(daq)


async def test_unexpose_on_a_closed_sync_client_only_forgets(server: ts.Server) -> None:
    # As the trio Client's: it raised ConnectionClosed, where the README says the same.
    assert server.tcp_url is not None
    url = server.tcp_url

    def scenario() -> None:
        inst = SyncClient(url, name="inst")
        daq = Daq()
        inst.expose(daq)
        inst.expose(Motor(), name="motor")
        inst.close()
        assert inst.closed
        assert inst.unexpose(daq) == ["read", "status"]
        assert inst.unexpose("motor") == ["motor.move"]
        with pytest.raises(ts.InvalidArgument, match=r"\(exposed now: none\)"):
            inst.unexpose(daq)
        held = weakref.ref(daq)
        del daq
        gc.collect()
        assert held() is None  # let go

    with trio.fail_after(60):
        await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)


async def test_threads_unexposing_on_a_closed_sync_client_at_once(server: ts.Server) -> None:
    # Two drivers' `finally: c.unexpose(drv)` in their own threads, after close(): both edit
    # the client's state, which no trio thread guards any more. Without a lock they raced
    # (RuntimeError: dictionary changed size during iteration, in about half the trials).
    assert server.tcp_url is not None
    url = server.tcp_url
    many = 400  # methods per object: a long iteration for the other thread to cut into

    def instrument(tag: str) -> object:
        methods = {f"rpc_m{i}": (lambda self: None) for i in range(many)}
        return type(f"Drv{tag}", (), methods)()

    def trial() -> list[BaseException]:
        inst = SyncClient(url, name="inst")
        drivers = [instrument("A"), instrument("B")]
        for i, driver in enumerate(drivers):
            inst.expose(driver, name=f"d{i}")
        inst.close()
        go = threading.Barrier(len(drivers))
        errors: list[BaseException] = []
        withdrawn: list[list[str]] = []

        def let_go(driver: object) -> None:
            go.wait()
            try:
                withdrawn.append(inst.unexpose(driver))
            except BaseException as exc:  # counted: the test fails on it
                errors.append(exc)

        threads = [threading.Thread(target=let_go, args=(d,)) for d in drivers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not errors:
            assert sorted(len(names) for names in withdrawn) == [many, many]
        return errors

    def scenario() -> list[BaseException]:
        was = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # threads switch often: the race shows in a few trials
        try:
            return [error for _ in range(20) for error in trial()]
        finally:
            sys.setswitchinterval(was)

    with trio.fail_after(60):
        errors = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert errors == []


@contextlib.asynccontextmanager
async def a_slow_close(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SyncClient, Daq, threading.Thread]]:
    """A SyncClient exposing a Daq, whose close() (in a thread of its own) is under way and
    lasts: its flush waits CLOSE_FLUSH_S (here 2 s) for a server that is away, with a value
    queued. CLOSE_JOIN_S is cut to 0.2 s: what waited that long for the trio thread's end
    fails fast."""
    monkeypatch.setattr(sync_module, "CLOSE_JOIN_S", 0.2)
    monkeypatch.setattr(sync_module, "CLOSE_FLUSH_S", 2.0)
    daq = Daq()
    async with open_proxy(url) as proxy:

        def opening() -> SyncClient:
            inst = SyncClient(proxy.url, name="inst", reconnect=FAST)
            inst.create_channel("ch")
            inst.subscribe("ch")  # a reader: a value for nobody is not waited for
            inst.publish("ch", 0)  # its publisher opened
            inst.flush()
            inst.expose(daq)
            return inst

        inst = await trio.to_thread.run_sync(opening)
        proxy.refuse()
        proxy.cut()

        def away() -> None:
            inst.wait_state("reconnecting", timeout=SETTLE_S)
            inst.publish("ch", 1)  # queued: the close's flush waits for it

        await trio.to_thread.run_sync(away)

        def close() -> None:
            with contextlib.suppress(ts.ConnectionClosed):  # (the value it could not send)
                inst.close()

        closer = threading.Thread(target=close)
        closer.start()
        try:
            with trio.fail_after(SETTLE_S):
                while inst._portal.is_open:  # noqa: ASYNC110 - another thread closes it
                    await trio.sleep(0.01)
            yield inst, daq, closer
        finally:
            await trio.to_thread.run_sync(closer.join)


async def test_unexpose_in_the_sync_clients_own_thread_after_its_close(server: ts.Server) -> None:
    # An exposed thread=False method (it runs in the client's trio thread) that closes its
    # client, then lets go of itself: the unexpose waited CLOSE_JOIN_S (5 s) for the end of
    # the very thread it blocked, freezing its event loop, then raised ConnectionClosed.
    assert server.tcp_url is not None
    url = server.tcp_url
    seen: dict[str, Any] = {}

    def scenario() -> SyncClient:
        inst = SyncClient(url, name="inst")

        class Driver:
            def rpc_shutdown(self) -> str:
                inst.close()
                began = time.monotonic()
                seen["withdrawn"] = inst.unexpose(self)
                seen["took"] = time.monotonic() - began
                return "bye"

        inst.expose(Driver(), thread=False)
        return inst

    inst = await trio.to_thread.run_sync(scenario)
    async with ts.open_client(url, name="ctl") as ctl:
        assert await ctl.call("inst", "shutdown", timeout=SETTLE_S) == "bye"
    assert seen["withdrawn"] == ["shutdown"]
    assert seen["took"] < 1.0
    await trio.to_thread.run_sync(inst._thread.join, SETTLE_S)
    assert not inst._thread.is_alive()


async def test_unexpose_in_a_trio_thread_while_a_sync_client_closes_is_refused(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As every SyncClient call that waits for its trio thread: in another trio run's thread
    # it would block that run's event loop (it waited CLOSE_JOIN_S, then raised
    # ConnectionClosed), so it is refused at once.
    assert server.tcp_url is not None
    async with a_slow_close(server.tcp_url, monkeypatch) as (inst, daq, closer):
        with pytest.raises(RuntimeError, match="this thread runs trio"):
            inst.unexpose(daq)
        assert closer.is_alive()


async def test_unexpose_from_a_thread_while_a_sync_client_closes_lets_go(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A driver thread's `finally: c.unexpose(drv)` while another thread's close() flushes
    # (which may take CLOSE_FLUSH_S, 10 s, and more): it waited CLOSE_JOIN_S (5 s) for the
    # trio thread's end, then raised ConnectionClosed, where the README says it lets go.
    assert server.tcp_url is not None
    async with a_slow_close(server.tcp_url, monkeypatch) as (inst, daq, closer):

        def let_go() -> tuple[list[str], str]:
            withdrawn = inst.unexpose(daq)
            with pytest.raises(ts.InvalidArgument) as again:  # (raised in the trio thread)
                inst.unexpose(daq)
            return withdrawn, str(again.value)

        withdrawn, again = await trio.to_thread.run_sync(let_go)
        assert withdrawn == ["read", "status"]
        assert "this Daq is not exposed" in again
        assert "(exposed now: none)" in again
        assert closer.is_alive()  # the close was still under way


async def test_unexpose_while_a_closing_sync_clients_loop_is_blocked_gives_up_in_time(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exposed thread=False method blocks the client's trio thread until the driver's
    # cleanup is done, and the driver's cleanup unexposes during another thread's close():
    # the hand-over to that thread waited for ever. Bounded by CLOSE_JOIN_S + CLOSE_FLUSH_S
    # (cut to 0.5 s here), it raises ConnectionClosed, and the edit is made once the loop
    # turns again.
    monkeypatch.setattr(sync_module, "CLOSE_JOIN_S", 0.2)
    monkeypatch.setattr(sync_module, "CLOSE_FLUSH_S", 0.3)
    assert server.tcp_url is not None
    url = server.tcp_url
    gate = threading.Event()
    in_method = threading.Event()

    class Driver:
        def rpc_blocking(self) -> int:
            in_method.set()
            gate.wait(SETTLE_S * 4)  # (bounded: a failing test does not hang)
            return 1

        def rpc_x(self) -> int:
            return 2

    def scenario() -> tuple[str, float, list[str]]:
        prov = SyncClient(url, name="prov")
        caller = SyncClient(url, name="caller")
        driver = Driver()
        prov.expose(driver, thread=False)
        calling = threading.Thread(target=lambda: caller.rpc("prov", timeout=None).blocking())
        calling.start()
        try:
            assert in_method.wait(SETTLE_S)
            closer = threading.Thread(target=lambda: prov.close(flush=False))
            closer.start()
            deadline = time.monotonic() + SETTLE_S
            while prov._portal.is_open and time.monotonic() < deadline:
                time.sleep(0.01)
            began = time.monotonic()
            with pytest.raises(ts.ConnectionClosed, match="has not turned its event loop") as e:
                prov.unexpose(driver)
            took = time.monotonic() - began
        finally:
            gate.set()
        closer.join(SETTLE_S)
        calling.join(SETTLE_S)
        caller.close()
        # The edit was queued in the trio thread, and made as its loop turned again.
        left = sorted(prov._trio_client._rpc._methods)
        return str(e.value), took, left

    message, took, left = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert "the unexpose is queued there" in message
    assert took < 2.0, took
    assert left == []


async def test_a_sync_client_withdraws_through_its_portal(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url

    def scenario() -> None:
        with SyncClient(url, name="inst") as inst, SyncClient(url, name="ctl") as ctl:
            daq = Daq()
            assert inst.expose(daq) == ["read", "status"]
            inst.expose(Motor(), name="motor")
            proxy = ctl.rpc("inst", timeout=SETTLE_S)
            assert proxy.read() == "read"
            assert inst.unexpose(daq) == ["read", "status"]
            with pytest.raises(ts.RpcError, match=r"'inst' exposes no method 'read'"):
                proxy.read()
            assert proxy.motor.move(3) == 3
            with pytest.raises(ts.InvalidArgument, match=r"\(exposed now: motor\.move\)"):
                inst.unexpose("read")
            assert inst.unexpose("motor") == ["motor.move"]
            assert [c.methods for c in inst.clients() if c.name == "inst"] == [()]

    with trio.fail_after(60):
        await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)


async def test_a_stream_between_two_values_keeps_its_objects_turn(server: ts.Server) -> None:
    # A thread=True stream waiting for credit holds no turn, but its next value takes the
    # object's turn: exposed again meanwhile, the object must not get a second one.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
        trio.open_nursery() as nursery,
    ):
        inst = Instrument()
        prov.expose(inst, thread=True)
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)
        results: list[str] = []

        async def quick() -> None:
            results.append(await proxy.quick())

        with trio.fail_after(SETTLE_S):
            # A window of 4: credit goes back when 2 are taken.
            async with proxy.stream("steps", window=4) as steps:
                assert await steps.__anext__() == 0
                turn = prov._rpc._turns[id(inst)][1]
                while inst.made < 4 or turn.taken:  # noqa: ASYNC110 - waits for credit now
                    await trio.sleep(0.005)
                prov.unexpose(inst)
                prov.expose(inst, thread=True)
                assert await steps.__anext__() == 1  # credit back: the slow value starts
                await trio.to_thread.run_sync(inst.entered.wait)
                nursery.start_soon(quick)
                await trio.sleep(0.3)  # time enough for a quick call that does not wait
                assert results == []
                inst.go_on.set()
                assert [v async for v in steps] == [2, 3, 4]
            while not results:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert results == ["quick"] and inst.most == 1


async def test_an_object_unexposed_during_a_call_given_up_on_is_let_go_when_it_ends(
    server: ts.Server,
) -> None:
    # Its invocation over, its call runs on in its thread; nothing else is called after:
    # the end of that thread alone lets go of the object (it was held for the client's life).
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        inst = Instrument()
        prov.expose(inst, thread=True)
        with pytest.raises(ts.RpcTimeout):
            await ctl.call("prov", "slow", timeout=0.2)
        with trio.fail_after(SETTLE_S):
            await trio.to_thread.run_sync(inst.entered.wait)
            while prov._rpc.running:  # noqa: ASYNC110 - aborted: the thread runs on alone
                await trio.sleep(0.005)
        prov.unexpose(inst)
        held, go_on = weakref.ref(inst), inst.go_on
        del inst
        gc.collect()
        assert held() is not None  # its call still runs in its thread
        go_on.set()
        with trio.fail_after(SETTLE_S):
            while held() is not None:  # let go in the trio thread, as the thread ends
                await trio.sleep(0.01)
                gc.collect()
        assert prov._rpc._turns == {} and prov._rpc._retiring == set()


async def test_an_object_unexposed_during_a_stream_given_up_on_is_let_go_when_it_ends(
    server: ts.Server,
) -> None:
    # The same for a thread=True stream left while its value is made: the value's thread
    # runs on, and the generator closes in a thread of its own once it ends.
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="prov") as prov,
        ts.open_client(server.tcp_url, name="ctl") as ctl,
    ):
        inst = Instrument()
        prov.expose(inst, thread=True)
        proxy = await ctl.rpc("prov", timeout=SETTLE_S)
        with trio.fail_after(SETTLE_S):
            async with proxy.stream("steps", window=8) as steps:
                assert [await steps.__anext__() for _ in range(4)] == [0, 1, 2, 3]
                await trio.to_thread.run_sync(inst.entered.wait)  # the fifth value's wait
                prov.unexpose(inst)
            while prov._rpc.running:  # noqa: ASYNC110 - aborted: the thread runs on alone
                await trio.sleep(0.005)
        held, go_on = weakref.ref(inst), inst.go_on
        del inst
        gc.collect()
        assert held() is not None  # its value is still being made
        go_on.set()
        with trio.fail_after(SETTLE_S):
            while held() is not None:  # let go in the trio thread, as the thread ends
                await trio.sleep(0.01)
                gc.collect()
        assert prov._rpc._turns == {} and prov._rpc._retiring == set()


class NoRpc:
    def read(self) -> str:
        return "not exposed: no rpc_ prefix"


async def test_a_refused_expose_keeps_nothing(server: ts.Server) -> None:
    # The object and a turn were kept before the checks, for the client's life: unexpose
    # cannot withdraw what was never exposed.
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="prov") as prov:
        daq = Daq()
        prov.expose(daq, thread=True)
        too_many = type("TooMany", (), {f"rpc_m{i}": lambda self: None for i in range(MAX_METHODS)})
        refused_ones = [NoRpc(), Daq(), too_many()]
        with pytest.raises(ts.InvalidArgument, match="has no rpc_"):
            prov.expose(refused_ones[0], thread=True)
        with pytest.raises(ts.InvalidArgument, match="is exposed already"):
            prov.expose(refused_ones[1], thread=True)
        with pytest.raises(ts.LimitExceeded, match="at most"):
            prov.expose(refused_ones[2], thread=True)
        held = [weakref.ref(obj) for obj in refused_ones]
        del refused_ones
        gc.collect()
        assert [ref() for ref in held] == [None, None, None]
        assert list(prov._rpc._turns) == [id(daq)]
        assert prov.unexpose(daq) == ["read", "status"]
        assert prov._rpc._turns == {}
