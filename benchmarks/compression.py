"""S2 with compression: MB/s of camera frames delivered to one reader over TCP, per method.

    python benchmarks/compression.py [--seconds 4] [--methods none,zlib,zstd]

A server runs in this process; the writer and the reader are separate processes (so that
compressing and decompressing each have a core, as they would on two machines). The frame is
a 1 MiB uint16 image (512 x 1024): a smooth gradient with noise in the 2 low bits, like a
camera's dark-ish frame. The reader subscribes with ``block`` (lossless: the writer goes at
the reader's pace) and counts frames over ``--seconds`` after its first one; MB/s is
10**6 bytes of array data per second. Also printed: the compression ratio and the
single-thread compress/decompress speed of one frame.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import trio

import trio_stream as ts
from trio_stream._protocol.codec import decode_payload, encode_payload
from trio_stream._protocol.compression import compressor

CHANNEL = "camera"
WRITER_LIMIT_S = 60.0  # the writer stops by itself at the latest after this


def camera_frame() -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:512, 0:1024]
    smooth = (1000 + 20 * x // 16 + 30 * y // 16).astype(np.uint16)
    frame: np.ndarray[Any, Any] = smooth + rng.integers(0, 4, size=smooth.shape, dtype=np.uint16)
    return frame


async def writer(url: str, method: str) -> None:
    frame = camera_frame()
    compress = None if method == "none" else method
    async with (
        ts.open_client(url, name="writer") as client,
        client.publisher(CHANNEL, compress=compress) as pub,
    ):
        await pub.wait_for_readers()
        with trio.move_on_after(WRITER_LIMIT_S):
            while await pub.send(frame):  # False once the reader left
                pass


async def reader(url: str, seconds: float) -> None:
    async with (
        ts.open_client(url, name="reader") as client,
        client.subscribe(CHANNEL, policy="block", size=8) as sub,
    ):
        print("ready", flush=True)
        first = await sub.receive()
        nbytes = first.data.nbytes
        frames = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            await sub.receive()
            frames += 1
    print(json.dumps({"mbps": frames * nbytes / elapsed / 1e6, "frames": frames}), flush=True)


async def one_method(method: str, seconds: float) -> dict[str, Any]:
    config = ts.ServerConfig(host="127.0.0.1", tcp_port=0, http_port=0)
    async with ts.open_server(config) as server, ts.open_client(server.tcp_url or "") as admin:
        await admin.create_channel(CHANNEL)
        me = [sys.executable, __file__]
        async with trio.open_nursery() as nursery:
            read = await trio.lowlevel.open_process(
                [*me, "--role", "reader", server.tcp_url or "", str(seconds)],
                stdout=subprocess.PIPE,
            )
            assert read.stdout is not None
            lines = b""
            while b"ready" not in lines:
                lines += await read.stdout.receive_some()
            nursery.start_soon(
                trio.run_process, [*me, "--role", "writer", server.tcp_url or "", method]
            )
            with trio.fail_after(seconds + WRITER_LIMIT_S):
                while True:
                    chunk = await read.stdout.receive_some()
                    if not chunk:
                        break
                    lines += chunk
                await read.wait()
        result: dict[str, Any] = json.loads(lines.decode().splitlines()[-1])
        return result


def codec_figures(method: str, repeat: int = 5) -> dict[str, float]:
    """Ratio, and the best of ``repeat`` single-thread compress and decode times of a frame."""
    frame = camera_frame()
    pieces = encode_payload(frame)
    raw = sum(len(p) for p in pieces)
    compress = compressor(None if method == "none" else method)
    compress_s = decode_s = float("inf")
    out = b""
    for _ in range(repeat):
        start = time.perf_counter()
        out = b"".join(bytes(p) for p in (compress(pieces) if compress else pieces))
        compress_s = min(compress_s, time.perf_counter() - start)
        start = time.perf_counter()
        decode_payload(out)
        decode_s = min(decode_s, time.perf_counter() - start)
    return {
        "ratio": raw / len(out),
        "compress_mbps": frame.nbytes / compress_s / 1e6 if compress else float("inf"),
        "decode_mbps": frame.nbytes / decode_s / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--methods", default="none,zlib,zstd")
    parser.add_argument("--role", choices=["writer", "reader"])
    parser.add_argument("args", nargs="*")
    opts = parser.parse_args()
    if opts.role == "writer":
        trio.run(writer, opts.args[0], opts.args[1])
        return
    if opts.role == "reader":
        trio.run(reader, opts.args[0], float(opts.args[1]))
        return
    print("| compress | MB/s delivered (1 reader, TCP) | ratio | compress MB/s | decode MB/s |")
    print("|---|---|---|---|---|")
    for method in opts.methods.split(","):
        figures = codec_figures(method)
        result = trio.run(one_method, method, opts.seconds)
        print(
            f"| {method} | {result['mbps']:.0f} | {figures['ratio']:.2f} | "
            f"{figures['compress_mbps']:.0f} | {figures['decode_mbps']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
