"""The keyed hash chain (issue 15, finding 7) against the real SQLite store and real key files.

The forger here can write `davit.db` and knows every public algorithm (`eventstore.chain`
without a key), but cannot read the log key, which lives outside the state directory.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from davit.daemon.config import DEFAULT_CONFIG, Settings, load_settings
from davit.daemon.logkeys import daemon_log_key, finish_log_key
from davit.domain.events import NewEvent
from davit.eventstore.chain import MARKER_TYPE, event_hash
from davit.eventstore.logkey import LogKey, LogKeyError, create_log_key, read_log_key
from davit.eventstore.schema import GENESIS_HASH
from davit.eventstore.sqlite import ChainReport, EventLogTooNew, SqliteEventStore, log_head


def new(**data: object) -> NewEvent:
    return NewEvent(uuid.uuid4().hex, "Thing", dict(data))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "davit.db"


@pytest.fixture
def key(tmp_path: Path) -> LogKey:
    return create_log_key(tmp_path / "etc" / "log.key", (0, GENESIS_HASH))


def fill(db: Path, n: int, key: LogKey | None = None) -> None:
    """n events appended by a store that has `key` (sealing the log first, as davitd does)."""

    async def go() -> None:
        async with SqliteEventStore(db, key=key) as store:
            for i in range(n):
                await store.append(f"s{i % 3}", await store.stream_version(f"s{i % 3}"), [new(n=i)])

    run(go())


def verify(db: Path, key: LogKey | None) -> ChainReport:
    async def go() -> ChainReport:
        store = await SqliteEventStore(db).open(create=False, readonly=True)
        try:
            return await store.verify_chain(key)
        finally:
            await store.close()

    result: ChainReport = run(go())
    return result


def recompute_publicly(db: Path, edit: str | None = None, after: int = 0) -> None:
    """What a forger with write access does: apply `edit`, then recompute every hash, prev_hash
    and the chain head from position `after` on with the public (unkeyed) algorithm."""
    with sqlite3.connect(db) as conn:
        if edit:
            conn.execute(edit)
        rows = conn.execute(
            "SELECT position, event_id, stream, version, type, schema, data, recorded_at FROM events ORDER BY position"
        ).fetchall()
        prev = GENESIS_HASH
        for position, event_id, stream, version, type_, schema, data, recorded_at in rows:
            if position > after:
                digest = event_hash(prev, position, event_id, stream, version, type_, schema, data, recorded_at)
                conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?", (prev, digest, position))
            prev = conn.execute("SELECT hash FROM events WHERE position = ?", (position,)).fetchone()[0]
        conn.execute("UPDATE chain_head SET position = ?, hash = ? WHERE id = 1", (rows[-1][0] if rows else 0, prev))


def test_a_forger_who_edits_an_event_and_recomputes_the_public_chain_is_detected(db: Path, key: LogKey) -> None:
    fill(db, 12, key)
    assert verify(db, key).ok
    # The forger keeps the events before the edit as they are and recomputes the rest.
    recompute_publicly(db, """UPDATE events SET data = '{"n":999}' WHERE position = 7""", after=6)
    report = verify(db, key)
    assert not report.ok and report.first_bad_position == 7 and report.reason == "content does not match its hash"
    recompute_publicly(db, after=0)  # or recomputes all of it: the marker gives it away
    report = verify(db, key)
    assert not report.ok and report.first_bad_position == 1


def test_a_forger_who_also_rewrites_the_marker_as_a_plain_event_is_detected(db: Path, key: LogKey) -> None:
    fill(db, 5, key)
    recompute_publicly(db, "UPDATE events SET type = 'Thing' WHERE type = 'LogKeyed'")
    report = verify(db, key)
    assert not report.ok and report.reason is not None and "no key marker" in report.reason


def test_a_fresh_keyed_log_starts_with_the_marker_and_verifies(db: Path, key: LogKey) -> None:
    fill(db, 4, key)
    report = verify(db, key)
    assert report.ok and report.checked == 5 and report.keyed_from == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT type FROM events WHERE position = 1").fetchone() == (MARKER_TYPE,)


def test_a_legacy_plain_log_is_sealed_by_a_keyed_marker_and_still_verifies(db: Path, tmp_path: Path) -> None:
    fill(db, 6)  # a log made before davit had keys
    assert verify(db, None).ok and verify(db, None).keyed_from is None
    position, head, keyed = log_head(db)
    assert (position, keyed) == (6, False)
    key = create_log_key(tmp_path / "etc" / "log.key", (position, head))
    fill(db, 3, key)  # davitd's next start seals the plain prefix, then appends keyed
    report = verify(db, key)
    assert report.ok and report.checked == 10 and report.keyed_from == 7


def test_rewriting_the_plain_prefix_of_a_sealed_log_is_detected(db: Path, tmp_path: Path) -> None:
    fill(db, 6)
    position, head, _ = log_head(db)
    key = create_log_key(tmp_path / "etc" / "log.key", (position, head))
    fill(db, 3, key)
    with sqlite3.connect(db) as conn:  # edit event 2, recompute the plain prefix only (1..6)
        conn.execute("""UPDATE events SET data = '{"n":999}' WHERE position = 2""")
        prev = GENESIS_HASH
        for row in conn.execute(
            "SELECT position, event_id, stream, version, type, schema, data, recorded_at "
            "FROM events WHERE position <= 6 ORDER BY position"
        ).fetchall():
            digest = event_hash(prev, *row)
            conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?", (prev, digest, row[0]))
            prev = digest
        conn.execute("UPDATE events SET prev_hash = ? WHERE position = 7", (prev,))  # relink the marker
    report = verify(db, key)
    assert not report.ok and report.first_bad_position == 7


def test_truncating_a_keyed_log_back_to_its_plain_prefix_is_detected(db: Path, tmp_path: Path) -> None:
    fill(db, 6)
    position, head, _ = log_head(db)
    key = create_log_key(tmp_path / "etc" / "log.key", (position, head))
    fill(db, 3, key)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position > 6")
        conn.execute("UPDATE chain_head SET position = 6, hash = ?, mac = NULL WHERE id = 1", (head,))
    report = verify(db, key)
    assert not report.ok and report.reason is not None and "no key marker" in report.reason


def test_davitd_will_not_seal_a_plain_log_that_is_not_the_one_its_key_was_made_for(db: Path, tmp_path: Path) -> None:
    fill(db, 6)
    position, head, _ = log_head(db)
    key = create_log_key(tmp_path / "etc" / "log.key", (position, head))
    fill(db, 3, key)
    # The forger drops the keyed part, edits the plain part and recomputes it, then waits for
    # davitd's next start to seal the forgery.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position > 6")
        conn.execute("UPDATE chain_head SET mac = NULL WHERE id = 1")
    recompute_publicly(db, """UPDATE events SET data = '{"n":999}' WHERE position = 3""")
    with pytest.raises(LogKeyError, match=r"is not the log the key .* was made for"):
        fill(db, 1, key)


def test_removing_the_newest_keyed_events_and_rewinding_the_head_is_detected(db: Path, key: LogKey) -> None:
    fill(db, 10, key)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position > 8")
        (last,) = conn.execute("SELECT hash FROM events WHERE position = 8").fetchone()
        conn.execute("UPDATE chain_head SET position = 8, hash = ? WHERE id = 1", (last,))
    report = verify(db, key)
    assert not report.ok and report.reason is not None and "not sealed by the key" in report.reason


def test_an_event_appended_unkeyed_after_the_marker_is_detected(db: Path, key: LogKey) -> None:
    fill(db, 4, key)
    with sqlite3.connect(db) as conn:  # make writers think the log is plain
        conn.execute("UPDATE chain_head SET mac = NULL WHERE id = 1")
    fill(db, 1)  # a writer without the key
    report = verify(db, key)
    assert not report.ok and report.first_bad_position == 6


def test_a_writer_without_the_key_cannot_append_to_a_keyed_log(db: Path, key: LogKey) -> None:
    fill(db, 2, key)
    with pytest.raises(LogKeyError, match="keyed"):
        fill(db, 1)


def test_verifying_a_keyed_log_without_its_key_names_the_key_path(db: Path, key: LogKey) -> None:
    fill(db, 2, key)

    async def go() -> None:
        store = await SqliteEventStore(db).open(create=False, readonly=True)
        try:
            await store.verify_chain(None, key.path)
        finally:
            await store.close()

    with pytest.raises(LogKeyError, match=str(key.path)):
        run(go())


def test_another_key_is_named_as_such(db: Path, key: LogKey, tmp_path: Path) -> None:
    fill(db, 3, key)
    other = create_log_key(tmp_path / "other.key", (0, GENESIS_HASH))
    report = verify(db, other)
    assert not report.ok and report.first_bad_position == 1 and "another key" in (report.reason or "")


def test_davitd_makes_its_key_0400_beside_the_config_and_refuses_a_keyed_log_whose_key_is_gone(tmp_path: Path) -> None:
    """Runs as root in CI: the mode check is on the file's bits, not on access."""
    settings = load_settings(tmp_path / "home", create_home=True)
    key = daemon_log_key(settings)
    assert key.path == tmp_path / "home" / "log.key"
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o400
    assert read_log_key(key.path) == key and "secret" not in repr(key) and key.secret.hex() not in repr(key)
    fill(settings.db_path, 2, key)
    key.path.unlink()
    with pytest.raises(LogKeyError, match=r"keyed but its key .* is missing"):
        daemon_log_key(settings)
    assert not key.path.exists()


