"""Every library error is mapped at its boundary, in the style of httpx's error-mapping tests.

Each row raises an exception the adapters may see from pymongo, the Docker SDK (requests),
weaviate-client (httpx, gRPC), asyncssh or the OS inside the boundary mapper that guards
such calls, and checks the davit error that leaves it: its class, whether it is retryable,
and that the secret the message was built around (a URI's password, an API key) is gone.
The last tests drive the real libraries into the failures that escaped the mapping before
(pymongo's bare ValueError for a bad URI, an unreadable or malformed SSH key file)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import asyncssh
import bson.errors
import docker.errors
import grpc
import grpc.aio
import httpx
import pymongo.errors as pe
import pytest
import requests
import requests.exceptions
import weaviate.exceptions as we

from davit.adapters.docker.engine import EngineError, EngineUnreachable, engine_errors
from davit.adapters.docker.engine import connect as engine_connect
from davit.adapters.mongo.client import MongoAuthFailed, MongoBadUri, MongoRefused, MongoUnreachable, Server
from davit.adapters.secrets import SecretUnavailable, redact, resolve
from davit.adapters.ssh.remote import (
    RemoteLoginFailed,
    RemoteRefused,
    RemoteUnreachable,
    SshAddress,
    connect,
    connect_errors,
    session_errors,
)
from davit.adapters.sshtrust import HostKeyRejected
from davit.adapters.weaviate.client import WeaviateRejected, WeaviateUnavailable, weaviate_errors
from davit.domain.errors import DavitError, RunStopped, StorageFull

PW = "s3cret-Pw-9911"
MONGO_URI = f"mongodb://davit:{PW}@db.example:27017/?authSource=admin"
ENGINE = f"tcp://admin:{PW}@engine.example:2376"
API_KEY = "wv-api-key-77aa19"
SSH_URI = f"ssh://root:{PW}@host.example:22"

Mapper = Callable[[], AbstractContextManager[None]]


def check(mapper: Mapper, exc: BaseException, expected: type[DavitError], retryable: bool, secret: str = PW) -> DavitError:
    with pytest.raises(DavitError) as info, mapper():
        raise exc
    mapped = info.value
    assert isinstance(mapped, expected), f"{type(exc).__name__} -> {type(mapped).__name__}: {mapped}"
    assert mapped.retryable is retryable, f"{type(exc).__name__} -> retryable={mapped.retryable}"
    assert secret not in str(mapped) and secret not in repr(mapped.args), f"the secret survived: {mapped}"
    return mapped


def full(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def response(status: int) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    return r


def http(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://weaviate.example:8080/v1/schema"))


def rpc(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), f"{code.name} with key {API_KEY}")


# --- pymongo -------------------------------------------------------------------------------


@pytest.fixture
def mongo(monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("DAVIT_TEST_MONGO_URI", MONGO_URI)
    return Server("DAVIT_TEST_MONGO_URI", None, "source")


MONGO_ROWS = [
    (pe.OperationFailure(f"Authentication failed for {MONGO_URI}", code=18), MongoAuthFailed, False),
    (pe.OperationFailure(f"not authorized on admin via {MONGO_URI}", code=13), MongoRefused, False),
    (pe.DuplicateKeyError("E11000 duplicate key", 11000), MongoRefused, False),
    (pe.BulkWriteError({"writeErrors": [], "nInserted": 0}), MongoRefused, False),
    (pe.ExecutionTimeout("operation exceeded time limit", 50), MongoUnreachable, True),
    (pe.WTimeoutError("waiting for replication timed out", 64), MongoUnreachable, True),
    (pe.CursorNotFound("cursor id 42 not found", 43), MongoUnreachable, True),
    (pe.OperationFailure("not primary", code=10107), MongoUnreachable, True),
    (pe.OperationFailure("interrupted at shutdown", code=11600), MongoUnreachable, True),
    (pe.AutoReconnect(f"connection reset by {MONGO_URI}"), MongoUnreachable, True),
    (pe.NotPrimaryError("not primary"), MongoUnreachable, True),
    (pe.NetworkTimeout(f"{MONGO_URI}: timed out"), MongoUnreachable, True),
    (pe.ServerSelectionTimeoutError(f"{MONGO_URI}: [Errno 111] Connection refused"), MongoUnreachable, True),
    (pe.ConnectionFailure("connection closed"), MongoUnreachable, True),
    (pe.WaitQueueTimeoutError("pool exhausted"), MongoUnreachable, True),
    (pe.InvalidURI(f"bad {MONGO_URI}"), MongoBadUri, False),
    (pe.ConfigurationError(f"Cannot specify directConnection=true with loadBalanced=true: {MONGO_URI}"), MongoBadUri, False),
    (pe.InvalidOperation("cannot use MongoClient after close"), MongoRefused, False),
    (pe.DocumentTooLarge("BSON document too large (17000000 bytes)"), MongoRefused, False),
    (bson.errors.InvalidDocument(f"cannot encode object: {MONGO_URI}"), MongoRefused, False),
    (bson.errors.InvalidBSON("bad eoo"), MongoRefused, False),
    (full("/repo/staging/dump.bson"), StorageFull, False),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/repo/staging/dump.bson"), StorageFull, False),
    (PermissionError(errno.EACCES, "Permission denied", "/repo/staging"), MongoRefused, False),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), MongoUnreachable, True),
    (TimeoutError(f"timed out talking to {MONGO_URI}"), MongoUnreachable, True),
]


@pytest.mark.parametrize(("exc", "expected", "retryable"), MONGO_ROWS, ids=lambda v: type(v).__name__)
def test_pymongo_and_os_errors_map_to_davit_errors(
    mongo: Server, exc: BaseException, expected: type[DavitError], retryable: bool
) -> None:
    check(lambda: mongo.errors("reading db.coll"), exc, expected, retryable)


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://davit:{PW}@db.example:99999/",
        f"mongodb://davit:{PW}@[::1/",
        f"mongodb://davit:{PW}@db.example/?tlsCAFile=/nonexistent/ca.pem",
        f"mongodb://davit:{PW}@db.example:port/",
    ],
)
def test_a_uri_pymongo_refuses_with_a_bare_error_is_a_permanent_bad_uri(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("DAVIT_TEST_MONGO_URI", uri)
    server = Server("DAVIT_TEST_MONGO_URI", None, "source")
    with pytest.raises(DavitError) as info:
        server.ping()
    assert not info.value.retryable and "source" in str(info.value)
    assert PW not in str(info.value)


# --- Docker SDK ----------------------------------------------------------------------------

DOCKER_ROWS = [
    (docker.errors.NotFound(f"no such volume at {ENGINE}"), EngineError, False),
    (docker.errors.ImageNotFound("no such image"), EngineError, False),
    (docker.errors.APIError(f"500 Server Error from {ENGINE}", response(500), "driver failed"), EngineError, False),
    (docker.errors.APIError(f"409 Conflict from {ENGINE}", response(409), "in use"), EngineError, False),
    (docker.errors.APIError(f"503 from {ENGINE}", response(503), "try later"), EngineUnreachable, True),
    (requests.exceptions.ConnectionError(f"Connection aborted: {ENGINE}"), EngineUnreachable, True),
    (requests.exceptions.ReadTimeout(f"Read timed out: {ENGINE}"), EngineUnreachable, True),
    (requests.exceptions.ConnectTimeout(f"Connect timed out: {ENGINE}"), EngineUnreachable, True),
    (requests.exceptions.InvalidURL(f"Invalid URL {ENGINE}"), EngineError, False),
    (docker.errors.DockerException(f"Error while fetching server API version: {ENGINE}"), EngineUnreachable, True),
    (docker.errors.TLSParameterError(f"bad TLS settings for {ENGINE}"), EngineError, False),
    (docker.errors.InvalidArgument(f"bad argument for {ENGINE}"), EngineError, False),
    (docker.errors.ContainerError("c1", 1, "sh", "busybox", f"died talking to {ENGINE}"), EngineError, False),
    (full("/var/lib/davit/staging/v.tar"), StorageFull, False),
    (PermissionError(errno.EACCES, "Permission denied", "/var/run/docker.sock"), EngineError, False),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), EngineUnreachable, True),
    (TimeoutError("timed out"), EngineUnreachable, True),
]


@pytest.mark.parametrize(("exc", "expected", "retryable"), DOCKER_ROWS, ids=lambda v: type(v).__name__)
def test_docker_sdk_and_os_errors_map_to_davit_errors(exc: BaseException, expected: type[DavitError], retryable: bool) -> None:
    check(lambda: engine_errors(f"listing volumes on {ENGINE}"), exc, expected, retryable)


@pytest.mark.parametrize(
    "address",
    [f"tcp://admin:{PW}@[::1:2376", f"tcp://admin:{PW}@engine.example:2376", f"tcp://admin:{PW}@engine.example:notaport"],
)
def test_an_engine_address_the_sdk_cannot_use_is_a_permanent_engine_error(address: str) -> None:
    """The SDK let a bare ValueError out for an unclosed IPv6 bracket ("failed unexpectedly",
    with a traceback in davitd's log), and a DockerException("Invalid bind address format")
    that was taken for an unreachable engine and retried; its cause quoted the password."""
    with pytest.raises(DavitError) as info:
        engine_connect(address)
    mapped = info.value
    assert isinstance(mapped, EngineError) and not mapped.retryable, f"{type(mapped).__name__}: {mapped}"
    assert "engine.example" in str(mapped) or "::1" in str(mapped)
    assert PW not in str(mapped) and mapped.__cause__ is None and mapped.__suppress_context__


# --- weaviate-client -----------------------------------------------------------------------

WEAVIATE_ROWS = [
    (we.AuthenticationFailedError(f"key {API_KEY} refused"), WeaviateRejected, False),
    (we.UnexpectedStatusCodeError(f"with key {API_KEY}", http(401)), WeaviateRejected, False),
    (we.UnexpectedStatusCodeError(f"with key {API_KEY}", http(422)), WeaviateRejected, False),
    (we.UnexpectedStatusCodeError(f"with key {API_KEY}", http(429)), WeaviateUnavailable, True),
    (we.UnexpectedStatusCodeError(f"with key {API_KEY}", http(503)), WeaviateUnavailable, True),
    (we.InsufficientPermissionsError(http(403)), WeaviateRejected, False),
    (we.WeaviateConnectionError(f"cannot connect with {API_KEY}"), WeaviateUnavailable, True),
    (we.WeaviateGRPCUnavailableError(), WeaviateUnavailable, True),
    (we.WeaviateTimeoutError(f"timed out, key {API_KEY}"), WeaviateUnavailable, True),
    (we.WeaviateStartUpError("not ready"), WeaviateUnavailable, True),
    (we.WeaviateRetryError(f"gave up, key {API_KEY}", 3), WeaviateUnavailable, True),
    (we.WeaviateQueryError("connection refused by node-2", "GRPC"), WeaviateUnavailable, True),
    (we.WeaviateQueryError("invalid where filter", "GRPC"), WeaviateRejected, False),
    (we.WeaviateInvalidInputError(f"bad vector (key {API_KEY})"), WeaviateRejected, False),
    (we.WeaviateClosedClientError(), WeaviateRejected, False),
    (httpx.ConnectError(f"connection refused with {API_KEY}"), WeaviateUnavailable, True),
    (httpx.ReadTimeout("read timed out"), WeaviateUnavailable, True),
    (httpx.RemoteProtocolError("server disconnected"), WeaviateUnavailable, True),
    (rpc(grpc.StatusCode.UNAVAILABLE), WeaviateUnavailable, True),
    (rpc(grpc.StatusCode.DEADLINE_EXCEEDED), WeaviateUnavailable, True),
    (rpc(grpc.StatusCode.INVALID_ARGUMENT), WeaviateRejected, False),
    (rpc(grpc.StatusCode.UNAUTHENTICATED), WeaviateRejected, False),
    (full("/repo/staging/objects.jsonl"), StorageFull, False),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), WeaviateUnavailable, True),
    (TimeoutError("timed out"), WeaviateUnavailable, True),
]


@pytest.mark.parametrize(("exc", "expected", "retryable"), WEAVIATE_ROWS, ids=lambda v: type(v).__name__)
def test_weaviate_client_and_os_errors_map_to_davit_errors(
    exc: BaseException, expected: type[DavitError], retryable: bool
) -> None:
    check(
        lambda: weaviate_errors("weaviate at w:8080", "reading Article", lambda t: redact(t, API_KEY)),
        exc,
        expected,
        retryable,
        secret=API_KEY,
    )


# --- asyncssh ------------------------------------------------------------------------------

ADDRESS = SshAddress("host.example", 22, "root", "/etc/davit/id_ed25519", "/etc/davit/known_hosts")

SSH_CONNECT_ROWS = [
    (asyncssh.HostKeyNotVerifiable("host key mismatch"), HostKeyRejected, False),
    (asyncssh.PermissionDenied("publickey refused"), RemoteLoginFailed, False),
    (asyncssh.KeyExchangeFailed("no matching key exchange algorithm"), RemoteRefused, False),
    (asyncssh.KeyImportError(f"Invalid private key (not a {PW})"), RemoteRefused, False),
    (asyncssh.ConnectionLost(f"connection lost to {SSH_URI}"), RemoteUnreachable, True),
    (asyncssh.DisconnectError(11, f"by application {SSH_URI}"), RemoteUnreachable, True),
    (ConnectionRefusedError(errno.ECONNREFUSED, f"Connect call failed {SSH_URI}"), RemoteUnreachable, True),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), RemoteUnreachable, True),
    (TimeoutError(), RemoteUnreachable, True),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/etc/davit/id_ed25519"), RemoteRefused, False),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/davit/id_ed25519"), RemoteRefused, False),
]

SSH_SESSION_ROWS = [
    (asyncssh.ChannelOpenError(2, f"connect failed {SSH_URI}"), RemoteUnreachable, True),
    (asyncssh.ConnectionLost("connection lost"), RemoteUnreachable, True),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), RemoteUnreachable, True),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), RemoteUnreachable, True),
    (TimeoutError(), RemoteUnreachable, True),
    (full("/repo/staging/chunk"), StorageFull, False),
]


@pytest.mark.parametrize(("exc", "expected", "retryable"), SSH_CONNECT_ROWS, ids=lambda v: type(v).__name__)
def test_asyncssh_and_os_errors_while_connecting_map_to_davit_errors(
    exc: BaseException, expected: type[DavitError], retryable: bool
) -> None:
    check(lambda: connect_errors(ADDRESS), exc, expected, retryable)


@pytest.mark.parametrize(("exc", "expected", "retryable"), SSH_SESSION_ROWS, ids=lambda v: type(v).__name__)
def test_asyncssh_and_os_errors_during_a_session_map_to_davit_errors(
    exc: BaseException, expected: type[DavitError], retryable: bool
) -> None:
    check(lambda: session_errors("on root@host.example:22: `tar -x` was cut off"), exc, expected, retryable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_or_malformed_key_file_is_permanent_not_a_network_failure(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    garbage = tmp_path / "id_garbage"
    garbage.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PW}\n-----END OPENSSH PRIVATE KEY-----\n")
    for key_file in (tmp_path / "missing", garbage):
        address = SshAddress("127.0.0.1", free_port(), "root", str(key_file), str(known), connect_timeout=5)
        with pytest.raises(DavitError) as info, connect(address):
            pass
        assert isinstance(info.value, RemoteRefused) and not info.value.retryable, info.value
        assert str(key_file) in str(info.value) and PW not in str(info.value)


def test_a_closed_port_is_retryable(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id_ed25519"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    with (
        pytest.raises(RemoteUnreachable),
        connect(SshAddress("127.0.0.1", free_port(), "root", str(key), str(known), connect_timeout=5)),
    ):
        pass


# --- davit's own errors pass through every boundary unchanged ------------------------------


@contextmanager
def _mongo_boundary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DAVIT_TEST_MONGO_URI", MONGO_URI)
    with Server("DAVIT_TEST_MONGO_URI", None, "source").errors("reading"):
        yield


def test_a_stop_request_leaves_every_boundary_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel raised inside a guarded block (a worker's `check_stop`) must stay a stop, not
    become "rejected" (weaviate's mapper turned it into `WeaviateRejected`)."""
    boundaries: list[Mapper] = [
        lambda: _mongo_boundary(monkeypatch),
        lambda: engine_errors("x"),
        lambda: weaviate_errors("w", "x", str),
        lambda: connect_errors(ADDRESS),
        lambda: session_errors("x"),
    ]
    for boundary in boundaries:
        stop = RunStopped("cancel")
        with pytest.raises(RunStopped) as info, boundary():
            raise stop
        assert info.value is stop


# --- secret references ---------------------------------------------------------------------


def test_an_unusable_secret_file_is_named_without_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "uri.bin"
    binary.write_bytes(b"mongodb://davit:" + PW.encode() + b"\xff\xfe@db/")
    monkeypatch.delenv("DAVIT_UNSET_VARIABLE", raising=False)
    cases = [(None, str(binary)), (None, str(tmp_path)), (None, str(tmp_path / "missing")), ("DAVIT_UNSET_VARIABLE", None)]
    for env, file in cases:
        with pytest.raises(SecretUnavailable) as info:
            resolve(env, file, "uri")
        assert not info.value.retryable and PW not in str(info.value)
        assert (file or env or "") in str(info.value)
