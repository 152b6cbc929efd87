"""What every adapter's `JobWork` starts from: the run's inputs, as the composition root hands them over.

Every work class has one constructor shape, `Work(inputs: RunInputs[Spec])`, so the composition
root builds any kind the same way (`davit/daemon/kinds.py`) and a test can check each kind against it.
The repository comes lazily: a kind that needs none (a text export, a clear) never opens one,
and nothing about its constructor differs from a kind that does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning

SpecT = TypeVar("SpecT")
OtherSpecT = TypeVar("OtherSpecT")


class RunInputs(Generic[SpecT]):
    """The job's spec, the run's id, the data-path tuning, the details recorded when the run was
    prepared (empty before that), and the repository: given opened (`repo`, as tests do) or as
    `open_repo`, called the first time a work asks for it (as the daemon does). `open_named`
    opens another configured repository by name, for a kind that reads two (a copy)."""

    def __init__(
        self,
        spec: SpecT,
        run_id: str,
        tuning: Tuning | None = None,
        details: dict[str, Any] | None = None,
        *,
        repo: Repository | None = None,
        open_repo: Callable[[], Repository] | None = None,
        open_named: Callable[[str], Repository] | None = None,
        run_ended: Callable[[str], bool] | None = None,
    ) -> None:
        self.spec = spec
        # whether the event log shows another run ended for good (a claim it left may be taken
        # over: `compose/claim.py`); without a log (a test's inputs) no run is known ended
        self.run_ended: Callable[[str], bool] = run_ended or (lambda _run_id: False)
        self.run_id = run_id
        self.tuning = tuning if tuning is not None else Tuning()
        self.details = details if details is not None else {}
        self._repo = repo
        self._open_repo = open_repo
        self._open_named = open_named

    @property
    def repo(self) -> Repository:
        """The run's repository, opened on first use. Inputs given neither (a test's, for a kind
        that uses none) asked for one: a programming error, not an operator's."""
        if self._repo is None:
            if self._open_repo is None:
                raise RuntimeError(f"run {self.run_id}: these inputs were given no repository")
            self._repo = self._open_repo()
        return self._repo

    def repository(self, name: str) -> Repository:
        """Another configured repository, by name (a copy's source): opened by the composition
        root like the run's own. Inputs given no way to open one (a test's) asked for one: a
        programming error."""
        if self._open_named is None:
            raise RuntimeError(f"run {self.run_id}: these inputs were given no way to open repository {name!r}")
        return self._open_named(name)

    def with_spec(self, spec: OtherSpecT) -> RunInputs[OtherSpecT]:
        """The same run's inputs for another spec (a kind carried out by another kind's work, as
        a volume backup is by a files backup): same repository, same details."""
        return RunInputs(
            spec,
            self.run_id,
            self.tuning,
            self.details,
            repo=self._repo,
            open_repo=self._open_repo,
            open_named=self._open_named,
            run_ended=self.run_ended,
        )


class RunWork(Generic[SpecT]):
    """The base of the work classes: the inputs as attributes (`spec`, `run_id`, `tuning`,
    `details`) and the repository as `repo`, opened only when a step first reads it."""

    def __init__(self, inputs: RunInputs[SpecT]) -> None:
        self.inputs = inputs
        self.spec = inputs.spec
        self.run_id = inputs.run_id
        self.tuning = inputs.tuning
        self.details = inputs.details

    @property
    def repo(self) -> Repository:
        return self.inputs.repo
