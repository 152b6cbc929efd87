"""bench/mongo.py compares davit with its bare loops fairly: the pairs alternate which side goes
first, a restore's baseline builds the index davit's whole run builds, and the CPU seconds of a
process (the load-independent figure printed with each measurement) are read from /proc.

Regression (issue 18): the bare loop always ran first, and the restore goal compared davit's
whole run, index build included, with bare inserts that built no index."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # bench/mongo.py imports its sibling benchlib
    try:
        spec = importlib.util.spec_from_file_location("bench_mongo_under_test", BENCH / "mongo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_the_side_that_goes_first_alternates_from_pair_to_pair(bench: ModuleType) -> None:
    order: list[tuple[str, int]] = []
    bench.alternate(4, lambda i: order.append(("bare", i)), lambda i: order.append(("davit", i)))

    assert order == [
        ("bare", 0),
        ("davit", 0),
        ("davit", 1),
        ("bare", 1),
        ("bare", 2),
        ("davit", 2),
        ("davit", 3),
        ("bare", 3),
    ]


def test_a_bare_restore_is_compared_with_its_index_build_included(bench: ModuleType) -> None:
    bare_restore = {"seconds": 20.0, "index_seconds": 1.5, "bytes": 1, "docs": 1}
    bare_backup = {"seconds": 27.0, "bytes": 1}

    assert bench.baseline_seconds(bare_restore) == 21.5
    assert bench.baseline_seconds(bare_backup) == 27.0


def test_the_cpu_seconds_of_a_busy_process_grow_and_a_gone_one_reads_zero(bench: ModuleType) -> None:
    before = bench.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass

    assert bench.cpu_seconds(os.getpid()) - before >= 0.2
    assert bench.cpu_seconds(None) == 0.0
    assert bench.cpu_seconds(2**22 + 1) == 0.0  # above the kernel's pid_max: no such process


def test_the_server_is_found_by_the_address_in_its_command_line(bench: ModuleType) -> None:
    program = "import time; print('up', flush=True); time.sleep(30)"
    server = subprocess.Popen([sys.executable, "-c", program, "-listen-addr", "127.0.0.1:1"], stdout=subprocess.PIPE)
    try:
        # until it prints, /proc may still show the forked parent's command line (flaky otherwise)
        assert server.stdout is not None and server.stdout.readline() == b"up\n"
        assert bench.server_pid("mongodb://127.0.0.1:1/") == server.pid
        assert bench.server_pid("mongodb://user@db.example:27017/") is None
    finally:
        server.kill()
        server.wait()
