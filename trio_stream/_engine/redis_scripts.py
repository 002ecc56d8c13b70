"""Lua scripts that survive an emptied script cache.

coredis calls a registered script with EVALSHA and, on ``NoScriptError`` (the script is not
in Redis's cache: Redis restarted, or someone ran ``SCRIPT FLUSH``), loads it and tries
once more. The cache can be emptied again between that load and the retry (a Redis that
restarts twice in a row, an operator's flush during a restart): the second
``NoScriptError`` then escaped, and from the append loop it ended the node (a CI run of a
Redis-restart test). A ``NoScriptError`` means the script did not run; so the call is then
made with EVAL, which sends the script itself and cannot miss the cache (and caches it again
for the next EVALSHA). Retrying EVALSHA instead was not enough: with the cache emptied every
few milliseconds, eight tries in a row all missed on a loaded machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import coredis


class Script:
    """``client.register_script(source)``, called the same way (``await script(keys=,
    args=)``), with EVAL where EVALSHA finds no script (see the module docstring)."""

    __slots__ = ("_client", "_script", "_source")

    def __init__(self, client: coredis.Redis[bytes], source: str) -> None:
        self._client = client
        self._source = source
        self._script = client.register_script(source)

    async def __call__(
        self, *, keys: Sequence[Any] | None = None, args: Sequence[Any] | None = None
    ) -> Any:
        try:
            return await self._script(keys=keys, args=args)
        except coredis.exceptions.NoScriptError:
            return await self._client.eval(self._source, keys=keys, args=args)
