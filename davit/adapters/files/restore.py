"""files.restore: a snapshot into a target directory, byte-identical with modes and mtimes.

Steps: `restore` writes entries in walk order; chunks are read, decompressed and verified
against their sha256 in worker threads ahead of the writer, and a chunk reaches the target
only after it verified. A checkpoint flushes the target's filesystem (one `syncfs`, not one
fsync per file) and then records the last path done; a resumed run rewrites at most the file
that was in flight. `metadata` then sets directories' modes, owners, extended attributes and
mtimes, deepest first, since creating children changes a directory's mtime. The snapshot is
fixed at prepare time, so a resumed restore never switches to a newer snapshot.

Confinement (GUARANTEES 13): prepare checks the whole tree first (`treecheck`: a snapshot
with a hostile or malformed entry is corrupt and nothing is written), and every step reaches
the target's entries only through directory descriptors (`confined`), never following a
symlink in the target, whatever was planted there.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

from davit.adapters.files.confined import DirWalk, Warnings, Writer, kind_of, one_name, open_root
from davit.adapters.files.holes import SparseSource
from davit.adapters.files.totals import snapshot_totals
from davit.adapters.files.treecheck import checked, parsed
from davit.adapters.files.treekinds import FILES_RESTORE_KINDS, require_kind
from davit.adapters.prefetch import RestoreSource, restore_reads
from davit.adapters.repository.fsutil import syncfs
from davit.adapters.repository.repository import SnapshotInfo
from davit.adapters.repository.treeformat import DIR, FILE, LINK, SPECIAL, Entry, walk_key
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, run_steps
from davit.domain.errors import PermanentError, TargetNotEmpty
from davit.domain.jobs import FilesRestoreJob
from davit.domain.ports import RunContext

RESTORE, METADATA = "restore", "metadata"
# Directory descriptors popped while small-file writers may still use them are closed at the
# next barrier; this many force one (the soft RLIMIT_NOFILE may be 1024).
MAX_DEFERRED_FDS = 256
# A tree of at most this many entries, checked whole by `prepare`, is kept in memory for the
# steps and the final check of the same process (a few MB), rather than read, parsed and
# checked three times; a larger one is read again each time (its memory stays bounded).
KEPT_TREE_ENTRIES = 20_000
# Small files handed to a writer thread at once: up to this many, or this many bytes.
SMALL_BATCH_FILES = 32
SMALL_BATCH_BYTES = 1 << 20


class FilesRestoreWork(RunWork[FilesRestoreJob]):
    def __init__(self, inputs: RunInputs[FilesRestoreJob]) -> None:
        super().__init__(inputs)
        self.target = Path(self.spec.target.path)
        self.overwrite = self.spec.target.overwrite
        # The directories met by a `restore` step that went through the whole tree in this
        # process: the `metadata` step then needs no further pass over it.
        self._dirs: list[Entry] | None = None
        # (snapshot id, its entries) once `prepare` checked a tree of at most KEPT_TREE_ENTRIES
        self._tree: tuple[str, list[Entry]] | None = None

    def plan(self) -> list[str]:
        return [RESTORE, METADATA]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        snap = self.repo.resolve(self.spec.source.snapshot, self.spec.source.job)
        require_kind(snap.id, snap.kind, snap.job, FILES_RESTORE_KINDS, "files.restore")
        self._keep_checked(snap)  # before anything is written: a corrupt tree fails here
        if self.target.exists() and any(self.target.iterdir()) and not self.overwrite:
            raise TargetNotEmpty(str(self.target))
        self.details = {"snapshot_id": snap.id, "target": str(self.target), "bytes": snap.stats.get("bytes", 0)}
        return self.details

    def run(self, ctx: RunContext) -> None:
        snap = self.repo.resolve(self.details["snapshot_id"])
        self._tell_total(ctx, snap)
        run_steps(ctx, [Step(RESTORE, partial(self._restore, snap=snap)), Step(METADATA, partial(self._metadata, snap=snap))])

    def _tell_total(self, ctx: RunContext, snap: SnapshotInfo) -> None:
        known = snapshot_totals(snap.stats)  # what the snapshot holds: the restore's 100%
        if known is not None:
            ctx.step_total(RESTORE, bytes_total=known[0], items_total=known[1])

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Check the target holds every entry of the snapshot with its type and size (looked up
        through directory descriptors, never following a link)."""
        snap = self.repo.resolve(self.details["snapshot_id"])
        problems: list[str] = []
        count = 0
        walk = DirWalk(open_root(self.target))
        try:
            for entry in self._entries(snap):
                count += 1
                problem = _difference(walk, entry)
                if problem is not None:
                    problems.append(f"{entry.path}: {problem}")
        finally:
            walk.close()
        if problems:
            raise PermanentError(f"restored tree differs from snapshot: {'; '.join(problems[:5])}")
        return {"snapshot_id": snap.id, "target": str(self.target), "entries": count}

    # --- steps ---------------------------------------------------------------------------------

    def _entries(self, snap: SnapshotInfo) -> Iterator[Entry]:
        """The snapshot's entries, each checked (`treecheck`) before it is used: those `prepare`
        checked and kept, or read and checked again."""
        if self._tree is not None and self._tree[0] == snap.id:
            return iter(self._tree[1])
        return checked(parsed(self.repo.open_tree(snap), snap.id), snap.id)

    def _keep_checked(self, snap: SnapshotInfo) -> None:
        """Check the whole tree (`CorruptSnapshot` on the first bad entry); keep it if small."""
        self._tree = None
        kept: list[Entry] | None = []
        for entry in self._entries(snap):
            if kept is not None:
                kept.append(entry)
                if len(kept) > KEPT_TREE_ENTRIES:
                    kept = None
        if kept is not None:
            self._tree = (snap.id, kept)

    def _restore(self, ctx: RunContext, snap: SnapshotInfo) -> dict[str, Any]:
        cursor = ctx.cursor(RESTORE) or {}
        last_key = walk_key(cursor["last"]) if cursor.get("last") is not None else None
        done_bytes, done_items = cursor.get("bytes_done", 0), cursor.get("items", 0)
        last_path = cursor.get("last")
        last_checkpoint = time.monotonic()
        since_checkpoint = 0
        warnings = Warnings(ctx, RESTORE)
        source: RestoreSource = self.repo
        writer = Writer(self.target, self.overwrite, warnings)
        if self.spec.target.sparse:
            source = sparse = SparseSource(self.repo)
            writer = Writer(self.target, self.overwrite, warnings, is_hole=sparse.zeros.is_zeros)
        deferred: list[int] = []
        walk = DirWalk(open_root(self.target), deferred.append)
        dirs: list[Entry] = []

        def todo() -> Iterator[Entry]:
            for entry in self._entries(snap):
                if entry.type == DIR:
                    dirs.append(entry)
                if last_key is None or entry.key > last_key:
                    yield entry

        entries = todo()
        try:
            with (
                self.repo.locked(exclusive=False),
                ThreadPoolExecutor(self.tuning.workers, thread_name_prefix="davit-restore") as pool,
                _SmallFileWriters(self.tuning.workers * 2, self.tuning.chunk_size * self.tuning.inflight_chunks) as small,
                _Flusher(self.target, ctx) as flusher,
                closing(restore_reads(entries, source, pool, self.tuning)) as items,
            ):

                def barrier() -> None:
                    """Every submitted small file is on disk; their directories may be closed."""
                    small.wait_all()
                    while deferred:
                        os.close(deferred.pop())

                try:
                    for entry, chunks in items:
                        ctx.check_stop()
                        self._put(writer, walk, entry, chunks, small, barrier)
                        if len(deferred) > MAX_DEFERRED_FDS:
                            barrier()
                        done_items += 1
                        done_bytes += entry.size
                        since_checkpoint += entry.size
                        last_path = entry.path
                        flusher.record_finished(wait=False)
                        if (
                            since_checkpoint >= self.tuning.pack_size
                            or time.monotonic() - last_checkpoint >= self.tuning.checkpoint_seconds
                        ):
                            barrier()
                            flusher.begin({"last": last_path, "items": done_items, "bytes_done": done_bytes})
                            since_checkpoint, last_checkpoint = 0, time.monotonic()
                    barrier()
                    flusher.begin({"last": last_path, "items": done_items, "bytes_done": done_bytes})
                finally:
                    # A stop or failure still records the flush already under way: that work is durable.
                    flusher.record_finished(wait=True)
        finally:
            # the writer threads have finished (their pool is shut down): nothing uses these now
            walk.close()
            for fd in deferred:
                os.close(fd)
        warnings.summarize()
        self._dirs = dirs
        return {"items": done_items, "bytes": done_bytes}

    def _put(
        self,
        writer: Writer,
        walk: DirWalk,
        entry: Entry,
        chunks: Iterator[bytes],
        small: _SmallFileWriters,
        barrier: Callable[[], None],
    ) -> None:
        """Create one entry relative to its parent directory's descriptor."""
        if entry.path == ".":
            return  # the root: opened (created if missing) by `open_root`; its metadata comes last
        key = entry.key
        try:
            parent = walk.fd_of(key[:-1])
        except OSError as exc:
            raise PermanentError(
                f"restore target path {writer.shown(entry).parent}: cannot be opened as a "
                f"directory of the target ({exc.strerror}); it was replaced or is a symlink"
            ) from exc
        name = one_name(key[-1])
        if entry.hardlink_to is not None:
            barrier()  # the first path of the inode must be complete on disk
            if writer.link(walk.root, parent, name, entry):
                for _verified in chunks:  # read and verified all the same: the snapshot is checked whole
                    pass
                return
        if entry.type == FILE:
            if len(entry.chunks) <= 1:
                # Small files are mostly create/metadata cost: write them in parallel.
                data = b"".join(chunks)
                small.submit(partial(writer.write_file, parent, name, entry, (data,)), len(data))
            else:
                writer.write_file(parent, name, entry, chunks)
        elif entry.type == DIR:
            writer.make_dir(parent, name, entry)
        elif entry.type == LINK:
            writer.make_symlink(parent, name, entry)
        else:
            writer.make_node(parent, name, entry)

    def _metadata(self, ctx: RunContext, snap: SnapshotInfo) -> dict[str, Any]:
        dirs = self._dirs if self._dirs is not None else [e for e in self._entries(snap) if e.type == DIR]
        self._dirs = None
        warnings = Warnings(ctx, METADATA)
        writer = Writer(self.target, self.overwrite, warnings)
        walk = DirWalk(open_root(self.target))
        try:
            for entry in reversed(dirs):  # deepest first: a child's creation changed its parent's mtime
                try:
                    fd = walk.fd_of(entry.key)
                except OSError as exc:
                    raise PermanentError(
                        f"restore target path {writer.shown(entry)}: cannot be opened as a "
                        f"directory ({exc.strerror}); it was replaced or is a symlink"
                    ) from exc
                writer.dir_metadata(fd, entry)
        finally:
            walk.close()
        warnings.summarize()
        syncfs(self.target)
        return {"directories": len(dirs)}


