"""files.restore: a snapshot into a target directory, byte-identical with modes and mtimes.

Steps: `restore` writes entries in walk order; chunks are read, decompressed and verified
against their sha256 in worker threads ahead of the writer, and a chunk reaches the target
only after it verified. A checkpoint flushes the target's filesystem (one `syncfs`, not one
fsync per file) and then records the last path done; a resumed run rewrites at most the file
that was in flight. `metadata` then sets directories' modes and mtimes, deepest first, since
creating children changes a directory's mtime. The snapshot is fixed at prepare time, so a
resumed restore never switches to a newer snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from adapters.files.tree import DIR, FILE, LINK, Entry, read_lines, walk_key
from adapters.repository.fsutil import storage_error, syncfs
from adapters.repository.repository import Repository, SnapshotInfo
from adapters.repository.tuning import Tuning
from adapters.runwork import RunInputs
from domain.errors import TargetNotEmpty
from domain.jobs import FilesRestoreJob
from domain.ports import RunContext

RESTORE, METADATA = "restore", "metadata"
IS_ROOT = os.geteuid() == 0


class FilesRestoreWork(RunInputs[FilesRestoreJob]):
    def __init__(self, spec: FilesRestoreJob, repo: Repository, run_id: str, tuning: Tuning,
                 details: dict[str, Any]) -> None:
        super().__init__(spec, repo, run_id, tuning, details)
        self.target = Path(spec.target.path)

    def plan(self) -> list[str]:
        return [RESTORE, METADATA]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        snap = self.repo.resolve(self.spec.source.snapshot, self.spec.source.job)
        if self.target.exists() and any(self.target.iterdir()) and not self.spec.target.overwrite:
            raise TargetNotEmpty(str(self.target))
        self.details = {"snapshot_id": snap.id, "target": str(self.target), "bytes": snap.stats.get("bytes", 0)}
        return self.details

    def run(self, ctx: RunContext) -> None:
        snap = self.repo.resolve(self.details["snapshot_id"])
        if not ctx.step_done(RESTORE):
            ctx.step_started(RESTORE)
            ctx.step_completed(RESTORE, self._restore(ctx, snap))
        if not ctx.step_done(METADATA):
            ctx.step_started(METADATA)
            ctx.step_completed(METADATA, self._metadata(snap))

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Check the target holds every entry of the snapshot with its size and type."""
        snap = self.repo.resolve(self.details["snapshot_id"])
        problems = []
        count = 0
        for entry in self._entries(snap):
            count += 1
            path = self._dest(entry)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                problems.append(f"{entry.path}: missing")
                continue
            if entry.type == FILE and st.st_size != entry.size:
                problems.append(f"{entry.path}: size {st.st_size}, expected {entry.size}")
        if problems:
            from domain.errors import PermanentError

            raise PermanentError(f"restored tree differs from snapshot: {'; '.join(problems[:5])}")
        return {"snapshot_id": snap.id, "target": str(self.target), "entries": count}

    # --- steps ---------------------------------------------------------------------------------

    def _entries(self, snap: SnapshotInfo) -> Iterator[Entry]:
        return read_lines(self.repo.open_tree(snap))

    def _dest(self, entry: Entry) -> Path:
        return self.target if entry.path == "." else self.target / entry.path

    def _restore(self, ctx: RunContext, snap: SnapshotInfo) -> dict[str, Any]:
        cursor = ctx.cursor(RESTORE) or {}
        last_key = walk_key(cursor["last"]) if cursor.get("last") is not None else None
        done_bytes, done_items = cursor.get("bytes_done", 0), cursor.get("items", 0)
        last_path = cursor.get("last")
        last_checkpoint = time.monotonic()
        since_checkpoint = 0
        self.target.mkdir(parents=True, exist_ok=True)
        entries = (e for e in self._entries(snap) if last_key is None or e.key > last_key)
        with self.repo.locked(exclusive=False), \
                ThreadPoolExecutor(self.tuning.workers, thread_name_prefix="davit-restore") as pool, \
                _SmallFileWriters(self.tuning.workers * 2, self.tuning.chunk_size * self.tuning.inflight_chunks) as small, \
                _Flusher(self.target, ctx) as flusher:
            try:
                for entry, chunks in _prefetch(entries, self.repo, pool, self.tuning.inflight_chunks):
                    ctx.check_stop()
                    if entry.hardlink_to is None or not self._link(entry, chunks, small):
                        self._write_or_submit(entry, chunks, small)
                    done_items += 1
                    done_bytes += entry.size
                    since_checkpoint += entry.size
                    last_path = entry.path
                    flusher.record_finished(wait=False)
                    if since_checkpoint >= self.tuning.pack_size or \
                            time.monotonic() - last_checkpoint >= self.tuning.checkpoint_seconds:
                        small.wait_all()
                        flusher.begin({"last": last_path, "items": done_items, "bytes_done": done_bytes})
                        since_checkpoint, last_checkpoint = 0, time.monotonic()
                small.wait_all()
                flusher.begin({"last": last_path, "items": done_items, "bytes_done": done_bytes})
            finally:
                # A stop or failure still records the flush already under way: that work is durable.
                flusher.record_finished(wait=True)
        return {"items": done_items, "bytes": done_bytes}

    def _write_or_submit(self, entry: Entry, chunks: Iterator[bytes], small: _SmallFileWriters) -> None:
        if entry.type == FILE and len(entry.chunks) <= 1:
            # Small files are mostly create/metadata cost: write them in parallel.
            data = b"".join(chunks)
            small.submit(partial(self._write_entry, entry, iter((data,))), len(data))
        else:
            self._write_entry(entry, chunks)

    def _link(self, entry: Entry, chunks: Iterator[bytes], small: _SmallFileWriters) -> bool:
        """Make `entry` a hard link to the path it shares an inode with; False if that cannot be
        done here (the first path is not a regular file of this target, another device, ...), and
        the caller writes the content instead."""
        assert entry.hardlink_to is not None
        small.wait_all()  # the first path of the inode must be complete on disk
        dest, first = self._dest(entry), self.target / entry.hardlink_to
        try:
            first_st = os.lstat(first)
            if not stat.S_ISREG(first_st.st_mode):
                return False
            try:
                dest_st = os.lstat(dest)
                if (dest_st.st_dev, dest_st.st_ino) != (first_st.st_dev, first_st.st_ino):
                    dest.unlink()
                    os.link(first, dest, follow_symlinks=False)
            except FileNotFoundError:
                os.link(first, dest, follow_symlinks=False)
        except OSError:
            return False
        for _verified in chunks:  # read and verified all the same: the snapshot is checked whole
            pass
        return True

    def _write_entry(self, entry: Entry, chunks: Iterator[bytes]) -> None:
        dest = self._dest(entry)
        try:
            if entry.type == DIR:
                dest.mkdir(mode=0o700, parents=True, exist_ok=True)
                if entry.path == ".":
                    return
            elif entry.type == LINK:
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                os.symlink(entry.target or "", dest)
                if IS_ROOT:
                    os.lchown(dest, entry.uid, entry.gid)
                os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            elif entry.type == FILE:
                fd = _open_for_restore(dest)
                try:
                    for data in chunks:
                        os.write(fd, data)
                    # metadata through the open descriptor: no further path lookups
                    if IS_ROOT:
                        os.fchown(fd, entry.uid, entry.gid)
                    os.fchmod(fd, entry.mode)
                    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
                finally:
                    os.close(fd)
        except OSError as exc:
            raise storage_error(exc, dest) from exc

    def _metadata(self, snap: SnapshotInfo) -> dict[str, Any]:
        dirs = [e for e in self._entries(snap) if e.type == DIR]
        for entry in reversed(dirs):
            dest = self._dest(entry)
            if IS_ROOT:
                os.chown(dest, entry.uid, entry.gid)
            os.chmod(dest, entry.mode)
            os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))
        syncfs(self.target)
        return {"directories": len(dirs)}


