"""A run's staging in the repository: found, reopened on resume, and removed once the run ends.

A backup run keeps its partial tree under `staging/<run_id>/` (a MongoDB backup one directory
per collection, `staging/<run_id>.c<N>/`) so a resume continues where its last checkpoint
left off and pruning keeps the chunks it names. This module owns that layout: adapters get
their directory from `Repository.staging(run_id)` (a `Staging`), and pruning lists the staged
trees through `staged_trees`, so what a backup stages is what pruning protects. Once nothing will resume from it davitd
removes it: when the run ends succeeded, cancelled or rolled back, and for a failed run (which
an operator may still `davit resume`) once a later run of its job has succeeded (see
`domain.runs.staging_unneeded`); at start-up the same rule is applied to every run the log
knows. Staging whose run this log does not know (another davitd sharing the repository) is
left alone.

An operator may still `davit resume` a superseded failed run after its staging is gone:
`reopen_staged` notices (the staged tree is shorter than the checkpoint says) and fails the run
with `StagingGone` rather than extending the file with zeros or publishing part of a tree.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from davit.adapters.repository.fsutil import FILE_MODE, make_dirs
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
    `staging/<run>.c<N>/`). Nothing is created until `create` or `reopen_tree`."""

    path: Path

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
        return reopen_staged(self.tree, length)

    def remove(self) -> None:
        """Remove the directory once its tree is published (gone already is fine)."""
        shutil.rmtree(self.path, ignore_errors=True)


def staging_path(root: Path, run_id: str, part: int | None = None) -> Path:
    """Where the repository at `root` keeps the staging of `run_id` (or of its `part`)."""
    if not run_id or "/" in run_id or "." in run_id or run_id.startswith("."):
        # `run_of` splits at the first dot: a run id with one would protect no staging of its own
        raise PermanentError(f"not a run id usable as a staging name: {run_id!r}")
    return root / STAGING / (run_id if part is None else f"{run_id}.c{part}")


def staged_trees(root: Path) -> list[Path]:
    """The staged trees of every run in the repository at `root` (what pruning must protect)."""
    return sorted((root / STAGING).glob(f"*/{TREE}"))


def run_of(staging_name: str) -> str:
    """The run id a staging directory belongs to (`<run>` or `<run>.c<N>`)."""
    return staging_name.split(".", 1)[0]


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
