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

from davit.daemon.heartbeat import (
    HEARTBEAT_NAME,
    MAX_HEARTBEAT_BYTES,
    HeartbeatUnreadable,
    HeartbeatWriter,
    daemon_facts,
    lock_held,
    read_heartbeat,
)
from davit.domain.terminaltext import for_terminal

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


def lock_line(device: str, inode: int, kind: str = "FLOCK", mode: str = "WRITE") -> str:
    return f"1: {kind}  ADVISORY  {mode} 77 {device}:{inode} 0 EOF\n"


def stat_device(path: Path) -> str:
    st = path.stat()
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"


def mount_id(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        info = Path(f"/proc/self/fdinfo/{fd}").read_text()
    finally:
        os.close(fd)
    return next(line.split()[1] for line in info.splitlines() if line.startswith("mnt_id:"))


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    path = tmp_path / "davitd.lock"
    path.touch()
    return path


def test_a_lock_on_the_lock_files_device_and_inode_is_davitds(lock: Path, tmp_path: Path) -> None:
    table = tmp_path / "locks"
    table.write_text(lock_line(stat_device(lock), lock.stat().st_ino))
    assert lock_held(lock, table)


def test_a_lock_on_another_file_of_the_same_inode_number_elsewhere_is_not_davitds(lock: Path, tmp_path: Path) -> None:
    """A defect: an inode number alone was taken for the lock file's when no line matched both,
    so a flock on a file of another file system with that number made a stopped davitd look
    alive."""
    table = tmp_path / "locks"
    table.write_text(lock_line("ff:99", lock.stat().st_ino) + lock_line(stat_device(lock), lock.stat().st_ino + 1))
    assert not lock_held(lock, table)


@pytest.mark.parametrize(("kind", "mode"), [("POSIX", "WRITE"), ("FLOCK", "READ")], ids=["a-posix-lock", "a-shared-flock"])
def test_a_lock_of_another_kind_on_the_lock_file_is_not_davitds(lock: Path, tmp_path: Path, kind: str, mode: str) -> None:
    table = tmp_path / "locks"
    table.write_text(lock_line(stat_device(lock), lock.stat().st_ino, kind, mode))
    assert not lock_held(lock, table)


def test_a_lock_on_the_device_of_the_lock_files_mount_is_davitds(lock: Path, tmp_path: Path) -> None:
    """The lock table writes the file system's device, which `stat` may not (a btrfs subvolume,
    an overlay): the mount's device from mountinfo counts too, with the inode."""
    table, mounts = tmp_path / "locks", tmp_path / "mountinfo"
    mounts.write_text(f"{mount_id(lock)} 1 0:99 / / rw - btrfs /dev/sda1 rw\n")
    table.write_text(lock_line("00:63", lock.stat().st_ino))  # 0:99, as the lock table writes it
    assert lock_held(lock, table, mounts)
    mounts.write_text(f"{mount_id(lock)} 1 0:98 / / rw - btrfs /dev/sda1 rw\n")
    assert not lock_held(lock, table, mounts)


def test_a_symlink_planted_as_the_lock_file_is_not_davitds_lock(lock: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.lock"
    link.symlink_to(lock)
    table = tmp_path / "locks"
    table.write_text(lock_line(stat_device(lock), lock.stat().st_ino))
    assert lock_held(lock, table) and not lock_held(link, table)


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
