"""The tar streams `compose.restore` makes from a snapshot's entries (`snapshotstream.py`), the
check of an image export before it is loaded (`snapshotimages.py`), and the names a restored
project's built images get (`restore.renamed_ref`)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

import pytest

from davit.adapters.compose.restore import renamed_ref
from davit.adapters.compose.snapshotimages import check_image_export
from davit.adapters.compose.snapshotstream import StreamProcess, part_entries, tar_stream
from davit.adapters.docker.imageexport import filtered
from davit.adapters.repository.treeformat import DIR, FILE, LINK, Entry
from davit.domain.errors import CorruptSnapshot


class ChunkRepo:
    def __init__(self) -> None:
        self.chunks: dict[bytes, bytes] = {}

    def put(self, data: bytes) -> str:
        cid = hashlib.sha256(data).digest()
        self.chunks[cid] = data
        return cid.hex()

    def read_chunk(self, chunk_id: bytes) -> bytes:
        return self.chunks[chunk_id]


def entries(repo: ChunkRepo) -> list[Entry]:
    a = b"keel " * 300
    return [
        Entry(path=".", type=DIR, mode=0o755, mtime_ns=0),
        Entry(path="binds", type=DIR, mode=0o755, mtime_ns=0),
        Entry(path="binds/0", type=DIR, mode=0o750, mtime_ns=2_000_000_000, uid=33, gid=33),
        Entry(
            path="binds/0/a.txt",
            type=FILE,
            mode=0o640,
            mtime_ns=1_500_000_000_000_000_000,
            size=len(a),
            chunks=[repo.put(a)],
            uid=1000,
            nlink=2,
        ),
        Entry(
            path="binds/0/b.txt",
            type=FILE,
            mode=0o640,
            mtime_ns=0,
            size=len(a),
            chunks=[repo.put(a)],
            hardlink_to="binds/0/a.txt",
        ),
        Entry(path="binds/0/escape", type=LINK, mode=0o777, mtime_ns=0, target="/etc"),
        Entry(path="binds/0/outer", type=FILE, mode=0o644, mtime_ns=0, size=2, chunks=[repo.put(b"hi")], hardlink_to="binds/1/x"),
        Entry(path="binds/1", type=FILE, mode=0o600, mtime_ns=0, size=3, chunks=[repo.put(b"one")]),
    ]


def members(data: bytes) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            handle = tar.extractfile(m) if m.isfile() else None
            out[m.name] = (m.type, m.mode, m.uid, m.linkname, handle.read() if handle else None)
    return out


def test_a_directory_part_becomes_a_tar_of_its_entries_as_tar_c_names_them() -> None:
    repo = ChunkRepo()
    stream = b"".join(tar_stream(repo, "snap", part_entries(entries(repo), "binds/0")))  # type: ignore[arg-type]
    found = members(stream)
    assert list(found) == [".", "./a.txt", "./b.txt", "./escape", "./outer"]
    assert found["."][:3] == (tarfile.DIRTYPE, 0o750, 33)
    assert found["./a.txt"] == (tarfile.REGTYPE, 0o640, 1000, "", b"keel " * 300)
    assert found["./b.txt"][0] == tarfile.LNKTYPE and found["./b.txt"][3] == "./a.txt"
    assert found["./escape"][0] == tarfile.SYMTYPE and found["./escape"][3] == "/etc", "a link goes as the link it is"
    assert found["./outer"] == (tarfile.REGTYPE, 0o644, 0, "", b"hi"), "a link out of the part goes as its content"
    again = b"".join(tar_stream(repo, "snap", part_entries(entries(repo), "binds/0")))  # type: ignore[arg-type]
    assert again == stream, "the same snapshot makes the same stream: a resume cuts the same chunks"


def test_a_file_part_is_one_member_named_as_its_source_file() -> None:
    repo = ChunkRepo()
    stream = b"".join(tar_stream(repo, "snap", part_entries(entries(repo), "binds/1"), single="app.conf"))  # type: ignore[arg-type]
    assert members(stream) == {"app.conf": (tarfile.REGTYPE, 0o600, 0, "", b"one")}


def test_a_file_whose_chunks_do_not_add_up_to_its_size_fails_the_stream_naming_it() -> None:
    repo = ChunkRepo()
    lying = [
        Entry(path="volumes/v", type=DIR, mode=0o755, mtime_ns=0),
        Entry(path="volumes/v/f", type=FILE, mode=0o644, mtime_ns=0, size=10, chunks=[repo.put(b"short")]),
    ]
    with pytest.raises(CorruptSnapshot, match=r"f.*5 bytes, its entry says 10"):
        b"".join(tar_stream(repo, "snap", part_entries(lying, "volumes/v")))  # type: ignore[arg-type]


def test_the_stream_process_reads_like_a_pipe_and_stops_when_killed() -> None:
    proc = StreamProcess(iter([b"a" * 10, b"b" * 10, b"c" * 10]))
    assert proc.stdout.read(15) == b"a" * 10 + b"b" * 5 and proc.poll() is None
    proc.kill()
    assert proc.poll() == 0 and proc.wait() == 0


def image_export(config: bytes, manifest: Any, repositories: Any = None) -> bytes:
    buf = io.BytesIO()
    name = hashlib.sha256(config).hexdigest() + ".json"
    files = {name: config, "manifest.json": json.dumps(manifest(name)).encode()}
    if repositories is not None:
        files["repositories"] = json.dumps(repositories).encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for n, data in sorted(files.items()):
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CONFIG = b'{"rootfs":{"type":"layers","diff_ids":[]}}'
IMAGE_ID = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


def test_an_untagged_export_of_the_named_image_passes() -> None:
    data = image_export(CONFIG, lambda c: [{"Config": c, "RepoTags": None, "Layers": []}])
    check_image_export("snap", "images/x.tar", IMAGE_ID, iter([data[:700], data[700:]]))


@pytest.mark.parametrize(
    ("manifest", "repositories", "match"),
    [
        (lambda c: [{"Config": c, "RepoTags": ["busybox:latest"], "Layers": []}], None, "would tag names.*busybox:latest"),
        (lambda c: [{"Config": c, "RepoTags": None, "Layers": []}], {"busybox": {"latest": "x"}}, "would tag names"),
        (lambda c: [{"Config": "other.json", "RepoTags": None}], None, "its name says"),
        (lambda c: [{"Config": c}, {"Config": c}], None, "exactly one image"),
    ],
    ids=["repo-tags", "repositories", "another-config", "two-images"],
)
def test_an_export_that_would_tag_or_is_another_image_is_refused(manifest: Any, repositories: Any, match: str) -> None:
    data = image_export(CONFIG, manifest, repositories)
    with pytest.raises(CorruptSnapshot, match=match):
        check_image_export("snap", "images/x.tar", IMAGE_ID, iter([data]))


def test_an_export_of_another_image_is_refused_naming_both_ids() -> None:
    data = image_export(b'{"other": 1}', lambda c: [{"Config": c, "RepoTags": None}])
    with pytest.raises(CorruptSnapshot, match=f"holds image sha256:.*its name says {IMAGE_ID}"):
        check_image_export("snap", "images/x.tar", IMAGE_ID, iter([data]))


def test_not_a_tar_is_refused() -> None:
    with pytest.raises(CorruptSnapshot, match="not an image export"):
        check_image_export("snap", "images/x.tar", IMAGE_ID, iter([b"\x01" * 1024]))


def test_a_built_services_image_follows_the_project_name_and_other_names_stay() -> None:
    services = ["app", "side"]
    assert renamed_ref("shop-app", "shop", "shop2", services) == "shop2-app"
    assert renamed_ref("shop_app:latest", "shop", "shop2", services) == "shop2_app:latest"
    assert renamed_ref("busybox:1", "shop", "shop2", services) == "busybox:1"
    assert renamed_ref("shop-other", "shop", "shop2", services) == "shop-other"


def test_the_check_gives_the_images_layers_and_refuses_diff_ids_that_are_no_digests() -> None:
    layer = "sha256:" + "ab" * 32
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    data = image_export(config, lambda c: [{"Config": c, "RepoTags": None, "Layers": []}])
    assert check_image_export("snap", "images/x.tar", image_id, iter([data])) == [layer]
    crafted = json.dumps({"rootfs": {"diff_ids": ["../../etc"]}}).encode()
    data = image_export(crafted, lambda c: [{"Config": c, "RepoTags": None, "Layers": []}])
    with pytest.raises(CorruptSnapshot, match=r"images/x\.tar.*not sha256 digests"):
        check_image_export("snap", "images/x.tar", "sha256:" + hashlib.sha256(crafted).hexdigest(), iter([data]))


def export_with_layers(layers: list[bytes]) -> tuple[bytes, str]:
    """A legacy-layout export of one unnamed image with these layers; (the tar, the image ID)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{n:064x}/layer.tar" for n in range(len(layers))]
    files = {config_name: config, "manifest.json": json.dumps([{"Config": config_name, "RepoTags": None, "Layers": names}])}
    files.update(zip(names, layers, strict=True))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for n, data in sorted(files.items()):
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode() if isinstance(data, str) else data))
    return buf.getvalue(), "sha256:" + config_name.removesuffix(".json")


def test_a_snapshot_export_streams_without_the_layers_to_leave_out_and_its_errors_reach_the_reader() -> None:
    base, top = b"b" * 300_000, b"t" * 5_000
    data, image_id = export_with_layers([base, top])
    skip = {hashlib.sha256(base).hexdigest()}
    out = b"".join(filtered(iter([data[i : i + 4096] for i in range(0, len(data), 4096)]), skip, image_id))
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        kept = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert base not in kept.values() and top in kept.values() and "manifest.json" in kept
    with pytest.raises(tarfile.TarError, match="not sha256:0"):
        b"".join(filtered(iter([data]), skip, "sha256:" + "0" * 64))


def test_an_export_stuffed_with_json_members_is_refused_before_they_fill_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from davit.adapters.compose import snapshotimages

    monkeypatch.setattr(snapshotimages, "OBJECTS", 1000)  # the bound, small enough to reach here
    data = image_export(b'{"pad": "' + b"x" * 1200 + b'"}', lambda c: [{"Config": c, "RepoTags": None}])
    with pytest.raises(CorruptSnapshot, match="over 1000 bytes of JSON members"):
        check_image_export("snap", "images/x.tar", IMAGE_ID, iter([data]))
