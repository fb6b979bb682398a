"""The Flower app's seam: ``federated/`` exposes the library's apps, the library never imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

from cadasg_dist.federation.simulation import anchor_app_paths

ROOT = Path(__file__).resolve().parents[2]


def test_the_library_imports_nothing_from_the_flower_app_or_a_top_level_serving():
    offenders = []
    for path in sorted((ROOT / "cadasg_dist").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            top_level = [n for n in names if n.split(".")[0] in ("federated", "serving")]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in top_level]
    assert offenders == []


def test_the_flower_app_modules_expose_the_library_apps():
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from federated.client_app import app as client_app
    from federated.server_app import app as server_app

    assert isinstance(server_app, ServerApp)
    assert isinstance(client_app, ClientApp)


def test_run_config_paths_found_only_under_the_app_root_become_absolute(tmp_path, monkeypatch):
    # Prepare: a working directory with its own config.yaml, an app root with both files
    cwd, app = tmp_path / "cwd", tmp_path / "app"
    cwd.mkdir()
    (app / "federated").mkdir(parents=True)
    (cwd / "config.yaml").write_text("{}")
    (app / "config.yaml").write_text("{}")
    (app / "federated" / "demo.yaml").write_text("{}")
    monkeypatch.chdir(cwd)
    run_config = {"config": "config.yaml", "data": "federated/demo.yaml", "plan": "", "silos": "/abs/silos",
                  "out": "federated/demo.yaml", "rounds": 2}

    # Execute
    anchored = anchor_app_paths(run_config, app)

    # Assert: the working directory wins, the app is next, other keys and absolute paths untouched
    assert anchored == {"config": "config.yaml", "data": str(app / "federated" / "demo.yaml"), "plan": "",
                        "silos": "/abs/silos", "out": "federated/demo.yaml", "rounds": 2}
    assert run_config["data"] == "federated/demo.yaml"


def test_a_path_found_nowhere_is_left_for_resolve_path_to_refuse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert anchor_app_paths({"config": "missing.yaml"}, tmp_path / "app") == {"config": "missing.yaml"}
