"""Which snapshots a repository holds: listed from `snapshots/<id>/manifest.json` objects.

A snapshot exists once its manifest does (`manifests.py`); a `snapshots/<id>/` that has only a
tree is a publish in progress and is not listed. A manifest that cannot be used is listed as
damaged (`DamagedSnapshot`), never used.

Ids come from a listing, so they are checked before they become keys (`check_key`): a name
that could not be davit's is passed over. A local repository can also hold names no object
store can (a snapshot directory that is a symlink, a manifest that is a FIFO or a directory):
its backend reports them (`LocalBackend.non_files`) and they are listed as damaged, as before
the storage port existed.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from davit.adapters.repository.backend import Backend, check_key
from davit.adapters.repository.crypto import RepositoryKey
from davit.adapters.repository.manifests import MANIFEST, Loaded, load_manifest

PREFIX = "snapshots/"


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    job: str
    kind: str
    created_at: str
    run_id: str
    source: dict[str, Any]
    stats: dict[str, Any]
    where: str  # names the snapshot in messages (the repository's `where` and its id)
    # True: its MAC verified under the repository key; None: nothing to verify it with (a plain
    # repository, or an encrypted one opened without its passphrase, for listing)
    authenticated: bool | None = None
    parent: str | None = None
    tree_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "kind": self.kind,
            "created_at": self.created_at,
            "run_id": self.run_id,
            "source": self.source,
            "stats": self.stats,
            "damaged": False,
        }


@dataclass(frozen=True)
class DamagedSnapshot:
    """A snapshot whose manifest cannot be used, and why: listed, never used."""

    id: str  # the name of its `snapshots/<id>/`
    reason: str
    where: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "damaged": True, "reason": self.reason}


@runtime_checkable
class HasNonFiles(Protocol):
    """A backend whose storage can hold names that are not objects (a local directory)."""

    def non_files(self, prefix: str) -> Iterator[tuple[str, str]]: ...


def snapshot_where(backend: Backend, snapshot_id: str) -> str:
    return f"{backend.where}/{PREFIX}{snapshot_id}"


def _valid_id(name: str) -> bool:
    try:
        check_key(f"{PREFIX}{name}/{MANIFEST}")
    except ValueError:
        return False
    return True


def _listed(backend: Backend) -> tuple[set[str], dict[str, str]]:
    """The ids with a manifest (or something in a manifest's place), and the ids whose
    directory is itself damaged, with why."""
    ids: set[str] = set()
    damaged: dict[str, str] = {}
    for info in backend.list(PREFIX):
        name, _, rest = info.key[len(PREFIX) :].partition("/")
        if rest == MANIFEST and _valid_id(name):
            ids.add(name)
    if isinstance(backend, HasNonFiles):
        for key, what in backend.non_files(PREFIX):
            name, _, rest = key[len(PREFIX) :].partition("/")
            if not _valid_id(name):
                continue
            if not rest and what == "symbolic link":
                damaged[name] = "snapshot directory is a symbolic link"
            elif rest == MANIFEST:
                ids.add(name)  # reading it tells what it is instead of a manifest
    return ids - damaged.keys(), damaged


def scan(backend: Backend, key: RepositoryKey | None, encrypted: bool) -> list[SnapshotInfo | DamagedSnapshot]:
    """Every snapshot of the repository, usable or damaged."""
    ids, damaged = _listed(backend)
    found: list[SnapshotInfo | DamagedSnapshot] = [
        DamagedSnapshot(name, reason, snapshot_where(backend, name)) for name, reason in damaged.items()
    ]
    for name in ids:
        loaded = load_manifest(backend, name, key, encrypted)
        if loaded is None:
            continue  # removed since it was listed: a snapshot being forgotten
        if isinstance(loaded, Loaded):
            found.append(info_of(loaded, snapshot_where(backend, name)))
        else:
            found.append(DamagedSnapshot(name, loaded, snapshot_where(backend, name)))
    return found


def exists(backend: Backend, snapshot_id: str) -> bool:
    """Whether `snapshot_id` has a manifest (usable or damaged: either way the id is taken)."""
    key = f"{PREFIX}{snapshot_id}/{MANIFEST}"
    if backend.stat(check_key(key)) is not None:
        return True
    if isinstance(backend, HasNonFiles):
        try:
            return any(found == key for found, _ in backend.non_files(f"{PREFIX}{snapshot_id}/"))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return True  # its directory is a symlink: listed as damaged, and the id is taken
            raise
    return False


def info_of(loaded: Loaded, where: str) -> SnapshotInfo:
    m = loaded.manifest
    return SnapshotInfo(
        id=m["id"],
        job=m["job"],
        kind=m["kind"],
        created_at=m["created_at"],
        run_id=m.get("run_id", ""),
        source=m.get("source", {}),
        stats=m.get("stats", {}),
        where=where,
        authenticated=loaded.authenticated,
        parent=m.get("parent"),
        tree_sha256=m["tree_sha256"],
    )
