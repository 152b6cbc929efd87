"""`davit status` as a monitor runs it against a real davitd: the exit code (Nagios: 0 OK,
1 WARNING, 2 CRITICAL, 3 UNKNOWN) and the one-line summary in each situation an operator must
be woken for, or not: all good, a failed job, a stale job, davitd stopped or killed, a log that
cannot be read, a config that cannot be loaded."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Davit, write_job

pytestmark = pytest.mark.e2e


def backup_job(name: str, source: Path | str, extra: str = "") -> str:
    return f'name = "{name}"\nkind = "files.backup"\n{extra}\n[source]\npath = "{source}"\n'


def status(davit: Davit) -> tuple[int, list[str]]:
    result = davit.cli("status", check=False)
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def status_json(davit: Davit) -> tuple[int, dict[str, Any]]:
    result = davit.cli("status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("davit\n")
    return src


def test_status_is_ok_while_davitd_runs_and_every_job_succeeded(davit: Davit, source: Path) -> None:
    davit.configure("")
    write_job(davit, "docs.toml", backup_job("docs", source, 'max_age = "26h"\nschedule = "0 3 * * *"'))
    davit.start()
    assert davit.proc is not None
    davit.cli("run", "docs", "--wait")
    code, lines = status(davit)
    assert code == 0, lines
    assert lines[0].startswith("DAVIT OK - 1 jobs, 0 running, 0 queued; davitd up (pid ")
    assert lines[1].startswith(f"davitd: running, pid {davit.proc.pid}, version ")
    code, body = status_json(davit)
    assert (code, body["status"], body["exit_code"]) == (0, "OK", 0)
    assert body["daemon"]["state"] == "running" and body["daemon"]["pid"] == davit.proc.pid
    [docs] = body["jobs"]
    assert (docs["name"], docs["last_state"], docs["stale"]) == ("docs", "succeeded", False)
    assert docs["last_success_age_seconds"] < 60 and docs["next_fire"][11:19] == "03:00:00"


def test_status_is_critical_when_a_jobs_last_run_failed(davit: Davit, source: Path, tmp_path: Path) -> None:
    davit.configure("")
    write_job(davit, "docs.toml", backup_job("docs", source))
    write_job(davit, "gone.toml", backup_job("gone", tmp_path / "nothing-here"))
    davit.start()
    davit.wait_run_state("docs", {"succeeded"})
    failed = davit.wait_run_state("gone", {"failed"})
    code, lines = status(davit)
    assert code == 2, lines
    assert lines[0].startswith(f"DAVIT CRITICAL - job gone: run {failed['run_id']} failed: source ")
    assert "2 jobs, 0 running, 0 queued" in lines[0] and "failed=1" in lines[0]
    assert f"CRITICAL: job gone: run {failed['run_id']} failed: source " in "\n".join(lines)


def test_status_warns_of_a_job_whose_last_success_is_older_than_its_max_age(davit: Davit, source: Path) -> None:
    davit.configure("")
    write_job(davit, "docs.toml", backup_job("docs", source, 'max_age = "2s"'))
    davit.start()
    davit.wait_run_state("docs", {"succeeded"})
    davit.wait_for(lambda: status(davit)[0] == 1, 30, "the job to grow stale", poll=0.5)
    code, lines = status(davit)
    assert code == 1
    assert lines[0].startswith("DAVIT WARNING - job docs: stale: last success ")
    assert lines[0].endswith("stale=1") and "(max_age 2s)" in lines[0]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_status_is_critical_when_davitd_is_not_running(davit: Davit, source: Path, how: int) -> None:
    davit.configure("")
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.start()
    davit.wait_run_state("docs", {"succeeded"})
    assert status(davit)[0] == 0
    davit.stop(how)
    code, lines = status(davit)
    assert code == 2, lines
    assert lines[0].startswith("DAVIT CRITICAL - davitd is not running (it does not hold its lock); 1 jobs")
    assert lines[1] == "davitd: NOT RUNNING"
    assert status_json(davit)[1]["daemon"]["state"] == "not_running"


def test_status_is_critical_when_davitd_is_frozen_and_its_heartbeat_stops(davit: Davit) -> None:
    """SIGSTOP: the process lives and holds its lock, but does nothing (as a hung daemon)."""
    davit.configure("")
    davit.start()
    assert davit.proc is not None
    beat = davit.home / "state" / "davitd.heartbeat"
    # age the heartbeat as time passing would: rewritten with a beat 10 minutes ago, another boot's
    data = json.loads(beat.read_text())
    davit.proc.send_signal(signal.SIGSTOP)
    pid = davit.proc.pid
    # (a signal is delivered asynchronously: a beat may still land until the process is stopped)
    davit.wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 10, "davitd to stop")
    try:
        data |= {"boot_id": "an-earlier-boot", "beat_at": "2020-01-01T00:00:00+00:00"}
        beat.write_text(json.dumps(data))
        code, lines = status(davit)
        assert code == 2, lines
        assert lines[0].startswith(f"DAVIT CRITICAL - davitd (pid {davit.proc.pid}) holds its lock but its last heartbeat is ")
        assert lines[1] == "davitd: NOT RESPONDING (holds its lock, no fresh heartbeat)"
    finally:
        davit.proc.send_signal(signal.SIGCONT)
    davit.wait_for(lambda: status(davit)[0] == 0, 30, "davitd's next beat")


def test_status_is_critical_when_the_log_cannot_be_read(davit: Davit, source: Path) -> None:
    davit.configure("")
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.start()
    davit.wait_run_state("docs", {"succeeded"})
    davit.stop()
    db = davit.home / "state" / "davit.db"
    for leftover in db.parent.glob("davit.db-*"):
        leftover.unlink()
    db.write_bytes(b"this is not an SQLite database, only damage " * 200)
    code, lines = status(davit)
    assert code == 2, lines
    assert lines[0].startswith(
        "DAVIT CRITICAL - davitd is not running (it does not hold its lock); the event log cannot be read: "
    )
    assert str(db) in lines[0]
    code, body = status_json(davit)
    assert (code, body["log_readable"], body["jobs"]) == (2, False, [])


def test_status_is_unknown_when_the_config_cannot_be_loaded(davit: Davit) -> None:
    davit.configure("[daemon]\nmax_parallel_runs = 0\n")
    code, lines = status(davit)
    assert code == 3
    assert lines[0].startswith("DAVIT UNKNOWN - the configuration cannot be loaded: ")
    assert "daemon.max_parallel_runs" in lines[0]
    code, body = status_json(davit)
    assert (code, body["status"], body["exit_code"]) == (3, "UNKNOWN", 3)


def test_status_escapes_control_characters_from_a_jobs_error(davit: Davit, tmp_path: Path) -> None:
    davit.configure("")
    write_job(davit, "evil.toml", backup_job("evil", str(tmp_path / "no\\u001b[2Jsuch\\u202edir")))
    davit.start()
    davit.wait_run_state("evil", {"failed"})
    result = davit.cli("status", check=False)
    assert result.returncode == 2
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "no\\x1b[2Jsuch\\u202edir" in result.stdout
    as_json = davit.cli("status", "--json", check=False).stdout
    assert "\x1b" not in as_json and "\\u001b[2J" in as_json
