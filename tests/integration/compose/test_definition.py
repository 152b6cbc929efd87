"""Which files of a compose project's definition are copied to the target: those inside the
project directory under their relative name, followed through `extends:` and `include:`;
those outside are reported, not copied."""

from __future__ import annotations

from pathlib import Path

from davit.adapters.compose.definition import project_definition


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
