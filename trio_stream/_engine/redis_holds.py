"""How long a channel's writers have waited for room: ``block_timeout`` across nodes.

On one node a full ``block`` reader holds its writers by the frames parked for it, and
``block_timeout`` times the oldest of them (Outbox.check_holds). Through Redis nothing is
parked: a writer on any node waits *before* the stream, in its own node, until every node's
``block`` readers have room (redis_streams, the append script's room). The node of the full
reader sees no frame wait, and the writer's node does not know which reader it waits for.

So the wait itself is written down where both can see it: while a writer waits, its room
check (``_ROOM_LUA``, every few ms) stamps the channel's hash with ``h = "start last seq"``:
when the wait began and when it was last seen (Redis time, ms), and the channel's last seq.
The stamp is renewed while the seq stays and a check came within ``HELD_FRESH_MS``; a new
append moves the seq on, so the next wait starts a new stamp. A node with a full ``block``
reader asks (:meth:`HeldWriters.held_s`) how long its channels' writers have waited, and
ends such a reader once that passes its ``block_timeout``, as on one node. A stamp whose
writer stopped waiting (it went away) is stale after ``HELD_FRESH_MS`` and counts as no
wait. Times are Redis's own, so the nodes' clocks do not matter.
"""

from __future__ import annotations

from typing import Final

import coredis

from .redis_keys import KeySpace

# A writer waiting for room checks again at least every ROOM_POLL_MAX_S (10 ms): a stamp not
# renewed for this long belongs to a writer that stopped waiting.
HELD_FRESH_MS: Final = 1000

# Lua, run by the room check (redis_streams._ROOM_LUA) when nothing fits: ``last`` is the
# channel's last seq and KEYS[1] its hash, as there.
STAMP_WAIT_LUA: Final = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = now
local stamp = redis.call('HGET', KEYS[1], 'h')
if stamp then
  local s, l, q = string.match(stamp, '^(%d+) (%d+) (%d+)$')
  if s and tonumber(q) == last and now - tonumber(l) <= {HELD_FRESH_MS} then
    start = tonumber(s)
  end
end
redis.call('HSET', KEYS[1], 'h', string.format('%d %d %d', start, now, last))
"""

# KEYS: channel hashes. Answers, per channel, for how many ms its writers have waited (0:
# they are not waiting).
_HELD_LUA: Final = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = {{}}
for i, key in ipairs(KEYS) do
  held[i] = 0
  local fields = redis.call('HMGET', key, 'h', 'seq')
  if fields[1] then
    local s, l, q = string.match(fields[1], '^(%d+) (%d+) (%d+)$')
    if s and tonumber(q) == tonumber(fields[2] or '0') and now - tonumber(l) <= {HELD_FRESH_MS}
    then
      held[i] = now - tonumber(s)
    end
  end
end
return held
"""


class HeldWriters:
    """Asks Redis how long channels' writers have waited for room (see the module)."""

    def __init__(self, client: coredis.Redis[bytes], keys: KeySpace) -> None:
        self._keys = keys
        self._held = client.register_script(_HELD_LUA)

    async def held_s(self, channels: list[str]) -> list[float]:
        """For each of ``channels``, the seconds its writers have waited for room so far
        (0.0: none waits), in one round trip."""
        if not channels:
            return []
        answer: object = await self._held(
            keys=[self._keys.channel(name) for name in channels], args=[]
        )
        assert isinstance(answer, list)
        return [int(ms) / 1000 for ms in answer]
