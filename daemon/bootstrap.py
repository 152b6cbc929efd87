"""The composition root: the one place that turns settings into real parts.

It opens repositories lazily by name and builds the `JobWork` for a run from the spec the run
was queued with. Nothing connects at import time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from adapters.files.backup import FilesBackupWork
from adapters.files.restore import FilesRestoreWork
from adapters.repository.repository import Repository
from daemon.config import Settings
from domain.errors import FieldProblem, InvalidConfig
from domain.jobs import FilesBackupJob, FilesRestoreJob, spec_from_json
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

    def work_for(self, view: RunView) -> JobWork:
        spec = spec_from_json(view.spec)
        tuning = self.settings.model.data_path.tuning()
        repo = self.repository(spec.repository)
        if isinstance(spec, FilesBackupJob):
            return FilesBackupWork(spec, repo, view.run_id, tuning)
        if isinstance(spec, FilesRestoreJob):
            return FilesRestoreWork(spec, repo, view.run_id, tuning, dict(view.details))
        raise InvalidConfig(str(self.settings.config_file), [FieldProblem("kind", f"no adapter for {view.kind}")])

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()


def describe(spec: Any) -> str:
    return f"{spec.kind} {spec.name}"
