"""A database `shop` with a table `a.b` and a database `shop.a` with a table `b` are two tables
whose `db.table` text is the same. A tenant who may create the second database must not be
able to make a backup keep its table in place of the other's: both come back with their rows."""

from __future__ import annotations

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, rows_of, run_backup, run_restore

pytestmark = pytest.mark.mariadb


def test_two_tables_whose_dotted_names_read_alike_both_come_back_with_their_rows(maria: Maria, repo: Repository) -> None:
    shop = maria.db("atk_dots")
    tenant = maria.db("atk_dots") + ".a"
    maria.created.append(tenant)
    shop_back, tenant_back = maria.db("atk_dots_back"), maria.db("atk_dots_back") + ".a"
    maria.created.append(tenant_back)
    maria.execute(None, f"CREATE DATABASE `{shop}`", f"CREATE DATABASE `{tenant}`")
    maria.execute(shop, "CREATE TABLE `a.b` (owner text)", "INSERT INTO `a.b` VALUES ('victim'), ('victim')")
    maria.execute(tenant, "CREATE TABLE `b` (owner text)", "INSERT INTO `b` VALUES ('attacker')")
    run_backup(repo, backup_spec("two", maria, databases=[shop, tenant]), "b1")
    run_restore(repo, restore_spec("back", maria, {"job": "two"}, rename={shop: shop_back, tenant: tenant_back}), "r1")
    assert rows_of(maria, shop_back, "a.b") == [("victim",), ("victim",)]
    assert rows_of(maria, tenant_back, "b") == [("attacker",)]
