"""Bringing a mariadb-dump (or mysqldump) script into the repository as a snapshot of a job, in
mysql.backup's layout, so mysql.restore restores it: `davit import sql`.

The script is read line by line and cut into statements as the `mariadb` client cuts it (its
`DELIMITER` lines, quoted strings and comments honoured), never held whole. Executable comments
(`/*!50001 ... */`) are read as the server would read them. What is kept, per database
(`CREATE DATABASE` and `USE`, or `--database` for a dump of one database without them):
`CREATE TABLE` statements (definition and engine), each `INSERT` as one chunk of its table
(rows counted), and views, functions, procedures, triggers and events with the character set,
collation and `sql_mode` the script set before creating them (as a backup records them).
mariadb-dump's stand-in for a view (a view or table of the same name made before the data) is
replaced by the view's final definition. Everything else (`SET`, `LOCK TABLES`, `DROP ...`,
`ALTER TABLE ... KEYS`) is what a restore does by itself and is left out. The snapshot is
published only once every chunk is durable: an interrupted import leaves no snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from davit.adapters.mysql.client import quote_name
from davit.adapters.mysql.definer import without_definer
from davit.adapters.mysql.layout import KIND, DatabaseEntry, TableEntry, tree_zst
from davit.adapters.repository.chunkwriter import ChunkWriter
from davit.adapters.repository.repository import Repository, SnapshotInfo
from davit.adapters.repository.tuning import Tuning
from davit.domain.errors import PermanentError
from davit.domain.jobs.mysql import SYSTEM_DATABASES

NAME = r"(`(?:[^`]|``)+`|[\w$]+)"
EXECUTABLE = re.compile(r"/\*M?!\d*\s?(.*?)\*/", re.S)
QUOTED_OR_COMMENT = re.compile(
    rb"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`]|``)*`|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n", re.S
)
TUPLES = re.compile(rb"'(?:[^'\\]|\\.|'')*'|[()]", re.S)
CREATE_OBJECT = re.compile(r"^CREATE\b.*?\b(VIEW|FUNCTION|PROCEDURE|TRIGGER|EVENT)\s+" + NAME, re.S | re.I)
CREATE_TABLE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + NAME, re.I)
CREATE_DATABASE = re.compile(r"^CREATE\s+(?:DATABASE|SCHEMA)\s+(?:IF\s+NOT\s+EXISTS\s+)?" + NAME, re.I)
USE = re.compile(r"^USE\s+" + NAME + r"\s*$", re.I)
INSERT = re.compile(rb"^(?:INSERT|REPLACE)\s+(?:IGNORE\s+)?INTO\s+(`(?:[^`]|``)+`|[\w$]+)", re.I)
ENGINE = re.compile(r"\bENGINE\s*=\s*(\w+)", re.I)
# An INSERT of the script's own table given as literal rows: the table unqualified, its
# columns, then VALUES and nothing but literals (quoted strings with an optional introducer or
# X/B prefix, numbers, hex and bit values, NULL, DEFAULT, TRUE/FALSE), as mariadb-dump and
# mysqldump write them. Anything else (another database's table, INSERT ... SELECT, a
# subquery, a function, an executable comment, ON DUPLICATE KEY UPDATE) would run with the
# restoring account's rights: refused.
ROWS_HEAD = re.compile(
    rb"(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\s+)*INTO\s+(?:`(?:[^`]|``)+`|[\w$]+)\s*"
    rb"(?:\(\s*(?:`(?:[^`]|``)+`|[\w$]+)(?:\s*,\s*(?:`(?:[^`]|``)+`|[\w$]+))*\s*\)\s*)?VALUES?\b",
    re.I,
)
LITERALS = re.compile(
    rb"(?:'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|[(),\s+-]+|0x[0-9a-f]+|(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?(?![\w$])"
    rb"|(?:NULL|DEFAULT|TRUE|FALSE)(?![\w$])|_[a-z0-9]+\s*(?=[xbn]?'|0[xb])|[xbn](?=')|0b[01]+)*",
    re.I | re.S,
)
# A table definition that reaches outside its own table: another database's (`db`.`t`), or
# filled by a SELECT (CREATE TABLE ... [AS] SELECT, with the restoring account's rights).
SELECT_WORD = re.compile(r"\bSELECT\b", re.I)
# Table options that reach past the server's own data directory: engines that read and write
# files anywhere the server can (CONNECT), or other servers (FEDERATED, SPIDER), a connection
# string, and data or index files placed elsewhere (DATA/INDEX DIRECTORY, on the table or a
# partition). Read on the definition with its quoted parts and comments blanked out.
OUTSIDE_OPTIONS = re.compile(
    r"\bENGINE\s*=?\s*(?:CONNECT|FEDERATED|FEDERATEDX|SPIDER)\b|\b(?:DATA|INDEX)\s+DIRECTORY\b|\bCONNECTION\s*=", re.I
)
SET_ITEM = re.compile(r"(?:SESSION\s+)?(@?@?[\w.]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^,]+)", re.I)
SESSION_KEYS = {"character_set_client": "charset", "collation_connection": "collation", "sql_mode": "sql_mode"}
DEFAULT_SESSION = {"charset": "utf8mb4", "collation": "utf8mb4_general_ci", "sql_mode": ""}
READ = 1 << 20


def statements(fh: IO[bytes], where: str) -> Iterator[bytes]:
    """The script's statements, without their delimiter, as the `mariadb` client cuts them."""
    delimiter = b";"
    held: list[bytes] = []
    for number, line in enumerate(fh, 1):
        if not held:
            stripped = line.strip()
            if not stripped or stripped.startswith((b"-- ", b"#")) or stripped == b"--":
                continue
            if stripped[:10].upper() == b"DELIMITER ":
                delimiter = stripped[10:].strip()
                continue
            if stripped[:3] == b"\\C ":  # the client's `charset` command (davit's own exports begin with one)
                _utf8_only(stripped[3:].strip(), where, number)
                continue
        held.append(line)
        text = line.rstrip(b"\r\n").rstrip()
        if text.endswith(delimiter):
            statement = b"".join(held).rstrip()
            if _balanced(statement):
                yield statement[: -len(delimiter)].strip()
                held = []
        elif len(held) > 1_000_000:
            raise PermanentError(f"{where}: line {number}: a statement runs on without its delimiter {delimiter.decode()!r}")
    if held and b"".join(held).strip():
        raise PermanentError(f"{where}: the script ends inside a statement (truncated?)")


