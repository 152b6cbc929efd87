"""The SFTP repository backend when things go wrong: a key the server refuses, a host key not
in known_hosts, a server that goes away in the middle of an upload and comes back, and one
that does not come back.

The outage tests run a private sshd of their own (own port, own host key) and kill it with
everything it forked; the shared sshd peer is only used where nothing is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.backends.sftp import SftpBackend
from davit.adapters.repository.backends.sftp_session import Lost
from davit.adapters.sshtrust import HostKeyRejected
from davit.domain.errors import BackendDenied, BackendUnavailable
from tests.peers.ports import free_port, port_open
from tests.peers.state import SshPeer


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def key_body(key: Path) -> list[str]:
    """The base64 lines of a private key file: none may appear in a message."""
    return [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PrivateSshd:
    """An sshd of this test alone: `stop()` kills it and the sessions it forked (the client sees
    its connection reset, as when a server goes down), `start()` brings it back on the same port."""

    def __init__(self, d: Path, client_key: Path) -> None:
        self.dir = d
        self.port = free_port()
        host_key = keygen(d / "host_key", "davit-test-host")
        (d / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
        pub = Path(f"{host_key}.pub").read_text().split()
        self.known_hosts = d / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        self.config = d / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(self.config), "-E", str(self.dir / "sshd.log")])
        deadline = time.monotonic() + 20
        while not port_open(self.port):
            assert time.monotonic() < deadline, (self.dir / "sshd.log").read_text()[-2000:]
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """Freeze it and its sessions: connections stay open but nothing answers (a hung host)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "id_client", "davit-test-client")


@pytest.fixture
def private_sshd(ssh_peer: SshPeer, tmp_path: Path, client_key: Path) -> Iterator[PrivateSshd]:
    # ssh_peer: the sshd binary is installed and works here
    d = tmp_path / "sshd"
    d.mkdir()
    server = PrivateSshd(d, client_key)
    server.start()
    yield server
    if server.proc is not None:
        server.resume()
    server.stop()


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    d.mkdir(mode=0o700)
    return d


def backend_on(server: PrivateSshd, repo_dir: Path, key: Path, budget: float) -> SftpBackend:
    return SftpBackend(
        f"sftp://root@127.0.0.1:{server.port}{repo_dir}",
        known_hosts=server.known_hosts,
        identity_file=key,
        retry_budget=budget,
        connect_timeout=3,
    )


def test_a_key_the_server_refuses_is_a_permanent_error_naming_the_repository(
    ssh_peer: SshPeer, repo_dir: Path, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "id_stranger", "not authorized")
    url = f"sftp://{ssh_peer.user}@{ssh_peer.host}:{ssh_peer.port}{repo_dir}"
    b = SftpBackend(url, known_hosts=Path(ssh_peer.known_hosts), identity_file=stranger, retry_budget=30)
    try:
        started = time.monotonic()
        with pytest.raises(BackendDenied) as denied:
            b.put_if_absent("config.json", b"{}")
        assert time.monotonic() - started < 10  # not retried for the whole budget
        with pytest.raises(BackendDenied):  # and not tried again either
            b.stat("config.json")
    finally:
        b.close()
    message = str(denied.value)
    assert url in message and str(stranger) in message and "refused" in message
    assert not any(line in message for line in key_body(stranger))


def test_a_host_key_not_in_known_hosts_is_refused(ssh_peer: SshPeer, repo_dir: Path, tmp_path: Path) -> None:
    other_host = keygen(tmp_path / "other_host", "some other host")
    known = tmp_path / "known_hosts"
    pub = Path(f"{other_host}.pub").read_text().split()
    known.write_text(f"[{ssh_peer.host}]:{ssh_peer.port} {pub[0]} {pub[1]}\n")
    url = f"sftp://{ssh_peer.user}@{ssh_peer.host}:{ssh_peer.port}{repo_dir}"
    for known_hosts in (known, tmp_path / "empty_known_hosts"):
        known_hosts.touch()
        b = SftpBackend(url, known_hosts=known_hosts, identity_file=Path(ssh_peer.key_file), retry_budget=30)
        try:
            with pytest.raises(HostKeyRejected, match=str(known_hosts)):
                b.get("config.json")
        finally:
            b.close()
    assert list(repo_dir.iterdir()) == []


def test_a_password_in_the_url_is_refused_without_echoing_it(ssh_peer: SshPeer, repo_dir: Path) -> None:
    with pytest.raises(ValueError) as refused:
        SftpBackend(
            f"sftp://root:hunter2secret@127.0.0.1:22{repo_dir}",
            known_hosts=Path(ssh_peer.known_hosts),
            identity_file=Path(ssh_peer.key_file),
        )
    assert "password" in str(refused.value) and "hunter2secret" not in str(refused.value)


