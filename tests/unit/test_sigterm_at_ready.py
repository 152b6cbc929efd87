"""systemd may stop a unit the instant it reported READY (a `systemctl restart` racing a start,
a test harness stopping a daemon it just saw ready). davitd must meet that SIGTERM with its own
shutdown and exit 0, never with Python's default action (killed by the signal, status -15,
runs not checkpointed). The signal is sent from inside the READY notification itself, so the
window between READY and the stop being awaited is hit every time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import logging, os, signal, sys
from pathlib import Path

import anyio

from davit.daemon.bootstrap import Parts
from davit.daemon.config import load_settings
from davit.daemon.notify import Notifier
from davit.daemon.supervisor import Supervisor
from davit.eventstore.memory import MemoryEventStore


class StoppedAtReady(Notifier):
    def ready(self, status: str) -> None:
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
print("stopped cleanly")
"""


def test_a_sigterm_sent_the_instant_davitd_is_ready_stops_it_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    assert "stopped cleanly" in done.stdout
    assert "received SIGTERM" in done.stderr