class _Flusher:
    """Checkpoints whose flush runs in the background while the restore goes on writing.

    `begin` is called once every entry up to the cursor is written; it starts one `syncfs`
    (which makes all of them durable) and, when that returns, records the checkpoint from the
    flushing thread, so the restore never waits for the event to be durable. At most one flush
    is under way, so checkpoints are recorded in order.
    """

    def __init__(self, target: Path, ctx: RunContext) -> None:
        self._target = target
        self._ctx = ctx
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="davit-flush")
        self._under_way: Future[None] | None = None

    def begin(self, cursor: dict[str, Any]) -> None:
        self.record_finished(wait=True)
        self._under_way = self._thread.submit(self._flush_and_record, cursor)

    def _flush_and_record(self, cursor: dict[str, Any]) -> None:
        syncfs(self._target)
        self._ctx.checkpoint(RESTORE, cursor, bytes_done=cursor["bytes_done"], items_done=cursor["items"])

    def record_finished(self, wait: bool) -> None:
        """Settle the flush under way: raise what it raised; with `wait`, block until it is done."""
        if self._under_way is None:
            return
        if not wait and not self._under_way.done():
            return
        future, self._under_way = self._under_way, None
        future.result()

    def __enter__(self) -> _Flusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True)


class _SmallFileWriters:
    """A few threads writing whole small files; `wait_all` is the barrier before a checkpoint.

    At most `max_bytes` of file content waits in memory; a failed write is raised to the
    restoring thread at the next submit or barrier.
    """

    def __init__(self, threads: int, max_bytes: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="davit-write")
        self._pending: deque[tuple[Future[None], int]] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes

    def submit(self, write: Callable[[], None], size: int) -> None:
        while self._pending and (self._bytes + size > self._max_bytes or self._pending[0][0].done()):
            future, held = self._pending.popleft()
            future.result()
            self._bytes -= held
        self._pending.append((self._pool.submit(write), size))
        self._bytes += size

    def wait_all(self) -> None:
        while self._pending:
            future, held = self._pending.popleft()
            future.result()
            self._bytes -= held

    def __enter__(self) -> _SmallFileWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)


