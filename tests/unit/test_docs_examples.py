"""Every code example runs: the doctests in the docstrings of ``cadasg_dist``, ``federated`` and
``serving``, and every shell and Python block of README.md, docs/getting-started.md and the guides
(``tests/unit/test_docs_pages.py``, on a small table cut from the bundled rwm5yr, one epoch).

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
import shlex
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


# --- README.md, docs/getting-started.md and the guides ---------------------------------------------
# Every ```bash and ```python block runs, in order, page by page, in one scratch directory holding
# patients.csv (1,200 rows of the bundled rwm5yr) and its 80/20 split train.csv / holdout.csv; a
# shell block's lines are `cadasg ...` commands, run through the CLI's main(). A block that cannot
# run here is marked by an HTML comment right before its fence:
#   <!-- not-run: REASON -->        never run (a cluster, a server, an install); listed in NOT_RUN
#   <!-- needs: cadasg schema -->   run once `schema` is in cadasg_dist.cli.COMMANDS, skipped until then
DOC_PAGES = ["README.md", "docs/getting-started.md", *sorted(str(p.relative_to(ROOT))
                                                            for p in (ROOT / "docs" / "guides").glob("*.md"))]
SHELL, PYTHON = {"bash", "sh", "shell", "console"}, {"python", "py"}
FENCE = re.compile(r"(?:^<!--\s*(not-run|needs):\s*(.*?)\s*-->\n)?^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
# Blocks that never run here, per page: the count is checked, so marking a block is deliberate.
NOT_RUN = {"README.md": 2, "docs/getting-started.md": 2, "docs/guides/cluster.md": 5,
           "docs/guides/federated.md": 2, "docs/guides/serving.md": 3, "docs/guides/tuning.md": 2}


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    mark: str  # "", "not-run" or "needs"
    reason: str


def page_blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text()
    # line: the fence's, one below the mark when there is one
    return [Block(page, text.count("\n", 0, m.start()) + 1 + (m.group(1) is not None),
                  m.group(3), m.group(4), m.group(1) or "", m.group(2) or "")
            for m in FENCE.finditer(text) if m.group(3) in SHELL | PYTHON]


def shell_commands(code: str) -> list[list[str]]:
    """The block's commands, continuation lines joined and comments dropped, as argv lists."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


@pytest.fixture
def small_tables(tmp_path: Path) -> Path:
    from cadasg_dist.datasets import load_rwm5yr

    rows = load_rwm5yr().sample(1_200, random_state=0).reset_index(drop=True)
    rows.to_csv(tmp_path / "patients.csv", index=False)
    rows.iloc[:960].to_csv(tmp_path / "train.csv", index=False)
    rows.iloc[960:].to_csv(tmp_path / "holdout.csv", index=False)
    return tmp_path


def _run_shell(block: Block) -> None:
    from cadasg_dist.cli import main

    for argv in shell_commands(block.code):
        assert argv[0] == "cadasg", (f"{block.page}:{block.line}: {argv[0]!r} is not a cadasg command; mark the "
                                     "block <!-- not-run: REASON --> if it cannot run in a unit test")
        try:
            code = main(argv[1:])
        except SystemExit as exc:  # argparse refused the line
            code = exc.code
        assert code == 0, f"{block.page}:{block.line}: `{shlex.join(argv)}` exited with {code}"


@pytest.mark.parametrize("page", [p for p in DOC_PAGES if any(not b.mark for b in page_blocks(p))
                                  or any(b.mark == "needs" for b in page_blocks(p))])
def test_page_blocks_run(page: str, one_epoch: None, small_tables: Path) -> None:
    from cadasg_dist.cli import COMMANDS

    namespace: dict[str, object] = {"__name__": "docs_example"}
    waiting = []
    for block in page_blocks(page):
        if block.mark == "not-run":
            continue
        if block.mark == "needs":
            assert block.reason == "cadasg schema", f"{page}:{block.line}: unknown need {block.reason!r}"
            if "schema" not in COMMANDS:
                waiting.append(block.line)
                continue
        if block.lang in PYTHON:
            exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)
        else:
            _run_shell(block)
    if waiting:
        pytest.skip(f"{page}: the blocks at lines {waiting} need `cadasg schema`, which is not in "
                    "cadasg_dist.cli.COMMANDS yet (the codebook change adds it); every other block of the page ran")


def test_blocks_that_never_run_are_marked_with_a_reason_and_listed() -> None:
    found = {}
    for page in DOC_PAGES:
        marked = [b for b in page_blocks(page) if b.mark == "not-run"]
        assert all(b.reason for b in marked), f"{page}: a not-run block without a reason"
        if marked:
            found[page] = len(marked)
    assert found == NOT_RUN, "update NOT_RUN when a block is marked not-run or unmarked"
