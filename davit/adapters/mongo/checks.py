"""Pre-flight checks of the MongoDB kinds (`davit check`), through the adapter's `Server` (the
URI resolved from its reference as a run does; errors translated and redacted there).

Read-only: a ping, the server's version, the databases and collections listed. A text export's
output file, an import's input file and a restore's mongodump directory are checked as the
files kinds check paths.
"""

from __future__ import annotations

from pathlib import Path

from davit.adapters.mongo.client import Server
from davit.adapters.pathchecks import free_space, readable_directory, readable_file, writable_place
from davit.domain.checks import CheckInputs, Checklist
from davit.domain.jobs import MongoBackupJob, MongoExportJob, MongoImportJob, MongoRestoreJob
from davit.domain.jobs.mongo import MongoServer

LISTED = 5


def _connect(cl: Checklist, subject: str, spec: MongoServer) -> Server | None:
    with cl.check(subject, "credentials") as c:
        server = Server(spec.uri_env, spec.uri_file, subject)
        c.ok(f"URI resolved from {spec.uri_env or spec.uri_file}")
    if not c.passed:
        return None
    with cl.check(subject, "connects") as c:
        version = server.ping()["server_version"]
        hosts = ", ".join(f"{h}:{p}" for h, p in sorted(server.client.topology_description.server_descriptions()))
        c.ok(f"{hosts}, server version {version}")
    if not c.passed:
        server.close()
        return None
    return server


def backup_checks(inputs: CheckInputs) -> None:
    spec: MongoBackupJob = inputs.spec
    cl = inputs.checklist
    server = _connect(cl, "source", spec.source)
    if server is not None:
        try:
            with cl.check("source", "databases") as c, server.errors("listing databases"):
                present = set(server.client.list_database_names())
                missing = [d for d in spec.source.databases if d not in present]
                if missing:
                    c.fail(f"no database {', '.join(missing[:LISTED])} on the source")
                else:
                    wanted = spec.source.databases or sorted(present - {"admin", "local", "config"})
                    c.ok(f"{len(wanted)} listed: {', '.join(wanted[:LISTED])}{' ...' if len(wanted) > LISTED else ''}")
        finally:
            server.close()
    inputs.check_repository(spec.repository)


def restore_checks(inputs: CheckInputs) -> None:
    spec: MongoRestoreJob = inputs.spec
    if spec.source.from_mongodump is None:
        inputs.check_snapshot(spec.repository, spec.source.snapshot, spec.source.job, "mongo")
    else:  # the run reads the dump directory instead of a snapshot
        readable_directory(inputs.checklist, "source", Path(spec.source.from_mongodump))
    server = _connect(inputs.checklist, "target", spec.target)
    if server is not None:
        server.close()


def export_checks(inputs: CheckInputs) -> None:
    spec: MongoExportJob = inputs.spec
    cl = inputs.checklist
    server = _connect(cl, "source", spec.source)
    if server is not None:
        try:
            db, _, coll = spec.source.namespace.partition(".")
            with cl.check("source", "collection") as c, server.errors(f"listing the collections of {db}"):
                if coll in server.client[db].list_collection_names(filter={"name": coll}):
                    c.ok(spec.source.namespace)
                else:
                    c.fail(f"no collection {spec.source.namespace} on the source")
        finally:
            server.close()
    path = Path(spec.output.path)
    writable_place(cl, "output", path, overwrite=True, is_dir=False)
    free_space(cl, "output", path, None)


def import_checks(inputs: CheckInputs) -> None:
    spec: MongoImportJob = inputs.spec
    readable_file(inputs.checklist, "input", Path(spec.input.path))
    server = _connect(inputs.checklist, "target", spec.target)
    if server is not None:
        server.close()
