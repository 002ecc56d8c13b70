"""Protocol limits and their defaults, announced to clients in the welcome message."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from .._exceptions import InvalidArgument, ProtocolError

PROTOCOL_VERSION: Final = 1

MAX_FRAME_BYTES: Final = 64 * 2**20
MAX_CHANNELS_PER_CLIENT: Final = 1000
MAX_SUBSCRIPTIONS_PER_CLIENT: Final = 1000
MAX_BUFFERED_BYTES: Final = 256 * 2**20  # per connection, every subscription together
HANDSHAKE_TIMEOUT_S: Final = 10.0
IDLE_TIMEOUT_S: Final = 60.0
RESUME_GRACE_S: Final = 10.0  # how long the server keeps an away client's place (section 8)
# Writer credit: enough frames in flight to hide a loopback round trip at full speed, few
# enough bytes that a blocked channel parks a bounded amount on the server.
PUBLISH_WINDOW_FRAMES: Final = 1024
PUBLISH_WINDOW_BYTES: Final = 16 * 2**20
# open_publisher's ``writer``: a client's own name for one publisher (docs/protocol.md 3).
WRITER_KEY_MAX_BYTES: Final = 64
# open_publisher's ``claim``: the number of a keyed writer's reopen, 1 to this (exact in
# Redis's Lua numbers, which are doubles).
WRITER_CLAIM_MAX: Final = 2**53
# A ping's CONTROL frame, its ``data`` included: the server echoes that data in its pong, so
# a bigger one would let a client that never reads make the server encode and hold copies of
# up to max_frame_bytes (docs/protocol.md 3; the clients send null or a counter).
PING_FRAME_MAX_BYTES: Final = 4096
# Reader credit: frames in flight per subscription (never more than its size) and bytes.
# 1024 small frames (~100 KiB) cover a few milliseconds of round trip at full speed; the byte
# bound keeps large frames to a few in flight.
SUBSCRIBE_WINDOW_FRAMES: Final = 1024
SUBSCRIBE_WINDOW_BYTES: Final = 8 * 2**20

# `keep` channels one server (one node) holds, whether their owners are connected or not: a
# client counts its channels against max_channels_per_client only while it is connected, so
# without this a script that creates kept channels, leaves and comes back grows the server
# for good. A lab's persistent setpoints are hundreds at most.
MAX_KEPT_CHANNELS: Final = 1000
# Publishers one connection holds open (server-side only, as the one above): each of a
# channel's publishers is told of every reader that comes or goes, so their count is what a
# subscribe costs. An instrument opens one per channel it writes.
MAX_PUBLISHERS_PER_CLIENT: Final = 1000

# Connections the server holds at once, before and after the handshake, TCP and HTTP (each
# WebSocket is one) together. An idle connection costs the server ~15-20 KiB (see
# benchmarks/README.md, "Idle connections"), so the total bounds that memory to ~200 MB;
# one address may take a tenth of it, so a single misbehaving host (or a loop in a script)
# cannot lock every other client out. Loopback clients all share one address: a lab machine
# running more than a thousand local clients raises it.
MAX_CONNECTIONS: Final = 10_000
MAX_CONNECTIONS_PER_ADDRESS: Final = 1_000
# The HTTP port: an idle keep-alive connection is closed after this long (a Prometheus
# scraping every 15 s keeps its connection); a connection serves at most this many requests;
# a reply that the peer does not read within the write timeout closes the connection.
HTTP_KEEPALIVE_TIMEOUT_S: Final = 30.0
HTTP_MAX_REQUESTS: Final = 1000
HTTP_WRITE_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Limits:
    """The limits a server enforces; the welcome message carries them to the client."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    max_channels_per_client: int = MAX_CHANNELS_PER_CLIENT
    max_subscriptions_per_client: int = MAX_SUBSCRIPTIONS_PER_CLIENT
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    publish_window_frames: int = PUBLISH_WINDOW_FRAMES
    publish_window_bytes: int = PUBLISH_WINDOW_BYTES
    # A client with several URLs tries the others within it (a hung one must not use it up).
    resume_grace_s: float = RESUME_GRACE_S

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: Any) -> Limits:
        """The limits of a server's welcome (docs/protocol.md section 2).

        Raises:
            ProtocolError: a limit that is not a positive integer (a float where the page
                says so: positive and finite; resume_grace_s may be 0), or limits that are
                not a map.
        """
        if not isinstance(data, dict):
            raise ProtocolError(f"the server's welcome has limits = {data!r:.80}: not a map")
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name in data:
                value = data[field.name]
                # NaN compares false with everything, so "<= 0" let it through (and infinity,
                # and fractions where a count is due): a frame limit of nan refused every frame
                # later, with a misleading reason, and a window of nan meant no window at all.
                if field.name in _MAY_BE_ZERO_SECONDS:
                    ok = type(value) in (int, float) and 0 <= value < math.inf
                    kind = "a finite number of seconds, 0 or more"
                elif field.name in _SECONDS_LIMITS:
                    ok = type(value) in (int, float) and 0 < value < math.inf
                    kind = "a positive finite number"
                else:
                    ok = type(value) is int and value > 0
                    kind = "a positive integer"
                if not ok:
                    raise ProtocolError(
                        f"the server's welcome has limits.{field.name} = {value!r:.80}: not {kind}"
                    )
                values[field.name] = value
        return cls(**values)


