"""Connecting to a MongoDB-wire server and translating pymongo's errors at the boundary.

The URI comes from the job's `uri_env`/`uri_file` and is never written anywhere: every
message that leaves this package goes through `redact` with the URI as a secret. Network
trouble (server down, connection reset, timeouts) is retryable and left to the executor's
bounded backoff; a refused login is permanent, with a message that says so; anything else
the server refuses is permanent and names what was being done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bson.errors import BSONError
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)

from davit.adapters.oserrors import os_error
from davit.adapters.secrets import redact, resolve
from davit.domain.errors import DavitError, PermanentError, RetryableError

AUTH_FAILED = {18, 11}  # AuthenticationFailed, UserNotFound
# Server answers that pass (a primary stepping down or shutting down, a time limit, a write
# concern timeout, a cursor the server reaped): the run is retried, from its checkpoint.
TRANSIENT_CODES = frozenset({6, 7, 43, 50, 64, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})
SYSTEM_DBS = {"admin", "local", "config"}


class MongoAuthFailed(PermanentError):
    pass


class MongoUnreachable(RetryableError):
    pass


class MongoRefused(PermanentError):
    pass


class MongoBadUri(PermanentError):
    """The URI the job names cannot be used (pymongo refused to parse or apply it)."""


class MongoConflict(MongoRefused):
    """A write the target refused because a unique index holds the value already."""


class Server:
    """One server named by a job: its (secret) URI and a lazily opened client."""

    def __init__(self, uri_env: str | None, uri_file: str | None, what: str) -> None:
        self.uri = resolve(uri_env, uri_file, "uri")
        self.what = what
        self._client: MongoClient[Any] | None = None

    @property
    def client(self) -> MongoClient[Any]:
        if self._client is None:
            with self.errors("connecting"):
                try:
                    self._client = MongoClient(
                        self.uri,
                        serverSelectionTimeoutMS=10_000,
                        connectTimeoutMS=10_000,
                        socketTimeoutMS=300_000,
                        retryWrites=False,
                        appname="davit",
                    )
                except (ValueError, TypeError) as exc:
                    # pymongo parses the URI here and lets some refusals out as bare
                    # ValueErrors (a port out of range, an unclosed IPv6 bracket)
                    raise MongoBadUri(f"{self.what}: bad MongoDB URI: {self.redact(str(exc))}") from None
        return self._client

    def ping(self) -> dict[str, Any]:
        """Check the server answers and the credentials are accepted; its version."""
        with self.errors("connecting"):
            self.client.admin.command("ping")
            info = self.client.server_info()
        return {"server_version": info.get("version")}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def redact(self, text: str) -> str:
        return redact(text, self.uri)

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Map pymongo's errors raised while `doing` to davit's, without the URI's secrets."""
        # `from None`: the library's own message may hold the URI; the redacted text is all
        # that travels on (into the run's error, the daemon's log).
        try:
            yield
        except DavitError:
            raise  # already mapped (or a stop request): passes through as it is
        except OperationFailure as exc:
            detail = self.redact(str(exc.details.get("errmsg") if exc.details else exc))
            if exc.code in AUTH_FAILED:
                raise MongoAuthFailed(
                    f"{self.what}: authentication failed while {doing} (check the user and password in the URI): {detail}"
                ) from None
            if (
                exc.code in TRANSIENT_CODES
                or exc.has_error_label("RetryableWriteError")
                or exc.has_error_label("TransientTransactionError")
            ):
                raise MongoUnreachable(
                    f"{self.what}: the server could not complete {doing} for now: {detail} (code {exc.code})"
                ) from None
            raise MongoRefused(f"{self.what}: the server refused {doing}: {detail} (code {exc.code})") from None
        except (InvalidURI, ConfigurationError) as exc:
            raise MongoBadUri(f"{self.what}: bad MongoDB URI: {self.redact(str(exc))}") from None
        except (AutoReconnect, ConnectionFailure) as exc:
            raise MongoUnreachable(f"{self.what}: server unreachable while {doing}: {self.redact(str(exc))}") from None
        except PyMongoError as exc:
            raise MongoRefused(f"{self.what}: {doing} failed: {self.redact(str(exc))}") from None
        except BSONError as exc:  # a document the driver cannot encode or decode (too large, invalid)
            raise MongoRefused(f"{self.what}: {doing} failed: {type(exc).__name__}: {self.redact(str(exc))}") from None
        except OSError as exc:
            raise os_error(exc, f"{self.what}: {doing}", MongoUnreachable, MongoRefused, self.redact) from None
