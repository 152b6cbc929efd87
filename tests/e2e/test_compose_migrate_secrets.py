"""A compose project with secrets planted where no name gives them away, migrated through
davitd: none of their values reaches `davit show`, `davit history --json` or the daemon's
log (debug level), while the recorded model still shows the project's shape."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_compose_migrate import job_text
from tests.integration.compose.stack import Stack, cleanup
from tests.peers.state import DockerPeer, SshPeer

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.ssh]

# Each value is a secret in a place a name-based guess misses (`--requirepass`, `-p`, `DB_PWD`,
# `SMTP_PW`, a build arg, a label) or comes from `.env` by interpolation.
PLANTED = {
    "command": "requirepass-Xr3dis",
    "healthcheck": "HealthPw9mysql",
    "DB_PWD": "dbpwd-keel-4711",
    "SMTP_PW": "smtp-from-dotenv-bollard",
    "NPM_TOKEN": "npm-token-hawser-88",
    "label": "label-secret-capstan",
    "entrypoint": "entry-secret-gunwale",
}

COMPOSE = """\
services:
  cache:
    image: {image}
    entrypoint: ["/bin/sh", "-c", "exec \\"$$@\\"", "--key={entrypoint}"]
    command: ["sh", "-c", "sleep 3600", "--requirepass", "{command}"]
    healthcheck:
      test: ["CMD", "sh", "-c", "true", "-p{healthcheck}"]
      interval: 1s
      retries: 30
    environment:
      DB_PWD: {DB_PWD}
      SMTP_PW: ${{SMTP_FROM_ENV}}
    labels:
      com.example.owner: {label}
    build:
      context: .
      args:
        NPM_TOKEN: {NPM_TOKEN}
    ports: ["127.0.0.1::9000"]
    volumes: ["data:/data", "./site:/site:ro"]
volumes:
  data: {{}}
"""


@pytest.fixture
def planted(tmp_path: Path, docker_peer: DockerPeer, ssh_peer: SshPeer) -> Iterator[Stack]:
    name = f"davitsec{uuid.uuid4().hex[:8]}"
    d = tmp_path / "src" / name
    (d / "site").mkdir(parents=True)
    (d / "site" / "index.html").write_text("<h1>davit</h1>\n")
    (d / "compose.yaml").write_text(COMPOSE.format(image=docker_peer.image, **PLANTED))
    (d / ".env").write_text(f"SMTP_FROM_ENV={PLANTED['SMTP_PW']}\n")
    stack = Stack(name, d, docker_peer.host, ssh_peer.docker_host)
    stack.compose("up", "-d", "--no-build", "--wait")
    try:
        yield stack
    finally:
        cleanup(stack, tmp_path / "target")


def test_no_planted_secret_of_a_migrated_project_reaches_show_history_or_the_daemon_log(
    davit: Davit, planted: Stack, ssh_peer: SshPeer, tmp_path: Path
) -> None:
    davit.configure('[daemon]\nlog_level = "debug"\n')
    davit.start()
    write_job(davit, "move.toml", job_text(planted, ssh_peer, tmp_path / "target"))
    run = davit.wait_run_state("move", {"succeeded", "failed", "rolled_back"}, timeout=300)
    assert run["state"] == "succeeded", run
    target = docker.DockerClient(base_url=ssh_peer.docker_host)
    try:
        assert planted.states(target) == {"cache": "running"}
    finally:
        target.close()

    show = davit.cli("show", run["run_id"]).stdout
    history = davit.cli("history", "--json").stdout
    davit.stop()
    daemon_log = "".join(p.read_text() for p in davit.logs)
    for where, text in (("davit show", show), ("history --json", history), ("the daemon's log", daemon_log)):
        leaked = [k for k, v in PLANTED.items() if v in text]
        assert not leaked, f"{leaked} reached {where}"

    model = next(
        json.loads(line)["data"]["summary"]["model"]
        for line in history.splitlines()
        if '"StepCompleted"' in line and '"inspect"' in line
    )
    cache = model["services"]["cache"]
    assert cache["image"] and cache["environment"] == {"DB_PWD": "***", "SMTP_PW": "***"}
    assert [v["target"] for v in cache["volumes"]] == ["/data", "/site"]
    assert cache["volumes"][1]["source"] == str(planted.dir / "site")
    assert cache["ports"][0]["target"] == 9000


def test_the_planted_values_are_in_the_project_migrated(planted: Stack) -> None:
    """The check above means something: compose resolves every planted value into the model."""
    done = subprocess.run(
        ["docker", "compose", "-p", planted.name, "config", "--format", "json"],
        cwd=planted.dir,
        env={"DOCKER_HOST": planted.source_host, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(v in done.stdout for v in PLANTED.values())
