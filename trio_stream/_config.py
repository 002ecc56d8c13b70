"""ServerConfig: every knob of the server, with safe defaults (loopback only)."""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import math
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os.path import exists
from typing import Any, Final
from urllib.parse import parse_qs, urlparse, urlsplit

from ._exceptions import InvalidSetting
from ._protocol.frames import DATA_OVER_LIMIT_BYTES
from ._protocol.limits import (
    HANDSHAKE_TIMEOUT_S,
    HTTP_KEEPALIVE_TIMEOUT_S,
    HTTP_MAX_REQUESTS,
    HTTP_WRITE_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_BUFFERED_BYTES,
    MAX_CHANNELS_PER_CLIENT,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_FRAME_BYTES,
    MAX_KEPT_CHANNELS,
    MAX_PUBLISHERS_PER_CLIENT,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    PUBLISH_WINDOW_BYTES,
    PUBLISH_WINDOW_FRAMES,
    RESUME_GRACE_S,
    Limits,
)

DEFAULT_TCP_PORT = 9870
DEFAULT_HTTP_PORT = 9871
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")  # engine= URLs of a Redis engine
REDIS_EXTRA_MISSING = (
    "engine=redis:// needs the redis extra: pip install 'trio_stream[redis]' "
    "(in a checkout: pip install -e '.[redis]')"
)
# max_frame_bytes's range: below the floor, a hello with a token or a control reply may not
# fit and no client could talk to the server; above the ceiling, a DATA frame (which may
# exceed the limit by its head and the writer's name) would not fit its 4-byte length prefix.
MIN_FRAME_BYTES_SETTING = 4096
MAX_FRAME_BYTES_SETTING = 2**32 - 1 - DATA_OVER_LIMIT_BYTES
MAX_COUNT_SETTING = 2**63 - 1  # a count or size setting (a signed 64-bit int for any client)

# Settings checked when a ServerConfig is made, so that a bad one fails at once with its
# name, not later inside the running server (or, for idle_timeout_s, in every client).
_POSITIVE_SECONDS = (
    "handshake_timeout_s",
    "idle_timeout_s",
    "http_keepalive_timeout_s",
    "http_write_timeout_s",
    "stats_interval_s",
)
_PERIODS = ("idle_timeout_s", "stats_interval_s")  # ... and the server's timers' periods
MIN_PERIOD_S = 0.01
_SECONDS = ("shutdown_grace_s", "resume_grace_s")
_COUNTS = (
    "max_frame_bytes",
    "max_channels_per_client",
    "max_kept_channels",
    "max_subscriptions_per_client",
    "max_publishers_per_client",
    "max_buffered_bytes",
    "publish_window_frames",
    "publish_window_bytes",
    "max_connections",
    "max_connections_per_address",
    "http_max_requests",
)


# The longest server name (ServerConfig.name): it goes out in every client's welcome.
MAX_SERVER_NAME_CHARS = 200


