"""What an operator does with davitd and davit, run as subprocesses with a --home each."""

from __future__ import annotations

import fcntl
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Davit, write_job

pytestmark = pytest.mark.e2e


def backup_job(name: str, source: Path, extra: str = "") -> str:
    return f'name = "{name}"\nkind = "files.backup"\n{extra}\n[source]\npath = "{source}"\n'


def restore_job(name: str, job: str, target: Path) -> str:
    return f'name = "{name}"\nkind = "files.restore"\n[source]\njob = "{job}"\n[target]\npath = "{target}"\n'


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n" * 1000)
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4000)
    return root


def test_a_dropped_job_runs_and_history_shows_its_transitions_in_order(davit: Davit, source: Path) -> None:
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    run = davit.wait_run_state("docs", {"succeeded", "failed"})
    assert run["state"] == "succeeded", run
    types = [e["type"] for e in davit.history(run["run_id"])]
    assert types[:3] == ["RunQueued", "RunPreparing", "RunStarted"]
    assert types[-2:] == ["RunVerifying", "RunSucceeded"]
    assert "CheckpointRecorded" in types and types.index("StepStarted") < types.index("CheckpointRecorded")
    job_events = [e["type"] for e in davit.history("--job", "docs")]
    assert job_events[:2] == ["JobDefined", "JobRunTriggered"]
    positions = [e["position"] for e in davit.history("--all")]
    assert positions == sorted(positions)
    [snap] = davit.json_lines("snapshots")
    assert snap["id"] == run["snapshot_id"]
    assert "0 problems" in davit.cli("verify", snap["id"][:6]).stdout
    show = davit.cli("show", run["run_id"][:5]).stdout
    assert "succeeded" in show and "store" in show


def test_a_job_without_schedule_runs_once_per_revision_also_across_restarts(davit: Davit, source: Path) -> None:
    davit.start()
    path = write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"succeeded"})
    davit.stop()
    davit.start()
    write_job(davit, "other.toml", backup_job("other", source))  # proves the daemon is watching again
    davit.wait_run_state("other", {"succeeded"})
    assert len(davit.runs("docs")) == 1
    path.write_text("# a comment changes nothing\n" + path.read_text())
    path.write_text(path.read_text().replace("[source]", "[retention]\nkeep_last = 2\n[source]"))
    davit.wait_for(lambda: len(davit.runs("docs")) == 2, 30, "a run of the new revision")
    davit.wait_run_state("docs", {"succeeded"})


def test_bad_job_files_are_rejected_clearly_and_a_valid_job_keeps_running(davit: Davit, source: Path) -> None:
    davit.start()
    write_job(davit, "good.toml", backup_job("good", source, 'schedule = "* * * * *"'))
    write_job(davit, "broken.toml", 'name = "broken"\nkind = "files.backup"\n[source\n')
    write_job(davit, "alien.toml", 'name = "alien"\nkind = "tape.backup"\n')
    davit.wait_for(lambda: len([e for e in davit.events() if e[2] == "JobFileRejected"]) == 2, 20, "rejections")
    rejections = {Path(e[3]["file"]).name: e[3]["problems"] for e in davit.events() if e[2] == "JobFileRejected"}
    assert rejections["broken.toml"][0]["field"] == "(toml)"
    assert rejections["alien.toml"][0]["field"] == "kind"
    assert "unknown kind 'tape.backup'" in rejections["alien.toml"][0]["reason"]
    log = davit.logs[-1].read_text()
    assert "alien.toml: kind: unknown kind 'tape.backup'" in log
    assert davit.proc is not None and davit.proc.poll() is None
    jobs = {j["name"]: j for j in davit.json_lines("jobs")}
    assert set(jobs) == {"good"}
    run_id = davit.cli("run", "good").stdout.strip()
    davit.wait_for(
        lambda: any(r["run_id"] == run_id and r["state"] == "succeeded" for r in davit.runs("good")),
        60,
        "the valid job to keep running",
    )


