"""CPU time per delivered frame: trio_stream's server and readers against a plain trio relay
and NATS, in one run.

Throughput on a shared 2-core machine swings by half with whatever else runs; the CPU time a
process spends per frame moves far less. Each case starts a fresh server in a child process,
N reader processes that subscribe and read a fixed number of frames (not a time window), and
one publisher that floods that many ~100-byte frames. The figures:

- server: CPU seconds (utime + stime from /proc/PID/stat, from just before the publisher
  starts until every reader is done) per million deliveries (frames received by all readers);
- reader: CPU microseconds per frame (``time.process_time`` from its first frame to its last).

Systems: ``trio_stream`` (the server and client of ``--src``, default this repository; the
readers take ``msg.data`` like the S1 harness), ``relay`` (../shared/reference/trio_relay.py
with ``--nowait-first``; its wire format is in its docstring) and ``nats`` (nats-server and
nats-py, when installed). ``--payload raw`` moves bytes (trio_stream wraps them in a CBOR
byte string, as in ``run.py --payload-only``); ``--payload cbor`` encodes
``[sent_ns, seq, last, 82 zero bytes]`` with cbor2 on both ends for the peers, and hands
trio_stream the value. Repeats alternate between systems (and between ``--src`` trees).

    python benchmarks/cpu_per_frame.py                                  # 4 readers, 200k frames
    python benchmarks/cpu_per_frame.py --readers 16 --frames 100000 --payload cbor
    python benchmarks/cpu_per_frame.py --systems trio_stream --src /tmp/base --src .  # A/B
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RELAY = REPO_ROOT.parent / "shared" / "reference" / "trio_relay.py"
LOOPBACK = "127.0.0.1"
CHANNEL = "bench.cpu"
PAYLOAD_BYTES = 100
READER_BUFFER_FRAMES = 1000  # trio_stream: a block subscription, as S1's lossless readers
IDLE_GIVE_UP_S = 10.0  # a reader that hears nothing this long reports what it has
START_TIMEOUT_S = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
RELAY_LEN = struct.Struct(">I")
NATS_FLUSH_EVERY_FRAMES = 1000


def _payload(kind: str, seq: int) -> Any:
    if kind == "raw":
        return seq.to_bytes(8, "big") + bytes(PAYLOAD_BYTES - 8)
    return [time.monotonic_ns(), seq, False, bytes(82)]


# -- trio_stream ---------------------------------------------------------------------------
def _ts_reader(port: int, frames: int, kind: str) -> dict[str, Any]:
    import trio

    import trio_stream as ts

    async def run() -> dict[str, Any]:
        async with (
            ts.open_client(f"tcp://{LOOPBACK}:{port}", name=f"cpu-reader-{os.getpid()}") as c,
            c.subscribe(CHANNEL, policy="block", size=READER_BUFFER_FRAMES) as sub,
        ):
            _ready()
            return await _ts_count(sub, frames)

    return trio.run(run)


async def _ts_count(sub: Any, frames: int) -> dict[str, Any]:
    import trio

    count = 0
    first = last = 0.0
    with trio.move_on_after(IDLE_GIVE_UP_S) as scope:
        async for msg in sub:
            msg.data  # noqa: B018 - the harness reads every value
            count += 1
            if count == 1:
                first = time.process_time()
            if not count % 1024:  # a deadline per message would cost more than the message
                scope.deadline = trio.current_time() + IDLE_GIVE_UP_S
            if count >= frames:
                break
    last = time.process_time()
    return {"frames": count, "cpu_s": last - first}


def _ts_publisher(port: int, frames: int, kind: str, readers: int) -> None:
    import trio

    import trio_stream as ts

    async def run() -> None:
        async with (
            ts.open_client(f"tcp://{LOOPBACK}:{port}", name="cpu-publisher") as c,
            c.publisher(CHANNEL) as pub,
        ):
            await pub.wait_for_readers(readers)
            _ready()
            _wait_go()
            for seq in range(frames):
                await pub.send(_payload(kind, seq))
            await pub.wait_acknowledged()

    trio.run(run)


def _ts_setup(port: int) -> None:
    import trio

    import trio_stream as ts

    async def run() -> None:
        async with ts.open_client(f"tcp://{LOOPBACK}:{port}", name="cpu-setup") as c:
            await c.create_channel(CHANNEL, keep=True)

    trio.run(run)


# -- the plain trio relay --------------------------------------------------------------------
def _relay_frame(op: bytes, payload: bytes = b"") -> bytes:
    topic = CHANNEL.encode()
    return (
        RELAY_LEN.pack(2 + len(topic) + len(payload)) + op + bytes([len(topic)]) + topic + payload
    )


def _relay_reader(port: int, frames: int, kind: str) -> dict[str, Any]:
    import cbor2

    sock = socket.create_connection((LOOPBACK, port))
    sock.sendall(_relay_frame(b"S"))
    head = 6 + len(CHANNEL)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + RELAY_LEN.unpack_from(buf)[0]:
        buf += sock.recv(65536)  # the ack
    buf = buf[4 + RELAY_LEN.unpack_from(buf)[0] :]
    _ready()
    sock.settimeout(IDLE_GIVE_UP_S)
    count = 0
    first = 0.0
    decode = cbor2.loads if kind == "cbor" else bytes
    try:
        while count < frames:
            data = sock.recv(262144)
            if not data:
                break
            if count == 0:
                first = time.process_time()
            buf = buf + data if buf else data
            pos, end = 0, len(buf)
            while end - pos >= 4:
                stop = pos + 4 + RELAY_LEN.unpack_from(buf, pos)[0]
                if stop > end:
                    break
                decode(buf[pos + head : stop])
                count += 1
                pos = stop
            buf = buf[pos:]
    except TimeoutError:
        pass
    return {"frames": count, "cpu_s": time.process_time() - first}


def _relay_publisher(port: int, frames: int, kind: str, readers: int) -> None:
    import cbor2

    sock = socket.create_connection((LOOPBACK, port))
    _ready()
    _wait_go()
    batch: list[bytes] = []
    for seq in range(frames):
        value = _payload(kind, seq)
        batch.append(_relay_frame(b"P", value if kind == "raw" else cbor2.dumps(value)))
        if len(batch) == 64:
            sock.sendall(b"".join(batch))
            batch = []
    if batch:
        sock.sendall(b"".join(batch))
    sock.close()


# -- NATS ------------------------------------------------------------------------------------
def _nats_reader(port: int, frames: int, kind: str) -> dict[str, Any]:
    import asyncio

    import cbor2
    import nats

    async def run() -> dict[str, Any]:
        nc = await nats.connect(f"nats://{LOOPBACK}:{port}", allow_reconnect=False)
        done = asyncio.Event()
        state = {"count": 0, "first": 0.0, "heard": time.monotonic()}
        decode = cbor2.loads if kind == "cbor" else bytes

        async def on_message(msg: Any) -> None:
            decode(msg.data)
            state["count"] += 1
            if state["count"] == 1:
                state["first"] = time.process_time()
            state["heard"] = time.monotonic()
            if state["count"] >= frames:
                done.set()

        await nc.subscribe(CHANNEL, cb=on_message, pending_msgs_limit=10_000_000)
        await nc.flush()
        _ready()
        while not done.is_set() and time.monotonic() - state["heard"] < IDLE_GIVE_UP_S:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
        cpu = time.process_time() - state["first"]
        await nc.close()
        return {"frames": state["count"], "cpu_s": cpu}

    return asyncio.run(run())


def _nats_publisher(port: int, frames: int, kind: str, readers: int) -> None:
    import asyncio

    import cbor2
    import nats

    async def run() -> None:
        nc = await nats.connect(f"nats://{LOOPBACK}:{port}", allow_reconnect=False)
        _ready()
        await asyncio.to_thread(_wait_go)
        for seq in range(frames):
            value = _payload(kind, seq)
            await nc.publish(CHANNEL, value if kind == "raw" else cbor2.dumps(value))
            if seq % NATS_FLUSH_EVERY_FRAMES == NATS_FLUSH_EVERY_FRAMES - 1:
                await nc.flush(10)
        await nc.flush(10)
        await nc.close()

    asyncio.run(run())


ROLES = {
    "trio_stream": (_ts_reader, _ts_publisher),
    "relay": (_relay_reader, _relay_publisher),
    "nats": (_nats_reader, _nats_publisher),
}


# -- the child side of the pipe --------------------------------------------------------------
def _ready() -> None:
    print("ready", flush=True)


def _wait_go() -> None:
    sys.stdin.readline()


def child(args: argparse.Namespace) -> None:
    read, publish = ROLES[args.system]
    if args.role == "setup":
        _ts_setup(args.port)
    elif args.role == "reader":
        print(json.dumps(read(args.port, args.frames, args.payload)), flush=True)
    else:
        publish(args.port, args.frames, args.payload, args.readers)


# -- the parent ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server not listening")


def _server_command(system: str, port: int, workdir: str) -> list[str]:
    if system == "relay":
        return [sys.executable, str(RELAY), "--port", str(port), "--nowait-first"]
    if system == "nats":
        return ["nats-server", "-a", LOOPBACK, "-p", str(port)]
    code = (
        "import trio, trio_stream as ts; trio.run(ts.serve, ts.ServerConfig("
        f"host={LOOPBACK!r}, tcp_port={port}, http_port=0))"
    )
    return [sys.executable, "-c", code]


def _spawn(args: argparse.Namespace, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--child", *extra]
    argv += [
        "--frames",
        str(args.frames),
        "--payload",
        args.payload,
        "--readers",
        str(args.readers),
    ]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )


def _expect_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"child {process.args!r} failed to start: {line!r}")


def run_case(args: argparse.Namespace, system: str, src: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, str(REPO_ROOT), env.get("PYTHONPATH")]))
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        command = _server_command(system, port, workdir)
        server = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=src or REPO_ROOT,  # `python -c` puts its working directory first on sys.path
        )
        children: list[subprocess.Popen[Any]] = []
        try:
            _wait_listening(port, server)
            if args.profile:
                # Profiled runs' CPU figures include py-spy's pauses: read the profile only.
                profile = Path(args.profile) / f"{system}-{Path(src or system).resolve().name}.txt"
                spy = ["py-spy", "record", "-r", "500", "-f", "raw", "-o", str(profile)]
                children.append(subprocess.Popen([*spy, "--pid", str(server.pid)]))
            common = ("--system", system, "--port", str(port))
            if system == "trio_stream":
                _spawn(args, env, "--role", "setup", *common).wait(START_TIMEOUT_S)
            readers = [_spawn(args, env, "--role", "reader", *common) for _ in range(args.readers)]
            children += readers
            for reader in readers:
                _expect_ready(reader)
            publisher = _spawn(args, env, "--role", "publisher", *common)
            children.append(publisher)
            _expect_ready(publisher)
            before = _cpu_s(server.pid)
            start = time.monotonic()
            assert publisher.stdin is not None
            publisher.stdin.write("go\n")
            publisher.stdin.flush()
            results = []
            for reader in readers:
                out, _ = reader.communicate(timeout=args.timeout_s)
                results.append(json.loads(out.strip().splitlines()[-1]))
            server_cpu = _cpu_s(server.pid) - before
            wall = time.monotonic() - start
            publisher.wait(args.timeout_s)
        finally:
            for process in children:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)  # py-spy writes its profile then
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    delivered = sum(r["frames"] for r in results)
    reader_us = [r["cpu_s"] / max(r["frames"] - 1, 1) * 1e6 for r in results]
    return {
        "system": system,
        "src": src,
        "delivered": delivered,
        "expected": args.frames * args.readers,
        "server_s_per_million": server_cpu / max(delivered, 1) * 1e6,
        "reader_us_per_frame": statistics.median(reader_us),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="trio_stream,relay,nats")
    parser.add_argument("--src", action="append", help="trio_stream source tree(s) to compare")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--frames", type=int, default=200_000, help="published per case")
    parser.add_argument("--payload", choices=("raw", "cbor"), default="raw")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--json", help="write every case's figures here")
    parser.add_argument("--profile", help="run each server under py-spy, profiles in this dir")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    systems = [s for s in args.systems.split(",") if s != "nats" or shutil.which("nats-server")]
    cases = [
        (system, src)
        for system in systems
        for src in ((args.src or [str(REPO_ROOT)]) if system == "trio_stream" else [""])
    ]
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeat):
        for system, src in cases:
            row = run_case(args, system, str(Path(src).resolve()) if src else "")
            row["repeat"] = repeat
            rows.append(row)
            print(
                f"{system:12} {Path(src).resolve().name if src else '':12} delivered "
                f"{row['delivered']}/{row['expected']}  server "
                f"{row['server_s_per_million']:.3f} s/M deliveries  reader "
                f"{row['reader_us_per_frame']:.2f} us/frame  ({row['wall_s']:.1f} s)",
                flush=True,
            )
    print(f"\nmedian of {args.repeat}, {args.readers} readers, {args.payload} payloads:")
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    for system, src in cases:
        mine = [
            r
            for r in rows
            if r["system"] == system and r["src"] == (str(Path(src).resolve()) if src else "")
        ]
        medians[(system, src)] = (
            statistics.median(r["server_s_per_million"] for r in mine),
            statistics.median(r["reader_us_per_frame"] for r in mine),
        )
        label = f"{system} {Path(src).resolve().name}" if src else system
        server_s, reader_us = medians[(system, src)]
        print(f"  {label:28} server {server_s:.3f} s/M  reader {reader_us:.2f} us/frame")
    relay = medians.get(("relay", ""))
    nats = medians.get(("nats", ""))
    for (system, src), (server_s, _) in medians.items():
        if system != "trio_stream":
            continue
        ratios = []
        if relay:
            ratios.append(f"{server_s / relay[0]:.2f}x relay")
        if nats:
            ratios.append(f"{server_s / nats[0]:.2f}x NATS")
        print(f"  server CPU {Path(src).resolve().name if src else ''}: " + ", ".join(ratios))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
