"""Each command's answer as an operator sees it: the exit code and the exact lines on stdout and
stderr, for every way a command can end without success (issue 16, part 2). Written against the
code before commands stopped calling `sys.exit` themselves, so the move of every exit into
`davit/daemon/cli/main.py` is shown to change nothing a script or an operator reads.

Snapshots are published with the Repository API (no daemon needed); the `run` and `cancel`
answers need a real davitd.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from davit.adapters.mongo.layout import tree_zst
from davit.adapters.repository.repository import Repository
from tests.e2e.conftest import BIN, Davit, write_job

pytestmark = pytest.mark.e2e


def answer(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


def publish(davit: Davit, snapshot_id: str, kind: str = "mongo") -> Repository:
    """An empty snapshot of `kind` in the --home's default repository."""
    repo = Repository.open(davit.home / "repository")
    manifest = {
        "id": snapshot_id,
        "job": "j",
        "kind": kind,
        "run_id": snapshot_id,
        "created_at": "2026-01-01T00:00:00+00:00",
        "source": {},
        "parent": None,
        "stats": {},
    }
    repo.publish_snapshot(manifest, tree_zst([]))
    return repo


@pytest.fixture
def home(davit: Davit) -> Davit:
    davit.configure("")
    publish(davit, "ab1")
    publish(davit, "ab12")
    publish(davit, "cd1", kind="files")
    return davit


def test_verify_answers_no_match_ambiguous_exact_ok_and_damaged(home: Davit) -> None:
    assert answer(home.cli("verify", "zz", check=False)) == (2, "", "davit: no snapshot matches 'zz'\n")
    assert answer(home.cli("verify", "ab", check=False)) == (2, "", "davit: more than one snapshot matches 'ab'\n")
    assert answer(home.cli("verify", "ab1", check=False)) == (0, "ab1: 0 chunks verified, 0 problems\n", "")
    (home.home / "repository" / "snapshots" / "cd1" / "manifest.json").write_text("{")
    damaged = home.cli("verify", "cd", check=False)
    assert damaged.returncode == 1 and damaged.stderr == ""
    first, second = damaged.stdout.splitlines()
    assert first.startswith("damaged: ") and second == "cd1: damaged, its manifest cannot be used"


