"""A repository whose storage is not a local directory (issue 17, increment 1): everything a
backup, a restore and a prune do goes through the storage port. The backend here is a dict in
this process (`tests/dict_backend.py`): it has no `root` and no files, so any code path that
still built a repository path would fail, or write beside the test, where the checks below
look."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import zstandard

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import apply_retention
from davit.domain.errors import PermanentError
from davit.domain.jobs import Retention
from tests.dict_backend import DictBackend
from tests.integration.test_files_adapter import backup, make_tree, restore, snapshot_of, without_excluded

PASSPHRASE = "correct horse battery staple"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
def test_backup_list_restore_and_prune_work_on_a_backend_that_is_not_a_directory(tmp_path: Path, passphrase: str | None) -> None:
    backend = DictBackend()
    home = tmp_path / "davitd-home"
    repo = Repository.open(backend, passphrase=passphrase, local_dir=home)
    with pytest.raises(AttributeError):
        repo.root  # noqa: B018 - a remote repository has no directory to hand out

    source = tmp_path / "source"
    source.mkdir()
    make_tree(source)
    backup(repo, source, "b1")
    (source / "random.bin").write_bytes(os.urandom(700_000))  # content only b2 and b3 hold
    backup(repo, source, "b2")
    second = backup(repo, source, "b3")
    assert second.chunks_written == []  # deduplicated against what the backend holds

    # another process opening the same storage sees the same repository
    other = Repository.open(backend, passphrase=passphrase, local_dir=tmp_path / "other-home")
    assert [s.id for s in other.snapshots("job")] == ["b1", "b2", "b3"]
    assert all(s.where == f"dict://test/snapshots/{s.id}" for s in other.snapshots())

    restore(other, tmp_path / "out", snapshot="b2")
    assert snapshot_of(tmp_path / "out") == without_excluded(snapshot_of(source))

    packs_before = {k for k in backend.objects if k.startswith("packs/")}
    result = apply_retention(repo, "job", Retention(keep_last=1))
    assert result["forgotten"] == ["b1", "b2"] and result["packs_deleted"] + result["packs_rewritten"] > 0
    assert {k for k in backend.objects if k.startswith("packs/")} != packs_before
    assert not any(k.startswith(("snapshots/b1/", "snapshots/b2/")) for k in backend.objects)
    restore(Repository.open(backend, passphrase=passphrase, local_dir=home), tmp_path / "again", snapshot="b3")
    assert snapshot_of(tmp_path / "again") == without_excluded(snapshot_of(source))

    # all the repository is in the backend: this host kept only the (now removed) staging and
    # spool, and its cache of immutable objects: indexes of packs that exist, and trees
    kept = files_under(home)
    assert [f for f in kept if not f.startswith("cache/")] == []
    cached_indexes = {f.rsplit("/", 1)[1] for f in kept if "/index/" in f}
    assert cached_indexes and cached_indexes <= {k.rsplit("/", 1)[1] for k in backend.objects if k.startswith("index/")}
    assert {k.split("/", 1)[0] for k in backend.objects} == {"config.json", "index", "packs", "snapshots"}
    assert backend.calls[("list", "locks")] > 0  # the locks went through the port too


def test_a_second_publish_under_an_existing_snapshot_id_fails_and_leaves_the_snapshot_as_it_was(tmp_path: Path) -> None:
    """The manifest is the commit point and is created, never replaced."""
    backend = DictBackend()
    repo = Repository.open(backend, local_dir=tmp_path / "home")
    tree = zstandard.ZstdCompressor().compress(b'{"p": "f", "t": "f", "c": []}\n')
    manifest = {"id": "s0", "job": "j", "kind": "files", "created_at": "2024-01-01T00:00:00+00:00"}
    repo.publish_snapshot(manifest, tree)
    stored = dict(backend.objects)

    other_tree = zstandard.ZstdCompressor().compress(b'{"p": "g", "t": "f", "c": []}\n')
    with pytest.raises(PermanentError, match="snapshot s0 exists already"):
        repo.publish_snapshot({**manifest, "job": "other"}, other_tree)
    assert {k: v[0] for k, v in backend.objects.items() if k.startswith("snapshots/")} == {
        k: v[0] for k, v in stored.items() if k.startswith("snapshots/")
    }
    assert repo.resolve("s0").job == "j"


def test_two_processes_initialising_one_repository_at_once_agree_on_one_config(tmp_path: Path) -> None:
    backend = DictBackend()
    barrier = threading.Barrier(4)
    repos: list[Repository] = []

    def init(n: int) -> None:
        barrier.wait()
        repos.append(Repository.open(backend, passphrase=PASSPHRASE, local_dir=tmp_path / f"h{n}"))

    threads = [threading.Thread(target=init, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(repos) == 4 and backend.calls[("put_if_absent", "config.json")] == 4
    ids = {r.chunk_id(b"the same chunk") for r in repos}
    assert len(ids) == 1  # one key for all: the losers use the winner's config


def test_a_remote_repository_needs_a_local_directory_for_its_staging() -> None:
    with pytest.raises(ValueError, match="local_dir"):
        Repository.open(DictBackend())


def test_a_passphrase_change_goes_through_the_backend(tmp_path: Path) -> None:
    backend = DictBackend()
    Repository.open(backend, passphrase=PASSPHRASE, local_dir=tmp_path)
    Repository.change_passphrase(backend, PASSPHRASE, "a new one")
    assert Repository.open(backend, passphrase="a new one", local_dir=tmp_path).encrypted
