"""Smoke test: the MongoDB-wire peer (FerretDB) stores and returns a document."""

from __future__ import annotations

import uuid

import pytest
from pymongo import MongoClient

from tests.peers.state import MongoPeer

pytestmark = pytest.mark.mongo


def test_insert_and_read_back(mongo_peer: MongoPeer) -> None:
    client: MongoClient = MongoClient(mongo_peer.uri, serverSelectionTimeoutMS=5000)
    db = client[f"davit_smoke_{uuid.uuid4().hex[:8]}"]
    try:
        db.things.insert_one({"_id": 1, "name": "davit", "tags": ["a", "b"], "n": 1.5})
        assert db.things.find_one({"_id": 1}) == {"_id": 1, "name": "davit", "tags": ["a", "b"], "n": 1.5}
        assert client.server_info()["version"]
    finally:
        client.drop_database(db.name)
        client.close()
