"""Upgrading davit does not change a job's revision: davitd runs an unscheduled job once per new
revision, so a changed revision after an upgrade would run every such job again (restores too).

The revisions below are what davit recorded for these job files before `max_age`, `[notify]` and
restore `privileges` existed (commit d380c16); the same files must keep them.
"""

from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, TypeAdapter

from davit.domain.jobs import AnyJob, spec_revision
from davit.domain.jobs.base import LATER_FIELDS

RECORDED_BEFORE = [
    (
        {
            "kind": "files.backup",
            "name": "home",
            "source": {"path": "/home"},
            "schedule": "0 3 * * *",
            "retention": {"keep_daily": 7},
        },
        "719aad58c4722d58",
    ),
    (
        {"kind": "files.restore", "name": "home-back", "source": {"job": "home"}, "target": {"path": "/srv/restore"}},
        "b2387d7acc484c33",
    ),
    (
        {
            "kind": "postgres.restore",
            "name": "shop-back",
            "source": {"job": "shop"},
            "target": {
                "host": "127.0.0.1",
                "user": "admin",
                "password_file": "/etc/davit/pg.pw",
                "rename": {"shop": "shop_restored"},
            },
        },
        "e5b74ced33d254b5",
    ),
    (
        {
            "kind": "mysql.restore",
            "name": "blog-back",
            "source": {"job": "blog"},
            "target": {"user": "root", "password_file": "/etc/davit/my.pw"},
        },
        "ef7e58baaff94fa5",
    ),
]


@pytest.mark.parametrize(("spec", "recorded"), RECORDED_BEFORE, ids=lambda v: v["kind"] if isinstance(v, dict) else "")
def test_a_job_file_unchanged_across_an_upgrade_keeps_its_revision(spec: dict[str, Any], recorded: str) -> None:
    assert spec_revision(TypeAdapter(AnyJob).validate_python(spec)) == recorded


def test_setting_a_field_added_later_is_a_new_revision() -> None:
    spec = dict(RECORDED_BEFORE[0][0])
    assert spec_revision(TypeAdapter(AnyJob).validate_python({**spec, "max_age": "26h"})) != RECORDED_BEFORE[0][1]


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every field name of a job spec, nested specs included."""
    if model in seen:
        return set()
    seen.add(model)
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if name in LATER_FIELDS:
            continue  # left out whole while at its default: what it holds is new with it
        for arg in _classes_in(info.annotation):
            names |= _field_names(arg, seen)
    return names


def _classes_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for arg in get_args(annotation) for c in _classes_in(arg)]


# Field names of job specs when davit first recorded revisions of today's kinds: a field added since
# must be named in LATER_FIELDS with its default, or an upgrade changes every revision.
KNOWN_FIELD_NAMES = Path(__file__).with_name("job_field_names.txt")


def test_a_field_added_to_a_job_spec_is_left_out_of_revisions_while_at_its_default() -> None:
    known = set(KNOWN_FIELD_NAMES.read_text().split())
    now = set().union(*(_field_names(model, set()) for model in _classes_in(AnyJob)))
    added = now - known - set(LATER_FIELDS)
    assert not added, f"add these new job fields to LATER_FIELDS in davit/domain/jobs/base.py: {sorted(added)}"
