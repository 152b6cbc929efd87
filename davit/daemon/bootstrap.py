"""The composition root: the one place that turns settings into real parts.

It opens repositories lazily by name and builds the `JobWork` for a run from the spec the run
was queued with, through the table of kinds (`davit/daemon/kinds.py`): every work class is built the
same way, from the run's `RunInputs`, whose repository is opened only if the work asks for it.
Nothing connects at import time, and an adapter's module (with its client library: pymongo,
weaviate-client and grpc, docker, asyncssh) is imported only when a run of its kind needs it,
which keeps an idle daemon small and the CLI quick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from davit.adapters.runwork import RunInputs
from davit.daemon.config import Settings
from davit.daemon.kinds import KINDS, leftover_remover, work_class
from davit.daemon.repositories import open_repository
from davit.domain.errors import BackendDenied, FieldProblem, InvalidConfig, PermanentError, RetryableError
from davit.domain.jobs import AnyJob, spec_from_json
from davit.domain.ports import JobWork
from davit.domain.runs import RunView

log = logging.getLogger("davitd.parts")


@dataclass
class Parts:
    settings: Settings
    _repos: dict[str, Repository] = field(default_factory=dict)
    # repositories a reload replaced: runs may still use them, so they are closed with the Parts
    _retired: list[Repository] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _opening: dict[str, threading.Lock] = field(default_factory=dict)  # one per repository name
    _staging_denied: set[str] = field(default_factory=set)  # repositories whose staging we may not remove
    # per repository, the ended runs whose staging was removed (or found gone) already: davitd
    # asks for every ended run at each run's end, and asking a remote repository costs a listing
    _staging_cleared: dict[str, set[str]] = field(default_factory=dict)
    # whether the log shows a run ended for good (the supervisor sets it: it folds the runs)
    run_ended: Callable[[str], bool] | None = None

    def repository(self, name: str) -> Repository:
        """The repository `name`, opened once and shared by the runs that use it. It is opened
        under a lock of its own, not the Parts' lock: a remote one that does not answer holds up
        only the runs that use it (they fail as retryable once its retry budget is spent), never
        those of other repositories; two runs starting at once read its indexes once."""
        with self._lock:
            repo = self._repos.get(name)
            if repo is not None:
                return repo
            opening = self._opening.setdefault(name, threading.Lock())
        with opening:
            with self._lock:
                repo = self._repos.get(name)
                settings = self.settings
            if repo is not None:
                return repo
            opened = open_repository(settings, name)
            with self._lock:
                if settings is self.settings:
                    self._repos[name] = opened
                else:  # reloaded meanwhile: this one serves only the run that asked
                    self._retired.append(opened)
            return opened

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
            for name in list(self._staging_cleared):
                if settings.locations.get(name) != self.settings.locations.get(name):
                    del self._staging_cleared[name]
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
            run_ended=self.run_ended,
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
        know belongs to another davitd and is left alone. A repository that cannot be reached now
        is skipped with a log line (its staging is removed at a later run's end or start-up).
        Blocking."""
        removed = []
        for name in self.settings.locations:
            try:
                removed += self._remove_staging(name, ended)
            except RetryableError as exc:
                log.warning("repository %s: the staging of ended runs was not removed this time: %s", name, exc)
        return removed

    def _remove_staging(self, name: str, runs: set[str]) -> list[str]:
        """Remove the staging of `runs` in the configured repository `name` (this host's files,
        and a remote one's segments on the server). A backup-only credential may not delete the
        segments: they are left (marked ended, see `Repository.remove_staging`) for a maintenance
        prune, and that is said once per repository rather than at every run's end."""
        with self._lock:
            runs = runs - self._staging_cleared.get(name, set())
            repo = self._repos.get(name)
            settings = self.settings
        if name not in settings.locations or not runs:
            return []
        opened_here = repo is None
        if repo is None:
            try:  # opened for its staging only (its index is not read), and closed again
                repo = open_repository(settings, name, create=False, listing_only=True, load_index=False)
            except PermanentError:
                return []  # not a repository (yet), or one this config cannot open: nothing staged in it
        try:
            removed = repo.remove_staging(runs)
            with self._lock:
                if self.settings is settings:
                    self._staging_cleared.setdefault(name, set()).update(runs)
            return removed
        except BackendDenied as exc:
            with self._lock:
                first = name not in self._staging_denied
                self._staging_denied.add(name)
            if first:
                log.warning(
                    "repository %s: the staging of ended runs is left in place (%s); "
                    "`davit repository prune %s` with a maintenance credential removes it",
                    name,
                    exc,
                    name,
                )
            return []
        finally:
            if opened_here:
                repo.close()

    def close(self) -> None:
        with self._lock:
            repos = [*self._repos.values(), *self._retired]
            self._repos.clear()
            self._retired.clear()
        for repo in repos:
            repo.close()
