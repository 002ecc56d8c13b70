"""Server URLs: which schemes the client speaks, and their parts."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from .._exceptions import InvalidArgument

SCHEMES: Final = ("tcp", "tcps", "ws", "wss")


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a server URL, with a clear error for anything else."""
    if not isinstance(url, str):  # bytes, None: urlsplit's own errors say nothing useful
        raise InvalidArgument(
            f"a server URL is a str such as 'tcp://127.0.0.1:9870', not {type(url).__name__}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is no number or beyond 65535, an unclosed "[" of IPv6
        parts, port = urlsplit(""), None
    if parts.scheme in ("http", "https") and parts.hostname and port is not None:
        # The dashboard's address, copied from the banner or the browser's address bar.
        ws = "wss" if parts.scheme == "https" else "ws"
        raise InvalidArgument(
            f"{url[:200]!r} is the dashboard's web address; a client connects to "
            f"{ws}://{parts.netloc}/ws there (or to the server's tcp:// URL)"
        )
    if parts.scheme not in SCHEMES or not parts.hostname or port is None:
        raise InvalidArgument(
            f"cannot connect to {url[:200]!r}: use tcp://host:port or ws://host:port/ws "
            "(tcps:// and wss:// for TLS)"
        )
    return parts.scheme, parts.hostname, port, parts.path or "/ws"
