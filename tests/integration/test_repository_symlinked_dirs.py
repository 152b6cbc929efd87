"""A local repository whose *directories* someone replaced by symlinks (`tmp -> $HOME`,
`index -> /elsewhere`, `packs -> /elsewhere`, a snapshot's directory): nothing outside the
repository is deleted, written or read through them. Anyone who can write a shared repository
directory can plant one; before, a prune's clean-up of old `tmp/` debris walked the symlink
and deleted every file older than an hour in the directory it named."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import prune
from tests.integration.test_files_adapter import backup


def _an_hour_old(path: Path) -> None:
    old = time.time() - 7200
    os.utime(path, (old, old))


def _replace_by_symlink(directory: Path, target: Path) -> None:
    shutil.rmtree(directory)
    directory.symlink_to(target)


def test_a_prune_never_deletes_old_files_of_the_directory_a_symlinked_tmp_names(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    for name in ("thesis.tex", "notes/todo.txt"):
        (home / name).write_text("years of work")
        _an_hour_old(home / name)
    _replace_by_symlink(repo.root / "tmp", home)
    with pytest.raises(OSError) as refused:
        prune(Repository.open(repo.root, create=False))
    assert refused.value.errno == errno.ELOOP
    assert "tmp" in str(refused.value)
    assert (home / "thesis.tex").read_text() == "years of work"
    assert (home / "notes" / "todo.txt").read_text() == "years of work"


def test_a_listing_through_a_symlinked_prefix_is_refused_not_walked(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("not the repository's")
    backend.root.mkdir()
    (backend.root / "index").symlink_to(elsewhere)
    with pytest.raises(OSError) as refused:
        list(backend.list("index/"))
    assert refused.value.errno == errno.ELOOP
    with pytest.raises(OSError):
        backend.get("index/secret.txt")
    assert backend.stat("index/secret.txt") is None


@pytest.mark.parametrize("directory", ["index", "packs", "tmp"])
def test_a_backup_writes_nothing_into_the_directory_a_symlinked_repository_directory_names(
    tmp_path: Path, directory: str
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("hello " * 1000)
    repo = Repository.open(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _replace_by_symlink(repo.root / directory, elsewhere)
    with pytest.raises(OSError):
        backup(Repository.open(repo.root, create=False, load_index=False), source, "b1")
    assert [p.name for p in elsewhere.rglob("*") if p.is_file()] == []


def test_a_packs_subdirectory_symlinked_to_the_root_is_not_written_through(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (backend.root / "packs").mkdir(parents=True)
    (backend.root / "packs" / "ab").symlink_to(elsewhere)
    with pytest.raises(OSError):
        backend.put_if_absent("packs/ab/ab12.pack", b"pack bytes")
    with pytest.raises(OSError):
        backend.delete("packs/ab/ab12.pack")
    assert list(elsewhere.iterdir()) == []


def test_a_snapshot_directory_that_is_a_symlink_is_damaged_and_its_id_taken(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("hello")
    repo = Repository.open(tmp_path / "repo")
    backup(repo, source, "b1")
    (repo.root / "snapshots" / "b2").symlink_to(repo.root / "snapshots" / "b1")
    assert [s.id for s in repo.snapshots()] == ["b1"]
    assert [(d.id, d.reason) for d in repo.damaged_snapshots()] == [("b2", "snapshot directory is a symbolic link")]
    assert repo.snapshot_exists("b2")
