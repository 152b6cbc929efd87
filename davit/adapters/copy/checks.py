"""Pre-flight checks of `repository.copy` (`davit check`): both repositories open with their
passphrases and their snapshots can be read; nothing is written to either."""

from __future__ import annotations

from davit.domain.checks import CheckInputs
from davit.domain.jobs import RepositoryCopyJob


def copy_checks(inputs: CheckInputs) -> None:
    spec: RepositoryCopyJob = inputs.spec
    inputs.check_repository(spec.source_repository, "source")
    inputs.check_repository(spec.repository, "target")
