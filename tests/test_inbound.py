"""A connection's reading (_server/inbound.py): how one read of a client's frames is
dispatched (PUBLISH slices, requests in order, refused frames) and when the reader stops
reading (control messages not yet written, frames parked). A real session and server state
over a transport that hands the reader a read the test made; no wall-clock timing."""

from __future__ import annotations

import itertools
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.bytes_like import BytesLike
from trio_stream._protocol.framing import FrameDecoder, RunTaker, T, frame_prefix
from trio_stream._protocol.limits import PING_FRAME_MAX_BYTES
from trio_stream._server import inbound
from trio_stream._server.inbound import (
    CONTROL_HIGH_WATER_BYTES,
    CONTROL_SLICE_S,
    CONTROL_SLICE_WEIGHT,
    PINGS_PER_SCAN,
    PUBLISH_SLICE_FRAMES,
)
from trio_stream._server.session import Session
from trio_stream._server.state import ServerState

LONG_READ_FRAMES = 1_000
SHORT_READ_FRAMES = 100
BIG_PING_BYTES = 4_000  # within PING_FRAME_MAX_BYTES with its envelope
WAIT_S = 30  # a bound only: nothing here waits for the clock


class ScriptedTransport:
    """Hands the reader nothing more after the frames it is started with; keeps what the
    sender writes."""

    kind = "tcp"
    remote = "127.0.0.1:1"
    progress = 0

    def __init__(self) -> None:
        self.written = bytearray()

    async def receive_frames(self) -> list[bytearray]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def receive_runs(self, take_runs: RunTaker[T]) -> list[bytearray | T]:
        raise AssertionError("the server reads frames, not runs")

    async def send(self, pieces: list[BytesLike]) -> None:
        for piece in pieces:
            self.written += piece
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        pass

    async def abort(self) -> None:
        pass

    def messages(self) -> list[M.ControlMessage]:
        """The control messages written (not the DATA or PUB_ACK frames between them)."""
        decoder = FrameDecoder(max_frame_bytes=1 << 24)
        decoder.receive_data(self.written)
        return [M.decode_message(f) for f in decoder.frames() if f[0] == F.CONTROL]


def control(message: M.ControlMessage) -> bytearray:
    return bytearray(M.encode_message(message))


def publish(pub_id: int, index: int) -> bytearray:
    return bytearray(F.publish_head(pub_id, 0.0) + index.to_bytes(4, "big"))


SETUP = [
    control(M.CreateChannel(id=1, channel="c")),
    control(M.OpenPublisher(id=2, channel="c")),
]


