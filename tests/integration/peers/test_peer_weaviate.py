"""Smoke test: the Weaviate peer stores an object with its vector and returns both."""

from __future__ import annotations

import uuid

import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property

from tests.peers.state import WeaviatePeer

pytestmark = pytest.mark.weaviate


def test_collection_object_and_vector(weaviate_peer: WeaviatePeer) -> None:
    client = weaviate.connect_to_custom(
        http_host=weaviate_peer.host,
        http_port=weaviate_peer.http_port,
        http_secure=False,
        grpc_host=weaviate_peer.host,
        grpc_port=weaviate_peer.grpc_port,
        grpc_secure=False,
    )
    name = f"DavitSmoke{uuid.uuid4().hex[:8]}"
    try:
        collection = client.collections.create(
            name, properties=[Property(name="title", data_type=DataType.TEXT)], vector_config=Configure.Vectors.self_provided()
        )
        vector = [0.25, -0.5, 0.125, 1.0]
        object_id = collection.data.insert({"title": "hello"}, vector=vector)
        got = collection.query.fetch_object_by_id(object_id, include_vector=True)
        assert got is not None
        assert got.properties["title"] == "hello"
        assert got.vector["default"] == pytest.approx(vector)
    finally:
        client.collections.delete(name)
        client.close()
