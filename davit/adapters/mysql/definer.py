"""Leaving out the `DEFINER = account` clause of a view's, routine's, trigger's or event's CREATE.

A restore with `privileges = "skip"` creates these objects as the restoring account, as
`mariadb-dump --skip-definer` would have written them: in a server that lacks the snapshot's
accounts, an object whose definer does not exist is created (with a note) but fails each time
it is used ("The user specified as a definer does not exist"), and keeping a definer from a
snapshot also lets whoever wrote it pick the account the object runs as.

The clause sits in the statement's head, before the object's keyword
(`CREATE [OR REPLACE] [ALGORITHM=...] [DEFINER=...] [SQL SECURITY ...] VIEW`, `CREATE
[OR REPLACE] [DEFINER=...] [AGGREGATE] FUNCTION|PROCEDURE|TRIGGER|EVENT`): only the head is
read, token by token (no regular expression over the body), so a `DEFINER` written in a body
or a string is left alone.
"""

from __future__ import annotations

from davit.domain.errors import PermanentError

_OBJECT_WORDS = {"VIEW", "FUNCTION", "PROCEDURE", "TRIGGER", "EVENT", "AGGREGATE", "PACKAGE"}
_HEAD_TOKENS = 24  # CREATE OR REPLACE ALGORITHM = MERGE DEFINER = `u` @ `h` SQL SECURITY INVOKER VIEW: 15


def _quoted_end(text: str, start: int) -> int:
    """The index after the quoted name or string opening at `start` (doubled quote or, in a
    string, a backslash escapes)."""
    quote, i = text[start], start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "`":
            i += 2
        elif c == quote:
            if text[i + 1 : i + 2] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise PermanentError(f"unterminated {quote} in the head of {text[:80]!r}")


def _tokens(text: str) -> list[tuple[int, int]]:
    """(start, end) of the head's first tokens: words, quoted names and strings, single signs."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(text) and len(out) < _HEAD_TOKENS:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "`'\"":
            end = _quoted_end(text, i)
            out.append((i, end))
            i = end
        elif c.isalnum() or c in "_$.%-":
            end = i
            while end < len(text) and (text[end].isalnum() or text[end] in "_$.%-"):
                end += 1
            out.append((i, end))
            i = end
        else:
            out.append((i, i + 1))
            i += 1
    return out


def without_definer(create: str) -> str:
    """`create` without its head's `DEFINER = account` clause (unchanged when it has none)."""
    tokens = _tokens(create)
    words = [create[s:e].upper() for s, e in tokens]
    if not words or words[0] != "CREATE":
        return create
    for n, word in enumerate(words):
        if word in _OBJECT_WORDS:
            return create
        if word == "DEFINER" and words[n + 1 : n + 2] == ["="]:
            end = n + 3  # the account's name
            if words[end : end + 1] == ["@"]:
                end += 2  # @ host
            elif words[end : end + 2] == ["(", ")"]:
                end += 2  # CURRENT_USER()
            if end > len(tokens) or n + 2 >= len(tokens):
                break
            return create[: tokens[n][0]].rstrip() + " " + create[tokens[end - 1][1] :].lstrip()
    return create
