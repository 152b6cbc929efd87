"""Secrets by reference: resolved from env or file, and redacted from anything said aloud."""

from __future__ import annotations

from pathlib import Path

import pytest

from davit.adapters.secrets import SecretUnavailable, redact, resolve


def test_a_uri_loses_its_credentials_but_keeps_where_it_points() -> None:
    text = "cannot reach mongodb://admin:s3cr3t-pw@db.example:27017/app?authSource=admin"
    assert redact(text) == "cannot reach mongodb://***@db.example:27017/app?authSource=admin"


def test_a_known_secret_is_removed_even_when_quoted_elsewhere() -> None:
    uri = "mongodb://admin:s3cr3t-pw@db:27017/"
    assert "s3cr3t-pw" not in redact("auth failed for password 's3cr3t-pw'", uri)


def test_a_secret_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAVIT_TEST_URI", "mongodb://u:p@h/")
    assert resolve("DAVIT_TEST_URI", None, "uri") == "mongodb://u:p@h/"


def test_a_missing_secret_names_where_it_was_looked_for_not_a_value(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable, match="DAVIT_NOT_SET"):
        resolve("DAVIT_NOT_SET", None, "uri")
    with pytest.raises(SecretUnavailable, match="cannot read"):
        resolve(None, str(tmp_path / "absent"), "uri")
    (tmp_path / "uri").write_text("mongodb://u:p@h/\n")
    assert resolve(None, str(tmp_path / "uri"), "uri") == "mongodb://u:p@h/"