@dataclass(frozen=True)
class ServerConfig:
    """How to run a server.

    Ports of 0 pick a free port (see ``server.tcp_url``); ``None`` switches that endpoint off.
    """

    host: str = "127.0.0.1"
    tcp_port: int | None = DEFAULT_TCP_PORT
    http_port: int | None = DEFAULT_HTTP_PORT
    name: str = "trio_stream"
    token: str | None = field(default=None, repr=False)  # never in logs or reprs
    # admin actions (publish, delete any channel, disconnect a client, call an exposed method):
    # see _server/admin.py
    admin_token: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    # One name alone or several (a tuple or list), kept as a tuple (__post_init__); typed as
    # given, so that ServerConfig(allowed_hosts="*") passes mypy --strict as it runs.
    allowed_origins: str | Sequence[str] | None = None
    # Host names the HTTP port answers to (None: loopback names on a loopback server, any
    # name otherwise; "*": any name). See _transport/origin.py, host_allowed.
    allowed_hosts: str | Sequence[str] | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_channels_per_client: int = MAX_CHANNELS_PER_CLIENT
    max_kept_channels: int = MAX_KEPT_CHANNELS
    max_subscriptions_per_client: int = MAX_SUBSCRIPTIONS_PER_CLIENT
    # Each of a channel's publishers hears of every reader that comes or goes: 100,000 of
    # them on one connection made each subscribe to that channel stop the server for 1 s.
    max_publishers_per_client: int = MAX_PUBLISHERS_PER_CLIENT
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    publish_window_frames: int = PUBLISH_WINDOW_FRAMES
    publish_window_bytes: int = PUBLISH_WINDOW_BYTES
    # A block reader that holds its channel's writers back longer than this (s) is ended
    # with LimitExceeded; None: never. A subscription may choose its own (block_timeout=).
    block_timeout_s: float | None = None
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    http_keepalive_timeout_s: float = HTTP_KEEPALIVE_TIMEOUT_S
    http_max_requests: int = HTTP_MAX_REQUESTS
    http_write_timeout_s: float = HTTP_WRITE_TIMEOUT_S
    shutdown_grace_s: float = 2.0
    # The channels and subscriptions of a client that reconnects (resume) outlive a blip of
    # its connection for this long (s): channels still readable, same epoch and history, its
    # subscriptions still taking frames (kept.py), its own again when it is back.
    resume_grace_s: float = RESUME_GRACE_S
    stats_interval_s: float = 1.0
    # Where channels live: "memory" (this process only) or a Redis URL shared by several
    # nodes (redis://host:port/db, see README "Several nodes").
    engine: str = "memory"
    # This node's name in the cluster (None: hostname-pid); unique among the nodes.
    node_name: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.host, str) and self.host):
            raise InvalidSetting(
                "host",
                'host must be an address to bind, e.g. "127.0.0.1" ("0.0.0.0": every IPv4 '
                f"interface), not {self.host!r:.40}",
            )
        if not (isinstance(self.name, str) and self.name):
            raise InvalidSetting("name", f"name must be a non-empty str, not {self.name!r:.40}")
        if len(self.name) > MAX_SERVER_NAME_CHARS or not self.name.isprintable():
            # Sent to every client in its welcome and shown by the CLI and the dashboard: a
            # 5 MB name or one with a newline was taken (an embedding persona).
            raise InvalidSetting(
                "name",
                f"name must be printable text of at most {MAX_SERVER_NAME_CHARS} characters "
                f"(every client is sent it), not {self.name!r:.40}",
            )
        for name in ("token", "admin_token", "node_name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                # The value itself stays out of the message: it may be a secret.
                raise InvalidSetting(name, f"{name} must be a str or None, not {type(value)}")
            if value == "" and name != "node_name":
                # What `--token "$UNSET"` passes: a token anyone guesses (an empty key is
                # refused for the same reason, docs/protocol.md).
                raise InvalidSetting(
                    name, f"{name} must not be empty: give a token, or none at all"
                )
        if self.node_name is not None and (problem := node_name_problem(self.node_name)):
            raise InvalidSetting("node_name", problem)
        for name in ("allowed_origins", "allowed_hosts"):
            # One name alone is taken as a tuple of one: iterated as it is, a string is a
            # tuple of characters, none of which would ever match.
            entries = getattr(self, name)
            if isinstance(entries, str):
                entries = (entries,)
            if entries is not None:
                names = (
                    tuple(entries)
                    if isinstance(entries, Iterable) and not isinstance(entries, bytes | dict)
                    else None
                )
                if names is None or not all(isinstance(entry, str) for entry in names):
                    raise InvalidSetting(
                        name,
                        f"{name} must be a name, a tuple or list of names, or None, "
                        f"not {entries!r:.60}",
                    )
                object.__setattr__(self, name, names)  # frozen; a list made hashable
        for origin in self.allowed_origins or ():
            if problem := origin_problem(origin):
                raise InvalidSetting("allowed_origins", problem)
        for name in _POSITIVE_SECONDS:
            value = getattr(self, name)
            if not (_is_number(value) and 0 < value < math.inf):
                raise InvalidSetting(
                    name, f"{name} must be a positive number of seconds, not {value!r:.40}"
                )
            if name in _PERIODS and value < MIN_PERIOD_S:
                # What the server wakes up for: a nanosecond (milliseconds typed as
                # seconds) kept a core busy.
                raise InvalidSetting(
                    name, f"{name} must be at least {MIN_PERIOD_S} s, not {value!r:.40}"
                )
        for name in _SECONDS:
            value = getattr(self, name)
            if not (_is_number(value) and 0 <= value < math.inf):
                raise InvalidSetting(
                    name, f"{name} must be a number of seconds >= 0, not {value!r:.40}"
                )
        block = self.block_timeout_s
        if block is not None and not (_is_number(block) and 0 < block < math.inf):
            raise InvalidSetting(
                "block_timeout_s",
                f"block_timeout_s must be a positive number of seconds or None, not {block!r:.40}",
            )
        for name in _COUNTS:
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                # "64MiB" is what the flag and the config file take: say the Python spelling.
                unit = " (bytes: 64 * 2**20 for 64 MiB)" if name.endswith("_bytes") else ""
                raise InvalidSetting(name, f"{name} must be an int >= 1{unit}, not {value!r:.40}")
            if value > MAX_COUNT_SETTING:
                # The welcome's limits carry them as CBOR integers: past 64 bits a bignum
                # (a tag), which every client refuses in a control message.
                raise InvalidSetting(
                    name, f"{name} must be at most 2**63 - 1 ({MAX_COUNT_SETTING}), not {value}"
                )
        if not MIN_FRAME_BYTES_SETTING <= self.max_frame_bytes <= MAX_FRAME_BYTES_SETTING:
            raise InvalidSetting(
                "max_frame_bytes",
                f"max_frame_bytes must be {MIN_FRAME_BYTES_SETTING}-{MAX_FRAME_BYTES_SETTING} "
                f"bytes, not {self.max_frame_bytes}",
            )
        for name in ("tcp_port", "http_port"):
            port = getattr(self, name)
            if port is not None and not (
                isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535
            ):
                raise InvalidSetting(
                    name, f"{name} must be 0-65535 or None (off), not {port!r:.40}"
                )
        if self.tcp_port == self.http_port and self.tcp_port:
            # Refused here: at start the second listener's "Address already in use" blamed
            # another server (the demo perhaps) that did not exist. 0 is a free port each.
            raise InvalidSetting(
                "tcp_port",
                f"tcp_port and http_port are both {self.tcp_port}: give them different ports",
            )
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise InvalidSetting(
                "ssl_context",
                "ssl_context must be an ssl.SSLContext holding the server's certificate "
                "(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), then "
                "load_cert_chain(cert, key)) or None, not "
                f"{type(self.ssl_context).__name__}",
            )
        if self.tcp_port is None and self.http_port is None:
            raise InvalidSetting(
                "tcp_port", "tcp_port and http_port are both off: no client could connect"
            )
        if not isinstance(self.engine, str) or (
            self.engine != "memory" and not self.engine.startswith(REDIS_SCHEMES)
        ):
            raise InvalidSetting(
                "engine",
                f"engine {self.engine!r:.80}: give 'memory' or a Redis URL such as "
                "redis://127.0.0.1:6379/0",
            )
        if self.engine != "memory" and (problem := engine_url_problem(self.engine)):
            raise InvalidSetting("engine", problem)
        if self.engine != "memory" and (missing := _redis_client_missing()) is not None:
            # Here, not when the server starts: a script learns it where it made the config.
            if missing.name == "coredis":
                raise InvalidSetting("engine", REDIS_EXTRA_MISSING) from missing
            # Installed, but it does not import (a dependency of the wrong version): its
            # own error says what to mend; installing the extra again would not.
            raise InvalidSetting(
                "engine", f"engine=redis:// needs coredis, which does not import: {missing}"
            ) from missing

    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_channels_per_client=self.max_channels_per_client,
            max_subscriptions_per_client=self.max_subscriptions_per_client,
            max_buffered_bytes=self.max_buffered_bytes,
            # Floats on the wire whatever was configured (idle_timeout_s=3 is an int): the
            # protocol page says float, and a typed client may insist.
            handshake_timeout_s=float(self.handshake_timeout_s),
            idle_timeout_s=float(self.idle_timeout_s),
            publish_window_frames=self.publish_window_frames,
            publish_window_bytes=self.publish_window_bytes,
            resume_grace_s=float(self.resume_grace_s),
        )


