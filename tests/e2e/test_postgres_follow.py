"""`davit history --follow` on an event log in PostgreSQL: the follower LISTENs (a connection
named `davit tail` waits on `LISTEN davit_log`), another process's appends appear on its output
promptly and in order, and once its listening connection is cut (a NOTIFY it can no longer
hear) the polling fallback still delivers every later append, none twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.eventstore.postgres import PostgresEventStore, parse_url
from tests.e2e.conftest import BIN, Davit
from tests.e2e.test_postgres_event_log import _on_postgres, log_database  # noqa: F401 (a fixture)
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.e2e

STREAM = "test-follow"


async def _append(url: str, marks: list[str]) -> None:
    async with PostgresEventStore(parse_url(url, "the test")) as store:
        for mark in marks:
            version = await store.stream_version(STREAM)
            await store.append(STREAM, version, [ev.NewEvent(new_event_id(), "TestMarked", {"mark": mark})])


class Follower:
    """`davit history --follow --json` as a subprocess; each line with the time it was read."""

    def __init__(self, davit: Davit) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "davit"), "--home", str(davit.home), "history", "--follow", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), json.loads(line)))

    def marks(self) -> list[str]:
        return [e["data"]["mark"] for _, e in self.lines if e["type"] == "TestMarked"]

    def seen_at(self, mark: str) -> float | None:
        return next((t for t, e in self.lines if e["type"] == "TestMarked" and e["data"]["mark"] == mark), None)

    def wait(self, mark: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.seen_at(mark)
            if at is not None:
                return at
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.01)
        raise AssertionError(f"{mark} not followed within {timeout} s; saw {self.marks()}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def url(davit: Davit, postgres_peer: PostgresPeer, log_database: str) -> str:  # noqa: F811
    text = f"postgresql://{postgres_peer.user}:{postgres_peer.password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}"
    _on_postgres(davit, text)
    asyncio.run(_append(text, ["m0"]))  # the log exists before the follower opens it
    return text


@pytest.fixture
def follower(davit: Davit, url: str) -> Iterator[Follower]:
    f = Follower(davit)
    yield f
    f.close()


def _admin(peer: PostgresPeer, database: str) -> psycopg.Connection:
    return psycopg.connect(
        host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname=database, autocommit=True
    )


def _listeners(peer: PostgresPeer, database: str) -> list[tuple[int, str]]:
    with _admin(peer, database) as conn:
        rows = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND application_name = 'davit tail'", (database,)
        ).fetchall()
    return [(int(p), str(q)) for p, q in rows]


def test_history_follow_on_postgresql_sees_another_process_append_and_survives_a_lost_listener(
    davit: Davit,
    url: str,
    follower: Follower,
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    follower.wait("m0", 30)
    # the follower waits on LISTEN, not only on a timer
    deadline = time.monotonic() + 30
    while not any("LISTEN" in q.upper() for _, q in _listeners(postgres_peer, log_database)):
        assert time.monotonic() < deadline, _listeners(postgres_peer, log_database)
        time.sleep(0.05)
    # another process appends: the follower prints it promptly (one at a time, each awaited)
    script = tmp_path / "append.py"
    script.write_text(
        "import asyncio, sys\n"
        "from tests.e2e.test_postgres_follow import _append\n"
        "asyncio.run(_append(sys.stdin.readline().strip(), sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).parents[2]))}
    lags = []
    for mark in ("m1", "m2", "m3"):
        subprocess.run([str(BIN / "python"), str(script), mark], input=url + "\n", text=True, check=True, env=env, timeout=60)
        appended = time.monotonic()
        lags.append(follower.wait(mark, 10) - appended)
    assert max(lags) < 5, lags

    # the listening connection is cut: no NOTIFY reaches the follower any more; polling delivers
    with _admin(postgres_peer, log_database) as conn:
        for pid, _ in _listeners(postgres_peer, log_database):
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    asyncio.run(_append(url, ["m4", "m5"]))
    follower.wait("m5", 15)
    assert follower.proc.poll() is None
    assert follower.marks() == ["m0", "m1", "m2", "m3", "m4", "m5"]
    positions = [e["position"] for _, e in follower.lines]
    assert positions == sorted(set(positions))
    assert not any(postgres_peer.password in json.dumps(e) for _, e in follower.lines)
