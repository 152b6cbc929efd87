"""Several davitd on one PostgreSQL log, what issue 22's last stop left: two daemons of one
name started at the same moment (exactly one runs); `davit daemons forget OLD` (OLD no longer
listed); a cancel of a run whose owner died, honoured by whoever takes the run over."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from davit.domain import events as ev
from tests.e2e.conftest import BIN, Davit, write_job
from tests.e2e.test_postgres_event_log import log_database  # noqa: F401 (a fixture)
from tests.e2e.test_several_daemons import ADHOC, LEASE, NAMES, Log, big_tree, daemons, start_copy  # noqa: F401 (fixtures)
from tests.e2e.test_several_daemons_gaps import _log, pair  # noqa: F401 (a fixture)
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.e2e

ATTEMPTS = 3


def _start(d: Davit) -> subprocess.Popen[bytes]:
    log = d.home / f"davitd-{len(d.logs)}.log"
    d.logs.append(log)
    with open(log, "wb") as output:
        d.proc = subprocess.Popen([str(BIN / "davitd"), "--home", str(d.home)], stdout=output, stderr=subprocess.STDOUT)
    return d.proc


@pytest.mark.parametrize("pair", [("e-gaps22c-same", "e-gaps22c-same")], indirect=True)
def test_two_daemons_of_one_name_started_at_once_one_runs(pair: tuple[str, list[Davit]]) -> None:  # noqa: F811
    url, (first, second) = pair
    for attempt in range(ATTEMPTS):
        procs = [_start(first), _start(second)]  # (one right after the other: both start up at once)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        time.sleep(3)  # the other one, had it started too, would still run now
        exited = [d for d, p in zip((first, second), procs, strict=True) if p.poll() is not None]
        running = [d for d, p in zip((first, second), procs, strict=True) if p.poll() is None]
        assert len(exited) == 1 and len(running) == 1, (attempt, [d.logs[-1].read_text()[-1500:] for d in (first, second)])
        said = exited[0].logs[-1].read_text()
        assert exited[0].proc is not None and exited[0].proc.returncode != 0
        assert "[daemon] name 'e-gaps22c-same' is in use" in said and socket.gethostname() in said, said
        assert str(running[0].proc.pid if running[0].proc else "") in said, said  # it names the twin's pid
        running[0].wait_for(lambda d=running[0]: "ready" in d.logs[-1].read_text(), 30, "the one to be ready")
        assert running[0].stop() == 0
    events = asyncio.run(_log(url, unknown=False))
    assert [e.type for e in events].count("DaemonStarted") == ATTEMPTS
    assert [e.type for e in events if e.stream == ev.name_stream("e-gaps22c-same")].count("NameClaimed") == ATTEMPTS


@pytest.mark.parametrize("pair", [("e-gaps22c-old", "e-gaps22c-new")], indirect=True)
def test_a_forgotten_daemon_is_no_longer_listed(pair: tuple[str, list[Davit]]) -> None:  # noqa: F811
    _url, (old, new) = pair
    old.start()
    assert old.stop() == 0
    new.start()

    def listed() -> list[str]:
        return [row["name"] for row in new.json_lines("daemons")]

    assert listed() == ["e-gaps22c-new", "e-gaps22c-old"]
    deadline = time.monotonic() + 40
    while True:  # refused until old's last beat is ROSTER_LIVE_SECONDS old
        forgot = new.cli("daemons", "forget", "e-gaps22c-old", check=False)
        if forgot.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert forgot.returncode == 0, forgot.stderr
    assert listed() == ["e-gaps22c-new"]
    assert "e-gaps22c-old" not in new.cli("daemons").stdout
    assert new.cli("daemons", "forget", "e-gaps22c-old").returncode == 0  # again: nothing more to do
    old.start()  # the name claimed again: listed again
    new.wait_for(lambda: listed() == ["e-gaps22c-new", "e-gaps22c-old"], 20, "old listed again")
    assert old.stop() == 0 and new.stop() == 0


@pytest.mark.slow
def test_a_cancel_of_a_run_whose_owner_was_killed_is_honoured_by_the_daemon_taking_it_over(
    daemons: list[Davit],  # noqa: F811
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    big_tree: Path,  # noqa: F811
) -> None:
    log = Log(postgres_peer, log_database)
    a, b, _c = daemons
    by_name = dict(zip(NAMES, daemons, strict=True))
    for d in daemons:
        d.start()
    write_job(a, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{big_tree}"\n')
    assert a.wait_run_state("big", {"succeeded", "failed"}, timeout=300)["state"] == "succeeded"
    run_id, owner = start_copy(b, log, "offsite")
    victim = by_name[owner]
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)  # it never reads the cancel: stopped, then killed
    asker = next(d for d in daemons if d is not victim)
    sent = asker.cli("cancel", run_id, check=False)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    victim.kill9()
    asker.wait_run_state(ADHOC, {"succeeded", "failed", "cancelled", "rolled_back"}, timeout=LEASE + 60)
    [request] = [e for e in log.events(f"stream = '{ev.REQUESTS_STREAM}'") if e[2] == "CancelRun"]
    events = log.run(run_id)
    types = [e[2] for e in events]
    ends = [t for t in types if t in ("RunSucceeded", "RunFailed", "RunCancelled", "RunRolledBack")]
    assert ends == ["RunCancelled"], types
    assert types.count("RunCancelling") == 1 and "RunVerifying" not in types, types
    interrupted = next(e for e in events if e[2] == "RunInterrupted")
    assert request[0] < interrupted[0]  # the cancel was in the log before the takeover
    assert f"lease of daemon {owner} lapsed" in interrupted[3]["reason"]
    # no daemon resumed it after the takeover: no claim after the interruption
    assert not [e for e in events if e[2] == "RunClaimed" and e[0] > interrupted[0]], types
    for d in daemons:
        if d is not victim:
            assert d.stop() == 0
