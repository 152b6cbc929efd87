"""davitd's log lines: where they go, what fields they carry, and how quiet the libraries are.

- Fields: a line logged while a run is executed (by the executor, its worker threads, the
  adapters) carries the run's id, job and kind (`run_context`, a context variable: anyio copies
  it into the threads a run's work uses), so a journal or a collector filters by run or job.
- Under systemd, when `$JOURNAL_STREAM` names davitd's stderr, lines go to journald's native
  socket with fields `RUN_ID=`, `JOB=`, `KIND=`, `PRIORITY=`, `LOGGER=` (the protocol is
  datagrams of `KEY=value` lines, `systemd.journal(3)`; a few lines here rather than a
  dependency on systemd-python). Otherwise `log_format = "json"` (or `davitd --log-format json`)
  writes one JSON object per line with the same fields; "text" is the plain line.
- Libraries (asyncssh logs every channel and the full text of every remote command at INFO,
  pymongo, weaviate-client, docker, urllib3, httpx, ...) are heard at WARNING and above unless
  `log_level = "debug"`; their INFO lines are demoted to DEBUG in any case, so a remote command's
  text never appears above DEBUG whatever the level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

from davit.domain.terminaltext import for_terminal

JOURNAL_SOCKET = "/run/systemd/journal/socket"
TEXT_FORMAT = "%(asctime)s davitd %(levelname)s %(name)s: %(message)s"

# Loggers of libraries whose chatter an operator does not want at INFO (their children too).
CHATTY_LIBRARIES = (
    "asyncssh",
    "pymongo",
    "weaviate",
    "docker",
    "urllib3",
    "httpx",
    "httpcore",
    "grpc",
    "psycopg",
    "pymysql",
    "botocore",
    "watchfiles",
    "aiosqlite",
    "sqlalchemy",
    "transitions",
)

# The run whose work the current task or thread does: run_id, job, kind.
_RUN: ContextVar[dict[str, str] | None] = ContextVar("davit_run", default=None)
_FIELDS = ("run_id", "job", "kind")


@contextlib.contextmanager
def run_context(run_id: str, job: str, kind: str) -> Iterator[None]:
    """Lines logged inside (and in threads started from inside) carry this run's fields."""
    token = _RUN.set({"run_id": run_id, "job": job, "kind": kind})
    try:
        yield
    finally:
        _RUN.reset(token)


class RunFields(logging.Filter):
    """Puts the current run's fields on each record (a record's own `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _RUN.get() or {}
        for name in _FIELDS:
            if not getattr(record, name, None):
                setattr(record, name, current.get(name, ""))
        return True


def _library(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in CHATTY_LIBRARIES)


class LibraryChatter(logging.Filter):
    """On davitd's handler: a library's records below WARNING become DEBUG (asyncssh says
    which command it runs at INFO; that text stays at DEBUG), and are dropped unless davitd
    logs at debug. (On the handler, not the library's logger: a logger's filter does not see
    what its child loggers log.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings" and "DeprecationWarning" in record.getMessage():
            # a library's deprecation notice (asyncssh's DSA imports) is for its developers
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        if record.levelno < logging.WARNING and _library(record.name):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run's fields, and the
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if value := getattr(record, name, ""):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # JSON leaves these line breaks raw in a string; many line readers split at them
        return json.dumps(line, ensure_ascii=False).translate(_JSON_LINE_BREAKS)


_JSON_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class TextFormatter(logging.Formatter):
    """The plain line (`TEXT_FORMAT`), its message with control characters escaped: a message
    quotes hostile text (a server's error, a path), whose newline would start a forged line.
    A traceback, appended after the message, keeps its lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = for_terminal(record.message)
        return super().formatMessage(record)


# syslog priorities journald files a line under (PRIORITY=)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def journal_field(name: str, value: str) -> bytes:
    """One field of journald's native protocol: `NAME=value\\n`, or, when the value holds a
    newline, `NAME\\n`, its length as 64-bit little endian, the value and `\\n`."""
    data = value.encode("utf-8", "replace")
    if b"\n" not in data:
        return name.encode() + b"=" + data + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


class JournalHandler(logging.Handler):
    """Sends each record as one datagram to journald's socket; a record the socket refuses
    (too large, journald restarting) goes to stderr instead, so no line is lost silently."""

    def __init__(self, path: str = JOURNAL_SOCKET, fallback: TextIO | None = None) -> None:
        super().__init__()
        self._path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._fallback = fallback or sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = [
                journal_field("MESSAGE", message),
                journal_field("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
                journal_field("SYSLOG_IDENTIFIER", "davitd"),
                journal_field("LOGGER", record.name),
            ]
            for name in _FIELDS:
                if value := getattr(record, name, ""):
                    fields.append(journal_field(name.upper(), str(value)))
            self._sock.sendto(b"".join(fields), self._path)
        except OSError:
            self._fallback.write(TextFormatter().format(record) + "\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def stderr_is_journal(environ: dict[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """Whether `$JOURNAL_STREAM` ("device:inode", set by systemd) names our stderr: only then is
    stderr the journal (a child whose stderr was redirected inherits the variable)."""
    value = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def handler_for(log_format: str, journal_socket: str = JOURNAL_SOCKET) -> logging.Handler:
    """The journal when stderr is the journal, else stderr in `log_format` ("text" or "json")."""
    handler: logging.Handler
    if stderr_is_journal():
        handler = JournalHandler(journal_socket)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RunFields())
    handler.addFilter(LibraryChatter())
    return handler


def apply_level(level: str) -> None:
    """davitd's level (`log_level`), and the libraries' (WARNING unless it is "debug")."""
    logging.getLogger().setLevel(level.upper())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def configure(level: str, log_format: str) -> None:
    """Set up davitd's logging once, at start."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler_for(log_format))
    # Python's warnings as log records: one line in the chosen format (a raw two-line warning on
    # stderr would break JSON lines), and library deprecations kept to debug (`LibraryChatter`).
    logging.captureWarnings(True)
    apply_level(level)
