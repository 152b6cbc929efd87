"""compose.backup against the real Docker engine peer, driven without a daemon: a stack with a
named volume, a bind inside its project directory (a directory and a single file), a bind
outside it, an `.env` the compose file interpolates and an `env_file:`. One snapshot holds the
definition files, the volume and every bind, byte for byte (and with `images = true` the
images, as `docker save` gives them); the labelled service is stopped
while it is read and runs again after; a second backup stores nothing new; a failed backup
starts the service again and its resume completes the same tree; `davit check` looks and stops
nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from davit.adapters.compose.backup import ComposeBackupWork, EngineNotLocal
from davit.adapters.compose.stacktree import definition_walk
from davit.adapters.docker.backup import START, STOP, STORE
from davit.adapters.files.tree import Skipped
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.treeformat import DIR, FILE, LINK, Entry, read_lines
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.errors import PermanentError
from davit.domain.jobs import ComposeBackupJob
from tests.fakes import MemoryRunContext
from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.integration.compose.stack import Stack, cleanup
from tests.peers.state import DockerPeer

pytestmark = [pytest.mark.docker]

SMALL = Tuning(chunk_size=64 << 10, pack_size=256 << 10, checkpoint_seconds=60, inflight_chunks=4)

COMPOSE = """\
services:
  app:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    env_file: [env/app.env]
    volumes: ["appdata:/data", "./site:/site", "./app.conf:/etc/app.conf:ro", "UPLOADS:/uploads"]
    labels:
      davit.stop-during-backup: "true"
  worker:
    image: ${IMAGE}
    command: ["sleep", "3600"]
    volumes: ["appdata:/shared:ro"]
volumes:
  appdata: {}
"""


@pytest.fixture
def stack(docker_peer: DockerPeer, tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    """The stack, running; and its bind source outside the project directory."""
    uploads = tmp_path / "srv" / "uploads"
    (uploads / "img").mkdir(parents=True)
    (uploads / "img" / "a.bin").write_bytes(os.urandom(200_000))
    (uploads / "readme.txt").write_text("sail\n")
    name = f"davitcb{uuid.uuid4().hex[:8]}"
    d = tmp_path / "src" / name
    (d / "site").mkdir(parents=True)
    (d / "env").mkdir()
    (d / "compose.yaml").write_text(COMPOSE.replace("UPLOADS", str(uploads)))
    (d / ".env").write_text(f"IMAGE={docker_peer.image}\n")
    (d / "env" / "app.env").write_text("APP_MODE=harbour\n")
    (d / "app.conf").write_text("keel = 1\n")
    (d / "site" / "index.html").write_text("<h1>davit</h1>\n")
    (d / "site" / "logo.bin").write_bytes(os.urandom(300_000))
    s = Stack(name, d, docker_peer.host, docker_peer.host)
    s.compose("up", "-d", "--wait")
    fill = "mkdir -p /data/db && dd if=/dev/urandom of=/data/db/blob bs=1024 count=900 2>/dev/null"
    s.compose("exec", "-T", "app", "sh", "-c", fill)
    yield s, uploads
    cleanup(s, tmp_path / "nothing-migrated")


@pytest.fixture
def engine(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_peer.host)
    yield client
    client.close()


class WatchingContext(MemoryRunContext):
    """Notes the services' states at every store checkpoint; can fail the first one."""

    def __init__(self, stack: Stack, engine: docker.DockerClient, run_id: str, fail_store: bool = False) -> None:
        super().__init__(run_id=run_id)
        self.stack, self.engine, self.fail_store = stack, engine, fail_store
        self.seen: list[dict[str, str]] = []

    def checkpoint(self, step: str, cursor: dict[str, Any], **kw: Any) -> None:
        if step == STORE:
            self.seen.append(self.stack.states(self.engine))
            if self.fail_store:
                raise PermanentError("disk on fire (test)")
        super().checkpoint(step, cursor, **kw)


def job(stack: Stack, peer: DockerPeer, images: bool = False) -> ComposeBackupJob:
    return ComposeBackupJob(
        name="stack",
        kind="compose.backup",
        engine=peer.host,
        source={"project": stack.name},  # type: ignore[arg-type]
        stop_timeout=1,
        images=images,
    )


def backup(
    stack: Stack,
    peer: DockerPeer,
    repo: Repository,
    ctx: MemoryRunContext,
    details: dict[str, Any] | None = None,
    images: bool = False,
) -> Any:
    work = ComposeBackupWork(RunInputs(job(stack, peer, images), ctx.run_id, SMALL, details, repo=repo))
    if details is None:
        work.details = work.prepare(ctx)
    work.run(ctx)
    work.finish(ctx)
    return work


