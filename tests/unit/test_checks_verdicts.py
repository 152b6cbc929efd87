"""The verdicts of `davit check` (`domain/checks.py`): a check is ok unless it says otherwise or
an error leaves it; a davit error becomes a FAIL with its message, an unexpected exception a
FAIL naming only its type (its text may quote a secret); lines escape control characters."""

from __future__ import annotations

import pytest

from davit.domain.checks import Checklist, CheckResult, Verdict, summary
from davit.domain.errors import PermanentError


def test_a_check_that_raises_a_davit_error_fails_with_its_message_and_the_next_check_still_runs() -> None:
    cl = Checklist("j", "files.backup")
    with cl.check("source", "connects") as c:
        raise PermanentError("login to u@h:22 refused")
    assert not c.passed
    with cl.check("source", "version") as c2:
        c2.ok("1.2")
    assert [(r.what, r.verdict, r.detail) for r in cl.results] == [
        ("connects", Verdict.FAIL, "login to u@h:22 refused"),
        ("version", Verdict.OK, "1.2"),
    ]
    assert not cl.passed


def test_an_unexpected_exception_fails_the_check_without_its_message() -> None:
    cl = Checklist("j", "k")
    with cl.check("target", "connects"):
        raise ValueError("mongodb://user:hunter2@host/")
    assert cl.results[0].verdict is Verdict.FAIL
    assert "hunter2" not in cl.results[0].detail and "ValueError" in cl.results[0].detail


def test_an_os_error_fails_naming_the_path_and_the_reason() -> None:
    cl = Checklist("j", "k")
    with cl.check("source", "readable"):
        raise FileNotFoundError(2, "No such file or directory", "/srv/data")
    assert cl.results[0].detail == "/srv/data: No such file or directory"


def test_an_interrupt_is_not_swallowed() -> None:
    cl = Checklist("j", "k")
    with pytest.raises(KeyboardInterrupt), cl.check("source", "connects"):
        raise KeyboardInterrupt
    assert cl.results == []


def test_warnings_pass_and_failures_do_not() -> None:
    cl = Checklist("j", "k")
    cl.add("repository local", "free space", Verdict.WARN, "0.5 GiB free")
    assert cl.passed
    cl.add("source", "readable", Verdict.FAIL, "gone")
    assert not cl.passed
    assert list(summary([cl])) == ["j (k): FAIL, 2 checks, 1 failed, 1 warnings"]


def test_a_line_escapes_control_characters_from_a_server_or_a_job_file() -> None:
    line = CheckResult("source", "version", Verdict.OK, "evil\x1b[2J\rname").line()
    assert "\x1b" not in line and "\r" not in line
    assert line == "ok    source: version: evil\\x1b[2J\\rname"
