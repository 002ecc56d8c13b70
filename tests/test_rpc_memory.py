"""RPC messages waiting for a client that does not read count toward its memory bound.

Only the number of calls in flight (10,000) bounded what the server forwarded to a provider
that read nothing: a caller sending 400 calls of 1 MB made the server hold 400 MB, while
``buffered_bytes`` said 0 (an operator). The answers waiting for a caller that reads nothing
were as unbounded. Now both count toward the connection's ``max_buffered_bytes`` and show in
``buffered_bytes``: a call past it is refused (``LimitExceeded``: its provider is not
reading), an answer past it dropped (``LimitExceeded`` in its place), a stream ended.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import trio
from redis_server import RedisServer
from test_cluster import node_config

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol import rpc_messages as R
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server.session import Session

WAIT_S = 30
MAX_BUFFERED_BYTES = 8 * 2**20
VALUE_BYTES = 2**20
CALLS = 40  # of VALUE_BYTES each: five times the bound
pytestmark = pytest.mark.server_options(max_buffered_bytes=MAX_BUFFERED_BYTES)


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


class Raw:
    """A hand-made client: control messages out, control messages in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(max_frame_bytes=2**30)
        self._pending: list[M.ControlMessage] = []

    @classmethod
    async def connect(cls, server: ts.Server, name: str, *, deaf: bool = False) -> Raw:
        """Connected and welcomed; ``deaf``: a socket that takes next to nothing (its 4 KiB
        receive buffer set before it connects), for a client that never reads."""
        assert server.tcp_url
        port = int(server.tcp_url.rsplit(":", 1)[1])
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if deaf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        raw = cls(trio.SocketStream(sock))
        await raw.send(M.Hello(v=PROTOCOL_VERSION, name=name))
        assert isinstance(await raw.next(), M.Welcome)
        return raw

    async def send(self, *messages: M.ControlMessage) -> None:
        await self.stream.send_all(b"".join(map(control, messages)))

    async def next(self) -> M.ControlMessage:
        while not self._pending:
            data = await self.stream.receive_some(2**20)
            assert data, "the server closed the connection"
            self._decoder.receive_data(data)
            self._pending = [
                M.decode_message(frame) for frame in self._decoder.frames() if frame[0] == F.CONTROL
            ]
        return self._pending.pop(0)


class Echo:
    """A provider that answers every call with VALUE_BYTES (a stream with CALLS of them)."""

    def __init__(self) -> None:
        self.answered = 0

    async def answer_every_call(self, provider: Raw) -> None:
        while True:
            invoke = await provider.next()
            if isinstance(invoke, R.Abort):  # a stream ended for its caller's bound
                continue
            assert isinstance(invoke, R.Invoke), invoke
            if invoke.window is not None:
                await provider.send(*[R.Yield(call=invoke.call, value=bytes(VALUE_BYTES))] * CALLS)
                self.answered += CALLS
            else:
                await provider.send(R.Result(call=invoke.call, value=bytes(VALUE_BYTES)))
                self.answered += 1


def session_of(server: ts.Server, name: str) -> Session:
    (session,) = [s for s in server.state.sessions.values() if s.name == name]
    return session


async def poll_until(predicate: Callable[[], bool]) -> None:
    """Poll the server's own state: there is no event to wait on."""
    with trio.fail_after(WAIT_S):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_calls_to_a_provider_that_reads_nothing_are_refused_past_its_bound(
    server: ts.Server,
) -> None:
    provider = await Raw.connect(server, "deafprov", deaf=True)
    await provider.send(R.Expose(methods=["slow"]))
    caller = await Raw.connect(server, "flooder")
    args = bytes(VALUE_BYTES)
    with trio.fail_after(WAIT_S):
        for i in range(CALLS):
            await caller.send(R.Call(id=i + 10, provider="deafprov", method="slow", args=args))
        # The calls that found the provider over its bound are answered at once.
        refused: list[M.Error] = []
        while len(refused) + server.state.rpc.pending() < CALLS:
            answer = await caller.next()
            assert isinstance(answer, M.Error), answer
            refused.append(answer)
    assert len(refused) >= CALLS // 2
    assert {e.type for e in refused} == {"LimitExceeded"}
    assert "'deafprov' does not keep up with what the server sends it" in refused[0].message
    assert "max_buffered_bytes 8388608" in refused[0].message, refused[0].message
    # What waits for it stays within the bound (one call over, at most), and shows.
    queued = session_of(server, "deafprov").outbox.control_bytes
    assert MAX_BUFFERED_BYTES // 2 < queued <= MAX_BUFFERED_BYTES + VALUE_BYTES + 4096
    assert server.state.stats()["buffered_bytes"] >= queued
    async with ts.open_client(server.tcp_url or "", name="observer") as observer:
        assert (await observer.stats()).buffered_bytes >= queued
    # The calls passed on are in flight; they fail when the provider goes.
    passed = CALLS - len(refused)
    assert server.state.rpc.pending() == passed
    await provider.stream.aclose()
    with trio.fail_after(WAIT_S):
        for _ in range(passed):
            answer = await caller.next()
            assert isinstance(answer, M.Error) and answer.type == "RpcError", answer
    await poll_until(lambda: not server.state.stats()["buffered_bytes"])  # (with the provider)


