"""Runs into an S3 repository when the server misbehaves, through davitd, on a SeaweedFS of
this module's own (paused with SIGSTOP; the shared peer is never touched):
- paused mid-upload for less than the retry budget: the run only waits, and succeeds;
- paused for longer than the budget: the run fails as retryable (BackendUnavailable), and its
  automatic retry continues from its last checkpoint and succeeds once the server is back;
- davitd killed with -9 mid-upload: the resumed run uploads at most about one pack again;
- wrong credentials: the run fails for good, naming the repository, and the secret is in no
  event, log line or CLI output;
- a server that cannot be reached at all: davitd starts anyway and local jobs run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.backends.s3 import S3Backend
from tests.e2e.conftest import Davit, tree_digest, write_job
from tests.peers import seaweedfs
from tests.peers.state import S3Peer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PACK_MIB = 4
SOURCE_MIB = 48
FAST_RETRY = "initial_seconds = 2\nmax_seconds = 4\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seaweedfs_peer: S3Peer) -> Iterator[seaweedfs.PrivateS3]:
    top = tmp_path_factory.mktemp("faults-seaweedfs")
    with seaweedfs.private_instance(top, {"admin": ["Admin", "Read", "Write", "List"]}) as s3:
        yield s3


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Incompressible content: what is stored is what was read, so stored bytes count work."""
    root = tmp_path_factory.mktemp("faults-source") / "tree"
    root.mkdir()
    for i in range(SOURCE_MIB // 8):
        (root / f"blob{i}.bin").write_bytes(os.urandom(8 << 20))
    (root / "notes.txt").write_text("small\n")
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


@pytest.fixture
def prefix() -> str:
    return f"faults/{uuid.uuid4().hex[:10]}"


def key_files(tmp_path: Path, access: str, secret: str) -> tuple[Path, Path]:
    a, s = tmp_path / "s3.access", tmp_path / "s3.secret"
    a.write_text(access)
    s.write_text(secret)
    a.chmod(0o600)
    s.chmod(0o600)
    return a, s


def configure(
    davit: Davit, endpoint: str, prefix: str, keys: tuple[Path, Path], extra: str = "", retry: str = FAST_RETRY
) -> None:
    davit.configure(
        f"[data_path]\npack_size_mib = {PACK_MIB}\ncheckpoint_seconds = 0.5\n"
        f"[retry]\n{retry}"
        '[repositories.local]\npath = "repository"\n'
        f'[repositories.cloud]\nurl = "s3://{seaweedfs.BUCKET}/{prefix}"\nendpoint = "{endpoint}"\npath_style = true\n'
        f'access_key_id_file = "{keys[0]}"\nsecret_access_key_file = "{keys[1]}"\n{extra}'
    )


def admin_configure(
    davit: Davit, server: seaweedfs.PrivateS3, prefix: str, tmp_path: Path, extra: str = "", retry: str = FAST_RETRY
) -> None:
    configure(davit, server.endpoint, prefix, key_files(tmp_path, *server.keys["admin"]), extra, retry)


def bucket(server: seaweedfs.PrivateS3, prefix: str) -> S3Backend:
    access, secret = server.keys["admin"]
    return S3Backend(
        seaweedfs.BUCKET, prefix, endpoint=server.endpoint, path_style=True, access_key_id=access, secret_access_key=secret
    )


def backup_job(source: Path) -> str:
    return f'name = "up"\nkind = "files.backup"\nrepository = "cloud"\n[source]\npath = "{source}"\n'


def checkpoints(davit: Davit, run_id: str) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'CheckpointRecorded'")]


def run_of(davit: Davit, job: str) -> str | None:
    runs = [e for e in davit.events("type = 'RunQueued'") if e[3]["job"] == job]
    return str(runs[-1][3]["run_id"]) if runs else None


def wait_for_checkpoints(davit: Davit, job: str, count: int) -> str:
    def enough() -> bool:
        rid = run_of(davit, job)
        return rid is not None and len([c for c in checkpoints(davit, rid) if c["bytes_done"] > 0]) >= count

    davit.wait_for(enough, 180, f"{count} checkpoints of {job}", poll=0.01)
    rid = run_of(davit, job)
    assert rid is not None
    return rid


def ended(davit: Davit, run_id: str) -> bool:
    """Read from the log itself (the CLI takes too long to ask while a fast run goes on)."""
    return bool(davit.events(f"stream = 'run-{run_id}' AND type IN ('RunSucceeded', 'RunFailed', 'RunWaitingRetry')"))


def history_types(davit: Davit, run_id: str) -> list[str]:
    return [e["type"] for e in davit.history(run_id)]


def restored_identical(davit: Davit, source: Path, target: Path) -> None:
    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "files.restore"\nrepository = "cloud"\n[source]\njob = "up"\n[target]\npath = "{target}"\n',
    )
    back = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert back["state"] == "succeeded", back
    assert tree_digest(target) == tree_digest(source)


