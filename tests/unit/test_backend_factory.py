"""`open_backend`: a location becomes the backend of its scheme, with the secrets it names
resolved at open. The SFTP and S3 classes are stood in for here by recording fakes (their
own suites run against the real servers); this checks which class gets which arguments."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from davit.adapters.repository.backends.factory import open_backend
from davit.adapters.repository.backends.local import LocalBackend
from davit.adapters.repository.location import RepositoryLocation, S3Options, SecretRef, SftpOptions
from davit.adapters.secrets import SecretUnavailable


class Recorder:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Recorder.calls.append(("init", args, kwargs))

    @classmethod
    def from_url(cls, *args: Any, **kwargs: Any) -> Recorder:
        Recorder.calls.append(("from_url", args, kwargs))
        return cls.__new__(cls)


@pytest.fixture
def fake_remotes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    Recorder.calls = []
    for module, name in (("sftp", "SftpBackend"), ("s3", "S3Backend")):
        fake = types.ModuleType(f"davit.adapters.repository.backends.{module}")
        setattr(fake, name, type(name, (Recorder,), {}))
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
    return Recorder.calls


def test_a_local_location_is_a_local_backend_on_its_directory(tmp_path: Path) -> None:
    backend = open_backend(RepositoryLocation("local", path=tmp_path / "repo"))
    assert isinstance(backend, LocalBackend) and backend.root == tmp_path / "repo"
    assert not (tmp_path / "repo").exists()  # opening creates nothing


def test_an_sftp_location_opens_the_sftp_backend_with_its_files(tmp_path: Path, fake_remotes: list[Any]) -> None:
    location = RepositoryLocation(
        "off",
        url="sftp://davit@h:2222/srv/r",
        sftp=SftpOptions(tmp_path / "known_hosts", tmp_path / "id"),
        retry_seconds=12.5,
    )
    backend = open_backend(location)
    assert type(backend).__name__ == "SftpBackend"
    assert fake_remotes == [
        (
            "init",
            ("sftp://davit@h:2222/srv/r",),
            {
                "known_hosts": tmp_path / "known_hosts",
                "identity_file": tmp_path / "id",
                "retry_budget": 12.5,
            },
        )
    ]


def _s3(tmp_path: Path) -> RepositoryLocation:
    (tmp_path / "secret").write_text("the-secret-key\n")
    keys = S3Options(
        endpoint="http://127.0.0.1:8333",
        region="eu-west-1",
        path_style=True,
        access_key_id=SecretRef("DAVIT_TEST_KEY_ID", None, "repositories.off.access_key_id"),
        secret_access_key=SecretRef(None, str(tmp_path / "secret"), "repositories.off.secret_access_key"),
    )
    return RepositoryLocation("off", url="s3://bucket/host1", s3=keys)


def test_an_s3_location_opens_the_s3_backend_with_its_keys_resolved(
    tmp_path: Path, fake_remotes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAVIT_TEST_KEY_ID", "AKIDEXAMPLE")
    backend = open_backend(_s3(tmp_path))
    assert type(backend).__name__ == "S3Backend"
    assert fake_remotes == [
        (
            "from_url",
            ("s3://bucket/host1",),
            {
                "endpoint": "http://127.0.0.1:8333",
                "region": "eu-west-1",
                "path_style": True,
                "access_key_id": "AKIDEXAMPLE",
                "secret_access_key": "the-secret-key",
                "retry_budget": 60.0,  # the default: a 30 s restart of the server does not fail a run
            },
        )
    ]


def test_an_unreadable_key_reference_is_named_and_nothing_is_opened(
    tmp_path: Path, fake_remotes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAVIT_TEST_KEY_ID", raising=False)
    with pytest.raises(SecretUnavailable, match=r"repositories\.off\.access_key_id: environment variable DAVIT_TEST_KEY_ID"):
        open_backend(_s3(tmp_path))
    assert fake_remotes == []
