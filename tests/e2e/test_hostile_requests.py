"""Requests appended by someone who can write the log (every user who may run `davit run` can)
and who does not play by the CLI's rules: davitd stays up and the requests after theirs are
still handled.

The events are appended through the store with the log key, as the CLI appends its requests."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from davit.domain import events as ev
from tests.e2e.conftest import Davit, append_events, write_job

pytestmark = pytest.mark.e2e


def started_with_a_job(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    davit.start()
    write_job(davit, "docs.toml", f'name = "docs"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    davit.wait_run_state("docs", {"succeeded", "failed"})


def test_requests_behind_a_page_of_events_of_a_look_alike_stream_are_still_handled(davit: Davit, tmp_path: Path) -> None:
    """The requests loop reads a page of events whose stream starts with "requests"; a page of
    them on another stream ("requests-x") was dropped without moving past it: davitd re-read
    the same page every poll and never handled another request, at this start or the next."""
    started_with_a_job(davit, tmp_path)
    anyio.run(append_events, davit, "requests-x", "RunJobNow", [{"job": "docs", "run_id": f"x{i:011d}"} for i in range(200)])

    after = davit.cli("run", "docs", "--wait", "--timeout", "30", check=False)
    assert after.returncode == 0, after.stderr
    assert not [e for e in davit.events("stream LIKE 'run-x%'")], "a look-alike stream's event was taken for a request"


def test_a_request_nested_too_deep_to_decode_does_not_stop_davitd(davit: Davit, tmp_path: Path) -> None:
    """A writer that raised its own recursion limit can append JSON nested 5,000 deep; davitd's
    read of the requests stream raised RecursionError out of its task group and davitd exited,
    at every start (a crash loop under Restart=on-failure). It now stays up and says where."""
    started_with_a_job(davit, tmp_path)
    deep: dict[str, Any] = {"x": 1}
    for _ in range(5000):
        deep = {"a": deep}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        anyio.run(
            append_events, davit, ev.REQUESTS_STREAM, "RunJobNow", [{"job": "docs", "run_id": "deep00000000", "extra": deep}]
        )
    finally:
        sys.setrecursionlimit(limit)

    log = davit.logs[-1]
    davit.wait_for(lambda: "cannot be read (EventLogDamaged)" in log.read_text(), 30, "the unreadable request said")
    time.sleep(3)  # several polls of the requests loop
    assert davit.proc is not None and davit.proc.poll() is None, log.read_text()[-3000:]
    assert log.read_text().count("cannot be read (EventLogDamaged)") == 1, "said once, not every poll"
    assert davit.cli("runs", check=False).returncode == 0
