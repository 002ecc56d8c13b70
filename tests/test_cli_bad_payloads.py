"""The commands that read a channel (sub, dump, bridge, and show and replay of a recording)
against payloads they cannot decode, compressed payloads, and values JSON has no spelling for.

A payload that is not CBOR (the server relays payloads unchecked: docs/protocol.md section 4)
or over the reader's PayloadLimits makes a Subscription raise for that message and go on; the
commands stopped there (exit 1). dump and bridge now carry payloads undecoded (compressed
ones stay compressed); sub skips such a frame with one line on stderr.
"""

from __future__ import annotations

import argparse
import decimal
import io
import json
import math
import signal
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn, cast

import cbor2
import numpy as np
import pytest
import trio
from test_cli import _dump_bytes, cli, json_lines, running, wait_for_channel

import trio_stream as ts
from trio_stream._protocol.codec import ZLIB_PAYLOAD_TAG, EncodedPayload, encode_payload
from trio_stream._protocol.frames import DATA_HEAD
from trio_stream._records import Message, Position
from trio_stream._subscription import Subscription
from trio_stream.cli import dumpfile, record
from trio_stream.cli._output import jsonable, stderr_console, summarize
from trio_stream.cli._run import CliError

WAIT_S = 10.0
NOT_CBOR = EncodedPayload(b"\x1c")  # a reserved head byte: what a buggy writer could send
TOO_BIG = 2**16000  # an integer of 2001 bytes: over the reader's max_bignum_bytes (1024)
# CBOR a Python writer would not produce (cbor2 writes 1.5 as a half float, lists with their
# length): a non-Python writer's bytes, which a copy or a recording should keep as they were.
FOREIGN = b"\x9f\xfa\x3f\xc0\x00\x00\x01\xff"  # [1.5 as a float32, 1], indefinite length


def strict_json(line: str) -> Any:
    """A JSON line as a strict parser reads it (no NaN or Infinity tokens)."""

    def refuse(token: str) -> NoReturn:
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


async def publish_when_read(
    client: ts.Client, channel: str, values: list[Any], readers: int = 1, **options: Any
) -> None:
    await wait_for_channel(client, channel, readers=readers)
    async with client.publisher(channel, **options) as pub:
        for value in values:
            assert await pub.send(value)
        await pub.wait_acknowledged()


# -- finding 1: a frame that does not decode ends nothing ------------------------------------
async def test_sub_skips_a_frame_it_cannot_decode_and_reads_on(url: str) -> None:
    async with ts.open_client(url, name="w") as writer:
        await writer.create_channel("odd")
        async with running("sub", url, "odd", "--count", "2", "--data-only") as sub:
            await publish_when_read(writer, "odd", [1, NOT_CBOR, TOO_BIG, 4])
            code, out, stderr = await sub.finish()
    assert code == 0, stderr
    assert out.splitlines() == ["1", "4"]
    said = stderr.strip().splitlines()
    assert said[0].startswith("trio-stream sub: skipped frame seq 2: malformed payload: "), said
    assert said[0].endswith(" (1 so far)"), said
    assert said[1] == (
        "trio-stream sub: skipped frame seq 3: payload refused: an integer of 2001 bytes "
        "exceeds PayloadLimits.max_bignum_bytes (1024) (2 so far)"
    ), said
    assert "Traceback" not in stderr and len(said) == 2, said


