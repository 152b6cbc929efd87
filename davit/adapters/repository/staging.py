"""A run's staging: found, reopened on resume, uploaded at each checkpoint, and removed once the run ends.

The staged tree is always a file of this host (adapters append to it, truncate it to a
checkpoint and fsync it). For a local repository it lives in the repository,
`<repository>/staging/`, where every davitd sharing it and its prune see it. For a remote
one it lives in a directory of davitd's home given when the repository is opened
(`Repository.open(..., local_dir=)`, `<local_dir>/staging/`), and a prune of another host cannot
see it: so `Staging.sync` uploads the lines staged since its last upload as a segment object
`staging/<run>[.c<N>]/<offset>-<sha8>.jsonl.zst` (`segments.py`), which that prune reads. Every
adapter calls `sync` after making its tree durable and before recording the checkpoint, so
whatever a recorded checkpoint names is protected on every host; the Repository also syncs
every staged tree opened through it before it releases a lock (`Repository.locked`), so a
pack sealed under that lock is never left named only by a file of this host. On a local
repository `sync` does nothing (there is no `Segments`). The functions below take `root`, the
directory holding `staging/` (the repository's, or the local one).

A backup run keeps its partial tree under `staging/<run_id>/` (a MongoDB backup one directory
per collection, `staging/<run_id>.c<N>/`) so a resume continues where its last checkpoint
left off and pruning keeps the chunks it names. This module owns that layout: adapters get
their directory from `Repository.staging(run_id)` (a `Staging`), and pruning lists the staged
trees through `staged_trees` (and the segments through `Segments.protected_chunks`), so what a
backup stages is what pruning protects. Once nothing will resume from it davitd removes it (the
segments too): when the run ends succeeded, cancelled or rolled back, and for a failed run (which
an operator may still `davit resume`) once a later run of its job has succeeded (see
`domain.runs.staging_unneeded`); at start-up the same rule is applied to every run the log
knows. Staging whose run this log does not know (another davitd sharing the repository) is
left alone.

An operator may still `davit resume` a superseded failed run after its staging is gone:
`reopen_staged` notices (the staged tree is shorter than the checkpoint says) and fails the run
with `StagingGone` rather than extending the file with zeros or publishing part of a tree.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from davit.adapters.repository.fsutil import FILE_MODE, make_dirs, open_regular, write_atomic
from davit.adapters.repository.segments import Segments, run_of
from davit.domain.errors import PermanentError

STAGING = "staging"
TREE = "tree.jsonl"  # the staged tree: JSON lines whose `c` key lists chunk ids (see repository.py)


class StagingGone(PermanentError):
    """A resumed run's staging is shorter than its last checkpoint: it was removed when the run ended."""

    def __init__(self, path: Path, expected: int, found: int) -> None:
        super().__init__(
            f"the staging of this run ({path}) holds {found} bytes where its last checkpoint recorded "
            f"{expected}: it was removed when the run ended, so the run cannot resume; start a new run of the job"
        )
        self.path = path


