"""A restore's snapshot tree, read for `davit check` without opening the repository for writing.

`Repository.open` makes this host's directories for a repository and cleans its spool, and a
check writes nothing; so the tree of the snapshot the check chose is fetched here through the
backend, into a private temporary directory that is gone when the read ends, checked against
the manifest's sha256, and opened with the repository's key (the passphrase resolved again: a
key is not kept between checks). For the small trees of the database kinds (a line per
database, table or chunk), read whole and bounded: a tree larger than `MAX_TREE_BYTES` is not
read (its kind's check then says what it could not look at).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from davit.adapters.repository.backends.factory import open_backend
from davit.adapters.repository.crypto import RepositoryKey, RepositoryKeyError
from davit.adapters.repository.repoconfig import read_config
from davit.adapters.repository.snapshots import SnapshotInfo
from davit.adapters.repository.trees import check_stored, compressed_stream, fetch_tree
from davit.daemon.config import Settings
from davit.daemon.repositories import configured_passphrase, location_of

MAX_TREE_BYTES = 64 << 20  # compressed; a database snapshot's tree is far smaller


class TreeTooLarge(Exception):
    """The snapshot's tree is larger than a check reads."""


def compressed_tree(settings: Settings, repository: str, info: SnapshotInfo) -> bytes:
    """The zstd-compressed tree of snapshot `info` in configured repository `repository`, as
    `Repository.tree_bytes` gives it. Raises what reading it raises (`CorruptChunk`, a backend
    error, `RepositoryKeyError`, `TreeTooLarge`)."""
    location = location_of(settings, repository)
    passphrase = configured_passphrase(settings, repository)
    backend = open_backend(location)
    try:
        config = read_config(backend) or {}
        section = config.get("encryption")
        key = RepositoryKey.open(passphrase, section, backend.where) if section is not None and passphrase else None
        required = RepositoryKeyError(f"{backend.where} is encrypted and no passphrase is configured")
        with tempfile.TemporaryDirectory(prefix="davit-check-") as spool:
            fh = fetch_tree(backend, info.id, Path(spool), info.where)  # (its file is unlinked at once)
            check_stored(fh, info.tree_sha256, info.where)
            with compressed_stream(fh, info.where, info.id, key, section is not None, required) as stream:
                data = stream.read(MAX_TREE_BYTES + 1)
    finally:
        backend.close()
    if len(data) > MAX_TREE_BYTES:
        raise TreeTooLarge(f"the tree of {info.where} is larger than {MAX_TREE_BYTES >> 20} MiB")
    return data
