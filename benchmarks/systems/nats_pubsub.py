"""NATS core pub/sub through nats-py (asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from benchmarks.control import WorkerControl
from benchmarks.jobs import PublishJob, PublishResult, ReadJob, ReadResult
from benchmarks.measure import PublishPlan, ReaderSink, seconds_until
from benchmarks.payload import codec_for
from benchmarks.systems.base import LOOPBACK

# nats-py buffers publishes and writes them from a flusher task; a periodic flush() (a
# PING/PONG round trip) keeps a flooding publisher from running far ahead of the server.
FLUSH_EVERY_FRAMES = 1000
FLUSH_EVERY_BYTES = 8 * 2**20
FLUSH_TIMEOUT_S = 10
CLOSE_TIMEOUT_S = 5.0
# The server's default max_payload (1 MB) is below a CBOR-encoded 1 MiB array.
SERVER_CONFIG = "max_payload: 8MB\n"


async def _connect(url: str, notes: list[str], closed: asyncio.Event) -> Client:
    async def on_error(exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text not in notes:  # a slow consumer reports once per dropped message
            notes.append(text)

    async def on_closed() -> None:
        closed.set()

    # No reconnect: a reader the server drops as a slow consumer must show up as such.
    return await nats.connect(
        url, allow_reconnect=False, error_cb=on_error, closed_cb=on_closed, connect_timeout=10
    )


async def _close(client: Client) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)


class NatsPubSub:
    name = "nats"

    def server_command(self, port: int, workdir: Path) -> list[str]:
        config = workdir / "nats.conf"
        config.write_text(SERVER_CONFIG)
        return ["nats-server", "-a", LOOPBACK, "-p", str(port), "-c", str(config)]

    def url(self, port: int) -> str:
        return f"nats://{LOOPBACK}:{port}"

    def publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        return asyncio.run(self._publish(url, job, ctl))

    def read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        return asyncio.run(self._read(url, job, ctl))

    async def _publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        notes: list[str] = []
        client = await _connect(url, notes, asyncio.Event())
        try:
            ctl.ready()
            plan = PublishPlan(job, await asyncio.to_thread(ctl.wait_timing))
            codec = codec_for(job.payload)
            frames = nbytes = 0
            try:
                while (due := plan.next_due_ns()) is not None:
                    if due:
                        await asyncio.sleep(seconds_until(due))
                    data = codec.encode(plan.make())
                    await client.publish(job.channel, data)
                    frames += 1
                    nbytes += len(data)
                    if not plan.paced and (
                        frames >= FLUSH_EVERY_FRAMES or nbytes >= FLUSH_EVERY_BYTES
                    ):
                        await client.flush(FLUSH_TIMEOUT_S)
                        frames = nbytes = 0
                await client.flush(FLUSH_TIMEOUT_S)
            except nats.errors.Error as exc:
                plan.note(f"publisher: {type(exc).__name__}: {exc}")
            for note in notes:
                plan.note(note)
            return plan.result()
        finally:
            await _close(client)

    async def _read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        notes: list[str] = []
        done = asyncio.Event()  # set by the sink, or when the connection closes
        client = await _connect(url, notes, done)
        sinks: list[ReaderSink] = []  # filled when the timing comes, before any frame can
        codec = codec_for(job.payload)

        def handler(index: int) -> Callable[[Msg], Awaitable[None]]:
            async def on_message(msg: Msg) -> None:
                # After done, frames still queued in the client are dropped unread.
                if not done.is_set() and sinks[0].on_value(index, codec.decode(msg.data)):
                    done.set()

            return on_message

        try:
            for i, sub in enumerate(job.subscriptions):
                await client.subscribe(sub.channel, cb=handler(i))
            await client.flush(FLUSH_TIMEOUT_S)  # the server has processed every SUB
            ctl.ready()
            sink = ReaderSink(job, await asyncio.to_thread(ctl.wait_timing))
            sinks.append(sink)
            with contextlib.suppress(TimeoutError):  # the window or the drain time is over
                await asyncio.wait_for(done.wait(), seconds_until(sink.deadline_ns))
            if client.is_closed:
                sink.note("reader disconnected by the server (slow consumer?)")
            for note in notes:
                sink.note(note)
            return sink.result()
        finally:
            await _close(client)


SYSTEM = NatsPubSub()
