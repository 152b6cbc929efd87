"""mysql.backup / mysql.restore job files: the server by reference only, table patterns checked,
renames that cannot collide; and rows as SQL text (literals the server writes per column type, statements cut by content)."""

from __future__ import annotations

from typing import Any

import pytest

from davit.adapters.mysql.layout import DatabaseEntry, TableEntry
from davit.adapters.mysql.restore import restore_selection
from davit.adapters.mysql.sqltext import insert_head, statements
from davit.domain.errors import InvalidJob, PermanentError
from davit.domain.jobs import MysqlBackupJob, MysqlRestoreJob, job_from_dict


def backup(**source: Any) -> Any:
    return job_from_dict({"name": "b", "kind": "mysql.backup", "source": source}, "b.toml")


def restore(**target: Any) -> Any:
    return job_from_dict({"name": "r", "kind": "mysql.restore", "source": {"job": "b"}, "target": target}, "r.toml")


def problems(exc: pytest.ExceptionInfo[InvalidJob]) -> str:
    return "; ".join(f"{p.field}: {p.reason}" for p in exc.value.problems)


def test_a_backup_names_its_password_by_reference_and_keeps_user_databases_by_default() -> None:
    spec = backup(user="backup", password_file="/etc/davit/pw")
    assert isinstance(spec, MysqlBackupJob)
    assert spec.source.databases == [] and spec.parallel == 2 and spec.source.users is False


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"user": "u", "password": "inline"}, "never written inline"),
        ({"user": "u"}, "exactly one of password_file or password_env"),
        ({"user": "u", "password_file": "/a", "password_env": "B"}, "exactly one of password_file or password_env"),
        ({"password_env": "B"}, "give user"),
        ({"defaults_file": "/etc/my.cnf", "password_env": "B"}, "not both"),
        ({"user": "u", "password_file": "relative/pw"}, "absolute path"),
        ({"user": "u", "password_env": "B", "include": ["shop"]}, "DB.TABLE"),
        ({"user": "u", "password_env": "B", "databases": ["a/b"]}, "not a database name"),
    ],
)
def test_a_bad_backup_source_is_refused_naming_the_field(source: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidJob) as exc:
        backup(**source)
    assert reason in problems(exc)


def test_a_restore_may_rename_but_never_two_databases_into_one() -> None:
    spec = restore(user="u", password_env="P", rename={"shop": "shop_restored"}, if_exists="merge")
    assert isinstance(spec, MysqlRestoreJob) and spec.target.rename == {"shop": "shop_restored"}
    with pytest.raises(InvalidJob) as exc:
        restore(user="u", password_env="P", rename={"a": "same", "b": "same"})
    assert "several databases renamed to same" in problems(exc)
    with pytest.raises(InvalidJob) as exc:
        restore(user="u", password_env="P", if_exists="replace")
    assert "target.if_exists" in problems(exc)


def test_a_rename_onto_a_database_the_snapshot_also_holds_is_refused_before_any_table_loads() -> None:
    """The snapshot holds `shop` and `shop_old`; `rename = { shop_old = "shop" }` would load both
    `orders` tables into `shop.orders` as one step name: one load's rows emptied or doubled by the
    other's. The job's own check sees only rename's targets, so the snapshot's names decide."""
    entries: list[Any] = [DatabaseEntry(db, f"CREATE DATABASE `{db}`") for db in ("shop", "shop_old")]
    entries += [TableEntry(db, "orders", "CREATE TABLE `orders` (id INT)", "InnoDB", ["id"]) for db in ("shop", "shop_old")]
    spec = restore(user="u", password_env="P", rename={"shop_old": "shop"}, if_exists="merge")
    with pytest.raises(PermanentError, match="databases shop and shop_old of the snapshot would both be restored into shop"):
        restore_selection(entries, spec.target)
    only_old = restore(user="u", password_env="P", rename={"shop_old": "shop"}, include=["shop_old.*"], if_exists="merge")
    _chosen, pairs = restore_selection(entries, only_old.target)
    assert pairs == [["shop_old", "shop"]]


def test_an_insert_names_its_table_and_columns_quoted() -> None:
    assert insert_head("odd`name", ["a b"]) == b"INSERT INTO `odd``name` (`a b`) VALUES\n"


def test_statements_hold_whole_rows_and_cut_at_the_same_rows_after_an_insert_before_them() -> None:
    rows = [f"({i},'value {i} value {i} value {i}')".encode() for i in range(5000)]
    first = list(statements(b"H\n", [rows[:1000], rows[1000:]], 4096))
    assert sum(n for _, n in first) == 5000 and all(len(s) <= 4096 for s, _ in first)
    changed = list(statements(b"H\n", [[*rows[:100], b"(100.5,'new row')", *rows[100:]]], 4096))
    assert len(set(first) & set(changed)) >= len(first) - 3  # only the statements near the new row differ
