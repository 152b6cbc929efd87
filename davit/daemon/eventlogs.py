"""Which event log davitd and the CLI open: SQLite in the state directory, or PostgreSQL.

SQLite (`state_dir/davit.db`) is the default. `[daemon] event_store_url_file` names a file
holding one `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` URL: then every process with this
config opens that database instead (`davit/eventstore/postgres.py`). The URL is read by
reference, at most `MAX_URL_FILE_BYTES`, without following a symlink planted at the file's
name, and never shown: errors name the file and the reason, and the store names itself
`postgresql host:port/database`. The log key (`Settings.log_key_path`) keys either log the
same way (`davit/eventstore/keying.py`); several davitd on one PostgreSQL log each name a copy
of the one key (`[daemon] log_key_file`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from davit.daemon.config import Settings
from davit.domain.errors import FieldProblem, InvalidConfig
from davit.eventstore.boundedread import TooLarge, read_bounded
from davit.eventstore.logkey import LogKey, read_log_key
from davit.eventstore.schema import GENESIS_HASH
from davit.eventstore.sqlite import EventLogMissing, SqliteEventStore, WriteOutage

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


def postgres_store(settings: Settings, outage: WriteOutage | None = None, key: LogKey | None = None) -> PostgresEventStore:
    """The PostgreSQL store the config names (not opened yet), appending under `key` if given."""
    from davit.eventstore.postgres import EventStoreUrlError, PostgresEventStore, parse_url

    path = settings.event_store_url_path
    assert path is not None
    try:
        url = parse_url(read_url_file(path), str(path))
    except EventStoreUrlError as exc:
        raise _problem(path, str(exc).removeprefix(f"{path}: ")) from None
    return PostgresEventStore(url, outage=outage, key=key, key_path=settings.log_key_path)


async def postgres_log_head(settings: Settings) -> tuple[int, str, bool]:
    """The PostgreSQL log's head and whether it is keyed (`sqlite.log_head`'s twin), read-only;
    (0, genesis, False) if the database has no log yet."""
    try:
        store = await postgres_store(settings).open(create=False, readonly=True)
    except EventLogMissing:
        return 0, GENESIS_HASH, False
    try:
        return await store.log_head()
    finally:
        await store.close()


async def open_for_cli(settings: Settings, write: bool) -> AnyEventStore:
    """The log for a CLI command: read-only unless `write` (a request for davitd); never created."""
    key = read_log_key(settings.log_key_path) if write else None
    if on_postgres(settings):
        return await postgres_store(settings, key=key).open(create=False, readonly=not write)
    return await SqliteEventStore(settings.db_path, key=key, key_path=settings.log_key_path).open(
        create=False, readonly=not write
    )
