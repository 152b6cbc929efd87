"""Issue 22's figure: three davitd (separate homes and names) on one event log in PostgreSQL, 30
jobs of a network kind (repository copies, which may run on any daemon), one daemon killed with
-9 while it holds runs. Judged from the log alone: every run ends exactly once; no checkpoint
is recorded twice; each run is held by one claim at a time (the claims' intervals in the run's
stream do not overlap) and every step event was appended under the claim holding the run at
that moment (step events carry their lease's token); a dead daemon's runs are taken over within
lease + 10 s (the delays are printed)."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Davit, write_job
from tests.e2e.test_postgres_event_log import log_database  # noqa: F401 (a fixture)
from tests.e2e.test_several_daemons import Log, wait
from tests.peers.state import PostgresPeer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE, RENEW = 10, 3
NAMES = ("e-thirty-a", "e-thirty-b", "e-thirty-c")
JOBS = [f"copy-{i:02d}" for i in range(30)]
ENDS = ("RunSucceeded", "RunFailed", "RunCancelled", "RunRolledBack")
STEP_EVENTS = ("StepStarted", "CheckpointRecorded", "StepCompleted")

Event = tuple[int, str, str, dict[str, Any], str]


@pytest.fixture
def daemons(tmp_path: Path, postgres_peer: PostgresPeer, log_database: str) -> Iterator[list[Davit]]:  # noqa: F811
    url = f"postgresql://{postgres_peer.user}:{postgres_peer.password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}"
    shared = tmp_path / "shared"
    shared.mkdir()
    key = shared / "copies.passphrase"
    key.write_text("the copies' passphrase\n")
    key.chmod(0o600)
    # one destination repository per copy job: the 30 runs do not wait on each other
    destinations = "".join(
        f'[repositories.{job.replace("-", "_")}]\npath = "{shared / job}"\npassphrase_file = "{key}"\n' for job in JOBS
    )
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
            f"lease_seconds = {LEASE}\nlease_renew_seconds = {RENEW}\nmax_parallel_runs = 3\n"
            "[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.2\n"
            f'[repositories.local]\npath = "{shared / "repository"}"\n' + destinations
        )
        out.append(d)
    yield out
    for d in out:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)


def seed_tree(root: Path) -> None:
    """12 MiB of incompressible data in files of 1-4 MiB and 200 small ones: a copy of its
    snapshot is a dozen packs, so it is caught in the middle of its steps."""
    (root / "small").mkdir(parents=True)
    for i in range(200):
        (root / "small" / f"n{i}.txt").write_text(f"note {i} " * (i + 1))
    for i, mib in enumerate((4, 3, 2, 2, 1)):
        (root / f"blob{i}.bin").write_bytes(os.urandom(mib << 20))


def runs_by_job(log: Log) -> dict[str, list[list[Event]]]:
    """Every run stream of a copy job, in the log's order, by job."""
    streams: dict[str, list[Event]] = {}
    for event in log.events("stream LIKE 'run-%'"):
        streams.setdefault(event[1], []).append(event)
    out: dict[str, list[list[Event]]] = {}
    for events in streams.values():
        job = events[0][3].get("job") if events[0][2] == "RunQueued" else None
        if job in JOBS:
            out.setdefault(job, []).append(events)
    return out


def holder(events: list[Event]) -> str | None:
    """The daemon holding the run now: the owner of its last claim, unless it ended or was
    interrupted since."""
    owner = None
    for _p, _s, kind, data, _r in events:
        if kind == "RunClaimed":
            owner = data["owner"]
        elif kind in ("RunInterrupted", *ENDS):
            owner = None
    return owner


def mid_step(events: list[Event]) -> bool:
    """In the middle of its work: a step started, and neither verifying nor ended."""
    kinds = [e[2] for e in events]
    return "StepStarted" in kinds and "RunVerifying" not in kinds and not set(kinds) & set(ENDS)


def ended(events: list[Event]) -> bool:
    return any(e[2] in ENDS for e in events)


