"""Three davitd (separate homes and names) on one event log in PostgreSQL, sharing repositories:
a copy run's daemon killed with -9 in the middle, its run is taken over by another daemon once
its lease lapsed and ends exactly once, no chunk sent twice; a daemon paused (SIGSTOP) past its
lease and continued finds its appends refused and lets the run go. `davit daemons` on any home
lists the three."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Davit, make_big_tree, write_job
from tests.e2e.test_postgres_event_log import log_database  # noqa: F401 (a fixture)
from tests.peers.state import PostgresPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE, RENEW = 10, 3
ADHOC = "repository-copy"
NAMES = ("e-lease-a", "e-lease-b", "e-lease-c")


class Log:
    """The shared log, read directly (read-only use), as the e2e tests read SQLite's."""

    def __init__(self, peer: PostgresPeer, database: str) -> None:
        self.kw: dict[str, Any] = {
            "host": peer.host,
            "port": peer.port,
            "user": peer.user,
            "password": peer.password,
            "dbname": database,
        }

    def events(self, where: str = "1=1") -> list[tuple[int, str, str, dict[str, Any], str]]:
        with psycopg.connect(**self.kw) as conn:
            rows = conn.execute(f"SELECT position, stream, type, data, recorded_at FROM events WHERE {where} ORDER BY position")
            return [(p, s, t, json.loads(d), r) for p, s, t, d, r in rows]

    def run(self, run_id: str) -> list[tuple[int, str, str, dict[str, Any], str]]:
        return self.events(f"stream = 'run-{run_id}'")


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("big") / "tree"
    make_big_tree(root, 200)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


@pytest.fixture
def daemons(tmp_path: Path, postgres_peer: PostgresPeer, log_database: str) -> Iterator[list[Davit]]:  # noqa: F811
    url = f"postgresql://{postgres_peer.user}:{postgres_peer.password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}"
    shared = tmp_path / "shared"
    shared.mkdir()
    key = shared / "offsite.passphrase"
    key.write_text("the off-site passphrase\n")
    key.chmod(0o600)
    out = []
    for name in NAMES:
        d = Davit(tmp_path / name)
        d.home.mkdir()
        fd = os.open(d.home / "event-store.url", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(url + "\n")
        d.configure(
            f'[daemon]\nname = "{name}"\nevent_store_url_file = "event-store.url"\n'
            f'log_key_file = "{shared / "log.key"}"\n'  # the daemons of one log share its key
            f"lease_seconds = {LEASE}\nlease_renew_seconds = {RENEW}\n"
            "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.5\n"
            f'[repositories.local]\npath = "{shared / "repository"}"\n'
            f'[repositories.offsite]\npath = "{shared / "offsite"}"\npassphrase_file = "{key}"\n'
            f'[repositories.second]\npath = "{shared / "second"}"\npassphrase_file = "{key}"\n'
        )
        out.append(d)
    yield out
    for d in out:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)
            d.proc.kill()
            d.proc.wait(10)


def owner_of(log: Log, run_id: str) -> str | None:
    claims = [e for e in log.run(run_id) if e[2] == "RunClaimed"]
    return claims[-1][3]["owner"] if claims else None


