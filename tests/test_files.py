"""File transfer between clients through the real server: round trips checked with sha256,
names that would leave the directory refused, size limits, no partial file under the final
name, fetching from a shared directory, the SyncClient and the command line."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_stream as ts
from trio_stream import _files

SETTLE_S = 20.0


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@asynccontextmanager
async def pair(url: str, directory: Path, **accept: Any) -> AsyncIterator[tuple[Any, ts.Client]]:
    async with (
        ts.open_client(url, name="store", reconnect=False) as store,
        ts.open_client(url, name="daq", reconnect=False) as daq,
    ):
        service = store.accept_files(directory, **accept)
        yield service, daq


async def wait_until(predicate: Any) -> None:
    with trio.fail_after(SETTLE_S):
        while not predicate():  # noqa: ASYNC110 - the file system, polled
            await trio.sleep(0.01)


async def test_send_file_round_trip_is_byte_exact(url: str, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    size = 3 * _files.CHUNK_BYTES + 12345  # several chunks and a partial one
    data = random_file(tmp_path / "run42.h5", size)
    events: list[ts.FileEvent] = []
    seen: list[tuple[int, int]] = []
    async with pair(url, incoming, on_event=events.append) as (_, daq):
        with trio.fail_after(SETTLE_S):
            name = await daq.send_file(
                "store", tmp_path / "run42.h5", progress=lambda s, t: seen.append((s, t))
            )
            other = await daq.send_file("store", tmp_path / "run42.h5", name="copy.h5")
    assert (name, other) == ("run42.h5", "copy.h5")
    for landed in ("run42.h5", "copy.h5"):
        got = (incoming / landed).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert leftovers(incoming) == ["copy.h5", "run42.h5"]  # no temporary file left
    assert seen[-1] == (size, size)
    assert next(e.kind for e in events if e.name == "run42.h5") == "started"
    done = [e for e in events if e.kind == "done"]
    assert [e.path for e in done] == [incoming / "run42.h5", incoming / "copy.h5"]
    # Who sent it (it was always None: receive-files could not say; an RPC persona).
    assert {e.sender for e in events} == {"daq"}


async def test_an_empty_file_arrives(url: str, tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        await daq.send_file("store", tmp_path / "empty")
    assert (incoming / "empty").read_bytes() == b""


async def test_a_received_file_gets_the_mode_of_any_file_its_user_writes(
    url: str, tmp_path: Path
) -> None:
    (tmp_path / "run.bin").write_bytes(b"x")
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        await daq.send_file("store", tmp_path / "run.bin")
    written_here = (tmp_path / "run.bin").stat().st_mode & 0o777  # 0o666 less the umask
    assert (incoming / "run.bin").stat().st_mode & 0o777 == written_here


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "/etc/passwd",
        "a/b",
        "..",
        ".",
        ".hidden",
        "a\x00b",
        "a\\b",
        "x" * 256,
        "caf\udce9.txt",  # bytes that were not UTF-8, as Python reads them from a directory
        "x\ud800",  # a lone surrogate: CBOR text cannot carry it
        "evil\u009b2Jname",  # C1: CSI, which a terminal acts on when receive-files prints it
        "a\u0085b",
    ],
)
def test_names_that_leave_the_directory_are_refused(name: str) -> None:
    with pytest.raises(ts.InvalidArgument, match="refused"):
        _files.check_name(name)


async def test_receiver_refuses_traversal_even_from_a_raw_caller(url: str, tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        proxy = await daq.rpc("store")
        for name in ("../evil", "/tmp/evil", "sub/evil", "..", "nul\x00"):
            with pytest.raises(ts.RemoteError, match="refused") as info:
                await proxy.call("files.begin", name, 10)
            assert info.value.type_name == "InvalidArgument"
        # the sender's own check stops it before anything is sent
        (tmp_path / "ok").write_bytes(b"x")
        with pytest.raises(ts.InvalidArgument, match="no directories"):
            await daq.send_file("store", tmp_path / "ok", name="../ok")
    assert leftovers(incoming) == []
    assert not (tmp_path / "evil").exists()


async def test_size_limit_is_refused_up_front_and_enforced_while_receiving(
    url: str, tmp_path: Path
) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    random_file(tmp_path / "big", 5000)
    async with pair(url, incoming, max_bytes=4096) as (_, daq):
        with pytest.raises(ts.RemoteError, match="over this receiver's limit of 4096"):
            await daq.send_file("store", tmp_path / "big")
        assert leftovers(incoming) == []
        # A sender that declares less than it sends is cut off at the declared size.
        proxy = await daq.rpc("store")
        transfer = await proxy.call("files.begin", "liar", 10)
        with pytest.raises(ts.RemoteError, match="more bytes than the declared size"):
            await proxy.call("files.write", transfer, 0, b"y" * 20)
        with pytest.raises(ts.RemoteError, match="received 0 bytes of the 10"):
            await proxy.call("files.finish", transfer, hashlib.sha256(b"").hexdigest())
        # Chunks sent at one offset at once: one is written, the rest refused (all passed
        # the checks before any was written, and the file grew past max_bytes: an audit).
        transfer = await proxy.call("files.begin", "racer", 4000)
        written: list[int] = []

        async def write() -> None:
            with contextlib.suppress(ts.RemoteError):
                written.append(await proxy.call("files.write", transfer, 0, b"z" * 4000))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(write)
        assert written == [4000]
        digest = hashlib.sha256(b"z" * 4000).hexdigest()
        assert await proxy.call("files.finish", transfer, digest) == "racer"
        assert (incoming / "racer").read_bytes() == b"z" * 4000
        (incoming / "racer").unlink()
    assert leftovers(incoming) == []


async def test_two_senders_of_one_name_get_one_file_and_no_receiver_path(
    url: str, tmp_path: Path
) -> None:
    # The loser's error was the OS's, naming the receiver's directory in full (files audit).
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        proxy = await daq.rpc("store")
        first, second = [await proxy.call("files.begin", "same.bin", 3) for _ in range(2)]
        digest = hashlib.sha256(b"abc").hexdigest()
        for transfer in (first, second):
            await proxy.call("files.write", transfer, 0, b"abc")
        assert await proxy.call("files.finish", first, digest) == "same.bin"
        with pytest.raises(ts.RemoteError, match="appeared in the receiver's directory") as lost:
            await proxy.call("files.finish", second, digest)
        assert lost.value.type_name == "FileExistsError"
        assert str(tmp_path) not in str(lost.value)
    assert leftovers(incoming) == ["same.bin"]


async def test_a_receiver_removes_the_stale_temporary_files_a_killed_receiver_left(
    url: str, tmp_path: Path
) -> None:
    # Its janitor died with it: a 43 MB .part stayed in the directory for good (files audit).
    incoming = tmp_path / "in"
    incoming.mkdir()
    stale, fresh = incoming / ".big.bin.f5151daf.part", incoming / ".new.bin.0123abcd.part"
    mine = incoming / ".notes.part"  # not one of ours: its name lacks the random mark
    for path in (stale, fresh, mine):
        path.write_bytes(b"partial")
    long_ago = time.time() - 2 * 3600
    for path in (stale, mine):
        os.utime(path, (long_ago, long_ago))
    async with pair(url, incoming):
        assert leftovers(incoming) == sorted([fresh.name, mine.name])


async def test_send_files_given_up_by_timeouts_leave_no_transfer_open(
    url: str, tmp_path: Path
) -> None:
    # A cancel while begin's answer was on its way left the transfer open on the receiver,
    # and 64 of them refused every sender there for a minute (a cancellation audit).
    incoming = tmp_path / "in"
    incoming.mkdir()
    random_file(tmp_path / "data.bin", 1000)
    rng = random.Random(7)
    async with pair(url, incoming) as (_, daq):
        with trio.fail_after(60):
            for i in range(300):
                with trio.move_on_after(rng.choice([1e-4, 3e-4, 5e-4, 1e-3, 2e-3])):
                    await daq.send_file("store", tmp_path / "data.bin", name=f"run{i}.bin")
        # A cancel that came while the receiver's finish synced the file (it had taken the
        # transfer over: the sender's abort finds none) leaves it to that finish, which
        # stores the file or drops it once the sync is done: on a loaded machine, after
        # the loop (CI saw run297's temporary file then). Not for good, as before the fix.
        await wait_until(lambda: [p for p in leftovers(incoming) if p.endswith(".part")] == [])


async def test_a_damaged_file_is_refused_by_its_checksum(url: str, tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        proxy = await daq.rpc("store")
        transfer = await proxy.call("files.begin", "data.bin", 4)
        await proxy.call("files.write", transfer, 0, b"abcd")
        with pytest.raises(ts.RemoteError, match="sha256 mismatch"):
            await proxy.call("files.finish", transfer, hashlib.sha256(b"abce").hexdigest())
    assert leftovers(incoming) == []


async def test_an_existing_file_is_kept_unless_the_receiver_overwrites(
    url: str, tmp_path: Path
) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "run.h5").write_bytes(b"precious")
    new = random_file(tmp_path / "run.h5", 1000)
    async with pair(url, incoming) as (_, daq):
        with pytest.raises(ts.RemoteError, match="exists") as info:
            await daq.send_file("store", tmp_path / "run.h5")
        assert info.value.type_name == "FileExistsError"
    assert (incoming / "run.h5").read_bytes() == b"precious"
    async with pair(url, incoming, overwrite=True) as (_, daq):
        await daq.send_file("store", tmp_path / "run.h5")
    assert (incoming / "run.h5").read_bytes() == new


async def test_cancelled_sender_leaves_no_file_at_all(url: str, tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    random_file(tmp_path / "big", 40 * _files.CHUNK_BYTES)
    async with pair(url, incoming) as (_, daq):
        with trio.move_on_after(SETTLE_S) as scope:
            half = trio.Event()

            def progress(sent: int, total: int) -> None:
                if sent > total // 4:
                    half.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: daq.send_file("store", tmp_path / "big", progress=progress)
                )
                await half.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        await wait_until(lambda: leftovers(incoming) == [])  # aborted: temporary file gone


async def test_vanished_sender_leaves_no_file_under_the_final_name(
    url: str, server: ts.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "TRANSFER_IDLE_S", 0.4)
    incoming = tmp_path / "in"
    incoming.mkdir()
    random_file(tmp_path / "big", 40 * _files.CHUNK_BYTES)
    failures: list[ts.FileEvent] = []
    async with ts.open_client(url, name="store") as store:
        store.accept_files(
            incoming, on_event=lambda e: failures.append(e) if e.kind == "failed" else None
        )
        async with ts.open_client(url, name="daq", reconnect=False) as daq:
            cut = trio.Event()

            def progress(sent: int, total: int) -> None:
                if sent > total // 4:
                    cut.set()

            errors: list[Exception] = []

            async def send() -> None:
                try:
                    await daq.send_file("store", tmp_path / "big", progress=progress)
                except ts.ConnectionClosed as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                with trio.fail_after(SETTLE_S):
                    await cut.wait()
                # The sender's connection dies without a word (as in a crash).
                await server.state.by_name["daq"].transport.aclose()
            assert len(errors) == 1  # one clear error, not one per chunk in flight
        assert not (incoming / "big").exists()
        await wait_until(lambda: leftovers(incoming) == [])  # idle: dropped with its temp file
        assert failures and "idle" in (failures[0].error or "")


async def test_fetch_file_from_a_shared_directory(url: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    data = random_file(shared / "calib.bin", 2 * _files.CHUNK_BYTES + 7)
    async with pair(url, shared, share=True) as (_, daq):
        proxy = await daq.rpc("store")
        assert await proxy.call("files.list") == [{"name": "calib.bin", "size": len(data)}]
        with trio.fail_after(SETTLE_S):
            path = await daq.fetch_file("store", "calib.bin", tmp_path)
        assert path == tmp_path / "calib.bin"
        assert path.read_bytes() == data
        with pytest.raises(FileExistsError):
            await daq.fetch_file("store", "calib.bin", tmp_path)
        with pytest.raises(ts.RemoteError, match="no file"):
            await daq.fetch_file("store", "missing.bin", tmp_path / "m")
        with pytest.raises(ts.RemoteError, match="refused"):
            async for _ in proxy.stream("files.read", "../shared/calib.bin"):
                pass
    assert not (tmp_path / "m").exists()
    assert leftovers(tmp_path) == ["calib.bin", "shared"]


async def test_fetch_is_refused_unless_the_directory_is_shared(url: str, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"s")
    async with pair(url, tmp_path) as (_, daq):
        with pytest.raises(ts.RemoteError, match="does not share") as info:
            await daq.fetch_file("store", "secret", tmp_path / "copy")
        assert info.value.type_name == "PermissionError"


SMALL_FRAMES = pytest.mark.server_options(max_frame_bytes=4096)  # chunks of 1 KiB: many


def shrink(path: Path) -> None:
    os.truncate(path, 1000)


def grow(path: Path) -> None:
    with path.open("ab") as f:
        f.write(os.urandom(_files.CHUNK_BYTES))


def rewrite(path: Path) -> None:
    with path.open("r+b") as f:  # in place, at the same size
        f.write(os.urandom(path.stat().st_size))


@SMALL_FRAMES
@pytest.mark.parametrize(
    ("change", "said"),
    [(shrink, "it shrank"), (grow, "it grew"), (rewrite, "it was rewritten")],
    ids=["shrinks", "grows", "is-rewritten"],
)
async def test_a_shared_file_that_changes_while_it_is_fetched_is_an_error_and_stores_nothing(
    url: str, tmp_path: Path, change: Any, said: str
) -> None:
    # The provider read to wherever the file ended: one cut short was stored as complete
    # and "verified" at the length it had been read to, one that grew at an in-between size,
    # and one rewritten in place as old chunks followed by new ones.
    shared = tmp_path / "shared"
    shared.mkdir()
    source = shared / "run.bin"
    random_file(source, 64 * 1024)  # 64 chunks of 1 KiB: far more than the window ahead
    os.utime(source, ns=(0, 0))  # a rewrite within the clock's tick still changes the mtime
    out = tmp_path / "out"
    out.mkdir()
    changed = False

    def change_once(received: int, size: int | None) -> None:
        # The first chunk is on the fetcher's disk: the provider is a window ahead at most.
        nonlocal changed
        if not changed:
            changed = True
            change(source)

    async with pair(url, shared, share=True) as (_, daq):
        with trio.fail_after(SETTLE_S), pytest.raises(ts.RemoteError) as info:
            await daq.fetch_file("store", "run.bin", out, progress=change_once)
        assert changed
        assert info.value.type_name == "OSError"
        assert "'run.bin' changed while it was being fetched" in info.value.message
        assert said in info.value.message
        assert "fetch it again once it is complete" in info.value.message
        assert leftovers(out) == []  # neither the file nor its .part
        # As the message says: fetched again, now that it is still, it arrives whole.
        with trio.fail_after(SETTLE_S):
            path = await daq.fetch_file("store", "run.bin", out)
    assert path.read_bytes() == source.read_bytes()


async def test_a_shared_directory_serves_no_symlink_to_a_file_outside_or_inside_it(
    url: str, tmp_path: Path
) -> None:
    # A symlink was followed: link -> /etc/hostname was listed and fetched, a file from
    # outside the shared directory.
    shared = tmp_path / "shared"
    shared.mkdir()
    data = random_file(shared / "real.bin", 1000)
    (tmp_path / "secret.txt").write_bytes(b"not shared")
    os.symlink(tmp_path / "secret.txt", shared / "outside")
    os.symlink(shared / "real.bin", shared / "inside")  # not served either: the simplest rule
    out = tmp_path / "out"
    out.mkdir()
    async with pair(url, shared, share=True) as (_, daq):
        proxy = await daq.rpc("store")
        with trio.fail_after(SETTLE_S):
            assert await proxy.call("files.list") == [{"name": "real.bin", "size": 1000}]
            for link in ("outside", "inside"):
                with pytest.raises(ts.RemoteError, match="no file") as info:
                    await daq.fetch_file("store", link, out)
                assert info.value.type_name == "FileNotFoundError"
                with pytest.raises(ts.RemoteError, match="no file"):
                    async for _ in proxy.stream("files.read", link):
                        pass
            path = await daq.fetch_file("store", "real.bin", out)
    assert path.read_bytes() == data
    assert leftovers(out) == ["real.bin"]


async def test_sending_to_a_client_that_accepts_no_files_says_so(url: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")

    class Other:
        def rpc_ping(self) -> str:
            return "pong"

    async with (
        ts.open_client(url, name="other") as other,
        ts.open_client(url, name="daq") as daq,
    ):
        # Exposing nothing at all, it said "'plain' exposes no methods (yet)": the sender
        # of a file named no method.
        async with ts.open_client(url, name="plain"):
            with pytest.raises(ts.RpcError) as refused:
                await daq.send_file("plain", tmp_path / "f")
            assert str(refused.value) == (
                "'plain' does not accept files: it must call accept_files(directory), or run "
                "`trio-stream receive-files URL DIRECTORY --name plain`"
            )
            with pytest.raises(ts.RpcError, match=r"'plain' does not share files: .*--share`$"):
                await daq.fetch_file("plain", "f", tmp_path / "copy")
        other.expose(Other())
        with pytest.raises(ts.RpcError, match="does not accept files"):
            await daq.send_file("other", tmp_path / "f")
        # Not connected at all: that error, not this one.
        with pytest.raises(ts.RpcError) as absent:
            await daq.send_file("nobody", tmp_path / "f")
        assert "does not accept files" not in str(absent.value)


async def test_a_receiver_slow_to_answer_is_a_timeout_not_a_refusal(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An RpcTimeout is an RpcError too: it was taken for "does not accept files".
    (tmp_path / "f").write_bytes(b"x")
    async with pair(url, tmp_path) as (_, daq):

        async def slow(target: str, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
            raise ts.RpcTimeout(f"{target!r} did not answer within {timeout} s")

        monkeypatch.setattr(daq, "rpc", slow)
        with pytest.raises(ts.RpcTimeout):
            await daq.send_file("store", tmp_path / "f")


async def test_sync_client_sends_and_accepts(url: str, tmp_path: Path) -> None:
    incoming = tmp_path / "in"
    incoming.mkdir()
    data = random_file(tmp_path / "scan.npy", 100_000)

    def script() -> str:
        with ts.SyncClient(url, name="store") as store, ts.SyncClient(url, name="lab") as lab:
            store.accept_files(incoming)
            return lab.send_file("store", tmp_path / "scan.npy")

    with trio.fail_after(SETTLE_S):
        assert await trio.to_thread.run_sync(script) == "scan.npy"
    assert (incoming / "scan.npy").read_bytes() == data


async def test_cli_send_file_and_receive_files_end_to_end(
    server: ts.Server, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    first = random_file(tmp_path / "a.bin", 600_000)
    second = random_file(tmp_path / "b.bin", 1000)
    url = server.tcp_url
    assert url is not None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "trio_stream"]
    receiver = await trio.lowlevel.open_process(
        [*cli, "receive-files", url, str(incoming), "--name", "store"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = bytearray(), bytearray()

    async def collect(stream: Any, into: bytearray) -> None:
        async for chunk in stream:
            into += chunk

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, receiver.stdout, out)
            nursery.start_soon(collect, receiver.stderr, err)
            await wait_until(lambda: "store" in server.state.by_name)
            with trio.fail_after(SETTLE_S * 3):
                sender = await trio.run_process(
                    [
                        *cli,
                        "send-file",
                        url,
                        "store",
                        str(tmp_path / "a.bin"),
                        str(tmp_path / "b.bin"),
                    ],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
            assert sender.returncode == 0, sender.stderr.decode()
            # a rate over a tenth of a second or more, else the milliseconds it took
            took = re.findall(rb"B in (\d+ ms|\d+\.\d s, \d+\.\d MB/s)\)", sender.stderr)
            assert len(took) == 2, sender.stderr.decode()
            assert (incoming / "a.bin").read_bytes() == first
            assert (incoming / "b.bin").read_bytes() == second
            receiver.send_signal(signal.SIGINT)
            with trio.fail_after(SETTLE_S):
                assert await receiver.wait() == 0, err.decode()
        assert out.decode().splitlines() == [
            f"received {incoming / 'a.bin'} (600000 bytes)",
            f"received {incoming / 'b.bin'} (1000 bytes)",
        ]
    finally:
        if receiver.returncode is None:
            receiver.kill()
            with trio.move_on_after(SETTLE_S):
                await receiver.wait()


async def test_a_failing_progress_callback_raises_its_own_error(url: str, tmp_path: Path) -> None:
    # The caller's own exception, as from any call it made: not an ExceptionGroup of the
    # chunks in flight, nor a wrapped error; the transfer is aborted and leaves no file.
    incoming = tmp_path / "in"
    incoming.mkdir()
    random_file(tmp_path / "big", 20 * _files.CHUNK_BYTES)

    def progress(sent: int, total: int) -> None:
        if sent > total // 4:
            raise ValueError("the progress bar broke")

    async with pair(url, incoming) as (_, daq):
        with trio.fail_after(SETTLE_S), pytest.raises(ValueError, match="progress bar broke"):
            await daq.send_file("store", tmp_path / "big", progress=progress)

        def send_blocking() -> None:
            with ts.SyncClient(url, name="script") as script:
                script.send_file("store", tmp_path / "big", progress=progress)

        with trio.fail_after(SETTLE_S), pytest.raises(ValueError, match="progress bar broke"):
            await trio.to_thread.run_sync(send_blocking)
        await wait_until(lambda: leftovers(incoming) == [])


async def test_a_name_of_255_bytes_of_wide_characters_is_stored(url: str, tmp_path: Path) -> None:
    # 120 two-byte characters: within the 255 bytes, but the temporary name was cut at 200
    # characters (400 bytes), which the file system refused ("File name too long").
    name = "é" * 120 + ".h5"
    data = random_file(tmp_path / "source.h5", 1000)
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming, share=True) as (_, daq):
        with trio.fail_after(SETTLE_S):
            assert await daq.send_file("store", tmp_path / "source.h5", name=name) == name
            fetched = await daq.fetch_file("store", name, tmp_path / "out.h5")
    assert (incoming / name).read_bytes() == data == fetched.read_bytes()
    assert leftovers(incoming) == [name]


async def test_a_file_that_grows_while_it_is_sent_arrives_as_it_was(
    url: str, tmp_path: Path
) -> None:
    # A log still being written: the size declared at the start is what is sent. Reading
    # whole chunks went past it, and the receiver refused the transfer.
    source = tmp_path / "grows.log"
    data = random_file(source, 12 * _files.CHUNK_BYTES + 10)  # more than the chunks in flight
    incoming = tmp_path / "in"
    incoming.mkdir()

    def grow(sent: int, size: int) -> None:
        with source.open("ab") as f:
            f.write(os.urandom(_files.CHUNK_BYTES))

    async with pair(url, incoming) as (_, daq):
        with trio.fail_after(SETTLE_S):
            await daq.send_file("store", source, progress=grow)
    assert (incoming / "grows.log").read_bytes() == data


@pytest.mark.parametrize("larger", [False, True])
async def test_a_file_rewritten_in_place_while_it_is_sent_is_not_stored(
    url: str, tmp_path: Path, larger: bool
) -> None:
    # Its first chunks old, its last ones new: the digest is of what was read, so the
    # receiver stored the mix as complete and verified (an RPC and files persona). Rewritten
    # larger (an editor's save) it looks like a log that grew, to a stat (a review).
    source = tmp_path / "run.bin"
    random_file(source, 16 * _files.CHUNK_BYTES)  # more than the chunks in flight
    incoming = tmp_path / "in"
    incoming.mkdir()
    rewritten = False

    def rewrite(sent: int, size: int) -> None:
        nonlocal rewritten
        if not rewritten:
            rewritten = True
            with source.open("r+b") as f:  # new bytes, the same size or more
                f.write(os.urandom(size + (_files.CHUNK_BYTES if larger else 0)))

    async with pair(url, incoming) as (_, daq):
        with trio.fail_after(SETTLE_S), pytest.raises(OSError, match="was rewritten"):
            await daq.send_file("store", source, progress=rewrite)
        await wait_until(lambda: not leftovers(incoming))


async def test_a_directory_no_file_can_be_written_in_is_refused_at_accept(url: str) -> None:
    # Accepted, then every sender got a PermissionError naming the receiver's temporary
    # path (an RPC persona's accept_files("/sys/kernel")); os.access says yes to root.
    unwritable = Path("/sys/kernel")
    if not await trio.Path(unwritable).is_dir():
        pytest.skip("needs /sys (Linux)")
    async with ts.open_client(url, name="store") as store:
        with pytest.raises(ts.InvalidArgument, match=r"'/sys/kernel' is not writable here"):
            store.accept_files(unwritable)


async def test_a_receiver_that_cannot_write_says_why_itself(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its disk full: its events said "aborted by the sender", and only the sender heard why.
    def full(fd: int, digest: Any, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    incoming = tmp_path / "in"
    incoming.mkdir()
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    events: list[ts.FileEvent] = []
    async with pair(url, incoming, on_event=events.append) as (_, daq):
        monkeypatch.setattr(_files, "_write", full)
        with trio.fail_after(SETTLE_S), pytest.raises(ts.RemoteError, match="No space left"):
            await daq.send_file("store", tmp_path / "f.bin")
        await wait_until(lambda: any(e.kind == "failed" for e in events))
    (failed,) = [e for e in events if e.kind == "failed"]
    assert failed.error == "could not write it here: No space left on device", failed


async def test_a_file_that_shrinks_while_it_is_sent_fails_with_one_os_error(
    url: str, tmp_path: Path
) -> None:
    source = tmp_path / "shrinks.bin"
    random_file(source, 16 * _files.CHUNK_BYTES)  # more than the chunks in flight
    incoming = tmp_path / "in"
    incoming.mkdir()

    def cut(sent: int, size: int) -> None:
        os.truncate(source, _files.CHUNK_BYTES)

    async with pair(url, incoming) as (_, daq):
        with trio.fail_after(SETTLE_S), pytest.raises(OSError, match="shrank"):
            await daq.send_file("store", source, progress=cut)  # not an ExceptionGroup
        await wait_until(lambda: not leftovers(incoming))


async def test_an_abort_during_a_chunks_write_leaves_the_next_file_intact(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk: the sender gives up (its abort arrives) while a chunk is still being
    # written in a worker thread. The abort closed the file under that thread; the next
    # transfer's file took its number, and the rest of the aborted chunk landed in it, under
    # its final name and with its digest "checked" (the digest is of the chunks received).
    real_write = _files._write
    writing = threading.Event()

    def slow_write(fd: int, digest: Any, data: bytes) -> None:
        writing.set()
        time.sleep(0.5)
        real_write(fd, digest, data)

    monkeypatch.setattr(_files, "_write", slow_write)
    first = tmp_path / "a.bin"
    first.write_bytes(b"A" * 2 * _files.CHUNK_BYTES)
    second = tmp_path / "b.bin"
    second.write_bytes(b"B" * 300_000)
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        with trio.move_on_after(0.3):
            await daq.send_file("store", first)
        assert writing.is_set()
        with trio.fail_after(SETTLE_S):
            await daq.send_file("store", second)
        await trio.sleep(1.0)  # the aborted chunk's thread has long finished
    assert (incoming / "b.bin").read_bytes() == second.read_bytes()
    assert leftovers(incoming) == ["b.bin"]


def part_files_held_open() -> list[str]:
    """Temporary files this process still holds open after they were deleted."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.endswith(".part (deleted)"):
                held.append(target)
    return held


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
async def test_a_write_and_an_abort_arriving_together_leave_no_file_open(
    url: str, tmp_path: Path
) -> None:
    # The abort can come while the write has just taken the transfer's lock: the write
    # then refuses, and it is the one that must close the file (the abort leaves it to it).
    incoming = tmp_path / "in"
    incoming.mkdir()
    async with pair(url, incoming) as (_, daq):
        proxy = await daq.rpc("store")

        async def write(transfer: int) -> None:
            with contextlib.suppress(ts.RemoteError):  # refused: the transfer was aborted
                await proxy.call("files.write", transfer, 0, b"abcd")

        with trio.fail_after(SETTLE_S):
            for i in range(40):
                transfer = await proxy.call("files.begin", f"f{i}", 4)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write, transfer)
                    nursery.start_soon(proxy.call, "files.abort", transfer)
    assert part_files_held_open() == []
    assert leftovers(incoming) == []


