"""Smoke tests for the remote-repository peers: SeaweedFS's S3 gateway through obstore (what
issue 17's S3 backend is to use), and the ssh peer's `internal-sftp` subsystem through asyncssh."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncssh
import obstore
import pytest
from obstore.exceptions import AlreadyExistsError, PermissionDeniedError
from obstore.store import S3Store

from tests.peers.state import S3Peer, SshPeer


def _store(peer: S3Peer) -> S3Store:
    return S3Store(
        peer.bucket,
        endpoint=peer.endpoint,
        access_key_id=peer.access_key_id,
        secret_access_key=peer.secret_access_key,
        region=peer.region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


@pytest.fixture
def prefix() -> str:
    return f"smoke-{uuid.uuid4().hex[:12]}"


def test_s3_put_get_list_and_a_missing_key(seaweedfs_peer: S3Peer, prefix: str) -> None:
    store = _store(seaweedfs_peer)
    blobs = {f"{prefix}/packs/{i:02x}": os.urandom(1000 + i) for i in range(3)}
    for key, data in blobs.items():
        obstore.put(store, key, data)
    for key, data in blobs.items():
        assert obstore.get(store, key).bytes().to_bytes() == data
    listed = {meta["path"]: meta["size"] for batch in obstore.list(store, prefix=f"{prefix}/") for meta in batch}
    assert listed == {key: len(data) for key, data in blobs.items()}
    with pytest.raises(FileNotFoundError):
        obstore.get(store, f"{prefix}/packs/missing")


def test_s3_create_mode_refuses_an_existing_key(seaweedfs_peer: S3Peer, prefix: str) -> None:
    """A conditional create (If-None-Match: *) is what lock and manifest objects rely on."""
    store = _store(seaweedfs_peer)
    key = f"{prefix}/locks/owner"
    obstore.put(store, key, b"first", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, key, b"second", mode="create")
    assert obstore.get(store, key).bytes().to_bytes() == b"first"


def test_s3_ranged_read_returns_only_the_range(seaweedfs_peer: S3Peer, prefix: str) -> None:
    store = _store(seaweedfs_peer)
    key = f"{prefix}/packs/big"
    data = os.urandom(3 * 1024 * 1024)
    obstore.put(store, key, data)
    start, end = 1024 * 1024 + 17, 2 * 1024 * 1024 + 5
    assert obstore.get_range(store, key, start=start, end=end).to_bytes() == data[start:end]
    got = obstore.get(store, key, options={"range": {"offset": len(data) - 100}})
    assert got.bytes().to_bytes() == data[-100:]


def test_s3_refuses_a_wrong_secret(seaweedfs_peer: S3Peer, prefix: str) -> None:
    wrong = S3Peer(**{**seaweedfs_peer.__dict__, "secret_access_key": seaweedfs_peer.secret_access_key + "x"})
    with pytest.raises(PermissionDeniedError) as raised:
        obstore.put(_store(wrong), f"{prefix}/denied", b"x")
    assert seaweedfs_peer.secret_access_key not in str(raised.value)


async def _sftp_round_trip(peer: SshPeer, local: Path, back: Path, remote_dir: str) -> list[str]:
    async with (
        asyncssh.connect(
            peer.host, peer.port, username=peer.user, client_keys=[peer.key_file], known_hosts=peer.known_hosts, config=[]
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        await sftp.makedirs(remote_dir)
        try:
            await sftp.put(str(local), f"{remote_dir}/pack")
            await sftp.get(f"{remote_dir}/pack", str(back))
            return sorted(await sftp.listdir(remote_dir))
        finally:
            await sftp.rmtree(remote_dir)


def test_sftp_put_and_get_on_the_ssh_peer(ssh_peer: SshPeer, tmp_path: Path) -> None:
    """The ssh peer's sshd serves `Subsystem sftp internal-sftp` (issue 17's sftp:// backend)."""
    local, back = tmp_path / "pack", tmp_path / "pack.back"
    local.write_bytes(os.urandom(300_000))
    remote_dir = f"/tmp/davit-sftp-smoke-{uuid.uuid4().hex[:12]}"
    names = asyncio.run(_sftp_round_trip(ssh_peer, local, back, remote_dir))
    assert [n for n in names if n not in (".", "..")] == ["pack"]
    assert back.read_bytes() == local.read_bytes()
