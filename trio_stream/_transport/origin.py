"""Which requests the HTTP port answers: the Host check, and the Origin check of upgrades.

A browser sends the page's origin with every WebSocket upgrade and lets any page connect
anywhere; refusing foreign origins is what stops a page on another site from talking to a
server on the user's machine or network (cross-site WebSocket hijacking). Programs that are
not browsers send no Origin header and are not affected.

The Origin check alone does not stop DNS rebinding: a page of ``rebind.attacker.example``
whose name is then made to resolve to 127.0.0.1 is same-origin with that name, and its
requests say ``Host: rebind.attacker.example``. A server listening on loopback therefore
answers only to loopback names (``localhost``, ``127.0.0.1``, ``[::1]``, any port), the only
names a page can legitimately reach it by, unless ``ServerConfig.allowed_hosts`` names
others (a reverse proxy's public name, say). A server listening on another address is meant
to be reached by whatever names point at it: it answers any Host unless ``allowed_hosts``
is given, and should have a token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

ANY_HOST = "*"

DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def origin_allowed(
    origin: str | None, host: str | None, allowed: Sequence[str] | None, *, secure: bool
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


def host_allowed(host: str | None, allowed: Sequence[str] | None, *, bound_to: str) -> bool:
    """Whether the HTTP port answers a request with this Host header.

    Args:
        host: the Host header, None when absent (HTTP/1.0 only: h11 refuses an HTTP/1.1
            request without one). Browsers always send it, so a request without one is
            not DNS rebinding and passes.
        allowed: ``ServerConfig.allowed_hosts``: host names (the port is not compared,
            case-insensitive), or ``"*"`` for any. Loopback names always pass: a page can
            only make a browser send them from a loopback origin.
        bound_to: ``ServerConfig.host``, the address the server listens on.
    """
    if host is None:
        return True
    name = host_name(host)
    if name is None:
        return False
    if is_loopback(name):
        return True
    if allowed is not None:
        return any(entry == ANY_HOST or entry.lower() == name for entry in allowed)
    return not is_loopback(bound_to)


def host_name(host: str) -> str | None:
    """The name in a Host header, lower-case, without port or IPv6 brackets (None: malformed)."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:  # a malformed port or bracket
        return None
    return name or None


def is_loopback(name: str) -> bool:
    """``localhost`` (and its subdomains, RFC 6761) or a loopback IP address."""
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def host_refusal(host: bytes | None, *, bound_to: str) -> str:
    """What a refused Host is told: why, and what to configure."""
    shown = repr(host.decode("latin-1"))[:80] if host is not None else "(none)"
    if is_loopback(bound_to):
        why = (
            "this server listens on a loopback address and answers only to localhost, "
            "127.0.0.1 and [::1] (a defence against DNS rebinding), or to its allowed_hosts"
        )
    else:
        why = "this server answers only to loopback names and to its allowed_hosts"
    return (
        f"Host {shown} is not served here: {why}. To reach it under this name, start it "
        "with ServerConfig(allowed_hosts=(NAME,)) or trio-stream serve --allowed-host NAME"
    )
