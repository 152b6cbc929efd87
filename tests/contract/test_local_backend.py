from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from davit.adapters.repository.backend import Source
from davit.adapters.repository.backends.local import LocalBackend
from tests.contract.backend_contract import BackendContract


class TestLocalBackend(BackendContract):
    can_tear = True

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[LocalBackend]:
        b = LocalBackend(tmp_path / "repo")
        yield b
        b.close()

    @pytest.fixture
    def tear(self, backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
        """The next upload of a key stops half way through writing its temporary file, as when
        the disk fails or the process dies: the debris stays in tmp/, as after a crash."""
        spool = backend._spool

        def arm(key: str) -> None:
            name = Path(key).name

            def torn_spool(src: Source, final_name: str) -> Path:
                if final_name != name:
                    return spool(src, final_name)
                monkeypatch.setattr(backend, "_spool", spool)  # once
                data = Path(src).read_bytes() if isinstance(src, Path) else bytes(src)
                backend.tmp.mkdir(parents=True, exist_ok=True)
                (backend.tmp / f".{final_name}.torn.tmp").write_bytes(data[: len(data) // 2])
                raise OSError(5, "Input/output error (torn on purpose)")

            monkeypatch.setattr(backend, "_spool", torn_spool)

        return arm


def test_an_object_put_from_a_readable_file_is_private(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    source = tmp_path / "spool.pack"
    source.write_bytes(b"pack")
    source.chmod(0o644)
    assert b.put_if_absent("packs/ab/ab.pack", source) is True
    assert stat.S_IMODE(os.lstat(b.path("packs/ab/ab.pack")).st_mode) == 0o600


def test_an_object_put_from_a_symlink_holds_the_target_and_is_a_regular_file(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "repo")
    target = tmp_path / "real"
    target.write_bytes(b"tree")
    link = tmp_path / "link"
    link.symlink_to(target)
    b.put("snapshots/s1/tree.jsonl.zst", link)
    assert stat.S_ISREG(os.lstat(b.path("snapshots/s1/tree.jsonl.zst")).st_mode)
    assert b.get("snapshots/s1/tree.jsonl.zst") == b"tree"