async def test_dump_records_past_a_payload_that_is_not_cbor(url: str, tmp_path: Path) -> None:
    # A payload beyond the reader's limits is well-formed CBOR: recorded as it came (show
    # says it does not decode); one that is not CBOR cannot be an item of the file: left out.
    path = tmp_path / "odd.tsdump"
    async with ts.open_client(url, name="w") as writer:
        await writer.create_channel("odd")
        async with running("dump", url, "odd", str(path), "--count", "3") as dump:
            await publish_when_read(writer, "odd", [1, NOT_CBOR, TOO_BIG, 4])
            code, _, stderr = await dump.finish()
    assert code == 0, stderr
    said = stderr.strip().splitlines()
    assert said[0] == (
        "trio-stream dump: frame seq 2: its payload is not CBOR (malformed CBOR (initial byte "
        "0x1c)): left out"
    ), said
    assert said[-1].startswith("dumped 3 frames ("), said
    assert said[-1].endswith("; lost 0; 1 frame left out (payload not CBOR)"), said
    with path.open("rb") as f:
        frames = list(dumpfile.DumpReader(f))
    assert [frame["seq"] for frame in frames] == [1, 3, 4]
    assert frames[0]["data"] == 1 and frames[2]["data"] == 4
    refused = frames[1]["data"]
    assert isinstance(refused, dumpfile.UndecodedPayload)
    assert refused.payload == b"".join(encode_payload(TOO_BIG))
    assert refused.reason.startswith("payload refused: an integer of 2001 bytes")
    shown = await cli("show", str(path), "--data-only")
    assert shown.returncode == 0, shown.stderr
    lines = [strict_json(line) for line in shown.stdout.decode().splitlines()]
    assert lines[0] == 1 and lines[2] == 4
    assert lines[1] == {
        "$undecoded": "payload refused: an integer of 2001 bytes exceeds "
        "PayloadLimits.max_bignum_bytes (1024)"
    }, lines


async def test_a_frame_left_out_of_a_dump_passes_its_loss_to_the_next(tmp_path: Path) -> None:
    # The file's "lost" must still add up to what the recorder lost, and a gap stays marked.
    path = tmp_path / "carry.tsdump"
    gap = ts.Gap("reset", lost=None, recovered=0)
    messages = [
        Message(memoryview(b"\x01"), 1, "ch", "w", 1.0, 0),
        Message(memoryview(b"\xff"), 2, "ch", "w", 2.0, 5, gap),
        Message(memoryview(b"\x03"), 3, "ch", "w", 3.0, 1),
    ]
    sub = FakeSubscription(messages, end=trio.EndOfChannel())
    recording = await record_to(path, sub)
    assert recording.frames == 2 and recording.left_out == 1 and recording.lost == 6
    with path.open("rb") as f:
        frames = list(dumpfile.DumpReader(f))
    assert [(f["seq"], f["lost"], f.get("gap")) for f in frames] == [
        (1, 0, None),
        (3, 6, {"kind": "reset", "lost": None, "recovered": 0}),
    ]


async def test_bridge_forwards_what_it_cannot_decode_and_goes_on(server: ts.Server) -> None:
    # It stopped (exit 1) at the first frame it could not decode, and the copy ended with it
    # for all its readers. Forwarded as it came, the copy's readers refuse it as the
    # source's do, and read on.
    assert server.tcp_url is not None
    url = server.tcp_url
    async with (
        ts.open_client(url, name="daq") as daq,
        ts.open_client(url, name="viewer") as viewer,
    ):
        await daq.create_channel("src")
        async with running("bridge", url, url, "src", "--rename", "src=copy") as bridge:
            await wait_for_channel(viewer, "copy")
            async with viewer.subscribe("copy", policy="block", size=100) as sub:
                await publish_when_read(daq, "src", [1, TOO_BIG, NOT_CBOR, 4])
                got: list[Any] = []
                with trio.fail_after(WAIT_S):
                    while len(got) < 4:
                        try:
                            got.append((await sub.receive()).data)
                        except ts.ProtocolError as exc:
                            got.append(type(exc))
            bridge.process.send_signal(signal.SIGINT)
            code, _, stderr = await bridge.finish()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert got == [1, ts.PayloadRefused, ts.ProtocolError, 4]


def data_frame(seq: int, payload: bytes, sender: bytes = b"w") -> bytearray:
    """A DATA frame's body as a subscription gets it (frames.DATA_HEAD: type, sub, lost, seq,
    time, sender length; the sender; the payload)."""
    return bytearray(DATA_HEAD.pack(3, 1, 0, seq, float(seq), len(sender)) + sender + payload)


