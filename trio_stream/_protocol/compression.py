"""Optional payload compression: zlib or zstd around a payload's CBOR, bounded on the way in.

A writer that asked for compression (``client.publisher(ch, compress="zstd")``) wraps each
payload of at least ``COMPRESS_MIN_BYTES`` in one of trio_stream's private CBOR tags
(``ZLIB_PAYLOAD_TAG`` / ``ZSTD_PAYLOAD_TAG`` in codec.py) around a byte string that holds the
compressed CBOR of the value (docs/protocol.md section 4.1). The server never looks inside:
to it the compressed payload is opaque bytes like any other. Readers decompress transparently
in ``codec.decode_payload``, never to more than a caller-given bound, so a small frame that
would inflate to gigabytes (a decompression bomb) costs at most the bound and is refused with
a ProtocolError that names the bound.

Why these choices:
- Small payloads are not worth it: below 64 KiB the compress + decompress time is comparable
  to sending the bytes over loopback, and many small frames are coalesced anyway.
- A payload that does not shrink by at least 1/16 (noise, already-compressed images) goes out
  as it is, so readers do not pay for decompressing it.
- zlib level 1 and zstd level 3 (zstd's default): the fast end of each; a camera stream wants
  throughput, not the last percent of ratio (benchmarks/README.md has the figures).
- zstd comes from ``zstandard`` (python-zstandard, maintained since 2016, wheels for every
  platform): it has what a bounded reader needs, ``frame_content_size`` (check the declared
  size against the bound before decompressing) and a streaming reader (read at most the bound
  when no size is declared). The PyPI package ``zstd`` has one-shot calls only; ``pyzstd``
  would do too, but Python 3.14's ``compression.zstd`` (its descendant) does not exist on
  3.11. It is an optional extra: ``pip install 'trio_stream[zstd]'``; zlib is in the
  standard library.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Final

from .._exceptions import InvalidArgument, ProtocolError
from .bytes_like import BytesLike
from .codec import _RAISE_HINT, ZLIB_PAYLOAD_TAG, ZSTD_PAYLOAD_TAG, cbor_head
from .limits import PayloadRefused

#: Payloads smaller than this (CBOR bytes) are sent uncompressed.
COMPRESS_MIN_BYTES: Final = 64 * 1024
COMPRESSIONS: Final = ("zlib", "zstd")
ZLIB_LEVEL: Final = 1
ZSTD_LEVEL: Final = 3
# The compressed form must save at least this share of the bytes to be used.
_MIN_SAVING_SHIFT: Final = 4  # 1/16
# Output is produced this much at a time when the size is not known up front (bytes).
_CHUNK_BYTES: Final = 1 * 2**20

Compressor = Callable[[list[BytesLike]], list[BytesLike]]


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise InvalidArgument(
            "compress='zstd' needs the zstandard package: pip install 'trio_stream[zstd]' "
            "(in a checkout: pip install -e '.[zstd]'), or use compress='zlib', which needs "
            "nothing"
        ) from exc
    return zstandard


def compressor(name: str | None) -> Compressor | None:
    """The compress function for ``compress=name`` (None: no compression).

    Raises:
        InvalidArgument: an unknown name, or "zstd" without the zstandard package.
    """
    if name is None:
        return None
    if name == "zlib":
        return _compress_zlib
    if name == "zstd":
        _zstandard()  # fail here, when the publisher is made, not at the first large send
        return _compress_zstd
    raise InvalidArgument(f"unknown compression {name!r:.40}; use one of {', '.join(COMPRESSIONS)}")


def _wrap(tag: int, pieces: list[BytesLike], out: list[bytes], total: int) -> list[BytesLike]:
    """The compressed form if it saves enough, else the payload's own pieces."""
    size = sum(len(chunk) for chunk in out)
    if size > total - (total >> _MIN_SAVING_SHIFT):
        return pieces
    return [cbor_head(6, tag) + cbor_head(2, size), *out]


def _compress_zlib(pieces: list[BytesLike]) -> list[BytesLike]:
    total = sum(len(p) for p in pieces)
    if total < COMPRESS_MIN_BYTES:
        return pieces
    # Piece by piece: a large array is compressed from its own memory, never joined first.
    co = zlib.compressobj(ZLIB_LEVEL)
    out = [co.compress(p) for p in pieces]
    out.append(co.flush())
    return _wrap(ZLIB_PAYLOAD_TAG, pieces, out, total)


def _compress_zstd(pieces: list[BytesLike]) -> list[BytesLike]:
    total = sum(len(p) for p in pieces)
    if total < COMPRESS_MIN_BYTES:
        return pieces
    # A compressor per payload: ZstdCompressor objects are not thread-safe (sync publishers
    # compress in the caller's threads), and making one costs microseconds against the
    # milliseconds of compressing 64 KiB or more. size= puts the content size in the frame
    # header, which lets the reader check its bound before decompressing anything.
    co = _zstandard().ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=total)
    out = [co.compress(p) for p in pieces]
    out.append(co.flush())
    return _wrap(ZSTD_PAYLOAD_TAG, pieces, out, total)


def _too_large(max_bytes: int) -> PayloadRefused:
    return PayloadRefused(
        f"a compressed payload decompresses to more than PayloadLimits.max_decompressed_bytes "
        f"({max_bytes}; nothing beyond it was decompressed); "
        + _RAISE_HINT.format("max_decompressed_bytes")
    )


def decompress(tag: int, data: memoryview, max_bytes: int) -> bytes:
    """The CBOR inside a compressed payload, at most ``max_bytes`` of it.

    Raises:
        PayloadRefused: more than ``max_bytes``.
        ProtocolError: not a valid compressed stream.
    """
    if tag == ZLIB_PAYLOAD_TAG:
        return _decompress_zlib(data, max_bytes)
    return _decompress_zstd(data, max_bytes)


def _decompress_zlib(data: memoryview, max_bytes: int) -> bytes:
    do = zlib.decompressobj()
    try:
        # max_length bounds the output: zlib stops there and keeps the rest of the input in
        # unconsumed_tail, so a bomb never inflates past the bound.
        out = do.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ProtocolError(f"bad zlib-compressed payload: {exc}") from None
    if len(out) > max_bytes or do.unconsumed_tail:
        raise _too_large(max_bytes)
    if not do.eof or do.unused_data:
        raise ProtocolError("bad zlib-compressed payload: truncated, or bytes after its end")
    return out


def _decompress_zstd(data: memoryview, max_bytes: int) -> bytes:
    try:
        zstandard = _zstandard()
    except InvalidArgument as exc:
        raise ProtocolError(
            "this payload is zstd-compressed and the zstandard package is missing: "
            "pip install 'trio_stream[zstd]' (in a checkout: pip install -e '.[zstd]')"
        ) from exc
    try:
        declared = zstandard.frame_content_size(data)
        if declared > max_bytes:
            raise _too_large(max_bytes)
        dctx = zstandard.ZstdDecompressor()
        if declared >= 0:
            # zstd allocates exactly the declared size and fails if the frame holds more.
            out: bytes = dctx.decompress(data)
            return out
        # No size in the header (another writer): read at most the bound, a chunk at a time.
        chunks: list[bytes] = []
        size = 0
        with dctx.stream_reader(data) as reader:
            while True:
                chunk = reader.read(min(_CHUNK_BYTES, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
        return b"".join(chunks)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"bad zstd-compressed payload: {exc}") from None
