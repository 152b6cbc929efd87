"""davitd on an event log in PostgreSQL whose server goes down (a crash: `pg_ctl -m immediate`)
in the middle of a files backup and comes back on the same port: the run survives the outage
(or fails retryable and a retry succeeds), every run ends exactly once, no event is lost or
recorded twice (stream versions without gaps, one checkpoint per pack), and `davit log verify`
finds the chain whole. The shared peer is never restarted: the test starts a private cluster
with the peer tooling's binaries (`tests.peers.postgres.start_instance`)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Davit, make_big_tree, write_job
from tests.peers import postgres
from tests.peers.state import PostgresPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENDS = ("RunSucceeded", "RunFailed", "RunCancelled", "RunRolledBack")


@pytest.fixture
def private_server(postgres_peer: PostgresPeer) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A cluster of this test's own (stopping the shared peer would break other tests)."""
    base = Path(tempfile.mkdtemp(prefix="davit-e-gaps22-pg-"))  # short: its socket lives in it
    base.rmdir()
    try:
        yield base, postgres.start_instance(base)
    finally:
        postgres.stop_instance(base)


class Log:
    def __init__(self, entry: dict[str, Any], password: str) -> None:
        self.kw: dict[str, Any] = {
            "host": entry["host"],
            "port": entry["port"],
            "user": entry["user"],
            "password": password,
            "dbname": "davitlog",
            "connect_timeout": 2,
        }

    def events(self, where: str = "1=1") -> list[tuple[int, str, int, str, str, dict[str, Any]]]:
        """(position, stream, version, event_id, type, data); [] while the server is down."""
        try:
            with psycopg.connect(**self.kw) as conn:
                rows = conn.execute(
                    f"SELECT position, stream, version, event_id, type, data FROM events WHERE {where} ORDER BY position"
                ).fetchall()
        except psycopg.OperationalError:
            return []
        return [(p, s, v, i, t, json.loads(d)) for p, s, v, i, t, d in rows]


def test_a_postgresql_crash_in_the_middle_of_a_run_loses_and_doubles_nothing(
    davit: Davit, private_server: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    base, entry = private_server
    password = Path(entry["password_file"]).read_text().strip()
    with psycopg.connect(
        host=entry["host"], port=entry["port"], user=entry["user"], password=password, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("CREATE DATABASE davitlog")
    log = Log(entry, password)
    url = f"postgresql://{entry['user']}:{password}@{entry['host']}:{entry['port']}/davitlog"
    davit.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(davit.home / "event-store.url", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    davit.configure(
        '[daemon]\nname = "e-gaps22-outage"\nevent_store_url_file = "event-store.url"\n'
        "lease_seconds = 10\nlease_renew_seconds = 3\n"
        "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.3\n"
    )
    tree = tmp_path / "tree"
    make_big_tree(tree, 150)
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')

    def checkpoints() -> int:
        return len(log.events("type = 'CheckpointRecorded'"))

    deadline = time.monotonic() + 120
    while checkpoints() < 2:
        assert time.monotonic() < deadline, "no checkpoint of the backup within 120 s"
        time.sleep(0.05)
    assert not log.events("type IN ('RunSucceeded', 'RunFailed')"), "the crash must land in the middle of the run"
    postgres.halt_instance(base, "immediate")
    time.sleep(8)  # longer than two lease renewals: the daemon's renewals and checkpoints fail meanwhile
    postgres.resume_instance(base, entry)

    run = davit.wait_run_state("big", {"succeeded"}, timeout=300)
    assert davit.proc is not None and davit.proc.poll() is None, "davitd died of the outage"
    events = log.events()
    # no event recorded twice, none lost inside a stream: versions run 1..n without a gap
    ids = [e[3] for e in events]
    assert len(ids) == len(set(ids))
    by_stream: dict[str, list[int]] = {}
    for e in events:
        by_stream.setdefault(e[1], []).append(e[2])
    for stream, versions in by_stream.items():
        assert versions == list(range(versions[0], versions[0] + len(versions))), (stream, versions)
    runs = sorted({e[1] for e in events if e[1].startswith("run-")})
    assert runs, "no run stream"
    for stream in runs:
        types = [e[4] for e in events if e[1] == stream]
        assert len([t for t in types if t in ENDS]) == 1, (stream, types)
        written = [c for e in events if e[1] == stream and e[4] == "CheckpointRecorded" for c in e[5].get("chunks_written", [])]
        assert len(written) == len(set(written)), f"{stream}: a chunk was recorded twice"
        assert written or "RunSucceeded" not in types, f"{stream}: its checkpoints name no chunk"
    # the last run succeeded; an earlier one (if the outage failed it) failed retryable
    assert f"run-{run['run_id']}" in runs
    for stream in runs:
        failed = [e[5] for e in events if e[1] == stream and e[4] == "RunFailed"]
        for f in failed:
            assert f.get("retryable", True), f
    verify = davit.cli("log", "verify")
    assert "log ok" in verify.stdout, verify.stdout
    assert davit.stop() == 0
    outputs = [p.read_text() for p in davit.logs] + [verify.stdout, verify.stderr]
    assert not any(password in text for text in outputs)
