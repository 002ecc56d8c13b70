"""Server URLs: which schemes the client speaks, and their parts."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from .._exceptions import InvalidArgument

SCHEMES: Final = ("tcp", "tcps", "ws", "wss")


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a server URL, with a clear error for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None:
        raise InvalidArgument(
            f"cannot connect to {url[:200]!r}: use tcp://host:port or ws://host:port/ws "
            "(tcps:// and wss:// for TLS)"
        )
    return parts.scheme, parts.hostname, parts.port, parts.path or "/ws"
