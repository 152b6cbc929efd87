"""One delivery through the notification child against real targets on loopback: a mail that
arrives with hostile text made harmless, and failures whose reasons never quote the URL."""

from __future__ import annotations

import anyio

from davit.daemon.notifications.sender import deliver
from davit.daemon.notifications.targets import ResolvedTarget
from tests.fixtures.notify_targets import Mailbox, free_port, mailbox

__all__ = ["mailbox"]  # fixture
TOKEN = "Tok3nInThePath99"


def test_hostile_text_in_a_failure_is_escaped_in_the_mail(mailbox: Mailbox) -> None:
    target = ResolvedTarget("ops", (mailbox.url(),))
    body = "Run r1 of job docs failed: <script>alert(1)</script>\x1b[31m red"
    assert anyio.run(deliver, target, "davit: job docs failed\r\nBcc: evil@example.com", body, True, 20.0) is None
    [mail] = mailbox.mails
    assert mail["Bcc"] is None and "evil@example.com" not in str(mail["To"])
    parts = {part.get_content_type(): part.get_payload(decode=True).decode() for part in mail.walk() if not part.is_multipart()}
    # sent as plain text: no HTML part a mail reader would render (or, if one, escaped)
    assert "<script>" not in parts.get("text/html", "") and "<script>alert(1)</script>" in parts["text/plain"]
    assert all("\x1b" not in text for text in parts.values())


def test_a_target_that_is_down_fails_with_a_reason_that_does_not_quote_its_url() -> None:
    url = f"json://127.0.0.1:{free_port()}/hook/{TOKEN}?apikey={TOKEN}x"
    reason = anyio.run(deliver, ResolvedTarget("hook", (url,)), "t", "b", True, 10.0)
    assert reason is not None and TOKEN not in reason and "/hook/" not in reason


def test_a_url_apprise_does_not_know_is_a_failure_naming_which_one() -> None:
    reason = anyio.run(deliver, ResolvedTarget("odd", ("nosuchservice://" + TOKEN,)), "t", "b", False, 10.0)
    assert reason == "URL 1 of the target is not one apprise understands"
