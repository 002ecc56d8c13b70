"""Idle connections: server memory per connection, stats() latency and GC pauses at 10,000.

    python benchmarks/idle_connections.py                       # 10,000 + 2,000 silent
    python benchmarks/idle_connections.py --connections 2000 --silent 500 --samples 100

Each measurement gets a fresh server in a child process (this script, ``--child``), so that
memory freed by one phase cannot be reused by the next and hide its cost:

1. *silent*: ``--silent`` TCP connections that never send hello (what an unauthenticated
   peer can cost the server); the server's RSS growth divided by their number.
2. *idle*: ``--connections`` TCP connections, each completing the handshake (hello /
   welcome) and then silent; RSS growth per connection; then ``stats()`` asked
   ``--samples`` times over one more connection, one request at a time, timed from here
   (the client side) with all of them connected.

The child is the server process: it runs ``ts.serve`` and times its own garbage collections
with ``gc.callbacks``; the longest pause during the ramp and during the ``stats()`` phase is
reported. RSS is read from ``/proc/<pid>/statm`` (Linux only). Everything is on loopback,
every socket operation has a timeout and the whole run is bounded by ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from trio_stream._protocol import messages as M
from trio_stream._protocol.framing import FrameDecoder, frame_prefix
from trio_stream._protocol.limits import PROTOCOL_VERSION

CONNECT_BATCH = 500  # connections opened before their welcomes are read (the listen backlog)
SETTLE_S = 1.0  # lets the server accept and process what was sent before RSS is read
SOCKET_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 3600.0  # the child server's: idle connections must outlive the run


# -- the server (child process) ---------------------------------------------------------------
class GcTimer:
    """Longest garbage collection pause since the last reset, from gc.callbacks.

    Wall time is the pause the clients see; on a shared machine it includes time the process
    was not scheduled at all, so the CPU time of the thread (the collector's own work) is
    recorded as well: the longest of each, and the generation of the longest wall pause.
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.started_cpu = 0.0
        self.longest_s = 0.0
        self.longest_cpu_s = 0.0
        self.longest_generation = -1
        self.collections = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            self.started_cpu = time.thread_time()
        else:
            pause = time.perf_counter() - self.started
            if pause > self.longest_s:
                self.longest_s = pause
                self.longest_generation = info["generation"]
            self.longest_cpu_s = max(self.longest_cpu_s, time.thread_time() - self.started_cpu)
            self.collections += 1

    def report(self) -> dict[str, Any]:
        result = {
            "gc_longest_pause_s": self.longest_s,
            "gc_longest_pause_cpu_s": self.longest_cpu_s,
            "gc_longest_pause_generation": self.longest_generation,
            "gc_collections": self.collections,
        }
        self.longest_s = self.longest_cpu_s = 0.0
        self.longest_generation = -1
        self.collections = 0
        return result


def run_child(capacity: int) -> None:
    import trio

    import trio_stream as ts

    timer = GcTimer()
    wanted: dict[str, Any] = {
        "host": "127.0.0.1",
        "tcp_port": 0,
        "http_port": None,
        "idle_timeout_s": IDLE_TIMEOUT_S,
        "handshake_timeout_s": IDLE_TIMEOUT_S,
        "max_connections": capacity,
        "max_connections_per_address": capacity,
    }
    # The same script measures older versions, which lack some settings.
    known = {f.name for f in dataclasses.fields(ts.ServerConfig)}
    config = ts.ServerConfig(**{k: v for k, v in wanted.items() if k in known})

    def answer_requests() -> None:
        # One line in, one JSON line out: the parent asks for the GC figures.
        for _line in sys.stdin:
            print(json.dumps(timer.report()), flush=True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(ts.serve, config)
            print(json.dumps({"url": server.tcp_url}), flush=True)
            threading.Thread(target=answer_requests, daemon=True).start()

    trio.run(main)


# -- the clients (this process) ---------------------------------------------------------------
class Child:
    def __init__(self, capacity: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", "--capacity", str(capacity)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the server child did not start")
        url = json.loads(line)["url"]
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        self.address = (host, int(port))

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def gc_report(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("report\n")
        self.process.stdin.flush()
        report: dict[str, Any] = json.loads(self.process.stdout.readline())
        return report

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def control(message: M.ControlMessage) -> bytes:
    body = M.encode_message(message)
    return frame_prefix(len(body)) + body


def read_message(sock: socket.socket, decoder: FrameDecoder) -> M.ControlMessage:
    while True:
        frames = decoder.frames()
        if frames:
            return M.decode_message(frames[0])
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        decoder.receive_data(data)


def open_connections(
    address: tuple[str, int], count: int, *, hello: bool, deadline: float
) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    while len(sockets) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(sockets)} of {count} connections within the time")
        batch = []
        for _ in range(min(CONNECT_BATCH, count - len(sockets))):
            sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT_S)
            if hello:
                sock.sendall(control(M.Hello(v=PROTOCOL_VERSION)))
            batch.append(sock)
        if hello:
            for sock in batch:
                welcome = read_message(sock, FrameDecoder(2**20))
                if not isinstance(welcome, M.Welcome):
                    raise RuntimeError(f"expected welcome, got {welcome!r:.200}")
        sockets.extend(batch)
    return sockets


def measure_silent(count: int, deadline: float) -> dict[str, Any]:
    child = Child(count + 10)
    try:
        time.sleep(SETTLE_S)
        before = child.rss_bytes()
        sockets = open_connections(child.address, count, hello=False, deadline=deadline)
        time.sleep(SETTLE_S * 2)
        growth = child.rss_bytes() - before
        for sock in sockets:
            sock.close()
        return {"silent": count, "silent_rss_growth_bytes": growth}
    finally:
        child.close()


def measure_idle(count: int, samples: int, deadline: float) -> dict[str, Any]:
    child = Child(count + 10)
    try:
        # One full connection and a stats() first: lazy imports and first-use caches are
        # the server's start-up, not the connections' cost.
        probe = open_connections(child.address, 1, hello=True, deadline=deadline)[0]
        probe_decoder = FrameDecoder(64 * 2**20)
        probe.sendall(control(M.GetStats(id=0)))
        read_message(probe, probe_decoder)
        time.sleep(SETTLE_S)
        before = child.rss_bytes()
        child.gc_report()  # reset
        started = time.monotonic()
        sockets = open_connections(child.address, count, hello=True, deadline=deadline)
        ramp_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        growth = child.rss_bytes() - before
        ramp_gc = child.gc_report()
        latencies = []
        for ident in range(1, samples + 1):
            if time.monotonic() > deadline:
                break
            sent = time.perf_counter()
            probe.sendall(control(M.GetStats(id=ident)))
            reply = read_message(probe, probe_decoder)
            latencies.append(time.perf_counter() - sent)
            if not isinstance(reply, M.Reply):
                raise RuntimeError(f"expected the stats reply, got {reply!r:.200}")
            connected = reply.result["connections"]
        stats_gc = child.gc_report()
        latencies.sort()
        for sock in sockets:
            sock.close()
        return {
            "connections": count,
            "connected_per_server": connected,
            "ramp_s": ramp_s,
            "rss_growth_bytes": growth,
            "stats_samples": len(latencies),
            "stats_p50_s": statistics.median(latencies),
            "stats_p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "ramp_gc_longest_pause_s": ramp_gc["gc_longest_pause_s"],
            "ramp_gc_collections": ramp_gc["gc_collections"],
            "ramp_gc_longest_pause_cpu_s": ramp_gc["gc_longest_pause_cpu_s"],
            "ramp_gc_longest_pause_generation": ramp_gc["gc_longest_pause_generation"],
            "stats_gc_longest_pause_s": stats_gc["gc_longest_pause_s"],
        }
    finally:
        child.close()


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise SystemExit(
                f"{wanted} file descriptors are needed, the hard limit is {hard}: "
                "raise it (ulimit -Hn) or ask for fewer --connections"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def report(result: dict[str, Any]) -> str:
    kib = 1024
    lines = [
        f"silent connections (no hello):  {result['silent']:>6}   "
        f"server RSS +{result['silent_rss_growth_bytes'] / 2**20:.1f} MiB "
        f"({result['silent_rss_growth_bytes'] / max(result['silent'], 1) / kib:.1f} KiB each)",
        f"idle connections (handshaken):  {result['connections']:>6}   "
        f"server RSS +{result['rss_growth_bytes'] / 2**20:.1f} MiB "
        f"({result['rss_growth_bytes'] / result['connections'] / kib:.1f} KiB each), "
        f"ramp {result['ramp_s']:.1f} s",
        f"stats() with {result['connected_per_server']} connected: "
        f"p50 {result['stats_p50_s'] * 1e3:.2f} ms, p99 {result['stats_p99_s'] * 1e3:.2f} ms "
        f"({result['stats_samples']} requests, from the client)",
        f"longest GC pause in the server: ramp {result['ramp_gc_longest_pause_s'] * 1e3:.1f} ms "
        f"(generation {result['ramp_gc_longest_pause_generation']}; longest in CPU time "
        f"{result['ramp_gc_longest_pause_cpu_s'] * 1e3:.1f} ms; "
        f"{result['ramp_gc_collections']} collections), "
        f"stats() phase {result['stats_gc_longest_pause_s'] * 1e3:.1f} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--silent", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=500, help="stats() requests")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--capacity", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_file_limit(max(args.connections, args.silent, args.capacity) + 256)
    if args.child:
        run_child(args.capacity)
        return
    deadline = time.monotonic() + args.timeout_s
    result = {
        **measure_silent(args.silent, deadline),
        **measure_idle(args.connections, args.samples, deadline),
    }
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
