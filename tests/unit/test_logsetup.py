"""davitd's log lines: journald's native protocol with the run's fields, JSON lines, quiet libraries."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.daemon.logsetup import (
    JournalHandler,
    JsonFormatter,
    LibraryChatter,
    RunFields,
    apply_level,
    handler_for,
    run_context,
    stderr_is_journal,
)


def parse_journal(datagram: bytes) -> dict[str, str]:
    """journald's native protocol, read as journald does: `KEY=value\\n`, or `KEY\\n` + 64-bit
    little-endian length + value + `\\n`."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[socket.socket]:
    """A unix datagram socket standing in for /run/systemd/journal/socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def logger_to(handler: logging.Handler, name: str = "davitd.test") -> logging.Logger:
    handler.addFilter(RunFields())
    handler.addFilter(LibraryChatter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_a_run_line_reaches_the_journal_with_its_run_job_and_kind(journal: socket.socket, tmp_path: Path) -> None:
    handler = JournalHandler(str(tmp_path / "journal.sock"))
    log = logger_to(handler)
    with run_context("abc123", "nightly-db", "mongo.backup"):
        log.warning("run %s: disk %s", "abc123", "almost full")
    handler.close()
    fields = parse_journal(journal.recv(65536))
    assert fields["MESSAGE"] == "run abc123: disk almost full"
    assert (fields["RUN_ID"], fields["JOB"], fields["KIND"]) == ("abc123", "nightly-db", "mongo.backup")
    assert fields["PRIORITY"] == "4"  # warning
    assert fields["SYSLOG_IDENTIFIER"] == "davitd"


def test_a_multi_line_message_uses_the_protocols_length_form(journal: socket.socket, tmp_path: Path) -> None:
    handler = JournalHandler(str(tmp_path / "journal.sock"))
    logger_to(handler).error("first line\nsecond line")
    handler.close()
    fields = parse_journal(journal.recv(65536))
    assert fields["MESSAGE"] == "first line\nsecond line"
    assert "RUN_ID" not in fields  # outside any run


def test_a_journal_that_is_gone_gets_the_line_on_stderr_instead(tmp_path: Path) -> None:
    fallback = io.StringIO()
    handler = JournalHandler(str(tmp_path / "no-journal.sock"), fallback=fallback)
    logger_to(handler).error("the log cannot be written")
    handler.close()
    assert "the log cannot be written" in fallback.getvalue()


def test_json_lines_carry_the_runs_fields_one_object_per_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logger_to(handler)
    with run_context("r9", "files", "files.backup"):
        log.info("run %s (%s) running", "r9", "files")
    log.info('outside "quoted"\nand a newline')
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "run r9 (files) running"
    assert (first["run_id"], first["job"], first["kind"], first["level"]) == ("r9", "files", "files.backup", "info")
    assert second["message"] == 'outside "quoted"\nand a newline' and "run_id" not in second


def test_journal_stream_counts_only_when_it_names_our_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream, open(tmp_path / "other", "w") as other:
        st, st_other = os.fstat(stream.fileno()), os.fstat(other.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        # a child whose stderr was redirected inherits the variable: not the journal then
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st_other.st_dev}:{st_other.st_ino}"}, stream)
        assert not stderr_is_journal({}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)


@pytest.fixture
def root_capture() -> Iterator[io.StringIO]:
    """The root logger writing to a buffer through davitd's filters; levels restored after."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RunFields())
    handler.addFilter(LibraryChatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("asyncssh", "pymongo")}
    root.handlers[:] = [handler]
    yield out
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_at_info_a_librarys_chatter_and_a_remote_command_stay_out(root_capture: io.StringIO) -> None:
    apply_level("info")
    logging.getLogger("asyncssh").info("[conn=0, chan=1] Command: cat > /srv/secret-path/file")
    logging.getLogger("asyncssh.sftp").info("[conn=0] Starting SFTP client")
    logging.getLogger("pymongo.command").info("find on db.coll")
    logging.getLogger("davitd").info("run r1 (j) running")
    logging.getLogger("asyncssh").warning("connection lost")
    text = root_capture.getvalue()
    assert "Command:" not in text and "SFTP" not in text and "find on" not in text
    assert "INFO davitd: run r1 (j) running" in text
    assert "WARNING asyncssh: connection lost" in text


def test_a_librarys_deprecation_warning_stays_out_at_info(root_capture: io.StringIO) -> None:
    apply_level("info")
    logging.getLogger("py.warnings").warning("misc.py:32: CryptographyDeprecationWarning: DSA is deprecated")
    logging.getLogger("py.warnings").warning("x.py:1: UserWarning: something davit should hear")
    assert root_capture.getvalue().splitlines() == ["WARNING py.warnings: x.py:1: UserWarning: something davit should hear"]


def test_at_debug_a_remote_command_is_heard_but_only_at_debug(root_capture: io.StringIO) -> None:
    apply_level("debug")
    logging.getLogger("asyncssh").info("[conn=0, chan=1] Command: cat > /srv/x")
    logging.getLogger("asyncssh.sftp").info("[conn=0] Starting SFTP client")
    lines = root_capture.getvalue().splitlines()
    assert lines == [
        "DEBUG asyncssh: [conn=0, chan=1] Command: cat > /srv/x",
        "DEBUG asyncssh.sftp: [conn=0] Starting SFTP client",
    ]


def test_under_systemd_davitd_writes_to_the_journal_else_to_stderr_in_its_format(
    tmp_path: Path, journal: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        monkeypatch.setattr("sys.stderr", stream)
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        chosen = handler_for("json", journal_socket=str(tmp_path / "journal.sock"))
        assert isinstance(chosen, JournalHandler)
        chosen.close()
        monkeypatch.delenv("JOURNAL_STREAM")
        plain = handler_for("json")
        assert isinstance(plain, logging.StreamHandler) and isinstance(plain.formatter, JsonFormatter)


FORGED = "access denied\n2024-01-01 03:00:00,000 davitd INFO davitd.executor: run r1 (db) succeeded\r\x1b[2K"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_hostile_servers_error_text_cannot_forge_a_log_line(monkeypatch: pytest.MonkeyPatch, log_format: str) -> None:
    """A server's error message (hostile: newlines, a carriage return, an escape sequence, Unicode
    line separators) quoted in a run's failure stays inside its own line, in either format."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log = logging.getLogger("davitd.test.forged")
    log.handlers[:] = [handler_for(log_format)]
    log.propagate = False
    log.setLevel(logging.INFO)
    log.error("run %s (%s) failed: %s", "r1", "db", FORGED + "\u2028next\x85line")
    lines = out.getvalue().splitlines()  # (splits at \u2028 and \x85 too, as many readers do)
    assert len(lines) == 1, lines
    assert "\x1b" not in lines[0] and "\r" not in lines[0]
    if log_format == "json":
        assert json.loads(lines[0])["message"].endswith(FORGED + "\u2028next\x85line")
    else:
        assert "access denied\\x0a2024-01-01" in lines[0]


def test_a_traceback_in_a_text_line_keeps_its_own_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log = logging.getLogger("davitd.test.traceback")
    log.handlers[:] = [handler_for("text")]
    log.propagate = False
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("request failed")
    text = out.getvalue()
    assert "request failed\nTraceback (most recent call last):\n" in text and "RuntimeError: boom" in text
