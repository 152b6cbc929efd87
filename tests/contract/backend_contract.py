"""What every repository backend promises (`davit/adapters/repository/backend.py`), as one set
of tests. Each backend's test module subclasses `BackendContract` and provides a `backend`
fixture yielding a fresh, empty repository location on its server.

A subclass may lower the class attributes for a slow server (`large_object_bytes` should stay
above the S3 backend's multipart threshold, so that path is exercised). A backend that can break
an upload off on purpose sets `can_tear = True` and provides a `tear` fixture: a callable taking a
key, after which the next upload of that key fails part way as if the connection or process died.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge

BAD_KEYS = ["", "/etc/passwd", "../config.json", "packs/../../x", "packs//x", "packs/./x", "packs/x/", "packs\\x", "a\x00b", "."]
BAD_PREFIXES = ["/", "../", "/etc/", "packs//", "packs/../", "packs\\x/"]


class BackendContract:
    large_object_bytes: ClassVar[int] = 40 << 20  # a tree big enough for an S3 multipart upload
    many_keys: ClassVar[int] = 1100  # more than one page of an S3 listing (1000)
    replacements: ClassVar[int] = 40  # puts of one object while readers read it
    clock_skew_allowed: ClassVar[float] = 300.0  # seconds between the server's clock and ours
    can_tear: ClassVar[bool] = False  # True: the subclass provides a `tear` fixture

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

    # --- keys ------------------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k))
    def test_a_key_that_could_escape_the_repository_is_refused_before_any_request(self, backend: Backend, key: str) -> None:
        calls: list[Callable[[], object]] = [
            lambda: backend.put_if_absent(key, b"x"),
            lambda: backend.put(key, b"x"),
            lambda: backend.get(key),
            lambda: backend.get_to(key, Path("/nonexistent/never-written")),
            lambda: backend.get_range(key, 0, 1),
            lambda: backend.get_ranges(key, [(0, 1)]),
            lambda: backend.stat(key),
            lambda: backend.delete(key),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                call()
        assert list(backend.list("")) == []

    @pytest.mark.parametrize("prefix", BAD_PREFIXES, ids=lambda p: repr(p))
    def test_a_listing_prefix_that_could_escape_the_repository_is_refused(self, backend: Backend, prefix: str) -> None:
        with pytest.raises(ValueError):
            list(backend.list(prefix))

    # --- whole objects and local files -----------------------------------------------------

    def test_a_large_tree_put_from_a_local_file_comes_back_byte_identical(self, backend: Backend, tmp_path: Path) -> None:
        source = tmp_path / "tree.jsonl.zst"
        with open(source, "wb") as fh:
            for _ in range(self.large_object_bytes // (1 << 20)):
                fh.write(os.urandom(1 << 20))
            fh.write(os.urandom(self.large_object_bytes % (1 << 20) + 17))  # not a multiple of any part size
        backend.put("snapshots/s1/tree.jsonl.zst", source)
        info = backend.stat("snapshots/s1/tree.jsonl.zst")
        assert info is not None and info.size == source.stat().st_size
        target = tmp_path / "cache" / "tree"
        target.parent.mkdir()
        target.write_bytes(b"a stale cached copy")
        backend.get_to("snapshots/s1/tree.jsonl.zst", target)
        assert _sha256(target) == _sha256(source)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert sorted(p.name for p in target.parent.iterdir()) == ["tree"]  # no temporary left

    def test_a_pack_created_from_a_local_file_is_readable_by_range(self, backend: Backend, tmp_path: Path) -> None:
        source = tmp_path / "spool.pack"
        data = os.urandom(3 << 20)
        source.write_bytes(data)
        assert backend.put_if_absent("packs/cd/cd01.pack", source) is True
        assert backend.put_if_absent("packs/cd/cd01.pack", source) is False
        assert backend.get_ranges("packs/cd/cd01.pack", [(2 << 20, 10), (7, 3)]) == [data[2 << 20 : (2 << 20) + 10], data[7:10]]

    def test_get_to_of_a_missing_object_leaves_no_file(self, backend: Backend, tmp_path: Path) -> None:
        with pytest.raises(ObjectMissing):
            backend.get_to("snapshots/none/tree.jsonl.zst", tmp_path / "tree")
        assert list(tmp_path.iterdir()) == []

    def test_a_planted_huge_manifest_is_refused_by_a_capped_read(self, backend: Backend) -> None:
        backend.put("snapshots/s1/manifest.json", b"{" * 100_000)
        with pytest.raises(ObjectTooLarge):
            backend.get("snapshots/s1/manifest.json", max_bytes=99_999)
        assert len(backend.get("snapshots/s1/manifest.json", max_bytes=100_000)) == 100_000

    def test_an_empty_object_is_an_object(self, backend: Backend) -> None:
        assert backend.put_if_absent("staging/r1/ended", b"") is True
        assert backend.get("staging/r1/ended") == b""
        assert backend.get_range("staging/r1/ended", 0, 10) == b""
        info = backend.stat("staging/r1/ended")
        assert info is not None and info.size == 0
        assert [o.key for o in backend.list("staging/")] == ["staging/r1/ended"]

    # --- ranges ----------------------------------------------------------------------------

    def test_a_range_at_or_past_the_end_reads_what_there_is(self, backend: Backend) -> None:
        data = b"0123456789"
        backend.put_if_absent("packs/ef/ef01.pack", data)
        assert backend.get_range("packs/ef/ef01.pack", 8, 100) == b"89"
        assert backend.get_range("packs/ef/ef01.pack", 10, 5) == b""
        assert backend.get_range("packs/ef/ef01.pack", 1000, 5) == b""
        assert backend.get_ranges("packs/ef/ef01.pack", [(9, 5), (20, 1), (0, 1)]) == [b"9", b"", b"0"]

    # --- listing ---------------------------------------------------------------------------

    def test_a_listing_is_recursive_and_bounded_by_its_prefix(self, backend: Backend) -> None:
        keys = {
            "index/a.idx": b"a",
            "index/deep/er/b.idx": b"bb",
            "index2/x": b"x",
            "indexes": b"i",
            "snapshots/s1/manifest.json": b"{}",
        }
        for key, data in keys.items():
            backend.put_if_absent(key, data)
        assert {(o.key, o.size) for o in backend.list("index/")} == {("index/a.idx", 1), ("index/deep/er/b.idx", 2)}
        assert [o.key for o in backend.list("index/deep/")] == ["index/deep/er/b.idx"]
        assert {o.key for o in backend.list("")} == set(keys)
        assert list(backend.list("packs/")) == []

    def test_a_listing_right_after_a_put_or_a_delete_shows_it(self, backend: Backend) -> None:
        # the lock protocol's create-then-list argument rests on this
        for n in range(10):
            key = f"locks/{n:04d}.json"
            backend.put_if_absent(key, b"{}")
            assert key in {o.key for o in backend.list("locks/")}
            backend.delete(key)
            assert key not in {o.key for o in backend.list("locks/")}
            assert backend.stat(key) is None

    def test_a_prefix_with_more_keys_than_a_page_lists_them_all(self, backend: Backend) -> None:
        keys = [f"index/{n:05x}{os.urandom(8).hex()}.idx" for n in range(self.many_keys)]
        with ThreadPoolExecutor(16) as pool:
            assert all(pool.map(lambda k: backend.put_if_absent(k, k.encode()), keys))
        backend.put_if_absent("index2/outside.idx", b"x")
        listed = [o.key for o in backend.list("index/")]
        assert len(listed) == len(keys)
        assert set(listed) == set(keys)

    # --- mtimes ----------------------------------------------------------------------------

    def test_mtime_is_the_servers_time_of_the_put_not_the_source_files(self, backend: Backend, tmp_path: Path) -> None:
        source = tmp_path / "lock.json"
        source.write_bytes(b"{}")
        os.utime(source, (1_000_000_000, 1_000_000_000))  # 2001
        backend.put_if_absent("locks/l1.json", source)
        info = backend.stat("locks/l1.json")
        assert info is not None
        assert abs(info.mtime - time.time()) < self.clock_skew_allowed
        assert {o.key: o.mtime for o in backend.list("locks/")} == {"locks/l1.json": info.mtime}

    def test_a_later_object_never_has_an_earlier_mtime(self, backend: Backend) -> None:
        before: float | None = None
        for n in range(5):
            backend.put_if_absent(f"locks/{n}.json", b"{}")
            info = backend.stat(f"locks/{n}.json")
            assert info is not None
            assert before is None or info.mtime >= before
            before = info.mtime
        backend.put("locks/0.json", b'{"refreshed": true}')
        refreshed = backend.stat("locks/0.json")
        assert refreshed is not None and refreshed.mtime >= before

    # --- concurrency -----------------------------------------------------------------------

    def test_readers_of_an_object_being_replaced_see_the_old_or_the_new_never_a_mix(self, backend: Backend) -> None:
        size = 256 << 10
        old, new = b"A" * size, b"B" * size
        backend.put("config.json", old)
        done = threading.Event()
        seen: list[bytes] = []

        def read() -> None:
            while not done.is_set():
                for data in (backend.get("config.json"), backend.get_range("config.json", 0, size)):
                    if data not in (old, new):
                        seen.append(data[:16] + b"..." + data[-16:])

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            for n in range(self.replacements):
                backend.put("config.json", new if n % 2 == 0 else old)
        finally:
            done.set()
            for t in readers:
                t.join()
        assert seen == []

    # --- failures --------------------------------------------------------------------------

    def test_a_torn_upload_is_never_visible_and_does_not_block_a_retry(
        self, backend: Backend, request: pytest.FixtureRequest
    ) -> None:
        if not self.can_tear:
            pytest.skip(f"{type(self).__name__} cannot break an upload off (can_tear is False)")
        tear: Callable[[str], None] = request.getfixturevalue("tear")
        data = os.urandom(1 << 20)
        tear("packs/12/1234.pack")
        with pytest.raises(Exception):  # noqa: B017 - whatever the backend raises for a broken upload
            backend.put_if_absent("packs/12/1234.pack", data)
        assert backend.stat("packs/12/1234.pack") is None
        with pytest.raises(ObjectMissing):
            backend.get("packs/12/1234.pack")
        assert "packs/12/1234.pack" not in {o.key for o in backend.list("")}
        assert backend.put_if_absent("packs/12/1234.pack", data) is True
        assert backend.get("packs/12/1234.pack") == data

    def test_deleting_twice_is_fine_and_the_object_reads_as_missing(self, backend: Backend) -> None:
        backend.put_if_absent("index/ab.idx", b"i")
        backend.delete("index/ab.idx")
        backend.delete("index/ab.idx")
        backend.delete("never/made/here.idx")
        with pytest.raises(ObjectMissing):
            backend.get_range("index/ab.idx", 0, 1)
        assert backend.put_if_absent("index/ab.idx", b"again") is True
        assert backend.get("index/ab.idx") == b"again"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
