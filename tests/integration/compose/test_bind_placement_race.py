"""Bind data placed on the target never goes through a symlink, even one planted after davit
looked: against the real sshd (the target host) and, end to end, both engines.

Someone on the target who can write along a placement's path (a local user, a container with
the parent directory bind-mounted) swaps a directory for a symlink at the worst moment: after
pre-flight, or between the unpack's own check and the helper container's mount (the engine
resolves the path again from `/`). An earlier davit checked the
path's components by name and then let `mkdir -p` and `tar -C /abs/path` resolve it again from
`/`, so the swap sent root's unpack elsewhere; and a placement inside the project directory was
not checked at all. Here the swap is made by a wrapper the target's PATH finds first, so it
happens exactly in that window, every time."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from davit.adapters.compose.migrate import IMPORT, STOP
from davit.adapters.compose.pipeline import move_item
from davit.adapters.compose.source import Item
from davit.adapters.compose.target import TargetLayout, present_chunks, unpacker_for, walker_for
from davit.adapters.ssh.remote import RemoteCommandFailed, SshAddress, connect
from tests.integration.compose.stack import Stack, cleanup, make_stack
from tests.integration.compose.test_migrate_adapter import SummaryContext, job, work_for
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.ssh]


def address(peer: SshPeer) -> SshAddress:
    return SshAddress(peer.host, peer.port, peer.user, peer.key_file, peer.known_hosts)


def swapping_wrapper(bin_dir: Path, tool: str, victim: Path, elsewhere: Path) -> None:
    """`tool` on the target's PATH: the first call moves `victim` aside and puts a symlink to
    `elsewhere` in its place, then runs the real tool (what a racing attacker does)."""
    real = next(p for d in ("/usr/bin", "/bin") if (p := Path(d) / tool).exists())
    flag = bin_dir / f"{tool}.fired"
    v, e = shlex.quote(str(victim)), shlex.quote(str(elsewhere))
    script = bin_dir / tool
    script.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {shlex.quote(str(flag))} ]; then : > {shlex.quote(str(flag))}; "
        f"/bin/mv {v} {v}.moved && /bin/ln -s {e} {v}; fi\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)


def source_tree(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    (root / "img" / "a.bin").write_bytes(os.urandom(50_000))
    (root / "readme.txt").write_text("sail\n")
    return root


def unpack_on_target(peer: SshPeer, tmp_path: Path, item: Item, bin_dir: Path) -> None:
    """Move `item` to the target as the migration does, the target's PATH led by `bin_dir`."""
    layout = TargetLayout(str(tmp_path / "base"), "proj")
    with connect(address(peer)) as host:
        unpack = f"PATH={shlex.quote(str(bin_dir))}:$PATH; export PATH; " + unpacker_for(host, item, peer.image, "proj")
        move_item(
            host, layout.store, item, unpack, 1, present_chunks(host, layout), set(),
            lambda _n, _b: None, lambda: None, walker_for(item, peer.image),
        )  # fmt: skip


@pytest.mark.parametrize("when", ["mkdir", "docker"])
def test_a_symlink_swapped_in_while_the_bind_is_unpacked_is_never_followed(ssh_peer: SshPeer, tmp_path: Path, when: str) -> None:
    src = source_tree(tmp_path / "srv" / "uploads")
    data = tmp_path / "data"
    data.mkdir()  # exists on the target; shop/uploads under it do not (yet)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "shop" / "uploads").mkdir(parents=True)  # ready for a `tar -C` sent there
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    swapping_wrapper(bin_dir, when, data, elsewhere)
    item = Item("bind-0", "bind", str(src), str(data / "shop" / "uploads"))

    try:
        unpack_on_target(ssh_peer, tmp_path, item, bin_dir)
    except RemoteCommandFailed as exc:
        if when == "mkdir":  # the swap came before davit reached the place: it refuses, naming where
            assert f"{data / 'shop'} changed while davit reached it" in str(exc)
        else:  # the engine mounted what the symlink names, not the directory davit holds: refused
            assert f"{data / 'shop' / 'uploads'} changed while davit mounted it" in str(exc)
    else:
        pytest.fail("the unpack went on after the swap")
    assert (bin_dir / f"{when}.fired").exists(), "the swap happened"
    assert [str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")] == ["shop", "shop/uploads"], (
        "nothing was created or written through the symlink"
    )


@pytest.fixture
def inside_stack(docker_peer: DockerPeer, ssh_peer: SshPeer, tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    """The test stack whose web service also mounts `<tmp>/srv/uploads` (outside its project)."""
    uploads = source_tree(tmp_path / "srv" / "uploads")
    stack = make_stack(tmp_path, docker_peer, ssh_peer)
    compose = stack.dir / "compose.yaml"
    compose.write_text(compose.read_text().replace('"./site:/site"]', f'"./site:/site", "{uploads}:/uploads"]'))
    stack.compose("up", "-d", "--wait")
    yield stack, uploads
    cleanup(stack, tmp_path / "target")


class PlantingContext(SummaryContext):
    """Once the source is stopped (pre-flight passed), someone on the target makes the project
    directory a symlink to `elsewhere`."""

    def __init__(self, project_dir: Path, elsewhere: Path) -> None:
        super().__init__()
        self.project_dir, self.elsewhere, self.planted = project_dir, elsewhere, False

    def check_stop(self) -> None:
        if STOP in self.done and not self.planted:
            self.planted = True
            self.project_dir.parent.mkdir(parents=True, exist_ok=True)
            if self.project_dir.exists():
                self.project_dir.rename(self.project_dir.with_name("moved"))
            self.project_dir.symlink_to(self.elsewhere)
        super().check_stop()


@pytest.mark.docker
def test_a_bind_mapped_into_the_project_directory_is_not_unpacked_through_a_symlink_planted_there(
    inside_stack: tuple[Stack, Path], ssh_peer: SshPeer, engines: tuple[docker.DockerClient, docker.DockerClient], tmp_path: Path
) -> None:
    stack, uploads = inside_stack
    source, _target = engines
    project_dir = tmp_path / "target" / stack.name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ctx = PlantingContext(project_dir, elsewhere)
    work = work_for(job(stack, ssh_peer, tmp_path / "target", path_map={str(uploads): str(project_dir / "uploads")}), tmp_path)
    work.prepare(ctx)
    with pytest.raises(RemoteCommandFailed, match=f"symlink on the target: {project_dir}"):
        work.run(ctx)
    assert ctx.planted and IMPORT not in ctx.done
    assert list(elsewhere.iterdir()) == [], "nothing was unpacked through the symlink"
    work.rollback(ctx)
    assert stack.states(source) == {"web": "running", "worker": "running"}
    assert list(elsewhere.iterdir()) == [], "the rollback removed nothing through it either"
