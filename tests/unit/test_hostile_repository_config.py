"""A repository's `config.json` is written by whoever can write the repository: on a shared
bucket, another tenant. Opening one that davit cannot have written fails with a typed error
naming the repository, fast, and never exhausts the host (scrypt costs are the config's word)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from davit.adapters.repository.backends.memory import MemoryBackend
from davit.adapters.repository.crypto import RepositoryKeyError
from davit.adapters.repository.repository import Repository
from davit.domain.errors import PermanentError


def _planted(config: bytes | dict[str, object]) -> MemoryBackend:
    backend = MemoryBackend(where="s3://shared-bucket/repo")
    backend.put("config.json", config if isinstance(config, bytes) else json.dumps(config).encode())
    return backend


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (b"[" * 100_000, "is not JSON"),
        ({"format": True}, "format True is not supported"),
        ({"format": 1, "encryption": "aes"}, "encryption section that is not an object"),
        ({"format": 1, "encryption": [1]}, "encryption section that is not an object"),
    ],
    ids=["nested deeper than the recursion limit", "format true", "encryption a string", "encryption a list"],
)
def test_a_config_davit_cannot_have_written_is_refused_with_a_typed_error(
    tmp_path: Path, config: bytes | dict[str, object], reason: str
) -> None:
    """Before: RecursionError, AttributeError ('str' object has no attribute 'get'), or a
    `"format": true` taken for format 1."""
    for passphrase in (None, "a passphrase"):
        with pytest.raises(PermanentError, match=reason) as refused:
            Repository.open(_planted(config), local_dir=tmp_path, passphrase=passphrase)
        assert "s3://shared-bucket/repo" in str(refused.value)


def _encrypted_config(tmp_path: Path) -> dict[str, object]:
    backend = MemoryBackend()
    Repository.open(backend, local_dir=tmp_path, passphrase="pw").close()
    config: dict[str, object] = json.loads(backend.get("config.json"))
    return config


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"n": 2**30}, "scrypt costs davit never writes"),
        ({"p": 2**20}, "scrypt costs davit never writes"),
        ({"n": "32768"}, "damaged"),
        ({"salt": "not base64!"}, "damaged"),
        ({"key": None}, "damaged"),
    ],
    ids=["n of a TiB", "p of a week", "n a string", "salt not base64", "key null"],
)
def test_an_encryption_section_davit_cannot_have_written_fails_fast_naming_the_repository(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    """scrypt's n=2**30 wants 1 TiB of memory and p=2**20 runs for days: before, davitd tried
    (and was killed, or held up every command opening the repository); a string or broken
    base64 raised TypeError or binascii.Error."""
    config = _encrypted_config(tmp_path)
    section = config["encryption"]
    assert isinstance(section, dict)
    config["encryption"] = {**section, **change}
    started = time.monotonic()
    with pytest.raises(RepositoryKeyError, match=reason):
        Repository.open(_planted(config), local_dir=tmp_path, passphrase="pw")
    assert time.monotonic() - started < 5


def test_the_default_costs_still_open(tmp_path: Path) -> None:
    backend = _planted(_encrypted_config(tmp_path))
    assert Repository.open(backend, local_dir=tmp_path, passphrase="pw").encrypted


def _with_chunking(config: dict[str, object], **change: object) -> dict[str, object]:
    section = config["chunking"]
    assert isinstance(section, dict)
    return {**config, "chunking": {**section, **change}}


def test_an_encrypted_repository_whose_chunking_was_made_unkeyed_is_refused(tmp_path: Path) -> None:
    """Whoever can write the bucket (not the key) could set `keyed: false`: every later backup
    would then cut by FastCDC's public gear table, and the chunk lengths readable in the pack
    indexes would tell them whether a file they know is stored. Before: opened and used."""
    config = _with_chunking(_encrypted_config(tmp_path), keyed=False)
    with pytest.raises(PermanentError, match="chunking") as refused:
        Repository.open(_planted(config), local_dir=tmp_path, passphrase="pw").chunker(1 << 20)
    assert "s3://shared-bucket/repo" in str(refused.value)


def test_a_plain_repository_whose_chunking_says_keyed_is_refused_as_such(tmp_path: Path) -> None:
    """Before: opened, then every backup failed asking for the passphrase of a repository that
    has none."""
    backend = MemoryBackend()
    Repository.open(backend, local_dir=tmp_path).close()
    config = _with_chunking(json.loads(backend.get("config.json")), keyed=True)
    with pytest.raises(PermanentError, match="chunking") as refused:
        Repository.open(_planted(config), local_dir=tmp_path).chunker(1 << 20)
    assert "passphrase" not in str(refused.value)
