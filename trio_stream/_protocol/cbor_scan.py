"""A walk over the structure of CBOR bytes that finds map keys with colliding hashes.

Why: a map whose keys share one hash costs a Python dict time quadratic in their number
(20,000 int keys ``i * (2**61 - 1)`` took 1.6 s to decode), and cbor2 builds the dict before
any hook could look at it. Text and byte-string keys are safe (Python hashes them with a
per-process secret); int, float and composite keys are not. The payload decoder first decodes
with such keys refused (cbor2 ``strict_hashable_types``, the common case at full speed) and
only when that fails walks the bytes here, then decodes for real.

The walk decodes nothing but the keys it must hash: strings are skipped by their length,
containers by their count, so it is linear in the input. Each item starts with at least one
byte, so no declared count can make it loop longer than the input is long.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, NoReturn

from .limits import PayloadRefused, raise_limit_hint

_BREAK: Final = 0xFF
_SET_TAG: Final = 258
_FLOATS: Final = {25: struct.Struct(">e"), 26: struct.Struct(">f"), 27: struct.Struct(">d")}
_SIMPLE_KEYS: Final[dict[int, Any]] = {20: False, 21: True, 22: None}


class _Walk:
    """One walk over ``data``; ``decode_key`` turns a composite key's bytes into its value."""

    def __init__(
        self,
        data: memoryview,
        max_collisions: int,
        max_depth: int,
        decode_key: Callable[[memoryview], Any],
    ) -> None:
        self.data = data
        self.size = len(data)
        self.max_collisions = max_collisions
        self.max_depth = max_depth
        self.decode_key = decode_key

    def head(self, pos: int) -> tuple[int, int, int | None, int]:
        """(major type, additional info, argument or None if indefinite, position after)."""
        data = self.data
        if pos >= self.size:
            raise ValueError("truncated CBOR item")
        initial = data[pos]
        major = initial >> 5
        info = initial & 0x1F
        pos += 1
        if info < 24:
            return major, info, info, pos
        if info <= 27:
            end = pos + (1 << (info - 24))
            if end > self.size:
                raise ValueError("truncated CBOR head")
            return major, info, int.from_bytes(data[pos:end], "big"), end
        if info == 31 and major in (2, 3, 4, 5, 7):
            return major, info, None, pos
        raise ValueError(f"reserved CBOR additional information {info}")

    def item(self, pos: int, depth: int) -> int:
        """The position just after the item that starts at ``pos``."""
        if depth > self.max_depth:
            # cbor2's count (6.3): an item inside more than max_depth containers or tags,
            # a number too (a container left unchecked at its leaves let 65 levels reach
            # cbor2, which refused them as malformed, not as the limit).
            self.refuse_depth()
        major, _, arg, pos = self.head(pos)
        if major <= 1:
            return pos
        if major == 7:
            if arg is None:
                raise ValueError("a CBOR break outside an indefinite-length item")
            return pos
        if major <= 3:
            return self.string(major, arg, pos)
        if major == 6:
            if arg == _SET_TAG and pos < self.size and self.data[pos] >> 5 == 4:
                _, _, count, pos = self.head(pos)  # a set: its elements are hashed like keys
                return self.container(count, pos, depth + 1, is_map=False, keyed=True)
            return self.item(pos, depth + 1)
        return self.container(arg, pos, depth, is_map=major == 5, keyed=major == 5)

    def refuse_depth(self) -> NoReturn:
        raise PayloadRefused(
            f"payload refused: nesting deeper than PayloadLimits.max_depth ({self.max_depth});"
            f" {raise_limit_hint('max_depth')}"
        )

    def string(self, major: int, arg: int | None, pos: int) -> int:
        if arg is not None:
            pos += arg
            if pos > self.size:
                raise ValueError("truncated CBOR string")
            return pos
        while True:  # indefinite length: definite chunks of the same type, then a break
            if pos >= self.size:
                raise ValueError("truncated CBOR string")
            if self.data[pos] == _BREAK:
                return pos + 1
            chunk_major, _, chunk_len, pos = self.head(pos)
            if chunk_major != major or chunk_len is None:
                raise ValueError("an indefinite-length string holds a chunk of another type")
            pos += chunk_len
            if pos > self.size:
                raise ValueError("truncated CBOR string")

    def container(
        self, count: int | None, pos: int, depth: int, *, is_map: bool, keyed: bool
    ) -> int:
        """The items of an array or map whose head (``count`` items, None: indefinite) ends
        at ``pos``; ``keyed``: hash its keys (a map's, or a set's elements)."""
        counts: dict[int, int] | None = None
        remaining = count
        while remaining is None or remaining > 0:
            if remaining is None:
                if pos >= self.size:
                    raise ValueError("truncated CBOR container")
                if self.data[pos] == _BREAK:
                    return pos + 1
            else:
                remaining -= 1
            start = pos
            pos = self.item(pos, depth + 1)
            if keyed and self.data[start] >> 5 not in (2, 3):
                if counts is None:
                    counts = {}
                self.count_key(counts, start, pos)
            if is_map:
                pos = self.item(pos, depth + 1)
        return pos

    def count_key(self, counts: dict[int, int], start: int, end: int) -> None:
        key = self.key_value(start, end)
        try:
            digest = hash(key)
        except (TypeError, RuntimeError):
            # Unhashable (cbor2's CBORTag says so with a RuntimeError, a tag around an
            # array say): the real decode refuses or converts it.
            return
        # hash(digest) == digest for every value hash() returns, so this dict cannot collide.
        seen = counts.get(digest, 0) + 1
        counts[digest] = seen
        if seen > self.max_collisions:
            raise PayloadRefused(
                f"payload refused: more than {self.max_collisions} keys of one map share a "
                "hash (PayloadLimits.max_key_collisions; raise it with payload_limits="
                "PayloadLimits(max_key_collisions=...) if your writers mean it)"
            )

    def key_value(self, start: int, end: int) -> Any:
        major, info, arg, _ = self.head(start)
        if major == 0:
            return arg
        if major == 1 and arg is not None:
            return -1 - arg
        if major == 7:
            unpack = _FLOATS.get(info)
            if unpack is not None:
                return unpack.unpack_from(self.data, start + 1)[0]
            return _SIMPLE_KEYS.get(info, (start, end))  # other simple values: rare, distinct
        try:
            return self.decode_key(self.data[start:end])
        except Exception:
            return (start, end)  # undecodable here: the real decode reports it


def check_key_collisions(
    data: memoryview,
    *,
    max_collisions: int,
    max_depth: int,
    decode_key: Callable[[memoryview], Any],
) -> None:
    """Walk the one CBOR item that ``data`` starts with; refuse colliding keys.

    Raises:
        PayloadRefused: a map or set holds more than ``max_collisions`` keys of one hash, or
            the item nests deeper than ``max_depth`` (PayloadLimits.max_depth, as cbor2 counts).
        ValueError: the bytes are not well-formed CBOR.
    """
    _Walk(data, max_collisions, max_depth, decode_key).item(0, 0)
