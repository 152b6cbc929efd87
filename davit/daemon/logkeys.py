"""davitd's log key: found, or made at the first start, and the log sealed under it, as one
procedure run by whoever can write the key file.

The key lives outside the state directory (`Settings.log_key_path`). Its writer (davitd with
`--home`, which can write `<home>/log.key`; `davitd --make-log-key` under systemd, as root
before the sandbox) makes it when it is missing and the log is not keyed yet, recording the
head it will seal; seals the log (opening it migrates and seals: `SqliteEventStore.open`,
`PostgresEventStore.open` alike);
then marks the key file `sealed = true`. A key marked sealed is never used to seal again, so
a log rolled back to the moment before its sealing is refused instead of sealed a second
time (see `davit/eventstore/logkey.py`). A crash between making and marking is finished by the
next start of the writer. davitd refuses to start when the log is keyed but the key is gone
(appending under a new key would break the chain for good, and a verifier could no longer
tell an edit from a lost key), and when the key still waits for its mark and davitd cannot
rewrite the key file (the sandbox keeps /etc read-only): `davitd --make-log-key` does it.
"""

from __future__ import annotations

from davit.daemon.config import Settings
from davit.daemon.eventlogs import AnyEventStore, log_location, on_postgres, postgres_log_head, postgres_store
from davit.eventstore.logkey import LogKey, LogKeyError, can_rewrite, create_log_key, mark_log_key_sealed, read_log_key
from davit.eventstore.sqlite import SqliteEventStore, WriteOutage, log_head


def daemon_log_key(settings: Settings, head: tuple[int, str, bool] | None = None) -> LogKey:
    """The key davitd opens the log with, made if missing (for the log whose `head` is given,
    else the SQLite log's, read here). A key still to be marked sealed is returned only if
    this process can mark it (after the sealing: `finish_log_key`)."""
    path = settings.log_key_path
    key = read_log_key(path)
    if key is None:
        position, hash_, keyed = head if head is not None else log_head(settings.db_path)
        if keyed:
            raise LogKeyError(
                f"the event log {log_location(settings)} is keyed but its key {path} is missing: restore the key "
                "(without it davitd cannot append to the log nor `davit log verify` check it)"
            )
        key = create_log_key(path, (position, hash_))
    if key.needs_sealing_mark and not can_rewrite(key):
        # Checked before the sealing: a seal nobody can record in the key would leave the
        # next start unable to tell it from a rollback to this moment.
        raise LogKeyError(
            f"the log key {path} is not marked sealed yet and davitd cannot rewrite it here: run "
            "`davitd --make-log-key` as root (the systemd unit does in ExecStartPre=+), then start davitd"
        )
    return key


async def find_log_key(settings: Settings) -> LogKey:
    """`daemon_log_key` for either log: the PostgreSQL log's head is read first if a key must be
    made. A daemon whose copy of the key is missing makes none for a log another daemon keyed:
    it is refused until its config names the one key (`[daemon] log_key_file`)."""
    head = None
    if on_postgres(settings) and read_log_key(settings.log_key_path) is None:
        head = await postgres_log_head(settings)
    return daemon_log_key(settings, head)


def finish_log_key(key: LogKey) -> LogKey:
    """After the log was opened (and so sealed) under `key`: record it in the key file."""
    return mark_log_key_sealed(key) if key.needs_sealing_mark else key


async def provision_log_key(settings: Settings) -> LogKey:
    """`davitd --make-log-key`: make the key if missing and, if it is not marked sealed yet,
    open the log (creating and migrating it), seal it, and mark the key."""
    key = await find_log_key(settings)
    if not key.needs_sealing_mark:
        return key
    store = await open_keyed(settings, key)
    await store.close()
    return finish_log_key(key)


async def open_keyed(settings: Settings, key: LogKey, outage: WriteOutage | None = None) -> AnyEventStore:
    """davitd's log (SQLite or PostgreSQL), created or migrated, and sealed under `key`."""
    if on_postgres(settings):
        return await postgres_store(settings, outage=outage, key=key).open()
    return await SqliteEventStore(settings.db_path, key=key, outage=outage).open()
