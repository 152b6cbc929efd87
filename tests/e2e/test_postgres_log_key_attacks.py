"""The keyed PostgreSQL log (issue 22) under attack: daemons without the key, with a wrong
key, or racing to key one unkeyed log; kill -9 while keying; hostile key files; rows
edited or deleted in PostgreSQL behind davit's back; and the key never leaking into the
log, the daemons table, output or argv."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from davit.domain.events import NewEvent
from davit.eventstore.logkey import create_log_key, read_log_key
from davit.eventstore.postgres import PostgresEventStore, parse_url
from tests.e2e.conftest import BIN, Davit
from tests.e2e.test_postgres_event_log import log_database  # noqa: F401 (a fixture)
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.e2e

PLAIN_EVENTS = 5


def _url(peer: PostgresPeer, database: str) -> str:
    return f"postgresql://{peer.user}:{peer.password}@{peer.host}:{peer.port}/{database}"


def _home(tmp_path: Path, name: str, url: str, key: Path) -> Davit:
    """A davit home on the PostgreSQL log at `url`, its key at `key` (`[daemon] log_key_file`)."""
    d = Davit(tmp_path / name)
    d.home.mkdir(parents=True)
    fd = os.open(d.home / "event-store.url", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    d.configure(f'[daemon]\nname = "e-pgkey-{name}"\nevent_store_url_file = "event-store.url"\nlog_key_file = "{key}"\n')
    return d


def _query(peer: PostgresPeer, database: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(
        host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname=database, autocommit=True
    ) as conn:
        cursor = conn.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []


def _markers(peer: PostgresPeer, database: str) -> int:
    return int(_query(peer, database, "SELECT count(*) FROM events WHERE type = 'LogKeyed'")[0][0])


def _count(peer: PostgresPeer, database: str) -> int:
    return int(_query(peer, database, "SELECT count(*) FROM events")[0][0])


async def _plain_log(url: str, events: int) -> None:
    """An unkeyed log with `events` plain events (as an older davit left it)."""
    store = await PostgresEventStore(parse_url(url, "the test")).open()
    try:
        for i in range(events):
            await store.append("plain-stream", i, [NewEvent(secrets.token_hex(16), "PlainThing", {"n": i})])
    finally:
        await store.close()


def _own_key(path: Path) -> None:
    """A key made some other way (64 hex digits, 0400), as an operator may provision one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def _launch(d: Davit) -> None:
    log = d.home / f"davitd-{len(d.logs)}.log"
    d.logs.append(log)
    output = open(log, "wb")  # noqa: SIM115 (the daemon writes it while it runs)
    d.proc = subprocess.Popen([str(BIN / "davitd"), "--home", str(d.home)], stdout=output, stderr=subprocess.STDOUT)


def _ready_or_exit(d: Davit, timeout: float = 60) -> int | None:
    """None once `d` is ready, else its exit code."""
    assert d.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "ready" in d.logs[-1].read_text():
            return None
        if d.proc.poll() is not None:
            return d.proc.returncode
        time.sleep(0.05)
    raise AssertionError(f"davitd neither ready nor exited in {timeout}s:\n{d.logs[-1].read_text()[-3000:]}")


def _stop_all(*homes: Davit) -> None:
    for d in homes:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait(90)


def _refused(d: Davit) -> str:
    """Start davitd in `d`; it must exit 2 (a typed refusal, no traceback): its output."""
    out = subprocess.run([str(BIN / "davitd"), "--home", str(d.home)], capture_output=True, text=True, timeout=90)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    return text


