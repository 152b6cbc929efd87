"""`davit export pgdump`: a postgres.backup snapshot written as a pg_dump directory archive,
restored by Debian's pg_restore 15 into a new database (serially and with -j), against the
real PostgreSQL peer: every table's rows, every object, large object and sequence as in the
source (which is what postgres.restore brings back: see test_postgres_roundtrip). With two
databases, a directory each; an export that fails leaves nothing that looks like an archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from davit.adapters.postgres.archive import directory_toc, read_archive
from davit.adapters.postgres.client import tool
from davit.adapters.postgres.dumpdir import export_databases
from davit.adapters.postgres.layout import Unit, read_tree
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError, UnsafeName
from tests.integration.postgres.test_postgres_roundtrip import FIDELITY, Pg, backup
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import SHOP, make_db

pytestmark = pytest.mark.postgres
BIN = Path(sys.executable).parent


def units_by_db(repo: Repository, snapshot: str) -> dict[str, list[Unit]]:
    out: dict[str, list[Unit]] = {}
    for unit in read_tree(repo.tree_bytes(repo.resolve(snapshot))):
        if unit.kind != "roles":
            out.setdefault(unit.db, []).append(unit)
    return out


def pg_env(pg: Pg, tmp_path: Path) -> dict[str, str]:
    passfile = tmp_path / "pgpass"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{pg.peer.host}:{pg.peer.port}:*:{pg.peer.user}:{pg.peer.password}\n")
    return {
        **os.environ,
        "PGPASSFILE": str(passfile),
        "PGHOST": pg.peer.host,
        "PGPORT": str(pg.peer.port),
        "PGUSER": pg.peer.user,
    }


def pg_restore(env: dict[str, str], db: str, directory: Path, *more: str) -> None:
    argv = [tool("pg_restore"), "--exit-on-error", "-d", db, *more, str(directory)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["serial", "parallel"])
def test_an_exported_snapshot_restored_by_pg_restore_equals_the_source(pg: Pg, tmp_path: Path, jobs: str) -> None:
    shop, copy = pg.name("sqlx_shop"), pg.name("sqlx_shop_pgrestored")
    make_db(pg, shop, FIDELITY)
    with pg.connect(shop) as conn:  # a view of views refreshed after the view it reads
        conn.execute("CREATE MATERIALIZED VIEW happy_counts AS SELECT m, n FROM counts WHERE m = 'happy'")
        conn.execute('CREATE TABLE "Odd Schema".nothing (id int)')  # an empty table
    repo = Repository.open(tmp_path / "repo")
    backup(repo, {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop])}, "b1")
    out = tmp_path / "dump"
    stats = export_databases(out, units_by_db(repo, "b1"), repo.read_chunk, "snapshot b1", nested=False)
    assert stats["databases"][shop] == {"tables": 7, "rows": 3003 + 2 + 400 + 2 + 2, "large_objects": 2}
    assert sorted(os.listdir(tmp_path)) == ["dump", "repo"]  # no temporary directory left beside it
    env = pg_env(pg, tmp_path)
    listing = subprocess.run([tool("pg_restore"), "-l", str(out)], env=env, capture_output=True, text=True, check=True).stdout
    assert (
        "Format: DIRECTORY" in listing and "TABLE DATA public kinds" in listing and "SEQUENCE SET public kinds_id_seq" in listing
    )
    refreshes = {
        e.tag: e for e in read_archive((out / "toc.dat").read_bytes(), "toc.dat").entries if e.desc == b"MATERIALIZED VIEW DATA"
    }
    assert refreshes[b"counts"].dump_id in refreshes[b"happy_counts"].deps  # -j refreshes counts first
    make_db(pg, copy, "")
    pg_restore(env, copy, out, "-j", jobs)
    assert pg.snapshot_of(copy) == pg.snapshot_of(shop)


def davit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "davit"), "--home", str(home), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_databases_export_a_directory_each_and_one_can_be_chosen(pg: Pg, tmp_path: Path) -> None:
    first, second = pg.name("sqlx_one"), pg.name("sqlx_two")
    make_db(pg, first, SHOP)
    make_db(pg, second, "CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('hi')")
    home = tmp_path / "home"
    repo = Repository.open(home / "repository")
    backup(repo, {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[first, second])}, "b1")
    result = json.loads(davit(home, "export", "pgdump", "b1", str(tmp_path / "all"), "--json").stdout)
    assert result["databases"][second] == {"tables": 1, "rows": 1, "large_objects": 0}
    assert sorted(os.listdir(tmp_path / "all")) == sorted([first, second])
    said = davit(home, "export", "pgdump", "b1", str(tmp_path / "one"), "--database", second).stdout
    assert f"database {second}: 1 tables, 1 rows, 0 large objects written to {tmp_path / 'one'}" in said
    env = pg_env(pg, tmp_path)
    for db, directory in ((first, tmp_path / "all" / first), (second, tmp_path / "one")):
        target = pg.name(f"{db}_r")
        make_db(pg, target, "")
        pg_restore(env, target, directory)
        assert pg.snapshot_of(target) == pg.snapshot_of(db)
    with pg.connect(pg.created[-1]) as conn:
        assert conn.execute("SELECT nextval('notes_id_seq')").fetchone() == (2,)
    refused = subprocess.run(
        [str(BIN / "davit"), "--home", str(home), "export", "pgdump", "b1", str(tmp_path / "x"), "--database", "nope"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "snapshot b1 holds no database nope" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_an_export_that_fails_midway_leaves_no_directory(pg: Pg, tmp_path: Path) -> None:
    shop = pg.name("sqlx_shop")
    make_db(pg, shop, SHOP)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop])}, "b1")
    calls = 0

    def failing_read(chunk: bytes) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise PermanentError("chunk 4 is missing from the repository")
        return repo.read_chunk(chunk)

    with pytest.raises(PermanentError, match="chunk 4 is missing"):
        export_databases(tmp_path / "dump", units_by_db(repo, "b1"), failing_read, "snapshot b1", nested=False)
    assert os.listdir(tmp_path) == ["repo"]
    with pytest.raises(PermanentError, match="exists"):
        export_databases(tmp_path / "repo", units_by_db(repo, "b1"), repo.read_chunk, "snapshot b1", nested=False)


def test_a_database_name_that_would_write_outside_the_directory_refuses_the_export(pg: Pg, tmp_path: Path) -> None:
    shop = pg.name("sqlx_shop")
    make_db(pg, shop, SHOP)
    repo = Repository.open(tmp_path / "repo")
    backup(repo, {"name": "pg", "kind": "postgres.backup", "source": pg.server(databases=[shop])}, "b1")
    units = units_by_db(repo, "b1")[shop]
    hostile = {"../escaped": units, shop: units}
    with pytest.raises(UnsafeName, match=r"snapshot b1 is refused: '\.\./escaped' cannot be written as a path"):
        export_databases(tmp_path / "out" / "dump", hostile, repo.read_chunk, "snapshot b1", nested=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_the_toc_of_a_real_pg_dump_directory_archive_is_read_and_written_back_byte_for_byte(pg: Pg, tmp_path: Path) -> None:
    shop = pg.name("sqlx_shop")
    make_db(pg, shop, SHOP)
    env = pg_env(pg, tmp_path)
    subprocess.run([tool("pg_dump"), "-Fd", "-Z0", "-f", str(tmp_path / "d"), shop], env=env, check=True)
    toc = (tmp_path / "d" / "toc.dat").read_bytes()
    archive = read_archive(toc, "toc.dat")
    assert directory_toc(archive) == toc
    assert {e.desc for e in archive.entries} >= {b"TABLE", b"TABLE DATA", b"SEQUENCE SET", b"CONSTRAINT", b"POLICY"}


def test_an_archive_of_an_unknown_version_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"schema archive: pg_dump archive version 1\.9 is not one davit reads"):
        read_archive(b"PGDMP\x01\x09\x00\x04\x08\x01", "schema archive")
    with pytest.raises(PermanentError, match="not a pg_dump archive"):
        read_archive(b"PK\x03\x04", "x.zip")
