"""Repository hygiene as an operator sees it through davitd and davit (issue 14, findings 8, 9
and 11): a damaged manifest blocks nothing and is named; the staging of a run that ended is
removed; nothing davitd writes is readable by group or others whatever its umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, remount_small_disk, write_job

pytestmark = pytest.mark.e2e


def backup_job(name: str, source: Path) -> str:
    return f'name = "{name}"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{source}"\n'


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "shadow").write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    (root / "blob.bin").write_bytes(os.urandom(200_000))
    return root


def readable_by_others(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{path} {stat.filemode(mode)}")
    return found


def test_under_umask_022_nothing_davitd_writes_in_the_repository_or_state_dir_is_group_or_other_readable(
    davit: Davit, source: Path
) -> None:
    """Finding 11: with the umask `make run` or a shell gives (022), packs and davit.db were 0644."""
    previous = os.umask(0o022)
    try:
        davit.start()
    finally:
        os.umask(previous)
    write_job(davit, "etc.toml", backup_job("etc", source))
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    previous = os.umask(0o022)
    try:
        assert davit.cli("run", "etc", "--wait", "--timeout", "60", check=False).returncode == 0
    finally:
        os.umask(previous)
    repository, state = davit.home / "repository", davit.home / "state"
    assert list((repository / "packs").rglob("*.pack")) and (state / "davit.db").exists()
    assert readable_by_others(repository) == []
    assert readable_by_others(state) == []
    assert stat.S_IMODE(repository.stat().st_mode) == 0o700 and stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_damaged_manifest_is_listed_as_damaged_verify_fails_it_and_the_other_snapshots_still_work(
    davit: Davit, source: Path
) -> None:
    """Finding 8: one manifest that is not JSON broke `davit snapshots` with a traceback."""
    davit.start()
    write_job(davit, "etc.toml", backup_job("etc", source))
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    for _ in range(2):
        assert davit.cli("run", "etc", "--wait", "--timeout", "60", check=False).returncode == 0
    first, second = davit.json_lines("snapshots")
    (davit.home / "repository" / "snapshots" / second["id"] / "manifest.json").write_text("{not json")

    listing = davit.cli("snapshots")
    assert "Traceback" not in listing.stdout + listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert "DAMAGED: manifest is not JSON" in lines[second["id"]] and "DAMAGED" not in lines[first["id"]]
    rows = {row["id"]: row for row in davit.json_lines("snapshots")}
    assert rows[second["id"]]["damaged"] is True and "not JSON" in rows[second["id"]]["reason"]
    assert rows[first["id"]]["damaged"] is False

    verify = davit.cli("verify", second["id"], check=False)
    assert verify.returncode == 1 and "manifest is not JSON" in verify.stdout
    assert "Traceback" not in verify.stdout + verify.stderr
    assert "0 problems" in davit.cli("verify", first["id"]).stdout

    # the next backup's parent is the last good snapshot, and the run succeeds
    assert davit.cli("run", "etc", "--wait", "--timeout", "60", check=False).returncode == 0
    run = davit.runs("etc")[-1]
    started = [e for e in davit.history(run["run_id"]) if e["type"] == "RunStarted"]
    assert started[0]["data"]["details"]["parent"] == first["id"]


def test_a_failed_backup_keeps_its_staging_until_a_later_run_succeeds_and_start_up_removes_only_staging_it_knows_ended(
    davit: Davit, tmp_path: Path, small_disk: Path
) -> None:
    """Finding 9: the staging of a failed or cancelled run stayed forever (and kept its chunks).
    A failed run may still be resumed by an operator (after making room), so its staging stays
    until a later run of its job succeeds; then nothing will resume from it and it goes."""
    source = tmp_path / "big"
    source.mkdir()
    for i in range(16):
        (source / f"part{i:02d}.bin").write_bytes(os.urandom(1 << 20))
    davit.configure(
        f'[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.2\n[repositories.local]\npath = "{small_disk / "repo"}"\n'
    )
    davit.start()
    write_job(davit, "big.toml", backup_job("big", source))
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    assert davit.cli("run", "big", "--wait", "--timeout", "90", check=False).returncode == 1
    failed = davit.runs("big")[-1]
    assert failed["state"] == "failed" and failed["error_type"] == "StorageFull", failed
    checkpoints = davit.events(f"stream = 'run-{failed['run_id']}' AND type = 'CheckpointRecorded'")
    assert checkpoints, "the run failed before it staged anything: the test proves nothing"
    staging = small_disk / "repo" / "staging"
    assert (staging / failed["run_id"]).is_dir(), "a failed run's staging is what `davit resume` continues from"

    remount_small_disk(small_disk, 64)
    assert davit.cli("run", "big", "--wait", "--timeout", "90", check=False).returncode == 0
    davit.wait_for(
        lambda: not (staging / failed["run_id"]).exists(), 10, "the failed run's staging to go once a later run succeeded"
    )

    # a daemon that died before removing it: the next start removes it, not another davitd's
    davit.stop()
    (staging / failed["run_id"]).mkdir()
    (staging / failed["run_id"] / "tree.jsonl").write_text("")
    (staging / "0123456789ab").mkdir()  # a run this log does not know
    davit.start()
    davit.wait_for(lambda: not (staging / failed["run_id"]).exists(), 20, "start-up to remove ended staging")
    assert (staging / "0123456789ab").is_dir()