def test_a_cli_writer_appends_nothing_to_a_log_its_key_has_not_sealed_yet(db: Path, tmp_path: Path) -> None:
    """Between `davitd --make-log-key` and davitd's start, a plain request would move the head
    away from the one the key was made to seal."""
    fill(db, 3)
    position, head, _ = log_head(db)
    key = create_log_key(tmp_path / "etc" / "log.key", (position, head))

    async def request(with_key: LogKey | None) -> None:
        store = await SqliteEventStore(db, key=with_key, key_path=key.path).open(create=False)
        try:
            await store.append("requests", await store.stream_version("requests"), [new()])
        finally:
            await store.close()

    with pytest.raises(LogKeyError, match=r"not sealed with the key .* yet; start davitd once first"):
        run(request(key))
    assert log_head(db)[:2] == (position, head)
    fill(db, 0, key)  # davitd's start seals it
    run(request(key))
    with pytest.raises(LogKeyError, match=f"keyed and there is no log key at {key.path}"):
        run(request(None))
    assert verify(db, key).ok


def test_a_fifo_at_the_key_path_is_refused_at_once_instead_of_hanging_the_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "log.key"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(LogKeyError, match="is not a regular file"):
        read_log_key(fifo)
    assert time.monotonic() - started < 5


def test_a_symlink_at_the_key_path_is_refused_naming_it(key: LogKey, tmp_path: Path) -> None:
    """Followed, it would have davit read (and rename over when marking) a file of whoever
    planted the link's choosing; refused even when it points at a good key."""
    link = tmp_path / "linked.key"
    link.symlink_to(key.path)
    with pytest.raises(LogKeyError, match=f"log key {link} is a symbolic link"):
        read_log_key(link)
    dangling = tmp_path / "dangling.key"
    dangling.symlink_to(tmp_path / "nowhere.key")
    with pytest.raises(LogKeyError, match=f"log key {dangling} is a symbolic link"):
        read_log_key(dangling)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620])
