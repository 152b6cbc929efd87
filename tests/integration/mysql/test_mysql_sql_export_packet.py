"""`davit export sql` of a row whose INSERT is far over max_allowed_packet (about 47 MiB against
the peer's and the `mariadb` client's 16 MiB): the script carries it in statements under the
packet, as mysql.restore sends it, and the `mariadb` client replays it into a fresh database
with every value equal. A value over the export's packet refuses the export naming the table;
the guard written after a value built in a variable stops the replay when the server cut it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, run_backup
from tests.integration.mysql.test_mysql_hostile_values import BIG_ROW, _digests
from tests.integration.mysql.test_mysql_sql_export import BIN

pytestmark = pytest.mark.mariadb


def _export(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BIN / "davit"), "--home", str(home), "export", "sql", *args], capture_output=True, timeout=300)


def _replay(maria: Maria, tmp_path: Path, script: bytes) -> subprocess.CompletedProcess[bytes]:
    """`mariadb < script` (its defaults: a 16 MiB max_allowed_packet), the password in a 0600
    option file; what it said cut to its end (it echoes a failed statement whole)."""
    options = tmp_path / "client.cnf"
    if not options.exists():
        fd = os.open(options, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            p = maria.peer
            fh.write(f"[client]\nhost={p.host}\nport={p.port}\nuser={p.user}\npassword={p.password}\n")
    mariadb = shutil.which("mariadb") or "mysql"
    done = subprocess.run([mariadb, f"--defaults-extra-file={options}"], input=script, capture_output=True, timeout=300)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout[-2000:], done.stderr[-2000:])


def _longest_statement(script: bytes) -> int:
    return max(len(s) for s in script.split(b";\n"))


def test_a_row_over_the_packet_is_exported_in_pieces_mariadb_replays(maria: Maria, tmp_path: Path) -> None:
    # Before: the row was one 47 MiB INSERT in the script, which the client refused to send
    # ("max_allowed_packet" / "server has gone away") and the replay stopped there.
    src, copy = maria.db("sqlp_src"), maria.db("sqlp_copy")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, *BIG_ROW)
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("big", maria, databases=[src]), "b1")
    repo.close()
    out = tmp_path / "big.sql"
    done = _export(home, "b1", str(out), "--rename", f"{src}={copy}")
    assert done.returncode == 0, done.stderr
    text = out.read_bytes()
    replayed = _replay(maria, tmp_path, text)
    assert replayed.returncode == 0, replayed.stderr
    assert len(text) > 40 << 20 and _longest_statement(text) < 16 << 20
    assert b"@davit_v0" in text
    assert _digests(maria, copy) == _digests(maria, src)


def test_a_value_over_the_exports_packet_refuses_it_naming_the_table_and_leaves_no_file(maria: Maria, tmp_path: Path) -> None:
    src = maria.db("sqlp_one")
    maria.execute(None, f"CREATE DATABASE `{src}`")
    maria.execute(src, "CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)", "INSERT INTO t VALUES (1, REPEAT(0x61, 2 << 20))")
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("one", maria, databases=[src]), "b1")
    repo.close()
    out = tmp_path / "one.sql"
    done = _export(home, "b1", str(out), "--max-allowed-packet", str(1 << 20))
    said = done.stderr.decode()
    assert done.returncode != 0 and f"{src}.t: " in said and "column 2" in said, said
    assert "--max-allowed-packet" in said and "2098176" in said, said  # the size to set: 2 MiB + 1, in KiB
    assert not out.exists()
    done = _export(home, "b1", str(out), "--max-allowed-packet", str(8 << 20))  # raised over its 4 MiB of hex: whole
    assert done.returncode == 0 and b"@davit_v0" not in out.read_bytes()


def test_the_guard_after_a_value_cut_to_null_stops_the_replay_naming_the_table(maria: Maria, tmp_path: Path) -> None:
    # What the script holds after a value built in a variable, replayed with the variable NULL
    # (the server cut it): the client stops with the guard's error, the INSERT after it never runs.
    from davit.adapters.mysql.script import _guard

    db = maria.db("sqlp_guard")
    maria.execute(None, f"CREATE DATABASE `{db}`")
    maria.execute(db, "CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)")
    script = f"USE `{db}`;\nSET @davit_v0 = NULL;\n".encode() + _guard(b"@davit_v0", f"{db}.t", 1 << 20)
    script += b"INSERT INTO t VALUES (1, @davit_v0);\n"
    failed = _replay(maria, tmp_path, script)
    assert failed.returncode != 0
    assert f"a value of {db}.t is larger than this server's max_allowed_packet" in failed.stderr.decode()
    with maria.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone()[0] == 0
    ok = f"USE `{db}`;\nSET @davit_v0 = 'x';\n".encode() + _guard(b"@davit_v0", f"{db}.t", 1 << 20)
    passed = _replay(maria, tmp_path, ok + b"INSERT INTO t VALUES (1, @davit_v0);\n")  # a value built: the guard passes
    assert passed.returncode == 0, passed.stderr
    with maria.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT b FROM t")
        assert cur.fetchall() == ((b"x",),)
