"""Which event log davitd and the CLI open: SQLite in the state directory, or PostgreSQL.

SQLite (`state_dir/davit.db`) is the default. `[daemon] event_store_url_file` names a file
holding one `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` URL: then every process with this
config opens that database instead (`davit/eventstore/postgres.py`). The URL is read by
reference, at most `MAX_URL_FILE_BYTES`, without following a symlink planted at the file's
name, and never shown: errors name the file and the reason, and the store names itself
`postgresql host:port/database`. The log key (a keyed chain) is SQLite's alone for now: on
PostgreSQL davitd neither makes nor uses one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from davit.daemon.config import Settings
from davit.domain.errors import FieldProblem, InvalidConfig
from davit.eventstore.boundedread import TooLarge, read_bounded
from davit.eventstore.logkey import read_log_key
from davit.eventstore.sqlite import SqliteEventStore, WriteOutage

if TYPE_CHECKING:
    # imported where a PostgreSQL log is opened: psycopg is a tenth of every CLI command's
    # start-up, and most installations' log is SQLite (`python -X importtime`)
    from davit.eventstore.postgres import PostgresEventStore

MAX_URL_FILE_BYTES = 4096
FIELD = "daemon.event_store_url_file"

AnyEventStore: TypeAlias = "SqliteEventStore | PostgresEventStore"


def on_postgres(settings: Settings) -> bool:
    return settings.event_store_url_path is not None


def log_location(settings: Settings) -> str:
    """The log as a log line may name it: its file, or the file holding its URL (never the URL)."""
    path = settings.event_store_url_path
    return str(settings.db_path) if path is None else f"on PostgreSQL (URL in {path})"


def _problem(path: Path, reason: str) -> InvalidConfig:
    return InvalidConfig(str(path), [FieldProblem(FIELD, reason)])


def read_url_file(path: Path) -> str:
    """The text of the URL file; `InvalidConfig` naming the file and why (never its content)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _problem(path, f"cannot read the event store URL file: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _problem(path, "the event store URL file is not a regular file")
        raw = read_bounded(fd, MAX_URL_FILE_BYTES, "an event store URL file")
    except TooLarge as exc:
        raise _problem(path, str(exc)) from None
    except OSError as exc:
        raise _problem(path, f"cannot read the event store URL file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise _problem(path, "the event store URL file is not UTF-8") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise _problem(path, f"the event store URL file must hold one URL on one line, not {len(lines)} lines")
    return lines[0]


def postgres_store(settings: Settings, outage: WriteOutage | None = None) -> PostgresEventStore:
    """The PostgreSQL store the config names (not opened yet)."""
    from davit.eventstore.postgres import EventStoreUrlError, PostgresEventStore, parse_url

    path = settings.event_store_url_path
    assert path is not None
    try:
        url = parse_url(read_url_file(path), str(path))
    except EventStoreUrlError as exc:
        raise _problem(path, str(exc).removeprefix(f"{path}: ")) from None
    return PostgresEventStore(url, outage=outage)


async def open_for_cli(settings: Settings, write: bool) -> AnyEventStore:
    """The log for a CLI command: read-only unless `write` (a request for davitd); never created."""
    if on_postgres(settings):
        return await postgres_store(settings).open(create=False, readonly=not write)
    key = read_log_key(settings.log_key_path) if write else None
    return await SqliteEventStore(settings.db_path, key=key, key_path=settings.log_key_path).open(
        create=False, readonly=not write
    )
