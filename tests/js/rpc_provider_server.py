"""A real trio_stream server plus a Python *caller* for tests/js/rpc_provider.test.mjs.

Prints one JSON line {"ws_url": ..., "proxy_url": ...} once ready, then serves until stdin
closes. The Python client "py-caller" exposes methods through which the JS tests make the
Python client call methods that a JS client exposes (trio_stream.js Client.expose), and report
what Python got: the value with its Python type (numpy arrays: dtype and shape), or the
exception with its class, RemoteError fields and how long the call took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

import trio_stream as ts

sys.path.insert(0, str(Path(__file__).parent.parent))  # tests/proxy.py
from proxy import TcpProxy, open_proxy


def _error(exc: Exception, started: float) -> dict[str, Any]:
    report: dict[str, Any] = {
        "error": type(exc).__name__,
        "message": str(exc),
        "elapsed": time.monotonic() - started,
    }
    if isinstance(exc, ts.RemoteError):
        report |= {
            "type_name": exc.type_name,
            "remote_message": exc.message,
            "remote_traceback": exc.remote_traceback,
        }
    return report


def _value(value: Any, started: float) -> dict[str, Any]:
    report: dict[str, Any] = {
        "value": value,
        "python_type": type(value).__name__,
        "elapsed": time.monotonic() - started,
    }
    if isinstance(value, np.ndarray):
        report |= {"dtype": value.dtype.str, "shape": list(value.shape)}
    return report


class Caller:
    def __init__(self, client: ts.Client, proxy: TcpProxy) -> None:
        self.client = client
        self.proxy = proxy

    def rpc_cut(self) -> None:
        """Cut every connection through the proxy (the JS side reconnects)."""
        self.proxy.cut()

    async def rpc_call_page(
        self,
        provider: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        seconds: float = 5.0,
    ) -> dict[str, Any]:
        """``client.call(provider, method, *args, timeout=seconds, **kwargs)``, reported."""
        started = time.monotonic()
        try:
            value = await self.client.call(
                provider, method, *args, timeout=seconds, **(kwargs or {})
            )
        except ts.RpcError as exc:
            return _error(exc, started)
        return _value(value, started)

    async def rpc_call_array(
        self, provider: str, method: str, seconds: float = 5.0
    ) -> dict[str, Any]:
        """Call ``method`` with numpy arrays made here: a float64 vector and an int32 matrix."""
        started = time.monotonic()
        vector = np.array([1.5, -2.0, 3.25])
        matrix = np.arange(6, dtype="<i4").reshape(2, 3)
        try:
            value = await self.client.call(provider, method, vector, matrix, timeout=seconds)
        except ts.RpcError as exc:
            return _error(exc, started)
        report = _value(value, started)
        if isinstance(value, list):
            report["parts"] = [
                {"dtype": v.dtype.str, "shape": list(v.shape), "values": v.tolist()}
                if isinstance(v, np.ndarray)
                else {"python_type": type(v).__name__}
                for v in value
            ]
            report["value"] = None
        return report

    async def rpc_describe(self, provider: str, seconds: float = 5.0) -> dict[str, Any]:
        """``client.rpc(provider)``: the methods described, with their signatures."""
        started = time.monotonic()
        try:
            proxy = await self.client.rpc(provider, timeout=seconds)
        except ts.RpcError as exc:
            return _error(exc, started)
        return _value({name: repr(method) for name, method in proxy.methods.items()}, started)

    async def rpc_proxy_call(
        self, provider: str, method: str, args: list[Any], seconds: float = 5.0
    ) -> dict[str, Any]:
        """Through a proxy (its arguments checked against the description), as a Python user
        calls: ``await (await client.rpc(provider)).call(method, *args)``."""
        started = time.monotonic()
        try:
            proxy = await self.client.rpc(provider, timeout=seconds)
            value = await proxy.call(method, *args)
        except ts.RpcError as exc:
            return _error(exc, started)
        return _value(value, started)

    async def rpc_stream_page(
        self, provider: str, method: str, args: list[Any], take: int | None = None
    ) -> dict[str, Any]:
        """Iterate streaming ``method`` (at most ``take`` values, then leave the loop)."""
        started = time.monotonic()
        values: list[Any] = []
        try:
            with trio.fail_after(10):
                proxy = await self.client.rpc(provider)
                async with proxy.stream(method, *args, window=2) as stream:
                    async for value in stream:
                        values.append(value)
                        if take is not None and len(values) >= take:
                            break
        except ts.RpcError as exc:
            return _error(exc, started) | {"values": values}
        return _value(values, started)


async def main() -> None:
    # 1 MiB frames: a result too large for them is cheap to make.
    config = ts.ServerConfig(
        host="127.0.0.1", tcp_port=0, http_port=0, name="rpc-provider", max_frame_bytes=1 << 20
    )
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None
        assert server.ws_url is not None
        async with (
            ts.open_client(server.tcp_url, name="py-caller") as client,
            open_proxy(server.ws_url) as proxy,
        ):
            client.expose(Caller(client, proxy))
            print(json.dumps({"ws_url": server.ws_url, "proxy_url": proxy.url}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the test closes our stdin


if __name__ == "__main__":
    trio.run(main)
