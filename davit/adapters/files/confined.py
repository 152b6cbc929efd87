"""Writing a snapshot's entries into a restore target through directory descriptors only.

Nothing here joins a snapshot's name onto a path. The target's root (the operator's path) is
opened once; every directory below it is opened by one name relative to its parent's
descriptor with `O_NOFOLLOW | O_DIRECTORY`, so a symlink planted anywhere in the target (or
swapped in during the restore) is refused, never followed. Entries are created relative to
their parent's descriptor (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat`,
`linkat` without following), and modes, owners, times and extended attributes are applied
through the created object's own descriptor (or, for a symlink, the `*at` call that does not
follow it). What a restore may replace when something is in the way:

- a directory in the way of anything else is never removed: the run fails naming the path;
- anything else is replaced (unlinked, never followed, never truncated in place: it may have
  other hard links outside the target) when `overwrite = true`, or when it has the type the
  snapshot has there (the run's own earlier attempt, before a crash); otherwise the run fails
  naming the path.

What the target's file system or davitd's privileges refuse for an attribute (an extended
attribute, a device node, setuid/setgid bits without root, an owner) is a warning naming the
path and the attribute, bounded in number, never a silent loss and never a failed run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from davit.adapters.repository.fsutil import storage_error
from davit.adapters.repository.treeformat import BLOCK, CHAR, DIR, FIFO, FILE, LINK, TYPE_OF_MODE, Entry
from davit.domain.errors import StorageFull, TargetInTheWay, TargetUnwritable
from davit.domain.ports import RunContext

IS_ROOT = os.geteuid() == 0
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
O_NODE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_WARNINGS = 20  # per step, like the backup's skipped files; the rest are counted
WRITEBACK_STEP = 8 << 20  # bytes of a large file written between two starts of early writeback
# A file smaller than this gets no early writeback: the checkpoint's `syncfs` writes thousands
# of small files in one pass, with their blocks allocated and their writes merged together;
# starting each alone (one `posix_fadvise` per file, from the writer threads) made a restore of
# small files about a third slower (30 MB of 200 B-64 KiB files: 0.26 s against 0.41 s).
WRITEBACK_MIN = 1 << 20
MAX_OPEN_DIRS = 64  # descriptors a walk keeps open for its ancestors (the soft NOFILE may be 1024)
ROOT_ONLY_XATTRS = ("security.", "trusted.")
# what a file system (or a user namespace) answers for an attribute it does not keep
REFUSED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.EINVAL, errno.E2BIG, errno.ERANGE})
KIND = {FILE: "file", DIR: "directory", LINK: "symlink", FIFO: "FIFO", CHAR: "character device", BLOCK: "block device"}


def one_name(name: str) -> str:
    """`name` if it names an entry of a directory; the tree check refused anything else before,
    this keeps the writer confined on its own (a `..` opened relative to a descriptor is the
    parent all the same)."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise TargetInTheWay(repr(name), "not a single file name; refused")
    return name


def target_error(exc: OSError, path: object) -> Exception:
    """A failed write into the target, typed: a full disk is `StorageFull`, anything else the
    target refused is `TargetUnwritable` naming the path and the reason."""
    mapped = storage_error(exc, Path(str(path)))
    if isinstance(mapped, StorageFull):
        return mapped
    return TargetUnwritable(str(path), exc.strerror or str(exc))


def kind_of(st: os.stat_result) -> str:
    return TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode), "?")


