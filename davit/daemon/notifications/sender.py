"""One delivery: a child process (`child.py`) runs apprise with the call's deadline; davitd
waits for it at most that long plus a margin, then kills it. A slow or hanging target holds
up nothing but its own delivery, and a davitd that stops kills what is still sending.

The URLs reach the child on its stdin, never in argv (another user's `ps` shows argv); its
answer is a reason, which is redacted here (every URL, and each part of one that may be a
token) before it reaches an event or a log line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import anyio

from davit.daemon.notifications.targets import ResolvedTarget, redact_reason

ABANDON_MARGIN_SECONDS = 10.0  # the child's start (Python, apprise's import) and its answer
MAX_ANSWER_BYTES = 64 << 10


async def deliver(target: ResolvedTarget, title: str, body: str, failure: bool, timeout: float) -> str | None:
    """Deliver; None on success, else a reason with every URL and token taken out."""
    request = json.dumps({"urls": list(target.urls), "title": title, "body": body, "failure": failure, "timeout": timeout})
    try:
        reason = await _run_child(request.encode(), timeout + ABANDON_MARGIN_SECONDS)
    except TimeoutError:
        reason = f"timeout: no answer within {timeout + ABANDON_MARGIN_SECONDS:.0f} s"
    except (OSError, ValueError) as exc:  # the child could not start, or answered nonsense
        reason = f"{type(exc).__name__}: {exc}"
    return None if reason is None else redact_reason(reason, target.urls)


async def _run_child(request: bytes, deadline: float) -> str | None:
    process = await anyio.open_process(
        [sys.executable, "-m", "davit.daemon.notifications.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # apprise's chatter, which may quote a URL, goes nowhere
    )
    try:
        with anyio.fail_after(deadline):
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(request)
            await process.stdin.aclose()
            answer = b""
            async for block in process.stdout:
                answer += block
                if len(answer) > MAX_ANSWER_BYTES:
                    raise ValueError("the notification child's answer is too long")
            await process.wait()
    finally:
        if process.returncode is None:  # deadline, or davitd stopping: the child goes with it
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
    if process.returncode != 0 or not answer.strip():
        return f"the sending process ended with status {process.returncode} and no answer"
    reason = json.loads(answer)["reason"]
    return None if reason is None else str(reason)
