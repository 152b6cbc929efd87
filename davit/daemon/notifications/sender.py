"""One delivery through apprise, made in a worker thread so a slow or hanging target holds up
nothing but itself: apprise's own call deadline bounds it, and the caller abandons the thread
after the same time plus a margin if apprise does not keep to it.

apprise logs what it does, and its messages can quote a service URL with its token: its logger
is set to WARNING and stops propagating (`quiet_apprise`), so nothing of it reaches davitd's
log; a failure's reason comes from the result's captured entries, redacted.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread

from davit.daemon.notifications.targets import ResolvedTarget, redact_reason

ABANDON_MARGIN_SECONDS = 5.0
_apprise_quieted = False


def quiet_apprise() -> None:
    """apprise's logger: WARNING and above only, and to no handler of davitd's (its records
    may hold a URL). Called when the notification service starts, not at import."""
    global _apprise_quieted
    if _apprise_quieted:
        return
    logger = logging.getLogger("apprise")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    _apprise_quieted = True


def _send_blocking(target: ResolvedTarget, title: str, body: str, failure: bool, timeout: float) -> str | None:
    """Send; None if every URL of the target took it, else the reason (unredacted)."""
    import apprise  # imported when a notification is first sent: davitd without targets never loads it

    box = apprise.Apprise()
    for index, url in enumerate(target.urls, 1):
        if not box.add(url):
            return f"URL {index} of the target is not one apprise understands"
    kind = apprise.NotifyType.FAILURE if failure else apprise.NotifyType.INFO
    result = box.notify(body=body, title=title, notify_type=kind, timeout=timeout)
    if result:
        return None
    lines = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
    status = getattr(result.status, "name", str(result.status)).lower()
    return f"{status}: {'; '.join(lines[-3:]) or 'the service did not accept the message'}"


async def deliver(
    target: ResolvedTarget, title: str, body: str, failure: bool, timeout: float, limiter: anyio.CapacityLimiter
) -> str | None:
    """Deliver in a thread; None on success, else a reason with every URL and token taken out."""
    try:
        with anyio.fail_after(timeout + ABANDON_MARGIN_SECONDS):
            reason = await anyio.to_thread.run_sync(
                _send_blocking, target, title, body, failure, timeout, limiter=limiter, abandon_on_cancel=True
            )
    except TimeoutError:
        reason = f"no answer within {timeout + ABANDON_MARGIN_SECONDS:.0f} s"
    except Exception as exc:  # apprise raising is a failed attempt, not a crashed daemon
        reason = f"{type(exc).__name__}: {exc}"
    return None if reason is None else redact_reason(reason, target.urls)
