"""The `compose.restore` job spec: a target over SSH with its keys, or this host's engine; a
project name compose accepts; `path_map` checked as the migration's."""

from __future__ import annotations

from typing import Any

import pytest

from davit.domain.errors import InvalidJob
from davit.domain.jobs import ComposeRestoreJob, job_from_dict

SSH = {"host": "h", "key_file": "/k", "known_hosts": "/kh", "base_path": "/srv", "helper_image": "busybox"}


def job(**extra: Any) -> dict[str, Any]:
    return {"name": "r", "kind": "compose.restore", "source": {"job": "shop"}, "target": dict(SSH), **extra}


def test_a_restore_over_ssh_and_one_onto_this_hosts_engine_parse() -> None:
    assert isinstance(job_from_dict(job(project="shop2"), "r.toml"), ComposeRestoreJob)
    local = job_from_dict(job(target={"engine": "unix:///run/d.sock", "base_path": "/srv", "helper_image": "b"}), "r.toml")
    assert isinstance(local, ComposeRestoreJob) and local.target.host is None


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (job(project="../x"), "project", "should match pattern"),
        (job(project="Shop"), "project", "should match pattern"),
        (job(target={**SSH, "known_hosts": None}), "target", "needs `key_file` and `known_hosts`"),
        (job(target={**SSH, "known_hosts": "relative"}), "target.known_hosts", "must be an absolute path"),
        (job(target={"key_file": "/k", "base_path": "/srv", "helper_image": "b"}), "target", "set `host` too"),
        (job(target={**SSH, "engine": "unix:///x"}), "target", "`engine` is for a restore onto this host"),
        (job(path_map={"/srv/a": "relative"}), "path_map", "must be an absolute path"),
        (job(outside_binds="copy"), "outside_binds", "Input should be"),
    ],
    ids=[
        "project-climbs",
        "project-uppercase",
        "ssh-without-keys",
        "keys-relative",
        "keys-without-host",
        "engine-with-host",
        "map-relative",
        "bad-mode",
    ],
)
def test_a_bad_restore_job_is_refused_naming_its_field(raw: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        job_from_dict(raw, "r.toml")
    assert any(p.field.startswith(field) and reason in p.reason for p in refused.value.problems), refused.value.problems
