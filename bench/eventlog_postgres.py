"""Event log benchmark on PostgreSQL: davit's PostgresEventStore (group commit) against a raw
psycopg loop, one event per commit.

Run: `.venv/bin/python bench/eventlog.py --store postgresql [--seconds S] [--rounds R] [--quick]`
(or `bench/eventlog_postgres.py` with the same options; `make bench` runs it so).

Uses the postgres test peer (`python -m tests.peers up --only postgres`), found through the
peers' state file (`.peers/state.json` or DAVIT_PEERS_STATE), and works in a database of its
own (`davit_bench_eventlog_e-pg_<random>`), dropped at the end whatever happens.

- Appends: 8 concurrent appenders through `PostgresEventStore`, each to its own stream, one
  event per append, every append durable (`synchronous_commit = on`) before it returns. The
  store is keyed as davitd's is (a log key: every event an HMAC link, the head sealed).
  The baseline, in the same run: 8 threads with a psycopg connection each, `INSERT` of one
  row of the same shape (a position from an identity column, the same indexes) and `COMMIT`
  per event. Paired rounds, the order alternating (store first in odd rounds), each on fresh
  tables; the goal compares the median of the per-round ratios.
- Tail: 8 store appenders with a reader in another process following the log as
  `davit history --follow` does (`store.tail`): it must see every event, in position order;
  its lag (an event's `recorded_at` to the moment the reader has it) median and p99. Then the
  chain is verified (`verify_chain`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing as mp
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib import Goals, Spec, add_goal_arguments, cpu_count, load_note, load_short, table, ts
from eventlog import appenders, follow_until, percentile, raw_row

ROOT = Path(__file__).resolve().parent.parent
WRITERS = 8

GOALS = {
    "group-commit": Spec(
        "PostgreSQL: 8 appenders vs raw psycopg, one commit per event (median of paired rounds)", ">=", 1.0, "x", 22
    ),
    "unseen": Spec("PostgreSQL: events the tailing reader missed", "<=", 0, "", 22),
    "chain": Spec("PostgreSQL: chain breaks found by verify_chain after the runs", "<=", 0, "", 22),
}

RAW_DDL = (
    """CREATE TABLE raw_events (
        position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
        stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, schema INTEGER NOT NULL,
        data TEXT NOT NULL, recorded_at TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        UNIQUE (stream, version))""",
    "CREATE INDEX ix_raw_events_type ON raw_events (type)",
    "CREATE INDEX ix_raw_events_stream_prefix ON raw_events (stream text_pattern_ops, position)",
)
RAW_INSERT = (
    "INSERT INTO raw_events (event_id, stream, version, type, schema, data, recorded_at, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s)"
)


# --- the peer and the bench's own database -----------------------------------------------------


def peer() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.peers.state import load

    state = load().get("postgres", {})
    if not state.get("ok"):
        sys.exit("the postgres peer is not up: python -m tests.peers up --only postgres")
    state["password"] = Path(state["password_file"]).read_text().strip()
    return state


def connect(p: dict[str, Any], dbname: str, autocommit: bool = False) -> Any:
    import psycopg

    return psycopg.connect(
        host=p["host"], port=p["port"], user=p["user"], password=p["password"], dbname=dbname, autocommit=autocommit
    )


@contextmanager
def bench_database(p: dict[str, Any]) -> Iterator[str]:
    from psycopg import sql

    name = f"davit_bench_eventlog_e-pg_{uuid.uuid4().hex[:10]}"
    with connect(p, "postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with connect(p, "postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def url(p: dict[str, Any], dbname: str) -> Any:
    from sqlalchemy.engine import URL

    return URL.create("postgresql+psycopg", p["user"], p["password"], p["host"], p["port"], dbname)


def fresh_tables(p: dict[str, Any], dbname: str) -> None:
    with connect(p, dbname, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS events, chain_head, schema_version, raw_events")
        for statement in RAW_DDL:
            conn.execute(statement)
        conn.execute("CHECKPOINT")  # neither side pays for the other's dirty pages


# --- davit's store -----------------------------------------------------------------------------


@functools.cache
def bench_key() -> Any:
    """The log key of this run (one a process; only the main process writes and verifies)."""
    from davit.eventstore.logkey import LogKey

    return LogKey(Path("(the bench's key, in memory)"), secrets.token_bytes(32))


async def store_appenders(p: dict[str, Any], dbname: str, seconds: float) -> tuple[int, list[float], int]:
    """Events appended, append latencies (s) and errors of `WRITERS` concurrent appenders."""
    from davit.eventstore.postgres import PostgresEventStore

    async with PostgresEventStore(url(p, dbname), key=bench_key()) as store:
        return await appenders(store, WRITERS, seconds)


# --- raw psycopg -------------------------------------------------------------------------------


def raw_appenders(p: dict[str, Any], dbname: str, seconds: float) -> tuple[int, list[float]]:
    """Events committed by `WRITERS` threads, each on its own connection, one event per transaction."""
    conns = [connect(p, dbname) for _ in range(WRITERS)]
    for conn in conns:
        conn.execute("SET synchronous_commit = on")
        conn.commit()
    counts = [0] * WRITERS
    latencies: list[list[float]] = [[] for _ in range(WRITERS)]
    start_gate = threading.Barrier(WRITERS + 1)
    deadline = [0.0]

    def appender(i: int) -> None:
        conn, version, prev = conns[i], 0, "0" * 64
        start_gate.wait()
        while time.monotonic() < deadline[0]:
            version += 1
            row = raw_row(i, version, prev)
            began = time.perf_counter()
            conn.execute(RAW_INSERT, row)
            conn.commit()
            latencies[i].append(time.perf_counter() - began)
            prev, counts[i] = row[-1], version

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    for conn in conns:
        conn.close()
    return sum(counts), [x for lat in latencies for x in lat]


# --- the tailing reader ------------------------------------------------------------------------


def tail_reader(p: dict[str, Any], dbname: str, ready: Any, stop: Any, results: Any) -> None:
    """In its own process: follow the log like `davit history --follow`; lags, order, errors."""
    sys.path.insert(0, str(ROOT))
    from davit.eventstore.postgres import PostgresEventStore

    lags: list[float] = []
    positions: list[int] = []
    errors = [0]

    async def follow() -> None:
        after = 0
        store = await PostgresEventStore(url(p, dbname)).open(create=False, readonly=True)
        try:
            ready.set()
            while True:
                try:
                    async for event in store.tail(after):
                        lags.append(time.time() - ts(event.recorded_at))
                        positions.append(event.position)
                        after = event.position
                except Exception as exc:  # count it and carry on from the last event seen
                    errors[0] += 1
                    print(f"reader error: {type(exc).__name__}: {exc}")
        finally:
            await store.close()

    async def main() -> dict[str, Any]:
        await follow_until(stop, follow)
        return {
            "seen": len(positions),
            "in_order": positions == list(range(1, len(positions) + 1)),
            "errors": errors[0],
            "median": statistics.median(lags) if lags else float("nan"),
            "p99": percentile(lags, 0.99),
        }

    results.put(asyncio.run(main()))


def with_tail_reader(p: dict[str, Any], dbname: str, seconds: float) -> tuple[int, int, dict[str, Any]]:
    fresh_tables(p, dbname)
    sealed = asyncio.run(_create(p, dbname))  # the log exists before anyone tails it, as davitd makes it
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=tail_reader, args=(p, dbname, ready, stop, results))
    reader.start()
    if not ready.wait(60):
        raise SystemExit("the tailing reader did not start")
    written, _lat, errors = asyncio.run(store_appenders(p, dbname, seconds))
    stop.set()
    report = results.get(timeout=120)
    reader.join(30)
    return written + sealed, errors, report


async def _create(p: dict[str, Any], dbname: str) -> int:
    """Make the log, keyed: its events then (the key's marker), which the reader sees too."""
    from davit.eventstore.postgres import PostgresEventStore

    async with PostgresEventStore(url(p, dbname), key=bench_key()) as store:
        return await store.head_position()


async def _verify(p: dict[str, Any], dbname: str) -> Any:
    from davit.eventstore.postgres import PostgresEventStore

    store = await PostgresEventStore(url(p, dbname)).open(create=False, readonly=True)
    try:
        return await store.verify_chain(bench_key())
    finally:
        await store.close()


# --- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    goals = Goals("eventlog_postgres", GOALS)
    p = peer()
    rounds = 1 if args.quick else args.rounds
    print(
        f"PostgreSQL {p.get('version', '?')} at {p['host']}:{p['port']}; {cpu_count()} CPUs; "
        f"{rounds} paired rounds of {args.seconds:g} s; {load_note()}"
    )
    with bench_database(p) as dbname:
        rows, ratios, chain_breaks = [], [], 0
        for r in range(1, rounds + 1):
            order = ("store", "raw") if r % 2 else ("raw", "store")
            figures: dict[str, tuple[float, list[float], int]] = {}
            for side in order:
                fresh_tables(p, dbname)
                if side == "raw":
                    count, latencies = raw_appenders(p, dbname, args.seconds)
                    figures["raw"] = (count / args.seconds, latencies, 0)
                else:
                    count, latencies, errors = asyncio.run(store_appenders(p, dbname, args.seconds))
                    figures["store"] = (count / args.seconds, latencies, errors)
                    report = asyncio.run(_verify(p, dbname))
                    chain_breaks += 0 if report.ok else 1
            (store, s_lat, errors), (raw, r_lat, _) = figures["store"], figures["raw"]
            ratios.append(store / raw)
            rows.append(
                [
                    str(r),
                    "-".join(order),
                    f"{store:,.0f}",
                    f"{raw:,.0f}",
                    f"{store / raw:.2f}x",
                    f"{percentile(s_lat, 0.5) * 1000:.1f}/{percentile(s_lat, 0.99) * 1000:.1f}",
                    f"{percentile(r_lat, 0.5) * 1000:.1f}/{percentile(r_lat, 0.99) * 1000:.1f}",
                    str(errors),
                    load_short(),
                ]
            )
            print(f"round {r}: store {store:,.0f} ev/s, raw {raw:,.0f} ev/s, {store / raw:.2f}x ({load_note()})", flush=True)
        print(
            table(
                ["round", "order", "store ev/s", "raw ev/s", "store/raw", "store p50/p99 ms", "raw p50/p99 ms", "errors", "load"],
                rows,
                f"\n{WRITERS} appenders, one event per durable append (store: group commit; raw: one commit per event)",
            )
        )

        print(f"\nmeasuring {WRITERS} appenders with a tailing reader in another process ...", flush=True)
        written, errors, rep = with_tail_reader(p, dbname, args.seconds)
        report = asyncio.run(_verify(p, dbname))
        chain_breaks += 0 if report.ok else 1
        print(
            table(
                ["writers", "store ev/s", "reader saw", "in order", "errors", "lag median ms", "lag p99 ms", "chain"],
                [
                    [
                        str(WRITERS),
                        f"{written / args.seconds:,.0f}",
                        f"{rep['seen']}/{written}",
                        "yes" if rep["in_order"] else "NO",
                        str(rep["errors"] + errors),
                        f"{rep['median'] * 1000:.0f}",
                        f"{rep['p99'] * 1000:.0f}",
                        f"ok ({report.checked} events)"
                        if report.ok
                        else f"BROKEN at {report.first_bad_position}: {report.reason}",
                    ]
                ],
                "\nTailing reader (store.tail, as `davit history --follow`) while the writers run",
            )
        )
        median = statistics.median(ratios)
        note = f"median of {rounds} rounds: {', '.join(f'{x:.2f}' for x in ratios)}"
        goals.ratio(
            "group-commit",
            median,
            f"{statistics.median(float(r[2].replace(',', '')) for r in rows):,.0f} ev/s",
            f"raw {statistics.median(float(r[3].replace(',', '')) for r in rows):,.0f} ev/s",
            note,
        )
        missed = written - rep["seen"] if rep["in_order"] else max(1, written - rep["seen"])
        goals.absolute("unseen", missed, str(missed), f"saw {rep['seen']} of {written}; lag p99 {rep['p99'] * 1000:.0f} ms")
        goals.absolute("chain", chain_breaks, str(chain_breaks), f"{rounds + 1} logs verified")
    print(f"\nat the end: {load_note()}")
    return goals.finish(args.goals_json)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds", type=int, default=5, help="paired rounds for the PostgreSQL store (default 5; 1 with --quick)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each measurement runs (default 4)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench", help="unused here (the database is on the peer)")
    parser.add_argument("--store", choices=("postgresql",), default="postgresql")
    arguments(parser)
    add_goal_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.seconds = 0.5
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
