"""`[repositories.NAME]`: a local path, or an sftp:// / s3:// url with its options; every bad
field is named with the file and the reason, and no secret written into the file is echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.daemon.config import load_settings, read_config
from davit.domain.errors import InvalidConfig

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A config directory holding an ssh known_hosts and identity file."""
    (tmp_path / "known_hosts").write_text("[backup.example]:2222 ssh-ed25519 AAAA\n")
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return tmp_path


def problems(conf: Path, section: str) -> dict[str, str]:
    """The problems of a config holding `section` as [repositories.off], by field; every
    rendered line names the file."""
    path = conf / "davit.toml"
    path.write_text(f"[repositories.off]\n{section}\n")
    with pytest.raises(InvalidConfig) as err:
        read_config(path)
    assert err.value.file == str(path)
    assert all(p.render(str(path)) in str(err.value) for p in err.value.problems)
    return {p.field: p.reason for p in err.value.problems}


SFTP = 'url = "sftp://davit@backup.example:2222/srv/davit"\nknown_hosts = "known_hosts"\nidentity_file = "id_ed25519"'
S3_KEYS = 'access_key_id_env = "AWS_ACCESS_KEY_ID"\nsecret_access_key_file = "s3.secret"'


def test_a_repository_is_given_by_a_path_or_a_url_not_both_nor_neither(conf: Path) -> None:
    assert "exactly one of path" in problems(conf, 'path = "/r"\nurl = "s3://bucket"')["repositories.off.path"]
    assert "exactly one of path" in problems(conf, 'passphrase_env = "P"')["repositories.off.path"]


def test_an_unknown_scheme_is_refused(conf: Path) -> None:
    for url in ("ftp://host/r", "file:///r", "/just/a/path", "S4://bucket"):
        assert "not a repository URL" in problems(conf, f'url = "{url}"')["repositories.off.url"], url


def test_an_sftp_repository_needs_a_known_hosts_and_an_identity_file(conf: Path) -> None:
    found = problems(conf, 'url = "sftp://davit@backup.example/srv/davit"')
    assert found == {
        "repositories.off.known_hosts": "required for an sftp:// url",
        "repositories.off.identity_file": "required for an sftp:// url",
    }


def test_the_sftp_files_must_exist_and_be_files(conf: Path) -> None:
    (conf / "ssh").mkdir()
    found = problems(conf, 'url = "sftp://davit@h/r"\nknown_hosts = "ssh"\nidentity_file = "/nonexistent/id"')
    assert found["repositories.off.known_hosts"] == f"not a regular file: {conf / 'ssh'}"
    assert found["repositories.off.identity_file"] == "no such file: /nonexistent/id"


def test_an_sftp_url_with_a_password_is_refused_and_the_password_not_echoed(conf: Path) -> None:
    path = conf / "davit.toml"
    path.write_text(
        f'[repositories.off]\nurl = "sftp://davit:{SECRET}@h/r"\nknown_hosts = "known_hosts"\nidentity_file = "id_ed25519"\n'
    )
    with pytest.raises(InvalidConfig) as err:
        read_config(path)
    assert [p.field for p in err.value.problems] == ["repositories.off.url"]
    assert "holds a password" in str(err.value)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.problems)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sftp://backup.example/srv/davit", "give the user"),
        ("sftp://davit@backup.example", "give the repository's directory"),
        ("sftp://davit@backup.example/", "give the repository's directory"),
        ("sftp://davit@backup.example:99999/r", "not a valid URL"),
        ("sftp://davit@backup.example/srv/../etc", "'..'"),
        ("sftp://davit@backup.example/r?x=1", "no query"),
    ],
)
def test_an_sftp_url_names_user_host_and_directory(conf: Path, url: str, reason: str) -> None:
    found = problems(conf, f'url = "{url}"\nknown_hosts = "known_hosts"\nidentity_file = "id_ed25519"')
    assert reason in found["repositories.off.url"]


def test_options_of_another_kind_of_repository_are_refused_by_name(conf: Path) -> None:
    assert problems(conf, SFTP + '\nregion = "eu-west-1"') == {"repositories.off.region": "only for an s3:// url"}
    found = problems(conf, f'url = "s3://bucket"\n{S3_KEYS}\nknown_hosts = "known_hosts"')
    assert found == {"repositories.off.known_hosts": "only for an sftp:// url"}
    found = problems(conf, 'path = "repository"\nendpoint = "http://127.0.0.1:8333"')
    assert found == {"repositories.off.endpoint": "only for a repository given by url"}


@pytest.mark.parametrize("key", ["access_key_id", "secret_access_key", "passphrase", "password"])
def test_a_secret_written_into_the_file_is_refused_by_name_without_its_value(conf: Path, key: str) -> None:
    path = conf / "davit.toml"
    path.write_text(f'[repositories.off]\nurl = "s3://bucket"\n{S3_KEYS}\n{key} = "{SECRET}"\n')
    with pytest.raises(InvalidConfig) as err:
        read_config(path)
    reason = {p.field: p.reason for p in err.value.problems}[f"repositories.off.{key}"]
    assert "never written in the config" in reason or "no password is used" in reason
    if key != "password":
        assert f"{key}_env" in reason and f"{key}_file" in reason
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.problems)


