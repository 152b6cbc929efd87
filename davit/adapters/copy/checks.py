"""Pre-flight checks of `repository.copy` (`davit check`): both repositories open with their
passphrases and their snapshots can be read; a copy of one `snapshot` finds it in the source
repository as its run resolves it (among all the source's snapshots); nothing is written to
either."""

from __future__ import annotations

from davit.domain.checks import CheckInputs
from davit.domain.jobs import RepositoryCopyJob


def copy_checks(inputs: CheckInputs) -> None:
    spec: RepositoryCopyJob = inputs.spec
    inputs.check_repository(spec.source_repository, "source")
    inputs.check_repository(spec.repository, "target")
    if spec.snapshot is not None:  # else: whatever the source holds is copied, none is fine
        inputs.check_snapshot(spec.source_repository, spec.snapshot, None)
