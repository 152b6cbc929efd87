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

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.daemon.config import Settings
from davit.daemon.kinds import KINDS, leftover_remover, work_class
from davit.daemon.repositories import open_repository, remove_local_staging
from davit.domain.errors import FieldProblem, InvalidConfig, PermanentError
from davit.domain.jobs import AnyJob, spec_from_json
from davit.domain.ports import JobWork
from davit.domain.runs import RunView


@dataclass
class Parts:
    settings: Settings
    _repos: dict[str, Repository] = field(default_factory=dict)
    # repositories a reload replaced: runs may still use them, so they are closed with the Parts
    _retired: list[Repository] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def repository(self, name: str) -> Repository:
        """The repository `name`, opened once and shared by the runs that use it. It is opened
        outside the lock: a remote one that does not answer holds up only the runs that use it
        (they fail as retryable once its retry budget is spent), never those of other repositories."""
        with self._lock:
            repo = self._repos.get(name)
            settings = self.settings
        if repo is not None:
            return repo
        opened = open_repository(settings, name)
        with self._lock:
            repo = self._repos.get(name)
            if repo is None and settings is self.settings:
                self._repos[name] = opened
                return opened
        if repo is None:  # the settings were reloaded meanwhile: this one is for the run that asked
            self._retired.append(opened)
            return opened
        opened.close()  # another run opened it first
        return repo

    def apply(self, settings: Settings) -> None:
        """New settings for the runs that start from now on. A repository whose section changed
        is opened again when next needed; runs already using it keep the one they have."""
        with self._lock:
            old = self.settings.model.repositories
            for name in list(self._repos):
                if settings.model.repositories.get(name) != old.get(name) or settings.locations.get(
                    name
                ) != self.settings.locations.get(name):
                    self._retired.append(self._repos.pop(name))
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
        short, and with `staging` its staging, when nothing will resume from it: see
        `staging_unneeded`); the names of what was removed. Blocking."""
        if not view.spec:
            return []
        inputs = self.inputs(view)
        remover = leftover_remover(view.kind)
        removed = remover(inputs) if remover is not None else []
        if staging and inputs.spec.repository:
            removed += self._remove_staging(inputs.spec.repository, {view.run_id})
        return removed

    def remove_staging_of_ended(self, ended: set[str]) -> list[str]:
        """Remove the staging, in every configured repository, of the runs in `ended` (runs this
        daemon's log shows as ended that nothing resumes from). Staging of runs the log does not
        know belongs to another davitd and is left alone. Blocking."""
        removed = []
        for name in self.settings.locations:
            removed += self._remove_staging(name, ended)
        return removed

    def _remove_staging(self, name: str, ended: set[str]) -> list[str]:
        """Remove the staging of the runs in `ended` in the configured repository `name`. A remote
        repository's staging is this host's (`local_dir`): removed without connecting."""
        settings = self.settings
        if name not in settings.locations:
            return []
        local = remove_local_staging(settings, name, ended)
        if local is not None:
            return local
        with self._lock:
            repo = self._repos.get(name)
        if repo is not None:
            return repo.remove_staging(ended)
        try:  # opened for its staging only (its index is not read), and closed again
            repo = open_repository(settings, name, create=False, listing_only=True, load_index=False)
        except PermanentError:
            return []  # not a repository (yet), or one this config cannot open: nothing staged in it
        try:
            return repo.remove_staging(ended)
        finally:
            repo.close()

    def close(self) -> None:
        with self._lock:
            repos = [*self._repos.values(), *self._retired]
            self._repos.clear()
            self._retired.clear()
        for repo in repos:
            repo.close()
