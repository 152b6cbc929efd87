"""The job spec of a compose.migrate whose source is on another host (`[source] host = ...`):
what it needs, what it refuses, and that a job with a local source keeps its revision."""

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from davit.domain.jobs import AnyJob, ComposeMigrateJob, spec_revision

TARGET = {
    "host": "new.example",
    "key_file": "/etc/davit/id_ed25519",
    "known_hosts": "/etc/davit/known_hosts",
    "base_path": "/srv/stacks",
    "helper_image": "busybox:1.36",
}
REMOTE = {"host": "old.example", "key_file": "/etc/davit/id_ed25519", "known_hosts": "/etc/davit/known_hosts"}


def migrate(source: dict[str, Any], **extra: Any) -> ComposeMigrateJob:
    spec = {"kind": "compose.migrate", "name": "shop-move", "source": {"project": "shop", **source}, "target": TARGET}
    return ComposeMigrateJob.model_validate({**spec, **extra})


def test_a_job_with_a_local_source_keeps_the_revision_it_had_before_sources_over_ssh() -> None:
    # recorded by davit at 332949a, before `[source] host` existed
    spec = {"kind": "compose.migrate", "name": "shop-move", "source": {"project": "shop"}, "target": TARGET}
    assert spec_revision(TypeAdapter(AnyJob).validate_python(spec)) == "71f80ebd0a42c9c5"


def test_a_source_over_ssh_is_a_new_revision_and_keeps_its_connection_fields() -> None:
    job = migrate(REMOTE, images="none")
    assert job.source.host == "old.example" and job.source.port == 22 and job.source.user == "root"
    assert spec_revision(job) != "71f80ebd0a42c9c5"
    assert job.model_dump(mode="json")["source"]["known_hosts"] == "/etc/davit/known_hosts"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"host": "old.example", "key_file": "/k"}, "needs `key_file` and `known_hosts`"),
        ({"host": "old.example", "known_hosts": "/kh"}, "needs `key_file` and `known_hosts`"),
        ({"key_file": "/k", "known_hosts": "/kh"}, "set `host` too"),
        ({**REMOTE, "known_hosts": "known_hosts"}, "must be an absolute path"),
    ],
    ids=["no-known-hosts", "no-key", "keys-without-host", "relative-known-hosts"],
)
def test_a_source_over_ssh_without_what_checks_its_host_is_refused(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        migrate(source, images="none")


@pytest.mark.parametrize("images", ["missing", "all", "none"])
def test_images_travel_from_a_source_over_ssh_as_from_a_local_one(images: str) -> None:
    assert migrate(REMOTE, images=images).images == images
    assert migrate(REMOTE).images == "missing"  # the default, as for a local source
