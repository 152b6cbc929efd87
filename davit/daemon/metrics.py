"""davitd's Prometheus metrics: a collector over the figures folded from the event log, served
on an opt-in loopback listener and/or written for node_exporter's textfile collector.

The values come from the log (`davit/domain/logfigures.py`): a task reads each new page of it
every `refresh_seconds` through the store's readers (WAL: a reader never takes or waits for the
write lock) and folds it in; counters are counts of logged events, so they survive restarts.
After each refresh the metric families are built once and swapped in whole; a scrape (in
prometheus-client's server thread) only renders the families of the last refresh, so it never
touches the log, costs the same under load, and never sees half a refresh. The one figure not
from the log is the append latency, a histogram the store's writer path feeds
(`SqliteEventStore.append_observer`), since the log records no timings.

Labels: `job_name`, not `job` (Prometheus sets `job` and `instance` on every scraped series
itself), `repository`, `state`. Label values are escaped by prometheus-client's exposition.
Every metric is listed, with its meaning, in the README's "Metrics" section.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import anyio
import anyio.to_thread
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from davit.daemon.config import Settings
from davit.daemon.eventlogs import AnyEventStore
from davit.daemon.metricsconfig import MetricsSection
from davit.daemon.metricsfile import write_textfile
from davit.daemon.metricsserver import serve_metrics
from davit.domain.events import DaemonStarted
from davit.domain.logfigures import JobFigures, LogFigures, RepositoryFigures
from davit.domain.machine import NON_TERMINAL, TERMINAL
from davit.eventstore.sqlite import SqliteEventStore

log = logging.getLogger("davitd.metrics")
PAGE = 500  # events per query while catching up with a long log (a page folds in ~50 ms of the loop)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ENDED_STATES = sorted(s.value for s in TERMINAL)
_OPEN_STATES = sorted(s.value for s in NON_TERMINAL)


class LatencyHistogram:
    """Append latencies in fixed buckets; observed on the event loop, read by scrapes."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect_left(self._bounds, seconds)] += 1
            self._sum += seconds

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self._bounds), "+Inf"], counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return HistogramMetricFamily(
            "davit_log_append_seconds",
            "Seconds an append to the event log took until it was durable (its wait for the group commit included), "
            "since davitd started.",
            buckets=cumulative,
            sum_value=total,
        )


class DavitCollector(Collector):
    """Yields the families of the last refresh, the daemon's own and the append latency."""

    def __init__(self, version: str, latency: LatencyHistogram) -> None:
        self.version = version
        self.latency = latency
        self.up = 1
        self.families: list[Metric] = []  # replaced whole by each refresh

    def collect(self) -> Iterator[Metric]:
        yield _gauge("davit_up", "1 while davitd runs; the textfile says 0 once it has stopped.", self.up)
        info = GaugeMetricFamily("davit_build_info", "The davitd version, as a label; the value is 1.", labels=["version"])
        info.add_metric([self.version], 1)
        yield info
        yield from self.families
        yield self.latency.family()

    def describe(self) -> Iterable[Metric]:
        return []  # (registering must not collect: nothing is refreshed yet)


def families(figures: LogFigures, log_size: int | None, writes_failing: bool, refreshed_at: float) -> list[Metric]:
    """Every family the figures give, built once per refresh."""
    out: list[Metric] = []
    open_runs = figures.runs_by_state()
    runs = GaugeMetricFamily("davit_runs", "Runs that have not ended, by state.", labels=["state"])
    for state in _OPEN_STATES:
        runs.add_metric([state], open_runs.get(state, 0))
    out.append(runs)
    out += _job_families([j for j in figures.jobs.values() if j.name and not j.retired])
    out += _repository_families([r for r in figures.repositories.values() if r.name])
    out.append(CounterMetricFamily("davit_log_events", "Events in the event log.", value=figures.events))
    if log_size is not None:
        out.append(
            _gauge("davit_log_size_bytes", "Size of the event log's files (the database and its write-ahead log).", log_size)
        )
    out.append(
        _gauge("davit_log_writes_failing", "1 while the event log cannot be written (full disk, I/O error).", writes_failing)
    )
    out.append(
        _gauge("davit_metrics_refresh_timestamp_seconds", "When these figures were last brought up to date.", refreshed_at)
    )
    return out