async def test_a_subscription_hands_payloads_over_undecoded_when_asked() -> None:
    # The internal hook dump and bridge use: a message's data is its payload's bytes, never
    # an error; a gap that waits (a resume) still lands on the first message, and the
    # subscriptions that did not ask decode as before.
    client = SimpleNamespace(payload_limits=ts.PayloadLimits(), _connected=False)
    resumed = {"sub": 1, "window": 100, "resume": {"kind": "resumed", "recovered": 2}}
    raw = Subscription(cast(ts.Client, client), {"channel": "c"}, resumed)
    raw._keep_payloads_encoded()
    plain = Subscription(cast(ts.Client, client), {"channel": "c"}, {"sub": 2, "window": 100})
    frames = [(1, b"\x1c"), (2, b"".join(encode_payload(TOO_BIG))), (3, b"\x03")]
    for sub in (raw, plain):
        sub._deliver([data_frame(seq, payload) for seq, payload in frames])
    got = [raw.receive_nowait() for _ in frames]
    assert [bytes(m.data) for m in got] == [payload for _, payload in frames]
    assert got[0].gap == ts.Gap("resumed", 0, 2) and got[1].gap is None
    assert [m.seq for m in got] == [1, 2, 3] and got[2].sender == "w"
    with pytest.raises(ts.ProtocolError):
        plain.receive_nowait()
    with pytest.raises(ts.PayloadRefused):
        plain.receive_nowait()
    assert plain.receive_nowait().data == 3  # and it went on


# -- finding 2: a dump that ends on an error keeps what it received --------------------------
class FakeSubscription:
    """Hands out ``messages`` (their data: payload bytes, as a dump's subscription does),
    then raises ``end``, or waits for ever if it is None."""

    def __init__(self, messages: list[Message], end: BaseException | None) -> None:
        self._messages = list(messages)
        self._end = end
        self.received = 0
        self.channel = "ch"
        self.end_reason = "channel 'ch' was deleted"
        self._frames: list[Message] = []  # none queued: each comes as it is asked for
        self.lost = 0  # (no lost notice: what the messages carry is all)

    @property
    def position(self) -> Position:
        return Position("", self.received)

    def _keep_payloads_encoded(self) -> None:
        pass

    async def receive(self) -> Message:
        await trio.lowlevel.checkpoint()
        if self._messages:
            self.received += 1
            return self._messages.pop(0)
        if self._end is None:
            await trio.sleep_forever()
        raise self._end


async def record_to(path: Path, sub: FakeSubscription) -> Any:
    """dump's recording of ``sub`` into ``path``, as run_dump does once subscribed."""
    fake = cast(ts.Subscription, sub)
    return await record._record_to_file(
        dump_args(path), cast(ts.Client, None), fake, stderr_console(), math.inf
    )


def dump_args(path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        file=path,
        channel="ch",
        url="tcp://127.0.0.1:1",
        policy="block",
        quiet=True,
        count=None,
        wait_channel=False,
        duration=None,
        append=False,
        name=None,
    )


def three_frames() -> list[Message]:
    return [Message(memoryview(bytes([i])), i, "ch", "w", float(i), 0) for i in (1, 2, 3)]


async def test_dump_ended_by_an_error_writes_the_frames_it_had(tmp_path: Path) -> None:
    # Its last write came after the recording, not on the way out of an error: the frames
    # that waited for it (up to half a second or 4 MiB of them) were lost.
    path = tmp_path / "err.tsdump"
    sub = FakeSubscription(three_frames(), end=ts.LimitExceeded("over the server's memory"))
    with pytest.raises(ts.LimitExceeded):
        await record_to(path, sub)
    with path.open("rb") as f:
        assert [frame["data"] for frame in dumpfile.DumpReader(f)] == [1, 2, 3]


async def test_dump_cancelled_writes_the_frames_it_had(tmp_path: Path) -> None:
    # A cancel from outside (the second Ctrl-C's, exit 130) is a way out too.
    path = tmp_path / "cancel.tsdump"
    sub = FakeSubscription(three_frames(), end=None)
    with trio.move_on_after(0.3):  # well within the flush interval
        await record_to(path, sub)
    with path.open("rb") as f:
        assert [frame["data"] for frame in dumpfile.DumpReader(f)] == [1, 2, 3]