def test_export_answers_no_match_ambiguous_and_another_kind_with_usage_errors(home: Davit, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert answer(home.cli("export", "mongodump", "zz", out, check=False)) == (2, "", "davit: no snapshot matches 'zz'\n")
    assert answer(home.cli("export", "mongodump", "ab", out, check=False)) == (
        2,
        "",
        "davit: more than one snapshot matches 'ab'\n",
    )
    assert answer(home.cli("export", "mongodump", "cd", out, check=False)) == (
        2,
        "",
        "davit: snapshot cd1 is a files snapshot, not a MongoDB one\n",
    )
    assert answer(home.cli("export", "mongodump", "ab12", out, check=False)) == (
        0,
        f"ab12: 0 collections, 0 documents written to {out}\n",
        "",
    )


def test_import_and_repository_commands_name_what_the_config_lacks(home: Davit, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    assert answer(home.cli("import", "mongodump", str(dump), "--job", "Bad Name", check=False)) == (
        2,
        "",
        "davit: --job 'Bad Name' is not a job name (lower-case letters, digits, '.', '_', '-')\n",
    )
    assert answer(home.cli("import", "mongodump", str(dump), "--job", "ok", "--repository", "nope", check=False)) == (
        2,
        "",
        "davit: no repository named 'nope' in the daemon config\n",
    )
    secret = tmp_path / "new-passphrase"
    secret.write_text("a new passphrase\n")
    change = ("repository", "passphrase")
    assert answer(home.cli(*change, "nope", "--new-passphrase-file", str(secret), check=False)) == (
        2,
        "",
        "davit: no repository named 'nope' in the daemon config\n",
    )
    assert answer(home.cli(*change, "local", "--new-passphrase-file", str(secret), check=False)) == (
        2,
        "",
        "davit: repository 'local' has no passphrase_env or passphrase_file in the daemon config\n",
    )


def test_validate_exits_2_with_one_line_per_problem_and_0_when_all_are_valid(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'name = "good"\nkind = "files.backup"\n[source]\npath = "{tmp_path}"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nkind = "files.backup"\n[source]\npath = "relative"\n')
    validate = [str(BIN / "davit"), "validate"]
    assert answer(subprocess.run([*validate, str(good)], capture_output=True, text=True)) == (
        0,
        "",
        f"{good}: valid files.backup job 'good'\n",
    )
    assert answer(subprocess.run([*validate, str(bad)], capture_output=True, text=True)) == (
        2,
        f"{bad}: source.path: must be an absolute path\n",
        "",
    )


def test_run_and_cancel_answer_unknown_names_timeouts_and_outcomes(davit: Davit, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    davit.start()
    write_job(davit, "ok.toml", f'name = "ok"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{source}"\n')
    write_job(
        davit,
        "gone.toml",
        f'name = "gone"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{tmp_path / "missing"}"\n',
    )
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 2, 20, "both jobs defined")

    assert answer(davit.cli("run", "nosuchjob", check=False)) == (
        2,
        "",
        "davit: no job named 'nosuchjob' is defined (see `davit jobs`)\n",
    )
    ok = davit.cli("run", "ok", "--wait", "--timeout", "60", check=False)
    run_id = ok.stdout.strip()
    assert answer(ok) == (0, f"{run_id}\n", f"{run_id} succeeded\n")
    gone = davit.cli("run", "gone", "--wait", "--timeout", "60", check=False)
    failed_id = gone.stdout.strip()
    error = davit.runs("gone")[-1]["error"]
    assert answer(gone) == (1, f"{failed_id}\n", f"{failed_id} failed: {error}\n")

    # a cancel --wait of a run that has ended: its state, and exit 1 unless it ended cancelled
    assert answer(davit.cli("cancel", run_id[:6], "--wait", check=False)) == (1, f"{run_id}\n", f"{run_id} succeeded\n")
    unknown = davit.cli("cancel", "zzzz", check=False)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.splitlines()[-1] == "Error: no run id starts with 'zzzz'"

    # the repository held exclusively: the next run waits for it, unfinished, for the timeouts below
    lock = Repository.open(davit.home / "repository").locks.acquire(exclusive=True)
    try:
        waiting = davit.cli("run", "ok", "--wait", "--timeout", "0", check=False)
        pending = waiting.stdout.strip()
        assert answer(waiting) == (1, f"{pending}\n", f"davit: run {pending} did not end within 0 s\n")
        # it says why it gave up, as `run --wait` does (it exited 1 with nothing said before)
        assert answer(davit.cli("cancel", pending, "--wait", "--timeout", "0", check=False)) == (
            1,
            f"{pending}\n",
            f"davit: run {pending} did not end within 0 s\n",
        )
    finally:
        lock.release()
    davit.wait_run_state("ok", {"cancelled", "succeeded"})


def test_an_empty_reference_selects_no_run_and_no_snapshot(davit: Davit, tmp_path: Path) -> None:
    """`davit cancel "$RUN"` with RUN unset: an empty prefix starts every id, so it cancelled
    (showed, verified, exported) whichever run or snapshot was the only one."""
    source = tmp_path / "source"
    source.mkdir()
    davit.start()
    write_job(davit, "ok.toml", f'name = "ok"\nkind = "files.backup"\nschedule = "0 0 1 1 *"\n[source]\npath = "{source}"\n')
    davit.wait_for(lambda: len(davit.json_lines("jobs")) == 1, 20, "the job defined")
    run_id = davit.cli("run", "ok", "--wait", "--timeout", "60").stdout.strip()
    (snapshot,) = [s["id"] for s in davit.json_lines("snapshots")]
    assert snapshot and run_id

    for args in (("show", ""), ("cancel", ""), ("resume", "")):
        refused = davit.cli(*args, check=False)
        assert refused.returncode == 2 and refused.stdout == "", (args, refused)
        assert refused.stderr.splitlines()[-1] == "Error: RUN is empty: give a run id or a unique prefix of one"
    assert answer(davit.cli("verify", "", check=False)) == (2, "", "davit: no snapshot matches ''\n")
    assert answer(davit.cli("export", "mongodump", "", str(tmp_path / "out"), check=False)) == (
        2,
        "",
        "davit: no snapshot matches ''\n",
    )
    assert davit.runs("ok")[-1]["state"] == "succeeded"
