"""RPC errors that the user's own code or names make: a provider's exception that cannot be
formatted, method and client names the server refuses, and what each says to do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

import trio_stream as ts
from trio_stream._protocol.frames import MAX_CLIENT_NAME_CHARS
from trio_stream._protocol.rpc_messages import MAX_METHOD_NAME

SETTLE_S = 10.0  # generous bound for things that take milliseconds on loopback


# -- a provider's exception that cannot be formatted ------------------------------------------
class DeviceError(Exception):
    """A driver's error whose message formats an attribute set on some paths only."""

    code: int

    def __str__(self) -> str:
        return f"device fault {self.code:#x}"  # .code never set: AttributeError


class BadNotes(Exception):
    """An exception whose notes fail when read (traceback itself gives up on those); once
    only, so that pytest can show what escaped when the provider did not cope."""

    read = False

    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        if not self.read:
            self.read = True
            raise RuntimeError("no notes here")
        return []


class BadNote:
    def __str__(self) -> str:
        raise RuntimeError("no note here")


class Arg:
    def __str__(self) -> str:
        raise RuntimeError("unprintable")

    def __repr__(self) -> str:
        raise RuntimeError("unprintable")


class Motor:
    def rpc_move(self) -> None:
        raise DeviceError("stalled")

    async def rpc_async_move(self) -> None:
        await trio.lowlevel.checkpoint()
        raise DeviceError("stalled")

    async def rpc_scan(self) -> AsyncIterator[int]:
        yield 1
        raise DeviceError("stalled")

    def rpc_noted(self) -> None:
        error = ValueError("stalled")
        error.__notes__ = [BadNote()]  # type: ignore[list-item]
        raise error

    def rpc_bad_notes(self) -> None:
        raise BadNotes("stalled")

    def rpc_group(self) -> None:
        raise ExceptionGroup("both axes", [DeviceError("x"), ValueError("y")])

    def rpc_many(self) -> None:  # (nested, as nurseries nest them)
        inner = ExceptionGroup("inner", [ValueError(str(i)) for i in range(1, 5)])
        raise ExceptionGroup("axes", [ValueError("0"), inner])

    def rpc_exit(self) -> None:
        raise SystemExit(Arg())

    def rpc_ping(self) -> str:
        return "pong"


@pytest.mark.parametrize(
    ("method", "thread", "type_name", "message"),
    [
        ("move", False, "DeviceError", "<exception str() failed>"),
        ("move", True, "DeviceError", "<exception str() failed>"),
        ("async_move", False, "DeviceError", "<exception str() failed>"),
        ("noted", False, "ValueError", "stalled"),
        ("bad_notes", False, "BadNotes", "stalled"),
        (
            "group",
            False,
            "ExceptionGroup",
            "both axes (2 sub-exceptions): DeviceError: <exception str() failed>; ValueError: y",
        ),
        (
            "many",
            False,
            "ExceptionGroup",
            "axes (2 sub-exceptions): ValueError: 0; ValueError: 1; ValueError: 2; and 2 more",
        ),
        ("exit", False, "SystemExit", "<exception str() failed>"),
    ],
)
async def test_an_exception_that_cannot_be_formatted_reaches_its_caller(
    url: str, method: str, thread: bool, type_name: str, message: str
) -> None:
    # str(exc) raised where the provider answered: the AttributeError took down the
    # provider's client and its program, and the caller was told it disconnected.
    async with (
        ts.open_client(url, name="motor") as provider,
        ts.open_client(url, name="ctl") as ctl,
    ):
        provider.expose(Motor(), thread=thread)
        motor = await ctl.rpc("motor", timeout=SETTLE_S)
        with pytest.raises(ts.RemoteError) as info:
            await motor.call(method)
        assert (info.value.type_name, info.value.message) == (type_name, message)
        assert info.value.remote_traceback
        assert await motor.ping() == "pong"  # the provider serves on
        assert provider.state == "open"


async def test_a_stream_whose_exception_cannot_be_formatted_ends_with_it(url: str) -> None:
    async with (
        ts.open_client(url, name="motor") as provider,
        ts.open_client(url, name="ctl") as ctl,
    ):
        provider.expose(Motor())
        motor = await ctl.rpc("motor", timeout=SETTLE_S)
        got: list[Any] = []
        with trio.fail_after(SETTLE_S), pytest.raises(ts.RemoteError) as info:
            async for value in motor.scan():
                got.append(value)
        assert got == [1]
        assert (info.value.type_name, info.value.message) == (
            "DeviceError",
            "<exception str() failed>",
        )
        assert "DeviceError: <exception str() failed>" in info.value.remote_traceback
        assert await motor.ping() == "pong"


