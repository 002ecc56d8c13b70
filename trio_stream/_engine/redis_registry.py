"""The cluster's channel registry in Redis: create (atomic), get, list, delete.

A channel is one hash (see redis_keys). Creation is a Lua script, so "exists?" and "write
it" are one atomic step for every node: two nodes creating the same name at once get one
winner and one :class:`ChannelTaken`. Each creation draws a new random epoch; Redis holds the
only copy, so a Redis restart without persistence loses it and every node then sees a missing
or different epoch, which the engine reports as a ``reset`` gap instead of going quiet.

Each creation and each take-over by name (:meth:`ChannelRegistry.move`) also draws a new
random ``holder`` token: who keeps the channel *this time*. The node's name alone does not
say it: a channel can move away from a node and back (a take-over back onto the old node),
and a step that node decided before the move back (its gone owner's end) must then not
match. A delete conditional on the holder it saw is atomic against every move.

A record written before holder tokens has no ``holder`` field (:attr:`ChannelRecord.holder`
is ""). A delete conditional on that "" matches only a record still without one: the first
take-over of it (a move, which writes a token) ends the gap, so such a record has the same
protection against a move away and back as any other. (Nodes of a version before holder
tokens move without writing one: the gap closes once every node runs this version.)
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import coredis

from .keyhash import hash_key, verify_key
from .redis_keys import KeySpace
from .redis_scripts import Script

EPOCH_BYTES = 8
HOLDER_BYTES = 8
# A deleted epoch is marked this long (s): a node that kept the channel and missed the news
# (its pub/sub was reconnecting) finds the mark instead of taking the missing record for
# Redis's loss and registering the channel again. One small key per delete.
DELETED_MARK_S = 3600
# A deleted channel's stream stays this long after the delete (then expires), so that the
# other nodes read the frames that were still on their way to them before they end it (a
# node that ended it when told lost them, silently: a lab's cross-node audit). Its epoch is
# gone: nothing writes to it, and a channel created anew under the name has a stream of its
# own.
STREAM_KEPT_AFTER_DELETE_MS = 30_000
MARK_REASON_CHARS = 500  # the end reason a mark keeps (a channel's end_reason, bounded)

# KEYS[1] channel hash, KEYS[2] channel set; ARGV[1] name, then field/value pairs.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS[1] channel hash, KEYS[2] channel set; ARGV[1] name, ARGV[2] stream key prefix,
# ARGV[3] expected epoch ('' = any), ARGV[4] positions key prefix, ARGV[5] expected node
# ('' = any), ARGV[6] '=' and the expected holder ('' = any; '=' alone: a record without a
# holder, from before holder tokens), ARGV[7] the deletion mark's key prefix, ARGV[8] its
# lifetime (s), ARGV[9] why it ended (the mark's value), ARGV[10] how long its stream stays
# (ms, see STREAM_KEPT_AFTER_DELETE_MS). Returns the deleted epoch, or false.
_DELETE_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return false end
if ARGV[3] ~= '' and ARGV[3] ~= epoch then return false end
if ARGV[5] ~= '' and ARGV[5] ~= redis.call('HGET', KEYS[1], 'node') then return false end
if ARGV[6] ~= '' and ARGV[6] ~= '=' .. (redis.call('HGET', KEYS[1], 'holder') or '') then
  return false
end
redis.call('DEL', KEYS[1], ARGV[4] .. epoch)
redis.call('PEXPIRE', ARGV[2] .. epoch, ARGV[10])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SET', ARGV[7] .. epoch, ARGV[9], 'EX', ARGV[8])
return epoch
"""

# KEYS[1] channel hash; ARGV[1] expected epoch, ARGV[2] expected owner, ARGV[3] new node,
# ARGV[4] new holder. Returns {node, holder} that kept the channel, or false (another epoch
# or owner).
_MOVE_LUA = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return false end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return false end
local old = redis.call('HMGET', KEYS[1], 'node', 'holder')
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'holder', ARGV[4])
return {old[1], old[2] or ''}
"""


class ChannelTaken(Exception):
    """``create`` found the name already registered (by any node)."""


@dataclass(frozen=True, slots=True)
class Moved:
    """A take-over by name done in Redis: who kept the channel until now, and the new
    holder token (see the module docstring)."""

    node: str
    holder: str
    new_holder: str


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """One channel as Redis knows it (``seq``: the last sequence number assigned)."""

    name: str
    owner: str
    node: str
    options: Mapping[str, Any]
    epoch: str
    seq: int
    created: float
    key_salt: bytes | None
    key_digest: bytes | None
    # who keeps it this time ("": a record from before holder tokens; see the module docstring)
    holder: str = ""

    @property
    def has_key(self) -> bool:
        return self.key_digest is not None

    async def key_matches(self, key: str | None) -> bool:
        """Whether ``key`` opens this channel (a channel without a key opens to no key)."""
        if self.key_salt is None or self.key_digest is None or key is None:
            return False
        return await verify_key(key, self.key_salt, self.key_digest)


def _record(name: str, fields: Mapping[bytes, bytes]) -> ChannelRecord:
    return ChannelRecord(
        name=name,
        owner=fields[b"owner"].decode(),
        node=fields[b"node"].decode(),
        options=cbor2.loads(fields[b"options"]),
        epoch=fields[b"epoch"].decode(),
        seq=int(fields.get(b"seq", b"0")),
        created=float(fields[b"created"]),
        key_salt=fields.get(b"key_salt"),
        key_digest=fields.get(b"key_digest"),
        holder=fields.get(b"holder", b"").decode(),
    )


def _holder_arg(holder: str | None) -> str:
    """_DELETE_LUA's ARGV[6]: '' for no condition, else '=' and the holder (maybe "")."""
    return "" if holder is None else "=" + holder


