"""RPC across nodes: a call to a provider connected to another node, over the control bus.

The caller's node looks up which node holds the provider's name (Redis) and sends the call
there; that node runs it through its own router with a stand-in for the caller
(:class:`RemoteCaller`), whose answers travel back, already encoded, to the caller's node.
The caller's node keeps each call in flight with the provider's node: if that node leaves the
cluster (its heartbeat expires, a few seconds) the call fails with RpcError, as when a
provider on the same node disconnects. Answers arriving after that are dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from .._exceptions import ClusterUnavailable, ProtocolError, RpcError, TrioStreamError
from .._protocol.messages import ControlMessage, Error
from .._protocol.rpc_messages import Call, Cancel, Credit, Describe
from .._server.outbox import control_frame
from .._server.rpc import answer_dropped, check_credit, over_bound, stream_value_dropped
from .cluster_mail import Inbox, Letter, Mailer, Replaced
from .redis_control import ControlBus
from .redis_streams import REDIS_ERRORS

if TYPE_CHECKING:
    from .._server.rpc import Endpoint
    from .redis_engine import RedisEngine

log = logging.getLogger(__name__)

RPC: Final = "rpc"
RPC_ANSWER: Final = "rpc_answer"
RPC_CANCEL: Final = "rpc_cancel"
RPC_CREDIT: Final = "rpc_credit"
RPC_ACK: Final = "rpc_ack"  # what a node took of the messages above from another (cluster_mail)
WATCH_INTERVAL_S: Final = 0.5
#: A node's run (process id) read from Redis this recently is taken as it is for a call.
RUN_FRESH_S: Final = 1.0
# A provider's name missing from Redis just after a Redis restart (the nodes write their
# names back with their next heartbeats): looked up again this often, for at most a heartbeat
# TTL, while the presence says names are settling (Presence.names_settling).
NAME_RETRY_S: Final = 0.1
# A node missing from the live set counts as gone only after this long: a Redis restart
# empties the set until every node's next heartbeat (a third of the TTL), and calls to
# providers on nodes that never left failed with "left the cluster".
NODE_ABSENT_S: Final = 2.0
#: A cancel Redis refuses (OOM, NOPERM) is posted again each watch round for this long: dropped,
#: it left the provider's method running (a stream out of credit waited for good).
CANCEL_RETRY_S: Final = 60.0
#: Answers to one node in one control message: items of a stream come in bursts of up to a
#: window; a bounded count keeps one message (and the memory Redis holds for it) bounded.
MAX_ANSWERS_PER_MESSAGE: Final = 32
#: ... and bounded bytes: a batch takes no more answers once theirs pass this, so one message
#: carries at most one large answer (up to max_frame_bytes, which the bus stores under a key
#: of its own). Half the bus's redis_control.MAX_INLINE_BYTES: a batch of answers each under
#: this still goes inline.
MAX_ANSWER_BYTES_PER_MESSAGE: Final = 256 * 1024
_SMALL_CALL_BYTES: Final = 256  # what a call counts toward cluster_mail's bounds, beyond its args


@dataclass(eq=False)
class _Outgoing:
    caller: Endpoint
    ident: int  # the caller's request id
    provider: str
    node: str | None = None  # known once looked up
    run: str | None = None  # that node's run (process) then: another one means it restarted
    stream: bool = False  # a streaming call: items until the final answer
    credit: int = 0  # streaming: values the provider may still send, as seen here
    letter: Letter | None = None  # the call as posted (cluster_mail), once it is
    describe: bool = False  # a describe, not a call: nothing of the provider's runs

    def unanswered(self) -> str:
        """What its provider's node left (or restarted) before: as a provider that
        disconnects mid-call says it (_server/rpc.py, session_closed), for a call may have
        run (a motor moved) and its caller must check before sending it again."""
        if self.describe:
            return "answering the describe"
        if self.letter is not None and not self.letter.sent:
            return "answering the call (it did not run)"  # held: it never reached the node
        if self.stream:
            return "the end of the stream"
        return "answering the call (it may have run: check before calling again)"


class RemoteCaller:
    """A caller on another node, as this node's router sees it."""

    def __init__(
        self, rpc: ClusterRpc, node: str, token: int, name: str, run: str | None = None
    ) -> None:
        self._rpc = rpc
        self._node = node
        self._token = token
        self.name = name
        self.run = run  # the caller's node's run (process) that made the call
        self.methods: list[str] = []

    def send_control(self, message: ControlMessage) -> None:
        self.send_control_frame(control_frame(message))

    def send_control_frame(self, frame: bytes) -> None:
        self._rpc.answer(self._node, self._token, frame)


