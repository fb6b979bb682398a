"""The shape of the code, read from its imports and its syntax (nothing is imported):

* layers run data -> context -> constraints -> model -> privacy mechanisms -> training -> private pipeline ->
  synthesizer -> evaluation -> runtimes -> CLI -> the Flower app, and no import runs back up;
* no import circle among the package's modules, and ``privacy/`` imports nothing of the engine (its
  errors are shared);
* every runner drives the one training loop (``train.loop``), the budget guard is written once, and
  fresh context caches are built in one place;
* no module over 400 lines and no function over 60.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("cadasg_dist/**/*.py"), *ROOT.glob("federated/*.py")])
LAYERS = (
    ("cadasg_dist._version", "cadasg_dist.errors", "cadasg_dist.config", "cadasg_dist.memory"),
    ("cadasg_dist.data", "cadasg_dist.datasets"),
    ("cadasg_dist.context",),
    ("cadasg_dist.constraints",),
    ("cadasg_dist.model",),
    ("cadasg_dist.privacy",),
    ("cadasg_dist.train",),
    ("cadasg_dist.private",),
    ("cadasg_dist.artifact", "cadasg_dist.sampling", "cadasg_dist.synthesizer", "cadasg_dist.sampled"),
    ("cadasg_dist.evaluate",),
    ("cadasg_dist.distributed", "cadasg_dist.federation", "cadasg_dist.tuning", "cadasg_dist.serving",
     "cadasg_dist.client"),
    ("cadasg_dist.cli",),
    ("federated",),
    ("cadasg_dist",),  # the package's __init__: the public API re-exported
)
RUNNERS = ("cadasg_dist.train.fit", "cadasg_dist.private.fit", "cadasg_dist.tuning.rounds",
           "cadasg_dist.distributed.worker", "cadasg_dist.federation.silo")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def layer(module: str) -> int:
    """Index of the most specific layer prefix of ``module``."""
    matches = [(len(name), i) for i, names in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    return max(matches)[1]


def imports() -> dict[str, set[str]]:
    """Each project module's imports of project modules (function-level imports included)."""
    out: dict[str, set[str]] = {}
    for path in SOURCES:
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        out[module_name(path)] = {m for m in found if m.split(".")[0] in ("cadasg_dist", "federated")}
    return out


def test_no_import_runs_back_up_the_layers() -> None:
    up = [f"{a} -> {b}" for a, targets in imports().items() if a != "cadasg_dist" for b in targets
          if layer(b) > layer(a)]
    assert up == []


def test_no_import_circle_and_privacy_imports_nothing_of_the_engine() -> None:
    graph = imports()
    known = set(graph)

    def resolve(target: str) -> str | None:  # "pkg.mod.name" imports resolve to the deepest module
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    edges = {a: {t for t in map(resolve, targets) if t is not None and t != a} for a, targets in graph.items()}
    for a in edges:  # the package __init__ files re-export their own modules: not a circle
        edges[a] = {b for b in edges[a] if not a.startswith(b + ".")}
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in edges[node]:
            assert seen.get(nxt) != 1, "import circle: " + " -> ".join([*stack[stack.index(nxt):], nxt])
            if nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for start in sorted(edges):
        if start not in seen:
            visit(start, [start])
    engine = [f"{a} -> {b}" for a, targets in graph.items() if a.startswith("cadasg_dist.privacy")
              for b in targets if not b.startswith(("cadasg_dist.privacy", "cadasg_dist.errors"))]
    assert engine == []


@pytest.mark.parametrize("runner", RUNNERS)
def test_every_runner_drives_the_one_training_loop(runner: str) -> None:
    assert "cadasg_dist.train.loop" in imports()[runner]
    source = (ROOT / (runner.replace(".", "/") + ".py")).read_text()
    assert "train_step(" not in source  # the loop takes the steps, not the runner


def test_one_budget_guard_and_one_cache_constructor() -> None:
    text = {path: path.read_text() for path in SOURCES}
    guards = [p.name for p, t in text.items() if "the next step would exceed epsilon" in t]
    assert guards == ["step.py"]  # private.step.DPState.allows_step
    fresh = [p.name for p, t in text.items() for line in t.splitlines()
             if "ContextCache(" in line and "class " not in line and "self." not in line]
    assert fresh == ["loop.py"]  # train.loop.new_cache


def test_modules_and_functions_stay_small() -> None:
    long_modules = {module_name(p): n for p in SOURCES if (n := p.read_text().count("\n")) > 400}
    long_functions = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if node.end_lineno - start + 1 > 60:
                    long_functions[f"{module_name(path)}.{node.name}"] = node.end_lineno - start + 1
    assert long_modules == {} and long_functions == {}
