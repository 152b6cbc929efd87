"""`davit check` of a compose.migrate whose source is on another host, reached over SSH: the
source's connection, project and tools are checked there, and nothing changes on either side.
(The sshd peer reaches both engines: the source is engine 1 through it, the target engine 2.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.integration.compose.stack import Stack, cleanup, make_stack
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


@pytest.fixture
def stack(docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path) -> Iterator[Stack]:
    made = make_stack(tmp_path, docker_peer, ssh_peer)
    yield made
    cleanup(made, tmp_path / "target")


def job(tmp_path: Path, stack: Stack, peer: SshPeer, source_known_hosts: str) -> Path:
    body = (
        f'kind = "compose.migrate"\nimages = "none"\n'
        f'[source]\nproject = "{stack.name}"\nengine = "{stack.source_host}"\nhost = "{peer.host}"\nport = {peer.port}\n'
        f'user = "{peer.user}"\nkey_file = "{peer.key_file}"\nknown_hosts = "{source_known_hosts}"\n'
        f'[target]\nhost = "{peer.host}"\nport = {peer.port}\nuser = "{peer.user}"\nkey_file = "{peer.key_file}"\n'
        f'known_hosts = "{peer.known_hosts}"\nbase_path = "{tmp_path / "target"}"\nhelper_image = "{peer.image}"\n'
    )
    return job_file(tmp_path / "jobs", "move", body)


def test_a_migration_from_a_source_over_ssh_checks_the_source_there_and_changes_nothing(
    home: Path, tmp_path: Path, stack: Stack, ssh_peer: SshPeer
) -> None:
    client = docker.DockerClient(base_url=stack.source_host)
    states = stack.states(client)
    out = check(home, job(tmp_path, stack, ssh_peer, ssh_peer.known_hosts))
    assert out.exit_code == 0, out.lines
    assert out.verdict("source", "ssh") == "ok" and out.verdict("source", "tools") == "ok"
    assert f"compose project {stack.name} on {ssh_peer.user}@{ssh_peer.host}:{ssh_peer.port}" in out.detail("source", "project")
    assert out.verdict("target", "ssh") == "ok"
    assert stack.states(client) == states  # the source still runs
    assert not (tmp_path / "target").exists()
    client.close()


def test_a_source_whose_host_key_does_not_match_fails_its_ssh_check_and_is_not_trusted(
    home: Path, tmp_path: Path, stack: Stack, ssh_peer: SshPeer
) -> None:
    wrong = tmp_path / "source_known_hosts"
    host = Path(ssh_peer.known_hosts).read_text().split()[0]
    wrong.write_text(f"{host} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    out = check(home, job(tmp_path, stack, ssh_peer, str(wrong)))
    assert out.exit_code == 1 and out.failed() == [("source", "ssh")]
    assert str(wrong) in out.detail("source", "ssh")
    assert len(wrong.read_text().splitlines()) == 1
