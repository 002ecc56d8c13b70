"""ServerConfig refuses, when it is made, a setting the server cannot run with."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import pickle
import sys
from typing import Any

import pytest

import trio_stream as ts


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
    one: dict[str, Any] = {setting: "lab.example"}
    assert getattr(ts.ServerConfig(**one), setting) == ("lab.example",)
    several: dict[str, Any] = {setting: ["a.example", "b.example"]}
    config = ts.ServerConfig(**several)
    assert getattr(config, setting) == ("a.example", "b.example")
    hash(config)  # frozen and hashable, as with a tuple
    as_set: dict[str, Any] = {setting: frozenset({"a.example"})}
    assert getattr(ts.ServerConfig(**as_set), setting) == ("a.example",)


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
