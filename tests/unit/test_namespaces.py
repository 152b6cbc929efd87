"""Namespace patterns as mongorestore defines them: include/exclude and from/to renaming."""

from __future__ import annotations

import pytest

from davit.domain.errors import InvalidJob
from davit.domain.jobs import parse_job
from davit.domain.namespaces import Matcher, PatternError, Renamer, select, split_ns


@pytest.mark.parametrize(
    ("pattern", "ns", "expected"),
    [
        ("app.*", "app.users", True),
        ("app.*", "app.users.archive", True),  # a star matches dots too
        ("app.*", "app2.users", False),
        ("app.user*", "app.users", True),
        ("app.user*", "app.user", True),
        ("app.user*", "app.orders", False),
        ("*.users", "shop.users", True),
        ("app.users", "app.users", True),
        ("app.users", "app.usersx", False),
        (r"app.\*", "app.*", True),  # an escaped star is a literal star
        (r"app.\*", "app.users", False),
        ("app.a+b", "app.a+b", True),  # regex characters are literal
        ("app.a+b", "app.aab", False),
        ("app.(x)", "app.(x)", True),
    ],
    ids=lambda v: str(v),
)
def test_include_pattern_matches_like_mongorestore(pattern: str, ns: str, expected: bool) -> None:
    assert Matcher.of([pattern]).matches(ns) is expected


@pytest.mark.parametrize(
    ("sources", "targets", "ns", "expected"),
    [
        (["app.*"], ["staging.*"], "app.users", "staging.users"),
        (["app.*"], ["staging.*"], "other.users", "other.users"),  # unmatched: unchanged
        (["*.*"], ["*_copy.*"], "app.users", "app_copy.users"),
        (["app.user*"], ["app.person*"], "app.users", "app.persons"),
        (["$db$.$coll$"], ["$coll$.$db$"], "app.users", "users.app"),
        (["data.$prefix$_$customer$"], ["$customer$.$prefix$"], "data.sales_acme", "acme.sales"),
        (["app.*", "app.users"], ["one.*", "two.users"], "app.users", "two.users"),  # the last pair given wins
        (["app.*", "app.users"], ["one.*", "two.users"], "app.orders", "one.orders"),
        ([r"app.\*"], [r"app.star"], "app.*", "app.star"),
    ],
    ids=lambda v: str(v),
)
def test_rename_maps_namespaces_like_mongorestore(sources: list[str], targets: list[str], ns: str, expected: str) -> None:
    assert Renamer.of(sources, targets).rename(ns) == expected


@pytest.mark.parametrize(
    ("sources", "targets", "reason"),
    [
        (["app.*"], ["staging.users"], "different number of asterisks"),
        (["$db$.x"], ["$other$.x"], "unknown variable 'other'"),
        (["$db$.$db$"], ["$db$.x"], "used more than once"),
        (["$db.x"], ["$db.x"], "odd number of dollar signs"),
        (["a.*", "b.*"], ["c.*"], "ns_from has 2 patterns but ns_to has 1"),
    ],
    ids=lambda v: str(v),
)
def test_bad_renames_are_refused_with_the_reason(sources: list[str], targets: list[str], reason: str) -> None:
    with pytest.raises(PatternError, match=reason):
        Renamer.of(sources, targets)


def test_include_then_exclude_selects_namespaces() -> None:
    names = ["app.users", "app.orders", "app.sessions", "logs.app", "app.cache1", "app.cache2"]
    assert select(names, ["app.*"], ["app.sessions", "app.cache*"]) == ["app.users", "app.orders"]
    assert select(names, [], ["app.*"]) == ["logs.app"]


def test_dollar_is_refused_in_include_patterns() -> None:
    with pytest.raises(PatternError, match=r"'\$' is not allowed"):
        Matcher.of(["$db$.x"])


def test_namespace_splits_at_the_first_dot() -> None:
    assert split_ns("app.users.archive") == ("app", "users.archive")
    with pytest.raises(PatternError):
        split_ns("nodot")


def test_a_restore_job_with_mismatched_renames_names_the_field() -> None:
    text = (
        'name = "r"\nkind = "mongo.restore"\n[source]\njob = "b"\n[target]\nuri_env = "U"\n'
        'ns_from = ["app.*"]\nns_to = ["staging"]\n'
    )
    with pytest.raises(InvalidJob) as err:
        parse_job(text, "r.toml")
    [problem] = err.value.problems
    assert problem.field == "target" and "different number of asterisks" in problem.reason


def test_a_backup_job_needs_exactly_one_uri_reference_and_never_an_inline_uri() -> None:
    base = 'name = "b"\nkind = "mongo.backup"\n[source]\n'
    with pytest.raises(InvalidJob, match="exactly one of uri_env or uri_file"):
        parse_job(base + 'uri_env = "A"\nuri_file = "/x"\n', "b.toml")
    with pytest.raises(InvalidJob, match="never written inline"):
        parse_job(base + 'uri = "mongodb://u:p@h/"\n', "b.toml")
    with pytest.raises(InvalidJob, match=r"query for app\.x is not JSON"):
        parse_job(base + 'uri_env = "A"\n[source.query]\n"app.x" = "{oops"\n', "b.toml")