def _difference(walk: DirWalk, entry: Entry) -> str | None:
    """How the target differs from `entry` (missing, another type, another size), or None."""
    key = entry.key
    try:
        st = os.stat(key[-1], dir_fd=walk.fd_of(key[:-1]), follow_symlinks=False) if key else os.fstat(walk.root)
    except OSError:
        # a FIFO or device node the target refused (or, without root, a device node) was
        # reported as a warning when the restore met it
        return None if entry.type in SPECIAL else "missing"
    there = kind_of(st)
    if there != entry.type:
        return f"a {there}, expected a {entry.type}"
    if entry.type == FILE and st.st_size != entry.size:
        return f"size {st.st_size}, expected {entry.size}"
    return None


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
    """A few threads writing whole small files, a batch of them per task (a hand-off between
    threads costs about as much as creating a small file, so it is paid once per batch, not per
    file); `wait_all` is the barrier before a checkpoint.

    At most `max_bytes` of file content waits in memory; a failed write is raised to the
    restoring thread at a later submit or at the barrier (the files after it in its batch are
    not written: the run fails, and nothing after its last checkpoint was recorded done).
    """

    def __init__(self, threads: int, max_bytes: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="davit-write")
        self._pending: deque[tuple[Future[None], int]] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._batch: list[Callable[[], None]] = []
        self._batch_bytes = 0
        self._batch_max_bytes = max(1, min(SMALL_BATCH_BYTES, max_bytes // (threads + 1)))

    def submit(self, write: Callable[[], None], size: int) -> None:
        self._batch.append(write)
        self._batch_bytes += size
        if len(self._batch) >= SMALL_BATCH_FILES or self._batch_bytes >= self._batch_max_bytes:
            self._send()

    def _send(self) -> None:
        if not self._batch:
            return
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        while self._pending and (self._bytes + size > self._max_bytes or self._pending[0][0].done()):
            future, held = self._pending.popleft()
            future.result()
            self._bytes -= held
        self._pending.append((self._pool.submit(_write_all, batch), size))
        self._bytes += size

    def wait_all(self) -> None:
        self._send()
        while self._pending:
            future, held = self._pending.popleft()
            future.result()
            self._bytes -= held

    def __enter__(self) -> _SmallFileWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)


def _write_all(batch: list[Callable[[], None]]) -> None:
    for write in batch:
        write()
