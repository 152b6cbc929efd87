"""Production code reaches a repository only through its storage port (`Repository.backend`):
nothing builds a path of the repository, so a remote backend can be plugged in (issue 17).
`Repository.root` exists for a local repository, for tests and tools that look at its files;
this test keeps production code from using it again, or the local-layout helpers of `packs.py`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "davit"
REPOSITORY = PACKAGE / "adapters" / "repository"
# The backends are the one place where a key becomes a path (or a remote name).
BACKENDS = REPOSITORY / "backends"
TEST_HELPERS = {"pack_path", "index_path"}  # packs.py: where a local repository keeps a pack


def _functions_named(tree: ast.AST, name: str) -> set[ast.AST]:
    """The nodes inside functions called `name` (the `Repository.root` property itself)."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            inside.update(ast.walk(node))
    return inside


def repository_path_uses(path: Path, in_repository_package: bool) -> list[str]:
    tree = ast.parse(path.read_text())
    allowed = _functions_named(tree, "root") if path.name == "repository.py" else set()
    found = []
    for node in ast.walk(tree):
        if node in allowed:
            continue
        if isinstance(node, ast.Attribute) and node.attr == "root":
            owner = ast.unparse(node.value)
            # in the repository package every `.root` is a repository's; elsewhere, a repo's
            if in_repository_package or owner.split(".")[-1] in ("repo", "repository", "_repo"):
                found.append(f"{path.name}:{node.lineno}: {owner}.root")
        if isinstance(node, ast.Name) and node.id in TEST_HELPERS and path.name != "packs.py":
            found.append(f"{path.name}:{node.lineno}: {node.id}")
    return found


def test_no_production_code_builds_a_path_of_the_repository() -> None:
    found = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if BACKENDS not in path.parents
        for use in repository_path_uses(path, REPOSITORY in path.parents)
    ]
    assert found == [], "go through Repository methods or repo.backend instead:\n" + "\n".join(found)


def test_the_check_catches_what_it_is_meant_to(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def f(repo, self, walk):\n    return repo.root / 'index', self.root, walk.root, pack_path(1, 2)\n")
    assert sorted(use.split(": ")[1] for use in repository_path_uses(planted, True)) == [
        "pack_path",
        "repo.root",
        "self.root",
        "walk.root",
    ]
    # outside the repository package only a repository's root counts (a restore's walk has one)
    assert sorted(use.split(": ")[1] for use in repository_path_uses(planted, False)) == ["pack_path", "repo.root"]
