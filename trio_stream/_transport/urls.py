"""Server URLs: which schemes the client speaks, and their parts."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from .._exceptions import InvalidArgument

SCHEMES: Final = ("tcp", "tcps", "ws", "wss")
# host:port, [v6]:port: a server address that only lacks its scheme.
_HOST_PORT: Final = re.compile(r"(?:[\w.-]+|\[[0-9a-fA-F:.]+\]):\d{1,5}")


def missing_scheme(text: str) -> str | None:
    """What to say of a server address without its scheme (``127.0.0.1:9870``); None: it
    is not one."""
    if "://" in text or not _HOST_PORT.fullmatch(text):
        return None
    return (
        f"{text!r} has no scheme: use tcp://{text} (or ws://host:port/ws on the server's HTTP port)"
    )


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a server URL, with a clear error for anything else."""
    if not isinstance(url, str):  # bytes, None: urlsplit's own errors say nothing useful
        raise InvalidArgument(
            f"a server URL is a str such as 'tcp://127.0.0.1:9870', not {type(url).__name__}"
        )
    no_scheme = missing_scheme(url)
    if no_scheme is not None:
        raise InvalidArgument(no_scheme)
    usage = "use tcp://host:port or ws://host:port/ws (tcps:// and wss:// for TLS)"
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed "[" of IPv6, a bracketed host that is no IP address
        raise InvalidArgument(f"{url[:200]!r} is not a server URL: {usage}") from None
    try:
        port = parts.port
    except ValueError:  # no number, or beyond 65535
        raise InvalidArgument(
            f"{url[:200]!r} is not a server URL: its port {_port_text(parts.netloc)[:20]!r} "
            f"is not a number from 0 to 65535; {usage}"
        ) from None
    if parts.scheme in ("http", "https") and parts.hostname and port is not None:
        # The dashboard's address, copied from the banner or the browser's address bar.
        ws, tcp = ("wss", "tcps") if parts.scheme == "https" else ("ws", "tcp")
        raise InvalidArgument(
            f"{url[:200]!r} is a web address; a client connects to {ws}://{parts.netloc}/ws "
            f"if that is the server's HTTP port (the dashboard's), or to {tcp}://host:port on "
            "its TCP port"
        )
    if parts.scheme in SCHEMES and parts.hostname and port is None:
        # No port: there is no default one to assume (the server's TCP and HTTP ports differ).
        host = parts.netloc.rpartition("@")[2]
        on_tcp = parts.scheme.startswith("tcp")
        example = f"{parts.scheme}://{host}:" + ("9870" if on_tcp else "9871/ws")
        raise InvalidArgument(
            f"{url[:200]!r} has no port: give the server's, e.g. {example} (the default "
            "ports of trio-stream serve: 9870 for tcp://, 9871 for ws://)"
        )
    if parts.scheme not in SCHEMES or not parts.hostname or port is None:
        raise InvalidArgument(f"{url[:200]!r} is not a server URL: {usage}")
    # No path, or "/" (the dashboard's page, where no WebSocket is): the server's /ws.
    return parts.scheme, parts.hostname, port, parts.path if parts.path not in ("", "/") else "/ws"


def _port_text(netloc: str) -> str:
    """The port of ``netloc`` as ``SplitResult.port`` reads it (after "]:" of a bracketed
    host, else after the first ":"), to name the one it refused."""
    host = netloc.rpartition("@")[2]
    if "[" in host:
        return host.partition("]")[2].partition(":")[2]
    return host.partition(":")[2]