def _init_names(cls: type[ServerConfig]) -> frozenset[str] | None:
    """The keywords ``cls(...)`` takes (its __init__'s: a subclass's own, or the dataclass's,
    InitVars included), or None when it takes any (``**kwargs``)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # not self
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY)


def _checked_new(cls: type[ServerConfig], /, *args: Any, **kwargs: Any) -> ServerConfig:
    """Before __init__: a misspelt setting named as InvalidSetting (and the closest real
    one) rather than Python's "unexpected keyword argument"."""
    names = _init_names(cls) if kwargs else None
    if names is not None:
        for name in kwargs:
            if name not in names:
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else " (see README, Configuration)"
                raise InvalidSetting(name, f"ServerConfig has no setting {name!r}{hint}")
    return object.__new__(cls)


# __new__, not a wrapped __init__: a dataclass subclass writes its own __init__ (and skipped
# the check). Assigned, not defined in the class, so that type checkers still see the
# dataclass's signature (a misspelt setting is flagged before it runs, too); inspect and
# help() read it from __signature__ (they look at a class's own __new__ first).
_checked_new.__signature__ = inspect.signature(ServerConfig.__init__)  # type: ignore[attr-defined]
setattr(ServerConfig, "__new__", staticmethod(_checked_new))  # noqa: B010


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _redis_client_missing() -> ImportError | None:
    """Why coredis (the redis extra) does not import, or None: an import, not a spec
    lookup, so that a broken install is found too. The engine imports it next anyway."""
    try:
        import coredis  # noqa: F401
    except ImportError as exc:
        return exc
    return None


