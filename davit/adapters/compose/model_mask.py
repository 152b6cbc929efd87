"""The compose model as a migration records it: its structure, never its values.

`inspect` records the project's resolved model (`docker compose config --format json`) so an
operator can see what was moved. The event log is kept for years and read by anyone who may
run `davit show`, so the model keeps only what describes the project's shape: service names,
images, ports, networks, volumes and bind paths, dependencies, restart policies. Every other
value -- environment values, commands, entrypoints, healthcheck tests, build args, label
values, driver options, extension fields (`x-*`) -- is replaced by `MASK`, whatever its name
says: which of them holds a password is not something a name can tell (`--requirepass X`,
`-pX`, `SMTP_PW`). Mapping keys stay (variable and label names are structure).

A value kept by the rules above is masked all the same when the project interpolated it (the
model as written, from `config --no-interpolate`, has a `$` there): what came from `.env` or
davitd's environment is not shown, even in a field that is usually harmless.

A readable field may still hold a URL written with its credentials: a build context can be a
git repository (`https://x-access-token:TOKEN@github.com/org/repo.git#main`) or a tarball
whose URL carries a token in its query. Such a URL keeps its scheme, host, path and fragment
(the git ref), and loses its user information and query.
"""

from __future__ import annotations

import re
from typing import Any

from davit.domain.redaction import strip_uri_credentials

MASK = "***"
ANY = "*"  # one mapping key or list index
REST = "**"  # the whole subtree below

# Paths (from the model's root) whose values stay readable. `*` matches one key or index,
# `**` everything below.
READABLE: tuple[tuple[str, ...], ...] = (
    ("name",),
    ("services", ANY, "image"),
    ("services", ANY, "container_name"),
    ("services", ANY, "platform"),
    ("services", ANY, "restart"),
    ("services", ANY, "profiles", ANY),
    ("services", ANY, "expose", ANY),
    ("services", ANY, "ports", REST),
    ("services", ANY, "volumes", ANY, "type"),
    ("services", ANY, "volumes", ANY, "source"),
    ("services", ANY, "volumes", ANY, "target"),
    ("services", ANY, "volumes", ANY, "read_only"),
    ("services", ANY, "volumes", ANY, "bind", REST),
    ("services", ANY, "volumes", ANY, "volume", REST),
    ("services", ANY, "networks", ANY, "aliases", ANY),
    ("services", ANY, "networks", ANY, "ipv4_address"),
    ("services", ANY, "networks", ANY, "ipv6_address"),
    ("services", ANY, "depends_on", ANY, "condition"),
    ("services", ANY, "depends_on", ANY, "required"),
    ("services", ANY, "depends_on", ANY, "restart"),
    ("services", ANY, "configs", ANY, "source"),
    ("services", ANY, "configs", ANY, "target"),
    ("services", ANY, "secrets", ANY, "source"),
    ("services", ANY, "secrets", ANY, "target"),
    ("services", ANY, "build", "context"),
    ("services", ANY, "build", "dockerfile"),
    ("services", ANY, "env_file", ANY, "path"),
    ("services", ANY, "env_file", ANY, "required"),
    ("networks", ANY, "name"),
    ("networks", ANY, "driver"),
    ("networks", ANY, "external"),
    ("networks", ANY, "internal"),
    ("networks", ANY, "attachable"),
    ("networks", ANY, "enable_ipv6"),
    ("networks", ANY, "ipam", "driver"),
    ("networks", ANY, "ipam", "config", REST),
    ("volumes", ANY, "name"),
    ("volumes", ANY, "driver"),
    ("volumes", ANY, "external"),
    ("configs", ANY, "name"),
    ("configs", ANY, "file"),
    ("configs", ANY, "external"),
    ("secrets", ANY, "name"),
    ("secrets", ANY, "file"),
    ("secrets", ANY, "external"),
    ("secrets", ANY, "environment"),  # the name of a variable, not its value
)


def masked_model(model: dict[str, Any], as_written: dict[str, Any] | None = None) -> dict[str, Any]:
    """`model` with every value outside `READABLE`, and every value `as_written` shows was
    interpolated, replaced by `MASK`. Booleans and nulls stay (they carry no secret);
    strings and numbers are masked. Extension fields (`x-*`) are masked whole, keys below them too."""
    out = _mask(model, (), as_written, False)
    return out if isinstance(out, dict) else {}


def _shown(value: Any) -> Any:
    """A readable value as recorded: a URL in it without its credentials or query."""
    if not isinstance(value, str) or "://" not in value:
        return value
    return _without_queries(strip_uri_credentials(value))


def _without_queries(text: str) -> str:
    """`text` with the query of each URL in it (from `?` to `#` or the URL's end) masked. One
    pass: each URL is cut at the next whitespace and looked at once."""
    out: list[str] = []
    done = 0
    while (scheme_end := text.find("://", done)) != -1:
        space = _SPACE.search(text, scheme_end)
        end = space.start() if space else len(text)
        url = text[scheme_end:end]
        query = url.find("?")
        if query != -1:
            fragment = url.find("#", query)
            url = f"{url[:query]}?{MASK}{url[fragment:] if fragment != -1 else ''}"
        out.append(text[done:scheme_end] + url)
        done = end
    out.append(text[done:])
    return "".join(out)


_SPACE = re.compile(r"\s")


def _readable(path: tuple[str, ...]) -> bool:
    return any(_matches(rule, path) for rule in READABLE)


def _matches(rule: tuple[str, ...], path: tuple[str, ...]) -> bool:
    for i, part in enumerate(rule):
        if part == REST:
            return len(path) > i
        if i >= len(path) or (part != ANY and part != path[i]):
            return False
    return len(rule) == len(path)


def _interpolated(written: Any) -> bool:
    return isinstance(written, str) and "$" in written


def _child(written: Any, key: str | int) -> Any:
    if isinstance(written, dict) and isinstance(key, str):
        return written.get(key)
    if isinstance(written, list) and isinstance(key, int) and key < len(written):
        return written[key]
    return None


def _mask(node: Any, path: tuple[str, ...], written: Any, interpolated: bool) -> Any:
    # a string as written where the resolved model has a structure (short syntax: a port
    # "${PORT}:80" became a mapping): all of it came through interpolation
    interpolated = interpolated or _interpolated(written)
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("x-"):
                out[key] = MASK  # an extension holds whatever its author put there, keys included
                continue
            out[key] = _mask(value, (*path, str(key)), _child(written, key), interpolated)
        return out
    if isinstance(node, list):
        return [_mask(value, (*path, str(i)), _child(written, i), interpolated) for i, value in enumerate(node)]
    if node is None or isinstance(node, bool):
        return node
    if not interpolated and _readable(path):
        return _shown(node)
    return MASK