async def test_a_final_write_that_hangs_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bounded: a write that never ends (a pipe nobody reads) does not keep dump for ever.
    path = tmp_path / "stuck.tsdump"
    monkeypatch.setattr(record, "FINAL_FLUSH_TIMEOUT_S", 0.2)
    release = threading.Event()
    synced: list[int] = []

    def stuck_write(self: record._BatchWriter, pieces: list[Any], durable: bool) -> None:
        # The header went out and was synced (dump writes it as it makes the file, and syncs
        # it before the first frame): the next sync hangs (for 5 s here). The frames reach
        # the file before each receive (the dump's credit), the final sync hangs.
        if durable:
            if synced:
                release.wait(5.0)
            synced.append(len(pieces))

    monkeypatch.setattr(record._BatchWriter, "_write", stuck_write)
    sub = FakeSubscription(three_frames(), end=trio.EndOfChannel())
    with trio.fail_after(WAIT_S), pytest.raises(CliError, match="could not be synced"):
        await record_to(path, sub)
    release.set()


# -- finding 3: payloads as they came --------------------------------------------------------
async def test_dump_keeps_a_compressed_payload_compressed_and_reads_it_back(
    server: ts.Server, tmp_path: Path
) -> None:
    # Five 8 MB zlib-compressed frames of zeros made a 40 MB file: stored decompressed.
    assert server.tcp_url is not None
    url = server.tcp_url
    path = tmp_path / "z.tsdump"
    zeros = np.zeros(1_000_000)
    ramp = np.arange(100_000, dtype=np.float32)
    async with ts.open_client(url, name="w") as writer:
        await writer.create_channel("z")
        async with running("dump", url, "z", str(path), "--count", "4") as dump:
            values = [zeros, ramp, EncodedPayload(FOREIGN), "small"]
            await publish_when_read(writer, "z", values, compress="zlib")
            code, _, stderr = await dump.finish()
        assert code == 0, stderr
        assert path.stat().st_size < 1_000_000, path.stat().st_size  # not 8.4 MB
        with path.open("rb") as f:
            frames = list(dumpfile.DumpReader(f))
        assert frames[0]["data"].dtype == zeros.dtype
        assert frames[0]["data"].tobytes() == zeros.tobytes()  # bit-identical
        assert frames[1]["data"].tobytes() == ramp.tobytes()
        assert frames[2]["data"] == [1.5, 1] and frames[3]["data"] == "small"
        # The bytes as the writers sent them: compressed, and the foreign CBOR as it was.
        with path.open("rb") as f:
            kept = [frame["data"] for frame in dumpfile.DumpReader(f).frames(keep_encoded=True)]
        assert isinstance(kept[0], EncodedPayload)
        assert cbor2.loads(kept[0].data).tag == ZLIB_PAYLOAD_TAG
        assert FOREIGN in path.read_bytes()
        shown = await cli("show", str(path), "--data-only", "--count", "1")
        assert shown.returncode == 0, shown.stderr
        assert strict_json(shown.stdout.decode())["mean"] == 0.0
        # replay sends what was recorded, compressed as it was.
        await writer.create_channel("again")
        async with writer.subscribe("again", policy="block", size=10) as sub:
            sub._keep_payloads_encoded()
            played = await cli("replay", str(path), url, "again", "--fast")
            assert played.returncode == 0, played.stderr
            with trio.fail_after(WAIT_S):
                replayed = [bytes((await sub.receive()).data) for _ in range(4)]
    assert replayed[0] == kept[0].data and len(replayed[0]) < 100_000
    # A payload that decodes is played as its value (encoded again: the same value, not the
    # same bytes where another writer chose other CBOR for it).
    assert cbor2.loads(replayed[2]) == [1.5, 1] and cbor2.loads(replayed[3]) == "small"


