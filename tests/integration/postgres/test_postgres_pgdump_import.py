"""`davit import pgdump`: an archive written by pg_dump itself (`-Fd`, gzip or plain
data files) imported as a snapshot of a job, then restored by postgres.restore under another
name, against the real PostgreSQL peer: every row, object, large object and sequence as in the
source; likewise a custom archive file (`-Fc`, plain or zlib). Either cut short is refused by
name, publishing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from davit.adapters.postgres.client import tool
from davit.adapters.postgres.importdump import import_pgdump
from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from tests.integration.postgres import test_postgres_selection as selection
from tests.integration.postgres.test_postgres_pgdump_export import pg_env
from tests.integration.postgres.test_postgres_roundtrip import FIDELITY, Pg, restore
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import SHOP, make_db

pytestmark = pytest.mark.postgres
BIN = Path(sys.executable).parent


def davit(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "davit"), "--home", str(home), *args], capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("d", "0"), ("d", "6"), ("c", "0"), ("c", "6")],
    ids=["dir-plain", "dir-gzip", "custom-plain", "custom-zlib"],
)
def test_a_pg_dump_archive_imported_is_restored_by_postgres_restore(pg: Pg, tmp_path: Path, fmt: str, compression: str) -> None:
    shop, copy = pg.name("sqlx_legacy"), pg.name("sqlx_legacy_restored")
    make_db(pg, shop, FIDELITY)
    dump = tmp_path / "dump"
    argv = [tool("pg_dump"), f"-F{fmt}", f"-Z{compression}", "-f", str(dump), shop]
    subprocess.run(argv, env=pg_env(pg, tmp_path), check=True)
    home = tmp_path / "home"
    Repository.open(home / "repository").close()
    imported = json.loads(davit(home, "import", "pgdump", str(dump), "--job", "legacy", "--json").stdout)
    assert imported["job"] == "legacy" and imported["kind"] == "postgres"
    assert imported["stats"]["tables"] == 6 and imported["stats"]["rows"] == 3003 + 2 + 400 + 2 + 2
    assert "0 problems" in davit(home, "verify", imported["id"]).stdout
    repo = Repository.open(home / "repository")
    spec = {"name": "pgr", "kind": "postgres.restore", "source": {"job": "legacy"}, "target": pg.server(rename={shop: copy})}
    restored = restore(repo, spec, "r1")
    assert restored["rows"] == imported["stats"]["rows"]
    assert pg.snapshot_of(copy) == pg.snapshot_of(shop)


def test_a_truncated_custom_archive_and_data_file_are_refused_by_name(pg: Pg, tmp_path: Path) -> None:
    shop = pg.name("sqlx_legacy")
    make_db(pg, shop, SHOP)
    env = pg_env(pg, tmp_path)
    subprocess.run([tool("pg_dump"), "-Fc", "-f", str(tmp_path / "shop.dump"), shop], env=env, check=True)
    subprocess.run([tool("pg_dump"), "-Fd", "-Z0", "-f", str(tmp_path / "dir"), shop], env=env, check=True)
    home = tmp_path / "home"
    Repository.open(home / "repository").close()
    whole = (tmp_path / "shop.dump").read_bytes()
    (tmp_path / "shop.dump").write_bytes(whole[: len(whole) - 300])
    refused = davit(home, "import", "pgdump", str(tmp_path / "shop.dump"), "--job", "legacy", ok=False)
    assert f"{tmp_path / 'shop.dump'}: the archive ends in the middle of its data (truncated?)" in refused.stderr
    biggest = max((tmp_path / "dir").glob("[0-9]*.dat"), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:-20])
    refused = davit(home, "import", "pgdump", str(tmp_path / "dir"), "--job", "legacy", ok=False)
    assert "does not end with pg_dump's end marker (truncated?)" in refused.stderr and str(tmp_path / "dir") in refused.stderr
    assert davit(home, "snapshots", "--json").stdout == ""  # nothing published


def test_a_table_left_out_of_restoring_an_imported_archive_is_left_out_of_its_schema_too(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("sqlx_shop"), pg.name("sqlx_copy")
    make_db(pg, shop, SHOP)
    subprocess.run([tool("pg_dump"), "-Fd", "-f", str(tmp_path / "dir"), shop], env=pg_env(pg, tmp_path), check=True)
    repo = Repository.open(tmp_path / "repo")
    import_pgdump(repo, tmp_path / "dir", "pg", "imported1", Tuning(), None)
    selection.restore(pg, repo, shop, copy, exclude=[f"{shop}.public.audit"])
    found = selection.relations(pg, copy)
    assert {"customers", "orders", "log", "lookup", "customers_pkey", "orders_pkey", "orders_id_seq"} <= found
    assert not found & {"audit", "audit_id_seq", "audit_pkey", "audit_what", "recent"}
    assert selection.rows(pg, copy, "SELECT count(*) FROM orders") == [(500,)]
    constraints = {r[0] for r in selection.rows(pg, copy, "SELECT conname FROM pg_constraint WHERE contype = 'f'")}
    assert constraints == {"orders_customer_fkey"}  # the one pointing at audit went with it
