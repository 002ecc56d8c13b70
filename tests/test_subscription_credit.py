"""A subscription's credit: when it goes out, and for which frames.

- After a resume, frames the client got from the lost connection and had not returned credit
  for return it to the subscription that continues only if the server counts them in its
  window (the reply's ``held``); to a new subscription, none (crediting frames it never sent
  would let the server put more than the window in flight).
- Credit for a quarter of the window is written at once, not at the application's next yield.

The server is a raw TCP fake that speaks just enough protocol (as in test_client_bad_frames),
so the test sees the wire: the first test's first connection sends a window of frames and
drops, the second answers the resume, sends nothing and counts the CREDIT it gets per
subscription.
"""

from __future__ import annotations

import select
from functools import partial

import pytest
import trio
import trio.testing

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import encode_payload
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import Limits

WINDOW_FRAMES = 4
OLD_SUB, NEW_SUB = 7, 8


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


def welcome(hello: M.Hello) -> bytes:
    """The fake server's answer to ``hello``."""
    return control(
        M.Welcome(
            v=hello.v,
            client_id=1,
            name="r",
            server="fake",
            limits=Limits().to_wire(),
            resume_token="t",
        )
    )


def data(seq: int, sub: int) -> bytes:
    body = F.DATA_HEAD.pack(F.DATA, sub, 0, seq, float(seq), 1) + b"w"
    body += b"".join(encode_payload(seq))
    return frame_prefix(len(body)) + body


@pytest.mark.parametrize(
    ("counted", "taken_waiting", "credited"),
    [
        (None, 0, 0),  # a new subscription (or an older server): none of them
        (WINDOW_FRAMES, 0, WINDOW_FRAMES),  # continued, all counted in its window
        (2, 0, 2),  # only the newest two counted: those
        (WINDOW_FRAMES, 2, WINDOW_FRAMES),  # two taken while it waited: at the reply
    ],
    ids=["not counted", "all counted", "two counted", "two taken while waiting"],
)
async def test_frames_queued_before_a_resume_return_credit_only_if_the_server_counts_them(
    counted: int | None, taken_waiting: int, credited: int
) -> None:
    # The resubscription says how many frames the client got and has not returned credit
    # for (``held``). A server that continues the subscription says how many of them it
    # counts in the window, still in flight: credit goes back for those as they are taken
    # (else the window shrank by them for good), and for no others (else the server would
    # put more than the window in flight). Without a count (a new subscription, an older
    # server), it goes back for none of them.
    connections = 0
    credit = {OLD_SUB: 0, NEW_SUB: 0}
    said_held: list[int | None] = []
    resubscribed = trio.Event()
    may_answer = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        decoder = FrameDecoder(2**20)
        try:
            while chunk := await stream.receive_some():
                decoder.receive_data(chunk)
                for frame in decoder.frames():
                    if frame[0] == F.CREDIT:
                        sub_id, frames = F.parse_counter(frame)
                        credit[sub_id] += frames
                        continue
                    if frame[0] != F.CONTROL:
                        continue
                    message = M.decode_message(frame)
                    if isinstance(message, M.Hello):
                        await stream.send_all(welcome(message))
                    elif isinstance(message, M.Subscribe):
                        result: dict[str, object] = {
                            "sub": OLD_SUB if first else NEW_SUB,
                            "window": WINDOW_FRAMES,
                            "window_bytes": 2**20,
                            "epoch": "e",
                        }
                        if first:  # a window of frames, then the connection is lost
                            await stream.send_all(control(M.Reply(id=message.id, result=result)))
                            await stream.send_all(
                                b"".join(data(seq, OLD_SUB) for seq in range(1, 5))
                            )
                            await trio.sleep(0.2)
                            await stream.aclose()
                            return
                        said_held.append(message.held)
                        resume: dict[str, int | str] = {"kind": "resumed", "recovered": 0}
                        if counted is not None:
                            resume["held"] = counted
                        result["resume"] = resume
                        resubscribed.set()
                        await may_answer.wait()
                        await stream.send_all(control(M.Reply(id=message.id, result=result)))
                    elif isinstance(message, M.Request):
                        # (channels(): an empty list, the round trips below)
                        answer: list[object] | None = (
                            [] if isinstance(message, M.ListChannels) else None
                        )
                        await stream.send_all(control(M.Reply(id=message.id, result=answer)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), handle, 0)
        url = f"tcp://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        with trio.fail_after(20):
            reconnect = ts.Reconnect(initial=0.05)
            async with (
                ts.open_client(url, name="r", reconnect=reconnect) as client,
                client.subscribe("ch", size=WINDOW_FRAMES) as sub,
            ):
                await resubscribed.wait()
                # Taken before the reply: their credit waits for it (no connection to
                # return it on that counts them).
                got = [(await sub.receive()).seq for _ in range(taken_waiting)]
                may_answer.set()
                await client.channels()  # a round trip: the reply came before its answer
                got += [(await sub.receive()).seq for _ in range(WINDOW_FRAMES - taken_waiting)]
                await client.channels()  # any CREDIT the reads sent has arrived
        nursery.cancel_scope.cancel()
    assert said_held == [WINDOW_FRAMES]  # got 4, took none when it asked
    assert got == [1, 2, 3, 4]
    assert credit[NEW_SUB] == credited
    assert sub.statistics().frames == WINDOW_FRAMES  # all counted as consumed


