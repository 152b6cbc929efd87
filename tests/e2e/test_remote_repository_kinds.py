"""Every kind of backup and restore through davitd into a repository in an S3 bucket (the
SeaweedFS peer, a fresh prefix per test), and files into one on an SFTP server (the sshd peer):
what comes back is what went in, and the repository's objects are on the server, not here."""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from pymongo import MongoClient

from davit.adapters.repository.backends.s3 import S3Backend
from tests.e2e.conftest import Davit, tree_digest, write_job
from tests.integration.docker.test_volume_adapter import digest, mountpoint, run_in
from tests.peers.state import DockerPeer, MongoPeer, S3Peer, SshPeer, WeaviatePeer

pytestmark = [pytest.mark.e2e]

DATA_PATH = "[data_path]\npack_size_mib = 1\ncheckpoint_seconds = 0.5\n"


def s3_section(peer: S3Peer, prefix: str, extra: str = "") -> str:
    return (
        f'url = "s3://{peer.bucket}/{prefix}"\nendpoint = "{peer.endpoint}"\npath_style = true\nregion = "{peer.region}"\n'
        f'access_key_id_file = "{peer.access_key_id_file}"\nsecret_access_key_file = "{peer.secret_access_key_file}"\n{extra}'
    )


def cloud_config(peer: S3Peer, prefix: str, extra: str = "") -> str:
    return f'{DATA_PATH}[repositories.local]\npath = "repository"\n[repositories.cloud]\n{s3_section(peer, prefix, extra)}'


def assert_stored_remotely(davit: Davit, peer: S3Peer, prefix: str, job: str) -> None:
    """The job's snapshot is in the bucket, and nothing went into the local repository."""
    [snap] = davit.json_lines("snapshots", "--job", job)
    assert bucket_view(peer, prefix).stat(f"snapshots/{snap['id']}/manifest.json") is not None
    assert not any((davit.home / "repository").glob("snapshots/*"))


def bucket_view(peer: S3Peer, prefix: str) -> S3Backend:
    """The test's own look at the repository's objects in the bucket."""
    return S3Backend(
        peer.bucket,
        prefix,
        endpoint=peer.endpoint,
        path_style=True,
        access_key_id=peer.access_key_id,
        secret_access_key=peer.secret_access_key,
    )


@pytest.fixture
def prefix() -> str:
    return f"e2e-kinds/{uuid.uuid4().hex[:10]}"


def make_source(root: Path) -> None:
    rnd = random.Random(5)
    for i in range(40):
        d = root / f"d{i % 4}" / "sub"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i} " * rnd.randint(1, 3000))
    (root / "random.bin").write_bytes(os.urandom(3 << 20))
    (root / "zeros.bin").write_bytes(b"\0" * (1 << 20))
    (root / "empty").write_bytes(b"")
    os.symlink("d0/sub/f0.txt", root / "link")
    os.chmod(root / "d1", 0o750)


def files_round_trip(davit: Davit, tmp_path: Path) -> str:
    """Back a tree up into repository `cloud` and restore it: byte-identical; the backup's run id."""
    source = tmp_path / "source"
    make_source(source)
    davit.start()
    davit.cli("repository", "init", "cloud")
    write_job(davit, "f.toml", f'name = "f"\nkind = "files.backup"\nrepository = "cloud"\n[source]\npath = "{source}"\n')
    run = davit.wait_run_state("f", {"succeeded", "failed"}, timeout=300)
    assert run["state"] == "succeeded", run
    target = tmp_path / "restored"
    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "files.restore"\nrepository = "cloud"\n[source]\njob = "f"\n[target]\npath = "{target}"\n',
    )
    back = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert back["state"] == "succeeded", back
    assert tree_digest(target) == tree_digest(source)
    assert "0 problems" in davit.cli("verify", run["run_id"]).stdout
    # nothing of the repository is kept here: the local one stayed empty, and the staging of the
    # ended run is gone from this host's directory of the remote one
    assert not any((davit.home / "repository").glob("packs/*/*"))
    assert list((davit.home / "state" / "repositories" / "cloud" / "staging").iterdir()) == []
    return str(run["run_id"])


