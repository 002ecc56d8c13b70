"""Payload compression (zlib, zstd): writers compress large values, readers decompress with a
bound, and the server relays the compressed bytes without looking inside."""

from __future__ import annotations

import sys
import tracemalloc
import zlib
from typing import Any

import numpy as np
import pytest
import trio
import zstandard
from engine_marks import BOTH_ENGINES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import trio_stream as ts
from trio_stream._protocol import compression
from trio_stream._protocol.codec import (
    ZLIB_PAYLOAD_TAG,
    ZSTD_PAYLOAD_TAG,
    cbor_head,
    decode_payload,
    encode_payload,
)

pytestmark = BOTH_ENGINES

SETTLE_S = 10.0
MiB = 2**20
ONE_MIB_LIMITS = ts.PayloadLimits(max_decompressed_bytes=MiB)


def camera_frame(seed: int = 0) -> np.ndarray[Any, Any]:
    """A 1 MiB uint16 image: a smooth gradient with noise in the low bits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:512, 0:1024]
    smooth = (1000 + 20 * x // 16 + 30 * y // 16).astype(np.uint16)
    frame: np.ndarray[Any, Any] = smooth + rng.integers(0, 4, size=smooth.shape, dtype=np.uint16)
    return frame


def wire(pieces: list[Any]) -> bytes:
    return b"".join(bytes(p) for p in pieces)


def compressed_payload(tag: int, inner: bytes) -> bytes:
    return cbor_head(6, tag) + cbor_head(2, len(inner)) + inner


def zlib_bomb(nbytes: int) -> bytes:
    """A zlib stream of ``nbytes`` zeros, compressed ~1000:1, made without holding them."""
    co = zlib.compressobj(9)
    chunk = bytes(MiB)
    out = [co.compress(chunk) for _ in range(nbytes // MiB)]
    out.append(co.flush())
    return b"".join(out)


@pytest.mark.parametrize("method", ["zlib", "zstd"])
async def test_compressed_frames_arrive_decompressed_and_smaller_on_the_wire(
    url: str, method: str
) -> None:
    frame = camera_frame()
    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("cam")
        async with (
            r.subscribe("cam") as sub,
            w.publisher("cam", compress=method) as pub,
        ):
            await pub.wait_for_readers()
            assert await pub.send(frame)
            assert await pub.send({"small": 1})  # under the threshold: sent as it is
            with trio.fail_after(SETTLE_S):
                got = await sub.receive()
                small = await sub.receive()
        np.testing.assert_array_equal(got.data, frame)
        assert got.data.dtype == frame.dtype
        assert small.data == {"small": 1}
        # statistics count DATA frames as they came over the wire: well under the 1 MiB
        assert sub.statistics().bytes < frame.nbytes * 3 // 4


async def test_publish_and_sync_publisher_compress_too(url: str) -> None:
    frame = camera_frame(1)

    def sync_writer() -> None:
        with ts.SyncClient(url, name="sw") as c, c.publisher("cam", compress="zstd") as pub:
            pub.wait_for_readers(timeout=SETTLE_S)
            pub.send(frame)
            c.publish("cam", frame, compress="zlib")

    async with ts.open_client(url, name="w") as w, ts.open_client(url, name="r") as r:
        await w.create_channel("cam")
        async with r.subscribe("cam") as sub:
            assert await w.publish("cam", frame, compress="zlib")
            with trio.fail_after(60):
                await trio.to_thread.run_sync(sync_writer, abandon_on_cancel=True)
            with trio.fail_after(SETTLE_S):
                for _ in range(3):
                    np.testing.assert_array_equal((await sub.receive()).data, frame)
            assert sub.statistics().bytes < 3 * frame.nbytes * 3 // 4  # all three compressed


@pytest.mark.parametrize("method", ["zlib", "zstd"])
async def test_a_decompression_bomb_is_refused_and_the_next_frame_still_arrives(
    server: ts.Server, method: str
) -> None:
    assert server.tcp_url is not None
    async with (
        ts.open_client(server.tcp_url, name="w") as w,
        ts.open_client(server.tcp_url, name="r", payload_limits=ONE_MIB_LIMITS) as r,
    ):
        await w.create_channel("cam")
        async with r.subscribe("cam") as sub, w.publisher("cam", compress=method) as pub:
            await pub.wait_for_readers()
            await pub.send(bytes(4 * MiB))  # 4 MiB of zeros: a few KiB on the wire
            await pub.send("after")
            with trio.fail_after(SETTLE_S):
                with pytest.raises(ts.PayloadRefused, match=r"max_decompressed_bytes \(1048576;"):
                    await sub.receive()
                assert (await sub.receive()).data == "after"


def test_a_zlib_bomb_costs_no_memory_beyond_the_bound() -> None:
    payload = compressed_payload(ZLIB_PAYLOAD_TAG, zlib_bomb(256 * MiB))
    tracemalloc.start()
    try:
        with pytest.raises(ts.ProtocolError, match=r"max_decompressed_bytes \(1048576;"):
            decode_payload(payload, 0, ONE_MIB_LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB


def test_a_zstd_bomb_without_a_declared_size_costs_no_memory_beyond_the_bound() -> None:
    co = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    chunk = bytes(MiB)
    bomb = b"".join([*(co.compress(chunk) for _ in range(256)), co.flush()])
    assert zstandard.frame_content_size(bomb) == -1
    tracemalloc.start()
    try:
        with pytest.raises(ts.ProtocolError, match=r"max_decompressed_bytes \(1048576;"):
            decode_payload(compressed_payload(ZSTD_PAYLOAD_TAG, bomb), 0, ONE_MIB_LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB


def test_a_zstd_frame_declaring_more_than_the_bound_is_refused_before_decompressing() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(64 * MiB))
    with pytest.raises(ts.ProtocolError, match=r"max_decompressed_bytes \(1048576;"):
        decode_payload(compressed_payload(ZSTD_PAYLOAD_TAG, bomb), 0, ONE_MIB_LIMITS)


def test_a_zstd_payload_without_a_declared_size_within_the_bound_decodes() -> None:
    inner = wire(encode_payload(list(range(100_000))))
    raw = zstandard.ZstdCompressor(write_content_size=False).compress(inner)
    assert decode_payload(compressed_payload(ZSTD_PAYLOAD_TAG, raw)) == list(range(100_000))


@pytest.mark.parametrize(
    "payload",
    [
        compressed_payload(ZLIB_PAYLOAD_TAG, b"not zlib at all"),
        compressed_payload(ZSTD_PAYLOAD_TAG, b"not zstd at all"),
        compressed_payload(ZLIB_PAYLOAD_TAG, zlib.compress(b"\x82\x01\x02")[:-3]),  # truncated
        compressed_payload(ZLIB_PAYLOAD_TAG, zlib.compress(b"\x01") + b"junk"),
        cbor_head(6, ZLIB_PAYLOAD_TAG) + cbor_head(3, 2) + b"hi",  # not a byte string
        # compressed twice: the inner tag is refused
        compressed_payload(
            ZLIB_PAYLOAD_TAG,
            zlib.compress(compressed_payload(ZLIB_PAYLOAD_TAG, zlib.compress(b"\x01"))),
        ),
        # a compressed payload inside a list: only a whole payload may be compressed
        b"\x81" + compressed_payload(ZLIB_PAYLOAD_TAG, zlib.compress(b"\x01")),
    ],
)
def test_bad_compressed_payloads_raise_protocol_error(payload: bytes) -> None:
    with pytest.raises(ts.ProtocolError):
        decode_payload(payload)


def test_small_and_incompressible_payloads_go_out_unchanged() -> None:
    for name in compression.COMPRESSIONS:
        compress = compression.compressor(name)
        assert compress is not None
        small = encode_payload(bytes(compression.COMPRESS_MIN_BYTES - 100))
        assert compress(small) is small
        noise = encode_payload(np.random.default_rng(0).bytes(compression.COMPRESS_MIN_BYTES * 2))
        assert compress(noise) is noise


def test_unknown_compression_and_missing_zstandard_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ts.InvalidArgument, match="use one of zlib, zstd"):
        compression.compressor("lz4")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import now raises ImportError
    with pytest.raises(ts.InvalidArgument, match=r"pip install 'trio_stream\[zstd\]'"):
        compression.compressor("zstd")
    payload = compressed_payload(ZSTD_PAYLOAD_TAG, b"\x28\xb5\x2f\xfd")
    with pytest.raises(ts.ProtocolError, match="zstandard package is missing"):
        decode_payload(payload)


async def test_open_publisher_with_an_unknown_compression_sends_nothing(url: str) -> None:
    async with ts.open_client(url) as c:
        await c.create_channel("cam")
        with pytest.raises(ts.InvalidArgument, match="unknown compression"):
            await c.open_publisher("cam", compress="gzip")
        assert (await c.channels())[0].writers == 0


values = st.one_of(
    st.binary(min_size=0, max_size=200_000),
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=300),
        elements={"allow_nan": False},
    ),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20_000),
)


@settings(max_examples=60, deadline=None)
@given(value=values, method=st.sampled_from(compression.COMPRESSIONS))
def test_compressing_then_decoding_gives_the_value_back(value: Any, method: str) -> None:
    compress = compression.compressor(method)
    assert compress is not None
    got = decode_payload(wire(compress(encode_payload(value))))
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(got, value)
        assert got.dtype == value.dtype and got.shape == value.shape
    else:
        assert got == value
