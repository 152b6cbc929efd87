"""Configured remote repositories opened by name (`davit/daemon/repositories.py`, `bootstrap.py`)
on the real S3 and SFTP peers: created, found, listed, re-sealed under a new passphrase, and
refused with a clear reason when the bucket or directory is missing. This host's files of a
remote repository live in `<state>/repositories/<name>/` (0700); davitd removes the staging of
ended runs there without connecting, and closing davitd's parts closes the connections."""

from __future__ import annotations

import socket
import stat
import threading
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
from davit.domain.errors import BackendDenied, BackendUnavailable, InvalidArgument
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


def test_a_remote_repository_that_cannot_be_reached_does_not_stop_the_clean_up_of_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """davitd removes the staging of ended runs in every repository at start-up; one whose
    server is down is skipped with a log line (its staging is removed another time)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = (
        f'url = "s3://down-bucket/r"\nendpoint = "http://127.0.0.1:{port}"\npath_style = true\n'
        'access_key_id_env = "HOME"\nsecret_access_key_env = "HOME"\nretry_seconds = 1\n'
    )
    settings = settings_with(tmp_path / "home", {"down": dead, "local": 'path = "repository"\n'})
    init_repository(settings, "local", None).close()
    for home in (local_dir(settings, "down"), settings.locations["local"].path):
        assert home is not None
        for run in ("ended1", "running"):
            (home / "staging" / run).mkdir(parents=True, exist_ok=True)
            (home / "staging" / run / "tree.jsonl").write_text("{}\n")
    parts = Parts(settings)
    removed = parts.remove_staging_of_ended({"ended1"})
    assert removed == [str(settings.locations["local"].path / "staging" / "ended1")]  # type: ignore[operator]
    assert "repository down: the staging of ended runs was not removed this time" in caplog.text
    assert sorted(p.name for p in (local_dir(settings, "down") / "staging").iterdir()) == ["ended1", "running"]
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


def test_a_remote_that_does_not_answer_holds_up_only_the_runs_that_use_it(tmp_path: Path) -> None:
    """A server that accepts connections and never answers (a paused host): a run opening that
    repository waits out its retry budget and fails as retryable; meanwhile another run opens
    the local repository at once."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        port = silent.getsockname()[1]
        hung = (
            f'url = "s3://silent-bucket/r"\nendpoint = "http://127.0.0.1:{port}"\npath_style = true\n'
            'access_key_id_env = "HOME"\nsecret_access_key_env = "HOME"\nretry_seconds = 1\n'
        )
        settings = settings_with(tmp_path / "home", {"local": 'path = "repository"\n', "silent": hung})
        parts = Parts(settings)
        outcome: dict[str, BaseException | float] = {}

        def run_on_silent() -> None:
            started = time.monotonic()
            try:
                parts.repository("silent")
            except BaseException as exc:
                outcome["error"] = exc
            outcome["took"] = time.monotonic() - started

        worker = threading.Thread(target=run_on_silent)
        worker.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert parts.repository("local").snapshots() == []
        assert time.monotonic() - started < 5 and worker.is_alive()  # not behind the silent one
        worker.join(120)
        assert isinstance(outcome["error"], BackendUnavailable) and outcome["error"].retryable
        assert f"127.0.0.1:{port}" in str(outcome["error"])
        # the first request that went unanswered is named, and no clean-up request is sent after
        # it to the same silent server (each would cost a read timeout more)
        assert "probe tmp/probe-conditional-create-" in str(outcome["error"]) and "delete" not in str(outcome["error"])
        # about the 1 s budget, not the client's 30 s read timeout (which it took before the
        # read timeout was bounded by the budget); the margin is for a loaded machine
        assert isinstance(outcome["took"], float) and outcome["took"] < 12, outcome["took"]
        parts.close()
    finally:
        silent.close()