def test_an_upload_cut_off_by_a_server_outage_succeeds_once_it_is_back(
    private_sshd: PrivateSshd, repo_dir: Path, client_key: Path, tmp_path: Path
) -> None:
    pack = tmp_path / "pack"
    pack.write_bytes(os.urandom(96 << 20))
    b = backend_on(private_sshd, repo_dir, client_key, budget=40)
    try:
        assert b.put_if_absent("config.json", b"{}")  # connected before the outage
        outcome: list[object] = []

        def put() -> None:
            outcome.append(b.put_if_absent("packs/9f/9f00.pack", pack))
            outcome.append(time.monotonic())

        upload = threading.Thread(target=put)
        upload.start()
        deadline = time.monotonic() + 30
        while not any(f.stat().st_size > (4 << 20) for f in (repo_dir / "tmp").iterdir()):
            assert time.monotonic() < deadline and upload.is_alive(), "the upload did not start"
            time.sleep(0.005)
        private_sshd.stop()
        assert upload.is_alive()
        time.sleep(5)
        private_sshd.start()
        restarted = time.monotonic()
        upload.join(60)
        assert outcome[0] is True
        assert isinstance(outcome[1], float) and outcome[1] > restarted  # it finished on the new connection
        assert (repo_dir / "packs/9f/9f00.pack").read_bytes() == pack.read_bytes()
        assert b.get_range("packs/9f/9f00.pack", 1 << 20, 100) == pack.read_bytes()[1 << 20 : (1 << 20) + 100]
        assert b.put_if_absent("packs/9f/9f00.pack", pack) is False
    finally:
        b.close()
    # the cut-off attempt's temporary file was removed once the connection was back
    assert list((repo_dir / "tmp").iterdir()) == []


def test_a_server_gone_for_good_is_unavailable_after_the_budget(
    private_sshd: PrivateSshd, repo_dir: Path, client_key: Path
) -> None:
    b = backend_on(private_sshd, repo_dir, client_key, budget=3)
    try:
        b.put("config.json", b"{}")
        private_sshd.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as unavailable:
            b.get("config.json")
        took = time.monotonic() - started
    finally:
        b.close()
    assert 3 <= took < 3 + 3 + 5  # the budget, plus at most one connect attempt's timeout
    assert f"sftp://root@127.0.0.1:{private_sshd.port}{repo_dir}" in str(unavailable.value)
    assert "get config.json" in str(unavailable.value)


def test_a_server_paused_for_a_few_seconds_only_delays_the_work(
    private_sshd: PrivateSshd, repo_dir: Path, client_key: Path
) -> None:
    b = backend_on(private_sshd, repo_dir, client_key, budget=30)
    try:
        b.put("config.json", b"v1")
        private_sshd.pause()
        threading.Timer(4, private_sshd.resume).start()
        started = time.monotonic()
        b.put("config.json", b"v2")
        assert time.monotonic() - started >= 3.5
        assert b.get("config.json") == b"v2"
    finally:
        b.close()


def test_a_server_that_hangs_for_good_is_unavailable_after_the_budget(
    private_sshd: PrivateSshd, repo_dir: Path, client_key: Path
) -> None:
    # no reset ever arrives: keepalives (every connect_timeout) notice the silence
    b = SftpBackend(
        f"sftp://root@127.0.0.1:{private_sshd.port}{repo_dir}",
        known_hosts=private_sshd.known_hosts,
        identity_file=client_key,
        retry_budget=3,
        connect_timeout=1,
    )
    try:
        b.put_if_absent("locks/a.json", b"{}")
        private_sshd.pause()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"stat locks/a\.json"):
            b.stat("locks/a.json")
        assert time.monotonic() - started < 20
    finally:
        private_sshd.resume()
        b.close()


@pytest.fixture
def peer_backend(ssh_peer: SshPeer, repo_dir: Path) -> Iterator[SftpBackend]:
    b = SftpBackend(
        f"sftp://{ssh_peer.user}@{ssh_peer.host}:{ssh_peer.port}{repo_dir}",
        known_hosts=Path(ssh_peer.known_hosts),
        identity_file=Path(ssh_peer.key_file),
    )
    yield b
    b.close()


def lose_the_answer_of_the_first_rename(b: SftpBackend, before: Callable[[], None] = lambda: None) -> None:
    """The connection breaks after the server did the create's rename, before its answer came
    back: the backend cannot know whether the create happened."""
    call = b._session.call
    lost: list[bool] = []

    def flaky(job: Callable[[Any], Any]) -> Any:
        if job.__name__ == "link" and not lost:
            lost.append(True)
            before()
            call(job)
            raise Lost("connection reset after the rename was sent")
        return call(job)

    b._session.call = flaky  # type: ignore[method-assign]


def test_a_create_whose_answer_was_lost_is_ours_when_the_object_holds_our_bytes(
    peer_backend: SftpBackend, repo_dir: Path
) -> None:
    lose_the_answer_of_the_first_rename(peer_backend)
    assert peer_backend.put_if_absent("snapshots/s1/manifest.json", b"our manifest") is True
    assert peer_backend.get("snapshots/s1/manifest.json") == b"our manifest"
    assert list((repo_dir / "tmp").iterdir()) == []


def test_a_create_whose_answer_was_lost_lost_to_another_writer(peer_backend: SftpBackend, repo_dir: Path) -> None:
    # another writer's manifest of the same size was there first: the rename failed, its answer lost
    def theirs_first() -> None:
        peer_backend.put_if_absent("snapshots/s1/manifest.json", b"their manifest")

    lose_the_answer_of_the_first_rename(peer_backend, theirs_first)
    assert peer_backend.put_if_absent("snapshots/s1/manifest.json", b"ours manifest") is False
    assert peer_backend.get("snapshots/s1/manifest.json") == b"their manifest"
    assert list((repo_dir / "tmp").iterdir()) == []
