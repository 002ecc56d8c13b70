"""trio_stream over raw TCP, through its trio client.

The client is handed the Python value itself (it encodes with cbor2, numpy as RFC 8746) and
hands back decoded values: the same work that benchmarks.payload.CborCodec does for the
peers. A trio_stream_ws adapter is this class with another server_command and url.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

import trio_stream as ts
from benchmarks.control import WorkerControl
from benchmarks.jobs import PublishJob, PublishResult, ReadJob, ReadResult
from benchmarks.measure import PublishPlan, ReaderSink, seconds_until
from benchmarks.systems.base import LOOPBACK

WAIT_FOR_READERS_TIMEOUT_S = 10.0


def server_command(tcp_port: int, http_port: int) -> list[str]:
    """argv of a trio_stream server on loopback (port 0: let the OS pick, unused)."""
    code = (
        "import trio, trio_stream as ts; "
        "trio.run(ts.serve, ts.ServerConfig("
        f"host={LOOPBACK!r}, tcp_port={tcp_port}, http_port={http_port}))"
    )
    return [sys.executable, "-c", code]


class TrioStreamTcp:
    name = "trio_stream_tcp"

    def server_command(self, port: int, workdir: Path) -> list[str]:
        return server_command(tcp_port=port, http_port=0)

    def url(self, port: int) -> str:
        return f"tcp://{LOOPBACK}:{port}"

    def publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        return trio.run(self._publish, url, job, ctl)

    def read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        return trio.run(self._read, url, job, ctl)

    async def _publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        async with ts.open_client(url, name=f"bench-pub-{os.getpid()}") as client:
            await client.create_channel(job.channel, public=True)
            async with client.publisher(job.channel) as pub:
                ctl.ready()
                plan = PublishPlan(job, await trio.to_thread.run_sync(ctl.wait_timing))
                # Readers subscribed before the timing came: this only waits for the news
                # of them from the server (before go, or inside the warm-up).
                with trio.fail_after(WAIT_FOR_READERS_TIMEOUT_S):
                    await pub.wait_for_readers()
                try:
                    while (due := plan.next_due_ns()) is not None:
                        if due:
                            await trio.sleep(seconds_until(due))
                        if not await pub.send(plan.make()):
                            plan.unsent("send() returned False (no readers)")
                except ts.TrioStreamError as exc:
                    plan.note(f"publisher: {type(exc).__name__}: {exc}")
                return plan.result()

    async def _read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        async with (
            ts.open_client(url, name=f"bench-reader-{os.getpid()}") as client,
            AsyncExitStack() as stack,
        ):
            subs = [
                await stack.enter_async_context(
                    client.subscribe(
                        s.channel,
                        policy="block" if s.lossless else "drop_oldest",
                        size=s.size,
                    )
                )
                for s in job.subscriptions
            ]
            ctl.ready()
            sink = ReaderSink(job, await trio.to_thread.run_sync(ctl.wait_timing))
            try:
                with trio.move_on_at(trio.current_time() + seconds_until(sink.deadline_ns)):
                    async with trio.open_nursery() as nursery:
                        for i, sub in enumerate(subs):
                            nursery.start_soon(_drain, sub, i, sink, nursery.cancel_scope)
            except* ts.TrioStreamError as group:
                sink.note(f"reader: {group.exceptions[0]!r}")
            return sink.result()


async def _drain(
    sub: AsyncIterable[ts.Message], index: int, sink: ReaderSink, scope: trio.CancelScope
) -> None:
    async for msg in sub:
        if sink.on_value(index, msg.data):
            scope.cancel()
            return


SYSTEM = TrioStreamTcp()
