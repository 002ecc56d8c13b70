"""trio_stream over WebSocket: the TCP adapter with the server's HTTP port and a ws:// URL.

Same client, same calls, same values; only the transport differs, so the two rows of the
table compare WebSocket framing (several frames per binary message) against raw TCP.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.systems.base import LOOPBACK
from benchmarks.systems.trio_stream_tcp import TrioStreamTcp, server_command


class TrioStreamWs(TrioStreamTcp):
    name = "trio_stream_ws"

    def server_command(self, port: int, workdir: Path) -> list[str]:
        return server_command(tcp_port=0, http_port=port)

    def url(self, port: int) -> str:
        return f"ws://{LOOPBACK}:{port}/ws"


SYSTEM = TrioStreamWs()