async def test_bridge_forwards_a_compressed_payload_compressed(server: ts.Server) -> None:
    # An 8 MB frame, zlib-compressed to a few KB for a slow link, crossed it decompressed.
    assert server.tcp_url is not None
    url = server.tcp_url
    zeros = np.zeros(1_000_000)
    async with (
        ts.open_client(url, name="daq") as daq,
        ts.open_client(url, name="viewer") as viewer,
    ):
        await daq.create_channel("src")
        async with running("bridge", url, url, "src", "--rename", "src=copy") as bridge:
            await wait_for_channel(viewer, "copy")
            async with (
                viewer.subscribe("copy", policy="block", size=10) as decoded,
                viewer.subscribe("copy", policy="block", size=10) as raw,
            ):
                raw._keep_payloads_encoded()
                values = [zeros, EncodedPayload(FOREIGN)]
                await publish_when_read(daq, "src", values, compress="zlib")
                with trio.fail_after(WAIT_S):
                    payloads = [bytes((await raw.receive()).data) for _ in range(2)]
                    got = [(await decoded.receive()).data for _ in range(2)]
            bridge.process.send_signal(signal.SIGINT)
            code, _, stderr = await bridge.finish()
    assert code == 0, stderr
    assert len(payloads[0]) < 100_000 and cbor2.loads(payloads[0]).tag == ZLIB_PAYLOAD_TAG
    assert payloads[1] == FOREIGN
    assert got[0].tobytes() == zeros.tobytes() and got[1] == [1.5, 1]


def test_a_payload_is_stored_as_one_whole_cbor_item() -> None:
    assert bytes(dumpfile.payload_item(b"\x01\x02")) == b"\x01"  # what a reader decodes
    for bad, why in [(b"", "empty"), (b"\x82\x01", "cut short"), (b"\xff", "break")]:
        with pytest.raises(dumpfile.DumpFormatError, match=why):
            dumpfile.payload_item(bad)
    # A long list is measured by cbor2 rather than walked head by head (0.6 s for this one).
    long = b"".join(encode_payload(list(range(100_000))))
    assert len(dumpfile.payload_item(long + b"\x00")) == len(long)
    deep = b"\x81" * 500 + b"\x01"  # deeper than cbor2 decodes: walked after all
    assert len(dumpfile.payload_item(deep * 3)) == len(deep)


def test_a_recording_of_a_zlib_payload_reads_with_cbor2_alone(tmp_path: Path) -> None:
    # The snippet of dump-format.md (tested as printed by test_cli) decompresses zlib.
    path = tmp_path / "recording.tsdump"
    compressed = b"".join(ts_compress(np.arange(20_000.0)))
    msg = Message(None, 1, "ch", "w", 1.0, 0)
    path.write_bytes(
        b"".join(dumpfile.encode_item(dumpfile.header("ch")))
        + b"".join(bytes(p) for p in dumpfile.frame_pieces(msg, 1.0, compressed))
    )
    doc = dumpfile.__doc__ or ""
    snippet = doc[doc.index("    import cbor2") :].replace('"recording.tsdump"', repr(str(path)))
    snippet = snippet.replace('print(frame["t"], frame["seq"], frame["data"])', "got.append(frame)")
    namespace: dict[str, Any] = {"got": []}
    exec(__import__("textwrap").dedent(snippet), namespace)
    assert namespace["got"][0]["data"].tolist() == np.arange(20_000.0).tolist()


def ts_compress(array: np.ndarray[Any, Any]) -> list[Any]:
    from trio_stream._protocol.compression import compressor

    compress = compressor("zlib")
    assert compress is not None
    return compress(encode_payload(array))


# -- finding 4: long doubles -----------------------------------------------------------------
def test_long_doubles_print_as_floats() -> None:
    # np.longdouble(...).item() is a longdouble on x86: convert() recursed 980 frames deep.
    third = np.arange(3, dtype=np.longdouble) / 3
    assert jsonable(third) == {
        "dtype": str(third.dtype),
        "shape": [3],
        "min": 0.0,
        "max": pytest.approx(2 / 3),
        "mean": pytest.approx(1 / 3),
    }
    assert jsonable(third, full=True) == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert jsonable({"x": np.longdouble(1.5)}) == {"x": 1.5}
    waves = np.array([1 + 2j, 3 - 4j], dtype=np.clongdouble)
    assert jsonable(waves, full=True) == [[1.0, 2.0], [3.0, -4.0]]
    assert jsonable(waves)["mean"] == [2.0, -1.0]
    huge = np.longdouble(10) ** 400 if np.finfo(np.longdouble).maxexp > 1024 else None
    if huge is not None:  # beyond float64: an infinity, said so
        assert jsonable(huge) == {"$float": "inf"}