def wait(what: str, predicate: Any, timeout: float, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def checkpoints(log: Log, run_id: str) -> list[dict[str, Any]]:
    return [e[3] for e in log.run(run_id) if e[2] == "CheckpointRecorded"]


def assert_ended_once_without_sending_twice(log: Log, run_id: str) -> list[tuple[int, str, str, dict[str, Any], str]]:
    events = log.run(run_id)
    ends = [e for e in events if e[2] in ("RunSucceeded", "RunFailed", "RunCancelled", "RunRolledBack")]
    assert [e[2] for e in ends] == ["RunSucceeded"], [e[2] for e in events]
    written = [c for cp in checkpoints(log, run_id) for c in cp["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was recorded twice"
    # every claim after the first follows the previous owner's interruption: never two owners at once
    types = [e[2] for e in events]
    for index, event in enumerate(events):
        if event[2] == "RunClaimed" and event[3].get("taken_from"):
            assert "RunInterrupted" in types[:index] or types[index - 1] != "RunClaimed"
    return events


def start_copy(starter: Davit, log: Log, dst: str) -> tuple[str, str]:
    run_id = starter.cli("repository", "copy", "local", dst).stdout.strip()
    wait("2 checkpoints of the copy", lambda: len(checkpoints(log, run_id)) >= 2, 120, poll=0.005)
    owner = owner_of(log, run_id)
    assert owner in NAMES
    return run_id, owner


def test_three_daemons_share_one_log_a_killed_or_paused_daemons_run_is_taken_over_and_ends_once(
    daemons: list[Davit],
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811 (the fixture)
    big_tree: Path,
) -> None:
    log = Log(postgres_peer, log_database)
    a, b, c = daemons
    by_name = dict(zip(NAMES, daemons, strict=True))
    for d in daemons:
        d.start()
    write_job(a, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{big_tree}"\n')
    backup = a.wait_run_state("big", {"succeeded", "failed"}, timeout=300)
    assert backup["state"] == "succeeded", backup
    # a files job runs on the daemon whose jobs directory defines it
    [claim] = [e for e in log.run(backup["run_id"]) if e[2] == "RunClaimed"]
    assert claim[3]["owner"] == "e-lease-a"

    # --- kill -9 the owner of a copy in the middle of it
    run_id, owner = start_copy(b, log, "offsite")
    victim = by_name[owner]
    victim.kill9()
    killed_at = time.time()
    assert "RunVerifying" not in [e[2] for e in log.run(run_id)], "the kill must land in the middle of the copy"
    survivor = next(d for d in daemons if d is not victim)
    run = survivor.wait_run_state(ADHOC, {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    events = assert_ended_once_without_sending_twice(log, run_id)
    [interrupted] = [e for e in events if e[2] == "RunInterrupted"]
    taken = next(e for e in events if e[2] == "RunClaimed" and e[0] > interrupted[0])
    assert taken[3]["owner"] != owner and taken[3]["taken_from"] in (owner, None)
    assert f"lease of daemon {owner} lapsed" in interrupted[3]["reason"]
    takeover = datetime.fromisoformat(interrupted[4]).timestamp() - killed_at
    assert takeover <= LEASE + 10, f"taken over {takeover:.1f} s after the kill"

    # every home sees the three daemons and who holds what
    listed = [json.loads(line) for line in survivor.cli("daemons", "--json").stdout.splitlines()]
    assert sorted(r["name"] for r in listed) == sorted(NAMES)

    # --- SIGSTOP the owner of a second copy past its lease, then SIGCONT it
    victim.start()
    run_id, owner = start_copy(c, log, "second")
    paused = by_name[owner]
    assert paused.proc is not None
    paused.proc.send_signal(signal.SIGSTOP)
    assert "RunVerifying" not in [e[2] for e in log.run(run_id)], "the pause must land in the middle of the copy"
    try:
        wait(
            "another daemon to take the run over",
            lambda: any(e[2] == "RunClaimed" and e[3]["owner"] != owner for e in log.run(run_id)),
            LEASE + 20,
            poll=0.2,
        )
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    other = next(d for d in daemons if d is not paused)
    run = other.wait_run_state(ADHOC, {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded" and run["run_id"] == run_id, run
    assert_ended_once_without_sending_twice(log, run_id)
    # the paused daemon found its lease gone and let the run go; it is still up
    paused.wait_for(
        lambda: (
            ("lease" in paused.logs[-1].read_text() and "lets the run go" in paused.logs[-1].read_text())
            or "lease expired" in paused.logs[-1].read_text()
        ),
        30,
        "the paused daemon to let the run go",
    )
    assert paused.proc.poll() is None
    for d in daemons:
        assert d.stop() == 0
    assert not any(postgres_peer.password in p.read_text() for d in daemons for p in d.logs)
