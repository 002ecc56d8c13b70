"""Credit: when a reader's CREDIT leaves, and after a resume, that frames still queued from the
lost connection return no credit to the new subscription (the new one never sent them;
crediting them would let the server put more than the window in flight).

The server is a raw TCP fake that speaks just enough protocol (as in test_client_bad_frames):
the first connection sends a window of frames and drops; the second answers the resume and
sends nothing, and counts the CREDIT it gets per subscription.
"""

from __future__ import annotations

import socket
import threading
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


def control(message: M.Message) -> bytes:
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


def fake_server_in_a_thread(listener: socket.socket, credited: threading.Event) -> None:
    """Welcome one client, answer its subscribe with a window of frames, and set ``credited``
    when a CREDIT arrives: blocking sockets in a thread of their own, so the CREDIT is seen
    even while the client's trio thread never yields."""
    connection, _ = listener.accept()
    decoder = FrameDecoder(2**20)
    with connection:
        while chunk := connection.recv(65536):
            decoder.receive_data(chunk)
            for frame in decoder.frames():
                if frame[0] == F.CREDIT:
                    credited.set()
                    return
                if frame[0] != F.CONTROL:
                    continue
                message = M.decode_message(frame)
                if isinstance(message, M.Hello):
                    limits = Limits().to_wire()
                    welcome = M.Welcome(
                        v=message.v,
                        client_id=1,
                        name="r",
                        server="fake",
                        limits=limits,
                        resume_token="t",
                    )
                    connection.sendall(control(welcome))
                elif isinstance(message, M.Subscribe):
                    result = {
                        "sub": NEW_SUB,
                        "window": WINDOW_FRAMES,
                        "window_bytes": 2**20,
                        "epoch": "e",
                    }
                    connection.sendall(control(M.Reply(id=message.id, result=result)))
                    connection.sendall(
                        b"".join(data(seq, NEW_SUB) for seq in range(1, WINDOW_FRAMES + 1))
                    )


async def test_a_credit_leaves_at_once_not_when_the_busy_reader_next_yields() -> None:
    # A reader that takes buffered messages does not yield between them (every 256th only).
    # Its CREDIT (due after a quarter of the window) must not wait for that yield: queued for
    # the sender task, it left only once the buffer ran dry, and the server, out of window,
    # had stopped sending long before (the window ran dry on every turn of a busy reader).
    credited = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        thread = threading.Thread(
            target=fake_server_in_a_thread, args=(listener, credited), daemon=True
        )
        thread.start()
        with trio.fail_after(20):
            async with (
                ts.open_client(f"tcp://127.0.0.1:{port}", name="r", reconnect=False) as client,
                client.subscribe("ch", size=WINDOW_FRAMES) as sub,
            ):
                # A quarter of the window (WINDOW_FRAMES // 4 = 1) is due after each message;
                # receive() returns a buffered message without yielding, so from here on this
                # thread blocks without letting any other trio task run.
                first = await sub.receive()
                # Blocking the trio thread on purpose: only a CREDIT written by receive()
                # itself can reach the fake server now.
                sent_at_once = credited.wait(timeout=10)
        thread.join(timeout=10)
    assert first.seq == 1
    assert sent_at_once, "the CREDIT waited for the reader to yield"
