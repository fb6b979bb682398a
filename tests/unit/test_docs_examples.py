"""Every code example runs: the doctests in the docstrings of ``cadasg_dist``, ``federated`` and
``serving``, and the Python blocks of README.md (on the bundled rwm5yr table, one epoch).

A usage block that cannot run in a unit test (it needs a server, Ray or a cluster) is introduced
as a sketch: a line that says "sketch" and ends in ``::``. Any other block of Python in a
docstring that is not a doctest is refused, so a new example cannot go untested.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import io
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cadasg_dist", "federated", "serving")
# Files whose usage block is still plain Python, neither a doctest nor a sketch. The test below
# asserts this set exactly: converting a block fails it until its file leaves the set.
UNCONVERTED: set[str] = set()


def _source_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(path: Path) -> Iterator[str]:
    """The cleaned docstrings of a file's module, classes and functions (read, not imported)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def _indented_blocks(doc: str) -> Iterator[tuple[str, str]]:
    """(introducing line, dedented text) of each indented block that follows a blank line."""
    lines = doc.splitlines()
    i = 1
    while i < len(lines):
        if not (lines[i].startswith((" ", "\t")) and lines[i].strip() and not lines[i - 1].strip()):
            i += 1
            continue
        end = i
        while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
            end += 1
        intro = next((line for line in reversed(lines[:i]) if line.strip()), "")
        yield intro, textwrap.dedent("\n".join(lines[i:end]))
        i = end


def _is_python(text: str) -> bool:
    """Statements that import, call or assign: code, not a shell line or a file format."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Call | ast.Import | ast.ImportFrom | ast.Assign | ast.With) for n in ast.walk(tree))


def _is_sketch(intro: str) -> bool:
    return intro.rstrip().endswith("::") and "sketch" in intro.lower()


DOCTEST_MODULES = [_module_name(p) for p in _source_files()
                   if any(line.lstrip().startswith(">>>") for doc in _docstrings(p) for line in doc.splitlines())]
README_BLOCKS = [(f"README.md:{(ROOT / 'README.md').read_text().count(chr(10), 0, m.start()) + 1}", m.group(1))
                 for m in re.finditer(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)]


@pytest.fixture
def one_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every ``CADASG`` built while an example runs trains one epoch, in a scratch directory: the
    examples' own settings train for minutes, and what is tested here is that they run."""
    from cadasg_dist.config import CADASGConfig
    from cadasg_dist.synthesizer import CADASG

    original = CADASG.__init__

    def init(self: CADASG, config: CADASGConfig | None = None) -> None:
        config = config or CADASGConfig()
        original(self, dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1)))

    monkeypatch.setattr(CADASG, "__init__", init)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name: str, one_epoch: None) -> None:
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder().find(module, module_name) if t.examples]
    assert tests, f"{module_name} has '>>>' in a docstring, but doctest finds no example in it"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.summarize(verbose=False).failed == 0, report.getvalue()


@pytest.mark.parametrize(("where", "code"), README_BLOCKS, ids=[where for where, _ in README_BLOCKS])
def test_readme_python_blocks_run(where: str, code: str, one_epoch: None) -> None:
    exec(compile(code, where, "exec"), {"__name__": "readme_example"})


def test_every_docstring_example_is_a_doctest_or_a_sketch() -> None:
    plain = {}
    for path in _source_files():
        for doc in _docstrings(path):
            for intro, text in _indented_blocks(doc):
                if _is_python(text) and not _is_sketch(intro):
                    plain.setdefault(str(path.relative_to(ROOT)), text)
    assert set(plain) == UNCONVERTED, (
        "turn these usage blocks into doctests (>>>) or introduce them with a line ending in "
        "'sketch ...::' when they cannot run in a unit test:\n"
        + "\n".join(f"{path}:\n{textwrap.indent(text, '    ')}" for path, text in plain.items()
                    if path not in UNCONVERTED)
    )
