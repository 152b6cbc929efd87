"""Collection names too long for a file name, as mongodump writes them: the escaped name cut to
208 bytes, then `%24` and the unpadded URL-safe base64 SHA-1 of the real name (mongo-tools'
`mongodump/prepare.go`, `outputPath`). The expected file names below were computed with Go's
`url.PathEscape`, `crypto/sha1` and `base64.RawURLEncoding`, as mongodump does, not with davit.
Read back, the real name comes from `collectionName` in the metadata, as mongorestore reads it.

FerretDB 1.24 accepts collection names of up to 235 characters (any database name), so only a
name that escaping lengthens (spaces, `/`, non-ASCII letters) is cut on this peer.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bson import json_util

from davit.adapters.mongo.dumpdir import dump_file_stem, list_dump
from davit.adapters.repository.repository import Repository
from davit.domain.errors import SourceMissing
from tests.integration.mongo.conftest import Mongo
from tests.integration.mongo.helpers import backup_spec, raw_by_id, restore_spec, run_backup, run_restore

BIN = Path(sys.executable).parent
CANONICAL = json_util.CANONICAL_JSON_OPTIONS
WORDS = "Küstenwetter / Hafen "  # 21 characters, 34 once escaped
LONG = WORDS * 10  # 210 characters, 350 once escaped
TWIN = WORDS * 9 + "Küstenwetter / Hafen!"  # the same first 208 escaped bytes: only the hash tells them apart
KEPT = "K%C3%BCstenwetter%20%2F%20Hafen%20" * 6 + "K%C3"  # the first 208 bytes, cut inside an escape as Go does
FILE_STEMS = {LONG: KEPT + "%24dEvNQwBTcfiHo4L0TYuTw8dSoaU", TWIN: KEPT + "%24MJ9L5WwtchjovoHcop1bqYEsUlQ"}


def davit(home: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "davit"), "--home", str(home), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def back_up_and_export(mongo: Mongo, tmp_path: Path, db: str, *export_flags: str) -> tuple[Path, Path]:
    """Both long collections backed up and exported as a mongodump directory: (davit home, dump)."""
    for i, name in enumerate(FILE_STEMS):
        mongo.client[db][name].insert_many([{"_id": n, "which": i, "n": n} for n in range(40)])
    home = tmp_path / "home"
    home.mkdir()
    repo = Repository.open(home / "repository")
    run_backup(repo, backup_spec("long", databases=[db]), "snap1")
    repo.close()
    out = tmp_path / "dump"
    davit(home, "export", "mongodump", "snap1", str(out), *export_flags)
    return home, out


def test_mongodump_file_stems_are_cut_past_238_bytes_with_the_names_hash() -> None:
    assert dump_file_stem("x" * 238) == "x" * 238  # at the limit: kept whole
    assert dump_file_stem("x" * 239) == "x" * 208 + "%24Nq75d-cu3iRxNs-ce3Tvf9gagoU"
    for name, stem in FILE_STEMS.items():
        assert dump_file_stem(name) == stem


@pytest.mark.mongo
def test_long_names_are_exported_cut_as_mongodump_does_and_restored_under_their_full_names(mongo: Mongo, tmp_path: Path) -> None:
    db = mongo.db("long")
    _home, out = back_up_and_export(mongo, tmp_path, db, "--gzip")
    before = {name: raw_by_id(mongo.client, f"{db}.{name}") for name in FILE_STEMS}

    names = sorted(p.name for p in (out / db).iterdir())
    assert names == sorted(f"{stem}{suffix}" for stem in FILE_STEMS.values() for suffix in (".bson.gz", ".metadata.json.gz"))
    assert max(len(n.encode()) for n in names) == 255
    for name, stem in FILE_STEMS.items():
        meta = json_util.loads(gzip.decompress((out / db / f"{stem}.metadata.json.gz").read_bytes()), json_options=CANONICAL)
        assert meta["collectionName"] == name
        assert gzip.decompress((out / db / f"{stem}.bson.gz").read_bytes()) == b"".join(before[name].values())

    mongo.client.drop_database(db)
    repo = Repository.open(tmp_path / "restore-repo")
    _ctx, details, summary = run_restore(repo, restore_spec("back", {"from_mongodump": str(out)}), "r1")
    assert sorted(dst for _src, dst in details["namespaces"]) == sorted(f"{db}.{name}" for name in FILE_STEMS)
    assert summary["documents"] == 80
    assert sorted(mongo.client[db].list_collection_names()) == sorted(FILE_STEMS)
    for name in FILE_STEMS:
        assert raw_by_id(mongo.client, f"{db}.{name}") == before[name]


@pytest.mark.mongo
def test_import_of_a_dump_with_cut_names_keeps_the_full_names_in_the_snapshot(mongo: Mongo, tmp_path: Path) -> None:
    db = mongo.db("long")
    home, out = back_up_and_export(mongo, tmp_path, db)
    before = {name: raw_by_id(mongo.client, f"{db}.{name}") for name in FILE_STEMS}
    imported = json.loads(davit(home, "import", "mongodump", str(out), "--job", "legacy", "--json"))
    assert imported["stats"]["documents"] == 80

    mongo.client.drop_database(db)
    repo = Repository.open(home / "repository")
    run_restore(repo, restore_spec("back", {"job": "legacy"}), "r1")
    assert sorted(mongo.client[db].list_collection_names()) == sorted(FILE_STEMS)
    for name in FILE_STEMS:
        assert raw_by_id(mongo.client, f"{db}.{name}") == before[name]


def test_a_cut_file_name_without_its_metadata_fails_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "dump" / "app"
    folder.mkdir(parents=True)
    (folder / f"{FILE_STEMS[LONG]}.bson").write_bytes(b"")
    with pytest.raises(SourceMissing, match=r"K%C3%24dEvNQwBTcfiHo4L0TYuTw8dSoaU cannot be read: mongodump cut"):
        list_dump(tmp_path / "dump")
