"""File transfer between clients, through the server, on RPC (docs/protocol.md section 6.2).

A receiver exposes the sub-service ``files`` (``client.accept_files(directory)``); a sender
pushes a file to it with chunked calls, and, when the receiver *shares* its directory, anyone
may fetch a file from it with a streaming call:

- push (``send_file``): ``files.begin(name, size)`` -> transfer id; ``files.write(id, offset,
  chunk)`` for each chunk, a few calls in flight (the flow control: a call is answered once its
  chunk is on disk, so at most WRITES_IN_FLIGHT chunks are buffered anywhere); then
  ``files.finish(id, sha256)``, which checks the size and the digest and only then renames the
  temporary file to its name; ``files.abort(id)`` on any failure.
- pull (``fetch_file``): ``files.read(name)`` streams the file's chunks (byte strings), then one
  map ``{"size", "sha256"}``; the fetcher checks both and renames its own temporary file. The
  file is sent at the size it had when opened; one that shrinks, grows or is rewritten
  meanwhile fails the read (OSError), so that no fetcher stores a mix of two versions. Only
  regular files are shared: a symlink is not followed, wherever it leads.

What the receiver guarantees: a name is one plain file name (no ``/`` or ``\\``, no ``..``, no
leading dot, no NUL or control characters, at most 255 bytes): nothing is ever written outside
its directory. A file is written to a hidden temporary name (``.NAME.RANDOM.part``) and appears
under its name only complete and verified. The declared size is checked against ``max_bytes``
before anything is written, and every chunk against the declared size. An existing file is
never replaced unless the receiver said ``overwrite=True``. A transfer idle for
TRANSFER_IDLE_S (its sender vanished) is dropped with its temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from ._exceptions import InvalidArgument, RpcError, RpcTimeout
from ._rpc import CALLER

if TYPE_CHECKING:
    from ._client import Client
    from ._rpc import RpcProxy

log = logging.getLogger(__name__)

SERVICE: Final = "files"  # the sub-service name: files.begin, files.write, ...
CHUNK_BYTES: Final = 256 * 2**10
WRITES_IN_FLIGHT: Final = 8  # chunks a sender has on their way (2 MiB at 256 KiB)
READ_WINDOW: Final = 8  # chunks a fetcher has on their way
DEFAULT_MAX_FILE_BYTES: Final = 16 * 2**30
MAX_NAME_BYTES: Final = 255  # what most file systems allow for one name
MAX_TRANSFERS: Final = 64  # transfers a receiver has open at once
TRANSFER_IDLE_S: Final = 60.0
BEGIN_TIMEOUT_S: Final = 10.0  # a transfer's begin, which a cancel waits for (send_file)
# A temporary file untouched this long is no live transfer's (remove_stale_temporaries).
STALE_TEMPORARY_S: Final = 3600.0
CALL_TIMEOUT_S: Final = 60.0  # one chunk's round trip, including its write to disk
_ROOM_BYTES: Final = 4096  # room in a frame for the call around a chunk


def check_name(name: object) -> str:
    """``name`` if it is one plain file name, else InvalidArgument saying why."""
    if not isinstance(name, str):
        raise InvalidArgument(f"a file name is text, not {type(name).__name__}")
    shown = repr(name)[:80]
    if not name or name in (".", ".."):
        raise InvalidArgument(f"file name {shown} is refused: give a plain name like 'run42.h5'")
    if "/" in name or "\\" in name:
        raise InvalidArgument(
            f"file name {shown} is refused: no directories ('/' or '\\'); the receiver "
            "chooses the directory"
        )
    if name.startswith("."):
        raise InvalidArgument(f"file name {shown} is refused: names may not start with '.'")
    # C0, DEL and C1 (U+0080-U+009F: U+009B is a terminal's CSI, and a name is printed)
    if any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in name):
        raise InvalidArgument(f"file name {shown} is refused: no NUL or control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        # A file name the file system gave in bytes that are not UTF-8 (Python keeps them as
        # lone surrogates), which the wire (CBOR text) cannot carry.
        raise InvalidArgument(
            f"file name {shown} is refused: it is not valid UTF-8 text; send the file under "
            "another name (name=)"
        )
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidArgument(f"file name {shown} is refused: longer than {MAX_NAME_BYTES} bytes")
    return name


TEMPORARY_HEAD_BYTES: Final = 200


_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.part")


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary files of transfers a receiver killed mid-file left here (its
    janitor died with it; each stayed for good), those untouched for STALE_TEMPORARY_S: a
    live receiver's own are dropped by its janitor after TRANSFER_IDLE_S without a write,
    and a fetch_file into this directory (the same names) that has not written for an hour
    is not coming back either. Once, when a receiver starts: one scan of the directory."""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # accept_files says what is wrong with the directory
    for entry in entries:
        try:
            if (
                _TEMPORARY.fullmatch(entry.name)
                and entry.is_file(follow_symlinks=False)
                and now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMPORARY_S
            ):
                os.unlink(entry.path)
                log.info("removed %s, left by a transfer that did not finish", entry.name)
        except OSError:
            continue  # gone meanwhile, or not ours to delete: left as it is


