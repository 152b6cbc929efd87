"""Job files: valid ones parse; bad ones name the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.domain.errors import InvalidJob
from davit.domain.jobs import FilesBackupJob, FilesRestoreJob, parse_job, spec_revision

ROOT = Path(__file__).resolve().parents[2]

BACKUP = """
name = "home"
kind = "files.backup"
schedule = "0 3 * * *"
[source]
path = "/home"
exclude = ["*.tmp"]
[retention]
keep_last = 3
"""


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidJob) as err:
        parse_job(text, "jobs.d/x.toml")
    assert err.value.file == "jobs.d/x.toml"
    return [(p.field, p.reason) for p in err.value.problems]


def test_a_backup_job_file_parses_into_its_spec() -> None:
    spec = parse_job(BACKUP, "home.toml")
    assert isinstance(spec, FilesBackupJob)
    assert (spec.name, spec.schedule, spec.source.exclude, spec.retention.keep_last) == ("home", "0 3 * * *", ["*.tmp"], 3)


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "jobs.d").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_job_file_validates(path: Path) -> None:
    spec = parse_job(path.read_text(), str(path))
    assert spec.kind in path.read_text()


def test_there_is_an_example_for_every_kind() -> None:
    from davit.domain.jobs import KINDS

    kinds = {parse_job(p.read_text(), str(p)).kind for p in (ROOT / "config" / "jobs.d").glob("*.toml")}
    assert kinds == set(KINDS)


def test_the_demo_job_validates_once_its_source_is_filled_in() -> None:
    text = (ROOT / "config" / "demo" / "demo-backup.toml").read_text().replace("@SOURCE@", "/srv")
    assert parse_job(text, "demo-backup.toml").name == "demo-backup"


def test_malformed_toml_is_reported_with_its_position() -> None:
    [(field, reason)] = problems('name = "x"\nkind = \nschedule = "* * * * *"\n')
    assert field == "(toml)" and "line 2" in reason


def test_an_unknown_kind_lists_the_known_ones() -> None:
    [(field, reason)] = problems('name = "x"\nkind = "tape.backup"')
    assert field == "kind" and "tape.backup" in reason and "files.backup" in reason


def test_a_missing_kind_is_named() -> None:
    assert problems('name = "x"')[0][0] == "kind"


def test_a_missing_field_is_named_by_its_dotted_path() -> None:
    assert ("source.path", "required field is missing") in problems('name = "x"\nkind = "files.backup"\n[source]\n')


def test_an_unknown_field_is_refused() -> None:
    text = BACKUP.replace('path = "/home"', 'path = "/home"\npaht = "/typo"')
    assert ("source.paht", "unknown field") in problems(text)


def test_a_relative_source_path_is_refused() -> None:
    [(field, reason)] = problems(BACKUP.replace('"/home"', '"home"'))
    assert field == "source.path" and "absolute" in reason


def test_a_bad_cron_expression_is_refused() -> None:
    [(field, reason)] = problems(BACKUP.replace("0 3 * * *", "every night"))
    assert field == "schedule" and "cron" in reason


def test_an_inline_secret_is_refused_with_how_to_refer_to_it() -> None:
    found = problems(BACKUP + '\n[target]\npassword = "hunter2"\n')
    assert any(f == "target.password" and "password_env" in r and "hunter2" not in r for f, r in found)


def test_a_uri_with_a_password_in_any_field_is_refused_without_being_echoed() -> None:
    found = problems('repository = "mongodb://app:s3cret@db:27017/x"\n' + BACKUP)
    assert any(f == "repository" and "URI with a password" in r for f, r in found)
    assert not any("s3cret" in f + r for f, r in found)
    assert parse_job('repository = "ssh://backup@host"\n' + BACKUP, "x.toml").repository == "ssh://backup@host"


def test_a_restore_of_latest_needs_the_job_it_restores() -> None:
    text = 'name = "r"\nkind = "files.restore"\n[source]\nsnapshot = "latest"\n[target]\npath = "/srv"\n'
    assert any("needs the job" in r for _, r in problems(text))


def test_a_restore_by_snapshot_id_needs_no_job() -> None:
    text = 'name = "r"\nkind = "files.restore"\n[source]\nsnapshot = "ab12"\n[target]\npath = "/srv"\n'
    assert isinstance(parse_job(text, "r.toml"), FilesRestoreJob)


def test_the_revision_ignores_comments_and_layout_but_not_content() -> None:
    a = parse_job(BACKUP, "a.toml")
    b = parse_job("# a comment\n" + BACKUP.replace("keep_last = 3", "keep_last   =   3"), "b.toml")
    c = parse_job(BACKUP.replace("keep_last = 3", "keep_last = 4"), "c.toml")
    assert spec_revision(a) == spec_revision(b) != spec_revision(c)


@pytest.mark.parametrize("kind", ["files.restore", "mongo.restore"])
def test_an_empty_snapshot_in_a_restore_job_is_refused_not_read_as_a_prefix_of_every_id(kind: str) -> None:
    """A templated job file whose variable was empty (`snapshot = ""`) restored the only snapshot
    there was: the empty string is a prefix of every id."""
    target = '[target]\npath = "/srv/restore"' if kind == "files.restore" else '[target]\nuri_file = "/etc/davit/m.uri"'
    text = f'name = "r"\nkind = "{kind}"\n[source]\njob = "home"\nsnapshot = ""\n{target}\n'
    assert [field for field, _reason in problems(text)] == ["source.snapshot"]


def test_a_restore_job_written_before_the_sparse_option_keeps_its_revision() -> None:
    """A new revision runs an unscheduled restore job again: upgrading davit must not do that.
    The revision hashes the dumped spec, which leaves `sparse` out at its default, as before."""
    text = 'name = "r"\nkind = "files.restore"\n[source]\njob = "home"\n[target]\npath = "/srv/restore"\n'
    job = parse_job(text, "r.toml")
    assert isinstance(job, FilesRestoreJob) and job.target.sparse
    assert job.model_dump(mode="json")["target"] == {"path": "/srv/restore", "overwrite": False}  # as dumped before
    assert spec_revision(job) == spec_revision(parse_job(text + "sparse = true\n", "r.toml"))
    dense = parse_job(text + "sparse = false\n", "r.toml")
    assert isinstance(dense, FilesRestoreJob) and not dense.target.sparse
    assert spec_revision(dense) != spec_revision(job)
    assert FilesRestoreJob.model_validate(dense.model_dump(mode="json")) == dense  # a recorded spec reads back
