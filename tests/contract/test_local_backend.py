from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.adapters.repository.backends.local import LocalBackend
from tests.contract.backend_contract import BackendContract


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[LocalBackend]:
        b = LocalBackend(tmp_path / "repo")
        yield b
        b.close()