# A node's unnamed clients are "client-<id>@<node>": with a longer (or unprintable) node
# name they could not be called, nor be a sender on the wire (client names are at most 100
# printable characters, 255 bytes: a review).
MAX_NODE_NAME_CHARS: Final = 64
MAX_NODE_NAME_BYTES: Final = 128


def node_name_problem(name: str) -> str | None:
    """What is wrong with a node name (Redis keys are split at ':'), or None."""
    if not name or ":" in name or not name.isprintable():
        return f"node_name {name[:80]!r}: give a non-empty, printable name without ':'"
    if len(name) > MAX_NODE_NAME_CHARS or len(name.encode()) > MAX_NODE_NAME_BYTES:
        return (
            f"node_name {name[:80]!r}: at most {MAX_NODE_NAME_CHARS} characters "
            f"({MAX_NODE_NAME_BYTES} bytes of UTF-8), as it is part of its clients' names"
        )
    return None


ENGINE_URL_EXAMPLE: Final = "redis://127.0.0.1:6379/0 (redis://host:port/database)"


def engine_url_problem(url: str) -> str | None:
    """What is wrong with a Redis engine URL, read as coredis reads it when the server
    starts (urlparse; the database from the path, or from a ``db=`` query), or None.

    Checked when the ServerConfig is made: at start, a port that was not one came out as
    coredis's 40-line ValueError, and a path coredis could not read as a number (``/x``,
    ``/0/extra``) was database 0, silently joining that database's cluster.
    """
    from ._server.engine import safe_url  # here: that module imports this one

    shown = f"engine {safe_url(url)!r:.100}"  # never the password
    example = f"give a URL such as {ENGINE_URL_EXAMPLE}"
    try:
        parts = urlparse(url)
    except ValueError:  # "Invalid IPv6 URL"
        return f"{shown}: an IPv6 host goes in brackets, as in redis://[::1]:6379/0"
    # A '/', '?' or '#' in a password ends the host part early, and the host and port are
    # then read from inside the password (coredis decodes no %2F): said as such, not shown.
    if parts.scheme != "unix" and "@" in url.partition("://")[2] and "@" not in parts.netloc:
        cut = (
            f"{shown}: its password (or user) holds a '/', '?' or '#', which an engine URL "
            "cannot carry: choose one without them"
        )
    else:
        cut = None
    if parts.netloc.rpartition("@")[2].count(":") > 1 and "[" not in parts.netloc:
        return cut or f"{shown}: an IPv6 host goes in brackets, as in redis://[::1]:6379/0"
    try:
        port = parts.port
    except ValueError:  # "abc", 99999
        return cut or f"{shown}: its port must be 1-65535; {example}"
    query = parse_qs(parts.query, keep_blank_values=True)
    if problem := _engine_query_problem(query, tls=parts.scheme == "rediss"):
        return f"{shown}: {problem}"
    # coredis takes a db= query over the path; a unix:// URL has no other way to give one.
    databases = query.get("db", [])
    if not all(_is_database(number) for number in databases):
        return f"{shown}: db= must be a database number (0, 1, ...), as in ...?db=1"
    if parts.scheme == "unix":
        # (coredis ignores a host there; "localhost" is a common spelling, another host
        # most likely a path's first part, as in unix://run/redis.sock)
        if (
            parts.hostname not in (None, "localhost")
            or port is not None
            or not parts.path.strip("/")
        ):
            return (
                f"{shown}: a unix:// URL is the path of Redis's socket, with three slashes "
                "and its database as db=: unix:///run/redis/redis.sock?db=0"
            )
    else:
        if not parts.hostname:
            return cut or f"{shown}: no host; {example}"
        if port == 0:
            # Not "a free port" as for tcp_port: coredis reads :0 as its default, 6379.
            return f"{shown}: its port must be 1-65535; {example}"
        path = parts.path.removeprefix("/").removesuffix("/")  # (/1/ is 1 to coredis too)
        if path and not _is_database(path):
            # Several clusters share one Redis on database numbers of their own (README):
            # a path coredis could not read was database 0, another cluster's.
            return cut or (
                f"{shown}: the path must be one database number (/0, /1, ...) or nothing "
                f"(database 0), not /{path[:40]}; {example}"
            )
        if path:
            databases.insert(0, path)
    if len({int(number) for number in databases}) > 1:
        return (
            f"{shown}: it names more than one database ({', '.join(databases)}): give one, "
            "in the path (redis://host:6379/1), or as db= for unix://"
        )
    return None


