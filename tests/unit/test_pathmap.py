"""path_map of compose.migrate: where an outside bind lands, hostile entries refused naming the
field, and the compose file's bind entries rewritten without touching the container side."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from davit.adapters.compose.binds import BindPlan, bind_mismatches, plan_binds, rewrite_compose, unwritten_mapped
from davit.adapters.compose.target import TargetLayout
from davit.domain.jobs import ComposeMigrateJob
from davit.domain.pathmap import check_path_map, map_path, placement_conflicts

MAP = {"/srv": "/data/srv", "/srv/uploads": "/data/shop/uploads"}


@pytest.mark.parametrize(
    ("path", "lands"),
    [
        ("/srv/uploads", "/data/shop/uploads"),
        ("/srv/uploads/img", "/data/shop/uploads/img"),
        ("/srv/uploads2", "/data/srv/uploads2"),  # whole components: /srv/uploads does not match
        ("/srv", "/data/srv"),
        ("/srvx/a", None),
        ("/opt/x", None),
    ],
    ids=["exact", "under", "sibling-takes-shorter", "top", "prefix-not-component", "unmapped"],
)
def test_the_longest_whole_component_prefix_places_a_path(path: str, lands: str | None) -> None:
    assert map_path(path, MAP) == lands


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"srv/uploads": "/data"}, "must be an absolute path"),
        ({"/srv": "data"}, "must be an absolute path"),
        ({"/srv/../etc": "/data"}, "not normalised"),
        ({"/srv": "/data/../etc"}, "not normalised"),
        ({"/srv//x": "/data"}, "not normalised"),
        ({"/srv/./x": "/data"}, "not normalised"),
        ({"/srv/": "/data"}, "ends with '/'"),
        ({"/srv": "/data\n/etc"}, "control character"),
        ({"/srv": "/"}, "cannot be a target"),
        ({"/a": "/data", "/b": "/data"}, "several sources map to /data"),
        ({"/a": "/" + "x" * 5000}, "longer than"),
    ],
    ids=[
        "relative-key",
        "relative-target",
        "dotdot-key",
        "dotdot-target",
        "empty",
        "dot",
        "slash",
        "newline",
        "root",
        "shared",
        "long",
    ],
)
def test_a_hostile_path_map_is_refused_naming_the_entry(entry: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_path_map(entry)


def test_a_job_with_a_bad_path_map_or_outside_binds_is_refused_naming_the_field() -> None:
    base: dict[str, Any] = {
        "name": "move",
        "kind": "compose.migrate",
        "source": {"project": "shop"},
        "target": {"host": "h", "key_file": "/k", "known_hosts": "/kh", "base_path": "/b", "helper_image": "i"},
    }
    with pytest.raises(ValidationError, match=r"path_map[\s\S]*'/srv/\.\./etc' is not normalised"):
        ComposeMigrateJob.model_validate({**base, "path_map": {"/srv/../etc": "/x"}})
    with pytest.raises(ValidationError, match="outside_binds"):
        ComposeMigrateJob.model_validate({**base, "outside_binds": "follow"})
    assert ComposeMigrateJob.model_validate(base).outside_binds == "fail"


def test_two_sources_landing_in_one_place_or_nested_differently_conflict() -> None:
    assert placement_conflicts({"/a": "/x", "/b": "/x"}) == ["/a and /b would both land at /x"]
    assert placement_conflicts({"/a": "/x", "/b": "/x/b"}) == ["/b would land at /x/b, inside /x where /a lands"]
    assert placement_conflicts({"/a": "/x", "/a/b": "/x/b"}) == [], "nested the same way on both sides"


def model(*mounts: tuple[str, str]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for service, source in mounts:
        services.setdefault(service, {"volumes": []})["volumes"].append({"type": "bind", "source": source, "target": "/d"})
    return {"services": services}


LAYOUT = TargetLayout("/base", "shop")


def test_an_unmapped_outside_bind_is_a_problem_naming_service_and_path_unless_kept_or_skipped() -> None:
    m = model(("web", "/proj/site"), ("web", "/srv/uploads"), ("worker", "/srv/uploads"))
    failing = plan_binds(m, "/proj", LAYOUT, {}, "fail")
    assert len(failing.problems) == 1
    assert "services web, worker" in failing.problems[0] and "/srv/uploads" in failing.problems[0]
    kept = plan_binds(m, "/proj", LAYOUT, {}, "keep-path")
    assert kept.problems == [] and kept.targets() == {"/proj/site": "/base/shop/site", "/srv/uploads": "/srv/uploads"}
    skipped = plan_binds(m, "/proj", LAYOUT, {}, "skip")
    assert skipped.problems == [] and skipped.targets() == {"/proj/site": "/base/shop/site"}
    assert skipped.skipped == ["services web, worker: /srv/uploads"]


@pytest.mark.parametrize("target", ["/base/.davit/x", "/base", "/base/.davit"], ids=["in-store", "holds-base", "store-itself"])
def test_a_placement_in_the_store_or_around_the_project_is_refused(target: str) -> None:
    plan = plan_binds(model(("web", "/srv/up")), "/proj", LAYOUT, {"/srv/up": target}, "fail")
    assert plan.problems and "/srv/up would land at" in plan.problems[0]


COMPOSE = """\
# the shop
services:
  web:
    image: x
    volumes:
      - /srv/uploads:/srv/uploads:ro   # same path inside
      - "../shared:/shared"
      - ./site:/site
      - type: bind
        source: /srv/uploads/img
        target: /img
      - ${LOGS}:/logs
    environment: {PATH_IN: /srv/uploads}
