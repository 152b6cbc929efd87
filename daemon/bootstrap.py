"""The composition root: the one place that turns settings into real parts.

It opens repositories lazily by name and builds the `JobWork` for a run from the spec the run
was queued with. Nothing connects at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.files.backup import FilesBackupWork
from adapters.files.restore import FilesRestoreWork
from adapters.repository.repository import Repository
from adapters.repository.tuning import Tuning
from daemon.config import Settings
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
                path = self.settings.repositories.get(name)
                if path is None:
                    raise InvalidConfig(
                        str(self.settings.config_file),
                        [FieldProblem(f"repositories.{name}", "no repository of this name is configured")],
                    )
                self._repos[name] = Repository.open(path, self.settings.model.data_path.compression_level)
            return self._repos[name]

    @property
    def tuning(self) -> Tuning:
        return self.settings.model.data_path.tuning()

    def work_for(self, view: RunView) -> JobWork:
        spec = spec_from_json(view.spec)
        factory = WORK_FACTORIES.get(spec.kind)
        if factory is None:
            raise InvalidConfig(str(self.settings.config_file), [FieldProblem("kind", f"no adapter for {spec.kind}")])
        return factory(spec, self, view)

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()


def _files_backup(spec: Any, parts: Parts, view: RunView) -> JobWork:
    return FilesBackupWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning)


def _files_restore(spec: Any, parts: Parts, view: RunView) -> JobWork:
    return FilesRestoreWork(spec, parts.repository(spec.repository), view.run_id, parts.tuning, dict(view.details))


# kind -> the JobWork that performs it; one line per kind.
WORK_FACTORIES: dict[str, Callable[[Any, Parts, RunView], JobWork]] = {
    "files.backup": _files_backup,
    "files.restore": _files_restore,
}
