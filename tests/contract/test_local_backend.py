from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from davit.adapters.repository.backend import Source
from davit.adapters.repository.backends import local as local_module
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


def _pread_held_at(gate: threading.Barrier, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os.pread in the backend waits at `gate` before reading; the descriptors it read from."""
    real_pread = os.pread
    used: list[int] = []

    def gated_pread(fd: int, length: int, offset: int) -> bytes:
        used.append(fd)
        gate.wait(timeout=10)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(local_module.os, "pread", gated_pread)
    return used


def test_ranged_reads_of_a_pack_from_two_threads_run_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore's reader threads read packs at the same time (no lock held over a pread)."""
    b = LocalBackend(tmp_path / "repo")
    b.put("packs/ab/ab.pack", bytes(range(256)) * 16)
    _pread_held_at(threading.Barrier(2), monkeypatch)  # each read waits until the other is in pread too
    with ThreadPoolExecutor(2) as pool:
        reads = [pool.submit(b.get_range, "packs/ab/ab.pack", offset, 16) for offset in (0, 256)]
        assert [r.result(timeout=20) for r in reads] == [bytes(range(16)), bytes(range(16))]
    b.close()


def test_a_pack_forgotten_during_a_read_is_read_whole_and_its_descriptor_closed_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = LocalBackend(tmp_path / "repo")
    b.put("packs/ab/ab.pack", b"0123456789" * 100)
    gate = threading.Barrier(2)
    used = _pread_held_at(gate, monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        read = pool.submit(b.get_range, "packs/ab/ab.pack", 10, 20)
        while not used:
            time.sleep(0.001)
        b.forget("packs/ab/ab.pack")  # another process's prune deleted it, while the read is in pread
        os.fstat(used[0])  # still open: the read in flight uses it
        gate.wait(timeout=10)
        assert read.result(timeout=20) == b"0123456789" * 2
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(used[0])  # closed by its last user
    b.close()