"""


def test_the_compose_file_names_the_mapped_place_and_keeps_everything_else() -> None:
    targets = {"/srv/uploads": "/data/up", "/srv/uploads/img": "/data/up/img", "/shared": "/shared"}
    out = rewrite_compose(COMPOSE, "/proj", targets, lambda s: s.replace("/proj", "/base/shop"))
    assert out.text == COMPOSE.replace("- /srv/uploads:/srv/uploads:ro", '- "/data/up:/srv/uploads:ro"').replace(
        "source: /srv/uploads/img", 'source: "/data/up/img"'
    ).replace('"../shared:/shared"', '"/shared:/shared"')
    assert out.rewritten == {"/srv/uploads", "/srv/uploads/img", "/shared"}
    assert out.interpolated == ["${LOGS}"]


def test_a_mapped_source_no_compose_file_names_literally_fails_preflight() -> None:
    plan = plan_binds(model(("web", "/srv/logs")), "/proj", LAYOUT, {"/srv": "/data"}, "fail")
    out = rewrite_compose(COMPOSE, "/proj", plan.targets())
    problems = unwritten_mapped(plan, [out])
    assert problems == [
        "service web: bind source /srv/logs is mapped to /data/logs, but no compose file names it literally "
        "(interpolated entries: ${LOGS}); davit rewrites literal paths only"
    ]


def test_a_target_model_mounting_an_unplaced_path_is_named() -> None:
    plan = BindPlan([{"source": "/srv/up", "target": "/data/up", "how": "mapped", "services": ["web"]}])
    assert bind_mismatches(model(("web", "/data/up")), plan) == []
    assert bind_mismatches(model(("web", "/srv/up")), plan) == [
        "service web on the target bind-mounts /srv/up, not where the migration put its data"
    ]


def test_a_file_that_is_not_yaml_is_only_translated() -> None:
    assert rewrite_compose("a: [", "/p", {"/x": "/y"}, lambda s: s.upper()).text == "A: ["


ANCHORED = """x-up: &up /srv/uploads
services:
  web:
    image: nginx
    environment:
      UPLOAD_DIR: *up
    volumes:
      - type: bind
        source: *up
        target: /up
"""


def test_a_bind_source_behind_a_yaml_anchor_is_left_whole_and_named_at_preflight() -> None:
    """Rewriting the anchored scalar dropped its `&up` (every `*up` then undefined: the target's
    compose file no longer parsed) and would have changed the environment variable aliasing it."""
    plan = plan_binds(model(("web", "/srv/uploads")), "/proj", LAYOUT, MAP, "fail")
    out = rewrite_compose(ANCHORED, "/proj", plan.targets())
    assert out.text == ANCHORED
    assert yaml.safe_load(out.text)["services"]["web"]["environment"]["UPLOAD_DIR"] == "/srv/uploads"
    assert unwritten_mapped(plan, [out]) == [
        "service web: bind source /srv/uploads is mapped to /data/shop/uploads, but no compose file names it literally "
        "(entries behind a YAML anchor, shared with what aliases it: /srv/uploads); davit rewrites literal paths only"
    ]
