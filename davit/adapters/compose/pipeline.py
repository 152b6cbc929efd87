"""The migration's data path for one item, as a bounded pipeline: read, send and unpack at once.

`tar c` of the item (GNU tar, names sorted, numeric owners: a stopped source gives the same
stream every time) is cut into fixed-size chunks, each named by the sha256 of its bytes and
zstd-compressed in worker threads. The chunks go in order over one SSH channel to a store
writer on the target, which files each under its name and acknowledges it once whole; as
soon as a chunk is acknowledged, or found already in the store, its name goes to an unpacker
on a second channel that streams stored chunks, decompressed, into `tar x`. Reading,
hashing, compressing, sending and unpacking therefore all overlap; at most `AHEAD` chunks
wait in memory; a chunk the store already holds is never sent again, so a resumed migration
sends only what is missing. An item whose files did not change since a pass recorded its
chunk list in the store (`tarindex.py`) is not read at all: its chunks go to the unpacker;
and where its destination still holds that stream as a pass recorded it (`unpacked.py`),
one round trip finds so and nothing is unpacked or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import asyncssh
import zstandard

from davit.adapters.compose import tarindex, unpacked
from davit.adapters.compose.images import ImageItem
from davit.adapters.compose.source import Item
from davit.adapters.ssh.remote import RemoteCommandFailed, RemoteHost
from davit.domain.errors import PermanentError, RetryableError

q = shlex.quote
CHUNK = 4 << 20
AHEAD = 6  # chunks read and sealed ahead of the sender: bounds memory at about 2 * AHEAD * CHUNK
SEALERS = 2
SYNC_BATCH = 8  # chunks the target's store fsyncs and files together (`store_command`)


class ExportFailed(PermanentError):
    pass


# what the unpacker says of a stored chunk whose content is not what its name says
CHUNK_MISMATCH = "does not match its name: removed from the store"


class ChunkMismatch(RetryableError):
    """A chunk found in the target's store (kept from an earlier migration) is not what its
    name says: it was not unpacked and is gone from the store, so another attempt resends it."""


@dataclass
class Moved:
    """What one item's pass through the pipeline did."""

    ids: list[str] = field(default_factory=list)  # its chunks, in stream order
    sizes: list[int] = field(default_factory=list)  # their compressed sizes
    plain_bytes: int = 0
    sent_chunks: int = 0
    sent_bytes: int = 0
    unpacked: bool = True  # False: the target held this stream already (`unpacked.py`), nothing written


def tar_command(item: Item) -> list[str]:
    if isinstance(item, ImageItem):  # an image's export, less the layers the target holds
        return item.export_command()
    source = Path(item.source)
    base = ["tar", "-c", "--format=gnu", "--sort=name", "--numeric-owner"]
    if item.is_file:
        return [*base, "-C", str(source.parent), source.name]
    return [*base, "-C", str(source), "."]


# The writer's directory, held by a `flock` on it for as long as the writer (or a child of it
# still writing there) lives: the store's listing (`target.DROP_ABANDONED`) removes only a
# directory whose lock it can take, so never a live writer's. Made and locked while holding
# an exclusive lock on `chunks/`, which the listing holds while it removes: so it never sees
# a writer's directory between `mktemp` and `flock`.
WRITER_DIR = 'exec 7<chunks && flock -x 7 && w=$(mktemp -d incoming/w.XXXXXX) && exec 9<"$w" && flock -n 9 || exit 1; exec 7<&-;'


