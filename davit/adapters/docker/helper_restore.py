"""volume.restore through a helper container: the snapshot's entries as tar streams unpacked
by the engine into the target volume (`put_archive` on a created helper).

The restore goes in batches of `checkpoint_seconds` (or a few packs' worth of bytes): each
batch is one tar stream of headers and chunks, every chunk read and verified against its
sha256 before its bytes are sent (the files restore's prefetch), so a corrupt chunk stops the
stream before it reaches the volume. When the engine has unpacked a batch, the helper runs
`sync` and only then is the checkpoint recorded; a resumed run starts after the last
recorded entry, rewriting at most one batch. A file the snapshot records as a further link
to an inode becomes a hard link to its first path again. Directory modes and mtimes come
last, as one stream of directory headers (the engine sets a directory's times after
unpacking it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

from davit.adapters.docker.archive import END_OF_ARCHIVE, padding, tar_header, volume_archive_entries
from davit.adapters.docker.engine import EngineError, engine_errors
from davit.adapters.docker.helper import MOUNT_ROOT, open_archive
from davit.adapters.docker.tarread import members
from davit.adapters.files.tree import Skipped
from davit.adapters.prefetch import restore_reads
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import DIR, FILE, SPECIAL, Entry, walk_key
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import PermanentError
from davit.domain.ports import RunContext

RESTORE, METADATA = "restore", "metadata"
SEND_SIZE = 1 << 20  # pieces of the tar stream are joined up to this size per write
# Each batch ends with the helper's `sync` (a container start, about 0.3 s here): batches are
# bounded by `checkpoint_seconds` and by this many packs' worth of bytes.
PACKS_PER_BATCH = 8


def _name(volume: str, entry: Entry) -> str:
    return volume if entry.path == "." else f"{volume}/{entry.path}"


class _Upload:
    """Runs one `put_archive`, keeping an error raised while producing its stream (a corrupt
    chunk, a stop request) so that error, not the broken upload's, is the one raised."""

    def __init__(self, container: Any, what: str) -> None:
        self.container, self.what = container, what
        self.cause: BaseException | None = None

    def send(self, body: Iterator[bytes]) -> None:
        def guarded() -> Iterator[bytes]:
            try:
                yield from body
            except BaseException as exc:
                self.cause = exc
                raise

        try:
            with engine_errors(self.what):
                self.container.put_archive(MOUNT_ROOT, _joined(guarded()))
        except BaseException as exc:
            if self.cause is not None and self.cause is not exc:
                raise self.cause from None
            raise


def _joined(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Headers and paddings are small: send them with their neighbours, not one write each."""
    held: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= SEND_SIZE:  # a whole chunk: sent as it is, not copied
            if held:
                yield b"".join(held)
                held, size = [], 0
            yield piece
            continue
        held.append(piece)
        size += len(piece)
        if size >= SEND_SIZE:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


def flush(container: Any, volume: str) -> None:
    """Make what the engine unpacked durable: the helper's command is `sync`."""
    with engine_errors(f"flushing volume {volume}"):
        container.start()
        status = container.wait(timeout=600)
    if status.get("StatusCode") != 0:
        raise EngineError(f"flushing volume {volume}: the helper's sync exited with {status.get('StatusCode')}")


def restore_entries(
    ctx: RunContext, repo: Repository, tuning: Tuning, container: Any, volume: str, entries: Callable[[], Iterator[Entry]]
) -> dict[str, Any]:
    """The `restore` step: entries after the cursor, in batches, each flushed and recorded."""
    cursor = ctx.cursor(RESTORE) or {}
    last_key = walk_key(cursor["last"]) if cursor.get("last") is not None else None
    progress = {"last": cursor.get("last"), "items": cursor.get("items", 0), "bytes_done": cursor.get("bytes_done", 0)}
    todo = (e for e in entries() if last_key is None or e.key > last_key)
    with (
        repo.locked(exclusive=False),
        ThreadPoolExecutor(tuning.workers, thread_name_prefix="davit-restore") as pool,
        closing(restore_reads(todo, repo, pool, tuning)) as items,
    ):
        finished = False

        def batch() -> Iterator[bytes]:
            nonlocal finished
            started, sent = time.monotonic(), 0
            for entry, chunks in items:
                ctx.check_stop()
                written = 0
                if entry.type == FILE and entry.hardlink_to is not None:
                    for _verified in chunks:  # read and verified all the same: the snapshot is checked whole
                        pass
                    yield tar_header(entry, _name(volume, entry), f"{volume}/{entry.hardlink_to}")
                else:
                    yield tar_header(entry, _name(volume, entry))
                    for data in chunks:  # each chunk verified by the prefetch before it is sent
                        written += len(data)
                        yield data
                    if entry.type == FILE and written != entry.size:
                        raise PermanentError(
                            f"{entry.path}: the snapshot's chunks hold {written} bytes, its tree says {entry.size}"
                        )
                    yield padding(written)
                progress["items"] += 1
                progress["bytes_done"] += written
                progress["last"] = entry.path
                sent += written
                if sent >= PACKS_PER_BATCH * tuning.pack_size or time.monotonic() - started >= tuning.checkpoint_seconds:
                    break
            else:
                finished = True
            yield END_OF_ARCHIVE

        while not finished:
            before = progress["items"]
            _Upload(container, f"restoring into volume {volume}").send(batch())
            if progress["items"] != before:
                flush(container, volume)
                ctx.checkpoint(RESTORE, dict(progress), bytes_done=progress["bytes_done"], items_done=progress["items"])
    return {"items": progress["items"], "bytes": progress["bytes_done"]}


def restore_directories(container: Any, volume: str, entries: Iterator[Entry]) -> dict[str, Any]:
    """The `metadata` step: every directory's mode, owner and mtime, in one stream of headers."""
    count = 0

    def headers() -> Iterator[bytes]:
        nonlocal count
        for entry in entries:
            if entry.type == DIR:
                count += 1
                yield tar_header(entry, _name(volume, entry))
        yield END_OF_ARCHIVE

    _Upload(container, f"setting directory metadata in volume {volume}").send(headers())
    flush(container, volume)
    return {"directories": count}


def volume_holds_data(container: Any, volume: str) -> bool:
    """Whether the mounted volume has anything besides its root (reads two headers at most)."""
    what = f"looking into volume {volume}"
    reader = open_archive(container, f"{MOUNT_ROOT}/{volume}", what)
    try:
        found = members(reader, what)
        return next(found, None) is not None and next(found, None) is not None
    finally:
        reader.close()


def differences(container: Any, links: Callable[[], Any], volume: str, expected: Iterator[Entry]) -> tuple[int, list[str]]:
    """Compare the volume (read back through the helper) with the snapshot's entries, both in
    walk order: the number of entries checked and the problems (missing, wrong type or size).
    Entries the snapshot does not have (an overwritten volume's own) are not problems."""
    found = (item[0] for item in volume_archive_entries(container, volume, [], links) if not isinstance(item, Skipped))
    problems: list[str] = []
    count = 0
    there = next(found, None)
    for entry in expected:
        count += 1
        if entry.type in SPECIAL:
            continue  # the engine's archive does not list FIFOs and devices (what it refused it logged)
        key = walk_key(_name(volume, entry))
        while there is not None and there.key < key:
            there = next(found, None)
        if there is None or there.key != key:
            problems.append(f"{entry.path}: missing")
            continue
        if there.type != entry.type:
            problems.append(f"{entry.path}: a {there.type}, expected a {entry.type}")
        elif entry.type == FILE and there.size != entry.size:
            problems.append(f"{entry.path}: size {there.size}, expected {entry.size}")
    return count, problems
