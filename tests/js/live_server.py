"""A real trio_stream server plus a Python client named "py" for tests/js/live.test.mjs.

Prints one JSON line {"ws_url": ..., "tcp_url": ...} once ready, then serves until stdin closes.
The "py" client exposes methods the JS tests call: echo and failure cases, publishing numpy
arrays so that the browser codec is checked against the Python encoder on the real wire, and
generators for the JS client's streaming calls (stream_state tells how far one got and whether
it was closed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import trio

import trio_stream as ts

sys.path.insert(0, str(Path(__file__).parent.parent))  # tests/proxy.py
from proxy import TcpProxy, open_proxy


class Py:
    def __init__(self, client: ts.Client, proxy: TcpProxy) -> None:
        self.client = client
        self.proxy = proxy
        self.streams: dict[str, dict[str, Any]] = {}  # a named generator's progress

    def _track(self, name: str | None) -> dict[str, Any]:
        state = {"yielded": 0, "closed": False}
        if name is not None:
            self.streams[name] = state
        return state

    def rpc_cut(self) -> None:
        """Cut every connection through the proxy (the JS side reconnects)."""
        self.proxy.cut()

    def rpc_refuse(self) -> None:
        """Close new connections through the proxy at once, until accept (the JS side
        stays away)."""
        self.proxy.refuse()

    def rpc_accept(self) -> None:
        self.proxy.accept()

    async def rpc_create(self, channel: str, history: int = 0) -> None:
        await self.client.create_channel(channel, history=history)

    async def rpc_send(self, channel: str, values: list[Any]) -> list[bool]:
        """Publish ``values`` (wanted without readers on a channel with history); what each
        ``send`` returned (False: the channel had no readers)."""
        async with self.client.publisher(channel) as pub:
            taken = [await pub.send(value) for value in values]
            await pub.wait_acknowledged()
        return taken

    def rpc_echo(self, data: Any, twice: bool = False) -> Any:
        return [data, data] if twice else data

    def rpc_deep(self, levels: int) -> Any:
        value: Any = 0
        for _ in range(levels):
            value = [value]
        return value

    def rpc_fail(self, message: str = "nope") -> None:
        raise ValueError(message)

    async def rpc_sleep(self, seconds: float) -> str:
        await trio.sleep(seconds)
        return "slept"

    async def rpc_count(self, n: int, name: str | None = None) -> AsyncIterator[int]:
        """Yield 0 .. n-1 (a streaming call)."""
        state = self._track(name)
        try:
            for i in range(n):
                state["yielded"] += 1
                yield i
        finally:
            state["closed"] = True

    async def rpc_count_then_fail(self, n: int) -> AsyncIterator[int]:
        """Yield 0 .. n-1, then raise."""
        for i in range(n):
            yield i
        raise ValueError(f"failed after {n} values")

    async def rpc_ticks(self, name: str, deep_at: int = -1) -> AsyncIterator[Any]:
        """Yield 0, 1, 2, ... every 10 ms until the caller stops it; the value at ``deep_at``
        nested 100 levels deep (past the JS client's default maxDepth of 64)."""
        state = self._track(name)
        try:
            i = 0
            while True:
                state["yielded"] += 1
                yield self.rpc_deep(100) if i == deep_at else i
                i += 1
                await trio.sleep(0.01)
        finally:
            state["closed"] = True

    def rpc_stream_state(self, name: str) -> dict[str, Any] | None:
        """``{"yielded": n, "closed": bool}`` of the generator started with ``name``."""
        return self.streams.get(name)

    async def rpc_publish_arrays(self, channel: str) -> int:
        """Publish one value per dtype/shape case (the JS side knows the list)."""
        values = [
            np.arange(6.0).reshape(2, 3),
            np.array([1, -2, 3], dtype="<i8"),
            np.array([1 + 2j, -3 - 4j], dtype="<c8"),
            np.array([[True, False], [False, True]]),
            np.arange(12, dtype="u1").reshape(3, 4),
            np.array(7.5, dtype="<f4"),
            {"t": 1.5, "x": np.linspace(0, 1, 5)},
        ]
        async with self.client.publisher(channel) as pub:
            await pub.wait_for_readers()
            for v in values:
                await pub.send(v)
        return len(values)

    async def rpc_burst(self, channel: str, n: int) -> int:
        """Send n integers as fast as the publish window allows."""
        async with self.client.publisher(channel) as pub:
            await pub.wait_for_readers()
            for i in range(n):
                await pub.send(i)
        return n


async def main() -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, name="live")
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None
        assert server.ws_url is not None
        async with (
            ts.open_client(server.tcp_url, name="py") as client,
            open_proxy(server.ws_url) as proxy,
        ):
            client.expose(Py(client, proxy))
            urls = {"ws_url": server.ws_url, "tcp_url": server.tcp_url, "proxy_url": proxy.url}
            print(json.dumps(urls), flush=True)
            # run until the test closes our stdin
            await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(main)
