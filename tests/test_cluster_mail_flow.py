"""Two nodes' mail flowing for real time (a mock clock): cluster_mail's Mailer on one node,
its Inbox on the other, each with its own tasks as in cluster_rpc (a bus task, a job task,
the watch), over in-order channels that lose messages in flight (counted as received, as on
a link that died), lose acknowledgements, let the receiver go deaf (PUBLISH says 0), and
delay every step at random so that acknowledgements race the sender's awaits. Each envelope
is encoded at publish time, as the real bus does.

The invariants: what the receiver takes is in order and once; nothing is lost while the
sender keeps it; a message the sender let go (past a small kept window) is told lost with a
later one; once the losses stop, everything arrives and the sender keeps nothing (go-back-N
never waits for good). The model follows the change's outside review, which found the
first-contact loss it checks.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, cast
from unittest import mock

import cbor2
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_stream._engine import cluster_mail
from trio_stream._engine.cluster_mail import Inbox, Mailer
from trio_stream._engine.redis_control import ControlBus

Job = Callable[[], Awaitable[None]]
WATCH_S = 0.5  # cluster_rpc.WATCH_INTERVAL_S
SETTLE_S = 120.0  # of mock time, once the losses stopped


class Flow:
    """Sender node "s" posting ``count`` answers to receiver node "r"."""

    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.p_loss = rng.choice([0.0, 0.05, 0.2, 0.4])
        self.p_ack_loss = rng.choice([0.0, 0.1, 0.5])
        self.p_deaf = rng.choice([0.0, 0.05, 0.2])
        self.count = rng.randint(1, 200)
        self.sizes = [rng.choice([64, 64, 1000, 200_000]) for _ in range(self.count)]
        self.lossy = True
        self.deaf = False
        self.to_r, self.from_s = trio.open_memory_channel[bytes](10**6)
        self.to_s, self.from_r = trio.open_memory_channel[bytes](10**6)
        self.s_jobs_in, self.s_jobs = trio.open_memory_channel[Job](10**6)
        self.r_jobs_in, self.r_jobs = trio.open_memory_channel[Job](10**6)
        self.mailer = Mailer(cast(ControlBus, self), epoch="s-run", clock=trio.current_time)
        self.inbox = Inbox(trio.current_time)
        self.taken: list[tuple[int, bool]] = []
        self.acking = self.retrying = False
        self.earlier_runs: list[list[tuple[int, bool]]] = []  # the receiver's, if restarted

    async def pause(self) -> None:
        await trio.sleep(self.rng.random() * 0.003)

    # -- the sender's bus (ControlBus's two calls the mailer makes) --------------------------
    async def publish(self, kind: str, body: Any, *, to: str | None = None) -> int:
        await self.pause()
        data = cbor2.dumps(body)  # now: what Redis has is the bytes of this moment
        if self.deaf:
            return 0
        if not (self.lossy and self.rng.random() < self.p_loss):
            self.to_r.send_nowait(data)
        await self.pause()
        return 1  # lost or not, counted as received

    async def listening(self, node: str) -> bool:
        await self.pause()
        return not self.deaf

    # -- the receiver's side ------------------------------------------------------------------
    def send_acks(self) -> None:
        if self.acking:
            return
        self.acking = True

        async def send() -> None:
            self.acking = False
            for ack in self.inbox.acks():
                await self.pause()
                if self.lossy and self.rng.random() < self.p_ack_loss:
                    continue
                self.to_s.send_nowait(cbor2.dumps(ack.body))

        self.r_jobs_in.send_nowait(send)

    async def receiver_bus(self) -> None:
        async for data in self.from_s:
            await self.pause()
            opened = self.inbox.open("s", cbor2.loads(data))
            if self.inbox.urgent:
                self.send_acks()
            if opened is not None:
                self.taken.append(opened)

    async def receiver_watch(self) -> None:
        while True:
            await trio.sleep(WATCH_S)
            if self.inbox.due:
                self.send_acks()

    # -- the sender's side --------------------------------------------------------------------
    async def sender_bus(self) -> None:
        async for data in self.from_r:
            await self.pause()
            if self.mailer.acknowledged("r", cbor2.loads(data)):

                async def resend() -> None:
                    await self.mailer.resend("r")

                self.s_jobs_in.send_nowait(resend)

    async def sender_watch(self) -> None:
        while True:
            await trio.sleep(WATCH_S)
            if self.mailer.pending and not self.retrying:
                self.retrying = True

                async def retry() -> None:
                    try:
                        await self.mailer.retry(())
                    finally:
                        self.retrying = False

                self.s_jobs_in.send_nowait(retry)

    async def produce(self) -> None:
        for number in range(self.count):
            await trio.sleep(self.rng.choice([0, 0, 0.001, 0.01, 0.3]))
            if self.rng.random() < self.p_deaf:
                self.deaf = not self.deaf

            async def post(number: int = number) -> None:
                await self.mailer.post("answer", number, "r", size=self.sizes[number])

            self.s_jobs_in.send_nowait(post)
        await trio.sleep(1)
        self.lossy = self.deaf = False

    async def restart_receiver(self, after_s: float) -> None:
        """The receiving node killed and started again under its name: what was on its way
        to the old process is lost (counted as received), and the new one knows nothing."""
        await trio.sleep(after_s)
        while True:
            try:
                self.from_s.receive_nowait()
            except trio.WouldBlock:
                break
        self.inbox = Inbox(trio.current_time)
        self.earlier_runs.append(self.taken)
        self.taken = []

    def done(self) -> bool:
        return bool(self.taken) and self.taken[-1][0] == self.count - 1 and not self.mailer.pending

    async def run(self, restart_after_s: float | None = None) -> None:
        async with trio.open_nursery() as nursery:
            if restart_after_s is not None:
                nursery.start_soon(self.restart_receiver, restart_after_s)
            for task in (self.receiver_bus, self.receiver_watch, self.sender_bus):
                nursery.start_soon(task)
            nursery.start_soon(self.sender_watch)
            nursery.start_soon(run_jobs, self.s_jobs)
            nursery.start_soon(run_jobs, self.r_jobs)
            await self.produce()
            with trio.move_on_after(SETTLE_S):
                while not self.done():  # noqa: ASYNC110 - a state of two nodes, looked at
                    await trio.sleep(WATCH_S)
            nursery.cancel_scope.cancel()


async def run_jobs(jobs: trio.MemoryReceiveChannel[Job]) -> None:
    async for job in jobs:  # one at a time, in order: the engine's job task
        await job()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.booleans())
@example(302, True).via("the first messages lost and let go, untold (CI drew it)")
@example(1231, True).via("the first message lost and let go, untold")
@example(3262, True).via("the first message lost and let go, untold")
def test_mail_between_two_nodes_arrives_in_order_once_and_tells_what_it_lost(
    seed: int, small_window: bool
) -> None:
    flow = Flow(seed)
    # A few large answers then pass what is kept: what was lost may have been let go.
    window = 300_000 if small_window else cluster_mail.MAX_UNACKED_BYTES
    with mock.patch.object(cluster_mail, "MAX_UNACKED_BYTES", window):
        trio.run(flow.run, clock=trio.testing.MockClock(autojump_threshold=0))
    got = [number for number, _ in flow.taken]
    assert got == sorted(set(got)), got  # in order, once
    assert got and got[-1] == flow.count - 1, got  # not stalled
    assert flow.mailer.pending == set()  # nothing kept for good
    missing = sorted(set(range(flow.count)) - set(got))
    if not small_window:
        assert not missing and not any(lost for _, lost in flow.taken), (missing, flow.taken)
    elif missing:  # let go past the window: told with a later one
        assert any(lost and number > missing[0] for number, lost in flow.taken), missing


def test_the_flow_loses_for_real() -> None:
    # The model is no stand-in that loses nothing: in one fixed run, messages and
    # acknowledgements were lost and the receiver went deaf, and all arrived all the same.
    flow = Flow(7)
    assert (flow.p_loss, flow.p_ack_loss) != (0.0, 0.0)
    trio.run(flow.run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [number for number, _ in flow.taken] == list(range(flow.count))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.floats(0.0, 5.0))
def test_a_restarted_receiver_gets_the_rest_in_order_and_is_told_nothing_lost(
    seed: int, restart_after_s: float
) -> None:
    # Nothing is let go (the sender keeps all it has not had acknowledged): each run of the
    # receiver takes what it takes in order and once, between them every message arrives,
    # and neither is told a loss (a told loss ends every call between the two nodes).
    flow = Flow(seed)
    trio.run(flow.run, restart_after_s, clock=trio.testing.MockClock(autojump_threshold=0))
    runs = [*flow.earlier_runs, flow.taken]
    for taken in runs:
        got = [number for number, _ in taken]
        assert got == sorted(set(got)), got
        assert not any(lost for _, lost in taken), taken
    assert {number for taken in runs for number, _ in taken} == set(range(flow.count))
    assert flow.mailer.pending == set()
