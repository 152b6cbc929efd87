"""`davit check` on the kinds that talk to services: Weaviate, Docker volumes, and a compose
migration to a second host over SSH, against the real peers. Checks look and change nothing:
no volume, container or directory appears, and a host key that does not match is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.integration.compose.stack import Stack, cleanup, make_stack
from tests.peers.state import DockerPeer, SshPeer, WeaviatePeer


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


# --- Weaviate ----------------------------------------------------------------------------------


def weaviate_job(tmp_path: Path, peer: WeaviatePeer, collections: str, http_port: int | None = None) -> Path:
    body = (
        f'kind = "weaviate.backup"\n[source]\nhost = "{peer.host}"\nhttp_port = {http_port or peer.http_port}\n'
        f"grpc_port = {peer.grpc_port}\ncollections = {collections}\n"
    )
    return job_file(tmp_path / "jobs", "wv", body)


def test_a_weaviate_backup_of_every_collection_passes(home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer) -> None:
    out = check(home, weaviate_job(tmp_path, weaviate_peer, '"all"'))
    assert out.exit_code == 0, out.lines
    assert out.detail("source", "server version").startswith("Weaviate 1.")


def test_a_weaviate_backup_naming_a_missing_collection_fails_naming_it(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer
) -> None:
    out = check(home, weaviate_job(tmp_path, weaviate_peer, '["NoSuchCollectionHere"]'))
    assert out.exit_code == 1 and out.failed() == [("source", "selected collections")]
    assert "NoSuchCollectionHere" in out.detail("source", "selected collections")


def test_a_weaviate_server_that_does_not_answer_fails_at_connecting(
    home: Path, tmp_path: Path, weaviate_peer: WeaviatePeer
) -> None:
    out = check(home, weaviate_job(tmp_path, weaviate_peer, '"all"', http_port=9))
    assert out.exit_code == 1 and out.failed() == [("source", "connects")]


# --- Docker volumes ----------------------------------------------------------------------------


@pytest.fixture
def volume(docker_peer: DockerPeer) -> Iterator[str]:
    client = docker.DockerClient(base_url=docker_peer.host)
    name = f"davitcheck{uuid.uuid4().hex[:8]}"
    client.volumes.create(name)
    yield name
    client.volumes.get(name).remove(force=True)
    client.close()


def volume_names(peer: DockerPeer) -> set[str]:
    client = docker.DockerClient(base_url=peer.host)
    try:
        return {v.name for v in client.volumes.list()}
    finally:
        client.close()


def volume_backup(tmp_path: Path, peer: DockerPeer, name: str) -> Path:
    body = f'kind = "volume.backup"\nengine = "{peer.host}"\nhelper_image = "{peer.image}"\n[source]\nnames = ["{name}"]\n'
    return job_file(tmp_path / "jobs", "vol", body)


def test_a_volume_backup_passes_and_makes_no_container(home: Path, tmp_path: Path, docker_peer: DockerPeer, volume: str) -> None:
    client = docker.DockerClient(base_url=docker_peer.host)
    before = {c.id for c in client.containers.list(all=True)}
    out = check(home, volume_backup(tmp_path, docker_peer, volume))
    assert out.exit_code == 0, out.lines
    assert volume in out.detail("source", "volumes")
    assert {c.id for c in client.containers.list(all=True)} == before
    client.close()


def test_a_volume_backup_of_a_missing_volume_fails_naming_it(home: Path, tmp_path: Path, docker_peer: DockerPeer) -> None:
    out = check(home, volume_backup(tmp_path, docker_peer, "davitcheck-no-such-volume"))
    assert out.exit_code == 1 and out.failed() == [("source", "volumes")]
    assert "davitcheck-no-such-volume" in out.detail("source", "volumes")


def test_a_volume_restore_onto_an_existing_volume_without_overwrite_fails_and_creates_nothing(
    home: Path, tmp_path: Path, docker_peer: DockerPeer, volume: str
) -> None:
    body = (
        f'kind = "volume.restore"\nengine = "{docker_peer.host}"\nvolume = "data"\n'
        f'[source]\njob = "vol"\n[target]\nvolume = "{volume}"\n'
    )
    before = volume_names(docker_peer)
    out = check(home, job_file(tmp_path / "jobs", "volback", body))
    assert out.exit_code == 1
    assert out.verdict("target", "volume") == "FAIL" and "overwrite is false" in out.detail("target", "volume")
    assert out.verdict("repository local", "snapshot") == "FAIL"  # nothing backed up yet
    assert volume_names(docker_peer) == before


# --- compose over SSH --------------------------------------------------------------------------


@pytest.fixture
def stack(docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path) -> Iterator[Stack]:
    made = make_stack(tmp_path, docker_peer, ssh_peer)
    yield made
    cleanup(made, tmp_path / "target")


def compose_job(tmp_path: Path, stack: Stack, peer: SshPeer, known_hosts: str) -> Path:
    body = (
        f'kind = "compose.migrate"\n[source]\nproject = "{stack.name}"\nengine = "{stack.source_host}"\n'
        f'[target]\nhost = "{peer.host}"\nport = {peer.port}\nuser = "{peer.user}"\nkey_file = "{peer.key_file}"\n'
        f'known_hosts = "{known_hosts}"\nbase_path = "{tmp_path / "target"}"\nhelper_image = "{peer.image}"\n'
    )
    return job_file(tmp_path / "jobs", "move", body)


def test_a_compose_migration_passes_over_ssh_and_leaves_both_sides_as_they_were(
    home: Path, tmp_path: Path, stack: Stack, ssh_peer: SshPeer
) -> None:
    client = docker.DockerClient(base_url=stack.source_host)
    states = stack.states(client)
    out = check(home, compose_job(tmp_path, stack, ssh_peer, ssh_peer.known_hosts))
    assert out.exit_code == 0, out.lines
    assert out.verdict("target", "ssh") == "ok" and out.verdict("target", "free space") == "ok"
    assert stack.states(client) == states  # the source still runs
    assert not (tmp_path / "target").exists()  # nothing made on the target (this host's directory)
    client.close()


def test_a_compose_target_whose_host_key_does_not_match_fails_and_is_not_trusted(
    home: Path, tmp_path: Path, stack: Stack, ssh_peer: SshPeer
) -> None:
    wrong = tmp_path / "known_hosts"
    host = Path(ssh_peer.known_hosts).read_text().split()[0]
    wrong.write_text(f"{host} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    out = check(home, compose_job(tmp_path, stack, ssh_peer, str(wrong)))
    assert out.exit_code == 1 and out.failed() == [("target", "ssh")]
    assert str(wrong) in out.detail("target", "ssh")
    assert len(wrong.read_text().splitlines()) == 1
