"""What a MongoDB collection's dump amounts to, for its progress: its documents.

From the server's collection statistics (`collStats` `count`): metadata the server keeps, no
scan. Documents, not bytes: `size` is the BSON size on MongoDB but the storage size on
compatible servers (FerretDB reports 512000 for 3000 small documents), so a byte total would
end the bar far from 100%. A dump with a query reads a part the statistics cannot tell, so it
has no total; a server that refuses the command (permissions, an older or compatible server)
leaves it unknown, never fails the run.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import PyMongoError


def collection_documents(database: Any, collection: str) -> int | None:
    """Documents in `collection`, or None when the server does not say."""
    try:
        return int(database.command("collStats", collection)["count"])
    except (PyMongoError, KeyError, TypeError, ValueError):
        return None
