"""A mongo.backup whose server is down, with a password in its URI: the run backs off and
retries (bounded), ends `failed` with an error saying the server is unreachable, and the
password appears nowhere: not in the event log, the daemon's log, nor any `--json` output.
And one whose URI has a wrong password for a user that exists (the peer's instance with
authentication on): failed at once, not retried, the same nowhere."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, write_job
from tests.integration.mongo.helpers import auth_server
from tests.peers.state import MongoPeer

pytestmark = [pytest.mark.e2e, pytest.mark.mongo]

PASSWORD = "pw-Never-In-Output-42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_retries_with_backoff_then_fails_without_the_password_anywhere(davit: Davit, tmp_path: Path) -> None:
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

    outputs = [
        davit.cli("history", "--all", "--json").stdout,
        davit.cli("runs", "--json").stdout,
        davit.cli("show", run["run_id"], "--json").stdout,
        davit.cli("jobs", "--json").stdout,
        str(davit.events()),
    ]
    outputs += [log.read_text() for log in davit.logs]
    for text in outputs:
        assert PASSWORD not in text and "admin:" not in text


def test_a_wrong_password_for_an_existing_user_fails_at_once_without_the_password_anywhere(
    davit: Davit, mongo_peer: MongoPeer, tmp_path: Path
) -> None:
    auth = auth_server(mongo_peer)
    uri = tmp_path / "mongo.uri"
    uri.write_text(auth.uri(PASSWORD) + "\n")  # the user exists; this is not its password
    davit.configure("[retry]\nmax_attempts = 3\ninitial_seconds = 1\nmax_seconds = 2\n")
    davit.start()
    write_job(davit, "authed.toml", f'name = "authed"\nkind = "mongo.backup"\n[source]\nuri_file = "{uri}"\n')
    run = davit.wait_run_state("authed", {"failed", "succeeded"}, timeout=120)
    assert run["state"] == "failed", run
    history = davit.history(run["run_id"])
    types = [e["type"] for e in history]
    assert "RunWaitingRetry" not in types and types.count("RunFailed") == 1  # not retried: permanent
    failed = str(next(e for e in history if e["type"] == "RunFailed"))
    assert "MongoAuthFailed" in failed and "mongo.backup authed: authentication failed" in failed

    outputs = [
        davit.cli("history", "--all", "--json").stdout,
        davit.cli("runs", "--json").stdout,
        davit.cli("show", run["run_id"], "--json").stdout,
        davit.cli("show", run["run_id"], check=False).stdout,
        str(davit.events()),
    ]
    outputs += [log.read_text() for log in davit.logs]
    for text in outputs:
        assert PASSWORD not in text and auth.password not in text and f"{auth.user}:" not in text
