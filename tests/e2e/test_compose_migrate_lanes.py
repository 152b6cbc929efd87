"""compose.migrate's side lanes (`sidelane.py`) under attack, through davitd, on the docker
peers and the sshd peer: an image built on the source only, a volume and a bind path move at
once (images and bind paths each in a lane of their own beside the volume). `kill -9` of
davitd at random moments while they run: the resumed run sends only what the target's store
lacks and ends with the same image ID and the same data, no process of the run left on the
target, the store's lock free. A bind path that fails in its lane stops the others and the run
rolls back with the error named, nothing of the run left running on the target."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.compose_job import migrate_job_text
from tests.e2e.conftest import Davit, write_job
from tests.integration.compose.stack import Stack, built_image_stack, digest
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]

COMPOSE = """\
services:
  app:
    build: ./app
    command: ["sleep", "3600"]
    volumes: ["appdata:/data", "./site:/site"]
volumes:
  appdata: {}
"""


def job_text(stack: Stack, ssh_peer: SshPeer, base: Path) -> str:
    return migrate_job_text(stack, ssh_peer, base)


@contextmanager
def three_lane_stack(
    davit: Davit, tmp_path: Path, docker_peer: DockerPeer, ssh_peer: SshPeer, source: docker.DockerClient
) -> Iterator[tuple[Stack, str]]:
    """A running stack with an image built on the source only (24 MiB of its own), a volume of
    40 MiB and a bind path of 24 MiB; yields it and the image's ID."""

    def stop_daemon() -> None:
        if davit.proc is not None and davit.proc.poll() is None:
            davit.kill9()  # a test that failed early: its run must not make containers under cleanup

    with built_image_stack(
        tmp_path,
        docker_peer,
        ssh_peer,
        source,
        COMPOSE,
        prefix="davitlanes",
        blob_mib=24,
        site_mib=24,
        volume_mib=40,
        before_cleanup=stop_daemon,
    ) as made:
        yield made


