"""The log's tables and its forward-only migrations.

`events` is the log: a global position (AUTOINCREMENT, so positions are never reused), the
stream and the version within it (`UNIQUE(stream, version)` is the optimistic-concurrency
check), the writer-chosen event id (`UNIQUE`, so a retried append records once), type,
schema, JSON data, recorded time, and the hash chain. `chain_head` holds the last hash, so
deleting the newest rows is detected too; in a keyed log its `mac` seals it under the log key
(`davit/eventstore/chain.py`), and a NULL `mac` means the log is not keyed yet. `schema_version`
records the migrations applied.

A new log is made from `metadata` as it is now, with every migration recorded as applied;
an existing one gets the migrations it lacks, in order.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, Table, Text, UniqueConstraint

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("position", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("stream", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("schema", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("recorded_at", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    UniqueConstraint("stream", "version", name="uq_stream_version"),
    sqlite_autoincrement=True,
)
Index("ix_events_type", events.c.type)

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("hash", Text, nullable=False),
    Column("mac", Text, nullable=True),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Text, nullable=False),
)

GENESIS_HASH = "0" * 64

# Forward-only: each entry upgrades from the previous version; never edit a released one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (),  # created from `metadata`
    2: ("ALTER TABLE chain_head ADD COLUMN mac TEXT",),  # the keyed chain's head seal
}
LATEST_VERSION = max(MIGRATIONS)
