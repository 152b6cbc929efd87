"""Event log benchmark: davit's SqliteEventStore (group commit) against raw sqlite3, one event per commit.

Run: `.venv/bin/python bench/eventlog.py [--seconds S] [--quick] [--goals-json PATH]` (`--quick`: 0.5 s per
measurement). `--store postgresql`: the same against a raw psycopg loop on the postgres peer
(bench/eventlog_postgres.py).

N concurrent appenders (1, 8, 32) each append small events to their own stream, one event per
append, every append durable (WAL, `synchronous=FULL`) before it returns. The baseline, in the
same run, is the `sqlite3` module with N threads, each on its own connection, committing one
event per transaction (`BEGIN IMMEDIATE; INSERT; COMMIT`) into a table of the same shape. Then,
with 8 store appenders running, a reader in a separate process tails the log the way
`davit history --follow` does (`store.tail`), counting "database is locked" errors and
measuring its lag: from an event's `recorded_at` to the moment the reader saw it.
The databases live in a temporary directory under `./.bench/` (the repository's disk, not tmpfs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import Goals, Spec, add_goal_arguments, cpu_count, disk_of, load_note, table, ts

from davit.domain.events import NewEvent
from davit.domain.ports import RunLog
from davit.eventstore.sqlite import SqliteEventStore

ROOT = Path(__file__).resolve().parent.parent
COUNTS = (1, 8, 32)
TAIL_WRITERS = 8

# The goals of issue 9.
GOALS = {
    "group-commit": Spec("8 appenders vs raw sqlite3, one commit per event (its best N)", ">=", 1.0, "x", 9),
    "locked": Spec("'database is locked' errors seen by a tailing reader", "<=", 0, "", 9),
    "unseen": Spec("events the tailing reader missed", "<=", 0, "", 9),
}


def payload(writer: int, n: int) -> dict[str, Any]:
    return {"writer": writer, "n": n, "step": "store", "cursor": {"path": f"dir/sub/file{n:06d}.bin"}, "bytes": n * 1024}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- davit's store -----------------------------------------------------------------------------


async def store_appenders(path: Path, writers: int, seconds: float) -> tuple[int, list[float], int]:
    """Events appended, append latencies (s) and errors, with `writers` concurrent appenders."""
    async with SqliteEventStore(path) as store:
        return await appenders(store, writers, seconds)


async def appenders(store: RunLog, writers: int, seconds: float) -> tuple[int, list[float], int]:
    """`writers` concurrent appenders to `store` for `seconds`, each to its own stream, one
    event per append: events appended, append latencies (s) and errors."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def appender(i: int) -> int:
        nonlocal errors
        version = 0
        while time.monotonic() < deadline:
            event = NewEvent(uuid.uuid4().hex, "BenchAppended", payload(i, version))
            start = time.perf_counter()
            try:
                await store.append(f"bench-{i}", version, [event])
            except Exception as exc:
                errors += 1
                print(f"append error: {type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)
            version += 1
        return version

    counts = await asyncio.gather(*(appender(i) for i in range(writers)))
    return sum(counts), latencies, errors


# --- raw sqlite3 -------------------------------------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL,
    version INTEGER NOT NULL, type TEXT NOT NULL, schema INTEGER NOT NULL, data TEXT NOT NULL,
    recorded_at TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE(stream, version));
