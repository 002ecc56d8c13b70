"""Hostile bytes from the wire, end to end: refused with a reason, quickly, losing nothing else.

The server side: an envelope with a value that cannot even be formatted (a 64 KiB bignum
``op``, a 5,000-digit id) closes that connection with the ProtocolError's text and one log
line, never a traceback. The client side: a payload beyond the reader's PayloadLimits raises
PayloadRefused from that one receive, quickly, and the subscription goes on.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cbor2
import pytest
import trio

import trio_stream as ts
from trio_stream._protocol import frames as F
from trio_stream._protocol import messages as M
from trio_stream._protocol.codec import EncodedPayload
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION
from trio_stream._transport.connect import split_url

TIMEOUT_S = 10.0


def framed(body: bytes) -> bytes:
    return frame_prefix(len(body)) + body


def bignum(nbytes: int) -> bytes:
    return b"\xc2\x5a" + struct.pack(">I", nbytes) + b"\xff" * nbytes


HELLO = framed(M.encode_message(M.Hello(v=PROTOCOL_VERSION, name="rude")))


@asynccontextmanager
async def raw_tcp(url: str) -> AsyncIterator[trio.SocketStream]:
    _, host, port, _ = split_url(url)
    async with await trio.open_tcp_stream(host, port) as stream:
        yield stream


async def messages_until_closed(stream: trio.SocketStream) -> list[M.ControlMessage]:
    decoder = FrameDecoder(2**26)
    out: list[M.ControlMessage] = []
    while data := await stream.receive_some(65536):
        decoder.receive_data(data)
        out.extend(M.decode_message(f) for f in decoder.frames() if f[0] == F.CONTROL)
    return out


UNFORMATTABLE = {
    # Before the hello, frames are at most 64 KiB (HELLO_MAX_FRAME_BYTES): larger ones are
    # refused from their length prefix, never decoded (test_preauth_memory.py).
    "16 KiB bignum op before hello": framed(b"\x01\xa1bop" + bignum(16 * 1024)),
    "60 KiB text op before hello": framed(
        b"\x01\xa1bop" + b"\x7a" + struct.pack(">I", 60 * 1024) + b"x" * 60 * 1024
    ),
    "64 KiB bignum op after hello": HELLO + framed(b"\x01\xa1bop" + bignum(64 * 1024)),
    "1 MiB text op after hello": HELLO
    + framed(b"\x01\xa1bop" + b"\x7a" + struct.pack(">I", 2**20) + b"x" * 2**20),
    "5000-digit rpc id after hello": HELLO + framed(b"\x01\xa2bopdcallbid" + bignum(2100)),
    # 4 s and 1.2 GB to decode at 16 MiB (a fuzzer); refused after 32,768 items' heads.
    "4 MiB of empty maps after hello": HELLO
    + framed(b"\x01\xa2bopebogusdlist\x9a" + struct.pack(">I", 4 * 2**20) + b"\xa0" * 4 * 2**20),
}


@pytest.mark.parametrize("case", list(UNFORMATTABLE), ids=list(UNFORMATTABLE))
async def test_unformattable_values_close_with_a_reason_and_one_log_line(
    server: ts.Server, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    assert server.tcp_url
    caplog.set_level(logging.INFO, logger="trio_stream")
    with trio.fail_after(TIMEOUT_S):
        async with raw_tcp(server.tcp_url) as stream:
            await stream.send_all(UNFORMATTABLE[case])
            received = await messages_until_closed(stream)
    # The last word is an error (refused handshake) or a goodbye, with the ProtocolError text.
    last = received[-1]
    reason = last.message if isinstance(last, M.Error) else getattr(last, "reason", "")
    assert isinstance(last, M.Error | M.Goodbye)
    assert "ProtocolError" in (getattr(last, "type", "") + reason)
    if "empty maps" in case:  # refused before anything is decoded
        assert "more than 32768 CBOR items" in reason
    else:
        assert "not allowed in a control message" in reason or "unknown control" in reason
    assert len(reason) < 400
    protocol_lines = [r for r in caplog.records if "control message" in r.getMessage()]
    assert len(protocol_lines) == 1
    assert all(r.exc_info is None and len(r.getMessage()) < 500 for r in caplog.records)


async def test_payload_bomb_is_refused_quickly_and_the_subscription_goes_on(
    server: ts.Server,
) -> None:
    assert server.tcp_url
    # 20,000 int keys of one hash: 1.6 s per decode without the limit.
    bomb = b"\xb9\x4e\x20" + b"".join(cbor2.dumps(i * (2**61 - 1)) + b"\x00" for i in range(20_000))
    with trio.fail_after(TIMEOUT_S):
        async with (
            ts.open_client(server.tcp_url, name="w") as w,
            ts.open_client(server.tcp_url, name="r") as r,
        ):
            await w.create_channel("c")
            async with r.subscribe("c", policy="block", size=4, window=2) as sub:
                async with w.publisher("c") as pub:
                    await pub.wait_for_readers()
                    for _ in range(3):  # more than the window: credit must come back
                        await pub.send(EncodedPayload(bomb))
                    await pub.send({"after": "the bombs"})
                for _ in range(3):
                    start = time.perf_counter()
                    with pytest.raises(ts.PayloadRefused, match="max_key_collisions"):
                        await sub.receive()
                    assert time.perf_counter() - start < 0.1
                assert (await sub.receive()).data == {"after": "the bombs"}


async def test_the_frames_lost_before_a_refused_payload_count_on_the_next_message(
    server: ts.Server,
) -> None:
    # A refused payload raises instead of being a message: the drops it carried were in
    # sub.lost but in no message's lost, so a reader adding up msg.lost missed them.
    assert server.tcp_url
    with trio.fail_after(TIMEOUT_S):
        async with (
            ts.open_client(server.tcp_url, name="w") as w,
            ts.open_client(server.tcp_url, name="r") as r,
        ):
            await w.create_channel("c")
            async with (
                r.subscribe("c", policy="drop_oldest", size=1, window=1) as sub,
                w.publisher("c") as pub,
            ):
                await pub.wait_for_readers()
                for value in ["first", 1, 2, 3, 2**20000]:  # the last one refused
                    await pub.send(value)
                await pub.wait_acknowledged()
                assert (await sub.receive()).data == "first"  # in flight: nothing lost
                with pytest.raises(ts.PayloadRefused, match="max_bignum_bytes"):
                    await sub.receive()  # 1, 2 and 3 were dropped before it
                await pub.send("next")
                message = await sub.receive()
    assert (message.data, message.lost, sub.lost) == ("next", 3, 3)


async def test_raised_payload_limits_let_the_same_payload_through(server: ts.Server) -> None:
    assert server.tcp_url
    big = 2**20000  # 2,501 bytes: beyond the default max_bignum_bytes
    limits = ts.PayloadLimits(max_bignum_bytes=4096)
    with trio.fail_after(TIMEOUT_S):
        async with (
            ts.open_client(server.tcp_url, name="w") as w,
            ts.open_client(server.tcp_url, name="r", payload_limits=limits) as r,
        ):
            await w.create_channel("c")
            async with r.subscribe("c", policy="block", size=4) as sub:
                await w.publish("c", big)
                assert (await sub.receive()).data == big


async def test_sync_client_takes_payload_limits_and_goes_on_after_a_refusal(
    server: ts.Server,
) -> None:
    url = server.tcp_url or ""
    big = 2**20000

    def scenario() -> None:
        raised = ts.PayloadLimits(max_bignum_bytes=4096)
        with (
            ts.SyncClient(url, name="w") as w,
            ts.SyncClient(url, name="r") as r,
            ts.SyncClient(url, name="r2", payload_limits=raised) as r2,
        ):
            w.create_channel("c")
            with r.subscribe("c", policy="block", size=4) as sub, r2.subscribe("c") as sub2:
                w.publish("c", big)
                w.publish("c", "next")
                with pytest.raises(ts.PayloadRefused, match=r"max_bignum_bytes \(1024\)"):
                    sub.get(timeout=TIMEOUT_S)
                assert sub.get(timeout=TIMEOUT_S).data == "next"
                assert sub2.get(timeout=TIMEOUT_S).data == big

    with trio.fail_after(60):
        await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
