"""`users = true`: roles and users, their password hashes and grants, round trip through a
snapshot. Dropped after the backup, they come back with the restore: the user logs in with
its old password, holds its role by default, and its grants follow a renamed database."""

from __future__ import annotations

import pymysql
import pytest

from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError
from tests.integration.mysql.helpers import Maria, backup_spec, restore_spec, run_backup, run_restore

pytestmark = pytest.mark.mariadb


def grants(maria: Maria, who: str) -> list[str]:
    conn = maria.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SHOW GRANTS FOR {who}")
            return sorted(str(r[0]) for r in cur.fetchall())
    finally:
        conn.close()


def test_roles_users_and_grants_come_back_with_their_passwords(maria: Maria, repo: Repository) -> None:
    shop, restored = maria.db("shop"), maria.db("shop_restored")
    user, role, password = f"app_{maria.tag}", f"reader_{maria.tag}", "App-pw-7"
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    maria.execute(shop, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    maria.execute(
        None,
        f"CREATE ROLE `{role}`",
        f"GRANT SELECT ON `{shop}`.* TO `{role}`",
        f"CREATE USER `{user}`@'%' IDENTIFIED BY '{password}'",
        f"GRANT `{role}` TO `{user}`@'%'",
        f"GRANT INSERT (id) ON `{shop}`.`t` TO `{user}`@'%'",
        f"SET DEFAULT ROLE `{role}` FOR `{user}`@'%'",
    )
    try:
        before = grants(maria, f"`{user}`@'%'") + grants(maria, f"`{role}`")
        ctx, _ = run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop], users=True), "b1")
        recorded = str(ctx.checkpoints) + str(ctx.warnings)
        assert password not in recorded and "IDENTIFIED" not in recorded, "a password or its hash in what the run records"
        maria.execute(None, f"DROP USER `{user}`@'%'", f"DROP ROLE `{role}`")

        run_restore(repo, restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: restored}, users=True), "r1")
        after = grants(maria, f"`{user}`@'%'") + grants(maria, f"`{role}`")
        assert sorted(after) == sorted(g.replace(f"`{shop}`", f"`{restored}`") for g in before)
        conn = pymysql.connect(host=maria.peer.host, port=maria.peer.port, user=user, password=password, database=restored)
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM t")  # through the default role's SELECT on the renamed database
            assert cur.fetchall() == ((1,),)
        conn.close()
    finally:
        maria.execute(None, f"DROP USER IF EXISTS `{user}`@'%'", f"DROP ROLE IF EXISTS `{role}`")


def test_restoring_users_from_a_snapshot_without_them_is_refused(maria: Maria, repo: Repository) -> None:
    shop = maria.db("shop")
    maria.execute(None, f"CREATE DATABASE `{shop}`")
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop]), "b1")
    with pytest.raises(PermanentError, match="holds no accounts"):
        run_restore(repo, restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: maria.db("x")}, users=True), "r1")
