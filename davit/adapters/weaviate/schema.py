"""Collections' configurations as stored in a snapshot, and putting them back on a server.

`renamed_config` gives the configuration to create a collection under its restored name: the
class renamed, and every cross-reference property whose target collection is renamed in the
same job pointed at the new name (Weaviate capitalises a collection's first letter, so names
are compared capitalised). `ensure_collection` applies `if_exists`; `ensure_tenants` creates
the tenants a snapshot names that the server lacks, active, so objects can be imported.
"""

from __future__ import annotations

import copy
from typing import Any

from davit.adapters.weaviate.client import Server, WeaviateRejected, collection_exists
from davit.domain.errors import PermanentError
from davit.domain.jobs.weaviate import collection_name

ACTIVE = "ACTIVE"


class CollectionExists(PermanentError):
    def __init__(self, name: str, where: str) -> None:
        super().__init__(
            f'collection {name} already exists on {where}; set if_exists = "merge" to import '
            'into it or "replace" to drop and recreate it'
        )
        self.name = name


def target_name(stored: str, rename: dict[str, str]) -> str:
    return collection_name(rename.get(stored, stored))


def renamed_config(config: dict[str, Any], rename: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    out["class"] = target_name(config["class"], rename)
    for key in ("properties", "references"):
        for prop in out.get(key, []) or []:
            for field in ("dataType", "target_collections", "targetCollections"):
                if isinstance(prop.get(field), list):
                    prop[field] = [target_name(t, rename) if t[:1].isupper() else t for t in prop[field]]
    return out


def multi_target_properties(config: dict[str, Any]) -> frozenset[str]:
    """Reference properties that may point into more than one collection: their targets are
    read over REST (gRPC cannot return them in one query) and restored one reference at a time."""
    out = set()
    for prop in config.get("references") or []:
        if len(prop.get("target_collections") or prop.get("targetCollections") or []) > 1:
            out.add(prop["name"])
    for prop in config.get("properties") or []:
        types = prop.get("dataType") or []
        if len(types) > 1 and all(t[:1].isupper() for t in types):
            out.add(prop["name"])
    return frozenset(out)


def multi_tenant(config: dict[str, Any]) -> bool:
    return bool((config.get("multiTenancyConfig") or {}).get("enabled"))


def ensure_collection(server: Server, config: dict[str, Any], if_exists: str) -> str:
    """Create the collection `config` describes; what was done: created, replaced or merged."""
    name = config["class"]
    if collection_exists(server, name):
        if if_exists == "fail":
            raise CollectionExists(name, server.where)
        if if_exists == "merge":
            return "merged"
        with server.errors(f"dropping {name} to replace it"):
            server.client.collections.delete(name)
        _create(server, config)
        return "replaced"
    _create(server, config)
    return "created"


def _create(server: Server, config: dict[str, Any]) -> None:
    name = config["class"]
    try:
        with server.errors(f"creating collection {name}"):
            server.client.collections.create_from_dict(config)
    except WeaviateRejected:
        # A run killed right after the create resumes here: the collection is ours already.
        if not collection_exists(server, name):
            raise


def ensure_tenants(server: Server, name: str, tenants: list[dict[str, str]]) -> int:
    """Create the tenants the server lacks (active) and activate ours; how many were created."""
    from weaviate.classes.tenants import Tenant, TenantActivityStatus

    collection = server.client.collections.get(name)
    with server.errors(f"listing the tenants of {name}"):
        existing = collection.tenants.get()
    missing = [t["name"] for t in tenants if t["name"] not in existing]
    for start in range(0, len(missing), 100):
        with server.errors(f"creating tenants of {name}"):
            collection.tenants.create([Tenant(name=n) for n in missing[start : start + 100]])
    inactive = [
        n
        for n, t in existing.items()
        if any(n == s["name"] for s in tenants) and str(getattr(t.activity_status, "value", "")) != ACTIVE
    ]
    if inactive:
        with server.errors(f"activating tenants of {name}"):
            collection.tenants.update([Tenant(name=n, activity_status=TenantActivityStatus.ACTIVE) for n in inactive])
    return len(missing)


def set_tenant_statuses(server: Server, name: str, tenants: list[dict[str, str]]) -> int:
    """Put tenants back to their stored status (after their objects were imported)."""
    from weaviate.classes.tenants import Tenant, TenantActivityStatus

    changes = [
        Tenant(name=t["name"], activity_status=TenantActivityStatus(t["status"]))
        for t in tenants
        if t["status"] not in (ACTIVE, "HOT")
    ]
    if changes:
        with server.errors(f"setting tenant statuses of {name}"):
            server.client.collections.get(name).tenants.update(changes)
    return len(changes)
