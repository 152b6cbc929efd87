"""davitd and davit as subprocesses, as an operator runs them: a home directory per test."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from davit.daemon.recorder import new_event_id
from davit.domain import events as ev
from davit.eventstore.logkey import read_log_key
from davit.eventstore.sqlite import SqliteEventStore
from tests.fixtures.fullfs import mounted_tmpfs

BIN = Path(sys.executable).parent


@dataclass
class Davit:
    """One davit installation: a --home, its daemon process, and the CLI."""

    home: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs.d"

    def configure(self, text: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "davit.toml").write_text(text)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = self.home / f"davitd-{len(self.logs)}.log"
        self.logs.append(log)
        output = open(log, "wb")  # noqa: SIM115 (the daemon writes it while it runs)
        self.proc = subprocess.Popen([str(BIN / "davitd"), "--home", str(self.home)], stdout=output, stderr=subprocess.STDOUT)
        self.wait_for(lambda: "ready" in log.read_text(), 30, "davitd to be ready")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(90)
        return self.proc.returncode

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "davit"), "--home", str(self.home), *args], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"davit {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.cli(*args, "--json").stdout.splitlines() if line.strip()]

    def runs(self, job: str | None = None) -> list[dict[str, Any]]:
        return self.json_lines("runs", *(["--job", job] if job else []))

    def history(self, *args: str) -> list[dict[str, Any]]:
        return self.json_lines("history", *args)

    def events(self, where: str = "1=1") -> list[tuple[int, str, str, dict[str, Any]]]:
        """Read the log directly (read-only), cheap enough to poll every few milliseconds."""
        db = self.home / "state" / "davit.db"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(f"SELECT position, stream, type, data FROM events WHERE {where} ORDER BY position")
            return [(p, s, t, json.loads(d)) for p, s, t, d in rows]
        finally:
            conn.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"davitd exited ({self.proc.returncode}) while waiting for {what}:\n" + self.logs[-1].read_text()[-3000:]
                )
            time.sleep(poll)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; log tail:\n"
            + (self.logs[-1].read_text()[-3000:] if self.logs else "")
        )

    def run_log_head(self) -> int | None:
        """The position of the newest `Run*` event of any run, read directly from this home's
        SQLite log (a few ms); None where that file is absent or cannot be read now (a log on
        PostgreSQL, a locked file). A run's state is the fold of its `Run*` events alone (each
        machine trigger is one, davit/domain/events.py), so while this stays put `davit runs`
        would print the same states."""
        db = self.home / "state" / "davit.db"
        if not db.exists():
            return None
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                sql = "SELECT max(position) FROM events WHERE stream LIKE 'run-%' AND type LIKE 'Run%'"
                head = conn.execute(sql).fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        return -1 if head is None else int(head)

    def wait_run_state(self, job: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
        """The run of `job` as `davit runs` prints it once it is in one of `states`. The CLI (a
        second of CPU each on a loaded two-core machine, which the daemon under test then lacks)
        is asked only when a run event was added since it last was (checked every 50 ms), every
        5 s regardless, and every 0.3 s where the log cannot be read here."""
        found: dict[str, Any] = {}
        asked: dict[str, Any] = {"head": None, "at": -1e9}

        def done() -> bool:
            head, now = self.run_log_head(), time.monotonic()
            if head is None:
                if now - asked["at"] < 0.3:
                    return False
            elif head == asked["head"] and now - asked["at"] < 5:
                return False
            asked.update(head=head, at=now)
            runs = self.runs(job)
            if runs and runs[-1]["state"] in states:
                found.update(runs[-1])
                return True
            return False

        self.wait_for(done, timeout, f"a run of {job} to reach {states}", poll=0.05)
        return found


@pytest.fixture
def davit(tmp_path: Path) -> Iterator[Davit]:
    instance = Davit(tmp_path / "home")
    instance.home.mkdir()
    yield instance
    if instance.proc is not None and instance.proc.poll() is None:
        instance.proc.kill()
        instance.proc.wait(10)


def keyed_store(davit: Davit) -> SqliteEventStore:
    """davit's event log as the CLI opens it to append: with davitd's log key, beside the config."""
    key_path = davit.home / "log.key"
    return SqliteEventStore(davit.home / "state" / "davit.db", key=read_log_key(key_path), key_path=key_path)


async def append_events(davit: Davit, stream: str, type_name: str, datas: list[dict[str, Any]]) -> list[int]:
    """One event of `type_name` per item of `datas`, appended to `stream` at its current version
    as another writer of the log would (no rule of the CLI's applied); their positions."""
    positions: list[int] = []
    async with keyed_store(davit) as store:
        for data in datas:
            version = await store.stream_version(stream)
            positions += await store.append(stream, version, [ev.NewEvent(new_event_id(), type_name, data)])
    return positions


def write_job(davit: Davit, filename: str, text: str) -> Path:
    davit.jobs_dir.mkdir(parents=True, exist_ok=True)
    path = davit.jobs_dir / filename
    tmp = path.with_suffix(".part")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    import hashlib

    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("l", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("d", st.st_mode & 0o7777, st.st_mtime_ns)
        else:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            out[rel] = ("f", st.st_mode & 0o7777, st.st_mtime_ns, st.st_size, h.hexdigest())
    return out


def make_big_tree(root: Path, megabytes: int) -> None:
    """A mixed tree: many small text files, large random files, a long run of zeros."""
    import random

    rnd = random.Random(7)
    words = ["davit", "crane", "lifeboat", "deck", "winch", "rope", "hull", "keel"]
    for i in range(1500):
        d = root / "small" / f"d{i % 25}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"note{i}.txt").write_text(" ".join(rnd.choice(words) for _ in range(rnd.randint(5, 1500))))
    (root / "zeros.img").write_bytes(b"\0" * (40 << 20))
    remaining = megabytes - 45
    index = 0
    while remaining > 0:
        size = min(remaining, 64)
        with open(root / f"blob{index:02d}.bin", "wb") as fh:
            for _ in range(size):
                fh.write(os.urandom(1 << 20))
        remaining -= size
        index += 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB file system (a tmpfs) to fill up on purpose; `remount_small_disk` grows it."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    with mounted_tmpfs(mountpoint, "size=8m"):
        yield mountpoint


def remount_small_disk(mountpoint: Path, megabytes: int) -> None:
    """What an operator does when a disk is full: make room (here: grow the tmpfs)."""
    subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(mountpoint)], check=True)