async def test_show_prints_a_long_double_array(tmp_path: Path) -> None:
    path = tmp_path / "ld.tsdump"
    path.write_bytes(_dump_bytes([np.arange(3, dtype=np.longdouble) / 3, 2]))
    for options in ([], ["--full"]):
        shown = await cli("show", str(path), "--data-only", *options)
        assert shown.returncode == 0, shown.stderr
        assert [strict_json(line) for line in shown.stdout.decode().splitlines()][1] == 2


# -- finding 5: the summary ------------------------------------------------------------------
def test_the_summary_of_large_float32_values_and_of_nans() -> None:
    big = summarize(np.full(10, 3e38, np.float32))
    assert big["mean"] == pytest.approx(float(np.float32(3e38)))  # was inf: float32 sum
    dropout = summarize(np.array([1.0, np.nan, 3.0]))
    assert dropout == {
        "dtype": "float64",
        "shape": [3],
        "min": 1.0,
        "max": 3.0,
        "mean": 2.0,
        "nan": 1,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" / "Mean of empty slice"
        empty = summarize(np.full((2, 2), np.nan, np.float32))
    assert empty == {
        "dtype": "float32",
        "shape": [2, 2],
        "min": None,
        "max": None,
        "mean": None,
        "nan": 4,
    }
    spread = summarize(np.array([-np.inf, 0.0, np.inf]))
    assert spread["min"] == {"$float": "-inf"} and spread["max"] == {"$float": "inf"}
    assert spread["mean"] == {"$float": "nan"} and "nan" not in spread
    waves = summarize(np.array([1 + 1j, complex(np.nan, 0), 3 + 3j], dtype=np.complex64))
    assert waves["mean"] == [2.0, 2.0] and waves["nan"] == 1
    assert summarize(np.arange(4, dtype=np.uint64))["mean"] == 1.5
    assert "nan" not in summarize(np.arange(3.0))


# -- finding 6: JSON a consumer reads right --------------------------------------------------
def test_what_json_cannot_spell_is_tagged_not_a_string() -> None:
    assert jsonable([math.nan, -math.inf, np.float32(1.5), "nan"]) == [
        {"$float": "nan"},
        {"$float": "-inf"},
        1.5,
        "nan",
    ]
    assert jsonable(np.float64(math.inf)) == {"$float": "inf"}
    assert jsonable(cbor2.undefined) == {"$undefined": True}
    assert jsonable(cbor2.CBORTag(9999, "x")) == {"$tag": 9999, "value": "x"}
    assert jsonable(cbor2.CBORTag(9999, [math.nan])) == {
        "$tag": 9999,
        "value": [{"$float": "nan"}],
    }
    assert jsonable(cbor2.CBORSimpleValue(16)) == {"$simple": 16}
    assert jsonable(decimal.Decimal("1.50")) == {"$decimal": "1.50"}
    assert jsonable(io.BytesIO)["$repr"] == repr(io.BytesIO)


async def test_sub_prints_strict_json_for_nan_undefined_and_unknown_tags(url: str) -> None:
    values = [
        math.nan,
        {"t": -math.inf},
        EncodedPayload(b"\xf7"),  # undefined
        EncodedPayload(cbor2.dumps(cbor2.CBORTag(9999, "x"))),
        "nan",
    ]
    async with ts.open_client(url, name="w") as writer:
        await writer.create_channel("odd")
        async with running("sub", url, "odd", "--count", "5", "--data-only") as sub:
            await publish_when_read(writer, "odd", values)
            code, out, stderr = await sub.finish()
    assert code == 0, stderr
    assert [strict_json(line) for line in out.splitlines()] == [
        {"$float": "nan"},
        {"t": {"$float": "-inf"}},
        {"$undefined": True},
        {"$tag": 9999, "value": "x"},
        "nan",  # a real string stays one
    ]
    assert json_lines(out)[-1] == "nan"