def open_root(path: Path) -> int:
    """The target's root directory (created if missing), the one path davit resolves by name:
    it is the operator's, from the job file."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise target_error(exc, path) from exc


class Warnings:
    """At most `MAX_WARNINGS` warnings reach the run's events; the rest are counted and
    reported in one line by `summarize`. Safe to call from the writer threads."""

    def __init__(self, ctx: RunContext, step: str) -> None:
        self._ctx, self._step = ctx, step
        self._lock = threading.Lock()
        self.count = 0

    def warn(self, message: str) -> None:
        with self._lock:
            self.count += 1
            shown = self.count <= MAX_WARNINGS
        if shown:
            self._ctx.warn(message, self._step)

    def summarize(self) -> None:
        if self.count > MAX_WARNINGS:
            self._ctx.warn(f"{self.count - MAX_WARNINGS} more warnings like the above were not shown", self._step)


class DirWalk:
    """Descriptors of the directories from the target's root down to the current one.

    Entries come in walk order, so the directory an entry needs is nearly always the one on
    top or just below it; `fd_of(key)` pops the directories left behind (handing their
    descriptors to `retire`, which may close them later, after threads using them finished)
    and opens the missing ones one name at a time with `O_NOFOLLOW | O_DIRECTORY`. At most
    `MAX_OPEN_DIRS` stay open; deeper ancestors are closed and opened again when needed.
    """

    def __init__(self, root_fd: int, retire: Callable[[int], None] = os.close) -> None:
        self._keys: list[tuple[str, ...]] = [()]
        self._fds: list[int | None] = [root_fd]
        self._open = 0  # descriptors open besides the root
        self._retire = retire

    @property
    def root(self) -> int:
        fd = self._fds[0]
        assert fd is not None
        return fd

    def fd_of(self, key: tuple[str, ...]) -> int:
        """The descriptor of directory `key` (a tuple of names below the root)."""
        keys, fds = self._keys, self._fds
        while len(keys[-1]) > len(key) or keys[-1] != key[: len(keys[-1])]:
            keys.pop()
            fd = fds.pop()
            if fd is not None:
                self._open -= 1
                self._retire(fd)
        if fds[-1] is None:
            fds[-1] = self._reopen(len(fds) - 1)
            self._open += 1
        while len(keys[-1]) < len(key):
            parent = fds[-1]
            assert parent is not None
            name = one_name(key[len(keys[-1])])
            fd = os.open(name, O_DIR, dir_fd=parent)
            keys.append(key[: len(keys[-1]) + 1])
            fds.append(fd)
            self._open += 1
            if self._open > MAX_OPEN_DIRS:
                self._close_oldest()
        top = fds[-1]
        assert top is not None
        return top

    def _reopen(self, index: int) -> int:
        base = max(i for i in range(index) if self._fds[i] is not None)
        fd = self._fds[base]
        assert fd is not None
        for depth, name in enumerate(self._keys[index][len(self._keys[base]) :]):
            child = os.open(one_name(name), O_DIR, dir_fd=fd)
            if depth:
                os.close(fd)
            fd = child
        return fd

    def _close_oldest(self) -> None:
        for i in range(1, len(self._fds) - 1):
            fd = self._fds[i]
            if fd is not None:
                self._fds[i] = None
                self._open -= 1
                self._retire(fd)
                return

    def close(self) -> None:
        """Retire every descriptor but the root's, then close the root's."""
        for fd in self._fds[1:]:
            if fd is not None:
                self._retire(fd)
        root = self._fds[0]
        self._keys, self._fds, self._open = [()], [None], 0
        if root is not None:
            os.close(root)


def _start_writeback(fd: int, start: int, end: int) -> int:
    """Start writing bytes `start`..`end` of a restored file to disk now, without waiting.

    A restore's checkpoint flushes the target (`syncfs`) and only then records its cursor; the
    kernel would otherwise hold the restored data dirty until then (well under its background
    threshold) and the flush, on the restore's critical path at its last checkpoint, would
    write it all. `POSIX_FADV_DONTNEED` on dirty pages starts their writeback (`WB_SYNC_NONE`:
    it does not wait for the disk) and drops only pages already clean; Python's `os` has no
    `sync_file_range`. Advisory only: the checkpoint's `syncfs` still makes everything durable,
    so a refusal is ignored. Returns `end`.
    """
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    return end


def _write_chunks(fd: int, chunks: Iterable[bytes], is_hole: Callable[[bytes], bool]) -> tuple[int, int]:
    """Write `chunks` into the new, empty file `fd` from its start, skipping over those
    `is_hole` names (they read back as zeros: the file system allocates nothing there), with
    early writeback started every `WRITEBACK_STEP` bytes written. Returns (the offset up to
    which writeback was started, the file's size)."""
    started = end = dirty = 0
    ends_in_hole = False
    for data in chunks:
        if is_hole(data):
            end = os.lseek(fd, len(data), os.SEEK_CUR)
            ends_in_hole = True
            continue
        view = memoryview(data)
        while view:  # a regular file takes all of it, but a short write must not lose the rest
            view = view[os.write(fd, view) :]
        end += len(data)
        dirty += len(data)
        ends_in_hole = False
        if dirty >= WRITEBACK_STEP:
            started, dirty = _start_writeback(fd, started, end), 0
    if ends_in_hole:
        os.ftruncate(fd, end)  # a hole at the end: nothing was written there to set the size
    return (started if dirty else end), end


def open_dir_at(root_fd: int, key: Iterable[str]) -> int:
    """A new descriptor for directory `key`, opened one name at a time from the root, never
    through a symlink (for a hard link's first path, away from the walk's own stack)."""
    fd = os.dup(root_fd)
    try:
        for name in key:
            child = os.open(one_name(name), O_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class Writer:
    """Creates entries relative to their parent directory's descriptor and applies their
    metadata through descriptors; shared by the restoring thread and the small-file writers."""

    def __init__(
        self, display_root: Path, overwrite: bool, warnings: Warnings, is_hole: Callable[[bytes], bool] = lambda data: False
    ) -> None:
        self.display_root = display_root
        self.overwrite = overwrite
        self.warnings = warnings
        # which chunks to skip over (a hole) rather than write: `holes.ZeroChunks.is_zeros`
        self.is_hole = is_hole
        # (dev, inode) of entries with more than one link created by this process: a hard link
        # is made to one of these, or (on a resumed run) to a path whose type, size and mtime
        # are the snapshot's.
        self.made: dict[str, tuple[int, int]] = {}

    def shown(self, entry: Entry) -> Path:
        return self.display_root if entry.path == "." else self.display_root / entry.path

    # --- making room ---------------------------------------------------------------------------

    def _clear(self, parent: int, name: str, entry: Entry) -> None:
        """Remove what is at `name` so `entry` can be created there, if the policy allows."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        there = kind_of(st)
        if there == DIR:
            raise TargetInTheWay(
                str(self.shown(entry)),
                f"a directory where the snapshot has a {KIND[entry.type]}; a restore never removes a directory",
            )
        if there != entry.type and not self.overwrite:
            raise TargetInTheWay(
                str(self.shown(entry)),
                f"a {KIND.get(there, 'special file')} where the snapshot "
                f"has a {KIND[entry.type]}; set overwrite = true to replace it",
            )
        os.unlink(name, dir_fd=parent)

    def make_dir(self, parent: int, name: str, entry: Entry) -> None:
        try:
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
                return
            except FileExistsError:
                pass
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                return
            if not self.overwrite:
                raise TargetInTheWay(
                    str(self.shown(entry)),
                    f"a {KIND.get(kind_of(st), 'special file')} where "
                    "the snapshot has a directory; set overwrite = true to replace it",
                )
            os.unlink(name, dir_fd=parent)  # a symlink is replaced, never followed
            os.mkdir(name, 0o700, dir_fd=parent)
        except OSError as exc:
            raise target_error(exc, self.shown(entry)) from exc

    # --- entries -------------------------------------------------------------------------------

    def write_file(self, parent: int, name: str, entry: Entry, chunks: Iterable[bytes]) -> None:
        try:
            try:
                fd = os.open(name, O_NEW_FILE, 0o600, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, entry)
                fd = os.open(name, O_NEW_FILE, 0o600, dir_fd=parent)
            try:
                started, end = _write_chunks(fd, chunks, self.is_hole)
                if entry.nlink > 1:
                    st = os.fstat(fd)
                    self.made[entry.path] = (st.st_dev, st.st_ino)
                self.apply(fd, entry, os.fchown, os.fchmod)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
                if end > started and end >= WRITEBACK_MIN:
                    _start_writeback(fd, started, end)
            finally:
                os.close(fd)
        except OSError as exc:
            raise target_error(exc, self.shown(entry)) from exc

    def make_symlink(self, parent: int, name: str, entry: Entry) -> None:
        assert entry.target is not None
        try:
            try:
                os.symlink(entry.target, name, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, entry)
                os.symlink(entry.target, name, dir_fd=parent)
            if entry.nlink > 1:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                self.made[entry.path] = (st.st_dev, st.st_ino)
            if IS_ROOT:
                self._chown(entry, lambda uid, gid: os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False))
            # the kernel resolves the directory's descriptor; the last name is not followed
            self.set_xattrs(f"/proc/self/fd/{parent}/{name}", entry, follow=False)
            os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise target_error(exc, self.shown(entry)) from exc

    def make_node(self, parent: int, name: str, entry: Entry) -> None:
        """A FIFO, or (as root) a character or block device; what cannot be made is a warning."""
        if entry.type != FIFO and not IS_ROOT:
            self.warnings.warn(f"{self.shown(entry)}: {KIND[entry.type]} not restored (davitd is not root)")
            return
        kind = stat.S_IFIFO if entry.type == FIFO else stat.S_IFCHR if entry.type == CHAR else stat.S_IFBLK
        try:
            try:
                os.mknod(name, kind | 0o600, entry.rdev, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, entry)
                os.mknod(name, kind | 0o600, entry.rdev, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in REFUSED:
                raise target_error(exc, self.shown(entry)) from exc
            self.warnings.warn(f"{self.shown(entry)}: {KIND[entry.type]} not restored: {exc.strerror}")
            return
        try:
            # An O_PATH descriptor does not open the device (no side effect, no blocking FIFO);
            # its /proc/self/fd path names this very inode for the calls that need a path.
            fd = os.open(name, O_NODE, dir_fd=parent)
            try:
                st = os.fstat(fd)
                if stat.S_IFMT(st.st_mode) != kind:
                    raise TargetInTheWay(str(self.shown(entry)), "replaced while it was being restored")
                if entry.nlink > 1:
                    self.made[entry.path] = (st.st_dev, st.st_ino)
                proc = f"/proc/self/fd/{fd}"
                self.apply(proc, entry, os.chown, os.chmod)
                os.utime(proc, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
        except OSError as exc:
            raise target_error(exc, self.shown(entry)) from exc

    def link(self, root: int, parent: int, name: str, entry: Entry) -> bool:
        """Make `entry` a hard link to its first path, if that is what this restore made there;
        False if not (the caller then writes the entry whole)."""
        assert entry.hardlink_to is not None
        first_key = entry.hardlink_to.split("/")
        one_name(first_key[-1])
        try:
            source = open_dir_at(root, first_key[:-1])
        except OSError:
            return False
        node = -1
        try:
            # the first path is pinned by a descriptor, checked, and linked through that same
            # descriptor: a swap between the check and the link cannot redirect the link
            node = os.open(first_key[-1], O_NODE, dir_fd=source)
            first = os.fstat(node)
            if not self._made_here(node, first, entry):
                return False
            try:
                here = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if (here.st_dev, here.st_ino) == (first.st_dev, first.st_ino):
                    return True  # done before a crash
                self._clear(parent, name, entry)
            except FileNotFoundError:
                pass
            os.link(f"/proc/self/fd/{node}", name, dst_dir_fd=parent, follow_symlinks=True)
            return True
        except OSError:
            return False
        finally:
            if node >= 0:
                os.close(node)
            os.close(source)

    def _made_here(self, node: int, st: os.stat_result, entry: Entry) -> bool:
        """`node` (an `O_PATH` descriptor of the first path) is what this restore made there."""
        assert entry.hardlink_to is not None
        if kind_of(st) != entry.type:
            return False
        made = self.made.get(entry.hardlink_to)
        if made is not None:
            return made == (st.st_dev, st.st_ino)
        # a resumed run: the first path was made before the crash; it must still look like it
        if st.st_mtime_ns != entry.mtime_ns or (entry.type == FILE and st.st_size != entry.size):
            return False
        if entry.type == LINK:
            return os.readlink("", dir_fd=node) == entry.target
        return entry.type not in (CHAR, BLOCK) or st.st_rdev == entry.rdev

    # --- metadata ------------------------------------------------------------------------------

    def apply(self, target: int | str, entry: Entry, chown: Callable[..., None], chmod: Callable[..., None]) -> None:
        """Owner, mode and extended attributes, in the order that keeps them all: a chown
        clears setuid bits and file capabilities, so it comes first and the xattrs last."""
        if IS_ROOT:
            self._chown(entry, lambda uid, gid: chown(target, uid, gid))
        chmod(target, self.mode(entry))
        self.set_xattrs(target, entry, follow=True)

    def mode(self, entry: Entry) -> int:
        if entry.mode & 0o6000 and not IS_ROOT:
            self.warnings.warn(f"{self.shown(entry)}: setuid/setgid bits not restored (davitd is not root)")
            return entry.mode & ~0o6000
        return entry.mode

    def _chown(self, entry: Entry, chown: Callable[[int, int], None]) -> None:
        try:
            chown(entry.uid, entry.gid)
        except OSError as exc:
            if exc.errno not in REFUSED:
                raise
            self.warnings.warn(f"{self.shown(entry)}: owner {entry.uid}:{entry.gid} not restored: {exc.strerror}")

    def set_xattrs(self, target: int | str, entry: Entry, follow: bool) -> None:
        for name, value in entry.xattrs.items():
            if not IS_ROOT and name.startswith(ROOT_ONLY_XATTRS):
                self.warnings.warn(f"{self.shown(entry)}: extended attribute {name} not restored (davitd is not root)")
                continue
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno not in REFUSED:
                    raise
                self.warnings.warn(f"{self.shown(entry)}: extended attribute {name} not restored: {exc.strerror}")

    def dir_metadata(self, fd: int, entry: Entry) -> None:
        try:
            self.apply(fd, entry, os.fchown, os.fchmod)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        except OSError as exc:
            raise target_error(exc, self.shown(entry)) from exc
