"""Credit after a resume: frames still queued from the lost connection return no credit to the
new subscription (the new one never sent them; crediting them would let the server put more
than the window in flight).

The server is a raw TCP fake that speaks just enough protocol (as in test_client_bad_frames):
the first connection sends a window of frames and drops; the second answers the resume and
sends nothing, and counts the CREDIT it gets per subscription.
"""

from __future__ import annotations

from functools import partial

import trio

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
                        welcome = M.Welcome(
                            v=message.v,
                            client_id=1,
                            name="r",
                            server="fake",
                            limits=Limits().to_wire(),
                            resume_token="t",
                        )
                        await stream.send_all(control(welcome))
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
