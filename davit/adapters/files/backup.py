"""files.backup: a directory tree into a snapshot, resumable from its last checkpoint.

Steps: `store` walks the tree in walk order, stores new chunks into a pack and appends tree
lines to a staging file; every checkpoint seals the pack, fsyncs the staging tree and only
then records `CheckpointRecorded` (cursor = the last path done and the staging tree's
length). A resumed run truncates the staging tree to that length and skips every path up to
the cursor; chunks of a pack that was in flight were never recorded and are written again.
`publish` turns the staging tree into a snapshot; `retention` applies the job's policy.

Each file is read through `open_walked`: opened without following a symlink and checked to be
the inode the walk saw; a path that changed in between is left out of the snapshot with a
warning naming it (the next backup takes what is there then), never stored with what it now
leads to.

Reading, hashing and compressing overlap: chunks are hashed and compressed in worker threads
(zstandard and hashlib release the GIL) while this thread reads ahead, cuts the chunks (the
repository's chunking, `chunking.py`; FastCDC releases the GIL too) and writes the pack. A file
read again after a resume is cut at the same places, so what a sealed pack holds is not stored again.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from davit.adapters.files.totals import TreeScan, snapshot_totals
from davit.adapters.files.tree import ChangedSinceWalk, HardLinks, Skipped, WalkedFile, open_walked, read_xattrs, walk
from davit.adapters.prefetch import in_background
from davit.adapters.repository.locks import HeldLock
from davit.adapters.repository.packs import PackWriter
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.adapters.repository.staging import Staging
from davit.adapters.repository.treeformat import FILE, Entry, ParentCursor, TreeStats, read_counts, read_lines, walk_key
from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import PUBLISH, Step, publish_then_retention, run_steps, step_names
from davit.domain.errors import RunStopped, SourceMissing
from davit.domain.jobs import FilesBackupJob
from davit.domain.ports import RunContext

STORE = "store"
MAX_SKIP_WARNINGS = 20
WALK_AHEAD = 256  # entries the walk's thread may be ahead of the store (a few hundred small objects)
WALK_BATCH = 64  # entries handed from the walk's thread at once (a queue hand-off per entry cost more than the entry)


Encoded = tuple[bytes, bytes | memoryview | None, int, int]  # chunk id, stored bytes (None: already stored), codec, plain length

SMALL_BATCH = 8  # small files read by one worker task: a hand-off per small file costs about what its read does
SMALL_BATCH_BYTES = 4 << 20  # ... or fewer, once their sizes add up to this (bounds what one task holds)


# Where a file's content comes from: the file the walk saw (opened and checked when read), or a
# stream positioned at it (a volume read through a helper container's archive), readable until
# the walk takes its next entry.
class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


Content = WalkedFile | Readable


class _Result(Protocol):
    """An encoding under way: a worker's future, or one small file's part of a `_SmallFiles` task."""

    def result(self) -> Encoded | None: ...


@dataclass
class _Pending:
    entry: Entry
    futures: list[_Result] = field(default_factory=list)
    whole: bool = False  # read in one piece by a worker
    changed: str | None = None  # why the entry is left out: its path changed since the walk
    xattrs_problem: str | None = None  # why its extended attributes could not all be read


def _encode(repo: Repository, data: bytes | memoryview) -> Encoded:
    cid, stored, codec = repo.encode(data)
    return cid, stored, codec, len(data)


def _read_whole(repo: Repository, walked: WalkedFile, pending: _Pending, limit: int) -> Encoded | None:
    """A small file (one chunk however it is cut), read to its end and encoded as one chunk;
    None if it is empty. A file that grew since its stat becomes one larger chunk, up to `limit`
    (the chunking's largest chunk); one that grew past it (another user's `truncate -s 1T` after
    the walk saw it small) is not read into memory: it is left out like a file that changed since
    the walk (`ChangedSinceWalk`), and the next backup takes it in chunks.
    Its extended attributes are read from the same descriptor into `pending` (seen by the
    storing thread once this returns). Raises `ChangedSinceWalk` if the path no longer leads
    to the file the walk saw."""
    fd = open_walked(walked)
    try:
        pending.entry.xattrs, pending.xattrs_problem = read_xattrs(fd)
        data = _read_to_end(fd, limit + 1, pending.entry.size + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ChangedSinceWalk(f"grew past {limit} bytes since it was walked at {pending.entry.size}; not stored")
    return _encode(repo, data) if data else None


def _read_to_end(fd: int, cap: int, first: int) -> bytes:
    """What `fd` holds from its offset to its end, up to `cap` bytes: read with the raw
    descriptor (a buffered file object costs three more system calls per small file: fstat,
    ioctl, lseek, each a GIL hand-off among the store's threads), `first` bytes asked for first
    (the size the walk saw, plus one: a file that did not change is read in one call, and a
    second that returns nothing confirms its end), then the rest in growing pieces, so a read
    that only confirms the end never allocates `cap` bytes."""
    pieces: list[bytes] = []
    got = 0
    want = min(first, cap)
    while got < cap:
        piece = os.read(fd, want)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
        want = min(cap - got, max(got, 1 << 16))
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _read_all_whole(repo: Repository, files: list[tuple[WalkedFile, _Pending]], limit: int) -> list[Encoded | Exception | None]:
    """`_read_whole` of each of `files`, or the exception it raised, in order: a file that fails
    (changed since the walk, unreadable) fails only its own entry, where the writer reaches it."""
    out: list[Encoded | Exception | None] = []
    for walked, pending in files:
        try:
            out.append(_read_whole(repo, walked, pending, limit))
        except Exception as exc:  # handed to the writer in the file's place
            out.append(exc)
    return out


class _SmallFiles:
    """Consecutive small files read, hashed and compressed by one worker task (`_read_all_whole`),
    sent when full, when a large file's read begins, or when the writer first needs one of them:
    each file's `_Part` sends the task if it was not sent yet, so the writer never waits on a task
    that was not sent."""

    def __init__(self, pool: ThreadPoolExecutor, repo: Repository, limit: int) -> None:
        self.pool, self.repo, self.limit = pool, repo, limit
        self.files: list[tuple[WalkedFile, _Pending]] = []
        self.size = 0
        self.future: Future[list[Encoded | Exception | None]] | None = None

    def add(self, walked: WalkedFile, pending: _Pending) -> None:
        pending.futures.append(_Part(self, len(self.files), weight=0 if self.files else 1))
        self.files.append((walked, pending))
        self.size += pending.entry.size

    def full(self) -> bool:
        return len(self.files) >= SMALL_BATCH or self.size >= SMALL_BATCH_BYTES

    def send(self) -> Future[list[Encoded | Exception | None]]:
        if self.future is None:
            self.future = self.pool.submit(_read_all_whole, self.repo, self.files, self.limit)
        return self.future


class _Part:
    """One small file's result within a `_SmallFiles` task: what `_Result` asks. The task takes
    one of the store's in-flight slots (`Tuning.inflight_chunks`), carried by its first file's
    part (`weight` 1, the others 0): it holds about `SMALL_BATCH_BYTES` (plus the last file
    added, itself under the smallest large chunk), what one large chunk may (the chunking's
    largest is 4 MiB), so the memory in flight stays bounded as before, while
    a slot per file let only two tasks be read ahead of the writer, and the workers waited on
    the storing thread's walk."""

    __slots__ = ("_batch", "_index", "weight")

    def __init__(self, batch: _SmallFiles, index: int, weight: int) -> None:
        self._batch, self._index, self.weight = batch, index, weight

    def result(self) -> Encoded | None:
        got = self._batch.send().result()[self._index]
        if isinstance(got, Exception):
            raise got
        return got


@dataclass
class _StoredHere:
    """A staged tree this process wrote whole, in one `store` step, under `lock`: every chunk a
    line of it names was found in the repository's index or sealed into a pack under that lock
    (see `FilesBackupWork._publish`); `stats` counts its lines as they were written."""

    lock: HeldLock
    stats: TreeStats


@dataclass
class _Progress:
    bytes_done: int = 0
    bytes_stored: int = 0
    items_done: int = 0
    last_path: str | None = None


class FilesBackupWork(RunWork[FilesBackupJob]):
    # Without a parent snapshot, a scan beside the store tells the step's total (`totals.py`;
    # a volume backup says how in `_first_total`).
    SCANS_FOR_TOTAL = True
    # Its walk yields files it opens itself, so it may run ahead in a thread (`_walk_ahead`); a
    # walk yielding a stream positioned at each entry (a volume read through an archive) may not.
    WALKS_AHEAD = True

    def __init__(self, inputs: RunInputs[FilesBackupJob]) -> None:
        super().__init__(inputs)
        self.source = Path(self.spec.source.path)
        # Looked up once per run (a listing of `snapshots/`): prepare, store and publish agree on
        # the parent. It only saves reading unchanged files: `store` still asks `has` under the lock.
        self._parent_found: list[SnapshotInfo | None] = []
        self._published: SnapshotInfo | None = None  # by this process, in this run
        self._stored_here: _StoredHere | None = None  # the staged tree, if this process wrote it whole

    def steps(self) -> list[Step]:
        return [Step(STORE, self._store), *publish_then_retention(self, self._publish)]

    def plan(self) -> list[str]:
        return step_names(self.steps())

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        if not self.source.is_dir():
            raise SourceMissing(str(self.source), "not a directory" if self.source.exists() else "does not exist")
        parent = self._parent()
        return {"source": str(self.source), "snapshot_id": self.run_id, "parent": parent.id if parent else None}

    def run(self, ctx: RunContext) -> None:
        steps = self.steps()
        through_publish = step_names(steps).index(PUBLISH) + 1
        with self.held_through_publish(ctx):
            run_steps(ctx, steps[:through_publish])
        run_steps(ctx, steps[through_publish:])

    @contextmanager
    def held_through_publish(self, ctx: RunContext) -> Iterator[None]:
        """One shared lock for `store` and `publish` (each takes it again, re-entrantly): taking
        it lists `index/` once, and the publish's check of the tree's chunks is answered by that
        listing (`Repository.missing_chunks`) rather than by another after taking a new lock.
        Not for `retention`, which takes the exclusive lock."""
        if ctx.step_done(PUBLISH):
            yield
            return
        with self.repo.locked(exclusive=False):
            yield

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        """Verify the published snapshot: its tree is intact and every chunk it names exists."""
        info = self._published or self.repo.resolve(self.run_id)
        if self._published is not None:
            # Published by this process in this run: every chunk was checked under the lock
            # still held when the manifest was created (by `_publish` against the index, or, for
            # a tree the store step wrote whole under that lock, as each line named it: see
            # `_stats_of_a_tree_checked_under`), and no prune deletes a chunk a published snapshot
            # names. Listing `index/` again would prove it again. The stored tree is still
            # fetched, checked against the manifest's sha256 and decompressed to its end, so a
            # tree that is not intact fails; its lines are not parsed again: they are the bytes
            # this process staged (each written by `Entry.to_line`, or parsed by `_publish` on a
            # resume) and compressed into it (the sha256 vouches they are the ones stored).
            # Parsing them was most of this step (0.07 s of CPU for 11k files).
            with self.repo.open_tree(info) as lines:
                while lines.read(1 << 20):
                    pass
            return {"snapshot_id": self.run_id, **info.stats}
        entries = read_lines(self.repo.open_tree(info))
        # Against the repository as it is now, not this object's index: another process may
        # have pruned since (see Repository.missing_chunks).
        missing = self.repo.missing_chunks(bytes.fromhex(c) for e in entries for c in e.chunks)
        if missing:
            raise SourceMissing(info.where, f"{len(missing)} chunks it names are missing from the repository")
        return {"snapshot_id": self.run_id, **info.stats}

    # --- store ---------------------------------------------------------------------------------

    def _store(self, ctx: RunContext) -> dict[str, Any]:
        cursor = ctx.cursor(STORE) or {}
        progress = _Progress(
            cursor.get("bytes_done", 0), cursor.get("bytes_stored", 0), cursor.get("items", 0), cursor.get("last")
        )
        last_key = walk_key(progress.last_path) if progress.last_path is not None else None
        skipped: list[Skipped] = []
        staging = self.repo.staging(self.run_id)
        self._stored_here = None
        resumed_at = cursor.get("tree_bytes", 0)
        with (
            self._totals(ctx),
            self.repo.locked(exclusive=False) as lock,
            staging.reopen_tree(resumed_at) as tree,
            ThreadPoolExecutor(self.tuning.workers, thread_name_prefix="davit-chunk") as pool,
        ):
            tree.seek(0)
            links = HardLinks()
            links.replay(tree)
            tree.seek(0, os.SEEK_END)
            store = _Store(self, ctx, tree, pool, progress, links, staging)
            items = self._walk_ahead()
            try:
                self._store_items(ctx, store, items, last_key, skipped, links)
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()  # the walk's thread and directory descriptors, now rather than when collected
            if resumed_at == 0:  # lines staged before a resume were checked under another lock
                self._stored_here = _StoredHere(lock, store.stats)
        if len(skipped) > MAX_SKIP_WARNINGS:
            ctx.warn(f"skipped {len(skipped)} entries in all", STORE)
        return {
            "items": progress.items_done,
            "bytes": progress.bytes_done,
            "bytes_stored": progress.bytes_stored,
            "skipped": len(skipped),
        }

    def _store_items(
        self,
        ctx: RunContext,
        store: _Store,
        items: Iterator[tuple[Entry, Content | None] | Skipped],
        last_key: tuple[str, ...] | None,
        skipped: list[Skipped],
        links: HardLinks,
    ) -> None:
        for item in items:
            if isinstance(item, Skipped):
                skipped.append(item)
                if len(skipped) <= MAX_SKIP_WARNINGS:
                    ctx.warn(f"skipped {item.path}: {item.reason}", STORE)
                continue
            entry, abspath = item
            if last_key is not None and entry.key <= last_key:
                continue
            links.note(entry)
            try:
                store.add(entry, abspath)
            except RunStopped:
                store.record_sealed(wait=True)
                raise
        store.checkpoint(wait=True)
        store.sealer.shutdown()

    def _totals(self, ctx: RunContext) -> AbstractContextManager[object]:
        """Tell the store step's total: the parent snapshot's, or a scan's (see `totals.py`)."""
        parent = self._parent()
        known = snapshot_totals(parent.stats) if parent is not None else None
        if known is not None:
            ctx.step_total(STORE, bytes_total=known[0], items_total=known[1])
        if known is not None or not self.SCANS_FOR_TOTAL:
            return nullcontext()
        return self._first_total(ctx)

    def _first_total(self, ctx: RunContext) -> AbstractContextManager[object]:
        """What tells a first backup's total, beside the store: a scan of the source."""
        # its own walk of the source, not `_walk`: what the store walks (and a subclass adds to
        # it) is the store's alone; a scan only counts entries
        return TreeScan(ctx, STORE, lambda: walk(self.source, list(self.spec.source.exclude)))

    def _walk(self) -> Iterator[tuple[Entry, Content | None] | Skipped]:
        """The entries to store, in walk order (a volume backup walks several roots or a stream)."""
        return walk(self.source, list(self.spec.source.exclude))

    def _walk_ahead(self) -> Iterator[tuple[Entry, Content | None] | Skipped]:
        """`_walk`, drawn by a thread of its own up to `WALK_AHEAD` entries ahead of the store
        (`WALKS_AHEAD`): its directory listings and lstat calls (a fifth of the storing thread's
        CPU in issue 18's profile of a first backup) overlap the reading and cutting, so the
        storing thread, the one serial stage of the pipeline, does less. An entry is still opened
        and checked against what the walk saw when it is read (`open_walked`), so walking a
        little earlier changes nothing a concurrent change could do anyway."""
        if not self.WALKS_AHEAD:
            return self._walk()
        return in_background(self._walk(), WALK_AHEAD, "davit-walk", batch=WALK_BATCH)

    def _parent(self, again: bool = False) -> SnapshotInfo | None:
        if again:
            self._parent_found.clear()
        if not self._parent_found:
            earlier = [s for s in self.repo.snapshots(self.spec.name) if s.id != self.run_id]
            self._parent_found.append(earlier[-1] if earlier else None)
        return self._parent_found[0]

    # --- publish -------------------------------------------------------------------------------

    SNAPSHOT_KIND = "files"

    def _snapshot_source(self) -> dict[str, Any]:
        """What the manifest says was backed up."""
        return {"path": str(self.source), "exclude": list(self.spec.source.exclude)}

    def _parent_id(self) -> str | None:
        parent = self._parent()
        return parent.id if parent else None

    def _publish(self, ctx: RunContext) -> dict[str, Any]:
        if self.repo.snapshot_exists(self.run_id):
            return {"snapshot_id": self.run_id, "already_published": True}
        tree_path = self.repo.staging(self.run_id).tree
        with self.repo.locked(exclusive=False) as lock:  # held through the publish below (re-entrant)
            stats = self._stats_of_a_tree_checked_under(lock)
            if stats is None:
                # Resumed (lines staged before it were checked under another lock), or published
                # under another lock than the store's: the repository as it is now, which a prune
                # may have changed since (Repository.publish_snapshot).
                stats = self._counted_and_checked(tree_path)
            return self._publish_checked(ctx, tree_path, stats)

    def _stats_of_a_tree_checked_under(self, lock: HeldLock) -> dict[str, int] | None:
        """The staged tree's stats, if this process's store step wrote it whole under `lock`
        (else None): then its chunks need no check and the tree is not read back.

        Each of its lines named a chunk only once the index loaded when `lock` was taken said it
        was there (`has`, or `encode` finding it) or once this object had sealed the pack holding
        it (the step seals its last pack before it returns; a failed seal fails the step). A
        prune needs the exclusive lock, so none has run since, unless `lock` was lost (taken
        over by a host that judged it stale): `Repository._publish` proves it was not (refresh,
        then `ensure_held`) before the manifest is created, and a lost lock fails the publish,
        whose retry takes a new lock and so reads the tree back and checks it. Checking every
        line against the in-memory index again could only answer "none missing"; reading the
        tree back was ~90% of a publish (0.2-0.45 s for 800 MiB). The stats were counted from
        the very entries the lines were written from (`TreeStats.count`)."""
        here = self._stored_here
        if here is None or here.lock is not lock:
            return None
        return here.stats.to_json()

    def _counted_and_checked(self, tree_path: Path) -> dict[str, int]:
        """The staged tree's stats, read back; `SourceMissing` if it names a chunk the
        repository lacks (under the lock the caller holds: `Repository.missing_chunks`)."""
        stats = TreeStats()

        def chunks_counted(lines: BinaryIO) -> Iterator[bytes]:
            for kind, size, chunks in read_counts(lines):
                stats.count_line(kind, size, len(chunks))
                for chunk in chunks:
                    yield bytes.fromhex(chunk)

        with open(tree_path, "rb") as fh:
            self.repo.refuse_missing(self.run_id, self.repo.missing_chunks(chunks_counted(fh)))
        return stats.to_json()

    def _publish_checked(self, ctx: RunContext, tree_path: Path, stats: dict[str, int]) -> dict[str, Any]:
        store = ctx.cursor(STORE) or {}
        manifest = {
            "id": self.run_id,
            "job": self.spec.name,
            "kind": self.SNAPSHOT_KIND,
            "run_id": self.run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": self._snapshot_source(),
            "parent": self._parent_id(),
            "stats": {**stats, "bytes_stored": store.get("bytes_stored", 0)},
        }
        with open(tree_path, "rb") as fh:
            self._published = self.repo.publish_snapshot_from(manifest, fh)  # a block at a time: any number of files
        self.repo.staging(self.run_id).remove()
        return {"snapshot_id": self.run_id, **stats}


class _Store:
    """The pipeline of one `store` step: read ahead, hash and compress in threads, write packs."""

    def __init__(
        self,
        work: FilesBackupWork,
        ctx: RunContext,
        tree: BinaryIO,
        pool: ThreadPoolExecutor,
        progress: _Progress,
        links: HardLinks,
        staging: Staging,
    ) -> None:
        self.work, self.repo, self.ctx, self.tree, self.pool = work, work.repo, ctx, tree, pool
        self.staging = staging
        self.links = links
        self.tuning = work.tuning
        self.progress = progress
        self.pending: deque[_Pending] = deque()
        self.inflight = 0
        self.pack: PackWriter | None = None
        self.last_checkpoint = time.monotonic()
        self.parent = ParentCursor(self._parent_entries())
        # Cut as the repository says (content-defined), or in fixed pieces in one made before it
        # said; a file whose parent entry is unchanged keeps its chunks however they were cut.
        self.chunker = self.repo.chunker(self.tuning.chunk_size)
        self.sealer = ThreadPoolExecutor(1, thread_name_prefix="davit-seal")
        self.sealing: Future[None] | None = None
        # The pack that seal is sealing: its chunks are not in the index until the seal is done,
        # and one met again meanwhile (small files of the same content) was stored a second time.
        self.sealing_pack: PackWriter | None = None
        self.zeros: Future[Encoded | None] | None = None  # the encoding of `chunker.zero_chunk`, once per run
        self.small: _SmallFiles | None = None  # small files not sent to a worker yet
        self.stats = TreeStats()  # of the lines this step wrote

    def _parent_entries(self) -> Any:
        parent = self.work._parent()
        if parent is not None and not self.repo.snapshot_exists(parent.id):
            # forgotten by a prune since `prepare` looked (one HEAD, no listing): under the store's
            # lock, the parent picked now stays until the run publishes
            parent = self.work._parent(again=True)
        if parent is None:
            return iter(())
        return read_lines(self.repo.open_tree(parent))

    def add(self, entry: Entry, abspath: Content | None) -> None:
        pending = _Pending(entry)
        self.pending.append(pending)
        if entry.type == FILE and not isinstance(abspath, WalkedFile) and abspath is not None:
            # A stream's entries have whole-second mtimes and no inode or ctime, too little
            # for the files cache: its content is read and hashed (known chunks are not stored).
            self._read(pending, abspath)
        elif entry.type == FILE and abspath is not None:
            previous = self.parent.find(entry.key)
            if (
                previous is not None
                and entry.unchanged_since(previous)
                and all(self.repo.has(bytes.fromhex(c)) for c in previous.chunks)
            ):
                # unchanged: same ctime, so the same extended attributes too (setting one moves it)
                entry.chunks, entry.xattrs = list(previous.chunks), previous.xattrs
            else:
                self._read(pending, abspath)
        self._drain(self.tuning.inflight_chunks)
        self.record_sealed(wait=False)
        if self._checkpoint_due():
            self.checkpoint()

    def _read(self, pending: _Pending, abspath: Content) -> None:
        if isinstance(abspath, WalkedFile) and pending.entry.size <= self.chunker.chunking.one_chunk_up_to:
            # A small file is one chunk: a worker opens, reads, hashes and compresses it, so
            # the per-file system calls of many small files overlap; several per task.
            if self.small is None or self.small.future is not None:  # none open, or sent by the writer's wait
                self.small = _SmallFiles(self.pool, self.repo, self.chunker.chunking.max_chunk)
                self.inflight += 1  # one slot per task (see `_Part`)
            self.small.add(abspath, pending)
            pending.whole = True
            if self.small.full():
                self._send_small()
            return
        self._send_small()  # the small files before this one are read while it is
        if isinstance(abspath, WalkedFile):
            try:
                source: Readable = open(open_walked(abspath), "rb", buffering=0)  # noqa: SIM115 - closed below
                pending.entry.xattrs, pending.xattrs_problem = read_xattrs(source.fileno())  # type: ignore[attr-defined]
            except ChangedSinceWalk as exc:
                pending.changed = str(exc)
                return
            except OSError as exc:
                self.ctx.warn(f"could not read {pending.entry.path}: {exc.strerror}; stored 0 bytes", STORE)
                pending.entry.size = 0
                return
            closing: Any = source
        else:
            source, closing = abspath, nullcontext()  # the stream belongs to the walk
        size = 0
        try:
            with closing:
                for data in self.chunker.cut(source):
                    self.ctx.check_stop()
                    size += len(data)
                    pending.futures.append(self._encoding(data))
                    self.inflight += 1
                    if self.inflight > self.tuning.inflight_chunks:
                        self._drain(self.tuning.inflight_chunks - 1, keep=pending)
        except OSError as exc:
            self.ctx.warn(f"could not read {pending.entry.path} fully: {exc.strerror}; stored {size} bytes", STORE)
        pending.entry.size = size

    def _send_small(self) -> None:
        if self.small is not None:
            self.small.send()
            self.small = None

    def _encoding(self, data: bytes | memoryview) -> Future[Encoded | None]:
        """`data` named and compressed by a worker; a whole window of zeros (the chunker's one
        `zero_chunk` object: its id is the hash of its content, the same for every such chunk)
        only the first time, its result shared by every later one."""
        if data is not self.chunker.zero_chunk:
            return self.pool.submit(_encode, self.repo, data)
        if self.zeros is None:
            self.zeros = self.pool.submit(_encode, self.repo, data)
        return self.zeros

    def _drain(self, limit: int, keep: _Pending | None = None) -> None:
        """Write finished entries in order until at most `limit` chunks are in flight."""
        while self.pending and (self.inflight > limit or not self.pending[0].futures):
            head = self.pending[0]
            if head is keep:
                # The file being read is at the head: write its finished chunks, keep its entry.
                self._write_chunks(head, until=len(head.futures) - max(limit, 0))
                return
            self.pending.popleft()
            self._write_chunks(head, until=len(head.futures))
            self.progress.last_path = head.entry.path
            if head.changed is not None:
                self._leave_out(head)
                continue
            if head.xattrs_problem is not None:
                self.ctx.warn(f"skipped {head.entry.path}: {head.xattrs_problem}", STORE)
            self.tree.write(head.entry.to_line())
            self.stats.count(head.entry)
            self.progress.items_done += 1
            self.progress.bytes_done += head.entry.size

    def _leave_out(self, pending: _Pending) -> None:
        """An entry whose path changed since the walk is not stored (its chunks, if any were
        written, are unreferenced and go at the next prune). Later paths to the same inode that
        named it as their first link name the next of them instead."""
        entry = pending.entry
        self.ctx.warn(f"skipped {entry.path}: {pending.changed}", STORE)
        successor: str | None = None
        if entry.hardlink_to is None:
            for later in self.pending:
                if later.entry.hardlink_to == entry.path:
                    later.entry.hardlink_to = successor
                    successor = successor or later.entry.path
        self.links.not_stored(entry, successor)

    def _write_chunks(self, pending: _Pending, until: int) -> None:
        for _ in range(max(until, 0)):
            future = pending.futures.pop(0)
            self.inflight -= future.weight if isinstance(future, _Part) else 1
            try:
                encoded = future.result()
            except ChangedSinceWalk as exc:  # only a small file's whole read can fail here
                pending.changed = str(exc)
                continue
            except OSError as exc:
                self.ctx.warn(f"could not read {pending.entry.path}: {exc.strerror}; stored 0 bytes", STORE)
                pending.entry.size = 0
                continue
            if encoded is None:  # the small file turned out empty
                pending.entry.size = 0
                continue
            cid, stored, codec, plain_len = encoded
            if pending.whole:
                pending.entry.size = plain_len  # what was read, should the file have changed since its stat
            pending.entry.chunks.append(cid.hex())
            if stored is None or self.repo.has(cid):
                continue
            if self.sealing_pack is not None and cid in self.sealing_pack:
                # in the pack being sealed: in the index once the seal is done, which comes before
                # any later checkpoint records (one seal in flight at most), this line's included
                continue
            if self.pack is None:
                self.pack = self.repo.new_pack()
            if cid in self.pack:
                continue
            self.pack.add(cid, stored, plain_len, codec)
            self.progress.bytes_stored += len(stored)
            if self._pack_full():
                # Inside a large file: seal and record the chunks, the cursor stays put.
                self.checkpoint(drain=False)

    def _pack_full(self) -> bool:
        return self.pack is not None and (
            self.pack.size >= self.tuning.pack_size or len(self.pack) >= self.tuning.pack_max_chunks
        )

    def _checkpoint_due(self) -> bool:
        return self._pack_full() or time.monotonic() - self.last_checkpoint >= self.tuning.checkpoint_seconds

    def checkpoint(self, drain: bool = True, wait: bool = False) -> None:
        """Seal the pack and make the staging tree durable in the background, then record
        where to continue once that is done. At most one seal is in flight."""
        if drain:
            self._drain(-1)
        self.record_sealed(wait=True)
        pack, self.pack = self.pack, None
        self.sealing_pack = pack
        self.tree.flush()
        cursor: dict[str, Any] = {
            "tree_bytes": self.tree.tell(),
            "last": self.progress.last_path,
            "items": self.progress.items_done,
            "bytes_done": self.progress.bytes_done,
            "bytes_stored": self.progress.bytes_stored,
        }
        tree_fd = self.tree.fileno()

        def seal_and_record() -> None:
            written: list[bytes] = []
            if pack is not None:
                if len(pack):
                    written = self.repo.seal_pack(pack)
                else:
                    pack.abort()
            os.fsync(tree_fd)
            # what the checkpoint names is visible to the prune of every host before it is recorded
            self.staging.sync(cursor["tree_bytes"])
            # Recorded from this thread, so the store goes on reading while the event is made durable.
            self.ctx.checkpoint(
                STORE,
                cursor,
                chunks_written=[c.hex() for c in written],
                bytes_done=cursor["bytes_done"],
                bytes_stored=cursor["bytes_stored"],
                items_done=cursor["items"],
            )

        self.sealing = self.sealer.submit(seal_and_record)
        self.last_checkpoint = time.monotonic()
        if wait:
            self.record_sealed(wait=True)
        try:
            self.ctx.check_stop()
        except RunStopped:
            self.record_sealed(wait=True)
            raise

    def record_sealed(self, wait: bool) -> None:
        """Settle the seal in flight (its checkpoint is recorded once its data is durable):
        raise what it raised; with `wait`, block until it is done."""
        if self.sealing is None:
            return
        if not wait and not self.sealing.done():
            return
        future, self.sealing = self.sealing, None
        future.result()
        self.sealing_pack = None  # sealed: its chunks are in the index now
