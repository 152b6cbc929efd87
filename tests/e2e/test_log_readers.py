"""Readers of the event log as an operator runs them (issue 15, findings 6 and 7): read-only
on a read-only mount of a live state directory, nothing created by a typo, one line for a
damaged log, and a keyed chain that a forger with the public algorithm cannot recompute.

Mounting needs root; CI runs as root (without it these tests fail there, and skip elsewhere).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from davit.eventstore.chain import event_hash
from tests.e2e.conftest import BIN, Davit, write_job

pytestmark = pytest.mark.e2e


def backup_job(name: str, source: Path) -> str:
    return f'name = "{name}"\nkind = "files.backup"\n[source]\npath = "{source}"\n'


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n" * 1000)
    return root


def davit_at(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "davit"), "--home", str(home), *args], capture_output=True, text=True, timeout=120)


def each_at_once(check: Callable[[Callable[[Path], None]], None], damages: tuple[Callable[[Path], None], ...]) -> None:
    """`check` for every damage, two at a time (each on a copy of its own: the commands of one
    run in order), so that the CLI's start-ups use both cores; the first failure is raised."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(check, damages))


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[Path]:
    """A mount point; `bind_read_only(home, it)` makes it a read-only view of `home`."""
    view = tmp_path / "ro-view"
    view.mkdir()
    yield view
    subprocess.run(["umount", "-l", str(view)], check=False, capture_output=True)


def bind_read_only(home: Path, view: Path) -> None:
    for command in (["mount", "--bind", str(home), str(view)], ["mount", "-o", "remount,bind,ro", str(view)]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot make a read-only bind mount: {result.stderr.strip()}")
            pytest.skip(f"needs root to bind-mount: {result.stderr.strip()}")


# --- typos create nothing ------------------------------------------------------------------


def test_a_mistyped_home_is_exit_2_naming_it_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "davit-hmoe"
    for args in (("log", "verify"), ("runs",), ("run", "docs")):
        result = davit_at(typo, *args)
        assert result.returncode == 2, result
        assert lines(result) == [f"davit: {typo}: --home: no such directory"]
    assert not typo.exists()


def test_a_mistyped_config_is_exit_2_naming_it_and_creates_nothing(davit: Davit) -> None:
    typo = davit.home / "davit.tmol"
    result = davit_at(davit.home, "--config", str(typo), "log", "verify")
    assert result.returncode == 2 and lines(result) == [f"davit: {typo}: --config: no such file"]
    assert list(davit.home.iterdir()) == []


def test_commands_that_send_requests_never_create_a_log(davit: Davit) -> None:
    for args in (("run", "docs"), ("resume", "abc"), ("cancel", "abc"), ("runs",), ("log", "verify")):
        result = davit.cli(*args, check=False)
        assert result.returncode == 2, result
        assert lines(result) == [
            f"davit: no event log at {davit.home / 'state' / 'davit.db'} (has davitd run with this configuration?)"
        ]
    assert list(davit.home.iterdir()) == []


# --- readers on a read-only view while davitd writes ----------------------------------------


def test_read_commands_work_on_a_read_only_bind_mount_of_a_live_state_directory(
    davit: Davit, source: Path, read_only_view: Path
) -> None:
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    first = davit.wait_run_state("docs", {"succeeded"})
    bind_read_only(davit.home, read_only_view)
    assert not os.access(read_only_view / "state", os.W_OK)
    # davitd keeps writing (runs asked through the writable home) while readers read the view.
    for _ in range(3):
        davit.cli("run", "docs")
    deadline = time.monotonic() + 60
    reads = 0
    while time.monotonic() < deadline:
        for args in (("runs",), ("jobs",), ("history",), ("show", first["run_id"]), ("log", "verify")):
            result = davit_at(read_only_view, *args)
            assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result)
            reads += 1
        if all(r["state"] == "succeeded" for r in davit.runs("docs")) and len(davit.runs("docs")) == 4:
            break
    seen = [r for r in (davit_at(read_only_view, "runs", "--json").stdout.splitlines()) if r.strip()]
    assert len(seen) == 4 and reads >= 5
    assert "hash chain intact" in davit_at(read_only_view, "log", "verify").stdout
    # And a stopped daemon's log (no -wal, no -shm left) still reads from the view.
    davit.stop()
    assert not (davit.home / "state" / "davit.db-wal").exists()
    assert davit_at(read_only_view, "runs").returncode == 0
    assert davit_at(read_only_view, "log", "verify").returncode == 0
    # Asking davitd for something means appending: refused in one line, not a traceback.
    refused = davit_at(read_only_view, "run", "docs")
    assert refused.returncode == 2
    assert lines(refused) == [
        f"davit: the event log {read_only_view / 'state' / 'davit.db'} is read-only here; this command appends to it"
    ]


