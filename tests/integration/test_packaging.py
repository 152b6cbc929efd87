"""`pip install .` is safe next to other projects: davit installs one top-level package, `davit`.

Before, the wheel put `domain`, `daemon`, `adapters` and `eventstore` into site-packages, where
any other project's `domain` would shadow davit's or be shadowed by it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")  # never the checkout's own build/ directory
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], check=True, cwd=build, timeout=300
    )
    [found] = out.glob("davit-*.whl")
    return found


def test_the_wheel_holds_one_top_level_package_named_davit_with_its_default_config(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"davit"}
    assert "davit/daemon/default_config.toml" in names
    for layer in ("domain", "eventstore", "adapters", "daemon"):
        assert f"davit/{layer}/__init__.py" in names


def test_davit_installed_beside_another_projects_domain_package_imports_its_own(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True, timeout=300
    )
    other = site / "domain"  # another project's top-level `domain`, as many have
    other.mkdir()
    (other / "__init__.py").write_text("OWNER = 'someone else'\n")
    probe = (
        "import domain, davit.domain.errors as e, davit.daemon.config as c;"
        "print(domain.OWNER, e.DavitError.__module__, c.DEFAULT_CONFIG.is_file())"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["someone", "else", "davit.domain.errors", "True"]