def left_on_target(base: Path) -> list[str]:
    """Processes of this run still alive on the target (this host, through the sshd peer):
    any whose command line names the run's target directory (its store, its unpackers)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(base) in line and "pytest" not in line]


def helpers_left(target: docker.DockerClient, project: str) -> list[str]:
    """Containers on the target (helpers unpacking a volume or a bind path) still holding a
    volume or a directory of this stack (the stack's own containers are not counted)."""
    label = "com.docker.compose.project"
    return [
        str(c.name)
        for c in target.containers.list(all=True)
        if c.labels.get(label) != project and any(project in repr(m) for m in c.attrs.get("Mounts", []))
    ]


def store_lock_free(base: Path, project: str) -> bool:
    """No store writer holds the store's lock (each holds a shared one for its life)."""
    store = base / ".davit" / project
    if not store.exists():
        return True
    done = subprocess.run(["flock", "-n", "-x", str(store), "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """`predicate` true within `timeout` (davitd may be down: `Davit.wait_for` needs it up)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def transfer_done(davit: Davit) -> bool:
    return any(e[3]["step"] == "transfer" for e in davit.events("type = 'StepCompleted'"))


def transfer_checkpoints(davit: Davit) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "transfer"]


def wait_for_preflight(davit: Davit) -> None:
    davit.wait_for(
        lambda: any(e[3]["step"] == "preflight" for e in davit.events("type = 'StepCompleted'")), 120, "preflight", poll=0.005
    )


def assert_rolled_back_leaving_nothing(
    stack: Stack, base: Path, source: docker.DockerClient, target: docker.DockerClient
) -> None:
    """Nothing of the run still running on the target (processes, helpers, the store's lock),
    the source stack running again, no container or volume of it on the target."""
    eventually(lambda: not left_on_target(base), 30, "no process of the run on the target")
    eventually(lambda: not helpers_left(target, stack.name), 30, "no helper container left")
    assert store_lock_free(base, stack.name)
    assert stack.states(source) == {"app": "running"}
    assert stack.states(target) == {} and not target.volumes.list(filters={"name": stack.name})


@pytest.mark.slow
def test_kill9_at_random_moments_while_the_lanes_run_resumes_to_the_same_image_and_data(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    seed = int(os.environ.get("DAVIT_LANES_SEED", str(time.time_ns())))
    rng = random.Random(seed)
    base = tmp_path / "target"
    with three_lane_stack(davit, tmp_path, docker_peer, ssh_peer, source) as (stack, image_id):
        volume_before = digest(stack.volume_dir(source))
        site_before = digest(stack.dir / "site")
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, base))
        kills = 0
        for _ in range(3):
            seen = len(transfer_checkpoints(davit))
            davit.wait_for(
                lambda seen=seen: len(transfer_checkpoints(davit)) > seen or transfer_done(davit),
                120,
                "a transfer checkpoint",
                poll=0.005,
            )
            # the first kill lands right at a checkpoint: on a quiet machine the lanes can end
            # within a random wait of their first checkpoint, leaving nothing to resume
            time.sleep(rng.uniform(0, 0.8) if kills else 0)
            if transfer_done(davit):
                break
            davit.kill9()
            kills += 1
            # what the killed daemon's sessions ran on the target ends with their connection
            eventually(lambda: not left_on_target(base), 30, f"no process of the run on the target (seed {seed})")
            assert store_lock_free(base, stack.name), f"the store's lock is still held (seed {seed})"
            eventually(lambda: not helpers_left(target, stack.name), 30, f"no helper container left (seed {seed})")
            davit.start()
        assert kills >= 1, f"the transfer ended before any kill (seed {seed})"
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "succeeded", (seed, run)
        transfers_started = [e for e in davit.events("type = 'StepStarted'") if e[3]["step"] == "transfer"]
        assert len(transfers_started) >= 2, f"no kill landed while the lanes ran (seed {seed})"
        assert run["interruptions"] == kills
        transfer = run["steps"]["transfer"]["summary"]
        assert transfer["bytes_sent"] == transfer["bytes_missing"], seed
        assert str(target.images.get(f"{stack.name}-app").id) == image_id
        assert digest(stack.volume_dir(target)) == volume_before
        assert digest(base / stack.name / "site") == site_before
        assert stack.states(target) == {"app": "running"}
        assert not left_on_target(base) and not helpers_left(target, stack.name)


@pytest.mark.slow
def test_a_bind_path_that_vanishes_in_its_lane_stops_the_run_which_rolls_back(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    base = tmp_path / "target"
    with three_lane_stack(davit, tmp_path, docker_peer, ssh_peer, source) as (stack, _):
        volume_before = digest(stack.volume_dir(source))
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, base))

        # the bind path goes once preflight saw it, while `stop_source` waits out its containers'
        # stop (a second at least): its lane's export fails as the image and the volume move
        wait_for_preflight(davit)
        site = stack.dir / "site"
        for part in sorted(site.iterdir()):
            part.unlink()
        site.rmdir()
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        assert run["state"] == "rolled_back", run
        assert "site" in run["error"], run["error"]
        assert_rolled_back_leaving_nothing(stack, base, source, target)
        assert digest(stack.volume_dir(source)) == volume_before


