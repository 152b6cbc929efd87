"""`davit repository prune NAME` applies the policies davitd would: which job's snapshots in a
repository are governed by which retention policy, read from the job specs."""

from __future__ import annotations

from typing import Any

import pytest

from davit.daemon.retentionpolicies import policies_for
from davit.domain.errors import InvalidArgument, UnknownJob
from davit.domain.jobs import AnyJob, Retention, job_from_dict


def job(name: str, repository: str, keep_last: int | None = None, **extra: Any) -> AnyJob:
    spec: dict[str, Any] = {"name": name, "repository": repository, "kind": "files.backup", "source": {"path": "/srv"}}
    spec.update(extra)
    if keep_last is not None:
        spec["retention"] = {"keep_last": keep_last}
    return job_from_dict(spec, f"{name}.toml")


def copy(name: str, src: str, dst: str, keep_last: int, jobs: list[str] | None = None) -> AnyJob:
    spec = {
        "name": name,
        "kind": "repository.copy",
        "source_repository": src,
        "repository": dst,
        "retention": {"keep_last": keep_last},
    }
    if jobs is not None:
        spec["jobs"] = jobs
    return job_from_dict(spec, f"{name}.toml")


def test_each_backup_job_of_the_repository_brings_its_own_policy() -> None:
    specs = [job("home", "offsite", 3), job("etc", "offsite"), job("mail", "local", 1)]
    found = policies_for(specs, "offsite", present={"home", "etc"})
    assert found.by_job == {"home": Retention(keep_last=3)}  # etc keeps everything; mail is elsewhere


def test_a_copy_job_governs_the_jobs_it_copies_but_not_a_backup_job_of_the_destination() -> None:
    specs = [job("home", "local", 3), job("etc", "offsite", 2), copy("to-offsite", "local", "offsite", 7)]
    found = policies_for(specs, "offsite", present={"home", "etc", "old"})
    assert found.by_job == {"etc": Retention(keep_last=2), "home": Retention(keep_last=7), "old": Retention(keep_last=7)}
    named = policies_for([*specs[:2], copy("to-offsite", "local", "offsite", 7, jobs=["home"])], "offsite", {"home", "old"})
    assert named.by_job == {"etc": Retention(keep_last=2), "home": Retention(keep_last=7)}


def test_two_copies_with_different_policies_leave_the_job_alone_and_say_so() -> None:
    specs = [copy("a", "local", "offsite", 7, jobs=["home"]), copy("b", "other", "offsite", 2, jobs=["home"])]
    found = policies_for(specs, "offsite", present={"home"})
    assert found.by_job == {}
    assert found.notes == ["job home: left alone, the copy jobs a, b give it different retention policies"]


def test_only_the_jobs_asked_for_and_a_clear_refusal_for_one_without_a_policy() -> None:
    specs = [job("home", "offsite", 3), job("etc", "offsite", 1), job("mail", "offsite")]
    assert policies_for(specs, "offsite", {"home", "etc"}, only=["etc"]).by_job == {"etc": Retention(keep_last=1)}
    with pytest.raises(UnknownJob):
        policies_for(specs, "offsite", set(), only=["nope"])
    with pytest.raises(InvalidArgument, match="no retention policy of repository offsite applies to job 'mail'"):
        policies_for(specs, "offsite", set(), only=["mail"])
