"""How deeply a job file nests, measured without recursion (pure: no I/O).

Python's TOML parser, pydantic, the inline-secrets walk and canonical JSON all recurse once per
level of nesting, so `x = [[[...]]]` 2,000 levels deep raised `RecursionError`, an exception no
caller expected: davitd crashed at start-up and `davit validate` printed a traceback. No job
needs more than a few levels, so a file nested deeper than `MAX_DEPTH` is refused before any of
them run, by two linear, loop-only checks:

- `text_problem` counts brackets in the TOML text (skipping strings and comments) before the
  parser sees it: deep arrays and inline tables;
- `value_problem` walks the parsed value with an explicit stack: deep dotted keys
  (`a.b.c...= 1`) and table headers (`[a.b.c...]`), which the parser builds without recursing.

`loads_bounded` is the one way davit parses TOML it is handed (job files, `davit.toml`): both
checks around `tomllib.loads`, every failure returned as a problem. Callers still catch
`RecursionError` around what they do with the value as a last line (a shape these checks did not
foresee).
"""

from __future__ import annotations

import re
import tomllib
from itertools import accumulate
from typing import Any

from davit.domain.errors import FieldProblem

MAX_DEPTH = 32

_STOP = re.compile(r"[#\"']")  # where code ends: a comment or a string
_BRACKETS = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_BASIC_STRING_END = re.compile(r'\\[\s\S]|["\n]')  # inside "...": an escape, the end, or a (bad) newline
_ML_BASIC_STRING_END = re.compile(r'\\[\s\S]|"""')
_LITERAL_STRING_END = re.compile(r"['\n]")  # '...' has no escapes and ends at its line's end


def loads_bounded(text: str) -> dict[str, Any] | FieldProblem:
    """`text` parsed as TOML, or the `(toml)` problem (or, from `value_problem`, the field)
    that stops it: bad syntax, or nesting deeper than `MAX_DEPTH` however it is written."""
    problem = text_problem(text)
    if problem is not None:
        return problem
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return FieldProblem("(toml)", str(exc))
    except RecursionError:
        return FieldProblem("(toml)", too_deep())
    return value_problem(raw) or raw


def too_deep(line: int | None = None) -> str:
    where = f"line {line}: " if line is not None else ""
    return f"{where}nested deeper than {MAX_DEPTH} levels"


def text_problem(text: str) -> FieldProblem | None:
    """A `(toml)` problem if the brackets of `text` open deeper than `MAX_DEPTH`.

    Counts `[`/`{` up and `]`/`}` down outside strings and comments. Malformed text may
    miscount; the parser then reports it (or, as a last line, the caller's RecursionError
    handler does). Each character is looked at a bounded number of times.
    """
    depth, pos, end = 0, 0, len(text)
    while pos < end:
        stop = _STOP.search(text, pos)
        code_end = stop.start() if stop else end
        steps = [_STEP[b] for b in _BRACKETS.findall(text, pos, code_end)]
        if steps and max(accumulate(steps, initial=depth)) > MAX_DEPTH:
            return FieldProblem("(toml)", too_deep(_line_of_excess(text, pos, code_end, depth)))
        depth += sum(steps)
        if stop is None:
            return None
        pos = _skip(text, stop.start())
    return None


def _skip(text: str, start: int) -> int:
    """The position after the comment or string that starts at `start`."""
    if text[start] == "#":
        newline = text.find("\n", start)
        return len(text) if newline < 0 else newline + 1
    if text.startswith("'''", start):
        close = text.find("'''", start + 3)
        return len(text) if close < 0 else _extra_quotes(text, close + 3, "'")
    if text[start] == "'":
        literal_end = _LITERAL_STRING_END.search(text, start + 1)
        return len(text) if literal_end is None else literal_end.end()
    pattern, closing = (_ML_BASIC_STRING_END, '"""') if text.startswith('"""', start) else (_BASIC_STRING_END, None)
    pos = start + (3 if closing else 1)
    while (found := pattern.search(text, pos)) is not None:
        pos = found.end()
        if not found.group().startswith("\\"):
            return _extra_quotes(text, pos, '"') if closing else pos
    return len(text)


def _extra_quotes(text: str, pos: int, quote: str) -> int:
    """A multi-line string may end in one or two quotes of its own before the closing three."""
    for _ in range(2):
        if text.startswith(quote, pos):
            pos += 1
    return pos


def _line_of_excess(text: str, pos: int, code_end: int, depth: int) -> int:
    for found in _BRACKETS.finditer(text, pos, code_end):
        depth += _STEP[found.group()]
        if depth > MAX_DEPTH:
            return text.count("\n", 0, found.start()) + 1
    return text.count("\n", 0, pos) + 1  # not reached: the caller saw the excess in this span


def value_problem(raw: dict[str, Any]) -> FieldProblem | None:
    """A problem naming the top-level field under which `raw` nests deeper than `MAX_DEPTH`."""
    stack: list[tuple[Any, int, str]] = [(value, 1, str(key)) for key, value in raw.items()]
    while stack:
        node, depth, top = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            return FieldProblem(top, too_deep())
        stack.extend((child, depth + 1, top) for child in children if isinstance(child, dict | list))
    return None
