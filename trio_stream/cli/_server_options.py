"""``serve``/``demo`` options: every ServerConfig field as a flag and as a TOML key.

The flags are generated from the ServerConfig dataclass, so a field added to it is a flag
here without touching this module (helps for the known ones live in ``_HELP``). Precedence:
flags, then ``$TRIO_STREAM_TOKEN`` and ``$TRIO_STREAM_ADMIN_TOKEN``, then the ``--config``
file, then the defaults.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import difflib
import json
import os
import ssl
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import trio_stream as ts

from .._exceptions import InvalidSetting
from ._options import TOKEN_ENV, byte_size, port_or_off
from ._output import human_bytes
from ._run import UsageError

_DEST_PREFIX: Final = "server_"
ADMIN_TOKEN_ENV: Final = "TRIO_STREAM_ADMIN_TOKEN"

_HELP: Final = {
    "host": "address to listen on; a non-loopback one without --token warns loudly that "
    "whoever reaches it may read and write",
    "tcp_port": "raw TCP port (0: any free port, off: no TCP endpoint)",
    "http_port": "WebSocket + dashboard port (0: any free port, off: none)",
    "name": "the server's name, shown to clients",
    "token": f"clients must present this token (also ${TOKEN_ENV})",
    "admin_token": "allows the admin actions to whoever gives it: publish to any channel, "
    f"delete any channel, disconnect any client, call any exposed method (also "
    f"${ADMIN_TOKEN_ENV})",
    "allowed_origins": "a browser origin allowed on the WebSocket (repeatable)",
    "allowed_hosts": "a Host name the HTTP port answers to besides loopback ones (repeatable;"
    " '*': any)",
    "max_connections": "connections the server holds at once (TCP and HTTP together)",
    "max_connections_per_address": "connections one peer address may hold",
    "http_keepalive_timeout_s": "seconds an idle HTTP keep-alive connection stays open",
    "http_max_requests": "requests one HTTP connection may make",
    "http_write_timeout_s": "seconds a peer has to read an HTTP reply",
    "max_frame_bytes": "largest frame, e.g. 64MiB",
    "max_channels_per_client": "channels one client may own",
    "max_kept_channels": "channels created with keep=True this server (node) holds at once",
    "max_subscriptions_per_client": "subscriptions one connection may hold",
    "max_publishers_per_client": "publishers one connection may hold open",
    "max_buffered_bytes": "bytes buffered for one connection, every subscription together",
    "handshake_timeout_s": "seconds a new connection has to say hello",
    "idle_timeout_s": "seconds of silence after which a connection is closed",
    "publish_window_frames": "frames a writer may have in flight",
    "publish_window_bytes": "bytes a writer may have in flight",
    "block_timeout_s": "seconds a block reader may hold its writers back (default: off)",
    "shutdown_grace_s": "seconds clients get to drain on shutdown",
    "resume_grace_s": "seconds the channels and subscriptions of a client whose connection "
    "broke wait for it to come back",
    "stats_interval_s": "seconds between $stats updates and rate measurements",
    "engine": "where channels live: memory, or a Redis URL shared by several nodes "
    "(redis://127.0.0.1:6379/0)",
    "node_name": "this node's name among the nodes of a Redis engine (default: hostname-pid)",
}


def _flag(field: str) -> str:
    if field in ("allowed_origins", "allowed_hosts"):
        return "--" + field.removesuffix("s").replace("_", "-")
    return "--" + field.removesuffix("_s").replace("_", "-")


def _flags(field: str) -> list[str]:
    """The flag, and the field's own spelling beside it when that differs: the README says
    every ServerConfig setting is a flag, and `--idle-timeout-s` was refused."""
    short, exact = _flag(field), "--" + field.replace("_", "-")
    return [short] if exact == short else [short, exact]


def _scalar(tp: Any) -> Any:
    """The type inside ``X | None`` (every optional field also takes its off value); a field
    of "a name or names" (``str | Sequence[str]``, kept as a tuple) as ``tuple[str, ...]``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 2 and str in args and any(_is_sequence(a) for a in args):
            return tuple[str, ...]
        return args[0] if len(args) == 1 else tp
    return tp


def _is_sequence(tp: Any) -> bool:
    return typing.get_origin(tp) is collections.abc.Sequence


