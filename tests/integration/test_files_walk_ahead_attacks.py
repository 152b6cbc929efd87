"""Issue 18's walk in a thread of its own (`FilesBackupWork._walk_ahead`), attacked: a tree that
changes under the walk, deep and oddly named input, and failures in the walk's thread. Each
failure must reach the run (a typed error naming the path, or a recorded skip), never hang, and
the thread must be gone when the step ends, whichever way it ends."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.files.tree import Skipped, walk
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import DIR, FILE, Entry, read_lines
from davit.adapters.runwork import RunInputs
from davit.domain.errors import SourceMissing
from davit.domain.jobs import FilesBackupJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL, restore


class HookedWalk(FilesBackupWork):
    """A files backup whose walk (in the walk's thread) calls `hook(path)` before handing each
    entry on: what it does happens after the walk saw the entry and before the store reads it."""

    hook: Callable[[str], None] = staticmethod(lambda path: None)

    def _walk(self) -> Iterator[Any]:
        for item in super()._walk():
            type(self).hook(item.path if isinstance(item, Skipped) else item[0].path)
            yield item


@pytest.fixture(autouse=True)
def no_scan_for_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks are timed on the store's own walk, not on the progress scan's."""
    monkeypatch.setattr(FilesBackupWork, "SCANS_FOR_TOTAL", False)


@pytest.fixture(autouse=True)
def no_hook_left() -> Iterator[None]:
    yield
    HookedWalk.hook = staticmethod(lambda path: None)  # type: ignore[assignment]


def _walk_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "davit-walk" and t.is_alive()]


def _backup(repo: Repository, source: Path, work_class: type[FilesBackupWork] = HookedWalk) -> MemoryRunContext:
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    work = work_class(RunInputs(spec, "b1", SMALL, repo=repo))
    ctx = MemoryRunContext(run_id="b1")
    work.prepare(ctx)
    try:
        work.run(ctx)
        work.finish(ctx)
    finally:
        assert _walk_threads() == [], "the walk's thread outlived the step"
    return ctx


def _stored(repo: Repository) -> dict[str, tuple[Entry, bytes]]:
    entries = read_lines(repo.open_tree(repo.resolve("latest")))
    return {e.path: (e, b"".join(repo.read_chunk(bytes.fromhex(c)) for c in e.chunks)) for e in entries}


