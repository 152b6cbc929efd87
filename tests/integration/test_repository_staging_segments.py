"""Staging segments (issue 17, plan §2 note b): a remote repository's backup in progress is
protected from the prune of another host.

A remote repository keeps a run's staged tree in the backing-up davitd's home, where a prune
run by another host cannot look. Each checkpoint therefore uploads the lines staged since the
last one as `staging/<run>/<offset>-<sha8>.jsonl.zst`, and a prune reads those. The storage
here is `MemoryBackend` (the same contract as SFTP and S3); each "host" is a Repository
object with a home of its own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.retention import prune
from davit.adapters.repository.tuning import Tuning
from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.domain.errors import BackendUnavailable, RunStopped
from tests.fakes import MemoryRunContext
from tests.integration.test_files_adapter import backup, restore, snapshot_of
from tests.integration.test_repository_locks import random_tree

# one pack per checkpoint, a checkpoint every few files
TINY = Tuning(chunk_size=64 << 10, pack_size=200 << 10, checkpoint_seconds=60, inflight_chunks=4)


def stopped_backup(repo: Repository, source: Path, run_id: str) -> MemoryRunContext:
    """A backup of `source` stopped right after its first checkpoint (davitd shut down): its
    staged tree stays in this host's home, its packs are sealed, nothing is published."""
    ctx = MemoryRunContext(run_id=run_id, stop_after_checkpoints=1)
    with pytest.raises(RunStopped):
        backup(repo, source, run_id, ctx, tuning=TINY)
    assert ctx.chunks_written, "the first checkpoint sealed no pack"
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    return ctx


def segment_keys(storage: MemoryBackend, run_id: str) -> list[str]:
    return sorted(o.key for o in storage.list(f"staging/{run_id}/"))


def test_a_prune_on_another_host_keeps_the_chunks_of_a_backup_stopped_after_its_first_checkpoint(tmp_path: Path) -> None:
    """Host A's backup r2 stops after sealing its first packs. Host B's prune (which cannot see
    A's home) reads A's segments and keeps those chunks; r2 resumes on A and publishes a
    snapshot that restores byte for byte."""
    storage = MemoryBackend()
    host_a = Repository.open(storage, local_dir=tmp_path / "a-home")
    backup(host_a, random_tree(tmp_path / "old", files=2), "r1", tuning=TINY)
    source = random_tree(tmp_path / "src", files=8, size=100_000)
    ctx = stopped_backup(host_a, source, "r2")
    sealed = {bytes.fromhex(c) for c in ctx.chunks_written}
    assert segment_keys(storage, "r2"), "the checkpoint uploaded no segment"

    host_b = Repository.open(storage, local_dir=tmp_path / "b-home")
    prune(host_b)
    assert host_b.missing_chunks(sealed) == set()

    resumed = Repository.open(storage, local_dir=tmp_path / "a-home")  # davitd restarted on host A
    backup(resumed, source, "r2", ctx, tuning=TINY)
    restore(resumed, tmp_path / "out", snapshot="r2")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)
    assert segment_keys(storage, "r2") == []  # removed with the staging once published


def test_without_segments_that_prune_deletes_the_stopped_backups_chunks(tmp_path: Path) -> None:
    """The threat the segments answer, shown: with the upload switched off, the same prune
    deletes every chunk the stopped backup sealed, and the resumed run must refuse to publish."""
    storage = MemoryBackend()
    host_a = Repository.open(storage, local_dir=tmp_path / "a-home")
    host_a.segments = None  # as before segments: the staged tree is only a file of host A
    source = random_tree(tmp_path / "src", files=8, size=100_000)
    ctx = stopped_backup(host_a, source, "r2")
    assert list(storage.list("staging/")) == []

    host_b = Repository.open(storage, local_dir=tmp_path / "b-home")
    prune(host_b)
    sealed = {bytes.fromhex(c) for c in ctx.chunks_written}
    assert host_b.missing_chunks(sealed) == sealed


def test_a_segment_upload_torn_off_fails_the_checkpoint_and_the_resumed_run_uploads_it_again(tmp_path: Path) -> None:
    """Kill -9 between the request and its answer: the first segment upload breaks off (the
    object never appears), so its checkpoint is not recorded; the resumed run uploads the lines
    again and publishes. Torn *after* the server stored it, the retry finds its own object."""
    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    source = random_tree(tmp_path / "src", files=8, size=100_000)
    storage.tear("staging/")
    ctx = MemoryRunContext(run_id="r1")
    with pytest.raises(BackendUnavailable):
        backup(repo, source, "r1", ctx, tuning=TINY)
    assert ctx.checkpoints == []  # nothing recorded past a segment that did not land
    storage.tear("staging/", after_store=True)
    ctx.stop.clear()
    with pytest.raises(BackendUnavailable):
        backup(Repository.open(storage, local_dir=tmp_path / "home"), source, "r1", ctx, tuning=TINY)
    assert segment_keys(storage, "r1") and ctx.checkpoints == []

    again = Repository.open(storage, local_dir=tmp_path / "home")
    backup(again, source, "r1", ctx, tuning=TINY)
    restore(again, tmp_path / "out", snapshot="r1")
    assert snapshot_of(tmp_path / "out") == snapshot_of(source)


