"""A 64 MiB large object goes through backup and restore in pieces: identical afterwards, and
the Python memory the backup and the restore allocate stays below the object's size: it is
bounded by what the repository buffers (the chunker reads 8 MiB blocks, a pack of 4 MiB here,
4 chunks in flight: about 37 MiB measured), not by the object (reading it whole took 3 copies)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from davit.adapters.repository.repository import Repository
from davit.adapters.repository.tuning import Tuning
from tests.integration.postgres.test_postgres_roundtrip import Pg
from tests.integration.postgres.test_postgres_roundtrip import pg as pg  # the fixture
from tests.integration.postgres.test_postgres_selection import backup, make_db, restore, rows

pytestmark = pytest.mark.postgres

SIZE = 64 << 20


def test_a_64_mib_large_object_round_trips_without_being_held_whole_in_memory(pg: Pg, tmp_path: Path) -> None:
    shop, copy = pg.name("shop"), pg.name("copy")
    make_db(pg, shop, "")
    digest = hashlib.md5()
    with pg.connect(shop) as conn:
        oid = conn.execute("SELECT lo_create(0)").fetchone()[0]  # type: ignore[index]
        for offset in range(0, SIZE, 1 << 20):
            piece = os.urandom(1 << 20)
            digest.update(piece)
            conn.execute("SELECT lo_put(%s, %s, %s)", (oid, offset, piece))
    repo = Repository.open(tmp_path / "repo")

    tracemalloc.start()
    try:
        backup(pg, repo, shop, tuning=Tuning(pack_size=4 << 20, inflight_chunks=4))
        backed_up_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        restore(pg, repo, shop, copy)
        restored_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert rows(pg, copy, f"SELECT md5(lo_get({oid})), octet_length(lo_get({oid}))") == [(digest.hexdigest(), SIZE)]
    assert backed_up_peak < SIZE * 3 // 4, f"backup peaked at {backed_up_peak >> 20} MiB of Python memory"
    assert restored_peak < SIZE // 4, f"restore peaked at {restored_peak >> 20} MiB of Python memory"
