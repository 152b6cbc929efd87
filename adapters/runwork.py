"""What every adapter's `JobWork` starts from: the run's inputs, as the composition root hands them over."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from adapters.repository.repository import Repository
from adapters.repository.tuning import Tuning

SpecT = TypeVar("SpecT")


class RunInputs(Generic[SpecT]):
    """The job's spec, the repository, the run's id, the data-path tuning, and the details
    recorded when the run was prepared (empty before that)."""

    def __init__(self, spec: SpecT, repo: Repository, run_id: str, tuning: Tuning, details: dict[str, Any]) -> None:
        self.spec = spec
        self.repo = repo
        self.run_id = run_id
        self.tuning = tuning
        self.details = details