def _job_families(jobs: list[JobFigures]) -> list[Metric]:
    labels = ["job_name"]

    def gauge(name: str, documentation: str, *more: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=[*labels, *more])

    def counter(name: str, documentation: str, *more: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, labels=[*labels, *more])

    info = gauge("davit_job_info", "Each job known, with its kind and repository; 1.", "kind", "repository")
    ended = counter("davit_job_runs", "Runs of the job that ended, by how they ended.", "state")
    retries = counter("davit_job_retries", "Times a run of the job waited to retry after a retryable error.")
    interruptions = counter("davit_job_interruptions", "Times a run of the job was interrupted (davitd stopped or died).")
    success = gauge("davit_job_last_success_timestamp_seconds", "When the job's last successful run ended.")
    failure = gauge("davit_job_last_failure_timestamp_seconds", "When the job's last failed run ended.")
    state = gauge("davit_job_last_run_state", "How the job's last ended run ended: 1 for its state, 0 for the others.", "state")
    duration = gauge("davit_job_last_run_duration_seconds", "The last ended run's time from its first start to its end.")
    done = gauge("davit_job_last_run_bytes", "Bytes the last ended run read (a backup) or wrote (a restore).")
    stored = gauge("davit_job_last_run_stored_bytes", "Bytes the last ended run added to its repository.")
    items = gauge("davit_job_last_run_items", "Items (files, documents, objects, rows) the last ended run processed.")
    max_age = gauge("davit_job_max_age_seconds", "The job's max_age: how old its last success may grow before it is stale.")
    for job in sorted(jobs, key=lambda j: j.name):
        name = [job.name]
        info.add_metric([job.name, job.kind, job.repository], 1)
        for s in _ENDED_STATES:
            ended.add_metric([job.name, s], job.ended.get(s, 0))
        retries.add_metric(name, job.retries)
        interruptions.add_metric(name, job.interruptions)
        if job.last_success_at is not None:
            success.add_metric(name, job.last_success_at)
        if job.last_failure_at is not None:
            failure.add_metric(name, job.last_failure_at)
        if job.max_age_seconds is not None:
            max_age.add_metric(name, job.max_age_seconds)
        last = job.last_ended
        if last is None:
            continue
        for s in _ENDED_STATES:
            state.add_metric([job.name, s], 1 if last.state.value == s else 0)
        if last.duration_seconds is not None:
            duration.add_metric(name, last.duration_seconds)
        done.add_metric(name, last.bytes_done)
        stored.add_metric(name, last.bytes_stored)
        items.add_metric(name, last.items_done)
    return [info, ended, retries, interruptions, success, failure, state, duration, done, stored, items, max_age]


def _repository_families(repositories: list[RepositoryFigures]) -> list[Metric]:
    labels = ["repository"]
    snapshots = GaugeMetricFamily(
        "davit_repository_snapshots",
        "Snapshots in the repository as the log knows them: those this davitd's backups published, "
        "set to the kept list at each retention step.",
        labels=labels,
    )
    size = GaugeMetricFamily(
        "davit_repository_size_bytes",
        "Bytes this davitd's successful backups stored in the repository less what its retention freed (an estimate).",
        labels=labels,
    )
    read = CounterMetricFamily(
        "davit_repository_backup_read_bytes", "Bytes successful backups read from their sources.", labels=labels
    )
    written = CounterMetricFamily(
        "davit_repository_backup_stored_bytes", "Bytes successful backups added to the repository.", labels=labels
    )
    freed = CounterMetricFamily("davit_repository_freed_bytes", "Bytes the jobs' retention steps freed.", labels=labels)
    ratio = GaugeMetricFamily(
        "davit_repository_dedup_ratio",
        "Bytes read by successful backups per byte they stored (deduplication and compression together).",
        labels=labels,
    )
    for repo in sorted(repositories, key=lambda r: r.name):
        name = [repo.name]
        snapshots.add_metric(name, repo.snapshots)
        size.add_metric(name, repo.size_bytes)
        read.add_metric(name, repo.backup_read_bytes)
        written.add_metric(name, repo.backup_stored_bytes)
        freed.add_metric(name, repo.freed_bytes)
        if repo.dedup_ratio is not None:
            ratio.add_metric(name, repo.dedup_ratio)
    return [snapshots, size, read, written, freed, ratio]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def log_size(db_path: Path) -> int:
    total = 0
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    return total


