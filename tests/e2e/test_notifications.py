"""Notifications as an operator meets them: davitd mails a failure, a recovery and a stale
job through a real SMTP server, posts the JSON webhook to a real HTTP server, records each
attempt in the log without the URL's token, keeps a message owed across `kill -9`, and a
target that is down or hangs never holds up a run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Davit, write_job
from tests.fixtures.notify_targets import Mailbox, Webhook, free_port, hung_target, mailbox, webhook

pytestmark = pytest.mark.e2e
__all__ = ["hung_target", "mailbox", "webhook"]  # fixtures
TOKEN = "S3cretHookToken42"
HUNG_DEADLINE = 10  # seconds: a notification attempt's deadline against the hung target


def configure(davit: Davit, targets: dict[str, list[str]], **settings: Any) -> None:
    """davit.toml with one target per name, its URLs in a file beside it (by reference)."""
    lines = ["[retry]", "max_attempts = 1", "[notifications]"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    for name, urls in targets.items():
        (davit.home / f"{name}.urls").write_text("# apprise URLs\n" + "\n".join(urls) + "\n")
        lines += [f"[notifications.targets.{name}]", f'urls_file = "{name}.urls"']
    davit.configure("\n".join(lines) + "\n")


def backup_job(name: str, source: Path, extra: str = "") -> str:
    return f'name = "{name}"\nkind = "files.backup"\n{extra}\n[source]\npath = "{source}"\n'


def notices(davit: Davit, kind: str) -> list[dict[str, Any]]:
    return [e[3] for e in davit.events() if e[2] == kind]


def secrets_absent(davit: Davit, secret: str) -> None:
    db = davit.home / "state"
    for path in [*db.iterdir(), *davit.logs]:
        assert secret.encode() not in path.read_bytes(), path


def test_a_failure_and_the_recovery_are_mailed_and_posted_without_the_token_in_the_log(
    davit: Davit, mailbox: Mailbox, webhook: Webhook, tmp_path: Path
) -> None:
    configure(davit, {"ops": [mailbox.url(), webhook.url(TOKEN)]})
    davit.start()
    source = tmp_path / "docs"  # missing: the run fails
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"failed"})
    davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 1, 60, "the failure to be sent")
    assert mailbox.subjects() == ["davit: job docs failed"]
    [(path, body)] = webhook.posts
    assert path == f"/hook/{TOKEN}" and body["title"] == "davit: job docs failed" and body["type"] == "failure"
    assert "failed after its retries" in body["message"]

    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    davit.cli("run", "docs")
    davit.wait_run_state("docs", {"succeeded"})
    davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 2, 60, "the recovery to be sent")
    assert mailbox.subjects() == ["davit: job docs failed", "davit: job docs recovered"]
    assert [b["title"] for _p, b in webhook.posts] == ["davit: job docs failed", "davit: job docs recovered"]
    sent = notices(davit, "NotificationSent")
    assert [(s["event"], s["target"], s["job"]) for s in sent] == [
        ("run_failed", "ops", "docs"),
        ("job_recovered", "ops", "docs"),
    ]
    assert davit.stop() == 0
    secrets_absent(davit, TOKEN)


def test_a_stale_job_is_mailed_once(davit: Davit, mailbox: Mailbox) -> None:
    configure(davit, {"ops": [mailbox.url()]}, stale_check_seconds=0.2)
    davit.start()
    # scheduled once a year: it does not run now, and it has never succeeded
    write_job(davit, "yearly.toml", backup_job("yearly", Path("/nonexistent"), 'schedule = "0 3 1 1 *"\nmax_age = "2s"'))
    davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 1, 60, "the stale job to be told")
    time.sleep(2.0)  # ten more checks
    assert mailbox.subjects() == ["davit: job yearly is stale"]
    assert [s["key"] for s in notices(davit, "NotificationSent")] == ["job_stale:yearly:never"]
    davit.stop()
    davit.start()  # a restart does not tell it again
    time.sleep(2.0)
    assert mailbox.subjects() == ["davit: job yearly is stale"]


def test_a_failure_owed_when_davitd_is_killed_is_sent_after_the_restart_once(davit: Davit, tmp_path: Path) -> None:
    port = free_port()  # nobody listens yet: the first attempt fails
    hook = Webhook(port)
    configure(davit, {"hook": [hook.url(TOKEN)]}, initial_backoff_seconds=3600, max_backoff_seconds=3600)
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", tmp_path / "missing"))
    davit.wait_for(lambda: len(notices(davit, "NotificationFailed")) == 1, 60, "the first attempt to fail")
    [failed] = notices(davit, "NotificationFailed")
    assert failed["final"] is False and TOKEN not in failed["reason"]
    davit.kill9()  # its next attempt was an hour away
    hook.start()
    try:
        davit.start()
        davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 1, 60, "the owed failure to be sent")
        assert [s["attempt"] for s in notices(davit, "NotificationSent")] == [2]
        davit.stop()
        davit.start()
        time.sleep(2.0)
        assert len(hook.posts) == 1  # settled in the log: not sent again
    finally:
        hook.stop()
    davit.stop()
    secrets_absent(davit, TOKEN)


def test_a_target_that_hangs_or_is_down_does_not_hold_up_runs(davit: Davit, hung_target: int, tmp_path: Path) -> None:
    hung = f"json://127.0.0.1:{hung_target}/hook/{TOKEN}"
    down = f"json://127.0.0.1:{free_port()}/hook/{TOKEN}"
    # a deadline 10 times the hung target's 1 s between bytes (so no read timeout could end it
    # first), and far longer than the two tiny docs runs take
    configure(davit, {"hung": [hung], "down": [down]}, timeout_seconds=HUNG_DEADLINE)
    davit.start()
    write_job(davit, "broken.toml", backup_job("broken", tmp_path / "missing"))
    davit.wait_run_state("broken", {"failed"})  # its message goes to both targets
    source = tmp_path / "docs"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n" * 1000)
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"succeeded"})
    davit.cli("run", "docs")
    davit.wait_for(lambda: sum(r["state"] == "succeeded" for r in davit.runs("docs")) == 2, 60, "the second run", poll=0.2)

    def hung_failed() -> list[tuple[int, dict[str, Any]]]:
        return [(e[0], e[3]) for e in davit.events() if e[2] == "NotificationFailed" and e[3]["target"] == "hung"]

    davit.wait_for(lambda: bool(hung_failed()), HUNG_DEADLINE + 60, "the hung attempt to reach its deadline", poll=0.2)
    [(position, failed)] = hung_failed()[:1]
    assert failed["final"] is False and failed["reason"].startswith("timeout") and TOKEN not in failed["reason"]
    # the docs runs were queued, ran and succeeded while that attempt hung (it began with the
    # broken run's failure, before them, and was recorded after its deadline)
    succeeded = [e[0] for e in davit.events() if e[2] == "RunSucceeded"]
    assert succeeded and succeeded[0] < position
    assert any(n["target"] == "down" for n in notices(davit, "NotificationFailed"))
    davit.stop()
    secrets_absent(davit, TOKEN)


def test_an_event_log_that_cannot_be_written_is_told_while_it_cannot(davit: Davit, webhook: Webhook) -> None:
    from tests.fixtures.fullfs import fill, mounted_tmpfs

    state = davit.home / "state"
    state.mkdir(mode=0o700)
    with mounted_tmpfs(state, "size=8m,mode=0700"):
        try:
            configure(davit, {"hook": [webhook.url(TOKEN)]})
            davit.start()
            filler = fill(state)
            write_job(davit, "docs.toml", backup_job("docs", Path("/nonexistent"), 'schedule = "0 3 1 1 *"'))
            # told through the webhook while nothing can be recorded
            davit.wait_for(lambda: len(webhook.posts) == 1, 60, "the outage to be told")
            assert webhook.posts[0][1]["title"] == "davit: event log cannot be written"
            assert "no space left" in webhook.posts[0][1]["message"]
            filler.unlink()  # room again: the attempt's record lands
            davit.wait_for(lambda: len(notices(davit, "NotificationSent")) == 1, 60, "the record of the message")
            assert notices(davit, "NotificationSent")[0]["event"] == "log_unwritable"
            assert len(webhook.posts) == 1
            assert davit.stop() == 0
        finally:
            if davit.proc is not None and davit.proc.poll() is None:
                davit.proc.kill()
                davit.proc.wait(10)
