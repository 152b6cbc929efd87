"""A mongo.backup whose server is down, with a password in its URI: the run backs off and
retries (bounded), ends `failed` with an error saying the server is unreachable, and the
password appears nowhere: not in the event log, the daemon's log, nor any `--json` output."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, write_job

pytestmark = [pytest.mark.e2e, pytest.mark.mongo]

PASSWORD = "pw-Never-In-Output-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_retries_with_backoff_then_fails_without_the_password_anywhere(davit: Davit,
                                                                                    tmp_path: Path) -> None:
    uri = tmp_path / "mongo.uri"
    uri.write_text(f"mongodb://admin:{PASSWORD}@127.0.0.1:{free_port()}/?authSource=admin\n")
    davit.configure("[retry]\nmax_attempts = 2\ninitial_seconds = 1\nmax_seconds = 2\n")
    davit.start()
    write_job(davit, "down.toml", f'name = "down"\nkind = "mongo.backup"\n[source]\nuri_file = "{uri}"\n')
    run = davit.wait_run_state("down", {"failed", "succeeded"}, timeout=180)
    assert run["state"] == "failed", run
    history = davit.history(run["run_id"])
    types = [e["type"] for e in history]
    assert types.count("RunWaitingRetry") == 1 and types.count("RunFailed") == 1
    failed = next(e for e in history if e["type"] == "RunFailed")
    assert "server unreachable" in str(failed) and "MongoUnreachable" in str(failed)

    outputs = [davit.cli("history", "--all", "--json").stdout, davit.cli("runs", "--json").stdout,
               davit.cli("show", run["run_id"], "--json").stdout, davit.cli("jobs", "--json").stdout,
               str(davit.events())]
    outputs += [log.read_text() for log in davit.logs]
    for text in outputs:
        assert PASSWORD not in text and "admin:" not in text
