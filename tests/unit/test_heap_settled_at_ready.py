"""davitd freezes what it imported before it reads the log, so before any run is queued and
before it says READY (issue 18), so
the first kind's preload (`kinds.settle_heap`: a full collection, then a freeze) collects only
what that kind's import made. Before, that collection scanned all of davitd (~85,000 objects,
0.1-0.2 s holding the GIL) while the first run of a job defined after the start waited for
it, queued: most of a fresh daemon's first backup's fixed cost. Checked in a fresh
interpreter, as a daemon starts: at READY nearly every object is frozen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json, os, signal, sys
from pathlib import Path

import anyio

from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.eventstore.memory import MemoryEventStore


class AtReady(Notifier):
    def ready(self, status: str) -> None:
        print("AT READY " + json.dumps([gc.get_freeze_count(), len(gc.get_objects())]), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


home = Path(sys.argv[1])
home.mkdir()
settings = load_settings(home)
settings.state_dir.mkdir(parents=True, exist_ok=True)
parts = Parts(settings)
try:
    anyio.run(Supervisor(parts, MemoryEventStore(), AtReady(), "test").run)
finally:
    parts.close()
"""


def test_at_ready_what_start_up_made_is_frozen_out_of_the_collectors_way(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    [line] = [line for line in done.stdout.splitlines() if line.startswith("AT READY ")]
    frozen, tracked = json.loads(line.removeprefix("AT READY "))
    assert frozen > 30_000 and tracked < frozen / 10, (frozen, tracked)
