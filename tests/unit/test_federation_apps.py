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


def _deploy_args(data, config, silos=None):
    import argparse

    args = argparse.Namespace(data=str(data), silo_column="site", silos=silos, config=str(config), codebook=None,
                              set=[])
    for name in ("target", "context", "epsilon", "delta", "privacy_unit", "seed", "local_epochs", "strategy",
                 "proximal_mu", "server_lr", "local_lr_scale", "min_clients", "round_timeout", "rounds", "secagg"):
        setattr(args, name, None)
    return args


def test_deployment_splits_a_table_into_the_declared_silos_only(tmp_path):
    """``federated/deploy.py`` names and splits silos as the simulation does: one file per declared
    silo (an empty one for a silo without rows), no file for an undeclared value, and a private run
    without a declaration refused before anything is written."""
    import pandas as pd
    import pytest

    from cadasg_dist.errors import ConfigError
    from federated.deploy import silo_files

    data = tmp_path / "t.csv"
    pd.DataFrame({"site": ["s1", "s2", "s2", "s9"], "x": [1.0, 2.0, 3.0, 4.0]}).to_csv(data, index=False)
    config = tmp_path / "c.yaml"
    config.write_text("privacy: {epsilon: 1.0}\ndata: {columns: {site: {kind: identifier, "
                      "categories: [s1, s2, s3]}}}\n")
    silos = silo_files(_deploy_args(data, config), tmp_path / "work")
    assert [name for name, _ in silos] == ["s1", "s2", "s3"]
    assert [len(pd.read_parquet(path)) for _, path in silos] == [1, 2, 0]
    listed = silo_files(_deploy_args(data, config, "s2,s1"), tmp_path / "work2")
    assert [name for name, _ in listed] == ["s2", "s1"]
    config.write_text("privacy: {epsilon: 1.0}\ndata: {columns: {site: {kind: identifier}}}\n")
    with pytest.raises(ConfigError, match="data.columns.site.categories"):
        silo_files(_deploy_args(data, config), tmp_path / "work3")
    assert not (tmp_path / "work3").exists()
