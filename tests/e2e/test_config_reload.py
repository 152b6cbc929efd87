"""`systemctl reload davit` (SIGHUP): the daemon re-reads davit.toml without stopping its runs.
A broken config is rejected with field and reason and the old one stays in force."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, write_job

pytestmark = [pytest.mark.e2e]


def daemon_events(davit: Davit, type_: str) -> list[dict[str, object]]:
    return [e[3] for e in davit.events(f"stream = 'daemon' AND type = '{type_}'")]


def overlapped(davit: Davit, jobs: set[str]) -> bool:
    run_jobs = {e[3]["run_id"]: e[3]["job"] for e in davit.events("type = 'RunQueued'")}
    active, most = 0, 0
    for _, stream, type_, _ in davit.events("stream LIKE 'run-%'"):
        if run_jobs.get(stream.removeprefix("run-")) not in jobs:
            continue
        active += {"RunPreparing": 1, "RunSucceeded": -1}.get(type_, 0)
        most = max(most, active)
    return most > 1


def run_together(davit: Davit, tmp_path: Path, names: tuple[str, ...]) -> None:
    """Drop job files that run at once (no schedule), each backing up its own 40 MB of random
    bytes, in one go so the daemon queues their runs together; wait for them."""
    for name in names:
        source = tmp_path / f"source-{name}"
        source.mkdir()
        for i in range(4):
            (source / f"f{i}.bin").write_bytes(os.urandom(10 << 20))
    for name in names:
        source = tmp_path / f"source-{name}"
        write_job(davit, f"{name}.toml", f'name = "{name}"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    for name in names:
        davit.wait_run_state(name, {"succeeded"}, timeout=120)


def test_a_reload_applies_a_valid_config_to_new_runs_and_rejects_a_broken_one(davit: Davit, tmp_path: Path) -> None:
    davit.configure("[daemon]\nmax_parallel_runs = 1\n")
    davit.start()
    assert davit.proc is not None

    davit.configure("[daemon]\nmax_parallel_runs = 4\nno_such_setting = 1\n[retry]\nmax_attempts = 0\n")
    davit.proc.send_signal(signal.SIGHUP)
    davit.wait_for(lambda: bool(daemon_events(davit, "ConfigRejected")), 10, "the broken config to be rejected")
    [rejected] = daemon_events(davit, "ConfigRejected")
    assert {p["field"] for p in rejected["problems"]} == {  # type: ignore[attr-defined]
        "daemon.no_such_setting",
        "retry.max_attempts",
    }
    assert davit.proc.poll() is None
    davit.configure("[daemon]\nmax_parallel_runs = 1\n")  # fixed on disk, not reloaded: the CLI reads it too

    run_together(davit, tmp_path, ("a", "b"))
    assert not overlapped(davit, {"a", "b"}), "nothing of the rejected config (4 at a time) may apply"

    davit.configure('[daemon]\nmax_parallel_runs = 4\njobs_dir = "elsewhere"\n[retry]\nmax_attempts = 2\n')
    davit.proc.send_signal(signal.SIGHUP)
    davit.wait_for(lambda: bool(daemon_events(davit, "ConfigReloaded")), 10, "the config to be reloaded")
    [reloaded] = daemon_events(davit, "ConfigReloaded")
    assert reloaded["changed"] == ["daemon.jobs_dir", "daemon.max_parallel_runs", "retry.max_attempts"]
    assert reloaded["needs_restart"] == ["daemon.jobs_dir"]

    run_together(davit, tmp_path, ("c", "d"))  # into the old jobs directory: it stays until a restart
    assert overlapped(davit, {"c", "d"}), "with max_parallel_runs = 4 the two runs should overlap"
    assert any("config reloaded" in log.read_text() for log in davit.logs)
