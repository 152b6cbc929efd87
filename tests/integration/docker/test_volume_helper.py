"""volume.backup and volume.restore through a helper container (the path for an engine on
another host), against the real Docker engine peers, driven without a daemon.

`access = "helper"` forces the helper path although the peers' mountpoints are readable here,
which lets each scenario compare with the mountpoint path and read the volumes directly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.docker.backup import STORE, VolumeBackupWork
from davit.adapters.docker.helper import (
    HELPER_LABEL,
    HelperAccessNotAvailable,
    HelperImageMissing,
    HelperImageUnfit,
)
from davit.adapters.docker.helper_restore import RESTORE
from davit.adapters.docker.restore import VolumeRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import read_tree_zst
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import CorruptChunk, PermanentError, RunStopped, TargetNotEmpty
from davit.domain.jobs import VolumeBackupJob, VolumeRestoreJob
from tests.fakes import MemoryRunContext
from tests.integration.docker.bare_image import bare_image
from tests.integration.docker.tcp_forward import tcp_engine
from tests.integration.docker.test_volume_adapter import (
    SMALL,
    WatchingContext,
    app_container,
    engine,
    mountpoint,
    names,
    run_in,
    run_work,
)
from tests.peers.state import DockerPeer, SshPeer

__all__ = ["engine", "names"]  # fixtures shared with the mountpoint scenarios
# A helper restore's batches hold a few packs' worth: small packs make several batches here.
SHORT_BATCHES = Tuning(chunk_size=64 << 10, pack_size=32 << 10, checkpoint_seconds=60, inflight_chunks=4)

# Files of several chunks, an empty file, a hard link, a symlink, odd modes and owners, a
# name with spaces and non-ASCII letters, nested and empty directories.
FILL = (
    "mkdir -p /v/sub/deep /v/empty && echo hello > /v/greeting && "
    "dd if=/dev/urandom of=/v/sub/random.bin bs=1024 count=700 2>/dev/null && "
    "dd if=/dev/zero of=/v/sub/deep/zeros.bin bs=1024 count=300 2>/dev/null && "
    ": > /v/empty.txt && echo spaced > '/v/name with spaces é' && ln /v/greeting /v/hardlink && "
    "ln -s greeting /v/link && ln -s /nowhere /v/dangling && chmod 0640 /v/greeting && "
    "chmod 0700 /v/sub/deep && chown 123:456 /v/sub/random.bin && chmod 4755 /v/sub/random.bin && "
    "touch -t 200102030405.06 /v/sub/deep/zeros.bin"
)


def tree_digest(path: Path, mtime_unit_ns: int) -> dict[str, tuple[object, ...]]:
    """Every entry's type, mode, owner, mtime (in `mtime_unit_ns`) and content or link target."""
    out: dict[str, tuple[object, ...]] = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = p.lstat()
        rel = str(p.relative_to(path))
        mtime = st.st_mtime_ns // mtime_unit_ns
        if p.is_symlink():
            out[rel] = ("l", os.readlink(p), st.st_uid, st.st_gid, mtime)
        elif p.is_dir():
            out[rel] = ("d", st.st_mode & 0o7777, st.st_uid, st.st_gid, mtime)
        else:
            out[rel] = ("f", st.st_mode & 0o7777, st.st_uid, st.st_gid, mtime, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def seconds_digest(path: Path) -> dict[str, tuple[object, ...]]:
    """What a helper backup keeps: its archive has mtimes to the second."""
    return tree_digest(path, 10**9)


def exact_digest(path: Path) -> dict[str, tuple[object, ...]]:
    return tree_digest(path, 1)


def hard_linked(root: Path) -> bool:
    """FILL's `hardlink` is the same inode as `greeting` again."""
    return (root / "hardlink").stat().st_ino == (root / "greeting").stat().st_ino


def helpers_left(engine: docker.DockerClient) -> list[str]:
    return [c.name for c in engine.containers.list(all=True, filters={"label": HELPER_LABEL})]


def backup_spec(peer: DockerPeer, volumes: list[str], access: str = "helper", image: str | None = None) -> VolumeBackupJob:
    return VolumeBackupJob(
        name="vols",
        kind="volume.backup",
        engine=peer.host,
        access=access,
        stop_timeout=1,  # type: ignore[arg-type]
        helper_image=image or peer.image,
        source={"names": volumes},
    )  # type: ignore[arg-type]


def restore_spec(
    host: str, image: str, volume: str, target: str, snapshot: str, access: str = "helper", overwrite: bool = False
) -> VolumeRestoreJob:
    return VolumeRestoreJob(
        name="back",
        kind="volume.restore",
        engine=host,
        access=access,  # type: ignore[arg-type]
        helper_image=image,
        source={"job": "vols", "snapshot": snapshot},  # type: ignore[arg-type]
        volume=volume,
        target={"volume": target, "overwrite": overwrite},
    )  # type: ignore[arg-type]


def backup(
    peer: DockerPeer,
    repo: Repository,
    run_id: str,
    volumes: list[str],
    access: str = "helper",
    ctx: MemoryRunContext | None = None,
) -> MemoryRunContext:
    ctx = ctx or MemoryRunContext(run_id=run_id)
    run_work(VolumeBackupWork(RunInputs(backup_spec(peer, volumes, access), run_id, SMALL, repo=repo)), ctx)
    return ctx


def restore(
    host: str,
    image: str,
    repo: Repository,
    run_id: str,
    volume: str,
    target: str,
    snapshot: str,
    access: str = "helper",
    overwrite: bool = False,
) -> dict[str, Any]:
    work = VolumeRestoreWork(
        RunInputs(restore_spec(host, image, volume, target, snapshot, access, overwrite), run_id, SMALL, repo=repo)
    )
    return run_work(work, MemoryRunContext(run_id=run_id))


@pytest.fixture
def filled(docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str]) -> Iterator[str]:
    engine.volumes.create(names["data"])
    run_in(engine, docker_peer.image, names["data"], FILL)
    yield names["data"]
    assert helpers_left(engine) == [], "a helper container was left behind"


