"""The `[daemon] name` claims of several daemons (`davit/daemon/twins.py`) are a shared log's:
on SQLite (one daemon's log) a daemon starts, is killed -9 and starts again at once, and
`davit daemons` lists it, with no name claim or heartbeat row written to its log, and
`davit daemons forget` is refused there."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Davit

pytestmark = pytest.mark.e2e


def test_a_sqlite_daemon_killed_and_restarted_claims_no_name_and_is_listed(davit: Davit) -> None:
    davit.configure('[daemon]\nname = "atk-names-solo"\n')
    davit.start()
    assert davit.proc is not None
    first = davit.proc.pid
    [row] = davit.json_lines("daemons")
    assert row["pid"] == first, row
    davit.kill9()
    davit.start()  # at once: no wait for a claim of its previous life
    assert davit.proc is not None and davit.proc.pid != first
    [row] = davit.json_lines("daemons")
    assert row["pid"] == davit.proc.pid, row
    assert davit.events("type IN ('NameClaimed', 'NameForgotten') OR stream LIKE 'name-%'") == []
    started = davit.events("type = 'DaemonStarted'")
    assert len(started) == 2, started
    refused = davit.cli("daemons", "forget", "atk-names-solo-old", check=False)
    assert refused.returncode != 0 and "SQLite" in refused.stdout + refused.stderr, refused
    assert davit.stop() == 0
