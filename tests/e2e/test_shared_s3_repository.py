"""Two davitd, each with its own home, back up into one repository in an S3 bucket (the SeaweedFS
peer, a fresh prefix) round after round, while a third process, the operator's maintenance
shell, runs `davit repository prune` in a loop: no run fails, every snapshot left verifies, and
the latest snapshot of each job restores identical (issue 17; the local version of this scenario
is test_shared_repository.py)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Davit, tree_digest, write_job
from tests.e2e.test_remote_repository_kinds import bucket_view, s3_section
from tests.peers.state import S3Peer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# small packs and frequent checkpoints: each run seals and records several packs on the way
DATA_PATH = "[data_path]\npack_size_mib = 1\nchunk_size_kib = 64\ncheckpoint_seconds = 0.3\n"
KEEP = {"alpha": 1, "beta": 2}  # the maintenance side's retention, per job


def job(name: str, source: Path, retention: str = "") -> str:
    return (
        f'name = "{name}"\nkind = "files.backup"\nrepository = "shared"\nschedule = "0 0 1 1 *"\n'
        f'[source]\npath = "{source}"\n{retention}'
    )


def run_job(davit: Davit, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "davit"), "--home", str(davit.home), "run", name, "--wait", "--timeout", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


class PruneLoop(threading.Thread):
    """`davit repository prune shared` again and again until told to stop; every exit code seen."""

    def __init__(self, maintenance: Davit) -> None:
        super().__init__(daemon=True)
        self.maintenance = maintenance
        self.stopping = threading.Event()
        self.outcomes: list[tuple[int, str]] = []
        self.spans: list[tuple[float, float]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            began = time.monotonic()
            done = self.maintenance.cli("repository", "prune", "shared", check=False, timeout=120)
            self.spans.append((began, time.monotonic()))
            self.outcomes.append((done.returncode, done.stdout + done.stderr))
            self.stopping.wait(0.2)


def change_sources(sources: dict[str, Path], round_no: int) -> None:
    """beta takes in what alpha had last round: chunks that the prune of alpha's previous
    snapshot (keep_last = 1) is deleting while beta's backup finds them in its index. Both
    replace their own files: the packs of the old ones are the prune's to delete."""
    for f in sorted(sources["alpha"].iterdir()):
        (sources["beta"] / f"r{round_no}-{f.name}").write_bytes(f.read_bytes())
        f.unlink()
    for i in range(3):
        (sources["alpha"] / f"r{round_no}-a{i}.bin").write_bytes(os.urandom(1 << 20))
    for f in sources["beta"].glob("*-own.bin"):
        f.unlink()
    (sources["beta"] / f"r{round_no}-own.bin").write_bytes(os.urandom(2 << 20))


def back_up_in_rounds(homes: dict[str, Davit], sources: dict[str, Path], seconds: float) -> list[tuple[float, float]]:
    """Both jobs at once, round after round, each on its changed source; when each round ran."""
    deadline = time.monotonic() + seconds
    spans: list[tuple[float, float]] = []
    while len(spans) < 6 and time.monotonic() < deadline:
        rounds, began = len(spans), time.monotonic()
        change_sources(sources, rounds)
        runs = [(name, run_job(davit, name)) for name, davit in homes.items()]
        for name, proc in runs:
            out, _ = proc.communicate(120)
            assert proc.returncode == 0, f"round {rounds}, job {name}: {out.decode()}"
        spans.append((began, time.monotonic()))
    return spans


def assert_every_snapshot_verifies(maintenance: Davit) -> None:
    """One last prune, once every run has ended, leaves exactly what the policies keep, and all
    of it reads back."""
    maintenance.cli("repository", "prune", "shared", timeout=120)
    snapshots = maintenance.json_lines("snapshots")
    assert sorted(s["job"] for s in snapshots) == ["alpha"] * KEEP["alpha"] + ["beta"] * KEEP["beta"]
    for snap in snapshots:
        result = maintenance.json_lines("verify", snap["id"], "--repository", "shared")[0]
        assert result["ok"] and result["chunks_checked"] > 0, result
    check = maintenance.cli("repository", "check", "shared", "--read-data", timeout=300)
    assert check.stdout.rstrip().endswith(": 0 problems"), check.stdout


def assert_latest_restores_identical(davit: Davit, name: str, source: Path, target: Path) -> None:
    write_job(
        davit,
        f"{name}-back.toml",
        f'name = "{name}-back"\nkind = "files.restore"\nrepository = "shared"\n'
        f'[source]\njob = "{name}"\n[target]\npath = "{target}"\n',
    )
    back = davit.wait_run_state(f"{name}-back", {"succeeded", "failed"}, timeout=300)
    assert back["state"] == "succeeded", back
    assert tree_digest(target) == tree_digest(source)


def test_two_daemons_back_up_into_one_s3_repository_while_a_third_prunes_and_every_snapshot_verifies(
    seaweedfs_peer: S3Peer, tmp_path: Path
) -> None:
    prefix = f"e2e-shared/{uuid.uuid4().hex[:10]}"
    config = f"{DATA_PATH}[repositories.shared]\n{s3_section(seaweedfs_peer, prefix)}"
    homes = {name: Davit(tmp_path / f"home-{name}") for name in ("alpha", "beta")}
    maintenance = Davit(tmp_path / "home-maintenance")  # never started: only its CLI prunes
    sources = {name: tmp_path / f"{name}-src" for name in homes}
    for name, davit in homes.items():
        sources[name].mkdir()
        davit.configure(config)
        write_job(davit, f"{name}.toml", job(name, sources[name]))  # no retention: davitd deletes nothing
    maintenance.configure(config)
    for name in homes:
        write_job(maintenance, f"{name}.toml", job(name, sources[name], f"[retention]\nkeep_last = {KEEP[name]}\n"))
    homes["alpha"].cli("repository", "init", "shared")
    pruning = PruneLoop(maintenance)
    try:
        for davit in homes.values():
            davit.start()
        pruning.start()
        spans = back_up_in_rounds(homes, sources, 60)
        pruning.stopping.set()
        pruning.join(150)
        rounds = len(spans)
        assert not pruning.is_alive() and rounds >= 3
        overlapping = [p for p in pruning.spans if any(p[0] < r[1] and r[0] < p[1] for r in spans)]
        assert len(overlapping) >= rounds, "the prunes must run while the backups do"
        for name, davit in homes.items():
            assert [r["state"] for r in davit.runs(name)] == ["succeeded"] * rounds, davit.runs(name)
            # the runs sealed their packs along the way, checkpoint by checkpoint
            sealed = [e for e in davit.events("type = 'CheckpointRecorded'") if e[3].get("chunks_written")]
            assert len(sealed) >= 2 * rounds
        assert pruning.outcomes and all(code == 0 for code, _ in pruning.outcomes), pruning.outcomes
        # the prunes ran while the backups did, forgetting snapshots and deleting packs
        assert any(re.search(r"forgot [1-9]", out) for _, out in pruning.outcomes), pruning.outcomes
        assert any(re.search(r": [1-9]\d* packs deleted", out) for _, out in pruning.outcomes), pruning.outcomes

        assert_every_snapshot_verifies(maintenance)
        for name, davit in homes.items():
            assert_latest_restores_identical(davit, name, sources[name], tmp_path / f"{name}-restored")
        # every lock the three took went away with its holder
        assert list(bucket_view(seaweedfs_peer, prefix).list("locks/")) == []
    finally:
        pruning.stopping.set()
        for davit in homes.values():
            if davit.proc is not None and davit.proc.poll() is None:
                davit.stop()