def pause(server: seaweedfs.PrivateS3) -> None:
    os.killpg(server.process.pid, signal.SIGSTOP)


def resume(server: seaweedfs.PrivateS3) -> None:
    os.killpg(server.process.pid, signal.SIGCONT)


def test_a_server_paused_mid_upload_within_the_budget_only_delays_the_run(
    davit: Davit, server: seaweedfs.PrivateS3, source: Path, prefix: str, tmp_path: Path
) -> None:
    admin_configure(davit, server, prefix, tmp_path)  # the default budget: 60 s
    davit.start()
    write_job(davit, "up.toml", backup_job(source))
    run_id = wait_for_checkpoints(davit, "up", 1)
    pause(server)
    try:
        assert not ended(davit, run_id), "the pause must land in the middle of the upload"
        time.sleep(10)
        assert not ended(davit, run_id)
    finally:
        resume(server)
    run = davit.wait_run_state("up", {"succeeded", "failed", "waiting_retry"}, timeout=300)
    assert run["state"] == "succeeded" and run["run_id"] == run_id and run["attempt"] == 1, run
    assert "RunWaitingRetry" not in history_types(davit, run_id)
    restored_identical(davit, source, tmp_path / "restored")


def test_a_server_gone_longer_than_the_budget_fails_the_run_as_retryable_and_the_retry_continues(
    davit: Davit, server: seaweedfs.PrivateS3, source: Path, prefix: str, tmp_path: Path
) -> None:
    # a 5 s budget fails each request to the paused server after 5 s (its read timeout is bounded
    # by the budget); the retry comes 3-6 s after the failure, and the server is resumed as soon
    # as the failure is in the log (read directly: a CLI poll may take seconds on a loaded machine)
    admin_configure(davit, server, prefix, tmp_path, extra="retry_seconds = 5\n", retry="initial_seconds = 6\n")
    davit.start()
    write_job(davit, "up.toml", backup_job(source))
    run_id = wait_for_checkpoints(davit, "up", 1)
    pause(server)
    try:
        assert not ended(davit, run_id), "the pause must land in the middle of the upload"
        waits = f"stream = 'run-{run_id}' AND type = 'RunWaitingRetry'"
        davit.wait_for(lambda: bool(davit.events(waits)), 180, "the run to wait for a retry", 0.05)
        before = checkpoints(davit, run_id)
    finally:
        resume(server)
    assert "RunWaitingRetry" in history_types(davit, run_id)
    [waiting] = [e[3] for e in davit.events(f"stream = 'run-{run_id}' AND type = 'RunWaitingRetry'")]
    assert waiting["error_type"] == "BackendUnavailable", waiting
    assert f"s3://{seaweedfs.BUCKET}/{prefix}" in waiting["error"]
    run = davit.wait_run_state("up", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded" and run["run_id"] == run_id and run["attempt"] == 2, run
    after = checkpoints(davit, run_id)[len(before) :]
    done_before = max(c["bytes_done"] for c in before)
    assert after and min(c["bytes_done"] for c in after if c["bytes_done"]) >= done_before  # from the checkpoint on
    written = [c for cp in checkpoints(davit, run_id) for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    restored_identical(davit, source, tmp_path / "restored")


def test_davitd_killed_mid_upload_redoes_at_most_about_one_pack(
    davit: Davit, server: seaweedfs.PrivateS3, source: Path, prefix: str, tmp_path: Path
) -> None:
    admin_configure(davit, server, prefix, tmp_path)
    davit.start()
    write_job(davit, "up.toml", backup_job(source))
    run_id = wait_for_checkpoints(davit, "up", 2)
    davit.kill9()
    assert not ended(davit, run_id), "the kill must land in the middle of the upload"
    davit.start()
    run = davit.wait_run_state("up", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded" and run["run_id"] == run_id and run["interruptions"] == 1, run
    written = [c for cp in checkpoints(davit, run_id) for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    # every byte ever uploaded into packs (nothing deletes them): the content once, plus at most
    # about one pack uploaded before the kill that the resumed run did again
    source_bytes = sum(p.stat().st_size for p in source.iterdir())
    uploaded = sum(o.size for o in bucket(server, prefix).list("packs/"))
    assert source_bytes <= uploaded <= source_bytes * 1.01 + (PACK_MIB << 20) * 1.5, (uploaded, source_bytes)
    restored_identical(davit, source, tmp_path / "restored")


def test_wrong_credentials_fail_the_run_for_good_naming_the_repository_and_never_the_secret(
    davit: Davit, server: seaweedfs.PrivateS3, source: Path, prefix: str, tmp_path: Path
) -> None:
    access, _ = server.keys["admin"]
    wrong = f"WrongSecret{uuid.uuid4().hex}"
    configure(davit, server.endpoint, prefix, key_files(tmp_path, access, wrong))
    davit.start()
    write_job(davit, "up.toml", backup_job(source))
    run = davit.wait_run_state("up", {"succeeded", "failed", "waiting_retry"}, timeout=120)
    assert run["state"] == "failed" and run["error_type"] == "BackendDenied" and run["attempt"] == 1, run
    assert f"s3://{seaweedfs.BUCKET}/{prefix} at {server.endpoint}" in run["error"]
    assert "SignatureDoesNotMatch" in run["error"]
    said = [
        davit.cli("runs", "--json").stdout,
        davit.cli("history", run["run_id"], "--json").stdout,
        davit.cli("show", run["run_id"]).stdout,
        davit.cli("snapshots", check=False).stderr,
        davit.cli("repository", "stats", "cloud", check=False).stderr,
    ]
    davit.stop()
    said.append(davit.logs[-1].read_text())
    db = davit.home / "state" / "davit.db"
    said += [p.read_bytes().decode("latin-1") for p in db.parent.glob("davit.db*")]
    for text in said:
        assert wrong not in text
    assert "BackendDenied" in said[0] or "SignatureDoesNotMatch" in said[0]


def test_davitd_starts_and_runs_local_jobs_while_a_remote_repository_is_unreachable(
    davit: Davit, source: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configure(davit, f"http://127.0.0.1:{port}", "down", key_files(tmp_path, "AK", "SK"), extra="retry_seconds = 2\n")
    davit.start()
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("local work goes on\n")
    write_job(davit, "up.toml", backup_job(source))
    write_job(davit, "loc.toml", f'name = "loc"\nkind = "files.backup"\n[source]\npath = "{small}"\n')
    assert davit.wait_run_state("loc", {"succeeded", "failed"}, timeout=120)["state"] == "succeeded"
    remote = davit.wait_run_state("up", {"waiting_retry", "failed", "succeeded"}, timeout=120)
    assert remote["state"] == "waiting_retry" and remote["error_type"] == "BackendUnavailable", remote
    assert f"127.0.0.1:{port}" in remote["error"]
