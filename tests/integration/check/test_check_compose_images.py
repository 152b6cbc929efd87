"""`davit check` of a compose.migrate lists the images a run would send (images = "missing" or
"all"): each by name, ID and size, with the layers the target holds, as the run's pre-flight
plans them; from a local source and from one reached over SSH; and changes nothing (the
target's engine gets no image)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.integration.compose.stack import Stack
from tests.integration.compose.test_migrate_ssh_source_images import built_stack, image_id
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


def job(tmp_path: Path, stack: Stack, peer: SshPeer, images: str, over_ssh: bool) -> Path:
    source = f'[source]\nproject = "{stack.name}"\nengine = "{stack.source_host}"\n'
    if over_ssh:
        source += (
            f'host = "{peer.host}"\nport = {peer.port}\nuser = "{peer.user}"\n'
            f'key_file = "{peer.key_file}"\nknown_hosts = "{peer.known_hosts}"\n'
        )
    body = (
        f'kind = "compose.migrate"\nimages = "{images}"\n{source}'
        f'[target]\nhost = "{peer.host}"\nport = {peer.port}\nuser = "{peer.user}"\nkey_file = "{peer.key_file}"\n'
        f'known_hosts = "{peer.known_hosts}"\nbase_path = "{tmp_path / "target"}"\nhelper_image = "{peer.image}"\n'
    )
    return job_file(tmp_path / "jobs", "move", body)


@pytest.mark.parametrize("over_ssh", [False, True], ids=["local-source", "ssh-source"])
def test_check_lists_the_images_a_migration_would_send_by_name_id_and_size(
    home: Path,
    tmp_path: Path,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    over_ssh: bool,
) -> None:
    source, target = engines
    with built_stack(tmp_path, docker_peer, ssh_peer, source, 3) as (stack, built):
        out = check(home, job(tmp_path, stack, ssh_peer, "missing", over_ssh))
        assert out.exit_code == 0, out.lines
        assert out.verdict("target", "images") == "ok"
        detail = out.detail("target", "images")
        size = f"{int(source.images.get(built).attrs['Size']) / (1 << 20):.1f} MiB"  # the image's whole size
        # only the built image: `side` runs the peer's test image, which the target holds
        assert detail == f"1 to send, {size}: {stack.name}-app ({built[:19]}, {size}, 1 of 2 layers there)"
        assert image_id(target, built) is None, "a check sent nothing"

        everything = check(home, job(tmp_path, stack, ssh_peer, "all", over_ssh))
        assert everything.detail("target", "images").startswith("2 to send")
        assert docker_peer.image in everything.detail("target", "images")

        none = check(home, job(tmp_path, stack, ssh_peer, "none", over_ssh))
        assert none.verdict("target", "images") == "ok" and "none sent" in none.detail("target", "images")
