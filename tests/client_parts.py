"""Helpers for tests that watch or tune a real client's connection."""

from __future__ import annotations

import trio
from proxy import TcpProxy

import trio_stream as ts
from trio_stream._reconnect import State
from trio_stream._transport.tcp import StreamTransport


def tcp_transport(client: ts.Client) -> tuple[StreamTransport, trio.SocketStream]:
    """The transport of a client connected over plain TCP, and its socket stream."""
    transport = client._transport
    assert isinstance(transport, StreamTransport)
    assert isinstance(transport.stream, trio.SocketStream)
    return transport, transport.stream


async def wait_for_state(client: ts.Client, wanted: State) -> None:
    """Until the client's connection state is ``wanted``."""
    state = client.state
    while state != wanted:
        state = await client.wait_state_change(state)


async def kept_away(proxy: TcpProxy, name: str, watcher: ts.Client, wait_s: float) -> None:
    """Cut the client named ``name`` off behind ``proxy`` for good (the proxy refuses it
    back) and wait until ``watcher``'s server no longer lists it."""
    proxy.refuse()
    proxy.cut()
    with trio.fail_after(wait_s):
        while name in {c.name for c in await watcher.clients()}:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def channels_once_back(client: ts.Client, wait_s: float) -> set[str]:
    """Wait for ``client`` to reconnect (reconnecting, then open): the channels it lists."""
    with trio.fail_after(wait_s):
        await client.wait_state("reconnecting")
        await client.wait_state("open")
    return {c.name for c in await client.channels()}
