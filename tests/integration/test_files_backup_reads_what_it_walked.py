"""A backup stores what its walk saw, or leaves it out: never the content of another file.

A user who can write inside a backed-up tree may swap a file (or a directory above it) for a
symlink between the walk's `lstat` and the read. davitd runs as root, so following that link
would store a root-only file under the user's own name. These tests make the swap happen at a
precise moment, without sleeping: the walk is wrapped, and the swap is done after the walk hands
an entry over and before the store reads it (or, for a directory, right before it is opened to
be listed). Also: a source `path` that is itself a symlink (followed at the root) restores.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.docker.backup import walk_volumes
from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.files.tree import Skipped
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import DIR, FILE, LINK, Entry, read_lines
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import FilesBackupJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, backup, make_tree, restore, snapshot_of

SECRET = b"root-only: the shadow file's content\n" * 3000  # 111 kB: larger than SMALL's chunk size
SECRET_SMALL = b"root-only, small\n"


class SwappingBackup(FilesBackupWork):
    """A files backup whose walk calls `swap(entry)` after yielding each entry to the store and
    before the store reads it: the store only sees an item once the generator has produced it."""

    swap: Callable[[Entry], None] = staticmethod(lambda entry: None)

    def _walk(self) -> Iterator[Any]:
        for item in super()._walk():
            if not isinstance(item, Skipped):
                type(self).swap(item[0])
            yield item


def run_backup(work_class: type[FilesBackupWork], repo: Repository, source: Path) -> MemoryRunContext:
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    work = work_class(RunInputs(spec, "b1", SMALL, repo=repo))
    ctx = MemoryRunContext(run_id="b1")
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def stored(repo: Repository) -> dict[str, tuple[Entry, bytes]]:
    """Every entry of the latest snapshot, with the content its chunks hold."""
    entries = read_lines(repo.open_tree(repo.resolve("latest")))
    return {e.path: (e, b"".join(repo.read_chunk(bytes.fromhex(c)) for c in e.chunks)) for e in entries}


@pytest.fixture(autouse=True)
def no_scan_for_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """These swaps are timed on the store's own walk; a first backup's progress scan walks the
    same tree in another thread (it stores nothing) and would meet the hooks first."""
    monkeypatch.setattr(FilesBackupWork, "SCANS_FOR_TOTAL", False)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """Root-only files outside the source: what an attacker would like to read."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    for name, content in (("big", SECRET), ("small", SECRET_SMALL)):
        (outside / name).write_bytes(content)
        os.chmod(outside / name, 0o600)
    return outside


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "home-of-a-user"
    (root / "sub").mkdir(parents=True)
    (root / "big-mine.bin").write_bytes(b"mine, large\n" * 20000)  # read in the store's own thread
    (root / "small-mine.txt").write_bytes(b"mine, small\n")  # read whole by a worker thread
    (root / "sub" / "big").write_bytes(b"mine too, large\n" * 20000)
    (root / "sub" / "small").write_bytes(b"mine too, small\n")
    (root / "zz-after.txt").write_bytes(b"after the swaps\n")
    return root


def test_a_file_swapped_for_a_symlink_after_the_walk_is_not_stored_with_the_link_targets_content(
    source: Path, secrets: Path, tmp_path: Path
) -> None:
    def swap(entry: Entry) -> None:
        target = {"big-mine.bin": secrets / "big", "small-mine.txt": secrets / "small"}.get(entry.path)
        if target is not None:
            (source / entry.path).unlink()
            (source / entry.path).symlink_to(target)

    SwappingBackup.swap = staticmethod(swap)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    ctx = run_backup(SwappingBackup, repo, source)
    contents = [content for _entry, content in stored(repo).values()]
    assert SECRET not in contents and SECRET_SMALL not in contents
    assert not repo.has(repo.chunk_id(SECRET[: SMALL.chunk_size])) and not repo.has(repo.chunk_id(SECRET_SMALL))
    # Left out with a warning naming each; the rest of the tree is whole.
    assert "big-mine.bin" not in stored(repo) and "small-mine.txt" not in stored(repo)
    assert any("big-mine.bin" in w and "changed since it was walked" in w for w in ctx.warnings)
    assert any("small-mine.txt" in w and "changed since it was walked" in w for w in ctx.warnings)
    assert stored(repo)["zz-after.txt"][1] == b"after the swaps\n"


