"""Admin actions (the `admin` op, guarded by ServerConfig.admin_token) and channel meta,
over real sockets through the real server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from engine_marks import BOTH_ENGINES

import trio_stream as ts
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import decode_payload
from trio_stream._server.broker import MAX_CHANNEL_META_BYTES

pytestmark = BOTH_ENGINES

ADMIN_TOKEN = "ops-0815"


@pytest.fixture
async def admin_server(nursery: trio.Nursery) -> AsyncIterator[ts.Server]:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    server: ts.Server = await nursery.start(ts.serve, config)
    yield server
    await server.aclose()


async def admin(conn: ts.Client, action: str, token: str = ADMIN_TOKEN, **fields: Any) -> Any:
    # The page speaks the op directly; the Python client has no wrapper for it.
    return await conn._request(M.Admin, token=token, action=action, **fields)


async def test_admin_actions_are_refused_by_a_server_without_admin_token(
    server: ts.Server,
) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="ops") as client:
        with pytest.raises(ts.AuthError, match="--admin-token"):
            await admin(client, "check", token="anything")
        await client.create_channel("still-works")  # the refusal cost nothing else


async def test_admin_actions_are_refused_with_a_wrong_token(admin_server: ts.Server) -> None:
    assert admin_server.tcp_url is not None
    async with (
        ts.open_client(admin_server.tcp_url, name="owner") as owner,
        ts.open_client(admin_server.tcp_url, name="ops") as ops,
    ):
        await owner.create_channel("mine")
        for action, fields in (
            ("check", {}),
            ("publish", {"channel": "mine", "value": 1}),
            ("delete_channel", {"channel": "mine"}),
            ("disconnect", {"client": 1}),
            ("call", {"value": {"provider": "owner", "method": "boom"}}),
        ):
            with pytest.raises(ts.AuthError, match="wrong admin token"):
                await admin(ops, action, token="guess", **fields)
        assert [c.name for c in await ops.channels() if c.name == "mine"] == ["mine"]


async def test_admin_publishes_to_a_channel_it_does_not_own_and_is_logged(
    admin_server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    assert admin_server.tcp_url is not None and admin_server.ws_url is not None
    caplog.set_level(logging.WARNING, logger="trio_stream._server.admin")
    async with (
        ts.open_client(admin_server.tcp_url, name="owner") as owner,
        ts.open_client(admin_server.ws_url, name="ops") as ops,
    ):
        await owner.create_channel("volts", key="k")
        async with owner.subscribe("volts", key="k") as sub:
            assert await admin(ops, "check") == {"admin": True}
            before = await owner.stats()
            result = await admin(ops, "publish", channel="volts", value={"v": 1.5})
            assert result == {"seq": 1, "readers": 1}
            with trio.fail_after(5):
                msg = await sub.receive()
            # In the server's totals, as the channel's (they did not add up: an audit).
            after = await owner.stats()
            assert after.frames_in == before.frames_in + 1
            assert after.bytes_in > before.bytes_in
        assert (msg.data, msg.sender, msg.seq) == ({"v": 1.5}, "ops", 1)
    assert any("ops (client" in r.message and "'volts'" in r.message for r in caplog.records)


async def test_admin_deletes_any_channel_and_disconnects_any_client(
    admin_server: ts.Server, caplog: pytest.LogCaptureFixture
) -> None:
    assert admin_server.tcp_url is not None
    caplog.set_level(logging.WARNING, logger="trio_stream._server.admin")
    async with ts.open_client(admin_server.tcp_url, name="ops") as ops:
        # The victim reconnects by default: the kick's goodbye tells it not to.
        async with ts.open_client(admin_server.tcp_url, name="victim") as victim:
            await victim.create_channel("doomed")
            await victim.create_channel("held")  # no resume grace for a kicked client
            await admin(ops, "delete_channel", channel="doomed")
            assert "doomed" not in [c.name for c in await ops.channels()]
            (info,) = [c for c in await ops.clients() if c.name == "victim"]
            async with ops.subscribe("$clients") as events:
                result = await admin(ops, "disconnect", client=info.id)
                assert result == {"client": info.id, "name": "victim"}
                with trio.fail_after(5):
                    async for event in events:
                        if event.data["event"] == "disconnected":
                            assert event.data["name"] == "victim"
                            break
            with trio.fail_after(5):
                assert await victim.wait_state("closed") == "closed"
            with pytest.raises(ts.ConnectionClosed, match="disconnected by admin ops"):
                await victim.channels()
            await trio.sleep(0.5)  # several reconnect attempts' worth (0.1 s doubling)
            assert victim.state == "closed" and victim.reconnects == 0
            assert "victim" not in [c.name for c in await ops.clients()]
            assert "held" not in [c.name for c in await ops.channels()]
        with pytest.raises(ts.InvalidArgument, match="no client with id"):
            await admin(ops, "disconnect", client=99999)
        with pytest.raises(ts.InvalidArgument, match="no user channel"):
            await admin(ops, "publish", channel="$stats", value=1)
        with pytest.raises(ts.InvalidArgument, match="unknown admin action"):
            await admin(ops, "reboot")
    logged = " ".join(r.message for r in caplog.records)
    assert "deleted channel 'doomed'" in logged and "disconnected victim" in logged


class Lab:
    """A provider that remembers who called it."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def rpc_scale(self, x: float, factor: float = 2.0) -> float:
        self.calls.append((x, factor))
        return x * factor

    def rpc_fail(self) -> None:
        raise ValueError("no such range")


