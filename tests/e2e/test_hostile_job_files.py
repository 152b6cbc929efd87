"""Hostile job files met by the real davitd and davit (issue 15, findings 1-3).

davitd must keep running with any of them in its jobs directory, at start-up or dropped in
later: each is a `JobFileRejected` naming file, field and reason (recorded once, not on every
rescan), and the valid files that sort after them are defined as usual. `davit validate` gives
the same verdicts, exit 2, never a traceback. The device node and the foreign owner need root
(CI runs as root); elsewhere they are left out.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Davit, write_job
from tests.fixtures.hostile_jobs import Hostile, huge_name, valid_job, write_all

pytestmark = pytest.mark.e2e

RESCAN_S = 2.0  # davitd rescans the jobs directory this often (supervisor.RESCAN_MS)


def rejections(davit: Davit) -> dict[str, list[list[dict[str, str]]]]:
    """File name -> the problems of each JobFileRejected recorded for it."""
    out: dict[str, list[list[dict[str, str]]]] = {}
    for _, _, _kind, data in davit.events("type = 'JobFileRejected'"):
        out.setdefault(Path(data["file"]).name, []).append(data["problems"])
    return out


def defined(davit: Davit) -> set[str]:
    return {data["name"] for _, _, _, data in davit.events("type = 'JobDefined'")}


def assert_each_rejected_once_with_its_reason(davit: Davit, expected: dict[str, Hostile]) -> None:
    davit.wait_for(
        lambda: set(expected) <= set(rejections(davit)) and "good" in defined(davit),
        60,
        "every hostile file rejected and the valid one defined",
    )
    time.sleep(2.5 * RESCAN_S)  # a few rescans: a rejection must not be recorded again
    found = rejections(davit)
    for name, hostile in expected.items():
        assert len(found[name]) == 1, (name, len(found[name]))
        first = found[name][0][0]
        assert first["field"] == hostile.field and hostile.reason in first["reason"], (name, first)
    assert defined(davit) == {"good"}
    assert davit.proc is not None and davit.proc.poll() is None
    log = davit.logs[-1].read_text()
    assert "Traceback" not in log and "RecursionError" not in log
    assert "a-deep-arrays.toml: (toml): line 4: nested deeper than 32 levels" in log


def test_davitd_started_among_hostile_job_files_rejects_each_and_defines_the_rest(davit: Davit) -> None:
    """Before: the 2,000-deep file made start-up exit 1 (a crash loop under Restart=on-failure)."""
    expected = write_all(davit.jobs_dir)
    write_job(davit, "z-good.toml", valid_job("good"))
    davit.start()
    assert_each_rejected_once_with_its_reason(davit, expected)


def test_hostile_job_files_dropped_into_a_running_davitd_are_rejected_and_the_rest_defined(davit: Davit) -> None:
    """Before: the sync died on the deep file each rescan, logging a traceback every 2 s, and
    files sorting after it were never defined."""
    davit.jobs_dir.mkdir(parents=True)
    davit.start()
    expected = write_all(davit.jobs_dir)
    write_job(davit, "z-good.toml", valid_job("good"))
    assert_each_rejected_once_with_its_reason(davit, expected)


def test_validate_gives_davitds_verdict_on_every_hostile_file_exit_2_and_no_traceback(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    expected = write_all(jobs_dir)
    paths = [str(jobs_dir / name) for name in sorted(expected)]
    result = subprocess.run([str(BIN / "davit"), "validate", *paths], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name, hostile in expected.items():
        prefix = f"{jobs_dir / name}: {hostile.field}: "
        mine = [line for line in lines if line.startswith(prefix)]
        assert mine and hostile.reason in mine[0], (name, lines)


def test_validate_refuses_a_file_in_a_directory_others_can_write_as_davitd_would(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    path = jobs_dir / "job.toml"
    path.write_text(valid_job("job"))
    jobs_dir.chmod(0o777)
    result = subprocess.run([str(BIN / "davit"), "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout.startswith(f"{path}: (file): the jobs directory {jobs_dir} is writable by group and others")


def test_validate_answers_on_a_100000_letter_name_in_seconds_not_14(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    path = huge_name(jobs_dir, 100_000)
    started = time.monotonic()
    result = subprocess.run([str(BIN / "davit"), "validate", str(path)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and f"{path}: name: String should match pattern" in result.stdout
    assert elapsed < 5.0, f"davit validate took {elapsed:.1f}s (the quadratic pattern took 14 s)"
