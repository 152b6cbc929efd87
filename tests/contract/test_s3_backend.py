"""The backend contract on S3: SeaweedFS's S3 gateway (the `seaweedfs` peer), each test in a
fresh prefix of the peer's bucket, plus what only S3 has to show: the probe of conditional
creates, and a create whose answer was lost being recognised as ours."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from davit.adapters.repository.backends.s3 import S3Backend
from tests.contract.backend_contract import BackendContract
from tests.peers.state import S3Peer


def peer_backend(peer: S3Peer, prefix: str, **kwargs: object) -> S3Backend:
    return S3Backend(
        peer.bucket,
        prefix,
        endpoint=peer.endpoint,
        region=peer.region,
        path_style=True,
        access_key_id=peer.access_key_id,
        secret_access_key=peer.secret_access_key,
        **kwargs,  # type: ignore[arg-type]
    )


def empty_prefix(backend: S3Backend) -> None:
    for info in list(backend.list("")):
        backend.delete(info.key)


@pytest.fixture
def s3_backend(seaweedfs_peer: S3Peer) -> Iterator[S3Backend]:
    b = peer_backend(seaweedfs_peer, f"contract/{uuid.uuid4().hex[:12]}")
    yield b
    empty_prefix(b)
    b.close()


class TestS3Backend(BackendContract):
    @pytest.fixture
    def backend(self, s3_backend: S3Backend) -> S3Backend:
        return s3_backend


def test_seaweedfs_honours_conditional_create_and_the_probe_says_so(s3_backend: S3Backend) -> None:
    assert s3_backend.caps.conditional_create is True
    assert [o.key for o in s3_backend.list("tmp/")] == []  # the probe cleaned up after itself


def test_a_create_whose_answer_was_lost_is_recognised_as_ours(s3_backend: S3Backend) -> None:
    """The retry of a create that landed finds the key taken: the same bytes are ours, others not."""
    data = b"lock owner 1"
    assert s3_backend.put_if_absent("locks/l1.json", data) is True
    path = s3_backend._path("locks/l1.json")
    assert s3_backend._is_ours("locks/l1.json", path, data) is True
    assert s3_backend._is_ours("locks/l1.json", path, b"lock owner 2") is False


def test_listing_is_consistent_right_after_each_put(s3_backend: S3Backend) -> None:
    for n in range(20):
        s3_backend.put_if_absent(f"index/{n:064x}.idx", b"i")
        assert f"index/{n:064x}.idx" in {o.key for o in s3_backend.list("index/")}


def test_listed_mtimes_are_the_servers_and_a_prefix_lists_only_its_own(s3_backend: S3Backend, seaweedfs_peer: S3Peer) -> None:
    neighbour = peer_backend(seaweedfs_peer, s3_backend.prefix + "-neighbour")
    try:
        neighbour.put("index/other.idx", b"x")
        s3_backend.put("index/mine.idx", b"y")
        listed = list(s3_backend.list(""))
        assert [o.key for o in listed] == ["index/mine.idx"]
        stat = s3_backend.stat("index/mine.idx")
        assert stat is not None and stat.mtime == listed[0].mtime and stat.size == 1
    finally:
        empty_prefix(neighbour)


def test_a_range_starting_past_the_end_is_empty(s3_backend: S3Backend) -> None:
    s3_backend.put("packs/aa/p.pack", b"0123456789")
    assert s3_backend.get_range("packs/aa/p.pack", 10, 5) == b""
    assert s3_backend.get_ranges("packs/aa/p.pack", [(8, 5), (12, 1), (0, 0)]) == [b"89", b"", b""]


def test_from_url_splits_bucket_and_prefix(seaweedfs_peer: S3Peer) -> None:
    b = S3Backend.from_url(
        f"s3://{seaweedfs_peer.bucket}/team/host-1/",
        endpoint=seaweedfs_peer.endpoint,
        access_key_id="k",
        secret_access_key="s",
    )
    assert (b.bucket, b.prefix) == (seaweedfs_peer.bucket, "team/host-1")
    assert b.where == f"s3://{seaweedfs_peer.bucket}/team/host-1 at {seaweedfs_peer.endpoint}"
    for bad in ("s3://", "http://b/p", "s3://user:pw@b/p", "s3://b/../p", "s3://b/p?x=1"):
        with pytest.raises(ValueError) as raised:
            S3Backend.from_url(bad, access_key_id="k", secret_access_key="s")
        assert "pw" not in str(raised.value)


def test_aws_variables_of_the_environment_do_not_unsign_requests_and_the_rest_are_named(
    seaweedfs_peer: S3Peer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """obstore reads AWS_* variables in every constructor: a davitd started from a shell that
    has them must still sign its requests, and hear of those it cannot pin (never their values)."""
    monkeypatch.setenv("AWS_SKIP_SIGNATURE", "true")
    monkeypatch.setenv("AWS_REQUEST_PAYER", "true")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-value-zzz")
    b = peer_backend(seaweedfs_peer, f"contract/{uuid.uuid4().hex[:12]}")
    b.put("config.json", b"{}")
    assert b.get("config.json") == b"{}"
    b.delete("config.json")
    assert "AWS_SESSION_TOKEN" in caplog.text and "AWS_SKIP_SIGNATURE" not in caplog.text
    assert "token-value-zzz" not in caplog.text


def test_without_conditional_create_a_head_before_the_put_keeps_the_first_content(s3_backend: S3Backend) -> None:
    """The fallback for a server that ignores If-None-Match (safe only for random names)."""
    s3_backend._caps = replace(s3_backend.caps, conditional_create=False)
    assert s3_backend.put_if_absent("packs/ab/ab02.pack", b"first") is True
    assert s3_backend.put_if_absent("packs/ab/ab02.pack", b"second") is False
    assert s3_backend.get("packs/ab/ab02.pack") == b"first"
