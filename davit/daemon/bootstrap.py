"""The composition root: the one place that turns settings into real parts.

It opens repositories lazily by name and builds the `JobWork` for a run from the spec the run
was queued with, through the table of kinds (`davit/daemon/kinds.py`): every work class is built the
same way, from the run's `RunInputs`, whose repository is opened only if the work asks for it.
Nothing connects at import time, and an adapter's module (with its client library: pymongo,
weaviate-client and grpc, docker, asyncssh) is imported only when a run of its kind needs it,
which keeps an idle daemon small and the CLI quick.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.staging import ended_runs_staging, remove_run_staging, remove_staging
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.daemon.config import Settings
from davit.daemon.kinds import KINDS, leftover_remover, work_class
from davit.daemon.repositories import open_repository
from davit.domain.errors import FieldProblem, InvalidConfig
from davit.domain.jobs import AnyJob, spec_from_json
from davit.domain.ports import JobWork
from davit.domain.runs import RunView


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
                if settings.model.repositories.get(name) != old.get(name) or settings.locations.get(
                    name
                ) != self.settings.locations.get(name):
                    del self._repos[name]
            self.settings = settings

    @property
    def tuning(self) -> Tuning:
        return self.settings.model.data_path.tuning()

    def inputs(self, view: RunView) -> RunInputs[AnyJob]:
        """What the run's work is built from; its repository is opened when first asked for."""
        spec = spec_from_json(view.spec)
        return RunInputs(
            spec,
            view.run_id,
            self.tuning,
            dict(view.details),
            open_repo=lambda: self.repository(spec.repository),
            open_named=self.repository,
        )

    def work_for(self, view: RunView) -> JobWork:
        inputs = self.inputs(view)
        if inputs.spec.kind not in KINDS:
            raise InvalidConfig(str(self.settings.config_file), [FieldProblem("kind", f"no adapter for {inputs.spec.kind}")])
        return work_class(inputs.spec.kind)(inputs)

    def remove_leftovers(self, view: RunView, staging: bool) -> list[str]:
        """Remove what an ended run may have left (helper containers of a step that a crash cut
        short, and with `staging` its staging in the repository, when nothing will resume from
        it: see `staging_unneeded`); the names of what was removed. Blocking."""
        if not view.spec:
            return []
        inputs = self.inputs(view)
        remover = leftover_remover(view.kind)
        removed = remover(inputs) if remover is not None else []
        root = self._repository_root(inputs.spec.repository)
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
