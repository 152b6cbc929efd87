"""This host's cache of a remote repository's immutable objects, under davitd's home.

A remote repository is paid for in round trips. Two kinds of its objects never change once
created, so a copy kept here is as good as the original as long as it is checked:
- `index/<pack>.idx`: a pack's index. `index/` is still listed afresh on every lock taken (which
  packs exist is never taken from here); only the content of an index listed is read from here
  when present, so a new davitd process does not fetch every index again. Each read is checked
  by the index's own checksum; one that fails is fetched again.
- `trees/<sha256>`: a snapshot's stored tree by the sha256 its manifest records (the parent
  tree a files backup compares against: its "files cache"). Every read hashes the file first
  and fetches it again on a mismatch, so an edited cache costs a download, never a wrong tree.
  The trees kept are bounded (`tree_budget` bytes, least recently used go first).

The directory is `<local_dir>/cache/<key>/` where `key` is derived from the repository's config
uuid and its location (`cache_key`), 0700 like the rest of davitd's home. Several Repository
objects of one process may share it: files appear by rename, whole, and a file removed while
another reader has it open stays readable to that reader.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from davit.adapters.repository.fsutil import make_dirs, open_new

TREE_BUDGET = 1 << 30
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{32}")
_READ = 1 << 20


def cache_key(uuid: object, where: str) -> str:
    """The cache directory's name for a repository: its config uuid (a repository created
    before uuids has none) together with its location, hashed (the uuid is read from the
    repository: never a path component as it is)."""
    ident = uuid if isinstance(uuid, str) and _UUID.fullmatch(uuid) else ""
    return hashlib.sha256(f"{ident}\0{where}".encode()).hexdigest()[:32]


class LocalCache:
    def __init__(self, root: Path, tree_budget: int = TREE_BUDGET) -> None:
        self.directory = root
        self.tree_budget = tree_budget
        self._indexes = root / "index"
        self._trees = root / "trees"
        make_dirs(self._indexes)
        make_dirs(self._trees)

    # --- indexes -------------------------------------------------------------------------------

    def index(self, pack: str) -> bytes | None:
        """The cached index of `pack` (unchecked: the caller decodes it, which checks it)."""
        try:
            return (self._indexes / f"{pack}.idx").read_bytes()
        except OSError:
            return None

    def keep_index(self, pack: str, data: bytes) -> None:
        self._place(self._indexes / f"{pack}.idx", data)

    def drop_index(self, pack: str) -> None:
        (self._indexes / f"{pack}.idx").unlink(missing_ok=True)

    def drop_indexes_except(self, present: set[str]) -> None:
        """Forget the indexes of packs that are gone (pruned while no process of this host looked)."""
        for name in os.listdir(self._indexes):
            if name.endswith(".idx") and name[: -len(".idx")] not in present:
                (self._indexes / name).unlink(missing_ok=True)

    # --- trees ---------------------------------------------------------------------------------

    def tree(self, sha256: str, fetch_to: Callable[[Path], None]) -> BinaryIO | None:
        """The stored tree whose sha256 is `sha256`, open at its start and checked: from the cache,
        else fetched with `fetch_to(path)` and kept. None if what was fetched does not match (the
        caller reports the mismatch as it always has)."""
        if not _SHA256.fullmatch(sha256):
            return None
        path = self._trees / sha256
        fh = self._checked(path, sha256)
        if fh is not None:
            os.utime(path)  # recently used
            return fh
        tmp = self._trees / f".{sha256}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            fetch_to(tmp)
            fh = self._checked(tmp, sha256)
            if fh is None:
                return None
            if os.fstat(fh.fileno()).st_size <= self.tree_budget:
                os.replace(tmp, path)
                self._evict(keep=path)
            return fh
        finally:
            tmp.unlink(missing_ok=True)

    def _checked(self, path: Path, sha256: str) -> BinaryIO | None:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - handed to the caller
        except OSError:
            return None
        digest = hashlib.sha256()
        while block := fh.read(_READ):
            digest.update(block)
        if digest.hexdigest() != sha256:
            fh.close()
            path.unlink(missing_ok=True)  # edited or torn: fetched again
            return None
        fh.seek(0)
        return fh

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used trees until they fit the budget."""
        entries = []
        for entry in os.scandir(self._trees):
            if _SHA256.fullmatch(entry.name):
                st = entry.stat(follow_symlinks=False)
                entries.append((st.st_mtime, st.st_size, entry.name))
        total = sum(size for _, size, _ in entries)
        for _, size, name in sorted(entries):
            if total <= self.tree_budget:
                break
            if name != keep.name:
                (self._trees / name).unlink(missing_ok=True)
                total -= size

    # --- left-overs ----------------------------------------------------------------------------

    def clean(self, grace_seconds: float) -> None:
        """Temporary files of processes that died, older than `grace_seconds` (a younger one may
        be another Repository object's, of this very process, at work)."""
        remove_old_files(self._trees, grace_seconds, lambda name: name.startswith("."))
        remove_old_files(self._indexes, grace_seconds, lambda name: name.startswith("."))

    def _place(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            with open(open_new(tmp), "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def remove_old_files(directory: Path, grace_seconds: float, which: Callable[[str], bool] = lambda _: True) -> int:
    """Remove the regular files in `directory` (not below) whose mtime is more than
    `grace_seconds` old and whose name `which` accepts; how many."""
    cutoff = time.time() - grace_seconds
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if entry.is_file(follow_symlinks=False) and st.st_mtime < cutoff and which(entry.name):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
