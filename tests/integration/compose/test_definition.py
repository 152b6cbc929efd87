"""Which files of a compose project's definition are copied to the target: those inside the
project directory under their relative name, followed through `extends:` and `include:`;
those outside are reported, not copied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davit.adapters.compose.definition import Definition, DefinitionClash, project_definition


def test_files_outside_the_project_are_reported_and_the_rest_keep_their_relative_names(tmp_path: Path) -> None:
    wd = tmp_path / "app"
    (wd / "parts").mkdir(parents=True)
    (tmp_path / "shared.env").write_text("A=1\n")
    (wd / "parts" / "db.yaml").write_text("services:\n  base:\n    image: x\n")
    (wd / "parts" / "more.yaml").write_text("services:\n  db:\n    extends: {file: db.yaml, service: base}\n")
    (wd / "compose.yaml").write_text("include: [parts/more.yaml]\nservices:\n  web:\n    image: x\n    env_file: ../shared.env\n")
    (wd / "web.env").write_text("B=2\n")
    uninterpolated = {
        "services": {
            "web": {
                "env_file": [
                    {"path": str(tmp_path / "shared.env"), "required": True},
                    {"path": str(wd / "web.env"), "required": True},
                    {"path": str(wd / "absent.env"), "required": False},
                ]
            }
        }
    }
    found = project_definition("app", str(wd), [str(wd / "compose.yaml")], {"services": {"web": {}}}, uninterpolated)

    assert found.compose_files == ["compose.yaml"]
    assert set(found.files) == {"compose.yaml", "parts/more.yaml", "parts/db.yaml", "web.env"}
    assert found.outside == [str(tmp_path / "shared.env")]


def _symlinked_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project whose env file, secret file and included compose file are symlinks out of it,
    beside one symlink that stays inside; returns (project dir, the host file linked to)."""
    wd = tmp_path / "app"
    (wd / "env").mkdir(parents=True)
    host_secret = tmp_path / "host" / "shadow"
    host_secret.parent.mkdir()
    host_secret.write_text("root:$6$not-for-the-target\n")
    (tmp_path / "host" / "inc.yaml").write_text("services:\n  x:\n    extends: {file: deeper.yaml, service: y}\n")
    os.symlink(host_secret, wd / "env" / "app.env")  # absolute, out
    os.symlink("../host/shadow", wd / "api.key")  # relative, out
    os.symlink("../host/inc.yaml", wd / "inc.yaml")  # an include target, out
    (wd / "env" / "real.env").write_text("A=1\n")
    os.symlink("real.env", wd / "env" / "alias.env")  # stays inside
    (wd / "compose.yaml").write_text("include: [inc.yaml]\nservices:\n  web:\n    image: x\n")
    return wd, host_secret


def _definition(wd: Path, follow: bool) -> Definition:
    uninterpolated = {"services": {"web": {"env_file": [str(wd / "env" / "app.env"), str(wd / "env" / "alias.env")]}}}
    model = {"services": {"web": {}}, "secrets": {"k": {"file": str(wd / "api.key")}}}
    return project_definition("app", str(wd), [str(wd / "compose.yaml")], model, uninterpolated, None, follow)


def test_a_definition_file_symlinked_out_of_the_project_is_not_read_unless_the_operator_allows_it(tmp_path: Path) -> None:
    wd, host_secret = _symlinked_project(tmp_path)
    found = _definition(wd, follow=False)
    assert set(found.files) == {"compose.yaml", "env/alias.env"}, "a file symlinked out of the project would be copied"
    assert found.symlinked_out == [
        f"{wd / 'inc.yaml'} -> {tmp_path / 'host' / 'inc.yaml'}",
        f"{wd / 'env' / 'app.env'} -> {host_secret}",
        f"{wd / 'api.key'} -> {host_secret}",
    ]
    assert found.outside == [], "the included file symlinked out was parsed for the files it names"

    allowed = _definition(wd, follow=True)
    # followed, as compose follows it: the included file's own references resolve beside its name
    assert set(allowed.files) == {"compose.yaml", "inc.yaml", "deeper.yaml", "env/app.env", "env/alias.env", "api.key"}
    assert allowed.symlinked_out == [] and allowed.outside == []


def test_two_compose_files_copied_under_one_name_are_refused_whichever_comes_first(tmp_path: Path) -> None:
    wd = tmp_path / "app"
    wd.mkdir()
    (tmp_path / "other").mkdir()
    (wd / "compose.yaml").write_text("services:\n  web:\n    image: x\n")
    (tmp_path / "other" / "compose.yaml").write_text("services:\n  web:\n    image: y\n")
    inside, outside = str(wd / "compose.yaml"), str(tmp_path / "other" / "compose.yaml")
    for order in ([inside, outside], [outside, inside]):
        with pytest.raises(DefinitionClash, match=f"{outside}.*compose.yaml|{inside}.*{outside}"):
            project_definition("app", str(wd), order, {"services": {"web": {}}}, {})
    # one file named twice (a symlink to it outside the project) is one file, no clash
    (tmp_path / "same").mkdir()
    os.symlink(wd / "compose.yaml", tmp_path / "same" / "compose.yaml")
    found = project_definition("app", str(wd), [inside, str(tmp_path / "same" / "compose.yaml")], {"services": {"web": {}}}, {})
    assert found.files == {"compose.yaml": inside}
