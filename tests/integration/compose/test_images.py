"""An image's export as the migration sends it, against the real engines (the docker peer is the
source, the ssh peer's engine the target): the layers whose chain the target holds are left
out, `docker load` of what remains gives the source's image ID, and two exports are byte for
byte the same (what a resumed transfer relies on to find its chunks again)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from davit.adapters.compose import images
from davit.adapters.docker.imageexport import UnexpectedExport, filter_export
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


def _rewritten(export: bytes, change: dict[str, bytes], extra: dict[str, bytes]) -> bytes:
    """`export` with the members named in `change` given new content and the `extra` ones added."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(export)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name in change:
                member.size = len(change[member.name])
                data = io.BytesIO(change[member.name])
            dst.addfile(member, data)
        for name, content in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            dst.addfile(info, io.BytesIO(content))
    return out.getvalue()


def test_an_export_that_would_name_or_add_images_on_the_target_is_stopped_before_the_target_reads_it(
    docker_peer: DockerPeer, ssh_peer: SshPeer
) -> None:
    """A source engine (or a proxy before it) that is not to be trusted answers the export by ID
    with a manifest naming `shop/db:16`: the target's `docker load` would point that name, which
    the target's other stacks run, at the source's image, and the rollback would never know."""
    for source, _target in clients(docker_peer, ssh_peer):
        image_id = str(source.images.get(docker_peer.image).id)
        honest = b"".join(source.api.get_image(image_id))
    with tarfile.open(fileobj=io.BytesIO(honest)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    named = [{**manifest[0], "RepoTags": ["shop/db:16"]}]
    other = [{**manifest[0], "Config": "b" * 64 + ".json"}]
    crafted = {
        "named": _rewritten(honest, {"manifest.json": json.dumps(named).encode()}, {}),
        "two-images": _rewritten(honest, {"manifest.json": json.dumps(manifest * 2).encode()}, {}),
        "another-image": _rewritten(honest, {"manifest.json": json.dumps(other).encode()}, {}),
        "repositories": _rewritten(honest, {}, {"repositories": json.dumps({"shop/db": {"16": image_id}}).encode()}),
        "second-manifest": _rewritten(honest, {}, {"./manifest.json": json.dumps(named).encode()}),
        "outside": _rewritten(honest, {}, {"../manifest.json": b"[]"}),
    }
    for how, export in crafted.items():
        with pytest.raises(UnexpectedExport):
            filter_export(io.BytesIO(export), io.BytesIO(), set(), image_id)
            pytest.fail(f"the {how} export went through")

    copied = io.BytesIO()
    assert filter_export(io.BytesIO(honest), copied, set(), image_id) == []  # the engine's own export passes, whole
    with tarfile.open(fileobj=io.BytesIO(honest)) as a, tarfile.open(fileobj=io.BytesIO(copied.getvalue())) as b:
        assert a.getnames() == b.getnames()


def test_a_load_that_tagged_a_name_fails_even_when_the_image_is_the_sources(ssh_peer: SshPeer, tmp_path: Path) -> None:
    """`docker load` of an export carrying a name prints `Loaded image: NAME` (no ID line): the
    target now has that name pointing elsewhere than before, which the migration did not plan."""
    target = docker.DockerClient(base_url=ssh_peer.docker_host)
    try:
        image_id = str(target.images.get(ssh_peer.image).id)  # on the target, as a load would leave it
    finally:
        target.close()
    item = images.ImageItem("image-0", "image", image_id, "shop-app")
    store = str(tmp_path / "store")
    address = SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)
    with connect(address) as host:
        host.write_file(images.loaded_file(store, item), b"Loaded image: shop/db:16\n")
        with pytest.raises(images.ImageMismatch, match="image shop-app: the target loaded shop/db:16"):
            images.check_loaded(host, store, item)
        host.write_file(images.loaded_file(store, item), f"Loaded image ID: {image_id}\n".encode())
        images.check_loaded(host, store, item)  # the source's image, unnamed: fine
