"""Text from a job file, an error, a peer or the log, made safe to print on a terminal.

Such text is hostile: an escape sequence in a job's error could move the cursor, retitle the
window or hide the line an operator needs to read, and a bidirectional override could make a
line read as something else. Control characters (C0, DEL, C1) and Unicode format characters
(bidi overrides, zero-width joiners) are written as backslash escapes; everything printable,
including non-ASCII letters, is kept.
"""

from __future__ import annotations

import unicodedata


def for_terminal(text: str) -> str:
    """`text` with every control and format character written as `\\xNN`/`\\uNNNN`."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
