"""The composition root: the one place that turns settings into real parts.

It opens repositories lazily by name and builds the `JobWork` for a run from the spec the run
was queued with. Nothing connects at import time, and an adapter's module (with its client
library: pymongo, weaviate-client and grpc, docker, asyncssh) is imported only when a run of
its kind needs it, which keeps an idle daemon small and the CLI quick.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.repository.repository import Repository
from adapters.repository.staging import ended_runs_staging, remove_run_staging, remove_staging
from adapters.repository.tuning import Tuning
from daemon.config import Settings
from daemon.repositories import open_repository
from domain.errors import FieldProblem, InvalidConfig
from domain.jobs import spec_from_json
from domain.ports import JobWork
from domain.runs import RunView


@dataclass
class Parts:
    settings: Settings
    _repos: dict[str, Repository] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def repository(self, name: str) -> Repository:
        with self._lock:
            if name not in self._repos:
                self._repos[name] = open_repository(self.settings, name)
            return self._repos[name]

    def apply(self, settings: Settings) -> None:
        """New settings for the runs that start from now on. A repository whose section changed
        is opened again when next needed; runs already using it keep the one they have."""
        with self._lock:
            old = self.settings.model.repositories
            for name in list(self._repos):
                if settings.model.repositories.get(name) != old.get(name) or \
                        settings.repositories.get(name) != self.settings.repositories.get(name):
                    del self._repos[name]
            self.settings = settings

    @property
    def tuning(self) -> Tuning:
        return self.settings.model.data_path.tuning()

    def work_for(self, view: RunView) -> JobWork:
        spec = spec_from_json(view.spec)
        factory = WORK_FACTORIES.get(spec.kind)
        if factory is None:
            raise InvalidConfig(str(self.settings.config_file), [FieldProblem("kind", f"no adapter for {spec.kind}")])
        return factory(spec, self, view)

    def remove_leftovers(self, view: RunView, staging: bool) -> list[str]:
        """Remove what an ended run may have left (helper containers of a step that a crash cut
        short, and with `staging` its staging in the repository, when nothing will resume from
        it: see `staging_unneeded`); the names of what was removed. Blocking."""
        if not view.spec:
            return []
        spec = spec_from_json(view.spec)
        cleaner = LEFTOVER_CLEANERS.get(view.kind)
        removed = cleaner(spec, view) if cleaner is not None else []
        root = self._repository_root(getattr(spec, "repository", None))
        if root is not None and staging:
            removed += remove_run_staging(root, view.run_id)
        return removed

    def remove_staging_of_ended(self, ended: set[str]) -> list[str]:
        """Remove the staging, in every configured repository, of the runs in `ended` (runs this
        daemon's log shows as ended that nothing resumes from). Staging of runs the log does not
        know belongs to another davitd and is left alone. Blocking."""
        removed = []
        for name in self.settings.repositories:
            root = self._repository_root(name)
            if root is None:
                continue
            removed += [remove_staging(path) for path in ended_runs_staging(root, ended)]
        return removed

    def _repository_root(self, name: str | None) -> Path | None:
        """The directory of the configured repository `name`, if it is one (never created here)."""
        root = self.settings.repositories.get(name) if name else None
        return root if root is not None and (root / "config.json").exists() else None

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()


def _files_backup(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.files.backup import FilesBackupWork

    return FilesBackupWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning)


def _files_restore(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.files.restore import FilesRestoreWork

    return FilesRestoreWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _volume_backup(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.docker.backup import VolumeBackupWork

    return VolumeBackupWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _volume_restore(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.docker.restore import VolumeRestoreWork

    return VolumeRestoreWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _mongo_backup(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.mongo.backup import MongoBackupWork

    return MongoBackupWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _mongo_restore(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.mongo.restore import MongoRestoreWork

    return MongoRestoreWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _mongo_export(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.mongo.textexport import MongoExportWork

    return MongoExportWork(spec, view.run_id, parts.tuning)


def _mongo_import(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.mongo.textimport import MongoImportWork

    return MongoImportWork(spec, view.run_id, parts.tuning)


def _weaviate_backup(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.weaviate.backup import WeaviateBackupWork

    return WeaviateBackupWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _weaviate_restore(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.weaviate.restore import WeaviateRestoreWork

    return WeaviateRestoreWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _weaviate_clear(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.weaviate.clear import WeaviateClearWork

    return WeaviateClearWork(spec, view.run_id, dict(view.details))


def _compose_migrate(spec: Any, parts: Parts, view: RunView) -> JobWork:
    from adapters.compose.migrate import ComposeMigrateWork

    return ComposeMigrateWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


def _volume_leftovers(spec: Any, view: RunView) -> list[str]:
    if view.details.get("access") == "mountpoint":
        return []  # such a run made no helper
    from adapters.docker.helper import remove_run_helpers

    return remove_run_helpers(spec.engine, view.run_id)


# kind -> what removes an ended run's leftovers; kinds that leave none have no line.
LEFTOVER_CLEANERS: dict[str, Callable[[Any, RunView], list[str]]] = {
    "volume.backup": _volume_leftovers,
    "volume.restore": _volume_leftovers,
}


# kind -> the JobWork that performs it; one line per kind.
WORK_FACTORIES: dict[str, Callable[[Any, Parts, RunView], JobWork]] = {
    "files.backup": _files_backup,
    "files.restore": _files_restore,
    "weaviate.backup": _weaviate_backup,
    "weaviate.restore": _weaviate_restore,
    "weaviate.clear": _weaviate_clear,
    "mongo.backup": _mongo_backup,
    "mongo.restore": _mongo_restore,
    "mongo.export": _mongo_export,
    "mongo.import": _mongo_import,
    "volume.backup": _volume_backup,
    "volume.restore": _volume_restore,
    "compose.migrate": _compose_migrate,
}
