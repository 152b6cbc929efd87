"""What a Weaviate collection's export amounts to, for its progress: its objects.

From the server's aggregate count (`aggregate.over_all(total_count=True)`, per tenant for a
multi-tenant collection): an index lookup, no scan. Only the tenants the export reads can be
counted; one it must activate first cannot, so then the total is unknown. A count the server
refuses leaves the total unknown, never fails the run (the export reports real errors).
"""

from __future__ import annotations

from typing import Any

from davit.adapters.weaviate.client import Server


def collection_total(
    server: Server, name: str, tenants: list[dict[str, str]] | None, active: str, activating: bool
) -> int | None:
    """Objects the export of collection `name` reads: those of its `active` tenants (an inactive
    one is skipped, or, when `activating`, read but not countable: then None)."""
    try:
        collection = server.client.collections.get(name)
        if tenants is None:
            return _count(collection)
        if activating and any(t["status"] != active for t in tenants):
            return None
        return sum(_count(collection.with_tenant(t["name"])) for t in tenants if t["status"] == active)
    except Exception:  # an estimate for a progress bar: unknown is the honest answer
        return None


def _count(collection: Any) -> int:
    return int(collection.aggregate.over_all(total_count=True).total_count or 0)
