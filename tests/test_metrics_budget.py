"""What /metrics may cost: the kept text (a fake clock that the render advances) and the
turns per address (trio's jumping clock). Over real sockets: test_http.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_stream._server.metrics_budget import (
    INTERVAL_S,
    MAX_AGE_S,
    MAX_WAITING,
    RENDER_SHARE,
    TURNS_KEPT,
    MetricsBudget,
    MetricsTurns,
)


class FakeRenders:
    """A clock and a render in two parts that together take ``cost`` seconds of it,
    numbering its texts."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cost = 0.001
        self.starts: list[float] = []
        self.costs: list[float] = []

    def clock(self) -> float:
        return self.now

    def render(self) -> Iterator[bytes]:
        self.starts.append(self.now)
        self.costs.append(self.cost)
        number = len(self.starts)
        for part in (b"text ", str(number).encode()):
            self.now += self.cost / 2
            yield part


async def test_the_text_is_served_again_while_younger_than_its_cost_over_the_share() -> None:
    fake = FakeRenders()
    budget = MetricsBudget(fake.render, fake.clock)
    assert await budget.text() == b"text 1"
    fresh_for = fake.cost / RENDER_SHARE
    fake.now = fake.starts[0] + fresh_for * 0.99
    assert await budget.text() == b"text 1"
    fake.now = fake.starts[0] + fresh_for * 1.01
    assert await budget.text() == b"text 2"


async def test_a_slow_render_is_kept_no_longer_than_max_age() -> None:
    fake = FakeRenders()
    fake.cost = MAX_AGE_S  # would be kept for 20 s by its cost alone
    budget = MetricsBudget(fake.render, fake.clock)
    assert await budget.text() == b"text 1"
    fake.now = fake.starts[0] + MAX_AGE_S * 0.99
    assert await budget.text() == b"text 1"
    fake.now = fake.starts[0] + MAX_AGE_S
    assert await budget.text() == b"text 2"


async def test_the_others_time_between_a_renders_parts_is_not_its_cost() -> None:
    # The server runs other tasks between the parts (a render of 100,000 channels took
    # ~0.5 s in one go): only the parts' own time counts, or a busy server would keep its
    # text for MAX_AGE_S whatever the render cost.
    fake = FakeRenders()
    budget = MetricsBudget(fake.render, fake.clock)
    rendered = trio.Event()

    async def others() -> None:
        while not rendered.is_set():
            fake.now += 0.5
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(others)
        assert await budget.text() == b"text 1"
        rendered.set()
    fake.now += fake.cost / RENDER_SHARE  # well past the render's start: stale by its cost
    assert await budget.text() == b"text 2"


async def test_requests_during_a_render_get_its_text_and_after_a_cancelled_one_render() -> None:
    fake = FakeRenders()
    budget = MetricsBudget(fake.render, fake.clock)
    texts: list[bytes] = []

    async def ask() -> None:
        texts.append(await budget.text())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
    assert texts == [b"text 1"] * 3 and len(fake.starts) == 1
    fake.now += MAX_AGE_S
    texts.clear()
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as first:
            nursery.start_soon(ask)  # waits for the render below
            first.cancel()  # ... which is cancelled at its first part
            await budget.text()
    assert texts == [b"text 3"]  # (not the first render's text: it was cancelled)
    assert len(fake.starts) == 3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=0.3),  # the wait before a request
            st.floats(min_value=0.0, max_value=MAX_AGE_S * RENDER_SHARE),  # a render's cost
        ),
        min_size=1,
        max_size=200,
    )
)
def test_renders_take_at_most_their_share_and_no_text_is_older_than_max_age(
    requests: list[tuple[float, float]],
) -> None:
    fake = FakeRenders()
    budget = MetricsBudget(fake.render, fake.clock)
    for wait, cost in requests:
        fake.now += wait
        fake.cost = cost
        asked_at = fake.now
        text = trio.run(budget.text)
        number = int(text.split()[1])
        # The text served was rendered at most MAX_AGE_S before the request (or for it).
        assert asked_at - fake.starts[number - 1] <= MAX_AGE_S
    # Every render but the last was followed by its cost / RENDER_SHARE without another.
    spent = sum(fake.costs[:-1])
    span = fake.starts[-1] - fake.starts[0]
    assert spent <= RENDER_SHARE * span + 1e-9


async def test_one_address_is_answered_once_an_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    turns = MetricsTurns()
    start = trio.current_time()
    served: list[float] = []
    for _ in range(5):
        await turns.wait_turn("10.0.0.1")
        served.append(trio.current_time() - start)
    assert served == pytest.approx([i * INTERVAL_S for i in range(5)])


async def test_requests_waiting_together_are_answered_in_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    turns = MetricsTurns()
    start = trio.current_time()
    served: list[float] = []

    async def ask() -> None:
        await turns.wait_turn("10.0.0.1")
        served.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(ask)
    assert sorted(served) == pytest.approx([i * INTERVAL_S for i in range(4)])


async def test_an_address_is_not_held_back_by_another_or_by_its_own_past(
    autojump_clock: trio.testing.MockClock,
) -> None:
    turns = MetricsTurns()
    for _ in range(3):
        await turns.wait_turn("10.0.0.1")
    start = trio.current_time()
    await turns.wait_turn("10.0.0.2")
    assert trio.current_time() == start  # another address: at once
    await trio.sleep(INTERVAL_S * 2)
    start = trio.current_time()
    await turns.wait_turn("10.0.0.1")
    assert trio.current_time() == start  # its turn has come meanwhile


async def test_addresses_whose_turn_has_come_are_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    turns = MetricsTurns()
    for i in range(TURNS_KEPT * 3):
        await turns.wait_turn(f"10.0.{i // 256}.{i % 256}")
        await trio.sleep(INTERVAL_S)
    # (the one place a test reads the table: its size is the point)
    assert len(turns._next_turn) <= TURNS_KEPT + 1


async def test_requests_over_the_waiting_bound_are_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A waiting request's connection is not read: abandoned ones booked turns ever further
    # ahead and held connections that the per-address limit counts (a review).
    turns = MetricsTurns()
    start = trio.current_time()
    answers: list[tuple[bool, float]] = []

    async def ask() -> None:
        answered = await turns.wait_turn("10.0.0.1")
        answers.append((answered, trio.current_time() - start))

    async with trio.open_nursery() as nursery:
        for _ in range(MAX_WAITING + 3):
            nursery.start_soon(ask)
    refused = [at for answered, at in answers if not answered]
    assert refused == [0.0, 0.0, 0.0]  # at once, not after the others
    served = sorted(at for answered, at in answers if answered)
    assert served == pytest.approx([i * INTERVAL_S for i in range(MAX_WAITING)])
    assert await turns.wait_turn("10.0.0.1")  # the address is served again afterwards