class Metrics:
    """The figures of one davitd's log, kept up to date, and the outputs that show them."""

    def __init__(self, section: MetricsSection, store: AnyEventStore, version: str, after: int = 0) -> None:
        self.section = section
        self.store = store
        # The outputs start once this process's DaemonStarted is in the log after position
        # `after`: davitd records it once it holds the state directory's lock, so a second davitd
        # started by mistake (refused that lock) never serves or overwrites the first one's figures.
        self.after = after
        self.owner = False
        self.figures = LogFigures()
        self.latency = LatencyHistogram()
        self.collector = DavitCollector(version, self.latency)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.textfile = Path(section.textfile) if section.textfile else None
        self._server: WSGIServer | None = None
        self._textfile_problem: str | None = None  # the last one logged (said once, not every refresh)
        self._refresh_problem: str | None = None

    async def refresh(self) -> None:
        """Fold in the log's events since the last refresh, then swap in the new families."""
        while True:
            page = await self.store.read_all(self.figures.position, PAGE)
            for stored in page:
                self.figures.apply(stored)
                if stored.type == DaemonStarted.type_name() and stored.position > self.after:
                    self.owner = self.owner or stored.data.get("pid") == os.getpid()
            if len(page) < PAGE:
                break
            await anyio.sleep(0)  # (catching up with a long log: let the runs' appends through)
        # (a PostgreSQL log has no files here: its size is the server's to report, so no gauge)
        size = log_size(self.store.path) if isinstance(self.store, SqliteEventStore) else None
        self.collector.families = families(self.figures, size, self.store.writes_failing, time.time())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self) -> None:
        if self.textfile is None:
            return
        try:
            write_textfile(self.textfile, self.exposition())
        except Exception as exc:
            problem = f"the metrics textfile {self.textfile} was not written: {exc}"
            if problem != self._textfile_problem:
                log.error("%s", problem)
            self._textfile_problem = problem
        else:
            if self._textfile_problem is not None:
                log.info("the metrics textfile %s is written again", self.textfile)
            self._textfile_problem = None

    def listen(self) -> None:
        address = self.section.address()
        if address is None:
            return
        host, port = address
        try:
            self._server = serve_metrics(host, port, self.registry)  # bounded: metricsserver.py
        except OSError as exc:
            # Backups matter more than their metrics: davitd goes on, and says so.
            log.error("metrics are not served on %s: %s", self.section.listen, exc.strerror or exc)
            return
        log.info("metrics served on http://%s/metrics", self.section.listen)

    async def run(self) -> None:
        """Refresh every `refresh_seconds`; a refresh that fails is logged (once per reason) and
        tried again. The outputs start after the refresh that found this davitd's start in the
        log (see `owner`), so no scrape sees a log half read."""
        listening = False
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                problem = f"metrics not refreshed from the event log: {exc}"
                if problem != self._refresh_problem:
                    log.error("%s", problem)
                self._refresh_problem = problem
            else:
                self._refresh_problem = None
                if self.owner and not listening:
                    self.listen()
                    listening = True
                if self.owner:
                    await anyio.to_thread.run_sync(self.write_textfile)
            await anyio.sleep(self.section.refresh_seconds)

    def close(self) -> None:
        """Stop the listener; the textfile says davitd is down (its other figures stay as they were)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.textfile is not None and self.owner:
            self.collector.up = 0
            self.write_textfile()


@asynccontextmanager
async def serving_metrics(settings: Settings, store: AnyEventStore, version: str) -> AsyncIterator[Metrics | None]:
    """Keep davitd's metrics up to date while the body runs, if the config asks for them."""
    section = settings.model.metrics
    if not section.listen and not section.textfile:
        yield None
        return
    metrics = Metrics(section, store, version, after=await store.head_position())
    store.append_observer = metrics.latency.observe
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(metrics.run)
            yield metrics
            tg.cancel_scope.cancel()
    finally:
        store.append_observer = None
        with anyio.CancelScope(shield=True):
            metrics.close()
