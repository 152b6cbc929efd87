"""Connecting to Weaviate and translating the client's errors at the adapter's boundary.

`Server` opens a weaviate-client v4 connection (HTTP + gRPC) from a job's connection
section, resolving the API key reference at run time; `Connection` keeps one open across a
run's stages (prepare, run, finish), so a run connects once, not once per stage and
collection. `weaviate_errors` maps what the client raises to davit's error tree: an
unreachable or busy server (connection refused, gRPC unavailable, timeouts, 5xx, 429) is
retryable; everything else (bad key, 4xx, invalid input) fails the run. Every message passes
through `redact` with the key, so it never leaves here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.exceptions import (
    AuthenticationFailedError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateQueryError,
    WeaviateRetryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from davit.adapters.oserrors import os_error
from davit.adapters.secrets import redact, resolve
from davit.domain.errors import DavitError, PermanentError, RetryableError
from davit.domain.jobs.weaviate import WeaviateConnection

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRYABLE_GRPC = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)
_RETRYABLE_WORDS = (
    "unavailable",
    "deadline exceeded",
    "connection refused",
    "leader not found",
    "connection reset",
    "timed out",
    "timeout",
)


class WeaviateUnavailable(RetryableError):
    pass


class WeaviateRejected(PermanentError):
    pass


class Server:
    """One job's connection: the client plus what is needed to redact its secret."""

    def __init__(self, conn: WeaviateConnection) -> None:
        self.conn = conn
        self.api_key = resolve(conn.api_key_env, conn.api_key_file, "api_key") if conn.api_key_env or conn.api_key_file else None
        self.where = f"weaviate at {conn.host}:{conn.http_port} (grpc {conn.grpc_port})"
        with self.errors("connecting"):
            self.client = weaviate.connect_to_custom(
                http_host=conn.host,
                http_port=conn.http_port,
                http_secure=conn.secure,
                grpc_host=conn.host,
                grpc_port=conn.grpc_port,
                grpc_secure=conn.secure,
                auth_credentials=Auth.api_key(self.api_key) if self.api_key else None,
                additional_config=AdditionalConfig(
                    timeout=Timeout(init=30, query=conn.timeout_seconds, insert=conn.timeout_seconds)
                ),
                # The client's init checks cost about 0.5 s per connect and reach out of the
                # machine: a GET of pypi.org (a "newer client" warning) and a discovery request
                # with an HTTP client of its own (OIDC, which davit does not use: a key is sent
                # as a bearer header). The REST side is still checked (connect reads /v1/meta)
                # and the gRPC side by the one check worth keeping, the health ping below.
                skip_init_checks=True,
            )
            # (a few milliseconds; without it, a gRPC port that does not answer shows at the
            # first query, after the client's own retries: a minute later, still retryable)
            ping = getattr(self.client._connection, "_ping_grpc", None)
            if callable(ping):
                ping("sync")

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A run stopped between its stages leaves its Connection to the collector: close
        # the client then, quietly, instead of leaving a warning about an unclosed one.
        self.close()

    def rest_get(self, path: str, params: dict[str, str], doing: str, missing_ok: bool = False) -> Any:
        """GET `/v1/<path>` from the REST API, parsed JSON (None for a 404 when `missing_ok`). For
        what the gRPC API cannot give: a multi-target reference property's targets in order."""
        url = f"{'https' if self.conn.secure else 'http'}://{self.conn.host}:{self.conn.http_port}/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.conn.timeout_seconds) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            message = self.redact(f"{self.where}: {doing}: HTTP {exc.code}: {exc.read()[:500]!r}")
            raise (WeaviateUnavailable if exc.code in RETRYABLE_STATUS else WeaviateRejected)(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise WeaviateUnavailable(self.redact(f"{self.where}: {doing}: {exc}")) from None

    def redact(self, text: str) -> str:
        return redact(text, *([self.api_key] if self.api_key else []))

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Translate the client's errors raised while `doing` something into davit's tree."""
        with weaviate_errors(self.where, doing, self.redact):
            yield

    def translate(self, exc: BaseException, doing: str) -> DavitError:
        return translate(exc, self.where, doing, self.redact)


class Connection:
    """One run's connection to a server, opened at first use and kept across the run's stages
    (the executor calls prepare, run and finish of one work object in turn). A stage that
    raises closes it, so a retried run starts from a fresh connection; `close` ends it."""

    def __init__(self, conn: WeaviateConnection) -> None:
        self.conn = conn
        self._server: Server | None = None

    @contextmanager
    def use(self) -> Iterator[Server]:
        if self._server is None:
            self._server = Server(self.conn)
        try:
            yield self._server
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()


@contextmanager
def weaviate_errors(where: str, doing: str, redact: Callable[[str], str]) -> Iterator[None]:
    """The boundary: whatever the client raises while `doing` leaves as a davit error, its text
    through `redact` (which knows the API key); davit's own errors pass through untouched."""
    try:
        yield
    except DavitError:
        raise  # already mapped, or a stop request (RunStopped) that must stay one
    except Exception as exc:
        raise translate(exc, where, doing, redact) from exc


def translate(exc: BaseException, where: str, doing: str, redact: Callable[[str], str]) -> DavitError:
    message = redact(f"{where}: {doing}: {type(exc).__name__}: {exc}")[:2000]
    if isinstance(exc, AuthenticationFailedError):
        return WeaviateRejected(message)
    if isinstance(exc, UnexpectedStatusCodeError):
        if exc.status_code in RETRYABLE_STATUS or "leader not found" in str(exc):
            return WeaviateUnavailable(message)
        return WeaviateRejected(message)
    if isinstance(
        exc,
        WeaviateConnectionError
        | WeaviateGRPCUnavailableError
        | WeaviateTimeoutError
        | WeaviateRetryError
        | WeaviateStartUpError
        | httpx.TransportError,
    ):
        return WeaviateUnavailable(message)
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return (WeaviateUnavailable if exc.code() in RETRYABLE_GRPC else WeaviateRejected)(message)
    if isinstance(exc, OSError):
        return os_error(exc, f"{where}: {doing}", WeaviateUnavailable, WeaviateRejected, redact)
    if isinstance(exc, WeaviateQueryError | WeaviateBaseError) and is_transient(str(exc)):
        return WeaviateUnavailable(message)
    return WeaviateRejected(message)


def is_transient(message: str) -> bool:
    low = message.lower()
    return any(word in low for word in _RETRYABLE_WORDS)


def collection_exists(server: Server, name: str) -> bool:
    with server.errors(f"checking collection {name}"):
        return bool(server.client.collections.exists(name))


def collection_config(server: Server, name: str) -> dict[str, Any]:
    with server.errors(f"reading the configuration of {name}"):
        config: dict[str, Any] = server.client.collections.get(name).config.get().to_dict()
        return config
