"""davitd at the moment it says READY, in a fresh interpreter as a daemon starts (on the
in-memory log), SIGTERM sent from inside the READY notification itself:

- systemd may stop a unit the instant it reported READY (a `systemctl restart` racing a start,
  a harness stopping a daemon it just saw ready). davitd meets that SIGTERM with its own
  shutdown and exits 0, never with Python's default action (killed, status -15, runs not
  checkpointed); and promptly: the jobs directory's watcher thread, which a stop waits for,
  looked whether it was stopped only every 5 s (watchfiles' default).
- What start-up imported is frozen before the log is read, so before any run is queued (issue
  18): the first kind's preload (`kinds.settle_heap`: a full collection, then a freeze) then
  collects only what that kind's import made. Before, it scanned all of davitd (~85,000
  objects, 0.1-0.2 s holding the GIL) while the first run of a job waited for it, queued."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import gc, json, logging, os, signal, sys, time
from pathlib import Path

import anyio

from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.eventstore.memory import MemoryEventStore


class StoppedAtReady(Notifier):
    def ready(self, status: str) -> None:
        global signalled
        print("AT READY " + json.dumps([gc.get_freeze_count(), len(gc.get_objects())]), flush=True)
        signalled = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)


logging.basicConfig(level=logging.INFO)
home = Path(sys.argv[1])
home.mkdir()
settings = load_settings(home)
settings.state_dir.mkdir(parents=True, exist_ok=True)
parts = Parts(settings)
try:
    anyio.run(Supervisor(parts, MemoryEventStore(), StoppedAtReady(), "test").run)
finally:
    parts.close()
print(f"STOPPED CLEANLY IN {time.monotonic() - signalled:.2f}")
"""


@pytest.fixture(scope="module")
def stopped_at_ready(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("at-ready") / "home")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )


def _line(done: subprocess.CompletedProcess[str], prefix: str) -> str:
    [line] = [line for line in done.stdout.splitlines() if line.startswith(prefix)]
    return line.removeprefix(prefix)


def test_a_sigterm_sent_the_instant_davitd_is_ready_stops_it_cleanly_and_promptly(
    stopped_at_ready: subprocess.CompletedProcess[str],
) -> None:
    done = stopped_at_ready
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert "received SIGTERM" in done.stderr
    seconds = float(_line(done, "STOPPED CLEANLY IN "))
    assert seconds < 3.0, done.stdout


def test_at_ready_what_start_up_made_is_frozen_out_of_the_collectors_way(
    stopped_at_ready: subprocess.CompletedProcess[str],
) -> None:
    done = stopped_at_ready
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    frozen, tracked = json.loads(_line(done, "AT READY "))
    assert frozen > 30_000 and tracked < frozen / 10, (frozen, tracked)
