"""Requests davitd cannot handle: said in the log, not only in a log line.

A request on the `requests` stream that does not decode (a field of the wrong type), names a
type this davitd does not know (a newer CLI talking to a daemon not yet restarted after an
upgrade), or whose handling raised is recorded as `RequestFailed` on the daemon stream, with
its position and the reason, so `davit run/cancel --wait` stops waiting at once and says why.
The reason names fields and error types, never the request's values (pydantic's messages
quote the input; they are not used).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from davit.daemon.recorder import append_unordered
from davit.domain import events as ev
from davit.domain.ports import RunLog
from davit.domain.redaction import strip_uri_credentials

log = logging.getLogger("davitd")
MAX_REASON = 500


class UnknownRequest(Exception):
    """A request type this davitd does not know."""

    def __init__(self, request_type: str, version: str) -> None:
        super().__init__(
            f"davitd {version} does not know requests of type {request_type!r} (was davit upgraded without restarting davitd?)"
        )


def describe(exc: BaseException) -> str:
    """What failed, for an operator: the fields a request got wrong, or the error's type and text."""
    if isinstance(exc, ValidationError):
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(request)'}: {e['msg']}" for e in exc.errors())
        text = f"the request does not decode: {fields}"
    elif isinstance(exc, UnknownRequest):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return strip_uri_credentials(text)[:MAX_REASON]


async def record_failure(store: RunLog, stored: ev.StoredEvent, exc: BaseException) -> None:
    """Record that the request at `stored.position` failed; a log line whatever happens."""
    reason = describe(exc)
    expected = isinstance(exc, ValidationError | UnknownRequest)
    log.error("request %s at position %d failed: %s", stored.type, stored.position, reason, exc_info=None if expected else exc)
    run_id = stored.data.get("run_id") if isinstance(stored.data, dict) else None
    failed = ev.RequestFailed(
        position=stored.position,
        request_type=stored.type[:100],
        reason=reason,
        run_id=run_id if isinstance(run_id, str) else None,
    )
    try:
        await append_unordered(store, ev.DAEMON_STREAM, failed)
    except Exception:  # the log itself failing: the line above is all that can be said
        log.exception("request at position %d: its failure could not be recorded", stored.position)
