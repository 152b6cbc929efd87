"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    """An empty jobs directory davitd would read (not writable by group or others)."""
    path = tmp_path / "jobs.d"
    path.mkdir(mode=0o755)
    return path
