"""The server's side of the handshake (_server/handshake.py) as a session runs it: a real
session and server state over a transport that hands it a hello and keeps what it writes."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import trio
from proxy import open_proxy
from test_robustness import control, read_messages

import trio_stream as ts
from trio_stream._exceptions import ConnectionClosed
from trio_stream._protocol import messages as M
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import PREFIX_BYTES, FrameDecoder, RunTaker, T
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._server import session as session_module
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


# -- a name held by a connection that has just ended -------------------------------------------
# The clients below are plain blocking sockets in a worker thread: what they do does not wait
# for the server's event loop, as a process restarted elsewhere does not. A client in the
# tests' own loop lets the server read the old connection's end before its next hello, and
# never meets the race (0 in 100 tries, against 97 in 100 from a thread, before the fix).
RESTARTS = 30  # before the fix, every other restart here met NameInUse (15 of 30)
CLIENT_TIMEOUT_S = 10.0  # every blocking socket call and child process, at most
# What holds a client's connection in _restarts_after_kill: a process given its socket.
HOLDER_PROCESS = [sys.executable, "-c", "import time; time.sleep(60)"]


def _hello(name: str) -> bytes:
    return control(M.Hello(v=PROTOCOL_VERSION, name=name))


def _answer(data: bytes) -> str:
    """The type of the first CONTROL message in ``data`` ("Welcome", or an error's type)."""
    decoder = FrameDecoder(max_frame_bytes=2**20)
    decoder.receive_data(data)
    message = M.decode_message(next(iter(decoder.frames())))
    return message.type if isinstance(message, M.Error) else type(message).__name__


def _say_hello(port: int, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_hello(name))
    return sock


def _read_answer(sock: socket.socket) -> str:
    head = sock.recv(PREFIX_BYTES, socket.MSG_WAITALL)
    body = sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
    return _answer(head + body) if body else "closed"


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` as a killed process's socket with unread bytes is: with a reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _port(server: ts.Server) -> int:
    assert server.tcp_url
    return int(server.tcp_url.rsplit(":", 1)[1])


def _restarts_after_reset(port: int) -> list[str]:
    """A client reset, and its successor's hello at once, RESTARTS times: their answers."""
    holder = _say_hello(port, "sensor")
    answers = [_read_answer(holder)]
    for _ in range(RESTARTS):
        _reset(holder)
        holder = _say_hello(port, "sensor")
        answers.append(_read_answer(holder))
    holder.close()
    return answers


def _restarts_after_kill(port: int) -> list[str]:
    """A process holding a client's connection killed (SIGKILL: the kernel closes its socket
    as it exits), and a successor's hello as soon as it is gone, RESTARTS times: their
    answers. Each successor's connection is then handed to a process of its own."""

    def hand_over(sock: socket.socket) -> subprocess.Popen[bytes]:
        with sock:  # the process's copy is the connection's last one
            return subprocess.Popen(HOLDER_PROCESS, pass_fds=[sock.fileno()])

    sock = _say_hello(port, "sensor")
    answers = [_read_answer(sock)]
    holders = [hand_over(sock)]
    try:
        for _ in range(RESTARTS):
            holders[-1].kill()
            holders[-1].wait(CLIENT_TIMEOUT_S)
            sock = _say_hello(port, "sensor")
            answers.append(_read_answer(sock))
            holders.append(hand_over(sock))
        return answers
    finally:
        for holder in holders:
            holder.kill()
            holder.wait(CLIENT_TIMEOUT_S)


BUSY_SERVER_TURN_S = 0.005  # a loaded server's turn: fanning a flood writer's read out took ~2 ms


async def _keep_busy() -> None:
    """Hold the event loop BUSY_SERVER_TURN_S at a time, as other clients' work does."""
    while True:
        time.sleep(BUSY_SERVER_TURN_S)  # noqa: ASYNC251 - the loop held: that is the point
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("restarts", [_restarts_after_reset, _restarts_after_kill])
async def test_a_client_started_again_at_once_gets_its_name_back_from_its_broken_connection(
    server: ts.Server, restarts: Callable[[int], list[str]]
) -> None:
    # A client process killed and started again ~10 ms later met NameInUse 5 times in 100 (an
    # outside tester): its old connection's end was in the server's kernel, but the server,
    # busy, had not read it yet, and the old session still held the name. (Before the fix,
    # busy: every other restart here was refused; idle: 0 to 15 of 30 after a reset, none
    # after a kill, whose process exit gives the server the time.)
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_busy)
            answers = await trio.to_thread.run_sync(restarts, _port(server), abandon_on_cancel=True)
            nursery.cancel_scope.cancel()
    assert answers == ["Welcome"] * (RESTARTS + 1)


async def test_a_connected_holder_still_gets_a_new_hello_refused_at_once(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel has the holder connected: no wait (a bound of WAIT_S would show).
    monkeypatch.setattr(session_module, "NAME_HOLDER_END_WAIT_S", WAIT_S)
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="sensor"):
        with trio.fail_after(WAIT_S / 3), pytest.raises(ts.NameInUse) as refused:
            async with ts.open_client(server.tcp_url, name="sensor"):
                pass
    assert "a client named 'sensor' is connected already; pick another name" in str(refused.value)


async def test_a_connected_websocket_holder_gets_a_new_hello_refused_at_once(
    server: ts.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel's TCP state under the WebSocket is looked at too: a live browser holding
    # the name used to cost every conflicting hello NAME_HOLDER_END_WAIT_S.
    monkeypatch.setattr(session_module, "NAME_HOLDER_END_WAIT_S", WAIT_S)
    assert server.ws_url is not None and server.tcp_url is not None
    async with ts.open_client(server.ws_url, name="sensor"):
        with trio.fail_after(WAIT_S / 3), pytest.raises(ts.NameInUse, match="connected already"):
            async with ts.open_client(server.tcp_url, name="sensor"):
                pass


def _race_for_a_freed_name(port: int) -> list[list[str]]:
    """Two hellos with one name sent together, just after its holder was reset (both wait
    for it to go), RESTARTS times: each time, the answers of both."""
    rounds = []
    for _ in range(RESTARTS):
        holder = _say_hello(port, "sensor")
        assert _read_answer(holder) == "Welcome"
        _reset(holder)
        pair = [_say_hello(port, "sensor"), _say_hello(port, "sensor")]
        rounds.append(sorted(_read_answer(sock) for sock in pair))
        for sock in pair:
            _reset(sock)  # (the winner too: the next round's holder is a new connection)
    return rounds


async def test_of_two_hellos_with_the_name_of_a_holder_that_just_went_exactly_one_wins(
    server: ts.Server,
) -> None:
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_busy)  # (both hellos then come in one turn, often)
            rounds = await trio.to_thread.run_sync(
                _race_for_a_freed_name, _port(server), abandon_on_cancel=True
            )
            nursery.cancel_scope.cancel()
    assert rounds == [["NameInUse", "Welcome"]] * RESTARTS


def _named_holder(state: ServerState) -> Session:
    """A session holding the name "sensor" over a transport that is no socket (the kernel
    cannot vouch for it, as for a WebSocket)."""
    holder = Session(state, HelloTransport(state, M.Hello(v=PROTOCOL_VERSION)))
    holder.name = "sensor"
    state.claim_name(holder)
    return holder


def _said(transport: HelloTransport) -> str:
    """What the server answered a hello with: "Welcome", or the error's type."""
    first = transport.written[0]
    return first.type if isinstance(first, M.Error) else type(first).__name__


async def test_of_hellos_waiting_for_a_name_exactly_one_gets_it_when_its_holder_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three hellos wait for the holder; it goes; one claims the name in the same step as its
    # last check, and the others, woken with it, find the winner there.
    state = ServerState(ts.ServerConfig())
    holder = _named_holder(state)
    transports: list[HelloTransport] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            transport = HelloTransport(state, M.Hello(v=PROTOCOL_VERSION, name="sensor"))
            session = Session(state, transport)
            transport.client_id = session.client_id
            transports.append(transport)
            nursery.start_soon(session.run)
        await trio.sleep(session_module.NAME_HOLDER_END_WAIT_S / 2)
        assert not any(t.written for t in transports)  # all waiting
        state.unregister(holder)
        await trio.sleep(session_module.NAME_HOLDER_END_WAIT_S)
        answers = sorted(map(_said, transports))
        nursery.cancel_scope.cancel()
    assert answers == ["NameInUse", "NameInUse", "Welcome"]


async def test_a_hello_gets_name_in_use_once_the_bound_is_over_if_the_holder_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state = ServerState(ts.ServerConfig())
    holder = _named_holder(state)
    transport = HelloTransport(state, M.Hello(v=PROTOCOL_VERSION, name="sensor"))
    session = Session(state, transport)
    started = trio.current_time()
    with trio.fail_after(WAIT_S):
        await session.run()
    assert trio.current_time() - started == pytest.approx(session_module.NAME_HOLDER_END_WAIT_S)
    assert _said(transport) == "NameInUse"
    assert state.by_name["sensor"] is holder
