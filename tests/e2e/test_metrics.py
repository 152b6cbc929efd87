"""davitd's metrics, scraped as Prometheus and node_exporter would while real files backups run:
valid for promtool, equal to what the log says, and still so after a restart."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import BIN, Davit, make_big_tree, write_job
from tests.fixtures.promtool import check_metrics, promtool
from tests.peers.ports import free_port

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: bytes) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return bytes(response.read())


def log_counts(davit: Davit) -> tuple[int, dict[str, dict[str, list[str]]]]:
    """(events in the log, per job the recorded_at of each RunSucceeded / RunFailed), read from the log itself."""
    db = sqlite3.connect(f"file:{davit.home / 'state' / 'davit.db'}?mode=ro", uri=True, timeout=30)
    try:
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        jobs = dict(db.execute("SELECT stream, json_extract(data, '$.job') FROM events WHERE type = 'RunQueued'").fetchall())
        ends: dict[str, dict[str, list[str]]] = {}
        for stream, type_, at in db.execute(
            "SELECT stream, type, recorded_at FROM events WHERE type IN ('RunSucceeded', 'RunFailed') ORDER BY position"
        ):
            ends.setdefault(jobs[stream], {}).setdefault(type_, []).append(at)
        return events, ends
    finally:
        db.close()


def configure(davit: Davit, port: int, textfile: Path) -> None:
    davit.configure(
        f"""
