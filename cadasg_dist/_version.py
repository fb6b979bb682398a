"""The package version, read from the installed distribution's metadata.

``pyproject.toml`` holds the one literal (Flower's ``flwr run`` needs ``[project] version`` there).
This module imports nothing of the package, so any module can read the version without importing
``cadasg_dist/__init__.py`` (``synthesizer`` importing it from there made an import circle).
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "cadasg-dist"
# The package's own folder (shipped to a Ray client's cluster) and the checkout or install root above it.
PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def _read_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        # A source checkout on the path without `pip install`: its own pyproject.toml is the truth.
        pyproject = PROJECT_ROOT / "pyproject.toml"
        if pyproject.is_file():
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        return "0+unknown"


__version__ = _read_version()
