"""Where each bind-mounted path of a migrated compose project lands, and the compose files
rewritten to name it there.

A bind source under the project directory follows the project (`<base_path>/<project>/...`).
One outside it goes where the job's `path_map` puts it (longest prefix, `davit/domain/pathmap.py`);
unmapped, `outside_binds` decides: `fail` (pre-flight fails naming the service and path, before
anything is stopped), `keep-path` (copied to the same path on the target), `skip` (left
behind, with a warning). The compose files are rewritten where they name such a source: the
entry's source scalar only (located through PyYAML's node marks, so comments, layout, the
container side and every other value stay as written), never by a search and replace that
could also hit a container path. A source written through an interpolation (`${DATA}`) cannot
be rewritten; pre-flight fails for a mapped one, and after the files are written the target's
own `docker compose config` must name every bind where the migration put it.

The target side is confined: a placement must not lie in davit's store or hold the project
directory, and no existing component of its path on the target may be a symlink, wherever it
lies (the project directory included). Pre-flight checks so, by name, to fail before anything
stops; the unpack itself reaches the place one component at a time from `/` and unpacks into
the directory it holds (`confined.py`), so a symlink planted after any check is never followed.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from davit.adapters.compose.source import Item
from davit.adapters.compose.target import TargetLayout, compose
from davit.adapters.ssh.remote import RemoteHost
from davit.domain.errors import PermanentError
from davit.domain.pathmap import map_path, placement_conflicts, splice, within

q = shlex.quote
PROJECT, MAPPED, KEPT, SKIPPED, UNMAPPED = "project", "mapped", "keep-path", "skip", "unmapped"


@dataclass
class BindPlan:
    """Every bind source of the project: where it lands, and the services that mount it."""

    binds: list[dict[str, Any]] = field(default_factory=list)  # {source, target, how, services}
    problems: list[str] = field(default_factory=list)  # each fails pre-flight
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"binds": self.binds, "problems": self.problems, "skipped": self.skipped}

    def targets(self) -> dict[str, str]:
        return {b["source"]: b["target"] for b in self.binds if b["how"] != SKIPPED}


def bind_sources(model: dict[str, Any]) -> dict[str, list[str]]:
    """Bind source path -> the services mounting it, from the resolved model."""
    found: dict[str, list[str]] = {}
    for name, service in sorted((model.get("services") or {}).items()):
        for mount in (service or {}).get("volumes") or []:
            if isinstance(mount, dict) and mount.get("type") == "bind" and isinstance(mount.get("source"), str):
                users = found.setdefault(os.path.normpath(mount["source"]), [])
                if name not in users:
                    users.append(name)
    return found


def plan_binds(
    model: dict[str, Any], working_dir: str, layout: TargetLayout, path_map: dict[str, str], outside_binds: str
) -> BindPlan:
    plan = BindPlan()
    wd = working_dir.rstrip("/")
    for source, services in sorted(bind_sources(model).items()):
        who = f"service{'s' if len(services) > 1 else ''} {', '.join(services)}"
        bind: dict[str, Any]
        if within(source, wd):
            bind = {"source": source, "target": layout.project_dir + source[len(wd) :], "how": PROJECT}
        elif (mapped := map_path(source, path_map)) is not None:
            bind = {"source": source, "target": mapped, "how": MAPPED}
        elif outside_binds == "keep-path":
            bind = {"source": source, "target": source, "how": KEPT}
        elif outside_binds == "skip":
            bind = {"source": source, "target": source, "how": SKIPPED}
            plan.skipped.append(f"{who}: {source}")
        else:
            bind = {"source": source, "target": source, "how": UNMAPPED}
            plan.problems.append(
                f"{who} bind-mount{'' if len(services) > 1 else 's'} {source}, outside the project directory {wd}, "
                "and path_map does not place it (add it to path_map, or set outside_binds = "
                '"keep-path" or "skip")'
            )
        bind["services"] = services
        plan.binds.append(bind)
    for bind in plan.binds:
        if bind["how"] in (MAPPED, KEPT):
            plan.problems += _confinement(bind["source"], bind["target"], layout)
    plan.problems += placement_conflicts(plan.targets())
    return plan


def _confinement(source: str, target: str, layout: TargetLayout) -> list[str]:
    base = layout.base_path.rstrip("/") or "/"
    stores = f"{base.rstrip('/')}/.davit"  # every project's store on the target
    if within(target, stores):
        return [f"{source} would land at {target}, in davit's stores {stores} on the target"]
    if within(layout.project_dir, target) or within(base, target):
        return [f"{source} would land at {target}, which holds the base path {base} on the target"]
    return []


def apply_plan(items: list[Item], plan: BindPlan) -> list[Item]:
    """The items to move with each bind's target placed by the plan; skipped binds left out."""
    placed = {b["source"]: b for b in plan.binds}
    kept = []
    for item in items:
        bind = placed.get(os.path.normpath(item.source)) if item.kind == "bind" else None
        if bind is not None:
            if bind["how"] == SKIPPED:
                continue
            item.target = bind["target"]
        kept.append(item)
    return kept


