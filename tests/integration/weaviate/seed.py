"""Collections for the fidelity tests: every property type, named and multi-vectors, tenants,
cross-references. Deterministic content from a seed."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from weaviate.classes.config import Configure, DataType, Property, ReferenceProperty
from weaviate.classes.data import DataObject, DataReference, GeoCoordinate, PhoneNumber
from weaviate.classes.tenants import Tenant
from weaviate.client import WeaviateClient


def rvec(rnd: random.Random, dims: int) -> list[float]:
    return [rnd.uniform(-1, 1) for _ in range(dims)]


def create_authors(client: WeaviateClient, name: str, count: int = 20) -> list[str]:
    rnd = random.Random(1)
    coll = client.collections.create(
        name, properties=[Property(name="name", data_type=DataType.TEXT)], vector_config=Configure.Vectors.self_provided()
    )
    ids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(count)]
    coll.data.insert_many(
        [DataObject(properties={"name": f"author {i}"}, uuid=u, vector=rvec(rnd, 8)) for i, u in enumerate(ids)]
    )
    return ids


def create_articles(client: WeaviateClient, name: str, authors: str, author_ids: list[str], count: int = 120) -> list[str]:
    """Every scalar and nested type, and a reference to `authors` on most objects; their uuids."""
    rnd = random.Random(2)
    coll = client.collections.create(
        name,
        properties=[
            Property(name="title", data_type=DataType.TEXT),
            Property(name="words", data_type=DataType.INT),
            Property(name="score", data_type=DataType.NUMBER),
            Property(name="published", data_type=DataType.BOOL),
            Property(name="date", data_type=DataType.DATE),
            Property(name="ref_id", data_type=DataType.UUID),
            Property(name="place", data_type=DataType.GEO_COORDINATES),
            Property(name="phone", data_type=DataType.PHONE_NUMBER),
            Property(name="image", data_type=DataType.BLOB),
            Property(
                name="meta",
                data_type=DataType.OBJECT,
                nested_properties=[
                    Property(name="source", data_type=DataType.TEXT),
                    Property(name="rank", data_type=DataType.NUMBER),
                ],
            ),
            Property(
                name="sections",
                data_type=DataType.OBJECT_ARRAY,
                nested_properties=[
                    Property(name="heading", data_type=DataType.TEXT),
                    Property(name="length", data_type=DataType.INT),
                ],
            ),
            Property(name="tags", data_type=DataType.TEXT_ARRAY),
        ],
        references=[ReferenceProperty(name="writtenBy", target_collection=authors)],
        vector_config=Configure.Vectors.self_provided(),
    )
    objects = []
    base = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(count):
        props = {
            "title": f"article {i} ü€",
            "words": rnd.randint(0, 10**9),
            "score": rnd.uniform(-1e6, 1e6),
            "published": i % 2 == 0,
            "date": base + timedelta(seconds=rnd.randint(0, 10**8), microseconds=i),
            "ref_id": uuid.UUID(int=rnd.getrandbits(128), version=4),
            "place": GeoCoordinate(latitude=rnd.uniform(-90, 90), longitude=rnd.uniform(-180, 180)),
            "phone": PhoneNumber(number=f"+31 20 {rnd.randint(1000000, 9999999)}"),
            "image": "aGVsbG8gZGF2aXQ=",
            "meta": {"source": "wire", "rank": float(i)},
            "sections": [{"heading": f"h{j}", "length": j * 10} for j in range(i % 3 + 1)],
            "tags": [f"t{j}" for j in range(i % 4)],
        }
        if i % 7 == 3:
            del props["phone"], props["place"]  # absent properties stay absent
        refs = {"writtenBy": [author_ids[i % len(author_ids)]]} if i % 5 else None
        objects.append(
            DataObject(
                properties=props, uuid=uuid.UUID(int=rnd.getrandbits(128), version=4), vector=rvec(rnd, 16), references=refs
            )
        )
    result = coll.data.insert_many(objects)
    assert not result.errors, result.errors
    return [str(o.uuid) for o in objects]


def create_notes(
    client: WeaviateClient, name: str, articles: str, article_ids: list[str], authors: str, author_ids: list[str], count: int = 45
) -> None:
    """Notes whose `about` may point at articles and authors, both in one note, in a set order."""
    rnd = random.Random(6)
    coll = client.collections.create(
        name,
        properties=[Property(name="text", data_type=DataType.TEXT)],
        references=[ReferenceProperty.MultiTarget(name="about", target_collections=[articles, authors])],
        vector_config=Configure.Vectors.self_provided(),
    )
    objects = [
        DataObject(properties={"text": f"note {i}"}, uuid=uuid.UUID(int=rnd.getrandbits(128), version=4), vector=rvec(rnd, 4))
        for i in range(count)
    ]
    result = coll.data.insert_many(objects)
    assert not result.errors, result.errors
    refs = []
    for i, obj in enumerate(objects):
        if i % 3 == 0:  # article, author, article: mixed targets, order kept
            order = [(articles, article_ids[i]), (authors, author_ids[i % len(author_ids)]), (articles, article_ids[i + 1])]
        elif i % 3 == 1:
            order = [(authors, author_ids[i % len(author_ids)])]
        else:
            continue
        refs += [
            DataReference.MultiTarget(from_uuid=obj.uuid, from_property="about", to_uuid=u, target_collection=c) for c, u in order
        ]
    added = coll.data.reference_add_many(refs)
    assert not added.errors, added.errors


def create_named(client: WeaviateClient, name: str, count: int = 60) -> None:
    """Two named vectors of different sizes and one multi-vector."""
    rnd = random.Random(3)
    coll = client.collections.create(
        name,
        properties=[Property(name="body", data_type=DataType.TEXT)],
        vector_config=[
            Configure.Vectors.self_provided(name="title_vec"),
            Configure.Vectors.self_provided(name="body_vec"),
            Configure.MultiVectors.self_provided(name="colbert"),
        ],
    )
    objects = [
        DataObject(
            properties={"body": f"body {i}"},
            uuid=uuid.UUID(int=rnd.getrandbits(128), version=4),
            vector={"title_vec": rvec(rnd, 12), "body_vec": rvec(rnd, 24), "colbert": [rvec(rnd, 4) for _ in range(i % 3 + 1)]},
        )
        for i in range(count)
    ]
    result = coll.data.insert_many(objects)
    assert not result.errors, result.errors


def create_tenanted(
    client: WeaviateClient, name: str, tenants: tuple[str, ...] = ("alpha", "beta", "gamma"), per_tenant: int = 30
) -> None:
    rnd = random.Random(4)
    coll = client.collections.create(
        name,
        properties=[Property(name="note", data_type=DataType.TEXT)],
        vector_config=Configure.Vectors.self_provided(),
        multi_tenancy_config=Configure.multi_tenancy(enabled=True),
    )
    coll.tenants.create([Tenant(name=t) for t in tenants])
    for t in tenants:
        result = coll.with_tenant(t).data.insert_many(
            [
                DataObject(
                    properties={"note": f"{t} {i}"}, uuid=uuid.UUID(int=rnd.getrandbits(128), version=4), vector=rvec(rnd, 6)
                )
                for i in range(per_tenant)
            ]
        )
        assert not result.errors, result.errors
