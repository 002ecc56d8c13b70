"""Which web pages may open a WebSocket to this server (the Origin check of the upgrade).

A browser sends the page's origin with every WebSocket upgrade and lets any page connect
anywhere; refusing foreign origins is what stops a page on another site from talking to a
server on the user's machine or network (cross-site WebSocket hijacking). Programs that are
not browsers send no Origin header and are not affected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def origin_allowed(
    origin: str | None, host: str | None, allowed: tuple[str, ...] | None, *, secure: bool
) -> bool:
    """Whether an upgrade with this Origin header may proceed.

    Args:
        origin: the Origin header, None when absent.
        host: the Host header of the request.
        allowed: ``ServerConfig.allowed_origins``: other origins allowed besides the
            server's own (e.g. ``("https://lab.example.org",)``, compared
            case-insensitively). The server's own origin (its dashboard) is always allowed:
            letting a page of one's own in must not lock the dashboard out.
        secure: whether this port speaks TLS (the default port of the Host header).

    Requests without an Origin header pass in both cases: they do not come from a browser,
    any program could send whatever Origin it likes, and the token is what keeps them out.
    """
    if origin is None:
        return True
    if allowed is not None:
        wanted = {entry.rstrip("/").lower() for entry in allowed}
        if origin.rstrip("/").lower() in wanted:
            return True
    return host is not None and same_origin(origin, host, secure=secure)


def same_origin(origin: str, host: str, *, secure: bool) -> bool:
    """Whether ``origin`` names the host and port that the Host header names.

    The scheme is not compared: behind a TLS-terminating proxy, the page is https while this
    port speaks plain HTTP, and only whoever controls this host and port can serve a page
    from that origin anyway.
    """
    try:
        parts = urlsplit(origin)
        origin_host, origin_port = parts.hostname, parts.port
        host_parts = urlsplit(f"//{host}")
        host_name, host_port = host_parts.hostname, host_parts.port
    except ValueError:  # a malformed port
        return False
    if parts.scheme not in DEFAULT_PORTS or not origin_host or not host_name:
        return False
    if origin_host != host_name:
        return False
    if origin_port is None and host_port is None:
        return True
    own_default = 443 if secure else 80
    return (origin_port or DEFAULT_PORTS[parts.scheme]) == (host_port or own_default)