def test_a_directory_above_a_walked_file_swapped_for_a_symlink_does_not_lead_the_read_outside(
    source: Path, secrets: Path, tmp_path: Path
) -> None:
    """The file is opened by its full path: the check of the opened inode against the walk's
    lstat is what refuses a path whose intermediate directory now leads elsewhere."""

    def swap(entry: Entry) -> None:
        if entry.path == "sub/big":  # both children of sub are walked: swap sub before either is read
            (source / "sub").rename(tmp_path / "sub-moved-away")
            (source / "sub").symlink_to(secrets)

    SwappingBackup.swap = staticmethod(swap)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    ctx = run_backup(SwappingBackup, repo, source)
    contents = [content for _entry, content in stored(repo).values()]
    assert SECRET not in contents and SECRET_SMALL not in contents
    assert "sub/big" not in stored(repo) and "sub/small" not in stored(repo)
    assert any("sub/big" in w for w in ctx.warnings) and any("sub/small" in w for w in ctx.warnings)


def test_a_directory_swapped_for_a_symlink_before_it_is_listed_is_not_followed(
    source: Path, secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap is made right before the walk opens (or, by path, lists) `sub`, after its lstat."""
    real_open, real_scandir = os.open, os.scandir
    swapped: list[bool] = []

    def swap_once() -> None:
        if not swapped:
            swapped.append(True)
            (source / "sub").rename(tmp_path / "sub-moved-away")
            (source / "sub").symlink_to(secrets)

    def hooked_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if os.fsdecode(path) == "sub" and dir_fd is not None:
            swap_once()
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def hooked_scandir(path: Any = ".") -> Any:
        if not isinstance(path, int) and os.fsdecode(path) == str(source / "sub"):
            swap_once()
        return real_scandir(path)

    monkeypatch.setattr(os, "open", hooked_open)
    monkeypatch.setattr(os, "scandir", hooked_scandir)
    repo = Repository.open(tmp_path / "repo")
    ctx = run_backup(FilesBackupWork, repo, source)
    monkeypatch.undo()
    assert swapped, "the hook never ran: the walk no longer opens or lists sub"
    entries = stored(repo)
    assert not [p for p in entries if p.startswith("sub/")]  # nothing of the link's target was listed
    assert SECRET not in [content for _entry, content in entries.values()]
    assert "sub" not in entries or entries["sub"][0].type != DIR
    assert any("sub" in w and "changed since it was walked" in w for w in ctx.warnings)


def test_a_volume_root_lists_a_planted_link_as_a_link_and_never_follows_it(secrets: Path, tmp_path: Path) -> None:
    """The volume backup through mountpoints walks each volume like a files source."""
    volume = tmp_path / "volumes" / "data" / "_data"
    volume.mkdir(parents=True)
    (volume / "app.db").write_bytes(b"app data")
    (volume / "etc").symlink_to(secrets)  # planted by the container
    items = list(walk_volumes([("data", volume)], []))
    entries = {item[0].path: item[0] for item in items if not isinstance(item, Skipped)}
    assert sorted(entries) == [".", "data", "data/app.db", "data/etc"]
    assert entries["data/etc"].type == LINK and entries["data/etc"].target == str(secrets)
    assert entries["data"].type == DIR and entries["data/app.db"].type == FILE


def test_a_source_path_that_is_a_symlink_to_a_directory_is_followed_and_its_snapshot_restores(tmp_path: Path) -> None:
    real = tmp_path / "real-source"
    real.mkdir()
    make_tree(real)
    os.unlink(real / "a-socket")  # reported and skipped: not part of what must round-trip
    link = tmp_path / "source-link"
    link.symlink_to(real)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, link, "b1")
    root, real_st = stored(repo)["."][0], real.stat()
    assert (root.type, root.mode, root.mtime_ns) == (DIR, real_st.st_mode & 0o7777, real_st.st_mtime_ns)
    restore(repo, tmp_path / "out")
    expected = {k: v for k, v in snapshot_of(real).items() if not k.endswith(".tmp")}
    assert snapshot_of(tmp_path / "out") == expected
    shutil.rmtree(tmp_path / "out")


def test_when_the_first_name_of_a_hard_linked_file_is_left_out_the_next_name_becomes_the_first(
    secrets: Path, tmp_path: Path
) -> None:
    source = tmp_path / "maildir"
    source.mkdir()
    (source / "a").write_bytes(b"one message, three names\n")
    os.link(source / "a", source / "b")
    os.link(source / "a", source / "c")

    def swap(entry: Entry) -> None:
        if entry.path == "a":
            (source / "a").unlink()
            (source / "a").symlink_to(secrets / "small")

    SwappingBackup.swap = staticmethod(swap)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    run_backup(SwappingBackup, repo, source)
    entries = stored(repo)
    assert "a" not in entries
    b, content = entries["b"]
    assert b.hardlink_to is None and content == b"one message, three names\n"
    assert entries["c"][0].hardlink_to == "b"
    restore(repo, tmp_path / "out")
    assert os.stat(tmp_path / "out" / "b").st_ino == os.stat(tmp_path / "out" / "c").st_ino


@pytest.mark.parametrize("where", ["the file itself", "a directory above it"])
def test_a_file_swapped_for_a_fifo_or_device_after_the_walk_is_never_opened(where: str, source: Path, tmp_path: Path) -> None:
    """Opening a device node has effects of its own (`/dev/watchdog` arms the watchdog, a tape
    rewinds, a FIFO's blocked writer is released), and a container can `mknod` in its volume
    after the walk saw a regular file there, or a user can swap a directory above the file for
    a symlink to `/dev`. The reader must check the inode before it opens it for reading: the
    witness is a writer blocked in `open(O_WRONLY)` on a FIFO, released only if the backup
    opens the FIFO."""
    fifo_dir = tmp_path / "fifos"
    fifo_dir.mkdir()
    fifo = fifo_dir / "small"
    os.mkfifo(fifo)
    released = threading.Event()

    def blocked_writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # returns only when someone opens the FIFO for reading
        released.set()
        os.close(fd)

    def swap(entry: Entry) -> None:
        if where == "the file itself" and entry.path == "small-mine.txt":
            (source / "small-mine.txt").unlink()
            os.link(fifo, source / "small-mine.txt")  # the same FIFO inode, now inside the source
        elif where == "a directory above it" and entry.path == "sub/small":
            (source / "sub").rename(tmp_path / "sub-moved-away")
            (source / "sub").symlink_to(fifo_dir)

    writer = threading.Thread(target=blocked_writer, daemon=True)
    writer.start()
    SwappingBackup.swap = staticmethod(swap)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    try:
        ctx = run_backup(SwappingBackup, repo, source)
        # a writer the backup released may not have recorded it yet: give its thread a moment
        opened_by_the_backup = released.wait(timeout=1.0)
    finally:
        if not released.is_set():  # let the writer go: open the FIFO ourselves
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=10)
    assert not opened_by_the_backup, "the backup opened a FIFO swapped in after its walk"
    changed = "small-mine.txt" if where == "the file itself" else "sub/small"
    assert changed not in stored(repo)
    assert any(changed in w and "changed since it was walked" in w for w in ctx.warnings)