CREATE INDEX ix_events_type ON events(type);
"""


def raw_row(writer: int, version: int, prev: str) -> tuple[Any, ...]:
    """A baseline row: event id, stream, version, type, data, recorded_at, previous hash and
    its hash (the schema is 1 and the position the table's), as davit's rows hold them."""
    data = json.dumps(payload(writer, version), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(f"{prev}{writer}{version}{data}".encode()).hexdigest()
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    return (uuid.uuid4().hex, f"bench-{writer}", version, "BenchAppended", data, now, prev, digest)


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def raw_appenders(path: Path, writers: int, seconds: float) -> int:
    """Events committed by `writers` threads, one event per transaction."""
    setup = raw_connect(path)
    setup.executescript(RAW_SCHEMA)
    setup.close()
    counts = [0] * writers
    deadline = time.monotonic() + seconds

    def appender(i: int) -> None:
        conn = raw_connect(path)
        version, prev = 0, "0" * 64
        while time.monotonic() < deadline:
            version += 1
            row = raw_row(i, version, prev)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO events (event_id, stream, version, type, schema, data, recorded_at, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                row,
            )
            conn.execute("COMMIT")
            prev, counts[i] = row[-1], version
        conn.close()

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


# --- the tailing reader ------------------------------------------------------------------------


async def follow_until(stop: Any, follow: Callable[[], Awaitable[None]]) -> None:
    """Run a reader's `follow` until `stop` is set, one second more (it catches up with the
    last commits), then cancel it."""
    task = asyncio.create_task(follow())
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def tail_reader(path: str, ready: Any, stop: Any, results: Any) -> None:
    """In its own process: follow the log like `davit history --follow`; lags and locked errors."""

    lags: list[float] = []
    counts = {"locked": 0, "other": 0}

    async def follow() -> None:
        after = 0
        async with SqliteEventStore(Path(path)) as store:
            ready.set()
            while True:
                try:
                    async for event in store.tail(after):
                        lags.append(time.time() - ts(event.recorded_at))
                        after = event.position
                except Exception as exc:  # count it and carry on from the last event seen
                    key = "locked" if "database is locked" in str(exc) else "other"
                    counts[key] += 1
                    print(f"reader error: {type(exc).__name__}: {exc}")

    async def main() -> dict[str, Any]:
        await follow_until(stop, follow)
        return {
            "seen": len(lags),
            **counts,
            "median": statistics.median(lags) if lags else float("nan"),
            "p99": percentile(lags, 0.99),
        }

    results.put(asyncio.run(main()))


def with_tail_reader(path: Path, seconds: float) -> tuple[int, int, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    # The store creates its schema on open; do it first so the reader does not race the writer on it.
    asyncio.run(_create(path))
    reader = ctx.Process(target=tail_reader, args=(str(path), ready, stop, results))
    reader.start()
    ready.wait(30)
    written, _lat, errors = asyncio.run(store_appenders(path, TAIL_WRITERS, seconds))
    stop.set()
    report = results.get(timeout=120)
    reader.join(30)
    return written, errors, report


async def _create(path: Path) -> None:
    async with SqliteEventStore(path):
        pass


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each measurement runs (default 4)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench", help="where the databases go (default ./.bench)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite", help="which store (default sqlite)")
    import eventlog_postgres  # (it imports this module's helpers)

    eventlog_postgres.arguments(parser)
    add_goal_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.seconds = 0.5
    if args.store == "postgresql":  # the postgres peer's own bench (bench/eventlog_postgres.py)
        raise SystemExit(eventlog_postgres.run(args))
    goals = Goals("eventlog", GOALS)
    base = args.workdir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="eventlog-", dir=base))
    print(f"databases in {tmp} on {disk_of(tmp)}; {cpu_count()} CPUs; {args.seconds:.0f} s per measurement; {load_note()}")
    try:
        rows, rates = [], {}
        for n in COUNTS:
            print(f"measuring {n} appender(s) ...", flush=True)
            raw = raw_appenders(tmp / f"raw-{n}.db", n, args.seconds) / args.seconds
            written, latencies, errors = asyncio.run(store_appenders(tmp / f"store-{n}.db", n, args.seconds))
            rate = written / args.seconds
            rates[n] = (rate, raw)
            rows.append(
                [
                    str(n),
                    f"{rate:,.0f}",
                    f"{raw:,.0f}",
                    f"{rate / raw:.2f}x",
                    "",
                    f"{percentile(latencies, 0.5) * 1000:.1f}",
                    f"{percentile(latencies, 0.99) * 1000:.1f}",
                    str(errors),
                ]
            )
        raw1 = rates[1][1]
        for row, n in zip(rows, COUNTS, strict=True):
            row[4] = f"{rates[n][0] / raw1:.2f}x"
        print(
            table(
                [
                    "appenders",
                    "store ev/s",
                    "raw ev/s",
                    "store/raw (same N)",
                    "store/raw (1 writer)",
                    "append p50 ms",
                    "append p99 ms",
                    "errors",
                ],
                rows,
                "\nDurable appends, one event per append (store: group commit; raw: one commit per event)",
            )
        )

        print(f"\nmeasuring {TAIL_WRITERS} appenders with a tailing reader in another process ...", flush=True)
        written, errors, rep = with_tail_reader(tmp / "tail.db", args.seconds)
        print(
            table(
                ["writers", "store ev/s", "reader saw", "'database is locked'", "other errors", "lag median ms", "lag p99 ms"],
                [
                    [
                        str(TAIL_WRITERS),
                        f"{written / args.seconds:,.0f}",
                        f"{rep['seen']}/{written}",
                        str(rep["locked"]),
                        str(rep["other"] + errors),
                        f"{rep['median'] * 1000:.0f}",
                        f"{rep['p99'] * 1000:.0f}",
                    ]
                ],
                "\nTailing reader (store.tail, as `davit history --follow`) while the writers run",
            )
        )

        best_raw = max(r for _, r in rates.values())
        store8 = rates[8][0]
        goals.ratio("group-commit", store8 / best_raw, f"{store8:,.0f} ev/s", f"raw {best_raw:,.0f} ev/s")
        goals.absolute("locked", rep["locked"], str(rep["locked"]))
        goals.absolute("unseen", written - rep["seen"], str(written - rep["seen"]), f"saw {rep['seen']} of {written}")
        print(f"\nat the end: {load_note()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(goals.finish(args.goals_json))


if __name__ == "__main__":
    main()
