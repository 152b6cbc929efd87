"""Images travel from a source reached over SSH (`[source] host`, `images = "missing"`): an image
built on the source engine only is listed there, exported there (`docker save` over the
source's SSH connection, filtered here: `sshimages.py`), sent through the chunked transfer,
loaded on the target with the source's image ID; a crash mid-image resumes sending only what
the target's store lacks; a failed migration takes the loaded image back.

The peers as in `test_migrate_ssh_source.py` (source: the sshd with engine 1's socket; target:
the same sshd, engine 2), with its guard: nothing of the source is read on this host (no SDK
client, no local subprocess: the export cannot have run here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest

from davit.adapters.compose.migrate import IMPORT, PREFLIGHT, ROLLBACK_TARGET, TRANSFER, VERIFY
from davit.adapters.compose.sshimages import RemoteImageExport
from davit.adapters.compose.sshsource import SshSourceMigrateWork
from davit.adapters.ssh.remote import SshAddress
from davit.adapters.ssh.threaded import connect_threaded
from tests.integration.compose.stack import Stack, built_image_stack
from tests.integration.compose.test_migrate_adapter import SummaryContext
from tests.integration.compose.test_migrate_ssh_source import (  # noqa: F401  (no_local_source: an autouse fixture)
    Crash,
    CrashAtFirstTransferCheckpoint,
    job,
    no_local_source,
    work_for,
)
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]

COMPOSE = """\
services:
  app:
    build: ./app
    command: ["sleep", "3600"]
{health}  side:
    image: {base}
    command: ["sleep", "3600"]
"""


@contextmanager
def built_stack(
    tmp_path: Path, docker_peer: DockerPeer, ssh_peer: SshPeer, source: docker.DockerClient, blob_mib: int, health: str = ""
) -> Iterator[tuple[Stack, str]]:
    """A running stack whose `app` service's image was built on the source only (the peer's
    test image plus `blob_mib` MiB of random bytes); yields it and that image's ID."""
    compose = COMPOSE.format(health=health, base=docker_peer.image)
    with built_image_stack(tmp_path, docker_peer, ssh_peer, source, compose, prefix="davitsshimg", blob_mib=blob_mib) as made:
        yield made


def image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def test_an_image_built_on_an_ssh_source_travels_with_its_stack_and_keeps_its_id(
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 2) as (stack, built):
        ref = f"{stack.name}-app"
        assert image_id(target, ref) is None
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", images="missing"), tmp_path)
        assert isinstance(work, SshSourceMigrateWork)
        work.prepare(ctx)
        work.run(ctx)
        work.finish(ctx)

        sent = ctx.summaries[PREFLIGHT]["images_to_send"]
        assert [(i["image"], i["id"]) for i in sent] == [(ref, built)]
        assert sent[0]["bytes"] > 2 << 20 and sent[0]["layers_on_target"] == 1  # its base is on the target
        assert image_id(target, ref) == built
        assert ref in ctx.summaries[IMPORT]["images_tagged"]
        # the base layer was left out: the image's chunks hold about its blob, not the base again
        assert ctx.summaries[TRANSFER]["bytes_sent"] < (2 << 20) + (1 << 20)
        assert stack.states(target) == {"app": "running", "side": "running"}


def test_a_crash_mid_image_from_an_ssh_source_resumes_sending_only_what_the_target_lacks(
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    # no volume, no bind: the first transfer checkpoint (16 MiB acknowledged) is mid-image
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 40) as (stack, built):
        spec = job(stack, ssh_peer, tmp_path / "target", images="missing")
        ctx = CrashAtFirstTransferCheckpoint()
        first = work_for(spec, tmp_path)
        first.prepare(ctx)
        with pytest.raises(Crash):
            first.run(ctx)
        sent_before = ctx.cursors[TRANSFER]["chunks_sent"]
        assert sent_before >= 1 and IMPORT not in ctx.cursors
        assert image_id(target, built) is None

        resumed = work_for(spec, tmp_path)  # a new davitd, the same recorded run
        resumed.prepare(ctx)
        resumed.run(ctx)
        transfer = ctx.summaries[TRANSFER]
        assert transfer["already_on_target"] >= sent_before, "chunks stored before the crash were sent again"
        assert transfer["bytes_sent"] == transfer["bytes_missing"]
        assert transfer["chunks_sent"] == transfer["chunks"] - transfer["already_on_target"]
        assert image_id(target, f"{stack.name}-app") == built
        assert stack.states(target) == {"app": "running", "side": "running"}


def test_a_failed_migration_from_an_ssh_source_removes_the_image_it_loaded_and_restarts_the_source(
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    # healthy only where the container holds a flag file: only the source's does, verify fails
    health = '    healthcheck: {test: ["CMD", "test", "-e", "/tmp/on-source"], interval: 1s, retries: 3}\n'
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 1, health) as (stack, built):
        stack.compose("exec", "-T", "app", "touch", "/tmp/on-source")
        ctx = SummaryContext()
        work = work_for(job(stack, ssh_peer, tmp_path / "target", images="missing", verify_timeout=20), tmp_path)
        work.prepare(ctx)
        with pytest.raises(Exception, match="app"):
            work.run(ctx)
        assert VERIFY not in ctx.done and image_id(target, built) == built
        assert work.needs_rollback(ctx)
        work.rollback(ctx)
        assert ctx.summaries[ROLLBACK_TARGET]["images"] == [f"untagged {stack.name}-app", f"removed {built}"]
        assert image_id(target, built) is None
        assert image_id(target, ssh_peer.image) is not None  # the base's image stays
        assert stack.states(source) == {"app": "running", "side": "running"}


def test_an_export_from_an_ssh_source_that_names_its_image_is_refused_before_the_target_reads_it(
    docker_peer: DockerPeer, ssh_peer: SshPeer
) -> None:
    # `docker save NAME` lists the name in manifest.json: the target's load would tag it. The
    # filter here stops the stream (and the command on the source, which would wait forever)
    address = SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)
    with connect_threaded(address) as host:
        export = RemoteImageExport(host, f"DOCKER_HOST={docker_peer.host} docker", docker_peer.image, [])
        while export.stdout.read(1 << 20):
            pass
        assert export.wait() != 0
        assert "names the image" in export.stderr.read().decode()