# The query keys an engine URL may carry: coredis reads others too, but the engine sizes its
# pool itself (a max_connections below what its blocking reads hold stalls the node), its
# reads block for a second (a stream_timeout under that ends them), and noreply would leave
# every command without its answer. coredis ignores a key it does not know (a typo) and
# raises a bare ValueError at start for a value it cannot read: both are said here instead.
_ENGINE_QUERY_KEYS: Final = ("db", "connect_timeout", "client_name")
_ENGINE_TLS_QUERY_KEYS: Final = (
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_ca_certs",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_CERT_REQS: Final = ("none", "optional", "required")
_BOOLEANS: Final = ("0", "1", "true", "false", "yes", "no", "t", "f", "y", "n")


def _engine_query_problem(query: dict[str, list[str]], *, tls: bool) -> str | None:
    known = _ENGINE_QUERY_KEYS + (_ENGINE_TLS_QUERY_KEYS if tls else ())
    for key, values in query.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]!r}? " if close else ""
            tls_note = "" if tls else "; the ssl_ ones with rediss://"
            return (
                f"the query {key[:40]!r} is not one an engine URL takes: {hint}it takes "
                f"{', '.join(known)}{tls_note}"
            )
        if len(values) > 1:
            return f"the query {key!r} is given {len(values)} times: give it once"
        value = values[0]
        if key == "connect_timeout":
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                return f"connect_timeout must be a number of seconds above 0, not {value[:40]!r}"
        elif key == "ssl_cert_reqs" and value not in _CERT_REQS:
            return f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {value[:40]!r}"
        elif key == "ssl_check_hostname" and value.lower() not in _BOOLEANS:
            return f"ssl_check_hostname must be true or false, not {value[:40]!r}"
        elif key.startswith("ssl_") and key.endswith(("file", "certs")) and not exists(value):
            # (coredis loads them as the server starts: a missing one was an OSError there;
            # ssl_ca_certs may be a directory of them)
            return f"{key} must name a file that exists, and {value[:100]!r} does not"
        elif key == "client_name" and not (value.isprintable() and " " not in value and value):
            # Redis refuses CLIENT SETNAME with a space or a control character.
            return f"client_name must be printable, without spaces, not {value[:40]!r}"
    return None


def _is_database(text: str) -> bool:
    # ASCII digits only: int() also takes "-1", " 1", "+1" and "١" (an Arabic-Indic one).
    return text.isascii() and text.isdigit()


