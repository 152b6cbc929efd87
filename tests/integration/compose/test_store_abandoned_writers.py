"""Listing the target's chunk store (`target.present_chunks`) drops what abandoned writers left
under `incoming/`, and only that: a writer still running (a killed attempt's writer draining its
stream while the retry lists the store, or another item's or daemon's run on the same store)
keeps its files and files its chunks. The writers run locally in the same shell as the target's
(the ssh peer is this host); the listing goes through the real sshd."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from davit.adapters.compose.pipeline import store_command
from davit.adapters.compose.target import TargetLayout, present_chunks, prune_store
from davit.adapters.ssh.remote import SshAddress, connect
from tests.peers.state import SshPeer

pytestmark = [pytest.mark.ssh]


def wait_for(cond: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def writer(store: Path, shell: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [shell, "-c", store_command(str(store))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


def writer_dirs(store: Path) -> set[Path]:
    return {p for p in (store / "incoming").iterdir()} if (store / "incoming").exists() else set()


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("listing", ["present_chunks", "prune_store"])
def test_listing_the_store_drops_a_killed_writers_files_but_never_a_live_writers(
    ssh_peer: SshPeer, tmp_path: Path, shell: str, listing: str
) -> None:
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    store = Path(layout.store)
    store.mkdir(parents=True)
    live_chunk, dead_chunk = os.urandom(70_000), os.urandom(60_000)
    live = writer(store, shell)
    dead = writer(store, shell)
    assert live.stdin and live.stdout and dead.stdin
    try:
        # the live writer has a whole chunk written, not yet filed, and waits for its next line
        live.stdin.write(b"a 70000\n" + live_chunk)
        live.stdin.flush()
        wait_for(lambda: any(p.stat().st_size == len(live_chunk) for p in store.glob("incoming/*/a.zst")), "a written")
        live_dir = next(store.glob("incoming/*/a.zst")).parent
        # the other is killed -9 half-way through its chunk: its directory is abandoned
        dead.stdin.write(b"b 60000\n" + dead_chunk[:30_000])
        dead.stdin.flush()
        wait_for(lambda: any(True for _ in store.glob("incoming/*/b.zst")), "b opened")
        dead_dir = next(store.glob("incoming/*/b.zst")).parent
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait()
        (store / "incoming" / "stray.zst").write_bytes(b"an older davit's file")
        with connect(SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)) as host:
            if listing == "present_chunks":
                assert present_chunks(host, layout) == {}
            else:
                prune_store(host, layout, set())
        assert writer_dirs(store) == {live_dir}, "the abandoned writer's files stay, or the live writer's went"
        assert (live_dir / "a.zst").read_bytes() == live_chunk
        # the live writer goes on and files its chunk
        live.stdin.write(b"END 0\n")
        live.stdin.close()
        ready, _, _ = select.select([live.stdout], [], [], 20)
        assert ready, "the live writer acknowledged nothing"
        acked = live.stdout.read().decode().split()
        assert live.wait(timeout=20) == 0, "the live writer failed"
    finally:
        for proc in (live, dead):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert acked == ["a"]
    assert (store / "chunks" / "a.zst").read_bytes() == live_chunk
    assert writer_dirs(store) == set() and not dead_dir.exists()


def test_a_writer_whose_directory_a_listing_took_makes_another_and_files_its_chunks(ssh_peer: SshPeer, tmp_path: Path) -> None:
    # many listings while writers start: none of the writers may fail, whichever wins a race
    layout = TargetLayout(str(tmp_path / "target"), "proj")
    store = Path(layout.store)
    store.mkdir(parents=True)
    with connect(SshAddress(ssh_peer.host, ssh_peer.port, ssh_peer.user, ssh_peer.key_file, ssh_peer.known_hosts)) as host:
        lister = subprocess.Popen(["sh", "-c", f"while :; do {_drop_in(store)} done"], start_new_session=True)
        try:
            for i in range(40):
                got = host.run(store_command(str(store)), input=f"c{i} 5\n".encode() + b"12345END 0\n", check=False)
                assert (got.status, got.stdout) == (0, f"c{i}\n"), got.stderr
        finally:
            os.killpg(lister.pid, signal.SIGKILL)
            lister.wait()
    assert sorted(p.name for p in (store / "chunks").iterdir()) == sorted(f"c{i}.zst" for i in range(40))


def _drop_in(store: Path) -> str:
    from davit.adapters.compose.target import DROP_ABANDONED, DROP_EMPTY_INCOMING

    return f"cd {store} && {DROP_ABANDONED} {DROP_EMPTY_INCOMING}"