def test_s3_keys_are_given_by_exactly_one_reference_each(conf: Path) -> None:
    found = problems(conf, 'url = "s3://bucket/prefix"')
    assert set(found) == {"repositories.off.access_key_id_env", "repositories.off.secret_access_key_env"}
    assert "give access_key_id_env or access_key_id_file" in found["repositories.off.access_key_id_env"]
    found = problems(conf, f'url = "s3://bucket"\n{S3_KEYS}\naccess_key_id_file = "id"')
    assert found == {"repositories.off.access_key_id_env": "give access_key_id_env or access_key_id_file, not both"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://Bucket_Name/p", "give a bucket name"),
        ("s3://b/p", "give a bucket name"),
        ("s3://bucket:9000/p", "give a bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty"),
        ("s3://bucket/p?region=x", "no query"),
    ],
)
def test_an_s3_url_names_a_bucket_and_a_clean_prefix(conf: Path, url: str, reason: str) -> None:
    assert reason in problems(conf, f'url = "{url}"\n{S3_KEYS}')["repositories.off.url"]


def test_keys_in_an_s3_url_or_endpoint_are_refused_without_their_value(conf: Path) -> None:
    path = conf / "davit.toml"
    path.write_text(
        f'[repositories.off]\nurl = "s3://AKIDEXAMPLE:{SECRET}@bucket/p"\n{S3_KEYS}\n'
        f'endpoint = "https://AKIDEXAMPLE:{SECRET}@s3.example"\n'
    )
    with pytest.raises(InvalidConfig) as err:
        read_config(path)
    found = {p.field: p.reason for p in err.value.problems}
    assert "holds no credentials" in found["repositories.off.url"]
    assert "holds credentials" in found["repositories.off.endpoint"]
    assert SECRET not in str(err.value)


def test_endpoint_region_and_path_style_are_checked(conf: Path) -> None:
    found = problems(conf, f'url = "s3://bucket"\n{S3_KEYS}\nendpoint = "ftp://x"\nregion = "EU West"')
    assert "not an endpoint URL" in found["repositories.off.endpoint"]
    assert "not a region name" in found["repositories.off.region"]
    found = problems(conf, f'url = "s3://bucket"\n{S3_KEYS}\npath_style = "maybe"')
    assert "boolean" in found["repositories.off.path_style"]  # a type error: named by the parser


def test_valid_remote_sections_become_locations_with_paths_read_against_the_config(conf: Path) -> None:
    (conf / "davit.toml").write_text(
        f'[repositories.local]\npath = "repository"\n'
        f"[repositories.ssh]\n{SFTP}\n"
        f'[repositories.s3]\nurl = "s3://davit-bucket/host1"\nendpoint = "http://127.0.0.1:8333"\npath_style = true\n{S3_KEYS}\n'
    )
    settings = load_settings(home=conf)
    ssh, s3 = settings.locations["ssh"], settings.locations["s3"]
    assert ssh.path is None and ssh.url == "sftp://davit@backup.example:2222/srv/davit" and ssh.scheme == "sftp"
    assert ssh.sftp is not None and ssh.sftp.known_hosts == conf / "known_hosts" and ssh.sftp.identity_file == conf / "id_ed25519"
    assert s3.s3 is not None and s3.s3.region == "us-east-1" and s3.s3.path_style and s3.s3.endpoint == "http://127.0.0.1:8333"
    assert s3.s3.access_key_id.env == "AWS_ACCESS_KEY_ID" and s3.s3.access_key_id.file is None
    assert s3.s3.secret_access_key.file == str(conf / "s3.secret")
    assert s3.s3.secret_access_key.what == "repositories.s3.secret_access_key"
    # the local directories, for what still needs one; the remote ones are locations only
    assert settings.repositories == {"local": conf / "repository"}
    assert set(settings.locations) == {"local", "ssh", "s3"}


def test_a_remote_repository_may_retry_longer_than_a_minute_and_a_local_one_takes_no_retry_budget(conf: Path) -> None:
    (conf / "davit.toml").write_text(
        f'[repositories.ssh]\n{SFTP}\nretry_seconds = 300\n[repositories.s3]\nurl = "s3://b-1"\n{S3_KEYS}\n'
    )
    settings = load_settings(home=conf)
    assert settings.locations["ssh"].retry_seconds == 300
    assert settings.locations["s3"].retry_seconds == 60  # the default: a 30 s restart of the server does not fail a run
    local = problems(conf, 'path = "/r"\nretry_seconds = 5')
    assert local == {"repositories.off.retry_seconds": "only for a repository given by url"}
    assert "greater than 0" in problems(conf, f"{SFTP}\nretry_seconds = 0")["repositories.off.retry_seconds"]


def test_the_default_home_still_has_one_local_repository(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h", create_home=True)
    assert settings.locations["local"].path == tmp_path / "h" / "repository"
    assert settings.locations["local"].where == str(tmp_path / "h" / "repository")
