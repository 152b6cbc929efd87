"""The files adapter's walk of a directory: entries of the snapshot tree, in walk order.

What an entry is and how a tree is read back is the repository's (`treeformat.py`); this
module walks the file system safely to produce them (each directory listed through a
descriptor, each file opened only if it is the inode the walk saw) and keeps the per-backup
bookkeeping of hard links.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from davit.adapters.repository.treeformat import BLOCK, CHAR, DIR, FILE, TYPE_OF_MODE, Entry, read_lines
from davit.domain.errors import SourceMissing


def is_excluded(rel: str, name: str, patterns: list[str]) -> bool:
    """A pattern with a `/` matches the relative path; without, any entry's name."""
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatchcase(rel, pattern.strip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pattern.strip("/")):
            return True
    return False


@dataclass(frozen=True)
class Skipped:
    """An entry the walk did not store, or (reason "its extended attributes: ...") stored without a part."""

    path: str
    reason: str


# --- the walk: every directory listed through a descriptor checked against its lstat -----------
#
# A user who can write inside the source must not be able to make davitd (root) store anything
# outside it. Each directory is opened relative to its parent's descriptor with O_NOFOLLOW, so a
# directory swapped for a symlink after the parent was listed fails to open (ELOOP/ENOTDIR) and
# is skipped, and its children are listed through that descriptor (`scandir(fd)`, `fstatat`),
# never by a path. A regular file is handed over as a `WalkedFile` (its full path and the inode
# the walk saw): `open_walked` takes an O_PATH handle with O_NOFOLLOW, compares its fstat with the
# walk's lstat, and only then opens that inode for reading. Looking a file up by its full path is
# safe with that check: a swapped intermediate component leads to another inode, which the check
# refuses before anything (a device node, a FIFO) is opened.

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO swapped in does not block
_HANDLE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC  # a handle on the inode: nothing of it is opened
_STEP_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC  # a directory of a long path, resolved a step at a time
# Extended attributes of a name in a directory held open: `listxattr` has no `dir_fd`, but the
# descriptor's /proc entry resolves to that very directory (not a path looked up again).
_PROC_FD = os.path.isdir("/proc/self/fd")
_XATTR_ABSENT = (errno.ENOTSUP, errno.EPERM, errno.ENOENT, errno.ENODATA)  # no xattrs: not a failure


class WalkedFile(NamedTuple):  # a tuple: one per file of the walk, made cheaply
    """A regular file as the walk saw it: where to open it, and the inode the open must find."""

    path: str
    dev: int
    ino: int


class ChangedSinceWalk(Exception):  # a condition, caught by the store and made a warning
    """The path no longer leads to the file the walk saw; nothing of it may be stored."""


