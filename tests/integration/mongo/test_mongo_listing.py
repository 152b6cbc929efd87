"""Sorting out what `listCollections` reports as mongodump does, without a server (FerretDB has
no views or time-series collections, so the peer cannot show them): collections are dumped,
a view is kept as its definition in mongodump's `metadata.json` form, time-series and system
collections are skipped with the reason."""

from __future__ import annotations

from bson import json_util

from adapters.mongo.backup import classify


def test_views_become_definitions_and_timeseries_and_system_collections_are_skipped() -> None:
    listed = [
        ("app", {"name": "orders", "type": "collection", "options": {}, "info": {}}),
        ("app", {"name": "open_orders", "type": "view",
                 "options": {"viewOn": "orders", "pipeline": [{"$match": {"open": True}}],
                             "collation": {"locale": "fr"}}}),
        ("app", {"name": "weather", "type": "timeseries", "options": {"timeseries": {"timeField": "at"}}}),
        ("app", {"name": "system.buckets.weather", "type": "collection", "options": {}}),
        ("app", {"name": "system.views", "type": "collection", "options": {}}),
        ("app", {"name": "system.js", "type": "collection", "options": {}}),
        ("logs", {"name": "events"}),  # servers that leave out `type` list ordinary collections
    ]
    found, views, skipped = classify(listed)
    assert found == ["app.orders", "app.system.js", "logs.events"]
    assert list(views) == ["app.open_orders"]
    meta = json_util.loads(views["app.open_orders"], json_options=json_util.CANONICAL_JSON_OPTIONS)
    assert meta == {"options": {"viewOn": "orders", "pipeline": [{"$match": {"open": True}}],
                                "collation": {"locale": "fr"}},
                    "indexes": [], "collectionName": "open_orders", "type": "view"}
    assert skipped == ["app.system.buckets.weather: a system collection", "app.system.views: a system collection",
                       "app.weather: a time-series collection (not supported yet)"]
