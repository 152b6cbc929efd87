"""Pre-flight checks of the Weaviate kinds (`davit check`), through the adapter's `Server` (the
API key resolved from its reference as a run does; errors translated and redacted there).

Read-only: a connection (REST and gRPC ping), the server's version from `/v1/meta`, and the
collections listed: a backup's named ones must exist, a restore's with `if_exists = "fail"`
must not, a clear's must.
"""

from __future__ import annotations

from davit.adapters.weaviate.client import Server
from davit.domain.checks import CheckInputs, Checklist
from davit.domain.jobs import WeaviateBackupJob, WeaviateClearJob, WeaviateRestoreJob
from davit.domain.jobs.weaviate import WeaviateConnection

LISTED = 5


def _connect(cl: Checklist, subject: str, conn: WeaviateConnection) -> tuple[Server, set[str]] | None:
    with cl.check(subject, "connects") as c:
        server = Server(conn)
        c.ok(f"{server.where}" + (" with an API key" if server.api_key else ""))
    if not c.passed:
        return None
    with cl.check(subject, "server version") as c:
        meta = server.rest_get("meta", {}, "reading its version")
        c.ok(f"Weaviate {meta.get('version') if isinstance(meta, dict) else '(unknown)'}")
    existing: set[str] = set()
    with cl.check(subject, "collections") as c, server.errors("listing collections"):
        existing = set(server.client.collections.list_all(simple=True))
        c.ok(f"{len(existing)} on the server")
    return server, existing


def _lower(names: set[str]) -> set[str]:
    return {n.lower() for n in names}  # Weaviate compares collection names capitalised


def backup_checks(inputs: CheckInputs) -> None:
    spec: WeaviateBackupJob = inputs.spec
    opened = _connect(inputs.checklist, "source", spec.source)
    if opened is not None:
        server, existing = opened
        try:
            if spec.source.collections != "all":
                with inputs.checklist.check("source", "selected collections") as c:
                    missing = [n for n in spec.source.collections if n.lower() not in _lower(existing)]
                    if missing:
                        c.fail(f"no collection {', '.join(missing[:LISTED])} on {server.where}")
                    else:
                        c.ok(", ".join(spec.source.collections[:LISTED]))
        finally:
            server.close()
    inputs.check_repository(spec.repository)


def restore_checks(inputs: CheckInputs) -> None:
    spec: WeaviateRestoreJob = inputs.spec
    inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, "weaviate")
    opened = _connect(inputs.checklist, "target", spec.target)
    if opened is None:
        return
    server, existing = opened
    try:
        named = [] if spec.target.collections == "all" else list(spec.target.collections)
        targets = [spec.target.rename.get(n, n) for n in named] or list(spec.target.rename.values())
        if spec.target.if_exists == "fail" and targets:
            with inputs.checklist.check("target", "collections free") as c:
                taken = [n for n in targets if n.lower() in _lower(existing)]
                if taken:
                    c.fail(f'if_exists is "fail" and {", ".join(taken[:LISTED])} exist on {server.where}')
                else:
                    c.ok(f"none of {', '.join(targets[:LISTED])} exists yet")
    finally:
        server.close()


def clear_checks(inputs: CheckInputs) -> None:
    spec: WeaviateClearJob = inputs.spec
    opened = _connect(inputs.checklist, "target", spec.target)
    if opened is None:
        return
    server, existing = opened
    try:
        with inputs.checklist.check("target", "collection") as c:
            if spec.target.collection.lower() in _lower(existing):
                c.ok(spec.target.collection)
            else:
                c.fail(f"no collection {spec.target.collection} on {server.where}")
    finally:
        server.close()
