"""A weaviate.backup tells each collection's object count before exporting it (its progress
bar's 100%), from the server's aggregate count, per tenant; against the real peer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from weaviate.classes.tenants import Tenant, TenantActivityStatus
from weaviate.client import WeaviateClient

from davit.adapters.weaviate.backup import export_step
from tests.fakes import MemoryRunContext
from tests.integration.weaviate.helpers import backup_spec, open_repo, prefix, run_backup
from tests.integration.weaviate.helpers import client_fixture as client_fixture  # (the `client` fixture)
from tests.integration.weaviate.seed import create_articles, create_authors, create_tenanted
from tests.peers.state import WeaviatePeer

pytestmark = pytest.mark.weaviate


@pytest.fixture
def p(client: WeaviateClient) -> Iterator[str]:
    name = prefix()
    yield name
    for found in list(client.collections.list_all(simple=True)):
        if found.startswith(name):
            client.collections.delete(found)


def test_each_collections_export_knows_its_object_count(
    client: WeaviateClient, weaviate_peer: WeaviatePeer, p: str, tmp_path: Path
) -> None:
    create_articles(client, f"{p}Article", f"{p}Author", create_authors(client, f"{p}Author", count=20), count=120)
    ctx = MemoryRunContext(run_id="snap1")
    run_backup(open_repo(tmp_path), backup_spec(weaviate_peer, collections=[f"{p}Article", f"{p}Author"]), "snap1", ctx=ctx)
    assert ctx.totals[export_step(f"{p}Article")] == (None, 120)
    assert ctx.totals[export_step(f"{p}Author")] == (None, 20)


def test_a_tenanted_collection_counts_the_tenants_the_export_reads(
    client: WeaviateClient, weaviate_peer: WeaviatePeer, p: str, tmp_path: Path
) -> None:
    name = f"{p}Notes"
    create_tenanted(client, name, ("alpha", "beta", "gamma"), per_tenant=12)
    client.collections.get(name).tenants.update(Tenant(name="beta", activity_status=TenantActivityStatus.INACTIVE))
    ctx = MemoryRunContext(run_id="snap1")
    run_backup(open_repo(tmp_path), backup_spec(weaviate_peer, collections=[name]), "snap1", ctx=ctx)
    assert ctx.totals[export_step(name)] == (None, 24)  # beta is skipped: not counted
