"""File transfer throughput: one file sent through the server over loopback TCP, in MB/s.

    python benchmarks/file_transfer.py --size 1GiB --rounds 3

Three processes, as in a lab: the server (``trio-stream serve``) and the receiver
(``trio-stream receive-files``) are child processes; this process is the sender
(``client.send_file``). The file is random bytes in a temporary directory under /tmp; it and
every received copy are deleted after each round. A round's time runs from the call of
``send_file`` to its return: the receiver has checked the sha256, fsynced and renamed the file.
Prints one JSON line per round to stderr and a summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

import trio_stream as ts
from trio_stream.cli._options import byte_size

START_TIMEOUT_S = 30.0
WRITE_BLOCK_BYTES = 16 * 2**20


async def start(command: list[str], pattern: bytes) -> tuple[trio.Process, bytes]:
    """Start ``command``; return it and the first match of ``pattern`` in its output."""
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(START_TIMEOUT_S):
        while (found := re.search(pattern, output)) is None:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"{command[3]} ended: {output.decode()[-500:]}")
            output += chunk
    return process, found.group(0)


async def stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGINT)
    with trio.move_on_after(10):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, WRITE_BLOCK_BYTES)
            f.write(os.urandom(n))
            left -= n


async def main(size: int, rounds: int) -> None:
    cli = [sys.executable, "-m", "trio_stream"]
    work = Path(tempfile.mkdtemp(prefix="trio-stream-bench-", dir="/tmp"))
    server = receiver = None
    try:
        incoming = work / "incoming"
        incoming.mkdir()
        source = work / "payload.bin"
        await trio.to_thread.run_sync(make_file, source, size)
        server, url_bytes = await start(
            [*cli, "serve", "--host", "127.0.0.1", "--tcp-port", "0", "--http-port", "off"],
            rb"tcp://127\.0\.0\.1:\d+",
        )
        url = url_bytes.decode()
        receiver, _ = await start(
            [*cli, "receive-files", url, str(incoming), "--name", "bench-store", "--quiet"],
            rb"accepting files",
        )
        rates = []
        async with ts.open_client(url, name="bench-sender") as client:
            for i in range(rounds):
                started = time.perf_counter()
                await client.send_file("bench-store", source, name=f"copy{i}.bin")
                elapsed = time.perf_counter() - started
                rate = size / elapsed / 1e6
                rates.append(rate)
                print(
                    json.dumps({"round": i, "bytes": size, "s": elapsed, "MB/s": rate}),
                    file=sys.stderr,
                )
                (incoming / f"copy{i}.bin").unlink()
        print(
            f"file transfer over loopback TCP, {size / 2**20:.0f} MiB, {rounds} rounds: "
            f"median {statistics.median(rates):.0f} MB/s, best {max(rates):.0f} MB/s, "
            f"worst {min(rates):.0f} MB/s"
        )
    finally:
        for process in (receiver, server):
            if process is not None:
                await stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=byte_size, default=2**30, help="file size (default 1GiB)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.size, args.rounds)