def assert_one_holder_at_a_time(run_id: str, events: list[Event]) -> list[dict[str, Any]]:
    """The claims of the run, each with the interval of stream positions it held it: from its
    `RunClaimed` to the last event appended under its token. Intervals must not overlap, every
    renewal and step event must carry the token of the claim holding the run at its position,
    and a claim after the first follows the previous holder's interruption."""
    claims: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for position, _s, kind, data, recorded in events:
        if kind == "RunClaimed":
            if current is not None and data.get("taken_from") == current["owner"]:
                # its holder's lease lapsed while the run was still queued in the log (in its
                # `prepare`: RunPreparing goes to the log with RunStarted): nothing to
                # interrupt, this claim takes it over once the lease lapsed; the holder's token
                # holds nothing more
                idle = at(recorded) - at(current["last_at"])
                assert idle >= LEASE - 1, f"run {run_id}: claimed at {position} {idle:.1f} s after {current}'s last sign"
                current = None
            assert current is None, f"run {run_id}: claimed at {position} while {current} still held it"
            current = {"owner": data["owner"], "token": data["token"], "claimed": position, "last": position, "last_at": recorded}
            current.update(claimed_at=recorded, taken_from=data.get("taken_from"))
            claims.append(current)
        elif kind == "LeaseRenewed" or kind in STEP_EVENTS:
            assert current is not None, f"run {run_id}: {kind} at {position} with no claim holding the run"
            token = data.get("token") if kind == "LeaseRenewed" else data.get("lease")
            assert token == current["token"], (
                f"run {run_id}: {kind} at {position} appended under lease {token}, "
                f"but {current['owner']}'s claim {current['token']} held the run then"
            )
            current.update(last=position, last_at=recorded)
        elif kind == "RunInterrupted" or kind in ENDS:
            current = None  # the holder let go (interrupted, or the run ended)
    for before, after in itertools.pairwise(claims):
        assert before["last"] < after["claimed"], f"run {run_id}: two claims' intervals overlap: {before} {after}"
    return claims


def assert_no_checkpoint_twice(run_id: str, events: list[Event]) -> None:
    seen: set[str] = set()
    chunks: list[str] = []
    for _p, _s, kind, data, _r in events:
        if kind == "CheckpointRecorded":
            key = json.dumps([data["step"], data["cursor"]], sort_keys=True)
            assert key not in seen, f"run {run_id}: checkpoint {key} recorded twice"
            seen.add(key)
            chunks += data["chunks_written"]
    assert len(chunks) == len(set(chunks)), f"run {run_id}: a chunk was recorded written twice"


def at(recorded: str) -> float:
    return datetime.fromisoformat(recorded).timestamp()


def kill_one_in_the_middle(log: Log, by_name: dict[str, Davit]) -> tuple[str, float, dict[str, str], int]:
    """kill -9 a daemon in the middle of runs: once every job is queued and some runs ended,
    the daemon holding the most runs in the middle of their steps (two or more). Its name, the time of the
    kill, the runs it held then (run id -> job), how many runs had ended."""
    chosen: list[str] = []
    since = time.monotonic()

    def moment() -> bool:
        runs = runs_by_job(log)
        if len(runs) < len(JOBS) or sum(ended(r[-1]) for r in runs.values()) < 3:
            return False
        held: dict[str, int] = {}
        for job_runs in runs.values():
            owner = holder(job_runs[-1])
            if owner is not None and mid_step(job_runs[-1]):
                held[owner] = held.get(owner, 0) + 1
        most = max(held, key=lambda n: held[n]) if held else None
        # two or more runs at once if it comes within 30 s, else one will do
        if most is None or (held[most] < 2 and time.monotonic() - since < 30):
            return False
        chosen[:] = [most]
        return True

    wait("a daemon holding runs in the middle of their steps", moment, 120, poll=0.02)
    victim_name = chosen[0]
    by_name[victim_name].kill9()
    killed_at = time.time()
    runs = runs_by_job(log)
    orphans = {r[-1][0][1]: job for job, r in runs.items() if holder(r[-1]) == victim_name and not ended(r[-1])}
    assert orphans, "the kill must land while the victim holds runs"
    ended_before = sum(ended(r[-1]) for r in runs.values())
    assert ended_before < len(JOBS), "the kill must land in the middle of the 30 runs"
    return victim_name, killed_at, orphans, ended_before


