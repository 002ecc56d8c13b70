"""python benchmarks/rpc_bench.py [--calls N] [--seconds S] [--repeat R] [--cluster] [--json FILE]

RPC round trips (async client and SyncClient), SyncClient publish throughput against the
async client's, and SyncClient read throughput against the async client's (a lossless
``block`` reader of a flooding writer), each part in its own process: a server, a provider
(or a reader, or a writer), a caller (or a writer, or a reader). See the section "RPC and
sync client" in benchmarks/README.md.

``--cluster``: the RPC round trips between two nodes on Redis (a fresh redis-server, nodes
``a`` and ``b`` as ``benchmarks/cluster.py`` starts them): the provider a client of node a,
the callers clients of node b, so every call and answer crosses Redis pub/sub.

The same file is every process: ``--role server|provider|reader|async-caller|sync-caller|
async-writer|sync-writer|flood-writer|async-reader|sync-reader`` (the orchestrator, without
``--role``, starts the others).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

if __name__ == "__main__" and not __package__:
    # As a script, sys.path[0] is benchmarks/ whose modules could shadow others: use the
    # repository instead, so that its trio_stream is the one measured.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import trio_stream as ts

PROVIDER = "bench-provider"
CHANNEL = "bench"
SMALL = [0, 0.5, b"\x00" * 82]  # ~100 bytes encoded, as the S1 frames of benchmarks/run.py
STEP_TIMEOUT_S = 120.0


# -- the processes ---------------------------------------------------------------------------
class Echo:
    async def rpc_echo(self, value: Any) -> Any:
        return value

    def rpc_echo_sync(self, value: Any) -> Any:
        return value


async def server_role(_args: argparse.Namespace) -> None:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=None)
    async with ts.open_server(config) as server:
        print(server.tcp_url, flush=True)
        await trio.sleep_forever()


async def provider_role(args: argparse.Namespace) -> None:
    async with ts.open_client(args.url, name=PROVIDER) as client:
        client.expose(Echo())
        await client.clients()  # the server has our methods: ready
        print("ready", flush=True)
        await trio.sleep_forever()


async def reader_role(args: argparse.Namespace) -> None:
    async with ts.open_client(args.url, name="bench-reader") as client:
        await client.create_channel(CHANNEL, keep=True)
        # drop_oldest: the reader never holds the writer back, so the writer's own speed shows.
        async with client.subscribe(CHANNEL, policy="drop_oldest", size=1000) as sub:
            print("ready", flush=True)
            async for _ in sub:
                pass


async def flood_writer_role(args: argparse.Namespace) -> None:
    async with ts.open_client(args.url, name="bench-flood") as client:
        await client.create_channel(CHANNEL)
        print("ready", flush=True)
        async with client.publisher(CHANNEL) as pub:
            await pub.wait_for_readers()
            while True:  # held back by the block reader: its speed is what shows
                await pub.send(SMALL)


class ReadRate:
    """Values a reader takes per second, after a second of warm-up, for ``seconds``; the
    clock is read once per 1024 values (a per-value read would be much of what is measured)."""

    def __init__(self, seconds: float) -> None:
        self.count, self.start = 0, time.perf_counter()
        self.warm_until = self.start + 1.0
        self.deadline = self.warm_until + seconds
        self.end = math.inf

    def took_one(self) -> bool:
        """Count a value; False once the time is up."""
        self.count += 1
        if self.count & 1023:
            return True
        now = time.perf_counter()
        if now < self.warm_until:
            self.count, self.start = 0, now
        if now < self.deadline:
            return True
        self.end = now  # not the close that follows
        return False

    def report(self) -> None:
        rate = self.count / (min(self.end, time.perf_counter()) - self.start)
        print(json.dumps({"values_per_s": rate}), flush=True)


async def async_reader_role(args: argparse.Namespace) -> None:
    async with (
        ts.open_client(args.url, name="bench-async-reader") as client,
        client.subscribe(CHANNEL, policy="block", size=1000) as sub,
    ):
        rate = ReadRate(args.seconds)
        async for _ in sub:
            if not rate.took_one():
                break
    rate.report()


def sync_reader_role(args: argparse.Namespace) -> None:
    with (
        ts.SyncClient(args.url, name="bench-sync-reader") as client,
        client.subscribe(CHANNEL, policy="block", size=1000) as sub,
    ):
        rate = ReadRate(args.seconds)
        for _ in sub:
            if not rate.took_one():
                break
    rate.report()


def latency_summary(latencies_ns: list[int], elapsed_s: float) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    return {
        "calls_per_s": len(ordered) / elapsed_s,
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6,
    }


async def async_caller_role(args: argparse.Namespace) -> None:
    async with ts.open_client(args.url, name="bench-caller") as client:
        proxy = await client.rpc(PROVIDER)
        method = getattr(proxy, args.method)
        for _ in range(200):  # warm-up
            await method(SMALL)
        latencies: list[int] = []

        async def worker(calls: int) -> None:
            for _ in range(calls):
                start = time.perf_counter_ns()
                await method(SMALL)
                latencies.append(time.perf_counter_ns() - start)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(worker, args.calls // args.concurrency)
        print(json.dumps(latency_summary(latencies, time.perf_counter() - start)), flush=True)


def sync_caller_role(args: argparse.Namespace) -> None:
    with ts.SyncClient(args.url, name="bench-sync-caller") as client:
        method = getattr(client.rpc(PROVIDER), args.method)
        for _ in range(200):
            method(SMALL)
        latencies: list[int] = []
        start = time.perf_counter()
        for _ in range(args.calls):
            t0 = time.perf_counter_ns()
            method(SMALL)
            latencies.append(time.perf_counter_ns() - t0)
        print(json.dumps(latency_summary(latencies, time.perf_counter() - start)), flush=True)


async def async_writer_role(args: argparse.Namespace) -> None:
    async with ts.open_client(args.url, name="bench-writer") as client:
        async with client.publisher(CHANNEL) as pub:
            await pub.wait_for_readers()
            for _ in range(10_000):  # warm-up
                await client.publish(CHANNEL, SMALL)
            count, start = 0, time.perf_counter()
            deadline = start + args.seconds
            while time.perf_counter() < deadline:
                for _ in range(1000):
                    await client.publish(CHANNEL, SMALL)
                count += 1000
            await client._shared_publishers[CHANNEL, None].wait_acknowledged()
            elapsed = time.perf_counter() - start
        print(json.dumps({"values_per_s": count / elapsed}), flush=True)


def sync_writer_role(args: argparse.Namespace) -> None:
    with ts.SyncClient(args.url, name="bench-sync-writer") as client:
        with client.publisher(CHANNEL) as pub:
            pub.wait_for_readers(timeout=10)
        for _ in range(10_000):
            client.publish(CHANNEL, SMALL)
        client.flush()
        count, start = 0, time.perf_counter()
        deadline = start + args.seconds
        while time.perf_counter() < deadline:
            for _ in range(1000):
                client.publish(CHANNEL, SMALL)
            count += 1000
        client.flush()  # counted: the values are at the server, as in the async case
        elapsed = time.perf_counter() - start
        print(json.dumps({"values_per_s": count / elapsed}), flush=True)


ROLES: dict[str, Callable[[argparse.Namespace], Any]] = {
    "server": server_role,
    "provider": provider_role,
    "reader": reader_role,
    "async-caller": async_caller_role,
    "sync-caller": sync_caller_role,
    "async-writer": async_writer_role,
    "sync-writer": sync_writer_role,
    "flood-writer": flood_writer_role,
    "async-reader": async_reader_role,
    "sync-reader": sync_reader_role,
}


# -- the orchestrator ------------------------------------------------------------------------
def command(role: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *args]


@contextmanager
def background(role: str, *args: str) -> Iterator[str]:
    """A process that prints one line when it is ready; yields that line."""
    process = subprocess.Popen(command(role, *args), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"{role} did not start")
        yield line
    finally:
        process.kill()
        process.wait()


def measure(role: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        command(role, *args), capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )
    if done.returncode:
        raise RuntimeError(f"{role} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


@contextmanager
def endpoints(cluster: bool) -> Iterator[tuple[str, str]]:
    """(the provider's URL, the callers' URL): one server, or nodes a and b on a fresh Redis."""
    if not cluster:
        with background("server") as url:
            yield url, url
        return
    # Imported here: they need redis-py, which only --cluster does.
    from benchmarks.cluster import node
    from benchmarks.servers import REPO_ROOT, running_server
    from benchmarks.systems.redis_pubsub import SYSTEM as REDIS

    os.environ["PYTHONPATH"] = str(REPO_ROOT)  # the nodes run this tree's trio_stream
    with (
        tempfile.TemporaryDirectory() as workdir,
        running_server(REDIS, Path(workdir)) as redis_server,
        node(redis_server.url, "a") as (url_a, _),
        node(redis_server.url, "b") as (url_b, _),
    ):
        yield url_a, url_b


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    calls, seconds = str(args.calls), str(args.seconds)
    cases: dict[str, list[dict[str, float]]] = {}
    for repeat in range(args.repeat):
        print(f"repeat {repeat + 1}/{args.repeat}", file=sys.stderr)
        with (
            endpoints(args.cluster) as (provider_url, url),
            background("provider", provider_url),
        ):
            rpc_cases = {
                "async, 1 call in flight": ("async-caller", "--concurrency", "1"),
                "async, 16 calls in flight": ("async-caller", "--concurrency", "16"),
                "sync (SyncClient)": ("sync-caller",),
                "async, sync method on the provider": (
                    "async-caller",
                    "--concurrency",
                    "1",
                    "--method",
                    "echo_sync",
                ),
            }
            for name, (role, *extra) in rpc_cases.items():
                cases.setdefault(name, []).append(measure(role, url, "--calls", calls, *extra))
        if args.cluster:
            continue  # publishing between nodes: benchmarks/cluster.py
        with background("server") as url, background("reader", url):
            for name, role in (("async publish", "async-writer"), ("sync publish", "sync-writer")):
                cases.setdefault(name, []).append(measure(role, url, "--seconds", seconds))
        for name, role in (("async read", "async-reader"), ("sync read", "sync-reader")):
            with background("server") as url, background("flood-writer", url):
                cases.setdefault(name, []).append(measure(role, url, "--seconds", seconds))
    medians = {name: median_of(runs) for name, runs in cases.items()}
    if args.cluster:
        return {"medians": medians, "runs": cases}
    share = medians["sync publish"]["values_per_s"] / medians["async publish"]["values_per_s"]
    read_share = medians["sync read"]["values_per_s"] / medians["async read"]["values_per_s"]
    return {
        "medians": medians,
        "runs": cases,
        "sync_publish_share": share,
        "sync_read_share": read_share,
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    medians = result["medians"]
    lines = [
        "| RPC round trip (~100-byte argument and result) | calls/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, figures in medians.items():
        if "calls_per_s" in figures:
            lines.append(
                f"| {name} | {figures['calls_per_s']:,.0f} | {figures['p50_ms']:.3f} | "
                f"{figures['p99_ms']:.3f} |"
            )
    if args.cluster:
        lines.append("")
        lines.append(
            f"between nodes a and b on Redis (median of {args.repeat}; {args.calls} calls)"
        )
        return "\n".join(lines)
    lines += [
        "",
        "| ~100-byte values (publish: until the server has them; read: a block reader)"
        " | values/s |",
        "|---|---:|",
    ]
    for name in ("async publish", "sync publish", "async read", "sync read"):
        lines.append(f"| {name} | {medians[name]['values_per_s']:,.0f} |")
    lines.append("")
    lines.append(
        f"sync publish = {100 * result['sync_publish_share']:.0f} % of async publish, "
        f"sync read = {100 * result['sync_read_share']:.0f} % of async read "
        f"(median of {args.repeat}; {args.calls} calls per RPC case, {args.seconds} s per "
        "publish or read case)"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=sorted(ROLES))
    parser.add_argument("url", nargs="?")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--method", default="echo")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cluster", action="store_true", help="RPC between two nodes on Redis")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    args = parser.parse_args()
    if args.role is not None:
        role = ROLES[args.role]
        if role in (sync_caller_role, sync_writer_role, sync_reader_role):
            role(args)
        else:
            trio.run(role, args)
        return 0
    result = orchestrate(args)
    table = report(result, args)
    print(table)
    if args.json is not None:
        result["command"] = " ".join(sys.argv)
        result["date"] = time.strftime("%Y-%m-%d")
        result["versions"] = {
            "python": platform.python_version(),
            "trio": trio.__version__,
            "trio_stream": ts.__version__,
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
