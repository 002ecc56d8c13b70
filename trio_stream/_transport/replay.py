"""A stream that gives back bytes already read from it before reading on.

The HTTP port reads a request head with h11 before it knows whether the request is a
WebSocket upgrade; trio-websocket then wants a stream that starts at that head.
"""

from __future__ import annotations

import trio


class ReplayStream(trio.abc.Stream):
    def __init__(self, stream: trio.abc.Stream, replay: bytes) -> None:
        self.stream = stream
        self._replay = replay

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._replay:
            return await self.stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._replay) if max_bytes is None else max_bytes
        data, self._replay = self._replay[:size], self._replay[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()
