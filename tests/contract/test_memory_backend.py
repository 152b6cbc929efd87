"""The in-memory backend keeps the contract of the real ones, and its faults do what the
repository's unit tests will rely on: torn and unknown-outcome uploads, outages by the clock or
by calls, denied operations, latency, and request counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from davit.adapters.repository.backend import BackendDenied, BackendUnavailable, ObjectMissing
from davit.adapters.repository.backends.counting import CountingBackend
from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.backends.memory import MemoryBackend
from tests.contract.backend_contract import BackendContract


class TestMemoryBackend(BackendContract):
    can_tear = True

    @pytest.fixture
    def backend(self) -> Iterator[MemoryBackend]:
        b = MemoryBackend()
        yield b
        b.close()

    @pytest.fixture
    def tear(self, backend: MemoryBackend) -> Callable[[str], None]:
        return backend.tear


class TestCountingBackend(BackendContract):
    """The wrapper changes nothing a caller sees (here around a local directory)."""

    large_object_bytes = 8 << 20

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[CountingBackend]:
        b = CountingBackend(LocalBackend(tmp_path / "repo"))
        yield b
        b.close()


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- uploads that break off -----------------------------------------------------------------


def test_a_torn_pack_upload_raises_retryable_and_leaves_nothing() -> None:
    b = MemoryBackend()
    b.tear("packs/")
    with pytest.raises(BackendUnavailable, match=r"during the upload of packs/ab/ab01\.pack"):
        b.put_if_absent("packs/ab/ab01.pack", b"pack")
    assert list(b.list("")) == []
    assert b.put_if_absent("packs/ab/ab01.pack", b"pack") is True  # torn once only


def test_an_upload_that_breaks_after_the_server_stored_it_has_an_unknown_outcome() -> None:
    b = MemoryBackend()
    b.tear("snapshots/s1/manifest.json", after_store=True)
    with pytest.raises(BackendUnavailable, match="after the upload"):
        b.put_if_absent("snapshots/s1/manifest.json", b"{}")
    # the manifest landed: a retry loses the create, and the caller must compare to know it won
    assert b.put_if_absent("snapshots/s1/manifest.json", b"{}") is False
    assert b.get("snapshots/s1/manifest.json") == b"{}"


def test_a_tear_of_one_key_leaves_other_keys_alone_and_counts_down() -> None:
    b = MemoryBackend()
    b.tear("config.json", times=2)
    b.put("index/x.idx", b"i")
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            b.put("config.json", b"c")
    b.put("config.json", b"c")
    assert {o.key for o in b.list("")} == {"index/x.idx", "config.json"}


# --- outages ----------------------------------------------------------------------------------


def test_an_outage_for_some_seconds_ends_when_the_servers_clock_has_moved_on() -> None:
    clock = FakeClock()
    b = MemoryBackend(clock=clock)
    b.put("config.json", b"c")
    b.unavailable(seconds=30)
    clock.now += 29
    with pytest.raises(BackendUnavailable, match="does not answer") as caught:
        b.get("config.json")
    assert caught.value.operation == "get" and caught.value.repository == b.where
    with pytest.raises(BackendUnavailable):
        b.put_if_absent("locks/l.json", b"{}")
    clock.now += 1
    assert b.get("config.json") == b"c"
    assert b.stat("locks/l.json") is None  # the refused create did not happen


def test_an_outage_for_some_calls_fails_exactly_that_many() -> None:
    b = MemoryBackend()
    b.unavailable(calls=3, ops=["list"])
    b.put("index/a.idx", b"a")  # not a listed operation: unaffected
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            b.list("index/")
    assert [o.key for o in b.list("index/")] == ["index/a.idx"]


def test_an_outage_without_an_end_lasts_until_the_server_is_back() -> None:
    b = MemoryBackend()
    b.unavailable()
    for _ in range(5):
        with pytest.raises(BackendUnavailable):
            b.stat("config.json")
    b.available()
    assert b.stat("config.json") is None


# --- a backup-only credential -----------------------------------------------------------------


def test_a_backup_only_credential_may_write_but_not_delete() -> None:
    b = MemoryBackend(where="s3://bucket/repo")
    b.deny("delete", reason="AccessDenied by the bucket policy")
    assert b.put_if_absent("index/a.idx", b"a") is True
    with pytest.raises(BackendDenied, match="s3://bucket/repo: delete refused: AccessDenied") as caught:
        b.delete("index/a.idx")
    assert caught.value.operation == "delete"
    assert b.get("index/a.idx") == b"a"
    b.allow("delete")
    b.delete("index/a.idx")
    assert b.stat("index/a.idx") is None


def test_a_fault_naming_an_unknown_operation_is_refused() -> None:
    b = MemoryBackend()
    with pytest.raises(ValueError, match="remove"):
        b.deny("remove")
    with pytest.raises(ValueError):
        b.tear("../x")


# --- time -------------------------------------------------------------------------------------


def test_objects_take_their_mtime_from_the_servers_clock() -> None:
    clock = FakeClock(1_000.0)
    b = MemoryBackend(clock=clock)
    b.put_if_absent("locks/a.json", b"{}")
    clock.now = 1_400.0
    b.put("locks/b.json", b"{}")
    assert {o.key: o.mtime for o in b.list("locks/")} == {"locks/a.json": 1_000.0, "locks/b.json": 1_400.0}


def test_latency_delays_the_chosen_operations_only() -> None:
    b = MemoryBackend()
    b.put("config.json", b"c")
    b.latency(0.05, ops=["get"])
    start = time.monotonic()
    b.stat("config.json")
    fast = time.monotonic() - start
    start = time.monotonic()
    b.get("config.json")
    slow = time.monotonic() - start
    assert slow >= 0.05 > fast
    b.latency(0)
    start = time.monotonic()
    b.get("config.json")
    assert time.monotonic() - start < 0.05


def test_a_slow_request_does_not_hold_up_the_others() -> None:
    b = MemoryBackend()
    b.latency(0.3, ops=["get_range"])
    b.put_if_absent("packs/ab/ab.pack", b"p")
    reader = threading.Thread(target=b.get_range, args=("packs/ab/ab.pack", 0, 1))
    reader.start()
    start = time.monotonic()
    b.put_if_absent("index/ab.idx", b"i")
    assert time.monotonic() - start < 0.2
    reader.join()


# --- counts -----------------------------------------------------------------------------------


def test_requests_are_counted_per_operation_and_top_level_prefix() -> None:
    b = MemoryBackend()
    b.put_if_absent("index/a.idx", b"a")
    b.put_if_absent("index/b.idx", b"b")
    list(b.list("index/"))
    b.list("snapshots/s1/")  # counted when asked for, even if never consumed
    assert b.stat("config.json") is None
    with pytest.raises(ObjectMissing):
        b.get_range("packs/ab/ab.pack", 0, 1)  # a failed request is still a round trip
    with pytest.raises(ValueError):
        b.get("../config.json")  # refused before any request: not counted
    assert b.counts["put_if_absent", "index/"] == 2
    assert b.counts["list", "index/"] == 1
    assert b.counts["list", "snapshots/"] == 1
    assert b.counts["stat", "config.json"] == 1
    assert b.counts["get", "config.json"] == 0
    assert b.counts["get_range", "packs/"] == 1
    assert b.counts.total() == 6
    assert b.counts.total(under="index/") == 3
    b.counts.reset()
    assert b.counts.snapshot() == {}


def test_the_counting_wrapper_counts_what_it_forwards(tmp_path: Path) -> None:
    inner = LocalBackend(tmp_path / "repo")
    b = CountingBackend(inner)
    assert b.where == inner.where and b.caps == inner.caps
    b.put("config.json", b"c")
    b.put_if_absent("index/a.idx", b"a")
    assert b.get("config.json", max_bytes=10) == b"c"
    b.get_to("index/a.idx", tmp_path / "a.idx")
    assert b.get_ranges("index/a.idx", [(0, 1)]) == [b"a"]
    b.get_range("index/a.idx", 0, 1)
    assert [o.key for o in b.list("index/")] == ["index/a.idx"]
    b.stat("index/a.idx")
    b.delete("index/a.idx")
    b.list("")
    assert b.counts.snapshot() == {
        ("put", "config.json"): 1,
        ("get", "config.json"): 1,
        ("put_if_absent", "index/"): 1,
        ("get_to", "index/"): 1,
        ("get_ranges", "index/"): 1,
        ("get_range", "index/"): 1,
        ("list", "index/"): 1,
        ("stat", "index/"): 1,
        ("delete", "index/"): 1,
        ("list", ""): 1,
    }


def test_counts_from_many_threads_add_up() -> None:
    b = MemoryBackend()

    def stat_many() -> None:
        for _ in range(500):
            b.stat("index/x.idx")

    threads = [threading.Thread(target=stat_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.counts["stat", "index/"] == 4000
