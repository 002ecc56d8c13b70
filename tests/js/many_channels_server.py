"""A real trio_stream server holding many channels, for tests/js/dashboard_pace.browser.test.mjs
and benchmarks/dashboard_listing.py: ``many_channels_server.py COUNT [--silent-stats]``.

Prints {"dashboard": URL} once ready, then a line {"listings": N} each time a client lists
the channels (N: how many listings so far), and serves until stdin closes. The channels are
made in the broker directly: a client may make only max_channels_per_client of them. With
``--silent-stats`` its $stats channel is silent (a page then asks for the server's numbers).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

import trio_stream as ts


async def main(channels: int, silent_stats: bool) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0, name="many")
    async with ts.open_server(config) as server:
        state = server.state
        for i in range(channels):
            state.broker.create_channel(f"many/{i:06d}", None).owner = "maker"
        listed = 0
        list_channels = state.channel_listing

        async def counted(session: Any) -> Any:
            nonlocal listed
            listed += 1
            print(json.dumps({"listings": listed}), flush=True)
            return await list_channels(session)

        state.channel_listing = counted  # type: ignore[method-assign]
        if silent_stats:
            state.publish_stats = lambda: None  # type: ignore[method-assign]
        print(json.dumps({"dashboard": server.http_url}), flush=True)
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        while await stdin.receive_some():
            pass


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), "--silent-stats" in sys.argv[2:])
