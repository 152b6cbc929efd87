"""`davit report` on real runs of a real davitd, rendered by headless Chromium: an interrupted
and resumed backup's page loads with no console message and draws a picture (not a blank
page); hostile file names and source paths stay text; -o never writes through a symlink; a
job's trend page covers its last runs."""

from __future__ import annotations

import os
import socket
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, write_job
from tests.fixtures.chromium import distinct_pixels, dump_dom, screenshot
from tests.unit.test_report_render import all_text, assert_inert

pytestmark = pytest.mark.e2e

SLOW_CONFIG = "[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.2\nworkers = 1\ncompression_level = 19\n"
# a directory and a socket in it whose relative path is markup, quotes and control characters
HOSTILE_DIR = 'x"onload=alert(1) <script>alert(2)<'
HOSTILE_SOCKET = "svg>\x1b[31m\x07"


def backup_job(name: str, source: Path) -> str:
    return f'name = "{name}"\nkind = "files.backup"\n[source]\npath = \'{source}\'\n'  # a literal string: paths hold quotes


def random_source(root: Path, megabytes: int) -> Path:
    root.mkdir()
    for i in range(megabytes):
        (root / f"blob{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    return root


def hostile_socket(source: Path) -> socket.socket:
    (source / HOSTILE_DIR).mkdir()
    sock = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(source / HOSTILE_DIR)  # a socket's path is at most 107 bytes: bind it by its name alone
    try:
        sock.bind(HOSTILE_SOCKET)
    finally:
        os.chdir(here)
    return sock


def run_to_end(davit: Davit, job: str) -> dict[str, object]:
    davit.cli("run", job, "--wait", check=False, timeout=300)
    return davit.runs(job)[-1]


def test_report_of_an_interrupted_and_resumed_backup_renders_in_chromium(davit: Davit, tmp_path: Path) -> None:
    davit.configure(SLOW_CONFIG)
    source = random_source(tmp_path / "source", 12)
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.start()
    davit.wait_for(lambda: len(davit.events("type = 'CheckpointRecorded'")) >= 3, 120, "3 checkpoints", poll=0.005)
    davit.kill9()
    davit.start()
    run = davit.wait_run_state("docs", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded" and run["interruptions"] == 1, run
    page = tmp_path / "report.html"
    davit.cli("report", str(run["run_id"])[:6], "-o", str(page))
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    root = assert_inert(page.read_text())
    shown = all_text(root)
    assert "interrupted" in shown and "resumed" in shown and "12.0 MiB" in shown
    rendered = screenshot(page, tmp_path / "report.png")
    assert rendered.console_messages == [], rendered.console_messages
    assert distinct_pixels(rendered.png) > 50


def test_chromium_reports_a_script_in_a_page_under_the_reports_policy(tmp_path: Path) -> None:
    """The check above would see a console message: the same policy refuses an injected
    script, and Chromium says so on its console."""
    from davit.daemon.report.page import document

    page = tmp_path / "injected.html"
    page.write_text(document("injected", ["<p>hello</p>", "<script>document.title = 'ran'</script>"]))
    rendered = screenshot(page, tmp_path / "injected.png")
    assert any("Content Security Policy" in line for line in rendered.console_messages), rendered.stderr[-2000:]
    blank = tmp_path / "blank.html"
    blank.write_text(document("blank", []))
    assert distinct_pixels(screenshot(blank, tmp_path / "blank.png").png) <= 2


def test_hostile_names_and_paths_stay_text_in_the_report_and_in_chromiums_dom(davit: Davit, tmp_path: Path) -> None:
    source = random_source(tmp_path / "source", 1)
    sock = hostile_socket(source)
    write_job(davit, "docs.toml", backup_job("docs", source))
    missing = tmp_path / '<script>alert(3)</script>"onload=x'
    write_job(davit, "gone.toml", backup_job("gone", missing))
    davit.start()
    try:
        warned = davit.wait_run_state("docs", {"succeeded", "failed"})
        failed = davit.wait_run_state("gone", {"succeeded", "failed"})
    finally:
        sock.close()
    assert warned["state"] == "succeeded" and failed["state"] == "failed", (warned, failed)
    for run, expected in ((warned, f"skipped {HOSTILE_DIR}/svg>\\x1b[31m\\x07"), (failed, str(missing))):
        page = tmp_path / f"{run['job']}.html"
        davit.cli("report", str(run["run_id"]), "-o", str(page))
        assert expected in all_text(assert_inert(page.read_text()))
        dom = dump_dom(page, tmp_path)
        assert "<script" not in dom.lower()
        assert ET.fromstring(page.read_text()) is not None
        rendered = screenshot(page, tmp_path / f"{run['job']}.png")
        assert rendered.console_messages == [], rendered.console_messages


def test_report_refuses_to_write_through_a_symlink(davit: Davit, tmp_path: Path) -> None:
    write_job(davit, "docs.toml", backup_job("docs", random_source(tmp_path / "source", 1)))
    davit.start()
    run = davit.wait_run_state("docs", {"succeeded"})
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "report.html"
    link.symlink_to(victim)
    result = davit.cli("report", str(run["run_id"]), "-o", str(link), check=False)
    assert result.returncode == 2 and "symlink" in result.stderr, result
    assert victim.read_text() == "keep me\n" and link.is_symlink()


def test_job_trends_cover_the_last_runs(davit: Davit, tmp_path: Path) -> None:
    source = random_source(tmp_path / "source", 2)
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.start()
    davit.wait_run_state("docs", {"succeeded"})
    for extra in range(2):
        (source / f"more{extra}.bin").write_bytes(os.urandom(1 << 20))
        assert run_to_end(davit, "docs")["state"] == "succeeded"
    runs = davit.runs("docs")
    page = tmp_path / "trends.html"
    davit.cli("report", "--job", "docs", "--last", "2", "-o", str(page))
    shown = all_text(assert_inert(page.read_text()))
    assert [r["run_id"] in shown for r in runs] == [False, True, True]
    rendered = screenshot(page, tmp_path / "trends.png", (1100, 900))
    assert rendered.console_messages == [] and distinct_pixels(rendered.png) > 50
