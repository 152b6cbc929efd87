"""`python -m tests.peers up|down|status|logs`: bring the test peers up and down.

`up` starts the peers in parallel chains (`CHAINS`): the slow first builds (FerretDB, Weaviate,
SeaweedFS) overlap, while docker and ssh, which share apt-get and the docker client, go one
after the other.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from tests.peers import docker_engine, ferretdb, mariadb, postgres, seaweedfs, ssh_host, weaviate
from tests.peers.common import PeerError, log_dir, log_tail, run_dir, say, state_path
from tests.peers.state import PEERS, load, save

MODULES: dict[str, ModuleType] = {
    "docker": docker_engine,
    "ssh": ssh_host,
    "mongo": ferretdb,
    "weaviate": weaviate,
    "seaweedfs": seaweedfs,
    "postgres": postgres,
    "mariadb": mariadb,
}
# Peers in one chain start one after another; chains start in parallel.
CHAINS: tuple[tuple[str, ...], ...] = (
    ("docker", "ssh"),
    ("mongo",),
    ("weaviate",),
    ("seaweedfs",),
    ("postgres",),
    ("mariadb",),
)
LOGS: dict[str, list[str]] = {  # peer -> daemon log names under .peers/logs/
    "docker": ["dockerd1"],
    "ssh": ["dockerd2", "sshd"],
    "mongo": ["ferretdb"],
    "weaviate": ["weaviate"],
    "seaweedfs": ["seaweedfs"],
    "postgres": ["postgres"],
    "mariadb": ["mariadb", "mariadbd-error"],
}


@contextmanager
def locked() -> Iterator[None]:
    """One `up`/`down` at a time per checkout."""
    run_dir().mkdir(parents=True, exist_ok=True)
    with open(run_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def selected(only: str | None) -> list[str]:
    if not only:
        return list(PEERS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise SystemExit(f"peers: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    return [n for n in PEERS if n in names]


def peer_logs(name: str, lines: int = 40) -> str:
    parts = [f"--- {log} ---\n{log_tail(log, lines)}" for log in LOGS[name] if log_tail(log, lines)]
    return "\n".join(parts)


def _start(name: str, state: dict[str, dict[str, Any]], guard: threading.Lock) -> None:
    """Start one peer (or keep it if healthy) and record its entry; a failure is recorded, not raised."""
    module, entry = MODULES[name], state.get(name) or {}
    if entry.get("ok") and module.check(entry):
        say(f"{name}: already up, reusing")
        return
    say(f"{name}: starting...")
    t0 = time.monotonic()
    try:
        entry = module.up()
        say(f"{name}: up in {time.monotonic() - t0:.1f}s")
    except Exception as exc:
        tail = getattr(exc, "log_tail", "") or peer_logs(name, 20)
        entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "log_tail": tail}
        say(f"{name}: FAILED after {time.monotonic() - t0:.1f}s: {exc}")
        if tail:
            print(tail, file=sys.stderr, flush=True)
        try:
            module.down()
        except Exception:
            pass
    with guard:
        state[name] = entry
        save(state)


def up(names: list[str], strict: bool) -> int:
    started = time.monotonic()
    with locked():
        state = load()
        guard = threading.Lock()
        chains = [[n for n in chain if n in names] for chain in CHAINS]
        chains = [chain for chain in chains if chain]

        def start_chain(chain: list[str]) -> None:
            for name in chain:
                _start(name, state, guard)

        with ThreadPoolExecutor(max_workers=max(1, len(chains)), thread_name_prefix="peer") as pool:
            for future in [pool.submit(start_chain, chain) for chain in chains]:
                future.result()
    failed = [n for n in names if not state[n].get("ok")]
    say(
        f"done in {time.monotonic() - started:.1f}s; state in {state_path()}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if strict and failed else 0


def down(names: list[str]) -> int:
    with locked():
        state = load()
        for name in reversed(names):
            try:
                MODULES[name].down()
            except (PeerError, OSError) as exc:
                say(f"{name}: stopping failed: {exc}")
            state.pop(name, None)
            say(f"{name}: down")
        if state:
            save(state)
        else:
            state_path().unlink(missing_ok=True)
    say(f"logs kept in {log_dir()}")
    return 0


def status(names: list[str]) -> int:
    state = load()
    for name in names:
        entry = state.get(name)
        if not entry:
            print(f"{name:9} down")
        elif not entry.get("ok"):
            print(f"{name:9} FAILED: {entry.get('error')}")
        else:
            live = "healthy" if MODULES[name].check(entry) else "NOT RESPONDING"
            shown = {k: v for k, v in entry.items() if k != "ok"}
            print(f"{name:9} {live} {json.dumps(shown, sort_keys=True)}")
    return 0


def logs(names: list[str], lines: int) -> int:
    for name in names:
        print(peer_logs(name, lines) or f"--- {name}: no logs in {log_dir()} ---")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="provision and start peers (idempotent)")
    p_up.add_argument("--strict", action="store_true", help="exit 1 if any peer failed")
    p_down = sub.add_parser("down", help="stop peers, keep their logs")
    p_status = sub.add_parser("status", help="show the state file and live health")
    p_logs = sub.add_parser("logs", help="print the tail of the peers' logs")
    p_logs.add_argument("-n", "--lines", type=int, default=40)
    for p in (p_up, p_down, p_status, p_logs):
        p.add_argument("--only", help=f"comma-separated subset of {','.join(PEERS)}")
    args = parser.parse_args(argv)
    names = selected(args.only)
    if args.command == "up":
        return up(names, args.strict)
    if args.command == "down":
        return down(names)
    if args.command == "status":
        return status(names)
    return logs(names, args.lines)
