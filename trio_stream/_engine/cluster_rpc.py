"""RPC across nodes: a call to a provider connected to another node, over the control bus.

The caller's node looks up which node holds the provider's name (Redis) and sends the call
there; that node runs it through its own router with a stand-in for the caller
(:class:`RemoteCaller`), whose answers travel back, already encoded, to the caller's node.
The caller's node keeps each call in flight with the provider's node: if that node leaves the
cluster (its heartbeat expires, a few seconds) the call fails with RpcError, as when a
provider on the same node disconnects. Answers arriving after that are dropped.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from .._exceptions import RpcError
from .._protocol.brief import brief
from .._protocol.messages import Error, Message
from .._protocol.rpc_messages import Call, Cancel, Describe
from .._server.outbox import control_frame
from .redis_control import ControlBus
from .redis_streams import REDIS_DOWN

if TYPE_CHECKING:
    from .._server.rpc import Endpoint
    from .redis_engine import RedisEngine

log = logging.getLogger(__name__)

RPC: Final = "rpc"
RPC_ANSWER: Final = "rpc_answer"
RPC_CANCEL: Final = "rpc_cancel"
WATCH_INTERVAL_S: Final = 0.5


@dataclass(eq=False)
class _Outgoing:
    caller: Endpoint
    ident: int  # the caller's request id
    provider: str
    node: str | None = None  # known once looked up


class RemoteCaller:
    """A caller on another node, as this node's router sees it."""

    def __init__(self, rpc: ClusterRpc, node: str, token: int, name: str) -> None:
        self._rpc = rpc
        self._node = node
        self._token = token
        self.name = name
        self.methods: list[str] = []

    def send_control(self, message: Message) -> None:
        self.send_control_frame(control_frame(message))

    def send_control_frame(self, frame: bytes) -> None:
        self._rpc.answer(self._node, self._token, frame)


class ClusterRpc:
    def __init__(self, engine: RedisEngine) -> None:
        self._engine = engine
        self._tokens = itertools.count(1)
        self._outgoing: dict[int, _Outgoing] = {}
        # provider's node: (caller's node, token) -> the stand-in caller and its request id
        self._incoming: dict[tuple[str, int], tuple[RemoteCaller, int]] = {}

    def install(self, bus: ControlBus) -> None:
        bus.on(RPC, self._on_call)
        bus.on(RPC_ANSWER, self._on_answer)
        bus.on(RPC_CANCEL, self._on_cancel)

    # -- caller's node -----------------------------------------------------------------------
    def route(self, caller: Endpoint, message: Message) -> bool:
        if isinstance(caller, RemoteCaller):
            return False  # a call from another node whose provider left here meanwhile
        if isinstance(message, Cancel):
            return self._cancel(caller, message.id)
        if not isinstance(message, Call | Describe):
            return False
        token = next(self._tokens)
        out = _Outgoing(caller, message.id, message.provider)
        self._outgoing[token] = out
        body: dict[str, Any] = {
            "t": token,
            "id": message.id,
            "caller": caller.name,
            "provider": message.provider,
        }
        if isinstance(message, Call):
            body |= {"method": message.method, "args": message.args}
        self._engine.later(lambda: self._send(token, out, body))
        return True

    async def _send(self, token: int, out: _Outgoing, body: dict[str, Any]) -> None:
        io = self._engine.io
        node = await io.presence.name_node(out.provider)
        if node is None or node == io.node:
            # Not connected anywhere (or gone from here meanwhile): as on one node.
            self._fail(token, f"no client named {brief(out.provider)} is connected")
            return
        out.node = node
        if not await io.bus.publish(RPC, body, to=node):
            self._fail(token, f"{out.provider[:100]!r} is on node {node!r}, which is not listening")

    def _cancel(self, caller: Endpoint, ident: int) -> bool:
        found = [t for t, o in self._outgoing.items() if o.caller is caller and o.ident == ident]
        if not found:
            return False  # answered already: the answer crossed the cancel
        token = found[0]
        out = self._outgoing.pop(token)  # whatever still comes back is dropped

        async def send() -> None:  # after the call's own job: out.node is known by then
            if out.node is not None:
                await self._engine.io.bus.publish(RPC_CANCEL, token, to=out.node)

        self._engine.later(send)
        return True

    def _fail(self, token: int, text: str) -> None:
        out = self._outgoing.pop(token, None)
        if out is not None:
            error = RpcError(text)
            out.caller.send_control(
                Error(id=out.ident, type=type(error).__name__, message=str(error))
            )

    def _on_answer(self, node: str, body: Any) -> None:
        token, frame = body
        out = self._outgoing.pop(int(token), None)
        if out is not None and isinstance(frame, bytes):
            out.caller.send_control_frame(frame)

    async def watch(self) -> None:
        """Fail calls whose provider's node left the cluster (or whose caller left)."""
        state = self._engine.state
        while True:
            await trio.sleep(WATCH_INTERVAL_S)
            if not self._outgoing:
                continue
            try:
                live = await self._engine.io.presence.live()
            except REDIS_DOWN:
                continue
            for token, out in list(self._outgoing.items()):
                if out.caller not in state.sessions.values():
                    self._outgoing.pop(token, None)
                elif out.node is not None and out.node not in live:
                    self._fail(
                        token,
                        f"{out.provider[:100]!r} was on node {out.node!r}, which left the "
                        "cluster before answering",
                    )

    # -- provider's node ---------------------------------------------------------------------
    def _on_call(self, node: str, body: Any) -> None:
        token = int(body["t"])
        caller = RemoteCaller(self, node, token, str(body["caller"]))
        router = self._engine.state.rpc
        ident = int(body["id"])
        self._incoming[(node, token)] = (caller, ident)
        if "method" in body:
            call = Call(
                id=ident, provider=body["provider"], method=body["method"], args=body["args"]
            )
            router.call(caller, call)
        else:
            router.describe(caller, Describe(id=ident, provider=body["provider"]))
        self._settle(node, token)

    def _on_cancel(self, node: str, body: Any) -> None:
        entry = self._incoming.pop((node, int(body)), None)
        if entry is not None:
            caller, ident = entry
            self._engine.state.rpc.cancel(caller, Cancel(id=ident))

    def _settle(self, node: str, token: int) -> None:
        """Forget a call from another node once this node's router is done with it."""
        entry = self._incoming.get((node, token))
        if entry is not None and not self._engine.state.rpc.pending(entry[0]):
            del self._incoming[(node, token)]

    def answer(self, node: str, token: int, frame: bytes) -> None:
        self._settle(node, token)

        async def send() -> None:
            await self._engine.io.bus.publish(RPC_ANSWER, [token, frame], to=node)

        self._engine.later(send)
