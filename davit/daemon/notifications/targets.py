"""A target's apprise URLs, read when a message is sent (never kept in an event or a log line),
and the redaction that takes every URL and its tokens out of a failure's reason.

A URL file holds one URL a line (`#` starts a comment); an environment variable holds URLs
separated by spaces or commas. A URL's tokens may sit anywhere in it (user, password, path
segments, query values: `slack://T1/T2/T3`, `json://host/hook?token=...`), so a reason loses the
whole URL and each of those parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from davit.adapters.secrets import SecretUnavailable, redact, resolve
from davit.daemon.config import NotifyTarget

MAX_REASON_CHARS = 500
ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s\"'<>]*")
MIN_PART_CHARS = 3  # shorter parts ("a", "80") would blank ordinary words, and guess nothing


@dataclass(frozen=True)
class ResolvedTarget:
    name: str
    urls: tuple[str, ...]


def resolve_target(name: str, target: NotifyTarget, base: Path) -> ResolvedTarget:
    """The URLs of `target` (a relative urls_file is read against the config's directory);
    `SecretUnavailable` naming the file or variable (never a URL) if they cannot be had."""
    texts = []  # (text, from a variable)
    if target.urls_file is not None:
        path = target.urls_file if target.urls_file.startswith("/") else str(base / target.urls_file)
        texts.append((resolve(None, path, f"notification target {name}: urls"), False))
    if target.urls_env is not None:
        texts.append((resolve(target.urls_env, None, f"notification target {name}: urls"), True))
    urls = [u for text, from_env in texts for u in _urls(text, from_env)]
    if not urls:
        raise SecretUnavailable(f"notification target {name}: no URL given")
    return ResolvedTarget(name, tuple(urls))


def _urls(text: str, from_env: bool) -> list[str]:
    lines = [line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip() for line in text.splitlines()]
    found: list[str] = []
    for line in lines:
        found += [u for u in re.split(r"[\s,]+", line) if u] if from_env else ([line] if line else [])
    return found


def secret_parts(url: str) -> list[str]:
    """The URL and every part of it that may be a token, longest first."""
    parts = {url}
    try:
        split = urlsplit(url)
        parts.update(p for p in (split.username, split.password, split.fragment) if p)
        parts.update(seg for seg in split.path.split("/") if seg)
        parts.update(value for _key, value in parse_qsl(split.query, keep_blank_values=False))
        parts.add(split.netloc)
    except ValueError:
        pass  # a URL urlsplit refuses is still taken out whole
    return sorted((p for p in parts if len(p) >= MIN_PART_CHARS), key=len, reverse=True)


def redact_reason(text: str, urls: tuple[str, ...]) -> str:
    """`text` without any of `urls` or their parts, without any other URL, one line, bounded."""
    out = redact(text)
    for url in urls:
        for part in secret_parts(url):
            out = out.replace(part, "***")
    out = ANY_URL.sub(lambda m: m.group(0).split("://", 1)[0] + "://***", out)
    out = " ".join(out.split())  # no newlines or control characters into a log line
    out = "".join(ch for ch in out if ch.isprintable())
    return out[:MAX_REASON_CHARS]
