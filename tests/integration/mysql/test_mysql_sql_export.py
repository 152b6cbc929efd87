"""`davit export sql`: a mysql.backup snapshot as one SQL script, replayed by the `mariadb`
client into the MariaDB peer under another name: every table's definition and rows, every
view, routine, trigger and event the same as in the source (what mysql.restore brings back:
see test_mysql_roundtrip). Also to standard output for one database of two, and a failed
export leaves no file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.adapters.outfile import write_atomically
from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, contents, restore_spec, run_backup, run_restore
from tests.integration.mysql.test_mysql_roundtrip import make_fidelity_db

pytestmark = pytest.mark.mariadb
BIN = Path(sys.executable).parent


def davit(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([str(BIN / "davit"), "--home", str(home), *args], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def replay(maria: Maria, tmp_path: Path, script: bytes) -> None:
    """`mariadb < script`, the password in a 0600 option file (never in argv)."""
    options = tmp_path / "client.cnf"
    if not options.exists():
        fd = os.open(options, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            p = maria.peer
            fh.write(f"[client]\nhost={p.host}\nport={p.port}\nuser={p.user}\npassword={p.password}\n")
    mariadb = shutil.which("mariadb") or "mysql"
    done = subprocess.run([mariadb, f"--defaults-extra-file={options}"], input=script, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()


def test_a_script_replayed_by_mariadb_under_another_name_equals_the_source(maria: Maria, tmp_path: Path) -> None:
    shop, copy = maria.db("sqlx_shop"), maria.db("sqlx_shop_replayed")
    make_fidelity_db(maria, shop)
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop], chunk_kib=16), "b1")
    out = tmp_path / "shop.sql"
    said = davit(home, "export", "sql", "b1", str(out), "--rename", f"{shop}={copy}")
    assert f"b1: 1 databases written to {out}" in said.stderr.decode()
    text = out.read_bytes()
    assert f"USE `{copy}`;".encode() in text and f"`{shop}`".encode() not in text
    assert sorted(os.listdir(tmp_path)) == ["home", "shop.sql"]  # no temporary file left beside it
    replay(maria, tmp_path, text)
    original, replayed = contents(maria, shop), contents(maria, copy)
    assert sorted(replayed) == sorted(original)
    for key in original:
        assert replayed[key] == original[key], key
    assert len(original["rows many"]) == 3000


def test_one_database_of_two_to_standard_output(maria: Maria, tmp_path: Path) -> None:
    first, second, third = maria.db("sqlx_a"), maria.db("sqlx_b"), maria.db("sqlx_c")
    maria.execute(None, f"CREATE DATABASE `{first}`", f"CREATE DATABASE `{second}` CHARACTER SET latin1")
    maria.execute(first, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    maria.execute(
        second,
        "CREATE TABLE notes (id INT PRIMARY KEY AUTO_INCREMENT, body TEXT)",
        "INSERT INTO notes (body) VALUES ('semi;colon'), ('a $$ and a ;; inside'), ('caf\u00e9')",
        "CREATE PROCEDURE tricky() BEGIN SELECT ';;' AS a, '$$' AS b; END",
        "CREATE VIEW z_first AS SELECT id FROM notes",
        "CREATE VIEW a_second AS SELECT id FROM z_first",  # named before the view it reads
    )
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("two", maria, databases=[first, second]), "b1")
    text = davit(home, "export", "sql", "b1", "-", "--database", second, "--rename", f"{second}={third}").stdout
    assert first.encode() not in text and second.encode() not in text
    replay(maria, tmp_path, text)
    assert contents(maria, third) == contents(maria, second)
    refused = subprocess.run(
        [str(BIN / "davit"), "--home", str(home), "export", "sql", "b1", "-", "--database", "nope"], capture_output=True
    )
    assert refused.returncode != 0 and b"snapshot b1 holds no database nope" in refused.stderr


def test_an_export_that_fails_midway_leaves_no_file(tmp_path: Path) -> None:
    def blocks() -> Iterator[bytes]:
        yield b"CREATE DATABASE x;\n"
        raise OSError("chunk 1 is missing")

    with pytest.raises(OSError, match="chunk 1 is missing"):
        write_atomically(tmp_path / "out.sql", blocks())
    assert os.listdir(tmp_path) == []


def mariadb_dump(maria: Maria, tmp_path: Path, *args: str) -> bytes:
    options = tmp_path / "dump.cnf"
    if not options.exists():
        fd = os.open(options, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            p = maria.peer
            fh.write(f"[client]\nhost={p.host}\nport={p.port}\nuser={p.user}\npassword={p.password}\n")
    dump = shutil.which("mariadb-dump") or "mysqldump"
    done = subprocess.run([dump, f"--defaults-extra-file={options}", *args], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.mark.parametrize("whole", [True, False], ids=["with-databases", "one-database-script"])
def test_a_mariadb_dump_script_imported_is_restored_by_mysql_restore(maria: Maria, tmp_path: Path, whole: bool) -> None:
    shop, copy = maria.db("sqlx_legacy"), maria.db("sqlx_legacy_restored")
    make_fidelity_db(maria, shop)
    flags = ["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"]
    script = tmp_path / "legacy.sql"
    script.write_bytes(mariadb_dump(maria, tmp_path, *flags, *(["--databases", shop] if whole else [shop])))
    home = tmp_path / "home"
    Repository.open(home / "repository").close()
    named = [] if whole else ["--database", shop]
    imported = json.loads(davit(home, "import", "sql", str(script), "--job", "legacy", "--json", *named).stdout)
    assert imported["kind"] == "mysql" and imported["stats"]["tables"] == 8
    assert imported["stats"]["rows"] == 3 + 2 + 2 + 4 + 1 + 0 + 3000 + 1
    assert "0 problems" in davit(home, "verify", imported["id"]).stdout.decode()
    repo = Repository.open(home / "repository")
    run_restore(repo, restore_spec("back", maria, {"job": "legacy"}, rename={shop: copy}), "r1")
    original, restored = contents(maria, shop), contents(maria, copy)
    assert sorted(restored) == sorted(original)
    for key in original:
        assert restored[key] == original[key], key


def test_a_script_cut_short_is_refused_and_nothing_is_published(maria: Maria, tmp_path: Path) -> None:
    shop = maria.db("sqlx_legacy")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(shop, "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END")
    text = mariadb_dump(maria, tmp_path, "--routines", "--databases", shop)
    cut = text[: text.index(b"SELECT 2")]
    (tmp_path / "cut.sql").write_bytes(cut)
    home = tmp_path / "home"
    Repository.open(home / "repository").close()
    refused = subprocess.run(
        [str(BIN / "davit"), "--home", str(home), "import", "sql", str(tmp_path / "cut.sql"), "--job", "legacy"],
        capture_output=True,
    )
    assert refused.returncode != 0
    assert f"{tmp_path / 'cut.sql'}: the script ends inside a statement (truncated?)".encode() in refused.stderr
    assert davit(home, "snapshots", "--json").stdout == b""
