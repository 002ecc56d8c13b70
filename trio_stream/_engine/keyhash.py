"""Channel keys at rest: a salted scrypt digest, never the key itself.

Redis is shared by every node and readable by whoever administers it, so a channel's key is
stored as ``scrypt(key, salt)`` with a fresh 16-byte salt per channel. Keys are chosen by
users (often low-entropy), which is why a slow, memory-hard hash beats a plain HMAC here.
One check costs ~35 ms of CPU (measured on this machine with N=2**14, r=8), so
:func:`verify_key` runs it in a worker thread (hashlib releases the GIL) to keep the event
loop free; it happens once per subscribe/open, never per frame.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import trio

SALT_BYTES = 16
DIGEST_BYTES = 32
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1


def _digest(key: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=DIGEST_BYTES
    )


async def hash_key(key: str) -> tuple[bytes, bytes]:
    """Return ``(salt, digest)`` for a new channel key."""
    salt = os.urandom(SALT_BYTES)
    return salt, await trio.to_thread.run_sync(_digest, key, salt)


async def verify_key(key: str, salt: bytes, digest: bytes) -> bool:
    """Whether ``key`` matches the stored digest (constant-time compare)."""
    candidate = await trio.to_thread.run_sync(_digest, key, salt)
    return hmac.compare_digest(candidate, digest)
