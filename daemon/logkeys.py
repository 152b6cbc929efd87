"""davitd's log key: found, or made at the first start, before the log is opened for writing.

The key lives outside the state directory (`Settings.log_key_path`). davitd makes it when it
is missing and the log is not keyed yet, recording the head it will seal; it refuses to start
when the log is keyed but the key is gone (appending under a new key would break the chain
for good, and a verifier could no longer tell an edit from a lost key).
"""

from __future__ import annotations

from daemon.config import Settings
from eventstore.logkey import LogKey, LogKeyError, create_log_key, read_log_key
from eventstore.sqlite import log_head


def daemon_log_key(settings: Settings) -> LogKey:
    path = settings.log_key_path
    key = read_log_key(path)
    if key is not None:
        return key
    position, hash_, keyed = log_head(settings.db_path)
    if keyed:
        raise LogKeyError(
            f"the event log {settings.db_path} is keyed but its key {path} is missing: restore the key "
            "(without it davitd cannot append to the log nor `davit log verify` check it)")
    return create_log_key(path, (position, hash_))
