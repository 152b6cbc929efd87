"""Resolving secret references (`*_env`, `*_file`) at run time, and keeping secrets out of text.

A job names where a secret lives, never the secret. Adapters resolve it when a run needs it,
and pass every message that could carry it through `redact` before it leaves the adapter
(events, logs, exceptions): a URI keeps its scheme, host and path but loses its credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

from davit.domain.errors import PermanentError
from davit.domain.redaction import URI_CREDENTIALS, strip_uri_credentials


class SecretUnavailable(PermanentError):
    pass


def resolve(env: str | None, file: str | None, what: str) -> str:
    """The secret's value from the environment variable or file the job names."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise SecretUnavailable(f"{what}: environment variable {env} is not set for davitd")
        return value
    if file is not None:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(f"{what}: cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:  # its text would quote the secret's bytes: say only where
            raise SecretUnavailable(f"{what}: {file} is not UTF-8 text") from None
    raise SecretUnavailable(f"{what}: no {what}_env or {what}_file given")


def redact(text: str, *secrets: str) -> str:
    """`text` without URI credentials and without any of `secrets` (or their parts)."""
    out = strip_uri_credentials(text)
    for secret in secrets:
        if not secret:
            continue
        out = out.replace(secret, "***")
        for part in _credential_parts(secret):
            out = out.replace(part, "***")
    return out


def _credential_parts(secret: str) -> list[str]:
    match = URI_CREDENTIALS.search(secret)
    if not match:
        return []
    userinfo = match["userinfo"]
    parts = [userinfo]
    if ":" in userinfo:
        parts.append(userinfo.split(":", 1)[1])
    return [p for p in parts if len(p) >= 3]