# --- the compose files, rewritten where they name an outside bind --------------------------------


@dataclass
class Rewrite:
    text: str
    rewritten: set[str] = field(default_factory=set)  # sources written literally (rewritten or already right)
    interpolated: list[str] = field(default_factory=list)  # bind entries the rewrite cannot read
    anchored: list[str] = field(default_factory=list)  # bind sources under a YAML anchor: not rewritten


def rewrite_compose(text: str, base_dir: str, targets: dict[str, str], between: Callable[[str], str] = lambda s: s) -> Rewrite:
    """`text` (a compose file) with each bind entry's source that `targets` places elsewhere
    replaced by its target path (as a double-quoted YAML scalar); `between` transforms the text
    outside those entries (the project directory's translation). Relative and `~` sources are
    resolved against `base_dir` and the home of this host, as compose resolves them."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return Rewrite(between(text))
    result = Rewrite(text)
    spans: dict[int, tuple[int, int, str]] = {}
    for node, raw, rebuild in _bind_entries(root):
        if "$" in raw:
            result.interpolated.append(raw)
            continue
        if text.startswith(("&", "!"), node.start_mark.index):
            # an anchored (or tagged) scalar: its span begins at `&name`, so replacing it dropped
            # the anchor and left every `*name` undefined (the target's compose file no longer
            # parsed), and the value is shared with whatever else aliases it (an environment
            # variable, a label): not rewritten, so pre-flight names it (`unwritten_mapped`)
            result.anchored.append(raw)
            continue
        source = os.path.normpath(os.path.join(base_dir, os.path.expanduser(raw)))
        target = targets.get(source)
        if target is None:
            continue
        result.rewritten.add(source)
        if raw != target:
            spans[node.start_mark.index] = (node.start_mark.index, node.end_mark.index, json.dumps(rebuild(target)))
    pieces = sorted(spans.values())
    # `between` runs on the text around the rewritten scalars only, so a new path is never translated again
    edges = [0] + [i for start, end, _ in pieces for i in (start, end)] + [len(text)]
    gaps = list(zip(edges[::2], edges[1::2], strict=True))
    result.text = splice(text, pieces + [(a, b, between(text[a:b])) for a, b in gaps if b > a])
    return result


def _bind_entries(root: yaml.Node | None) -> Iterator[tuple[yaml.Node, str, Callable[[str], str]]]:
    """(scalar node, source as written, how to rebuild the scalar with another source) for each
    bind entry of each service's `volumes`; aliases are visited once."""
    seen: set[int] = set()
    for service in _mapping_values(_get(root, "services")):
        volumes = _get(service, "volumes")
        if not isinstance(volumes, yaml.SequenceNode):
            continue
        for entry in volumes.value:
            if id(entry) in seen:
                continue
            seen.add(id(entry))
            if isinstance(entry, yaml.ScalarNode) and isinstance(entry.value, str):
                raw, sep, rest = entry.value.partition(":")
                if sep and raw.startswith(("/", ".", "~", "$")):
                    yield entry, raw, _short_syntax(rest)
            elif isinstance(entry, yaml.MappingNode):
                kind, source = _get(entry, "type"), _get(entry, "source")
                if isinstance(kind, yaml.ScalarNode) and kind.value == "bind" and isinstance(source, yaml.ScalarNode):
                    yield source, str(source.value), lambda new: new


def _short_syntax(rest: str) -> Callable[[str], str]:
    return lambda new: f"{new}:{rest}"


def _get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _mapping_values(node: yaml.Node | None) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for _k, v in node.value:
            yield v


def unwritten_mapped(plan: BindPlan, rewrites: list[Rewrite]) -> list[str]:
    """Pre-flight: mapped sources no compose file names literally (so none could be rewritten)."""
    found = set().union(*(r.rewritten for r in rewrites)) if rewrites else set()
    interpolated = sorted({raw for r in rewrites for raw in r.interpolated})
    anchored = sorted({raw for r in rewrites for raw in r.anchored})
    return [
        f"service{'s' if len(b['services']) > 1 else ''} {', '.join(b['services'])}: bind source {b['source']} is mapped "
        f"to {b['target']}, but no compose file names it literally"
        + (f" (interpolated entries: {', '.join(interpolated)})" if interpolated else "")
        + (f" (entries behind a YAML anchor, shared with what aliases it: {', '.join(anchored)})" if anchored else "")
        + "; davit rewrites literal paths only"
        for b in plan.binds
        if b["how"] == MAPPED and b["source"] not in found
    ]


