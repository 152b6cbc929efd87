"""The S3 backend against what goes wrong: a wrong secret, a missing bucket, a server that does
not answer, a server paused mid-upload, a hostile listing, and a credential that may write but
not delete. The pauses and the extra identity need a SeaweedFS of the test's own (the shared
peer is never stopped or reconfigured)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from davit.adapters.repository.backend import BackendDenied, BackendUnavailable
from davit.adapters.repository.backends.s3 import S3Backend
from tests.contract.test_s3_backend import empty_prefix
from tests.peers import seaweedfs
from tests.peers.state import S3Peer

BACKUP_ONLY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{seaweedfs.BUCKET}", f"arn:aws:s3:::{seaweedfs.BUCKET}/*"],
        }
    ],
}


def everything_said(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc), caplog.text])


def test_a_wrong_secret_is_refused_naming_the_bucket_and_never_printing_the_secret(
    seaweedfs_peer: S3Peer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_secret = seaweedfs_peer.secret_access_key[::-1] + "Wrong"
    backend = S3Backend(
        seaweedfs_peer.bucket,
        f"denied/{uuid.uuid4().hex[:8]}",
        endpoint=seaweedfs_peer.endpoint,
        path_style=True,
        access_key_id=seaweedfs_peer.access_key_id,
        secret_access_key=wrong_secret,
        retry_budget=5,
    )
    for attempt in (
        lambda: backend.put("config.json", b"{}"),
        lambda: backend.get("config.json"),
        lambda: list(backend.list("index/")),
        lambda: backend.stat("config.json"),
        lambda: backend.put_if_absent("locks/a.json", b"x"),
    ):
        with pytest.raises(BackendDenied) as raised:
            attempt()
        said = everything_said(raised.value, caplog)
        assert wrong_secret not in said and seaweedfs_peer.secret_access_key not in said
        assert f"s3://{seaweedfs_peer.bucket}/" in str(raised.value) and seaweedfs_peer.endpoint in str(raised.value)
    assert "SignatureDoesNotMatch" in str(raised.value)
    assert wrong_secret not in repr(backend)
    unknown_key = S3Backend(
        seaweedfs_peer.bucket,
        "denied",
        endpoint=seaweedfs_peer.endpoint,
        path_style=True,
        access_key_id="DAVITNOSUCHKEY",
        secret_access_key=wrong_secret,
    )
    with pytest.raises(BackendDenied, match="InvalidAccessKeyId") as raised:
        unknown_key.get("config.json")
    assert wrong_secret not in everything_said(raised.value, caplog)


def test_a_missing_bucket_is_a_permanent_refusal(seaweedfs_peer: S3Peer) -> None:
    missing = S3Backend(
        f"davit-missing-{uuid.uuid4().hex[:8]}",
        "p",
        endpoint=seaweedfs_peer.endpoint,
        path_style=True,
        access_key_id=seaweedfs_peer.access_key_id,
        secret_access_key=seaweedfs_peer.secret_access_key,
    )
    with pytest.raises(BackendDenied, match="does not exist"):
        list(missing.list("index/"))
    with pytest.raises(BackendDenied, match="does not exist"):
        missing.get("config.json")


def test_an_endpoint_that_does_not_answer_is_unavailable_once_the_budget_is_spent(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = S3Backend(
        "b",
        "p",
        endpoint=f"http://127.0.0.1:{port}",
        path_style=True,
        access_key_id="AK",
        secret_access_key="SECRET-xyz",
        retry_budget=2,
    )
    for attempt in (
        lambda: backend.get("config.json"),
        lambda: backend.put_if_absent("locks/a", b"x"),
        lambda: list(backend.list("")),
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as raised:
            attempt()
        assert time.monotonic() - started < 15
        assert raised.value.retryable and f"127.0.0.1:{port}" in str(raised.value)
        assert "SECRET-xyz" not in everything_said(raised.value, caplog)


@pytest.fixture(scope="module")
def private_s3(tmp_path_factory: pytest.TempPathFactory, seaweedfs_peer: S3Peer) -> Iterator[seaweedfs.PrivateS3]:
    """A SeaweedFS of this module's own: an admin, and a backup identity that may read, write
    and list but not delete (an IAM policy attached in s3.json)."""
    top = tmp_path_factory.mktemp("private-seaweedfs")
    with seaweedfs.private_instance(
        top, {"admin": ["Admin", "Read", "Write", "List"], "backup": []}, policies={"backup": BACKUP_ONLY_POLICY}
    ) as server:
        yield server


def private_backend(server: seaweedfs.PrivateS3, identity: str, prefix: str, **kwargs: object) -> S3Backend:
    access, secret = server.keys[identity]
    return S3Backend(
        seaweedfs.BUCKET,
        prefix,
        endpoint=server.endpoint,
        path_style=True,
        access_key_id=access,
        secret_access_key=secret,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_server_paused_mid_upload_finishes_the_upload_within_the_budget(
    private_s3: seaweedfs.PrivateS3, tmp_path: Path
) -> None:
    backend = private_backend(private_s3, "admin", f"paused/{uuid.uuid4().hex[:8]}", retry_budget=60)
    tree = tmp_path / "tree"
    tree.write_bytes(os.urandom(40 << 20))  # five 8 MiB parts
    results: dict[str, object] = {}

    def upload() -> None:
        try:
            backend.put("snapshots/s1/tree.jsonl.zst", tree)
            results["created"] = backend.put_if_absent("snapshots/s1/manifest.json", b"{}")
        except BaseException as exc:
            results["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=upload)
    worker.start()
    time.sleep(0.3)
    os.killpg(private_s3.process.pid, signal.SIGSTOP)
    time.sleep(5)
    os.killpg(private_s3.process.pid, signal.SIGCONT)
    worker.join(120)
    assert results == {"created": True}
    assert time.monotonic() - started < 60
    back = tmp_path / "back"
    backend.get_to("snapshots/s1/tree.jsonl.zst", back)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(tree.read_bytes()).digest()


def test_a_backup_only_identity_writes_and_reads_but_cannot_delete(private_s3: seaweedfs.PrivateS3, tmp_path: Path) -> None:
    prefix = f"write-only/{uuid.uuid4().hex[:8]}"
    backup = private_backend(private_s3, "backup", prefix)
    assert backup.caps.conditional_create is True  # its probe object stays: it may not delete it
    big = tmp_path / "tree"
    big.write_bytes(os.urandom(20 << 20))
    assert backup.put_if_absent("packs/ab/ab01.pack", b"p" * 1000) is True
    assert backup.put_if_absent("packs/ab/ab01.pack", b"q") is False
    backup.put("snapshots/s1/tree.jsonl.zst", big)  # multipart
    assert backup.get_range("packs/ab/ab01.pack", 10, 5) == b"ppppp"
    assert {o.key for o in backup.list("")} >= {"packs/ab/ab01.pack", "snapshots/s1/tree.jsonl.zst"}
    with pytest.raises(BackendDenied, match=r"delete packs/ab/ab01\.pack"):
        backup.delete("packs/ab/ab01.pack")
    assert backup.caps.can_delete is False
    assert backup.stat("packs/ab/ab01.pack") is not None
    admin = private_backend(private_s3, "admin", prefix)
    admin.delete("packs/ab/ab01.pack")  # the maintenance credential may
    assert backup.stat("packs/ab/ab01.pack") is None
    empty_prefix(admin)


class HostileListing(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint whose ListObjectsV2 answer is chosen by the test."""

    keys: list[str] = []

    def do_GET(self) -> None:
        contents = "".join(
            f'<Contents><Key>{k}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"e"</ETag>'
            f"<Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for k in self.keys
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>'
            f"{len(self.keys)}</KeyCount><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_server() -> Iterator[tuple[str, type[HostileListing]]]:
    handler = type("Handler", (HostileListing,), {"keys": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_listed_names_outside_the_prefix_or_unsafe_are_skipped_with_a_warning(
    hostile_server: tuple[str, type[HostileListing]], caplog: pytest.LogCaptureFixture
) -> None:
    """SeaweedFS will not store such names (see below), so a hand-made server lists them."""
    endpoint, handler = hostile_server
    handler.keys = ["repo/index/good.idx", "repo/index/a\\..\\b.idx", "repo-other/index/x.idx", "repo/index", "elsewhere"]
    backend = S3Backend("b", "repo", endpoint=endpoint, path_style=True, access_key_id="AK", secret_access_key="SK")
    assert [o.key for o in backend.list("index/")] == ["index/good.idx"]
    assert "a\\\\..\\\\b.idx" in caplog.text and "repo-other/index/x.idx" in caplog.text


def test_a_listing_with_a_dot_dot_name_is_refused_whole_naming_the_object(
    hostile_server: tuple[str, type[HostileListing]], caplog: pytest.LogCaptureFixture, seaweedfs_peer: S3Peer
) -> None:
    """obstore cannot step over a name it cannot parse, and a listing with a hole could let prune
    delete packs an unseen index names: refused, not skipped."""
    endpoint, handler = hostile_server
    handler.keys = ["repo/index/good.idx", "repo/index/../../etc/passwd"]
    backend = S3Backend("b", "repo", endpoint=endpoint, path_style=True, access_key_id="AK", secret_access_key="SK")
    with pytest.raises(BackendDenied, match=r"repo/index/\.\./\.\./etc/passwd.*remove it"):
        list(backend.list("index/"))
    # the real server refuses to store such a name at all
    access, secret = seaweedfs_peer.access_key_id, seaweedfs_peer.secret_access_key
    port = int(seaweedfs_peer.endpoint.rsplit(":", 1)[1])
    assert seaweedfs._signed_request(port, "PUT", f"/{seaweedfs_peer.bucket}/hostile/index/%2E%2E/x", access, secret) == 400
