"""What every repository backend promises (`davit/adapters/repository/backend.py`), as one set
of tests. Each backend's test module subclasses `BackendContract` and provides a `backend`
fixture yielding a fresh, empty repository location on its server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from davit.adapters.repository.backend import Backend, ObjectMissing


class BackendContract:
    def test_an_object_put_is_read_back_whole_and_by_range(self, backend: Backend) -> None:
        data = bytes(range(256)) * 1000
        assert backend.put_if_absent("packs/ab/ab01.pack", data) is True
        assert backend.get("packs/ab/ab01.pack") == data
        assert backend.get_range("packs/ab/ab01.pack", 1000, 24) == data[1000:1024]
        assert backend.get_ranges("packs/ab/ab01.pack", [(5, 3), (0, 2)]) == [data[5:8], data[0:2]]
        assert backend.get_range("packs/ab/ab01.pack", len(data) - 4, 100) == data[-4:]

    def test_a_second_create_of_one_key_loses_and_leaves_the_first_content(self, backend: Backend) -> None:
        assert backend.put_if_absent("locks/a.json", b"first") is True
        assert backend.put_if_absent("locks/a.json", b"second") is False
        assert backend.get("locks/a.json") == b"first"

    def test_of_eight_threads_creating_one_key_exactly_one_wins(self, backend: Backend) -> None:
        results: list[bool] = []
        barrier = threading.Barrier(8)

        def create(n: int) -> None:
            barrier.wait()
            results.append(backend.put_if_absent("snapshots/s1/manifest.json", f"writer {n}".encode()))

        threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 7 + [True]
        assert backend.get("snapshots/s1/manifest.json").startswith(b"writer ")

    def test_a_missing_object_is_reported_as_missing(self, backend: Backend) -> None:
        with pytest.raises(ObjectMissing):
            backend.get("index/nothing.idx")
        with pytest.raises(ObjectMissing):
            backend.get_range("index/nothing.idx", 0, 1)
        assert backend.stat("index/nothing.idx") is None
        backend.delete("index/nothing.idx")  # no error

    def test_put_replaces_and_listing_sees_what_was_put(self, backend: Backend, tmp_path: Path) -> None:
        backend.put("config.json", b"v1")
        backend.put("config.json", b"v2")
        assert backend.get("config.json") == b"v2"
        source = tmp_path / "tree"
        source.write_bytes(b"t" * 100_000)
        backend.put("snapshots/s1/tree.jsonl.zst", source)
        listed = {o.key: o.size for o in backend.list("snapshots/")}
        assert listed == {"snapshots/s1/tree.jsonl.zst": 100_000}
        backend.delete("snapshots/s1/tree.jsonl.zst")
        assert list(backend.list("snapshots/")) == []
