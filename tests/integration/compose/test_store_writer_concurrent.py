"""Two runs at once writing into one target's chunk store (`pipeline.store_command`), say two
davit daemons migrating the same project, or a retried attempt while the first one's writer
still runs: both send the same content-addressed chunk. A chunk one writer acknowledges must be
whole in `chunks/` whatever the other does, and stay whole when the other is killed -9 (the
next run trusts a listed chunk's size). Run locally: the same shell as the target's."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from davit.adapters.compose.pipeline import store_command


def wait_for(cond: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_chunk_acknowledged_by_one_writer_stays_whole_when_another_writing_it_too_is_killed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    chunk = os.urandom(100_000)
    a = subprocess.Popen(["sh", "-c", store_command(str(store))], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    b = subprocess.Popen(
        ["sh", "-c", store_command(str(store))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    assert a.stdin and a.stdout and b.stdin
    try:
        # A has the whole chunk written and waits for its next line
        a.stdin.write(b"c 100000\n" + chunk)
        a.stdin.flush()
        wait_for(lambda: any(p.stat().st_size == len(chunk) for p in (store / "incoming").rglob("c.zst")), "A wrote c")
        time.sleep(0.2)
        # B, sending the same chunk, is half-way through it (its dd opened its file and waits
        # for the rest of the block)
        b.stdin.write(b"c 100000\n" + chunk[:50_000])
        b.stdin.flush()
        wait_for(lambda: any(p.stat().st_size == 0 for p in (store / "incoming").rglob("c.zst")), "B opened c")
        # A's stream ends: A files and acknowledges its batch
        a.stdin.write(b"END 0\n")
        a.stdin.close()
        ready, _, _ = select.select([a.stdout], [], [], 20)
        assert ready, "A acknowledged nothing"
        acked = a.stdout.read().decode().split()
        assert a.wait(timeout=20) == 0
    finally:
        os.killpg(b.pid, signal.SIGKILL)  # B (its dd too) dies mid-chunk
        b.wait()
        a.kill()
        a.wait()
    assert acked == ["c"]
    filed = store / "chunks" / "c.zst"
    assert filed.stat().st_size == len(chunk), "an acknowledged chunk is cut short in chunks/"
    assert filed.read_bytes() == chunk