def test_a_key_others_can_read_or_its_group_can_write_is_refused_naming_its_mode(key: LogKey, mode: int) -> None:
    os.chmod(key.path, mode)
    with pytest.raises(LogKeyError, match=f"mode {mode:04o}"):
        read_log_key(key.path)


def test_a_key_its_group_may_read_is_accepted(key: LogKey) -> None:
    os.chmod(key.path, 0o440)  # operators of a group that runs `davit log verify`, or an ACL
    found = read_log_key(key.path)
    assert found is not None and found.secret == key.secret


def test_a_key_file_of_deeply_nested_brackets_is_not_a_key_and_no_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    path.write_text("x = " + "[" * 1900 + "]" * 1900)
    os.chmod(path, 0o400)
    with pytest.raises(LogKeyError, match="is not a davit log key"):
        read_log_key(path)


# --- the key records its sealing: a rollback to the sealing moment is not sealed again ------


def davitd_start(settings: Settings, n: int = 0) -> LogKey:
    """What davitd's start does with the log key (davit/daemon/davitd.py `_serve`): find or make it,
    open the log (which seals it), mark the key sealed; then `n` appends."""

    async def go() -> LogKey:
        key = daemon_log_key(settings)
        async with SqliteEventStore(settings.db_path, key=key) as store:
            finish_log_key(key)
            for i in range(n):
                await store.append("s", await store.stream_version("s"), [new(n=i)])
        return key

    result: LogKey = run(go())
    return result


