"""The kinds davitd can run, one line each: the class that does a kind's work, and (for a kind
whose runs may leave something outside the repository) what removes it when a run has ended.

Adding a kind touches four places, which tests/unit/test_kinds.py checks against each other:
a spec in `domain/jobs/`, an adapter module with its work class (one constructor shape,
`Work(inputs: RunInputs[Spec])`, see `davit/adapters/runwork.py`), one line here, and an example in
`config/jobs.d/`. `davit validate` and davitd refuse a job whose kind has no line here, so a
forgotten line fails there, not when the first run starts.

Lines name modules, they do not import them: a kind's module (with its client library: pymongo,
weaviate-client and grpc, docker, asyncssh, PyMySQL) is imported when a run of that kind needs it, which
keeps an idle daemon small and the CLI quick. davitd imports the kinds of the jobs it has
(`preload`, in a thread, when a job is defined or at start-up), so a run does not spend its own
time importing its kind (Weaviate's client takes about a second) and the event loop never does.
What is imported then stays for the daemon's life, so it is frozen out of the cyclic garbage
collector's way (`settle_heap`): davitd holds about 130,000 objects once Weaviate's client is
in, and without that every full collection during a restore scanned them all again (13% of
davitd's busy py-spy samples during a 100k-object Weaviate restore; 3% with them frozen).
The table lives in the composition root because only it may name adapters (the domain must not).
"""

from __future__ import annotations

import gc
import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

if TYPE_CHECKING:
    from davit.adapters.runwork import RunInputs
    from davit.domain.checks import KindChecks
    from davit.domain.ports import JobWork


class Kind(NamedTuple):
    """One kind's registration; each is "module:name", imported when first needed."""

    work: str  # the JobWork class, built as `Class(inputs: RunInputs[Spec])`
    leftovers: str | None = None  # `function(inputs) -> names removed`, for an ended run; None: leaves nothing


_HELPERS = "davit.adapters.docker.helper:remove_leftovers"

KINDS: dict[str, Kind] = {
    "files.backup": Kind("davit.adapters.files.backup:FilesBackupWork"),
    "files.restore": Kind("davit.adapters.files.restore:FilesRestoreWork"),
    "volume.backup": Kind("davit.adapters.docker.backup:VolumeBackupWork", leftovers=_HELPERS),
    "volume.restore": Kind("davit.adapters.docker.restore:VolumeRestoreWork", leftovers=_HELPERS),
    "compose.migrate": Kind("davit.adapters.compose.migrate:ComposeMigrateWork"),
    "mongo.backup": Kind("davit.adapters.mongo.backup:MongoBackupWork"),
    "mongo.restore": Kind("davit.adapters.mongo.restore:MongoRestoreWork"),
    "mongo.export": Kind("davit.adapters.mongo.textexport:MongoExportWork"),
    "mongo.import": Kind("davit.adapters.mongo.textimport:MongoImportWork"),
    "mysql.backup": Kind("davit.adapters.mysql.backup:MysqlBackupWork"),
    "mysql.restore": Kind("davit.adapters.mysql.restore:MysqlRestoreWork"),
    "weaviate.backup": Kind("davit.adapters.weaviate.backup:WeaviateBackupWork"),
    "weaviate.restore": Kind("davit.adapters.weaviate.restore:WeaviateRestoreWork"),
    "weaviate.clear": Kind("davit.adapters.weaviate.clear:WeaviateClearWork"),
    "repository.copy": Kind("davit.adapters.copy.work:RepositoryCopyWork"),
    "postgres.backup": Kind("davit.adapters.postgres.backup:PostgresBackupWork"),
    "postgres.restore": Kind("davit.adapters.postgres.restore:PostgresRestoreWork"),
    "compose.backup": Kind("davit.adapters.compose.backup:ComposeBackupWork"),
    "compose.restore": Kind("davit.adapters.compose.restore:ComposeRestoreWork"),
}

# `davit check JOB`: each kind's pre-flight checks (a `domain.checks.KindChecks`), "module:name"
# like the lines above, imported when a check of that kind runs; tests/unit/test_kinds.py
# checks that every kind has one.
CHECKS: dict[str, str] = {
    "files.backup": "davit.adapters.files.checks:backup_checks",
    "files.restore": "davit.adapters.files.checks:restore_checks",
    "volume.backup": "davit.adapters.docker.checks:backup_checks",
    "volume.restore": "davit.adapters.docker.checks:restore_checks",
    "compose.migrate": "davit.adapters.compose.checks:migrate_checks",
    "mongo.backup": "davit.adapters.mongo.checks:backup_checks",
    "mongo.restore": "davit.adapters.mongo.checks:restore_checks",
    "mongo.export": "davit.adapters.mongo.checks:export_checks",
    "mongo.import": "davit.adapters.mongo.checks:import_checks",
    "mysql.backup": "davit.adapters.mysql.checks:backup_checks",
    "mysql.restore": "davit.adapters.mysql.checks:restore_checks",
    "weaviate.backup": "davit.adapters.weaviate.checks:backup_checks",
    "weaviate.restore": "davit.adapters.weaviate.checks:restore_checks",
    "weaviate.clear": "davit.adapters.weaviate.checks:clear_checks",
    "repository.copy": "davit.adapters.copy.checks:copy_checks",
    "postgres.backup": "davit.adapters.postgres.checks:backup_checks",
    "postgres.restore": "davit.adapters.postgres.checks:restore_checks",
    "compose.backup": "davit.adapters.compose.checks:backup_checks",
    "compose.restore": "davit.adapters.compose.checks:restore_checks",
}

WorkClass = Callable[["RunInputs[Any]"], "JobWork"]
LeftoverRemover = Callable[["RunInputs[Any]"], list[str]]


# One import of a kind's module at a time: davitd's preloading thread and a run's worker may
# ask for the same module at once, and two threads importing one chain of modules in
# different orders can see each other's half-initialised modules.
_importing = threading.Lock()


def load(ref: str) -> Any:
    """The object a "module:name" line names, importing its module."""
    module, _, name = ref.partition(":")
    with _importing:
        return getattr(importlib.import_module(module), name)


def preload(kind: str) -> None:
    """Import what a run of `kind` will need (its work class and leftover remover) now."""
    if kind in KINDS:
        work_class(kind)
        leftover_remover(kind)
        settle_heap()


def settle_heap() -> None:
    """Move every object alive now (modules, classes, functions: what imports left) out of the
    collector's generations, so that later collections scan only what was made since.

    Reference counting still frees frozen objects; only a cycle among objects alive at this
    moment that later becomes garbage is never reclaimed, which is why garbage is collected
    first. Once per kind and daemon (a full collection: tens of milliseconds, in the preloading
    thread)."""
    with _importing:  # (not while another thread is halfway through an import)
        gc.collect()
        gc.freeze()


def work_class(kind: str) -> WorkClass:
    """The class doing `kind`'s work (its module imported now); KeyError for an unregistered kind."""
    return cast("WorkClass", load(KINDS[kind].work))


def leftover_remover(kind: str) -> LeftoverRemover | None:
    """What removes what an ended run of `kind` left outside the repository, if it may leave anything."""
    ref = KINDS[kind].leftovers if kind in KINDS else None
    return cast("LeftoverRemover", load(ref)) if ref is not None else None


def kind_checks(kind: str) -> KindChecks:
    """`kind`'s pre-flight checks (their module imported now); KeyError for a kind without any."""
    return cast("KindChecks", load(CHECKS[kind]))