def test_files_backup_and_restore_through_s3(davit: Davit, seaweedfs_peer: S3Peer, prefix: str, tmp_path: Path) -> None:
    davit.configure(cloud_config(seaweedfs_peer, prefix))
    files_round_trip(davit, tmp_path)
    assert_stored_remotely(davit, seaweedfs_peer, prefix, "f")
    # 1 MiB packs of about 3 MiB stored: several, however the keyed content-defined cut falls
    assert len(list(bucket_view(seaweedfs_peer, prefix).list("packs/"))) >= 2


def test_files_backup_and_restore_through_sftp(
    davit: Davit, ssh_peer: SshPeer, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    server_dir = tmp_path_factory.mktemp("sftp-e2e") / "repo"
    server_dir.mkdir(mode=0o700)  # the operator creates the directory; davit creates what is in it
    davit.configure(
        f'{DATA_PATH}[repositories.local]\npath = "repository"\n[repositories.cloud]\n'
        f'url = "sftp://{ssh_peer.user}@{ssh_peer.host}:{ssh_peer.port}{server_dir}"\n'
        f'known_hosts = "{ssh_peer.known_hosts}"\nidentity_file = "{ssh_peer.key_file}"\n'
    )
    run_id = files_round_trip(davit, tmp_path)
    assert (server_dir / "snapshots" / run_id / "manifest.json").is_file()  # the sshd peer runs on this host
    assert len(list(server_dir.glob("packs/*/*.pack"))) >= 2  # (as through S3 above)


@pytest.fixture
def engine(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_peer.host)
    tag = uuid.uuid4().hex[:8]
    client.davit_tag = tag  # type: ignore[attr-defined]
    yield client
    for v in client.volumes.list(filters={"name": f"davit-e2e-{tag}"}):
        v.remove(force=True)
    client.close()


def test_volume_backup_and_restore_through_s3(
    davit: Davit, seaweedfs_peer: S3Peer, prefix: str, docker_peer: DockerPeer, engine: docker.DockerClient
) -> None:
    tag = engine.davit_tag  # type: ignore[attr-defined]
    data, restored = f"davit-e2e-{tag}-data", f"davit-e2e-{tag}-restored"
    engine.volumes.create(data)
    run_in(
        engine,
        docker_peer.image,
        data,
        "dd if=/dev/urandom of=/v/blob bs=1048576 count=3 2>/dev/null; mkdir -p /v/etc && echo conf > /v/etc/app.conf",
    )
    davit.configure(cloud_config(seaweedfs_peer, prefix))
    davit.start()
    write_job(
        davit,
        "vols.toml",
        f'name = "vols"\nkind = "volume.backup"\nrepository = "cloud"\nengine = "{docker_peer.host}"\n'
        f'[source]\nnames = ["{data}"]\n',
    )
    assert davit.wait_run_state("vols", {"succeeded", "failed"}, timeout=300)["state"] == "succeeded"
    write_job(
        davit,
        "back.toml",
        f'name = "back"\nkind = "volume.restore"\nrepository = "cloud"\nengine = "{docker_peer.host}"\n'
        f'volume = "{data}"\n[source]\njob = "vols"\n[target]\nvolume = "{restored}"\n',
    )
    back = davit.wait_run_state("back", {"succeeded", "failed"}, timeout=300)
    assert back["state"] == "succeeded", back
    assert digest(mountpoint(engine, restored)) == digest(mountpoint(engine, data))
    assert_stored_remotely(davit, seaweedfs_peer, prefix, "vols")


def collection_digest(client: MongoClient[Any], db: str, coll: str) -> str:
    h = hashlib.sha256()
    for batch in client[db][coll].find_raw_batches(sort=[("_id", 1)], batch_size=500):
        h.update(batch)
    return h.hexdigest()


def test_mongo_backup_and_restore_through_s3(
    davit: Davit, seaweedfs_peer: S3Peer, prefix: str, mongo_peer: MongoPeer, tmp_path: Path
) -> None:
    client: MongoClient[Any] = MongoClient(mongo_peer.uri, serverSelectionTimeoutMS=10_000)
    db, copy = f"remote_{uuid.uuid4().hex[:8]}", f"remote_copy_{uuid.uuid4().hex[:8]}"
    try:
        client[db]["items"].insert_many([{"n": i, "name": f"item {i}", "pad": os.urandom(200).hex()} for i in range(3000)])
        client[db]["items"].create_index("n", name="by_n")
        uri = tmp_path / "mongo.uri"
        uri.write_text(mongo_peer.uri)
        davit.configure(cloud_config(seaweedfs_peer, prefix))
        davit.start()
        write_job(
            davit,
            "m.toml",
            f'name = "m"\nkind = "mongo.backup"\nrepository = "cloud"\n[source]\nuri_file = "{uri}"\ndatabases = ["{db}"]\n',
        )
        assert davit.wait_run_state("m", {"succeeded", "failed"}, timeout=300)["state"] == "succeeded"
        write_job(
            davit,
            "mback.toml",
            f'name = "mback"\nkind = "mongo.restore"\nrepository = "cloud"\n[source]\njob = "m"\n'
            f'[target]\nuri_file = "{uri}"\nns_from = ["{db}.*"]\nns_to = ["{copy}.*"]\n',
        )
        back = davit.wait_run_state("mback", {"succeeded", "failed"}, timeout=300)
        assert back["state"] == "succeeded", back
        assert client[copy]["items"].count_documents({}) == 3000
        assert collection_digest(client, copy, "items") == collection_digest(client, db, "items")
        assert "by_n" in [i["name"] for i in client[copy]["items"].list_indexes()]
        assert_stored_remotely(davit, seaweedfs_peer, prefix, "m")
    finally:
        client.drop_database(db)
        client.drop_database(copy)
        client.close()


def test_weaviate_backup_and_restore_through_s3(
    davit: Davit, seaweedfs_peer: S3Peer, prefix: str, weaviate_peer: WeaviatePeer
) -> None:
    from tests.e2e.test_weaviate_kill9 import conn, connect, seed

    client = connect(weaviate_peer)
    name = f"Remote{uuid.uuid4().hex[:8]}"
    try:
        ids = seed(client, name, 2000, 32)
        davit.configure(cloud_config(seaweedfs_peer, prefix))
        davit.start()
        write_job(
            davit,
            "wv.toml",
            f'name = "wv"\nkind = "weaviate.backup"\nrepository = "cloud"\n[source]\n{conn(weaviate_peer)}'
            f'collections = ["{name}"]\nchunk_objects = 500\n',
        )
        assert davit.wait_run_state("wv", {"succeeded", "failed"}, timeout=300)["state"] == "succeeded"
        write_job(
            davit,
            "wvback.toml",
            f'name = "wvback"\nkind = "weaviate.restore"\nrepository = "cloud"\n[source]\njob = "wv"\n'
            f'[target]\n{conn(weaviate_peer)}rename = {{ "{name}" = "{name}Restored" }}\n',
        )
        back = davit.wait_run_state("wvback", {"succeeded", "failed"}, timeout=300)
        assert back["state"] == "succeeded", back
        coll = client.collections.get(f"{name}Restored")
        assert coll.aggregate.over_all(total_count=True).total_count == 2000
        assert {str(o.uuid) for o in coll.iterator(return_properties=[])} == ids
        assert_stored_remotely(davit, seaweedfs_peer, prefix, "wv")
    finally:
        for existing in list(client.collections.list_all(simple=True)):
            if existing.startswith(name):
                client.collections.delete(existing)
        client.close()
