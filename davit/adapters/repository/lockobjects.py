"""The objects of `locks/` and the four operations the lock protocol (`locks.py`) needs of them.

Kept apart from the protocol so that what a backend must give (create-if-absent, a listing with
the *server's* mtime, read, delete) and how object names are read from a hostile listing are
in one small place.

Names under `locks/` (the id is 32 lowercase hex digits, random):
- `<id>.json`                 format 1: one object per lock, refreshed by overwriting it. Written
                              by davit before lock format 2; still read (and taken over when stale).
- `<id>.<gen:06d>.json`       format 2: generation `gen` of the lock `id`. A refresh creates the
                              next generation (create-if-absent, never an overwrite), then deletes
                              the older ones it may. The newest generation is the lock's state.
- `<id>.released`             the holder released `id` but may not delete (a backup-only
                              credential): the id is gone; whoever may delete removes it all.
Any other name is not a lock and is passed over (never read, never deleted).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge
from davit.adapters.repository.fsutil import NotRegularFile, fsync_dir, storage_error

PREFIX = "locks/"
MAX_LOCK_BYTES = 1 << 16  # a lock object is a few hundred bytes; a larger one is planted

_LOCK_NAME = re.compile(r"([0-9a-f]{32})(?:\.([0-9]{6,12}))?\.json")
_RELEASED_NAME = re.compile(r"([0-9a-f]{32})\.released")
V1_GEN = -1  # the generation number a format-1 `<id>.json` is counted as: older than any of format 2


@dataclass(frozen=True)
class LockObject:
    """An object present under `locks/`: its name there and its mtime by the server's clock."""

    name: str
    mtime: float


class LockBackend(Protocol):
    """The four operations the protocol needs from a storage backend. No overwrite: a
    write-only credential (create but not replace or delete) can still take locks."""

    where: str  # names the repository in messages

    def create(self, name: str, data: bytes) -> bool:
        """Create `name` holding `data` if no object of that name exists; False if one does.
        The object appears whole or not at all."""

    def list(self) -> list[LockObject]:
        """The objects now under `locks/`, with their mtimes by the server's clock. Read after
        write consistent: an object created before the call is listed."""

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None if it is gone."""

    def delete(self, name: str) -> None:
        """Remove `name`; no error if it is already gone; `BackendDenied` if the credential may not."""


def gen_name(lock_id: str, gen: int) -> str:
    return f"{lock_id}.json" if gen == V1_GEN else f"{lock_id}.{gen:06d}.json"


def released_name(lock_id: str) -> str:
    return f"{lock_id}.released"


@dataclass
class LockObjects:
    """What the listing holds of one lock id: its generations (gen -> mtime) and whether a
    released marker is present."""

    id: str
    gens: dict[int, float] = field(default_factory=dict)
    released: bool = False

    @property
    def newest(self) -> int | None:
        return max(self.gens) if self.gens else None

    def names(self) -> list[str]:
        """Every object of this id, the generations newest first, the marker last (deleted
        last, so a removal cut short still reads as released)."""
        names = [gen_name(self.id, g) for g in sorted(self.gens, reverse=True)]
        return [*names, released_name(self.id)] if self.released else names


def group_by_id(objects: Iterable[LockObject]) -> dict[str, LockObjects]:
    """The listing's lock objects by id. Names that are no lock object are left out: a listing
    is hostile input, and a stray object must neither block anyone nor be deleted."""
    groups: dict[str, LockObjects] = {}
    for obj in objects:
        lock = _LOCK_NAME.fullmatch(obj.name)
        if lock is not None:
            gen = V1_GEN if lock.group(2) is None else int(lock.group(2))
            groups.setdefault(lock.group(1), LockObjects(lock.group(1))).gens[gen] = obj.mtime
            continue
        released = _RELEASED_NAME.fullmatch(obj.name)
        if released is not None:
            groups.setdefault(released.group(1), LockObjects(released.group(1))).released = True
    return groups


class DirectoryLockBackend:
    """Lock objects as files of a local directory (0700; files 0600). The "server's clock" is
    this host's: a file's mtime."""

    def __init__(self, directory: Path, tmp_dir: Path) -> None:
        self.directory = directory
        self.tmp_dir = tmp_dir
        self.where = str(directory.parent.resolve())

    def _write_tmp(self, data: bytes) -> Path:
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.tmp_dir / f".lock.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def create(self, name: str, data: bytes) -> bool:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        try:
            tmp = self._write_tmp(data)
            try:
                os.link(tmp, self.directory / name)  # fails if the name exists: create-exclusive
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(self.directory)
        except OSError as exc:
            raise storage_error(exc, self.directory) from exc
        return True

    def list(self) -> list[LockObject]:
        # Only regular files are lock objects (creation links one): a directory, symlink or
        # FIFO of a lock's name is passed over, or one stray entry would stop (or hang, for a
        # FIFO's open) every lock taken on this repository.
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.append(LockObject(entry.name, st.st_mtime))
        except FileNotFoundError:
            return []
        return found

    def read(self, name: str) -> bytes | None:
        try:
            fd = os.open(self.directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return os.read(fd, MAX_LOCK_BYTES)
        finally:
            os.close(fd)

    def delete(self, name: str) -> None:
        try:
            os.unlink(self.directory / name)
            fsync_dir(self.directory)
        except FileNotFoundError:
            pass


class StorageLockBackend:
    """`locks/` of a repository's storage port (`backend.py`): what the lock protocol needs, on
    any backend (local, SFTP, S3, memory)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.where = backend.where

    def create(self, name: str, data: bytes) -> bool:
        return self.backend.put_if_absent(PREFIX + name, data)

    def list(self) -> list[LockObject]:
        found = []
        for info in self.backend.list(PREFIX):
            name = info.key[len(PREFIX) :]
            if info.key.startswith(PREFIX) and name and "/" not in name:
                found.append(LockObject(name, info.mtime))
        return found

    def read(self, name: str) -> bytes | None:
        # Only a regular file is a lock (creation links one): a directory, symlink or FIFO of
        # that name in a local repository is passed over (the listing leaves them out; this is
        # for one planted in between), or one stray entry would stop (or hang, for a FIFO's
        # open) every lock taken on this repository.
        try:
            return self.backend.get(PREFIX + name, max_bytes=MAX_LOCK_BYTES)
        except (ObjectMissing, NotRegularFile):
            return None
        except ObjectTooLarge:
            return b""  # no lock davit writes is that large: it does not parse, and is stale
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def delete(self, name: str) -> None:
        self.backend.delete(PREFIX + name)