def content(repo: Repository, entry: Entry) -> bytes:
    return b"".join(repo.read_chunk(bytes.fromhex(c)) for c in entry.chunks)


def tree_of(repo: Repository, snapshot: str) -> tuple[Any, dict[str, Entry]]:
    info = repo.resolve(snapshot)
    return info, {e.path: e for e in read_lines(repo.open_tree(info))}


def test_stack_snapshot_holds_its_definition_volume_and_binds_inside_and_outside_its_directory(
    stack: tuple[Stack, Path], docker_peer: DockerPeer, engine: docker.DockerClient, tmp_path: Path
) -> None:
    s, uploads = stack
    repo = Repository.open(tmp_path / "repo")
    ctx = WatchingContext(s, engine, "snap1")
    backup(s, docker_peer, repo, ctx)
    assert {STOP, STORE, START} <= ctx.done
    assert ctx.seen and all(seen == {"app": "exited", "worker": "running"} for seen in ctx.seen), ctx.seen
    assert s.states(engine) == {"app": "running", "worker": "running"}, "the stopped service runs again"

    info, tree = tree_of(repo, "snap1")
    assert info.kind == "compose"
    for rel in ("compose.yaml", ".env", "env/app.env"):
        assert content(repo, tree[f"definition/{rel}"]) == (s.dir / rel).read_bytes(), rel
    assert tree["definition/env"].type == DIR
    source = info.source
    assert source["project"] == s.name and source["compose_files"] == ["compose.yaml"]
    assert sorted(source["definition"]["files"]) == [".env", "compose.yaml", "env/app.env"]

    [volume] = source["volumes"]
    assert (volume["key"], volume["name"], volume["path"]) == ("appdata", f"{s.name}_appdata", "volumes/appdata")
    mountpoint = Path(engine.volumes.get(volume["name"]).attrs["Mountpoint"])
    assert content(repo, tree["volumes/appdata/db/blob"]) == (mountpoint / "db" / "blob").read_bytes()

    binds = {b["source"]: b for b in source["binds"]}
    assert set(binds) == {str(s.dir / "site"), str(s.dir / "app.conf"), str(uploads)}
    outside, site, conf = binds[str(uploads)], binds[str(s.dir / "site")], binds[str(s.dir / "app.conf")]
    assert (outside["in_project"], outside["type"], outside["services"]) == (False, "dir", ["app"])
    assert (site["in_project"], conf["type"]) == (True, "file")
    assert content(repo, tree[f"{outside['path']}/img/a.bin"]) == (uploads / "img" / "a.bin").read_bytes()
    assert content(repo, tree[f"{site['path']}/logo.bin"]) == (s.dir / "site" / "logo.bin").read_bytes()
    assert tree[conf["path"]].type == FILE and content(repo, tree[conf["path"]]) == b"keel = 1\n"
    assert source["skipped_binds"] == [] and source["definition"]["outside"] == []


def test_a_second_stack_backup_stores_nothing_new(
    stack: tuple[Stack, Path], docker_peer: DockerPeer, engine: docker.DockerClient, tmp_path: Path
) -> None:
    s, _uploads = stack
    repo = Repository.open(tmp_path / "repo")
    first, second = MemoryRunContext(run_id="s1"), MemoryRunContext(run_id="s2")
    backup(s, docker_peer, repo, first)
    backup(s, docker_peer, repo, second)
    assert first.chunks_written and second.chunks_written == []
    assert repo.resolve("s2").parent == "s1"
    assert set(tree_of(repo, "s1")[1]) == set(tree_of(repo, "s2")[1])


def test_with_images_the_stack_snapshot_holds_each_image_as_the_engine_exports_it_and_stores_it_once(
    stack: tuple[Stack, Path], docker_peer: DockerPeer, engine: docker.DockerClient, tmp_path: Path
) -> None:
    s, _uploads = stack
    repo = Repository.open(tmp_path / "repo")
    first, second = MemoryRunContext(run_id="s1"), MemoryRunContext(run_id="s2")
    backup(s, docker_peer, repo, first, images=True)
    info, tree = tree_of(repo, "s1")
    image_id = engine.images.get(docker_peer.image).id
    [image] = info.source["images"]
    assert (image["id"], image["refs"], image["path"]) == (image_id, [docker_peer.image], f"images/{image_id[7:]}.tar")
    assert content(repo, tree[image["path"]]) == b"".join(engine.api.get_image(image_id)), "docker save's bytes"
    assert tree[image["path"]].size == len(content(repo, tree[image["path"]]))
    backup(s, docker_peer, repo, second, images=True)
    assert second.chunks_written == [], "an unchanged image is not stored again"
    assert tree_of(repo, "s2")[1][image["path"]].chunks == tree[image["path"]].chunks