def open_walked(walked: WalkedFile) -> int:
    """Open a walked file for reading, without following a symlink at its name, and check that it
    is the inode the walk saw; raise `ChangedSinceWalk` otherwise (also when it is gone).

    The check comes before the file is opened for reading: the path is first opened `O_PATH`,
    which does not open the object itself. Opening a device node or FIFO has effects of its own
    (`/dev/watchdog` arms the watchdog, a tape rewinds, a FIFO's writer is released), and one
    can be swapped in after the walk (a container `mknod`s in its volume, or a directory above
    the file becomes a symlink to `/dev`). Only a regular file of the walk's inode is then
    opened for reading, through the descriptor's /proc entry: that very inode, not the path
    looked up again."""
    if not _PROC_FD:
        return _open_walked_by_path(walked)
    try:
        handle = _handle(walked.path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ChangedSinceWalk(f"changed since it was walked ({exc.strerror}); not stored") from exc
        raise
    try:
        _check_walked(walked, os.fstat(handle))
        return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(handle)


def _handle(path: str) -> int:
    """An `O_PATH` handle on `path`, its last component not followed. A path longer than the
    kernel resolves in one lookup (PATH_MAX: names of 255 bytes 16 directories deep) fails with
    ENAMETOOLONG, and such a file was recorded as empty: it is resolved a directory at a time
    instead, each step as the kernel's own lookup takes it (an intermediate symlink followed),
    so the inode check that follows is the guard in both cases."""
    try:
        return os.open(path, _HANDLE_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    head, _, last = path.rpartition("/")
    fd = os.open("/" if path.startswith("/") else ".", _STEP_FLAGS)
    try:
        for part in head.split("/"):
            if part:
                below = os.open(part, _STEP_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = below
        return os.open(last, _HANDLE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def _check_walked(walked: WalkedFile, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (walked.dev, walked.ino):
        raise ChangedSinceWalk("changed since it was walked (the path now leads to another file); not stored")


def _open_walked_by_path(walked: WalkedFile) -> int:
    """Without /proc: opened for reading at once (a device swapped in is opened before the check)."""
    try:
        fd = os.open(walked.path, _FILE_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.ENXIO):
            raise ChangedSinceWalk(f"changed since it was walked ({exc.strerror}); not stored") from exc
        raise
    try:
        _check_walked(walked, os.fstat(fd))
    except ChangedSinceWalk:
        os.close(fd)
        raise
    return fd


def walk(root: Path, exclude: list[str]) -> Iterator[tuple[Entry, WalkedFile | None] | Skipped]:
    """Yield (entry, the file to read for regular files) in walk order; what cannot be stored
    (sockets, unreadable or vanished entries) comes as `Skipped`. A `root` that is a symlink is
    followed (the root only): "." is the directory it points to, so every snapshot restores.
    A regular file's extended attributes are not read here: whoever reads its content reads them
    from the descriptor `open_walked` checked (`read_xattrs(fd)`), or takes them from the
    previous snapshot when the files cache says the file is unchanged (an attribute change moves
    the ctime), so they are those of the inode stored, and an unchanged file costs no reads."""
    yield from walk_root(root, ".", exclude)


def walk_root(root: Path, rel: str, exclude: list[str]) -> Iterator[tuple[Entry, WalkedFile | None] | Skipped]:
    """The walk of one root directory, named `rel` in the tree ("." for the tree's own root)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # follows a symlinked root
    except OSError as exc:
        raise SourceMissing(str(root), f"cannot open the directory: {exc.strerror}") from exc
    try:
        xattrs, problem = read_xattrs(fd)
        if problem:
            yield Skipped(rel, problem)
        yield _entry(rel, os.fstat(fd), None, xattrs), None
        yield from _walk_dir(fd, str(root), "" if rel == "." else rel + "/", exclude)
    finally:
        os.close(fd)


class _Level(NamedTuple):
    """A directory of the walk being listed: its descriptor, where it is, its children left."""

    fd: int
    base: str  # its path, ending in "/"
    prefix: str  # its name in the tree, ending in "/" ("" for the root)
    children: Iterator[os.DirEntry[str]]
    owned: bool  # opened by this walk (closed when its children are done), not the caller's


def _walk_dir(fd: int, dir_path: str, prefix: str, exclude: list[str]) -> Iterator[tuple[Entry, WalkedFile | None] | Skipped]:
    """The entries below the directory open at `fd` (at `dir_path`, named `prefix` in the tree),
    depth first in name order. Iterative, with a stack of the directories being listed: a
    generator per level (`yield from` one level down) raised `RecursionError` some 490
    directories deep, an untyped failure of the whole backup that named no path; now the depth
    is bounded only by the descriptors open at once, one per level (past the process's limit a
    directory is recorded as "cannot list", as any directory that cannot be opened)."""
    levels: list[_Level] = []
    try:
        listed = _listing(fd, prefix)
        if isinstance(listed, Skipped):
            yield listed
            return
        levels.append(_Level(fd, dir_path if dir_path.endswith("/") else dir_path + "/", prefix, iter(listed), False))
        while levels:
            level = levels[-1]
            child = next(level.children, None)
            if child is None:
                levels.pop()
                if level.owned:
                    os.close(level.fd)
                continue
            name = child.name
            rel = level.prefix + name
            if is_excluded(rel, name, exclude):
                continue
            try:
                st = child.stat(follow_symlinks=False)  # fstatat(fd, name): no path lookup
            except OSError as exc:
                yield Skipped(rel, f"cannot stat: {exc.strerror}")
                continue
            path = level.base + name
            if stat.S_ISDIR(st.st_mode):
                below = yield from _descend(level.fd, name, path, rel, st)
                if below is not None:
                    levels.append(below)
                continue
            yield from _non_directory(level.fd, name, path, rel, st)
    finally:
        for level in levels:  # closed early (the consumer stopped) or failed: the descriptors now
            if level.owned:
                os.close(level.fd)


def _listing(fd: int, prefix: str) -> list[os.DirEntry[str]] | Skipped:
    """The children of the directory open at `fd`, by name; or why it cannot be listed."""
    try:
        with os.scandir(fd) as it:
            return sorted(it, key=lambda d: d.name)
    except OSError as exc:
        return Skipped(prefix.rstrip("/") or ".", f"cannot list: {exc.strerror}")


def _descend(
    parent_fd: int, name: str, path: str, rel: str, st: os.stat_result
) -> Generator[tuple[Entry, WalkedFile | None] | Skipped, None, _Level | None]:
    """Yield the subdirectory's entry (`_open_subdir`) and return it opened and listed, its
    children to walk next; None if it is not to be listed (its skip yielded)."""
    sub = yield from _open_subdir(parent_fd, name, path, rel, st)
    if sub is None:
        return None
    try:
        listed = _listing(sub, rel + "/")
    except BaseException:
        os.close(sub)
        raise
    if isinstance(listed, Skipped):
        os.close(sub)
        yield listed
        return None
    return _Level(sub, path + "/", rel + "/", iter(listed), True)


def _non_directory(
    fd: int, name: str, path: str, rel: str, st: os.stat_result
) -> Iterator[tuple[Entry, WalkedFile | None] | Skipped]:
    """The entry of a child (not a directory) of the directory open at `fd`."""
    if stat.S_ISSOCK(st.st_mode) or _kind(st.st_mode) is None:
        yield Skipped(rel, "a socket: not stored" if stat.S_ISSOCK(st.st_mode) else "of an unknown type")
        return
    target = None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=fd)
        except OSError as exc:
            yield Skipped(rel, f"cannot read the link (changed since it was walked?): {exc.strerror}")
            return
    if stat.S_ISREG(st.st_mode):  # its attributes are read with its content (see `walk`)
        yield _entry(rel, st, None), WalkedFile(path, st.st_dev, st.st_ino)
        return
    xattrs, problem = read_xattrs(f"/proc/self/fd/{fd}/{name}" if _PROC_FD else path)
    if problem:
        yield Skipped(rel, problem)
    yield _entry(rel, st, target, xattrs), None


def _open_subdir(
    parent_fd: int, name: str, path: str, rel: str, st: os.stat_result
) -> Generator[tuple[Entry, WalkedFile | None] | Skipped, None, int | None]:
    """Yield the entry of the subdirectory `name` of the directory open at `parent_fd` (or why it
    is not stored) and return its descriptor, to be listed; None if it is not to be listed."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            # Swapped for a symlink or a file (or removed) since the listing: never followed.
            yield Skipped(rel, f"changed since it was walked ({exc.strerror}); not stored")
            return None
        xattrs, problem = read_xattrs(f"/proc/self/fd/{parent_fd}/{name}" if _PROC_FD else path)
        if problem:
            yield Skipped(rel, problem)
        yield _entry(rel, st, None, xattrs), None
        yield Skipped(rel, f"cannot list: {exc.strerror}")
        return None
    try:
        # What the descriptor holds is what is stored and listed: it was opened under the parent
        # without following a link, so even if it is another directory than the lstat saw (one
        # renamed into place since), it is inside the source.
        now = os.fstat(fd)
        xattrs, problem = read_xattrs(fd)
        if problem:
            yield Skipped(rel, problem)
        yield _entry(rel, now, None, xattrs), None
    except BaseException:  # closed while its entry was out (the consumer stopped): not leaked
        os.close(fd)
        raise
    return fd


def read_xattrs(target: int | str) -> tuple[dict[str, bytes], str | None]:
    """Every extended attribute this process can read (all namespaces, POSIX ACLs included) of
    an open descriptor or a path (its last component not followed), and what went wrong, if
    anything did beyond "none here" (unsupported, not permitted, gone)."""
    follow = isinstance(target, int)  # a descriptor: the option must be left at its default
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        return {}, None if exc.errno in _XATTR_ABSENT else f"its extended attributes: {exc.strerror}"
    values: dict[str, bytes] = {}
    for name in names:
        try:
            values[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in _XATTR_ABSENT:  # ENODATA: removed since the listing
                return values, f"its extended attribute {name}: {exc.strerror}"
    return values, None


def _kind(mode: int) -> str | None:
    """The entry type of a file of `mode`; None for a socket (or anything else never stored)."""
    return TYPE_OF_MODE.get(stat.S_IFMT(mode))


def stat_entry(rel: str, st: os.stat_result, target: str | None = None) -> Entry:
    """The tree entry named `rel` of what `st` (an lstat, or an fstat of a descriptor) describes:
    for walks assembled elsewhere from descriptors of their own (a compose stack's definition
    files, `adapters/compose/stacktree.py`); a regular file, directory or symlink (`target`)."""
    return _entry(rel, st, target)


def _entry(rel: str, st: os.stat_result, target: str | None, xattrs: dict[str, bytes] | None = None) -> Entry:
    kind = _kind(st.st_mode)
    assert kind is not None, f"{rel}: the walk passes only storable types"
    linked = kind != DIR and st.st_nlink > 1  # a hard link: any non-directory can have several names
    return Entry(
        path=rel,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind == FILE else 0,
        uid=st.st_uid,
        gid=st.st_gid,
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
        target=target,
        nlink=st.st_nlink if linked else 1,
        dev=st.st_dev if linked else 0,
        rdev=st.st_rdev if kind in (CHAR, BLOCK) else 0,
        xattrs=xattrs or {},
    )


class HardLinks:
    """The first path of each multiply-linked inode seen so far in one backup (only those are kept)."""

    def __init__(self) -> None:
        self._first: dict[tuple[int, int], str] = {}

    def note(self, entry: Entry) -> None:
        """Mark `entry` as a further link to an inode already seen, or remember it as the first."""
        if entry.type == DIR or entry.nlink <= 1:
            return
        first = self._first.setdefault((entry.dev, entry.inode), entry.path)
        entry.hardlink_to = first if first != entry.path else None

    def not_stored(self, entry: Entry, successor: str | None) -> None:
        """`entry` was left out of the snapshot (it changed since the walk): if it was the first
        path of its inode, `successor` (a later path to the inode, or None) is the first now."""
        key = (entry.dev, entry.inode)
        if entry.type != DIR and entry.nlink > 1 and self._first.get(key) == entry.path:
            if successor is None:
                del self._first[key]
            else:
                self._first[key] = successor

    def replay(self, lines: Iterable[bytes]) -> None:
        """Learn the inodes of entries already stored (a resumed run's staging tree)."""
        for entry in read_lines(lines):
            if entry.type != DIR and entry.nlink > 1:
                self._first.setdefault((entry.dev, entry.inode), entry.path)
