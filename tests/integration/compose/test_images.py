"""An image's export as the migration sends it, against the real engines (the docker peer is the
source, the ssh peer's engine the target): the layers whose chain the target holds are left
out, `docker load` of what remains gives the source's image ID, and two exports are byte for
byte the same (what a resumed transfer relies on to find its chunks again)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from davit.adapters.compose import images
from davit.adapters.ssh.remote import SshAddress, connect
from tests.integration.compose.stack import clients
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.docker, pytest.mark.ssh]


@pytest.fixture
def two_images(docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The names of `base` (the peer's test image + a layer) and `top` (base + one more), built
    on the source only."""
    tag = f"davit-test/img{uuid.uuid4().hex[:8]}"
    made: list[str] = []
    for n, (name, parent) in enumerate([("base", docker_peer.image), ("top", f"{tag}:base")]):
        ctx = tmp_path / name
        ctx.mkdir()
        (ctx / "blob").write_bytes(os.urandom(1 << 20))
        (ctx / "Dockerfile").write_text(f"FROM {parent}\nCOPY blob /blob{n}\n")
        for source, _target in clients(docker_peer, ssh_peer):
            image, _ = source.images.build(path=str(ctx), tag=f"{tag}:{name}", rm=True)
            made.append(str(image.id))
    try:
        yield f"{tag}:base", f"{tag}:top"
    finally:
        for client in clients(docker_peer, ssh_peer):
            for c in client:
                for image_id in reversed(made):
                    try:
                        c.images.remove(image_id, force=True)
                    except docker.errors.NotFound:
                        pass


def export(docker_peer: DockerPeer, item: images.ImageItem) -> bytes:
    done = subprocess.run(item.export_command(), env=item.export_environment(), capture_output=True, timeout=120, check=True)
    return done.stdout


def load(ssh_peer: SshPeer, data: bytes) -> str:
    env = {**os.environ, "DOCKER_HOST": ssh_peer.docker_host}
    done = subprocess.run(["docker", "load", "-q"], input=data, env=env, capture_output=True, timeout=120, check=True)
    return done.stdout.decode().strip().rsplit(" ", 1)[-1]


def layer_members(data: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / f"{hashlib.sha256(data).hexdigest()}.tar"
    path.write_bytes(data)
    with tarfile.open(path) as tar:
        return [m.name for m in tar.getmembers() if m.name.endswith("/layer.tar")]


def test_an_export_leaves_out_the_layers_whose_chain_the_target_holds_and_loads_as_the_same_image(
    docker_peer: DockerPeer, ssh_peer: SshPeer, two_images: tuple[str, str], tmp_path: Path
) -> None:
    for source, _target in clients(docker_peer, ssh_peer):
        found = images.describe(source, list(two_images))
    base_id, top_id = (next(i for i, e in found.items() if ref in e["refs"]) for ref in two_images)
    address = SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)
    with connect(address) as host:
        planned = images.plan(host, "missing", found)
        assert [p["id"] for p in planned] == sorted([base_id, top_id])
        by_id = {p["id"]: p for p in planned}
        assert by_id[base_id]["layers_on_target"] == 1 and by_id[top_id]["layers_on_target"] == 1

        base = next(i for i in images.items(planned, docker_peer.host, host) if i.source == base_id)
        first = export(docker_peer, base)
        assert first == export(docker_peer, base), "two exports of one image differ: a resume would find no chunk again"
        assert len(layer_members(first, tmp_path)) == 1  # the peer's test image is on the target: not sent
        assert load(ssh_peer, first) == base_id

        # with base loaded, top's first two layers are on the target (their chain IDs match)
        top = next(i for i in images.items(planned, docker_peer.host, host) if i.source == top_id)
        assert len(top.skip) == 2
        data = export(docker_peer, top)
        assert len(layer_members(data, tmp_path)) == 1
        assert load(ssh_peer, data) == top_id


def test_a_rollback_points_a_name_back_where_it_was_and_removes_the_image_it_loaded(
    docker_peer: DockerPeer, ssh_peer: SshPeer, two_images: tuple[str, str], tmp_path: Path
) -> None:
    base_ref = two_images[0]
    for source, target in clients(docker_peer, ssh_peer):
        found = images.describe(source, [base_ref])
        target.images.get(ssh_peer.image).tag(base_ref)  # the target has this name, for another image
        before = str(target.images.get(base_ref).id)
    (base_id,) = found
    address = SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)
    with connect(address) as host:
        planned = images.plan(host, "missing", found)
        assert planned[0]["previous"] == {base_ref: before} and planned[0]["new_on_target"]
        (item,) = images.items(planned, docker_peer.host, host)
        assert load(ssh_peer, export(docker_peer, item)) == base_id
        assert images.tag(host, planned) == [base_ref]
        for _source, target in clients(docker_peer, ssh_peer):
            assert target.images.get(base_ref).id == base_id

        assert images.undo(host, planned) == [f"{base_ref} points to {before} again", f"removed {base_id}"]
        for _source, target in clients(docker_peer, ssh_peer):
            assert target.images.get(base_ref).id == before
            with pytest.raises(docker.errors.ImageNotFound):
                target.images.get(base_id)
            target.images.remove(base_ref)  # the name only: the peer's image stays


def test_a_load_that_gave_another_image_id_fails_naming_the_image(ssh_peer: SshPeer, tmp_path: Path) -> None:
    item = images.ImageItem("image-0", "image", "sha256:" + "a" * 64, "shop-app")
    store = str(tmp_path / "store")
    address = SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)
    with connect(address) as host:
        host.write_file(images.loaded_file(store, item), f"Loaded image ID: sha256:{'b' * 64}\n".encode())
        with pytest.raises(images.ImageMismatch, match=f"image shop-app: the target loaded sha256:{'b' * 64}"):
            images.check_loaded(host, store, item)