def store_command(store: str) -> str:
    """Reads `NAME LENGTH\\n` + LENGTH bytes per chunk and `END 0\\n` at the end; files each chunk
    in the store and prints its name once it is there for good. Chunks are written (plain
    writes, one `dd` each: forks are dear on a loaded host) under `incoming/` (in a directory
    of the writer's own: two runs at once on one store never write one file), which no listing
    reads, and filed by batches of `SYNC_BATCH`: once the stream went on past the batch's last
    chunk (`dd` ends a cut stream without an error, so only what follows a chunk proves it
    whole), one `sync` fsyncs the batch's files, `mv` renames them into `chunks/`, a second
    `sync` fsyncs `chunks/`, and only then are their names printed (acknowledged). So a name in
    `chunks/` is always a whole chunk: a kill -9 at any instant leaves the chunks not yet
    renamed in `incoming/` (dropped by `present_chunks` once no writer holds them); after a power loss a rename that
    persisted was made after its file's data was on disk, and an acknowledged one persisted
    (the directory was fsynced). One fsync per chunk (what this did before, with `dd
    conv=fsync` or O_DIRECT, whose last partial block GNU dd fsyncs) made the writer wait on
    the disk 244 times in a 1 GiB stack; and written past the page cache, the unpacker read
    every chunk back from the disk."""
    return (
        # a directory of its own under incoming/: a second writer (another run on the same
        # store) sending the same chunk would otherwise truncate the file this one files
        # a shared lock on the store while the writer lives: `incoming/` itself is removed only
        # under an exclusive one (`target.prune_store`), never between this `mkdir` and `mktemp`
        f"cd {q(store)} && exec 8<. && flock -s 8 && mkdir -p chunks incoming || exit 1; {WRITER_DIR} b=; k=0; "
        "flush() { [ $k -eq 0 ] && return 0; "
        '(cd "$w" && sync -- $b && mv -f -- $b ../../chunks/) && sync -- chunks || return 1; '
        'for f in $b; do echo "${f%.zst}"; done; b=; k=0; }; '
        "while IFS=' ' read -r c n; do "
        f"if [ $k -ge {SYNC_BATCH} ]; then flush || exit 1; fi; "
        'if [ "$c" = END ]; then flush && rmdir "$w" && exit 0; exit 1; fi; '
        'dd of="$w/$c.zst" bs="$n" count=1 iflag=fullblock status=none || exit 1; '
        'b="$b $c.zst"; k=$((k+1)); done; exit 1'
    )


def unpack_command(chunks: str, unpack: str, record: str | None = None, walker: str | None = None) -> str:
    """Reads chunk names, one a line, then `END <count> <stream id>`, and streams those chunks,
    decompressed, into `unpack`; a list cut short (no `END`, or another count) fails even where
    `tar x` took the stream as whole. With `record` and `walker` (`unpacked.py`): the record of
    the destination is removed before anything is unpacked and written once the unpack ended
    well (whether a destination holds a stream already is `unpacked.check_command`'s). POSIX
    sh has no pipefail: failures of the feeding side are noted in a status file.

    A name line `NAME check` marks a chunk this run did not write itself (found in the store: a
    transfer cache kept from an earlier migration, or an earlier attempt's): it is copied to a
    private temporary file, its decompressed content hashed, and only that copy, if the hash is
    its name, goes into the stream (what was checked is what is unpacked, whatever happens to
    the store's file meanwhile). A chunk that does not match is removed from the store and the
    unpack fails (`CHUNK_MISMATCH`), so the next attempt sends it again."""
    script = f"st=$(mktemp) && v=$(mktemp) && cd {q(chunks)} || exit 1; "
    if record and walker:
        script += unpacked.snap_function(walker) + f"rec={q(record)}; "
        script += 'mkdir -p "${rec%/*}" && rm -f "$rec" || exit 1; '
    script += (
        "{ (n=0; while IFS=' ' read -r c m s; do if [ \"$c\" = END ]; then "
        '[ "$m" = "$n" ] && printf \'%s\\n\' "$s" > "$st.end"; break; fi; '
        'if [ "$m" = check ]; then '
        'cat "$c.zst" > "$v" || { echo "chunk $c unreadable" >>"$st"; exit 1; }; '
        'h=$(zstd -dcq < "$v" | sha256sum); '
        f'if [ "${{h%% *}}" != "$c" ]; then rm -f "$c.zst"; echo "chunk $c {CHUNK_MISMATCH}" >>"$st"; exit 1; fi; '
        'cat "$v"; '
        'else cat "$c.zst" || { echo "chunk $c unreadable" >>"$st"; exit 1; }; fi; n=$((n+1)); done) '
        "| (zstd -dcq || echo 'zstd failed' >>\"$st\") | (" + unpack + "); r=$?; }; "
        '[ -s "$st.end" ] || [ -s "$st" ] || echo "the list of chunks was cut short" >>"$st"; '
        'if [ -s "$st" ]; then cat "$st" >&2; r=1; fi; '
    )
    if record and walker:
        script += (
            f"if [ $r -eq 0 ]; then sleep {unpacked.SETTLE_S}; d=$(snap) && "
            'printf \'%s %s\\n\' "$(cat "$st.end")" "$d" > "$rec.tmp" && mv -f "$rec.tmp" "$rec"; fi; '
        )
    return script + 'rm -f "$st" "$st.end" "$v"; exit $r'


