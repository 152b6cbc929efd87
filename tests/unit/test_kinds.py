"""One registration per kind: the table of kinds (`davit/daemon/kinds.py`), the job specs
(`domain/jobs/`), the adapters' work classes and the examples in `config/jobs.d/` agree.

A kind added in one place and forgotten in another fails here and in `davit validate`, not when
its first run starts. Everything is real: the example files, `load_job_file`, the `validate`
command, the daemon's `Parts` over a real home, and the adapters' classes.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from davit.adapters.runwork import RunInputs
from davit.daemon.bootstrap import Parts
from davit.daemon.cli import validate
from davit.daemon.config import load_settings
from davit.daemon.jobfiles import load_job_file
from davit.daemon.kinds import CHECKS, KINDS, kind_checks, leftover_remover, load, work_class
from davit.domain.errors import EXIT_USAGE, InvalidConfig, JobFilesInvalid
from davit.domain.jobs import KINDS as SPEC_KINDS
from davit.domain.jobs import AnyJob, VolumeBackupJob
from davit.domain.ports import JobWork
from davit.domain.runs import RunView

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config" / "jobs.d").glob("*.toml"))


@pytest.fixture
def examples(jobs_dir: Path) -> Path:
    """The example job files, copied into a jobs directory davitd would read."""
    for example in EXAMPLES:
        shutil.copyfile(example, jobs_dir / example.name)
        (jobs_dir / example.name).chmod(0o644)
    return jobs_dir


@pytest.fixture
def secrets(examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets the examples name, so their work can be built (a MongoDB URI is resolved then);
    nothing connects to them."""
    monkeypatch.setenv("MONGO_URI", "mongodb://127.0.0.1:9/")
    monkeypatch.setenv("WEAVIATE_API_KEY", "not-a-key")
    uri_file = tmp_path / "staging-mongo.uri"
    uri_file.write_text("mongodb://127.0.0.1:9/\n")
    uri_file.chmod(0o600)
    for path in examples.glob("*.toml"):
        path.write_text(path.read_text().replace("/etc/davit/staging-mongo.uri", str(uri_file)))


def example_of(kind: str, examples: Path) -> Path:
    found = [p for p in sorted(examples.glob("*.toml")) if f'kind = "{kind}"' in p.read_text()]
    assert found, f"no example job of kind {kind} in config/jobs.d/"
    return found[0]


def example_spec(kind: str, examples: Path) -> AnyJob:
    loaded = load_job_file(example_of(kind, examples), examples)
    assert loaded.spec is not None, loaded.problems
    return loaded.spec


def run_view(spec: AnyJob) -> RunView:
    """A run of `spec` as the daemon's log shows it when the run is about to be prepared."""
    return RunView(run_id="k1", job=spec.name, kind=spec.kind, spec=spec.model_dump(mode="json"))


def test_the_table_of_kinds_names_exactly_the_kinds_the_job_specs_declare() -> None:
    only_specs, only_table = sorted(set(SPEC_KINDS) - set(KINDS)), sorted(set(KINDS) - set(SPEC_KINDS))
    assert set(KINDS) == set(SPEC_KINDS), f"only specs: {only_specs}; only in davit/daemon/kinds.py: {only_table}"