def _parser_for(field: str, tp: Any) -> Callable[[str], Any] | None:
    """The argparse ``type=`` for one field, or None when it has no command-line form."""
    inner = _scalar(tp)
    if field.endswith("_port"):
        return port_or_off
    if inner is int:
        return byte_size if field.endswith("_bytes") else int
    if inner is float:
        return float
    if inner is str or typing.get_origin(inner) is tuple:
        return str
    return None


def _metavar(name: str, convert: Callable[[str], Any]) -> str:
    if convert is port_or_off:
        return "PORT"
    if convert is byte_size:
        return "BYTES"
    if convert is float:
        return "SECONDS" if name.endswith("_s") else "X"
    return "N" if convert is int else name.split("_")[-1].upper()


def _fields() -> dict[str, Any]:
    """ServerConfig's fields: name -> type."""
    hints = typing.get_type_hints(ts.ServerConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ts.ServerConfig) if f.init}


def _add_field_option(group: argparse._ArgumentGroup, name: str, tp: Any, default: Any) -> None:
    inner = _scalar(tp)
    convert = _parser_for(name, tp)
    if name == "ssl_context" or (convert is None and inner is not bool):
        return  # TLS has its own flags; a field of another type has no command-line form
    help_text = _HELP.get(name, f"ServerConfig.{name}")
    if name not in ("token", "admin_token") and default not in (None, ()):
        shown = human_bytes(default) if convert is byte_size else default
        help_text += f" (default: {shown})".replace("%", "%%")
    common: dict[str, Any] = {"dest": _DEST_PREFIX + name, "default": argparse.SUPPRESS}
    if inner is bool:
        group.add_argument(
            *_flags(name), action=argparse.BooleanOptionalAction, help=help_text, **common
        )
    elif typing.get_origin(inner) is tuple:
        group.add_argument(
            *_flags(name), action="append", metavar="VALUE", help=help_text, **common
        )
    else:
        assert convert is not None
        metavar = _metavar(name, convert)
        group.add_argument(*_flags(name), type=convert, metavar=metavar, help=help_text, **common)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    defaults = ts.ServerConfig()
    group = parser.add_argument_group("server (flags override --config)")
    group.add_argument(
        "--config",
        metavar="FILE.toml",
        type=Path,
        help="read the settings below from a TOML file (keys: their long option names)",
    )
    for name, tp in _fields().items():
        _add_field_option(group, name, tp, getattr(defaults, name))
    for port in ("tcp", "http"):
        if hasattr(defaults, f"{port}_port"):
            group.add_argument(
                f"--no-{port}",
                dest=f"{_DEST_PREFIX}{port}_port",
                action="store_const",
                const=None,
                default=argparse.SUPPRESS,
                help=f"same as --{port}-port off",
            )
    group.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    group.add_argument(
        "--tls-key", metavar="FILE", help="the certificate's private key (if not in --tls-cert)"
    )


def _from_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file, keyed by ServerConfig field (tls_cert/tls_key besides)."""
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:  # missing, a directory, unreadable: the option's error like the rest
        raise UsageError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    known = _fields()
    settings: dict[str, Any] = {}
    for raw_key, value in document.items():
        key = raw_key.replace("-", "_")
        if key in ("tls_cert", "tls_key"):
            # Relative paths are relative to the file, so a config directory can be moved.
            settings[key] = str(path.parent / str(value))
            continue
        if key == "log_level":
            # `serve --help` said the file takes the same settings as the flags; the log is
            # set up before the file is read (the command line's only).
            raise UsageError(
                f"{path}: {raw_key!r} is not a server setting: give --log-level on the "
                "command line (the file takes the settings of the flags under "
                '"server" in serve --help)'
            )
        if key not in known and key + "_s" in known:
            key += "_s"  # the file may use the flag's spelling, e.g. idle-timeout
        if key not in known or key == "ssl_context":
            raise UsageError(f"{path}: unknown setting {raw_key!r}{_did_you_mean(raw_key)}")
        settings[key] = _convert(path, key, known[key], value, raw_key)
    return settings


def _did_you_mean(raw_key: str) -> str:
    """`` (did you mean 'http_port'?)``, spelled with the file's separator, or ""."""
    names = [name for name in _fields() if name != "ssl_context"] + ["tls_cert", "tls_key"]
    names += [name.removesuffix("_s") for name in names if name.endswith("_s")]
    close = difflib.get_close_matches(raw_key.replace("-", "_"), names, n=1)
    if not close:
        return ""
    meant = close[0].replace("_", "-") if "-" in raw_key else close[0]
    return f" (did you mean {meant!r}?)"