def _utf8_only(charset: bytes, where: str, number: int) -> None:
    if charset.lower().rstrip(b";") not in (b"utf8mb4", b"utf8", b"utf8mb3"):
        raise PermanentError(
            f"{where}: line {number}: the script switches the client to character set "
            f"{charset.decode(errors='replace')[:40]!r}: only UTF-8 scripts are imported"
        )


def _balanced(statement: bytes) -> bool:
    """No quote or comment left open (the delimiter that ends the line is a real one)."""
    rest = QUOTED_OR_COMMENT.sub(b"", statement + b"\n")
    return not any(q in rest for q in (b"'", b'"', b"`", b"/*"))


def effective(statement: str) -> str:
    """The statement as the server reads it: executable comments' content kept, markers dropped."""
    return EXECUTABLE.sub(lambda m: m.group(1), statement).strip()


def unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def count_rows(insert: bytes) -> int:
    """The rows an extended INSERT holds: its top-level parenthesised tuples after VALUES."""
    values = re.search(rb"\bVALUES?\b", QUOTED_OR_COMMENT.sub(lambda m: b" " * len(m.group(0)), insert), re.I)
    if values is None:
        return 0
    depth = rows = 0
    for token in TUPLES.finditer(insert, values.end()):
        if token.group(0) == b"(":
            rows += depth == 0
            depth += 1
        elif token.group(0) == b")":
            depth -= 1
    return rows


