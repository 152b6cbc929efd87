from __future__ import annotations

import pytest

from tests.contract.backend_contract import BackendContract
from tests.dict_backend import DictBackend


class TestDictBackend(BackendContract):
    """The test double of `tests/dict_backend.py` keeps the same promises as a real backend."""

    @pytest.fixture
    def backend(self) -> DictBackend:
        return DictBackend()