def _wanted(key: str, tp: Any) -> str:
    """What a setting takes, in TOML terms (for the error about a value it does not)."""
    inner = _scalar(tp)
    if key.endswith("_port"):
        return "a port number (0-65535; 0: any free port) or false (off)"
    if inner is bool:
        return "true or false"
    if inner is int and key.endswith("_bytes"):
        return 'a size in bytes, e.g. 1048576 or "64MiB"'
    if inner is int:
        return "a whole number"
    if inner is float:
        return "a number of seconds" if key.endswith("_s") else "a number"
    if typing.get_origin(inner) is tuple:
        return 'a string or a list of strings, e.g. ["a", "b"]'
    return "a string, in quotes"


def _convert(path: Path, key: str, tp: Any, value: Any, raw_key: str) -> Any:
    """A TOML value checked against the field's type (strings go through the flag parser);
    an error names the setting as the file spells it (``raw_key``)."""
    inner = _scalar(tp)
    try:
        if key.endswith("_port") and (value is False or isinstance(value, str)):
            return None if value is False else port_or_off(value)
        if typing.get_origin(inner) is tuple:
            if isinstance(value, str):  # one name alone, as ServerConfig takes it
                return (value,)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return tuple(value)
        if isinstance(value, str) and inner is not str:
            convert = _parser_for(key, tp)
            if convert is None:
                raise ValueError("expected a value, not text")
            return convert(value)
        if inner is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, inner):
            return value
        raise ValueError(f"expected {getattr(inner, '__name__', inner)}")
    except ValueError:
        # The parsers' own words ("invalid literal for int() with base 10") name neither the
        # setting nor what it takes.
        shown = json.dumps(value, default=str)[:80]
        raise UsageError(
            f"{path}: setting {raw_key!r} takes {_wanted(key, tp)}, not {shown}"
        ) from None


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None:
        if key is not None:
            raise UsageError("--tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        # OpenSSL says "PEM lib" for a certificate file without its key in it.
        hint = "" if key is not None else " (a key in a file of its own is given with --tls-key)"
        raise UsageError(f"cannot load the TLS certificate {cert}: {exc}{hint}") from None
    return context


def server_config(args: argparse.Namespace, **overrides: Any) -> ts.ServerConfig:
    """The ServerConfig the flags, the environment and the --config file describe."""
    settings = _from_file(args.config) if args.config is not None else {}
    from_file = set(settings)  # what a flag does not override is the file's to answer for
    for env, setting in ((TOKEN_ENV, "token"), (ADMIN_TOKEN_ENV, "admin_token")):
        value = os.environ.get(env)
        if value is None or _DEST_PREFIX + setting in vars(args):
            continue  # unset, or the flag's value wins
        if not value:
            # A secret that failed to render (`TRIO_STREAM_TOKEN=$UNSET`): taken as unset, it
            # started a server without authentication, silently; `--token ""` is refused.
            raise UsageError(
                f"${env} is set but empty: give it a token (16 or more random characters), "
                "or unset it" + (" for a server that asks none" if setting == "token" else "")
            )
        settings[setting] = value
    for name, value in vars(args).items():
        if name.startswith(_DEST_PREFIX):
            # Repeated flags arrive as a list; the settings are tuples (ServerConfig is frozen).
            setting = name.removeprefix(_DEST_PREFIX)
            settings[setting] = tuple(value) if isinstance(value, list) else value
            from_file.discard(setting)
    cert = args.tls_cert or settings.pop("tls_cert", None)
    key = args.tls_key or settings.pop("tls_key", None)
    settings.pop("tls_cert", None)
    settings.pop("tls_key", None)
    settings["ssl_context"] = _ssl_context(cert, key)
    settings.update(overrides)
    try:
        return ts.ServerConfig(**settings)
    except InvalidSetting as exc:
        where = f"{args.config}: {exc.setting}" if exc.setting in from_file else _flag(exc.setting)
        raise UsageError(f"{where}: {exc}") from None
