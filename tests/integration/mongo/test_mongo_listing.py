"""Sorting out what `listCollections` reports as mongodump does, without a server (FerretDB has
no views or time-series collections, so the peer cannot show them): collections are dumped,
a view is kept as its definition in mongodump's `metadata.json` form, time-series and system
collections are skipped with the reason, and the operator is warned of what they would not
expect to be missing from the snapshot."""

from __future__ import annotations

from bson import json_util

from davit.adapters.mongo.backup import classify, selection_warnings


def test_views_become_definitions_and_timeseries_and_system_collections_are_skipped() -> None:
    listed = [
        ("app", {"name": "orders", "type": "collection", "options": {}, "info": {}}),
        (
            "app",
            {
                "name": "open_orders",
                "type": "view",
                "options": {"viewOn": "orders", "pipeline": [{"$match": {"open": True}}], "collation": {"locale": "fr"}},
            },
        ),
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
    assert meta == {
        "options": {"viewOn": "orders", "pipeline": [{"$match": {"open": True}}], "collation": {"locale": "fr"}},
        "indexes": [],
        "collectionName": "open_orders",
        "type": "view",
    }
    assert skipped == [
        "app.system.buckets.weather: a system collection",
        "app.system.views: a system collection",
        "app.weather: a time-series collection (not supported yet)",
    ]


def test_a_skipped_timeseries_collection_is_a_warning_and_a_system_collection_is_not() -> None:
    listed = [
        ("app", {"name": "orders", "type": "collection", "options": {}}),
        ("app", {"name": "weather", "type": "timeseries", "options": {"timeseries": {"timeField": "at"}}}),
        ("app", {"name": "system.buckets.weather", "type": "collection", "options": {}}),
    ]
    assert selection_warnings(*classify(listed)) == ["skipped app.weather: a time-series collection (not supported yet)"]


def test_a_selection_of_only_timeseries_collections_warns_that_nothing_is_backed_up() -> None:
    listed = [("metrics", {"name": "cpu", "type": "timeseries", "options": {"timeseries": {"timeField": "t"}}})]
    assert selection_warnings(*classify(listed)) == [
        "no collection to back up matches the job's databases/include/exclude",
        "skipped metrics.cpu: a time-series collection (not supported yet)",
    ]