def test_a_failed_stack_backup_starts_the_service_again_and_its_resume_completes_the_same_tree(
    stack: tuple[Stack, Path], docker_peer: DockerPeer, engine: docker.DockerClient, tmp_path: Path
) -> None:
    s, _uploads = stack
    repo = Repository.open(tmp_path / "repo")
    clean = MemoryRunContext(run_id="clean")
    backup(s, docker_peer, repo, clean)

    ctx = WatchingContext(s, engine, "snap1", fail_store=True)
    work = ComposeBackupWork(RunInputs(job(s, docker_peer), "snap1", SMALL, repo=repo))
    work.details = work.prepare(ctx)
    with pytest.raises(PermanentError, match="disk on fire"):
        work.run(ctx)
    assert s.states(engine)["app"] == "running" and any("started 1 of 1" in w for w in ctx.warnings)

    ctx.fail_store = False  # the operator resumes the run: the recorded parts are walked again
    backup(s, docker_peer, repo, ctx, details=dict(work.details))
    assert s.states(engine) == {"app": "running", "worker": "running"}
    resumed, expected = tree_of(repo, "snap1")[1], tree_of(repo, "clean")[1]
    assert {p: e.chunks for p, e in resumed.items()} == {p: e.chunks for p, e in expected.items()}


def test_a_definition_file_reached_through_a_symlinked_directory_is_not_read(tmp_path: Path) -> None:
    """A user who can write the project directory plants `conf -> <elsewhere>` and names
    `conf/secret.env` as an env file: davitd (root) must not store what lies elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.env").write_text("ROOT_ONLY=1\n")
    wd = tmp_path / "project"
    wd.mkdir()
    (wd / "compose.yaml").write_text("services: {}\n")
    (wd / "conf").symlink_to(elsewhere)
    (wd / ".env").symlink_to("compose.yaml")
    files = {rel: str(wd / rel) for rel in ("compose.yaml", "conf/secret.env", ".env")}
    walked = list(definition_walk(str(wd), files))
    entries = {item[0].path: item for item in walked if not isinstance(item, Skipped)}
    skipped = {item.path: item.reason for item in walked if isinstance(item, Skipped)}
    assert "definition/conf/secret.env" not in entries and "definition/conf" not in entries
    assert "symlink" in skipped["definition/conf/secret.env"]
    assert entries["definition/.env"][0].type == LINK and entries["definition/.env"][0].target == "compose.yaml"
    assert entries["definition/.env"][1] is None, "a link is stored as a link, never read through"
    assert entries["definition/compose.yaml"][1] is not None


def checked(tmp_path: Path, peer: DockerPeer, project: str) -> Any:
    home = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(home, "repository", "init", "local")[0] == 0
    body = f'kind = "compose.backup"\nengine = "{peer.host}"\n[source]\nproject = "{project}"\n'
    return check(home, job_file(tmp_path / "jobs", "shop", body))


def test_davit_check_of_a_stack_backup_counts_its_parts_and_stops_nothing(
    stack: tuple[Stack, Path], docker_peer: DockerPeer, engine: docker.DockerClient, tmp_path: Path
) -> None:
    s, _uploads = stack
    out = checked(tmp_path, docker_peer, s.name)
    assert out.exit_code == 0, out.lines
    assert "2 services, 3 definition files, 1 volumes, 3 bind sources" in out.detail("source", "project")
    assert s.states(engine) == {"app": "running", "worker": "running"}


def test_davit_check_of_a_stack_backup_of_a_missing_project_fails_naming_it(docker_peer: DockerPeer, tmp_path: Path) -> None:
    out = checked(tmp_path, docker_peer, "davitcb-no-such-project")
    assert out.exit_code == 1 and out.failed() == [("source", "project")]
    assert "davitcb-no-such-project" in out.detail("source", "project")


def test_a_stack_backup_of_an_engine_on_another_host_fails_at_prepare_without_its_password(tmp_path: Path) -> None:
    """Its files, binds and mountpoints would be another host's: refused before anything is read."""
    spec = ComposeBackupJob(
        name="stack",
        kind="compose.backup",
        engine="tcp://admin:oar-lock-secret@127.0.0.1:9",
        source={"project": "shop"},  # type: ignore[arg-type]
    )
    work = ComposeBackupWork(RunInputs(spec, "r1", SMALL, repo=Repository.open(tmp_path / "repo")))
    with pytest.raises(EngineNotLocal, match="not reached through a socket here") as caught:
        work.prepare(MemoryRunContext(run_id="r1"))
    assert "oar-lock-secret" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)