def test_helper_backup_and_helper_restore_give_the_same_bytes_modes_links_and_mtimes(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    ctx = backup(docker_peer, repo, "h1", [filled])
    assert ctx.chunks_written and ctx.cursors[STORE]["items"] == 13
    summary = restore(docker_peer.host, docker_peer.image, repo, "r1", filled, names["restored"], "h1")
    assert summary["entries"] == 12  # the volume and its 11 entries (the backup adds the snapshot root)
    assert seconds_digest(mountpoint(engine, names["restored"])) == seconds_digest(mountpoint(engine, filled))
    assert hard_linked(mountpoint(engine, names["restored"]))


def test_snapshots_of_both_paths_hold_the_same_tree_up_to_mtime_precision(
    docker_peer: DockerPeer, filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "by-mount", [filled], access="mountpoint")
    later = backup(docker_peer, repo, "by-helper", [filled])
    by_mount, by_helper = (list(read_tree_zst(repo.tree_bytes(repo.resolve(s)))) for s in ("by-mount", "by-helper"))

    def comparable(entries: list[Any]) -> list[tuple[object, ...]]:
        return [
            (e.path, e.type, e.mode, e.uid, e.gid, e.size, e.target, e.chunks, e.mtime_ns // 10**9, e.hardlink_to)
            for e in entries
        ]

    assert comparable(by_helper) == comparable(by_mount)
    assert later.chunks_written == [], "content stored through the mountpoint is not stored again"


def test_a_snapshot_made_through_the_mountpoint_restores_through_the_helper_to_the_nanosecond(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "by-mount", [filled], access="mountpoint")
    restore(docker_peer.host, docker_peer.image, repo, "r1", filled, names["restored"], "by-mount")
    assert exact_digest(mountpoint(engine, names["restored"])) == exact_digest(mountpoint(engine, filled))
    assert hard_linked(mountpoint(engine, names["restored"]))


def test_a_snapshot_made_through_the_helper_restores_through_the_mountpoint(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "by-helper", [filled])
    restore(docker_peer.host, docker_peer.image, repo, "r1", filled, names["restored"], "by-helper", access="mountpoint")
    assert seconds_digest(mountpoint(engine, names["restored"])) == seconds_digest(mountpoint(engine, filled))
    assert hard_linked(mountpoint(engine, names["restored"]))


def test_a_second_helper_backup_of_unchanged_content_stores_no_new_chunks(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    first = backup(docker_peer, repo, "h1", [filled])
    second = backup(docker_peer, repo, "h2", [filled])
    assert first.chunks_written and second.chunks_written == []
    run_in(engine, docker_peer.image, filled, "echo changed >> /v/greeting")
    third = backup(docker_peer, repo, "h3", [filled])
    assert len(third.chunks_written) == 1, "only the changed file's chunk is new"


def test_a_volume_restored_to_the_other_engine_through_a_helper_matches(
    docker_peer: DockerPeer, ssh_peer: SshPeer, names: dict[str, str], filled: str, engine: docker.DockerClient, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "h1", [filled])
    other = docker.DockerClient(base_url=ssh_peer.docker_host)
    try:
        restore(ssh_peer.docker_host, ssh_peer.image, repo, "r1", filled, names["restored"], "h1")
        assert seconds_digest(mountpoint(other, names["restored"])) == seconds_digest(mountpoint(engine, filled))
        assert helpers_left(other) == []
    finally:
        for v in other.volumes.list(filters={"name": names["restored"]}):
            v.remove(force=True)
        other.close()


def test_a_missing_helper_image_fails_the_backup_before_anything_is_stopped(
    docker_peer: DockerPeer, engine: docker.DockerClient, filled: str, tmp_path: Path
) -> None:
    spec = backup_spec(docker_peer, [filled], image="davit-test/not-here:1")
    work = VolumeBackupWork(RunInputs(spec, "h1", SMALL, repo=Repository.open(tmp_path / "repo")))
    with pytest.raises(HelperImageMissing, match=r"davit-test/not-here:1 is not on the engine.*never pulls"):
        work.prepare(MemoryRunContext())
    assert "davit-test/not-here:1" not in {t for i in engine.images.list() for t in i.tags}


def test_a_missing_helper_image_fails_the_restore_clearly(
    docker_peer: DockerPeer, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "h1", [filled])
    work = VolumeRestoreWork(
        RunInputs(
            restore_spec(docker_peer.host, "davit-test/not-here:1", filled, names["restored"], "h1"), "r1", SMALL, repo=repo
        )
    )
    with pytest.raises(HelperImageMissing, match="never pulls"):
        work.prepare(MemoryRunContext())


def test_helper_backup_stopped_mid_stream_resumes_without_writing_a_chunk_twice(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    engine.volumes.create(names["other"])  # sorts first: the resumed run passes over it whole
    run_in(engine, docker_peer.image, names["other"], "echo other > /v/o.txt")
    volumes = [names["other"], filled]
    repo = Repository.open(tmp_path / "repo")
    ctx = MemoryRunContext(run_id="h1", stop_after_checkpoints=2)
    work = VolumeBackupWork(RunInputs(backup_spec(docker_peer, volumes), "h1", SMALL, repo=repo))
    work.details = work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    assert helpers_left(engine) == [], "the helper is removed when the run stops"
    before = list(ctx.chunks_written)
    assert before and ctx.cursors[STORE]["last"].startswith(filled + "/")
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    resumed = VolumeBackupWork(RunInputs(backup_spec(docker_peer, volumes), "h1", SMALL, dict(work.details), repo=repo))
    resumed.run(ctx)
    resumed.finish(ctx)
    assert len(ctx.chunks_written) == len(set(ctx.chunks_written)), "no chunk written twice"
    whole = backup(docker_peer, Repository.open(tmp_path / "fresh"), "h2", volumes)
    assert sorted(ctx.chunks_written) == sorted(whole.chunks_written)
    tree = [e.to_line() for e in read_tree_zst(repo.tree_bytes(repo.resolve("h1")))]
    fresh = Repository.open(tmp_path / "fresh")
    assert tree == [e.to_line() for e in read_tree_zst(fresh.tree_bytes(fresh.resolve("h2")))]


def test_a_leftover_helper_of_a_crashed_run_is_removed_by_the_resumed_run(
    docker_peer: DockerPeer, engine: docker.DockerClient, filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    ctx = MemoryRunContext(run_id="h1")
    work = VolumeBackupWork(RunInputs(backup_spec(docker_peer, [filled]), "h1", SMALL, repo=repo))
    work.details = work.prepare(ctx)
    engine.containers.create(docker_peer.image, ["true"], name="davit-backup-h1", labels={HELPER_LABEL: "h1"})
    work.run(ctx)
    work.finish(ctx)
    assert helpers_left(engine) == []


def test_a_corrupt_chunk_stops_the_helper_restore_before_its_bytes_reach_the_volume(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "h1", [filled])
    greeting = next(e for e in read_tree_zst(repo.tree_bytes(repo.resolve("h1"))) if e.path.endswith("/greeting"))
    corrupt_chunk(repo, greeting.chunks[0], b"hello\n")
    work = VolumeRestoreWork(
        RunInputs(restore_spec(docker_peer.host, docker_peer.image, filled, names["restored"], "h1"), "r1", SMALL, repo=repo)
    )
    ctx = MemoryRunContext(run_id="r1")
    work.details = work.prepare(ctx)
    with pytest.raises(CorruptChunk):
        work.run(ctx)
    target = mountpoint(engine, names["restored"])
    assert not (target / "greeting").exists() or (target / "greeting").read_bytes() == b""
    assert b"hello" not in b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    assert helpers_left(engine) == []


def corrupt_chunk(repo: Repository, chunk_id: str, plain: bytes) -> None:
    """Flip a byte of the chunk inside its pack file (a small text chunk is stored raw)."""
    for pack in (repo.root / "packs").rglob("*"):
        if pack.is_file():
            data = pack.read_bytes()
            at = data.find(plain)
            if at >= 0:
                pack.write_bytes(data[:at] + b"J" + data[at + 1 :])
                return
    raise AssertionError(f"chunk {chunk_id} not found raw in any pack")


def test_helper_restore_stopped_after_a_checkpoint_resumes_and_completes(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "h1", [filled])
    spec = restore_spec(docker_peer.host, docker_peer.image, filled, names["restored"], "h1")
    ctx = MemoryRunContext(run_id="r1", stop_after_checkpoints=1)
    work = VolumeRestoreWork(RunInputs(spec, "r1", SHORT_BATCHES, repo=repo))
    work.details = work.prepare(ctx)
    with pytest.raises(RunStopped):
        work.run(ctx)
    first_stop = ctx.cursors[RESTORE]
    assert 0 < first_stop["items"] < 12
    ctx.stop.clear()
    ctx.stop_after_checkpoints = None
    resumed = VolumeRestoreWork(RunInputs(spec, "r1", SHORT_BATCHES, dict(work.details), repo=repo))
    resumed.run(ctx)
    assert resumed.finish(ctx)["entries"] == 12
    assert ctx.cursors[RESTORE]["items"] == 12
    counts = [c["cursor"]["items"] for c in ctx.checkpoints]
    assert counts == sorted(counts) and counts[0] == first_stop["items"], "the resumed run went on from the cursor"
    assert seconds_digest(mountpoint(engine, names["restored"])) == seconds_digest(mountpoint(engine, filled))


def test_helper_restore_refuses_a_volume_with_data_unless_overwrite(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "h1", [filled])
    engine.volumes.create(names["restored"])
    run_in(engine, docker_peer.image, names["restored"], "echo precious > /v/keep.txt")
    spec = restore_spec(docker_peer.host, docker_peer.image, filled, names["restored"], "h1")
    with pytest.raises(TargetNotEmpty, match=names["restored"]):
        VolumeRestoreWork(RunInputs(spec, "r1", SMALL, repo=repo)).prepare(MemoryRunContext())
    restore(docker_peer.host, docker_peer.image, repo, "r2", filled, names["restored"], "h1", overwrite=True)
    restored = mountpoint(engine, names["restored"])
    assert (restored / "greeting").read_text() == "hello\n" and (restored / "keep.txt").exists()


def test_auto_access_reads_through_the_mountpoint_when_this_host_can_and_records_the_choice(
    docker_peer: DockerPeer, filled: str, tmp_path: Path
) -> None:
    work = VolumeBackupWork(
        RunInputs(backup_spec(docker_peer, [filled], access="auto"), "a1", SMALL, repo=Repository.open(tmp_path / "repo"))
    )
    assert work.prepare(MemoryRunContext())["access"] == "mountpoint"
    forced = VolumeBackupWork(RunInputs(backup_spec(docker_peer, [filled]), "a2", SMALL, repo=Repository.open(tmp_path / "repo")))
    assert forced.prepare(MemoryRunContext())["access"] == "helper"


def test_helper_access_without_a_helper_image_fails_naming_the_setting(
    docker_peer: DockerPeer, filled: str, tmp_path: Path
) -> None:
    spec = backup_spec(docker_peer, [filled]).model_copy(update={"helper_image": None})
    work = VolumeBackupWork(RunInputs(spec, "h1", SMALL, repo=Repository.open(tmp_path / "repo")))
    with pytest.raises(HelperAccessNotAvailable, match="sets no helper_image"):
        work.prepare(MemoryRunContext())


def test_a_failed_helper_backup_removes_its_helper_and_starts_the_stopped_app_again(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    app_container(engine, docker_peer.image, names)
    ctx = WatchingContext(engine, names["app"], fail_store=True)
    work = VolumeBackupWork(RunInputs(backup_spec(docker_peer, [filled]), "h1", SMALL, repo=Repository.open(tmp_path / "repo")))
    work.details = work.prepare(ctx)
    with pytest.raises(PermanentError, match="disk on fire"):
        work.run(ctx)
    assert ctx.seen == ["exited"], "the app was stopped while the helper read its volume"
    assert helpers_left(engine) == []
    assert engine.containers.get(names["app"]).status == "running"


def test_auto_access_goes_through_a_helper_for_an_engine_reached_over_tcp_and_the_volume_round_trips(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    with tcp_engine(docker_peer.host) as remote:
        # The same engine over tcp://: as for an engine on another host, the mountpoints it names
        # are not this host's (here they happen to be; auto must not rely on that).
        ctx = MemoryRunContext(run_id="t1")
        work = VolumeBackupWork(
            RunInputs(backup_spec(DockerPeer(remote, docker_peer.image), [filled], access="auto"), "t1", SMALL, repo=repo)
        )
        work.details = work.prepare(ctx)
        assert work.details["access"] == "helper"
        assert f"the engine {remote} is not reached through a socket on this host" in work.details["access_reason"]
        work.run(ctx)
        work.finish(ctx)
        assert ctx.chunks_written, "the content was stored through the helper"
        summary = restore(remote, docker_peer.image, repo, "r1", filled, names["restored"], "t1", access="auto")
    assert summary["entries"] == 12
    assert seconds_digest(mountpoint(engine, names["restored"])) == seconds_digest(mountpoint(engine, filled))
    assert hard_linked(mountpoint(engine, names["restored"]))


def test_a_helper_image_without_sync_fails_the_restore_before_a_byte_is_written_naming_image_and_tool(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "h1", [filled])
    image = bare_image(engine)
    work = VolumeRestoreWork(
        RunInputs(restore_spec(docker_peer.host, image, filled, names["restored"], "h1"), "r1", SMALL, repo=repo)
    )
    with pytest.raises(HelperImageUnfit, match=rf"helper image {image} on {docker_peer.host} has no sync") as failed:
        work.prepare(MemoryRunContext(run_id="r1"))
    assert failed.value.missing == ["sync"]
    assert list(mountpoint(engine, names["restored"]).iterdir()) == []
    assert helpers_left(engine) == []


def test_a_mountpoint_snapshot_with_a_fifo_and_xattrs_restores_through_the_helper_with_both(
    docker_peer: DockerPeer, engine: docker.DockerClient, names: dict[str, str], filled: str, tmp_path: Path
) -> None:
    """The mountpoint walk keeps FIFOs and extended attributes (issue 14's fidelity); the
    helper's tar stream must carry them too: it failed the run on the FIFO (no tar type for
    it) and dropped every extended attribute without a word."""
    volume = mountpoint(engine, filled)
    os.mkfifo(volume / "a-fifo")
    os.chmod(volume / "a-fifo", 0o620)
    os.setxattr(volume / "greeting", "user.origin", b"from the app \xff\x00 binary")
    os.setxattr(volume / "sub", "user.dir-note", b"kept")
    repo = Repository.open(tmp_path / "repo")
    backup(docker_peer, repo, "by-mount", [filled], access="mountpoint")
    restore(docker_peer.host, docker_peer.image, repo, "r1", filled, names["restored"], "by-mount")
    restored = mountpoint(engine, names["restored"])
    assert (restored / "a-fifo").is_fifo() and (restored / "a-fifo").lstat().st_mode & 0o7777 == 0o620
    assert os.getxattr(restored / "greeting", "user.origin") == b"from the app \xff\x00 binary"
    assert os.getxattr(restored / "sub", "user.dir-note") == b"kept"
