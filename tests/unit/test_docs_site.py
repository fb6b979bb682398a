"""The documentation site: `mkdocs build --strict` passes (broken links, anchors and pages missing
from the nav fail it), the generated references cover the code, and no page keeps a dated diary.

The CLI, configuration and HTTP references are generated at build time by docs/hooks.py, so they
cannot drift from the code; these tests check that what is generated covers every subcommand,
flag, config key and route.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location("cadasg_docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_SPEC)  # docs/hooks.py, which mkdocs loads from mkdocs.yml
_SPEC.loader.exec_module(hooks)

DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed: `make test` installs it with the test extra (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def test_mkdocs_build_strict_passes_with_the_generated_references(site: Path) -> None:
    for page in ("reference/cli", "reference/configuration", "reference/http", "reference/python",
                 "guides/private-release", "results/privacy", "changelog"):
        assert (site / page / "index.html").is_file(), page
    config_html = (site / "reference" / "configuration" / "index.html").read_text()
    assert "privacy.merge_class_sds" in config_html and "federated.local_lr_scale" in config_html
    assert "class=\"doc doc-heading\"" in (site / "reference" / "python" / "index.html").read_text()


def _leaf_keys(cls: type, prefix: str = "") -> set[str]:
    """Every key of a config dataclass tree, read with dataclasses alone (not with the generator)."""
    from cadasg_dist.config.parsing import dataclass_of

    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        section = dataclass_of(hints[f.name])
        keys |= _leaf_keys(section, f"{prefix}{f.name}.") if section else {f"{prefix}{f.name}"}
    return keys


def test_configuration_reference_lists_every_key_with_a_meaning() -> None:
    from cadasg_dist.config import CADASGConfig, ColumnOverride, ConstraintConfig
    from cadasg_dist.config.reference import dataclass_keys
    from cadasg_dist.federation.config import FederatedConfig

    listed = dataclass_keys(CADASGConfig)
    expected = (_leaf_keys(CADASGConfig) | {f"data.columns.NAME.{k}" for k in _leaf_keys(ColumnOverride)}
                | {f"constraints[].{k}" for k in _leaf_keys(ConstraintConfig)})
    assert {k.key for k in listed} == expected
    assert all(k.meaning and k.type for k in listed), [k.key for k in listed if not k.meaning]
    page = hooks.config_page()
    for key in expected | {f"federated.{k}" for k in _leaf_keys(FederatedConfig)}:
        assert f"| `{key}` |" in page, key


def test_cli_reference_lists_every_subcommand_and_flag() -> None:
    import argparse

    from cadasg_dist.cli import COMMANDS, make_parser

    page = hooks.cli_page()
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        section = page.split(f"## cadasg {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in sub.choices[name]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in section, f"cadasg {name} {flag}"


def test_http_reference_lists_every_route() -> None:
    page = hooks.http_page()
    for path, methods in hooks.openapi_schema()["paths"].items():
        for method in methods:
            assert f"## `{method.upper()} {path}`" in page


def test_no_dated_diary_in_readme_or_docs() -> None:
    """Dates belong to a results page's `| date |` row only: what was measured when is a result,
    not a log. Other pages say what holds now."""
    offenders = []
    for path in [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            dated = DATE.search(line) and not (path.parent.name == "results" and line.startswith("| date |"))
            if dated or re.search(r"\b(first|second|third|fourth|fifth) session\b|not rerun|worktree", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 8 * 1024
