"""The layers keep their direction, and the code stays lint- and type-clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "davit"  # the one installed top-level package; the layers are its subpackages
ALLOWED = {
    "domain": set(),
    "eventstore": {"domain"},
    "adapters": {"domain"},
    "daemon": {"domain", "eventstore", "adapters"},
}


def imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.level == 0
            else []
        )
        found.update(n.split(".")[1] for n in names if n.startswith("davit."))
    return found & set(ALLOWED)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_dependencies_point_inward(layer: str) -> None:
    for path in (PACKAGE / layer).rglob("*.py"):
        wrong = imported_layers(path) - ALLOWED[layer] - {layer}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is a test dependency"
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_tree_is_ruff_formatted() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is a test dependency"
    result = subprocess.run([ruff, "format", "--check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, f"run `ruff format .`:\n{result.stdout}"


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of each import in `path`; name is None for `import module`."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, a.name) for a in node.names]
    return found


def _adapter_package(module: str) -> str | None:
    """`files` for `davit.adapters.files.tree`; None for a top-level module such as `davit.adapters.runwork`."""
    parts = module.split(".")
    if parts[:2] != ["davit", "adapters"] or len(parts) < 3 or not (PACKAGE / "adapters" / parts[2]).is_dir():
        return None
    return parts[2]


def _adapter_package_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (PACKAGE / "adapters").rglob("*.py"):
        package = _adapter_package(_module_name(path))
        if package is None:
            continue
        uses = graph.setdefault(package, set())
        for module, _name in _imports(path):
            other = _adapter_package(module)
            if other is not None and other != package:
                uses.add(other)
    return graph


def test_the_repository_package_imports_no_other_adapter_package() -> None:
    """The repository owns its formats (trees, packs, staging): every adapter builds on it, so it
    may build on none of them, or a change to an adapter's walk could change what pruning keeps."""
    assert _adapter_package_imports()["repository"] == set()


def test_the_adapter_packages_import_each_other_without_a_cycle() -> None:
    graph = _adapter_package_imports()
    done: set[str] = set()

    def visit(package: str, path: list[str]) -> None:
        if package in path:
            cycle = [*path[path.index(package) :], package]
            raise AssertionError(f"adapter packages import each other in a cycle: {' -> '.join(cycle)}")
        if package in done:
            return
        for other in sorted(graph.get(package, ())):
            visit(other, [*path, package])
        done.add(package)

    for package in sorted(graph):
        visit(package, [])
    assert done == set(graph)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_a_private_name_of_another_package() -> None:
    """A name starting with `_` is free to change with its own package; what another package needs
    is public and named for what it does (`from adapters.files.restore import _prefetch` was not)."""
    wrong = []
    for layer in ALLOWED:
        for path in (PACKAGE / layer).rglob("*.py"):
            here = _module_name(path)
            package = here if path.name == "__init__.py" else here.rpartition(".")[0]
            for module, name in _imports(path):
                owner = module.rpartition(".")[0] if name is None else module
                private = (name is not None and _private(name)) or any(_private(p) for p in module.split("."))
                if private and owner != package and not owner.startswith(package + "."):
                    wrong.append(f"{path.relative_to(ROOT)}: {module}{'' if name is None else ' ' + name}")
    assert not wrong, "\n".join(wrong)
