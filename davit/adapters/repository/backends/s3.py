"""The repository's objects in an S3-compatible bucket, through obstore (Rust `object_store`).

A key `K` is the object `<prefix>/K` of the bucket. obstore does the signing, the connection
pool, multipart uploads, coalesced ranged reads and the retries of idempotent requests (with
backoff, for at most `retry_budget` seconds); this module adds what the port promises on top:

- `put_if_absent` is a PUT with `If-None-Match: *` (obstore's `mode="create"`). obstore does
  not retry a create, since a timed-out one may have landed: we retry it ourselves, and when
  the retry finds the key taken we compare the object with what we sent (its size and MD5
  ETag, and its bytes when it is at most 1 MiB) to tell our own earlier attempt from another
  writer's object. Whether the server honours the condition is probed once, on first use of
  `caps` (a probe key created twice under `tmp/`); a server that ignores it gets a HEAD, then
  PUT, which is only safe for randomly named objects, and a warning says so. Deleting the probe
  key tells whether the credential may delete (`caps.can_delete`: a backup-only credential may
  not, and its probe key stays for a maintenance prune), unless the config declared it may not
  (`can_delete=False`: then no delete is tried at all).
- Every error becomes the port's: `ObjectMissing`, `BackendDenied` (a refused credential or
  operation, a missing bucket: permanent) or `BackendUnavailable` (no answer within the retry
  budget: the run resumes later). Their messages are built here from the HTTP status and the
  S3 error code only, never from obstore's text, so no header, signature or secret can leak.
- Listed keys are hostile until checked: one outside the prefix or failing `check_key` is
  skipped with a warning. A name obstore itself cannot parse (a `..` or empty segment, which
  AWS S3 stores and SeaweedFS refuses) fails the whole listing, since obstore gives no way to
  step over it: the listing is then refused with `BackendDenied` naming the object, because a
  listing with holes would let prune delete what an unseen index names.

The port is synchronous and called from many threads at once: obstore's synchronous calls
release the GIL while they wait, so they are used directly. Handing coroutines to one
event-loop thread instead was measured (1000 ranged 64 KiB reads from 1 and 16 threads, on
SeaweedFS on loopback): no difference beyond the noise of a busy 2-core machine (500 to 1300
reads/s either way), so the simpler one stays. What does pay is `get_ranges` (obstore
coalesces nearby ranges into one request): about 2400 reads/s in batches of 100.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    InvalidPathError,
    NotSupportedError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from davit.adapters.repository.backend import (
    BackendDenied,
    BackendUnavailable,
    Caps,
    ObjectInfo,
    ObjectMissing,
    ObjectTooLarge,
    Source,
    check_key,
    check_prefix,
)
from davit.adapters.repository.fsutil import open_new
from davit.domain.redaction import strip_uri_credentials

if TYPE_CHECKING:
    from obstore import ObjectMeta

log = logging.getLogger("davit.repository.s3")
T = TypeVar("T")

MULTIPART_CHUNK = 8 << 20  # obstore's parts; S3 wants >= 5 MiB, and 8 keeps the count low
MULTIPART_CONCURRENCY = 4  # parts in flight: 32 MiB of buffers per upload at most
COMPARE_BYTES_MAX = 1 << 20  # an unknown create outcome is settled by reading back at most this
_STREAM_CHUNK = 4 << 20
_CONNECT_TIMEOUT = "5s"
_REQUEST_TIMEOUT = "300s"  # one request, body included: an 8 MiB part or a 32 MiB pack on a slow link
_READ_TIMEOUT = 30.0  # seconds: a response that stops sending data for this long is retried
_READ_TIMEOUT_MIN = 1.0  # seconds: a tiny retry budget still lets a live server pause briefly

_STATUS = re.compile(r"status code: (\d{3})")
# the S3 error code: in the XML body, or (a DeleteObjects answer) in obstore's debug text
_CODE = re.compile(r'<Code>([A-Za-z0-9]{1,64})</Code>|code: "([A-Za-z0-9]{1,64})"')
_BAD_NAME = re.compile(r'Path "([^"\n]{0,300})')
_CAUSES = ("connection refused", "connection reset", "timed out", "error sending request", "dns error", "broken pipe")
# environment variables whose settings the constructor passes explicitly (so they are ignored)
_PINNED_ENV = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_CONDITIONAL_PUT",
        "AWS_SKIP_SIGNATURE",
        "AWS_REQUEST_PAYER",
        "AWS_S3_EXPRESS",
        "AWS_ALLOW_HTTP",
        "AWS_BUCKET",
        "AWS_BUCKET_NAME",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AllAccessDisabled"})


# Variables an operator sets on purpose that change only whom TLS trusts: read, not warned of.
_TRUST_ENV = frozenset({"AWS_CA_BUNDLE"})
_warned_env: set[str] = set()


def read_timeout(retry_budget: float) -> timedelta:
    """How long one request may wait for the server's next bytes: at most the retry budget.
    obstore checks the budget only between attempts, so a silent server held each request for
    the full 30 s whatever `retry_seconds` said (a 1 s budget failed after 30 s, and each
    clean-up request after the failure cost 30 s more)."""
    return timedelta(seconds=max(_READ_TIMEOUT_MIN, min(_READ_TIMEOUT, retry_budget)))


class S3Backend:
    """One repository in `bucket` under `prefix`. Thread-safe (obstore's store is)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str = "us-east-1",
        path_style: bool = False,
        access_key_id: str,
        secret_access_key: str,
        retry_budget: float = 60.0,
        allow_http: bool | None = None,
        can_delete: bool | None = None,
    ) -> None:
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.retry_budget = retry_budget
        self._root = f"{prefix}/" if prefix else ""
        shown_endpoint = strip_uri_credentials(endpoint) if endpoint else None
        self.where = f"s3://{bucket}/{prefix}" + (f" at {shown_endpoint}" if shown_endpoint else "")
        if allow_http is None:
            allow_http = bool(endpoint and endpoint.startswith("http://"))
        self._store = S3Store(
            bucket,
            endpoint=endpoint,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            virtual_hosted_style_request=not path_style,
            # obstore's constructors also read AWS_* variables of the environment: pin every
            # one that would change how requests are made, and warn of the others below
            conditional_put="etag",
            skip_signature=False,
            request_payer=False,
            s3_express=False,
            client_options={
                "allow_http": allow_http,
                "connect_timeout": _CONNECT_TIMEOUT,
                "timeout": _REQUEST_TIMEOUT,
                "read_timeout": read_timeout(retry_budget),
            },
            retry_config={
                "max_retries": 1000,  # the time budget is the bound, not the count
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2},
                "retry_timeout": timedelta(seconds=retry_budget),
            },
        )
        self._caps: Caps | None = None
        self._declared_can_delete = can_delete
        self._probe_lock = threading.Lock()
        inherited = sorted(
            name for name in os.environ if name.startswith("AWS_") and name not in _PINNED_ENV | _TRUST_ENV | _warned_env
        )
        if inherited:
            _warned_env.update(inherited)  # once per process: the CLI opens a backend per command
            log.warning(
                "%s: obstore also reads these environment variables of davitd, which may change how it talks to the "
                "server (a session token, server-side encryption): %s",
                self.where,
                ", ".join(inherited),
            )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint: str | None = None,
        region: str = "us-east-1",
        path_style: bool = False,
        access_key_id: str,
        secret_access_key: str,
        retry_budget: float = 60.0,
        allow_http: bool | None = None,
        can_delete: bool | None = None,
    ) -> S3Backend:
        """`s3://bucket/prefix` (the prefix may be empty or several segments)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {strip_uri_credentials(url)!r}")
        return cls(
            parts.netloc,
            parts.path.strip("/"),
            endpoint=endpoint,
            region=region,
            path_style=path_style,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            retry_budget=retry_budget,
            allow_http=allow_http,
            can_delete=can_delete,
        )

    def __repr__(self) -> str:
        return f"S3Backend({self.where!r})"

    def _path(self, key: str) -> str:
        return self._root + check_key(key)

    # --- capabilities ----------------------------------------------------------------------

    @property
    def caps(self) -> Caps:
        """Probed on first use: whether the server honours `If-None-Match: *`, and whether this
        credential may delete (unless declared)."""
        if self._caps is None:
            with self._probe_lock:
                if self._caps is None:
                    self._caps = self._probe()
        return self._caps

    def _probe(self) -> Caps:
        key = f"tmp/probe-conditional-create-{os.urandom(8).hex()}"
        path = self._path(key)
        # a first create that fails (the server down) is not followed by a delete sent to the same
        # silent server: the error is the create's, and comes one request timeout sooner (if
        # the create landed after all, prune's tmp/ clean-up removes the probe object)
        self._call("probe", key, obstore.put, self._store, path, b"1", mode="create")
        try:
            try:
                self._call("probe", key, obstore.put, self._store, path, b"2", mode="create")
                honoured = False
            except AlreadyExistsError:
                honoured = True
            except (NotSupportedError, PreconditionError):
                honoured = False
        finally:
            can_delete = self._declared_can_delete
            if can_delete is not False:
                try:
                    self.delete(key)
                    can_delete = True
                except BackendDenied:
                    can_delete = False  # a backup-only credential: prune's tmp/ clean-up removes the key
        if not honoured:
            log.warning(
                "%s: the server ignores If-None-Match: * (conditional create); davit falls back to a HEAD "
                "before each PUT, which is safe only for randomly named objects (packs, indexes), not for "
                "two writers racing on one manifest or lock",
                self.where,
            )
        return Caps(conditional_create=honoured, can_delete=can_delete)

    # --- errors ----------------------------------------------------------------------------

    def _call(self, op: str, key: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` with obstore's errors turned into the port's (AlreadyExists and
        a missing object are passed through for the caller to interpret)."""
        try:
            return fn(*args, **kwargs)
        except StopIteration:
            raise
        except (AlreadyExistsError, FileNotFoundError) as exc:
            if isinstance(exc, FileNotFoundError) and "NoSuchBucket" in str(exc):
                self._fail(op, key, exc)
            raise
        except InvalidPathError as exc:
            self._bad_listing(op, exc)
        except Exception as exc:
            self._fail(op, key, exc)

    def _fail(self, op: str, key: str, exc: BaseException) -> NoReturn:
        text = str(exc)
        status = _STATUS.search(text)
        found = _CODE.search(text)
        code = (found[1] or found[2]) if found else None
        what = f"{op} {key}" if key else op
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or code in _DENIED_CODES:
            reason = _denied_reason(code, self.bucket, self.endpoint)
            raise BackendDenied(self.where, what, reason) from None
        if status and status[1].startswith("4") and status[1] not in ("408", "429"):
            raise BackendDenied(self.where, what, f"the server answered {status[1]} {code or ''}".rstrip()) from None
        cause = next((c for c in _CAUSES if c in text.lower()), None)
        if status:
            cause = f"the server answered {status[1]}" + (f" {code}" if code else "")
        reason = f"no success within the retry budget of {self.retry_budget:g} s ({cause or type(exc).__name__})"
        raise BackendUnavailable(self.where, what, reason) from None

    def _bad_listing(self, op: str, exc: InvalidPathError) -> NoReturn:
        name = _BAD_NAME.search(str(exc))
        shown = repr(name[1]) if name else "(unnamed)"
        log.warning("%s: %s: the server listed an object whose name is unsafe: %s", self.where, op, shown)
        raise BackendDenied(
            self.where,
            op,
            f"the bucket holds an object whose name cannot be used safely ({shown}: an empty, '.' or '..' "
            "segment); remove it from the bucket",
        ) from None

    # --- writing ---------------------------------------------------------------------------

    def put_if_absent(self, key: str, src: Source) -> bool:
        path = self._path(key)
        data = src.read_bytes() if isinstance(src, Path) else bytes(src)
        if not self.caps.conditional_create:
            if self.stat(key) is not None:
                return False
            self._call("create", key, obstore.put, self._store, path, data, use_multipart=False)
            return True
        return self._create(key, path, data)

    def _create(self, key: str, path: str, data: bytes) -> bool:
        deadline = time.monotonic() + self.retry_budget
        delay = 0.2
        uncertain = False  # an earlier attempt may have landed
        while True:
            try:
                self._call("create", key, obstore.put, self._store, path, data, mode="create")
                return True
            except AlreadyExistsError:
                return uncertain and self._is_ours(key, path, data)
            except BackendUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                uncertain = True
                log.info("%s: create %s: no answer, trying again in %.1f s", self.where, key, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _is_ours(self, key: str, path: str, data: bytes) -> bool:
        """After a create whose answer was lost: is the object there the one we sent?"""
        meta = self._call("stat", key, obstore.head, self._store, path)
        if meta["size"] != len(data):
            return False
        if len(data) <= COMPARE_BYTES_MAX:
            return bool(self.get(key) == data)
        etag = (meta.get("e_tag") or "").strip('"')
        if re.fullmatch(r"[0-9a-f]{32}", etag):  # a single PUT's ETag is its MD5 (without SSE-KMS)
            return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
        return True  # same size under a name only davit makes at random: ours

    def put(self, key: str, src: Source) -> None:
        path = self._path(key)
        if isinstance(src, Path) and src.stat().st_size > MULTIPART_CHUNK:
            self._call(
                "put",
                key,
                obstore.put,
                self._store,
                path,
                src,
                use_multipart=True,
                chunk_size=MULTIPART_CHUNK,
                max_concurrency=MULTIPART_CONCURRENCY,
            )
            return
        data = src.read_bytes() if isinstance(src, Path) else bytes(src)
        self._call("put", key, obstore.put, self._store, path, data, use_multipart=False)

    # --- reading ---------------------------------------------------------------------------

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            result = self._call("get", key, obstore.get, self._store, self._path(key))
            size = int(result.meta["size"])
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(self.where, key, size, max_bytes)
            data = self._call("get", key, result.bytes).to_bytes()
        except FileNotFoundError:
            raise ObjectMissing(self.where, key) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(self.where, key, len(data), max_bytes)
        return bytes(data)

    def get_to(self, key: str, dst: Path) -> None:
        """Streamed to a temporary file beside `dst`: at most a few MiB in memory. A stream
        that breaks resumes where it stopped (a ranged GET of the same ETag), within the budget."""
        path = self._path(key)
        tmp = dst.with_name(f".{dst.name}.{os.urandom(4).hex()}.tmp")
        try:
            with open(open_new(tmp), "wb") as out:
                self._stream_to(key, path, out)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)

    def _stream_to(self, key: str, path: str, out: IO[bytes]) -> None:
        deadline = time.monotonic() + self.retry_budget
        written, etag = 0, None
        while True:
            options: Any = {"range": {"offset": written}, "if_match": etag} if etag else None
            try:
                result = self._call("get", key, obstore.get, self._store, path, options=options)
                etag = etag or result.meta.get("e_tag")
                for chunk in result.stream(min_chunk_size=_STREAM_CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                return
            except FileNotFoundError:
                raise ObjectMissing(self.where, key) from None
            except BackendUnavailable:
                if etag is None or time.monotonic() > deadline:
                    raise
            except (BackendDenied, ObjectTooLarge):
                raise
            except Exception as exc:  # the body stream broke (raw obstore errors)
                if etag is None or time.monotonic() > deadline:
                    self._fail("get", key, exc)
            log.info("%s: get %s broke after %d bytes; resuming from there", self.where, key, written)
            time.sleep(0.5)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return self._call("get", key, _get_range, self._store, self._path(key), offset, length)
        except FileNotFoundError:
            raise ObjectMissing(self.where, key) from None

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        wanted = [(o, n) for o, n in ranges if n > 0]
        if not wanted:
            return [b"" for _ in ranges]
        try:
            got = self._call("get", key, _get_ranges, self._store, self._path(key), wanted)
        except FileNotFoundError:
            raise ObjectMissing(self.where, key) from None
        if got is None:  # a range starts past the end (S3 answers 416): ask one by one
            return [self.get_range(key, o, n) for o, n in ranges]
        parts = iter(got)
        return [bytes(next(parts)) if n > 0 else b"" for _, n in ranges]

    # --- listing ---------------------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        full = self._root + prefix
        op = f"list {prefix or '(all)'}"
        stream = self._call(op, "", obstore.list, self._store, full or None, chunk_size=1000)
        while True:
            try:
                batch = self._call(op, "", next, stream)
            except StopIteration:
                return
            for meta in batch:
                info = self._listed(meta, prefix)
                if info is not None:
                    yield info

    def _listed(self, meta: ObjectMeta, prefix: str) -> ObjectInfo | None:
        path = meta["path"]
        key = path[len(self._root) :] if path.startswith(self._root) else None
        try:
            if key is None or not key.startswith(prefix):
                raise ValueError("outside the listed prefix")
            check_key(key)
        except ValueError:
            log.warning("%s: skipping a listed object with an unusable name: %r", self.where, path[:300])
            return None
        return ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            meta = self._call("stat", key, obstore.head, self._store, self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    # --- removing --------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        try:
            self._call("delete", key, obstore.delete, self._store, self._path(key))
        except FileNotFoundError:
            return
        except BackendDenied:
            if self._caps is not None:
                self._caps = replace(self._caps, can_delete=False)
            raise

    def close(self) -> None:
        """obstore keeps no handle that needs closing; its pool goes with the store."""


def _get_range(store: S3Store, path: str, offset: int, length: int) -> bytes:
    """A range starting at or past the end is empty, as on the other backends (S3 answers 416)."""
    try:
        return bytes(obstore.get_range(store, path, start=offset, length=length))
    except FileNotFoundError:
        raise
    except Exception as exc:
        if "status code: 416" in str(exc) and obstore.head(store, path)["size"] <= offset:
            return b""
        raise


def _get_ranges(store: S3Store, path: str, ranges: list[tuple[int, int]]) -> list[bytes] | None:
    """The ranges (coalesced by obstore into few requests), or None if one reaches past the end
    of the object, to be asked one by one: S3 answers 416 to a range starting past it, and
    obstore 0.12 *panics* (a pyo3 PanicException, a BaseException) slicing a coalesced answer
    shorter than asked, which a truncated or hostile object would otherwise turn into a crash."""
    try:
        got = obstore.get_ranges(store, path, starts=[o for o, _ in ranges], lengths=[n for _, n in ranges])
    except FileNotFoundError:
        raise
    except Exception as exc:
        if "status code: 416" in str(exc):
            return None
        raise
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            return None
        raise
    return [bytes(b) for b in got]


def _denied_reason(code: str | None, bucket: str, endpoint: str | None) -> str:
    at = f" at {strip_uri_credentials(endpoint)}" if endpoint else ""
    if code == "NoSuchBucket":
        return f"bucket {bucket} does not exist{at}"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"the server does not accept the access key or secret for bucket {bucket}{at} ({code})"
    return f"access denied to bucket {bucket}{at}" + (f" ({code})" if code else "")