@pytest.mark.parametrize("kind", sorted(SPEC_KINDS))
def test_every_kind_has_an_example_job_that_validate_accepts(kind: str, examples: Path) -> None:
    path = example_of(kind, examples)
    loaded = load_job_file(path, examples)
    assert loaded.problems == [] and loaded.spec is not None and loaded.spec.kind == kind
    result = CliRunner().invoke(validate.command, [str(path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_table_line_names_a_work_class_built_from_run_inputs(
    kind: str, examples: Path, tmp_path: Path, secrets: None
) -> None:
    cls = work_class(kind)
    assert inspect.isclass(cls), f"{KINDS[kind].work} is not a class"
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == ["inputs"], f"{KINDS[kind].work}{inspect.signature(cls)}: one shape, (inputs)"
    assert str(params[0].annotation).startswith("RunInputs["), params[0].annotation
    # built as the daemon builds it, from the example job's spec, it does the JobWork port
    parts = Parts(load_settings(home=tmp_path / "home", create_home=True))
    try:
        work = parts.work_for(run_view(example_spec(kind, examples)))
        assert isinstance(work, cls) and isinstance(work, JobWork)
        plan = work.plan()  # some plans come from what `prepare` found: empty before it
        assert isinstance(plan, list) and all(isinstance(step, str) for step in plan)
    finally:
        parts.close()


# the kinds whose work reads or writes no repository (their specs still carry the default name)
NO_REPOSITORY = ["mongo.export", "mongo.import", "weaviate.clear"]


@pytest.mark.parametrize("kind", NO_REPOSITORY)
def test_a_kind_without_a_repository_is_built_and_planned_where_no_repository_can_be_opened(
    kind: str, examples: Path, tmp_path: Path, secrets: None
) -> None:
    """Built the same way as every kind, it never opens one: it runs on a machine whose
    configured repository is unusable (here its directory is taken by a file)."""
    settings = load_settings(home=tmp_path / "home", create_home=True)
    settings.repositories["local"].write_text("not a repository\n")
    work = Parts(settings).work_for(run_view(example_spec(kind, examples)))
    assert work.plan()


def test_inputs_without_a_repository_say_so_when_one_is_asked_for(examples: Path, secrets: None) -> None:
    inputs = RunInputs(example_spec("mongo.export", examples), "k1")
    with pytest.raises(RuntimeError, match="run k1: these inputs were given no repository"):
        _ = inputs.repo


def test_a_kind_with_a_repository_opens_it_only_when_its_work_first_uses_it(
    examples: Path, tmp_path: Path, secrets: None
) -> None:
    """The repository is no longer opened to build the work: the same failure to open it comes
    from the step that first reads it (a worker thread), not from building the work."""
    settings = load_settings(home=tmp_path / "home", create_home=True)
    settings.repositories["local"].write_text("not a repository\n")
    parts = Parts(settings)
    work = parts.work_for(run_view(example_spec("mongo.backup", examples)))
    assert work.plan()
    with pytest.raises(OSError):
        _ = work.repo  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_validate_refuses_a_job_whose_kind_has_no_line_in_the_table(
    kind: str, examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = example_of(kind, examples)
    monkeypatch.delitem(KINDS, kind)
    loaded = load_job_file(path, examples)
    assert loaded.spec is None
    assert [(p.field, p.reason) for p in loaded.problems] == [
        ("kind", f"{kind} has no adapter in this davit (davit/daemon/kinds.py)")
    ]
    result = CliRunner().invoke(validate.command, [str(path)])
    assert isinstance(result.exception, JobFilesInvalid)  # main() turns it into the exit code
    assert result.exception.exit_code == EXIT_USAGE
    assert f"{path}: kind: {kind} has no adapter in this davit" in result.output


def test_a_run_of_a_kind_missing_from_the_table_fails_with_an_invalid_config(
    examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run queued before an upgrade that dropped its kind: a typed error naming the kind."""
    spec = example_spec("files.backup", examples)
    monkeypatch.delitem(KINDS, "files.backup")
    parts = Parts(load_settings(home=tmp_path / "home", create_home=True))
    with pytest.raises(InvalidConfig, match=r"no adapter for files\.backup"):
        parts.work_for(run_view(spec))


@pytest.mark.parametrize("kind", sorted(k for k, line in KINDS.items() if line.leftovers))
def test_every_leftovers_line_names_a_function_of_the_run_inputs(kind: str) -> None:
    remover = leftover_remover(kind)
    assert callable(remover)
    assert list(inspect.signature(remover).parameters) == ["inputs"]


def test_a_volume_run_that_used_mountpoints_leaves_no_helper_to_remove(examples: Path) -> None:
    """Such a run made no helper container: nothing is asked of the engine (none runs here)."""
    spec = example_spec("volume.backup", examples)
    assert isinstance(spec, VolumeBackupJob)
    remover = leftover_remover("volume.backup")
    assert remover is not None
    assert remover(RunInputs(spec, "k1", details={"access": "mountpoint"})) == []


def test_kinds_that_leave_nothing_have_no_remover() -> None:
    assert {kind for kind in KINDS if leftover_remover(kind) is not None} == {"volume.backup", "volume.restore"}


def imported_by(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `modules`."""
    code = f"import json, sys; import {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_an_idle_daemon_and_the_cli_import_no_module_of_a_kind() -> None:
    """The table names modules; a kind's module (and its client library) is imported when a run
    of that kind needs it, so davitd at rest and the CLI stay small."""
    named = {ref.partition(":")[0] for line in KINDS.values() for ref in line if ref}
    daemon = imported_by("davit.daemon.davitd", "davit.daemon.supervisor", "davit.daemon.bootstrap")
    cli = imported_by("davit.daemon.cli.main")
    assert named and not named & (daemon | cli), f"imported at start: {sorted(named & (daemon | cli))}"
    assert {"pymongo", "weaviate", "docker", "asyncssh"}.isdisjoint(daemon)


def test_load_names_the_object_of_a_module_colon_name_line() -> None:
    assert load("davit.daemon.kinds:KINDS") is KINDS


def test_what_a_preloaded_kind_imported_is_no_longer_scanned_by_every_full_collection() -> None:
    """davitd keeps a kind's modules for its life: once preloaded they are frozen out of the
    cyclic collector's generations (issue 18: scanning Weaviate's client, ~130,000 objects, at
    every full collection was a measurable part of a restore's CPU time). Checked in a fresh
    interpreter, as a daemon starts: before the preload the client's classes are in the
    collector's generations, after it they are not, and a full collection then finds none of
    the objects the import left (frozen after a collection, so no garbage was frozen)."""
    code = (
        "import gc, json\n"
        "from davit.daemon.kinds import preload\n"
        "import weaviate.collections.batch.grpc_batch as g\n"
        "before = any(o is g._BatchGRPC for o in gc.get_objects())\n"
        "preload('weaviate.restore')\n"
        "after = any(o is g._BatchGRPC for o in gc.get_objects())\n"
        "print(json.dumps([before, after, gc.get_freeze_count(), len(gc.get_objects())]))\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    before, after, frozen, tracked = json.loads(out.stdout.splitlines()[-1])
    assert before and not after
    assert frozen > 50_000 and tracked < frozen / 10, (frozen, tracked)


def test_every_kind_has_pre_flight_checks_taking_the_check_inputs() -> None:
    """`davit check JOB` works for every kind: a kind added without checks fails here."""
    assert set(CHECKS) == set(KINDS), f"kinds without checks: {sorted(set(KINDS) - set(CHECKS))}"
    for kind in sorted(CHECKS):
        checks = kind_checks(kind)
        assert callable(checks), CHECKS[kind]
        assert list(inspect.signature(checks).parameters) == ["inputs"], f"{CHECKS[kind]}: one shape, (inputs)"


def test_the_cli_imports_no_module_of_a_kinds_checks() -> None:
    """Like the work classes, a kind's checks (and their client library) load when a check of
    that kind runs, not when `davit` starts."""
    named = {ref.partition(":")[0] for ref in CHECKS.values()}
    assert not named & imported_by("davit.daemon.cli.main")