[retry]
max_attempts = 1
[data_path]
checkpoint_seconds = 0.2
[metrics]
listen = "127.0.0.1:{port}"
textfile = "{textfile}"
refresh_seconds = 0.2
"""
    )


def caught_up(davit: Davit, port: int) -> Samples:
    """A scrape whose figures include every event in the log."""
    found: Samples = {}

    def done() -> bool:
        found.clear()
        try:
            found.update(parse(scrape(port)))
        except urllib.error.URLError:
            return False  # (a davitd just started serves once it has read its log through)
        return value(found, "davit_log_events_total") == log_counts(davit)[0]

    davit.wait_for(done, 30, "the metrics to catch up with the log", poll=0.1)
    return found


@pytest.mark.slow
def test_metrics_scraped_during_and_after_files_backups_match_the_log(davit: Davit, tmp_path: Path) -> None:
    promtool()  # (fails under CI=true, skips with a hint elsewhere, before davitd is started for nothing)
    port = free_port()
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    configure(davit, port, textdir / "davit.prom")
    source = tmp_path / "source"
    make_big_tree(source, 110)
    davit.start()
    davit.wait_for(lambda: (textdir / "davit.prom").exists(), 30, "the first textfile")

    # during: scrape while the first backup (queued at definition) runs
    during: list[bytes] = []
    stop = threading.Event()

    def scraping() -> None:
        while not stop.is_set():
            during.append(scrape(port))
            stop.wait(0.05)

    scraper = threading.Thread(target=scraping)
    scraper.start()
    try:
        write_job(davit, "home.toml", f'name = "home"\nkind = "files.backup"\nmax_age = "26h"\n[source]\npath = "{source}"\n')
        first = davit.wait_run_state("home", {"succeeded", "failed"}, timeout=300)
    finally:
        stop.set()
        scraper.join()
    assert first["state"] == "succeeded"
    running = [text for text in during if value(parse(text), "davit_runs", state="running") == 1]
    assert running, f"no scrape among {len(during)} saw the backup running"
    check_metrics(running[len(running) // 2])

    # after: a second backup, and a job that fails
    davit.cli("run", "home", "--wait")
    write_job(davit, "broken.toml", f'name = "broken"\nkind = "files.backup"\n[source]\npath = "{tmp_path / "absent"}"\n')
    davit.wait_run_state("broken", {"failed"})
    text = scrape(port)
    samples = caught_up(davit, port)
    check_metrics(text)
    _, ends = log_counts(davit)
    home_runs = davit.runs("home")
    assert value(samples, "davit_job_runs_total", job_name="home", state="succeeded") == len(ends["home"]["RunSucceeded"]) == 2
    assert value(samples, "davit_job_runs_total", job_name="broken", state="failed") == len(ends["broken"]["RunFailed"]) == 1
    assert (
        value(samples, "davit_job_last_success_timestamp_seconds", job_name="home")
        == datetime.fromisoformat(ends["home"]["RunSucceeded"][-1]).timestamp()
    )
    assert (
        value(samples, "davit_job_last_failure_timestamp_seconds", job_name="broken")
        == datetime.fromisoformat(ends["broken"]["RunFailed"][-1]).timestamp()
    )
    assert value(samples, "davit_job_last_run_bytes", job_name="home") == home_runs[-1]["bytes_done"] > 100 << 20
    assert value(samples, "davit_job_last_run_items", job_name="home") == home_runs[-1]["items_done"]
    assert value(samples, "davit_job_last_run_state", job_name="broken", state="failed") == 1
    assert value(samples, "davit_job_max_age_seconds", job_name="home") == 26 * 3600
    assert value(samples, "davit_repository_snapshots", repository="local") == 2
    # the second backup found every chunk stored already: the repository holds about one source's worth
    read = value(samples, "davit_repository_backup_read_bytes_total", repository="local") or 0
    assert read == sum(r["bytes_done"] for r in home_runs)
    assert (value(samples, "davit_repository_dedup_ratio", repository="local") or 0) > 1.5
    assert value(samples, "davit_runs", state="running") == 0
    assert (value(samples, "davit_log_append_seconds_count") or 0) > 0

    # a restart: the counters come from the log, so they stay; the textfile said davitd was down
    assert davit.stop() == 0
    stopped = (textdir / "davit.prom").read_bytes()
    check_metrics(stopped)
    assert value(parse(stopped), "davit_up") == 0
    davit.start()
    again = caught_up(davit, port)
    for name, labels in [
        ("davit_job_runs_total", {"job_name": "home", "state": "succeeded"}),
        ("davit_job_runs_total", {"job_name": "broken", "state": "failed"}),
        ("davit_job_last_success_timestamp_seconds", {"job_name": "home"}),
        ("davit_repository_backup_stored_bytes_total", {"repository": "local"}),
    ]:
        assert value(again, name, **labels) == value(samples, name, **labels), name
    assert value(again, "davit_up") == 1


def test_a_symlink_planted_at_the_textfile_is_not_written_through_and_backups_go_on(davit: Davit, tmp_path: Path) -> None:
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    (textdir / "davit.prom").symlink_to(victim)
    davit.configure(f'[metrics]\ntextfile = "{textdir / "davit.prom"}"\nrefresh_seconds = 0.2\n')
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    davit.start()
    write_job(davit, "home.toml", f'name = "home"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    assert davit.wait_run_state("home", {"succeeded", "failed"})["state"] == "succeeded"
    assert davit.stop() == 0
    assert victim.read_text() == "precious\n"
    assert (textdir / "davit.prom").is_symlink() and sorted(p.name for p in textdir.iterdir()) == ["davit.prom"]
    said = [line for line in davit.logs[-1].read_text().splitlines() if "is a symbolic link; not written through it" in line]
    assert len(said) == 1, said  # once, not at every refresh


def test_a_second_davitd_on_the_same_state_neither_serves_nor_overwrites_the_first_ones_metrics(
    davit: Davit, tmp_path: Path
) -> None:
    port = free_port()
    textfile = tmp_path / "davit.prom"
    configure(davit, port, textfile)
    davit.start()
    davit.wait_for(textfile.exists, 30, "the first davitd's textfile")
    second = subprocess.run([str(BIN / "davitd"), "--home", str(davit.home)], capture_output=True, text=True, timeout=120)
    assert second.returncode != 0 and "another davitd is running" in second.stderr
    assert value(parse(textfile.read_bytes()), "davit_up") == 1
    assert value(parse(scrape(port)), "davit_up") == 1
    assert davit.proc is not None and davit.proc.poll() is None