class ChannelRegistry:
    def __init__(self, client: coredis.Redis[bytes], keys: KeySpace) -> None:
        self._client = client
        self._keys = keys
        self._create = Script(client, _CREATE_LUA)
        self._delete = Script(client, _DELETE_LUA)
        self._move = Script(client, _MOVE_LUA)

    async def create(
        self,
        name: str,
        *,
        owner: str,
        node: str,
        options: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> ChannelRecord:
        """Register ``name`` with a new epoch; raises :class:`ChannelTaken` if it exists."""
        epoch = secrets.token_hex(EPOCH_BYTES)
        holder = secrets.token_hex(HOLDER_BYTES)
        created = time.time()
        fields: dict[str, bytes | str] = {
            "owner": owner,
            "node": node,
            "options": cbor2.dumps(dict(options or {})),
            "epoch": epoch,
            "seq": "0",
            "created": repr(created),
            "holder": holder,
        }
        salt = digest = None
        if key is not None:
            salt, digest = await hash_key(key)
            fields["key_salt"] = salt
            fields["key_digest"] = digest
        args: list[bytes | str] = [name]
        for field, value in fields.items():
            args += [field, value]
        done: object = await self._create(
            keys=[self._keys.channel(name), self._keys.channels], args=args
        )
        if done != 1:
            raise ChannelTaken(f"channel {name[:80]!r} exists: pick another name or delete it")
        return ChannelRecord(
            name, owner, node, dict(options or {}), epoch, 0, created, salt, digest, holder
        )

    async def get(self, name: str) -> ChannelRecord | None:
        fields = await self._client.hgetall(self._keys.channel(name))
        return _record(name, fields) if fields else None

    async def epochs(self, names: list[str]) -> dict[str, str | None]:
        """The current epoch of each channel (None: not registered), in one round trip."""
        if not names:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            pending = [pipe.hget(self._keys.channel(name), "epoch") for name in names]
        found = [await each for each in pending]
        return {
            name: (value.decode() if value is not None else None)
            for name, value in zip(names, found, strict=True)
        }

    async def list(self) -> list[ChannelRecord]:
        names = sorted(
            member.decode() for member in await self._client.smembers(self._keys.channels)
        )
        if not names:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            pending = [pipe.hgetall(self._keys.channel(name)) for name in names]
        records = []
        for name, request in zip(names, pending, strict=True):
            fields = await request
            if fields:  # deleted between SMEMBERS and HGETALL
                records.append(_record(name, fields))
        return records

    async def delete(
        self,
        name: str,
        *,
        epoch: str | None = None,
        node: str | None = None,
        holder: str | None = None,
        reason: str = "",
    ) -> str | None:
        """Delete ``name`` and its frames; with ``epoch``, only that incarnation; with
        ``node``, only if that node keeps it (not if another node took it over meanwhile);
        with ``holder``, only if nobody took it over since that holder got it (not even back
        onto the same node); ``holder=""`` (a record seen without one, from before holder
        tokens) matches only a record still without one.

        Returns the deleted epoch, or None when there was nothing (or another epoch or node)
        to delete.
        """
        prefix = self._keys.stream(name, "")
        positions = self._keys.positions(name, "")
        mark = self._keys.deleted(name, "")
        deleted: object = await self._delete(
            keys=[self._keys.channel(name), self._keys.channels],
            args=[
                name,
                prefix,
                epoch or "",
                positions,
                node or "",
                _holder_arg(holder),
                mark,
                str(DELETED_MARK_S),
                reason[:MARK_REASON_CHARS] or "deleted",
                str(STREAM_KEPT_AFTER_DELETE_MS),
            ],
        )
        return deleted.decode() if isinstance(deleted, bytes) else None

    async def was_deleted(self, name: str, epoch: str) -> bool:
        """Whether that epoch of ``name`` was deleted (within DELETED_MARK_S), rather than
        lost by Redis (a restart without persistence loses the mark with the record)."""
        return bool(await self._client.exists([self._keys.deleted(name, epoch)]))

    async def deleted_reason(self, name: str, epoch: str) -> str | None:
        """Why that epoch of ``name`` ended, as its deletion mark says (None: no mark, or
        one from before marks carried it): a node whose writer finds the channel gone tells
        its readers the real end, not only that Redis lacks it."""
        mark = await self._client.get(self._keys.deleted(name, epoch))
        if mark is None or mark in (b"1", b"deleted"):  # no reason given (or an older mark)
            return None
        return mark.decode("utf-8", "replace")

    async def move(self, name: str, *, epoch: str, owner: str, node: str) -> Moved | None:
        """Make ``node`` the one that keeps channel ``name`` (its owner's end, its lifetime):
        a take-over by name, under a new holder token. Only that epoch of it, and only if
        ``owner`` owns it.

        Returns who kept it until now, or None (the channel changed meanwhile).
        """
        holder = secrets.token_hex(HOLDER_BYTES)
        old: object = await self._move(
            keys=[self._keys.channel(name)], args=[epoch, owner, node, holder]
        )
        if not isinstance(old, list):
            return None
        old_node, old_holder = (v.decode() if isinstance(v, bytes) else str(v) for v in old)
        return Moved(old_node, old_holder, holder)
