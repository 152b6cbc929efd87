"""The backend contract on the sshd peer: each test gets a fresh repository directory on it.

The peer's sshd runs on this host, so the directory is a local one seen through SFTP, and a test
can also look at it directly (modes, what is left in tmp/)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from davit.adapters.repository.backend import Source
from davit.adapters.repository.backends.sftp import SftpBackend
from davit.domain.errors import BackendDenied
from tests.contract.backend_contract import BackendContract
from tests.peers.state import SshPeer


def sftp_backend(peer: SshPeer, directory: Path, **options: float) -> SftpBackend:
    return SftpBackend(
        f"sftp://{peer.user}@{peer.host}:{peer.port}{directory}",
        known_hosts=Path(peer.known_hosts),
        identity_file=Path(peer.key_file),
        **options,
    )


@pytest.fixture
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sftp-repo") / "repo"  # not under tmp_path: tests own that
    d.mkdir(mode=0o700)
    return d


class TestSftpBackend(BackendContract):
    can_tear = True

    @pytest.fixture
    def tear(self, backend: SftpBackend) -> Callable[[str], None]:
        """The next upload of a key sends half its bytes, then the connection is reset; with
        no retry budget left, the put fails (with a budget it would be retried and succeed)."""

        def arm(key: str) -> None:
            upload = backend._upload
            budget, backend.retry_budget = backend.retry_budget, 0

            def torn(operation: str, k: str, src: Source, state: Any) -> str:
                if k != key:
                    return upload(operation, k, src, state)
                backend._upload = upload  # type: ignore[method-assign]
                backend.retry_budget = budget  # the failing call has its deadline already
                data = src.read_bytes() if isinstance(src, Path) else bytes(src)
                upload(operation, k, data[: len(data) // 2], state)

                async def reset(sftp: asyncssh.SFTPClient) -> None:
                    raise ConnectionResetError("connection reset in the middle of an upload")

                return backend._session.call(reset)  # type: ignore[func-returns-value]

            backend._upload = torn  # type: ignore[method-assign]

        return arm

    @pytest.fixture
    def backend(self, ssh_peer: SshPeer, repo_dir: Path) -> Iterator[SftpBackend]:
        b = sftp_backend(ssh_peer, repo_dir)
        yield b
        b.close()

    def test_objects_and_directories_are_private_and_no_temporary_is_left(self, backend: SftpBackend, repo_dir: Path) -> None:
        assert backend.put_if_absent("packs/ab/ab02.pack", b"x" * 5000) is True
        backend.put("config.json", b"{}")
        assert stat.S_IMODE(os.stat(repo_dir / "packs/ab/ab02.pack").st_mode) == 0o400  # private and read-only
        assert stat.S_IMODE(os.stat(repo_dir / "config.json").st_mode) == 0o400
        assert stat.S_IMODE(os.stat(repo_dir / "packs/ab").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(repo_dir / "packs").st_mode) == 0o700
        assert list((repo_dir / "tmp").iterdir()) == []

    def test_the_servers_rename_refuses_an_existing_target(self, backend: SftpBackend, repo_dir: Path) -> None:
        # what put_if_absent stands on: OpenSSH's v3 RENAME links, so it fails on an existing name
        (repo_dir / "tmp").mkdir()
        (repo_dir / "tmp/new").write_bytes(b"new")
        (repo_dir / "old").write_bytes(b"old")

        async def rename(sftp: asyncssh.SFTPClient) -> None:
            await sftp.rename(f"{repo_dir}/tmp/new", f"{repo_dir}/old")

        with pytest.raises(asyncssh.SFTPFailure):
            backend._session.call(rename)
        assert (repo_dir / "old").read_bytes() == b"old"

    def test_a_planted_symlink_is_neither_listed_nor_read(self, backend: SftpBackend, repo_dir: Path, tmp_path: Path) -> None:
        secret = tmp_path / "outside"
        secret.write_bytes(b"not the repository's")
        (repo_dir / "index").mkdir()
        (repo_dir / "index/evil.idx").symlink_to(secret)
        (repo_dir / "snapshots").symlink_to(tmp_path)
        os.mkfifo(repo_dir / "index/fifo.idx")
        backend.put_if_absent("index/good.idx", b"ok")
        assert {o.key for o in backend.list("")} == {"index/good.idx"}
        assert list(backend.list("snapshots/")) == []
        assert backend.stat("index/evil.idx") is None
        with pytest.raises(ValueError, match="not a regular file"):
            backend.get("index/evil.idx")
        with pytest.raises(ValueError, match="not a regular file"):
            backend.get_range("index/fifo.idx", 0, 1)

    def test_the_mtime_is_the_servers(self, backend: SftpBackend, repo_dir: Path) -> None:
        backend.put_if_absent("locks/l1.json", b"{}")
        os.utime(repo_dir / "locks/l1.json", (1_000_000_000, 1_000_000_000))
        info = backend.stat("locks/l1.json")
        assert info is not None and info.mtime == 1_000_000_000
        assert [o.mtime for o in backend.list("locks/")] == [1_000_000_000]

    def test_a_missing_repository_directory_is_refused_for_good(self, ssh_peer: SshPeer, tmp_path: Path) -> None:
        b = sftp_backend(ssh_peer, tmp_path / "nowhere")
        try:
            with pytest.raises(BackendDenied, match="no directory"):
                b.get("config.json")
            with pytest.raises(BackendDenied, match="no directory"):
                b.stat("config.json")
        finally:
            b.close()

    def test_a_snapshot_directory_goes_with_its_last_object_and_comes_back_on_need(
        self, backend: SftpBackend, repo_dir: Path
    ) -> None:
        backend.put_if_absent("snapshots/s1/manifest.json", b"m")
        backend.put_if_absent("snapshots/s1/tree.jsonl.zst", b"t")
        backend.delete("snapshots/s1/tree.jsonl.zst")
        assert (repo_dir / "snapshots/s1").is_dir()
        backend.delete("snapshots/s1/manifest.json")
        assert not (repo_dir / "snapshots/s1").exists()
        assert (repo_dir / "snapshots").is_dir()
        # this backend made the directory before and removed it: it is made again, not assumed
        assert backend.put_if_absent("snapshots/s1/manifest.json", b"m2") is True
        backend.put("snapshots/s1/tree.jsonl.zst", b"t2")
        assert {o.key for o in backend.list("snapshots/")} == {"snapshots/s1/manifest.json", "snapshots/s1/tree.jsonl.zst"}

    def test_sixteen_threads_writing_into_new_directories_at_once_share_one_connection(self, backend: SftpBackend) -> None:
        # every thread makes the same packs/xx directories at the same moment: a mkdir race
        errors: list[BaseException] = []
        barrier = threading.Barrier(16)
        backend.stat("config.json")
        connection = backend._session._conn

        def write(n: int) -> None:
            barrier.wait()
            try:
                for i in range(12):
                    key = f"packs/{i:02x}/{n:02x}{i:02x}.pack"
                    assert backend.put_if_absent(key, key.encode() * 100) is True
                    assert backend.get_range(key, 0, len(key)) == key.encode()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(list(backend.list("packs/"))) == 16 * 12
        assert backend._session._conn is connection
