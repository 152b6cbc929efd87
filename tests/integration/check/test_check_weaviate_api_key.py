"""`davit check` on a Weaviate that admits only an API key (a second Weaviate started for these
tests from the peer's binary): the key is read by reference (a file or a variable) and the
check passes; a wrong key fails the check naming the server, and the key is printed nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.keyed_weaviate import KeyedWeaviate, keyed_weaviate
from tests.integration.check.helpers import check, davit, job_file, make_home
from tests.integration.check.test_check_databases import secret_file

__all__ = ["keyed_weaviate"]  # fixture


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = make_home(tmp_path / "home", {"local": f'path = "{tmp_path / "repo"}"'})
    assert davit(h, "repository", "init", "local")[0] == 0
    return h


def keyed_job(tmp_path: Path, server: KeyedWeaviate, key_reference: str) -> Path:
    body = (
        f'kind = "weaviate.backup"\n[source]\nhost = "{server.host}"\nhttp_port = {server.http_port}\n'
        f"grpc_port = {server.grpc_port}\ntimeout_seconds = 10\n{key_reference}\n"
    )
    return job_file(tmp_path / "jobs", "wv", body)


def test_a_weaviate_backup_with_its_api_key_in_a_file_passes(home: Path, tmp_path: Path, keyed_weaviate: KeyedWeaviate) -> None:
    key = secret_file(tmp_path, "wv.key", keyed_weaviate.key + "\n")
    out = check(home, keyed_job(tmp_path, keyed_weaviate, f'api_key_file = "{key}"'))
    assert out.exit_code == 0, out.lines
    assert out.detail("source", "connects").endswith("with an API key")
    assert keyed_weaviate.key not in out.text


def test_a_weaviate_backup_with_its_api_key_in_a_variable_passes(
    home: Path, tmp_path: Path, keyed_weaviate: KeyedWeaviate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAVIT_TEST_WV_KEY", keyed_weaviate.key)
    out = check(home, keyed_job(tmp_path, keyed_weaviate, 'api_key_env = "DAVIT_TEST_WV_KEY"'))
    assert out.exit_code == 0, out.lines
    assert keyed_weaviate.key not in out.text


def test_a_wrong_api_key_fails_naming_the_server_and_never_the_key(
    home: Path, tmp_path: Path, keyed_weaviate: KeyedWeaviate
) -> None:
    wrong = "wrong-weaviate-key-" + keyed_weaviate.key[:8]
    key = secret_file(tmp_path, "wv.key", wrong + "\n")
    out = check(home, keyed_job(tmp_path, keyed_weaviate, f'api_key_file = "{key}"'))
    assert out.exit_code == 1
    assert out.failed() == [("source", "connects")], out.lines
    detail = out.detail("source", "connects")
    assert f"127.0.0.1:{keyed_weaviate.http_port}" in detail and "401" in detail
    assert wrong not in out.text and keyed_weaviate.key not in out.text


def test_no_api_key_fails_naming_the_server(home: Path, tmp_path: Path, keyed_weaviate: KeyedWeaviate) -> None:
    out = check(home, keyed_job(tmp_path, keyed_weaviate, ""))
    assert out.exit_code == 1
    [(subject, failed)] = out.failed()
    assert subject == "source" and f"127.0.0.1:{keyed_weaviate.http_port}" in out.detail(subject, failed), out.lines
