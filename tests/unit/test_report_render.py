"""`davit report`'s page from a run's events: what an operator sees of a retried, interrupted
and resumed run, and that hostile text in the log (a job, step, warning or error holding markup,
quotes and control characters) stays text: the page parses as XML and holds no script or handler.

The events are built here as the log would store them (the e2e tests render real runs)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from davit.daemon.report.page import run_page
from davit.daemon.report.picture import picture
from davit.daemon.report.trends import trend_rows, trends_page
from davit.domain import events as ev
from davit.domain.runs import fold

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>\"onload=alert(2) 'x' </svg>]]>&amp;\x1b[31m\x07\x00\u202e\ud800"


def stored(run_id: str, timeline: list[tuple[float, ev.Event]]) -> list[ev.StoredEvent]:
    return [
        ev.StoredEvent(
            i + 1,
            ev.run_stream(run_id),
            i + 1,
            f"e{i}",
            event.type_name(),
            event.schema_version,
            event.model_dump(mode="json"),
            (T0 + timedelta(seconds=at)).isoformat(timespec="microseconds"),
        )
        for i, (at, event) in enumerate(timeline)
    ]


def retried_and_interrupted(job: str = "docs", text: str = "disk busy") -> list[tuple[float, ev.Event]]:
    return [
        (0, ev.RunQueued(run_id="r1", job=job, kind="files.backup", revision="1", spec={}, reason="schedule")),
        (1, ev.RunPreparing(attempt=1)),
        (2, ev.RunStarted(plan=["store", "publish"], details={"source": f"/srv/{text}"})),
        (2, ev.StepStarted(step="store")),
        (5, ev.CheckpointRecorded(step="store", cursor={}, bytes_done=1000, bytes_stored=800, items_done=3)),
        (6, ev.RunWarning(message=f"skipped {text}", step="store")),
        (8, ev.RunWaitingRetry(error=f"cannot write: {text}", error_type="BackendUnavailable", attempt=1, retry_at="soon")),
        (17, ev.RunRequeued(reason="retry due")),
        (18, ev.RunPreparing(attempt=2)),
        (18, ev.RunStarted(plan=["store", "publish"])),
        (18, ev.StepStarted(step="store")),
        (20, ev.CheckpointRecorded(step="store", cursor={}, bytes_done=5000, bytes_stored=4000, items_done=9)),
        (21.5, ev.RunInterrupted(reason="davitd stopped (SIGKILL)")),
        (22, ev.RunRequeued(reason="resume after restart")),
        (23, ev.RunPreparing(attempt=2)),
        (23, ev.RunStarted(plan=["store", "publish"])),
        (23, ev.StepStarted(step="store")),
        (30, ev.CheckpointRecorded(step="store", cursor={}, bytes_done=9000, bytes_stored=7000, items_done=12)),
        (30, ev.StepCompleted(step="store")),
        (30, ev.StepStarted(step="publish", commits=True)),
        (31, ev.StepCompleted(step="publish")),
        (31, ev.RunVerifying()),
        (31, ev.RunSucceeded(snapshot_id="snap1")),
    ]


def failed(job: str, text: str) -> list[tuple[float, ev.Event]]:
    return [
        (0, ev.RunQueued(run_id="r2", job=job, kind="files.backup", revision="1", spec={}, reason="manual")),
        (1, ev.RunPreparing(attempt=1)),
        (2, ev.RunStarted(plan=[text])),
        (2, ev.StepStarted(step=text)),
        (3, ev.RunWarning(message=text, step=text)),
        (4, ev.RunFailed(error=text, error_type="SourceMissing")),
    ]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def assert_inert(page: str) -> ET.Element:
    """The page is well-formed XML, and neither an XML nor an HTML parser finds a script element
    or an event-handler attribute in it."""
    root = ET.fromstring(page)
    every = list(root.iter())
    assert not [e.tag for e in every if e.tag.rsplit("}", 1)[-1].lower() in ("script", "foreignobject", "iframe")]
    assert not [a for e in every for a in e.attrib if a.rsplit("}", 1)[-1].lower().startswith("on")]
    html = _Elements()
    html.feed(page)
    assert "script" not in html.tags
    assert not [a for a in html.attributes if a.startswith("on")]
    return root


def all_text(root: ET.Element) -> str:
    return "".join(root.itertext()) + "".join(v for e in root.iter() for v in e.attrib.values())


def test_a_retried_interrupted_and_resumed_run_shows_each_on_its_timeline() -> None:
    pic = picture("r1", stored("r1", retried_and_interrupted()), T0 + timedelta(hours=1))
    assert [m.kind for m in pic.marks] == ["warning", "retry", "resumed", "interrupted", "resumed", "verifying", "succeeded"]
    run_lane = [(s.kind, s.start, s.end, s.status) for s in pic.spans if s.lane == "run"]
    assert run_lane == [
        ("queued", 0, 1, "done"),
        ("attempt", 1, 8, "retry"),
        ("waiting", 8, 18, "done"),
        ("attempt", 18, 20, "interrupted"),  # last seen at its checkpoint, not when found interrupted
        ("waiting", 20, 23, "done"),
        ("attempt", 23, 31, "done"),
    ]
    store = [(s.start, s.end, s.status) for s in pic.spans if s.lane == "store"]
    assert store == [(2, 8, "retry"), (18, 20, "interrupted"), (23, 30, "done")]
    assert [(s.at, s.bytes_done) for s in pic.samples] == [(5, 1000), (20, 5000), (30, 9000)]
    assert pic.end == 31 and pic.lanes == ["run", "store", "publish"]
    root = assert_inert(run_page(pic, "now"))
    shown = all_text(root)
    retry = "attempt 1 failed (BackendUnavailable): cannot write: disk busy"
    for words in (retry, "davitd stopped (SIGKILL)", "skipped disk busy"):
        assert words in shown


def test_a_run_still_going_reaches_to_now_with_its_spans_open() -> None:
    events = retried_and_interrupted()[:5]
    pic = picture("r1", stored("r1", events), T0 + timedelta(seconds=60))
    assert pic.end == 60
    still_open = [(s.lane, s.end) for s in pic.spans if s.status == "running"]
    assert still_open == [("run", 60), ("store", 60)]


def test_hostile_text_in_the_log_stays_text_in_a_run_report() -> None:
    job = f"job{HOSTILE}"
    pic = picture("r2", stored("r2", failed(job, HOSTILE)), T0)
    page = run_page(pic, "now")
    root = assert_inert(page)
    shown = all_text(root)
    # the markup arrives as the characters it is made of; the controls as visible escapes
    visible = "<script>alert(1)</script>\"onload=alert(2) 'x' </svg>]]>&amp;\\x1b[31m\\x07\\x00\\u202e\\ud800"
    assert visible in shown
    assert not any(c in page for c in "\x1b\x07\x00\u202e")
    page.encode("utf-8")  # a lone surrogate would not encode


def test_a_very_long_warning_is_cut_and_many_warnings_are_counted_not_all_drawn() -> None:
    timeline = failed("docs", "x")[:4] + [(3, ev.RunWarning(message="w" * 50_000, step="x"))] * 2000
    page = run_page(picture("r2", stored("r2", timeline), T0), "now")
    assert_inert(page)
    assert "(48000 more characters)" in page
    assert "Warnings (2000)" in page and "and 1500 more" in page
    assert page.count('class="warning"') == 300
    assert len(page) < 2_000_000


def test_job_trends_show_the_last_runs_of_that_job_only() -> None:
    views = []
    for n in range(5):
        run_id = f"r{n}"
        timeline = [
            (n * 100 + at, event.model_copy(update={"run_id": run_id}) if isinstance(event, ev.RunQueued) else event)
            for at, event in retried_and_interrupted(job="docs" if n != 2 else "other")
        ]
        views.append(fold(run_id, stored(run_id, timeline)))
    rows = trend_rows(views, "docs", 3, T0)
    assert [r.run_id for r in rows] == ["r1", "r3", "r4"]
    assert {(r.state, r.seconds, r.bytes_done, r.items_done, r.warnings) for r in rows} == {("succeeded", 30, 9000, 12, 1)}
    root = assert_inert(trends_page("docs", rows, "now"))
    assert all(r.run_id in all_text(root) for r in rows)


def test_job_trends_of_a_hostile_job_name_stay_inert() -> None:
    assert_inert(trends_page(HOSTILE, [], "now"))


def test_the_report_shows_no_part_of_the_job_spec() -> None:
    """A spec holds secrets by reference only, but the page shows none of it anyway: what the
    run did, not how the job is configured."""
    timeline = retried_and_interrupted()
    queued = timeline[0][1]
    assert isinstance(queued, ev.RunQueued)
    spec = {"source": {"uri_env": "SPEC-ONLY-VALUE", "password_file": "/etc/SPEC-ONLY-PATH"}}
    timeline[0] = (0, queued.model_copy(update={"spec": spec}))
    page = run_page(picture("r1", stored("r1", timeline), T0), "now")
    assert "SPEC-ONLY" not in page
