"""An image of a `compose` snapshot (`images/<id>.tar`, the engine's export by ID), checked
before a restore lets the target's engine load it.

A snapshot is hostile input: its image file could hold another image than its name and the
manifest say, or name tags (`RepoTags`, `repositories`) that `docker load` would point at it,
moving a name the target's other stacks use. The export is read once through (a stream, never
held whole): `manifest.json` must describe exactly one image, with no tags, whose config member
hashes to the expected ID (the ID *is* the config's sha256, and the engine checks each layer
against the config's diff IDs as it loads). After the load `images.check_loaded` compares again.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from typing import Any

from davit.adapters.docker.imageexport import ChunkReader, index_problem
from davit.domain.errors import CorruptSnapshot

SMALL = 4 << 20  # members hashed while read: configs and manifests are far smaller
OBJECTS = 16 << 20  # JSON members kept until the manifest names the config: a real image has a few KiB
DIFF_ID = re.compile(r"sha256:[0-9a-f]{64}")


def check_image_export(snapshot_id: str, path: str, image_id: str, chunks: Iterator[bytes]) -> list[str]:
    """Raise `CorruptSnapshot` (naming `path`) unless the export is the one untagged image `image_id`;
    its layers' diff IDs (its config's `rootfs.diff_ids`), bottom first."""
    digests: dict[str, str] = {}
    objects: dict[str, bytes] = {}  # small JSON members (configs): a layer is a tar, never `{...`
    kept = 0
    manifest: Any = None
    repositories: Any = None
    try:
        with tarfile.open(fileobj=io.BufferedReader(ChunkReader(chunks), 1 << 20), mode="r|") as tar:
            for member in tar:
                if not member.isfile() or member.size > SMALL:
                    _not_metadata(snapshot_id, path, member)
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                name = member.name.removeprefix("./")
                digests[name] = "sha256:" + hashlib.sha256(data).hexdigest()
                if data[:1] == b"{":
                    objects[name] = data
                    kept += len(data)
                    if kept > OBJECTS:
                        raise CorruptSnapshot(snapshot_id, path, f"it holds over {OBJECTS} bytes of JSON members; refused")
                if name == "manifest.json":
                    manifest = json.loads(data)
                elif name == "repositories":
                    repositories = json.loads(data)
                elif name == "index.json" and (problem := index_problem(json.loads(data))):
                    # an OCI layout (Docker 25+): its load reads names from here too
                    raise CorruptSnapshot(snapshot_id, path, f"its index.json {problem}; refused")
    except (tarfile.TarError, ValueError, EOFError) as exc:
        raise CorruptSnapshot(snapshot_id, path, f"not an image export the engine could load: {exc}") from None
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise CorruptSnapshot(snapshot_id, path, "its manifest.json does not describe exactly one image")
    tags = manifest[0].get("RepoTags") or []
    if tags or repositories:
        named = ", ".join(str(t) for t in tags) or json.dumps(repositories)[:200]
        raise CorruptSnapshot(snapshot_id, path, f"it would tag names on the target when loaded ({named}); refused")
    config = str(manifest[0].get("Config") or "")
    found = digests.get(config.removeprefix("./"))
    if found != image_id:
        raise CorruptSnapshot(snapshot_id, path, f"it holds image {found or 'without a config'}, its name says {image_id}")
    return _diff_ids(snapshot_id, path, objects.get(config.removeprefix("./"), b""))


def _not_metadata(snapshot_id: str, path: str, member: tarfile.TarInfo) -> None:
    """A member the check skips (not a small regular file) must not be one `docker load` reads names from."""
    if member.name.removeprefix("./") in ("manifest.json", "repositories", "index.json"):
        raise CorruptSnapshot(snapshot_id, path, f"its {member.name!r} is not a small regular file")


def _diff_ids(snapshot_id: str, path: str, config: bytes) -> list[str]:
    """The config's layers: what a restore leaves out of the stream where the target holds them."""
    try:
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise CorruptSnapshot(snapshot_id, path, "its image config lists no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIFF_ID.fullmatch(d) for d in diff_ids):
        raise CorruptSnapshot(snapshot_id, path, "its image config's rootfs.diff_ids are not sha256 digests")
    return diff_ids
