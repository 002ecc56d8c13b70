"""A subscription's credit: when it goes out, and for which frames.

- After a resume, frames still queued from the lost connection return no credit to the new
  subscription (the new one never sent them; crediting them would let the server put more
  than the window in flight).
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


async def test_frames_queued_before_a_resume_return_no_credit_to_the_new_subscription() -> None:
    connections = 0
    credit = {OLD_SUB: 0, NEW_SUB: 0}
    resubscribed = trio.Event()

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
                        result = {
                            "sub": OLD_SUB if first else NEW_SUB,
                            "window": WINDOW_FRAMES,
                            "window_bytes": 2**20,
                            "epoch": "e",
                        }
                        if not first:
                            result["resume"] = {"kind": "resumed", "recovered": 0}
                        await stream.send_all(control(M.Reply(id=message.id, result=result)))
                        if first:  # a window of frames, then the connection is lost
                            await stream.send_all(
                                b"".join(data(seq, OLD_SUB) for seq in range(1, 5))
                            )
                            await trio.sleep(0.2)
                            await stream.aclose()
                            return
                        resubscribed.set()
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
                await resubscribed.wait()
                got = [(await sub.receive()).seq for _ in range(WINDOW_FRAMES)]
                await trio.sleep(0.2)  # any CREDIT the reads sent has arrived
        nursery.cancel_scope.cancel()
    assert got == [1, 2, 3, 4]
    assert credit[NEW_SUB] == 0, "CREDIT on the new subscription for frames it never sent"
    assert sub.statistics().frames == WINDOW_FRAMES  # still counted as consumed


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
