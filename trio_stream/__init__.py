"""trio_stream: channel-based data streaming on trio.

Writers put values (numpy arrays first among them) into named channels on a server; the
server fans every frame out to each reader through a buffer whose size, overflow policy and
rate the reader chose. See README.md and docs/protocol.md.
"""

from ._client import Client as Client
from ._client import Publisher as Publisher
from ._client import Subscription as Subscription
from ._client import open_client as open_client
from ._config import ServerConfig as ServerConfig
from ._exceptions import AuthError as AuthError
from ._exceptions import ChannelExists as ChannelExists
from ._exceptions import ChannelNotFound as ChannelNotFound
from ._exceptions import ClusterUnavailable as ClusterUnavailable
from ._exceptions import ConnectionClosed as ConnectionClosed
from ._exceptions import FrameTooLarge as FrameTooLarge
from ._exceptions import InvalidArgument as InvalidArgument
from ._exceptions import InvalidSetting as InvalidSetting
from ._exceptions import LimitExceeded as LimitExceeded
from ._exceptions import NameInUse as NameInUse
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import RemoteError as RemoteError
from ._exceptions import ResourceClosed as ResourceClosed
from ._exceptions import RpcError as RpcError
from ._exceptions import RpcTimeout as RpcTimeout
from ._exceptions import TrioStreamError as TrioStreamError
from ._exceptions import UnknownMethod as UnknownMethod
from ._files import FileEvent as FileEvent
from ._files import FileService as FileService
from ._matching import PatternSubscription as PatternSubscription
from ._merge import Merge as Merge
from ._merge import SyncMerge as SyncMerge
from ._merge import merge as merge
from ._protocol.array_view import View as View
from ._protocol.limits import Limits as Limits
from ._protocol.limits import PayloadLimits as PayloadLimits
from ._protocol.limits import PayloadRefused as PayloadRefused
from ._reconnect import Reconnect as Reconnect
from ._records import ChannelInfo as ChannelInfo
from ._records import ClientInfo as ClientInfo
from ._records import Gap as Gap
from ._records import Message as Message
from ._records import Position as Position
from ._records import ServerStats as ServerStats
from ._records import SubscriptionInfo as SubscriptionInfo
from ._rpc import RemoteMethod as RemoteMethod
from ._rpc import RpcProxy as RpcProxy
from ._rpc import current_caller as current_caller
from ._rpc_stream import RemoteStream as RemoteStream
from ._server.serve import Server as Server
from ._server.serve import open_server as open_server
from ._server.serve import serve as serve
from ._stats import PatternStatistics as PatternStatistics
from ._stats import SubscriptionStatistics as SubscriptionStatistics
from ._subscription_end import SubscriptionEnded as SubscriptionEnded
from ._version import __version__ as __version__
from .sync import SyncClient as SyncClient
from .sync import SyncPatternSubscription as SyncPatternSubscription
from .sync import SyncPublisher as SyncPublisher
from .sync import SyncRemoteMethod as SyncRemoteMethod
from .sync import SyncRemoteStream as SyncRemoteStream
from .sync import SyncRpcProxy as SyncRpcProxy
from .sync import SyncSubscription as SyncSubscription

# What `from trio_stream import *` takes: the names above (tests/test_exports.py pins them).
__all__ = [
    "AuthError",
    "ChannelExists",
    "ChannelInfo",
    "ChannelNotFound",
    "Client",
    "ClientInfo",
    "ClusterUnavailable",
    "ConnectionClosed",
    "FileEvent",
    "FileService",
    "FrameTooLarge",
    "Gap",
    "InvalidArgument",
    "InvalidSetting",
    "LimitExceeded",
    "Limits",
    "Merge",
    "Message",
    "NameInUse",
    "PatternStatistics",
    "PatternSubscription",
    "PayloadLimits",
    "PayloadRefused",
    "Position",
    "ProtocolError",
    "Publisher",
    "Reconnect",
    "RemoteError",
    "RemoteMethod",
    "RemoteStream",
    "ResourceClosed",
    "RpcError",
    "RpcProxy",
    "RpcTimeout",
    "Server",
    "ServerConfig",
    "ServerStats",
    "Subscription",
    "SubscriptionEnded",
    "SubscriptionInfo",
    "SubscriptionStatistics",
    "SyncClient",
    "SyncMerge",
    "SyncPatternSubscription",
    "SyncPublisher",
    "SyncRemoteMethod",
    "SyncRemoteStream",
    "SyncRpcProxy",
    "SyncSubscription",
    "TrioStreamError",
    "UnknownMethod",
    "View",
    "__version__",
    "current_caller",
    "merge",
    "open_client",
    "open_server",
    "serve",
]
