"""Keeping credentials out of text that leaves davit (pure: no I/O).

A credential-bearing URI (`scheme://user:password@host/...`) keeps its scheme, host and path
and loses its user information. This is the one rule both layers apply: the domain to the
messages it builds from an operator's input (a URI pasted into the wrong field is echoed back
without its password), `adapters/secrets.py` to everything an adapter emits.
"""

from __future__ import annotations

import re

URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")


def has_uri_password(text: str) -> bool:
    """True if `text` holds a URI whose user information carries a password (`user:pw@`)."""
    return any(m["userinfo"].partition(":")[2] for m in URI_CREDENTIALS.finditer(text))


def strip_uri_credentials(text: str) -> str:
    return URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)