def temporary_name(name: str) -> str:
    """The hidden name a file has while it arrives: ``name`` cut to 200 bytes (whole
    characters), so that with its marks it stays within the 255 bytes file systems allow.
    ``name`` may be a local one the file system gave (a fetch's destination), in bytes that
    are not UTF-8: each counts as the byte it stands for."""
    head: list[str] = []
    size = 0
    for char in name:
        size += len(os.fsencode(char))
        if size > TEMPORARY_HEAD_BYTES:
            break
        head.append(char)
    return f".{''.join(head)}.{secrets.token_hex(4)}.part"


def chunk_bytes(max_frame_bytes: int) -> int:
    """The chunk size that fits the server's frames."""
    return max(1024, min(CHUNK_BYTES, max_frame_bytes - _ROOM_BYTES * 2))


@dataclass(frozen=True, slots=True)
class FileEvent:
    """What a receiver's ``on_event`` callback hears: ``kind`` is "started", "progress",
    "done" (``path`` is the final file) or "failed" (``error`` says why)."""

    kind: str
    name: str
    size: int
    received: int
    sender: str | None = None
    path: Path | None = None
    error: str | None = None


class _Incoming:
    """One file being received: its temporary file, digest and expected next offset."""

    def __init__(self, name: str, size: int, temp: Path, fd: int) -> None:
        self.name = name
        self.size = size
        self.temp = temp
        self.fd = fd  # -1 once closed
        self.received = 0
        self.claimed = 0  # received, and the chunk being written (a second one is refused)
        self.digest = hashlib.sha256()
        self.moved = trio.Event()  # set whenever `received` advances
        self.last_s = trio.current_time()
        self.lock = trio.Lock()  # held while a worker thread uses ``fd``
        self.discarded = False
        self.sender: str | None = None  # the client that sends it
        self.write_error: str | None = None  # this receiver's own failure to write it

    def close_fd(self) -> None:
        """Close the file once: a second close could hit another file that took its number."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        """Drop the transfer and its temporary file. A worker thread that is writing or
        syncing it keeps the file open until it is done (the task that waits for it closes
        it then): closed under it, its number could go to the next transfer's file, and
        the rest of the write would land in that one."""
        self.discarded = True
        if not self.lock.locked():
            self.close_fd()
        with contextlib.suppress(OSError):
            self.temp.unlink()

    async def in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(self.fd, *args)`` in a worker thread, one at a time per transfer."""
        async with self.lock:
            try:
                # Discarded while this task took the lock (trio hands it over with a
                # yield): then discard() left the file to us to close.
                if self.discarded:
                    raise RpcError(f"the transfer of {self.name[:80]!r} was aborted")
                await trio.to_thread.run_sync(fn, self.fd, *args)
            finally:
                if self.discarded:
                    self.close_fd()