# --- the target side ----------------------------------------------------------------------------


def symlink_guard(path: str) -> str:
    """A shell command that fails, printing the first symlink among `path`'s existing components."""
    parts = path.strip("/").split("/")
    prefixes = " ".join(q("/" + "/".join(parts[: i + 1])) for i in range(len(parts)))
    return (
        f'for p in {prefixes}; do if [ -L "$p" ]; then echo "symlink on the target: $p" >&2; exit 3; fi; '
        '[ -e "$p" ] || break; done'
    )


class BindsMisplaced(PermanentError):
    pass


def check_target_paths(host: RemoteHost, plan: BindPlan) -> list[str]:
    """Pre-flight on the target: no placement reaches through a symlink, the project's own
    (under its directory) included."""
    problems = []
    for bind in plan.binds:
        if bind["how"] in (MAPPED, KEPT, PROJECT):
            done = host.run(symlink_guard(bind["target"]), check=False)
            if done.status != 0:
                problems.append(f"{bind['source']} would land at {bind['target']}: {done.stderr.strip()[-300:]} (never followed)")
    return problems


def bind_mismatches(model: dict[str, Any], plan: BindPlan) -> list[str]:
    """After the files are written: every bind in the target's resolved model where the plan put it."""
    expected: dict[str, set[str]] = {}
    for bind in plan.binds:
        for service in bind["services"]:
            expected.setdefault(service, set()).add(bind["target"])
    return [
        f"service {service} on the target bind-mounts {source}, not where the migration put its data"
        for source, services in sorted(bind_sources(model).items())
        for service in services
        if source not in expected.get(service, set())
    ]


# --- what the migration's steps call --------------------------------------------------------------


def plan_from(info: dict[str, Any]) -> BindPlan | None:
    """The plan recorded at inspect; None for a run inspected by a davit without one."""
    recorded = info.get("binds")
    if recorded is None:
        return None
    return BindPlan(list(recorded["binds"]), list(recorded["problems"]), list(recorded["skipped"]))


def compose_texts(info: dict[str, Any], layout: TargetLayout, read: Callable[[str], bytes] | None = None) -> dict[str, Rewrite]:
    """Each compose file of the project (the `-f` files, and extended or included YAML files
    that move with it), rewritten for the target: outside binds placed, the project directory
    translated in the rest of the text. `read` reads a file of the source (default: this host's)."""
    plan = plan_from(info)
    wd = info["working_dir"].rstrip("/")
    targets = {b["source"]: b["target"] for b in plan.binds if b["how"] in (MAPPED, KEPT)} if plan else {}
    compose_files = set(info.get("compose_files") or [])
    out: dict[str, Rewrite] = {}
    for rel in info.get("translated", info["files"]):
        if rel not in compose_files and not rel.endswith((".yml", ".yaml")):
            continue
        local = info["files"][rel]
        try:
            text = read(local).decode("utf-8") if read else Path(local).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # not text compose can read either: copied byte for byte (translated as before)
        base = wd if rel in compose_files else os.path.dirname(local)
        out[rel] = rewrite_compose(text, base, targets, lambda s: s.replace(wd, layout.project_dir))
    return out


def preflight_problems(
    info: dict[str, Any], layout: TargetLayout, host: RemoteHost, read: Callable[[str], bytes] | None = None
) -> list[str]:
    """What fails pre-flight about the binds: unplaced or clashing placements, mapped sources no
    compose file names literally, placements reaching through a symlink on the target."""
    plan = plan_from(info)
    if plan is None:
        return []
    problems = plan.problems + unwritten_mapped(plan, list(compose_texts(info, layout, read).values()))
    return problems + check_target_paths(host, plan)


def verify_on_target(host: RemoteHost, layout: TargetLayout, project_args: str, info: dict[str, Any]) -> None:
    """The written project, resolved by the target's compose, mounts every bind where its data went."""
    plan = plan_from(info)
    if plan is None:
        return
    model = json.loads(compose(host, layout, f"{project_args} config --format json", timeout=120))
    if problems := bind_mismatches(model, plan):
        raise BindsMisplaced("; ".join(problems))
