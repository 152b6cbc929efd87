"""Fixtures of the MariaDB adapter tests: the peer's admin password in the environment variable
the job specs name, unique database names dropped afterwards, and a repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from tests.integration.mysql.helpers import PASSWORD_ENV, Maria, drop_created
from tests.peers.state import MariadbPeer


@pytest.fixture
def maria(mariadb_peer: MariadbPeer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Maria]:
    monkeypatch.setenv(PASSWORD_ENV, mariadb_peer.password)
    m = Maria(mariadb_peer)
    yield m
    drop_created(m)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.open(tmp_path / "repo")
    yield r
    r.close()
