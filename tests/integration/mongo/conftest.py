"""Fixtures of the MongoDB adapter tests: a client on the FerretDB peer, unique database names
dropped afterwards, the peer's URI in the environment variable the job specs name; and the
peer's second instance, which has authentication on and one user."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from davit.adapters.repository.repository import Repository
from tests.integration.mongo.helpers import URI_ENV, AuthServer, auth_server
from tests.peers.state import MongoPeer


@dataclass
class Mongo:
    client: MongoClient[Any]
    uri: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    def db(self, name: str) -> str:
        """A database name unique to this test (FerretDB is shared between tests)."""
        full = f"{name}_{self.tag}"
        self.created.append(full)
        return full


@pytest.fixture
def mongo(mongo_peer: MongoPeer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mongo]:
    monkeypatch.setenv(URI_ENV, mongo_peer.uri)
    client: MongoClient[Any] = MongoClient(mongo_peer.uri, serverSelectionTimeoutMS=10_000)
    m = Mongo(client, mongo_peer.uri)
    yield m
    for name in m.created:
        client.drop_database(name)
    client.close()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    r = Repository.open(tmp_path / "repo")
    yield r
    r.close()


@pytest.fixture
def mongo_auth(mongo_peer: MongoPeer) -> AuthServer:
    return auth_server(mongo_peer)
