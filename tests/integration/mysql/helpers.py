"""Shared pieces of the MariaDB adapter tests: connections to the peer, unique database names
dropped afterwards, driving the backup and restore works without a daemon, and reading a
database back (rows as the server's text, definitions) to compare two of them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import pymysql

from davit.adapters.mysql.backup import MysqlBackupWork
from davit.adapters.mysql.client import quote_name as q
from davit.adapters.mysql.restore import MysqlRestoreWork
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.domain.jobs import job_from_dict
from tests.fakes import MemoryRunContext
from tests.peers.state import MariadbPeer

SMALL = Tuning(pack_size=2 << 20, checkpoint_seconds=60)
PASSWORD_ENV = "DAVIT_TEST_MARIADB_PASSWORD"


@dataclass
class Maria:
    peer: MariadbPeer
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    def db(self, name: str) -> str:
        """A database name unique to this test (the peer is shared), dropped afterwards."""
        full = f"{name}_{self.tag}"
        self.created.append(full)
        return full

    def connect(self, db: str | None = None, **kwargs: Any) -> Any:
        return pymysql.connect(
            host=self.peer.host,
            port=self.peer.port,
            user=self.peer.user,
            password=self.peer.password,
            database=db,
            charset="utf8mb4",
            autocommit=True,
            **kwargs,
        )

    def execute(self, db: str | None, *statements: str) -> None:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def server(self) -> dict[str, Any]:
        return {"host": self.peer.host, "port": self.peer.port, "user": self.peer.user, "password_env": PASSWORD_ENV}


def backup_spec(name: str, maria: Maria, **source: Any) -> Any:
    extra = {k: source.pop(k) for k in ("parallel", "chunk_kib", "retention") if k in source}
    return job_from_dict({"name": name, "kind": "mysql.backup", "source": {**maria.server(), **source}, **extra}, f"{name}.toml")


def restore_spec(name: str, maria: Maria, source: dict[str, Any], **target: Any) -> Any:
    extra = {k: target.pop(k) for k in ("parallel",) if k in target}
    return job_from_dict(
        {"name": name, "kind": "mysql.restore", "source": source, "target": {**maria.server(), **target}, **extra},
        f"{name}.toml",
    )


def run_backup(
    repo: Repository, spec: Any, run_id: str, ctx: MemoryRunContext | None = None, tuning: Tuning = SMALL
) -> tuple[MemoryRunContext, dict[str, Any]]:
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work = MysqlBackupWork(RunInputs(spec, run_id, tuning, repo=repo))
    details = work.prepare(ctx)
    work.run(ctx)
    return ctx, {**details, **work.finish(ctx)}


def run_restore(
    repo: Repository, spec: Any, run_id: str, ctx: MemoryRunContext | None = None
) -> tuple[MemoryRunContext, dict[str, Any]]:
    ctx = ctx or MemoryRunContext(run_id=run_id)
    work = MysqlRestoreWork(RunInputs(spec, run_id, SMALL, repo=repo))
    details = work.prepare(ctx)
    work.run(ctx)
    return ctx, {**details, **work.finish(ctx)}


ROUTINES = "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE"
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


def contents(maria: Maria, db: str) -> dict[str, Any]:
    """Every table's definition and rows (the server's own text and bytes, ordered by every
    column), and every view, routine, trigger and event definition of `db`."""
    conn = maria.connect(db, conv={})
    out: dict[str, Any] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1")
            for name, kind in list(cur.fetchall()):
                if kind == "VIEW":
                    cur.execute(f"SHOW CREATE VIEW {q(name)}")
                    out[f"view {name}"] = cur.fetchone()[1]
                    continue
                cur.execute(f"SHOW CREATE TABLE {q(name)}")
                out[f"table {name}"] = _AUTO_INCREMENT.sub("", cur.fetchone()[1])
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                    (name,),
                )
                ncols = int(cur.fetchone()[0])
                visible = "*, `inv`" if name == "everything" else "*"
                cur.execute(f"SELECT {visible} FROM {q(name)} ORDER BY {','.join(str(i + 1) for i in range(ncols))}")
                out[f"rows {name}"] = list(cur.fetchall())
            for kind, query in (
                (
                    "procedure",
                    f"{ROUTINES} = 'PROCEDURE'",
                ),
                (
                    "function",
                    f"{ROUTINES} = 'FUNCTION'",
                ),
                ("trigger", "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"),
                ("event", "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()"),
            ):
                cur.execute(query)
                for (name,) in list(cur.fetchall()):
                    cur.execute(f"SHOW CREATE {kind.upper()} {q(name)}")
                    row = cur.fetchone()
                    out[f"{kind} {name}"] = row[3] if kind == "event" else row[2]
    finally:
        conn.close()
    return out


def rows_of(maria: Maria, db: str, table: str) -> list[Any]:
    conn = maria.connect(db, conv={})
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM `{table}` ORDER BY 1")
            return list(cur.fetchall())
    finally:
        conn.close()


def drop_created(maria: Maria) -> None:
    conn = maria.connect()
    try:
        with conn.cursor() as cur:
            for name in maria.created:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()