def test_a_run_ended_by_a_davitd_that_may_not_delete_is_marked_and_a_later_prune_removes_its_segments(tmp_path: Path) -> None:
    """A backup-only credential cannot delete a failed run's segments: davitd marks the run
    ended. Within the grace period the segments still protect (the marker may be a forgery
    against a running backup); after it, a prune that may delete takes the segments and the
    marker, and the chunks only they named."""
    server = [time.time()]
    storage = MemoryBackend(clock=lambda: server[0])
    host_a = Repository.open(storage, local_dir=tmp_path / "a-home")
    ctx = stopped_backup(host_a, random_tree(tmp_path / "src", files=8, size=100_000), "r2")
    sealed = {bytes.fromhex(c) for c in ctx.chunks_written}

    storage.deny("delete")
    removed = host_a.remove_staging({"r2"})
    assert removed[-1] == "memory://repository/staging/r2/ended"
    assert "staging/r2/ended" in segment_keys(storage, "r2")
    storage.allow("delete")

    host_b = Repository.open(storage, local_dir=tmp_path / "b-home")
    prune(host_b)  # the marker is younger than the grace period: the segments still protect
    assert host_b.missing_chunks(sealed) == set()
    assert segment_keys(storage, "r2")

    server[0] -= 7200  # the marker ages past the grace period (by the storage's clock)
    storage.put("staging/r2/ended", b"")
    result = prune(host_b)
    assert result["ended_stagings_removed"] == 1
    assert segment_keys(storage, "r2") == []
    assert host_b.missing_chunks(sealed) == sealed


def test_a_prune_reads_segments_leniently_and_never_loses_protection_to_a_damaged_one(tmp_path: Path) -> None:
    """Segments are read only to protect: a line that does not parse, or a segment that does not
    decompress, protects what could be read and deletes nothing it names."""
    import zstandard

    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    kept = _stored(repo, b"kept by a segment")
    damaged_line = zstandard.ZstdCompressor().compress(b'{"c": ["zz"]}\nnot json\n{"c": ["' + kept.hex().encode() + b'"]}\n')
    storage.put_if_absent("staging/r9/0000000000000000-00000000.jsonl.zst", damaged_line)
    storage.put_if_absent("staging/r9/0000000000000100-00000000.jsonl.zst", b"not zstd at all")
    gone = _stored(repo, b"named by nothing")
    prune(repo)
    assert repo.missing_chunks({kept, gone}) == {gone}


def _stored(repo: Repository, data: bytes) -> bytes:
    cid, stored, codec = repo.encode(data)
    assert stored is not None
    with repo.locked(exclusive=False):
        pack = repo.new_pack()
        pack.add(cid, stored, len(data), codec)
        repo.seal_pack(pack)
    return cid


def test_davitd_asking_again_to_remove_the_staging_of_runs_already_cleared_lists_nothing(tmp_path: Path) -> None:
    """davitd asks to remove the staging of every ended run at each run's end: once a listing
    found a run's segments gone (or removed them), asking again costs no request of the server."""
    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    stopped_backup(repo, random_tree(tmp_path / "src", files=8, size=100_000), "r1")
    assert segment_keys(storage, "r1")

    def listings_of(run_ids: set[str]) -> int:
        before = storage.counts.total("list", "staging/")
        repo.remove_staging(run_ids)
        return storage.counts.total("list", "staging/") - before

    assert listings_of({"r1", "r0"}) == 1  # r1's segments removed, r0 had none
    assert segment_keys(storage, "r1") == []
    assert listings_of({"r0", "r1"}) == 0  # settled: not listed again
    assert listings_of({"r1", "r2"}) == 1  # a run not seen before


def staging_listings(storage: MemoryBackend) -> int:
    return storage.counts.total("list", "staging/")


def test_a_backup_begun_and_published_by_one_process_removes_its_segments_without_listing_staging(tmp_path: Path) -> None:
    """An unchanged backup on a remote repository lists each area once at most (issue 17): a run
    that created its staged tree here knows every segment it uploaded, so its publish and its
    run's end delete them by name, and `staging/` is not listed for it at all."""
    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    before = staging_listings(storage)
    backup(repo, random_tree(tmp_path / "src", files=8, size=100_000), "r1", tuning=TINY)
    assert storage.counts.total("put_if_absent", "staging/") >= 2, "the checkpoints uploaded no segments"
    assert repo.remove_staging({"r1"}) == []  # published: gone already
    assert staging_listings(storage) == before
    assert segment_keys(storage, "r1") == []