def roll_back_to(db: Path, pair: tuple[int, str]) -> None:
    """The forger's move: every event from the marker on deleted, the head set back to the
    pair the key file names, its seal removed."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE position > ?", (pair[0],))
        conn.execute("UPDATE chain_head SET position = ?, hash = ?, mac = NULL WHERE id = 1", pair)


def test_a_log_rolled_back_to_the_moment_of_its_sealing_is_refused_not_sealed_again(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home", create_home=True)
    fill(settings.db_path, 4)  # a log from before keys
    pair = log_head(settings.db_path)[:2]
    key = davitd_start(settings, 5)
    assert read_log_key(key.path) == LogKey(key.path, key.secret, pair, seal_done=True)
    assert "sealed = true" in key.path.read_text()
    roll_back_to(settings.db_path, pair)
    report = verify(settings.db_path, read_log_key(key.path))
    assert not report.ok and report.reason is not None and "keyed part is gone: rolled back or truncated" in report.reason
    with pytest.raises(LogKeyError, match=r"was sealed under the key .* but its keyed part is gone"):
        davitd_start(settings)
    assert log_head(settings.db_path) == (*pair, False)  # nothing sealed, nothing appended
    assert not verify(settings.db_path, read_log_key(key.path)).ok


def test_a_log_replaced_by_an_empty_one_under_a_sealed_key_is_refused(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home", create_home=True)
    davitd_start(settings, 3)  # the key was made for an empty log
    settings.db_path.unlink()
    with pytest.raises(LogKeyError, match="keyed part is gone"):
        davitd_start(settings)
    assert log_head(settings.db_path) == (0, GENESIS_HASH, False)


def test_a_crash_between_making_the_key_and_sealing_ends_sealed_at_the_next_start(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home", create_home=True)
    fill(settings.db_path, 3)
    made = daemon_log_key(settings)  # ... and davitd died here, before opening the log
    assert made.needs_sealing_mark and "sealed = false" in made.path.read_text()
    key = davitd_start(settings, 2)
    assert read_log_key(key.path) == LogKey(key.path, made.secret, made.sealed, seal_done=True)
    report = verify(settings.db_path, key)
    assert report.ok and report.keyed_from == 4


def test_a_crash_between_sealing_and_marking_the_key_is_marked_at_the_next_start(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home", create_home=True)
    made = daemon_log_key(settings)
    fill(settings.db_path, 2, made)  # sealed, and davitd died before marking the key
    assert read_log_key(made.path) == made
    davitd_start(settings)
    marked = read_log_key(made.path)
    assert marked is not None and marked.seal_done and verify(settings.db_path, marked).ok


def test_davitd_that_cannot_rewrite_an_unmarked_key_names_make_log_key_and_seals_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system layout, with /etc/davit a read-only bind mount as systemd's
    ProtectSystem=strict makes it for davitd. Needs root to mount (CI runs as root); skips
    elsewhere."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "davit.toml").write_text(DEFAULT_CONFIG.read_text())
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(etc))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "lib"))
    settings = load_settings()
    fill(settings.db_path, 2)
    made = daemon_log_key(settings)  # as root, before the sandbox: but the sealing never ran
    for command in (["mount", "--bind", str(etc), str(etc)], ["mount", "-o", "remount,bind,ro", str(etc)]):
        if subprocess.run(command, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(etc)], capture_output=True)
            pytest.skip("needs root to bind-mount")
    try:
        with pytest.raises(LogKeyError, match=r"cannot rewrite it here: run `davitd --make-log-key` as root"):
            davitd_start(settings)
    finally:
        subprocess.run(["umount", str(etc)], check=True)
    assert log_head(settings.db_path)[2] is False  # not sealed: a seal the key cannot record
    davitd_start(settings)
    marked = read_log_key(made.path)
    assert marked is not None and marked.seal_done


def test_a_bare_hex_key_pins_nothing_and_is_never_rewritten(tmp_path: Path) -> None:
    """A key provisioned as 64 hex digits (e.g. a systemd credential) has no record: a log
    rolled back to plain events is sealed again, as before; the file stays as it was."""
    settings = load_settings(tmp_path / "home", create_home=True)
    settings.log_key_path.write_text("ab" * 32 + "\n")
    os.chmod(settings.log_key_path, 0o400)
    fill(settings.db_path, 2)
    pair = log_head(settings.db_path)[:2]
    davitd_start(settings, 1)
    roll_back_to(settings.db_path, pair)
    davitd_start(settings)
    assert settings.log_key_path.read_text() == "ab" * 32 + "\n"
    assert verify(settings.db_path, read_log_key(settings.log_key_path)).ok


def test_no_key_is_made_for_a_log_that_a_newer_davit_wrote(tmp_path: Path) -> None:
    """`log_head` checks the log as every opening does (`_probe`): a log this davit cannot open
    is refused before davitd makes a key for it (it used to leave a key behind, then fail)."""
    settings = load_settings(tmp_path / "home", create_home=True)
    fill(settings.db_path, 2)
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 'later')")
    with pytest.raises(EventLogTooNew, match="upgrade davit"):
        daemon_log_key(settings)
    assert not settings.log_key_path.exists()
