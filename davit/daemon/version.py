"""The installed davit's version (one place, cheap to import for the CLI)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def davit_version() -> str:
    try:
        return version("davit")
    except PackageNotFoundError:
        return "0+unknown"