class ClusterRpc:
    def __init__(self, engine: RedisEngine) -> None:
        self._engine = engine
        # Not from 1: a node restarted at once under its name would reuse its last run's
        # tokens, and answers to that run's calls (held, or late) matched new calls.
        self._tokens = itertools.count(secrets.randbits(40) << 16)
        self._run_id = ""  # this node's run (process), from install()
        self._known_runs: dict[str, str] = {}  # other nodes' runs, as last read from Redis
        self._runs_read_at: dict[str, float] = {}  # ... and when
        self._outgoing: dict[int, _Outgoing] = {}
        # caller's node: (caller, request id) -> token, for its cancel and credit messages
        self._tokens_of: dict[tuple[Endpoint, int], int] = {}
        # caller's node: calls waiting for their provider's name after a Redis restart, by
        # provider, in the order they were made (see _send)
        self._name_waits: dict[str, deque[tuple[int, _Outgoing, dict[str, Any]]]] = {}
        # provider's node: (caller's node, token) -> the stand-in caller and its request id
        self._incoming: dict[tuple[str, int], tuple[RemoteCaller, int]] = {}
        # provider's node: answers not sent yet, by caller's node (sent in order, in batches)
        self._answers: dict[str, list[list[Any]]] = {}
        # Every message between nodes goes through these (calls, answers, credits, cancels):
        # in order and once, held while the other node does not listen (cluster_mail.py).
        self._mail: Mailer | None = None
        self._inbox = Inbox()
        # caller's node: cancels Redis refused, by (provider's node, token): when first refused
        self._refused_cancels: dict[tuple[str, int], float] = {}
        self._retrying = False  # a retry of held messages is queued in the job task
        self._recancelling = False  # a post of refused cancels is queued in the job task
        self._acking = False  # a send of acknowledgements is queued in the job task

    def install(self, bus: ControlBus, run_id: str) -> None:
        self._run_id = run_id
        self._mail = Mailer(bus, epoch=run_id)
        self._mail.on_dropped = self._dropped
        bus.on(RPC, self._on_call)
        bus.on(RPC_ANSWER, self._on_answer)
        bus.on(RPC_CANCEL, self._on_cancel)
        bus.on(RPC_CREDIT, self._on_credit)
        bus.on(RPC_ACK, self._on_ack)

    # -- caller's node -----------------------------------------------------------------------
    def route(self, caller: Endpoint, message: ControlMessage) -> bool:
        if isinstance(caller, RemoteCaller):
            return False  # a call from another node whose provider left here meanwhile
        if isinstance(message, Cancel):
            return self._cancel(caller, message.id)
        if isinstance(message, Credit):
            return self._credit(caller, message)
        if not isinstance(message, Call | Describe):
            return False
        token = next(self._tokens)
        out = _Outgoing(caller, message.id, message.provider, describe=type(message) is Describe)
        if isinstance(message, Call) and message.window is not None:
            out.stream = True
            out.credit = message.window
        self._outgoing[token] = out
        self._tokens_of[(caller, message.id)] = token
        body: dict[str, Any] = {
            "t": token,
            "id": message.id,
            "caller": caller.name,
            "provider": message.provider,
            "r": self._run_id,
        }
        if isinstance(message, Call):
            body |= {"method": message.method, "args": message.args}
            if message.window is not None:
                body["window"] = message.window
        self._engine.later(lambda: self._send(token, out, body))
        return True

    async def _send(self, token: int, out: _Outgoing, body: dict[str, Any]) -> None:
        waiting = self._name_waits.get(out.provider)
        if waiting is not None:
            # Calls before it wait for this provider's name: it goes after them, in order
            # (a provider's calls run in the order they were made: a motor's moves).
            waiting.append((token, out, body))
            return
        try:
            node = await self._engine.io.presence.name_node(out.provider)
            # A name missing just after a Redis restart may be one its node writes back with
            # its next heartbeat, the provider connected all along (calls failed "no client
            # named ..." for half a second after each restart): the call waits for it, after
            # those waiting already (_look_up_later); else it fails at once, as on one node.
            if node is None and await self._engine.io.presence.names_settling():
                self._name_waits[out.provider] = deque([(token, out, body)])
                give_up_at = trio.current_time() + self._engine.io.presence.ttl_s
                self._look_up_later(out.provider, give_up_at)
                return
        except REDIS_ERRORS as error:
            # Said at once (a call without a timeout waited for good); nothing was sent.
            self._fail(token, _not_sent("the call", error), ClusterUnavailable, "unavailable")
            return
        await self._send_to(token, out, body, node)

    def _look_up_later(self, provider: str, give_up_at: float) -> None:
        """Look ``provider``'s name up again shortly, for the calls that wait for it. Each try
        is a job of its own: the job task is not held up meanwhile."""

        async def again() -> None:
            waiting = self._name_waits[provider]
            try:
                node = await self._engine.io.presence.name_node(provider)
                if (
                    node is None
                    and trio.current_time() < give_up_at
                    and await self._engine.io.presence.names_settling()
                ):
                    self._look_up_later(provider, give_up_at)
                    return
            except REDIS_ERRORS as error:
                del self._name_waits[provider]
                for token, _, _ in waiting:
                    reason = _not_sent("the call", error)
                    self._fail(token, reason, ClusterUnavailable, "unavailable")
                return
            del self._name_waits[provider]
            for token, out, body in waiting:
                await self._send_to(token, out, body, node)

        self._engine.later_after(NAME_RETRY_S, again)

    async def _send_to(
        self, token: int, out: _Outgoing, body: dict[str, Any], node: str | None
    ) -> None:
        """Send a call to the node that holds its provider's name (None: none does)."""
        io = self._engine.io
        if self._outgoing.get(token) is not out:
            # Given up (cancelled, timed out, its caller gone) while the lookups waited (for
            # a Redis that hung, for a name after a Redis restart): never sent. Sent when
            # Redis woke up, its cancel behind it, a quick method ran 0.2-3.4 s after its
            # caller's RpcTimeout (a migrating user).
            return
        if node is None or node == io.node:
            # Not connected anywhere (or gone from here meanwhile): as on one node, also
            # for a provider reconnecting to this node (the caller's client asks again).
            router = self._engine.state.rpc
            self._fail(token, router.not_connected(out.provider), why="no_provider")
            return
        # The run last read there, if it is fresh: a Redis trip per call cost a quarter of
        # the calls/s with 16 in flight. One read long ago (the watch reads only while calls
        # are in flight) missed a restart, and the call was stamped for the node's previous
        # run (see _on_call).
        now = trio.current_time()
        if now - self._runs_read_at.get(node, -math.inf) > RUN_FRESH_S:
            try:
                self._runs_read(await io.presence.runs_of([node]), now)
            except REDIS_ERRORS as error:
                self._fail(token, _not_sent("the call", error), ClusterUnavailable, "unavailable")
                return
            if self._outgoing.get(token) is not out:
                return  # given up while the read waited (see above)
        out.node = node
        out.run = self._known_runs.get(node)
        if out.run is not None:
            # Held while that node was away (or sent again for want of its acknowledgement),
            # the call must not run on the node's next process: that one answers that it
            # did not run (see _on_call).
            body["to_run"] = out.run
        # Numbered, kept until acknowledged and held while the node does not listen, as
        # every other message to it (cluster_mail): a call lost on a link that hung is sent
        # again, and its cancel and credit can never pass it.
        size = _SMALL_CALL_BYTES + len(body.get("args", b""))
        out.letter = await self._mailer.post(RPC, body, node, size=size)

    def _runs_read(self, runs: dict[str, str], now: float) -> None:
        self._known_runs.update(runs)
        self._runs_read_at.update(dict.fromkeys(runs, now))

    def waiting(self) -> int:
        """Calls and describes of this node's clients waiting for another node's answer."""
        return len(self._outgoing)

    def _forget(self, token: int) -> _Outgoing | None:
        """Stop waiting for call ``token``: what still comes back for it is dropped."""
        out = self._outgoing.pop(token, None)
        if out is not None:
            del self._tokens_of[(out.caller, out.ident)]
        return out

    def _cancel(self, caller: Endpoint, ident: int) -> bool:
        token = self._tokens_of.get((caller, ident))
        out = None if token is None else self._forget(token)
        if token is None or out is None:
            return False  # answered already: the answer crossed the cancel
        self._send_cancel(token, out)
        return True

    def _send_cancel(self, token: int, out: _Outgoing) -> None:
        async def send() -> None:  # after the call's own job: out.node is known by then...
            if out.node is None:
                return  # ...or the call never went (forgotten, it never will: _send_to)
            if out.letter is not None:
                replaced = self._mailer.replace_held(out.node, out.letter, RPC_CANCEL, token)
                if replaced is Replaced.INSTEAD:
                    return  # the call never left: it goes as its own cancel, and never runs
                # PERHAPS_ARRIVED: the call goes as a cancel too (if it never arrived, it
                # never runs), and this cancel follows for the case it did.
            # Held until Redis takes it and the node listens: without it the provider's
            # method (or a stream waiting for credit) runs on for good.
            await self._mailer.post(RPC_CANCEL, token, out.node)

        self._engine.later(send)

    @property
    def _mailer(self) -> Mailer:
        assert self._mail is not None, "install() first"
        return self._mail

    def _credit(self, caller: Endpoint, msg: Credit) -> bool:
        token = self._tokens_of.get((caller, msg.id))
        if token is None:
            return True  # the stream ended while the credit was on its way
        out = self._outgoing[token]
        if not out.stream:
            raise ProtocolError(f"credit for request {msg.id}, which is not a streaming call")
        check_credit(msg, out.credit)
        out.credit += msg.n
        n = msg.n

        async def send() -> None:  # after the call's own job: out.node is known by then...
            if out.node is None:
                return  # ...or it waits for its provider's name: no value came, none to credit
            # Held while Redis is away or the provider's node does not listen: the stream
            # goes on once both are back (a Redis restart).
            await self._mailer.post(RPC_CREDIT, [token, n], out.node)

        self._engine.later(send)
        return True

    def _fail(
        self,
        token: int,
        text: str,
        kind: type[TrioStreamError] = RpcError,
        why: str = "disconnected",
    ) -> None:
        """End call ``token`` with ``kind(text)``, counted in /metrics as ``why`` (a reason of
        rpc.ERROR_REASONS: by default the provider's node went, or the messages between the
        nodes were lost, mid-call)."""
        out = self._forget(token)
        if out is not None:
            self._engine.state.rpc.count_error(why)
            out.caller.send_control(Error(id=out.ident, type=kind.__name__, message=text))

    def _on_answer(self, node: str, envelope: Any) -> None:
        body = self._open(node, envelope)
        for token, frame, final in body or ():
            if isinstance(frame, str):  # the provider's node dropped answers: see _dropped
                self._fail(int(token), frame)
                continue
            out = self._outgoing.get(int(token))
            if out is None or not isinstance(frame, bytes):
                continue  # cancelled, failed or the caller left meanwhile
            item = not final and out.stream
            over = over_bound(out.caller, len(frame))
            if over is not None:
                # The caller's bound, as on one node (Router._forward, yield_): the provider's
                # node cannot see it, and answers through Redis went past it unchecked.
                self._forget(int(token))
                if item:  # the stream ends: its provider is told to stop
                    self._send_cancel(int(token), out)
                    error = stream_value_dropped(out.provider, len(frame), over)
                else:
                    error = answer_dropped(
                        f"the answer from {out.provider[:100]!r}", len(frame), over
                    )
                self._engine.state.rpc.count_error("limit")
                out.caller.send_control(
                    Error(id=out.ident, type=type(error).__name__, message=str(error))
                )
                continue
            if item:
                out.credit -= 1  # the provider's node checked it against the credit
            else:
                self._forget(int(token))
            out.caller.send_control_frame(frame)

    def _open(self, node: str, envelope: Any) -> Any | None:
        """The body of a message from ``node`` (None for a copy); if messages from it were
        lost before this one, every call between the two nodes ends first."""
        opened = self._inbox.open(node, envelope)
        if self._inbox.urgent:
            self._send_acks()
        if opened is None:
            return None
        body, lost = opened
        if lost:
            self._lost_from(node)
        return body

    def _send_acks(self) -> None:
        """Tell the nodes that sent us messages what we took (or that we missed one)."""
        if self._acking:
            return
        self._acking = True

        async def send() -> None:  # in the job task
            self._acking = False
            for ack in self._inbox.acks():
                # Lost, its sender sends again what it does not hear of: asked again then.
                with contextlib.suppress(*REDIS_ERRORS):
                    await self._engine.io.bus.publish(RPC_ACK, ack.body, to=ack.node)

        self._engine.later(send)

    def _on_ack(self, node: str, body: Any) -> None:
        if self._mailer.acknowledged(node, body):  # it asks for what it missed

            async def resend() -> None:
                await self._mailer.resend(node)

            self._engine.later(resend)

    def _lost_from(self, node: str) -> None:
        """Messages from ``node`` were lost for good on their way (a link that died with
        them in flight, and its sender keeps them no longer: past cluster_mail's bound on
        what it keeps, or refused by Redis): an answer or a value of any call with it, a
        credit or a cancel of any call from it, may be among them. They end (RpcError),
        rather than a stream going on past a hole or waiting for credit that will not come."""
        log.warning("messages from node %r were lost on their way: its calls with it end", node)
        reason = (
            f"messages from node {node[:80]!r} were lost on their way (a link to Redis broke "
            "with them in flight): the call may have run; call again"
        )
        for token, out in list(self._outgoing.items()):
            if out.node == node:
                self._fail(token, reason)
                self._send_cancel(token, out)
        failed: list[list[Any]] = []
        for (caller_node, token), (caller, ident) in list(self._incoming.items()):
            if caller_node == node:
                del self._incoming[(caller_node, token)]
                self._engine.state.rpc.cancel(caller, Cancel(id=ident))
                failed.append([token, reason, True])  # its caller hears it (see _on_answer)
        if failed:
            self._post_later(RPC_ANSWER, failed, node)

    def _post_later(self, kind: str, body: Any, node: str) -> None:
        async def post() -> None:
            await self._mailer.post(kind, body, node)

        self._engine.later(post)

    def _dropped(self, node: str, letters: list[Letter]) -> None:
        """Messages to ``node`` that will never go (cluster_mail): their calls fail, so that
        no stream goes on past a hole and no caller waits for an answer that cannot come."""
        reason = (
            f"messages between this call's nodes were dropped (node {node[:80]!r} did not "
            "listen for long, or Redis refused them): the call may have run; call again"
        )
        failed: list[list[Any]] = []
        for letter in letters:
            if letter.kind == RPC and not letter.sent:  # caller's node: it never left here
                self._fail(
                    int(letter.body["t"]),
                    f"the call was dropped before it left this node (node {node[:80]!r} did "
                    "not listen for long, or Redis refused it): it did not run; call again",
                    ClusterUnavailable,
                    "unavailable",
                )
            elif letter.kind == RPC_ANSWER:  # provider's node: its caller's node hears it
                for token, _, _ in letter.body:
                    entry = self._incoming.pop((node, int(token)), None)
                    if entry is not None:  # a stream still running here
                        self._engine.state.rpc.cancel(entry[0], Cancel(id=entry[1]))
                    failed.append([int(token), reason, True])
            elif letter.kind == RPC_CANCEL:  # caller's node: tried again (watch)
                key = (node, int(letter.body))
                self._refused_cancels.setdefault(key, trio.current_time())
            elif letter.kind in (RPC, RPC_CREDIT):  # caller's node: the call ends here
                token = int(letter.body["t"] if letter.kind == RPC else letter.body[0])
                out = self._outgoing.get(token)
                if out is not None:  # (a call sent once, refused when sent again: it may run)
                    self._fail(token, reason)
                    self._send_cancel(token, out)
        if failed:
            self._post_later(RPC_ANSWER, failed, node)

    async def watch(self) -> None:
        """Fail calls whose provider's node left the cluster, abort those whose caller left."""
        state = self._engine.state
        absent_since: dict[str, float] = {}
        while True:
            await trio.sleep(WATCH_INTERVAL_S)
            if self._inbox.due:
                self._send_acks()
            pending = self._mailer.pending
            if not (self._outgoing or self._incoming or pending or self._refused_cancels):
                continue
            try:
                live = await self._engine.io.presence.live()
            except REDIS_ERRORS:  # down, or refusing (a RedisError ended the watch)
                continue
            now = trio.current_time()
            nodes = {node for node, _ in self._incoming} | pending
            nodes |= {out.node for out in self._outgoing.values() if out.node is not None}
            nodes |= {node for node, _ in self._refused_cancels}
            absent_since = {n: absent_since.get(n, now) for n in nodes if n not in live}
            gone = {n for n, since in absent_since.items() if now - since >= NODE_ABSENT_S}
            try:
                # A node killed and restarted at once under its name never leaves the live
                # set: its new run (process) id tells its last run's calls are lost.
                runs = await self._engine.io.presence.runs_of(nodes)
            except REDIS_ERRORS:
                continue
            self._runs_read(runs, now)
            if pending and not self._retrying:
                self._retry_mail(gone & pending)
            if self._refused_cancels and not self._recancelling:
                self._cancel_again(gone, now)
            for (node, token), (caller, ident) in list(self._incoming.items()):
                restarted = _restarted(runs, node, caller.run)
                if node in gone or restarted:  # the caller's node died: nobody reads the answer
                    del self._incoming[(node, token)]
                    state.rpc.cancel(caller, Cancel(id=ident))
            self._check_outgoing(gone, runs)

    def _check_outgoing(self, gone: set[str], runs: dict[str, str]) -> None:
        """The watch's pass over this node's calls: their callers gone, their providers'
        nodes gone or restarted. A method of its own so that nothing of a pass outlives it:
        the watch's locals (the sessions of the pass, the last call) kept the last departed
        clients' sessions alive while no call was in flight (an operator's soak)."""
        sessions = set(self._engine.state.sessions.values())
        for token, out in list(self._outgoing.items()):
            if out.caller not in sessions:
                self._forget(token)
                self._send_cancel(token, out)  # a stream would wait for credit forever
            elif out.node is not None and out.node in gone:
                self._fail(
                    token,
                    f"{out.provider[:100]!r} was on node {out.node!r}, which left the "
                    f"cluster before {out.unanswered()}",
                )
            elif out.node is not None and out.run is None:
                out.run = runs.get(out.node)  # sent before its node's run was known
            elif out.node is not None and _restarted(runs, out.node, out.run):
                self._fail(
                    token,
                    f"{out.provider[:100]!r} was on node {out.node!r}, which restarted "
                    f"before {out.unanswered()}",
                )
                self._send_cancel(token, out)  # (a held call goes as its cancel)

    # -- provider's node ---------------------------------------------------------------------
    def _on_call(self, node: str, envelope: Any) -> None:
        # A PUBLISH whose reply was lost with its connection is sent again by coredis (its
        # retries), and the mail is sent again until acknowledged: the inbox takes each once
        # (a call that ran twice mixed a stream's two runs' values: a soak).
        body = self._open(node, envelope)
        if body is None:
            return  # a copy
        token = int(body["t"])
        if body.get("to_run", self._run_id) != self._run_id:
            # For this node's previous run: held while it restarted, or sent again for want
            # of its acknowledgement. Not run here; its caller hears so (if it still waits).
            reason = (
                f"node {self._engine.io.node[:80]!r} restarted before the call reached it: "
                "it did not run; call again"
            )
            self._post_later(RPC_ANSWER, [[token, reason, True]], node)
            return
        run = body.get("r")
        caller = RemoteCaller(self, node, token, str(body["caller"]), run)
        router = self._engine.state.rpc
        ident = int(body["id"])
        self._incoming[(node, token)] = (caller, ident)
        if "method" in body:
            call = Call(
                id=ident,
                provider=body["provider"],
                method=body["method"],
                args=body["args"],
                window=body.get("window"),
            )
            router.call(caller, call)
        else:
            router.describe(caller, Describe(id=ident, provider=body["provider"]))
        self._settle(node, token)

    def _cancel_again(self, gone: set[str], now: float) -> None:
        """Post again the cancels Redis refused, for CANCEL_RETRY_S; not to a node that left
        (the call ended with it). One for a node's previous run is ignored there."""
        for key, since in list(self._refused_cancels.items()):
            node = key[0]
            if node in gone:
                del self._refused_cancels[key]
            elif now - since >= CANCEL_RETRY_S:
                del self._refused_cancels[key]
                log.warning(
                    "the cancel of a call on node %r could not go for %g s (Redis refused "
                    "it, or the node did not listen): the call's method there may run to "
                    "its end",
                    node[:80],
                    CANCEL_RETRY_S,
                )
        if not self._refused_cancels:
            return
        self._recancelling = True

        async def post() -> None:  # in the job task
            self._recancelling = False
            for key in list(self._refused_cancels):
                node, token = key
                letter = await self._mailer.post(RPC_CANCEL, token, node, quiet=True)
                if not letter.refused:  # (refused again: _dropped kept it, and since when)
                    # Sent, or held by the mail for its node (dropped there: _dropped again).
                    since = self._refused_cancels.pop(key, None)
                    if since is not None and letter.sent:
                        log.info(
                            "the cancel of a call on node %r went after Redis refused it "
                            "for %.1f s",
                            node[:80],
                            trio.current_time() - since,
                        )

        self._engine.later(post)

    def _retry_mail(self, gone: set[str]) -> None:
        self._retrying = True

        async def retry() -> None:  # in the job task, in order with every other send
            try:
                await self._mailer.retry(gone)
            finally:
                self._retrying = False

        self._engine.later(retry)

    def _on_cancel(self, node: str, envelope: Any) -> None:
        body = self._open(node, envelope)
        if body is None:
            return  # had already
        entry = self._incoming.pop((node, int(body)), None)
        if entry is not None:
            caller, ident = entry
            self._engine.state.rpc.cancel(caller, Cancel(id=ident))

    def _on_credit(self, node: str, envelope: Any) -> None:
        body = self._open(node, envelope)
        if body is None:
            return  # had already
        token, n = body
        entry = self._incoming.get((node, int(token)))
        if entry is None:
            return  # the stream ended while the credit was on its way
        caller, ident = entry
        try:
            self._engine.state.rpc.credit(caller, Credit(id=ident, n=int(n)))
        except ProtocolError as error:  # the caller's node checked it: a bug, not the caller's
            log.warning("credit from node %r refused: %s", node[:80], error)

    def _settle(self, node: str, token: int) -> bool:
        """Forget a call from another node once this node's router is done with it; whether
        it is done."""
        entry = self._incoming.get((node, token))
        if entry is None:
            return True
        if self._engine.state.rpc.pending(entry[0]):
            return False
        del self._incoming[(node, token)]
        return True

    def answer(self, node: str, token: int, frame: bytes) -> None:
        # The router closes a call before sending its last answer: still pending means this
        # is an item of a stream, with more to come.
        final = self._settle(node, token)
        queued = self._answers.get(node)
        if (
            queued is not None
            and len(queued) < MAX_ANSWERS_PER_MESSAGE
            and sum(len(answer[1]) for answer in queued) <= MAX_ANSWER_BYTES_PER_MESSAGE
        ):
            queued.append([token, frame, final])  # a send to that node is scheduled already
            return
        batch: list[list[Any]] = [[token, frame, final]]
        self._answers[node] = batch

        async def send() -> None:
            if self._answers.get(node) is batch:
                del self._answers[node]
            size = sum(len(answer[1]) for answer in batch)
            await self._mailer.post(RPC_ANSWER, batch, node, size=size)

        self._engine.later(send)


def _not_sent(what: str, error: BaseException) -> str:
    return (
        f"{what} may not have reached the provider's node: the cluster's Redis did not take "
        f"it ({str(error)[:120]}); call again once it answers (it is cancelled there if it "
        "did arrive)"
    )


def _restarted(runs: dict[str, str], node: str, run: str | None) -> bool:
    """Whether ``node`` runs another process now than the ``run`` a call was made with."""
    now = runs.get(node)
    return run is not None and now is not None and now != run
