"""Operator actions guarded by the server's admin token: the `admin` op.

An operator at the dashboard may publish a test value to any channel, delete any channel and
disconnect any client. These go past the owner and key checks the ordinary ops make, so they
need a second secret, ``ServerConfig(admin_token=...)``, sent with each request (never kept
by the session: a page that forgets it loses its rights at once). A server without an admin
token refuses every admin action. Every action that passes the check is logged at WARNING with
the client that asked, so an operator's hand on a running system leaves a trace.

The ``check`` action only verifies the token: the page asks it before it shows its forms.

The ``call`` action calls an exposed RPC method on the admin's behalf. It is an ordinary call
(the provider sees the admin's name as the caller and answers as it would any call), routed by
the same :class:`~.rpc.Router` with the admin request's id, so the reply, a remote error or a
cancel on timeout travel exactly as for ``call``; what the admin op adds is the token check and
the line in the log. Its reply therefore comes later, from the provider: the handler returns
``ANSWERED_LATER`` and the session sends no reply of its own.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import AuthError, InvalidArgument
from .._protocol.brief import brief
from .._protocol.codec import encode_payload
from .._protocol.messages import Admin
from .._protocol.rpc_messages import Call
from .wrong_tokens import host_of

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

#: A handler's result meaning "no reply now: another party answers this request's id later"
#: (the admin ``call``, answered by the provider through the RPC router). Session checks it.
ANSWERED_LATER: Final = object()

ACTIONS = ("check", "publish", "delete_channel", "disconnect", "call")


def _check_token(session: Session, token: str | None) -> None:
    expected = session.state.config.admin_token
    if expected is None:
        raise AuthError(
            "this server allows no admin actions: start it with --admin-token "
            "(or ServerConfig(admin_token=...)) to allow them"
        )
    if token is None:
        raise AuthError("the admin op needs the admin token: send it as 'token'")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        session.state.wrong_tokens.failed(host_of(session.transport.remote), "admin token")
        raise AuthError("wrong admin token: give the token the server was started with")


def handle(session: Session, msg: Admin) -> Any:
    """Run one admin action for ``session``; its result is the reply."""
    if msg.action not in ACTIONS:
        raise InvalidArgument(
            f"unknown admin action {msg.action[:40]!r}; one of {', '.join(ACTIONS)}"
        )
    _check_token(session, msg.token)
    who = f"{session.name} (client {session.client_id}, {session.transport.remote})"
    if msg.action == "check":
        return {"admin": True}
    if msg.action == "disconnect":
        return _disconnect(session, msg, who)
    if msg.action == "call":
        return _call(session, msg, who)
    if msg.channel is None:
        raise InvalidArgument(f"admin {msg.action} needs channel=...")
    broker = session.state.broker
    channel = broker.channels.get(msg.channel)
    if channel is None or channel.name.startswith("$"):
        raise InvalidArgument(f"no user channel named {msg.channel[:80]!r}")
    if msg.action == "publish":
        try:
            payload = b"".join(encode_payload(msg.value, copy=False))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"cannot publish this value: {exc}") from None
        broker.publish_system(channel, payload, session.name.encode())
        # A publish like a writer's: in the server's totals too, so that the channels'
        # counts add up to them (the $ channels' own frames are not in either).
        broker.frames_in += 1
        broker.bytes_in += len(payload)
        log.warning("admin: %s published %d bytes to %r", who, len(payload), channel.name)
        return {"seq": channel.seq, "readers": channel.readers}
    reason = f"channel {channel.name!r} was deleted by admin {session.name}"
    broker.delete_channel(channel, reason)
    session.state.tell_owner_deleted(channel, session, reason)
    log.warning("admin: %s deleted channel %r", who, channel.name)
    return None


def _disconnect(session: Session, msg: Admin, who: str) -> dict[str, Any]:
    if msg.client is None:
        raise InvalidArgument("admin disconnect needs client=<id> (see clients())")
    target = session.state.sessions.get(msg.client)
    if target is None:
        raise InvalidArgument(f"no client with id {msg.client}; list them with clients()")
    if target is session:
        raise InvalidArgument("this is your own connection: close it instead")
    # Kicked out for good: no resume grace (its channels end now) and a goodbye that tells
    # a reconnecting client not to come back.
    session.state.resume.release(target)
    target.close(f"disconnected by admin {session.name}", reconnect=False)
    log.warning("admin: %s disconnected %s (client %d)", who, target.name, target.client_id)
    return {"client": target.client_id, "name": target.name}


def _call(session: Session, msg: Admin, who: str) -> object:
    call = msg.value
    if not (
        isinstance(call, dict)
        and isinstance(call.get("provider"), str)
        and isinstance(call.get("method"), str)
        and isinstance(call.get("args", []), list)
        and isinstance(call.get("kwargs", {}), dict)
    ):
        raise InvalidArgument(
            "admin call needs value={provider: name, method: name, args: [...], kwargs: {...}}"
        )
    provider: str = call["provider"]
    method: str = call["method"]
    try:
        args = b"".join(encode_payload([call.get("args", []), call.get("kwargs", {})], copy=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"cannot send these arguments: {exc}") from None
    # Logged before it runs: the provider may act on it even if the answer never comes.
    log.warning(
        "admin: %s called %s.%s (%d bytes of arguments)",
        who,
        brief(provider),
        brief(method),
        len(args),
    )
    session.state.rpc.call(session, Call(id=msg.id, provider=provider, method=method, args=args))
    return ANSWERED_LATER