@dataclass
class _Database:
    create: str
    tables: dict[str, TableEntry] = field(default_factory=dict)
    objects: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


class _Script:
    """What the statements build up: databases, tables, objects, and the session's settings."""

    def __init__(self, where: str, default_db: str | None) -> None:
        self.where = where
        self.dbs: dict[str, _Database] = {}
        self.current: str | None = None
        self.session = dict(DEFAULT_SESSION)
        self.left_out: set[str] = set()  # the server's own databases the script holds (accounts...)
        if default_db:
            self._use(default_db)

    def _use(self, db: str) -> _Database | None:
        """`db` is the current database; the server's own (`mysql`: accounts, password hashes,
        grants; `sys`...) is left out with everything in it, as a backup leaves it out."""
        self.current = db
        if db.lower() in SYSTEM_DATABASES:
            self.left_out.add(db)
            return None
        return self.dbs.setdefault(db, _Database(f"CREATE DATABASE {quote_name(db)}"))

    def db(self, what: str) -> _Database:
        if self.current is None:
            raise PermanentError(f"{self.where}: {what} before any USE or CREATE DATABASE: give --database")
        return self.dbs[self.current]

    def take(self, raw: bytes, store: Any) -> None:
        skipping = self.current is not None and self.current in self.left_out
        if INSERT.match(raw):
            return None if skipping else self._insert(raw, store)
        text = effective(raw.decode("utf-8", errors="surrogateescape"))
        head = text[:12].upper()
        if head.startswith("SET "):
            self._set(text[4:])
        elif m := USE.match(text):
            self._use(unquote(m.group(1)))
        elif m := CREATE_DATABASE.match(text):
            name = unquote(m.group(1))
            if found := self._use(name):
                found.create = f"CREATE DATABASE {quote_name(name)}{text[m.end() :]}"
        elif skipping:
            return None
        elif m := CREATE_TABLE.match(text):
            name = unquote(m.group(1))
            self._own_table(name, text, m.end())
            engine = ENGINE.search(text)
            db = self.db(f"table {name}")
            db.objects.pop(("view", name), None)
            db.tables[name] = TableEntry(self.current or "", name, text, engine.group(1) if engine else "", [])
        elif head.startswith("CREATE") and (m := CREATE_OBJECT.match(text)):
            if text[m.end() :].lstrip().startswith("."):
                raise PermanentError(f"{self.where}: {m.group(1).lower()} {m.group(2)}: names another database: refused")
            self._object(m.group(1).lower(), unquote(m.group(2)), text)
        return None

    def _own_table(self, name: str, text: str, end: int) -> None:
        """Refuse a definition of another database's table, or one filled by a SELECT."""
        rest = text[end:]
        blanked = QUOTED_OR_COMMENT.sub(lambda q: b" " * len(q.group(0)), rest.encode("utf-8", "surrogateescape") + b"\n")
        if rest.lstrip().startswith(".") or SELECT_WORD.search(blanked.decode("utf-8", "surrogateescape")):
            raise PermanentError(
                f"{self.where}: table {name}: only a table of the script's own database, defined by its columns, "
                f"is imported: refused {_shown(text)}"
            )
        if m := OUTSIDE_OPTIONS.search(blanked.decode("utf-8", "surrogateescape")):
            raise PermanentError(
                f"{self.where}: table {name}: {' '.join(m.group(0).split())!r} reaches files or servers outside the "
                f"server's own tables: refused {_shown(text)}"
            )

    def _set(self, assignments: str) -> None:
        for name, value in SET_ITEM.findall(assignments):
            key = SESSION_KEYS.get(name.lower().lstrip("@").removeprefix("session."))
            if key is None or (name.startswith("@") and not name.startswith("@@")):
                continue
            value = value.strip()
            if value.startswith("@"):  # back to what was saved: the session's default
                self.session[key] = DEFAULT_SESSION[key]
            else:
                self.session[key] = value.strip("'")

    def _object(self, kind: str, name: str, create: str) -> None:
        db = self.db(f"{kind} {name}")
        if kind == "view":
            db.tables.pop(name, None)  # mariadb-dump's stand-in table, if one was made
        # Without its DEFINER: created by the restoring account, a script cannot choose the
        # account its objects run as (mariadb-dump --skip-definer's output).
        create = without_definer(create.strip())
        db.objects[(kind, name)] = {"type": kind, "name": name, "create": create, **self.session}

    def _insert(self, raw: bytes, store: Any) -> None:
        m = INSERT.match(raw)
        assert m is not None
        name = unquote(m.group(1).decode("utf-8", errors="surrogateescape"))
        head = ROWS_HEAD.match(raw)
        if "NO_BACKSLASH_ESCAPES" in self.session["sql_mode"].upper():  # its strings end elsewhere than LITERALS reads
            raise PermanentError(f"{self.where}: table {name}: rows under an sql_mode with NO_BACKSLASH_ESCAPES are not imported")
        if head is None or LITERALS.fullmatch(raw, head.end()) is None:
            raise PermanentError(
                f"{self.where}: table {name}: only rows given as literal values are imported "
                f"(INSERT INTO table [(columns)] VALUES (...), as mariadb-dump writes them): "
                f"refused {_shown(raw.decode('utf-8', 'replace'))}"
            )
        db = self.db(f"rows of {name}")
        table = db.tables.get(name)
        if table is None:
            table = db.tables[name] = TableEntry(self.current or "", name, None, "", [])
        table.load_mode = self.session["sql_mode"]
        chunk = raw + b";\n"
        table.chunks.append(store(chunk))
        table.size += len(chunk)
        table.rows += count_rows(raw)