@pytest.fixture(autouse=True)
def slices_counted_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock a slice's requests are timed on, stopped: here slices end by their count
    (a loaded machine would otherwise end some early), unless a test sets a clock of its own."""
    monkeypatch.setattr(inbound, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))


@asynccontextmanager
async def connection() -> AsyncIterator[tuple[Session, ScriptedTransport, trio.Nursery]]:
    transport = ScriptedTransport()
    session = Session(ServerState(ts.ServerConfig()), transport)
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            yield session, transport, nursery
            nursery.cancel_scope.cancel()


async def fan_out_watched(frames: list[bytearray]) -> list[int]:
    """Dispatch ``frames`` as one read, and note the frames published each time another task
    runs (as another connection's would) until all are."""
    total = sum(frame[0] == F.PUBLISH for frame in frames)
    async with connection() as (session, _transport, nursery):
        broker = session.state.broker
        nursery.start_soon(session.inbound.run, SETUP)
        await trio.testing.wait_all_tasks_blocked()
        assert session.writers  # the publisher is open
        nursery.start_soon(session.inbound.run, frames)
        seen: list[int] = []
        while not seen or seen[-1] < total:
            seen.append(broker.frames_in)
            await trio.lowlevel.checkpoint()
    return seen


async def test_a_long_read_of_publish_frames_is_fanned_out_one_slice_at_a_time() -> None:
    seen = await fan_out_watched([publish(1, i) for i in range(LONG_READ_FRAMES)])
    # Other tasks run only between slices, and each slice is whole.
    assert set(seen) <= {*range(0, LONG_READ_FRAMES, PUBLISH_SLICE_FRAMES), LONG_READ_FRAMES}
    assert len(set(seen)) > 2, seen


@pytest.mark.parametrize("run_frames", [1, 10])
async def test_a_slice_counts_publish_frames_across_the_other_frames_of_a_read(
    run_frames: int,
) -> None:
    frames: list[bytearray] = []
    for run in range(LONG_READ_FRAMES // run_frames):
        frames += [publish(1, run * run_frames + i) for i in range(run_frames)]
        frames.append(control(M.Ping(data=run)))
    seen = await fan_out_watched(frames)
    steps = sorted(set(seen))
    # Each slice is whole and no longer than PUBLISH_SLICE_FRAMES, pings counted in it.
    assert all(0 < b - a <= PUBLISH_SLICE_FRAMES for a, b in itertools.pairwise(steps)), steps
    # More than the PUBLISH frames alone would make: the pings count too.
    assert len(steps) > LONG_READ_FRAMES // PUBLISH_SLICE_FRAMES + 2, steps


async def test_a_read_shorter_than_a_slice_is_dispatched_without_letting_others_run() -> None:
    frames = [publish(1, i) for i in range(SHORT_READ_FRAMES)]
    frames[SHORT_READ_FRAMES // 2 : SHORT_READ_FRAMES // 2] = [control(M.Ping(data=1))]
    seen = await fan_out_watched(frames)
    assert set(seen) == {0, SHORT_READ_FRAMES}


async def turns_while_answering(pings: int) -> int:
    """Dispatch ``pings`` pings as one read; how many times another task ran until every
    one was answered."""
    async with connection() as (session, transport, nursery):
        nursery.start_soon(session.sender.run)
        nursery.start_soon(session.inbound.run, [control(M.Ping(data=i)) for i in range(pings)])
        turns = 0
        while sum(type(m) is M.Pong for m in transport.messages()) < pings:
            turns += 1  # another connection's task would run here
            await trio.lowlevel.checkpoint()
    return turns


async def test_a_long_read_of_requests_lets_the_other_connections_run_between_slices() -> None:
    # 20,000 pipelined pings in one 256 KiB read were answered in one go: every other client
    # waited 250-650 ms (a fuzzer's canary). A request counts CONTROL_SLICE_WEIGHT frames.
    pings = 1_000
    turns = await turns_while_answering(pings)
    assert turns >= pings // (PUBLISH_SLICE_FRAMES // CONTROL_SLICE_WEIGHT) - 1, turns


async def test_requests_that_take_long_let_the_other_connections_run_after_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A request's cost is not known from its frame: 16 subscribes that each replayed a
    # history of 10,000 frames (3-11 ms each) kept every other client waiting ~0.5 s (an
    # outside pass). Here each request "takes" 1.5 slices of time on the clock the reader
    # reads (a fake one: no wall-clock timing).
    ticks = itertools.count()
    fake_time = types.SimpleNamespace(perf_counter=lambda: next(ticks) * CONTROL_SLICE_S * 1.5)
    monkeypatch.setattr(inbound, "time", fake_time)
    pings = 40
    turns = await turns_while_answering(pings)
    assert turns >= pings - 1, turns


async def test_pings_behind_a_request_the_engine_answers_are_answered_a_slice_at_a_time() -> None:
    # While a request waits on the engine (a cluster's Redis), the pings read behind it are
    # answered at once, so that the client's heartbeat is: all 20,000 of a read in one go
    # held every other connection 0.7 s (a review). A slice's worth at once, the rest in turn.
    pings = 1_000
    answer = trio.Event()

    async def stats_from_the_engine(session: Session, message: M.GetStats) -> dict[str, int]:
        await answer.wait()
        return {}

    async with connection() as (session, transport, nursery):
        engine: Any = session.state.engine  # (the memory engine answers nothing itself)
        engine.request_handlers = lambda: {M.GetStats: stats_from_the_engine}
        nursery.start_soon(session.sender.run)
        frames = [control(M.GetStats(id=1))] + [control(M.Ping(data=i)) for i in range(pings)]
        nursery.start_soon(session.inbound.run, frames)
        await trio.testing.wait_all_tasks_blocked()
        early = sum(type(m) is M.Pong for m in transport.messages())
        assert early == PINGS_PER_SCAN  # the heartbeat's, while the request waits
        answer.set()
        turns = 0
        while sum(type(m) is M.Pong for m in transport.messages()) < pings:
            turns += 1
            await trio.lowlevel.checkpoint()
    assert turns >= (pings - early) // PINGS_PER_SCAN - 1, turns


async def test_requests_and_pings_are_answered_in_the_order_they_were_read() -> None:
    async with connection() as (session, transport, nursery):
        nursery.start_soon(session.sender.run)
        nursery.start_soon(
            session.inbound.run,
            [
                control(M.Ping(data="first")),
                control(M.CreateChannel(id=7, channel="ok")),
                control(M.CreateChannel(id=8, channel="")),  # refused: the rest goes on
                control(M.Ping(data="last")),
            ],
        )
        await trio.testing.wait_all_tasks_blocked()
    got = transport.messages()
    assert got[0] == M.Pong(data="first")
    assert isinstance(got[1], M.Reply) and got[1].id == 7
    assert isinstance(got[2], M.Error) and got[2].id == 8
    assert got[3] == M.Pong(data="last")


async def test_publish_for_a_closed_publisher_is_skipped_and_for_an_unknown_one_refused() -> None:
    async with connection() as (session, _transport, nursery):
        nursery.start_soon(session.inbound.run, SETUP)
        await trio.testing.wait_all_tasks_blocked()
        session.close_writer(1)
        # Frames in flight when the publisher closed: skipped, alone and in a run.
        for frames in ([publish(1, 0)], [publish(1, 1), publish(1, 2)]):
            with trio.move_on_after(0) as scope:  # run() blocks on the next read
                await session.inbound.run(frames)
            assert scope.cancelled_caught
        for frames in ([publish(2, 0)], [publish(2, 0), publish(2, 1)]):
            with pytest.raises(ts.ProtocolError, match="publisher 2, which was never opened"):
                await session.inbound.run(frames)
        assert session.state.broker.frames_in == 0


async def test_the_reader_stops_reading_while_a_megabyte_of_answers_is_unwritten() -> None:
    pong_bytes = len(frame_prefix(0)) + len(M.encode_message(M.Pong(data=bytes(BIG_PING_BYTES))))
    answered_before_stop = CONTROL_HIGH_WATER_BYTES // pong_bytes + 1
    pings = [control(M.Ping(data=bytes(BIG_PING_BYTES))) for _ in range(answered_before_stop + 20)]
    assert answered_before_stop < len(pings)
    async with connection() as (session, transport, nursery):
        nursery.start_soon(session.inbound.run, pings)
        await trio.testing.wait_all_tasks_blocked()
        # The sender has not run: the reader answered until over the mark, and waits.
        assert session.outbox.control_bytes == answered_before_stop * pong_bytes
        nursery.start_soon(session.sender.run)
        await trio.testing.wait_all_tasks_blocked()
        assert session.outbox.control_bytes == 0
    assert transport.messages() == [M.Pong(data=bytes(BIG_PING_BYTES))] * len(pings)


async def test_a_ping_over_its_limit_is_a_protocol_error() -> None:
    # Its pong would echo the data: a client that never reads would make the server hold
    # copies of up to max_frame_bytes each.
    fits = control(M.Ping(data=bytes(BIG_PING_BYTES)))
    over = control(M.Ping(data=bytes(PING_FRAME_MAX_BYTES)))
    assert len(fits) <= PING_FRAME_MAX_BYTES < len(over)
    async with connection() as (session, transport, nursery):
        with pytest.raises(ts.ProtocolError, match="a ping frame carries at most 4096 bytes"):
            await session.inbound.run([fits, over])
        nursery.start_soon(session.sender.run)
        await trio.testing.wait_all_tasks_blocked()
    assert transport.messages() == [M.Pong(data=bytes(BIG_PING_BYTES))]


async def test_the_reader_stops_reading_while_its_writers_have_too_much_parked() -> None:
    pong_bytes = len(frame_prefix(0)) + len(M.encode_message(M.Pong(data=1)))
    async with connection() as (session, _transport, nursery):
        outbox = session.outbox
        # As the broker does when full block readers hold this connection's frames back.
        outbox.parked(outbox.max_parked_bytes + 1)
        nursery.start_soon(session.inbound.run, [control(M.Ping(data=1)), control(M.Ping(data=2))])
        await trio.testing.wait_all_tasks_blocked()
        assert outbox.control_bytes == pong_bytes  # the first frame, then no more
        outbox.unparked(pub_id=1, nbytes=1)  # a reader took one: back at the bound
        await trio.testing.wait_all_tasks_blocked()
        assert outbox.control_bytes == 2 * pong_bytes


async def test_a_connection_taken_over_mid_read_publishes_nothing_after_the_count() -> None:
    # A resume counts what the old connection published (the client sends the rest again on
    # the new one). The old connection's reader may be between two slices of a long read
    # then (or waiting for its parked frames to go): the rest of that read must not be
    # published after the count, or those frames reach readers twice.
    async with connection() as (session, _transport, nursery):
        state = session.state
        broker = state.broker
        state.claim_name(session)
        session.resume_token = state.resume.issue(session)
        nursery.start_soon(session.inbound.run, SETUP)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(session.inbound.run, [publish(1, i) for i in range(LONG_READ_FRAMES)])
        while broker.frames_in == 0:
            await trio.lowlevel.checkpoint()
        assert broker.frames_in < LONG_READ_FRAMES  # between two slices
        successor = Session(state, ScriptedTransport())
        successor.name = session.name
        lease = state.resume.take_over(session.resume_token, successor, state.by_name)
        assert lease is not None
        await trio.testing.wait_all_tasks_blocked()
        # The stopped reader sleeps with the server's direct-write queue closed: it is every
        # connection's, and left open it would take their wake-ups.
        assert state.direct_writes is None
    assert broker.frames_in == lease.taken[1]


async def test_a_connection_draining_at_shutdown_publishes_nothing_more_but_reads_on() -> None:
    # The server stops: its readers may take what is buffered, so the connection is still
    # read (credit, pings), but a frame published now might never be acknowledged before it
    # closes, and its writer would send it again to the next server (twice: a soak saw one
    # or two per graceful restart). Refused, it is sent there once.
    async with connection() as (session, transport, nursery):
        nursery.start_soon(session.sender.run)
        nursery.start_soon(session.inbound.run, [*SETUP, publish(1, 0)])
        await trio.testing.wait_all_tasks_blocked()
        broker = session.state.broker
        assert broker.frames_in == 1
        session.close("the server is shutting down", drain=True)
        read = [publish(1, 1), control(M.Ping(data="read on")), publish(1, 2), publish(1, 3)]
        with trio.move_on_after(0) as scope:  # run() blocks on the next read
            await session.inbound.run(read)
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert broker.frames_in == 1
    assert M.Pong(data="read on") in transport.messages()
