"""The repository's storage port: a flat key space of immutable-by-convention objects.

Everything the repository keeps (config, packs, indexes, trees, manifests, staged tree
segments, locks) is an object under a `/`-separated key relative to the repository, for
example `packs/ab/ab12...pack` or `snapshots/<id>/manifest.json`. Three backends implement it:
a local directory (`backends/local.py`), SFTP (`backends/sftp.py`) and S3-compatible object
storage (`backends/s3.py`); an in-memory one with fault injection serves the unit tests
(`backends/memory.py`). One contract suite (`tests/contract/`) runs against all of them.

What the repository relies on, and why each backend can give it:
- `put_if_absent` is create-exclusive *and* atomic with the content: the object appears whole
  or not at all, and of two concurrent creators exactly one wins. It is how a snapshot comes to
  exist (its manifest), how a lock is taken, and how a pack or index appears. Local: a hard
  link of a fsynced temporary file. SFTP: an exclusive temporary file, then a v3 rename (which
  OpenSSH refuses when the target exists). S3: a PUT with `If-None-Match: *`.
- `put` replaces an object whole (a rename or a single PUT): only for objects whose content
  may change (the config's sealed key after a passphrase change, a lock's refresh).
- `list` is read-after-write consistent: an object put before the call is listed. The lock
  protocol's create-then-list argument needs it (AWS S3 gives it; the contract suite checks).
- `mtime` of a listed or stat'ed object is the *server's* clock, so hosts with skewed clocks
  still agree on a lock's age.
- Reads are by whole object or by byte range; a range past the end returns what there is.
- `delete` of a missing object is not an error; a backend whose credential may not delete
  raises `BackendDenied`, so a backup-only daemon can say so instead of failing.

Errors: `ObjectMissing` for an absent key (a `KeyError`, not a `DavitError`: callers decide
what an absent object means); `BackendUnavailable` (retryable) once the backend's own retries
are spent; `BackendDenied` (permanent) when the server refuses the credential or the
operation; `StorageFull` when the server is out of space. No message carries a secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from davit.domain.errors import BackendDenied, BackendUnavailable, StorageFull

__all__ = [
    "Backend",
    "BackendDenied",
    "BackendUnavailable",
    "Caps",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectTooLarge",
    "StorageFull",
    "check_key",
    "check_prefix",
]


class ObjectMissing(KeyError):
    """No object under this key (never created, or deleted)."""

    def __init__(self, where: str, key: str) -> None:
        super().__init__(f"{where}: no object {key}")
        self.where = where
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0])


class ObjectTooLarge(ValueError):
    """An object is larger than its reader allows (a planted huge manifest or lock)."""

    def __init__(self, where: str, key: str, size: int, limit: int) -> None:
        super().__init__(f"{where}: {key} is {size} bytes, more than the {limit} allowed")
        self.key = key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch, by the server's clock


@dataclass(frozen=True)
class Caps:
    """What a backend can do, as probed or declared when it was opened."""

    # put_if_absent is exclusive on the server (not a check-then-put)
    conditional_create: bool = True
    # the credential may delete objects: None until found out (a probe or a first delete)
    can_delete: bool | None = True
    # objects are files of this host's file system: staging can live in the repository itself
    local_root: Path | None = None


Source = bytes | bytearray | memoryview | Path


class Backend(Protocol):
    """A repository's objects. Thread-safe: the repository calls it from worker threads and
    from the lock refresher at once."""

    where: str  # names the repository in messages ("sftp://user@host:22/path"), never a secret
    caps: Caps

    def put_if_absent(self, key: str, src: Source) -> bool:
        """Create `key` holding `src` (bytes, or the content of a local file) if no object of
        that name exists; True if this call created it, False if one exists (left untouched).
        A local file given as `src` must not be written to after the call (it may be deleted or
        renamed): the local backend makes it the object itself, by a hard link, not a copy."""
        ...

    def put(self, key: str, src: Source) -> None:
        """Create or replace `key` with `src`, atomically: readers see the old or the new whole."""
        ...

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The whole object. `ObjectMissing` if absent; with `max_bytes`, a larger object is
        refused with `ObjectTooLarge` before it is read into memory."""
        ...

    def get_to(self, key: str, dst: Path) -> None:
        """The whole object written to the local file `dst` (created 0600, replaced if it
        exists), for objects too large to hold in memory. `ObjectMissing` if absent."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (fewer at the end of the object). `ObjectMissing` if absent."""
        ...

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several (offset, length) ranges of one object, in the order asked."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (a directory-like prefix ends in `/`),
        recursively, in no particular order."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and mtime, or None if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; no error if it is absent. `BackendDenied` if the credential may not."""
        ...

    def close(self) -> None:
        """Release connections and handles; the backend is not used after."""
        ...


def check_key(key: str) -> str:
    """`key` if it is a clean relative key; `ValueError` otherwise. Keys are built by davit from
    ids it made or checked, never from a listing's raw names; this is the last fence before a
    backend turns one into a path, so `..`, absolute keys and empty segments never reach one."""
    if not key or key.startswith("/") or key.endswith("/") or "\x00" in key or "\\" in key:
        raise ValueError(f"not a repository key: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"not a repository key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` if it is "" or a clean key ending in `/`."""
    if prefix and (not prefix.endswith("/") or check_key(prefix[:-1]) is None):
        raise ValueError(f"not a repository prefix: {prefix!r}")
    return prefix
