"""Errors become exit codes in one place, and the error tree drawn in `davit/domain/errors.py` is the
one in the code (issue 16, part 2).

Commands raise davit errors; only the two entry points, `davit/daemon/cli/main.py` and
`davit/daemon/davitd.py`, end the process. The drawing at the top of `davit/domain/errors.py` names every
`DavitError` subclass of the four packages under its real parent and in its real module, so
the next error a kind adds cannot be left out of it."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re
from pathlib import Path

import pytest

from davit.domain import errors as errors_module
from davit.domain.errors import DavitError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "eventstore", "adapters", "daemon")
MAY_EXIT = {
    Path("davit/daemon/cli/main.py"),
    Path("davit/daemon/davitd.py"),
    # the notification child's own process: it leaves without joining a thread apprise left behind
    Path("davit/daemon/notifications/child.py"),
    # a migration's image export, run as a child whose exit status and stderr the pipeline reads
    Path("davit/adapters/docker/imageexport.py"),
}
EXITS = {"exit", "_exit", "quit"}  # sys.exit, os._exit, the builtins exit and quit, ctx.exit


def exits_in(path: Path) -> list[str]:
    """Where (line: what) `path` ends the process itself: a call named like an exit, or `raise SystemExit`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in EXITS:
                found.append(f"{node.lineno}: {ast.unparse(func)}()")
        elif isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if ast.unparse(raised).split(".")[-1] in {"SystemExit", "Exit"}:
                found.append(f"{node.lineno}: raise {ast.unparse(raised)}")
    return found


def test_only_the_two_entry_points_end_the_process() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{hit}"
        for package in PACKAGES
        for path in sorted((ROOT / "davit" / package).rglob("*.py"))
        if path.relative_to(ROOT) not in MAY_EXIT
        for hit in exits_in(path)
    ]
    assert found == [], "raise a davit error instead; davit/daemon/cli/main.py maps it to an exit code:\n" + "\n".join(found)


def test_the_exit_check_sees_every_way_of_exiting(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\nimport click\nsys.exit(1)\nos._exit(1)\nexit()\n"
        "raise SystemExit(2)\nraise click.exceptions.Exit(0)\nclick.get_current_context().exit(1)\n"
        "stack.close()\n"
    )
    assert sorted(int(hit.split(":")[0]) for hit in exits_in(probe)) == [3, 4, 5, 6, 7, 8]


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Each class the docstring draws: (its parent, its module as drawn)."""
    doc = errors_module.__doc__ or ""
    block = doc.split("```")[1].strip("\n").splitlines()
    line = re.compile(r"^(?P<indent>(?:│   |    )*)(?P<branch>├── |└── )?(?P<name>\w+)(?:\s+\((?P<module>[\w/]+)\))?")
    drawn: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for text in block:
        match = line.match(text)
        assert match, f"not a line of the tree: {text!r}"
        depth = len(match["indent"]) // 4 + (1 if match["branch"] else 0)
        del parents[depth:]
        name = match["name"]
        assert name not in drawn, f"{name} is drawn twice"
        module = (match["module"] or "domain/errors").replace("/", ".")
        drawn[name] = (parents[-1] if parents else None, module)
        parents.append(name)
    return drawn


def coded_tree() -> dict[str, tuple[str | None, str]]:
    """Every DavitError subclass the four packages define: (its davit parent, its module)."""
    for package in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(f"davit.{package}").__path__, f"davit.{package}."):
            importlib.import_module(info.name)
    coded: dict[str, tuple[str | None, str]] = {"DavitError": (None, "domain.errors")}
    todo = [DavitError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            module = sub.__module__.removeprefix("davit.")  # the drawing names modules inside davit
            if module.split(".")[0] in PACKAGES and sub.__module__.startswith("davit."):  # not a test's own subclass
                coded[sub.__name__] = (cls.__name__, module)
                todo.append(sub)
    return coded


def test_the_drawn_error_tree_names_every_davit_error_under_its_parent_and_module() -> None:
    drawn, coded = drawn_tree(), coded_tree()
    assert len(coded) > 40  # the walk found the adapters' errors, not only the domain's
    missing = {name: where for name, where in coded.items() if name not in drawn}
    assert not missing, f"draw these in davit/domain/errors.py's tree (name: (parent, module)): {missing}"
    assert set(drawn) == set(coded), f"drawn but not in the code: {sorted(set(drawn) - set(coded))}"
    wrong = {name: (drawn[name], coded[name]) for name in coded if drawn[name] != coded[name]}
    assert not wrong, f"drawn (parent, module) differs from the code's: {wrong}"


@pytest.mark.parametrize(
    "name",
    [
        "EventStoreError",
        "RunStopped",
        "RunDidNotSucceed",
        "VerificationFailed",
        "UnknownJob",
        "SnapshotNotFound",
        "InvalidArgument",
        "JobFilesInvalid",
    ],
)
def test_the_errors_issue_16_names_are_in_the_drawing(name: str) -> None:
    assert name in drawn_tree()


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`davit ARGS` in this process: its exit code, stdout, stderr (the umask it sets undone)."""
    from davit.daemon.cli.main import main

    monkeypatch.setattr("sys.argv", ["davit", *args])
    umask = os.umask(0o022)
    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        os.umask(umask)
    out = capsys.readouterr()
    return int(ended.value.code or 0), out.out, out.err


def test_main_adds_one_davit_line_to_an_error_unless_the_command_has_reported_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nkind = "files.backup"\n[source]\npath = "relative"\n')
    # JobFilesInvalid is reported: the problem lines are the whole answer
    assert run_main(monkeypatch, capsys, "validate", str(bad)) == (2, f"{bad}: source.path: must be an absolute path\n", "")
    home = tmp_path / "home"
    home.mkdir()
    (home / "davit.toml").write_text("")
    # SnapshotNotFound is not: main says it, once, and exits with its code
    assert run_main(monkeypatch, capsys, "--home", str(home), "verify", "nothing") == (
        2,
        "",
        "davit: no snapshot matches 'nothing'\n",
    )
