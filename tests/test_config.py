"""ServerConfig refuses, when it is made, a setting the server cannot run with."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import pickle
import ssl
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_stream as ts
from trio_stream._transport.origin import origin_allowed


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("idle_timeout_s", 0),
        ("idle_timeout_s", -1.0),
        ("handshake_timeout_s", math.inf),
        ("stats_interval_s", math.nan),
        ("http_write_timeout_s", "5"),
        ("resume_grace_s", -0.5),
        ("shutdown_grace_s", math.inf),
        ("block_timeout_s", 0),
        ("max_frame_bytes", 0),
        ("max_buffered_bytes", 1.5),
        ("max_connections", True),
        ("publish_window_frames", -3),
        ("tcp_port", 70_000),
        ("http_port", -1),
        ("max_frame_bytes", 16),  # no hello would fit
        ("max_frame_bytes", 2**32),  # beyond the 4-byte length prefix
        ("engine", "bogus"),
        ("engine", None),
        ("engine", "http://127.0.0.1:6379"),
        ("host", 1),
        ("host", ""),
        ("name", None),
        ("name", "x" * 201),  # sent to every client in its welcome (5 MB were taken)
        ("name", "bad\nname"),
        ("token", 1234),
        ("node_name", b"node"),
        ("node_name", "a:b"),  # keys in Redis are split at ':' (it was a traceback at start)
        ("node_name", ""),
        # Part of its unnamed clients' names ("client-7@<node>"), which could not be called
        # past 100 characters (a review).
        ("node_name", "n" * 65),
        ("node_name", "node\tb"),
        ("token", ""),  # what --token "$UNSET" gives: a token anyone guesses
        ("admin_token", ""),
        ("allowed_origins", ("https://lab.example", None)),
        ("allowed_hosts", {"lab.example": 1}),
        # An outside audit of every option: a bignum in the welcome's limits (every client
        # refused it), a port of True, a context of the wrong type (the server's task group
        # died at the first connection), timers that kept a core busy.
        ("publish_window_frames", 2**64),
        ("max_buffered_bytes", 2**70),
        ("tcp_port", True),
        ("http_port", False),
        ("ssl_context", "notssl"),
        ("idle_timeout_s", 1e-9),
        ("stats_interval_s", 0.001),
        # A new user's findings. An engine URL with a port that is not one was coredis's
        # 40-line ValueError at start; :0 is not "a free port" there (coredis reads 6379).
        ("engine", "redis://127.0.0.1:abc/0"),
        ("engine", "redis://::1:6379/0"),  # an IPv6 host without its brackets
        ("engine", "redis://127.0.0.1:99999/0"),
        ("engine", "redis://127.0.0.1:0/0"),
        ("engine", "redis://:6379/0"),  # no host
        ("engine", "redis://[::1/0"),
        # A database coredis cannot read from the path was database 0: another cluster's.
        ("engine", "redis://127.0.0.1:6391/x"),
        ("engine", "redis://127.0.0.1:6379/0/extra"),
        ("engine", "redis://127.0.0.1:6379/-1"),
        ("engine", "redis://127.0.0.1:6379/1?db=3"),  # coredis takes the query's: 3
        ("engine", "redis://127.0.0.1:6379?db=x"),
        ("engine", "unix:///run/redis.sock?db=-1"),
        ("engine", "unix://run/redis.sock"),  # two slashes: "run" is a host, /redis.sock
        ("engine", "unix://"),
        # A query coredis could not read was a bare ValueError at start; one it does not know
        # (a typo) was ignored; ones that stall the engine (a pool too small for its blocking
        # reads, a read timeout under their block, commands without replies) were taken.
        ("engine", "redis://127.0.0.1:6379/0?connect_timeout=abc"),
        ("engine", "redis://127.0.0.1:6379/0?connect_timeout=-1"),
        ("engine", "redis://127.0.0.1:6379/0?connect_timeout=nan"),
        ("engine", "redis://127.0.0.1:6379/0?conect_timeout=3"),
        ("engine", "redis://127.0.0.1:6379/0?max_connections=1"),
        ("engine", "redis://127.0.0.1:6379/0?stream_timeout=0.1"),
        ("engine", "redis://127.0.0.1:6379/0?noreply=yes"),
        ("engine", "redis://127.0.0.1:6379/0?connect_timeout=1&connect_timeout=2"),
        ("engine", "redis://127.0.0.1:6379/0?ssl_cert_reqs=required"),  # not rediss://
        ("engine", "rediss://127.0.0.1:6379/0?ssl_cert_reqs=maybe"),
        ("engine", "rediss://127.0.0.1:6379/0?ssl_ca_certs=/nonexistent/ca.pem"),
        ("engine", "redis://127.0.0.1:6379/0?client_name=two%20words"),
        # Origins that no browser ever sends were taken in silence (the page got a 403).
        ("allowed_origins", "intranet2.example:8000"),  # no scheme
        ("allowed_origins", ["not a url"]),
        ("allowed_origins", "*"),  # allowed_hosts has one; origins have no wildcard
        ("allowed_origins", "ws://intranet.example:8000"),  # a page's origin is http(s)
        ("allowed_origins", "http://intranet.example:8000/app"),
        ("allowed_origins", "http://intranet.example:8000?"),
        ("allowed_origins", "http://user@intranet.example:8000"),
        ("allowed_origins", "http://intranet.example:80"),  # left out of an Origin
        ("allowed_origins", "https://intranet.example:443/"),
        ("allowed_origins", "http://intranet.example:"),
        ("allowed_origins", "http://intranet.example:99999"),
        ("allowed_origins", "http://bücher.example"),  # sent as xn--bcher-kva.example
        ("allowed_origins", "http://intranet.example:08000"),
        ("allowed_origins", "http://127.1:8000"),  # sent as 127.0.0.1
        ("allowed_origins", "http://10.0.0.5.:8000"),  # sent as 10.0.0.5
        ("allowed_origins", "http://[0:0::1]:8000"),  # sent as [::1]
    ],
)
def test_a_setting_the_server_cannot_run_with_is_refused_by_name(setting: str, value: Any) -> None:
    with pytest.raises(ts.InvalidArgument) as refused:
        ts.ServerConfig(**{setting: value})
    assert isinstance(refused.value, ts.InvalidSetting) and refused.value.setting == setting
    assert setting.removesuffix("_s") in str(refused.value)


@pytest.mark.parametrize(
    ("misspelt", "hint"),
    [
        ("tcp_prot", "did you mean 'tcp_port'?"),
        ("publish_windows_bytes", "publish_window_bytes"),
        ("colour", "see README, Configuration"),
    ],
)
def test_a_setting_that_does_not_exist_is_refused_by_name_with_the_closest_one(
    misspelt: str, hint: str
) -> None:
    settings: dict[str, Any] = {misspelt: 1}
    with pytest.raises(ts.InvalidSetting) as refused:
        ts.ServerConfig(**settings)
    assert refused.value.setting == misspelt
    assert f"no setting {misspelt!r}" in str(refused.value) and hint in str(refused.value)


@dataclasses.dataclass(frozen=True)
class LabConfig(ts.ServerConfig):
    """A program's own settings beside the server's."""

    bench: str = "b1"


def test_a_subclass_refuses_a_misspelt_setting_too() -> None:
    # Its own dataclass __init__ replaced the one that checked: Python's TypeError again.
    with pytest.raises(ts.InvalidSetting, match="did you mean 'tcp_port'"):
        LabConfig(tcp_prot=1)  # type: ignore[call-arg]
    with pytest.raises(ts.InvalidSetting, match="did you mean 'bench'"):
        LabConfig(bnech="b2")  # type: ignore[call-arg]
    config = LabConfig(bench="b2", tcp_port=0)
    assert (config.bench, config.tcp_port) == ("b2", 0)
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config


@dataclasses.dataclass(frozen=True)
class WithInitVar(ts.ServerConfig):
    """A subclass whose __init__ takes a keyword that is not a field."""

    port_base: dataclasses.InitVar[int] = 0

    def __post_init__(self, port_base: int) -> None:
        super().__post_init__()
        object.__setattr__(self, "tcp_port", port_base)


class WithOwnInit(ts.ServerConfig):
    """A plain subclass whose own __init__ takes a keyword and passes the rest on."""

    label: str

    def __init__(self, label: str, **settings: Any) -> None:
        super().__init__(**settings)
        object.__setattr__(self, "label", label)


def test_a_subclass_s_own_keywords_are_taken_and_the_signature_shown() -> None:
    # The check looked at the fields alone: an InitVar, or a subclass's own __init__'s
    # keyword, was "no setting"; and help() showed (*args, **kwargs).
    assert WithInitVar(port_base=0).tcp_port == 0
    with pytest.raises(ts.InvalidSetting, match="did you mean 'port_base'"):
        WithInitVar(port_bse=0)  # type: ignore[call-arg]
    assert WithOwnInit(label="lab", tcp_port=0).label == "lab"
    shown = str(inspect.signature(ts.ServerConfig))
    assert shown.startswith("(host: 'str' = '127.0.0.1', tcp_port: "), shown
    assert "port_base" in str(inspect.signature(WithInitVar))


def test_settings_still_go_by_position_and_through_replace() -> None:
    config = ts.ServerConfig("0.0.0.0", 0, None)
    assert (config.host, config.tcp_port, config.http_port) == ("0.0.0.0", 0, None)
    assert dataclasses.replace(config, tcp_port=5).tcp_port == 5


@pytest.mark.parametrize("setting", ["allowed_origins", "allowed_hosts"])
def test_one_name_or_a_list_of_names_is_taken_as_a_tuple(setting: str) -> None:
    # A string is iterable too: taken as it is, each of its characters would be a name that
    # never matches, and the page or the Host would be refused with no clue why.
    a, b = (
        ("https://a.example", "https://b.example")
        if setting == "allowed_origins"
        else (
            "a.example",
            "b.example",
        )
    )
    one: dict[str, Any] = {setting: a}
    assert getattr(ts.ServerConfig(**one), setting) == (a,)
    several: dict[str, Any] = {setting: [a, b]}
    config = ts.ServerConfig(**several)
    assert getattr(config, setting) == (a, b)
    hash(config)  # frozen and hashable, as with a tuple
    as_set: dict[str, Any] = {setting: frozenset({a})}
    assert getattr(ts.ServerConfig(**as_set), setting) == (a,)


def test_one_name_or_a_list_of_names_is_well_typed() -> None:
    # Typed as it runs (mypy --strict checks this file): the fields were typed
    # tuple[str, ...], and the README's "*" or a list failed a typed program (a trio developer).
    config = ts.ServerConfig(allowed_hosts="*", allowed_origins=["https://lab.example"])
    assert (config.allowed_hosts, config.allowed_origins) == (("*",), ("https://lab.example",))


def test_a_server_needs_an_endpoint() -> None:
    with pytest.raises(ts.InvalidSetting, match="both off"):
        ts.ServerConfig(tcp_port=None, http_port=None)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"tcp_port": None, "http_port": 0},
        {"tcp_port": 0, "http_port": None},
        {"resume_grace_s": 0, "shutdown_grace_s": 0.0, "block_timeout_s": None},
        {"idle_timeout_s": 0.01, "block_timeout_s": 2},
        {"engine": "redis://127.0.0.1:6379/0"},
        {"engine": "rediss://example.org:6380"},
        {"engine": "unix:///run/redis.sock"},
        {"engine": "unix:///run/redis.sock?db=2"},  # a unix:// URL's only way to say it
        {"engine": "unix://localhost/run/redis.sock?db=2"},  # coredis ignores the host
        {"engine": "redis://localhost:6379/1/"},  # coredis reads database 1
        {"engine": "redis://127.0.0.1:6379"},  # database 0, as the next two
        {"engine": "redis://127.0.0.1:6379/"},
        {"engine": "redis://127.0.0.1/0"},  # port 6379
        {"engine": "redis://127.0.0.1:65535/15?db=15"},  # the same database twice
        {"engine": "redis://127.0.0.1:6379?db=3"},
        {"engine": "redis://:s3cret@[::1]:6379/0"},
        {"engine": "redis://u:p@h:6379/0?client_name=a@lab&connect_timeout=2"},
        {"engine": f"rediss://h:6380/1?ssl_cert_reqs=required&ssl_ca_certs={__file__}"},
        {"engine": "redis://h:6379/1?connect_timeout=0.5&client_name=lab"},
        {"tcp_port": 0, "http_port": 0},  # a free port each
        {"tcp_port": 9899, "http_port": 9898},
        {"allowed_origins": "http://intranet.example:8000/"},  # a trailing slash matches
        {"allowed_origins": ["HTTPS://Lab.Example", "http://[::1]:8000", "http://10.0.0.5:81"]},
        {"max_frame_bytes": 4096},
        {"publish_window_frames": 2**63 - 1, "stats_interval_s": 0.01},
    ],
)
def test_settings_at_the_edges_are_taken(settings: dict[str, Any]) -> None:
    ts.ServerConfig(**settings)


def test_an_invalid_setting_survives_pickling_with_its_name() -> None:
    # A process pool or a multiprocessing queue hands exceptions on pickled.
    with pytest.raises(ts.InvalidSetting) as refused:
        ts.ServerConfig(idle_timeout_s=-1)
    copy = pickle.loads(pickle.dumps(refused.value))
    assert copy.setting == "idle_timeout_s" and str(copy) == str(refused.value)


def test_a_redis_engine_without_the_redis_extra_is_refused_where_the_config_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It used to pass here and fail only in ts.serve, as a ValueError from the server's start.
    monkeypatch.setitem(sys.modules, "coredis", None)  # as if not installed: import fails
    with pytest.raises(ts.InvalidSetting, match=r"needs the redis extra: pip install") as refused:
        ts.ServerConfig(engine="redis://127.0.0.1:6379/0")
    assert refused.value.setting == "engine"
    ts.ServerConfig(engine="memory")  # the default needs nothing


def test_a_broken_coredis_install_gets_its_own_error_not_install_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # coredis is there but one of its dependencies fails to import: installing the extra
    # again would not help, so its own error is what the message shows.
    class BrokenCoredis:
        @staticmethod
        def find_spec(name: str, *_: object) -> None:
            if name == "coredis":
                raise ImportError("cannot import name 'Final' from 'typing_x'", name="typing_x")

    monkeypatch.delitem(sys.modules, "coredis", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenCoredis, *sys.meta_path])
    with pytest.raises(ts.InvalidSetting) as refused:
        ts.ServerConfig(engine="redis://127.0.0.1:6379/0")
    assert str(refused.value) == (
        "engine=redis:// needs coredis, which does not import: cannot import name 'Final' "
        "from 'typing_x'"
    )


def test_a_size_as_the_flag_writes_it_gets_the_python_spelling() -> None:
    # "64MiB" works on the command line and in a config file; here it was "an int >= 1".
    with pytest.raises(ts.InvalidSetting, match=r"int >= 1 \(bytes: 64 \* 2\*\*20 for 64 MiB\)"):
        ts.ServerConfig(max_frame_bytes="64MiB")  # type: ignore[arg-type]
    with pytest.raises(ts.InvalidSetting) as refused:
        ts.ServerConfig(max_connections="5")  # type: ignore[arg-type]
    assert "bytes" not in str(refused.value)


def test_the_same_port_for_tcp_and_http_is_refused_naming_both() -> None:
    # It failed at start as "Address already in use (another server, the demo perhaps ...)",
    # blaming a process that did not exist.
    with pytest.raises(ts.InvalidSetting) as refused:
        ts.ServerConfig(tcp_port=9899, http_port=9899)
    assert refused.value.setting == "tcp_port"
    assert str(refused.value) == "tcp_port and http_port are both 9899: give them different ports"


_PORT_SETTING = st.one_of(st.none(), st.just(0), st.integers(1, 4))


@given(tcp_port=_PORT_SETTING, http_port=_PORT_SETTING)
def test_ports_are_refused_exactly_when_both_listen_on_one(
    tcp_port: int | None, http_port: int | None
) -> None:
    clash = tcp_port == http_port and tcp_port not in (None, 0)
    both_off = tcp_port is None and http_port is None
    try:
        ts.ServerConfig(tcp_port=tcp_port, http_port=http_port)
    except ts.InvalidSetting as refused:
        assert (clash and "different ports" in str(refused)) or (both_off and not clash)
    else:
        assert not (clash or both_off)


def test_an_engine_url_problem_never_shows_its_password() -> None:
    # A '/' in a password ends the host part: the "port" or "path" read was the password's.
    for url in ("redis://:ab/cd@h:6379/0", "redis://:se?cret@h:6379/0", "redis://u/pw@h/0"):
        with pytest.raises(ts.InvalidSetting) as refused:
            ts.ServerConfig(engine=url)
        message = str(refused.value)
        assert "password (or user) holds a '/', '?' or '#'" in message
        assert not {"ab", "cd", "cret", "pw"} & set(message.replace("'", " ").split())
    with pytest.raises(ts.InvalidSetting) as refused:
        ts.ServerConfig(engine="redis://:s3cret@h:abc/0")
    assert "s3cret" not in str(refused.value) and "port" in str(refused.value)


_DATABASE_PATHS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.text(st.sampled_from("0123456789/-+ x%.;@١"), max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(
    path=_DATABASE_PATHS,
    port=st.one_of(st.none(), st.integers(-5, 70_000).map(str), st.sampled_from(["", "x"])),
)
def test_an_engine_url_taken_is_read_by_coredis_as_the_database_it_says(
    path: str, port: str | None
) -> None:
    # What the server will do with it: coredis's own reading, at start, of the URL taken.
    coredis = pytest.importorskip("coredis")
    url = "redis://127.0.0.1" + ("" if port is None else f":{port}") + "/" + path
    try:
        ts.ServerConfig(engine=url)
    except ts.InvalidSetting as refused:  # and never another error
        assert refused.setting == "engine"
        database_ok = path == "" or (path.isascii() and path.isdigit())
        port_ok = port in (None, "") or (port.isdigit() and 1 <= int(port) <= 65535)
        assert not (database_ok and port_ok), url
        return
    pool = coredis.ConnectionPool.from_url(url)
    assert pool.connection_kwargs.get("db", 0) == int(path.strip("/") or 0)
    assert pool.location.port == int(port or 6379)


_A_CA_PEM = str(Path(tempfile.mkdtemp(prefix="ts-ca-")) / "ca.pem")
trustme.CA().cert_pem.write_to_path(_A_CA_PEM)
_QUERY_KEYS = st.sampled_from(
    [
        *("db", "connect_timeout", "client_name", "stream_timeout", "max_connections"),
        *("timeout", "max_idle_time", "noreply", "ssl_cert_reqs", "ssl_check_hostname"),
        "ssl_ca_certs",
    ]
)
_QUERY_VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "2.5", "nan", "inf", "yes", "required", "abc"]),
    st.sampled_from([_A_CA_PEM, __file__, "/nonexistent/ca.pem"]),  # PEM, not PEM, none
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["redis", "rediss"]),
    query=st.lists(st.tuples(_QUERY_KEYS, _QUERY_VALUES), max_size=3),
)
def test_an_engine_url_query_taken_is_one_coredis_reads(
    scheme: str, query: list[tuple[str, str]]
) -> None:
    # Taken means coredis builds the engine's pool from it as the server starts (no bare
    # ValueError or OSError there), and a refusal names the engine setting.
    coredis = pytest.importorskip("coredis")
    url = f"{scheme}://127.0.0.1:6379/0?" + urllib.parse.urlencode(query)
    try:
        ts.ServerConfig(engine=url)
    except ts.InvalidSetting as refused:
        assert refused.setting == "engine" and "engine" in str(refused)
        return
    try:
        pool = coredis.ConnectionPool.from_url(url)
    except ssl.SSLError:  # a file that is there but not PEM: the start says it (test_engines)
        assert scheme == "rediss" and ("ssl_ca_certs", __file__) in query
        return
    given_timeout = dict(query).get("connect_timeout")
    if given_timeout is not None:
        assert pool.connection_kwargs["connect_timeout"] == float(given_timeout) > 0


_HOSTS = st.one_of(
    # A name whose last label is a number is an IPv4 address to a browser (127.1).
    st.from_regex(r"([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.){0,3}[a-z][a-z0-9-]{0,8}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
)


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=_HOSTS,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    spelling=st.sampled_from([str, str.upper, lambda origin: origin + "/"]),
)
def test_an_origin_as_a_browser_sends_it_is_taken_and_lets_its_page_in(
    scheme: str, host: str, port: int | None, spelling: Any
) -> None:
    # A browser leaves the scheme's default port out of its Origin header.
    default = {"http": 80, "https": 443}[scheme]
    sent = f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")
    config = ts.ServerConfig(allowed_origins=spelling(sent))
    assert origin_allowed(sent, None, config.allowed_origins, secure=False)


def _as_a_browser_sends_it(entry: str) -> str:
    """The Origin a browser would send for the page an entry names (its own reading)."""
    if entry.lower() == "null":
        return "null"
    parts = urllib.parse.urlsplit(entry.rstrip("/"))
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(max_size=30),
        st.text(st.sampled_from("htps:/[]@?#.:0189abAB -*"), max_size=30),
        st.builds(
            "{}://{}{}".format,
            st.sampled_from(["http", "https", "ws", "HTTP"]),
            _HOSTS,
            st.text(st.sampled_from(":/?#@0189"), max_size=6),
        ),
    )
)
def test_an_origin_taken_is_one_some_page_sends(entry: str) -> None:
    # What is taken can match (origin_allowed compares strings); all else is refused by name.
    try:
        config = ts.ServerConfig(allowed_origins=entry)
    except ts.InvalidSetting as refused:
        assert refused.setting == "allowed_origins"
        assert "e.g. http://" in str(refused) or "give http" in str(refused)
        return
    sent = _as_a_browser_sends_it(entry)
    assert sent == entry.rstrip("/").lower(), entry
    assert origin_allowed(sent, None, config.allowed_origins, secure=False)


@pytest.mark.parametrize(
    "entry",
    [
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
        "moz-extension://0a1b-2c3d",
        "tauri://localhost",
        "capacitor://localhost",
        "app://lab-console",
        "vscode-webview://0a1b2c",
        "null",
    ],
)
def test_an_origin_of_another_scheme_or_null_is_taken(entry: str) -> None:
    # Pages too: an extension's, a webview app's; null (file:// pages) as before, which the
    # refused upgrade's log line advises against. Only http(s) was taken (a review).
    config = ts.ServerConfig(allowed_origins=entry)
    assert origin_allowed(entry, None, config.allowed_origins, secure=False)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("ws://intranet.example:8000", "is a server's URL, not a page's origin"),
        (
            "http://127.1:8000",
            "a browser writes that address 127.0.0.1; give http://127.0.0.1:8000",
        ),
        ("http://0x7f.1", "a browser writes that address 127.0.0.1; give http://127.0.0.1"),
    ],
)
def test_an_origin_refused_says_what_to_give(entry: str, says: str) -> None:
    with pytest.raises(ts.InvalidSetting, match="allowed_origins") as refused:
        ts.ServerConfig(allowed_origins=entry)
    assert says in str(refused.value)