async def test_credit_is_on_the_wire_before_the_application_yields() -> None:
    # A reader working through a window of queued messages without yielding: the CREDIT for
    # the first quarter must reach the server now, so it refills the window while the reader
    # works, not after the reader's last message (a round trip the reader would idle through).
    accepted: list[trio.SocketStream] = []
    window_sent = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        decoder = FrameDecoder(2**20)
        while not window_sent.is_set():
            chunk = await stream.receive_some()
            if not chunk:
                return
            decoder.receive_data(chunk)
            for frame in decoder.frames():
                if frame[0] != F.CONTROL:
                    continue
                message = M.decode_message(frame)
                if isinstance(message, M.Hello):
                    await stream.send_all(welcome(message))
                elif isinstance(message, M.Subscribe):
                    result = {"sub": NEW_SUB, "window": WINDOW_FRAMES, "window_bytes": 2**20}
                    await stream.send_all(control(M.Reply(id=message.id, result=result)))
                    frames = b"".join(data(seq, NEW_SUB) for seq in range(1, 5))
                    await stream.send_all(frames)
                    window_sent.set()
        await trio.sleep_forever()  # reads nothing more: what the client writes stays queued

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), handle, 0)
        url = f"tcp://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        with trio.fail_after(20):
            async with (
                ts.open_client(url, name="r") as client,
                client.subscribe("ch", size=WINDOW_FRAMES) as sub,
            ):
                await window_sent.wait()
                await trio.testing.wait_all_tasks_blocked()  # the client has read them
                assert sub.statistics().buffered == WINDOW_FRAMES
                server_side = accepted[0].socket
                assert not select.select([server_side.fileno()], [], [], 0)[0]
                # A quarter of the window (one message here), taken without a checkpoint.
                assert sub.receive_nowait().seq == 1
                assert select.select([server_side.fileno()], [], [], 0)[0], (
                    "the CREDIT waits for the application's next yield"
                )
                decoder = FrameDecoder(2**20)
                decoder.receive_data(await accepted[0].receive_some())
                assert [F.parse_counter(frame) for frame in decoder.frames()] == [(NEW_SUB, 1)]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("wire_kind", "gap_kind"),
    [("resumed", "resumed"), ("reset", "reset"), ("caught_up", "reset"), (None, "reset")],
)
async def test_a_resume_kind_the_client_does_not_know_is_a_reset(
    wire_kind: str | None, gap_kind: str
) -> None:
    # A newer server may answer a resume with a kind this client does not know: the gap says
    # "reset" (nothing claimed about what was lost), not a third kind that Gap's type, and
    # every application's match on it, does not have.
    connections = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        decoder = FrameDecoder(2**20)
        try:
            while chunk := await stream.receive_some():
                decoder.receive_data(chunk)
                for frame in decoder.frames():
                    if frame[0] != F.CONTROL:
                        continue
                    message = M.decode_message(frame)
                    if isinstance(message, M.Hello):
                        await stream.send_all(welcome(message))
                    elif isinstance(message, M.Subscribe):
                        result: dict[str, object] = {
                            "sub": OLD_SUB if first else NEW_SUB,
                            "window": WINDOW_FRAMES,
                            "window_bytes": 2**20,
                            "epoch": "e",
                        }
                        if not first:
                            resume = {"recovered": 0}
                            if wire_kind is not None:
                                resume["kind"] = wire_kind  # type: ignore[assignment]
                            result["resume"] = resume
                        await stream.send_all(control(M.Reply(id=message.id, result=result)))
                        if first:
                            await stream.send_all(data(1, OLD_SUB))
                            await trio.sleep(0.2)
                            await stream.aclose()
                            return
                        await stream.send_all(data(5, NEW_SUB))
                    elif isinstance(message, M.Request):
                        await stream.send_all(control(M.Reply(id=message.id, result=None)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"), handle, 0)
        url = f"tcp://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        with trio.fail_after(20):
            reconnect = ts.Reconnect(initial=0.05)
            async with (
                ts.open_client(url, name="r", reconnect=reconnect) as client,
                client.subscribe("ch", size=WINDOW_FRAMES) as sub,
            ):
                first = await sub.receive()
                after = await sub.receive()
        nursery.cancel_scope.cancel()
    assert (first.seq, first.gap) == (1, None)
    assert after.seq == 5 and after.gap is not None
    assert after.gap.kind == gap_kind
    assert after.gap.lost == (0 if gap_kind == "resumed" else None)