# An Origin header is the page's scheme://host[:port] as a browser serializes it: lower
# case, ASCII (IDNA), IP addresses in their canonical form, no default port; origin_allowed
# compares entries with it as strings (case aside, and a trailing slash). Other schemes than
# http(s) are pages too: a browser extension's (chrome-extension://<id>), a webview app's
# (tauri://localhost, capacitor://localhost, app://..., vscode-webview://<id>).
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SERVER_SCHEMES: Final = ("ws", "wss", "tcp", "tcps")  # this server's URLs, never an origin
_ORIGIN_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_ORIGIN_NETLOC = re.compile(r"(?P<host>[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]+))?")
_ENDS_IN_A_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")  # the URL standard's IPv4 test
ORIGIN_EXAMPLE: Final = "http://intranet.example:8000"


def origin_problem(entry: str) -> str | None:
    """Why an ``allowed_origins`` entry could never match a page's Origin, or None.

    Checked when the ServerConfig is made: ``intranet.example:8000`` (no scheme) was taken
    in silence, and the page it meant was refused with a 403 the browser does not show.
    """
    shown = f"allowed_origins entry {entry!r:.80}"
    if entry == "*":
        # allowed_hosts takes "*"; an Origin wildcard would let every page a user visits
        # talk to this server (see _transport/origin.py), so there is none.
        return (
            f"{shown}: there is no wildcard for origins; list each page's origin, e.g. "
            f"{ORIGIN_EXAMPLE}"
        )
    if entry.lower() == "null":
        # Every file:// page and sandboxed frame sends it: it does match, and lets all of
        # them in, which the refused upgrade's log line advises against (taken as before).
        return None
    advice = (
        f"{shown} can never match: give a page's origin as scheme://host[:port], e.g. "
        f"{ORIGIN_EXAMPLE}"
    )
    if not entry.isascii():
        return f"{advice} (a browser sends a host in its ASCII form, xn--...)"
    text = entry.rstrip("/").lower()  # as origin_allowed compares it
    try:
        parts = urlsplit(text)
    except ValueError:  # a bracket left open
        return advice
    netloc = _ORIGIN_NETLOC.fullmatch(parts.netloc)  # no user@, no empty port
    if (
        not _ORIGIN_SCHEME.fullmatch(parts.scheme)
        or text != f"{parts.scheme}://{parts.netloc}"  # a path, a query, a fragment
        or netloc is None
    ):
        return advice
    if parts.scheme in _SERVER_SCHEMES:
        return (
            f"{shown} is a server's URL, not a page's origin: give the origin of the page "
            f"that connects, e.g. {ORIGIN_EXAMPLE}"
        )
    host, port_text = netloc["host"], netloc["port"]
    if port_text is not None and not (
        str(int(port_text)) == port_text and 1 <= int(port_text) <= 65535
    ):
        return advice  # 0, 99999, 08000
    if parts.scheme not in _DEFAULT_PORTS:
        return None  # (an extension's or a webview's: sent as it is)
    if host.startswith("["):
        canonical = _canonical_ip(host[1:-1], ipaddress.IPv6Address)
        canonical = f"[{canonical}]" if canonical else None
    elif _ENDS_IN_A_NUMBER.fullmatch(host.removesuffix(".").rpartition(".")[2]):
        # A browser reads such a host as an IPv4 address and sends it so: 127.1 as
        # 127.0.0.1, 10.0.0.5. (a trailing dot) as 10.0.0.5.
        canonical = _canonical_ipv4(host.removesuffix("."))
    else:
        canonical = host
    if canonical is None:
        return advice
    if canonical != host:
        port = "" if port_text is None else f":{port_text}"
        return (
            f"{shown} can never match: a browser writes that address {canonical}; "
            f"give {parts.scheme}://{canonical}{port}"
        )
    if port_text is not None and int(port_text) == _DEFAULT_PORTS[parts.scheme]:
        return (
            f"{shown} can never match: a browser leaves the default port out of an Origin; "
            f"give {parts.scheme}://{host}"
        )
    return None


def _canonical_ipv4(text: str) -> str | None:
    """An IPv4 address as a browser writes it; inet_aton reads the short and hexadecimal
    forms (127.1, 0x7f.1) that ipaddress refuses, as the URL standard does."""
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        return None


def _canonical_ip(
    text: str, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
) -> str | None:
    try:
        return str(kind(text))
    except ValueError:
        return None
