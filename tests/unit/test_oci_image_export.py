"""An image export in the OCI layout Docker 25+ writes (`oci-layout`, `index.json`,
`blobs/sha256/<digest>`, and `manifest.json` besides), crafted here: the migration's export
filter (`imageexport.filter_export`) and a restore's snapshot check
(`snapshotimages.check_image_export`) take the engine's own and refuse one that would name an
image where it is loaded (the index's name annotations), list several, lack `manifest.json`,
or hold hostile entries."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

import pytest

from davit.adapters.compose.snapshotimages import check_image_export
from davit.adapters.docker.imageexport import UnexpectedExport, filter_export
from davit.domain.errors import CorruptSnapshot

LAYER = b"a layer's tar, uncompressed as docker save writes it" * 100
DIFF_ID = hashlib.sha256(LAYER).hexdigest()
CONFIG = json.dumps(
    {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [f"sha256:{DIFF_ID}"]}}
).encode()
IMAGE = hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": f"sha256:{IMAGE}", "size": len(CONFIG)},
        "layers": [{"digest": f"sha256:{DIFF_ID}", "size": len(LAYER)}],
    }
).encode()
MANIFEST_DIGEST = hashlib.sha256(MANIFEST).hexdigest()


def index(**annotations: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{MANIFEST_DIGEST}"}
    if annotations:
        entry["annotations"] = annotations
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}


def docker_manifest() -> list[dict[str, Any]]:
    return [{"Config": f"blobs/sha256/{IMAGE}", "RepoTags": None, "Layers": [f"blobs/sha256/{DIFF_ID}"]}]


def oci_export(
    the_index: Any = None, manifest: Any = "default", extra: list[tarfile.TarInfo] | None = None, drop_manifest: bool = False
) -> bytes:
    """An export as Docker 25+ writes it for `docker save IMAGE_ID`, with the changes asked for."""
    members: list[tuple[str, bytes]] = [
        (f"blobs/sha256/{DIFF_ID}", LAYER),
        (f"blobs/sha256/{IMAGE}", CONFIG),
        (f"blobs/sha256/{MANIFEST_DIGEST}", MANIFEST),
        ("index.json", json.dumps(index() if the_index is None else the_index).encode()),
        ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
    ]
    if not drop_manifest:
        members.append(("manifest.json", json.dumps(docker_manifest() if manifest == "default" else manifest).encode()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            d = tarfile.TarInfo(name)
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(d)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def test_the_engines_own_oci_export_passes_whole_and_a_held_layer_is_left_out() -> None:
    data = oci_export()
    whole = io.BytesIO()
    assert filter_export(io.BytesIO(data), whole, set(), f"sha256:{IMAGE}") == []
    assert names(whole.getvalue()) == names(data)
    less = io.BytesIO()
    assert filter_export(io.BytesIO(data), less, {DIFF_ID}, f"sha256:{IMAGE}") == [f"blobs/sha256/{DIFF_ID}"]
    assert f"blobs/sha256/{DIFF_ID}" not in names(less.getvalue()) and "index.json" in names(less.getvalue())
    assert check_image_export("snap", "images/x.tar", f"sha256:{IMAGE}", iter([data[:1000], data[1000:]])) == [
        f"sha256:{DIFF_ID}"
    ]


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info


@pytest.mark.parametrize(
    ("export", "reason"),
    [
        (oci_export(index(**{"io.containerd.image.name": "docker.io/library/postgres:16"})), "names the image"),
        (oci_export(index(**{"org.opencontainers.image.ref.name": "latest"})), "names the image"),
        (oci_export({**index(), "annotations": {"io.containerd.image.name": "docker.io/library/redis:7"}}), "names the image"),
        (oci_export({**index(), "manifests": index()["manifests"] * 2}), "exactly one image"),
        (oci_export({"manifests": "all"}), "not an OCI index"),
        (oci_export(drop_manifest=True), "no manifest.json"),
    ],
    ids=["containerd-name", "ref-name", "index-level-name", "two-images", "not-an-index", "oci-only"],
)
def test_an_oci_export_that_would_name_or_add_images_or_skip_the_check_is_refused(export: bytes, reason: str) -> None:
    with pytest.raises(UnexpectedExport, match=reason):
        filter_export(io.BytesIO(export), io.BytesIO(), set(), f"sha256:{IMAGE}")
    if reason != "no manifest.json":  # (a snapshot's check needs manifest.json already)
        with pytest.raises(CorruptSnapshot, match=r"images/x\.tar"):
            check_image_export("snap", "images/x.tar", f"sha256:{IMAGE}", iter([export]))


@pytest.mark.parametrize(
    "member",
    [
        _file("../escape"),
        _file("/etc/cron.d/x"),
        _file("blobs/sha256/../../../escape"),
        _link("index.json", "/etc/passwd"),
        _link("manifest.json", "blobs/sha256/x", tarfile.LNKTYPE),
        _file("index.json"),  # a second index: `docker load` would read one of the two
    ],
    ids=["dotdot", "absolute", "blob-dotdot", "index-symlink", "manifest-hardlink", "second-index"],
)
def test_hostile_entries_in_an_oci_export_are_refused(member: tarfile.TarInfo) -> None:
    with pytest.raises(UnexpectedExport):
        filter_export(io.BytesIO(oci_export(extra=[member])), io.BytesIO(), set(), f"sha256:{IMAGE}")