@pytest.mark.slow
def test_two_stacks_migrated_to_one_target_at_once_each_arrive_whole(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    """Two runs at once (davitd runs two side by side), each with its three lanes, onto one
    target base path: each its store, its claim, its image and data, nothing of one in the other."""
    source, target = engines
    base = tmp_path / "target"
    with (
        three_lane_stack(davit, tmp_path / "a", docker_peer, ssh_peer, source) as (one, one_image),
        three_lane_stack(davit, tmp_path / "b", docker_peer, ssh_peer, source) as (two, two_image),
    ):
        before = {s.name: (digest(s.volume_dir(source)), digest(s.dir / "site")) for s in (one, two)}
        davit.start()
        write_job(davit, "one.toml", job_text(one, ssh_peer, base).replace('name = "move"', 'name = "one"'))
        write_job(davit, "two.toml", job_text(two, ssh_peer, base).replace('name = "move"', 'name = "two"'))

        def both_moving() -> bool:
            return all(any(r["state"] == "running" for r in davit.runs(job)) for job in ("one", "two"))

        davit.wait_for(both_moving, 120, "both runs at once", poll=0.05)
        for job, stack, image_id in (("one", one, one_image), ("two", two, two_image)):
            run = davit.wait_run_state(job, {"succeeded", "failed", "rolled_back"}, timeout=300)
            assert run["state"] == "succeeded", run
            assert str(target.images.get(f"{stack.name}-app").id) == image_id
            assert (digest(stack.volume_dir(target)), digest(base / stack.name / "site")) == before[stack.name]
            assert stack.states(target) == {"app": "running"}
        assert not left_on_target(base) and not helpers_left(target, one.name) and not helpers_left(target, two.name)


@pytest.mark.slow
def test_the_targets_disk_filling_up_while_the_lanes_run_rolls_the_run_back(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    """The target's base path on a file system of its own (a tmpfs) that fills up once preflight
    found room: the store writer or the bind path's unpack meets ENOSPC in one lane, the other
    lanes stop, and the run rolls back naming it, nothing of it left running on the target."""
    source, target = engines
    base = tmp_path / "target"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(base)], check=True)
    try:
        davit.configure("[retry]\nmax_attempts = 1\n")
        with three_lane_stack(davit, tmp_path, docker_peer, ssh_peer, source) as (stack, _):
            davit.start()
            write_job(davit, "move.toml", job_text(stack, ssh_peer, base))
            wait_for_preflight(davit)
            free = os.statvfs(base).f_bavail * os.statvfs(base).f_frsize
            with open(base / "filler", "wb") as filler:
                os.posix_fallocate(filler.fileno(), 0, free - (2 << 20))
            run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
            assert run["state"] == "rolled_back", run
            assert "No space left" in run["error"] or "ENOSPC" in run["error"], run["error"]
            assert_rolled_back_leaving_nothing(stack, base, source, target)
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)


def drop_a_store_writers_connection(base: Path) -> bool:
    """Kill -9 the sshd session serving one of this run's store writers (found by its store's
    path): that connection drops mid-stream, as a network cut would. True once one was killed."""
    rows = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    procs = {
        int(pid): (int(ppid), args) for pid, ppid, args in (r.split(None, 2) for r in rows.splitlines() if r.count(" ") >= 2)
    }
    for pid, (_, args) in procs.items():
        if str(base) in args and "flock -s 8" in args:
            while pid in procs and not procs[pid][1].startswith("sshd: "):
                pid = procs[pid][0]
            if pid in procs and "@notty" in procs[pid][1]:
                os.kill(pid, 9)
                return True
    return False


@pytest.mark.slow
def test_a_connection_dropped_mid_stream_fails_the_attempt_typed_and_the_retry_ends_whole(
    davit: Davit,
    docker_peer: DockerPeer,
    ssh_peer: SshPeer,
    engines: tuple[docker.DockerClient, docker.DockerClient],
    tmp_path: Path,
) -> None:
    source, target = engines
    base = tmp_path / "target"
    davit.configure("[retry]\nmax_attempts = 2\ninitial_seconds = 1\n")
    with three_lane_stack(davit, tmp_path, docker_peer, ssh_peer, source) as (stack, image_id):
        before = (digest(stack.volume_dir(source)), digest(stack.dir / "site"))
        davit.start()
        write_job(davit, "move.toml", job_text(stack, ssh_peer, base))
        eventually(lambda: drop_a_store_writers_connection(base), 120, "a store writer to cut off")
        run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
        [waiting] = [e[3] for e in davit.events("type = 'RunWaitingRetry'")]
        assert waiting["error_type"] and waiting["error"], waiting
        assert run["state"] == "succeeded", run
        transfer = run["steps"]["transfer"]["summary"]
        assert transfer["bytes_sent"] == transfer["bytes_missing"]
        assert str(target.images.get(f"{stack.name}-app").id) == image_id
        assert (digest(stack.volume_dir(target)), digest(base / stack.name / "site")) == before
        eventually(lambda: not left_on_target(base), 30, "no process of the run on the target")
        assert not helpers_left(target, stack.name) and store_lock_free(base, stack.name)
