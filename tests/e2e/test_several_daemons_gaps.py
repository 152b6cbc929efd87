"""Two davitd on one PostgreSQL log. They read every CLI request; each request gets one
answer: a request neither can handle is failed once (one `RequestFailed`, by the daemon whose
`RequestClaimed` landed), a run request queues one run, whichever home the CLI ran from. A
second daemon given the name of a live one refuses to start, naming it, and interrupts none
of its runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.eventstore.logkey import read_log_key
from davit.eventstore.postgres import PostgresEventStore, parse_url
from tests.e2e.conftest import BIN, Davit, make_big_tree, write_job
from tests.e2e.test_postgres_event_log import log_database  # noqa: F401 (a fixture)
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.e2e

NAMES = ("e-gaps22-a", "e-gaps22-b")


@pytest.fixture
def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
) -> Iterator[tuple[str, list[Davit]]]:
    url = f"postgresql://{postgres_peer.user}:{postgres_peer.password}@{postgres_peer.host}:{postgres_peer.port}/{log_database}"
    out = []
    names = getattr(request, "param", NAMES)
    for index, name in enumerate(names):
        d = Davit(tmp_path / f"home-{index}")
        d.home.mkdir()
        fd = os.open(d.home / "event-store.url", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(url + "\n")
        # (the daemons of one log share its key: `_log` appends with it too)
        d.configure(
            f'[daemon]\nname = "{name}"\nevent_store_url_file = "event-store.url"\nlog_key_file = "{tmp_path / "log.key"}"\n'
        )
        out.append(d)
    yield url, out
    for d in out:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)


async def _log(url: str, unknown: bool, key: Path | None = None) -> list[ev.StoredEvent]:
    """The log's events; with `unknown`, after appending a request nobody knows, as a writer
    with the daemons' log key at `key` (a keyed log takes no append without it)."""
    log_key = read_log_key(key) if key is not None else None
    store = await PostgresEventStore(parse_url(url, "the test"), key=log_key).open(create=False, readonly=not unknown)
    try:
        if unknown:
            version = await store.stream_version(ev.REQUESTS_STREAM)
            await store.append(ev.REQUESTS_STREAM, version, [ev.NewEvent(new_event_id(), "PruneNow", {"run_id": "feedface0001"})])
        return [e async for e in store.iter_all(0)]
    finally:
        await store.close()


def test_two_daemons_answer_each_request_once(pair: tuple[str, list[Davit]], tmp_path: Path) -> None:
    url, (a, b) = pair
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    a.start()
    b.start()
    write_job(a, "docs.toml", f'name = "docs"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    a.wait_run_state("docs", {"succeeded", "failed"}, timeout=60)
    # from b's home: a run of a's files job (it runs on a); a job nobody defined is refused by the CLI itself
    ran = b.cli("run", "docs", "--wait", "--timeout", "60", check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    missing = b.cli("run", "nosuchjob", "--wait", "--timeout", "60", check=False)
    assert missing.returncode != 0 and "nosuchjob" in missing.stdout + missing.stderr
    unknown = asyncio.run(_log(url, unknown=True, key=tmp_path / "log.key"))[-1].position
    b.wait_for(lambda: any(e.type == "RequestFailed" for e in asyncio.run(_log(url, unknown=False))), 30, "the failure recorded")
    events = asyncio.run(_log(url, unknown=False))
    requests = [e for e in events if e.stream == ev.REQUESTS_STREAM]
    assert [r.type for r in requests] == ["RunJobNow", "PruneNow"]
    for request in requests:
        claims = [e for e in events if e.stream == ev.request_claim_stream(request.position)]
        assert len(claims) == 1 and claims[0].data["owner"] in NAMES, (request, claims)
    failed = [e.data for e in events if e.type == "RequestFailed"]
    assert [f["position"] for f in failed] == [unknown], failed
    queued = [e.data["job"] for e in events if e.type == "RunQueued"]
    assert queued == ["docs", "docs"]
    assert "Traceback" not in a.logs[-1].read_text() + b.logs[-1].read_text()
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.parametrize("pair", [("e-gaps22-twin", "e-gaps22-twin")], indirect=True)
def test_a_second_daemon_of_a_live_daemons_name_refuses_to_start_and_interrupts_nothing(
    pair: tuple[str, list[Davit]], tmp_path: Path
) -> None:
    url, (first, second) = pair
    tree = tmp_path / "tree"
    make_big_tree(tree, 120)
    first.configure(first.home.joinpath("davit.toml").read_text() + "[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.3\n")
    first.start()
    write_job(first, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{tree}"\n')
    first.wait_for(
        lambda: any(e.type == "CheckpointRecorded" for e in asyncio.run(_log(url, unknown=False))), 120, "a checkpoint"
    )
    started = subprocess.run([str(BIN / "davitd"), "--home", str(second.home)], capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    said = started.stdout + started.stderr
    assert "[daemon] name 'e-gaps22-twin' is in use" in said and socket.gethostname() in said, said
    assert str(second.home / "davit.toml") in said
    run = first.wait_run_state("big", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    types = [e.type for e in asyncio.run(_log(url, unknown=False))]
    assert "RunInterrupted" not in types
    assert types.count("DaemonStarted") == 1
    assert first.stop() == 0


@pytest.mark.parametrize("pair", [("e-gaps22-old",)], indirect=True)
def test_a_renamed_daemon_gets_its_jobs_back_once_the_old_name_is_forgotten(
    pair: tuple[str, list[Davit]], tmp_path: Path
) -> None:
    url, (d,) = pair
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("alpha\n")
    d.start()
    write_job(d, "docs.toml", f'name = "docs"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    assert d.wait_run_state("docs", {"succeeded", "failed"}, timeout=60)["state"] == "succeeded"
    assert d.stop() == 0
    d.configure(d.home.joinpath("davit.toml").read_text().replace("e-gaps22-old", "e-gaps22-new"))
    d.start()

    def rejected() -> list[str]:
        return [str(e.data) for e in asyncio.run(_log(url, unknown=False)) if e.type == "JobFileRejected"]

    d.wait_for(lambda: bool(rejected()), 30, "the renamed daemon's file refused")
    assert "daemon 'e-gaps22-old'" in rejected()[0]
    own = d.cli("daemons", "forget", "e-gaps22-new", check=False)
    assert own.returncode == 2 and "own daemon name" in own.stderr, own.stderr
    # the old name may still look alive just after the stop: refused until its last beat is old
    deadline = time.monotonic() + 40
    while True:
        forgot = d.cli("daemons", "forget", "e-gaps22-old", check=False)
        if forgot.returncode == 0 or time.monotonic() > deadline:
            break
        assert "beat" in forgot.stderr and "stop it first" in forgot.stderr, forgot.stderr
        time.sleep(2)
    assert forgot.returncode == 0, forgot.stderr
    assert "job docs retired (defined by daemon e-gaps22-old)" in forgot.stdout
    assert "no job is defined by daemon e-gaps22-old" in d.cli("daemons", "forget", "e-gaps22-old").stdout  # once

    def defined_by() -> list[str | None]:
        return [e.data.get("daemon") for e in asyncio.run(_log(url, unknown=False)) if e.type == "JobDefined"]

    d.wait_for(lambda: defined_by()[-1] == "e-gaps22-new", 45, "docs defined again in the new name")
    ran = d.cli("run", "docs", "--wait", "--timeout", "60", check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(d.runs("docs")) == 2  # the old name's run is still its history
    assert d.stop() == 0