# --- a damaged log -----------------------------------------------------------------------------


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size))


def _truncated(db: Path) -> None:
    os.truncate(db, 9000)


def _events_table_dropped(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE events")


def _events_page_overwritten(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    with open(db, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)


def test_every_command_reports_a_damaged_log_in_one_line(davit: Davit, source: Path, tmp_path: Path) -> None:
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    run_id = davit.wait_run_state("docs", {"succeeded"})["run_id"]
    davit.stop()

    def check(damage: Callable[[Path], None]) -> None:
        home = tmp_path / damage.__name__.strip("_")
        shutil.copytree(davit.home, home)
        db = home / "state" / "davit.db"
        damage(db)
        for args in (("runs",), ("show", run_id), ("history",), ("jobs",), ("run", "docs"), ("cancel", run_id)):
            result = davit_at(home, *args)
            assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, (damage, args, result)
            (line,) = lines(result)
            assert line.startswith(f"davit: event log {db} is damaged: "), (damage, args, line)
        verify = davit_at(home, "log", "verify")
        out = lines(verify)
        assert verify.returncode == 1 and "Traceback" not in verify.stdout + verify.stderr, (damage, verify)
        assert out and ("damaged" in out[0] or "integrity_check" in out[0]), (damage, out)

    each_at_once(check, (_garbage, _truncated, _events_table_dropped, _events_page_overwritten))


def _head_row_deleted(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM chain_head")


def _data_not_json(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET data = '{' WHERE stream LIKE 'run-%'")


def _data_nested_too_deep(db: Path) -> None:
    """JSON nested deeper than Python's stack: json.loads raised RecursionError, not ValueError."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET data = ? WHERE stream LIKE 'run-%'", ('{"a":' + "[" * 100_000 + "]" * 100_000 + "}",))


def _marker_data_an_array(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET data = '[1]' WHERE type = 'LogKeyed'")


def _version_text(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET version = 'x' WHERE stream LIKE 'run-%' AND version = 3")


def test_rows_of_a_shape_davit_never_writes_are_one_line_for_every_command_and_davitd(
    davit: Davit, source: Path, tmp_path: Path
) -> None:
    """A forger (or a stray sqlite3 session) edits rows rather than pages: a head row gone,
    data that is not a JSON object, a version that is text. Each was a traceback somewhere
    (NoResultFound, JSONDecodeError, AttributeError, ValueError), and an emptied head was
    recreated at genesis by davitd."""
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    run_id = davit.wait_run_state("docs", {"succeeded"})["run_id"]
    davit.stop()

    def check(damage: Callable[[Path], None]) -> None:
        home = tmp_path / damage.__name__.strip("_")
        shutil.copytree(davit.home, home)
        db = home / "state" / "davit.db"
        damage(db)
        for args in (("runs",), ("show", run_id), ("history",), ("run", "docs")):
            result = davit_at(home, *args)
            assert "Traceback" not in result.stdout + result.stderr, (damage, args, result)
            if result.returncode != 0:  # a command that does not read the damaged row may work
                (line,) = lines(result)
                assert result.returncode == 1 and line.startswith("davit: "), (damage, args, line)
        verify = davit_at(home, "log", "verify")
        assert verify.returncode == 1 and "Traceback" not in verify.stdout + verify.stderr, (damage, verify)
        if damage not in (_head_row_deleted, _marker_data_an_array):
            return  # davitd reads these rows only when a run needs them
        started = subprocess.run([str(BIN / "davitd"), "--home", str(home)], capture_output=True, text=True, timeout=60)
        assert started.returncode == 1 and "Traceback" not in started.stdout + started.stderr, (damage, started)
        assert f"event log {db} is damaged" in started.stderr, (damage, started.stderr)

    each_at_once(check, (_head_row_deleted, _data_not_json, _data_nested_too_deep, _marker_data_an_array, _version_text))


def test_a_log_newer_than_this_davit_is_refused_by_readers_in_one_line(davit: Davit) -> None:
    davit.start()
    davit.stop()
    db = davit.home / "state" / "davit.db"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'from the future')")
    result = davit.cli("runs", check=False)
    assert result.returncode == 2
    assert lines(result) == [f"davit: {db} has log schema 99, newer than this davit (2); upgrade davit"]


# --- a keyed chain -----------------------------------------------------------------------------


def _forge(db: Path, position: int) -> None:
    """Edit an event's data and recompute every hash after it, prev_hash and the chain head
    with the public algorithm: what anyone who can write davit.db can do."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET data = replace(data, 'docs', 'evil') WHERE position = ?", (position,))
        rows = conn.execute(
            "SELECT position, event_id, stream, version, type, schema, data, recorded_at "
            "FROM events WHERE position >= ? ORDER BY position",
            (position,),
        ).fetchall()
        (prev,) = conn.execute("SELECT prev_hash FROM events WHERE position = ?", (position,)).fetchone()
        for row in rows:
            digest = event_hash(prev, *row)
            conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?", (prev, digest, row[0]))
            prev = digest
        conn.execute("UPDATE chain_head SET position = ?, hash = ? WHERE id = 1", (rows[-1][0], prev))


def test_a_chain_forged_with_the_public_algorithm_fails_log_verify(davit: Davit, source: Path) -> None:
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"succeeded"})
    davit.stop()
    assert davit.cli("log", "verify").returncode == 0
    edited = next(p for p, _, t, _ in davit.events() if t == "JobDefined")
    _forge(davit.home / "state" / "davit.db", edited)
    result = davit.cli("log", "verify", check=False)
    assert result.returncode == 1
    assert lines(result) == [f"log broken at position {edited}: content does not match its hash"]
    # The key davitd made at its first start: outside the state directory, its owner's alone.
    key = davit.home / "log.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400 and not key.is_relative_to(davit.home / "state")


def test_a_keyed_log_needs_its_key_to_verify_and_davitd_will_not_start_without_it(davit: Davit) -> None:
    davit.start()
    davit.stop()
    key, kept = davit.home / "log.key", davit.home / "log.key.kept"
    key.rename(kept)
    result = davit.cli("log", "verify", check=False)
    assert result.returncode == 2 and str(key) in result.stderr and len(lines(result)) == 1
    daemon = subprocess.run([str(BIN / "davitd"), "--home", str(davit.home)], capture_output=True, text=True, timeout=60)
    assert daemon.returncode == 2 and f"its key {key} is missing" in daemon.stderr
    assert not key.exists()
    kept.rename(key)
    assert "keyed from position 1" in davit.cli("log", "verify").stdout


def test_a_log_from_before_keys_is_sealed_at_the_next_start_and_verifies(davit: Davit, source: Path) -> None:
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"succeeded"})
    davit.stop()
    db = davit.home / "state" / "davit.db"
    with sqlite3.connect(db) as conn:  # make it the log an earlier davit left: schema 1, plain links
        rows = conn.execute(
            "SELECT position, event_id, stream, version, type, schema, data, recorded_at "
            "FROM events WHERE type != 'LogKeyed' ORDER BY position"
        ).fetchall()
        conn.execute("DELETE FROM events")
        prev, position = "0" * 64, 0
        for row in rows:
            position += 1
            digest = event_hash(prev, position, *row[1:])
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (position, *row[1:], prev, digest))
            prev = digest
        conn.execute("UPDATE chain_head SET position = ?, hash = ? WHERE id = 1", (position, prev))
        conn.execute("ALTER TABLE chain_head DROP COLUMN mac")
        conn.execute("DELETE FROM schema_version WHERE version = 2")
    (davit.home / "log.key").unlink()
    # Readers read it as it is (no migration), and say it is not keyed.
    assert "NOT keyed" in davit.cli("log", "verify").stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (1,)
    davit.start()
    davit.cli("run", "docs")
    davit.wait_for(lambda: len(davit.runs("docs")) == 2 and davit.runs("docs")[-1]["state"] == "succeeded", 60, "a second run")
    davit.stop()
    verified = davit.cli("log", "verify", "--json").stdout
    assert f'"keyed_from": {position + 1}' in verified and '"ok": true' in verified


