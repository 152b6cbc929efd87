"""compose.backup through davitd, as an operator runs it: a stack (named volume, binds inside and
outside its project directory, `.env`, an env file) backed up twice; `davit verify` finds no
problem, `davit snapshots` lists both as `compose` snapshots, the second stores next to nothing,
and retention under keep_last = 1 keeps the newest, verifying. A `kill -9` in the middle of
the store, while the labelled service is stopped: after the restart the backup completes
without writing a chunk twice, and the service runs again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.integration.compose.stack import Stack
from tests.integration.compose.test_stack_backup import stack as stack
from tests.peers.state import DockerPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker]
__all__ = ["stack"]  # the running stack (named volume, binds in and outside the project, .env, env file)


@pytest.fixture
def started(davit: Davit) -> Iterator[Davit]:
    davit.configure("[data_path]\npack_size_mib = 8\n")
    davit.start()
    yield davit


def test_stack_backed_up_twice_verifies_and_the_second_stores_next_to_nothing(
    started: Davit, docker_peer: DockerPeer, stack: tuple[Stack, Path]
) -> None:
    davit, (s, _uploads) = started, stack
    write_job(
        davit,
        "shop.toml",
        f'name = "shop"\nkind = "compose.backup"\nengine = "{docker_peer.host}"\nstop_timeout = 1\n'
        f'[source]\nproject = "{s.name}"\n[retention]\nkeep_last = 1\n',
    )
    first = davit.wait_run_state("shop", {"succeeded", "failed"}, timeout=120)
    assert first["state"] == "succeeded", first
    second_id = davit.cli("run", "shop", "--wait", "--timeout", "120").stdout.strip()

    snapshots = davit.json_lines("snapshots")
    assert [(x["id"], x["kind"]) for x in snapshots] == [(second_id, "compose")], "keep_last = 1 pruned the first"
    assert "0 problems" in davit.cli("verify", second_id).stdout
    [second] = [r for r in davit.runs("shop") if r["run_id"] == second_id]
    assert second["state"] == "succeeded", second
    stored = [
        e[3] for e in davit.events(f"stream = 'run-{second_id}'") if e[2] == "CheckpointRecorded" and e[3]["step"] == "store"
    ]
    assert stored and stored[-1]["bytes_stored"] == 0 and stored[-1]["bytes_done"] > 1_000_000, stored[-1:]


@pytest.mark.slow
def test_stack_backup_killed_while_its_service_is_stopped_resumes_and_starts_it_again(
    davit: Davit, docker_peer: DockerPeer, stack: tuple[Stack, Path]
) -> None:
    s, _uploads = stack
    fill = "for i in 1 2 3; do dd if=/dev/urandom of=/data/big$i bs=1048576 count=8 2>/dev/null; done"
    s.compose("exec", "-T", "app", "sh", "-c", fill)
    davit.configure("[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.2\n")
    davit.start()
    write_job(
        davit,
        "shop.toml",
        f'name = "shop"\nkind = "compose.backup"\nengine = "{docker_peer.host}"\nstop_timeout = 1\n'
        f'[source]\nproject = "{s.name}"\n',
    )

    def store_checkpoints() -> list[dict[str, Any]]:
        return [e[3] for e in davit.events("type = 'CheckpointRecorded'") if e[3]["step"] == "store"]

    davit.wait_for(lambda: len(store_checkpoints()) >= 2, 120, "two store checkpoints", poll=0.005)
    davit.kill9()
    assert davit.runs("shop")[-1]["state"] == "running", "the kill must land in the middle of the backup"
    client = docker.DockerClient(base_url=docker_peer.host)
    try:
        assert s.states(client)["app"] == "exited", "the labelled service is stopped while the stack is read"
        davit.start()
        run = davit.wait_run_state("shop", {"succeeded", "failed"}, timeout=120)
        assert run["state"] == "succeeded", run
        assert run["interruptions"] == 1 and run["steps"]["start_containers"]["status"] == "done"
        assert s.states(client) == {"app": "running", "worker": "running"}
    finally:
        client.close()
    written = [c for cp in store_checkpoints() for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    assert "0 problems" in davit.cli("verify", run["run_id"]).stdout
