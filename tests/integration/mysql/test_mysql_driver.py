"""The rows of a backup are read through the C driver (mysqlclient) when it is installed, else
through PyMySQL: an operator who installs it, or a machine without it, gets the very same
snapshot, so a backup after the switch deduplicates against the ones before it and a restore
reads both."""

from __future__ import annotations

import os

import pytest

from davit.adapters.mysql import cdriver
from davit.adapters.mysql.layout import TableEntry, read_tree
from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, contents, restore_spec, run_backup, run_restore
from tests.integration.mysql.test_mysql_roundtrip import make_fidelity_db

pytestmark = pytest.mark.mariadb


@pytest.fixture(autouse=True)
def c_driver_installed() -> None:
    if cdriver.MySQLdb is None:
        why = "mysqlclient is not installed (README, MariaDB/MySQL: libmariadb-dev, then pip install mysqlclient)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def tables(repo: Repository, snapshot: str) -> dict[str, TableEntry]:
    entries = read_tree(repo.tree_bytes(repo.resolve(snapshot)))
    return {e.name: e for e in entries if isinstance(e, TableEntry)}


def test_a_backup_through_the_c_driver_stores_what_a_pymysql_backup_stored(
    maria: Maria, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = maria.db("shop")
    make_fidelity_db(maria, shop)
    spec = backup_spec("shop-nightly", maria, databases=[shop], chunk_kib=16, parallel=2)

    monkeypatch.setattr(cdriver, "PREFER_C", False)
    _, before = run_backup(repo, spec, "b1")
    monkeypatch.setattr(cdriver, "PREFER_C", True)
    _, after = run_backup(repo, spec, "b2")

    assert before["driver"].startswith("PyMySQL") and after["driver"].startswith("mysqlclient")
    assert before["bytes_stored"] > 0 and after["bytes_stored"] == 0  # every chunk was already there
    old, new = tables(repo, "b1"), tables(repo, "b2")
    assert sorted(new) == sorted(old) and len(new) == 8
    for name, entry in old.items():
        assert new[name].to_dict() == entry.to_dict(), name


def test_a_snapshot_read_through_the_c_driver_restores_every_value(maria: Maria, repo: Repository) -> None:
    shop, restored = maria.db("shop"), maria.db("restored")
    make_fidelity_db(maria, shop)
    _, details = run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop], parallel=2), "b1")
    assert details["driver"].startswith("mysqlclient")

    run_restore(repo, restore_spec("shop-restore", maria, {"snapshot": "b1"}, rename={shop: restored}), "r1")

    original, copy = contents(maria, shop), contents(maria, restored)
    assert sorted(copy) == sorted(original)
    for key in original:
        assert copy[key] == original[key], key
