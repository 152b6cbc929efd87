"""Upgrading davit does not change a job's revision: davitd runs an unscheduled job once per new
revision, so a changed revision after an upgrade would run every such job again (restores too).

The revisions below are what davit recorded for these job files before `max_age`, `[notify]` and
restore `privileges` existed (commit d380c16); the same files must keep them.
"""

from typing import Any

import pytest
from pydantic import TypeAdapter

from davit.domain.jobs import AnyJob, spec_revision

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