# starts an export command elsewhere: returns what `_Reader` uses of a Popen (`ssh/threaded.py`)
Spawn = Callable[[list[str]], Any]


@runtime_checkable
class Fingerprints(Protocol):
    """A `Spawn` that can also fingerprint an item where it runs the export (`tarindex.py`)."""

    def fingerprint(self, item: Item, tar_args: list[str]) -> str | None: ...


Sealed = tuple[str, bytes | None, int]  # name, compressed bytes (None: not needed), plain length


class _Sealer:
    """Hash and compress chunks in worker threads (hashlib and zstandard release the GIL); a
    chunk the target already has (`known`) is not compressed at all."""

    def __init__(self, level: int, known: Callable[[str], bool]) -> None:
        self.level = level
        self.known = known
        self.local = threading.local()

    def __call__(self, plain: bytes) -> Sealed:
        name = hashlib.sha256(plain).hexdigest()
        if self.known(name):
            return name, None, len(plain)
        cctx = getattr(self.local, "cctx", None)
        if cctx is None:
            cctx = self.local.cctx = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
        return name, cctx.compress(plain), len(plain)


class _Reader:
    """`tar c` in a subprocess, cut into chunks sealed by a thread pool, handed over in order
    through a bounded queue (None at the end, or the exception that stopped it)."""

    def __init__(self, item: Item, level: int, known: Callable[[str], bool], spawn: Spawn | None = None) -> None:
        self.item = item
        self.queue: queue.Queue[Future[Sealed] | BaseException | None] = queue.Queue(AHEAD)
        self.pool = ThreadPoolExecutor(SEALERS, thread_name_prefix="davit-seal")
        self.sealer = _Sealer(level, known)
        self.stopped = threading.Event()
        env = item.export_environment() if isinstance(item, ImageItem) else None
        self.proc: Any
        if spawn is not None:  # the source is another host's (`compose/sshsource.py`)
            self.proc = spawn(tar_command(item))
        else:
            self.proc = subprocess.Popen(tar_command(item), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.thread = threading.Thread(target=self._produce, name="davit-tar-reader", daemon=True)
        self.thread.start()

    def _put(self, entry: Future[Sealed] | BaseException | None) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(entry, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        try:
            while not self.stopped.is_set():
                plain = self.proc.stdout.read(CHUNK)
                if not plain:
                    break
                if not self._put(self.pool.submit(self.sealer, plain)):
                    return
            status = self.proc.wait()
            if status != 0 and not self.stopped.is_set():
                err = self.proc.stderr.read().decode(errors="replace").strip()[-800:]
                raise ExportFailed(f"tar of {self.item.source} exited {status}: {err}")
            self._put(None)
        except BaseException as exc:  # handed to the consumer, which raises it in the run's thread
            self._put(exc)

    def next(self) -> Future[Sealed] | BaseException | None:
        return self.queue.get()

    def close(self) -> None:
        self.stopped.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.thread.join()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def move_item(
    host: RemoteHost,
    store: str,
    item: Item,
    unpack: str,
    level: int,
    present: dict[str, int],
    sent: set[str],
    on_stored: Callable[[int, int], None],
    check_stop: Callable[[], None],
    walker: str | None = None,
    spawn: Spawn | None = None,
) -> Moved:
    """Send `item` into the target's chunk store at `store` and unpack it there with `unpack`
    (a shell command reading the tar stream on stdin). `present` maps the names already in
    the store to their sizes and grows as chunks are acknowledged; `sent` holds those sent by
    this run (a chunk met twice is sent once). `on_stored(chunks, bytes)` follows each
    acknowledgement. With `walker` (a shell command listing the destination:
    `target.walker_for`), a destination still holding what a pass recorded is not written.
    With `spawn`, the export runs where `spawn` starts it (a source reached over SSH), not here."""
    record, walker = _record_of(store, unpack, walker)
    unpack_cmd = unpack_command(f"{store}/chunks", unpack, record, walker)
    key = _fingerprint(item, spawn)
    listed = None
    if key and record and walker:
        out = host.run(unpacked.check_command(tarindex.path(store, key), record, walker)).stdout.splitlines()
        held = out[:1] == ["unchanged"]
        listed = tarindex.parse(out[1:] if held else out)
        if held and listed is not None:  # the destination holds this stream, as recorded
            sizes = [present.get(name, 0) for name in listed.ids]
            return Moved(ids=list(listed.ids), sizes=sizes, plain_bytes=listed.plain_bytes, unpacked=False)
    elif key:
        listed = tarindex.lookup(host, store, key)
    if listed is not None and all(name in present for name in listed.ids):
        return _unpack_listed(host, store, unpack_cmd, listed, present, sent, check_stop)
    reader = _Reader(item, level, lambda name: name in present or name in sent, spawn)
    try:
        moved = host.run_async(lambda conn: _move(conn, host, store, unpack_cmd, reader, present, sent, on_stored, check_stop))
    finally:
        reader.close()
    if key:
        tarindex.record(host, store, key, moved.ids, moved.plain_bytes)
    return moved


def _fingerprint(item: Item, spawn: Spawn | None) -> str | None:
    # an image has no files to fingerprint: it is exported again (and only missing chunks sent)
    if isinstance(item, ImageItem):
        return None
    if spawn is None:
        return tarindex.fingerprint(item, tar_command(item))
    # a remote source's files are on another host (this host's lstat says nothing): its spawner
    # fingerprints them there, if it can (`compose/sshfingerprint.py`)
    return spawn.fingerprint(item, tar_command(item)) if isinstance(spawn, Fingerprints) else None


def _record_of(store: str, unpack: str, walker: str | None) -> tuple[str | None, str | None]:
    return (unpacked.record_path(store, unpack, walker), walker) if walker else (None, None)


def _end_line(ids: list[str], plain_bytes: int) -> bytes:
    return f"END {len(ids)} {unpacked.stream_id(ids, plain_bytes)}\n".encode()


def _name_line(name: str, sent: set[str]) -> bytes:
    """The unpacker's line for a chunk: one this run did not send itself is checked there."""
    return f"{name}\n".encode() if name in sent else f"{name} check\n".encode()


def _unpack_failed(host: RemoteHost, store: str, cmd: str, status: int | None, stderr: str) -> PermanentError | RetryableError:
    """The unpacker's failure: a chunk that did not match its name (`ChunkMismatch`, naming it), or else its status."""
    for line in stderr.splitlines():
        words = line.split()
        if CHUNK_MISMATCH in line and len(words) > 1:
            return ChunkMismatch(f"on {host.address.where}: {store}/chunks/{words[1]}.zst {CHUNK_MISMATCH}")
    return RemoteCommandFailed(host.address.where, cmd, status, stderr)


def _unpack_listed(
    host: RemoteHost,
    store: str,
    cmd: str,
    listed: tarindex.Listed,
    present: dict[str, int],
    sent: set[str],
    check_stop: Callable[[], None],
) -> Moved:
    """Unpack an item whose stream is a recorded list of chunks, all in the store: nothing is
    read here, nothing sent."""

    async def go(conn: asyncssh.SSHClientConnection) -> None:
        proc = await conn.create_process(cmd, encoding=None)
        try:
            proc.stdin.write(b"".join(_name_line(name, sent) for name in listed.ids))
            proc.stdin.write(_end_line(listed.ids, listed.plain_bytes))
            proc.stdin.write_eof()
            done = asyncio.ensure_future(proc.wait())
            while not done.done():
                check_stop()
                await asyncio.wait([done], timeout=0.5)
            result = done.result()
            if result.exit_status != 0:
                raise _unpack_failed(host, store, cmd, result.exit_status, _text(result.stderr))
        finally:
            proc.close()

    host.run_async(go)
    return Moved(ids=list(listed.ids), sizes=[present[name] for name in listed.ids], plain_bytes=listed.plain_bytes)


async def _move(
    conn: asyncssh.SSHClientConnection,
    host: RemoteHost,
    store: str,
    unpack_cmd: str,
    reader: _Reader,
    present: dict[str, int],
    sent: set[str],
    on_stored: Callable[[int, int], None],
    check_stop: Callable[[], None],
) -> Moved:
    loop = asyncio.get_running_loop()
    moved = Moved()
    writer_cmd = store_command(store)
    writer = await conn.create_process(writer_cmd, encoding=None)
    unpacker = await conn.create_process(unpack_cmd, encoding=None)
    waiting: deque[str] = deque()  # names not yet handed to the unpacker, in stream order
    size_of: dict[str, int] = {}

    def hand_over() -> None:
        while waiting and waiting[0] in present:
            unpacker.stdin.write(_name_line(waiting.popleft(), sent))

    async def acknowledgements() -> None:
        while line := await writer.stdout.readline():
            name = line.decode().strip()
            present[name] = size_of[name]
            moved.sent_chunks += 1
            moved.sent_bytes += size_of[name]
            on_stored(1, size_of[name])
            hand_over()

    acks = asyncio.ensure_future(acknowledgements())
    try:
        while True:
            check_stop()
            entry = await loop.run_in_executor(None, reader.next)
            if entry is None:
                break
            if isinstance(entry, BaseException):
                raise entry
            name, packed, plain_len = await asyncio.wrap_future(entry)
            moved.ids.append(name)
            moved.plain_bytes += plain_len
            waiting.append(name)
            if name not in present and name not in sent:
                assert packed is not None  # only a chunk known when it was sealed comes without its bytes
                sent.add(name)
                size_of[name] = len(packed)
                writer.stdin.write(f"{name} {len(packed)}\n".encode())
                writer.stdin.write(packed)
                await writer.stdin.drain()
            moved.sizes.append(size_of.get(name, present.get(name, 0)))
            del packed
            if acks.done():
                break  # the store writer stopped early: its status says why
            hand_over()
        writer.stdin.write(b"END 0\n")
        writer.stdin.write_eof()
        await acks
        done = await writer.wait()
        if done.exit_status != 0:
            raise RemoteCommandFailed(host.address.where, writer_cmd, done.exit_status, _text(done.stderr))
        hand_over()
        if waiting:
            raise RemoteCommandFailed(
                host.address.where,
                writer_cmd,
                done.exit_status,
                f"{len(waiting)} chunks were never acknowledged by the target's store",
            )
        unpacker.stdin.write(_end_line(moved.ids, moved.plain_bytes))
        unpacker.stdin.write_eof()
        result = await unpacker.wait()
        if result.exit_status != 0:
            raise _unpack_failed(host, store, unpack_cmd, result.exit_status, _text(result.stderr))
        return moved
    except (BrokenPipeError, ConnectionError, asyncssh.ChannelOpenError, asyncssh.DisconnectError):
        # one side went away: its exit status and stderr say why better than the broken pipe
        for proc, cmd in ((writer, writer_cmd), (unpacker, unpack_cmd)):
            if proc.exit_status not in (None, 0):
                raise _unpack_failed(host, store, cmd, proc.exit_status, _text(await _stderr(proc))) from None
        raise
    finally:
        acks.cancel()
        with contextlib.suppress(BaseException):
            await acks
        for proc in (writer, unpacker):
            proc.close()


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


async def _stderr(proc: asyncssh.SSHClientProcess[bytes]) -> bytes:
    try:
        return await asyncio.wait_for(proc.stderr.read(), 5)
    except (TimeoutError, asyncssh.Error, OSError):
        return b""