def _open_for_restore(dest: Path) -> int:
    """Open `dest` for writing from scratch, never writing through a link that is in the way:
    a symlink is replaced rather than followed, and a file with other hard links (which may be
    outside the target) is replaced rather than truncated."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(dest, flags, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        dest.unlink()  # a symlink where the snapshot has a file: replace the link, not its target
        return os.open(dest, flags | os.O_EXCL, 0o600)
    st = os.fstat(fd)
    if st.st_nlink > 1:
        os.close(fd)
        dest.unlink()
        return os.open(dest, flags | os.O_EXCL, 0o600)
    if st.st_size:
        os.ftruncate(fd, 0)
    return fd


def _prefetch(entries: Iterator[Entry], repo: Repository, pool: ThreadPoolExecutor,
              depth: int) -> Iterator[tuple[Entry, Iterator[bytes]]]:
    """Entries with their chunks, read and verified up to `depth` chunks ahead of the writer."""
    queue: deque[tuple[Entry, deque[Future[bytes]], list[str]]] = deque()
    inflight = 0
    source = iter(entries)
    exhausted = False

    def fill() -> None:
        nonlocal inflight, exhausted
        while not exhausted and inflight < depth:
            # top up the newest queued entry's chunks before taking a new entry
            if queue and queue[-1][2]:
                _entry, futures, todo = queue[-1]
                futures.append(pool.submit(repo.read_chunk, bytes.fromhex(todo.pop(0))))
                inflight += 1
                continue
            entry = next(source, None)
            if entry is None:
                exhausted = True
                return
            queue.append((entry, deque(), list(entry.chunks)))

    def chunks_of(futures: deque[Future[bytes]], todo: list[str]) -> Iterator[bytes]:
        nonlocal inflight
        while futures or todo:
            if not futures:
                futures.append(pool.submit(repo.read_chunk, bytes.fromhex(todo.pop(0))))
                inflight += 1
            data = futures.popleft().result()
            inflight -= 1
            fill_current(futures, todo)
            yield data

    def fill_current(futures: deque[Future[bytes]], todo: list[str]) -> None:
        nonlocal inflight
        while todo and inflight < depth:
            futures.append(pool.submit(repo.read_chunk, bytes.fromhex(todo.pop(0))))
            inflight += 1

    fill()
    while queue:
        entry, futures, todo = queue.popleft()
        yield entry, chunks_of(futures, todo)
        fill()
