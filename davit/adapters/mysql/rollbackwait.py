"""A resumed table load waits for the interrupted load's rollback to end, by that load's connection.

When davitd dies (`kill -9`), or a load fails, in the middle of a table, the server rolls back
the load's open transaction once it sees the client gone: after (or during) the statement in
flight, and then for about as long as the rows took to insert (measured on the peer: 580,000
small rows rolled back in ~2.3 s). Until the rollback ends that transaction holds the table's
row locks, so the resumed step's `DELETE FROM` waited for them up to `innodb_lock_wait_timeout`
(50 s by default), failed with error 1205 and was retried as a whole new attempt: the 1 GB
kill -9 test's restore passed on its third attempt.

So each load records, in its step's cursor and before its first row is sent, which connection
carries it (`identity`): its `CONNECTION_ID()` and when the server started (now minus `Uptime`).
A resumed load whose cursor names one (`wait_gone`) waits until `information_schema.PROCESSLIST`
no longer lists that id. Why this and not a look at `INNODB_TRX`'s `ROLLING BACK` transactions or
at the user's `Killed` threads:
- exact: a connection's thread stays listed (command `Killed`, state `Rollback`) until its
  rollback has ended, and a running server never gives its id to another connection; so the wait
  is for that one transaction, never for the table's other users (a sibling table's load of the
  resumed run runs as the same user) nor for unrelated rollbacks;
- a user sees its own threads in PROCESSLIST without the PROCESS privilege that `INNODB_TRX` needs.
A server restarted since the load began has no such thread (its crash recovery rolls the
transaction back by itself) and may have given the id to any connection: then nothing is
waited for, and a lock wait on the recovery's rollback is left to the run's retries as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from davit.adapters.mysql.client import MysqlUnreachable

log = logging.getLogger("davit.mysql")

# The start time is now minus `Uptime`, both whole seconds read by two statements: the same
# start reads alike within a second or two (a restart is later by at least the load's duration).
SAME_START_SECONDS = 5
# A rollback takes about as long as the insert did: an hour of a big table's load is far inside
# this; past it the step fails as retryable (the next attempt waits again).
PATIENCE_SECONDS = 3600.0
POLL_SECONDS = 0.2


def identity(cur: Any) -> dict[str, int]:
    """The connection `cur` runs on, as a resumed load finds it again: {"connection", "server_started"}."""
    cur.execute("SELECT CONNECTION_ID(), UNIX_TIMESTAMP()")
    connection, now = cur.fetchone()
    cur.execute("SHOW GLOBAL STATUS LIKE 'Uptime'")
    uptime = cur.fetchone()[1]
    return {"connection": int(connection), "server_started": int(now) - int(uptime)}


def wait_gone(
    cur: Any,
    earlier: dict[str, Any] | None,
    check_stop: Callable[[], None],
    what: str,
    *,
    patience: float | None = None,
) -> float | None:
    """Wait until the connection `earlier` (an `identity` recorded by an interrupted load) is no
    longer on the server, its rollback over. Returns the seconds waited, or None when there was
    nothing to wait for (no such record, another server start, the thread already gone)."""
    if not earlier:
        return None
    now = identity(cur)
    conn_id = int(earlier["connection"])
    if abs(now["server_started"] - int(earlier["server_started"])) > SAME_START_SECONDS or now["connection"] == conn_id:
        return None
    patience = PATIENCE_SECONDS if patience is None else patience
    started = time.monotonic()
    seen: tuple[Any, ...] | None = None
    while True:
        cur.execute("SELECT COMMAND, STATE FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,))
        row = cur.fetchone()
        if row is None:
            break
        waited = time.monotonic() - started
        if seen is None:
            seen = tuple(row)
            log.info(
                "%s: waiting for connection %d of the interrupted load to end (command %s, state %s): "
                "the server is rolling its transaction back, which holds the table's rows",
                what,
                conn_id,
                row[0],
                row[1],
            )
        if waited > patience:
            raise MysqlUnreachable(
                f"{what}: connection {conn_id} of the interrupted load is still on the server after {waited:.0f} s "
                f"(command {row[0]}, state {row[1]}): its rollback holds the table's rows"
            )
        check_stop()
        time.sleep(POLL_SECONDS)
    if seen is None:
        return None
    waited = time.monotonic() - started
    log.info("%s: connection %d of the interrupted load is gone after %.1f s; loading again", what, conn_id, waited)
    return waited
