"""The public names of trio_stream: a contract (shared/DESIGN.md section 1)."""

from __future__ import annotations

import trio_stream as ts

EXPORTS = {
    "AuthError",
    "ResourceClosed",
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
    "FrameTooLarge",
    "InvalidArgument",
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
    "SyncClient",
    "TrioStreamError",
    "UnknownMethod",
    "View",
    "__version__",
    "merge",
    "open_client",
    "open_server",
    "serve",
}


def test_the_package_exports_exactly_the_public_names() -> None:
    public = {name for name in vars(ts) if not name.startswith("_") or name == "__version__"}
    modules = {name for name in public if type(getattr(ts, name)).__name__ == "module"}
    assert public - modules == EXPORTS


def test_public_classes_say_they_are_trio_streams_own() -> None:
    for name in EXPORTS - {"__version__", "merge", "open_client", "open_server", "serve"}:
        assert getattr(ts, name).__module__.startswith("trio_stream."), name
