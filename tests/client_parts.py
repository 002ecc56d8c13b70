"""Helpers for tests that watch or tune a real client's connection."""

from __future__ import annotations

import trio

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
