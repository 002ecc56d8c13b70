"""The error hierarchy: one root, and one class per thing a caller may want to catch."""

from __future__ import annotations

from typing import Any


class TrioStreamError(Exception):
    """Root of every error trio_stream raises on purpose."""


class ProtocolError(TrioStreamError):
    """The peer sent bytes that break docs/protocol.md; the connection is closed."""


class ConnectionClosed(TrioStreamError):
    """The connection is gone (closed by us, by the peer, or broken).

    ``reason`` is the peer's stated reason when it gave one.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class AuthError(TrioStreamError):
    """A token or channel key was missing or wrong."""


class ChannelNotFound(TrioStreamError):
    """No channel of that name exists (or it is private and the key did not match)."""


class ChannelExists(TrioStreamError):
    """A channel of that name exists already."""


class FrameTooLarge(TrioStreamError):
    """A frame exceeds the maximum frame size agreed at the handshake."""


class LimitExceeded(TrioStreamError):
    """A server limit (channels, subscriptions, buffered bytes, ...) was reached."""


class InvalidArgument(TrioStreamError, ValueError):
    """An argument the server refused (bad channel name, unknown policy, ...)."""


class InvalidSetting(InvalidArgument):
    """A ``ServerConfig`` field the server cannot run with; ``setting`` names the field (the
    CLI names its flag from it)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(setting, message)  # both in args: a pickled copy is made from them
        self.setting = setting

    def __str__(self) -> str:
        return str(self.args[1])


class NameInUse(TrioStreamError):
    """Another connected client already uses that name."""


class ClusterUnavailable(TrioStreamError):
    """A server of several nodes could not reach its Redis for this request (down, refusing,
    or no answer in time): nothing else is lost, the connection stays; try again."""


class RpcError(TrioStreamError):
    """An RPC call could not be made: unknown provider or method, or the provider left."""


class RemoteError(RpcError):
    """The remote method raised; its type, message and traceback travel with this error."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(
        self,
    ) -> tuple[type[RemoteError], tuple[str, str, str], dict[str, Any]]:
        # Pickled (a process pool hands exceptions on so) with what __init__ takes: the
        # default would call it with the one formatted message and fail to unpickle. Its
        # __dict__ goes too (notes, attributes added later).
        return type(self), (self.type_name, self.message, self.remote_traceback), self.__dict__


class UnknownMethod(RpcError, AttributeError):
    """A proxy was asked for a method its provider does not expose (``proxy.nope``): an
    RpcError, as the README says, and an AttributeError, as ``getattr`` and ``hasattr``
    expect of a missing attribute."""


class RpcTimeout(RpcError, TimeoutError):
    """No answer to an RPC call within its timeout (also a built-in ``TimeoutError``).

    ``sent`` says whether the call reached the server: False when the client was
    reconnecting for the whole timeout (the provider never saw it, so calling again is
    safe); True when the provider was slow or stuck (it may have run the call)."""

    sent: bool = True


class ResourceClosed(TrioStreamError):
    """This publisher was closed by its user and cannot send (a closed subscription ends
    instead, ``trio.EndOfChannel``; a closed client raises ``ConnectionClosed``)."""


#: Error classes the server may name in a CONTROL ``error`` message, by wire name.
ERRORS_BY_NAME: dict[str, type[TrioStreamError]] = {
    cls.__name__: cls
    for cls in (
        TrioStreamError,
        ProtocolError,
        AuthError,
        ChannelNotFound,
        ChannelExists,
        FrameTooLarge,
        LimitExceeded,
        InvalidArgument,
        NameInUse,
        ClusterUnavailable,
        RpcError,
        RpcTimeout,
    )
}


def error_from_wire(type_name: str, message: str) -> TrioStreamError:
    """Rebuild the error the server reported; unknown names become the root class."""
    cls = ERRORS_BY_NAME.get(type_name, TrioStreamError)
    return cls(message)


def _named_as_exported() -> None:
    """Have a traceback's last line name what a script catches, ``trio_stream.ChannelNotFound``,
    not ``trio_stream._exceptions.ChannelNotFound`` (trio does the same for its own). Every
    class here is exported under its name (tests/test_exports.py), so pickling finds it
    there. (The cost: ``inspect.getsource`` looks for them in ``trio_stream/__init__.py``.)"""
    for cls in list(globals().values()):
        if (
            isinstance(cls, type)
            and issubclass(cls, TrioStreamError)
            and cls.__module__ == __name__
        ):
            cls.__module__ = "trio_stream"


_named_as_exported()
