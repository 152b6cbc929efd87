"""PostgreSQL allows '/' in a database name (`shop/../x` is one name): such a database is
backed up, restored under its own name into a fresh cluster, and exported alone; exported
beside another database (one directory each) it is refused naming it, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.postgres.dumpdir import export_databases
from davit.adapters.repository.repository import Repository
from davit.domain.errors import UnsafeName
from tests.integration.postgres.test_postgres_pgdump_export import units_by_db
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows
from tests.peers.state import PostgresPeer

pytestmark = pytest.mark.postgres


def test_a_database_named_with_slashes_round_trips_and_exports_only_alone(
    pg: Pg, fresh_postgres_server: PostgresPeer, tmp_path: Path
) -> None:
    odd, plain = pg.name("shop/../etc"), pg.name("plain")
    make_db(pg, odd, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 30);")
    make_db(pg, plain, "CREATE TABLE u (id int);")
    repo = Repository.open(tmp_path / "repo")
    backup(pg, repo, odd)

    fresh = Pg(fresh_postgres_server)
    restore(fresh, repo, odd, odd)  # the same name, in another cluster
    assert rows(fresh, odd, "SELECT count(*), sum(id) FROM t") == [(30, 465)]

    units = units_by_db(repo, "b1")[odd]
    export_databases(tmp_path / "alone", {odd: units}, repo.read_chunk, "snapshot b1", nested=False)
    assert (tmp_path / "alone" / "toc.dat").is_file()
    with pytest.raises(UnsafeName, match="holds '/'"):
        export_databases(tmp_path / "both", {odd: units, plain: units}, repo.read_chunk, "snapshot b1", nested=True)
    assert not (tmp_path / "both").exists() and not (tmp_path / "etc").exists()
