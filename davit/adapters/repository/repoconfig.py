"""A repository's `config.json`: its format version, its chunking and, if encrypted, its sealed key.

Read through the storage port like every other object. It is created with `put_if_absent`,
so of two `init`s of one repository at once exactly one config wins and both go on with it
(the loser re-reads it). Changing the passphrase replaces it whole (`put`): the only object
davit ever rewrites in place besides lock objects.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge
from davit.adapters.repository.chunking import Chunking
from davit.adapters.repository.crypto import RepositoryKey, RepositoryKeyError
from davit.domain.errors import PermanentError

CONFIG = "config.json"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20  # a config is under a kilobyte


def read_config(backend: Backend) -> dict[str, Any] | None:
    """The repository's settings, None if it has no config (not a repository yet)."""
    try:
        data = backend.get(CONFIG, max_bytes=MAX_CONFIG_BYTES)
    except ObjectMissing:
        return None
    except ObjectTooLarge:
        raise PermanentError(f"{backend.where}: its config.json is too large to be davit's") from None
    try:
        settings = json.loads(data)
    except (ValueError, RecursionError):  # a config nested deeper than Python's recursion limit
        raise PermanentError(f"{backend.where}: its config.json is not JSON") from None
    if not isinstance(settings, dict):
        raise PermanentError(f"{backend.where}: its config.json is not a JSON object")
    found = settings.get("format")
    if type(found) is not int or found != FORMAT_VERSION:  # `true` and 1.0 equal 1 in Python
        raise PermanentError(f"{backend.where}: repository format {str(found)[:40]} is not supported")
    if not isinstance(settings.get("encryption", {}), dict):
        raise PermanentError(f"{backend.where}: its config.json has an encryption section that is not an object")
    return settings


def chunking_of(settings: dict[str, Any], where: str) -> Chunking | None:
    """How the repository's files are cut; None for a repository made before davit recorded it
    (fixed pieces of the daemon's `chunk_size`)."""
    section = settings.get("chunking")
    if section is None:
        return None
    chunking = Chunking.from_config(section, where)
    # Keyed exactly when encrypted, as `create_config` writes it: the chunking section is not
    # sealed, so whoever can write the repository (not the key) could turn `keyed` off, and the
    # chunk lengths of every later backup, readable in the pack indexes, would then tell them
    # whether a file they know is stored.
    if chunking.keyed != (settings.get("encryption") is not None):
        state = "encrypted" if settings.get("encryption") is not None else "not encrypted"
        raise PermanentError(f"{where}: its config.json has a chunking whose keyed does not match the repository ({state})")
    return chunking


def create_config(
    backend: Backend, passphrase: str | None, chunking: Chunking | None = None
) -> tuple[bool, RepositoryKey | None, str]:
    """Make `backend` a repository (encrypted under `passphrase` if given) whose files are cut
    by `chunking` (FastCDC by default): (True, its key, its uuid), or (False, None, "") if
    another process created it meanwhile (open it as an existing one)."""
    # the uuid names this repository's cache on every host (`cache.py`), wherever it is reached from
    settings: dict[str, Any] = {"format": FORMAT_VERSION, "uuid": uuid.uuid4().hex}
    # in the config, so every host cuts alike and their chunks dedupe (`chunking.py`)
    chunking = chunking or Chunking.fastcdc()
    key = None
    if passphrase is not None:
        key, settings["encryption"] = RepositoryKey.create(passphrase)
        chunking = chunking.with_key()
    settings["chunking"] = chunking.to_config()
    if backend.put_if_absent(CONFIG, json.dumps(settings, indent=1).encode()):
        return True, key, settings["uuid"]
    return False, None, ""


def change_passphrase(backend: Backend, old: str, new: str) -> None:
    """Seal the repository's key under `new` instead of `old`; the data is not rewritten."""
    settings = read_config(backend)
    if settings is None:
        raise PermanentError(f"{backend.where} is not a davit repository (no config.json)")
    section = settings.get("encryption")
    if section is None:
        raise RepositoryKeyError(f"{backend.where} is not encrypted: it has no passphrase to change")
    settings["encryption"] = RepositoryKey.rewrap(old, new, section, backend.where)
    backend.put(CONFIG, json.dumps(settings, indent=1).encode())
