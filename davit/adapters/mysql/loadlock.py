"""One table load at a time per target table, across connections, runs and davitd processes.

A restore's load skips its `DELETE` when the table holds no row (`restore._has_rows`). That check
is a plain consistent read
and takes no lock, so two loads of one table at once (two restore jobs into one database, with
`if_exists = "merge"` or both past pre-flight) would each find it empty, each skip the DELETE
and each insert: every row twice in a table without a unique key (before the skip, their
DELETEs' gap locks made one of them fail and retry). Each load therefore holds a named lock
(`GET_LOCK`, the server's user-level lock, MariaDB and MySQL 5.7+) for its table from before the
check to its commit; the next one then finds the rows and empties the table first.

The lock belongs to the connection: the load's connection closing (its commit done, or the
process killed) releases it, so a crashed load never leaves it held.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from davit.adapters.mysql.client import quote_text
from davit.domain.errors import PermanentError

log = logging.getLogger("davit.mysql")
POLL_SECONDS = 1  # GET_LOCK's own wait between stop checks


def lock_name(db: str, table: str) -> str:
    """The lock's name: at most 64 characters (the server's limit), whatever the names' length."""
    return "davit-load-" + hashlib.sha256(f"{db}\0{table}".encode()).hexdigest()[:40]


def hold(cur: Any, db: str, table: str, check_stop: Callable[[], None], what: str) -> None:
    """Take the table's load lock on `cur`'s connection, waiting (stoppable) while another load holds it."""
    name = quote_text(lock_name(db, table))
    started, said = time.monotonic(), False
    while True:
        cur.execute(f"SELECT GET_LOCK({name}, {POLL_SECONDS})")
        got = cur.fetchone()[0]  # (davit's connections give the server's text: "1", not 1)
        if got is not None and int(got) == 1:
            if said:
                log.info("%s: the other load of this table is done after %.1fs", what, time.monotonic() - started)
            return
        if got is None:
            raise PermanentError(f"{what}: the server refused the table's load lock (GET_LOCK gave NULL)")
        if not said:
            log.info("%s: another load of this table is running; waiting for it to commit", what)
            said = True
        check_stop()