def test_validate_reports_file_field_and_reason(tmp_path: Path, source: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(backup_job("good", source))
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "Bad Name"\nkind = "files.backup"\n[source]\npath = "relative"\n')
    ok = subprocess.run([str(BIN / "davit"), "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0
    result = subprocess.run([str(BIN / "davit"), "validate", str(good), str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert f"{bad}: name: String should match pattern" in lines[0]
    assert f"{bad}: source.path: must be an absolute path" in lines
    assert str(good) not in result.stdout


def test_run_wait_exits_0_on_success_and_1_on_failure(davit: Davit, source: Path, tmp_path: Path) -> None:
    davit.start()
    write_job(davit, "ok.toml", backup_job("ok", source, 'schedule = "0 0 1 1 *"'))
    write_job(davit, "gone.toml", backup_job("gone", tmp_path / "missing", 'schedule = "0 0 1 1 *"'))
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 2, 20, "both jobs defined")
    assert davit.cli("run", "ok", "--wait", "--timeout", "60", check=False).returncode == 0
    failed = davit.cli("run", "gone", "--wait", "--timeout", "60", check=False)
    assert failed.returncode == 1 and "does not exist" in failed.stderr
    run = davit.runs("gone")[-1]
    assert run["state"] == "failed" and run["error_type"] == "SourceMissing"
    assert davit.cli("run", "nosuchjob", check=False).returncode == 2


def test_sigterm_leaves_a_run_interrupted_and_the_next_start_resumes_it(davit: Davit, tmp_path: Path) -> None:
    from tests.e2e.conftest import make_big_tree

    big = tmp_path / "big"
    make_big_tree(big, 200)
    davit.configure("[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.5\n")
    davit.start()
    write_job(davit, "big.toml", backup_job("big", big))
    davit.wait_for(lambda: len([e for e in davit.events() if e[2] == "CheckpointRecorded"]) >= 2, 60, "two checkpoints")
    assert davit.stop(signal.SIGTERM) == 0
    [run] = davit.runs("big")
    assert run["state"] in ("interrupted", "succeeded")
    if run["state"] == "interrupted":
        davit.start()
        run = davit.wait_run_state("big", {"succeeded", "failed"})
        assert run["state"] == "succeeded" and run["interruptions"] == 1
        types = [e["type"] for e in davit.history(run["run_id"])]
        assert types.count("RunInterrupted") == 1 and "RunRequeued" in types


def test_cancel_stops_a_run_and_it_ends_cancelled(davit: Davit, tmp_path: Path) -> None:
    from tests.e2e.conftest import make_big_tree

    big = tmp_path / "big"
    make_big_tree(big, 600)  # long enough that the cancel lands while the store step is running
    davit.configure("[data_path]\npack_size_mib = 2\ncheckpoint_seconds = 0.2\n")
    davit.start()
    write_job(davit, "big.toml", backup_job("big", big))
    davit.wait_for(lambda: any(e[2] == "CheckpointRecorded" for e in davit.events()), 60, "a checkpoint")
    run_id = next(e[3]["run_id"] for e in davit.events("type = 'RunQueued'"))  # the log, not a slower CLI call
    result = davit.cli("cancel", run_id[:6], "--wait", "--timeout", "60", check=False)
    state = davit.runs("big")[-1]["state"]
    assert (result.returncode, state) in ((0, "cancelled"), (1, "succeeded"))  # it may finish first
    if state == "cancelled":
        types = [e["type"] for e in davit.history(run_id)]
        assert types[-1] == "RunCancelled"
        # after the request only the work in flight may still land (its checkpoint, or the end
        # of the step it was finishing); no step starts, and the run ends
        assert set(types[types.index("RunCancelling") + 1 : -1]) <= {"CheckpointRecorded", "StepCompleted"}
        assert davit.json_lines("snapshots") == []
    else:
        # it went past publish first: then a cancel no longer applies (it may show as CancelIgnored)
        assert "RunCancelling" not in [e["type"] for e in davit.history(run_id)]
        assert [s["id"] for s in davit.json_lines("snapshots")] == [run_id]


def test_a_cancel_once_the_snapshot_is_published_is_ignored_and_the_backup_succeeds(davit: Davit, source: Path) -> None:
    """Another process holds the repository (a shared lock, as a backup does): the run stores and
    publishes, then waits in its retention step, which needs the repository alone, until the
    cancel sent meanwhile has been handled. The snapshot exists, so the run must not end
    `cancelled`: it succeeds, and says that the cancel came too late."""
    from davit.adapters.repository.repository import Repository

    lock = Repository.open(davit.home / "repository").locks.acquire(exclusive=False)
    try:
        davit.start()
        write_job(davit, "docs.toml", backup_job("docs", source, "[retention]\nkeep_last = 3"))
        davit.wait_for(
            lambda: any(e[2] == "StepStarted" and e[3]["step"] == "retention" for e in davit.events()),
            60,
            "the retention step, after publish",
        )
        run_id = next(e[3]["run_id"] for e in davit.events("type = 'RunQueued'"))
        canceller = subprocess.Popen(
            [str(BIN / "davit"), "--home", str(davit.home), "cancel", run_id[:6], "--wait", "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        davit.wait_for(lambda: any(e[2] == "CancelIgnored" for e in davit.events()), 30, "the cancel to be handled")
    finally:
        lock.release()
    _out, err = canceller.communicate(timeout=90)
    assert canceller.returncode == 1
    assert f"{run_id} succeeded (the cancel came after step publish had started" in err

    assert davit.runs("docs")[-1]["state"] == "succeeded"
    assert [s["id"] for s in davit.json_lines("snapshots")] == [run_id]
    shown = davit.cli("show", run_id).stdout
    assert "cancel    ignored: requested by operator while running, after step publish had started" in shown
    history = [(e["type"], e["data"].get("step")) for e in davit.history(run_id)]
    assert ("RunCancelling", None) not in history and history[-1] == ("RunSucceeded", None)
    assert (
        history.index(("StepCompleted", "publish"))
        < history.index(("CancelIgnored", "publish"))
        < history.index(("StepCompleted", "retention"))
    )


def test_log_verify_passes_on_an_intact_log_and_names_the_first_edited_position(davit: Davit, source: Path) -> None:
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"succeeded"})
    davit.stop()
    assert "hash chain intact" in davit.cli("log", "verify").stdout
    edited = next(p for p, _, t, _ in davit.events() if t == "JobDefined")  # after LogKeyed, DaemonStarted
    with sqlite3.connect(davit.home / "state" / "davit.db") as conn:
        conn.execute("UPDATE events SET data = replace(data, 'docs', 'evil') WHERE position = ?", (edited,))
    result = davit.cli("log", "verify", "--json", check=False)
    assert result.returncode == 1
    assert f'"first_bad_position": {edited}' in result.stdout


def test_removing_a_job_file_retires_the_job(davit: Davit, source: Path) -> None:
    davit.start()
    path = write_job(davit, "docs.toml", backup_job("docs", source, 'schedule = "0 0 1 1 *"'))
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    path.unlink()
    davit.wait_for(lambda: davit.json_lines("jobs") == [], 20, "the job to be retired")
    assert any(e[2] == "JobRetired" for e in davit.events())


def test_a_second_daemon_on_the_same_state_refuses_to_start(davit: Davit) -> None:
    davit.start()
    second = subprocess.run([str(BIN / "davitd"), "--home", str(davit.home)], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "another davitd is running" in second.stderr


def test_a_daemon_refused_the_state_lock_touches_neither_the_log_nor_its_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = home / "state"
    state.mkdir(parents=True, mode=0o700)
    with open(state / "davitd.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running davitd holds it
        second = subprocess.run([str(BIN / "davitd"), "--home", str(home)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "another davitd is running" in second.stderr
    assert sorted(p.name for p in state.iterdir()) == ["davitd.lock"]


def test_history_follow_prints_new_events_as_they_happen(davit: Davit, source: Path) -> None:
    davit.start()
    follower = subprocess.Popen(
        [str(BIN / "davit"), "--home", str(davit.home), "history", "--follow", "--json"], stdout=subprocess.PIPE, text=True
    )
    try:
        write_job(davit, "docs.toml", backup_job("docs", source))
        seen = []
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line)
            if '"RunSucceeded"' in line:
                break
        assert any('"JobDefined"' in s for s in seen)
    finally:
        follower.kill()
        follower.wait()


def test_under_systemd_davitd_notifies_ready_status_and_watchdog(davit: Davit, tmp_path: Path) -> None:
    import os
    import socket

    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [str(BIN / "davitd"), "--home", str(davit.home)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        messages: list[str] = []
        while not {"READY=1", "WATCHDOG=1"} <= {line for m in messages for line in m.splitlines()}:
            messages.append(sock.recv(4096).decode())
        assert any(line.startswith("STATUS=") for m in messages for line in m.splitlines())
        proc.terminate()
        assert proc.wait(30) == 0
        tail = []
        while not any("STOPPING=1" in m for m in tail):
            tail.append(sock.recv(4096).decode())
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_the_service_unit_declares_notify_watchdog_directories_and_sandboxing() -> None:
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "davit.service").read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=davit",
        "ConfigurationDirectory=davit",
        "ProtectSystem=strict",
        "ProtectHome=",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ReadWritePaths=/var/lib/davit",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert directive in unit, directive


def test_a_failed_run_resumed_after_the_cause_is_fixed_succeeds(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "late"
    davit.start()
    write_job(davit, "late.toml", backup_job("late", source))
    failed = davit.wait_run_state("late", {"failed", "succeeded"})
    assert failed["state"] == "failed" and "does not exist" in failed["error"]
    source.mkdir()
    (source / "now-here.txt").write_text("the operator fixed it")
    assert davit.cli("resume", failed["run_id"][:7]).stdout.strip() == failed["run_id"]
    run = davit.wait_run_state("late", {"succeeded"}, timeout=60)
    assert run["run_id"] == failed["run_id"] and run["attempt"] == 2
    assert "RunRequeued" in [e["type"] for e in davit.history(run["run_id"])]


def test_max_parallel_runs_bounds_how_many_runs_execute_at_once(davit: Davit, source: Path) -> None:
    davit.configure("[daemon]\nmax_parallel_runs = 1\n")
    davit.start()
    for name in ("one", "two", "three"):
        write_job(davit, f"{name}.toml", backup_job(name, source))
    for name in ("one", "two", "three"):
        davit.wait_run_state(name, {"succeeded"}, timeout=60)
    active = 0
    for _, stream, type_, _ in davit.events("stream LIKE 'run-%'"):
        active += {"RunPreparing": 1, "RunSucceeded": -1}.get(type_, 0)
        assert active <= 1, f"two runs overlapped at {stream}"


@pytest.mark.slow
def test_a_scheduled_job_runs_when_its_cron_time_passes(davit: Davit, source: Path) -> None:
    davit.start()
    # every 10 s (croniter's sixth field is the second): the fire is a cron time all the same,
    # and the test waits ~5 s for it where every minute waited ~30 s
    write_job(davit, "minutely.toml", backup_job("minutely", source, 'schedule = "* * * * * */10"'))
    # the first run's end, read from the log (a run every 10 s: the newest is often still going)
    davit.wait_for(lambda: bool(davit.events("type IN ('RunSucceeded', 'RunFailed')")), 75, "the first run to end", 0.1)
    first = davit.events("type IN ('RunSucceeded', 'RunFailed')")[0][1].removeprefix("run-")
    [run] = [r for r in davit.runs("minutely") if r["run_id"] == first]
    assert run["state"] == "succeeded" and run["reason"] == "schedule", run
    from datetime import datetime

    trigger = next(e for e in davit.history("--job", "minutely") if e["type"] == "JobRunTriggered")
    assert trigger["data"]["reason"] == "schedule"
    scheduled_for = datetime.fromisoformat(trigger["data"]["scheduled_for"])
    assert scheduled_for.second % 10 == 0 and scheduled_for.microsecond == 0, scheduled_for


def test_a_full_disk_fails_the_run_at_once_and_keeps_the_earlier_snapshot(davit: Davit, tmp_path: Path, small_disk: Path) -> None:
    import os

    source = tmp_path / "grows"
    source.mkdir()
    (source / "first.bin").write_bytes(os.urandom(1 << 20))
    davit.configure(f'[repositories.local]\npath = "{small_disk / "repo"}"\n[retry]\nmax_attempts = 5\n')
    davit.start()
    write_job(davit, "grows.toml", backup_job("grows", source, 'schedule = "0 0 1 1 *"'))
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job")
    assert davit.cli("run", "grows", "--wait", "--timeout", "60", check=False).returncode == 0
    [first] = davit.json_lines("snapshots")
    (source / "second.bin").write_bytes(os.urandom(12 << 20))
    full = davit.cli("run", "grows", "--wait", "--timeout", "60", check=False)
    assert full.returncode == 1
    run = davit.runs("grows")[-1]
    assert run["state"] == "failed" and run["error_type"] == "StorageFull" and run["attempt"] == 1
    assert "no space left" in run["error"]
    assert [s["id"] for s in davit.json_lines("snapshots")] == [first["id"]]
    assert "0 problems" in davit.cli("verify", first["id"]).stdout
    assert davit.proc is not None and davit.proc.poll() is None
