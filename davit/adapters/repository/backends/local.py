"""The repository's objects as files of a local directory: today's layout, byte for byte.

A key is a path under the root. Files are created 0600 and directories 0700 whatever the
umask (`fsutil`). Every write goes to a temporary name under `tmp/` first and is fsynced; it
then appears by a hard link (create-exclusive: `put_if_absent`) or a rename (replace: `put`),
and the directory is fsynced. So an object is whole or absent after a crash, and `tmp/` holds
at most the debris that retention's grace clean-up removes.

Nothing here follows a symlink at the last component or waits on a FIFO: anyone who can write
the repository directory can plant one, and a reader blocked in open() would hold the
repository's lock for good. Such a name reads as an error (`NotRegularFile`, ELOOP) and is
left out of listings; the repository reports it as damage where it matters (a snapshot).
Nor is a symlink followed at a directory *inside* the repository (`index -> /elsewhere`,
`packs/ab -> /`, `tmp -> $HOME`): through one, a listing would walk, a write land in and a
prune's clean-up of `tmp/` delete files outside the repository. A key or prefix reached
through one is refused (ELOOP). The repository directory itself may be a symlink (the
operator's choice).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from davit.adapters.repository.backend import Caps, ObjectInfo, ObjectMissing, ObjectTooLarge, Source, check_key, check_prefix
from davit.adapters.repository.fsutil import FILE_MODE, fsync_dir, make_dirs, open_new, open_regular, storage_error

_OPEN_FDS = 64


def _in_place(move: Callable[[], None], parent: Path) -> None:
    """`move` a spooled file to its name in `parent`, made first (0700); again if a concurrent
    `delete` removed the emptied directory in between."""
    for _ in range(8):
        make_dirs(parent)
        try:
            move()
            return
        except FileNotFoundError:
            if parent.is_dir():
                raise
    move()


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.where = str(root)
        self.caps = Caps(conditional_create=True, can_delete=True, local_root=root)
        self._fds: OrderedDict[str, _HeldFd] = OrderedDict()
        self._fd_lock = threading.Lock()

    def path(self, key: str) -> Path:
        """The file of `key`; `OSError(ELOOP)` if a directory on the way is a symlink."""
        check_key(key)
        self._refuse_symlinked_dirs(key.split("/")[:-1])
        return self.root / key

    def _refuse_symlinked_dirs(self, parts: list[str]) -> None:
        """`OSError(ELOOP)` if one of the directories `parts` (from the root down) is a symlink.
        One missing ends the check: what is under it is made by `make_dirs`, as a directory."""
        here = self.root
        for part in parts:
            here = here / part
            try:
                mode = os.lstat(here).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, "a directory of the repository is a symbolic link (not followed)", str(here))

    # --- writing ---------------------------------------------------------------------------

    def _spool(self, src: Source, name: str) -> Path:
        """A fsynced temporary file under `tmp/` holding `src`; for a local file, a new hard
        link to it when it is on this file system (no copy)."""
        self._refuse_symlinked_dirs(["tmp"])
        make_dirs(self.tmp)
        tmp = self.tmp / f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        if isinstance(src, Path):
            if self._link_spool(src, tmp):
                return tmp
            with open(src, "rb") as fh, open(open_new(tmp), "wb") as out:
                shutil.copyfileobj(fh, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            return tmp
        with open(open_new(tmp), "wb") as out:
            out.write(src)
            out.flush()
            os.fsync(out.fileno())
        return tmp

    @staticmethod
    def _link_spool(src: Path, tmp: Path) -> bool:
        """Make `tmp` a hard link to the regular file `src`; False if it cannot be (another file
        system, or `src` is a symlink: link() would link the symlink itself). The shared inode
        is made 0600 and its mtime set to now: an object's mtime is when it was stored (lock
        ages and the orphan grace read it), not when its source was last written."""
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            return False
        if not stat.S_ISREG(os.lstat(tmp).st_mode):
            tmp.unlink()
            return False
        os.chmod(tmp, FILE_MODE)
        os.utime(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        return True

    def put_if_absent(self, key: str, src: Source) -> bool:
        final = self.path(key)
        tmp: Path | None = None
        try:
            tmp = self._spool(src, final.name)
            try:
                _in_place(lambda: os.link(tmp, final), final.parent)  # fails if the name exists: create-exclusive
            except FileExistsError:
                return False
            fsync_dir(final.parent)
            return True
        except OSError as exc:
            raise storage_error(exc, final) from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def put(self, key: str, src: Source) -> None:
        final = self.path(key)
        tmp: Path | None = None
        try:
            tmp = spooled = self._spool(src, final.name)
            _in_place(lambda: os.replace(spooled, final), final.parent)
            tmp = None
            fsync_dir(final.parent)
        except OSError as exc:
            raise storage_error(exc, final) from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._forget_fd(key)

    # --- reading ---------------------------------------------------------------------------

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self.path(key)
        try:
            with open_regular(path) as fh:
                if max_bytes is not None:
                    size = os.fstat(fh.fileno()).st_size
                    if size > max_bytes:
                        raise ObjectTooLarge(self.where, key, size, max_bytes)
                    data = fh.read(max_bytes + 1)
                    if len(data) > max_bytes:  # grew since the fstat
                        raise ObjectTooLarge(self.where, key, len(data), max_bytes)
                    return data
                return fh.read()
        except FileNotFoundError:
            raise ObjectMissing(self.where, key) from None

    def get_to(self, key: str, dst: Path) -> None:
        path = self.path(key)
        tmp = dst.with_name(f".{dst.name}.{os.urandom(4).hex()}.tmp")
        try:
            with open_regular(path) as fh, open(open_new(tmp), "wb") as out:
                shutil.copyfileobj(fh, out, 1 << 20)
            os.replace(tmp, dst)
        except FileNotFoundError:
            raise ObjectMissing(self.where, key) from None
        finally:
            tmp.unlink(missing_ok=True)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        # The pread runs outside the lock, so a restore's reader threads read at once; the
        # descriptor is counted in use meanwhile, and an eviction or `forget` in another thread
        # leaves its closing to the last user (the kernel must not reuse it under a pread).
        with self._fd_lock:
            held = self._fds.get(key)
            if held is None:
                try:
                    with open_regular(self.path(key)) as fh:
                        held = _HeldFd(os.dup(fh.fileno()))
                except FileNotFoundError:
                    raise ObjectMissing(self.where, key) from None
                self._fds[key] = held
                if len(self._fds) > _OPEN_FDS:
                    self._fds.popitem(last=False)[1].retire()
            else:
                self._fds.move_to_end(key)
            held.users += 1
        try:
            return os.pread(held.fd, length, offset)
        finally:
            with self._fd_lock:
                held.users -= 1
                if held.retired and not held.users:
                    os.close(held.fd)

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.get_range(key, offset, length) for offset, length in ranges]

    def forget(self, key: str) -> None:
        """Close the descriptor kept for `key`, if any: the object was deleted by someone else
        (another process's prune), and an open descriptor would keep its disk space in use."""
        self._forget_fd(key)

    def _forget_fd(self, key: str) -> None:
        with self._fd_lock:
            held = self._fds.pop(key, None)
            if held is not None:
                held.retire()

    # --- listing ---------------------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        # refused, not listed as empty: an empty `snapshots/` would let a prune delete every pack
        self._refuse_symlinked_dirs(prefix.split("/")[:-1])
        yield from self._walk(self.root / prefix if prefix else self.root, prefix)

    def _walk(self, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), f"{prefix}{entry.name}/")
            elif entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(f"{prefix}{entry.name}", st.st_size, st.st_mtime)

    def non_files(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Every entry under `prefix` that `list` leaves out or walks into, as (key, what):
        what is "directory", "symbolic link" or "special file" (a FIFO, socket or device). Only a
        local directory can hold such names; the repository reports the ones where an object
        should be (a snapshot directory that is a symlink, a manifest that is a FIFO) as damage."""
        check_prefix(prefix)
        self._refuse_symlinked_dirs(prefix.split("/")[:-1])
        yield from self._walk_non_files(self.root / prefix if prefix else self.root, prefix)

    def _walk_non_files(self, directory: Path, prefix: str) -> Iterator[tuple[str, str]]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            key = f"{prefix}{entry.name}"
            if entry.is_symlink():
                yield key, "symbolic link"
            elif entry.is_dir(follow_symlinks=False):
                yield key, "directory"
                yield from self._walk_non_files(Path(entry.path), f"{key}/")
            elif not entry.is_file(follow_symlinks=False):
                yield key, "special file"

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.lstat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # behind a symlinked directory: not an object of the repository
            raise
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    # --- removing --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self.path(key)
        self._forget_fd(key)
        try:
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except FileNotFoundError:
            return  # the directory is gone too
        except OSError as exc:
            raise storage_error(exc, path) from exc
        if key.count("/") >= 2:
            # A directory of objects below a top-level one (`snapshots/<id>/`, `packs/ab/`)
            # goes with its last object, as an rmtree did: a key space has no empty directories.
            # A writer putting into it meanwhile makes it again (`_in_place`).
            try:
                os.rmdir(path.parent)
            except OSError:
                pass  # not empty (or gone): nothing to do

    def close(self) -> None:
        with self._fd_lock:
            for held in self._fds.values():
                held.retire()
            self._fds.clear()


class _HeldFd:
    """A pack's descriptor kept open for ranged reads, with the reads using it (under the
    backend's `_fd_lock`): one retired (evicted, forgotten) is closed once no read uses it."""

    __slots__ = ("fd", "retired", "users")

    def __init__(self, fd: int) -> None:
        self.fd, self.users, self.retired = fd, 0, False

    def retire(self) -> None:
        self.retired = True
        if not self.users:
            os.close(self.fd)