def _write(fd: int, digest: Any, data: bytes) -> None:
    digest.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FileService:
    """The ``files`` sub-service a receiver exposes (``client.accept_files``)."""

    def __init__(
        self,
        client: Client,
        directory: Path,
        *,
        max_bytes: int,
        overwrite: bool,
        share: bool,
        on_event: Callable[[FileEvent], None] | None,
    ) -> None:
        self._client = client
        self.directory = directory
        self.max_bytes = max_bytes
        self.overwrite = overwrite
        self.share = share
        self._on_event = on_event
        self._transfers: dict[int, _Incoming] = {}
        self._next_id = 1
        self._janitor = False
        remove_stale_temporaries(directory)

    def _emit(self, kind: str, t: _Incoming, **extra: Any) -> None:
        if self._on_event is not None:
            try:
                self._on_event(FileEvent(kind, t.name, t.size, t.received, t.sender, **extra))
            except Exception:
                log.exception("on_event callback failed")

    def _get(self, transfer: int) -> _Incoming:
        t = self._transfers.get(transfer)
        if t is None:
            raise RpcError(f"no transfer {transfer} open here (finished, aborted or idle too long)")
        t.last_s = trio.current_time()
        return t

    async def rpc_begin(self, name: str, size: int) -> int:
        """Open a transfer of ``size`` bytes to be stored as ``name``; returns its id."""
        check_name(name)
        if type(size) is not int or size < 0:
            raise InvalidArgument(f"size must be a number of bytes >= 0, not {size!r}"[:120])
        if size > self.max_bytes:
            raise InvalidArgument(
                f"{name[:80]!r} is {size} bytes, over this receiver's limit of {self.max_bytes}"
            )
        if len(self._transfers) >= MAX_TRANSFERS:
            raise InvalidArgument(f"{MAX_TRANSFERS} transfers are open here: try again later")
        final = self.directory / name
        if not self.overwrite and final.exists():
            raise FileExistsError(
                f"{name[:80]!r} exists in the receiver's directory and is not replaced "
                "(the receiver may accept it: overwrite=True, or trio-stream receive-files "
                "--overwrite)"
            )
        temp = self.directory / temporary_name(name)
        # 0o666 less the umask, as any file the receiving user writes (a received file is
        # theirs to share); O_EXCL: never someone else's file of that name.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(temp, flags, 0o666)
        except OSError as exc:
            # Said without the receiver's paths, as its other refusals are (the OS's
            # message names the temporary file).
            raise type(exc)(
                exc.errno,
                f"the receiver cannot create {name[:80]!r} in its directory ({exc.strerror})",
            ) from None
        t = _Incoming(name, size, temp, fd)
        t.sender = CALLER.get()  # the client that called begin (FileEvent.sender)
        ident = self._next_id
        self._next_id += 1
        self._transfers[ident] = t
        self._start_janitor()
        self._emit("started", t)
        return ident

    async def rpc_write(self, transfer: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (chunks in order); returns the bytes received so far."""
        t = self._get(transfer)
        if type(data) is not bytes:
            raise InvalidArgument("a chunk is a byte string")
        # Writes run as separate tasks: each waits for its predecessors, so the digest sees
        # the bytes in order (a sender has only a few chunks in flight).
        while t.received < offset and self._transfers.get(transfer) is t:
            await t.moved.wait()
        # Claimed before the write's await: chunks sent at one offset at once all passed
        # these checks before any was written, and the file grew past its declared size
        # and max_bytes (a files audit).
        if t.received != offset or t.claimed != offset:
            raise InvalidArgument(f"chunk at offset {offset}, expected {t.claimed}")
        if offset + len(data) > t.size:
            raise InvalidArgument(f"more bytes than the declared size of {t.size}")
        t.claimed = offset + len(data)
        try:
            await t.in_thread(_write, t.digest, data)
        except BaseException as exc:
            t.claimed = t.received  # not written: the chunk may come again
            if isinstance(exc, OSError) and t.write_error is None:
                # The receiver's own failure (a full disk): its events and log say so, not
                # only the sender's abort that follows ("aborted by the sender").
                t.write_error = f"could not write it here: {exc.strerror or exc}"
                log.warning("receiving %r from %s: %s", t.name[:80], t.sender, t.write_error)
            raise
        t.received += len(data)
        t.moved.set()
        t.moved = trio.Event()
        self._emit("progress", t)
        return t.received

    async def rpc_finish(self, transfer: int, sha256: str) -> str:
        """Check the size and the digest, then give the file its name; returns the name."""
        t = self._get(transfer)
        del self._transfers[transfer]
        try:
            if t.received != t.size:
                raise InvalidArgument(f"received {t.received} bytes of the {t.size} declared")
            if t.digest.hexdigest() != sha256:
                raise InvalidArgument(
                    f"sha256 mismatch for {t.name[:80]!r}: the file was damaged on its way"
                )
            await t.in_thread(os.fsync)
            t.close_fd()
            final = self.directory / t.name
            try:
                if self.overwrite:
                    os.replace(t.temp, final)
                else:
                    os.link(t.temp, final)  # FileExistsError if it appeared meanwhile
                    t.temp.unlink()
            except (FileExistsError, IsADirectoryError) as exc:
                # Said without the receiver's paths (the OS's message names both): they are
                # the receiving machine's business, not the sender's (a files audit).
                raise type(exc)(
                    f"{t.name[:80]!r} "
                    + (
                        "is a directory in the receiver's directory: not replaced"
                        if isinstance(exc, IsADirectoryError)
                        else "appeared in the receiver's directory while it arrived (another "
                        "sender, or a link there): not replaced (the receiver may accept "
                        "it: overwrite=True, or trio-stream receive-files --overwrite)"
                    )
                ) from None
        except BaseException as exc:
            t.discard()
            self._emit("failed", t, error=str(exc)[:200])
            raise
        self._emit("done", t, path=final)
        return t.name

    async def rpc_abort(self, transfer: int) -> None:
        """Drop a transfer and its temporary file."""
        t = self._transfers.pop(transfer, None)
        if t is not None:
            t.moved.set()
            t.discard()
            self._emit("failed", t, error=t.write_error or "aborted by the sender")

    def _start_janitor(self) -> None:
        if not self._janitor:
            self._janitor = self._client._port().spawn(self._sweep, name="files janitor")

    async def _sweep(self) -> None:
        """Drop transfers idle for TRANSFER_IDLE_S; ends when none is left."""
        try:
            while self._transfers:
                await trio.sleep(TRANSFER_IDLE_S / 4)
                now = trio.current_time()
                for ident, t in list(self._transfers.items()):
                    if now - t.last_s > TRANSFER_IDLE_S:
                        del self._transfers[ident]
                        t.moved.set()
                        t.discard()
                        self._emit("failed", t, error=f"idle for {TRANSFER_IDLE_S:g} s")
        finally:
            self._janitor = False
            for t in self._transfers.values():  # the client is closing: leave nothing behind
                t.discard()
            self._transfers.clear()

    # -- shared directory (share=True) -------------------------------------------------------
    async def rpc_list(self) -> list[dict[str, Any]]:
        """The files this receiver shares: names and sizes (regular files, no symlinks)."""
        self._check_shared()
        with os.scandir(self.directory) as entries:
            shared = [
                {"name": e.name, "size": e.stat(follow_symlinks=False).st_size}
                for e in entries
                if e.is_file(follow_symlinks=False) and not e.name.startswith(".")
            ]
        return sorted(shared, key=lambda f: f["name"])

    async def rpc_read(self, name: str) -> AsyncIterator[Any]:
        """Stream the file ``name``: chunks (bytes), then ``{"size": n, "sha256": hex}``.

        The file as it was when opened, or an OSError if it changed meanwhile: what the
        fetcher stores is then one version of it, never old and new bytes mixed."""
        self._check_shared()
        check_name(name)
        chunk = chunk_bytes(self._client.limits.max_frame_bytes)
        digest = hashlib.sha256()
        with self._open_shared(name) as f:
            start = os.fstat(f.fileno())
            sent = 0
            while sent < start.st_size:
                want = min(chunk, start.st_size - sent)
                data = await trio.to_thread.run_sync(_read_hashed, f, want, digest)
                if not data:
                    raise _changed(name, "it shrank")
                sent += len(data)
                yield data
            how = await trio.to_thread.run_sync(_change_since, f, start)
            if how is not None:
                raise _changed(name, how)
        yield {"size": sent, "sha256": digest.hexdigest()}

    def _open_shared(self, name: str) -> io.FileIO:
        """The regular file ``name`` in the directory, opened to read. A symlink is not
        followed, even to a file inside: it could lead anywhere, and the simplest rule is
        that only the directory's own files are shared."""
        missing = FileNotFoundError(f"no file {name[:80]!r} in the shared directory")
        path = self.directory / name
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                raise missing
            # O_NOFOLLOW: a symlink put there since the lstat is refused too; O_NONBLOCK: a
            # FIFO put there does not hang the open (it is nothing to a regular file).
            flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
            flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (BSD: EMLINK)
                raise missing from None
            raise
        f = os.fdopen(fd, "rb", buffering=0)  # no read-ahead: each read sees the file as it is
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise missing
        return f

    def _check_shared(self) -> None:
        if not self.share:
            raise PermissionError(
                "this receiver does not share its directory (accept_files(..., share=True))"
            )


def _read_hashed(f: Any, n: int, digest: Any) -> bytes:
    data: bytes = f.read(n)
    digest.update(data)
    return data


def _digest_of_first(f: Any, size: int) -> str:
    """The sha256 of the first ``size`` bytes of the file open as ``f``."""
    digest = hashlib.sha256()
    f.seek(0)
    left = size
    while left:
        data = f.read(min(left, CHUNK_BYTES))
        if not data:
            break
        digest.update(data)
        left -= len(data)
    return digest.hexdigest()


def _change_since(f: Any, start: os.stat_result) -> str | None:
    """How the file open as ``f``, read to its size at ``start``, has changed since, if it
    has: bytes past that size, another size, or another mtime (written in place)."""
    now = os.fstat(f.fileno())
    if f.read(1) or now.st_size > start.st_size:
        return "it grew"
    if now.st_size < start.st_size:
        return "it shrank"
    if now.st_mtime_ns != start.st_mtime_ns:
        return "it was rewritten"
    return None


def _changed(name: str, how: str) -> OSError:
    return OSError(
        f"{name[:80]!r} changed while it was being fetched ({how}): fetch it again once it "
        "is complete"
    )


def accept_files(
    client: Client,
    directory: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    overwrite: bool = False,
    share: bool = False,
    on_event: Callable[[FileEvent], None] | None = None,
) -> FileService:
    path = Path(directory)
    if not path.is_dir():
        raise InvalidArgument(f"{str(path)[:200]!r} is not a directory: create it first")
    # Tried, not asked (os.access says yes to root, and sysfs refuses root all the same):
    # said here, once; every sender got a PermissionError naming the receiver's own
    # temporary path (an RPC persona's accept_files("/sys/kernel")). The probe is a
    # temporary file's name: a receiver killed right here leaves what the next one removes.
    probe = path / temporary_name("probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        unwritable = (
            f"{str(path)[:200]!r} is not writable here ({exc.strerror}): files could not be "
            "stored there"
        )
        if not share:
            raise InvalidArgument(
                f"{unwritable}; give a directory this process may write"
            ) from None
        # A read-only share still serves its files (fetch_file); sends to it fail.
        log.warning("%s; it is shared for fetching, and files sent to it are refused", unwritable)
    if type(max_bytes) is not int or max_bytes < 0:
        raise InvalidArgument(f"max_bytes must be a number of bytes >= 0, not {max_bytes!r}")
    service = FileService(
        client,
        path.resolve(),
        max_bytes=max_bytes,
        overwrite=overwrite,
        share=share,
        on_event=on_event,
    )
    client.expose(service, SERVICE)
    return service


# -- sending and fetching ------------------------------------------------------------------------
async def _files_proxy(client: Client, target: str, *, fetch: bool = False) -> RpcProxy:
    """``target``'s file service; ``fetch``: to read its files (they must be shared)."""
    command = f"trio-stream receive-files URL DIRECTORY --name {target[:80]}"
    refused = RpcError(
        f"{target[:80]!r} does not share files: it must call accept_files(directory, "
        f"share=True), or run `{command} --share`"
        if fetch
        else f"{target[:80]!r} does not accept files: it must call accept_files(directory), "
        f"or run `{command}`"
    )
    try:
        proxy = await client.rpc(target, timeout=CALL_TIMEOUT_S)
    except RpcTimeout:
        raise  # it may well accept files: it did not answer in time
    except RpcError:
        # A client that exposes nothing at all: its RPC error is about methods, which the
        # sender of a file never named. A target that is not connected keeps its error.
        if any(info.name == target for info in await client.clients()):
            raise refused from None
        raise
    if f"{SERVICE}.begin" not in proxy.methods:
        raise refused
    return proxy


async def send_file(
    client: Client,
    target: str,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    source = Path(path)
    name = check_name(source.name if name is None else name)
    with open(source, "rb") as f:  # noqa: ASYNC230 - reads go through a worker thread
        start = os.fstat(f.fileno())
        size = start.st_size
        proxy = await _files_proxy(client, target)
        # Shielded (it is short): a cancel while its answer was on its way left the transfer
        # open on the receiver with no abort, and 64 such timeouts refused every sender
        # there for a minute (a cancellation audit). A cancel is taken right after.
        with trio.CancelScope(shield=True):
            transfer = await proxy.call(f"{SERVICE}.begin", name, size, timeout=BEGIN_TIMEOUT_S)
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            digest = hashlib.sha256()
            chunk = chunk_bytes(client.limits.max_frame_bytes)
            in_flight = trio.Semaphore(WRITES_IN_FLIGHT)
            sent = 0
            failure: list[BaseException] = []  # the first write that failed stops the rest

            async def write(offset: int, data: bytes, scope: trio.CancelScope) -> None:
                nonlocal sent
                try:
                    await proxy.call(
                        f"{SERVICE}.write", transfer, offset, data, timeout=CALL_TIMEOUT_S
                    )
                except Exception as exc:
                    failure.append(exc)
                    scope.cancel()
                    return
                finally:
                    in_flight.release()
                sent += len(data)
                if progress is not None:
                    # The caller's callback: its error is the caller's to see as it is, not
                    # in the ExceptionGroup of this nursery's tasks.
                    try:
                        progress(sent, size)
                    except Exception as exc:
                        failure.append(exc)
                        scope.cancel()

            async with trio.open_nursery() as nursery:
                offset = 0
                while offset < size:
                    await in_flight.acquire()
                    # The size declared at the start, even if the file grows meanwhile (a log
                    # being written): what is sent is the file as it was then.
                    data = await trio.to_thread.run_sync(
                        _read_hashed, f, min(chunk, size - offset), digest
                    )
                    if not data:
                        failure.append(
                            OSError(f"{str(source)[:200]!r} shrank while it was being sent")
                        )
                        nursery.cancel_scope.cancel()
                        break
                    nursery.start_soon(write, offset, data, nursery.cancel_scope)
                    offset += len(data)
            if failure:
                raise failure[0]
            # Written in place meanwhile: what went out mixes old and new bytes, and its
            # digest is of what was read, so the receiver would store it as verified (a
            # files audit). It is not finished. Bytes appended after the size taken at the
            # start are not sent, as a growing log's (the README says so).
            how = await trio.to_thread.run_sync(_change_since, f, start)
            if how == "it grew":
                # Appended to (a log: its first bytes as sent), or rewritten larger (an
                # editor's save): a stat cannot tell, the bytes can. Read again, only then.
                again = await trio.to_thread.run_sync(_digest_of_first, f, size)
                how = None if again == digest.hexdigest() else "it was rewritten"
            if how is not None:
                raise OSError(
                    f"{str(source)[:200]!r} changed while it was being sent ({how}): nothing "
                    "was stored; send it again once it is written"
                )
            if progress is not None and size == 0:
                progress(0, 0)
            result: str = await proxy.call(
                f"{SERVICE}.finish", transfer, digest.hexdigest(), timeout=CALL_TIMEOUT_S
            )
        except BaseException:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(5.0),
                contextlib.suppress(Exception),
            ):
                await proxy.call(f"{SERVICE}.abort", transfer, timeout=5.0)
            raise
    return result


async def fetch_file(
    client: Client,
    source: str,
    name: str,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    check_name(name)
    final = Path(dest)
    if final.is_dir():  # noqa: ASYNC240 - one stat, before anything is sent
        final = final / name
    if final.exists() and not overwrite:
        raise FileExistsError(f"{str(final)[:200]!r} exists (overwrite=True replaces it)")
    proxy = await _files_proxy(client, source, fetch=True)
    temp = final.parent / temporary_name(final.name)
    digest = hashlib.sha256()
    received = 0
    trailer: Any = None
    try:
        with open(temp, "xb") as f:  # noqa: ASYNC230 - writes go through a worker thread
            async with proxy.stream(f"{SERVICE}.read", name, window=READ_WINDOW) as stream:
                async for value in stream:
                    if type(value) is bytes:
                        if trailer is not None:
                            raise RpcError(f"{source!r} sent data after the end of {name!r}")
                        await trio.to_thread.run_sync(f.write, value)
                        digest.update(value)
                        received += len(value)
                        if progress is not None:
                            progress(received, None)
                    else:
                        trailer = value
            if (
                not isinstance(trailer, dict)
                or trailer.get("size") != received
                or trailer.get("sha256") != digest.hexdigest()
            ):
                raise RpcError(
                    f"{name[:80]!r} from {source[:80]!r} is incomplete or damaged "
                    f"({received} bytes, check {str(trailer)[:120]})"
                )
            await trio.to_thread.run_sync(os.fsync, f.fileno())
        if overwrite:
            os.replace(temp, final)
        else:
            os.link(temp, final)
            temp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return final
