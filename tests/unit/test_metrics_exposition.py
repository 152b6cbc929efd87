"""What a scrape returns: Prometheus's linter accepts it, names and values come from the fold
of the log, and a hostile name (written into the log by something else than davitd) is escaped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from davit.daemon.metrics import DavitCollector, LatencyHistogram, families
from davit.domain import events as ev
from tests.fixtures.promtool import check_metrics
from tests.unit.test_log_figures import Log


def scrape(log: Log, latencies: tuple[float, ...] = ()) -> bytes:
    latency = LatencyHistogram()
    for seconds in latencies:
        latency.observe(seconds)
    collector = DavitCollector("1.2.3", latency)
    collector.families = families(log.figures(), log_size=4096, writes_failing=False, refreshed_at=1.8e9)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def sample(text: bytes, line_start: str) -> float:
    [line] = [ln for ln in text.decode().splitlines() if ln.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


def test_a_scrape_after_backups_passes_promtool_and_says_what_the_log_says() -> None:
    log = Log()
    log.define("home", max_age="1d")
    log.backup("r1", "home", bytes_done=2048, stored=512, items=3)
    log.backup("r2", "home", bytes_done=4096, stored=1024, items=5, end=ev.RunFailed(error="gone", error_type="SourceMissing"))
    text = scrape(log, latencies=(0.0004, 0.003, 0.2, 30.0))
    check_metrics(text)
    assert sample(text, 'davit_job_runs_total{job_name="home",state="succeeded"}') == 1
    assert sample(text, 'davit_job_runs_total{job_name="home",state="failed"}') == 1
    assert sample(text, 'davit_job_last_run_state{job_name="home",state="failed"}') == 1
    assert sample(text, 'davit_job_last_run_bytes{job_name="home"}') == 4096
    assert sample(text, 'davit_job_last_success_timestamp_seconds{job_name="home"}') == log.at(
        12
    )  # the JobDefined, then r1 ends with the 12th event
    assert sample(text, 'davit_job_max_age_seconds{job_name="home"}') == 86400
    assert sample(text, 'davit_repository_snapshots{repository="local"}') == 1
    assert sample(text, "davit_log_events_total") == len(log.items)
    assert sample(text, 'davit_log_append_seconds_bucket{le="0.001"}') == 1
    assert sample(text, 'davit_log_append_seconds_bucket{le="+Inf"}') == 4
    assert sample(text, 'davit_build_info{version="1.2.3"}') == 1


def test_a_hostile_job_name_in_the_log_is_escaped_in_its_label() -> None:
    log = Log()
    hostile = 'evil"} davit_up 0\n# TYPE x gauge\\'
    spec = {"name": hostile, "kind": "files.backup", "repository": "local"}
    log.add(
        "run-h1",
        ev.RunQueued(run_id="h1", job=hostile, kind="files.backup", revision="r", spec=spec, reason="manual"),
        ev.RunPreparing(attempt=1),
        ev.RunFailed(error="x", error_type="Y"),
    )
    text = scrape(log)
    check_metrics(text)
    assert sample(text, "davit_up") == 1  # (no second davit_up was injected)
    assert 'job_name="evil\\"} davit_up 0\\n# TYPE x gauge\\\\"' in text.decode()