def test_a_backup_resumed_by_a_restarted_davitd_removes_the_segments_of_the_first_process_too(tmp_path: Path) -> None:
    """The first process uploaded segments and was stopped; the restarted one reopens a staged
    tree it did not create, so it cannot name every segment: it lists, and none is left."""
    storage = MemoryBackend()
    first = Repository.open(storage, local_dir=tmp_path / "home")
    source = random_tree(tmp_path / "src", files=8, size=100_000)
    ctx = stopped_backup(first, source, "r1")
    earlier = segment_keys(storage, "r1")
    assert earlier
    first.close()

    restarted = Repository.open(storage, local_dir=tmp_path / "home")
    before = staging_listings(storage)
    backup(restarted, source, "r1", ctx, tuning=TINY)
    assert staging_listings(storage) > before  # the publish listed what the first process left
    assert segment_keys(storage, "r1") == []
    restarted.remove_staging({"r1"})
    assert segment_keys(storage, "r1") == []


def test_a_run_whose_other_part_has_a_staged_tree_here_is_not_taken_as_begun_by_this_process(tmp_path: Path) -> None:
    """A MongoDB backup stages one tree per collection: a restarted davitd that creates the tree
    of collection 2 while collection 1's tree (with its segments) is still here must not take the
    run as its own from the start, or the run's end would leave collection 1's segments behind."""
    storage = MemoryBackend()
    first = Repository.open(storage, local_dir=tmp_path / "home")
    with first.staging("r1", part=1).reopen_tree(0) as fh:
        fh.write(b'{"c": ["' + b"ab" * 32 + b'"]}\n')
        first.staging("r1", part=1).durable(fh)
    assert segment_keys(storage, "r1.c1")
    first.close()

    restarted = Repository.open(storage, local_dir=tmp_path / "home")
    with restarted.staging("r1", part=2).reopen_tree(0) as fh:
        fh.write(b'{"c": ["' + b"cd" * 32 + b'"]}\n')
        restarted.staging("r1", part=2).durable(fh)
    restarted.remove_staging({"r1"})
    assert segment_keys(storage, "r1.c1") == [] and segment_keys(storage, "r1.c2") == []


def test_segments_that_could_not_be_deleted_keep_their_staged_tree_on_this_host(tmp_path: Path) -> None:
    """The staged tree is removed only after its segments: were it removed first and davitd
    killed in between, a later run could no longer tell that segments of that staging exist."""
    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    staging = repo.staging("r1")
    with staging.reopen_tree(0) as fh:
        fh.write(b'{"c": []}\n')
        staging.durable(fh)
    storage.unavailable(ops={"delete"})
    with pytest.raises(BackendUnavailable):
        staging.remove()
    assert staging.tree.exists()
    storage.available()
    staging.remove()
    assert not staging.path.exists() and segment_keys(storage, "r1") == []


def test_a_segment_stored_whose_answer_was_lost_is_still_deleted_by_name(tmp_path: Path) -> None:
    """The server stored a segment but the connection broke before it said so: the run fails
    its checkpoint, and the segment is still among those it deletes by name at its end."""
    storage = MemoryBackend()
    repo = Repository.open(storage, local_dir=tmp_path / "home")
    staging = repo.staging("r1")
    storage.tear("staging/r1/", after_store=True)
    with staging.reopen_tree(0) as fh, pytest.raises(BackendUnavailable):
        fh.write(b'{"c": []}\n')
        staging.durable(fh)
    assert segment_keys(storage, "r1")
    before = staging_listings(storage)
    repo.remove_staging({"r1"})
    assert staging_listings(storage) == before  # (before segment_keys, which lists)
    assert segment_keys(storage, "r1") == []


def test_a_restarted_davitd_lists_staging_once_for_an_unchanged_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """davitd's own clean-up around a run (issue 17's listing goal): at start-up it removes the
    staging of the runs the previous davitd ended (one listing), and at the run's end that of the
    run and of every ended run again, which it now knows are cleared (none). The S3 repository of
    the config is a MemoryBackend here, so its requests can be counted."""
    storage = MemoryBackend()
    monkeypatch.setattr("davit.daemon.repositories.open_backend", lambda location: storage)
    home = tmp_path / "home"
    home.mkdir()
    (home / "davit.toml").write_text(
        '[repositories.cloud]\nurl = "s3://bucket/prefix"\nendpoint = "http://127.0.0.1:9"\nregion = "r"\n'
        'access_key_id_env = "NONE"\nsecret_access_key_env = "NONE"\n'
    )
    settings = load_settings(home)
    Repository.open(storage, create=True, local_dir=tmp_path / "init").close()
    source = random_tree(tmp_path / "src", files=8, size=100_000)

    first = Parts(settings)
    backup(first.repository("cloud"), source, "r1", tuning=TINY)
    first.remove_staging_of_ended({"r1"})
    first.close()

    second = Parts(settings)  # davitd restarted: the unchanged backup r2
    before = staging_listings(storage)
    second.remove_staging_of_ended({"r1"})  # start-up: runs that ended under the previous davitd
    backup(second.repository("cloud"), source, "r2", tuning=TINY)
    second.remove_staging_of_ended({"r2"})  # r2's end: its own staging...
    second.remove_staging_of_ended({"r1"})  # ...and that of the job's runs it supersedes
    assert staging_listings(storage) - before == 1
    second.close()
    assert segment_keys(storage, "r1") == [] and segment_keys(storage, "r2") == []
