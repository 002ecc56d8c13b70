"""The plain trio relay of ../shared/reference/trio_relay.py: "what trio itself allows".

Not a peer to beat on features (no policies, no loss accounting, no credit): the yardstick for
trio_stream's own overhead, run beside the peers in the same cases. Its clients here are
blocking sockets, as few lines as its wire format needs (u32 length, op, topic, payload; see
the relay's docstring). The relay runs with ``--nowait-first --policy block``: lossless, like
the other systems' readers in S1 and S2 (in S4 its flooded channel is held back, not dropped).
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path

from benchmarks.control import WorkerControl
from benchmarks.jobs import PublishJob, PublishResult, ReadJob, ReadResult
from benchmarks.measure import PublishPlan, ReaderSink, seconds_until
from benchmarks.payload import codec_for
from benchmarks.systems.base import LOOPBACK

RELAY = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "trio_relay.py"
LENGTH = struct.Struct(">I")
OP_SUBSCRIBE, OP_PUBLISH, OP_ACK = b"S", b"P", ord("A")
# A flooding publisher joins this many frames (or bytes) into one sendall, as the Redis
# adapter pipelines; paced frames go out at once.
BATCH_FRAMES = 100
BATCH_BYTES = 2**20
RECEIVE_BYTES = 2**18
POLL_S = 0.05  # longest blocking read, so the reader notices its deadline
SUBSCRIBE_TIMEOUT_S = 10.0


def _frame(op: bytes, topic: bytes, payload: bytes = b"") -> bytes:
    return LENGTH.pack(2 + len(topic) + len(payload)) + op + bytes((len(topic),)) + topic + payload


def _connect(url: str) -> socket.socket:
    host, _, port = url.removeprefix("relay://").rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _FrameReader:
    """Complete frames (op, topic, payload) out of a blocking socket's reads."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def frames(self, timeout_s: float) -> list[tuple[int, bytes, bytes]]:
        self._sock.settimeout(max(timeout_s, 0.001))
        try:
            data = self._sock.recv(RECEIVE_BYTES)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("the relay closed the connection")
        buffer = self._buffer
        buffer += data
        out: list[tuple[int, bytes, bytes]] = []
        offset = 0
        while len(buffer) - offset >= LENGTH.size:
            end = offset + LENGTH.size + LENGTH.unpack_from(buffer, offset)[0]
            if end > len(buffer):
                break
            op, topic_len = buffer[offset + 4], buffer[offset + 5]
            topic_end = offset + 6 + topic_len
            out.append((op, bytes(buffer[offset + 6 : topic_end]), bytes(buffer[topic_end:end])))
            offset = end
        del buffer[:offset]
        return out


class TrioRelay:
    name = "relay"

    def server_command(self, port: int, workdir: Path) -> list[str]:
        return [sys.executable, str(RELAY), "--port", str(port), "--nowait-first"]

    def url(self, port: int) -> str:
        return f"relay://{LOOPBACK}:{port}"

    def publish(self, url: str, job: PublishJob, ctl: WorkerControl) -> PublishResult:
        sock = _connect(url)
        try:
            ctl.ready()
            plan = PublishPlan(job, ctl.wait_timing())
            codec = codec_for(job.payload)
            topic = job.channel.encode()
            batch: list[bytes] = []
            nbytes = 0
            try:
                while (due := plan.next_due_ns()) is not None:
                    if due:
                        time.sleep(seconds_until(due))
                    data = _frame(OP_PUBLISH, topic, codec.encode(plan.make()))
                    batch.append(data)
                    nbytes += len(data)
                    if plan.paced or len(batch) >= BATCH_FRAMES or nbytes >= BATCH_BYTES:
                        sock.sendall(b"".join(batch))
                        batch.clear()
                        nbytes = 0
                if batch:
                    sock.sendall(b"".join(batch))
            except OSError as exc:
                plan.note(f"publisher lost its connection: {exc}")
            return plan.result()
        finally:
            sock.close()

    def read(self, url: str, job: ReadJob, ctl: WorkerControl) -> ReadResult:
        sock = _connect(url)
        try:
            reader = _FrameReader(sock)
            index = {s.channel.encode(): i for i, s in enumerate(job.subscriptions)}
            sock.sendall(b"".join(_frame(OP_SUBSCRIBE, topic) for topic in index))
            _wait_acknowledged(reader, len(index))
            ctl.ready()
            sink = ReaderSink(job, ctl.wait_timing())
            codec = codec_for(job.payload)
            try:
                done = False
                while not done and time.monotonic_ns() < sink.deadline_ns:
                    for op, topic, payload in reader.frames(
                        min(POLL_S, seconds_until(sink.deadline_ns))
                    ):
                        if op != OP_ACK and sink.on_value(index[topic], codec.decode(payload)):
                            done = True
                            break
            except OSError as exc:
                sink.note(f"reader lost its connection: {exc}")
            return sink.result()
        finally:
            sock.close()


def _wait_acknowledged(reader: _FrameReader, count: int) -> None:
    """Wait for the relay's A for every S, so no frame of the case is missed."""
    acknowledged = 0
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while acknowledged < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not acknowledge the subscriptions")
        acknowledged += sum(op == OP_ACK for op, _, _ in reader.frames(POLL_S))


SYSTEM = TrioRelay()
