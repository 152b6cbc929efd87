"""Failures of the MariaDB adapter are classified and never show the password: a wrong password
is a permanent failure naming the user and the server; a server that is down is retryable; a
table the target cannot take fails the restore naming it."""

from __future__ import annotations

import socket

import pytest

from davit.adapters.mysql.client import MysqlAuthFailed, MysqlRefused, MysqlUnreachable
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError, RetryableError
from tests.integration.mysql.helpers import PASSWORD_ENV, Maria, backup_spec, restore_spec, run_backup, run_restore

pytestmark = pytest.mark.mariadb
WRONG = "Wr0ng-s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wrong_password_is_a_permanent_failure_naming_user_and_server_never_the_password(
    maria: Maria, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, WRONG)
    with pytest.raises(PermanentError) as err:
        run_backup(repo, backup_spec("wrong", maria, databases=["anything"]), "b1")
    assert isinstance(err.value, MysqlAuthFailed)
    message = str(err.value)
    assert f"user '{maria.peer.user}' on {maria.peer.host}:{maria.peer.port}" in message
    assert "Access denied" in message
    assert WRONG not in message and maria.peer.password not in message


def test_a_server_that_is_down_is_retryable_without_the_password(
    maria: Maria, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    spec = backup_spec("down", maria, databases=["anything"], port=port)
    with pytest.raises(RetryableError) as err:
        run_backup(repo, spec, "b1")
    assert isinstance(err.value, MysqlUnreachable)
    assert f"127.0.0.1:{port}" in str(err.value) and maria.peer.password not in str(err.value)


def test_a_table_the_target_refuses_fails_the_restore_naming_it(maria: Maria, repo: Repository) -> None:
    shop, target = maria.db("shop"), maria.db("target")
    maria.execute(None, f"CREATE DATABASE `{shop}`", f"CREATE DATABASE `{target}`")
    maria.execute(shop, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'long value here')")
    # data_only: the restore loads into the target's own table, which is too narrow in strict mode
    maria.execute(target, "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
    run_backup(repo, backup_spec("shop-nightly", maria, databases=[shop], data_only=[f"{shop}.t"]), "b1")
    spec = restore_spec("r", maria, {"snapshot": "b1"}, rename={shop: target}, if_exists="merge")
    with pytest.raises(MysqlRefused, match=rf"loading {target}\.t"):
        run_restore(repo, spec, "r1")