async def test_fetching_to_a_destination_name_that_is_not_utf8(url: str, tmp_path: Path) -> None:
    # A local name the file system gave in bytes that are not UTF-8 (Python keeps them as
    # surrogates): the temporary name is cut as bytes, not refused as text.
    shared = tmp_path / "shared"
    shared.mkdir()
    data = random_file(shared / "a.bin", 1000)
    dest = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.bin"))
    async with pair(url, shared, share=True) as (_, daq):
        with trio.fail_after(SETTLE_S):
            path = await daq.fetch_file("store", "a.bin", dest)
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("path", "said"),
    [("missing.bin", "no such file: "), (".", "is not a file (send-file sends files")],
)
async def test_cli_send_file_of_a_missing_file_or_a_directory_says_which(
    server: ts.Server, tmp_path: Path, path: str, said: str
) -> None:
    assert server.tcp_url is not None
    with trio.fail_after(SETTLE_S):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_stream", "send-file", server.tcp_url, "store", path],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and said in lines[0], lines


CLI = (sys.executable, "-m", "trio_stream")


async def test_cli_send_file_goes_on_past_a_file_the_receiver_refuses(
    server: ts.Server, tmp_path: Path
) -> None:
    # It stopped at the first refusal: of "a b c" with b on the receiver already, c was
    # never sent. Now each refusal is one line and the exit code says some were not sent.
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "b.bin").write_bytes(b"kept")
    for name in ("a.bin", "b.bin", "c.bin"):
        random_file(tmp_path / name, 1000)
    assert server.tcp_url is not None
    async with ts.open_client(server.tcp_url, name="store") as store:
        store.accept_files(incoming)
        with trio.fail_after(SETTLE_S * 3):
            result = await trio.run_process(
                [*CLI, "send-file", server.tcp_url, "store", "a.bin", "b.bin", "c.bin"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=tmp_path,
            )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines[0].startswith("sent a.bin to store as a.bin")
    assert lines[1].startswith("trio-stream send-file: b.bin not sent: FileExistsError: 'b.bin'")
    assert lines[2].startswith("sent c.bin to store as c.bin")
    assert lines[3:] == ["trio-stream send-file: error: 1 of the 3 files not sent"]
    assert (incoming / "b.bin").read_bytes() == b"kept"
    assert (incoming / "c.bin").read_bytes() == (tmp_path / "c.bin").read_bytes()
