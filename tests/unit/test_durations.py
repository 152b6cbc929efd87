"""A job's `max_age` is written as operators write durations, and a wrong one is refused."""

import pytest

from davit.domain.durations import parse_duration
from davit.domain.jobs.files import FilesBackupJob


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("26h", 93600), ("7d", 604800), ("1d12h", 129600), ("2w", 1209600), ("45s", 45)]
)
def test_an_operator_writes_a_duration_with_its_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["26", "h", "26 h", "-1h", "0h", "1.5h", "26hours", "", "1h" * 6])
def test_a_duration_without_a_clear_unit_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|no time"):
        parse_duration(text)


def test_a_job_states_how_old_its_last_success_may_grow() -> None:
    spec = FilesBackupJob(kind="files.backup", name="home", source={"path": "/home"}, max_age="26h")
    assert spec.max_age_seconds == 26 * 3600
    assert FilesBackupJob(kind="files.backup", name="home", source={"path": "/home"}).max_age_seconds is None
    with pytest.raises(ValueError, match="not a duration"):
        FilesBackupJob(kind="files.backup", name="home", source={"path": "/home"}, max_age="daily")