# The limits in seconds, floats (docs/protocol.md section 2); the others are integers.
_SECONDS_LIMITS: Final = frozenset(f.name for f in fields(Limits) if f.type in ("float", float))
_MAY_BE_ZERO_SECONDS: Final = frozenset({"resume_grace_s"})  # 0: the server keeps no place


# --- payload decoding ---------------------------------------------------------------------------
# What a reader's decoder accepts from a writer it does not control. Every limit bounds a cost
# that is not linear in the payload's size (decoding within the limits is):
# - an integer beyond 64 bits (tags 2/3) decodes in linear time, but it is refused above a size
#   no real value needs;
# - a decimal fraction or bigfloat (tags 4/5) converts its mantissa to decimal digits in time
#   quadratic in its size (64 KiB: 0.34 s), so mantissas are kept short (64 bytes: 0.5 us);
# - map keys (and set elements) whose hashes collide cost time quadratic in their number
#   (20,000 int keys i * (2**61 - 1): 1.6 s), so one map may hold only a few keys of one hash;
#   text and byte-string keys are hashed with a per-process secret and never counted;
# - nesting is bounded so that nothing recurses without end.
PAYLOAD_MAX_BIGNUM_BYTES: Final = 1024
PAYLOAD_MAX_DECIMAL_BYTES: Final = 64
PAYLOAD_MAX_KEY_COLLISIONS: Final = 32
PAYLOAD_MAX_DEPTH: Final = 64
PAYLOAD_MAX_DECOMPRESSED_BYTES: Final = 256 * 2**20  # one compressed payload, decompressed
_PAYLOAD_DEPTH_CEILING: Final = 500  # below Python's recursion limit, with room to spare


class PayloadRefused(ProtocolError):
    """A payload beyond the reader's :class:`PayloadLimits`; the message names the limit.

    Only that one message is lost: the subscription goes on with the next.
    """


PayloadRefused.__module__ = "trio_stream"  # as the other exported errors (_exceptions.py)


def raise_limit_hint(field: str) -> str:
    """How a refusal says to raise ``PayloadLimits.<field>``: with either client (the trio
    one alone was named, to SyncClient users too)."""
    return (
        f"raise it with payload_limits=PayloadLimits({field}=...) of open_client(...) or "
        "SyncClient(...)"
    )


@dataclass(frozen=True)
class PayloadLimits:
    """What the client's payload decoder accepts; a payload beyond them is a ProtocolError.

    The defaults let any value trio_stream's own encoder produces from ordinary data through;
    raise one with ``open_client(..., payload_limits=PayloadLimits(max_depth=200))`` (or the
    same argument of ``SyncClient``) when your writers send more.

    Attributes:
        max_bignum_bytes: bytes of one integer beyond 64 bits (CBOR tags 2/3).
        max_decimal_bytes: bytes of the mantissa of one decimal fraction or bigfloat
            (CBOR tags 4/5, decoded as ``decimal.Decimal``).
        max_key_collisions: keys of one map (or elements of one set) with the same hash.
        max_depth: nesting of arrays, maps and tags.
        max_decompressed_bytes: bytes of one compressed payload once decompressed
            (docs/protocol.md 4.1); a "decompression bomb" costs no more than this.
    """

    max_bignum_bytes: int = PAYLOAD_MAX_BIGNUM_BYTES
    max_decimal_bytes: int = PAYLOAD_MAX_DECIMAL_BYTES
    max_key_collisions: int = PAYLOAD_MAX_KEY_COLLISIONS
    max_depth: int = PAYLOAD_MAX_DEPTH
    max_decompressed_bytes: int = PAYLOAD_MAX_DECOMPRESSED_BYTES

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(
                    f"PayloadLimits.{field.name} must be an int >= 1, not {value!r}"
                )
        if self.max_depth > _PAYLOAD_DEPTH_CEILING:
            raise InvalidArgument(f"PayloadLimits.max_depth is at most {_PAYLOAD_DEPTH_CEILING}")


DEFAULT_PAYLOAD_LIMITS: Final = PayloadLimits()


def parked_bound(limits: Limits) -> int:
    """What a connection's writers may have parked behind full ``block`` readers together,
    in PUBLISH body bytes, before the server stops reading the connection until readers make
    room (docs/protocol.md section 5): a whole writer window always fits."""
    return max(limits.max_buffered_bytes, limits.publish_window_bytes)
