"""Listings made a step at a time (listing.py): the others run between steps, and the
answer is the records of what is still there when its step runs."""

from __future__ import annotations

from typing import Any

import trio

from trio_stream._protocol.messages import EncodedItems, Reply, decode_message, list_reply_body
from trio_stream._server.listing import encode_stepwise


def records_of(items: EncodedItems) -> list[Any]:
    reply = decode_message(bytearray(list_reply_body(1, items)))
    assert isinstance(reply, Reply)
    return list(reply.result)


async def test_a_listing_lets_the_others_run_between_its_steps() -> None:
    turns = 0
    listed = trio.Event()

    async def other() -> None:
        nonlocal turns
        while not listed.is_set():
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()  # (it starts)
        before = turns
        items = await encode_stepwise(range(5000), lambda v: {"v": v}, step=1000)
        during = turns - before
        listed.set()
    assert records_of(items) == [{"v": v} for v in range(5000)]
    # Once per scheduler batch, as the listing takes a step per batch: before or after the
    # step in each (trio draws the order at random), so at least once between any two of
    # the five steps (5 was asked first, and a random order gave 4 one run in a few).
    assert during >= 4


async def test_what_is_gone_before_its_step_is_left_out() -> None:
    present = dict.fromkeys(range(10), True)

    def record(value: int) -> dict[str, Any] | None:
        if value == 2:
            # Gone while the listing ran, between its steps (values 6 and 7 are in the next
            # step: each step reads what is there when it runs).
            del present[6], present[7]
        return {"v": value} if value in present else None

    items = await encode_stepwise(list(present), record, step=4)
    assert [r["v"] for r in records_of(items)] == [0, 1, 2, 3, 4, 5, 8, 9]
    assert items.count == 8
