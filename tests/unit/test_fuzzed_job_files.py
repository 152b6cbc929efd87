"""Whatever an operator (or a broken editor) drops into jobs.d, davit gives a verdict: a job, or
an `InvalidJob` naming the file, a field and a reason. Never a crash, never a leaked secret.

The inputs are the shipped examples (one per kind) mutated by hypothesis: fields deleted,
replaced by values of the wrong type or shape, unknown fields added, the text cut short or
sprinkled with arbitrary characters.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from davit.daemon.config import ConfigModel, read_config
from davit.domain.errors import InvalidConfig, InvalidJob
from davit.domain.jobs import job_from_dict, parse_job, spec_from_json, spec_revision

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {p.name: p.read_text() for p in sorted((ROOT / "config" / "jobs.d").glob("*.toml"))}
SECRET = "S3cr3t-Fuzz-Pa55"
CREDENTIAL_URI = f"mongodb://fuzzuser:{SECRET}@db.example:27017/app"

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.just(""),
    st.just("/"),
    st.just("latest"),
    st.just("*"),
    st.just(CREDENTIAL_URI),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4),
    max_leaves=12,
)


def paths_of(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in node.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += paths_of(value, (*prefix, key))
    return out


@st.composite
def mutated_jobs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    job = tomllib.loads(EXAMPLES[name])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = paths_of(job)
        path = draw(st.sampled_from(paths))
        parent = job
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(toml_values)
        else:
            parent[draw(st.text(min_size=1, max_size=12))] = draw(toml_values)
        if not job:
            break
    return name, job


def assert_a_verdict(outcome: Any, file: str) -> None:
    if isinstance(outcome, InvalidJob):
        assert outcome.file == file and outcome.problems
        for problem in outcome.problems:
            assert problem.field and problem.reason
        assert str(outcome).startswith(f"{file}: ")
        assert SECRET not in str(outcome)
    else:  # a job: its spec survives the round trip through an event and keeps its revision
        again = spec_from_json(outcome.model_dump(mode="json"))
        assert again == outcome and spec_revision(again) == spec_revision(outcome)
        assert SECRET not in str(outcome.model_dump(mode="json"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_jobs())
def test_a_mutated_example_job_is_either_a_job_or_rejected_with_file_field_and_reason(case: tuple[str, dict[str, Any]]) -> None:
    name, raw = case
    try:
        outcome: Any = job_from_dict(raw, f"/etc/davit/jobs.d/{name}")
    except InvalidJob as exc:
        outcome = exc
    assert_a_verdict(outcome, f"/etc/davit/jobs.d/{name}")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(EXAMPLES)), st.data())
def test_a_damaged_job_file_text_is_either_a_job_or_rejected_with_file_field_and_reason(name: str, data: st.DataObject) -> None:
    text = EXAMPLES[name]
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    noise = data.draw(st.text(max_size=20))
    where = data.draw(st.integers(min_value=0, max_value=cut))
    damaged = text[:where] + noise + text[where:cut]
    try:
        outcome: Any = parse_job(damaged, name)
    except InvalidJob as exc:
        outcome = exc
    assert_a_verdict(outcome, name)


def test_every_shipped_example_parses_as_its_own_kind() -> None:
    for name, text in EXAMPLES.items():
        job = parse_job(text, name)
        assert job.kind == tomllib.loads(text)["kind"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["daemon", "retry", "data_path", "repositories", "other"]), toml_values, max_size=4))
def test_a_damaged_daemon_config_is_either_accepted_or_rejected_with_field_and_reason(
    tmp_path_factory: Any, raw: dict[str, Any]
) -> None:
    import json

    path = tmp_path_factory.mktemp("cfg") / "davit.toml"
    # TOML has no null and the standard library writes no TOML: JSON-shaped tables in inline form
    # are written by hand for the shapes the strategy makes.
    path.write_text("\n".join(f"{key} = {toml_inline(value)}" for key, value in raw.items()))
    try:
        model = read_config(path)
    except InvalidConfig as exc:
        assert exc.file == str(path) and exc.problems
        assert all(p.field and p.reason for p in exc.problems)
        assert SECRET not in str(exc)
    else:
        assert isinstance(model, ConfigModel)
        assert ConfigModel.model_validate(json.loads(model.model_dump_json())) == model


def toml_inline(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_inline(v)}" for k, v in value.items()) + "}"