# -- method names the server refuses ------------------------------------------------------------
class Registers:
    def rpc_ok(self) -> str:
        return "ok"


def _with_method(name: str) -> object:
    """A provider with an ``rpc_ok`` and an ``rpc_<name>`` (names generated from a device's
    register map, say)."""
    cls = type("Registers", (Registers,), {f"rpc_{name}": lambda self: name})
    return cls()


async def test_a_method_name_over_the_server_s_limit_is_refused_at_expose(url: str) -> None:
    # The server closed the connection for it, and the client sent the same expose again on
    # every reconnect (99 reconnects in 3 s): the provider never appeared.
    async with (
        ts.open_client(url, name="regs") as provider,
        ts.open_client(url, name="ctl") as ctl,
    ):
        longest = "r" * MAX_METHOD_NAME
        assert provider.expose(_with_method(longest)) == ["ok", longest]
        with pytest.raises(ts.InvalidArgument) as info:
            provider.expose(_with_method("s" * (MAX_METHOD_NAME + 1)))
        said = str(info.value)
        assert f"has {MAX_METHOD_NAME + 1} characters" in said
        assert f"over the server's limit of {MAX_METHOD_NAME}: rename 'rpc_sss" in said
        # name= makes it longer: within the limit alone, over it with the service's name.
        with pytest.raises(ts.InvalidArgument, match="or expose it under a shorter name="):
            provider.expose(_with_method("t" * (MAX_METHOD_NAME - 3)), name="bank")
        await trio.sleep(0.2)  # an expose refused by the server would close the connection
        assert provider.state == "open"
        regs = await ctl.rpc("regs", timeout=SETTLE_S)
        assert sorted(regs.methods) == ["ok", longest]  # nothing of the refused ones
        assert await regs.ok() == "ok"


async def test_a_method_name_that_is_not_text_is_refused_at_expose(url: str) -> None:
    # A lone surrogate (setattr with any text) has no wire form: sending the expose raised
    # after the methods were taken, and every reconnect raised again.
    async with ts.open_client(url, name="regs") as provider:
        with pytest.raises(ts.InvalidArgument, match="not valid text"):
            provider.expose(_with_method("bad\udc80"))
        assert provider.expose(Registers()) == ["ok"]


@pytest.mark.server_options(max_frame_bytes=4096)
async def test_an_expose_over_the_server_s_frame_limit_is_refused_at_expose(url: str) -> None:
    # The server closes a connection over its frame limit: the same endless reconnects.
    async with (
        ts.open_client(url, name="regs") as provider,
        ts.open_client(url, name="ctl") as ctl,
    ):
        many = type(
            "Many",
            (Registers,),
            {f"rpc_{i:03}_{'r' * 150}": lambda self: None for i in range(30)},
        )
        with pytest.raises(ts.LimitExceeded, match="max_frame_bytes of 4096: expose fewer"):
            provider.expose(many())
        assert provider.expose(Registers()) == ["ok"]
        regs = await ctl.rpc("regs", timeout=SETTLE_S)
        assert await regs.ok() == "ok"
        assert provider.state == "open"


async def test_a_call_of_an_impossible_method_name_says_the_rule(url: str) -> None:
    async with (
        ts.open_client(url, name="regs") as provider,
        ts.open_client(url, name="ctl") as ctl,
    ):
        provider.expose(Registers())
        regs = await ctl.rpc("regs", timeout=SETTLE_S)
        for method in ("", "x" * (MAX_METHOD_NAME + 100)):
            with pytest.raises(ts.RpcError) as info:
                await regs.call(method)
            said = str(info.value)
            assert f"of {len(method)} characters: method names are 1-{MAX_METHOD_NAME}" in said
            assert said.endswith(
                "characters; call one of the methods 'regs' exposes (clients() lists them)"
            )


@pytest.mark.parametrize(
    "name", ["", "x" * 300, "$server", "tab\there"], ids=["empty", "long", "server", "tab"]
)
async def test_a_provider_name_no_client_can_have_says_why(url: str, name: str) -> None:
    # It said "no client named '' is connected", as if one might be.
    async with ts.open_client(url, name="ctl") as ctl:
        with pytest.raises(ts.InvalidArgument) as info:
            await ctl.rpc(name)
        assert str(info.value).startswith("no client can be named ")
        assert ", so none can answer: client names " in str(info.value)
        with pytest.raises(
            ts.InvalidArgument,
            match=r"so none can answer \(wait_provider=True would wait for good\): client names",
        ):
            await ctl.rpc(name, wait_provider=True)
        # The server says the same to a client that sends it anyway (the browser's).
        with pytest.raises(ts.RpcError, match=r"no client can be named .*so none can answer"):
            await ctl._rpc.call(name, "ok", (), {}, SETTLE_S)


