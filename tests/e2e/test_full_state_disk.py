"""davitd whose state directory (the event log) fills up in the middle of a backup: the daemon
keeps running and says why (its log, systemd's STATUS=), the run stops at its next checkpoint,
and once the operator makes room the run resumes and succeeds, with no event lost or written
twice and the log's chain intact.

Needs root to mount a small tmpfs for the state directory (CI runs as root; locally the test
skips without it). The repository and the source stay on the ordinary disk.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Davit, write_job
from tests.fixtures.fullfs import fill, mounted_tmpfs

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def state_disk(davit: Davit) -> Iterator[Path]:
    """davit's state directory (`HOME/state`, the event log) on its own 8 MiB tmpfs."""
    mountpoint = davit.home / "state"
    mountpoint.mkdir(mode=0o700)
    with mounted_tmpfs(mountpoint, "size=8m,mode=0700"):
        yield mountpoint
        if davit.proc is not None and davit.proc.poll() is None:
            davit.proc.kill()
            davit.proc.wait(10)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd would hear: a `$NOTIFY_SOCKET` davitd (started after this) sends to."""
    directory = tempfile.mkdtemp(prefix="davit-notify-")  # short: a socket path has ~100 bytes
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def statuses(sock: socket.socket) -> list[str]:
    found = []
    while True:
        try:
            message = sock.recv(65536).decode()
        except BlockingIOError:
            return found
        found += [line.removeprefix("STATUS=") for line in message.splitlines() if line.startswith("STATUS=")]


def test_a_full_state_disk_mid_backup_stops_the_run_and_it_resumes_when_room_is_made(
    davit: Davit, tmp_path: Path, state_disk: Path, notify_socket: socket.socket
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(240):
        (source / f"part{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    state_dir = state_disk
    davit.configure("[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.1\n")
    davit.start()
    assert davit.proc is not None
    pid = davit.proc.pid
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{source}"\n')

    def checkpoints() -> list[dict[str, object]]:
        return [e[3] for e in davit.events("type = 'CheckpointRecorded'")]

    davit.wait_for(lambda: len(checkpoints()) >= 1, 120, "the backup's first checkpoint", poll=0.005)
    filler = fill(state_disk)
    davit.wait_for(
        lambda: "event log cannot be written" in davit.logs[-1].read_text(), 60, "davitd to say the log cannot be written"
    )
    recorded_while_full = len(davit.events())
    time.sleep(3)  # several retries against the full disk
    assert davit.proc.poll() is None, "davitd exited on a full state disk:\n" + davit.logs[-1].read_text()[-3000:]
    said = statuses(notify_socket)
    assert any(s.startswith(f"event log cannot be written: no space left for the event log in {state_dir}") for s in said), said
    log_text = davit.logs[-1].read_text()
    assert f"no space left for the event log in {state_dir}" in log_text
    assert "Traceback" not in log_text
    assert len(davit.events()) == recorded_while_full, "something was recorded on a full disk"

    filler.unlink()  # the operator makes room
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=180)
    assert run["state"] == "succeeded", run
    assert davit.proc.poll() is None and davit.proc.pid == pid
    assert any(not s.startswith("event log cannot be written") for s in statuses(notify_socket))

    events = davit.events(f"stream = 'run-{run['run_id']}'")
    types = [e[2] for e in events]
    [interrupted] = [e[3] for e in events if e[2] == "RunInterrupted"]
    assert "event log cannot be written" in str(interrupted["reason"])
    assert "no space left" in str(interrupted["reason"])
    assert types.count("RunRequeued") == 1 and types.count("RunSucceeded") == 1, types
    # it stopped in the middle: checkpoints before the interruption and after it
    at = types.index("RunInterrupted")
    assert "CheckpointRecorded" in types[:at] and "CheckpointRecorded" in types[at:], types
    # nothing recorded twice: each checkpoint's cursor once, no chunk twice, progress never back
    cursors = [repr(sorted(e[3]["cursor"].items())) for e in events if e[2] == "CheckpointRecorded"]
    assert len(cursors) == len(set(cursors)), "a checkpoint was recorded twice"
    written = [c for e in events if e[2] == "CheckpointRecorded" for c in e[3]["chunks_written"]]
    assert len(written) == len(set(written)), "a chunk was written twice"
    done = [e[3]["bytes_done"] for e in events if e[2] == "CheckpointRecorded"]
    assert done == sorted(done)
    assert [e[2] for e in davit.events("stream = 'daemon'")].count("DaemonStarted") == 1
    assert "hash chain intact" in davit.cli("log", "verify").stdout
    assert "0 problems" in davit.cli("verify", run["run_id"]).stdout
    assert davit.stop() == 0


def test_davitd_stopped_while_its_state_disk_is_full_exits_promptly_and_the_run_resumes_at_the_next_start(
    davit: Davit, tmp_path: Path, state_disk: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(240):
        (source / f"part{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    davit.configure("[data_path]\npack_size_mib = 4\ncheckpoint_seconds = 0.1\n")
    davit.start()
    write_job(davit, "big.toml", f'name = "big"\nkind = "files.backup"\n[source]\npath = "{source}"\n')
    davit.wait_for(lambda: bool(davit.events("type = 'CheckpointRecorded'")), 120, "the first checkpoint", poll=0.005)
    filler = fill(state_disk)
    davit.wait_for(
        lambda: "event log cannot be written" in davit.logs[-1].read_text(), 60, "davitd to say the log cannot be written"
    )
    started = time.monotonic()
    assert davit.stop() == 0, davit.logs[-1].read_text()[-3000:]
    assert time.monotonic() - started < 30, "a shutdown on a full state disk waited too long"
    log_text = davit.logs[-1].read_text()
    assert "Traceback" not in log_text and "davitd stopped" in log_text
    assert "they resume at the next start" in log_text

    filler.unlink()
    davit.start()
    run = davit.wait_run_state("big", {"succeeded", "failed"}, timeout=180)
    assert run["state"] == "succeeded", run
    types = [e[2] for e in davit.events(f"stream = 'run-{run['run_id']}'")]
    assert types.count("RunSucceeded") == 1 and types.count("RunInterrupted") == 1, types
    cursors = [
        repr(sorted(e[3]["cursor"].items()))
        for e in davit.events(f"stream = 'run-{run['run_id']}' AND type = 'CheckpointRecorded'")
    ]
    assert len(cursors) == len(set(cursors)), "a checkpoint was recorded twice"
    assert "hash chain intact" in davit.cli("log", "verify").stdout
    assert "0 problems" in davit.cli("verify", run["run_id"]).stdout
