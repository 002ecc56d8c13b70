"""The server's side of the handshake (_server/handshake.py) as a session runs it: a real
session and server state over a transport that hands it a hello and keeps what it writes."""

from __future__ import annotations

import pytest
import trio
from proxy import open_proxy
from test_robustness import control, read_messages

import trio_stream as ts
from trio_stream._exceptions import ConnectionClosed
from trio_stream._protocol import messages as M
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import RunTaker, T
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server import state as state_module
from trio_stream._server.session import Session
from trio_stream._server.state import ServerState

WAIT_S = 30  # a bound only: nothing here waits for the clock


class HelloTransport:
    """Hands the session one hello; notes, at each write, whether the client was admitted."""

    kind = "tcp"
    remote = "127.0.0.1:1"
    progress = 0

    def __init__(self, state: ServerState, hello: M.Hello) -> None:
        self.state = state
        self.hello: M.Hello | None = hello
        self.admitted_at_write: list[bool] = []
        self.written: list[M.ControlMessage] = []
        self.client_id = -1

    async def receive_frames(self) -> list[bytearray]:
        if self.hello is None:
            await trio.sleep_forever()
        frame, self.hello = bytearray(M.encode_message(self.hello)), None
        return [frame]

    async def receive_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        raise AssertionError("the server reads frames, not runs")

    async def send(self, pieces: list[BytesLike]) -> None:
        self.admitted_at_write.append(self.client_id in self.state.sessions)
        self.written += [M.decode_message(bytearray(piece)[4:]) for piece in pieces]
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        pass

    async def abort(self) -> None:
        pass


async def test_a_client_is_admitted_before_its_welcome_goes_out() -> None:
    # A client that has its welcome may tell another process it is connected at once: the
    # other's `clients` must list it, its admin `disconnect` find it.
    state = ServerState(ts.ServerConfig())
    transport = HelloTransport(state, M.Hello(v=PROTOCOL_VERSION, name="new"))
    session = Session(state, transport)
    transport.client_id = session.client_id
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            while not transport.written:
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    assert isinstance(transport.written[0], M.Welcome)
    assert transport.admitted_at_write[0]


async def test_a_refused_hello_leaves_no_client_behind() -> None:
    # Refused before its name was claimed (the token is checked first): nothing to undo.
    state = ServerState(ts.ServerConfig(token="secret"))
    transport = HelloTransport(state, M.Hello(v=PROTOCOL_VERSION, name="new", token="wrong"))
    session = Session(state, transport)
    transport.client_id = session.client_id
    with trio.fail_after(WAIT_S):
        await session.run()
    assert not transport.admitted_at_write[0]
    assert session.client_id not in state.sessions and "new" not in state.by_name


class FailingWelcomeTransport(HelloTransport):
    """The connection breaks as the welcome goes out."""

    async def send(self, pieces: list[BytesLike]) -> None:
        await super().send(pieces)
        raise ConnectionClosed("connection lost: reset by peer")


async def test_a_resume_whose_welcome_is_lost_leaves_the_lease_to_its_grace_period() -> None:
    # The hello took its predecessor's lease over (and with it the channels it owned); the
    # connection then broke before the welcome went out. The channels must end after the
    # resume grace, as any broken connection's do, not stay with a client that never was.
    state = ServerState(ts.ServerConfig(resume_grace_s=5.0))
    old = Session(state, HelloTransport(state, M.Hello(v=PROTOCOL_VERSION)))
    old.name = "recorder"
    state.claim_name(old)
    old.resume_token = state.resume.issue(old)
    state.broker.create_channel("c", old)
    hello = M.Hello(v=PROTOCOL_VERSION, name="recorder", resume=True, resume_token=old.resume_token)
    transport = FailingWelcomeTransport(state, hello)
    new = Session(state, transport)
    transport.client_id = new.client_id
    with trio.fail_after(WAIT_S):
        await new.run()
    assert isinstance(transport.written[0], M.Welcome)
    assert new.client_id not in state.sessions and "recorder" not in state.by_name
    assert "c" in state.broker.channels  # kept for the client's next try, within the grace
    state.resume.expire(trio.current_time() + 10.0)
    assert "c" not in state.broker.channels


async def test_name_in_use_says_when_its_silent_holder_will_be_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sensor's host lost its connection without closing it; the process, restarted, met
    # NameInUse for a minute, told only to "close the one that has it" (a migrating team).
    monkeypatch.setattr(state_module, "SILENT_HOLDER_S", 0.3)
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None, idle_timeout_s=30.0)
    async with ts.open_server(config) as server:
        assert server.tcp_url is not None
        async with open_proxy(server.tcp_url) as proxy, ts.open_client(proxy.url, name="sensor"):
            with pytest.raises(ts.NameInUse) as healthy:
                async with ts.open_client(server.tcp_url, name="sensor"):
                    pass
            assert "sent nothing" not in str(healthy.value)  # heard from just now
            proxy.hold()
            await trio.sleep(0.5)
            with pytest.raises(ts.NameInUse) as silent:
                async with ts.open_client(server.tcp_url, name="sensor"):
                    pass
            proxy.release()
        said = str(silent.value)
        assert "(it has sent nothing for 1 s: a connection its host lost?" in said or (
            "(it has sent nothing for 0 s" in said
        ), said
        assert "idle_timeout_s, 30 s: in 30 s)" in said or "in 29 s)" in said, said


async def _welcome_run(server: ts.Server) -> str:
    """The ``run`` of the welcome a raw client gets from ``server``."""
    assert server.tcp_url
    port = int(server.tcp_url.rsplit(":", 1)[1])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(control(M.Hello(v=PROTOCOL_VERSION, name=None)))
        welcome = (await read_messages(stream, until=M.Welcome))[-1]
    assert isinstance(welcome, M.Welcome)
    return welcome.run


async def test_the_welcome_names_the_server_run_the_same_until_a_restart() -> None:
    # A reconnecting client tells "the channel was deleted and created again on this server"
    # from "the server restarted" by it (the browser client's reconnection.sameServer).
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    async with ts.open_server(config) as server:
        first, second = await _welcome_run(server), await _welcome_run(server)
    async with ts.open_server(config) as restarted:
        after_restart = await _welcome_run(restarted)
    assert len(first) == 16 and int(first, 16) >= 0
    assert first == second
    assert after_restart != first
