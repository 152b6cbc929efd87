"""Pre-flight checks of a job (`davit check JOB`): the verdicts, the port a kind's checks serve,
and the checklist that turns an error into a verdict.

A kind's checks look at what a run of it would touch (its source, its target, its repository)
and change nothing: they resolve credentials, connect, read versions, privileges and free
space. Each check is one `CheckResult` (a subject such as "source" or "repository local", what
was checked, a verdict and a detail naming the user, host or path, never a secret). A check
that raises a davit error is a `FAIL` with the error's message (adapters translate and redact
their library's errors at their boundaries); the checks after it still run unless they need
what failed (`Check.passed`).

Pure: no I/O here. The adapters' `checks.py` modules do the looking; the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol

from davit.domain.errors import DavitError
from davit.domain.terminaltext import for_terminal


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    subject: str  # "source", "target", "repository local", ...
    what: str  # "connects", "privileges", "free space", ...
    verdict: Verdict
    detail: str = ""

    def line(self) -> str:
        """One line for a terminal: control characters (from a server's answer, a job file, an
        error) are written as escapes, so no text can move the cursor or recolour the screen."""
        text = f"{self.verdict.value:<4}  {self.subject}: {self.what}" + (f": {self.detail}" if self.detail else "")
        return for_terminal(text)

    def to_json(self) -> dict[str, str]:
        return {"subject": self.subject, "check": self.what, "verdict": self.verdict.value, "detail": self.detail}


class Check:
    """One check in progress (`with checklist.check(subject, what) as c:`): ok unless it says
    otherwise (`c.warn`, `c.fail`) or a davit error leaves the block, which is then a FAIL with
    the error's message and goes no further. Any other exception is a FAIL naming only its type
    (its message may quote a secret) and is not swallowed silently: the type is recorded."""

    def __init__(self, checklist: Checklist, subject: str, what: str) -> None:
        self._checklist = checklist
        self.subject = subject
        self.what = what
        self.verdict = Verdict.OK
        self.detail = ""

    @property
    def passed(self) -> bool:
        """Not a FAIL: what depends on it may go on."""
        return self.verdict is not Verdict.FAIL

    def ok(self, detail: str) -> None:
        self.verdict, self.detail = Verdict.OK, detail

    def warn(self, detail: str) -> None:
        self.verdict, self.detail = Verdict.WARN, detail

    def fail(self, detail: str) -> None:
        self.verdict, self.detail = Verdict.FAIL, detail

    def __enter__(self) -> Check:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(exc, DavitError):
            self.fail(str(exc))
        elif isinstance(exc, OSError):  # a path and the system's reason: no secret in either
            self.fail(f"{exc.filename or ''}: {exc.strerror or type(exc).__name__}".lstrip(": "))
        elif isinstance(exc, Exception):
            self.fail(f"unexpected {type(exc).__name__} (its message is not shown: it may hold a secret)")
        elif exc is not None:
            return False  # KeyboardInterrupt and the like end the command
        self._checklist.results.append(CheckResult(self.subject, self.what, self.verdict, self.detail))
        return exc is not None


@dataclass
class Checklist:
    """The results of one job's checks, in the order they ran."""

    job: str
    kind: str
    results: list[CheckResult] = field(default_factory=list)

    def check(self, subject: str, what: str) -> Check:
        return Check(self, subject, what)

    def add(self, subject: str, what: str, verdict: Verdict, detail: str = "") -> None:
        self.results.append(CheckResult(subject, what, verdict, detail))

    @property
    def passed(self) -> bool:
        """Every check passed (warnings included: they say what to look at, not what fails)."""
        return all(r.verdict is not Verdict.FAIL for r in self.results)


class CheckInputs(Protocol):
    """What a kind's checks are given: the job's spec, the checklist to record into, and the
    repository checks (the composition root knows how a configured name is reached)."""

    spec: Any
    checklist: Checklist

    def check_repository(self, name: str, subject: str = "repository") -> bool:
        """Record the checks of configured repository `name`; whether it opens for reading."""
        ...

    def check_snapshot(
        self, repository: str, ref: str, job: str | None, kind: str | tuple[str, ...] | None = None
    ) -> dict[str, Any] | None:
        """Record whether snapshot `ref` of `job` is in `repository` (and, given `kind`, is a
        snapshot of that kind, or of one of those kinds, as the restore's run requires); its
        stats, or None."""
        ...

    def snapshot_tree(self, repository: str) -> bytes:
        """The zstd-compressed tree of the snapshot `check_snapshot` found in `repository` (only
        after it found one), read without writing anything; raises what reading it raises."""
        ...


class KindChecks(Protocol):
    """A kind's pre-flight checks: record into `inputs.checklist`, change nothing."""

    def __call__(self, inputs: CheckInputs) -> None: ...


def summary(lists: list[Checklist]) -> Iterator[str]:
    """The closing lines: per job, how many checks failed or warned."""
    for cl in lists:
        fails = sum(r.verdict is Verdict.FAIL for r in cl.results)
        warns = sum(r.verdict is Verdict.WARN for r in cl.results)
        verdict = "FAIL" if fails else "ok"
        yield for_terminal(f"{cl.job} ({cl.kind}): {verdict}, {len(cl.results)} checks, {fails} failed, {warns} warnings")
