"""Redis pub/sub through redis-py's synchronous client (hiredis parser when installed)."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from benchmarks.control import WorkerControl
from benchmarks.jobs import PublishJob, PublishResult, ReadJob, ReadResult
from benchmarks.measure import PublishPlan, ReaderSink, seconds_until
from benchmarks.payload import codec_for
from benchmarks.systems.base import LOOPBACK

# A competent Redis publisher pipelines: one round trip per batch instead of per PUBLISH.
PIPELINE_FRAMES = 100
PIPELINE_BYTES = 2**20  # ...but a batch of 1 MiB arrays is sent one by one
POLL_S = 0.05  # longest blocking read, so the reader notices its deadline
SUBSCRIBE_TIMEOUT_S = 10.0


def _connect(url: str) -> redis.Redis:
    # No retries: redis-py would otherwise reconnect and resubscribe silently after the
    # server drops a slow consumer, hiding exactly what we want to report.
    # RESP2: redis-py 8 defaults to RESP3, where every pub/sub message takes the push
    # notification path, which builds a debug log line with str() of the whole payload
    # (5 ms for 1 MiB: readers fell to ~110 MB/s and were dropped as slow consumers).
    return redis.Redis.from_url(url, protocol=2, retry=Retry(NoBackoff(), 0))


class RedisPubSub:
    name = "redis"

    def server_command(self, port: int, workdir: Path) -> list[str]:
        return [
            "redis-server",
            "--bind", LOOPBACK,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
        ]  # fmt: skip

    def url(self, port: int) -> str:
        return f"redis://{LOOPBACK}:{port}"

    def publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        client = _connect(url)
        try:
            client.ping()
            ctl.ready()
            plan = PublishPlan(job, ctl.wait_timing())
            codec = codec_for(job.payload)
            pipe = client.pipeline(transaction=False)
            frames = nbytes = 0
            try:
                while (due := plan.next_due_ns()) is not None:
                    if due:
                        time.sleep(seconds_until(due))
                    data = codec.encode(plan.make())
                    pipe.publish(job.channel, data)
                    frames += 1
                    nbytes += len(data)
                    # Paced frames go out at once: batching would add to their latency.
                    if plan.paced or frames >= PIPELINE_FRAMES or nbytes >= PIPELINE_BYTES:
                        pipe.execute()
                        frames = nbytes = 0
                if frames:
                    pipe.execute()
            except redis.ConnectionError as exc:
                plan.note(f"publisher lost its connection: {exc}")
            return plan.result()
        finally:
            client.close()

    def read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        client = _connect(url)
        # redis-py leaves pubsub() untyped; without redis installed mypy sees Any instead.
        pubsub = client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
        try:
            channels = [s.channel for s in job.subscriptions]
            index = {c.encode(): i for i, c in enumerate(channels)}
            pubsub.subscribe(*channels)
            _wait_subscribed(pubsub, len(channels))
            ctl.ready()
            sink = ReaderSink(job, ctl.wait_timing())
            codec = codec_for(job.payload)
            try:
                while time.monotonic_ns() < sink.deadline_ns:
                    message = pubsub.get_message(
                        timeout=min(POLL_S, seconds_until(sink.deadline_ns))
                    )
                    if message is None or message["type"] != "message":
                        continue
                    if sink.on_value(index[message["channel"]], codec.decode(message["data"])):
                        break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Typically "client-output-buffer-limit pubsub": the server drops a reader
                # that falls too far behind.
                sink.note(f"reader disconnected by the server (slow consumer?): {exc}")
            return sink.result()
        finally:
            pubsub.close()
            client.close()


def _wait_subscribed(pubsub: redis.client.PubSub, count: int) -> None:
    """Wait for the server to confirm every SUBSCRIBE, so no frame of the case is missed."""
    confirmed = 0
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while confirmed < count:
        if time.monotonic() > deadline:
            raise TimeoutError("Redis did not confirm the subscriptions")
        message = pubsub.get_message(timeout=POLL_S)
        if message is not None and message["type"] == "subscribe":
            confirmed += 1


SYSTEM = RedisPubSub()