def check_run(job: str, events: list[Event], victim_name: str, killed_at: float, orphans: dict[str, str]) -> float | None:
    """The log's checks of one run; for a run the victim held at the kill, the delay from the
    kill to its takeover's claim (s)."""
    run_id = events[0][1]
    assert [e[2] for e in events if e[2] in ENDS] == ["RunSucceeded"], (job, [e[2] for e in events])
    assert_no_checkpoint_twice(run_id, events)
    claims = assert_one_holder_at_a_time(run_id, events)
    assert claims and {c["owner"] for c in claims} <= set(NAMES)
    # after the kill, the victim appended nothing more to any run
    assert not [c for c in claims if c["owner"] == victim_name and at(c["claimed_at"]) > killed_at]
    if run_id not in orphans:
        return None
    taken = [c for c in claims if at(c["claimed_at"]) > killed_at]
    assert taken and taken[0]["owner"] != victim_name, (run_id, claims)
    reasons = [e[3]["reason"] for e in events if e[2] == "RunInterrupted" and at(e[4]) > killed_at]
    if reasons:  # it was working, as the log says: recorded interrupted, why, then claimed here
        assert taken[0]["taken_from"] in (victim_name, None)
        assert f"lease of daemon {victim_name} lapsed" in reasons[-1], reasons
    else:
        # claimed by the victim, still queued in the log (its `prepare` ran, `RunPreparing` goes
        # to the log with `RunStarted`): nothing to interrupt; the claim names whose it took
        assert [e[2] for e in events if e[2] in ("RunPreparing", "RunStarted") and at(e[4]) < killed_at] == [], events
        assert taken[0]["taken_from"] == victim_name, (run_id, claims)
    return at(taken[0]["claimed_at"]) - killed_at


def test_thirty_jobs_on_three_daemons_one_killed_every_run_ends_once_held_by_one_daemon_at_a_time(
    daemons: list[Davit],
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    log = Log(postgres_peer, log_database)
    by_name = dict(zip(NAMES, daemons, strict=True))
    for d in daemons:
        d.start()
    seed = tmp_path / "seed"
    seed_tree(seed)
    a = daemons[0]
    write_job(a, "seed.toml", f'name = "seed"\nkind = "files.backup"\n[source]\npath = "{seed}"\n')
    seeded = a.wait_run_state("seed", {"succeeded", "failed"}, timeout=120)
    assert seeded["state"] == "succeeded", seeded
    seed_events = log.run(seeded["run_id"])
    assert any(e[2] == "CheckpointRecorded" for e in seed_events)
    assert_no_checkpoint_twice(seeded["run_id"], seed_events)

    # ten copy jobs in each daemon's jobs directory; each may run on any daemon
    for index, job in enumerate(JOBS):
        write_job(
            daemons[index % 3],
            f"{job}.toml",
            f'name = "{job}"\nkind = "repository.copy"\nsource_repository = "local"\nrepository = "{job.replace("-", "_")}"\n',
        )

    victim_name, killed_at, orphans, ended_before = kill_one_in_the_middle(log, by_name)
    victim = by_name[victim_name]
    wait("all 30 runs to end", lambda: all(ended(r[-1]) for r in runs_by_job(log).values()), 240, poll=0.5)

    runs = runs_by_job(log)
    assert sorted(runs) == JOBS
    delays: dict[str, float] = {}
    others: list[str] = []
    for job, job_runs in runs.items():
        assert len(job_runs) == 1, f"{job} ran {len(job_runs)} times"
        delay = check_run(job, job_runs[0], victim_name, killed_at, orphans)
        if delay is not None:
            delays[job_runs[0][0][1]] = delay
        elif any(e[2] == "RunInterrupted" for e in job_runs[0]):
            # a live daemon's lease lapsed (a daemon starved of CPU past its lease): not a fault
            # (the checks hold all the same), but said, since it should be rare
            others.append(job)
    print(
        f"\n{len(JOBS)} runs, killed {victim_name} holding {len(orphans)} "
        f"({ended_before} ended before the kill); takeover delays (s, lease {LEASE}): "
        + ", ".join(f"{d:.1f}" for d in sorted(delays.values()))
        + f"; other runs taken over: {others or 'none'}"
    )
    assert max(delays.values()) <= LEASE + 10, f"a takeover took {max(delays.values()):.1f} s"
    # every daemon took part
    owners = {c_owner for r in runs.values() for c_owner in (e[3]["owner"] for e in r[0] if e[2] == "RunClaimed")}
    assert owners == set(NAMES), owners

    for d in daemons:
        if d is not victim:
            assert d.stop() == 0
    assert not any(postgres_peer.password in p.read_text() for d in daemons for p in d.logs)
