"""What the `davit check` tests share: a home with repositories, a job file, the command run
as an operator runs it, its verdicts by (subject, check), and a listing of every file under a
directory with its checksum (to show a check changed nothing)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from davit.daemon.cli.main import cli
from davit.domain.errors import DavitError


@dataclass
class Outcome:
    exit_code: int
    lines: list[dict[str, str]]
    text: str  # everything printed (to look for secrets in)

    def verdict(self, subject: str, check: str) -> str:
        found = [r["verdict"] for r in self.lines if r["subject"] == subject and r["check"] == check]
        assert len(found) == 1, f"{subject}: {check} not checked once: {self.lines}"
        return found[0]

    def detail(self, subject: str, check: str) -> str:
        return next(r["detail"] for r in self.lines if r["subject"] == subject and r["check"] == check)

    def failed(self) -> list[tuple[str, str]]:
        return [(r["subject"], r["check"]) for r in self.lines if r["verdict"] == "FAIL"]


def make_home(home: Path, repositories: dict[str, str]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "davit.toml").write_text("".join(f"[repositories.{n}]\n{body}\n" for n, body in repositories.items()))
    return home


def job_file(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = directory / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{body}')
    path.chmod(0o644)
    return path


def davit(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=True)
    if isinstance(result.exception, DavitError):
        return result.exception.exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def check(home: Path, job: Path) -> Outcome:
    """`davit check --json JOB` and the plain `davit check JOB` (same verdicts, both printed)."""
    code, out = davit(home, "check", "--json", str(job))
    plain_code, plain = davit(home, "check", str(job))
    assert plain_code == code, plain
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len([line for line in plain.splitlines() if line.startswith(lines[0]["job"] + "  ")]) == len(lines), plain
    return Outcome(code, lines, out + plain)


def listing(root: Path) -> dict[str, str]:
    """Every file and directory under `root` with its content's sha256 and its mode and mtime."""
    found = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            found[str(path.relative_to(root))] = f"{digest} {st.st_mode:o} {st.st_mtime_ns}"
    return found
