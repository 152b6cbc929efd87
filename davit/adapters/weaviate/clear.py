"""weaviate.clear: delete every object of one collection and keep its schema (and tenants).

The job file must say `confirm = true` (the spec refuses it otherwise); prepare refuses a
collection that does not exist. One step, `clear`: for each tenant in name order (or the
collection itself), fetch a page of uuids, delete exactly those, record a checkpoint with
the tenant index and the count so far; repeat until a page comes back empty. Deleting is
idempotent, so a resumed run simply goes on with what is left.
"""

from __future__ import annotations

from typing import Any

from weaviate.classes.query import Filter

from davit.adapters.runwork import RunInputs, RunWork
from davit.adapters.steps import Step, run_steps
from davit.adapters.weaviate.client import Server, collection_config, collection_exists
from davit.adapters.weaviate.schema import multi_tenant
from davit.domain.errors import SourceMissing
from davit.domain.jobs import WeaviateClearJob
from davit.domain.ports import RunContext

CLEAR = "clear"


class WeaviateClearWork(RunWork[WeaviateClearJob]):
    def __init__(self, inputs: RunInputs[WeaviateClearJob]) -> None:
        super().__init__(inputs)
        self.target = self.spec.target

    def plan(self) -> list[str]:
        return [CLEAR]

    def prepare(self, ctx: RunContext) -> dict[str, Any]:
        with Server(self.target) as server:
            if not collection_exists(server, self.target.collection):
                raise SourceMissing(
                    f"collection {self.target.collection} on {server.where}", "it does not exist; nothing to clear"
                )
        self.details = {"collection": self.target.collection}
        return self.details

    def run(self, ctx: RunContext) -> None:
        run_steps(ctx, [Step(CLEAR, self._clear)])

    def finish(self, ctx: RunContext) -> dict[str, Any]:
        return {"collection": self.target.collection, **(ctx.cursor(CLEAR) or {})}

    def _clear(self, ctx: RunContext) -> dict[str, Any]:
        name = self.target.collection
        cursor = ctx.cursor(CLEAR) or {"tenant_index": 0, "deleted": 0}
        with Server(self.target) as server:
            if not collection_exists(server, name):
                raise SourceMissing(f"collection {name} on {server.where}", "it no longer exists")
            base = server.client.collections.get(name)
            tenants: list[str | None] = [None]
            if multi_tenant(collection_config(server, name)):
                with server.errors(f"listing the tenants of {name}"):
                    tenants = list(sorted(base.tenants.get()))
            while cursor["tenant_index"] < len(tenants):
                tenant = tenants[cursor["tenant_index"]]
                collection = base.with_tenant(tenant) if tenant is not None else base
                where = f"clearing {name}" + (f" tenant {tenant}" if tenant else "")
                while True:
                    ctx.check_stop()
                    with server.errors(where):
                        page = collection.query.fetch_objects(limit=self.target.batch_size, return_properties=[])
                        ids = [o.uuid for o in page.objects]
                        if not ids:
                            break
                        result = collection.data.delete_many(where=Filter.by_id().contains_any(ids))
                    cursor["deleted"] += result.successful
                    ctx.checkpoint(CLEAR, dict(cursor), items_done=cursor["deleted"])
                cursor["tenant_index"] += 1
                ctx.checkpoint(CLEAR, dict(cursor), items_done=cursor["deleted"])
        return {"collection": name, "deleted": cursor["deleted"], "tenants": len([t for t in tenants if t])}