def test_make_log_key_makes_the_system_key_once_seals_the_log_and_marks_the_key(tmp_path: Path) -> None:
    """What the unit's `ExecStartPre=+davitd --make-log-key` does in the system layout: the
    key, the log sealed under it (made and migrated if missing), the key marked sealed."""
    env = {**os.environ, "CONFIGURATION_DIRECTORY": str(tmp_path / "etc"), "STATE_DIRECTORY": str(tmp_path / "lib")}
    (tmp_path / "etc").mkdir()
    key = tmp_path / "etc" / "log.key"
    for _ in range(2):
        made = subprocess.run([str(BIN / "davitd"), "--make-log-key"], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0 and made.stdout.strip() == f"davitd: log key {key}"
        if _ == 0:
            first = key.read_bytes()
    assert key.read_bytes() == first and b"sealed = true" in first
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert [p.name for p in key.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left
    with sqlite3.connect(tmp_path / "lib" / "state" / "davit.db") as conn:
        assert conn.execute("SELECT position, type FROM events").fetchall() == [(1, "LogKeyed")]
    verified = subprocess.run([str(BIN / "davit"), "log", "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "keyed from position 1" in verified.stdout
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "davit.service").read_text()
    assert "ExecStartPre=+/usr/local/bin/davitd --make-log-key" in unit


def test_a_log_rolled_back_to_the_moment_of_its_sealing_fails_verify_and_davitd_refuses_to_start(
    davit: Davit, source: Path
) -> None:
    """The forger deletes every event from the `LogKeyed` marker on and sets the chain head
    back to the key file's sealed pair, unsealed (here a key made for an empty log: genesis)."""
    davit.start()
    write_job(davit, "docs.toml", backup_job("docs", source))
    davit.wait_run_state("docs", {"succeeded"})
    davit.stop()
    db, key = davit.home / "state" / "davit.db", davit.home / "log.key"
    assert "sealed = true" in key.read_text()
    with sqlite3.connect(db) as conn:
        marker, pair = conn.execute("SELECT position, prev_hash FROM events WHERE type = 'LogKeyed'").fetchone()
        conn.execute("DELETE FROM events WHERE position >= ?", (marker,))
        conn.execute("UPDATE chain_head SET position = ?, hash = ?, mac = NULL WHERE id = 1", (marker - 1, pair))
    gone = f"was sealed under the key {key} but its keyed part is gone: rolled back or truncated"
    result = davit.cli("log", "verify", check=False)
    assert result.returncode == 1 and len(lines(result)) == 1 and gone in result.stdout
    daemon = subprocess.run([str(BIN / "davitd"), "--home", str(davit.home)], capture_output=True, text=True, timeout=60)
    assert daemon.returncode != 0 and len(lines(daemon)) == 1 and gone in daemon.stderr
    with sqlite3.connect(db) as conn:  # not sealed again: the removal stays visible
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (marker - 1,)
    assert davit.cli("log", "verify", check=False).returncode == 1
