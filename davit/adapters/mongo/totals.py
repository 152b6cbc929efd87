"""What a MongoDB collection's dump amounts to, for its progress: documents and BSON bytes.

From the server's collection statistics (`collStats`: `count` and `size`, the uncompressed BSON
bytes the dump reads, so they compare with its `bytes_done`). Metadata the server keeps: no
scan. A dump with a query reads a part the statistics cannot tell, so it has no total; a server
that refuses the command (permissions, an older or compatible server) leaves it unknown, never
fails the run.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import PyMongoError


def collection_totals(database: Any, collection: str) -> tuple[int, int] | None:
    """(bytes, documents) of `collection`, or None when the server does not say."""
    try:
        stats = database.command("collStats", collection)
        return int(stats["size"]), int(stats["count"])
    except (PyMongoError, KeyError, TypeError, ValueError):
        return None