@pytest.mark.parametrize("scheme", ["tcp", "ws"])
async def test_admin_call_runs_an_rpc_method_for_the_admin_and_logs_who(
    admin_server: ts.Server, caplog: pytest.LogCaptureFixture, scheme: str
) -> None:
    url = admin_server.tcp_url if scheme == "tcp" else admin_server.ws_url
    assert url is not None and admin_server.tcp_url is not None
    caplog.set_level(logging.WARNING, logger="trio_stream._server.admin")
    lab = Lab()
    async with (
        ts.open_client(admin_server.tcp_url, name="lab") as provider,
        ts.open_client(url, name="ops") as ops,
    ):
        provider.expose(lab)
        await ops.rpc("lab")  # the expose has reached the server
        call = {"provider": "lab", "method": "scale", "args": [21], "kwargs": {"factor": 3}}
        with trio.fail_after(5):
            result = await admin(ops, "call", value=call)
        # the reply is the provider's own, exactly as for an ordinary call: a payload
        assert decode_payload(result) == 63
        assert lab.calls == [(21, 3)]
        with pytest.raises(ts.RemoteError, match="no such range") as info:
            await admin(ops, "call", value={"provider": "lab", "method": "fail"})
        assert info.value.type_name == "ValueError"
        with pytest.raises(ts.RpcError, match="no client named"):
            await admin(ops, "call", value={"provider": "nobody", "method": "scale"})
        with pytest.raises(ts.InvalidArgument, match="admin call needs"):
            await admin(ops, "call", value={"provider": "lab", "args": 5})
        assert decode_payload(await admin(ops, "call", value=call)) == 63  # still connected
    logged = [r.message for r in caplog.records]
    assert sum("ops (client" in m and "called 'lab'.'scale'" in m for m in logged) == 2, logged
    assert any("called 'lab'.'fail'" in m for m in logged), logged


async def test_admin_call_is_refused_without_the_token_and_nothing_is_called(
    admin_server: ts.Server,
) -> None:
    assert admin_server.tcp_url is not None
    lab = Lab()
    async with (
        ts.open_client(admin_server.tcp_url, name="lab") as provider,
        ts.open_client(admin_server.tcp_url, name="ops") as ops,
    ):
        provider.expose(lab)
        await ops.rpc("lab")
        with pytest.raises(ts.AuthError, match="wrong admin token"):
            await admin(
                ops,
                "call",
                token="guess",
                value={"provider": "lab", "method": "scale", "args": [1]},
            )
        assert await (await ops.rpc("lab")).scale(2) == 4  # ordinary calls still work
    assert lab.calls == [(2, 2.0)]


async def test_channel_meta_is_listed_for_every_client(url: str) -> None:
    meta = {"units": "V", "labels": ["x", "y"], "description": "probe voltage"}
    async with ts.open_client(url, name="writer") as writer:
        await writer.create_channel("probe", meta=meta)
        await writer.create_channel("plain")
        infos = {c.name: c for c in await writer.channels()}
    assert infos["probe"].meta == meta
    assert infos["plain"].meta is None


async def test_channel_meta_too_large_is_refused_with_the_limit(server: ts.Server) -> None:
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="writer") as writer:
        with pytest.raises(ts.InvalidArgument, match="MAX_CHANNEL_META_BYTES"):
            await writer.create_channel("big", meta={"description": "x" * MAX_CHANNEL_META_BYTES})
        assert "big" not in [c.name for c in await writer.channels()]


async def test_sync_client_creates_a_channel_with_meta(server: ts.Server) -> None:
    assert server.tcp_url is not None
    url = server.tcp_url

    def in_thread() -> ts.ChannelInfo | None:
        with ts.SyncClient(url, name="script") as c:
            c.create_channel("temp", meta={"units": "degC"})
            return next((x for x in c.channels() if x.name == "temp"), None)

    info = await trio.to_thread.run_sync(in_thread)
    assert info is not None and info.meta == {"units": "degC"}
