"""Configured remote repositories opened by name (`davit/daemon/repositories.py`, `bootstrap.py`)
on the real S3 and SFTP peers: created, found, listed, re-sealed under a new passphrase, and
refused with a clear reason when the bucket or directory is missing. This host's files of a
remote repository live in `<state>/repositories/<name>/` (0700); davitd removes the staging of
ended runs there without connecting, and closing davitd's parts closes the connections."""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path

import pytest

from davit.daemon.bootstrap import Parts
from davit.daemon.config import Settings, load_settings
from davit.daemon.repositories import (
    change_passphrase,
    existing_repositories,
    init_repository,
    local_dir,
    open_repository,
    repository_exists,
)
from davit.domain.errors import BackendDenied, InvalidArgument
from tests.peers.state import S3Peer, SshPeer


def s3_section(peer: S3Peer, url: str, extra: str = "") -> str:
    return (
        f'url = "{url}"\nendpoint = "{peer.endpoint}"\npath_style = true\nregion = "{peer.region}"\n'
        f'access_key_id_file = "{peer.access_key_id_file}"\nsecret_access_key_file = "{peer.secret_access_key_file}"\n{extra}'
    )


def sftp_section(peer: SshPeer, directory: Path) -> str:
    return (
        f'url = "sftp://{peer.user}@{peer.host}:{peer.port}{directory}"\n'
        f'known_hosts = "{peer.known_hosts}"\nidentity_file = "{peer.key_file}"\n'
    )


def settings_with(home: Path, sections: dict[str, str]) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    body = "".join(f"[repositories.{name}]\n{section}\n" for name, section in sections.items())
    (home / "davit.toml").write_text(body)
    return load_settings(home=home)


@pytest.fixture
def sftp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sftp-repo") / "repo"
    d.mkdir(mode=0o700)
    return d


def test_remote_repositories_are_created_found_and_resealed_by_name(
    seaweedfs_peer: S3Peer, ssh_peer: SshPeer, sftp_dir: Path, tmp_path: Path
) -> None:
    prefix = f"by-name/{uuid.uuid4().hex[:10]}"
    passphrase_file = tmp_path / "pass"
    url = f"s3://{seaweedfs_peer.bucket}/{prefix}"
    settings = settings_with(
        tmp_path / "home",
        {
            "cloud": s3_section(seaweedfs_peer, url, f'passphrase_file = "{passphrase_file}"'),
            "ssh": sftp_section(ssh_peer, sftp_dir),
        },
    )
    (tmp_path / "pass").write_text("old passphrase")
    assert not repository_exists(settings, "cloud") and not repository_exists(settings, "ssh")
    assert existing_repositories(settings) == []

    for name, passphrase in (("cloud", "old passphrase"), ("ssh", None)):
        init_repository(settings, name, passphrase).close()
    assert sorted(existing_repositories(settings)) == ["cloud", "ssh"]
    assert (sftp_dir / "config.json").is_file()  # on the server (which runs on this host)
    with pytest.raises(InvalidArgument, match=f"repository cloud already exists at s3://{seaweedfs_peer.bucket}/{prefix}"):
        init_repository(settings, "cloud", "another")

    # this host's directory for each: under the state directory, 0700, the same for every opener
    for name in ("cloud", "ssh"):
        home = local_dir(settings, name)
        assert home == settings.state_dir / "repositories" / name
        assert stat.S_IMODE(home.stat().st_mode) == 0o700

    change_passphrase(settings, "cloud", "old passphrase", "new passphrase")
    (tmp_path / "pass").write_text("new passphrase")
    repo = open_repository(settings, "cloud", create=False)
    try:
        assert repo.encrypted and repo.snapshots() == []
    finally:
        repo.close()


def test_a_missing_bucket_or_server_directory_is_a_clear_permanent_error(
    seaweedfs_peer: S3Peer, ssh_peer: SshPeer, sftp_dir: Path, tmp_path: Path
) -> None:
    settings = settings_with(
        tmp_path / "home",
        {
            "nobucket": s3_section(seaweedfs_peer, f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/r"),
            "nodir": sftp_section(ssh_peer, sftp_dir / "not-made"),
        },
    )
    with pytest.raises(BackendDenied, match=r"s3://no-such-bucket-\w+/r .*does not exist") as raised:
        init_repository(settings, "nobucket", None)
    assert seaweedfs_peer.secret_access_key not in str(raised.value)
    with pytest.raises(BackendDenied, match=f"no directory {sftp_dir / 'not-made'} on the server: create it first"):
        init_repository(settings, "nodir", None)
    assert not (sftp_dir / "not-made").exists()  # davit creates objects, not the operator's directory


def test_ended_runs_staging_of_a_remote_repository_is_removed_without_connecting(tmp_path: Path) -> None:
    """A server that is down must not hold up davitd's start-up: its clean-up is local."""
    dead = (
        'url = "s3://down-bucket/r"\nendpoint = "http://127.0.0.1:9"\npath_style = true\n'
        'access_key_id_env = "NOT_SET_ANYWHERE"\nsecret_access_key_env = "NOT_SET_EITHER"\n'
    )
    settings = settings_with(tmp_path / "home", {"down": dead})
    staging = local_dir(settings, "down") / "staging"
    for run in ("ended1", "ended1.c0", "running"):
        (staging / run).mkdir(parents=True)
        (staging / run / "tree.jsonl").write_text("{}\n")
    parts = Parts(settings)
    started = time.monotonic()
    removed = parts.remove_staging_of_ended({"ended1"})
    assert time.monotonic() - started < 2  # no connection, no secret read
    assert sorted(Path(p).name for p in removed) == ["ended1", "ended1.c0"]
    assert sorted(p.name for p in staging.iterdir()) == ["running"]
    parts.close()


def test_closing_davitds_parts_closes_the_connections_of_its_repositories(
    ssh_peer: SshPeer, sftp_dir: Path, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path / "home", {"ssh": sftp_section(ssh_peer, sftp_dir)})
    init_repository(settings, "ssh", None).close()
    parts = Parts(settings)
    repo = parts.repository("ssh")
    assert parts.repository("ssh") is repo  # opened once, shared by the runs that use it
    assert repo.backend.stat("config.json") is not None
    parts.close()
    with pytest.raises(BackendDenied, match="closed"):
        repo.backend.stat("config.json")