def _deep_tree(root: Path, depth: int) -> None:
    """`depth` nested directories `d`, a file in each; made through descriptors (no long paths)."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(depth):
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
        out = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"level %d\n" % level)
        os.close(out)
    os.close(fd)


def _remove_deep(root: Path) -> None:
    """`shutil.rmtree` (and pytest's cleanup of its temp dirs) recurses a level per directory:
    a tree this deep is taken apart here, through descriptors, deepest first."""
    if not root.exists():
        return
    levels = [(os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY), root.name)]
    while levels:
        parent_fd, name = levels[-1]
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        below = None
        for child in os.scandir(fd):
            if child.is_dir(follow_symlinks=False):
                below = child.name
                break
            os.unlink(child.name, dir_fd=fd)
        if below is not None:
            levels.append((fd, below))
            continue
        os.close(fd)
        os.rmdir(name, dir_fd=parent_fd)
        levels.pop()
        if not levels or levels[-1][0] != parent_fd:
            os.close(parent_fd)


def _contents(root: Path) -> dict[bytes, tuple[str, bytes]]:
    """Every entry below `root` (type, content of files), by relative path as bytes; iterative."""
    out: dict[bytes, tuple[str, bytes]] = {}
    todo = [b""]
    base = os.fsencode(root)
    while todo:
        rel = todo.pop()
        for name in os.listdir(base + b"/" + rel if rel else base):
            child = rel + b"/" + name if rel else name
            full = base + b"/" + child
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                out[child] = ("d", b"")
                todo.append(child)
            else:
                with open(full, "rb") as fh:
                    out[child] = ("f", fh.read())
    return out


# --- huge and nested input ------------------------------------------------------------------------


def test_a_tree_2000_directories_deep_backs_up_and_restores_identical(tmp_path: Path) -> None:
    """The walk was a generator per directory level (`yield from` one level down): some 490
    levels deep it raised `RecursionError`, failing the whole backup with an untyped error
    that named no path (on main as on the branch). The restore round trip is of a tree 600
    deep (past that old limit): a restore 2000 deep takes half a minute (its paths are
    resolved from the target's root, component by component), the backup well under one."""
    source = tmp_path / "s"
    _deep_tree(source, 2000)
    repo = Repository.open(tmp_path / "repo")
    try:
        ctx = _backup(repo, source)
        stored = _stored(repo)
        assert ctx.warnings == []
        assert sum(1 for e, _ in stored.values() if e.type == DIR) == 2001
        files = {path: content for path, (e, content) in stored.items() if e.type == FILE}
        assert files == {"/".join(["d"] * (n + 1)) + "/f": b"level %d\n" % n for n in range(2000)}
    finally:
        _remove_deep(source)
    _deep_tree(source, 600)
    try:
        _backup(Repository.open(tmp_path / "repo600"), source)
        restore(Repository.open(tmp_path / "repo600"), tmp_path / "out")
        assert _contents(tmp_path / "out") == _contents(source)
    finally:
        _remove_deep(source)
        _remove_deep(tmp_path / "out")


def test_a_deep_walk_closed_midway_leaves_no_directory_open(tmp_path: Path) -> None:
    """The walk holds a descriptor per level it is in; the step stopping midway closes them all."""

    source = tmp_path / "s"
    _deep_tree(source, 300)
    before = len(os.listdir("/proc/self/fd"))
    items = walk(source, [])
    for _ in range(400):  # about 200 levels down
        next(items)
    assert len(os.listdir("/proc/self/fd")) >= before + 150
    items.close()
    assert len(os.listdir("/proc/self/fd")) == before
    _remove_deep(source)


def test_names_of_255_bytes_and_not_utf8_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.mkdir()
    base = os.fsencode(source)
    names = [b"n" * 255, b"caf\xe9-latin1", b"\xff\xfe-not-utf8", "ünï-€".encode(), b"x" * 200 + b"\x80"]
    for name in names:
        with open(base + b"/" + name, "wb") as fh:
            fh.write(name * 3)
    os.mkdir(base + b"/dir-\xfa")
    with open(base + b"/dir-\xfa/" + b"m" * 255, "wb") as fh:
        fh.write(b"inside")
    repo = Repository.open(tmp_path / "repo")
    ctx = _backup(repo, source)
    assert ctx.warnings == []
    restore(repo, tmp_path / "out")
    assert _contents(tmp_path / "out") == _contents(source)


# --- the tree changing between the walk and the read ---------------------------------------------


@pytest.mark.parametrize("change", ["truncated", "grown", "removed", "emptied"])
def test_a_large_file_changed_after_the_walk_is_stored_as_read_or_left_out(change: str, tmp_path: Path) -> None:
    """The walk runs ahead, so a file's lstat comes earlier than its read: what is stored must be
    what was read, its size counting exactly those bytes, or the file is left out with a warning."""
    source = tmp_path / "s"
    source.mkdir()
    big = os.urandom(600_000)  # several of SMALL's 64 KiB chunks
    (source / "big").write_bytes(big)
    (source / "z-after").write_bytes(b"after")

    def hook(path: str) -> None:
        if path != "big":
            return
        if change == "truncated":
            os.truncate(source / "big", 100_000)
        elif change == "grown":
            with open(source / "big", "ab") as fh:
                fh.write(b"more" * 50_000)
        elif change == "removed":
            (source / "big").unlink()
        else:
            os.truncate(source / "big", 0)

    HookedWalk.hook = staticmethod(hook)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    ctx = _backup(repo, source)
    stored = _stored(repo)
    assert stored["z-after"][1] == b"after"
    if change == "removed":
        assert "big" not in stored
        assert any("big" in w and "changed since it was walked" in w for w in ctx.warnings)
        return
    entry, content = stored["big"]
    expected = {"truncated": big[:100_000], "grown": big + b"more" * 50_000, "emptied": b""}[change]
    assert content == expected
    assert entry.size == len(content)


def test_a_directory_removed_while_the_walk_is_ahead_is_a_recorded_skip(tmp_path: Path) -> None:
    """A directory gone between its parent's listing and its opening (what an I/O error on it
    looks like to the walk: it cannot be opened) is a warning naming it; the rest is stored."""
    source = tmp_path / "s"
    for d in ("a", "b", "c"):
        (source / d).mkdir(parents=True)
        (source / d / "f").write_bytes(d.encode())

    def hook(path: str) -> None:
        if path == "a/f":
            shutil.rmtree(source / "b")

    HookedWalk.hook = staticmethod(hook)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    ctx = _backup(repo, source)
    stored = _stored(repo)
    assert stored["a/f"][1] == b"a" and stored["c/f"][1] == b"c"
    assert "b" not in stored and "b/f" not in stored
    assert any(w.startswith("skipped b: ") for w in ctx.warnings), ctx.warnings  # "cannot stat: No such file"


# --- failures in the walk's thread ---------------------------------------------------------------


def test_a_source_gone_before_the_store_fails_with_a_typed_error_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    repo = Repository.open(tmp_path / "repo")
    spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
    work = FilesBackupWork(RunInputs(spec, "b1", SMALL, repo=repo))
    ctx = MemoryRunContext(run_id="b1")
    work.prepare(ctx)
    shutil.rmtree(source)
    with pytest.raises(SourceMissing, match=str(source)):
        work.run(ctx)
    assert _walk_threads() == []


def test_an_unexpected_failure_in_the_walks_thread_fails_the_run_with_it(tmp_path: Path) -> None:
    """Not swallowed, not a hang: the walk's own exception reaches the run, after the entries
    walked before it, and its thread is gone."""
    source = tmp_path / "s"
    source.mkdir()
    for i in range(600):
        (source / f"f{i:04}").write_bytes(b"%d" % i)

    class Broken(RuntimeError):
        pass

    def hook(path: str) -> None:
        if path == "f0500":
            raise Broken("the walk broke at f0500")

    HookedWalk.hook = staticmethod(hook)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    with pytest.raises(Broken, match="f0500"):
        _backup(repo, source)


def test_a_store_failing_while_the_walk_waits_on_a_full_queue_ends_the_walks_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from davit.adapters.files import backup as backup_module

    source = tmp_path / "s"
    source.mkdir()
    for i in range(2000):
        (source / f"f{i:04}").write_bytes(b"%d" % i)
    calls = 0
    real_add = backup_module._Store.add

    def failing_add(self: Any, entry: Entry, content: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 10:  # by now the walk is WALK_AHEAD entries ahead, blocked on the full queue
            raise OSError(5, "Input/output error (simulated)")
        real_add(self, entry, content)

    monkeypatch.setattr(backup_module._Store, "add", failing_add)
    repo = Repository.open(tmp_path / "repo")
    with pytest.raises(OSError, match="simulated"):
        _backup(repo, source, FilesBackupWork)


EACCES_SCRIPT = """
import sys
from pathlib import Path
from davit.adapters.files.backup import FilesBackupWork
from davit.adapters.repository.repository import Repository
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import FilesBackupJob
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import SMALL

source, repo_dir = Path(sys.argv[1]), Path(sys.argv[2])
repo = Repository.open(repo_dir)
spec = FilesBackupJob(name="job", kind="files.backup", source={"path": str(source)})
work = FilesBackupWork(RunInputs(spec, "b1", SMALL, repo=repo))
ctx = MemoryRunContext(run_id="b1")
work.prepare(ctx)
work.run(ctx)
work.finish(ctx)
for warning in ctx.warnings:
    print("WARN", warning)
import threading
print("THREADS", sorted(t.name for t in threading.enumerate() if t.name == "davit-walk"))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the backup as root without its capabilities")
def test_a_directory_the_walk_may_not_list_is_a_recorded_skip_naming_it(tmp_path: Path) -> None:
    """EACCES in the walk's thread. Root reads everything, so the backup runs in a child that
    is root without capabilities (`setpriv`: no CAP_DAC_OVERRIDE), for which a mode 000
    directory cannot be listed."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to drop root's capabilities"
    source = tmp_path / "s"
    (source / "locked").mkdir(parents=True)
    (source / "locked" / "secret").write_bytes(b"no")
    (source / "open.txt").write_bytes(b"yes")
    os.chmod(source / "locked", 0o000)
    argv = [str(source), str(tmp_path / "repo")]
    try:
        result = subprocess.run(
            [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-c", EACCES_SCRIPT, *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.chmod(source / "locked", 0o700)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WARN skipped locked: cannot list: Permission denied" in result.stdout, result.stdout
    assert "THREADS []" in result.stdout
    stored = _stored(Repository.open(tmp_path / "repo"))
    assert stored["open.txt"][1] == b"yes"
    assert stored["locked"][0].type == DIR and "locked/secret" not in stored


def _long_path_tree(source: Path) -> list[str]:
    """20 directories of 255-byte names below `source`, two files in the deepest: their names."""
    source.mkdir()
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    rel: list[str] = []
    for level in range(20):
        name = f"{level:02}" + "n" * 253
        os.mkdir(name, dir_fd=fd)
        below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
        rel.append(name)
    for name, content in (("deep-file", b"far down\n" * 20_000), ("small", b"small and far down\n")):
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, content)  # several chunks (read by the store's thread), one (by a worker)
        os.close(out)
    os.close(fd)
    return rel


def test_a_file_whose_path_is_longer_than_path_max_is_stored_with_its_content(tmp_path: Path) -> None:
    """Names of 255 bytes 20 directories deep: the file's full path (over 5000 bytes) is longer
    than the kernel takes in one lookup (PATH_MAX, 4096). Its read failed with ENAMETOOLONG and
    the file was recorded as empty ("stored 0 bytes"): a snapshot saying what it did not read."""
    source = tmp_path / "s"
    rel = _long_path_tree(source)
    assert len(str(source)) + 20 * 256 > 4096
    repo = Repository.open(tmp_path / "repo")
    try:
        ctx = _backup(repo, source)
        stored = _stored(repo)
    finally:
        _remove_deep(source)
    assert ctx.warnings == []
    prefix = "/".join(rel) + "/"
    assert stored[prefix + "deep-file"][1] == b"far down\n" * 20_000
    assert stored[prefix + "deep-file"][0].size == 180_000
    assert stored[prefix + "small"][1] == b"small and far down\n"


def test_a_directory_of_a_long_path_swapped_for_a_symlink_after_the_walk_leads_nowhere_else(tmp_path: Path) -> None:
    """The long path is resolved a directory at a time, an intermediate symlink followed as the
    kernel's lookup does: the inode check still refuses what it leads to."""
    source = tmp_path / "s"
    rel = _long_path_tree(source)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("deep-file", "small"):
        (outside / name).write_bytes(b"root-only secret\n" * 10)
    parent = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    for name in rel[:-1]:
        below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent)
        os.close(parent)
        parent = below

    def hook(path: str) -> None:
        if path.endswith("/deep-file"):  # the walk saw both files: swap the directory above them
            os.rename(rel[-1], "moved-away", src_dir_fd=parent, dst_dir_fd=parent)
            os.symlink(str(outside), rel[-1], dir_fd=parent)

    HookedWalk.hook = staticmethod(hook)  # type: ignore[assignment]
    repo = Repository.open(tmp_path / "repo")
    try:
        ctx = _backup(repo, source)
        stored = _stored(repo)
    finally:
        os.close(parent)
        _remove_deep(source)
    prefix = "/".join(rel) + "/"
    assert prefix + "deep-file" not in stored and prefix + "small" not in stored
    assert all(b"secret" not in content for _entry, content in stored.values())
    assert sum("changed since it was walked" in w for w in ctx.warnings) == 2, ctx.warnings