def test_a_daemon_without_the_key_or_with_a_wrong_one_is_refused_and_appends_nothing(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = _url(postgres_peer, log_database)
    keys = tmp_path / "keys"
    keys.mkdir()
    a = _home(tmp_path, "a", url, keys / "a.key")
    try:
        a.start()
    finally:
        _stop_all(a)
    before = _count(postgres_peer, log_database)
    daemons_before = _query(postgres_peer, log_database, "SELECT name FROM daemons ORDER BY name")

    keyless = _home(tmp_path, "keyless", url, keys / "none.key")
    text = _refused(keyless)
    assert f"its key {keys / 'none.key'} is missing" in text
    assert not (keys / "none.key").exists()  # no key of its own made for a keyed log

    _own_key(keys / "wrong.key")
    wrong = _home(tmp_path, "wrong", url, keys / "wrong.key")
    text = _refused(wrong)
    assert f"keyed with another key than {keys / 'wrong.key'}" in text
    wrong_key = read_log_key(keys / "wrong.key")
    assert wrong_key is not None and wrong_key.secret.hex() not in text  # (nor the key in a refusal)

    assert _count(postgres_peer, log_database) == before
    assert _query(postgres_peer, log_database, "SELECT name FROM daemons ORDER BY name") == daemons_before
    assert "keyed from position 1" in a.cli("log", "verify").stdout


def test_two_daemons_with_one_key_started_at_once_key_an_unkeyed_log_once(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = _url(postgres_peer, log_database)
    asyncio.run(_plain_log(url, PLAIN_EVENTS))
    key = tmp_path / "shared" / "log.key"  # missing: the first to start makes it
    a, b = _home(tmp_path, "a", url, key), _home(tmp_path, "b", url, key)
    try:
        _launch(a)
        _launch(b)
        assert _ready_or_exit(a) is None, a.logs[-1].read_text()
        assert _ready_or_exit(b) is None, b.logs[-1].read_text()
    finally:
        _stop_all(a, b)
    assert _markers(postgres_peer, log_database) == 1
    marker = _query(postgres_peer, log_database, "SELECT position FROM events WHERE type = 'LogKeyed'")[0][0]
    assert marker == PLAIN_EVENTS + 1
    made = read_log_key(key)
    assert made is not None and made.seal_done
    for d in (a, b):
        verify = d.cli("log", "verify")
        assert f"hash chain intact, keyed from position {PLAIN_EVENTS + 1} with {key}" in verify.stdout, verify.stdout


@pytest.mark.parametrize("keys", ["provisioned", "made at start"])
def test_two_daemons_with_different_keys_started_at_once_leave_one_keying(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
    keys: str,
) -> None:
    """Each with its own key (provisioned, or each making one at its start): one keys the log,
    the other is refused (it finds the log keyed with another key, or, having read the head
    after the keying, keyed without its key) and appends nothing."""
    url = _url(postgres_peer, log_database)
    asyncio.run(_plain_log(url, PLAIN_EVENTS))
    if keys == "provisioned":
        _own_key(tmp_path / "a.key")
        _own_key(tmp_path / "b.key")
    a, b = _home(tmp_path, "a", url, tmp_path / "a.key"), _home(tmp_path, "b", url, tmp_path / "b.key")
    try:
        _launch(a)
        _launch(b)
        outcomes = {"a": _ready_or_exit(a), "b": _ready_or_exit(b)}
    finally:
        _stop_all(a, b)
    winners = [n for n, code in outcomes.items() if code is None]
    assert len(winners) == 1, outcomes
    winner, loser = (a, b) if winners == ["a"] else (b, a)
    assert outcomes["b" if winners == ["a"] else "a"] == 2
    refusal = loser.logs[-1].read_text()
    if keys == "provisioned":
        assert f"keyed with another key than {loser.home.parent / (loser.home.name + '.key')}" in refusal, refusal
    else:
        assert "keyed with another key than" in refusal or "is missing: restore the key" in refusal, refusal
    assert _markers(postgres_peer, log_database) == 1
    names = [r[0] for r in _query(postgres_peer, log_database, "SELECT name FROM daemons")]
    assert names == [f"e-pgkey-{winner.home.name}"]
    verify = winner.cli("log", "verify")
    assert f"keyed from position {PLAIN_EVENTS + 1}" in verify.stdout, verify.stdout
    if (loser.home.parent / (loser.home.name + ".key")).exists():
        # the loser's key cannot pass the log off as its own
        assert loser.cli("log", "verify", check=False).returncode != 0


def test_a_crash_after_making_the_key_before_sealing_is_finished_by_the_next_start(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A kill -9 while keying an unkeyed log can leave the key made but no marker (PostgreSQL
    commits the marker and the head's seal in one transaction): the next start seals."""
    url = _url(postgres_peer, log_database)
    asyncio.run(_plain_log(url, PLAIN_EVENTS))
    key_path = tmp_path / "log.key"
    key = create_log_key(key_path, asyncio.run(_head(url)))
    d = _home(tmp_path, "a", url, key_path)
    try:
        d.start()
    finally:
        _stop_all(d)
    sealed = read_log_key(key_path)
    assert sealed is not None and sealed.seal_done and sealed.secret == key.secret
    assert _markers(postgres_peer, log_database) == 1
    assert f"keyed from position {PLAIN_EVENTS + 1}" in d.cli("log", "verify").stdout


def test_a_crash_after_sealing_before_marking_the_key_is_finished_by_the_next_start(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """... or the marker committed and the key file not marked sealed yet: the next start
    marks it and writes no second marker."""
    url = _url(postgres_peer, log_database)
    asyncio.run(_plain_log(url, PLAIN_EVENTS))
    key_path = tmp_path / "log.key"
    key = create_log_key(key_path, asyncio.run(_head(url)))

    async def seal_only() -> None:
        store = await PostgresEventStore(parse_url(url, "the test"), key=key).open()
        await store.close()

    asyncio.run(seal_only())
    unmarked = read_log_key(key_path)
    assert unmarked is not None and not unmarked.seal_done
    d = _home(tmp_path, "a", url, key_path)
    try:
        d.start()
    finally:
        _stop_all(d)
    marked = read_log_key(key_path)
    assert marked is not None and marked.seal_done
    assert _markers(postgres_peer, log_database) == 1
    assert f"keyed from position {PLAIN_EVENTS + 1}" in d.cli("log", "verify").stdout


async def _head(url: str) -> tuple[int, str]:
    store = await PostgresEventStore(parse_url(url, "the test")).open(create=False, readonly=True)
    try:
        position, hash_, _keyed = await store.log_head()
    finally:
        await store.close()
    return position, hash_


def test_kill9_at_random_moments_while_keying_then_the_next_start_completes(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = _url(postgres_peer, log_database)
    asyncio.run(_plain_log(url, PLAIN_EVENTS))
    key_path = tmp_path / "log.key"
    d = _home(tmp_path, "a", url, key_path)
    rng = random.Random(22)
    for _ in range(6):
        _launch(d)
        time.sleep(rng.uniform(0.05, 1.2))
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        assert _markers(postgres_peer, log_database) <= 1
    try:
        d.start()
    finally:
        _stop_all(d)
    assert _markers(postgres_peer, log_database) == 1
    key = read_log_key(key_path)
    assert key is not None and key.seal_done
    verify = d.cli("log", "verify")
    assert f"hash chain intact, keyed from position {PLAIN_EVENTS + 1} with {key_path}" in verify.stdout, verify.stdout


@pytest.mark.parametrize("kind", ["symlink", "world-readable", "empty", "short", "long", "directory"])
def test_a_hostile_key_file_is_refused_naming_it(
    postgres_peer: PostgresPeer,
    log_database: str,  # noqa: F811
    tmp_path: Path,
    kind: str,
) -> None:
    url = _url(postgres_peer, log_database)
    key_path = tmp_path / "log.key"
    if kind == "symlink":
        real = tmp_path / "real.key"
        _own_key(real)
        key_path.symlink_to(real)
    elif kind == "directory":
        key_path.mkdir()
    else:
        body = {"world-readable": secrets.token_hex(32), "empty": "", "short": "ab" * 31, "long": "ab" * 33}[kind]
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body + "\n")
        os.chmod(key_path, 0o644 if kind == "world-readable" else 0o400)
    d = _home(tmp_path, "a", url, key_path)
    text = _refused(d)
    assert str(key_path) in text, text
    expected = {
        "symlink": "is a symbolic link",
        "world-readable": "readable by others",
        "empty": "not a davit log key",
        "short": "not a davit log key",
        "long": "not a davit log key",
        "directory": "not a regular file",
    }[kind]
    assert expected in text, text
    assert _query(postgres_peer, log_database, "SELECT count(*) FROM pg_tables WHERE tablename = 'events'")[0][0] == 0
    verify = d.cli("log", "verify", check=False)
    assert verify.returncode != 0 and str(key_path) in verify.stdout + verify.stderr
    assert "Traceback" not in verify.stdout + verify.stderr


@pytest.fixture
def keyed_log(postgres_peer: PostgresPeer, log_database: str, tmp_path: Path) -> tuple[Davit, str]:  # noqa: F811
    """A keyed PostgreSQL log with plain events before the marker and davitd's after it."""
    url = _url(postgres_peer, log_database)
    asyncio.run(_plain_log(url, PLAIN_EVENTS))
    d = _home(tmp_path, "a", url, tmp_path / "log.key")
    try:
        d.start()
    finally:
        _stop_all(d)
    assert "hash chain intact" in d.cli("log", "verify").stdout
    return d, log_database


def _broken_at(d: Davit) -> tuple[str, int | None]:
    verify = d.cli("log", "verify", check=False)
    assert verify.returncode != 0, verify.stdout
    assert "Traceback" not in verify.stdout + verify.stderr
    as_json = d.cli("log", "verify", "--json", check=False)
    return verify.stdout, json.loads(as_json.stdout)["first_bad_position"]


@pytest.mark.parametrize("where", ["plain", "keyed"])
def test_a_row_edited_in_postgresql_is_named_by_its_position(
    keyed_log: tuple[Davit, str], postgres_peer: PostgresPeer, where: str
) -> None:
    d, database = keyed_log
    position = 3 if where == "plain" else PLAIN_EVENTS + 2
    _query(postgres_peer, database, f"UPDATE events SET data = '{{\"forged\": 1}}' WHERE position = {position}")
    out, bad = _broken_at(d)
    assert bad == position and f"log broken at position {position}" in out, out


def test_an_edit_rehashed_with_the_public_hash_is_still_found(keyed_log: tuple[Davit, str], postgres_peer: PostgresPeer) -> None:
    """An attacker who can write the tables but lacks the key recomputes the unkeyed hashes
    from the edited row on: the keyed part cannot be forged, the break is named."""
    from davit.eventstore.chain import event_hash

    d, database = keyed_log
    position = PLAIN_EVENTS + 2
    rows = _query(
        postgres_peer,
        database,
        f"SELECT position, event_id, stream, version, type, schema, data, recorded_at, prev_hash FROM events "
        f"WHERE position >= {position} ORDER BY position",
    )
    prev = str(rows[0][8])
    with psycopg.connect(
        host=postgres_peer.host,
        port=postgres_peer.port,
        user=postgres_peer.user,
        password=postgres_peer.password,
        dbname=database,
    ) as conn:
        for i, (pos, eid, stream, version, type_, schema, data, at, _prev) in enumerate(rows):
            data = '{"forged": 1}' if i == 0 else data
            digest = event_hash(prev, pos, eid, stream, version, type_, schema, data, at, None)
            conn.execute("UPDATE events SET data = %s, prev_hash = %s, hash = %s WHERE position = %s", (data, prev, digest, pos))
            prev = digest
        conn.execute("UPDATE chain_head SET hash = %s WHERE id = 1", (prev,))
    out, bad = _broken_at(d)
    assert bad == position, out


@pytest.mark.parametrize("head", ["left", "moved back"])
def test_deleting_the_newest_rows_is_found(keyed_log: tuple[Davit, str], postgres_peer: PostgresPeer, head: str) -> None:
    d, database = keyed_log
    last = int(_query(postgres_peer, database, "SELECT max(position) FROM events")[0][0])
    keep = last - 2
    _query(postgres_peer, database, f"DELETE FROM events WHERE position > {keep}")
    if head == "moved back":  # the attacker also moves the head to the last row kept
        _query(
            postgres_peer,
            database,
            f"UPDATE chain_head SET position = {keep}, hash = (SELECT hash FROM events WHERE position = {keep}) WHERE id = 1",
        )
    out, bad = _broken_at(d)
    assert bad == keep + 1, out
    assert f"at position {keep + 1}" in out


def test_the_key_appears_in_no_row_output_or_argv(keyed_log: tuple[Davit, str], postgres_peer: PostgresPeer) -> None:
    d, database = keyed_log
    key = read_log_key(d.home.parent / "log.key")
    assert key is not None
    secret = key.secret.hex()
    d.start()
    try:
        argv = (Path("/proc") / str(d.proc.pid) / "cmdline").read_bytes().decode(errors="replace")  # type: ignore[union-attr]
        environ = (Path("/proc") / str(d.proc.pid) / "environ").read_bytes().decode(errors="replace")  # type: ignore[union-attr]
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        activity = _query(postgres_peer, database, "SELECT application_name, query FROM pg_stat_activity")
    finally:
        _stop_all(d)
    texts = [argv, environ, ps, repr(activity)]
    for table in ("events", "chain_head", "schema_version", "daemons"):
        texts.append(repr(_query(postgres_peer, database, f"SELECT * FROM {table}")))
    texts += [log.read_text() for log in d.logs]
    texts += [d.cli("log", "verify").stdout, d.cli("log", "verify", "--json").stdout, repr(key)]
    for text in texts:
        assert secret not in text and secret.upper() not in text
