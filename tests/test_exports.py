"""The public names of trio_stream: a contract (shared/DESIGN.md section 1)."""

from __future__ import annotations

import pickle

import trio_stream as ts

EXPORTS = {
    "AuthError",
    "ResourceClosed",
    "SubscriptionEnded",
    "Reconnect",
    "Position",
    "Gap",
    "ChannelExists",
    "ChannelInfo",
    "ChannelNotFound",
    "Client",
    "ClientInfo",
    "ConnectionClosed",
    "FileEvent",
    "FileService",
    "Limits",
    "RemoteMethod",
    "RpcProxy",
    "SyncPublisher",
    "SyncRemoteMethod",
    "SyncRemoteStream",
    "SyncRpcProxy",
    "SyncSubscription",
    "FrameTooLarge",
    "InvalidArgument",
    "InvalidSetting",
    "LimitExceeded",
    "Merge",
    "Message",
    "NameInUse",
    "ClusterUnavailable",
    "PayloadLimits",
    "PayloadRefused",
    "ProtocolError",
    "Publisher",
    "RemoteError",
    "RemoteStream",
    "RpcError",
    "RpcTimeout",
    "Server",
    "ServerConfig",
    "ServerStats",
    "Subscription",
    "SubscriptionInfo",
    "SubscriptionStatistics",
    "SyncMerge",
    "PatternStatistics",
    "PatternSubscription",
    "SyncPatternSubscription",
    "SyncClient",
    "TrioStreamError",
    "UnknownMethod",
    "View",
    "__version__",
    "current_caller",
    "merge",
    "open_client",
    "open_server",
    "serve",
}


def test_the_package_exports_exactly_the_public_names() -> None:
    public = {name for name in vars(ts) if not name.startswith("_") or name == "__version__"}
    modules = {name for name in public if type(getattr(ts, name)).__name__ == "module"}
    assert public - modules == EXPORTS
    assert set(ts.__all__) == EXPORTS  # `from trio_stream import *` takes the same


def test_public_classes_say_they_are_trio_streams_own() -> None:
    functions = {"__version__", "current_caller", "merge", "open_client", "open_server", "serve"}
    for name in EXPORTS - functions:
        module = getattr(ts, name).__module__
        if issubclass(getattr(ts, name), BaseException):
            # A traceback's last line names what a script catches: trio_stream.ChannelNotFound
            assert module == "trio_stream", name
        else:
            assert module.startswith("trio_stream."), name


def test_errors_survive_pickling_under_their_public_name() -> None:
    for name in EXPORTS:
        error_class = getattr(ts, name)
        if isinstance(error_class, type) and issubclass(error_class, ts.TrioStreamError):
            args = {
                ts.RemoteError: ("ValueError", "what to do"),
                ts.InvalidSetting: ("tcp_port", "what to do"),
            }.get(error_class, ("what to do",))
            copy = pickle.loads(pickle.dumps(error_class(*args)))
            assert type(copy) is error_class and str(copy) == str(error_class(*args)), name
    sent = ts.RemoteError("OSError", "port busy", "Traceback ...")
    sent.add_note("while calling daq.read")
    remote = pickle.loads(pickle.dumps(sent))
    assert remote.__notes__ == ["while calling daq.read"]  # its __dict__ travels too
    assert (remote.type_name, remote.message, remote.remote_traceback) == (
        "OSError",
        "port busy",
        "Traceback ...",
    )


def test_signatures_show_their_defaults_readably() -> None:
    # help(Subscription.retune) showed max_rate=<_Keep.KEEP: 0>.
    import inspect

    signature = str(inspect.signature(ts.Subscription.retune))
    assert "= <unchanged>" in signature and "KEEP" not in signature, signature


def test_no_public_signature_shows_a_private_keyword() -> None:
    # Client.open_subscription(..., _hint=True): an internal switch in help() and completion.
    import inspect

    shown: list[str] = []
    for name in sorted(EXPORTS - {"__version__"}):
        thing = getattr(ts, name)
        if not inspect.isclass(thing):
            members = [(name, thing)]
        else:
            members = [
                (f"{name}.{attr}", getattr(thing, attr))
                for attr in dir(thing)
                if not attr.startswith("_") or attr == "__init__"
            ]
        for where, member in members:
            try:
                parameters = inspect.signature(member).parameters
            except (TypeError, ValueError):  # not callable, or no signature (a builtin)
                continue
            shown += [f"{where}({p})" for p in parameters if p.startswith("_")]
    assert shown == []