async def test_the_longest_valid_provider_name_is_quoted_whole(url: str) -> None:
    # protocol.md section 3: a valid name is quoted whole (100 characters for a client); the
    # server cut it to 80 with "..." in the middle of the name (the Node.js check).
    name = "n" * MAX_CLIENT_NAME_CHARS
    async with ts.open_client(url, name="ctl") as ctl:
        with pytest.raises(ts.RpcError) as info:
            await ctl._rpc.call(name, "ok", (), {}, SETTLE_S)
        assert f"no client named {name!r} is connected" in str(info.value)


class Bulky:
    def rpc_big(self, size: int = 10_000) -> bytes:
        return b"x" * size

    async def rpc_pieces(self) -> AsyncIterator[bytes]:
        yield b"x" * 10_000


async def test_a_value_too_large_for_a_call_names_the_server_s_own_setting() -> None:
    # It said "over the server's limit of 3072" to a user who had set 4096 (a new user).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, max_frame_bytes=4096)
    says = "over the 3072 that fit a call (the server's max_frame_bytes, 4096, less 1024"
    async with (
        ts.open_server(config) as server,
        ts.open_client(server.tcp_url or "", name="bulky") as provider,
        ts.open_client(server.tcp_url or "", name="ctl") as ctl,
    ):
        provider.expose(Bulky())
        bulky = await ctl.rpc("bulky", timeout=SETTLE_S)
        with trio.fail_after(SETTLE_S):
            with pytest.raises(ts.RemoteError) as result:
                await bulky.big()
            assert "the result of big encodes to 10003 bytes, " + says in str(result.value)
            with pytest.raises(ts.FrameTooLarge) as arguments:
                await bulky.big("y" * 10_000)
            assert "the arguments of big encode to 10006 bytes, " + says in str(arguments.value)
            with pytest.raises(ts.RemoteError) as piece:
                async for _ in bulky.stream("pieces"):
                    pass
            assert "a value of pieces encodes to 10003 bytes, " + says in str(piece.value)


# -- a KeyboardInterrupt a method raises in its worker thread -----------------------------------


class Instrument:
    def rpc_shutdown(self) -> None:
        raise KeyboardInterrupt  # the method's own (a library's "stop"), never a Ctrl-C here

    def rpc_readings(self) -> Iterator[int]:
        yield 1
        raise KeyboardInterrupt

    def rpc_ping(self) -> str:
        return "pong"


async def test_a_keyboard_interrupt_a_threaded_method_raises_is_its_caller_s_error(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # It ended the provider's client, with a hundred lines of its nursery, and the provider
    # script went on offline without a word (a script user): a worker thread gets no Ctrl-C
    # (signals go to the main thread), so it is the method's own, sent as SystemExit is.
    async with (
        ts.open_client(url, name="inst") as provider,
        ts.open_client(url, name="ctl") as ctl,
    ):
        provider.expose(Instrument(), thread=True)
        inst = await ctl.rpc("inst", timeout=SETTLE_S)
        with pytest.raises(ts.RemoteError) as info:
            await inst.shutdown()
        assert info.value.type_name == "KeyboardInterrupt"
        got: list[Any] = []
        with trio.fail_after(SETTLE_S), pytest.raises(ts.RemoteError) as streamed:
            async for value in inst.readings():
                got.append(value)
        assert got == [1] and streamed.value.type_name == "KeyboardInterrupt"
        assert await inst.ping() == "pong"  # the provider serves on
        assert provider.state == "open"
    assert "rpc shutdown raised KeyboardInterrupt: sent to the caller as an error" in caplog.text


async def test_a_sync_client_provider_survives_its_method_s_keyboard_interrupt(url: str) -> None:
    def script() -> None:  # (SyncClients block: in a thread of their own)
        with ts.SyncClient(url, name="inst") as provider, ts.SyncClient(url, name="ctl") as ctl:
            provider.expose(Instrument())
            inst = ctl.rpc("inst", timeout=SETTLE_S)
            with pytest.raises(ts.RemoteError, match="KeyboardInterrupt"):
                inst.shutdown()
            assert inst.ping() == "pong"
            assert provider.state == "open"

    await trio.to_thread.run_sync(script)
