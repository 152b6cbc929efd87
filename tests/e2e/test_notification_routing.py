"""Where davitd's messages go, as an operator sets it: a job's `[notify]` that names one of
davit.toml's targets, or a target of its own, is told of its failure there and nowhere else; a
`systemctl reload` (SIGHUP) that changes `[notifications.targets.*]` sends the next message to
the new target. Real HTTP servers receive apprise's JSON posts."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_notifications import TOKEN, backup_job, configure, notices, secrets_absent
from tests.fixtures.notify_targets import Webhook, free_port

pytestmark = pytest.mark.e2e


@contextmanager
def webhooks(count: int) -> Iterator[list[Webhook]]:
    hooks = [Webhook(free_port()) for _ in range(count)]
    for hook in hooks:
        hook.start()
    try:
        yield hooks
    finally:
        for hook in hooks:
            hook.stop()


def titles(hook: Webhook) -> list[str]:
    return [body["title"] for _path, body in hook.posts]


def test_a_failing_job_is_told_only_to_the_targets_its_notify_table_names(davit: Davit, tmp_path: Path) -> None:
    with webhooks(3) as (ops, team, own):
        configure(davit, {"ops": [ops.url(TOKEN)], "team": [team.url(TOKEN)]})
        (tmp_path / "media.urls").write_text(own.url(TOKEN) + "\n")
        davit.start()
        # one names a global target, the other brings its own (which replaces the global ones)
        write_job(davit, "docs.toml", backup_job("docs", tmp_path / "missing", '[notify]\ntargets = ["team"]'))
        write_job(
            davit, "media.toml", backup_job("media", tmp_path / "missing", f'[notify]\nurls_file = "{tmp_path}/media.urls"')
        )
        davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 2, 60, "both failures to be sent")
        sent = sorted((s["event"], s["target"], s["job"]) for s in notices(davit, "NotificationSent"))
        assert sent == [("run_failed", "job:media", "media"), ("run_failed", "team", "docs")]
        assert titles(team) == ["davit: job docs failed"]
        assert titles(own) == ["davit: job media failed"]
        assert ops.posts == []  # neither job is the ops target's
        assert notices(davit, "NotificationFailed") == []
        assert davit.stop() == 0
    secrets_absent(davit, TOKEN)


def test_a_reload_that_changes_the_targets_sends_the_next_message_to_the_new_one(davit: Davit, tmp_path: Path) -> None:
    with webhooks(2) as (before, after):
        configure(davit, {"ops": [before.url(TOKEN)]})
        davit.start()
        write_job(davit, "docs.toml", backup_job("docs", tmp_path / "missing"))
        davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 1, 60, "the first failure to be sent")
        assert titles(before) == ["davit: job docs failed"]

        configure(davit, {"oncall": [after.url(TOKEN)]})
        assert davit.proc is not None
        davit.proc.send_signal(signal.SIGHUP)
        davit.wait_for(lambda: bool(notices(davit, "ConfigReloaded")), 30, "the config to be reloaded")
        assert any(name.startswith("notifications.targets") for name in notices(davit, "ConfigReloaded")[0]["changed"])
        davit.cli("run", "docs")
        davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 2, 60, "the second failure to be sent")
        assert [s["target"] for s in notices(davit, "NotificationSent")] == ["ops", "oncall"]
        assert titles(after) == ["davit: job docs failed"]
        assert titles(before) == ["davit: job docs failed"]  # the old target hears nothing more
        assert davit.stop() == 0
    secrets_absent(davit, TOKEN)
