"""Secrets by reference: resolved from env or file, and redacted from anything said aloud."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from davit.adapters import secrets
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


def test_a_secret_file_that_never_ends_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """`secret_access_key_file = "/dev/zero"`, or a 2 GiB file named by mistake: before, it was
    read whole into memory (for /dev/zero, without end); now at most 64 KiB are read."""
    with pytest.raises(SecretUnavailable, match="larger than a secret") as refused:
        resolve(None, "/dev/zero", "repositories.off.secret_access_key")
    assert "\x00" not in str(refused.value)
    huge = tmp_path / "huge"
    huge.write_bytes(b"")
    os.truncate(huge, 2 << 30)  # sparse: no disk used
    with pytest.raises(SecretUnavailable, match="larger than a secret"):
        resolve(None, str(huge), "repositories.off.access_key_id")


def test_a_fifo_nobody_writes_is_refused_instead_of_blocking_for_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "PIPE_WAIT_SECONDS", 0.2, raising=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def read() -> None:
        try:
            resolve(None, str(fifo), "repositories.off.secret_access_key")
        except BaseException as exc:
            done.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # free the reader blocked in open() or read() (the behaviour before)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("reading a FIFO nobody writes blocked")
    assert len(done) == 1 and isinstance(done[0], SecretUnavailable), done
    assert "not a regular file" in str(done[0])


def test_a_passphrase_piped_in_is_still_read() -> None:
    """`--passphrase-file <(pass show repo)`: a pipe with data is not a regular file, and is read."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"piped passphrase\n")
        os.close(write_end)
        assert resolve(None, f"/dev/fd/{read_end}", "--passphrase-file") == "piped passphrase"
    finally:
        os.close(read_end)