async def test_answers_for_a_caller_that_reads_nothing_are_dropped_past_its_bound(
    server: ts.Server,
) -> None:
    echo = Echo()
    caller = await Raw.connect(server, "deafcaller", deaf=True)
    async with trio.open_nursery() as nursery:
        provider = await Raw.connect(server, "echo")
        nursery.start_soon(echo.answer_every_call, provider)
        await caller.send(
            *(R.Call(id=i + 10, provider="echo", method="m", args=b"\x80") for i in range(CALLS))
        )
        await poll_until(lambda: echo.answered == CALLS and not server.state.rpc.pending())
        queued = session_of(server, "deafcaller").outbox.control_bytes
        assert MAX_BUFFERED_BYTES // 2 < queued <= MAX_BUFFERED_BYTES + VALUE_BYTES + 2**20
        assert server.state.stats()["buffered_bytes"] >= queued
        nursery.cancel_scope.cancel()
    # Read at last: every call has its answer, the result or why it was dropped.
    answers: dict[int, M.ControlMessage] = {}
    with trio.fail_after(WAIT_S):
        while len(answers) < CALLS:
            answer = await caller.next()
            assert isinstance(answer, M.Reply | M.Error), answer
            answers[answer.id or 0] = answer
    dropped = [a for a in answers.values() if isinstance(a, M.Error)]
    assert CALLS // 2 <= len(dropped) < CALLS
    assert {a.type for a in dropped} == {"LimitExceeded"}
    assert dropped[0].message.startswith("the call ran, but the result from 'echo' ("), dropped
    assert "this client does not keep up with what the server sends it" in dropped[0].message


@pytest.mark.parametrize("stream", [False, True])
async def test_answers_from_another_node_for_a_caller_that_reads_nothing_are_dropped_past_its_bound(
    redis_server: RedisServer, stream: bool
) -> None:
    # The provider's node cannot see the caller's bound; the caller's node forwarded every
    # answer that came through Redis, past it, unchecked.
    echo = Echo()
    options = {"max_buffered_bytes": MAX_BUFFERED_BYTES}
    errors: list[M.Error] = []
    async with (
        ts.open_server(node_config(redis_server, "a", **options)) as a,
        ts.open_server(node_config(redis_server, "b", **options)) as b,
    ):
        caller = await Raw.connect(b, "deafcaller", deaf=True)
        async with trio.open_nursery() as nursery:
            provider = await Raw.connect(a, "echo")
            nursery.start_soon(echo.answer_every_call, provider)
            if stream:
                call = R.Call(id=7, provider="echo", method="values", args=b"\x80", window=CALLS)
                await caller.send(call)
            else:
                await caller.send(
                    *(R.Call(id=i, provider="echo", method="m", args=b"\x80") for i in range(CALLS))
                )
            await poll_until(lambda: echo.answered == CALLS and not b.state.engine.routed_calls())
            queued = session_of(b, "deafcaller").outbox.control_bytes
            assert MAX_BUFFERED_BYTES // 2 < queued <= MAX_BUFFERED_BYTES + VALUE_BYTES + 2**20
            nursery.cancel_scope.cancel()
        dropped = b.state.rpc.errors_total["limit"]
        assert dropped >= 1
        with trio.fail_after(WAIT_S):  # read at last: the errors are among the answers
            while len(errors) < dropped:
                answer = await caller.next()
                if isinstance(answer, M.Error):
                    errors.append(answer)
    assert {e.type for e in errors} == {"LimitExceeded"}
    if stream:
        assert errors[0].message.startswith("the stream from 'echo' was ended"), errors
    else:
        assert CALLS // 2 <= len(errors) < CALLS
        assert errors[0].message.startswith("the call ran, but the answer from 'echo' ("), errors


async def test_a_stream_to_a_caller_that_reads_nothing_ends_past_its_bound(
    server: ts.Server,
) -> None:
    caller = await Raw.connect(server, "deafcaller", deaf=True)
    provider = await Raw.connect(server, "sensor")
    await caller.send(R.Call(id=7, provider="sensor", method="values", args=b"\x80", window=CALLS))
    with trio.fail_after(WAIT_S):
        invoke = await provider.next()
        assert isinstance(invoke, R.Invoke) and invoke.window == CALLS
        await provider.send(
            *(R.Yield(call=invoke.call, value=bytes(VALUE_BYTES)) for _ in range(CALLS))
        )
        abort = await provider.next()  # the stream ended: the provider stops
    assert abort == R.Abort(call=invoke.call)
    assert server.state.rpc.pending() == 0
    queued = session_of(server, "deafcaller").outbox.control_bytes
    assert queued <= MAX_BUFFERED_BYTES + VALUE_BYTES + 4096
    with trio.fail_after(WAIT_S):
        while True:
            answer = await caller.next()
            if isinstance(answer, M.Error):
                break
            assert isinstance(answer, R.Item), answer
    assert (answer.id, answer.type) == (7, "LimitExceeded")
    assert answer.message.startswith("the stream from 'sensor' was ended"), answer.message
