"""Reading a notification target's apprise URLs: a file holds one a line, an environment
variable holds them separated by spaces or commas, and a target may give both."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.daemon.config import NotifyTarget
from davit.daemon.notifications.targets import resolve_target


def test_a_target_with_a_file_and_a_variable_splits_the_variables_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ops.urls").write_text("# the on-call mailbox\nmailto://127.0.0.1:2525?to=ops@example.com\n")
    monkeypatch.setenv("DAVIT_TEST_HOOKS", "json://127.0.0.1:9/hook/a, json://127.0.0.1:9/hook/b")
    target = resolve_target("ops", NotifyTarget(urls_file="ops.urls", urls_env="DAVIT_TEST_HOOKS"), tmp_path)
    assert target.urls == (
        "mailto://127.0.0.1:2525?to=ops@example.com",
        "json://127.0.0.1:9/hook/a",
        "json://127.0.0.1:9/hook/b",
    )


def test_a_files_urls_are_one_a_line_with_comments_left_out(tmp_path: Path) -> None:
    (tmp_path / "ops.urls").write_text("# comment\n\njson://127.0.0.1:9/hook/a\n  json://127.0.0.1:9/hook/b  \n")
    target = resolve_target("ops", NotifyTarget(urls_file=str(tmp_path / "ops.urls")), Path("/nonexistent"))
    assert target.urls == ("json://127.0.0.1:9/hook/a", "json://127.0.0.1:9/hook/b")
