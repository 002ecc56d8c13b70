"""How long a channel's writers have waited for room: ``block_timeout`` across nodes.

On one node a full ``block`` reader holds its writers by the frames parked for it, and
``block_timeout`` times the oldest of them (Outbox.check_holds). Through Redis nothing is
parked: a writer on any node waits *before* the stream, in its own node, until every node's
``block`` readers have room (redis_streams, the append script's room). The node of the full
reader sees no frame wait, and the writer's node does not know which reader it waits for.

So each waiting writer writes down how long its oldest frame has waited, where every node
can read it: its room check (redis_streams ``_ROOM_LUA``, every few ms while nothing fits)
stamps ``{ns}:held:{name}:{epoch}`` (a hash, one field per writer) with ``"start last"``:
when its oldest waiting frame reached its node and when the stamp was last renewed, both in
Redis time (ms). The writer measures the age of that frame on its own clock and the script
subtracts it from Redis's time, so the nodes' clocks never meet. A slow reader that lets
a frame in now and then does not restart the wait, as on one node: the oldest frame still
waiting is what counts, across a batch's parts and the batches queued behind it.

A node with a full ``block`` reader asks (:meth:`HeldWriters.held_s`) how long its channels'
writers have waited: the longest ``last - start`` of the stamps renewed within
``HELD_FRESH_MS`` (a writer that stopped waiting, got room or went away, stops renewing, and
the next renewal of another writer's stamp deletes its own). The
engine counts a reader only from when it became full itself (a reader that fills up late is
not charged with an earlier wait), and ends it past its ``block_timeout`` or shows it in
``held_by`` after HOLD_NOTICE_S, as on one node.
"""

from __future__ import annotations

from typing import Final

import coredis

from .redis_keys import KeySpace
from .redis_scripts import Script

# A waiting writer renews its stamp at most this often (its room checks come every 1-10 ms):
# Redis gets about ten writes a second per waiting writer, not a hundred.
HELD_RENEW_MS: Final = 100
# A stamp not renewed for this long belongs to a writer that no longer waits.
HELD_FRESH_MS: Final = 3 * HELD_RENEW_MS
# The stamps of a channel nobody waits on go away by themselves (their key has the epoch:
# a deleted channel's stay only this long).
HELD_TTL_MS: Final = 10_000

# Lua, run by the room check (redis_streams._ROOM_LUA) when nothing fits. The script that
# includes it sets ``held_key`` (the channel's stamps), ``who`` (the writer) and ``waited``
# (ms its oldest waiting frame has waited, on the writer's node).
STAMP_WAIT_LUA: Final = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start = now - waited
local renew = true
local stamp = redis.call('HGET', held_key, who)
if stamp then
  local s, l = string.match(stamp, '^(%d+) (%d+)$')
  if s and now - tonumber(l) < {HELD_RENEW_MS} and math.abs(tonumber(s) - start) < {HELD_RENEW_MS}
  then
    renew = false
  end
end
if renew then
  redis.call('HSET', held_key, who, string.format('%d %d', start, now))
  redis.call('PEXPIRE', held_key, {HELD_TTL_MS})
  -- The stamps of writers that stopped waiting (got room, or went away) go: the hash holds
  -- only the writers waiting now, for the reads every 50 ms of every node.
  local stamps = redis.call('HGETALL', held_key)
  for j = 2, #stamps, 2 do
    local l = string.match(stamps[j], '^%d+ (%d+)$')
    if not l or now - tonumber(l) > {HELD_FRESH_MS} then
      redis.call('HDEL', held_key, stamps[j - 1])
    end
  end
end
"""

# KEYS: the channels' stamp hashes. Answers, per channel, the ms its writers have waited so
# far (-1: none waits).
_HELD_LUA: Final = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = {{}}
for i, key in ipairs(KEYS) do
  held[i] = -1
  local stamps = redis.call('HGETALL', key)
  for j = 2, #stamps, 2 do
    local s, l = string.match(stamps[j], '^(%d+) (%d+)$')
    if s then
      s = tonumber(s)
      l = tonumber(l)
      if now - l <= {HELD_FRESH_MS} and l - s > held[i] then held[i] = math.max(l - s, 0) end
    end
  end
end
return held
"""


class HeldWriters:
    """Asks Redis how long channels' writers have waited for room (see the module)."""

    def __init__(self, client: coredis.Redis[bytes], keys: KeySpace) -> None:
        self._keys = keys
        self._held = Script(client, _HELD_LUA)

    async def held_s(self, channels: list[tuple[str, str]]) -> list[float | None]:
        """For each ``(name, epoch)`` of ``channels``, the seconds its writers have waited
        for room so far (None: none waits), in one round trip."""
        if not channels:
            return []
        keys = [self._keys.held(name, epoch) for name, epoch in channels]
        answer: object = await self._held(keys=keys, args=[])
        assert isinstance(answer, list)
        return [None if int(ms) < 0 else int(ms) / 1000 for ms in answer]