def _shown(statement: str) -> str:
    """The start of a refused statement, on one line."""
    flat = " ".join(statement.split())
    return repr(flat if len(flat) <= 160 else flat[:160] + "...")


def _ordered_objects(objects: dict[tuple[str, str], dict[str, str]]) -> list[dict[str, str]]:
    """Views, then functions and procedures, then triggers, then events (a backup's order)."""
    rank = {"view": 0, "function": 1, "procedure": 1, "trigger": 2, "event": 3}
    return sorted(objects.values(), key=lambda o: rank[o["type"]])


def import_sql(repo: Repository, path: Path, job: str, snapshot_id: str, tuning: Tuning, db: str | None) -> SnapshotInfo:
    """Import the script at `path` as snapshot `snapshot_id` of `job`."""
    where = str(path)
    script = _Script(where, db)
    with repo.locked(exclusive=False):
        writer = ChunkWriter(repo, tuning)

        def store(chunk: bytes) -> str:
            cid = writer.put(chunk)
            if writer.checkpoint_due():
                writer.seal()
            return cid

        try:
            with open(path, "rb") as fh:
                for statement in statements(fh, where):
                    script.take(statement, store)
            writer.seal()
            stored = writer.bytes_stored
        except BaseException:
            writer.abort()
            raise
        if not script.dbs:
            raise PermanentError(f"{where}: no database in it (no CREATE DATABASE or USE): give --database")
        entries: list[Any] = []
        for name, found in script.dbs.items():
            entries.append(DatabaseEntry(name, found.create, _ordered_objects(found.objects)))
            entries += found.tables.values()
        tables = [e for e in entries if isinstance(e, TableEntry)]
        stats = {
            "databases": len(script.dbs),
            "tables": len(tables),
            "rows": sum(t.rows for t in tables),
            "chunk_refs": sum(len(t.chunks) for t in tables),
            "bytes_stored": stored,
        }
        manifest = {
            "id": snapshot_id,
            "job": job,
            "kind": KIND,
            "run_id": "",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {"sql": where, "databases": sorted(script.dbs), "left_out": sorted(script.left_out)},
            "parent": None,
            "stats": stats,
        }
        return repo.publish_snapshot(manifest, tree_zst(entries, tuning.compression_level))
