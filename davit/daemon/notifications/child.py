"""One delivery through apprise, in a process of its own (`python -m
davit.daemon.notifications.child`): the request (URLs, title, body, deadline) comes on stdin,
never in argv; the outcome goes to stdout as one JSON line.

Why a process: apprise sends from threads of its own, and a service that answers one byte at a
time keeps such a thread reading long after apprise's deadline. In davitd that thread would
hold the interpreter at exit (a `systemctl stop` that never ends); a process is killed at the
deadline and takes everything of it along. It also keeps apprise's logger, whose records can
quote a URL, out of davitd's log altogether.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

NICENESS = 10


def send(request: dict[str, Any]) -> str | None:
    """Send; None if every URL took it, else the reason (unredacted: the parent redacts)."""
    import apprise

    box = apprise.Apprise()
    for index, url in enumerate(request["urls"], 1):
        if not box.add(url):
            return f"URL {index} of the target is not one apprise understands"
    kind = apprise.NotifyType.FAILURE if request["failure"] else apprise.NotifyType.INFO
    # as plain text: apprise escapes it where a service renders HTML (a job's error is hostile text)
    result = box.notify(
        body=_printable(request["body"], keep="\n"),
        title=_printable(request["title"]),
        notify_type=kind,
        body_format=apprise.NotifyFormat.TEXT,
        timeout=request["timeout"],
    )
    if result:
        return None
    lines = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
    status = getattr(result.status, "name", str(result.status)).lower()
    return f"{status}: {'; '.join(lines[-3:]) or 'the service did not accept the message'}"


def _printable(text: str, keep: str = "") -> str:
    """`text` without control characters (a terminal escape, a header-breaking newline)."""
    return "".join(ch if ch.isprintable() or ch in keep else " " for ch in text)


def main() -> None:
    # below davitd's priority: an attempt costs about half a second of CPU (apprise's import),
    # and a thousand failing jobs' messages must not take the cores from the runs
    os.nice(NICENESS)
    logging.getLogger("apprise").setLevel(logging.WARNING)
    logging.getLogger("apprise").propagate = False
    logging.getLogger("apprise").addHandler(logging.NullHandler())
    try:
        reason = send(json.loads(sys.stdin.read()))
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    sys.stdout.write(json.dumps({"reason": reason}) + "\n")
    sys.stdout.flush()
    os._exit(0)  # not waiting for a thread apprise left reading a slow service


if __name__ == "__main__":
    main()
