"""Reading a snapshot's `manifest.json` without trusting it: shape, size and (encrypted) MAC.

A manifest is the one file that makes a snapshot exist, and anyone who can write the repository
can write one. So a manifest is read through `load_manifest`, which never raises for bad
content: it returns the parsed manifest, or the reason it cannot be used (not JSON, a missing
field, a field of the wrong type, an id that is not its directory's name, and in an encrypted
repository opened with its key, a missing or wrong MAC). The repository lists such a snapshot
as damaged and everything else (latest, parent lookup, resolve, retention) does not see it; one
bad manifest never breaks the rest of the repository. Whether the tree matches the manifest's
`tree_sha256` is checked when the tree is read (`davit verify`).
"""

from __future__ import annotations

import errno
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from davit.adapters.repository.backend import Backend, ObjectMissing, ObjectTooLarge, check_key
from davit.adapters.repository.crypto import MANIFEST_MAC_FIELD, RepositoryKey
from davit.adapters.repository.fsutil import NotRegularFile

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few hundred bytes; a larger file is not parsed

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# field -> the JSON types it may have; fields marked optional may be absent.
_REQUIRED: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "job": (str,),
    "kind": (str,),
    "created_at": (str,),
    "tree_sha256": (str,),
}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "source": (dict,),
    "stats": (dict,),
    "parent": (str, type(None)),
    "copied_from": (str,),  # the name of the repository a copy was made from (`repository.copy`)
    MANIFEST_MAC_FIELD: (str,),
}
_TYPE_NAMES = {str: "a string", dict: "an object", type(None): "null"}


@dataclass(frozen=True)
class Loaded:
    """A usable manifest, and whether its MAC was checked (None: nothing to check it with)."""

    manifest: dict[str, Any]
    authenticated: bool | None


def manifest_key(snapshot_id: str) -> str:
    return check_key(f"snapshots/{snapshot_id}/{MANIFEST}")


def load_manifest(backend: Backend, snapshot_id: str, key: RepositoryKey | None, encrypted: bool) -> Loaded | str | None:
    """The manifest of snapshot `snapshot_id`, or the reason it is damaged; None if it is gone
    (removed since it was listed: a snapshot being forgotten)."""
    raw = _read(backend, manifest_key(snapshot_id))
    if raw is None or isinstance(raw, str):
        return raw
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"manifest is not JSON ({type(exc).__name__}: {str(exc)[:120]})"
    if not isinstance(manifest, dict):
        return f"manifest is a JSON {type(manifest).__name__}, not an object"
    problem = _shape_problem(manifest, snapshot_id)
    if problem is not None:
        return problem
    if not encrypted:
        return Loaded(manifest, None)
    if key is None:
        return Loaded(manifest, None)  # listing only: the MAC cannot be checked without the key
    try:
        authentic = key.manifest_authentic(snapshot_id, manifest)
    except ValueError:  # a value canonical JSON refuses (NaN): not what davit wrote
        authentic = False
    if not authentic:
        missing = MANIFEST_MAC_FIELD not in manifest
        return (
            "manifest is not authenticated: "
            + ("it has no MAC" if missing else "its MAC does not verify")
            + " under the repository key (written or edited by something else than davit)"
        )
    return Loaded(manifest, True)


def _read(backend: Backend, key: str) -> bytes | str | None:
    """The manifest's bytes, or why not. A local repository never follows a symlink nor waits
    on a FIFO to read one (`LocalBackend.get`)."""
    try:
        return backend.get(key, max_bytes=MAX_MANIFEST_BYTES)
    except ObjectMissing:
        return None
    except ObjectTooLarge:
        return f"manifest is larger than a manifest can be ({MAX_MANIFEST_BYTES} bytes)"
    except NotRegularFile:
        return "manifest is not a regular file"
    except OSError as exc:  # a local repository's file that cannot be opened
        if exc.errno == errno.ELOOP:
            return "manifest is a symbolic link"
        return f"manifest cannot be read: {exc.strerror}"


def _shape_problem(manifest: dict[str, Any], dir_name: str) -> str | None:
    for name, types in _REQUIRED.items():
        if name not in manifest:
            return f"manifest has no {name!r}"
        if not isinstance(manifest[name], types):
            return f"manifest field {name!r} is not {_types(types)}"
    for name, types in _OPTIONAL.items():
        if name in manifest and not isinstance(manifest[name], types):
            return f"manifest field {name!r} is not {_types(types)}"
    if manifest["id"] != dir_name:
        return f"manifest id {manifest['id'][:80]!r} is not the name of its directory"
    try:
        datetime.fromisoformat(manifest["created_at"])
    except ValueError:
        return f"manifest field 'created_at' is not an ISO 8601 time: {manifest['created_at'][:40]!r}"
    if not _SHA256_HEX.fullmatch(manifest["tree_sha256"]):
        return "manifest field 'tree_sha256' is not a sha256 in hex"
    return None


def _types(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
