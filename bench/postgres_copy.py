"""PostgreSQL COPY in text form against binary form, as postgres.backup reads a table.

Run: `.venv/bin/python bench/postgres_copy.py --db DB [--table pgbench_accounts] [--repeat 3]`
against the PostgreSQL peer from the peers' state file (DAVIT_PEERS_STATE), after e.g.
`pgbench -i -s 10 DB` (1,000,000 rows). Each round reads the whole table with `COPY ... TO
STDOUT` in one form then the other (the order alternating), feeding every block to a zstd
compressor at davit's default level as the repository would, and records the wall time, this
process's CPU time, the bytes COPY produced and their compressed size. Printed: the median of
the rounds per form and the median of the paired binary/text ratios, with the load average
(the machine is shared: ratios of paired runs, not seconds, are the figure to read).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import zstandard
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers.state import PostgresPeer, from_entry, load


def read_table(conn: psycopg.Connection[Any], table: str, form: str) -> dict[str, float]:
    query = sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))
    if form == "binary":
        query = query + sql.SQL(" (FORMAT binary)")
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    plain = packed = 0
    wall, cpu = time.perf_counter(), time.process_time()
    with conn.cursor() as cur, cur.copy(query) as copy:
        for block in copy:
            data = bytes(block)
            plain += len(data)
            packed += len(compressor.compress(data))
    packed += len(compressor.flush())
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "bytes": plain, "zstd": packed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--table", default="pgbench_accounts")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    peer = from_entry(PostgresPeer, load()["postgres"])
    results: dict[str, list[dict[str, float]]] = {"text": [], "binary": []}
    with psycopg.connect(
        host=peer.host, port=peer.port, user=peer.user, password=peer.password, dbname=args.db, autocommit=True
    ) as conn:
        for round_ in range(args.repeat):
            for form in ("text", "binary") if round_ % 2 == 0 else ("binary", "text"):
                results[form].append(read_table(conn, args.table, form))
                r = results[form][-1]
                print(f"round {round_} {form:6}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, "
                      f"{r['bytes'] / 1e6:.1f} MB, zstd {r['zstd'] / 1e6:.1f} MB; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    for form, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{form:6} median: {med['wall']:.2f} s wall, {med['cpu']:.2f} s CPU, {med['bytes'] / 1e6:.1f} MB, "
              f"zstd {med['zstd'] / 1e6:.1f} MB")  # fmt: skip
    for key in ("wall", "cpu", "bytes", "zstd"):
        ratios = [b[key] / t[key] for t, b in zip(results["text"], results["binary"], strict=True)]
        print(f"binary/text {key}: median ratio {statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
