"""A migration repeated after the target project was removed with its volumes (issue 21's
repeat): the target's chunk store, kept as a transfer cache, lets it send almost nothing, while
every item is unpacked again into the fresh volumes and directories; a cached chunk whose
content is not what its name says is never unpacked."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest
import zstandard

from davit.adapters.compose.migrate import EXPORT, FINALIZE, IMPORT, INSPECT, TRANSFER
from davit.adapters.compose.pipeline import CHUNK_MISMATCH, ChunkMismatch
from tests.integration.compose.stack import Stack, digest
from tests.integration.compose.test_migrate_adapter import SummaryContext, job, work_for
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


def migrate(stack: Stack, ssh_peer: SshPeer, tmp_path: Path, run_id: str, **extra: Any) -> SummaryContext:
    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target", **extra), tmp_path, run_id)
    work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return ctx


def remove_target_project(stack: Stack, tmp_path: Path) -> None:
    """What `docker compose down -v` and removing the project directory leave: no containers,
    no volumes, no files. The source stays stopped (started, its web service would write to
    the small volume, whose one chunk would then be new)."""
    project_dir = tmp_path / "target" / stack.name
    stack.compose("down", "-v", host=stack.target_host, cwd=project_dir)
    subprocess.run(["rm", "-rf", str(project_dir)], check=True)


def store_of(stack: Stack, tmp_path: Path) -> Path:
    return tmp_path / "target" / ".davit" / stack.name


def chunks_of(ctx: SummaryContext) -> set[str]:
    return {c for d in ctx.cursors[EXPORT]["done"].values() for c in d["chunks"]}


def test_a_repeat_after_the_target_project_was_removed_sends_under_2_percent_and_unpacks_everything_again(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    before_volume, before_site = digest(stack.volume_dir(source)), digest(stack.dir / "site")
    first = migrate(stack, ssh_peer, tmp_path, "mig1")
    sent_first = first.summaries[TRANSFER]["bytes_sent"]
    assert sent_first > 1_000_000
    # the store stays as a transfer cache: the chunks the migration used, nothing else of it
    store = store_of(stack, tmp_path)
    assert sorted(os.listdir(store)) == ["chunks"], "tar indexes and unpack records are not kept"
    assert {p.removesuffix(".zst") for p in os.listdir(store / "chunks")} == chunks_of(first)
    assert first.summaries[FINALIZE]["cached_chunks"] == len(chunks_of(first))

    remove_target_project(stack, tmp_path)
    assert not target.volumes.list(filters={"name": stack.name})
    second = migrate(stack, ssh_peer, tmp_path, "mig2")

    sent_again = second.summaries[TRANSFER]["bytes_sent"]
    assert sent_again < 0.02 * sent_first, f"the repeat sent {sent_again} of {sent_first} bytes"
    # unpacked again, every item, into the fresh volume and directory: nothing was there to skip
    assert second.summaries[IMPORT]["unchanged_on_target"] == []
    assert len(second.summaries[IMPORT]["imported"]) == len(second.summaries[INSPECT]["items"])
    assert digest(stack.volume_dir(target)) == before_volume
    assert digest(tmp_path / "target" / stack.name / "site") == before_site
    assert stack.states(target) == {"web": "running", "worker": "running"}


def test_without_the_transfer_cache_finalize_removes_the_store(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    ctx = migrate(stack, ssh_peer, tmp_path, "mig1", keep_transfer_cache=False)
    assert not store_of(stack, tmp_path).exists()
    assert "transfer_cache" not in ctx.summaries[FINALIZE]


def crafted_chunk() -> bytes:
    """A whole tar stream (a file `pwned.txt`), compressed as the store keeps chunks: unpacked in
    place of the bind directory's chunk, `tar x` would take it as complete and exit 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = b"planted in the transfer cache\n"
        info = tarfile.TarInfo("./pwned.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(buf.getvalue())


def test_a_cached_chunk_whose_content_is_not_its_name_is_never_unpacked_and_is_sent_again(
    stack: Stack, ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    source, target = engines
    before_volume, before_site = digest(stack.volume_dir(source)), digest(stack.dir / "site")
    first = migrate(stack, ssh_peer, tmp_path, "mig1")
    [bind] = [d["id"] for d in first.summaries[INSPECT]["items"] if d["kind"] == "bind"]
    [chunk] = first.cursors[EXPORT]["done"][bind]["chunks"]  # the small bind directory is one chunk
    cached = store_of(stack, tmp_path) / "chunks" / f"{chunk}.zst"
    cached.write_bytes(crafted_chunk())
    remove_target_project(stack, tmp_path)

    ctx = SummaryContext()
    work = work_for(job(stack, ssh_peer, tmp_path / "target"), tmp_path, "mig2")
    work.prepare(ctx)
    with pytest.raises(ChunkMismatch, match=f"{chunk}.zst {CHUNK_MISMATCH}"):
        work.run(ctx)
    site = tmp_path / "target" / stack.name / "site"
    assert not (site / "pwned.txt").exists(), "the crafted chunk was unpacked"
    assert not cached.exists(), "the crafted chunk stays in the store"

    work.run(ctx)  # resumed, as the executor retries: the chunk is sent again
    work.finish(ctx)
    assert ctx.summaries[TRANSFER]["chunks_sent"] >= 1
    assert digest(site) == before_site and digest(stack.volume_dir(target)) == before_volume
    assert stack.states(target) == {"web": "running", "worker": "running"}
