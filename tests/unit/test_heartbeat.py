"""davitd's heartbeat file and lock as `davit status` reads them (davit/daemon/heartbeat.py): a
beat written is read back whole; a planted or damaged heartbeat is refused, never followed; the
lock is seen held only while a process holds it, and looking never takes it."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from davit.daemon.cli.safetext import for_terminal
from davit.daemon.heartbeat import (
    HEARTBEAT_NAME,
    MAX_HEARTBEAT_BYTES,
    HeartbeatUnreadable,
    HeartbeatWriter,
    daemon_facts,
    lock_held,
    read_heartbeat,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_a_beat_written_is_read_back_with_its_age(tmp_path: Path) -> None:
    writer = HeartbeatWriter(tmp_path, 4242, "1.2.3", "2026-03-10T11:00:00+00:00", interval=5)
    writer.write(["r1"], "event log cannot be written: disk full")
    beat = read_heartbeat(tmp_path, datetime.now(UTC))
    assert (beat.pid, beat.version, beat.interval_seconds) == (4242, "1.2.3", 5.0)
    assert beat.log_problem == "event log cannot be written: disk full"
    assert 0 <= beat.age_seconds < 5
    assert oct((tmp_path / HEARTBEAT_NAME).stat().st_mode & 0o777) == "0o600"


def test_a_beat_from_another_boot_is_aged_by_the_wall_clock(tmp_path: Path) -> None:
    writer = HeartbeatWriter(tmp_path, 1, "1", "x")
    writer.write([], None)
    path = tmp_path / HEARTBEAT_NAME
    data = json.loads(path.read_text()) | {"boot_id": "another-boot", "beat_at": (NOW - timedelta(minutes=5)).isoformat()}
    path.write_text(json.dumps(data))
    assert read_heartbeat(tmp_path, NOW).age_seconds == 300


def test_a_planted_temporary_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    state = tmp_path / "state"
    state.mkdir()
    (state / ".davitd.heartbeat.tmp").symlink_to(victim)
    HeartbeatWriter(state, 1, "1", "x").write([], None)
    assert victim.read_text() == "keep me"
    assert read_heartbeat(state, datetime.now(UTC)).pid == 1


def test_a_heartbeat_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    HeartbeatWriter(elsewhere, 1, "1", "x").write([], None)
    state = tmp_path / "state"
    state.mkdir()
    (state / HEARTBEAT_NAME).symlink_to(elsewhere / HEARTBEAT_NAME)
    with pytest.raises(HeartbeatUnreadable, match="Too many levels of symbolic links"):
        read_heartbeat(state, NOW)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "Expecting value"),
        (b"{not json", "Expecting property name"),
        (b'{"format": 2}', "not a davitd heartbeat"),
        (b'{"format": 1, "pid": "42"}', "field 'pid' is missing or not a int"),
        (b"x" * (MAX_HEARTBEAT_BYTES + 1), "larger than"),
    ],
    ids=["empty", "not-json", "another-format", "wrong-type", "too-large"],
)
def test_a_damaged_heartbeat_is_unreadable_with_the_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / HEARTBEAT_NAME).write_bytes(content)
    with pytest.raises(HeartbeatUnreadable, match=reason):
        read_heartbeat(tmp_path, NOW)


def test_a_fifo_in_place_of_the_heartbeat_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / HEARTBEAT_NAME)
    with pytest.raises(HeartbeatUnreadable, match="a FIFO, not a regular file"):
        read_heartbeat(tmp_path, NOW)


def test_no_heartbeat_means_davitd_never_beat_here(tmp_path: Path) -> None:
    facts = daemon_facts(tmp_path, tmp_path / "davitd.lock", NOW)
    assert not facts.lock_held and facts.heartbeat is None
    assert facts.heartbeat_problem is not None and "missing" in facts.heartbeat_problem


def test_the_lock_is_held_only_while_a_process_holds_it_and_looking_never_takes_it(tmp_path: Path) -> None:
    lock = tmp_path / "davitd.lock"
    assert not lock_held(lock)  # no lock file yet
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert not lock_held(lock)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_held(lock)
        # another open file description (a second davitd) still cannot take it: looking took nothing
        other = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert not lock_held(lock)
    finally:
        os.close(fd)


def test_a_lock_table_line_for_another_file_is_not_davitds(tmp_path: Path) -> None:
    lock = tmp_path / "davitd.lock"
    lock.touch()
    table = tmp_path / "locks"
    table.write_text(f"1: FLOCK  ADVISORY  WRITE 77 00:00:{lock.stat().st_ino + 1} 0 EOF\n2: POSIX ADVISORY WRITE 1 x 0 EOF\n")
    assert not lock_held(lock, table)
    table.write_text(f"1: FLOCK  ADVISORY  WRITE 77 ff:99:{lock.stat().st_ino} 0 EOF\n")
    assert lock_held(lock, table)  # same inode, device written otherwise (see lock_held)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain words, ünïcode", "plain words, ünïcode"),
        ("a\x1b[2Jcleared", "a\\x1b[2Jcleared"),
        ("tab\there\nnewline", "tab\\x09here\\x0anewline"),
        ("\x9b31m C1", "\\x9b31m C1"),
        ("bidi \u202eevil", "bidi \\u202eevil"),
    ],
    ids=["printable", "escape-sequence", "c0", "c1", "bidi-override"],
)
def test_text_for_the_terminal_escapes_control_and_format_characters(text: str, shown: str) -> None:
    assert for_terminal(text) == shown