@dataclass(frozen=True)
class Staging:
    """One run's staging directory, or one part of it (a MongoDB backup's collection `<N>`:
    `staging/<run>.c<N>/`). Nothing is created until `create` or `reopen_tree`. `segments` is
    the remote repository's upload of staged trees (None for a local repository)."""

    path: Path
    segments: Segments | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """`<run>` or `<run>.c<N>`: the staging's name, here and in the repository."""
        return self.path.name

    @property
    def tree(self) -> Path:
        """The staged tree, the file pruning reads."""
        return self.path / TREE

    def create(self) -> Path:
        """The directory, created (0700 whatever the umask) if it is not there; its path. A symlink
        or file in its place (planted by someone who can write the repository) is refused: a
        staged tree written through a symlink would land outside the repository."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
            raise PermanentError(
                f"{self.path}: a run's staging must be a directory of the repository; something "
                f"else is in its place (a symlink or a file): remove it, then resume the run"
            )
        make_dirs(self.path)
        return self.path

    def reopen_tree(self, length: int) -> BinaryIO:
        """The staged tree opened for appending at a checkpoint's `length` (see `reopen_staged`),
        its directory created first."""
        self.create()
        created = not os.path.lexists(self.tree)
        fh = reopen_staged(self.tree, length)
        if self.segments is not None:
            others = any(
                p != self.path and os.path.lexists(p / TREE) for p in staging_of(self.path.parent.parent, run_of(self.name))
            )
            self.segments.opened(self.name, self.tree, length, created=created, others=others)
        return fh

    def sync(self, upto: int | None = None) -> None:
        """Make the staged tree's lines up to `upto` (a checkpoint's length, after the tree was
        fsynced; None: as far as whole lines go) visible to the prune of every host, before the
        checkpoint is recorded. Nothing to do for a local repository, whose prune reads the file.
        `RepositoryLockLost` if the lock this process writes under was lost."""
        if self.segments is not None:
            self.segments.sync(self.name, upto)

    def durable(self, tree: BinaryIO) -> int:
        """A checkpoint's staged tree, open for appending: flushed, fsynced and synced (`sync`);
        its length, the checkpoint's. Call it before recording the checkpoint."""
        tree.flush()
        os.fsync(tree.fileno())
        length = tree.tell()
        self.sync(length)
        return length

    def remove(self) -> None:
        """Remove the directory once its tree is published (gone already is fine), and its
        segments in the repository."""
        if self.segments is not None:  # first: a tree file gone means its segments are (`Segments.opened`)
            self.segments.remove_or_mark(run_of(self.name), [self.name])
        shutil.rmtree(self.path, ignore_errors=True)

    def chunk_list(self, upto: int | None = None) -> list[str]:
        """The chunk ids the staged tree's lines name (each line's `c`), in order, from its first
        `upto` bytes (a checkpoint's length; None: the whole file): a part's data as a backup
        of databases publishes it."""
        with open(self.tree, "rb") as fh:
            data = fh.read() if upto is None else fh.read(upto)
        return [c for line in data.splitlines() if line for c in json.loads(line)["c"]]

    def write_meta(self, name: str, data: bytes) -> None:
        """Keep `data` as the file `name` beside the staged tree (a MongoDB collection's options
        and indexes), whole or not at all."""
        write_atomic(self._meta(name), data, self.create())

    def read_meta(self, name: str) -> bytes:
        """What `write_meta` kept under `name`."""
        with open_regular(self._meta(name)) as fh:
            return fh.read()

    def _meta(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or name == TREE:
            raise ValueError(f"not a name for a staged file: {name!r}")
        return self.path / name


def staging_path(root: Path, run_id: str, part: int | None = None) -> Path:
    """Where the repository at `root` keeps the staging of `run_id` (or of its `part`)."""
    if not run_id or "/" in run_id or "." in run_id or run_id.startswith("."):
        # `run_of` splits at the first dot: a run id with one would protect no staging of its own
        raise PermanentError(f"not a run id usable as a staging name: {run_id!r}")
    return root / STAGING / (run_id if part is None else f"{run_id}.c{part}")


def staged_trees(root: Path) -> list[Path]:
    """The staged trees of every run in the repository at `root` (what pruning must protect)."""
    return sorted((root / STAGING).glob(f"*/{TREE}"))


def staged_runs(root: Path) -> list[str]:
    """The runs that have staging under `root`."""
    try:
        names = os.listdir(root / STAGING)
    except FileNotFoundError:
        return []
    return sorted({run_of(n) for n in names if n and not n.startswith(".")})


def staging_of(root: Path, run_id: str) -> list[Path]:
    """The staging directories of `run_id` in the repository at `root`."""
    base = root / STAGING
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(base / n for n in names if run_of(n) == run_id and n)


def remove_run_staging(root: Path, run_id: str) -> list[str]:
    """Remove the staging of an ended run; the paths removed."""
    return [remove_staging(path) for path in staging_of(root, run_id)]


def remove_staging(path: Path) -> str:
    """Remove one staging directory (a symlink or stray file in its place is unlinked, never
    followed); its path."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
    return str(path)


def ended_runs_staging(root: Path, ended: set[str]) -> list[Path]:
    """Staging directories in the repository at `root` of runs in `ended`."""
    base = root / STAGING
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(base / n for n in names if run_of(n) in ended)


def reopen_staged(path: Path, length: int) -> BinaryIO:
    """The staged file at `path`, opened for appending at `length` (a checkpoint's length: what
    lies past it is a torn write the resumed run redoes). `StagingGone` if it is shorter."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    fh = open(fd, "ab+")  # noqa: SIM115 - handed to the caller
    size = os.fstat(fd).st_size
    if size < length:
        fh.close()
        raise StagingGone(path, length, size)
    fh.truncate(length)
    fh.seek(0, os.SEEK_END)
    return fh
